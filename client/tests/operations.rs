//! The client against the committed `openapi.json`: every operation has a
//! method that builds its request, and every documented status is read
//! into the operation's typed result or its problem.

use client::{Call, Client, Failure, OPERATIONS};
use domain::NewDataRequest;
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};

const OPENAPI: &str = include_str!("../../openapi.json");

/// A call's reader with its result erased.
type Reader = Box<dyn Fn(u16, &HeaderMap, &[u8]) -> Result<(), Failure>>;

/// One operation's call with its result erased, and a body its success
/// answer may have.
struct Erased {
    method: String,
    uri: String,
    success: u16,
    read: Reader,
    sample: Value,
}

fn erase<T: 'static>(call: Call<T>, sample: Value) -> Erased {
    Erased {
        method: call.request().method().to_string(),
        uri: call.request().uri().to_string(),
        success: call.success(),
        sample,
        read: Box::new(move |status, headers, body| call.read(status, headers, body).map(|_| ())),
    }
}

fn record() -> Value {
    json!({"id": 7, "notes": "n", "greeting": "g", "created_at": "2026-12-04T10:00:00Z"})
}

/// The call of `operation`, as the client builds it, with `{id}` = 7.
fn call(client: &Client, operation: &str) -> Erased {
    let entry = NewDataRequest {
        notes: "n".to_owned(),
        greeting: "g".to_owned(),
    };
    match operation {
        "create_data" => erase(
            client.create_entry(&entry, Some("0123456789abcdef")),
            record(),
        ),
        "list_data" => erase(
            client.list_entries(None, None),
            json!({"items": [record()]}),
        ),
        "get_data" => erase(client.get_entry(7), record()),
        "health" => erase(client.health(), json!({"status": "ok"})),
        "ready" => erase(client.ready(), json!({"status": "ok"})),
        other => panic!("openapi.json has an operation {other} that the client has no method for"),
    }
}

/// `(operationId, method, path, documented statuses)` of openapi.json.
fn documented() -> Vec<(String, String, String, Vec<u16>)> {
    let document: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
    let mut operations = Vec::new();
    for (path, methods) in document["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            let statuses = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|status| status.parse().expect("numeric statuses"))
                .collect();
            operations.push((
                operation["operationId"]
                    .as_str()
                    .expect("an operationId")
                    .to_owned(),
                method.to_uppercase(),
                path.clone(),
                statuses,
            ));
        }
    }
    operations
}

#[test]
fn every_operation_of_openapi_json_has_a_method_and_no_method_is_left_over() {
    let mut documented: Vec<(String, String, String)> = documented()
        .into_iter()
        .map(|(id, method, path, _)| (id, method, path))
        .collect();
    let mut listed: Vec<(String, String, String)> = OPERATIONS
        .iter()
        .map(|(id, method, path)| ((*id).to_owned(), (*method).to_owned(), (*path).to_owned()))
        .collect();
    documented.sort();
    listed.sort();
    assert_eq!(
        listed, documented,
        "client::OPERATIONS against openapi.json"
    );

    let client = Client::new("http://api.test/");
    for (id, method, path) in &documented {
        let call = call(&client, id);
        assert_eq!(&call.method, method, "{id}");
        let uri = call.uri.split('?').next().unwrap_or_default().to_owned();
        assert_eq!(
            uri,
            format!("http://api.test{}", path.replace("{id}", "7")),
            "{id}"
        );
    }
}

#[test]
fn every_documented_status_is_read_into_the_result_or_its_problem() {
    let client = Client::new("http://api.test");
    let json_headers = |media: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
        headers
    };
    for (id, _, _, statuses) in documented() {
        let call = call(&client, &id);
        let successes: Vec<u16> = statuses.iter().copied().filter(|s| *s < 300).collect();
        assert_eq!(
            successes,
            [call.success],
            "{id}: one documented success, the client's"
        );
        for status in statuses {
            if status == call.success {
                let body = serde_json::to_vec(&call.sample).expect("serializes");
                let read = (call.read)(status, &json_headers("application/json"), &body);
                assert_eq!(read, Ok(()), "{id} {status}");
                continue;
            }
            let problem =
                json!({"type": "/problems/x", "title": "X", "status": status, "detail": "d"});
            let body = serde_json::to_vec(&problem).expect("serializes");
            let read = (call.read)(status, &json_headers("application/problem+json"), &body);
            match read {
                Err(Failure::Problem(problem)) => assert_eq!(problem.status, status, "{id}"),
                other => panic!("{id} {status}: read as {other:?}, not its problem"),
            }
        }
    }
}

#[test]
fn an_answer_that_is_neither_result_nor_problem_is_unexpected_with_its_body() {
    let call = Client::new("http://api.test").get_entry(7);
    let read = call.read(502, &HeaderMap::new(), b"<html>Bad Gateway</html>");
    assert_eq!(
        read,
        Err(Failure::Unexpected {
            status: 502,
            body: "<html>Bad Gateway</html>".to_owned()
        })
    );
    assert!(read.expect_err("a failure").is_retryable());
}

#[test]
fn a_write_carries_its_key_and_a_replay_is_told_apart() {
    let client = Client::new("http://api.test");
    let key = client::idempotency_key();
    let call = client.create_entry(
        &NewDataRequest {
            notes: "n".to_owned(),
            greeting: "g".to_owned(),
        },
        Some(&key),
    );
    assert_eq!(call.request().headers()["idempotency-key"], key.as_str());
    let mut headers = HeaderMap::new();
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    headers.insert(header::LOCATION, HeaderValue::from_static("/data/7"));
    let body = serde_json::to_vec(&record()).expect("serializes");
    let created = call.read(201, &headers, &body).expect("created");
    assert!(created.replayed);
    assert_eq!(created.location, "/data/7");
    assert_ne!(client::idempotency_key(), key, "a fresh key each time");
}
