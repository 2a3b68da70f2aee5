//! RDS (the `aws` feature): waiting and error mapping with the SDK's own
//! mocks (`aws-smithy-mocks`), provisioning and lookup against moto, the
//! AWS emulator `cargo xtask test` starts (`AWS_ENDPOINT_URL`), and IAM
//! tokens signed locally and renewed under load.

use std::process::Output;
use std::time::Duration;

use api::aws::config::DatabaseAuth;
use api::aws::connect::iam_renewal;
use api::aws::rds::{self, Endpoint, RdsError};
use api::config::{Profile, Settings, SqlIdentifier};
use api::routes::data::create::InsertEntry;
use api::store::Store;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_rds::Client;
use aws_sdk_rds::error::ErrorMetadata;
use aws_sdk_rds::operation::describe_db_instances::{
    DescribeDBInstancesError, DescribeDbInstancesOutput,
};
use aws_sdk_rds::types::DbInstance;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use domain::NewData;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::helpers::{drop_role, password_role, test_settings};

/// An instance in `status`; with its endpoint once it is `available`, as
/// RDS shows it (none while `creating`).
fn instance(status: &str) -> DbInstance {
    let builder = DbInstance::builder()
        .db_instance_identifier("notes-db")
        .db_instance_status(status);
    let builder = if status == "available" {
        builder.endpoint(
            aws_sdk_rds::types::Endpoint::builder()
                .address("notes-db.abc123.eu-west-1.rds.amazonaws.com")
                .port(5432)
                .build(),
        )
    } else {
        builder
    };
    builder.build()
}

fn described(status: &'static str) -> aws_smithy_mocks::Rule {
    mock!(Client::describe_db_instances).then_output(move || {
        DescribeDbInstancesOutput::builder()
            .db_instances(instance(status))
            .build()
    })
}

/// Describe answers of an instance RDS is creating, then backing up, then
/// has available.
fn creating_then_available() -> [aws_smithy_mocks::Rule; 4] {
    [
        described("creating"),
        described("creating"),
        described("backing-up"),
        described("available"),
    ]
}

fn settings_with(id: &str) -> Settings {
    let mut settings =
        Settings::from_figment(Profile::Test, Settings::defaults_figment()).expect("defaults load");
    settings.rds.instance_id = Some(id.to_owned());
    settings
}

#[tokio::test]
async fn waiting_reports_each_status_until_available() {
    let rules = creating_then_available();
    let client = mock_client!(aws_sdk_rds, RuleMode::Sequential, &rules);
    let mut seen = Vec::new();

    let instance = rds::wait_available(
        &client,
        "notes-db",
        Duration::from_secs(60),
        Duration::ZERO,
        &mut |status| {
            seen.push(status.to_owned());
        },
    )
    .await
    .expect("becomes available");

    assert_eq!(instance.db_instance_status(), Some("available"));
    assert_eq!(
        seen,
        ["creating", "backing-up", "available"],
        "each change once"
    );
}

#[tokio::test]
async fn states_that_need_a_person_stop_the_wait_with_their_name() {
    for status in [
        "failed",
        "storage-full",
        "incompatible-parameters",
        "incompatible-network",
        "insufficient-capacity",
        "stopped",
        "deleting",
    ] {
        let rules = [described("creating"), described(status)];
        let client = mock_client!(aws_sdk_rds, RuleMode::Sequential, &rules);

        let error = rds::wait_available(
            &client,
            "notes-db",
            Duration::from_secs(60),
            Duration::ZERO,
            &mut |_| {},
        )
        .await
        .unwrap_err();

        assert!(
            matches!(&error, RdsError::BadState { status: s, .. } if s == status),
            "{error}"
        );
        assert!(error.to_string().contains(status), "{error}");
    }
}

#[tokio::test]
async fn waiting_gives_up_at_the_timeout_naming_the_last_status() {
    let rule = mock!(Client::describe_db_instances).then_output(|| {
        DescribeDbInstancesOutput::builder()
            .db_instances(instance("modifying"))
            .build()
    });
    let client = mock_client!(aws_sdk_rds, RuleMode::MatchAny, &[&rule]);

    let error = rds::wait_available(
        &client,
        "notes-db",
        Duration::ZERO,
        Duration::ZERO,
        &mut |_| {},
    )
    .await
    .unwrap_err();

    assert!(
        matches!(error, RdsError::Timeout { ref status, .. } if status == "modifying"),
        "{error}"
    );
    assert!(
        error.to_string().contains("rds.wait_timeout_secs"),
        "{error}"
    );
}

#[tokio::test]
async fn a_refused_permission_names_the_iam_action() {
    let rule = mock!(Client::describe_db_instances).then_error(|| {
        DescribeDBInstancesError::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message("User: arn:aws:iam::123456789012:user/ci is not authorized")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_rds, RuleMode::MatchAny, &[&rule]);

    let error = rds::describe(&client, "notes-db").await.unwrap_err();

    assert!(
        matches!(
            error,
            RdsError::AccessDenied {
                action: "rds:DescribeDBInstances"
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("rds:DescribeDBInstances"),
        "{error}"
    );
}

#[tokio::test]
async fn provisioning_an_existing_instance_changes_nothing() {
    // Only describe is mocked: a create call would find no rule and fail.
    let rule = described("available");
    let client = mock_client!(aws_sdk_rds, RuleMode::MatchAny, &[&rule]);

    let settings = settings_with("notes-db");
    let provisioning = settings.provisioning().expect("the defaults provision");
    let report = rds::provision(&client, &settings.rds, &provisioning, &mut |_| {})
        .await
        .expect("reports the instance");

    assert!(!report.created);
    assert_eq!(report.status, "available");
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn provisioning_again_while_the_instance_is_still_being_created_waits_for_its_endpoint() {
    // A first run was cancelled while RDS created the instance. Only
    // describe is mocked: a create call would find no rule and fail.
    let rules = creating_then_available();
    let client = mock_client!(aws_sdk_rds, RuleMode::Sequential, &rules);
    let settings = settings_with("notes-db");
    let mut provisioning = settings.provisioning().expect("the defaults provision");
    provisioning.poll_interval_secs = 0;
    let mut seen = Vec::new();

    let report = rds::provision(&client, &settings.rds, &provisioning, &mut |status| {
        seen.push(status.to_owned());
    })
    .await
    .expect("reports the instance once it is available");

    assert!(!report.created, "this run created nothing");
    assert_eq!(report.status, "available");
    assert_eq!(
        report.endpoint.map(|endpoint| endpoint.host).as_deref(),
        Some("notes-db.abc123.eu-west-1.rds.amazonaws.com")
    );
    assert_eq!(
        seen,
        ["creating", "backing-up", "available"],
        "the progress a first run shows"
    );
}

#[tokio::test]
async fn only_a_refused_sign_in_counts_as_the_app_role_not_being_ready() {
    let unreachable = sqlx::ConnectOptions::connect(
        &"postgres://nobody@127.0.0.1:1/none"
            .parse::<sqlx::postgres::PgConnectOptions>()
            .expect("parses"),
    )
    .await
    .expect_err("nothing listens on port 1");

    assert!(
        !api::aws::bootstrap::is_sign_in_refused(&unreachable),
        "an unreachable server is not a refusal: {unreachable}"
    );
}

#[sqlx::test(migrations = false)]
#[ignore = "needs a server that checks passwords of password_login members: `cargo xtask test` starts it and runs this"]
async fn a_refused_password_counts_as_the_app_role_not_being_ready(pool: PgPool) {
    let role = format!("refused_{}", std::process::id());
    password_role(&pool, &role, "right", &[]).await;

    let refused = sqlx::ConnectOptions::connect(
        &(*pool.connect_options())
            .clone()
            .username(&role)
            .password("wrong"),
    )
    .await
    .expect_err("a wrong password is refused");

    assert!(
        api::aws::bootstrap::is_sign_in_refused(&refused),
        "{refused}"
    );
    drop_role(&pool, &role).await;
}

// ---- against moto ----

/// The emulator's address. Its tests are `#[ignore]`d, so a plain `cargo
/// test` skips them; run without moto (`--include-ignored`), they fail here
/// naming the command that starts it.
fn emulator() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run the tests with `cargo xtask test`, which starts moto (the AWS emulator)",
    )
}

async fn moto_client() -> Client {
    emulator();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    Client::new(&config)
}

/// Runs `api db …` against moto.
async fn api_db(args: &[&str], instance_id: &str) -> Output {
    emulator();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_api"));
    testkit::process::without_app_settings(&mut command);
    tokio::process::Command::from(command)
        .arg("db")
        .args(args)
        .current_dir(std::env::temp_dir())
        .env("APP_PROFILE", "prod")
        .env("APP_RDS__INSTANCE_ID", instance_id)
        .env("APP_RDS__POLL_INTERVAL_SECS", "0")
        .output()
        .await
        .expect("runs")
}

/// `output`, once its command is seen to have succeeded (else its stderr).
fn succeeded(output: &Output) -> &Output {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The JSON report a successful `api db … --json` printed.
fn json_report(output: &Output) -> Value {
    serde_json::from_slice(&succeeded(output).stdout).expect("JSON on stdout")
}

fn unique_id(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    format!("notes-{label}-{nanos}")
}

#[tokio::test]
#[ignore = "needs moto (the AWS emulator): `cargo xtask test` starts it and runs this"]
async fn provision_creates_a_private_encrypted_iam_instance_once() {
    let id = unique_id("provision");

    let first = api_db(&["provision", "--json"], &id).await;
    let second = api_db(&["provision", "--json"], &id).await;

    let report = json_report(&first);
    assert_eq!(report["instance_id"], id.as_str());
    assert_eq!(report["status"], "available");
    assert_eq!(report["created"], true);
    assert_eq!(report["db_name"], "notes");
    assert!(
        report["endpoint"]["host"].is_string() && report["endpoint"]["port"].is_u64(),
        "{report}"
    );
    let again = json_report(&second);
    assert_eq!(again["created"], false, "a rerun creates nothing");

    let client = moto_client().await;
    let listed = client
        .describe_db_instances()
        .send()
        .await
        .expect("describes");
    let matching: Vec<&DbInstance> = listed
        .db_instances()
        .iter()
        .filter(|instance| instance.db_instance_identifier() == Some(id.as_str()))
        .collect();
    assert_eq!(matching.len(), 1, "exactly one instance");
    let created = matching[0];
    assert_eq!(created.engine(), Some("postgres"));
    assert!(
        created
            .engine_version()
            .is_some_and(|version| version.starts_with("16")),
        "{:?}",
        created.engine_version()
    );
    assert_eq!(created.db_instance_class(), Some("db.t4g.micro"));
    assert_eq!(created.allocated_storage(), Some(20));
    assert_eq!(created.max_allocated_storage(), Some(100));
    assert_eq!(created.storage_type(), Some("gp3"));
    assert_eq!(created.storage_encrypted(), Some(true));
    assert_eq!(created.publicly_accessible(), Some(false));
    assert_eq!(created.iam_database_authentication_enabled(), Some(true));
    assert!(
        created
            .master_user_secret()
            .and_then(|secret| secret.secret_arn())
            .is_some(),
        "managed master password"
    );
    assert_eq!(created.backup_retention_period(), Some(7));
    assert_eq!(created.deletion_protection(), Some(true), "on in prod");
    assert!(
        created
            .tag_list()
            .iter()
            .any(|tag| tag.key() == Some("application") && tag.value() == Some("notes-api")),
        "{:?}",
        created.tag_list()
    );
}

#[tokio::test]
#[ignore = "needs moto (the AWS emulator): `cargo xtask test` starts it and runs this"]
async fn status_reports_an_instance_and_names_a_missing_one() {
    let id = unique_id("status");
    let created = api_db(&["provision"], &id).await;
    succeeded(&created);

    let present = api_db(&["status", "--json"], &id).await;
    let missing = api_db(&["status"], "notes-does-not-exist").await;
    let missing_json = api_db(&["status", "--json"], "notes-does-not-exist").await;

    let report = json_report(&present);
    assert_eq!(report["exists"], true);
    assert_eq!(report["instance"]["instance_id"], id.as_str());
    assert_eq!(report["instance"]["created"], false);
    assert_eq!(report["instance"]["iam_auth"], true);
    // In JSON a missing instance is a report, not a failure to look.
    let report = json_report(&missing_json);
    assert_eq!(report["exists"], false, "{report}");
    assert_eq!(report["instance_id"], "notes-does-not-exist");
    assert_eq!(report["instance"], Value::Null);
    assert!(!missing.status.success(), "a missing instance is an error");
    let message = String::from_utf8_lossy(&missing.stderr);
    assert!(
        message.contains("notes-does-not-exist") && message.contains("does not exist"),
        "{message}"
    );
    assert!(
        !message.contains("DbInstanceNotFound"),
        "no raw SDK dump: {message}"
    );
}

#[tokio::test]
#[ignore = "needs moto (the AWS emulator): `cargo xtask test` starts it and runs this"]
async fn serve_finds_the_endpoint_of_the_instance_and_signs_in_with_iam() {
    let id = unique_id("lookup");
    let created = api_db(&["provision", "--json"], &id).await;
    let report = json_report(&created);
    let mut settings =
        Settings::from_figment(Profile::Prod, Settings::defaults_figment()).expect("loads");
    settings.rds.instance_id = Some(id);
    settings.database.ssl_root_cert = Some(std::env::temp_dir().join("rds-global-bundle.pem"));

    let connection = api::db::connection(&settings)
        .await
        .expect("resolves the endpoint");

    assert_eq!(settings.rds.auth, DatabaseAuth::Iam);
    assert_eq!(
        Some(connection.options.get_host()),
        report["endpoint"]["host"].as_str()
    );
    assert_eq!(
        u64::from(connection.options.get_port()),
        report["endpoint"]["port"].as_u64().unwrap_or_default()
    );
    assert_eq!(connection.options.get_username(), "notes_app");
    assert_eq!(connection.options.get_database(), Some("notes"));
    assert!(
        connection.renewal.is_some(),
        "the password is an IAM token, renewed in the background"
    );
}

#[tokio::test]
#[ignore = "needs moto (the AWS emulator): `cargo xtask test` starts it and runs this"]
async fn with_its_endpoint_configured_serve_needs_no_answer_from_the_rds_api() {
    emulator();
    // No such instance: describing it would fail (DBInstanceNotFound).
    let mut settings =
        Settings::from_figment(Profile::Prod, Settings::defaults_figment()).expect("loads");
    settings.rds.instance_id = Some(unique_id("never-created"));
    settings.rds.endpoint = Some("notes-db.abc123.us-east-1.rds.amazonaws.com:6543".to_owned());
    settings.database.ssl_root_cert = Some(std::env::temp_dir().join("rds-global-bundle.pem"));

    let connection = api::db::connection(&settings)
        .await
        .expect("connects where rds.endpoint says, asking RDS nothing");

    assert_eq!(
        connection.options.get_host(),
        "notes-db.abc123.us-east-1.rds.amazonaws.com"
    );
    assert_eq!(connection.options.get_port(), 6543);
    assert!(
        connection.renewal.is_some(),
        "still signs in with IAM tokens"
    );

    settings.rds.endpoint = Some("notes-db:0".to_owned());
    let error = api::db::connection(&settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("rds.endpoint (APP_RDS__ENDPOINT)"),
        "{error}"
    );
}

#[tokio::test]
#[ignore = "needs moto (the AWS emulator): `cargo xtask test` starts it and runs this"]
async fn without_the_ca_bundle_an_rds_connection_is_refused() {
    let id = unique_id("noca");
    let created = api_db(&["provision"], &id).await;
    succeeded(&created);
    let mut settings =
        Settings::from_figment(Profile::Prod, Settings::defaults_figment()).expect("loads");
    settings.rds.instance_id = Some(id);

    let error = api::db::connection(&settings)
        .await
        .unwrap_err()
        .to_string();

    assert!(error.contains("database.ssl_root_cert"), "{error}");
}

/// Makes `name` a master user as RDS makes one: not a superuser, allowed to
/// create databases and roles, a member of `rds_superuser`, which may grant
/// `rds_iam` (the roles exist on every RDS instance). The test server trusts
/// local users, so it logs in without a password.
async fn rds_shaped_master(pool: &PgPool, name: &str) {
    for statement in [
        "DO $$ BEGIN CREATE ROLE rds_superuser NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "DO $$ BEGIN CREATE ROLE rds_iam NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "GRANT rds_iam TO rds_superuser WITH ADMIN OPTION",
        &format!(
            "CREATE ROLE \"{name}\" LOGIN NOSUPERUSER CREATEDB CREATEROLE IN ROLE rds_superuser"
        ),
    ] {
        sqlx::query(statement)
            .execute(pool)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

#[sqlx::test(migrations = false)]
async fn bootstrap_as_an_rds_master_creates_the_app_role_and_its_schema_once(pool: PgPool) {
    let options = pool.connect_options();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let database = options.get_database().expect("a database").to_owned();
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database");
    let (_, host) = prefix.rsplit_once('@').expect("a URL with a user");
    let suffix = unique_id("role")
        .rsplit('-')
        .next()
        .unwrap_or("0")
        .to_owned();
    let role = format!("app_{suffix}");
    let master = format!("master_{suffix}");
    rds_shaped_master(&pool, &master).await;
    // RDS creates the instance's database owned by the master user.
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" OWNER TO \"{master}\""
    ))
    .execute(&pool)
    .await
    .expect("hands the database to the master");
    let mut settings =
        Settings::from_figment(Profile::Test, Settings::defaults_figment()).expect("loads");
    settings.database.url = Some(secrecy::SecretString::from(format!(
        "postgres://{master}@{host}/{database}"
    )));
    settings.rds.app_user = SqlIdentifier::try_from(role.clone()).expect("a plain role name");

    // Every instance of a new environment bootstraps at once.
    let at_once: Vec<_> = (0..3)
        .map(|_| {
            let settings = settings.clone();
            tokio::spawn(async move { api::aws::bootstrap::run(&settings).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for run in at_once {
        outcomes.push(
            run.await
                .expect("joins")
                .expect("every instance bootstraps without error"),
        );
    }
    let second = api::aws::bootstrap::run(&settings)
        .await
        .expect("bootstraps again");
    let created: Vec<_> = outcomes
        .iter()
        .filter(|outcome| outcome.created_role)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "one of them created the role: {outcomes:?}"
    );
    let first = created[0].clone();

    assert_eq!(
        first,
        api::aws::bootstrap::Outcome {
            already_done: false,
            created_role: true,
            granted_rds_iam: true
        }
    );
    assert_eq!(
        second,
        api::aws::bootstrap::Outcome {
            already_done: false,
            created_role: false,
            granted_rds_iam: true
        }
    );
    let (usage, create, in_rds_iam): (bool, bool, bool) = sqlx::query_as(
        "SELECT has_schema_privilege($1, $1, 'USAGE'), has_schema_privilege($1, $1, 'CREATE'), \
         pg_has_role($1, 'rds_iam', 'MEMBER')",
    )
    .bind(&role)
    .fetch_one(&pool)
    .await
    .expect("the schema exists");
    assert!(usage && create, "the role may use and create in its schema");
    assert!(in_rds_iam, "the role signs in with IAM tokens on RDS");
    // As the role (the test server trusts local users), migrations land in its schema.
    let as_role = PgPoolOptions::new()
        .connect_with((*options).clone().username(&role))
        .await
        .expect("the role logs in");
    api::db::migrate(&as_role).await.expect("the role migrates");
    let schema: String =
        sqlx::query_scalar("SELECT schemaname::text FROM pg_tables WHERE tablename = 'data'")
            .fetch_one(&pool)
            .await
            .expect("the table exists");
    assert_eq!(schema, role);
    as_role.close().await;
    for statement in [
        format!("DROP SCHEMA \"{role}\" CASCADE"),
        format!("DROP ROLE \"{role}\""),
        format!("ALTER DATABASE \"{database}\" OWNER TO CURRENT_USER"),
        format!("DROP ROLE \"{master}\""),
    ] {
        sqlx::query(&statement)
            .execute(&pool)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
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

    let token = api::aws::rds::auth_token(&signing_config().await, &endpoint, "notes_app")
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
    let store = Store::connect(options.clone(), &test_settings().database);
    let endpoint = Endpoint {
        host: "localhost".to_owned(),
        port: options.get_port(),
    };
    let renewal = iam_renewal(
        signing_config().await,
        endpoint,
        "postgres".to_owned(),
        Duration::from_millis(20),
    );
    let refresher = api::db::renew(store.clone(), options, renewal);

    let mut writes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while tokio::time::Instant::now() < deadline {
        store
            .batch(InsertEntry::new(
                NewData::parse(Ok("renewing".to_owned()), Ok("tokens".to_owned())).expect("valid"),
            ))
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
