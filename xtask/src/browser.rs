//! The browser tests: the real `api` binary serving the built client on a
//! fresh database, and the same user journeys in three engines: Chromium
//! (Playwright, `e2e/app.spec.js`), WebKit and Firefox (W3C WebDriver,
//! `e2e/webdriver/`). Every browser and driver is the system's own or built
//! from crates.io; no tool downloads one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use testkit::api_server::ApiServer;
use testkit::http::Terminating;
use testkit::paths::{project_root, target_dir};
use testkit::postgres::Cluster;
use testkit::process::{run, which};
use testkit::progress::{status, step};

use crate::cargo::debug_api;

/// geckodriver, Firefox's WebDriver server, built from crates.io.
const GECKODRIVER_VERSION: &str = "0.37.1";

/// A browser engine the journeys run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Engine {
    /// Debian's Chromium (or Google Chrome), through Playwright.
    Chromium,
    /// WebKitGTK's MiniBrowser through WebKitWebDriver, in Xvfb.
    Webkit,
    /// Firefox (ESR) through geckodriver, headless.
    Firefox,
}

impl Engine {
    /// Every engine, in the order the tests run them.
    pub(crate) const ALL: &[Engine] = &[Engine::Chromium, Engine::Webkit, Engine::Firefox];

    fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Webkit => "webkit",
            Engine::Firefox => "firefox",
        }
    }
}

/// Places Chromium is found, in order, after `CHROMIUM_PATH`.
const CHROMIUM_CANDIDATES: &[&str] = &[
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
];

/// Places WebKitGTK's MiniBrowser is found, in order, after `MINIBROWSER_PATH`.
const MINIBROWSER_CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser",
    "/usr/lib/aarch64-linux-gnu/webkit2gtk-4.1/MiniBrowser",
    "/usr/libexec/webkit2gtk-4.1/MiniBrowser",
];

/// Places Firefox is found, in order, after `FIREFOX_PATH`.
const FIREFOX_CANDIDATES: &[&str] = &[
    "/usr/bin/firefox-esr",
    "/usr/bin/firefox",
    "/Applications/Firefox.app/Contents/MacOS/firefox",
];

/// Runs the journeys in `engines` against a freshly started service. Every
/// engine's browser is looked up before anything runs, so a missing one is
/// reported at once.
pub(crate) fn test(cluster: &Cluster, engines: &[Engine]) -> anyhow::Result<()> {
    let node_bin = crate::web::ensure_npm_packages()?;
    let mut commands = Vec::new();
    for &engine in engines {
        commands.push((engine, journeys(engine, &node_bin)?));
    }
    let database = format!("browser_{}", std::process::id());
    cluster.create_database(&database)?;
    let out = target_dir().join("browser");
    std::fs::create_dir_all(&out)?;
    let web_dir = project_root().join("web/dist");
    let api = ApiServer::test_profile(
        &debug_api()?,
        &cluster.url(&database),
        &out.join("api.log"),
        &[("APP_WEB__DIR", &web_dir.to_string_lossy())],
    )?;
    status(&format!(
        "api serving on http://127.0.0.1:{} (log in {})",
        api.port(),
        out.join("api.log").display()
    ));
    for (engine, mut command) in commands {
        step(&format!("the browser journeys in {}", engine.name()));
        // MiniBrowser has no headless mode: it gets a virtual display,
        // stopped when this engine's journeys end, passed or not.
        let display = match engine {
            Engine::Webkit => Some(VirtualDisplay::start()?),
            _ => None,
        };
        if let Some(display) = &display {
            command.env("DISPLAY", &display.name);
        }
        run(command
            .current_dir(project_root())
            .env("BASE_URL", format!("http://127.0.0.1:{}", api.port()))
            .env("BROWSER_OUT", &out))?;
    }
    Ok(())
}

/// Chromium's executable: `CHROMIUM_PATH`, else the usual places.
pub(crate) fn chromium() -> anyhow::Result<PathBuf> {
    find(
        "CHROMIUM_PATH",
        CHROMIUM_CANDIDATES,
        "Chromium was not found: install it (Debian/Ubuntu: `sudo apt-get install chromium`) \
         or point CHROMIUM_PATH at a Chromium or Chrome executable",
    )
}

/// The command that runs the journeys in `engine`, with its browser and
/// driver found (geckodriver installed when missing).
fn journeys(engine: Engine, node_bin: &Path) -> anyhow::Result<Command> {
    match engine {
        Engine::Chromium => {
            let chromium = chromium()?;
            let mut command = Command::new(node_bin.join("playwright"));
            command.arg("test").env("CHROMIUM_PATH", chromium);
            Ok(command)
        }
        Engine::Webkit => {
            let driver = which("WebKitWebDriver").context(
                "WebKitWebDriver was not found: install it (Debian/Ubuntu: `sudo apt-get install webkit2gtk-driver`), \
                 or leave WebKit out with `--browsers chromium,firefox`",
            )?;
            let browser = find(
                "MINIBROWSER_PATH",
                MINIBROWSER_CANDIDATES,
                "WebKitGTK's MiniBrowser was not found (Debian/Ubuntu: it comes with `webkit2gtk-driver`); \
                 point MINIBROWSER_PATH at it",
            )?;
            xvfb()?;
            Ok(webdriver_journeys(engine, &driver, &browser))
        }
        Engine::Firefox => {
            let browser = find(
                "FIREFOX_PATH",
                FIREFOX_CANDIDATES,
                "Firefox was not found: install it (Debian: `sudo apt-get install firefox-esr`) \
                 or point FIREFOX_PATH at a Firefox executable",
            )?;
            let driver = crate::web::ensure_cargo_tool(
                "geckodriver",
                "geckodriver",
                GECKODRIVER_VERSION,
                &["--locked"],
            )?;
            Ok(webdriver_journeys(engine, &driver, &browser))
        }
    }
}

/// `node --test e2e/webdriver/journeys.test.js` for `engine`, with its
/// driver and browser.
fn webdriver_journeys(engine: Engine, driver: &Path, browser: &Path) -> Command {
    let mut node = Command::new("node");
    node.args([
        "--test",
        "--test-reporter=spec",
        "e2e/webdriver/journeys.test.js",
    ])
    .env("ENGINE", engine.name())
    .env("DRIVER_PATH", driver)
    .env("BROWSER_PATH", browser);
    node
}

/// `variable`'s path when set, else the first of `candidates` that exists.
fn find(variable: &str, candidates: &[&str], missing: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Ok(PathBuf::from(path));
    }
    match candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
    {
        Some(path) => Ok(path),
        None => bail!("{missing}. The tests never download a browser."),
    }
}

/// The X server MiniBrowser draws on.
fn xvfb() -> anyhow::Result<PathBuf> {
    which("Xvfb").context(
        "Xvfb was not found: the WebKit journeys run MiniBrowser on a virtual display \
         (Debian/Ubuntu: `sudo apt-get install xvfb`)",
    )
}

/// An Xvfb display, stopped when dropped.
struct VirtualDisplay {
    /// The X server, SIGTERMed when dropped.
    _server: Terminating,
    /// Its `DISPLAY`, e.g. `:99`.
    name: String,
}

impl VirtualDisplay {
    /// Starts Xvfb on the first free display from :99 and waits until it
    /// accepts connections.
    fn start() -> anyhow::Result<VirtualDisplay> {
        let socket = |number: u32| PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
        let number = (99..200)
            .find(|&number| {
                !socket(number).exists() && !Path::new(&format!("/tmp/.X{number}-lock")).exists()
            })
            .context("no free X display between :99 and :199")?;
        let name = format!(":{number}");
        let mut server = Terminating(
            Command::new(xvfb()?)
                .args([
                    name.as_str(),
                    "-screen",
                    "0",
                    "1280x1024x24",
                    "-nolisten",
                    "tcp",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting Xvfb")?,
        );
        testkit::wait::wait_until(
            &format!("Xvfb to open display {name}"),
            Duration::from_secs(10),
            || {
                if socket(number).exists() {
                    return Ok(true);
                }
                if let Some(exit) = server.0.try_wait().context("waiting for Xvfb")? {
                    bail!("Xvfb exited ({exit}) before it opened display {name}");
                }
                Ok(false)
            },
        )?;
        Ok(VirtualDisplay {
            _server: server,
            name,
        })
    }
}
