//! The reports `api db provision --json` and `api db status --json` print,
//! typed once for the `api` that writes them and the programs that read
//! them (the deploy program, the rehearsal).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An RDS instance as `api db provision` and `api db status` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// DB instance identifier.
    pub instance_id: String,
    /// RDS status, e.g. `available`.
    pub status: String,
    /// Where to connect, once RDS has assigned it.
    pub endpoint: Option<Endpoint>,
    /// The database in the instance.
    pub db_name: Option<String>,
    /// True only when this run created the instance.
    pub created: bool,
    /// Engine version.
    pub engine_version: Option<String>,
    /// The instance class, e.g. `db.t4g.micro` (absent from reports of
    /// earlier versions).
    #[serde(default)]
    pub instance_class: Option<String>,
    /// IAM database authentication is on.
    pub iam_auth: bool,
    /// Reachable from the internet (must be false).
    pub publicly_accessible: bool,
    /// Storage is encrypted.
    pub storage_encrypted: bool,
    /// ARN of the master password secret that RDS manages.
    pub master_secret_arn: Option<String>,
}

/// `api db status --json`: whether the instance exists is a field, so a
/// reader tells "no such instance" from a failure to look (which exits
/// non-zero and prints no report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The instance identifier that was looked up.
    pub instance_id: String,
    /// The region it was looked up in.
    pub region: String,
    /// False when RDS has no instance of that identifier in that region.
    pub exists: bool,
    /// The instance, when it exists.
    pub instance: Option<InstanceReport>,
}

impl StatusReport {
    /// The report for `instance`, found or not, under `instance_id`.
    pub fn new(instance_id: &str, region: &str, instance: Option<InstanceReport>) -> StatusReport {
        StatusReport {
            instance_id: instance_id.to_owned(),
            region: region.to_owned(),
            exists: instance.is_some(),
            instance,
        }
    }
}

/// Host and port of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// DNS name.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `host:port` (or a bare host, on PostgreSQL's port 5432).
    pub fn parse(text: &str) -> Result<Endpoint, &'static str> {
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|&port| port != 0)
                    .ok_or("has a port that is not a number from 1 to 65535")?,
            ),
            None => (text, 5432),
        };
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
        if host.is_empty() || !host.chars().all(plain) {
            return Err("is not a host name");
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port,
        })
    }
}

/// `host:port`, as `Endpoint::parse` reads it and `APP_RDS__ENDPOINT` takes it.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_a_host_with_an_optional_port() {
        let endpoint = Endpoint::parse("db.example.com:6543").expect("valid");
        assert_eq!(
            (endpoint.host.as_str(), endpoint.port),
            ("db.example.com", 6543)
        );
        assert_eq!(endpoint.to_string(), "db.example.com:6543");
        assert_eq!(Endpoint::parse("db").expect("valid").port, 5432);
        for text in [
            "",
            ":5432",
            "db:",
            "db:0",
            "db:99999",
            "db/x:1",
            "user@db:1",
        ] {
            assert!(Endpoint::parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_missing_instance_reads_back_as_missing() {
        let missing = StatusReport::new("notes-db", "eu-west-1", None);
        let text = serde_json::to_string(&missing).expect("serializes");
        let read: StatusReport = serde_json::from_str(&text).expect("reads back");
        assert!(!read.exists, "{text}");
        assert_eq!(read, missing);
    }
}
