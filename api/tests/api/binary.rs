//! The `api` executable as an operator runs it: help, subcommands, bad
//! configuration, and `serve` until SIGTERM.

use std::path::Path;
use std::time::Duration;

use sqlx::PgPool;
use testkit::api_server::ApiServer;
use tokio::process::Command;

const HANG: Duration = Duration::from_secs(60);

/// The binary with a clean configuration environment.
fn api() -> Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_api"));
    testkit::process::without_app_settings(&mut command);
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
async fn a_dot_env_is_read_from_the_working_folder_only() {
    let parent = std::env::temp_dir().join(format!("api-dotenv-{}", std::process::id()));
    let working = parent.join("app");
    std::fs::create_dir_all(&working).expect("the folders");
    std::fs::write(parent.join(".env"), "APP_SERVER__PORT=eighty\n").expect("the parent's .env");
    let run = || {
        // `migrate` reads the settings and, with no database set, stops at
        // once.
        let mut command = api();
        command.current_dir(&working).arg("migrate");
        command
    };

    let (_, _, above) = output(&mut run()).await;
    std::fs::write(working.join(".env"), "APP_SERVER__PORT=eighty\n").expect("its own .env");
    let (ok, _, own) = output(&mut run()).await;
    std::fs::remove_dir_all(&parent).expect("cleaned up");

    assert!(
        !above.contains("server.port"),
        "a .env above the working folder was read: {above}"
    );
    assert!(!ok);
    assert!(own.contains("server.port"), "{own}");
}

#[tokio::test]
async fn serving_without_a_database_url_says_how_to_give_one() {
    let (ok, _, stderr) = output(api().arg("serve")).await;

    assert!(!ok);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[sqlx::test(migrations = false)]
async fn serve_migrates_answers_and_stops_cleanly_on_sigterm(pool: PgPool) {
    let (url, password) = database_url(&pool, "pw-that-must-never-be-logged");
    assert!(
        url.contains(&password),
        "the password is in the URL under test"
    );
    let mut command = testkit::api_server::api_serve(Path::new(env!("CARGO_BIN_EXE_api")));
    command
        .current_dir(std::env::temp_dir())
        .env("APP_PROFILE", "test")
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "debug");
    let log = std::env::temp_dir().join(format!(
        "api-serve-{}-{}.log",
        std::process::id(),
        pool.connect_options().get_database().unwrap_or_default()
    ));
    let log_file = log.clone();
    let mut server =
        tokio::task::spawn_blocking(move || ApiServer::start(&mut command, &log, HANG))
            .await
            .expect("no panic")
            .expect("listens");

    let port = server.port();
    let response =
        tokio::task::spawn_blocking(move || testkit::http::send(port, "GET", "/data", None))
            .await
            .expect("no panic")
            .expect("answers");
    let (exit, server) = tokio::task::spawn_blocking(move || (server.terminate(), server))
        .await
        .expect("no panic");
    let exit = exit.expect("SIGTERM sent and the exit seen");
    let log = server.log();

    assert_eq!(response.status, 200, "{response:?}");
    assert!(exit.success(), "{exit}");
    assert!(log.contains("stopped"), "{log}");
    // Written out at exit: the log's writer holds lines for up to 20 ms,
    // and SIGTERM came right after the answer.
    assert!(
        log.lines()
            .any(|line| line.contains("request") && line.contains("/data") && line.contains("200")),
        "no request line for the GET /data answered before SIGTERM: {log}"
    );
    assert!(!log.contains(&password), "the password leaked: {log}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM data")
        .fetch_one(&pool)
        .await
        .expect("migrated on start");
    assert_eq!(rows, 0);
    let _ = std::fs::remove_file(log_file);
}
