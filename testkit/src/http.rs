//! The HTTP client that drives the api from tests and tasks (the load's
//! writers, health checks): ureq, one request per connection, so that a
//! refused connection or a reset during an outage is one request's outcome
//! and never a pooled connection's. [`call`] sends the typed calls of the
//! `client` crate; [`send`] any bytes a test chooses. A raw HTTP/1.1
//! exchange over a socket the caller opened stays for the rehearsal's
//! clients, which send from addresses of their own.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::process::Child;
use std::sync::LazyLock;
use std::time::Duration;

/// How long one request may take, connection to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The one agent: no pooled connections; statuses, redirects included, as
/// answers (a 503 is an outcome to count, not an error); never a proxy from
/// the environment (`HTTP_PROXY`), since every request goes to this machine.
static AGENT: LazyLock<ureq::Agent> = LazyLock::new(|| {
    ureq::Agent::config_builder()
        .max_idle_connections(0)
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
});

/// ureq's error as the I/O error it stands for: a refused or reset
/// connection keeps its kind, a timeout is `TimedOut`.
fn io_error(error: ureq::Error) -> io::Error {
    match error {
        ureq::Error::Timeout(_) => io::Error::new(io::ErrorKind::TimedOut, error),
        other => other.into_io(),
    }
}

/// Polls `GET /health` on a local port until it answers 200.
pub fn wait_healthy(port: u16, within: Duration) -> anyhow::Result<()> {
    let health = local(port).health();
    crate::wait::wait_until(
        &format!("a 200 from GET /health on port {port}"),
        within,
        || Ok::<_, io::Error>(call(&health).is_ok_and(|(_, health)| health.is_ok())),
    )?;
    Ok(())
}

/// The API on `127.0.0.1:port`.
pub fn local(port: u16) -> client::Client {
    client::Client::new(format!("http://127.0.0.1:{port}"))
}

/// Sends a typed call over a fresh connection: the reply as it came, and
/// the call's typed reading of it.
pub fn call<T>(call: &client::Call<T>) -> io::Result<(Reply, Result<T, client::Failure>)> {
    let wanted = call.request();
    let mut request = ureq::http::Request::builder()
        .method(wanted.method())
        .uri(wanted.uri());
    for (name, value) in wanted.headers() {
        request = request.header(name, value);
    }
    let mut response = if wanted.body().is_empty() {
        AGENT.run(request.body(()).map_err(io::Error::other)?)
    } else {
        AGENT.run(
            request
                .body(wanted.body().as_slice())
                .map_err(io::Error::other)?,
        )
    }
    .map_err(io_error)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.body_mut().read_to_vec().map_err(io_error)?;
    let read = call.read(status, &headers, &body);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let reply = Reply {
        status,
        content_type: header("content-type"),
        retry_after: header("retry-after"),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    Ok((reply, read))
}

/// SIGTERMs a child process and waits for it when dropped.
#[derive(Debug)]
pub struct Terminating(pub Child);

impl Drop for Terminating {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = crate::process::sigterm(self.0.id());
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

/// One request to `127.0.0.1:port` over a fresh connection; a JSON body
/// when given.
pub fn send(port: u16, method: &str, path: &str, body: Option<&str>) -> io::Result<Reply> {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    let mut response = match body {
        Some(body) => AGENT.run(
            request
                .header("content-type", "application/json")
                .body(body)
                .map_err(io::Error::other)?,
        ),
        None => AGENT.run(request.body(()).map_err(io::Error::other)?),
    }
    .map_err(io_error)?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    Ok(Reply {
        status: response.status().as_u16(),
        content_type: header("content-type"),
        retry_after: header("retry-after"),
        body: response.body_mut().read_to_string().map_err(io_error)?,
    })
}

/// One request over `stream`, which it closes: for clients that bind their
/// socket themselves (a source address of their own), which ureq's
/// connector would need a transport of ours for.
pub fn send_over(
    stream: TcpStream,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> io::Result<Reply> {
    send_over_with(stream, method, path, &[], body)
}

/// [`send_over`] with extra request headers, `(name, value)`.
pub fn send_over_with(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> io::Result<Reply> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
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
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no complete response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A server that answers one connection with `response`, returning the
    /// request it read.
    fn answer_once(response: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("a free port");
        let port = listener.local_addr().expect("an address").port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("a connection");
            let mut request = Vec::new();
            let mut buffer = [0; 4096];
            while !String::from_utf8_lossy(&request).contains("\"}") {
                let read = stream.read(&mut buffer).expect("the request");
                assert!(read > 0, "the client closed before its body");
                request.extend_from_slice(&buffer[..read]);
            }
            stream.write_all(response.as_bytes()).expect("the response");
            String::from_utf8_lossy(&request).into_owned()
        });
        (port, server)
    }

    #[test]
    fn an_error_status_is_an_answer_with_its_headers_and_body() {
        let (port, server) = answer_once(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\n\
             retry-after: 1\r\ncontent-length: 15\r\nconnection: close\r\n\r\n{\"status\":429}\n",
        );

        let reply = send(port, "POST", "/data", Some(r#"{"notes":"n"}"#)).expect("an answer");

        assert_eq!(reply.status, 429);
        assert_eq!(
            reply.content_type.as_deref(),
            Some("application/problem+json")
        );
        assert_eq!(reply.retry_after.as_deref(), Some("1"));
        assert_eq!(reply.body, "{\"status\":429}\n");
        let request = server.join().expect("the server");
        assert!(request.starts_with("POST /data HTTP/1.1\r\n"), "{request}");
        assert!(
            request.contains("content-type: application/json\r\n"),
            "{request}"
        );
    }

    #[test]
    fn a_refused_connection_is_an_io_error_of_its_kind() {
        let port = crate::ports::free_port().expect("a free port");

        let error = send(port, "GET", "/health", None).expect_err("nothing listens");

        // Reset, not refused, when a sibling test's child, forked while
        // `free_port` held its probe listener, held it a moment longer.
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
            ),
            "{error:?}"
        );
    }
}
