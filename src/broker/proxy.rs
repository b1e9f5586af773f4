//! One request through the broker: check it, look the task's key up, rewrite the credential,
//! forward it to the provider's API, stream the answer back.
//!
//! Invariants:
//! - Whatever credential the client sent (`Authorization`, `x-api-key`, `x-goog-api-key`,
//!   `api-key`, `Proxy-Authorization`, cookies, request trailers, a `key=` query parameter
//!   however its name is percent-encoded or cased) is dropped; the real key is looked up for
//!   this task at every request and put where the provider expects it.
//! - The path is checked and forwarded in one plain form ([`crate::request_path`]): dot segments and
//!   ambiguous encodings are refused with 403 before anything is sent, and `api_paths` match
//!   on segment boundaries, so no path reaches another API path or leaves the upstream prefix.
//! - No answer carries the key ([`super::scrub`]): the upstream's reason phrase is dropped,
//!   its headers, body and trailers are scrubbed as they stream. Answers are asked for without
//!   compression (`Accept-Encoding: identity`), and a compressed one is refused (502), since
//!   the scrub could not see into it; `Range` is not forwarded, so no answer starts or ends
//!   where the task chose.
//! - Requests and answers stream frame by frame (SSE included); request bodies are bounded by
//!   `max_body_bytes` and the client's waits while sending them by `request_body_timeout`
//!   (`super::client_body`), the wait for the answer and every pause inside it by
//!   `upstream_timeout`.
//! - Only origin-form requests (`GET /v1/…`) are forwarded, always to the provider's own
//!   origin; `CONNECT` goes to [`super::egress`].
//! - Nothing logged or answered contains the key or a query string.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use secrecy::ExposeSecret;

use super::TaskContext;
use super::body::{Guarded, ProxyBody, boxed};
use super::client_body::WaitLimited;
use super::reply::Refusal;
use super::scrub::{KeyForms, ScrubbedBody};
use super::trailers::WithoutTrailers;
use crate::config::ApiAuth;
use crate::credentials::CredentialError;
use crate::request_path as path;

/// Headers never forwarded from the client: those that carry a credential, those that ask a
/// server to treat a request as another method (which could turn it into a `TRACE`), and those
/// that would shape the answer past the key scrub (compression, ranges).
const DROPPED_CLIENT_HEADERS: [&str; 13] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "max-forwards",
    // The broker asks for identity encoding itself (see `forward`).
    "accept-encoding",
    // A range would cut a reflected key where the task chose, past the scrub.
    "range",
    "if-range",
];

/// Methods forwarded to the API. `TRACE`/`TRACK` would echo the request — the key included —
/// back to the container, and APIs need nothing else.
const FORWARDED_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Serve one request of the task behind `ctx`.
pub(super) async fn serve(
    ctx: Arc<TaskContext>,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let answer = if method == Method::CONNECT {
        super::egress::connect(&ctx, request).await
    } else {
        forward(&ctx, request).await
    };
    match answer {
        Ok(response) => {
            tracing::debug!(task_id = %ctx.task_id, %method, %path, status = response.status().as_u16(), "brokered request");
            response
        }
        Err(refusal) => {
            tracing::warn!(task_id = %ctx.task_id, %method, %path, status = refusal.status().as_u16(), reason = %refusal, "broker refused a request");
            refusal.into_response()
        }
    }
}

async fn forward(
    ctx: &TaskContext,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let (parts, body) = request.into_parts();
    let body = WithoutTrailers::new(body);
    if parts.uri.scheme().is_some()
        || parts.uri.authority().is_some()
        || !parts.uri.path().starts_with('/')
    {
        return Err(Refusal::BadRequest(
            "this address forwards only to the provider's API: send requests as \
             `METHOD /path`, not as a proxy request for another URL"
                .into(),
        ));
    }
    if !FORWARDED_METHODS.contains(&parts.method) {
        return Err(Refusal::MethodNotAllowed(parts.method.to_string()));
    }
    let plain_path = path::normalise(parts.uri.path()).map_err(|why| Refusal::UnsafePath {
        path: parts.uri.path().to_string(),
        why,
    })?;
    if !ctx.upstream.allows_path(&plain_path) {
        return Err(Refusal::PathNotAllowed(plain_path));
    }
    check_header_values(&parts.headers)?;
    let limit = ctx.limits.max_body_bytes;
    if let Some(length) = content_length(&parts.headers)?
        && length > limit
    {
        return Err(Refusal::BodyTooLarge { limit });
    }
    let key = ctx.current_key().await?;
    let upstream = &ctx.upstream;
    let path_and_query = rewrite_query(
        &plain_path,
        parts.uri.query(),
        (upstream.auth == ApiAuth::QueryKey).then(|| key.expose_secret()),
    );
    let uri = upstream
        .uri_for(&path_and_query)
        .ok()
        .filter(|uri| upstream.is_its_origin(uri))
        .ok_or_else(|| Refusal::BadRequest("the request path is not a valid URL path".into()))?;
    let mut headers = forwardable(&parts.headers);
    if let Some((name, prefix)) = upstream.auth.header() {
        let value = zeroize::Zeroizing::new([prefix, key.expose_secret()].concat());
        insert_secret(&mut headers, HeaderName::from_static(name), &value)?;
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let key_forms = Arc::new(KeyForms::of(key.expose_secret()));
    drop(key);
    let exceeded = Arc::new(AtomicBool::new(false));
    let (body_wait, too_slow) = (ctx.limits.request_body_timeout, Arc::default());
    let body = WaitLimited::new(body, body_wait, Arc::clone(&too_slow));
    let mut outgoing = Request::new(boxed(Guarded::limited(body, limit, exceeded.clone())));
    let request_method = parts.method.clone();
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = uri;
    *outgoing.headers_mut() = headers;
    let timeout = ctx.limits.upstream_timeout;
    let sent = tokio::time::timeout(timeout, upstream.client.request(outgoing)).await;
    let response = match sent {
        Err(_) => {
            return Err(Refusal::Timeout {
                upstream: upstream.origin.clone(),
                after: timeout,
            });
        }
        Ok(Err(_)) if exceeded.load(Ordering::SeqCst) => {
            return Err(Refusal::BodyTooLarge { limit });
        }
        Ok(Err(_)) if too_slow.load(Ordering::SeqCst) => {
            return Err(Refusal::BodyTooSlow { after: body_wait });
        }
        Ok(Err(err)) => return Err(upstream_failure(&upstream.origin, &err)),
        Ok(Ok(response)) => response,
    };
    let (mut parts, body) = response.into_parts();
    if let Some(encoding) = compressed(&parts.headers)
        && request_method != Method::HEAD
        && !matches!(
            parts.status,
            http::StatusCode::NO_CONTENT | http::StatusCode::NOT_MODIFIED
        )
    {
        return Err(Refusal::BadUpstream {
            upstream: upstream.origin.clone(),
            reason: format!(
                "it answered with Content-Encoding {encoding:?} although the broker asked for \
                 identity; the broker reads every answer to keep the key out of it, so it \
                 passes no compressed answer"
            ),
        });
    }
    parts.headers = forwardable_response(&parts.headers);
    key_forms.scrub_headers(&mut parts.headers);
    // A non-standard reason phrase (which hyper would repeat to the client) and anything else
    // the upstream's connection attached stay here.
    parts.extensions = http::Extensions::new();
    let body = ScrubbedBody::new(Guarded::idle_timeout(body, timeout), key_forms);
    Ok(Response::from_parts(parts, boxed(body)))
}

/// The answer's content coding, if it is not identity.
fn compressed(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|value| {
            String::from_utf8_lossy(value.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
        .find(|coding| !coding.is_empty() && coding != "identity")
}

impl TaskContext {
    /// The task's key as the credential source has it now.
    async fn current_key(&self) -> Result<secrecy::SecretString, Refusal> {
        let wanted = std::slice::from_ref(&self.key_variable);
        match self.credentials.resolve(&self.key, wanted, &[]).await {
            Ok(found) => found
                .into_iter()
                .find(|(name, _)| *name == self.key_variable)
                .map(|(_, value)| value)
                .ok_or_else(|| {
                    Refusal::NoCredential(format!("no {} for {}", self.key_variable, self.key))
                }),
            Err(CredentialError::Unavailable(why)) => Err(Refusal::CredentialsUnavailable(
                format!("the credential source cannot answer now ({why}); retry"),
            )),
            Err(err) => Err(Refusal::NoCredential(err.to_string())),
        }
    }
}

/// Refuse header values that are not visible ASCII: no API needs them, and they are a common
/// smuggling vector.
fn check_header_values(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.iter().find(|(_, value)| value.to_str().is_err()) {
        Some((name, _)) => Err(Refusal::BadRequest(format!(
            "header {name} holds bytes that are not visible ASCII; send header values as ASCII text"
        ))),
        None => Ok(()),
    }
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Refusal> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| Refusal::BadRequest("Content-Length is not a number".into())),
    }
}

/// The client's headers minus hop-by-hop and credential headers (and those `Connection` names).
fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let named_by_connection = connection_tokens(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower)
            || DROPPED_CLIENT_HEADERS.contains(&lower)
            || named_by_connection.iter().any(|n| n == lower)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The upstream's answer headers minus hop-by-hop ones.
fn forwardable_response(headers: &HeaderMap) -> HeaderMap {
    let named_by_connection = connection_tokens(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower) || named_by_connection.iter().any(|n| n == lower) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn insert_secret(headers: &mut HeaderMap, name: HeaderName, value: &str) -> Result<(), Refusal> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        Refusal::NoCredential(
            "the stored key holds characters an HTTP header cannot carry: register it again".into(),
        )
    })?;
    value.set_sensitive(true);
    headers.insert(name, value);
    Ok(())
}

/// `path?query` without any `key` parameter, plus `key=<real>` when the provider takes it there.
fn rewrite_query(path: &str, query: Option<&str>, real_key: Option<&str>) -> String {
    let mut pairs: Vec<String> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !names_the_key(pair.split('=').next().unwrap_or_default()))
        .map(str::to_string)
        .collect();
    if let Some(key) = real_key {
        pairs.push(format!("key={}", percent_encode(key)));
    }
    if pairs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

/// Whether a query parameter name is `key` once percent-decoded (`%6Bey`, `k%65y`), in any
/// case: a server decodes names before it reads them, and no API of a provider takes another
/// parameter spelled `Key` or `KEY`, so dropping those too costs nothing.
fn names_the_key(name: &str) -> bool {
    path::percent_decode_query(name).is_some_and(|decoded| decoded.eq_ignore_ascii_case(b"key"))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Describe a failed upstream request without anything of the request itself.
fn upstream_failure(origin: &str, err: &hyper_util::client::legacy::Error) -> Refusal {
    let mut reason = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.contains(&text) {
            if !reason.is_empty() {
                reason.push_str(": ");
            }
            reason.push_str(&text);
        }
        source = cause.source();
    }
    if err.is_connect() {
        Refusal::Unreachable {
            upstream: origin.to_string(),
            reason,
        }
    } else {
        Refusal::BadUpstream {
            upstream: origin.to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer placeholder"),
            ("x-api-key", "placeholder"),
            ("X-Goog-Api-Key", "placeholder"),
            ("cookie", "session=1"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("host", "127.0.0.1:4000"),
            ("transfer-encoding", "chunked"),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        let kept = forwardable(&headers);
        let names: Vec<&str> = kept.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["anthropic-version", "content-type"]);
    }

    #[test]
    fn every_header_a_key_is_presented_in_is_dropped_from_the_client() {
        for auth in ApiAuth::ALL {
            if let Some((name, _)) = auth.header() {
                assert!(DROPPED_CLIENT_HEADERS.contains(&name), "{name}");
            }
        }
    }

    #[test]
    fn the_key_query_parameter_is_replaced_or_removed() {
        assert_eq!(
            rewrite_query("/v1", Some("alt=sse&key=placeholder"), None),
            "/v1?alt=sse"
        );
        assert_eq!(
            rewrite_query("/v1", Some("key=a&key=b"), Some("r e/al")),
            "/v1?key=r%20e%2Fal"
        );
        assert_eq!(rewrite_query("/v1", None, None), "/v1");
        assert_eq!(
            rewrite_query("/v1", Some("keyword=1"), None),
            "/v1?keyword=1"
        );
    }

    #[test]
    fn key_parameters_are_recognised_after_percent_decoding_in_any_case() {
        assert_eq!(
            rewrite_query(
                "/v1",
                Some("%6Bey=a&k%65y=b&%6b%65%79=c&KEY=d&Key=e&alt=sse&k%65yword=1&ke%79%=2"),
                Some("real"),
            ),
            "/v1?alt=sse&k%65yword=1&ke%79%=2&key=real"
        );
    }

    #[test]
    fn non_ascii_header_values_are_refused_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert("x-note", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let err = check_header_values(&headers).unwrap_err();
        assert!(err.to_string().contains("x-note"), "{err}");
    }
}
