//! Enhanced health, as far as the bundle decides it. Elastic Beanstalk's
//! agent reads the requests nginx logs in its `healthd` format
//! (`$msec"$uri"$status"$request_time"$upstream_response_time"$http_x_forwarded_for`,
//! health-enhanced-serverlogs) and turns the environment from OK to
//! Warning, Degraded or Severe "depending on the error rate"
//! (health-enhanced-rules): 5xx always count; application 4xx count unless
//! the `ConfigDocument` of `aws:elasticbeanstalk:healthreporting:system`
//! sets `Rules.Environment.Application.ApplicationRequests4xx.Enabled` to
//! false. nginx's own answers (its 429s) are in that log too.
//!
//! AWS publishes no thresholds; its example of OK is "five percent of
//! requests are returning 400 series errors" (health-enhanced-status). The
//! model calls the environment Green only while at most that share of the
//! requests counts as failed: a flood that a real environment might
//! survive still fails here, never the other way round.

use std::path::Path;

use anyhow::Context as _;

/// The option holding the health rules.
pub const HEALTH_NAMESPACE: &str = "aws:elasticbeanstalk:healthreporting:system";

/// The largest share of counted failures the model still calls Green.
pub const GREEN_AT_MOST: f64 = 0.05;

/// Which answers count against health, from the bundle's `ConfigDocument`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Whether the application's 4xx count (the default).
    pub application_4xx: bool,
}

impl Rules {
    /// The rules of `config_document` (the option's JSON; none means the
    /// defaults).
    pub fn from_config_document(config_document: Option<&str>) -> anyhow::Result<Rules> {
        let Some(text) = config_document else {
            return Ok(Rules {
                application_4xx: true,
            });
        };
        let document: serde_json::Value =
            serde_json::from_str(text).context("the ConfigDocument is not JSON")?;
        let enabled =
            &document["Rules"]["Environment"]["Application"]["ApplicationRequests4xx"]["Enabled"];
        Ok(Rules {
            application_4xx: enabled.as_bool().unwrap_or(true),
        })
    }

    /// Whether an answer with `status` counts as a failed request.
    pub fn counts_as_failure(self, status: u16) -> bool {
        status >= 500 || (self.application_4xx && (400..500).contains(&status))
    }
}

/// What the healthd log of some instances says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests logged.
    pub requests: usize,
    /// Of them, answered with a status the rules count as a failure.
    pub failures: usize,
    /// Of them, answered 4xx (counted or not).
    pub client_errors: usize,
}

impl Tally {
    /// Adds the lines of `log` (healthd format) logged at `since` (Unix
    /// seconds) or later.
    pub fn add_log(&mut self, log: &str, since: f64, rules: Rules) {
        for line in log.lines() {
            let mut fields = line.split('"');
            let (Some(at), Some(_uri), Some(status)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let (Ok(at), Ok(status)) = (at.parse::<f64>(), status.parse::<u16>()) else {
                continue;
            };
            if at < since {
                continue;
            }
            self.requests += 1;
            if (400..500).contains(&status) {
                self.client_errors += 1;
            }
            if rules.counts_as_failure(status) {
                self.failures += 1;
            }
        }
    }

    /// Adds every healthd log file in `folder` (one per hour).
    pub fn add_folder(&mut self, folder: &Path, since: f64, rules: Rules) -> anyhow::Result<()> {
        for entry in
            std::fs::read_dir(folder).with_context(|| format!("reading {}", folder.display()))?
        {
            let path = entry?.path();
            let log = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            self.add_log(&log, since, rules);
        }
        Ok(())
    }

    /// Whether the model calls the environment Green on this tally.
    pub fn is_green(self) -> bool {
        self.requests == 0 || (self.failures as f64) <= GREEN_AT_MOST * self.requests as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "1733322000.123\"/data\"201\"0.004\"0.004\"198.51.100.10\n\
                       1733322000.200\"/data\"429\"0.000\"-\"198.51.100.10\n\
                       1733322000.300\"/data\"503\"0.010\"0.010\"198.51.100.10\n\
                       1733321000.000\"/data\"500\"0.010\"0.010\"198.51.100.10\n";

    #[test]
    fn application_4xx_count_by_default_and_not_when_the_rule_is_off() {
        let default = Rules::from_config_document(None).expect("defaults");
        let off = Rules::from_config_document(Some(
            r#"{"Version":1,"Rules":{"Environment":{"Application":{"ApplicationRequests4xx":{"Enabled":false}}}}}"#,
        ))
        .expect("parses");

        let mut counted = Tally::default();
        counted.add_log(LOG, 1_733_322_000.0, default);
        let mut ignored = Tally::default();
        ignored.add_log(LOG, 1_733_322_000.0, off);

        assert_eq!(
            counted,
            Tally {
                requests: 3,
                failures: 2,
                client_errors: 1
            }
        );
        assert_eq!(ignored.failures, 1, "the 503 still counts");
        assert!(!counted.is_green() && !ignored.is_green());
    }
}
