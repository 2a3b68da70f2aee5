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
    /// Holds a control character other than tab, line feed or carriage
    /// return; holds the code point.
    ContainsControl {
        /// The first refused character.
        code_point: u32,
    },
    /// Holds a bidirectional embedding, override or isolate (U+202A to
    /// U+202E, U+2066 to U+2069), which can make text display in an order
    /// other than the one stored; holds the code point.
    ContainsBidiControl {
        /// The first refused character.
        code_point: u32,
    },
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::Missing => f.write_str("is required"),
            TextError::NotAString => f.write_str("must be a string"),
            TextError::Empty => f.write_str("must not be empty or only whitespace"),
            TextError::ContainsControl { code_point } => {
                write!(
                    f,
                    "must not contain control characters (found U+{code_point:04X})"
                )
            }
            TextError::ContainsBidiControl { code_point } => write!(
                f,
                "must not contain bidirectional override or isolate characters (found U+{code_point:04X})"
            ),
            TextError::TooLong { chars } => {
                write!(f, "must be at most {MAX_CHARS} characters (got {chars})")
            }
            TextError::ContainsNul => f.write_str("must not contain NUL characters"),
        }
    }
}

/// Checks one text field against the rules every entry obeys: 1 to
/// [`MAX_CHARS`] characters, at least one of them visible (not whitespace,
/// not an [invisible](is_invisible) character), no NUL or other control
/// character but tab, line feed and carriage return, and no bidirectional
/// override or isolate (text that would display in another order than the
/// one stored, to every visitor).
pub fn check_text(value: &str) -> Result<(), TextError> {
    if value.contains('\0') {
        return Err(TextError::ContainsNul);
    }
    if let Some(c) = value
        .chars()
        .find(|&c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(TextError::ContainsControl {
            code_point: u32::from(c),
        });
    }
    if let Some(c) = value.chars().find(|&c| is_bidi_control(c)) {
        return Err(TextError::ContainsBidiControl {
            code_point: u32::from(c),
        });
    }
    if value.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(TextError::Empty);
    }
    let chars = value.chars().count();
    if chars > MAX_CHARS {
        return Err(TextError::TooLong { chars });
    }
    Ok(())
}

/// Bidirectional embeddings, overrides and isolates (LRE, RLE, PDF, LRO,
/// RLO; LRI, RLI, FSI, PDI): refused. The implicit marks (LRM, RLM, ALM)
/// stay allowed: right-to-left text needs them, and they cannot reorder
/// what follows.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that render as nothing: allowed inside text (a zero-width
/// joiner builds emoji; a soft hyphen is a hint), but never counted as
/// content. Unicode's `Default_Ignorable_Code_Point` set, every plane:
/// format characters, fillers, variation selectors, and the tag
/// characters (U+E0000 to U+E0FFF), which can spell hidden text.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
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

/// [`check_text`] apart from the length, as a regular expression for the
/// OpenAPI schema (ECMA-262 syntax, as JSON Schema's `pattern` is): no
/// control character but tab, line feed and carriage return, no
/// bidirectional override or isolate, and at least one character that is
/// neither in Unicode's `White_Space` set (what `char::is_whitespace`
/// tests) nor [invisible](is_invisible). A unit test checks that the two
/// agree. The invisible characters beyond the Basic Multilingual Plane
/// are written as themselves, not escaped: ECMA-262 has no escape for them
/// but `\u{…}` under the `u` flag (which JSON Schema asks for), and other
/// dialects lack that one; a literal character means the same to all that
/// read the pattern as Unicode.
pub const TEXT_PATTERN: &str = concat!(
    r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*",
    r"[^\u0000-\u0020\u007f-\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f",
    r"\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8",
    "\u{1BCA0}-\u{1BCA3}\u{1D173}-\u{1D17A}\u{E0000}-\u{E0FFF}]",
    r"[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*$",
);

/// Body of `POST /data`.
///
/// The schema's `pattern` is [`TEXT_PATTERN`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewDataRequest {
    /// The note to store.
    #[cfg_attr(feature = "openapi", schema(schema_with = notes_schema))]
    pub notes: String,
    /// The greeting to store.
    #[cfg_attr(feature = "openapi", schema(schema_with = greeting_schema))]
    pub greeting: String,
}

/// The schema of `notes`: the rules of [`check_text`], with
/// [`TEXT_PATTERN`].
#[cfg(feature = "openapi")]
fn notes_schema() -> utoipa::openapi::Object {
    text_schema("The note to store", "Deployed from CI")
}

/// The schema of `greeting`, as [`notes_schema`].
#[cfg(feature = "openapi")]
fn greeting_schema() -> utoipa::openapi::Object {
    text_schema("The greeting to store", "Hello from Rust")
}

#[cfg(feature = "openapi")]
fn text_schema(what: &str, example: &str) -> utoipa::openapi::Object {
    use utoipa::openapi::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "{what}: 1 to {MAX_CHARS} characters, at least one of them visible (whitespace \
             and invisible characters such as U+200B do not count); no control characters but \
             tab, line feed and carriage return; no bidirectional embeddings, overrides or \
             isolates (U+202A to U+202E, U+2066 to U+2069)."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_CHARS))
        .pattern(Some(TEXT_PATTERN))
        .examples([example])
        .build()
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
    /// The most recently stored entries (below `before`, when given),
    /// newest first.
    pub items: Vec<DataRecord>,
    /// Present when older entries exist: the `before` that lists the next
    /// page (the id of the last item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, minimum = 1, example = 41)
    )]
    pub next_before: Option<i64>,
}

/// `text` as a number when it is only plain decimal digits (no sign, no
/// spaces, no fraction) that fit in `N`.
fn plain_number<N: std::str::FromStr>(text: &str) -> Option<N> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// An entry id as a `before` cursor: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(i64);

impl Cursor {
    /// Parses the text of the `before` query parameter.
    pub fn parse(text: &str) -> Result<Cursor, CursorError> {
        match plain_number::<i64>(text) {
            Some(id) if id >= 1 => Ok(Cursor(id)),
            _ => Err(CursorError),
        }
    }

    /// The id: entries below it are listed.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A `before` that is not a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorError;

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("must be a positive integer (an entry's id)")
    }
}

/// The number of entries to list: an integer from [`MIN_LIMIT`] to [`MAX_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListLimit(u32);

impl ListLimit {
    /// Parses the text of the `n` query parameter.
    pub fn parse(text: &str) -> Result<ListLimit, LimitError> {
        match plain_number::<u32>(text) {
            Some(n) if (MIN_LIMIT..=MAX_LIMIT).contains(&n) => Ok(ListLimit(n)),
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
    /// URI reference naming the kind of problem; documented in docs/http-api.md.
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
    fn invisible_only_text_is_empty() {
        for text in [
            "\u{200B}",
            "\u{200B}\u{200D} \u{FEFF}",
            "\u{3164}",
            "\u{00AD}\u{2060}",
            // Tag characters spelling "hi", then a cancel tag.
            "\u{E0068}\u{E0069}\u{E007F}",
            "\u{1D173}\u{1BCA0}",
        ] {
            assert_eq!(check_text(text), Err(TextError::Empty), "{text:?}");
        }
        // A flag's tag sequence stays inside visible text.
        assert_eq!(
            check_text("\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}"),
            Ok(())
        );
        // Inside visible text they stay: a family emoji is joined by ZWJs.
        assert_eq!(
            check_text("\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}"),
            Ok(())
        );
    }

    #[test]
    fn controls_and_bidi_overrides_are_refused_line_breaks_and_marks_are_not() {
        assert_eq!(
            check_text("invoice\u{202E}fdp.exe"),
            Err(TextError::ContainsBidiControl { code_point: 0x202E })
        );
        assert_eq!(
            check_text("a\u{2066}b"),
            Err(TextError::ContainsBidiControl { code_point: 0x2066 })
        );
        assert_eq!(
            check_text("bell\u{7}"),
            Err(TextError::ContainsControl { code_point: 7 })
        );
        assert_eq!(
            check_text("c1\u{9B}"),
            Err(TextError::ContainsControl { code_point: 0x9B })
        );
        for text in [
            "two\nlines\r\n",
            "tab\there",
            "\u{5E9}\u{5DC}\u{5D5}\u{5DD} \u{200F}!",
        ] {
            assert_eq!(check_text(text), Ok(()), "{text:?}");
        }
        assert_eq!(
            TextError::ContainsBidiControl { code_point: 0x202E }.to_string(),
            "must not contain bidirectional override or isolate characters (found U+202E)"
        );
    }

    #[test]
    fn the_schema_pattern_agrees_with_the_check() {
        let pattern = regex::Regex::new(TEXT_PATTERN).expect("the pattern compiles");
        let agrees = |text: &str| {
            assert_eq!(
                pattern.is_match(text),
                check_text(text).is_ok(),
                "pattern and check_text disagree on {text:?}"
            );
        };
        let samples = (0..=0x3200_u32)
            .chain(0xFDF0..=0xFFFF)
            .chain(0x1BC9F..=0x1BCA4)
            .chain(0x1D172..=0x1D17B)
            .chain(0xDFFF0..=0xE0081)
            .chain([0x1F600, 0xE0100, 0xE0FFF, 0xE1000, 0x10FFFF])
            .filter_map(char::from_u32);
        for c in samples {
            agrees(&c.to_string());
            agrees(&format!("{c}a"));
            agrees(&format!(" {c}\u{200B}"));
        }
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
    fn a_cursor_is_a_positive_integer() {
        assert_eq!(Cursor::parse("1").map(Cursor::get), Ok(1));
        assert_eq!(
            Cursor::parse("9223372036854775807").map(Cursor::get),
            Ok(i64::MAX)
        );
        for text in [
            "0",
            "-1",
            "+5",
            "abc",
            "1.5",
            "",
            " 5",
            "9223372036854775808",
        ] {
            assert_eq!(Cursor::parse(text), Err(CursorError), "{text:?}");
        }
    }

    #[test]
    fn a_list_without_more_pages_says_nothing_of_a_next_one() {
        let last = DataList {
            items: Vec::new(),
            next_before: None,
        };
        let json = serde_json::to_value(&last).expect("serialises");
        assert_eq!(json, serde_json::json!({"items": []}));
        let read: DataList = serde_json::from_str(r#"{"items": []}"#).expect("an old answer reads");
        assert_eq!(read, last);
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
