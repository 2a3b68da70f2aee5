//! The smoke test of a deployed environment: `/health`, then a `POST /data`
//! and the `GET`s that must return what it stored.

use std::time::Duration;

use anyhow::{Context as _, anyhow, ensure};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use ops::progress::Progress;
use ops::wait::{self, Look, Patience};

/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP(S) client for the smoke test.
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client() -> anyhow::Result<HttpClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
        .context("loading the system's CA certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// One request; the status and the body parsed as JSON (`Null` when empty
/// or not JSON).
async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = Request::builder().method(method.clone()).uri(url);
    let payload = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(payload))
        .with_context(|| format!("building {method} {url}"))?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
        .await
        .with_context(|| format!("{method} {url}: no answer within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("{method} {url}: reading the body"))?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// Checks the service at `base` (e.g. `http://notes-prod.eba-x.us-east-1.elasticbeanstalk.com`):
/// `/health` answers 200 (retried for `patience`: the name may still be
/// propagating), `POST /data` stores a note naming `label`, and both
/// `GET /data/{id}` and `GET /data?n=100` return it.
///
/// The note stays in the table: it records which version was checked when.
pub async fn check(
    base: &str,
    label: &str,
    patience: Duration,
    progress: &Progress,
) -> anyhow::Result<()> {
    let base = base.trim_end_matches('/');
    let client = client()?;
    progress.say(&format!("smoke test of {base}"));

    let every = Duration::from_secs(2);
    wait::until(
        Patience {
            timeout: patience,
            every,
        },
        async || {
            Ok(
                match send(&client, Method::GET, &format!("{base}/health"), None).await {
                    Ok((StatusCode::OK, _)) => Look::Done(()),
                    Ok((status, body)) => Look::NotYet(format!("answered {status} {body}")),
                    Err(error) => Look::NotYet(format!("{error:#}")),
                },
            )
        },
        |timed_out| anyhow!("GET {base}/health {}", timed_out.last),
    )
    .await?;
    progress.say("  GET /health: 200");

    let note = json!({
        "notes": format!("deploy smoke test of {label}"),
        "greeting": "hello from the deploy pipeline",
    });
    let (status, created) =
        send(&client, Method::POST, &format!("{base}/data"), Some(&note)).await?;
    ensure!(
        status == StatusCode::CREATED,
        "POST {base}/data answered {status} {created}, not 201"
    );
    let id = created["id"]
        .as_i64()
        .with_context(|| format!("POST {base}/data answered without an id: {created}"))?;
    progress.say(&format!("  POST /data: 201, id {id}"));

    let (status, fetched) = send(&client, Method::GET, &format!("{base}/data/{id}"), None).await?;
    ensure!(
        status == StatusCode::OK && fetched["notes"] == note["notes"],
        "GET {base}/data/{id} answered {status} {fetched}, not the note just stored"
    );
    let (status, listed) = send(&client, Method::GET, &format!("{base}/data?n=100"), None).await?;
    let listed_it = listed["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|item| item["id"] == id));
    ensure!(
        status == StatusCode::OK && listed_it,
        "GET {base}/data?n=100 answered {status} without record {id}"
    );
    progress.say(&format!("  GET /data/{id} and /data?n=100 return it"));
    Ok(())
}
