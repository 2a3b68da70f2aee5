//! `rds.*` keys: the RDS instance `serve` and `migrate` connect to when
//! `database.url` is not set, and how `api db provision` creates it. Their
//! defaults are `api/config/aws.toml`, compiled in with this feature.

use std::collections::BTreeMap;

use figment::Figment;
use figment::providers::Serialized;
use secrecy::SecretString;
use serde::Deserialize;

use crate::config::errors::{ConfigError, config_error, refusal, source_of};
use crate::config::values::SqlIdentifier;

/// The defaults of the `rds.*` keys, a layer of their own.
pub(crate) const DEFAULTS: &str = include_str!("../../config/aws.toml");

/// `rds.*` keys. The keys that only `api db provision` reads (how to create
/// the instance) are held unread: a mistake in one stops provisioning,
/// never the service ([`RdsSettings::provisioning`]).
#[derive(Debug, Clone, Deserialize)]
pub struct RdsSettings {
    /// DB instance identifier; unset, nothing is looked up in RDS.
    pub instance_id: Option<String>,
    /// The instance's endpoint, `host:port`: set, `serve` and `migrate`
    /// connect there without asking the RDS API (the deploy program sets
    /// it on new environments).
    pub endpoint: Option<String>,
    /// AWS region; unset, the SDK's default chain decides (AWS_REGION, profile).
    pub region: Option<String>,
    /// Database created in the instance.
    pub db_name: String,
    /// Database user the service logs in as.
    pub app_user: SqlIdentifier,
    /// How the service signs in as `app_user`: `iam` (short-lived tokens,
    /// the default) or `password` (then `rds.password`).
    pub auth: DatabaseAuth,
    /// Password for `auth = "password"` (secret).
    pub password: Option<SecretString>,
    /// Every other `rds.*` key, as given: read by [`RdsSettings::provisioning`].
    #[serde(flatten)]
    provisioning_keys: BTreeMap<String, figment::value::Value>,
}

impl RdsSettings {
    /// The `rds.*` keys `serve` and `migrate` read (the fields above).
    const READ_BY_SERVE: [&str; 7] = [
        "instance_id",
        "endpoint",
        "region",
        "db_name",
        "app_user",
        "auth",
        "password",
    ];

    /// An unknown `rds.*` key only warns in `serve` (provisioning reads
    /// the rest), unless it is a slip of a key serve reads: ignoring
    /// `rds.endpiont` would send the service somewhere else.
    pub(crate) fn check(&self, figment: &Figment) -> Result<(), ConfigError> {
        for key in self.provisioning_keys.keys() {
            if let Some(meant) = Self::READ_BY_SERVE
                .iter()
                .find(|known| strsim::damerau_levenshtein(key, known) <= 2)
            {
                return Err(refusal(
                    figment,
                    &format!("rds.{key}"),
                    &format!("is not a setting: did you mean rds.{meant}, which serve reads?"),
                ));
            }
        }
        Ok(())
    }
}

/// How the service proves who it is to PostgreSQL on RDS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseAuth {
    /// IAM authentication tokens, renewed before they expire.
    Iam,
    /// A password from `rds.password`.
    Password,
}

/// The `rds.*` keys only `api db provision` reads: how to create the
/// instance and how long to wait for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionSettings {
    /// PostgreSQL major version, pinned.
    pub engine_version: String,
    /// Instance class.
    pub instance_class: String,
    /// Allocated storage, GiB (gp3).
    pub storage_gib: i32,
    /// Storage autoscaling ceiling, GiB: RDS grows the volume up to this
    /// when free space runs low (at least 10 % above `storage_gib`).
    pub max_storage_gib: i32,
    /// VPC security groups; the default group of the VPC when empty.
    pub security_group_ids: Vec<String>,
    /// DB subnet group; the default one when unset.
    pub subnet_group: Option<String>,
    /// Days of automated backups.
    pub backup_retention_days: i32,
    /// Refuse deletion until turned off (on in `prod`).
    pub deletion_protection: bool,
    /// Master user; its password is created and kept by RDS in Secrets Manager.
    pub master_username: String,
    /// Longest `api db provision` waits for `available`.
    pub wait_timeout_secs: u64,
    /// Seconds between status checks while waiting.
    pub poll_interval_secs: u64,
}

impl RdsSettings {
    /// The keys only `api db provision` reads, checked now against
    /// `sources`, the layers the settings were read from: unknown keys,
    /// malformed values and the storage rule are refused here, naming the
    /// key and where it was set, and nowhere else.
    pub(crate) fn provisioning(&self, sources: &Figment) -> Result<ProvisionSettings, ConfigError> {
        let provisioning: ProvisionSettings =
            Figment::from(Serialized::defaults(&self.provisioning_keys))
                .extract()
                .map_err(|errors| config_error(errors, sources, "rds"))?;
        if i64::from(provisioning.max_storage_gib) * 10 < i64::from(provisioning.storage_gib) * 11 {
            let storage_source = source_of(sources, "rds.storage_gib", None);
            return Err(refusal(
                sources,
                "rds.max_storage_gib",
                &format!(
                    "must be at least 10 % above rds.storage_gib, {} GiB set in {storage_source} \
                     (RDS's rule for storage autoscaling)",
                    provisioning.storage_gib
                ),
            ));
        }
        Ok(provisioning)
    }
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail fixes the closures' error type"
)]
mod tests {
    use figment::Jail;
    use secrecy::ExposeSecret as _;

    use crate::config::Profile;
    use crate::config::tests::load_in;

    #[test]
    fn the_password_is_a_secret_never_shown() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("APP_RDS__PASSWORD", "123456");
            let message = load_in(jail, Profile::Local).unwrap_err().to_string();
            assert!(!message.contains("123456"), "{message}");
            assert!(message.contains("rds.password"), "{message}");
            assert!(message.contains("quote it"), "{message}");

            jail.set_env("APP_RDS__PASSWORD", "\"123456\"");
            let settings = load_in(jail, Profile::Local).expect("a quoted value is text");
            let password = settings.rds.password.as_ref().expect("set");
            assert_eq!(password.expose_secret(), "123456");
            assert!(!format!("{settings:?}").contains("123456"));
            Ok(())
        });
    }

    #[test]
    fn prod_protects_the_instance_from_deletion() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let local = load_in(jail, Profile::Local).expect("loads");
            let prod = load_in(jail, Profile::Prod).expect("loads");
            assert!(!local.provisioning().expect("valid").deletion_protection);
            assert!(prod.provisioning().expect("valid").deletion_protection);
            Ok(())
        });
    }

    #[test]
    fn a_slip_of_a_key_serve_reads_is_refused_with_the_key_meant() {
        for (variable, slip, meant) in [
            ("APP_RDS__ENDPIONT", "rds.endpiont", "rds.endpoint"),
            ("APP_RDS__INSTANCEID", "rds.instanceid", "rds.instance_id"),
            ("APP_RDS__APP_USR", "rds.app_usr", "rds.app_user"),
        ] {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env(variable, "notes-db:5432");
                let message = load_in(jail, Profile::Local).unwrap_err().to_string();
                assert!(
                    message.contains(&format!("{slip} is not a setting: did you mean {meant}")),
                    "{message}"
                );
                assert!(
                    message.contains(&format!("(set in environment variable {variable})")),
                    "{message}"
                );
                Ok(())
            });
        }
    }

    #[test]
    fn a_mistake_in_a_provisioning_key_stops_provisioning_not_the_service() {
        for (variable, value, expected) in [
            ("APP_RDS__INSTANCE_CLAS", "db.t4g.small", "instance_clas"),
            ("APP_RDS__STORAGE_GIB", "twenty", "rds.storage_gib"),
            (
                "APP_RDS__MAX_STORAGE_GIB",
                "21",
                "rds.max_storage_gib must be at least 10 % above rds.storage_gib",
            ),
        ] {
            Jail::expect_with(|jail| {
                jail.clear_env();
                jail.set_env(variable, value);
                let settings = load_in(jail, Profile::Local).expect("serve's settings load");
                let message = settings.provisioning().unwrap_err().to_string();
                assert!(message.contains(expected), "{message}");
                assert!(
                    message.contains(&format!("(set in environment variable {variable})")),
                    "{message}"
                );
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("App.toml", "[default.rds]\nstorage_gib = 95\n")?;
            let settings = load_in(jail, Profile::Local).expect("loads");
            let message = settings.provisioning().unwrap_err().to_string();
            assert!(message.contains("App.toml"), "{message}");
            assert!(
                message.contains(
                    "rds.max_storage_gib must be at least 10 % above rds.storage_gib, 95 GiB set \
                     in TOML file"
                ) && message.contains("(set in the built-in defaults (api/config/aws.toml))"),
                "{message}"
            );
            jail.set_env("APP_RDS__MAX_STORAGE_GIB", "120");
            let provisioning = load_in(jail, Profile::Local)
                .expect("loads")
                .provisioning()
                .expect("a valid ceiling provisions");
            assert_eq!(
                (provisioning.storage_gib, provisioning.max_storage_gib),
                (95, 120)
            );
            Ok(())
        });
    }
}
