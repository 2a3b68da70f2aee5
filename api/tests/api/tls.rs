//! TLS with full verification, and renewing connect options (IAM tokens)
//! under load. `cargo xtask test` runs PostgreSQL with `ssl = on` and a
//! server certificate for `localhost` from a test CA (`TEST_TLS_CA`).

use std::time::Duration;

use api::db::{IamAuth, refresh_tokens};
use api::store::Store;
use domain::NewData;

use crate::helpers::test_settings;
use api::rds::Endpoint;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions as _, Connection as _, PgPool};

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

/// Static test credentials: tokens are signed locally, nothing is sent.
async fn signing_config() -> SdkConfig {
    let credentials =
        aws_sdk_rds::config::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials)
        .load()
        .await
}

#[tokio::test]
async fn an_iam_token_is_signed_for_the_user_and_endpoint() {
    let endpoint = Endpoint {
        host: "notes.abc123.us-east-1.rds.amazonaws.com".to_owned(),
        port: 5432,
    };

    let token = api::rds::auth_token(&signing_config().await, &endpoint, "notes_app")
        .await
        .expect("signs");

    assert!(
        token.starts_with("notes.abc123.us-east-1.rds.amazonaws.com:5432/?"),
        "{token}"
    );
    assert!(
        token.contains("Action=connect") && token.contains("DBUser=notes_app"),
        "{token}"
    );
    assert!(token.contains("X-Amz-Signature="), "{token}");
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn the_token_refresher_keeps_the_store_serving_across_renewals(pool: PgPool) {
    // The test server trusts this user, so any token is accepted: this
    // proves renewals swap the store's options without disturbing its
    // serving (store.rs proves a renewed password really reaches a new
    // connection, under password authentication).
    let options = (*pool.connect_options()).clone();
    let store = Store::start(options.clone(), test_settings().database.store());
    let endpoint = Endpoint {
        host: "localhost".to_owned(),
        port: options.get_port(),
    };
    let iam = IamAuth::new(signing_config().await, endpoint, "postgres".to_owned());
    let refresher = refresh_tokens(store.clone(), options, iam, Duration::from_millis(20));

    let mut writes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while tokio::time::Instant::now() < deadline {
        store
            .insert(
                NewData::parse(Ok("renewing".to_owned()), Ok("tokens".to_owned())).expect("valid"),
            )
            .await
            .expect("writes while tokens are renewed");
        writes += 1;
    }
    refresher.abort();

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM data")
        .fetch_one(&pool)
        .await
        .expect("counts");
    assert_eq!(stored, writes);
    assert!(writes > 1);
    assert!(
        store
            .connect_options()
            .get_options()
            .is_some_and(|options| options.contains("statement_timeout")),
        "renewed options keep the statement timeout"
    );
}
