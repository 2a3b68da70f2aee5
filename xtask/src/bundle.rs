//! `cargo xtask bundle`: the Elastic Beanstalk source bundle. A static musl
//! binary, the `Procfile`, the built web client and the platform files, and
//! nothing else; checked after it is written.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use zip::write::SimpleFileOptions;

use crate::ebextensions::{Config, PROPERTIES};
use crate::rehearse::alb::PROCESS_NAMESPACE;
use crate::{cargo, project_root, run, status, step, web};
use testkit::target_dir;

/// Where the app listens when the bundle sets no PORT: the platform's
/// default, which its nginx location proxies to.
pub const DEFAULT_APP_PORT: u16 = 5000;

/// The target of the shipped binary: static, so it runs on Amazon Linux
/// 2023's glibc 2.34 whatever the build machine has.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// Top-level entries a bundle may hold.
const ALLOWED_TOP: &[&str] = &["Procfile", "api", "public", ".ebextensions", ".platform"];

/// Builds the bundle and returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
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

/// One file of a bundle.
#[derive(Debug)]
pub struct Entry {
    /// Its path in the zip.
    pub name: String,
    /// Its Unix mode (0 when the zip records none).
    pub mode: u32,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Every file of a bundle, in zip order.
pub fn entries(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut zip = zip::ZipArchive::new(
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    )?;
    let mut entries = Vec::new();
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index)?;
        if entry.is_dir() {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        entries.push(Entry {
            name: entry.name().to_owned(),
            mode: entry.unix_mode().unwrap_or(0),
            bytes,
        });
    }
    Ok(entries)
}

/// The bundle's `.ebextensions`, parsed.
pub fn config(entries: &[Entry]) -> anyhow::Result<Config> {
    Config::parse(
        entries
            .iter()
            .filter(|entry| {
                entry.name.starts_with(".ebextensions/") && entry.name.ends_with(".config")
            })
            .map(|entry| {
                (
                    entry.name.trim_start_matches(".ebextensions/").to_owned(),
                    String::from_utf8_lossy(&entry.bytes).into_owned(),
                )
            })
            .collect(),
    )
}

/// Opens a bundle and checks everything Elastic Beanstalk and the README
/// promise about it.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let entries = entries(path)?;
    check_entries(&entries)?;
    let binary = &entries
        .iter()
        .find(|entry| entry.name == "api")
        .context("the bundle lacks api")?
        .bytes;
    let extracted = target_dir().join("bundle/api-from-zip");
    std::fs::write(&extracted, binary)?;
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

/// Everything but the binary's linking: layout, modes, line endings and
/// what the platform will do with the settings.
pub fn check_entries(entries: &[Entry]) -> anyhow::Result<()> {
    ensure!(!entries.is_empty(), "the bundle is empty");
    ensure!(
        entries[0].name == "Procfile",
        "the Procfile must be the first entry"
    );
    for entry in entries {
        let name = entry.name.as_str();
        let top = name.split('/').next().unwrap_or_default();
        ensure!(
            ALLOWED_TOP.contains(&top),
            "unexpected entry {name}: only {ALLOWED_TOP:?} belong in a bundle"
        );
        ensure!(
            !name.ends_with(".env") && !name.contains("/src/"),
            "{name} must not be shipped"
        );
        if name == "Procfile" {
            ensure!(
                String::from_utf8_lossy(&entry.bytes)
                    .lines()
                    .next()
                    .is_some_and(|line| line.starts_with("web: ")),
                "the Procfile must start with `web: `"
            );
        }
        if name == "api" || is_hook(name) {
            ensure!(
                entry.mode & 0o111 != 0,
                "{name} must be executable (mode {:o}): Elastic Beanstalk runs platform hooks only \
                 when they are (\"All files have to have execute permission\")",
                entry.mode & 0o777
            );
        }
        if name.starts_with(".platform/")
            || name.starts_with(".ebextensions/")
            || name == "Procfile"
        {
            ensure!(
                !entry.bytes.contains(&b'\r'),
                "{name} must have LF line endings"
            );
        }
    }
    for required in [
        "api",
        "public/index.html",
        ".ebextensions/05-migrate.config",
        ".platform/hooks/postdeploy/01_smoke_check.sh",
    ] {
        ensure!(
            entries.iter().any(|entry| entry.name == required),
            "the bundle lacks {required}"
        );
    }
    let config = config(entries)?;
    check_platform(&config, entries)?;
    Ok(())
}

/// A platform hook: Elastic Beanstalk executes every file under these.
pub fn is_hook(name: &str) -> bool {
    name.starts_with(".platform/hooks/") || name.starts_with(".platform/confighooks/")
}

/// What the platform will do with the settings: the load balancer must
/// reach nginx, and nginx the app.
fn check_platform(config: &Config, entries: &[Entry]) -> anyhow::Result<()> {
    let nginx_port = nginx_listen_port(entries)?;
    let process_port = config.option(PROCESS_NAMESPACE, "Port").unwrap_or("80");
    ensure!(
        process_port.trim() == nginx_port.to_string(),
        "{PROCESS_NAMESPACE} Port is {process_port}, but nginx listens on {nginx_port}: Port is the \
         instance port the load balancer sends traffic and health checks to (the platform's nginx, \
         default 80), not the app's PORT; the app listens on 127.0.0.1 only, out of the load \
         balancer's reach"
    );
    let app_port: u16 = match config.option(PROPERTIES, "PORT") {
        Some(port) => port
            .trim()
            .parse()
            .with_context(|| format!("the PORT environment property {port:?} is not a port"))?,
        None => DEFAULT_APP_PORT,
    };
    ensure!(
        app_port != nginx_port,
        "the PORT environment property is {app_port}, where nginx listens: the app needs a port of \
         its own behind nginx"
    );
    // A bundle that replaces the platform's proxy location must still send
    // to the port the app listens on.
    if let Some(location) = entries
        .iter()
        .find(|entry| entry.name == ".platform/nginx/conf.d/elasticbeanstalk/00_application.conf")
    {
        let nginx: String = entries
            .iter()
            .filter(|entry| entry.name.starts_with(".platform/nginx/"))
            .map(|entry| String::from_utf8_lossy(&entry.bytes).into_owned())
            .collect();
        ensure!(
            nginx.contains(&format!("127.0.0.1:{app_port}")),
            "{} replaces the platform's proxy location, but no nginx file of the bundle sends to \
             127.0.0.1:{app_port} (the PORT environment property, where the app listens)",
            location.name
        );
    }
    for file in &config.files {
        if let Some(source) = &file.source {
            ensure!(
                source.starts_with("https://"),
                "{}: {} must come from an https source, not {source}",
                file.file,
                file.path
            );
        }
    }
    Ok(())
}

/// Where the platform's nginx listens: 80, unless the bundle replaces the
/// whole `nginx.conf` with one that listens elsewhere.
fn nginx_listen_port(entries: &[Entry]) -> anyhow::Result<u16> {
    let Some(main) = entries
        .iter()
        .find(|entry| entry.name == ".platform/nginx/nginx.conf")
    else {
        return Ok(80);
    };
    let text = String::from_utf8_lossy(&main.bytes);
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("listen"))
        .filter_map(|rest| {
            rest.split(|c: char| c.is_whitespace() || c == ';' || c == ':')
                .filter(|part| !part.is_empty())
                .find_map(|part| part.parse::<u16>().ok())
        })
        .next()
        .context(
            ".platform/nginx/nginx.conf replaces the platform's nginx.conf but has no listen port",
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's own platform files, as the bundle holds them.
    fn repository_entries() -> Vec<Entry> {
        let root = project_root();
        let mut entries = vec![
            Entry {
                name: "Procfile".to_owned(),
                mode: 0o644,
                bytes: std::fs::read(root.join("Procfile")).expect("Procfile"),
            },
            Entry {
                name: "api".to_owned(),
                mode: 0o755,
                bytes: Vec::new(),
            },
            Entry {
                name: "public/index.html".to_owned(),
                mode: 0o644,
                bytes: Vec::new(),
            },
        ];
        for top in [".ebextensions", ".platform"] {
            let mut files = Vec::new();
            collect(&root.join(top), &mut files);
            files.sort();
            for path in files {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&path)
                    .expect("metadata")
                    .permissions()
                    .mode();
                entries.push(Entry {
                    name: path
                        .strip_prefix(&root)
                        .expect("under the root")
                        .display()
                        .to_string(),
                    mode: if mode & 0o111 != 0 { 0o755 } else { 0o644 },
                    bytes: std::fs::read(&path).expect("readable"),
                });
            }
        }
        entries
    }

    fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                collect(&path, files);
            } else {
                files.push(path);
            }
        }
    }

    fn replace(entries: &mut [Entry], name: &str, from: &str, to: &str) {
        let entry = entries
            .iter_mut()
            .find(|entry| entry.name == name)
            .unwrap_or_else(|| panic!("{name} is in the bundle"));
        let text = String::from_utf8_lossy(&entry.bytes).into_owned();
        assert!(text.contains(from), "{name} holds {from:?}");
        entry.bytes = text.replace(from, to).into_bytes();
    }

    #[test]
    fn the_repository_platform_files_pass() {
        check_entries(&repository_entries()).expect("the bundle's platform files pass");
    }

    #[test]
    fn a_process_port_other_than_nginx_s_is_refused() {
        let mut entries = repository_entries();
        replace(
            &mut entries,
            ".ebextensions/02-health.config",
            "Port: \"80\"",
            "Port: \"5000\"",
        );

        let refused = check_entries(&entries).expect_err("Port 5000 is refused");

        let message = refused.to_string();
        assert!(
            message.contains("Port is 5000, but nginx listens on 80"),
            "{message}"
        );
    }

    #[test]
    fn a_hook_without_its_execute_bit_is_refused() {
        let mut entries = repository_entries();
        let hook = entries
            .iter_mut()
            .find(|entry| entry.name == ".platform/hooks/postdeploy/01_smoke_check.sh")
            .expect("the smoke check hook");
        hook.mode = 0o644;

        let message = check_entries(&entries)
            .expect_err("a hook without x is refused")
            .to_string();

        assert!(
            message.contains("01_smoke_check.sh must be executable"),
            "{message}"
        );
    }

    #[test]
    fn a_replaced_proxy_location_must_send_to_port() {
        let mut entries = repository_entries();
        entries.push(Entry {
            name: ".platform/nginx/conf.d/elasticbeanstalk/00_application.conf".to_owned(),
            mode: 0o644,
            bytes: b"location / { proxy_pass http://127.0.0.1:8080; }\n".to_vec(),
        });

        let message = check_entries(&entries)
            .expect_err("a location to another port is refused")
            .to_string();

        assert!(message.contains("127.0.0.1:5000"), "{message}");
    }
}
