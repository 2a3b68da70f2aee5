//! The data model shared by the `api` server and the `web` client.
//!
//! It holds the wire types of the `/data` endpoints and the one definition of
//! what a valid entry and a valid list size are, so the browser checks input
//! with exactly the rules the server enforces.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest accepted `notes` or `greeting`, in characters (Unicode scalar
/// values, as PostgreSQL's `varchar(128)` counts them), not bytes.
pub const MAX_CHARS: usize = 128;

/// Number of entries `GET /data` returns when `n` is not given.
pub const DEFAULT_LIMIT: u32 = 10;

/// Smallest accepted `n` for `GET /data`.
pub const MIN_LIMIT: u32 = 1;

/// Largest accepted `n` for `GET /data`.
pub const MAX_LIMIT: u32 = 100;

/// The two text fields of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The free-form note.
    Notes,
    /// The greeting stored beside it.
    Greeting,
}

impl Field {
    /// Every field, in the order forms and error lists show them.
    pub const ALL: [Field; 2] = [Field::Notes, Field::Greeting];

    /// The JSON member name of the field.
    pub fn name(self) -> &'static str {
        match self {
            Field::Notes => "notes",
            Field::Greeting => "greeting",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a text field was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// Missing from the body.
    Missing,
    /// Present but not a JSON string.
    NotAString,
    /// Empty or whitespace only.
    Empty,
    /// Longer than [`MAX_CHARS`]; holds the length that was sent.
    TooLong {
        /// Characters in the refused value.
        chars: usize,
    },
    /// Holds a NUL character, which PostgreSQL `text` cannot store.
    ContainsNul,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Missing => f.write_str("is required"),
            TextError::NotAString => f.write_str("must be a string"),
            TextError::Empty => f.write_str("must not be empty or only whitespace"),
            TextError::TooLong { chars } => {
                write!(f, "must be at most {MAX_CHARS} characters (got {chars})")
            }
            TextError::ContainsNul => f.write_str("must not contain NUL characters"),
        }
    }
}

/// Checks one text field against the rules every entry obeys: 1 to
/// [`MAX_CHARS`] characters, not only whitespace, no NUL.
pub fn check_text(value: &str) -> Result<(), TextError> {
    if value.trim().is_empty() {
        return Err(TextError::Empty);
    }
    if value.contains('\0') {
        return Err(TextError::ContainsNul);
    }
    let chars = value.chars().count();
    if chars > MAX_CHARS {
        return Err(TextError::TooLong { chars });
    }
    Ok(())
}

/// One refused field of a request, as listed in a problem's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// Name of the refused field or query parameter, e.g. `notes` or `n`.
    pub field: String,
    /// What is wrong with it, in words meant for a person.
    pub message: String,
}

impl FieldError {
    /// A refused entry field.
    pub fn text(field: Field, error: &TextError) -> Self {
        FieldError {
            field: field.name().to_owned(),
            message: error.to_string(),
        }
    }
}

/// An entry that passed validation and may be stored as is.
///
/// The text is kept exactly as sent (no trimming): validation only decides
/// whether to accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewData {
    notes: String,
    greeting: String,
}

impl NewData {
    /// Validates both fields, reporting every refused field at once.
    pub fn parse(
        notes: Result<String, TextError>,
        greeting: Result<String, TextError>,
    ) -> Result<NewData, Vec<FieldError>> {
        let check = |field, value: Result<String, TextError>| {
            value
                .and_then(|text| check_text(&text).map(|()| text))
                .map_err(|error| FieldError::text(field, &error))
        };
        match (check(Field::Notes, notes), check(Field::Greeting, greeting)) {
            (Ok(notes), Ok(greeting)) => Ok(NewData { notes, greeting }),
            (notes, greeting) => Err([notes.err(), greeting.err()]
                .into_iter()
                .flatten()
                .collect()),
        }
    }

    /// The validated note.
    pub fn notes(&self) -> &str {
        &self.notes
    }

    /// The validated greeting.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }
}

/// Body of `POST /data`.
///
/// The schema's `pattern` states [`check_text`] apart from the length: no
/// NUL, and at least one character outside Unicode's `White_Space` set (the
/// set `str::trim` removes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewDataRequest {
    /// The note to store: 1 to 128 characters, not only whitespace, no NUL.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$",
            example = "Deployed from CI"
        )
    )]
    pub notes: String,
    /// The greeting to store: 1 to 128 characters, not only whitespace, no NUL.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$",
            example = "Hello from Rust"
        )
    )]
    pub greeting: String,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DataRecord {
    /// Identifier assigned by the database; larger means stored later.
    pub id: i64,
    /// The note, exactly as sent.
    pub notes: String,
    /// The greeting, exactly as sent.
    pub greeting: String,
    /// When the entry was stored (RFC 3339, UTC).
    pub created_at: DateTime<Utc>,
}

/// Body of a successful `GET /data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DataList {
    /// The most recently stored entries, newest first.
    pub items: Vec<DataRecord>,
}

/// The number of entries to list: an integer from [`MIN_LIMIT`] to [`MAX_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListLimit(u32);

impl ListLimit {
    /// Parses the text of the `n` query parameter.
    pub fn parse(text: &str) -> Result<ListLimit, LimitError> {
        // Only plain decimal digits: no sign, no spaces, no fraction.
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LimitError);
        }
        match text.parse::<u32>() {
            Ok(n) if (MIN_LIMIT..=MAX_LIMIT).contains(&n) => Ok(ListLimit(n)),
            _ => Err(LimitError),
        }
    }

    /// The limit as a number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for ListLimit {
    fn default() -> Self {
        ListLimit(DEFAULT_LIMIT)
    }
}

/// A list size outside the accepted range or not an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitError;

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "must be an integer from {MIN_LIMIT} to {MAX_LIMIT}")
    }
}

/// An error response body in the RFC 9457 `application/problem+json` format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// URI reference naming the kind of problem; documented in the README.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code of the response.
    pub status: u16,
    /// What went wrong with this request, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For invalid input: every refused field with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(notes: &str, greeting: &str) -> Result<NewData, Vec<FieldError>> {
        NewData::parse(Ok(notes.to_owned()), Ok(greeting.to_owned()))
    }

    #[test]
    fn a_limit_counts_characters_not_bytes() {
        let accents = "é".repeat(MAX_CHARS);
        assert!(accents.len() > MAX_CHARS);
        assert_eq!(check_text(&accents), Ok(()));
        assert_eq!(
            check_text(&"é".repeat(MAX_CHARS + 1)),
            Err(TextError::TooLong { chars: 129 })
        );
    }

    #[test]
    fn whitespace_only_text_is_empty() {
        for text in ["", " ", "\t\n", "\u{3000}"] {
            assert_eq!(check_text(text), Err(TextError::Empty), "{text:?}");
        }
    }

    #[test]
    fn text_with_nul_is_refused() {
        assert_eq!(check_text("a\0b"), Err(TextError::ContainsNul));
    }

    #[test]
    fn text_is_kept_exactly_as_sent() {
        let data = parse("  padded  ", "<b>'; DROP TABLE data;--").expect("valid");
        assert_eq!(data.notes(), "  padded  ");
        assert_eq!(data.greeting(), "<b>'; DROP TABLE data;--");
    }

    #[test]
    fn every_refused_field_is_reported() {
        let errors = NewData::parse(Err(TextError::Missing), Ok(" ".to_owned())).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["notes", "greeting"]);
        assert_eq!(errors[0].message, "is required");
    }

    #[test]
    fn a_limit_is_a_plain_integer_in_range() {
        assert_eq!(ListLimit::parse("1").map(ListLimit::get), Ok(1));
        assert_eq!(ListLimit::parse("100").map(ListLimit::get), Ok(100));
        assert_eq!(ListLimit::parse("007").map(ListLimit::get), Ok(7));
        for text in [
            "0",
            "101",
            "-1",
            "+5",
            "abc",
            "1.5",
            "",
            " 5",
            "99999999999999999999",
        ] {
            assert_eq!(ListLimit::parse(text), Err(LimitError), "{text:?}");
        }
        assert_eq!(ListLimit::default().get(), DEFAULT_LIMIT);
    }

    #[test]
    fn a_problem_serialises_type_and_skips_empty_members() {
        let problem = Problem {
            kind: "about:blank".to_owned(),
            title: "Not Found".to_owned(),
            status: 404,
            detail: None,
            errors: Vec::new(),
        };
        let json = serde_json::to_value(&problem).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"type": "about:blank", "title": "Not Found", "status": 404})
        );
    }
}
