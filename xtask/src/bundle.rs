//! `cargo xtask bundle`: the Elastic Beanstalk source bundle. A static musl
//! binary, the `Procfile`, the built web client and the platform files, and
//! nothing else; checked after it is written.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use zip::write::SimpleFileOptions;

use rehearsal::bundle::{binary, check_entries, entries};
use testkit::paths::{project_root, target_dir};
use testkit::process::run;
use testkit::progress::{status, step};

use crate::cargo::cargo;
use crate::web;

/// The target of the shipped binary: static, so it runs on Amazon Linux
/// 2023's glibc 2.34 whatever the build machine has.
pub(crate) const TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds the bundle and returns its path.
pub(crate) fn build() -> anyhow::Result<PathBuf> {
    step(&format!(
        "building the static binary ({TARGET}) and the web client"
    ));
    ensure_musl()?;
    run(cargo().args([
        "build",
        "--release",
        "--locked",
        "--package",
        "api",
        "--target",
        TARGET,
    ]))?;
    web::build(false)?;
    let root = project_root();
    let version = version()?;
    let dir = target_dir().join("bundle");
    std::fs::create_dir_all(&dir)?;
    // One bundle in the folder, always this build's: pipelines pick it up
    // by pattern, and a cached target/ must not offer a stale one.
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        if name.starts_with("notes-api-") && name.ends_with(".zip") {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let path = dir.join(format!("notes-api-{version}.zip"));
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut zip = zip::ZipWriter::new(file);
    // The Procfile first, as Elastic Beanstalk reads it.
    add_file(&mut zip, "Procfile", &root.join("Procfile"), 0o644)?;
    add_file(
        &mut zip,
        "api",
        &target_dir().join(TARGET).join("release/api"),
        0o755,
    )?;
    add_tree(&mut zip, "public", &web::dist_dir(), false)?;
    add_tree(&mut zip, ".ebextensions", &root.join(".ebextensions"), true)?;
    add_tree(&mut zip, ".platform", &root.join(".platform"), true)?;
    zip.finish()?;
    check(&path)?;
    let size = std::fs::metadata(&path)?.len();
    status(&format!(
        "wrote {} ({:.1} MB)",
        path.display(),
        size as f64 / 1_048_576.0
    ));
    Ok(path)
}

/// Opens a bundle and checks everything Elastic Beanstalk and docs/deploy.md
/// promise about it: the platform's rules, and a statically linked binary.
pub(crate) fn check(path: &Path) -> anyhow::Result<()> {
    let entries = entries(path)?;
    check_entries(&entries)?;
    let extracted = target_dir().join("bundle/api-from-zip");
    std::fs::write(&extracted, binary(&entries)?)?;
    let described = Command::new("file")
        .arg(&extracted)
        .output()
        .context("running `file` (Debian/Ubuntu: `sudo apt-get install file`)")?;
    let description = String::from_utf8_lossy(&described.stdout);
    ensure!(
        description.contains("statically linked") || description.contains("static-pie linked"),
        "the binary is not statically linked: {description}"
    );
    status(&format!(
        "bundle check passed: {} entries, {}",
        entries.len(),
        description
            .trim()
            .replace(&*extracted.to_string_lossy(), "api")
    ));
    Ok(())
}

fn add_file(
    zip: &mut zip::ZipWriter<std::fs::File>,
    name: &str,
    source: &Path,
    mode: u32,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(mode);
    zip.start_file(name, options)?;
    zip.write_all(&bytes)?;
    Ok(())
}

/// Adds a folder; `keep_modes` keeps the execute bit of hook scripts.
fn add_tree(
    zip: &mut zip::ZipWriter<std::fs::File>,
    prefix: &str,
    dir: &Path,
    keep_modes: bool,
) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let name = format!(
            "{prefix}/{}",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        if path.is_dir() {
            add_tree(zip, &name, &path, keep_modes)?;
            continue;
        }
        let mode = if keep_modes {
            use std::os::unix::fs::PermissionsExt as _;
            if std::fs::metadata(&path)?.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            }
        } else {
            0o644
        };
        add_file(zip, &name, &path, mode)?;
    }
    Ok(())
}

/// The version label: `git describe`, falling back to the crate version.
fn version() -> anyhow::Result<String> {
    let described = Command::new("git")
        .args(["describe", "--tags", "--always", "--dirty"])
        .current_dir(project_root())
        .output();
    match described {
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        }
        _ => Ok(env!("CARGO_PKG_VERSION").to_owned()),
    }
}

/// The musl target and C compiler (ring's C and assembly need it).
fn ensure_musl() -> anyhow::Result<()> {
    crate::web::ensure_rust_target(TARGET)?;
    if Command::new("musl-gcc").arg("--version").output().is_err() {
        bail!(
            "musl-gcc was not found: install it (Debian/Ubuntu: `sudo apt-get install musl-tools`)"
        );
    }
    Ok(())
}
