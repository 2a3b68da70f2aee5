//! A TCP proxy between the service and PostgreSQL that a test can break:
//! kill every connection (a restart or failover, as the client sees it),
//! refuse new ones for a while (the database down), or stop forwarding
//! while keeping connections open (packets dropped: the database no longer
//! answers, nothing is refused).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use api::config::{Count, Settings};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::helpers::{TestApp, named, until};

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forwards both ways.
    Forward,
    /// Closes new connections at once (nothing listens).
    Refuse,
    /// Accepts, but forwards nothing either way (a black hole).
    Drop,
}

/// The proxy, listening on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub(crate) struct Chaos {
    /// Its port.
    pub port: u16,
    mode: watch::Sender<Mode>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
    /// Set: the next answer from the server is swallowed and its client's
    /// connection closed (the statement ran; the client never hears).
    cut_next: Arc<AtomicBool>,
}

impl Chaos {
    /// A proxy to `upstream`'s host and port.
    pub(crate) async fn start(upstream: &PgConnectOptions) -> Chaos {
        let target = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = listener.local_addr().expect("an address").port();
        let (mode, watching) = watch::channel(Mode::Forward);
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let cut_next = Arc::new(AtomicBool::new(false));
        let accept = {
            let connections = Arc::clone(&connections);
            let cut_next = Arc::clone(&cut_next);
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if *watching.borrow() == Mode::Refuse {
                        drop(client);
                        continue;
                    }
                    let target = target.clone();
                    let watching = watching.clone();
                    let cut_next = Arc::clone(&cut_next);
                    let task = tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(&target).await {
                            let _ = client.set_nodelay(true);
                            let _ = server.set_nodelay(true);
                            let (client_read, client_write) = client.into_split();
                            let (server_read, server_write) = server.into_split();
                            tokio::select! {
                                () = pump(client_read, server_write, watching.clone(), None) => {},
                                () = pump(server_read, client_write, watching, Some(cut_next)) => {},
                            }
                        }
                    });
                    connections
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(task.abort_handle());
                }
            })
            .abort_handle()
        };
        Chaos {
            port,
            mode,
            connections,
            accept,
            cut_next,
        }
    }

    /// The next answer the server sends, on any connection, is swallowed
    /// and that connection closed, as when the network or the server goes
    /// away after a statement ran but before its answer arrived.
    pub(crate) fn cut_next_answer(&self) {
        self.cut_next.store(true, Ordering::SeqCst);
    }

    /// The app on one connection through the proxy (application name
    /// `name`), opened by a first write and back in the pool: the next
    /// statement sent is the next request's, with no check before it.
    pub(crate) async fn app_on_one_connection(
        &self,
        pool: &PgPool,
        name: &str,
        mut settings: Settings,
    ) -> TestApp {
        settings.database.max_connections = Count::try_from(1).expect("not zero");
        let app = TestApp::over(self.options(named(pool, name)), pool.clone(), settings);
        app.store("before", "hi").await;
        // Its return to the pool sends a ping: wait for it.
        until(
            "the connection is back in the pool",
            Duration::from_secs(5),
            async || app.store.connections() == (1, 1),
        )
        .await;
        app
    }

    /// `options` pointed at the proxy.
    pub(crate) fn options(&self, options: PgConnectOptions) -> PgConnectOptions {
        options.host("127.0.0.1").port(self.port)
    }

    /// Sets what happens to traffic from now on.
    pub(crate) fn set(&self, mode: Mode) {
        let _ = self.mode.send(mode);
    }

    /// Closes every open connection, as a server restart does.
    pub(crate) fn kill_connections(&self) {
        for connection in self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            connection.abort();
        }
    }

    /// The database restarts: every connection is closed, new ones are
    /// refused for `down`, then it serves again.
    pub(crate) async fn restart(&self, down: Duration) {
        self.set(Mode::Refuse);
        self.kill_connections();
        tokio::time::sleep(down).await;
        self.set(Mode::Forward);
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.accept.abort();
        self.kill_connections();
    }
}

/// Copies one direction, holding everything back while in `Drop` mode;
/// answers (server to client) carry `cut`, which ends the connection
/// instead of passing the next answer on.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    cut: Option<Arc<AtomicBool>>,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        if cut
            .as_ref()
            .is_some_and(|cut| cut.swap(false, Ordering::SeqCst))
        {
            return;
        }
        while *mode.borrow() == Mode::Drop {
            if mode.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
