//! The debug `api` binary as a child process (testkit's `ApiServer`), and a
//! minimal HTTP/1.1 client for driving it (one request per connection, no
//! dependencies).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::bail;
use testkit::ApiServer;

use crate::{cargo, run};

/// Longest wait for the service to say where it listens.
const STARTUP: Duration = Duration::from_secs(60);

/// A running debug `api serve` with the `test` profile, stopped when dropped.
#[derive(Debug)]
pub struct ApiProcess {
    server: ApiServer,
    /// Port it listens on (127.0.0.1), the one the kernel gave it.
    pub port: u16,
}

impl ApiProcess {
    /// Builds the debug binary and starts it on a port of the kernel's
    /// choosing with the `test` profile, the given database and extra
    /// settings, logging to `log`; returns once it listens.
    pub fn start(
        database_url: &str,
        log: &Path,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<ApiProcess> {
        run(cargo().args(["build", "--package", "api", "--locked", "--quiet"]))?;
        let mut command = testkit::api_serve(&testkit::target_dir().join("debug/api"));
        command
            .env("DATABASE_URL", database_url)
            .env("APP_PROFILE", "test")
            .envs(settings.iter().copied());
        let server = ApiServer::start(&mut command, log, STARTUP)?;
        let port = server.port();
        Ok(ApiProcess { server, port })
    }

    /// Sends `request` to this process.
    pub fn send(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Reply> {
        send(self.port, method, path, body)
    }

    /// Sends SIGTERM and waits for the exit; returns it and how long it took.
    pub fn terminate(&mut self) -> anyhow::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        let exit = self.server.terminate()?;
        Ok((exit, started.elapsed()))
    }
}

/// Polls `GET /health` on a local port until it answers 200.
pub fn wait_healthy(port: u16, within: Duration) -> anyhow::Result<()> {
    testkit::wait_until(
        &format!("a 200 from GET /health on port {port}"),
        within,
        || Ok::<_, std::io::Error>(send(port, "GET", "/health", None).is_ok_and(|reply| reply.status == 200)),
    )?;
    Ok(())
}

/// SIGTERMs a child process and waits for it when dropped.
#[derive(Debug)]
pub struct Terminating(pub Child);

impl Drop for Terminating {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = testkit::sigterm(self.0.id());
            let _ = self.0.wait();
        }
    }
}

/// A buffered response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// The `retry-after` header, if any.
    pub retry_after: Option<String>,
    /// The body as text.
    pub body: String,
}

/// One request over a fresh connection (`connection: close`).
pub fn send(port: u16, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Reply> {
    send_over(TcpStream::connect(("127.0.0.1", port))?, method, path, body)
}

/// One request over `stream`, which it closes.
pub fn send_over(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<Reply> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    if let Some(body) = body {
        request.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no complete response")
    })?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status line"))?;
    let header = |wanted: &str| {
        head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case(wanted)
                .then(|| value.trim().to_owned())
        })
    };
    Ok(Reply {
        status,
        content_type: header("content-type"),
        retry_after: header("retry-after"),
        body: body.to_owned(),
    })
}
