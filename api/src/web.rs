//! Serving the compiled web client (trunk's output): `index.html` for the
//! app's pages, hashed assets with a long cache, precompressed variants, and
//! the security headers of every page.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tower::ServiceExt as _;
use tower_http::services::ServeDir;

use crate::error::{plain_problem, problem_response};

/// `Cache-Control` of pages: always revalidate, so a deploy shows at once.
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// `Cache-Control` of an answer that is not the file (an error).
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// `Cache-Control` of assets whose name holds a content hash.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

/// The built client, ready to serve.
#[derive(Debug)]
pub struct WebAssets {
    /// The folder holding `index.html` and the hashed assets, served with
    /// their precompressed variants.
    files: ServeDir,
    /// The Content-Security-Policy of the page, allowing exactly the inline
    /// scripts `index.html` holds (by hash) and nothing from elsewhere.
    csp: HeaderValue,
}

impl WebAssets {
    /// Loads the client from `dir`; `None` when it has not been built there.
    pub fn load(dir: &Path) -> anyhow::Result<Option<WebAssets>> {
        let index = dir.join("index.html");
        let html = match std::fs::read_to_string(&index) {
            Ok(html) => html,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("reading {} (web.dir)", index.display()));
            }
        };
        let csp = HeaderValue::from_str(&content_security_policy(&html))
            .context("building the Content-Security-Policy")?;
        let files = ServeDir::new(dir)
            .precompressed_br()
            .precompressed_gzip()
            .append_index_html_on_directories(false);
        Ok(Some(WebAssets { files, csp }))
    }
}

/// A policy that allows this app and nothing else: its own files, its
/// WebAssembly, and the inline scripts of `html` by their SHA-256.
fn content_security_policy(html: &str) -> String {
    let hashes: String = inline_scripts(html)
        .map(|script| {
            let digest = Sha256::digest(script.as_bytes());
            format!(
                " 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            )
        })
        .collect();
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{hashes}; style-src 'self'; \
         img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The bodies of `<script>` elements without a `src`.
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    html.split("<script").skip(1).filter_map(|rest| {
        let (attributes, after) = rest.split_once('>')?;
        if attributes.contains("src=") {
            return None;
        }
        after.split_once("</script>").map(|(body, _)| body)
    })
}

/// Whether a file name carries trunk's content hash (`name-<16 hex>.ext`
/// or `name-<16 hex>_bg.wasm`), so its content never changes.
fn is_hashed(name: &str) -> bool {
    name.match_indices('-').any(|(at, _)| {
        let hash = &name.as_bytes()[at + 1..];
        hash.len() > 16
            && hash[..16].iter().all(u8::is_ascii_hexdigit)
            && matches!(hash[16], b'.' | b'_')
    })
}

/// The first segment of every path in `paths`: `/data/{id}` gives `/data`.
pub fn first_segments(paths: &utoipa::openapi::OpenApi) -> Vec<String> {
    let mut prefixes: Vec<String> = paths
        .paths
        .paths
        .keys()
        .filter_map(|path| path.split('/').nth(1))
        .map(|segment| format!("/{segment}"))
        .collect();
    prefixes.sort();
    prefixes.dedup();
    prefixes
}

/// The router's fallback: the web client for pages and assets, a problem
/// for unknown paths under the API's prefixes.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// The built client; without it every unknown path is a JSON 404.
    assets: Option<Arc<WebAssets>>,
    /// Path prefixes that belong to the API (`/data`): unknown paths under
    /// them answer a JSON 404 instead of the app's page.
    api_prefixes: Arc<[String]>,
}

impl Fallback {
    /// The fallback over `assets`, leaving `api_prefixes` to the API.
    pub fn new(assets: Option<Arc<WebAssets>>, api_prefixes: Vec<String>) -> Fallback {
        Fallback {
            assets,
            api_prefixes: api_prefixes.into(),
        }
    }

    /// Answers `request`.
    pub async fn serve(self, request: Request) -> Response {
        let path = request.uri().path();
        let is_api = self.api_prefixes.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        match self.assets.as_deref().filter(|_| !is_api) {
            Some(web) => serve(web, request).await,
            None => problem_response(&plain_problem(
                StatusCode::NOT_FOUND,
                format!("No resource at {path}."),
            )),
        }
    }
}

/// The web client's page or asset for `request`.
async fn serve(web: &WebAssets, mut request: Request) -> Response {
    let path = request.uri().path().to_owned();
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = problem_response(&plain_problem(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} does not accept {}.", request.method()),
        ));
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
        return response;
    }
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    let is_page = path == "/" || name == "index.html";
    if is_page {
        *request.uri_mut() = Uri::from_static("/index.html");
    }
    let files = web.files.clone();
    let mut response = files.clone().oneshot(request).await.into_response();
    // A miss: no such file, or a name the file system refuses (too long,
    // NUL), which ServeDir reports as a 500.
    let status = response.status();
    if status == StatusCode::NOT_FOUND || status.is_server_error() {
        // A last segment with a dot names a missing file; anything else is
        // a route of the client-side app, which index.html handles.
        if name.contains('.') {
            return problem_response(&plain_problem(
                StatusCode::NOT_FOUND,
                format!("No file at {path}."),
            ));
        }
        let index = Request::get("/index.html")
            .body(axum::body::Body::empty())
            .expect("a static request is valid");
        response = files.oneshot(index).await.into_response();
    }
    // Decided on what is served, not on the path, so no spelling of a path
    // (`/index%2Ehtml`) yields the page without its policy.
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/html"));
    let cacheable = matches!(
        response.status(),
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
    );
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if !cacheable {
        // An error (a range past the end, say) is not the asset: never
        // cached as it would be.
        headers.insert(header::CACHE_CONTROL, NO_STORE);
    } else if is_html {
        headers.insert(header::CACHE_CONTROL, NO_CACHE);
        headers.insert(header::CONTENT_SECURITY_POLICY, web.csp.clone());
    } else if is_hashed(&name) {
        headers.insert(header::CACHE_CONTROL, IMMUTABLE);
    } else {
        headers.insert(header::CACHE_CONTROL, NO_CACHE);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunk_hashed_names_are_recognised() {
        assert!(is_hashed("web-3f1c0a6b2c9d8e7f.js"));
        assert!(is_hashed("web-3f1c0a6b2c9d8e7f_bg.wasm"));
        assert!(is_hashed("style-0123456789abcdef.css"));
        assert!(!is_hashed("index.html"));
        assert!(!is_hashed("my-file.js"));
        assert!(!is_hashed("web-3f1c0a6b2c9d8e7.js"));
    }

    #[test]
    fn the_policy_hashes_inline_scripts_only() {
        let html = r#"<script src="/a.js"></script><script type="module">init()</script>"#;

        let policy = content_security_policy(html);

        let expected = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"init()"));
        assert!(policy.contains(&format!("'sha256-{expected}'")), "{policy}");
        assert_eq!(policy.matches("sha256-").count(), 1, "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"));
        assert!(policy.contains("'wasm-unsafe-eval'"));
        assert!(!policy.contains("unsafe-inline"));
    }
}
