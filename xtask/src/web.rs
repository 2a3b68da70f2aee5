//! Building the web client: the tools it needs (installed from crates.io
//! and npm when missing), trunk's release build, and precompressed copies.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::Context as _;
use testkit::paths::project_root;
use testkit::process::{npm_ci, run};
use testkit::progress::{status, step};

use crate::cargo::cargo;

/// trunk 0.22 needs a newer rustc than the pinned one.
const TRUNK_VERSION: &str = "0.21.14";

/// Must equal the `wasm-bindgen` version in Cargo.lock (and web/Trunk.toml).
const WASM_BINDGEN_VERSION: &str = "0.2.130";

/// Files worth compressing ahead of time.
const COMPRESSIBLE: &[&str] = &["html", "js", "wasm", "css", "svg"];

/// Where trunk writes the build.
pub(crate) fn dist_dir() -> PathBuf {
    project_root().join("web/dist")
}

/// Builds the client in release mode unless `web/dist` is newer than every
/// input; then writes `.br` and `.gz` beside each compressible file.
pub(crate) fn build(force: bool) -> anyhow::Result<()> {
    let dist = dist_dir();
    if !force && is_up_to_date(&dist)? {
        status("web client is up to date (web/dist)");
        return Ok(());
    }
    step("building the web client (trunk, release)");
    run(&mut trunk_command(&["build", "--release"])?)?;
    precompress(&dist)
}

/// trunk with `args`, in `web/`, with the tools it needs (installed when
/// missing) on its `PATH`.
pub(crate) fn trunk_command(args: &[&str]) -> anyhow::Result<Command> {
    ensure_rust_target("wasm32-unknown-unknown")?;
    // Without its default features: no TLS stack (trunk never downloads
    // here, and `trunk serve` proxies plain HTTP) and no update check.
    let trunk = ensure_cargo_tool(
        "trunk",
        "trunk",
        TRUNK_VERSION,
        &["--locked", "--no-default-features"],
    )?;
    // Its own lockfile pins a crate version the registry no longer serves,
    // so it installs without --locked.
    ensure_cargo_tool(
        "wasm-bindgen",
        "wasm-bindgen-cli",
        WASM_BINDGEN_VERSION,
        &[],
    )?;
    let node_bin = ensure_npm_packages()?;
    // trunk runs cargo offline: fetch first.
    run(cargo().args(["fetch", "--locked"]))?;
    let path = std::env::join_paths(std::iter::once(node_bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let mut command = Command::new(trunk);
    command
        .args(args)
        .current_dir(project_root().join("web"))
        .env("PATH", path)
        .env("TRUNK_SKIP_VERSION_CHECK", "true")
        .env("NO_COLOR", "true");
    Ok(command)
}

/// Whether `dist/index.html` is newer than every source of the client.
fn is_up_to_date(dist: &Path) -> anyhow::Result<bool> {
    let Ok(built) = std::fs::metadata(dist.join("index.html")).and_then(|meta| meta.modified())
    else {
        return Ok(false);
    };
    let root = project_root();
    let inputs = [
        root.join("web/src"),
        root.join("web/index.html"),
        root.join("web/style.css"),
        root.join("web/favicon.svg"),
        root.join("web/Trunk.toml"),
        root.join("web/Cargo.toml"),
        root.join("domain"),
        root.join("Cargo.lock"),
        root.join("Cargo.toml"),
    ];
    let mut newest = SystemTime::UNIX_EPOCH;
    for input in &inputs {
        newest = newest.max(newest_in(input)?);
    }
    Ok(newest <= built)
}

/// The newest modification time of `path` or anything under it.
pub(crate) fn newest_in(path: &Path) -> anyhow::Result<SystemTime> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(meta.modified()?);
    }
    let mut newest = meta.modified()?;
    for entry in std::fs::read_dir(path)? {
        newest = newest.max(newest_in(&entry?.path())?);
    }
    Ok(newest)
}

/// Returns the path of `binary` at `version`, installing it with `cargo
/// install … args` first when it is missing or another version.
pub(crate) fn ensure_cargo_tool(
    binary: &str,
    krate: &str,
    version: &str,
    args: &[&str],
) -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let path = home.join("bin").join(binary);
    let current = Command::new(&path).arg("--version").output();
    if let Ok(output) = current
        && String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .any(|word| word == version)
    {
        return Ok(path);
    }
    status(&format!(
        "installing {krate} {version} (once; a few minutes)"
    ));
    let mut install = cargo();
    install
        .args(["install", krate, "--version", version])
        // Build tools: their own speed matters little here, their build
        // time is most of a first run. trunk's release profile asks for
        // fat LTO in one codegen unit, minutes on two cores; these
        // settings apply to this install only.
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .args(args);
    run(&mut install)?;
    Ok(path)
}

/// Installs the npm packages (wasm-opt from `binaryen`, Playwright,
/// selenium-webdriver) when missing or older than `package-lock.json`, and
/// returns their `.bin` folder.
pub(crate) fn ensure_npm_packages() -> anyhow::Result<PathBuf> {
    let root = project_root();
    let bin = root.join("node_modules/.bin");
    // npm writes node_modules/.package-lock.json on every install.
    let installed = newest_in(&root.join("node_modules/.package-lock.json")).ok();
    if installed.is_some_and(|installed| {
        newest_in(&root.join("package-lock.json")).is_ok_and(|lock| lock <= installed)
    }) {
        return Ok(bin);
    }
    npm_ci()?;
    Ok(bin)
}

/// Writes `name.br` and `name.gz` beside every compressible file.
fn precompress(dist: &Path) -> anyhow::Result<()> {
    let mut count = 0;
    for entry in std::fs::read_dir(dist)? {
        let path = entry?.path();
        let compressible = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| COMPRESSIBLE.contains(&ext));
        if !compressible {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&bytes)?;
        std::fs::write(with_suffix(&path, "gz"), gzip.finish()?)?;
        let mut brotli = Vec::new();
        {
            let mut writer = brotli::CompressorWriter::new(&mut brotli, 64 * 1024, 11, 22);
            writer.write_all(&bytes)?;
        }
        std::fs::write(with_suffix(&path, "br"), brotli)?;
        count += 1;
    }
    status(&format!("precompressed {count} files (brotli and gzip)"));
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Adds a rustup target unless it is installed.
pub(crate) fn ensure_rust_target(target: &str) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(project_root())
        .output()
        .context("running rustup (install it from https://rustup.rs)")?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == target)
    {
        return Ok(());
    }
    status(&format!("adding the {target} target"));
    run(Command::new("rustup")
        .args(["target", "add", target])
        .current_dir(project_root()))
}
