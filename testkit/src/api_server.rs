//! The api as a process for tests and tasks: `api serve` on port 0 from a
//! clean environment, found at the address it prints, its output in a log
//! file, stopped with SIGTERM.

use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::http;
use crate::paths::project_root;
use crate::process::{sigterm, without_app_settings};

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
    /// The `api serve` process.
    child: Child,
    /// Where it listens, from its "listening on" line.
    address: SocketAddr,
    /// The file its output goes to.
    log: PathBuf,
    /// The threads copying its stdout and stderr to the log.
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
}
