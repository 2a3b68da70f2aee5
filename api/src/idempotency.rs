//! Writes a client can send again: the `Idempotency-Key` request header
//! (IETF httpapi draft "The Idempotency-Key HTTP Header Field").
//!
//! A client that sends a key with a write and does not hear the answer (a
//! lost connection, a timeout, a 503 that says the outcome is unknown)
//! sends the same request with the same key again: the server stores it at
//! most once and answers the repeat with what the first one stored, marked
//! `Idempotent-Replayed: true`. The same key with a different body is
//! refused (422); a repeat while the first is still running on this
//! instance gets 409.
//!
//! **Scope.** The API has no accounts, so a key is scoped by itself: it is
//! a secret the client makes up (a UUID v4, say) and at least
//! [`MIN_KEY_CHARS`] long, too many to guess. A replay answers only to the
//! same body, so someone who guessed a key would still have to send the
//! entry it stored, and would learn its id and time, which `GET /data`
//! shows anyone. The database keeps only the key's SHA-256.
//!
//! Keys are kept at least [`KEYS_KEPT`], then removed by age in small
//! batches ([`prune`]), rows no write touches.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderName;
use axum::http::request::Parts;
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;
use crate::store::{Store, StoreError};

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header that marks an answer repeated from a key's first
/// request.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Fewest characters a key may have: 16 random characters are already far
/// too many to guess; a UUID has 36.
pub const MIN_KEY_CHARS: usize = 16;

/// Most characters a key may have.
pub const MAX_KEY_CHARS: usize = 255;

/// How long a key is kept at least.
pub const KEYS_KEPT: Duration = Duration::from_secs(24 * 60 * 60);

/// How often expired keys are removed.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10 * 60);

/// Most keys one pruning statement removes: a short statement whatever
/// piled up.
const PRUNE_BATCH: i64 = 5_000;

/// A key as stored: the SHA-256 of what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey([u8; 32]);

impl IdempotencyKey {
    /// The key in a header value: a Structured Field string
    /// (`"8e03978e-…"`, as the draft writes it) or the same characters
    /// unquoted (as most APIs take it); printable ASCII,
    /// [`MIN_KEY_CHARS`] to [`MAX_KEY_CHARS`] characters.
    pub fn parse(value: &[u8]) -> Result<IdempotencyKey, String> {
        let key = unquote(value)?;
        if key.iter().any(|byte| !(0x20..0x7f).contains(byte)) {
            return Err("must be printable ASCII".to_owned());
        }
        if !(MIN_KEY_CHARS..=MAX_KEY_CHARS).contains(&key.len()) {
            return Err(format!(
                "must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} characters long, not {}; a UUID v4 is a good key",
                key.len()
            ));
        }
        Ok(IdempotencyKey(Sha256::digest(&key).into()))
    }

    /// The stored form.
    pub fn digest(&self) -> &[u8] {
        &self.0
    }
}

/// The characters of a Structured Field string (RFC 8941 §3.3.3: `\"` and
/// `\\` escaped), or `value` itself when it is not quoted.
fn unquote(value: &[u8]) -> Result<Vec<u8>, String> {
    let Some(rest) = value.strip_prefix(b"\"") else {
        if value.first() == Some(&b' ') || value.last() == Some(&b' ') {
            return Err("must not begin or end with a space".to_owned());
        }
        return Ok(value.to_vec());
    };
    let Some(inner) = rest.strip_suffix(b"\"") else {
        return Err("begins with a quote but is not a quoted string".to_owned());
    };
    let mut key = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            b'\\' => match bytes.next() {
                Some(&escaped @ (b'"' | b'\\')) => key.push(escaped),
                _ => return Err("has a backslash that escapes neither \" nor \\".to_owned()),
            },
            b'"' => return Err("has an unescaped quote inside the string".to_owned()),
            other => key.push(other),
        }
    }
    Ok(key)
}

/// The request's `Idempotency-Key`, when it sent one; a malformed one is
/// refused with 400.
#[derive(Debug, Clone, Copy)]
pub struct KeyHeader(pub Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for KeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Ok(KeyHeader(None));
        };
        if values.next().is_some() {
            return Err(ApiError::InvalidIdempotencyKey(
                "Idempotency-Key is sent more than once".to_owned(),
            ));
        }
        IdempotencyKey::parse(value.as_bytes())
            .map(|key| KeyHeader(Some(key)))
            .map_err(|why| ApiError::InvalidIdempotencyKey(format!("Idempotency-Key {why}")))
    }
}

/// The keys whose first request this instance is serving now.
#[derive(Debug, Clone, Default)]
pub struct KeysInFlight(Arc<Mutex<HashSet<IdempotencyKey>>>);

impl KeysInFlight {
    /// Claims `key` until the returned guard is dropped; `None` while
    /// another request holds it.
    pub fn claim(&self, key: IdempotencyKey) -> Option<Claim> {
        let fresh = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key);
        fresh.then(|| Claim {
            keys: self.clone(),
            key,
        })
    }
}

/// A key claimed by one request; released when dropped.
#[derive(Debug)]
pub struct Claim {
    keys: KeysInFlight,
    key: IdempotencyKey,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.keys
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// Removes keys older than [`KEYS_KEPT`], [`PRUNE_BATCH`] at a time, and
/// says how many. Each statement deletes old rows by their own index: no
/// write waits for it.
pub async fn prune(store: &Store) -> Result<u64, StoreError> {
    let mut removed = 0;
    loop {
        let deleted = store
            .run(|connection| {
                Box::pin(async move {
                    sqlx::query!(
                        "DELETE FROM idempotency_keys WHERE key IN (
                           SELECT key FROM idempotency_keys
                           WHERE created_at < now() - make_interval(secs => $1)
                           ORDER BY created_at LIMIT $2)",
                        KEYS_KEPT.as_secs_f64(),
                        PRUNE_BATCH,
                    )
                    .execute(connection)
                    .await
                    .map(|done| done.rows_affected())
                })
            })
            .await?;
        removed += deleted;
        if deleted < PRUNE_BATCH.unsigned_abs() {
            return Ok(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_taken_quoted_as_the_draft_writes_it_or_bare() {
        let bare = IdempotencyKey::parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324").expect("bare");
        let quoted =
            IdempotencyKey::parse(b"\"8e03978e-40d5-43e8-bc93-6894a57f9324\"").expect("quoted");
        assert_eq!(bare, quoted);
        let escaped = IdempotencyKey::parse(br#""a key with \"quotes\" \\ inside""#).expect("sf");
        assert_eq!(
            escaped,
            IdempotencyKey::parse(br#"a key with "quotes" \ inside"#).expect("bare")
        );
    }

    #[test]
    fn a_short_long_or_non_ascii_key_is_refused_with_the_reason() {
        let short = IdempotencyKey::parse(b"abc").expect_err("short");
        assert!(
            short.contains("16 to 255 characters long, not 3"),
            "{short}"
        );
        let long = IdempotencyKey::parse(&[b'a'; 256]).expect_err("long");
        assert!(long.contains("not 256"), "{long}");
        let utf8 =
            IdempotencyKey::parse("clé-de-requête-idempotente".as_bytes()).expect_err("utf8");
        assert_eq!(utf8, "must be printable ASCII");
        let inner = IdempotencyKey::parse(br#""half "quoted" key here""#).expect_err("quote");
        assert!(inner.contains("unescaped quote"), "{inner}");
        let open = IdempotencyKey::parse(br#""0123456789abcdef"#).expect_err("open");
        assert!(open.contains("not a quoted string"), "{open}");
        let spaced = IdempotencyKey::parse(b" 0123456789abcdef").expect_err("space");
        assert!(spaced.contains("begin or end with a space"), "{spaced}");
    }

    #[test]
    fn a_claimed_key_is_refused_until_its_claim_is_dropped() {
        let keys = KeysInFlight::default();
        let key = IdempotencyKey::parse(b"0123456789abcdef").expect("valid");
        let first = keys.claim(key).expect("free");
        assert!(keys.claim(key).is_none(), "held by the first request");
        drop(first);
        assert!(keys.claim(key).is_some(), "free again");
    }
}
