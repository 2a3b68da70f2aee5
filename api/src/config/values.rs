//! Value types for configuration keys whose rules a plain number or string
//! cannot carry: each refuses a bad value while the settings load, naming
//! the key and where it was set, and code that holds one need not check it
//! again.

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use axum::http::HeaderValue;
use serde::Deserialize;

/// What a zero is refused with.
const AT_LEAST_ONE: &str = "must be at least 1";

/// Longest timeout accepted: a day. Beyond it a value is a mistake, and
/// some are refused further on (PostgreSQL's timeouts are milliseconds in
/// a 32-bit integer; a huge timer overflows the runtime's clock).
pub(super) const MAX_SECONDS: u64 = 24 * 60 * 60;

/// A whole number of seconds from one to [`MAX_SECONDS`]: a timeout that
/// cannot be "never" by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "u64")]
pub struct Seconds(Duration);

impl Seconds {
    /// As a duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl TryFrom<u64> for Seconds {
    type Error = &'static str;

    fn try_from(secs: u64) -> Result<Seconds, Self::Error> {
        if secs == 0 {
            return Err(AT_LEAST_ONE);
        }
        if secs > MAX_SECONDS {
            return Err("must be at most 86400 (a day)");
        }
        Ok(Seconds(Duration::from_secs(secs)))
    }
}

/// A count that must be at least one (connections, queue places).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "usize")]
pub struct Count(NonZeroUsize);

impl Count {
    /// The number.
    pub fn get(self) -> usize {
        self.0.get()
    }
}

impl TryFrom<usize> for Count {
    type Error = &'static str;

    fn try_from(count: usize) -> Result<Count, Self::Error> {
        NonZeroUsize::new(count).map(Count).ok_or(AT_LEAST_ONE)
    }
}

/// A browser origin for CORS: scheme and host (and port), no wildcard, no
/// path; held as the header value it is sent as.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Origin(HeaderValue);

impl Origin {
    /// The `Access-Control-Allow-Origin` value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

impl TryFrom<String> for Origin {
    type Error = String;

    fn try_from(text: String) -> Result<Origin, Self::Error> {
        let refuse = || {
            format!(
                "holds {text:?}: each must be an origin like \"https://example.com\" (no \
                 wildcard, no path)"
            )
        };
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or_else(refuse)?;
        let host_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':');
        if rest.is_empty() || !rest.chars().all(host_chars) {
            return Err(refuse());
        }
        HeaderValue::from_str(&text)
            .map(Origin)
            .map_err(|_| refuse())
    }
}

impl PartialEq<&str> for Origin {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A PostgreSQL role (or schema) name that needs no quoting to mean what it
/// says: a lowercase letter or `_`, then lowercase letters, digits and `_`,
/// at most 63 bytes (PostgreSQL's limit). [`SqlIdentifier::quoted`] quotes
/// it for SQL text all the same.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SqlIdentifier(String);

impl SqlIdentifier {
    /// The name, as PostgreSQL stores it (for `rolname = $1`, a user name).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier, for statements that cannot take
    /// it as a parameter (`CREATE ROLE`, `GRANT`): quotes doubled, as
    /// PostgreSQL's `quote_ident` does, though the rule admits none.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }
}

impl TryFrom<String> for SqlIdentifier {
    type Error = &'static str;

    fn try_from(name: String) -> Result<SqlIdentifier, Self::Error> {
        let plain = name
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && name.len() <= 63;
        if !plain {
            return Err("must be a plain lowercase identifier (letters, digits, _)");
        }
        Ok(SqlIdentifier(name))
    }
}

impl fmt::Display for SqlIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused_where_it_would_mean_never_or_nothing() {
        assert_eq!(Seconds::try_from(0), Err(AT_LEAST_ONE));
        assert_eq!(
            Seconds::try_from(3).map(Seconds::get),
            Ok(Duration::from_secs(3))
        );
        assert_eq!(Count::try_from(0), Err(AT_LEAST_ONE));
        assert_eq!(Count::try_from(4).map(Count::get), Ok(4));
    }

    #[test]
    fn an_origin_is_a_scheme_and_a_host() {
        for good in [
            "https://example.com",
            "http://localhost:8080",
            "https://a-b.example.org",
        ] {
            assert!(Origin::try_from(good.to_owned()).is_ok(), "{good}");
        }
        for bad in [
            "*",
            "example.com",
            "https://example.com/",
            "https://example.com/app",
            "https://",
            "https://exa mple.com",
            "ftp://example.com",
            "https://*.example.com",
        ] {
            let refused = Origin::try_from(bad.to_owned()).expect_err(bad);
            assert!(refused.contains(&format!("{bad:?}")), "{refused}");
        }
    }

    #[test]
    fn a_role_name_is_plain_and_quoted_for_sql() {
        let role = SqlIdentifier::try_from("notes_app".to_owned()).expect("plain");
        assert_eq!(role.quoted(), "\"notes_app\"");
        assert_eq!(role.as_str(), "notes_app");
        for bad in [
            "",
            "Notes",
            "1notes",
            "notes-app",
            "notes\"; DROP ROLE x; --",
            &"a".repeat(64),
        ] {
            assert!(SqlIdentifier::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        // The quoting holds even for a name the rule would refuse.
        assert_eq!(SqlIdentifier("a\"b".to_owned()).quoted(), "\"a\"\"b\"");
    }
}
