//! The browser tests: the real `api` binary serving the built client on a
//! fresh database, driven by Playwright in the system's Chromium.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::postgres::{Cluster, free_port};
use crate::{cargo, project_root, run, status};

/// Places Chromium is found, in order, after `CHROMIUM_PATH`.
const CHROMIUM_CANDIDATES: &[&str] = &[
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
];

/// Longest wait for the service to answer `/health`.
const STARTUP: Duration = Duration::from_secs(60);

/// Runs the Playwright suite against a freshly started service.
pub fn test(cluster: &Cluster) -> anyhow::Result<()> {
    let chromium = find_chromium()?;
    let database = format!("browser_{}", std::process::id());
    cluster.psql(
        "postgres",
        &["-c", &format!("DROP DATABASE IF EXISTS {database}")],
    )?;
    cluster.psql("postgres", &["-c", &format!("CREATE DATABASE {database}")])?;
    run(cargo().args(["build", "--package", "api", "--locked", "--quiet"]))?;
    let out = target_dir().join("browser");
    std::fs::create_dir_all(&out)?;
    let port = free_port()?;
    let log = std::fs::File::create(out.join("api.log"))?;
    let server = Command::new(target_dir().join("debug/api"))
        .arg("serve")
        .current_dir(project_root())
        .env("DATABASE_URL", cluster.url(&database))
        .env("APP_PROFILE", "test")
        .env("APP_SERVER__PORT", port.to_string())
        .env("APP_WEB__DIR", project_root().join("web/dist"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the api")?;
    let server = Server(server);
    wait_until_healthy(port)?;
    status(&format!(
        "api serving on http://127.0.0.1:{port} (log in {})",
        out.join("api.log").display()
    ));
    let playwright = project_root().join("node_modules/.bin/playwright");
    let result = run(Command::new(playwright)
        .args(["test"])
        .current_dir(project_root())
        .env("BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("CHROMIUM_PATH", &chromium)
        .env("BROWSER_OUT", &out));
    drop(server);
    result
}

/// Stops the service with SIGTERM when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

fn find_chromium() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM_PATH") {
        return Ok(PathBuf::from(path));
    }
    CHROMIUM_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .context(
            "Chromium was not found: install it (Debian/Ubuntu: `sudo apt-get install chromium`) \
             or point CHROMIUM_PATH at a Chromium or Chrome executable. The tests never download a browser.",
        )
}

/// Polls `GET /health` until it answers 200.
fn wait_until_healthy(port: u16) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < STARTUP {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream
                .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the api did not answer /health within {STARTUP:?}: see target/browser/api.log")
}
