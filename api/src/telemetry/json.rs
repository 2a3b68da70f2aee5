//! One JSON object per log line, written straight into the line buffer.
//!
//! The shape is tracing-subscriber's flattened JSON (`timestamp`, `level`,
//! the event's fields with `message` among them, `target`), without its
//! cost: tracing-subscriber builds each line through serde with a map per
//! event and a temporary string per `Display` field, a large share of a
//! cheap request's time (docs/performance.md). Here every value is escaped
//! as it is written, with no allocation per field.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::request::RequestFields;

/// The JSON line format of `log.format = "json"`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        timestamp(&mut writer, std::time::SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(metadata.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        // The request the thread is serving, if any.
        super::request::with_current(|current| match current {
            Some(request) => request_fields(&mut writer, request),
            None => Ok(()),
        })?;
        // The fields of the spans the event happened in (the request's
        // method, path and id), outermost first, as formatted by
        // [`JsonFields`] when each span was created.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    writer.write_str(fields)?;
                }
            }
        }
        writer.write_str(",\"target\":")?;
        string(&mut writer, metadata.target())?;
        writer.write_str("}\n")
    }
}

/// The fields of the request a line was logged in, in the order the
/// request line has them.
fn request_fields(writer: &mut Writer<'_>, request: &RequestFields) -> fmt::Result {
    writer.write_str(",\"method\":")?;
    string(writer, request.method.as_str())?;
    writer.write_str(",\"path\":")?;
    string(writer, request.uri.path())?;
    writer.write_str(",\"request_id\":")?;
    string(writer, request.request_id())?;
    writer.write_str(",\"trace_id\":\"")?;
    writer.write_str(request.trace.id.as_str())?;
    writer.write_str("\"")?;
    if let Some(id) = request.trace.load_balancer {
        writer.write_str(",\"lb_trace_id\":\"")?;
        writer.write_str(id.as_str())?;
        writer.write_str("\"")?;
    }
    Ok(())
}

/// How span fields are kept for [`JsonLines`]: as `,"name":value` pairs,
/// written once when the span is created and copied into every line
/// logged inside it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = Fields {
            writer: &mut writer,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        self.format_fields(current.as_writer(), fields)
    }
}

/// Writes each field as `,"name":value`.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.writer.write_str(",\"")?;
        Escaped(self.writer).write_str(field.name())?;
        self.writer.write_str("\":")
    }

    fn write(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.writer));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, |writer| string(writer, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, |writer| {
            writer.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, |writer| {
            writer.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.write(field, |writer| {
            if value.is_finite() {
                writer.write_str(ryu::Buffer::new().format_finite(value))
            } else {
                writer.write_str("null")
            }
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, |writer| {
            writer.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, |writer| {
            writer.write_char('"')?;
            write!(Escaped(writer), "{value:?}")?;
            writer.write_char('"')
        });
    }
}

/// A JSON string.
fn string(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    writer.write_str("\"")?;
    Escaped(writer).write_str(text)?;
    writer.write_str("\"")
}

/// Escapes what it is given for the inside of a JSON string: quotes,
/// backslashes and control characters; everything else is copied as it is.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

/// Whether `byte` must be escaped inside a JSON string.
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let bytes = text.as_bytes();
        // Almost every value (ids, paths, messages) has nothing to escape:
        // one pass without an early exit, which the compiler turns into
        // 16 bytes a step, then one copy.
        if !bytes
            .iter()
            .fold(false, |found, &byte| found | needs_escape(byte))
        {
            return self.0.write_str(text);
        }
        let mut plain = 0;
        for (index, &byte) in bytes.iter().enumerate() {
            if !needs_escape(byte) {
                continue;
            }
            // Every byte that needs escaping is ASCII, so `index` is on a
            // character boundary.
            self.0.write_str(&text[plain..index])?;
            match byte {
                b'"' => self.0.write_str("\\\"")?,
                b'\\' => self.0.write_str("\\\\")?,
                b'\n' => self.0.write_str("\\n")?,
                b'\r' => self.0.write_str("\\r")?,
                b'\t' => self.0.write_str("\\t")?,
                control => write!(self.0, "\\u{control:04x}")?,
            }
            plain = index + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

/// `time` as RFC 3339 in UTC with microseconds, e.g.
/// `2026-12-01T04:08:18.201165Z` (days to a civil date: Howard Hinnant's
/// `civil_from_days`).
fn timestamp(writer: &mut Writer<'_>, time: std::time::SystemTime) -> fmt::Result {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs();
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Digits into one buffer: `write!` with padded numbers costs more than
    // the rest of the line.
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut number: u64| {
        for place in (at..at + width).rev() {
            text[place] = b'0' + (number % 10) as u8;
            number /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9_999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, of_day / 3_600);
    put(14, 2, of_day / 60 % 60);
    put(17, 2, of_day % 60);
    put(20, 6, u64::from(since.subsec_micros()));
    writer.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// Lines written by a test's subscriber, kept in memory.
#[cfg(test)]
pub(crate) mod capture {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    /// Where a test's subscriber writes; clones share the bytes.
    #[derive(Clone, Default)]
    pub(crate) struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        /// Everything written so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("not poisoned").clone()).expect("UTF-8")
        }

        /// A subscriber writing the service's JSON lines into this buffer.
        pub(crate) fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
            tracing_subscriber::fmt()
                .fmt_fields(super::JsonFields)
                .event_format(super::JsonLines)
                .with_writer(self.clone())
                .finish()
        }
    }

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::capture::Buffer;
    use super::*;

    #[test]
    fn each_line_is_one_json_object_with_every_field_escaped() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(buffer.clone())
            .finish();

        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "api::request",
                method = "GET",
                path = "/a \"quoted\"\\path\n",
                status = 200_u16,
                latency_ms = 0.5,
                ok = true,
                shown = %"displayed\u{1}",
                "request"
            );
        });

        let text = buffer.text();
        assert!(
            text.ends_with('\n') && text.lines().count() == 1,
            "{text:?}"
        );
        let line: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "request");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["path"], "/a \"quoted\"\\path\n");
        assert_eq!(line["status"], 200);
        assert_eq!(line["latency_ms"], 0.5);
        assert_eq!(line["ok"], true);
        assert_eq!(line["shown"], "displayed\u{1}");
        assert_eq!(line["target"], "api::request");
        let timestamp = line["timestamp"].as_str().expect("a timestamp");
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
            "{timestamp}"
        );
    }

    #[test]
    fn a_line_logged_inside_spans_carries_their_fields_once() {
        let buffer = Buffer::default();
        let subscriber = buffer.subscriber();

        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request", method = "POST", path = "/data");
            let _request = request.enter();
            let batch = tracing::info_span!("batch", rows = 3_u64);
            batch.in_scope(|| tracing::error!(code = "57014", "insert failed"));
            tracing::info!("outside the batch");
        });

        let text = buffer.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "insert failed");
        assert_eq!(lines[0]["code"], "57014");
        assert_eq!(lines[0]["method"], "POST");
        assert_eq!(lines[0]["path"], "/data");
        assert_eq!(lines[0]["rows"], 3);
        assert_eq!(lines[1]["method"], "POST");
        assert!(lines[1].get("rows").is_none(), "{text}");
        assert_eq!(
            text.lines()
                .next()
                .map(|line| line.matches("\"method\"").count()),
            Some(1)
        );
    }

    #[test]
    fn timestamps_agree_with_chrono() {
        for seconds in [
            0_u64,
            951_782_400,
            1_709_164_800,
            1_764_547_698,
            4_102_444_799,
        ] {
            let time = std::time::UNIX_EPOCH + std::time::Duration::new(seconds, 123_456_789);
            let mut text = String::new();
            timestamp(&mut Writer::new(&mut text), time).expect("formats");
            let expected = chrono::DateTime::<chrono::Utc>::from(time)
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            assert_eq!(text, expected, "{seconds}");
        }
    }
}
