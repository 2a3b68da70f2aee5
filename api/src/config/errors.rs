//! Configuration errors: each names the key, what is wrong with it and
//! where its value was set, and never quotes a secret.

use figment::Figment;

/// A setting that is missing, malformed or out of range. The message names
/// the key and where its value came from.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub(super) String);

/// `key` breaks `rule`, with where its value was set.
pub(crate) fn refusal(figment: &Figment, key: &str, rule: &str) -> ConfigError {
    ConfigError(format!(
        "{key} {rule} (set in {})",
        source_of(figment, key, None)
    ))
}

/// Where `key`'s value in `figment` came from, else where `fallback` says.
pub(crate) fn source_of(
    figment: &Figment,
    key: &str,
    fallback: Option<&figment::Metadata>,
) -> String {
    figment.find_metadata(key).or(fallback).map_or_else(
        || "unknown source".to_owned(),
        |meta| describe_source(meta, key),
    )
}

/// Extraction errors as one message: each key (under `prefix`), what is
/// wrong with it and where it was set, found in `figment`; never a
/// secret's value.
pub(crate) fn config_error(errors: figment::Error, figment: &Figment, prefix: &str) -> ConfigError {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|error| {
            // A list element's index is left out: the key is what a person
            // sets (the message quotes the element).
            let key = std::iter::once(prefix)
                .chain(error.path.iter().map(String::as_str))
                .filter(|part| !part.bytes().all(|byte| byte.is_ascii_digit()))
                .collect::<Vec<_>>()
                .join(".");
            // Where the key's value came from in `figment` (keys read later
            // are extracted from a copy that knows no sources).
            let source = source_of(figment, &key, error.metadata.as_ref());
            if SECRET_KEYS.contains(&key.as_str()) {
                // The error's own text may quote the value.
                format!(
                    "{key}: must be text (set in {source}; the value is not shown: it is a \
                     secret). An environment value that looks like a number, a boolean, a \
                     list or a table is read as one: quote it, as in {}='\"…\"'",
                    env_name(&key)
                )
            } else if key.is_empty() {
                format!("{} (set in {source})", error.kind)
            } else if let figment::error::Kind::Message(rule) = &error.kind {
                // A value type's own rule, such as "must be at least 1".
                format!("{key} {rule} (set in {source})")
            } else {
                format!("{key}: {} (set in {source})", error.kind)
            }
        })
        .collect();
    ConfigError(lines.join("; "))
}

/// Keys whose values are secrets: never part of an error message.
const SECRET_KEYS: [&str; 2] = ["database.url", "rds.password"];

/// The `APP_…` environment variable that sets `key`.
fn env_name(key: &str) -> String {
    format!("APP_{}", key.replace('.', "__").to_uppercase())
}

/// Where a key's value came from, as an operator would look for it: the
/// file's path or the exact environment variable.
fn describe_source(meta: &figment::Metadata, key: &str) -> String {
    if let Some(figment::Source::File(path)) = &meta.source {
        return format!("{} {}", meta.name, path.display());
    }
    if meta.name.contains("APP_") {
        return format!("environment variable {}", env_name(key));
    }
    if meta.name.contains("environment") {
        match key {
            "database.url" => return "environment variable DATABASE_URL".to_owned(),
            "server.port" => return "environment variable PORT".to_owned(),
            _ => {}
        }
    }
    // The one string layer is the compiled-in defaults (figment names it
    // "TOML source string").
    if meta.source.is_none() && meta.name.ends_with("source string") {
        let file = if key.starts_with("rds.") {
            "aws.toml"
        } else {
            "defaults.toml"
        };
        return format!("the built-in defaults (api/config/{file})");
    }
    meta.name.to_string()
}
