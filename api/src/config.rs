//! Layered configuration: built-in defaults, an optional TOML file with
//! per-profile tables, and the environment.
//!
//! Every key is documented on its field below and in
//! `docs/configuration.md`; `.env.example` lists the environment variables.
//! The `rds.*` keys belong to the `aws` feature (`crate::aws::config`).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

pub(crate) mod errors;
pub(crate) mod values;
pub use errors::ConfigError;
use errors::{config_error, refusal};
pub use values::{Count, Origin, Seconds, SqlIdentifier};

/// The configuration compiled into the binary (the lowest layer).
const DEFAULTS: &str = include_str!("../config/defaults.toml");

/// Most connections one instance may hold: far above what one database
/// serves well, below PostgreSQL's own ceiling.
const MAX_CONNECTIONS: usize = 1000;

/// Most requests of one kind that may wait for a connection.
const MAX_QUEUE: usize = 1_000_000;

/// File read when `APP_CONFIG_FILE` is not set; missing is fine.
const DEFAULT_CONFIG_FILE: &str = "App.toml";

/// Everything the service can be told from outside.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The active profile, from `APP_PROFILE`; not a configuration key.
    #[serde(skip, default)]
    pub profile: Profile,
    /// The HTTP listener and request handling.
    pub server: ServerSettings,
    /// The PostgreSQL connections, their limits, and migrations.
    pub database: DatabaseSettings,
    /// Log output.
    pub log: LogSettings,
    /// The service's own metrics, in CloudWatch's Embedded Metric Format.
    pub metrics: MetricsSettings,
    /// Cross-origin requests from browsers.
    pub cors: CorsSettings,
    /// The compiled web client.
    pub web: WebSettings,
    /// The RDS instance: provisioning and finding the database.
    #[cfg(feature = "aws")]
    pub rds: crate::aws::config::RdsSettings,
    /// `rds.*` keys given to a build without the `aws` feature, refused
    /// with a message that says so.
    #[cfg(not(feature = "aws"))]
    #[serde(default)]
    rds: Option<figment::value::Value>,
    /// Where each value came from, for messages about keys read later
    /// (the provisioning keys).
    #[cfg(feature = "aws")]
    #[serde(skip)]
    sources: Sources,
}

/// The layers the settings were read from; never printed, since they hold
/// every value, secrets included.
#[cfg(feature = "aws")]
#[derive(Clone, Default)]
struct Sources(Figment);

#[cfg(feature = "aws")]
impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sources(…)")
    }
}

/// `server.*` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on. Elastic Beanstalk's nginx proxies to 127.0.0.1.
    pub host: IpAddr,
    /// Port to listen on; `PORT` (set by Elastic Beanstalk) also sets it.
    pub port: u16,
    /// Longest a request may take, body upload included, before a 503.
    pub request_timeout_secs: Seconds,
    /// Longest a client may take to send a request's headers, and so also
    /// longest a kept-alive connection may sit idle; then the connection is
    /// closed. Without it a client sending a byte a second holds a
    /// connection (and its memory) for as long as it likes.
    pub header_read_timeout_secs: Seconds,
    /// After SIGTERM or Ctrl-C, how long in-flight requests may run on.
    pub shutdown_grace_secs: u64,
}

/// `database.*` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/db`; `DATABASE_URL` also sets it.
    pub url: Option<SecretString>,
    /// Connections this instance's pool holds at most: the number of
    /// server backends it uses, whatever the database does (plus one while
    /// `serve` migrates on start). Across the fleet, instances × this (a
    /// rolling deploy's extra batch included) must stay below the server's
    /// `max_connections`, with room left for administration.
    pub max_connections: Count,
    /// Whether the store chooses how many statements run at once, between
    /// 1 and `max_connections`, from the wait its requests see (see
    /// `store::limit`); when false, `max_connections` may all run at once.
    pub adaptive_concurrency: bool,
    /// Longest a request waits for a connection from the pool before
    /// answering 503; keeps requests from hanging while the database is
    /// unreachable.
    pub acquire_timeout_secs: Seconds,
    /// `statement_timeout` of every connection: the server cancels a
    /// statement that runs longer (then 503). Below the request timeout.
    pub statement_timeout_secs: Seconds,
    /// `lock_timeout` of every connection: the server gives up waiting for
    /// a lock after this long (then 503). At most the statement timeout.
    pub lock_timeout_secs: Seconds,
    /// Requests of one kind (one batched statement) that may wait for a
    /// connection at once; more answer 503 at once.
    pub queue_capacity: Count,
    /// Whether `serve` applies pending migrations before listening.
    pub migrate_on_start: bool,
    /// CA bundle that the server certificate must chain to; set, the
    /// connection requires TLS with full verification (`verify-full`).
    pub ssl_root_cert: Option<PathBuf>,
}

/// `log.*` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for people, `json` (one object per line) for log shippers.
    pub format: LogFormat,
    /// A `tracing` filter such as `info,sqlx=warn`; `RUST_LOG` beats it.
    pub filter: String,
    /// Which requests get their own `request` line: `all`, or `failures`
    /// (answers other than 2xx and 3xx, and answers slower than
    /// `slow_ms`); the metrics count every request either way.
    pub requests: RequestLines,
    /// With `requests = "failures"`, answers at least this slow (in
    /// milliseconds) are logged too.
    pub slow_ms: u64,
}

/// Which requests the edge layer writes a `request` line for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLines {
    /// Every request.
    All,
    /// Failed (not 2xx or 3xx) or slow requests.
    Failures,
}

/// `metrics.*` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Whether the service writes its metrics at all.
    pub enabled: bool,
    /// How often a report is written (and so the metrics' resolution).
    pub interval_secs: Seconds,
    /// The file reports are appended to; unset: stdout, with the log.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The CloudWatch namespace of the metrics.
    pub namespace: String,
    /// The value of the metrics' `Environment` dimension: on Elastic
    /// Beanstalk, the environment's name.
    pub environment: String,
}

/// `cors.*` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins allowed to call the API from a browser, e.g.
    /// `["https://example.com"]`. Empty (the default) turns CORS off.
    pub allowed_origins: Vec<Origin>,
}

/// `web.*` keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSettings {
    /// Folder with the built client (`index.html` and hashed assets),
    /// relative to the working directory. Missing: the API is served alone.
    pub dir: PathBuf,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A named set of defaults, chosen with `APP_PROFILE`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    /// A developer's machine (the default).
    #[default]
    Local,
    /// The test suite.
    Test,
    /// A shared development environment.
    Dev,
    /// Production.
    Prod,
}

impl Profile {
    const ALL: [Profile; 4] = [Profile::Local, Profile::Test, Profile::Dev, Profile::Prod];

    /// The profile's name, as written in `APP_PROFILE` and TOML tables.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Test => "test",
            Profile::Dev => "dev",
            Profile::Prod => "prod",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = ConfigError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|profile| profile.name() == name)
            .ok_or_else(|| {
                ConfigError(format!(
                    "APP_PROFILE={name:?} is not a profile: use one of local, test, dev, prod"
                ))
            })
    }
}

impl Settings {
    /// Reads the configuration from the process environment and files.
    pub fn load() -> Result<Settings, ConfigError> {
        let profile = match std::env::var("APP_PROFILE") {
            Ok(name) => name.parse()?,
            Err(_) => Profile::default(),
        };
        let file = std::env::var_os("APP_CONFIG_FILE").map(PathBuf::from);
        Settings::from_figment(profile, Settings::figment(file))
    }

    /// The layers, lowest first, before a profile is selected.
    pub fn figment(file: Option<PathBuf>) -> Figment {
        let file = file.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        Settings::defaults_figment()
            .merge(Toml::file(file).nested())
            // Environment values are global: they beat every profile table.
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into())
                    .global(),
            )
            .merge(
                Env::raw()
                    .only(&["PORT"])
                    .map(|_| "server.port".into())
                    .global(),
            )
            .merge(
                Env::prefixed("APP_")
                    .ignore(&["PROFILE", "CONFIG_FILE"])
                    .split("__")
                    .global(),
            )
    }

    /// The built-in defaults alone: no file, no environment (for tests).
    pub fn defaults_figment() -> Figment {
        let defaults = Figment::new().merge(Toml::string(DEFAULTS).nested());
        #[cfg(feature = "aws")]
        let defaults = defaults.merge(Toml::string(crate::aws::config::DEFAULTS).nested());
        defaults
    }

    /// The keys only `api db provision` reads, checked now: unknown keys,
    /// malformed values and the storage rule are refused here, naming the
    /// key and where it was set, and nowhere else.
    #[cfg(feature = "aws")]
    pub fn provisioning(&self) -> Result<crate::aws::config::ProvisionSettings, ConfigError> {
        self.rds.provisioning(&self.sources.0)
    }

    /// Extracts and checks the settings of `profile` from `figment`.
    pub fn from_figment(profile: Profile, figment: Figment) -> Result<Settings, ConfigError> {
        let figment = figment.select(profile.name());
        let mut settings: Settings = figment
            .extract()
            .map_err(|errors| config_error(errors, &figment, ""))?;
        settings.profile = profile;
        settings.check(&figment)?;
        #[cfg(feature = "aws")]
        {
            settings.sources = Sources(figment);
        }
        Ok(settings)
    }

    /// Rules between keys, which no one key's type can carry.
    fn check(&self, figment: &Figment) -> Result<(), ConfigError> {
        let refuse = |key: &str, rule: &str| Err(refusal(figment, key, rule));
        #[cfg(feature = "aws")]
        self.rds.check(figment)?;
        #[cfg(not(feature = "aws"))]
        if self.rds.is_some() {
            return refuse(
                "rds",
                "needs the `aws` feature, which this build of api leaves out: set database.url \
                 instead, or build with the default features",
            );
        }
        let database = &self.database;
        if database.max_connections.get() > MAX_CONNECTIONS {
            return refuse(
                "database.max_connections",
                &format!("must be at most {MAX_CONNECTIONS}"),
            );
        }
        if database.queue_capacity.get() > MAX_QUEUE {
            return refuse(
                "database.queue_capacity",
                &format!("must be at most {MAX_QUEUE}"),
            );
        }
        if self.server.shutdown_grace_secs > values::MAX_SECONDS {
            return refuse(
                "server.shutdown_grace_secs",
                "must be at most 86400 (a day)",
            );
        }
        if database.statement_timeout_secs >= self.server.request_timeout_secs {
            return refuse(
                "database.statement_timeout_secs",
                "must be below server.request_timeout_secs",
            );
        }
        if database.lock_timeout_secs > database.statement_timeout_secs {
            return refuse(
                "database.lock_timeout_secs",
                "must be at most database.statement_timeout_secs",
            );
        }
        self.metrics.check(figment)
    }
}

impl MetricsSettings {
    /// CloudWatch's rules for a namespace and a dimension value.
    fn check(&self, figment: &Figment) -> Result<(), ConfigError> {
        let refuse = |key: &str, rule: &str| Err(refusal(figment, key, rule));
        let namespace = &self.namespace;
        if namespace.is_empty()
            || namespace.len() > 255
            || namespace.starts_with("AWS/")
            || !namespace.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#' | ':' | ' ')
            })
        {
            return refuse(
                "metrics.namespace",
                "must be 1 to 255 of A-Z a-z 0-9 . - _ / # : and space, not starting with AWS/ \
                 (CloudWatch's rule)",
            );
        }
        let environment = &self.environment;
        if environment.trim().is_empty()
            || environment.len() > 1024
            || environment.chars().any(char::is_control)
        {
            return refuse(
                "metrics.environment",
                "must be 1 to 1024 printable characters (a CloudWatch dimension value)",
            );
        }
        Ok(())
    }
}

impl ServerSettings {
    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout_secs.get()
    }

    /// The header read timeout as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout_secs.get()
    }

    /// The shutdown grace period as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail fixes the closures' error type"
)]
pub(crate) mod tests {
    use figment::Jail;
    use secrecy::ExposeSecret;

    use super::*;

    pub(crate) fn load_in(jail: &Jail, profile: Profile) -> Result<Settings, ConfigError> {
        let file = jail.directory().join("App.toml");
        Settings::from_figment(profile, Settings::figment(Some(file)))
    }

    #[test]
    fn built_in_defaults_need_no_file_or_environment() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let settings = load_in(jail, Profile::Local).expect("defaults load");
            assert_eq!(settings.server.port, 5000);
            assert!(settings.database.migrate_on_start);
            assert_eq!(settings.log.format, LogFormat::Pretty);
            assert!(settings.database.url.is_none());
            Ok(())
        });
    }

    #[test]
    fn the_prod_profile_logs_json_and_does_not_migrate_on_start() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let settings = load_in(jail, Profile::Prod).expect("defaults load");
            assert_eq!(settings.log.format, LogFormat::Json);
            assert!(!settings.database.migrate_on_start);
            Ok(())
        });
    }

    #[test]
    fn environment_beats_profile_tables_and_conventional_variables() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("App.toml", "[prod.server]\nport = 7000\n")?;
            jail.set_env("PORT", "6000");
            let settings = load_in(jail, Profile::Prod).expect("loads");
            assert_eq!(settings.server.port, 6000, "PORT beats the profile table");
            jail.set_env("APP_SERVER__PORT", "6500");
            let settings = load_in(jail, Profile::Prod).expect("loads");
            assert_eq!(settings.server.port, 6500, "APP_ beats PORT");
            Ok(())
        });
    }

    #[test]
    fn database_url_is_read_and_never_shown_by_debug() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("DATABASE_URL", "postgres://app:hunter2@db:5432/app");
            let settings = load_in(jail, Profile::Local).expect("loads");
            let url = settings.database.url.as_ref().expect("url set");
            assert_eq!(url.expose_secret(), "postgres://app:hunter2@db:5432/app");
            assert!(!format!("{settings:?}").contains("hunter2"));
            Ok(())
        });
    }

    #[test]
    fn a_secret_that_reads_as_a_number_is_refused_without_showing_it() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("APP_DATABASE__URL", "[\"hunter2\"]");
            let message = load_in(jail, Profile::Local).unwrap_err().to_string();
            assert!(!message.contains("hunter2"), "{message}");
            assert!(message.contains("database.url"), "{message}");
            assert!(message.contains("quote it"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_malformed_value_names_its_key_and_source() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("APP_SERVER__PORT", "eighty");
            let message = load_in(jail, Profile::Local).unwrap_err().to_string();
            assert!(message.contains("server.port"), "{message}");
            assert!(message.contains("APP_SERVER__PORT"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_refused() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("APP_DATABASE__MAX_CONECTIONS", "5");
            let message = load_in(jail, Profile::Local).unwrap_err().to_string();
            assert!(message.contains("max_conections"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn an_out_of_range_value_names_its_key_and_source() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("App.toml", "[default.database]\nmax_connections = 0\n")?;
            let message = load_in(jail, Profile::Local).unwrap_err().to_string();
            assert!(
                message.contains("database.max_connections must be at least 1"),
                "{message}"
            );
            assert!(message.contains("App.toml"), "{message}");
            jail.set_env("APP_DATABASE__MAX_CONNECTIONS", "0");
            let message = load_in(jail, Profile::Local).unwrap_err().to_string();
            assert!(
                message.contains("APP_DATABASE__MAX_CONNECTIONS"),
                "{message}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_value_too_large_to_mean_anything_is_refused_by_name() {
        for (variable, value, expected) in [
            (
                "APP_DATABASE__STATEMENT_TIMEOUT_SECS",
                "99999999999",
                "database.statement_timeout_secs must be at most 86400",
            ),
            (
                "APP_SERVER__REQUEST_TIMEOUT_SECS",
                "18446744073709551615",
                "server.request_timeout_secs must be at most 86400",
            ),
            (
                "APP_SERVER__SHUTDOWN_GRACE_SECS",
                "1000000",
                "server.shutdown_grace_secs must be at most 86400",
            ),
            (
                "APP_DATABASE__MAX_CONNECTIONS",
                "100000",
                "database.max_connections must be at most 1000",
            ),
            (
                "APP_DATABASE__QUEUE_CAPACITY",
                "18446744073709551615",
                "database.queue_capacity must be at most 1000000",
            ),
        ] {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env(variable, value);
                let message = load_in(jail, Profile::Local).unwrap_err().to_string();
                assert!(message.contains(expected), "{variable}: {message}");
                assert!(message.contains(variable), "{variable}: {message}");
                Ok(())
            });
        }
    }

    #[test]
    fn a_wildcard_or_malformed_cors_origin_is_refused() {
        for origins in [
            r#"["*"]"#,
            r#"["example.com"]"#,
            r#"["https://example.com/"]"#,
        ] {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env("APP_CORS__ALLOWED_ORIGINS", origins);
                let message = load_in(jail, Profile::Local).unwrap_err().to_string();
                assert!(message.contains("cors.allowed_origins"), "{message}");
                assert!(
                    message.contains("(set in environment variable APP_CORS__ALLOWED_ORIGINS)"),
                    "the variable a person sets, not an element's index: {message}"
                );
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("APP_CORS__ALLOWED_ORIGINS", r#"["https://example.com"]"#);
            let settings = load_in(jail, Profile::Local).expect("a valid origin loads");
            assert_eq!(settings.cors.allowed_origins, ["https://example.com"]);
            Ok(())
        });
    }

    #[cfg(not(feature = "aws"))]
    #[test]
    fn rds_keys_without_the_aws_feature_are_refused_with_the_reason() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("APP_RDS__INSTANCE_ID", "notes-db");
            let message = load_in(jail, Profile::Local).unwrap_err().to_string();
            assert!(message.contains("needs the `aws` feature"), "{message}");
            assert!(message.contains("APP_RDS"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_profile_is_refused_with_the_choices() {
        let message = "staging".parse::<Profile>().unwrap_err().to_string();
        assert!(message.contains("local, test, dev, prod"), "{message}");
    }
}
