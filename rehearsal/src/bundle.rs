//! What Elastic Beanstalk expects of a source bundle, and reading one: its
//! files with their modes, its `.ebextensions` parsed, and the checks of
//! layout, modes, line endings and ports that the platform would otherwise
//! fail at deploy time. `cargo xtask bundle` runs the checks on the bundle
//! it writes; the rehearsal reads the same bundle with them.

use std::io::Read as _;
use std::path::Path;

use anyhow::{Context as _, ensure};

use crate::alb::PROCESS_NAMESPACE;
use crate::ebextensions::{Config, PROPERTIES};

/// Where the app listens when the bundle sets no PORT: the platform's
/// default, which its nginx location proxies to.
pub const DEFAULT_APP_PORT: u16 = 5000;

/// Top-level entries a bundle may hold.
const ALLOWED_TOP: &[&str] = &["Procfile", "api", "public", ".ebextensions", ".platform"];

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

/// The `api` binary the bundle ships.
pub fn binary(entries: &[Entry]) -> anyhow::Result<&[u8]> {
    entries
        .iter()
        .find(|entry| entry.name == "api")
        .map(|entry| entry.bytes.as_slice())
        .context("the bundle lacks api")
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
    check_idle_timeout(config, entries)?;
    for file in &config.files {
        let Some(spec) = &file.source_spec else {
            continue;
        };
        // In every partition, not only the model's.
        for partition in crate::ebextensions::PARTITIONS {
            let source = config.resolve(spec, partition).with_context(|| {
                format!("{}: {} in partition {partition}", file.file, file.path)
            })?;
            ensure!(
                source.starts_with("https://"),
                "{}: {} must come from an https source, not {source} (partition {partition})",
                file.file,
                file.path
            );
        }
    }
    Ok(())
}

/// The load balancer's option namespace.
const LOAD_BALANCER_NAMESPACE: &str = "aws:elbv2:loadbalancer";

/// The load balancer's idle timeout when nothing sets it (ALB: 60 s).
const DEFAULT_ALB_IDLE_TIMEOUT: u64 = 60;

/// The load balancer must give up an idle connection to nginx before nginx
/// does: "configure the idle timeout of your application to be larger than
/// the idle timeout configured for the load balancer. Otherwise ... the
/// load balancer sends an HTTP 502 Bad Gateway error to the client"
/// (elasticloadbalancing, connection-idle-timeout). The platform's nginx
/// keeps connections alive `keepalive_timeout` seconds (60), a directive
/// its server block already holds, so a bundle cannot raise it there.
fn check_idle_timeout(config: &Config, entries: &[Entry]) -> anyhow::Result<()> {
    let keepalive = nginx_keepalive_timeout(entries)?;
    let idle = match config.option(LOAD_BALANCER_NAMESPACE, "IdleTimeout") {
        Some(value) => value.trim().parse().with_context(|| {
            format!("{LOAD_BALANCER_NAMESPACE} IdleTimeout {value:?} is not seconds")
        })?,
        None => DEFAULT_ALB_IDLE_TIMEOUT,
    };
    ensure!(
        idle < keepalive,
        "the load balancer keeps idle connections {idle} s ({LOAD_BALANCER_NAMESPACE} \
         IdleTimeout), not less than nginx's keepalive_timeout of {keepalive} s: nginx may close a \
         connection as the load balancer sends on it, a 502 for the client; set IdleTimeout below \
         {keepalive}"
    );
    Ok(())
}

/// nginx's `keepalive_timeout` in seconds: the bundle's own `nginx.conf`
/// when it replaces the platform's, else the platform's (fixture).
fn nginx_keepalive_timeout(entries: &[Entry]) -> anyhow::Result<u64> {
    let text = entries
        .iter()
        .find(|entry| entry.name == ".platform/nginx/nginx.conf")
        .map_or_else(
            || PLATFORM_NGINX_CONF.to_owned(),
            |main| String::from_utf8_lossy(&main.bytes).into_owned(),
        );
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("keepalive_timeout"))
        .find_map(|rest| {
            rest.trim()
                .trim_end_matches(';')
                .trim_end_matches('s')
                .parse()
                .ok()
        })
        .context("nginx.conf sets no keepalive_timeout in seconds")
}

/// The platform's own nginx.conf (fixture, with its sources).
const PLATFORM_NGINX_CONF: &str = include_str!("../fixtures/eb-al2023-nginx/nginx.conf");

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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use testkit::paths::project_root;

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
    fn a_load_balancer_keeping_connections_as_long_as_nginx_is_refused() {
        let mut entries = repository_entries();
        replace(
            &mut entries,
            ".ebextensions/02-health.config",
            "IdleTimeout: 50",
            "IdleTimeout: 60",
        );

        let refused = check_entries(&entries).expect_err("60 s is refused");

        let message = refused.to_string();
        assert!(
            message.contains("keeps idle connections 60 s")
                && message.contains("keepalive_timeout of 60 s"),
            "{message}"
        );
    }

    #[test]
    fn a_file_from_plain_http_in_any_partition_is_refused() {
        let mut entries = repository_entries();
        replace(
            &mut entries,
            ".ebextensions/06-rds-ca.config",
            "Url: https://rds-truststore.s3.cn-north-1",
            "Url: http://rds-truststore.s3.cn-north-1",
        );

        let refused = check_entries(&entries).expect_err("plain http is refused");

        let message = format!("{refused:#}");
        assert!(
            message.contains("must come from an https source") && message.contains("aws-cn"),
            "{message}"
        );
    }

    #[test]
    fn the_rds_ca_bundle_comes_from_the_instance_s_partition() {
        let config = config(&repository_entries()).expect("the bundle's config");
        let file = config
            .files
            .iter()
            .find(|file| file.path == "/etc/pki/rds/global-bundle.pem")
            .expect("the CA bundle is a file entry");
        let spec = file.source_spec.as_ref().expect("a source");
        let url = |partition| config.resolve(spec, partition).expect("resolves");

        assert_eq!(
            url("aws"),
            "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
        );
        assert!(url("aws-us-gov").contains("truststore.pki.us-gov-west-1.rds.amazonaws.com"));
        assert!(url("aws-cn").contains(".amazonaws.com.cn/"));
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
