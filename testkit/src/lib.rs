//! Test fixtures shared by `cargo xtask` (its tasks, the benchmark), the
//! rehearsal and the integration tests, so that each exists once: the
//! project's folders, commands run to completion, free ports, a child's
//! clean environment, SIGTERM, the one wait loop, the api as a process on
//! port 0 ([`ApiServer`]), PostgreSQL clusters ([`postgres`]), test
//! certificates ([`tls`]), hosts in network namespaces ([`network`]), the
//! HTTP client ([`http`]), write load ([`load`]), and the pinned Python
//! tools with moto, the AWS emulator ([`moto`]).

pub mod http;
pub mod load;
pub mod moto;
pub mod network;
pub mod postgres;
pub mod tls;

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The repository root.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives one level below the root")
        .to_path_buf()
}

/// The cargo target folder (`CARGO_TARGET_DIR`, or `target/` in the root).
/// A relative `CARGO_TARGET_DIR` is taken from the root, where xtask runs
/// cargo: a test binary runs in its own crate's folder.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| project_root().join(dir))
        .unwrap_or_else(|| project_root().join("target"))
}

/// A port nobody listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether this process runs as root (then PostgreSQL runs as `postgres`,
/// and network namespaces need no `sudo`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// Removes the service's settings inherited from the developer's environment
/// (or `.env`), so a child gets exactly the settings it is given: an
/// `APP_DATABASE__URL` there would otherwise beat the test's `DATABASE_URL`.
pub fn without_app_settings(command: &mut Command) -> &mut Command {
    remove_app_settings(command, std::env::vars_os().map(|(name, _)| name))
}

fn remove_app_settings(
    command: &mut Command,
    inherited: impl Iterator<Item = std::ffi::OsString>,
) -> &mut Command {
    for name in inherited {
        let name = name.to_string_lossy();
        if name.starts_with("APP_") || matches!(name.as_ref(), "DATABASE_URL" | "PORT" | "RUST_LOG")
        {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// Sends SIGTERM to process `pid` (as `kill -TERM`: no `unsafe` here);
/// fails when it could not be sent.
pub fn sigterm(pid: u32) -> io::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -TERM {pid} failed ({status})"
        )))
    }
}

/// Runs a command to completion; a non-zero exit is an error naming it.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let exit = command
        .status()
        .map_err(|error| anyhow::anyhow!("starting {:?}: {error}", command.get_program()))?;
    if !exit.success() {
        anyhow::bail!(
            "{:?} {:?} failed ({exit})",
            command.get_program(),
            command.get_args().collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// The first `program` on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// A progress line for the person at the terminal, headed by the program
/// that prints it (`xtask:`, `rehearsal:`, `reliability:`).
pub fn status(message: &str) {
    eprintln!("{}: {message}", program());
}

/// The start of a named step in a long task.
pub fn step(message: &str) {
    eprintln!("\n{}: ==> {message}", program());
}

/// This program's name; for a test binary, its target's name without the
/// hash cargo appends (`rehearsal-0123456789abcdef`).
fn program() -> &'static str {
    static NAME: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let path = std::env::current_exe().unwrap_or_default();
        let stem = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "testkit".to_owned());
        without_hash(&stem).to_owned()
    });
    &NAME
}

/// `name` without a trailing `-` and 16 hexadecimal digits.
fn without_hash(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((target, hash))
            if hash.len() == 16 && hash.bytes().all(|byte| byte.is_ascii_hexdigit()) =>
        {
            target
        }
        _ => name,
    }
}

/// Installs the npm packages of `package-lock.json` (`npm ci`): the
/// browser tests' drivers, the linters, npm's PostgreSQL 16.
pub fn npm_ci() -> anyhow::Result<()> {
    status("installing npm packages (npm ci)");
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(project_root())
        .status();
    match npm {
        Ok(exit) if exit.success() => Ok(()),
        Ok(exit) => anyhow::bail!("npm ci failed ({exit})"),
        Err(_) => anyhow::bail!(
            "npm was not found: install Node.js 20 or newer with npm (Debian/Ubuntu: `sudo apt-get install nodejs npm`)"
        ),
    }
}

/// How often [`wait_until`] looks.
const LOOK_EVERY: Duration = Duration::from_millis(10);

/// Looks every 10 ms until `ready` answers true and returns how long that
/// took; a failed look ends the wait with its error, and `within` passing
/// first with "waited … for `what`" (an [`io::ErrorKind::TimedOut`]).
/// The one "look, check the deadline, sleep" loop of the fixtures.
pub fn wait_until<E: From<io::Error>>(
    what: &str,
    within: Duration,
    mut ready: impl FnMut() -> Result<bool, E>,
) -> Result<Duration, E> {
    let started = Instant::now();
    loop {
        if ready()? {
            return Ok(started.elapsed());
        }
        let Some(left) = within
            .checked_sub(started.elapsed())
            .filter(|left| !left.is_zero())
        else {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("waited {within:?} for {what}"),
            )
            .into());
        };
        std::thread::sleep(LOOK_EVERY.min(left));
    }
}

/// `api serve` from `binary`, in the repository root, with a clean
/// environment (see [`without_app_settings`]) and port 0: the kernel picks a
/// free port and [`ApiServer::start`] reads it from the "listening on" line.
/// Add the test's settings (`DATABASE_URL`, `APP_PROFILE`, …) before starting.
pub fn api_serve(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    without_app_settings(&mut command)
        .arg("serve")
        .current_dir(project_root())
        .env("APP_SERVER__PORT", "0");
    command
}

/// A running `api serve`, stopped with SIGTERM when dropped. Everything it
/// writes (stdout and stderr, line by line) goes to a log file.
#[derive(Debug)]
pub struct ApiServer {
    child: Child,
    address: SocketAddr,
    log: PathBuf,
    copiers: Vec<JoinHandle<()>>,
}

impl ApiServer {
    /// Spawns `command` (from [`api_serve`]), copying its output to `log`,
    /// and returns once it has printed the address it listens on: it
    /// answers from then on (the listener is bound; migrations ran before).
    /// Fails with the end of the log when it exits first or says nothing
    /// within `within`.
    pub fn start(command: &mut Command, log: &Path, within: Duration) -> io::Result<ApiServer> {
        let file = File::create(log)
            .map_err(|error| io::Error::other(format!("creating {}: {error}", log.display())))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                io::Error::other(format!("starting {:?}: {error}", command.get_program()))
            })?;
        let (found, address) = mpsc::channel();
        let mut copiers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            copiers.push(copy_lines(stdout, file.try_clone()?, found.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            copiers.push(copy_lines(stderr, file, found));
        }
        let mut server = ApiServer {
            child,
            address: SocketAddr::from(([0, 0, 0, 0], 0)),
            log: log.to_path_buf(),
            copiers,
        };
        match address.recv_timeout(within) {
            Ok(address) => {
                server.address = address;
                Ok(server)
            }
            Err(reason) => {
                let why = match reason {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("printed no \"listening on\" line within {within:?}")
                    }
                    mpsc::RecvTimeoutError::Disconnected => {
                        "exited before printing a \"listening on\" line".to_owned()
                    }
                };
                let _ = server.terminate();
                Err(io::Error::other(format!(
                    "the api {why}; the end of {}:\n{}",
                    log.display(),
                    tail(log, 20)
                )))
            }
        }
    }

    /// `binary` serving `database_url` with the `test` profile and the
    /// given extra settings, logging to `log`; returns once it listens.
    pub fn test_profile(
        binary: &Path,
        database_url: &str,
        log: &Path,
        settings: &[(&str, &str)],
    ) -> io::Result<ApiServer> {
        let mut command = api_serve(binary);
        command
            .env("DATABASE_URL", database_url)
            .env("APP_PROFILE", "test")
            .envs(settings.iter().copied());
        ApiServer::start(&mut command, log, Duration::from_secs(60))
    }

    /// Sends one request to it (over a fresh connection).
    pub fn send(&self, method: &str, path: &str, body: Option<&str>) -> io::Result<http::Reply> {
        http::send(self.port(), method, path, body)
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (unless it has exited), waits for the exit and for the
    /// last of its output to reach the log.
    pub fn terminate(&mut self) -> io::Result<ExitStatus> {
        if self.child.try_wait()?.is_none() {
            sigterm(self.child.id())?;
        }
        let exit = self.child.wait()?;
        for copier in self.copiers.drain(..) {
            let _ = copier.join();
        }
        Ok(exit)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// Copies `from` to `to` line by line on a thread, sending the address of
/// the first "listening on" line to `found`.
fn copy_lines(
    from: impl Read + Send + 'static,
    mut to: File,
    found: mpsc::Sender<SocketAddr>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Some(address) = listening_address(&line)
                && let Some(sender) = found.take()
            {
                let _ = sender.send(address);
            }
            if to.write_all(format!("{line}\n").as_bytes()).is_err() {
                break;
            }
        }
    })
}

/// The address in the api's "listening on http://ADDRESS" line, in either
/// log format (text, or JSON where a quote follows it).
fn listening_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("listening on http://")?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The last `lines` lines of the file at `path` (empty when it cannot be
/// read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_gets_no_app_settings_from_the_environment() {
        let inherited = [
            "APP_DATABASE__URL",
            "DATABASE_URL",
            "PORT",
            "RUST_LOG",
            "HOME",
            "APPLE",
        ];
        let mut command = Command::new("env");
        remove_app_settings(&mut command, inherited.iter().map(Into::into));
        let mut removed: Vec<String> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            ["APP_DATABASE__URL", "DATABASE_URL", "PORT", "RUST_LOG"]
        );
    }

    #[test]
    fn sigterm_ends_a_child_and_reports_a_missing_one() {
        let mut child = Command::new("sleep").arg("60").spawn().expect("sleep runs");
        sigterm(child.id()).expect("sent");
        let status = child.wait().expect("waits");
        assert!(!status.success(), "{status}");
        assert!(
            sigterm(child.id()).is_err(),
            "a reaped pid cannot be signalled"
        );
    }

    #[test]
    fn the_address_is_read_from_either_log_format() {
        assert_eq!(
            listening_address("  INFO api::cli: listening on http://127.0.0.1:40123 profile=test"),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        assert_eq!(
            listening_address(
                r#"{"level":"INFO","fields":{"message":"listening on http://[::1]:8080","profile":"prod"}}"#
            ),
            Some("[::1]:8080".parse().expect("an address"))
        );
        assert_eq!(
            listening_address("\u{1b}[3mlistening on http://0.0.0.0:5000\u{1b}[0m"),
            Some(SocketAddr::from(([0, 0, 0, 0], 5000)))
        );
        assert_eq!(listening_address("listening on nothing"), None);
    }

    #[test]
    fn a_server_that_exits_first_is_reported_with_its_log() {
        let log = std::env::temp_dir().join(format!("testkit-exits-{}.log", std::process::id()));
        let error = ApiServer::start(
            Command::new("sh").args(["-c", "echo starting; echo no database >&2; exit 1"]),
            &log,
            Duration::from_secs(30),
        )
        .expect_err("it never listened");
        let message = error.to_string();
        assert!(message.contains("exited"), "{message}");
        assert!(message.contains("no database"), "{message}");
        let _ = std::fs::remove_file(log);
    }

    #[test]
    fn a_server_is_found_from_its_line_and_stopped() {
        let log = std::env::temp_dir().join(format!("testkit-listens-{}.log", std::process::id()));
        let mut server = ApiServer::start(
            Command::new("sh").args([
                "-c",
                "echo 'INFO listening on http://127.0.0.1:4321'; exec sleep 60",
            ]),
            &log,
            Duration::from_secs(30),
        )
        .expect("it said where it listens");
        assert_eq!(server.port(), 4321);
        let exit = server.terminate().expect("stops");
        assert!(!exit.success(), "ended by SIGTERM: {exit}");
        assert!(server.log().contains("listening on"), "{}", server.log());
        let _ = std::fs::remove_file(log);
    }

    #[test]
    fn a_test_binary_is_named_after_its_target_without_cargo_s_hash() {
        assert_eq!(without_hash("rehearsal-0123456789abcdef"), "rehearsal");
        assert_eq!(without_hash("api-server-0123456789abcdef"), "api-server");
        assert_eq!(without_hash("xtask"), "xtask");
        assert_eq!(without_hash("cargo-deny"), "cargo-deny");
    }

    #[test]
    fn waiting_ends_when_ready_on_a_failed_look_or_at_the_deadline() {
        let mut looks = 0;
        let took = wait_until::<io::Error>("the third look", Duration::from_secs(30), || {
            looks += 1;
            Ok(looks == 3)
        })
        .expect("ready on the third look");
        assert_eq!(looks, 3);
        assert!(took >= 2 * LOOK_EVERY, "{took:?}");

        let failed = wait_until::<io::Error>("nothing", Duration::from_secs(30), || {
            Err(io::Error::other("the process exited"))
        })
        .unwrap_err();
        assert_eq!(failed.to_string(), "the process exited");

        let timed_out = wait_until::<io::Error>("a reply", Duration::from_millis(30), || Ok(false))
            .unwrap_err();
        assert_eq!(timed_out.kind(), io::ErrorKind::TimedOut);
        assert_eq!(timed_out.to_string(), "waited 30ms for a reply");
    }
}
