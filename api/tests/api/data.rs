//! `POST /data` and `GET /data`: the contract, including every bad input.

use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::TestApp;

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn storing_an_entry_answers_201_with_its_location_and_record(pool: PgPool) {
    let app = TestApp::new(pool);

    let response = app
        .post_data(r#"{"notes": "first note", "greeting": "hello"}"#)
        .await;

    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let record = response.json();
    let id = record["id"].as_i64().expect("numeric id");
    assert_eq!(
        response.header("location"),
        Some(format!("/data/{id}").as_str())
    );
    assert_eq!(record["notes"], "first note");
    assert_eq!(record["greeting"], "hello");
    let created_at = record["created_at"].as_str().expect("timestamp");
    let parsed = chrono::DateTime::parse_from_rfc3339(created_at).expect("RFC 3339");
    assert_eq!(parsed.offset().local_minus_utc(), 0, "UTC: {created_at}");
    assert!(created_at.ends_with('Z'), "{created_at}");
    assert_eq!(app.stored_rows().await, 1);
    let fetched = app.get(&format!("/data/{id}")).await;
    assert_eq!(
        fetched.status,
        StatusCode::OK,
        "Location points at the record"
    );
    assert_eq!(fetched.json(), record);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn an_unknown_or_malformed_id_is_a_404_problem(pool: PgPool) {
    let app = TestApp::new(pool);
    app.store("n", "g").await;

    for path in [
        "/data/999",
        "/data/0",
        "/data/-1",
        "/data/abc",
        "/data/1.5",
        "/data/99999999999999999999",
    ] {
        app.get(path).await.assert_problem(StatusCode::NOT_FOUND);
    }
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn text_is_stored_and_returned_exactly_as_sent(pool: PgPool) {
    let app = TestApp::new(pool);
    let samples = [
        ("  padded with spaces  ", "tab\there"),
        ("'; DROP TABLE data; --", "<script>alert(1)</script>"),
        ("emoji 👩‍👩‍👧 and ñ", "مرحبا بالعالم (right to left)"),
        ("line\nbreak", "e\u{301} combining"),
    ];

    for (notes, greeting) in samples {
        let record = app.store(notes, greeting).await;
        assert_eq!(record["notes"], notes);
        assert_eq!(record["greeting"], greeting);
    }

    let listed = app.get("/data?n=100").await.json();
    let stored: Vec<(String, String)> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .rev()
        .map(|item| {
            (
                item["notes"].as_str().unwrap_or_default().to_owned(),
                item["greeting"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let sent: Vec<(String, String)> = samples
        .iter()
        .map(|(notes, greeting)| ((*notes).to_owned(), (*greeting).to_owned()))
        .collect();
    assert_eq!(stored, sent);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn limits_count_characters_not_bytes(pool: PgPool) {
    let app = TestApp::new(pool);
    let at_limit = [
        "é".repeat(128),
        "😀".repeat(128),
        "\u{5d0}".repeat(128),
        "a\u{301}".repeat(64),
    ];

    for text in &at_limit {
        let record = app.store(text, text).await;
        assert_eq!(record["notes"].as_str(), Some(text.as_str()));
    }

    assert_eq!(app.stored_rows().await, at_limit.len() as i64);
}

/// A body that must be refused, with the status it must get.
struct BadBody {
    why: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    /// Fields the problem's `errors` must name, in order.
    fields: &'static [&'static str],
}

fn bad(why: &'static str, body: impl Into<Vec<u8>>, status: StatusCode) -> BadBody {
    BadBody {
        why,
        content_type: Some("application/json"),
        body: body.into(),
        status,
        fields: &[],
    }
}

fn invalid(why: &'static str, body: Value, fields: &'static [&'static str]) -> BadBody {
    BadBody {
        why,
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status: StatusCode::UNPROCESSABLE_ENTITY,
        fields,
    }
}

fn bad_bodies() -> Vec<BadBody> {
    let valid = br#"{"notes":"n","greeting":"g"}"#.to_vec();
    let mut invalid_utf8 = br#"{"notes":"bad "#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#"","greeting":"g"}"#);
    let mut oversized = br#"{"notes":"n","greeting":"g","#.to_vec();
    oversized.extend(std::iter::repeat_n(b' ', 16 * 1024));
    oversized.push(b'}');
    let deeply_nested = format!("{}{}", "[".repeat(1_000), "]".repeat(1_000));
    vec![
        bad(
            "malformed JSON",
            r#"{"notes": "n", "greeting": "#,
            StatusCode::BAD_REQUEST,
        ),
        bad("empty body", "", StatusCode::BAD_REQUEST),
        bad("invalid UTF-8", invalid_utf8, StatusCode::BAD_REQUEST),
        bad("a JSON array", "[]", StatusCode::BAD_REQUEST),
        bad("a JSON string", r#""notes""#, StatusCode::BAD_REQUEST),
        bad("JSON null", "null", StatusCode::BAD_REQUEST),
        bad("deeply nested JSON", deeply_nested, StatusCode::BAD_REQUEST),
        bad(
            "trailing garbage",
            r#"{"notes":"n","greeting":"g"} x"#,
            StatusCode::BAD_REQUEST,
        ),
        bad("body over 16 KiB", oversized, StatusCode::PAYLOAD_TOO_LARGE),
        BadBody {
            content_type: Some("text/plain"),
            ..bad(
                "text/plain content type",
                valid.clone(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            )
        },
        BadBody {
            content_type: Some("application/x-www-form-urlencoded"),
            ..bad(
                "form content type",
                "notes=n&greeting=g",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            )
        },
        BadBody {
            content_type: None,
            ..bad("no content type", valid, StatusCode::UNSUPPORTED_MEDIA_TYPE)
        },
        invalid("no fields", json!({}), &["notes", "greeting"]),
        invalid("missing greeting", json!({"notes": "n"}), &["greeting"]),
        invalid(
            "empty notes",
            json!({"notes": "", "greeting": "g"}),
            &["notes"],
        ),
        invalid(
            "whitespace-only greeting",
            json!({"notes": "n", "greeting": " \t\n "}),
            &["greeting"],
        ),
        invalid(
            "129 characters",
            json!({"notes": "é".repeat(129), "greeting": "g"}),
            &["notes"],
        ),
        invalid(
            "129 emoji",
            json!({"notes": "n", "greeting": "😀".repeat(129)}),
            &["greeting"],
        ),
        invalid(
            "NUL character",
            json!({"notes": "a\u{0}b", "greeting": "g"}),
            &["notes"],
        ),
        invalid(
            "number instead of text",
            json!({"notes": 5, "greeting": "g"}),
            &["notes"],
        ),
        invalid(
            "null instead of text",
            json!({"notes": "n", "greeting": null}),
            &["greeting"],
        ),
        invalid(
            "nested object",
            json!({"notes": {"a": 1}, "greeting": ["g"]}),
            &["notes", "greeting"],
        ),
        invalid(
            "unknown field",
            json!({"notes": "n", "greeting": "g", "id": 7}),
            &["id"],
        ),
        invalid(
            "everything wrong",
            json!({"notes": "", "extra": true}),
            &["notes", "greeting", "extra"],
        ),
    ]
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn every_bad_body_gets_its_problem_and_stores_nothing(pool: PgPool) {
    let app = TestApp::new(pool);

    for case in bad_bodies() {
        let response = app.post_data_as(case.content_type, case.body).await;

        assert_eq!(
            response.status,
            case.status,
            "{}: {}",
            case.why,
            String::from_utf8_lossy(&response.body)
        );
        let problem = response.assert_problem(case.status);
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|error| error["field"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(fields, case.fields, "{}: {problem}", case.why);
        assert_eq!(app.stored_rows().await, 0, "{} stored a row", case.why);
    }
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_body_of_exactly_16_kib_is_accepted(pool: PgPool) {
    let app = TestApp::new(pool);
    let mut body = br#"{"notes":"n","greeting":"g""#.to_vec();
    body.extend(std::iter::repeat_n(b' ', 16 * 1024 - body.len() - 1));
    body.push(b'}');
    assert_eq!(body.len(), 16 * 1024);

    let response = app.post_data(body).await;

    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(app.stored_rows().await, 1);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_validation_problem_explains_each_field(pool: PgPool) {
    let app = TestApp::new(pool);

    let response = app
        .post_data(json!({"notes": " ", "greeting": "x".repeat(200)}).to_string())
        .await;

    let problem = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["type"], "/problems/invalid-fields");
    assert_eq!(
        problem["errors"],
        json!([
            {"field": "notes", "message": "must not be empty or only whitespace"},
            {"field": "greeting", "message": "must be at most 128 characters (got 200)"},
        ])
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn listing_returns_the_newest_entries_first(pool: PgPool) {
    let app = TestApp::new(pool);
    for i in 1..=15 {
        app.store(&format!("note {i}"), "hi").await;
    }

    let default = app.get("/data").await;
    let three = app.get("/data?n=3").await;

    assert_eq!(default.status, StatusCode::OK);
    let notes = |response: &crate::helpers::TestResponse| -> Vec<String> {
        response.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["notes"].as_str().expect("notes").to_owned())
            .collect()
    };
    let expected: Vec<String> = (6..=15).rev().map(|i| format!("note {i}")).collect();
    assert_eq!(notes(&default), expected, "n defaults to 10");
    assert_eq!(notes(&three), ["note 15", "note 14", "note 13"]);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn listing_accepts_the_bounds_and_an_empty_table(pool: PgPool) {
    let app = TestApp::new(pool);

    let empty = app.get("/data?n=100").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.json(), json!({"items": []}));

    for _ in 0..101 {
        app.store("n", "g").await;
    }
    let one = app.get("/data?n=1").await.json();
    let hundred = app.get("/data?n=100").await.json();
    assert_eq!(one["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(hundred["items"].as_array().map(Vec::len), Some(100));
    assert_eq!(one["items"][0]["id"], hundred["items"][0]["id"]);
}

/// The notes of a list's items, in order.
fn listed_notes(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["notes"].as_str().expect("notes").to_owned())
        .collect()
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn paging_back_visits_every_entry_once_newest_first(pool: PgPool) {
    let app = TestApp::new(pool);
    for i in 1..=25 {
        app.store(&format!("note {i}"), "hi").await;
    }

    let mut pages = Vec::new();
    let mut path = "/data?n=10".to_owned();
    loop {
        let response = app.get(&path).await;
        assert_eq!(response.status, StatusCode::OK, "{path}");
        let page = response.json();
        pages.push(listed_notes(&page));
        match page["next_before"].as_i64() {
            Some(before) => {
                assert_eq!(
                    page["items"][9]["id"].as_i64(),
                    Some(before),
                    "the cursor is the last item's id"
                );
                path = format!("/data?n=10&before={before}");
            }
            None => break,
        }
        assert!(pages.len() < 10, "paging ends");
    }

    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5]);
    let all: Vec<String> = pages.concat();
    let expected: Vec<String> = (1..=25).rev().map(|i| format!("note {i}")).collect();
    assert_eq!(all, expected);
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn the_last_page_names_no_next_one(pool: PgPool) {
    let app = TestApp::new(pool);
    for i in 1..=10 {
        app.store(&format!("note {i}"), "hi").await;
    }

    let exactly_all = app.get("/data?n=10").await.json();
    let more_than_all = app.get("/data?n=11").await.json();
    let one_short = app.get("/data?n=9").await.json();
    let below_the_first = app.get("/data?before=1").await;

    assert!(exactly_all.get("next_before").is_none(), "{exactly_all}");
    assert!(
        more_than_all.get("next_before").is_none(),
        "{more_than_all}"
    );
    assert_eq!(one_short["next_before"], one_short["items"][8]["id"]);
    assert_eq!(below_the_first.status, StatusCode::OK);
    assert_eq!(below_the_first.json(), json!({"items": []}));
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_page_before_an_id_defaults_to_ten_entries_below_it(pool: PgPool) {
    let app = TestApp::new(pool);
    for i in 1..=30 {
        app.store(&format!("note {i}"), "hi").await;
    }
    let newest = app.get("/data?n=1").await.json()["items"][0]["id"]
        .as_i64()
        .expect("an id");

    let page = app.get(&format!("/data?before={newest}")).await.json();

    let expected: Vec<String> = (20..=29).rev().map(|i| format!("note {i}")).collect();
    assert_eq!(listed_notes(&page), expected);
    assert!(page["next_before"].is_i64());
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn every_bad_cursor_is_refused_by_name(pool: PgPool) {
    let app = TestApp::new(pool);
    app.store("n", "g").await;

    for query in [
        "before=0",
        "before=-1",
        "before=abc",
        "before=1.5",
        "before=",
        "before=9223372036854775808",
        "before=5&before=5",
        "n=0&before=0",
    ] {
        let response = app.get(&format!("/data?{query}")).await;

        let problem = response.assert_problem(StatusCode::BAD_REQUEST);
        assert_eq!(problem["type"], "/problems/invalid-query", "{query}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|error| error["field"].as_str().expect("a field"))
            .collect();
        assert!(fields.contains(&"before"), "{query}: {problem}");
    }
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn every_bad_list_size_names_the_allowed_range(pool: PgPool) {
    let app = TestApp::new(pool);
    app.store("n", "g").await;
    let bad = [
        "n=0",
        "n=101",
        "n=-1",
        "n=abc",
        "n=1.5",
        "n=",
        "n=99999999999999999999",
        "n=1e2",
        "n=%201",
        "n=0x10",
        "n=5&n=5",
        "n=5&n=6",
    ];

    for query in bad {
        let response = app.get(&format!("/data?{query}")).await;

        let problem = response.assert_problem(StatusCode::BAD_REQUEST);
        assert_eq!(problem["type"], "/problems/invalid-query", "{query}");
        assert_eq!(problem["errors"][0]["field"], "n", "{query}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("from 1 to 100") || detail.contains("at most once"),
            "{query}: {detail}"
        );
    }
    assert_eq!(
        app.stored_rows().await,
        1,
        "listing never changes the table"
    );
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn a_thousand_concurrent_writes_are_all_stored_once_in_order(pool: PgPool) {
    let app = TestApp::new(pool);
    // Collected, so all are spawned before the first is awaited.
    let writes: Vec<_> = (0..1000)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let body =
                    json!({"notes": format!("concurrent {i}"), "greeting": "at once"}).to_string();
                let response = app.post_data(body).await;
                assert_eq!(response.status, StatusCode::CREATED, "write {i}");
                response.json()["id"].as_i64().expect("an id")
            })
        })
        .collect();

    let mut ids = Vec::new();
    for write in writes {
        ids.push(write.await.expect("the write task finishes"));
    }

    let distinct: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 1000, "every acknowledged id is distinct");
    assert_eq!(app.stored_rows().await, 1000);
    let stored: Vec<i64> = sqlx::query_scalar("SELECT id FROM data ORDER BY id DESC")
        .fetch_all(&app.pool)
        .await
        .expect("reads ids");
    let mut acknowledged: Vec<i64> = distinct.into_iter().collect();
    acknowledged.reverse();
    assert_eq!(
        stored, acknowledged,
        "the stored ids are exactly the acknowledged ones"
    );
    let listed: Vec<i64> = app.get("/data?n=100").await.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["id"].as_i64())
        .collect();
    assert_eq!(listed, stored[..100], "the list shows the newest first");
}

#[sqlx::test(migrator = "api::db::MIGRATOR")]
async fn combining_marks_and_right_to_left_text_are_counted_by_character(pool: PgPool) {
    let app = TestApp::new(pool);
    let combining = "e\u{301}".repeat(64);
    let right_to_left = "\u{5e9}".repeat(128);
    assert_eq!(combining.chars().count(), 128);

    app.store(&combining, &right_to_left).await;
    let over = app
        .post_data(json!({"notes": format!("{combining}\u{301}"), "greeting": format!("{right_to_left}\u{5e9}")}).to_string())
        .await;

    let problem = over.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem["errors"].as_array().map(Vec::len),
        Some(2),
        "{problem}"
    );
    assert_eq!(app.stored_rows().await, 1);
}
