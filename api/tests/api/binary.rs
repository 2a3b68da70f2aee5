//! The `api` executable as an operator runs it: help, subcommands, bad
//! configuration, and `serve` until SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const HANG: Duration = Duration::from_secs(60);

/// The binary with a clean configuration environment.
fn api() -> Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_api"));
    testkit::without_app_settings(&mut command);
    let mut command = Command::from(command);
    // No `.env` or `App.toml` is picked up from a folder of its own.
    command
        .current_dir(std::env::temp_dir())
        .env("APP_PROFILE", "test")
        .kill_on_drop(true);
    command
}

async fn output(command: &mut Command) -> (bool, String, String) {
    let output = tokio::time::timeout(HANG, command.output())
        .await
        .expect("no hang")
        .expect("runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `DATABASE_URL` pointed at the test's own database, and the password in
/// it: the URL's own when it has one, else `password`, inserted (the test
/// cluster trusts local connections, so any password connects).
fn database_url(pool: &PgPool, password: &str) -> (String, String) {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let database = pool
        .connect_options()
        .get_database()
        .expect("a database name")
        .to_owned();
    let (scheme, rest) = base.split_once("://").expect("a URL");
    let (rest, query) = rest
        .split_once('?')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let (authority, _) = rest.split_once('/').unwrap_or((rest, ""));
    let (authority, secret) = match authority.split_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((_, own)) if !own.is_empty() => (authority.to_owned(), own.to_owned()),
            _ => (
                format!("{}:{password}@{host}", user.trim_end_matches(':')),
                password.to_owned(),
            ),
        },
        None => (
            format!("postgres:{password}@{authority}"),
            password.to_owned(),
        ),
    };
    let query = query.map(|query| format!("?{query}")).unwrap_or_default();
    (format!("{scheme}://{authority}/{database}{query}"), secret)
}

#[tokio::test]
async fn help_documents_the_subcommands() {
    let (ok, stdout, _) = output(api().arg("--help")).await;

    assert!(ok);
    for subcommand in ["serve", "migrate", "openapi"] {
        assert!(stdout.contains(subcommand), "{stdout}");
    }
}

#[tokio::test]
async fn the_openapi_subcommand_prints_the_committed_document() {
    let (ok, stdout, _) = output(api().arg("openapi")).await;

    assert!(ok);
    assert_eq!(stdout, include_str!("../../../openapi.json"));
}

#[tokio::test]
async fn a_bad_setting_stops_startup_naming_the_key_and_source() {
    let (ok, _, stderr) = output(
        api()
            .env("APP_SERVER__PORT", "eighty")
            .env("DATABASE_URL", "postgres://x@127.0.0.1:1/x"),
    )
    .await;

    assert!(!ok);
    assert!(stderr.contains("server.port"), "{stderr}");
    assert!(stderr.contains("APP_"), "{stderr}");
}

#[tokio::test]
async fn serving_without_a_database_url_says_how_to_give_one() {
    let (ok, _, stderr) = output(api().arg("serve")).await;

    assert!(!ok);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

/// Collects every line the child writes to stdout and stderr until it
/// exits, and announces the address from the "listening on" line.
fn follow_output(
    child: &mut Child,
) -> (
    tokio::sync::oneshot::Receiver<String>,
    tokio::task::JoinHandle<Vec<String>>,
) {
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (announce, address) = tokio::sync::oneshot::channel();
    let lines = tokio::spawn(async move {
        let mut announce = Some(announce);
        let mut log = Vec::new();
        let mut out = BufReader::new(stdout).lines();
        let mut err = BufReader::new(stderr).lines();
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            let line = tokio::select! {
                line = out.next_line(), if out_open => line.ok().flatten().or_else(|| { out_open = false; None }),
                line = err.next_line(), if err_open => line.ok().flatten().or_else(|| { err_open = false; None }),
            };
            let Some(line) = line else { continue };
            if let Some((_, rest)) = line.split_once("listening on http://")
                && let Some(sender) = announce.take()
            {
                let _ = sender.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            log.push(line);
        }
        log
    });
    (address, lines)
}

#[sqlx::test(migrations = false)]
async fn serve_migrates_answers_and_stops_cleanly_on_sigterm(pool: PgPool) {
    let (url, password) = database_url(&pool, "pw-that-must-never-be-logged");
    assert!(
        url.contains(&password),
        "the password is in the URL under test"
    );
    let mut child = api()
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("APP_SERVER__PORT", "0")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let (address, output) = follow_output(&mut child);

    let address = tokio::time::timeout(HANG, address)
        .await
        .expect("no hang")
        .expect("listens");
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connects");
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"GET /data HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("writes");
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
        .await
        .expect("reads");
    let killed = testkit::sigterm(child.id().expect("running"));
    let exit = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("exits in time")
        .expect("waits");
    let log = output.await.expect("collects the output");

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(killed.is_ok(), "{killed:?}");
    assert!(exit.success(), "{exit}");
    assert!(log.iter().any(|line| line.contains("stopped")), "{log:?}");
    assert!(
        log.iter().all(|line| !line.contains(&password)),
        "the password leaked: {log:?}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM data")
        .fetch_one(&pool)
        .await
        .expect("migrated on start");
    assert_eq!(rows, 0);
}
