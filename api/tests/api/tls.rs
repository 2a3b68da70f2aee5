//! TLS with full verification. `cargo xtask test` runs PostgreSQL with
//! `ssl = on` and a server certificate for `localhost` from a test CA
//! (`TEST_TLS_CA`).

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions as _, Connection as _};

fn tls_file(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `cargo xtask test`, which starts PostgreSQL with TLS")
    })
}

/// The test server's options, to host `host`, verifying against `ca`.
fn verified(host: &str, ca: &str) -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let options: PgConnectOptions = url.parse().expect("a valid URL");
    options
        .host(host)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(ca)
}

#[tokio::test]
#[ignore = "needs PostgreSQL with TLS from a test CA: `cargo xtask test` starts it and runs this"]
async fn verify_full_accepts_the_right_ca_and_host() {
    let mut connection = verified("localhost", &tls_file("TEST_TLS_CA"))
        .connect()
        .await
        .expect("connects with verify-full");

    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .expect("reads pg_stat_ssl");
    assert!(ssl, "the session is encrypted");
    connection.close().await.expect("closes");
}

#[tokio::test]
#[ignore = "needs PostgreSQL with TLS from a test CA: `cargo xtask test` starts it and runs this"]
async fn verify_full_refuses_another_ca() {
    let refused = verified("localhost", &tls_file("TEST_TLS_OTHER_CA"))
        .connect()
        .await;

    assert!(
        refused.is_err(),
        "a certificate from an unknown CA must be refused"
    );
}

#[tokio::test]
#[ignore = "needs PostgreSQL with TLS from a test CA: `cargo xtask test` starts it and runs this"]
async fn verify_full_refuses_a_host_the_certificate_does_not_name() {
    // The certificate names `localhost` only; 127.0.0.1 is the same server.
    let refused = verified("127.0.0.1", &tls_file("TEST_TLS_CA"))
        .connect()
        .await;

    assert!(
        refused.is_err(),
        "a certificate for another name must be refused"
    );
}
