//! The smoke test of a deployed environment: `/health`, then a `POST /data`
//! and the `GET`s that must return what it stored.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use client::{self as api, Call, Failure};
use domain::NewDataRequest;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use ops::progress::Progress;
use ops::wait::{self, Look, Patience};

/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP(S) client for the smoke test.
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn http_client() -> anyhow::Result<HttpClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
        .context("loading the system's CA certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// Sends `call`'s request and reads its answer: the typed result or the
/// API's problem; an error when no answer came.
async fn send<T>(http: &HttpClient, call: &Call<T>) -> anyhow::Result<Result<T, Failure>> {
    let wanted = call.request();
    let (method, url) = (wanted.method(), wanted.uri());
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in wanted.headers() {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(wanted.body().clone())))
        .with_context(|| format!("building {method} {url}"))?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, http.request(request))
        .await
        .with_context(|| format!("{method} {url}: no answer within {REQUEST_TIMEOUT:?}"))?
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("{method} {url}: reading the body"))?
        .to_bytes();
    Ok(call.read(status, &headers, &bytes))
}

/// Sends a write until it is answered, at most `WRITE_TRIES` times: its
/// `Idempotency-Key` makes a second try store it once.
async fn send_write<T>(http: &HttpClient, call: &Call<T>) -> anyhow::Result<T> {
    let url = call.request().uri();
    let mut tries = 1;
    loop {
        let failure = match send(http, call).await {
            Ok(Ok(result)) => return Ok(result),
            Ok(Err(failure)) if !failure.is_retryable() => {
                bail!("POST {url} answered {failure}")
            }
            Ok(Err(failure)) => anyhow!("answered {failure}"),
            Err(error) => error,
        };
        if tries == WRITE_TRIES {
            return Err(failure.context(format!("POST {url}, {tries} times")));
        }
        tries += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Times the smoke test's write is sent before it gives up.
const WRITE_TRIES: u32 = 3;

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
    let http = http_client()?;
    let api = api::Client::new(base);
    progress.say(&format!("smoke test of {base}"));

    let every = Duration::from_secs(2);
    wait::until(
        Patience {
            timeout: patience,
            every,
        },
        async || {
            Ok(match send(&http, &api.health()).await {
                Ok(Ok(_)) => Look::Done(()),
                Ok(Err(failure)) => Look::NotYet(format!("answered {failure}")),
                Err(error) => Look::NotYet(format!("{error:#}")),
            })
        },
        |timed_out| anyhow!("GET {base}/health {}", timed_out.last),
    )
    .await?;
    progress.say("  GET /health: 200");

    let note = NewDataRequest {
        notes: format!("deploy smoke test of {label}"),
        greeting: "hello from the deploy pipeline".to_owned(),
    };
    let key = api::idempotency_key();
    let created = send_write(&http, &api.create_entry(&note, Some(&key))).await?;
    let id = created.record.id;
    progress.say(&format!("  POST /data: 201, id {id}"));

    let fetched = send(&http, &api.get_entry(id)).await?;
    ensure!(
        fetched
            .as_ref()
            .is_ok_and(|record| record.notes == note.notes),
        "GET {base}/data/{id} answered {fetched:?}, not the note just stored"
    );
    let listed = send(&http, &api.list_entries(Some(100), None)).await?;
    ensure!(
        listed
            .as_ref()
            .is_ok_and(|list| list.items.iter().any(|item| item.id == id)),
        "GET {base}/data?n=100 answered without record {id}: {listed:?}"
    );
    progress.say(&format!("  GET /data/{id} and /data?n=100 return it"));
    Ok(())
}
