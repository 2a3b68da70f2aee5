//! A minimal HTTP/1.1 client for driving the api (one request per
//! connection, no dependencies): the load's writers, health checks, and the
//! rehearsal's clients, which send from addresses of their own.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Child;
use std::time::Duration;

/// Polls `GET /health` on a local port until it answers 200.
pub fn wait_healthy(port: u16, within: Duration) -> anyhow::Result<()> {
    crate::wait_until(
        &format!("a 200 from GET /health on port {port}"),
        within,
        || {
            Ok::<_, std::io::Error>(
                send(port, "GET", "/health", None).is_ok_and(|reply| reply.status == 200),
            )
        },
    )?;
    Ok(())
}

/// SIGTERMs a child process and waits for it when dropped.
#[derive(Debug)]
pub struct Terminating(pub Child);

impl Drop for Terminating {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = crate::sigterm(self.0.id());
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
