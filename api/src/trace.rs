//! A request's trace id: what joins its log lines to the load balancer's
//! access log and to a client's own trace.
//!
//! Taken, in this order, from a W3C `traceparent` header the client sent
//! (its trace-id), from the `X-Amzn-Trace-Id` header the Application Load
//! Balancer adds to every request (its `Root`, `1-{8 hex}-{24 hex}`, as the
//! 32 hex digits X-Ray's W3C form joins them into), or made up. Always 32
//! lowercase hex digits; a malformed header is ignored, never echoed.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// W3C Trace Context's header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The header the Application Load Balancer adds or updates.
pub const X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// The response header that answers the trace id.
pub const TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");

/// 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request's trace id, and the load balancer's when the id came from
/// elsewhere (a client's `traceparent`), to find the request in its log.
#[derive(Debug, Clone, Copy)]
pub struct Trace {
    /// The request's trace id.
    pub id: TraceId,
    /// The load balancer's `Root`, when it is not `id`.
    pub load_balancer: Option<TraceId>,
}

impl Trace {
    /// The trace of a request with `headers`.
    pub fn of(headers: &HeaderMap) -> Trace {
        let amazon = headers
            .get(X_AMZN_TRACE_ID)
            .and_then(|value| TraceId::from_amzn(value.as_bytes()));
        match headers
            .get(TRACEPARENT)
            .and_then(|value| TraceId::from_traceparent(value.as_bytes()))
        {
            Some(id) => Trace {
                id,
                load_balancer: amazon.filter(|amazon| *amazon != id),
            },
            None => Trace {
                id: amazon.unwrap_or_else(TraceId::random),
                load_balancer: None,
            },
        }
    }
}

impl TraceId {
    /// The text: 32 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }

    /// As a header value.
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.0).expect("hex digits are a valid header value")
    }

    /// 32 hex digits from these, lowercased; `None` when they are not hex,
    /// not 32, or all zeros (W3C: an invalid trace-id).
    fn from_hex(digits: impl Iterator<Item = u8>) -> Option<TraceId> {
        let mut id = [0_u8; 32];
        let mut count = 0;
        for digit in digits {
            if count == 32 || !digit.is_ascii_hexdigit() {
                return None;
            }
            id[count] = digit.to_ascii_lowercase();
            count += 1;
        }
        (count == 32 && id.iter().any(|digit| *digit != b'0')).then_some(TraceId(id))
    }

    /// The trace-id of a W3C `traceparent`:
    /// `{version}-{trace-id}-{parent-id}-{flags}`, lowercase hex, version
    /// not `ff`; a version above 00 may append fields after another `-`.
    fn from_traceparent(value: &[u8]) -> Option<TraceId> {
        let lower_hex = |bytes: &[u8]| {
            bytes
                .iter()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte))
        };
        if value.len() < 55 || (value.len() > 55 && value[..2] == *b"00") {
            return None;
        }
        let (version, trace, parent, flags) =
            (&value[..2], &value[3..35], &value[36..52], &value[53..55]);
        let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
        let tail_ok = value.len() == 55 || value[55] == b'-';
        let fields_ok = lower_hex(version)
            && version != b"ff"
            && lower_hex(trace)
            && lower_hex(parent)
            && parent.iter().any(|digit| *digit != b'0')
            && lower_hex(flags);
        if !(dashes && tail_ok && fields_ok) {
            return None;
        }
        TraceId::from_hex(trace.iter().copied())
    }

    /// The `Root` of an `X-Amzn-Trace-Id` (`Root=1-{8 hex}-{24 hex}`,
    /// among `;`-separated fields).
    fn from_amzn(value: &[u8]) -> Option<TraceId> {
        let root = value
            .split(|byte| *byte == b';')
            .map(<[u8]>::trim_ascii)
            .find_map(|field| field.strip_prefix(b"Root="))?;
        let rest = root.strip_prefix(b"1-")?;
        if rest.len() != 33 || rest[8] != b'-' {
            return None;
        }
        TraceId::from_hex(rest[..8].iter().chain(&rest[9..]).copied())
    }

    /// A fresh random id.
    fn random() -> TraceId {
        let mut id = [0_u8; 32];
        let digits = uuid::Uuid::new_v4().simple().encode_lower(&mut id).len();
        debug_assert_eq!(digits, 32);
        TraceId(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).expect("a header value"));
        }
        headers
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const AMAZON: &str =
        "Self=1-67891233-12456789abcdef012345678;Root=1-67891233-abcdef012345678912345678";

    #[test]
    fn a_traceparent_wins_and_the_load_balancers_root_is_kept_beside_it() {
        let trace = Trace::of(&headers(&[
            (&TRACEPARENT, PARENT),
            (&X_AMZN_TRACE_ID, AMAZON),
        ]));
        assert_eq!(trace.id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            trace
                .load_balancer
                .map(|id| id.as_str().to_owned())
                .as_deref(),
            Some("67891233abcdef012345678912345678")
        );
    }

    #[test]
    fn without_a_traceparent_the_load_balancers_root_is_the_id() {
        let trace = Trace::of(&headers(&[(&X_AMZN_TRACE_ID, AMAZON)]));
        assert_eq!(trace.id.as_str(), "67891233abcdef012345678912345678");
        assert!(trace.load_balancer.is_none());
        let root_only = Trace::of(&headers(&[(
            &X_AMZN_TRACE_ID,
            "Root=1-5759E988-BD862E3FE1BE46A994272793",
        )]));
        assert_eq!(root_only.id.as_str(), "5759e988bd862e3fe1be46a994272793");
    }

    #[test]
    fn malformed_headers_are_ignored_for_a_fresh_id() {
        for (name, value) in [
            (
                &TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            ),
            (
                &TRACEPARENT,
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                &TRACEPARENT,
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            (
                &TRACEPARENT,
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            ),
            (
                &TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            ),
            (
                &TRACEPARENT,
                "<script>alert(1)</script>-0e0e4736-00f067aa0ba902b7-01",
            ),
            (&X_AMZN_TRACE_ID, "Root=2-67891233-abcdef012345678912345678"),
            (&X_AMZN_TRACE_ID, "Root=1-67891233-abcdef01234567891234567g"),
            (&X_AMZN_TRACE_ID, "Self=1-67891233-abcdef012345678912345678"),
            (&X_AMZN_TRACE_ID, "Root=1-6789123-abcdef012345678912345678"),
        ] {
            let trace = Trace::of(&headers(&[(name, value)]));
            assert_eq!(trace.id.as_str().len(), 32, "{value}");
            assert!(
                !value.contains(trace.id.as_str())
                    && !value.replace('-', "").contains(trace.id.as_str()),
                "{value} was taken: {:?}",
                trace.id
            );
        }
    }

    #[test]
    fn a_later_traceparent_version_may_append_fields() {
        let trace = Trace::of(&headers(&[(
            &TRACEPARENT,
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
        )]));
        assert_eq!(trace.id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn fresh_ids_differ() {
        assert_ne!(TraceId::random(), TraceId::random());
    }
}
