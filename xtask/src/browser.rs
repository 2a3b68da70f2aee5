//! The browser tests: the real `api` binary serving the built client on a
//! fresh database, driven by Playwright in the system's Chromium.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

use crate::postgres::Cluster;
use crate::service::{ApiProcess, target_dir};
use crate::{project_root, run, status};

/// Places Chromium is found, in order, after `CHROMIUM_PATH`.
const CHROMIUM_CANDIDATES: &[&str] = &[
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
];

/// Runs the Playwright suite against a freshly started service.
pub fn test(cluster: &Cluster) -> anyhow::Result<()> {
    let chromium = find_chromium()?;
    let database = format!("browser_{}", std::process::id());
    cluster.create_database(&database)?;
    let out = target_dir().join("browser");
    std::fs::create_dir_all(&out)?;
    let web_dir = project_root().join("web/dist");
    let api = ApiProcess::start(
        &cluster.url(&database),
        &out.join("api.log"),
        &[("APP_WEB__DIR", &web_dir.to_string_lossy())],
    )?;
    status(&format!(
        "api serving on http://127.0.0.1:{} (log in {})",
        api.port,
        out.join("api.log").display()
    ));
    run(
        Command::new(project_root().join("node_modules/.bin/playwright"))
            .args(["test"])
            .current_dir(project_root())
            .env("BASE_URL", format!("http://127.0.0.1:{}", api.port))
            .env("CHROMIUM_PATH", &chromium)
            .env("BROWSER_OUT", &out),
    )
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
