//! The broker's own answers: every refusal is an HTTP error with a JSON body that says what
//! was wrong and how to fix it.
//!
//! The body has the fields each provider's client reads (`error.message` for OpenAI and
//! Anthropic, `error.code`/`error.status` for Google), so a CLI prints polydev's message as it
//! would the API's own:
//!
//! ```json
//! {"type":"error","error":{"type":"polydev_broker","code":401,"status":"UNAUTHENTICATED","message":"…"}}
//! ```
//!
//! Invariant: messages name namespaces, users, providers, variables, hosts and limits, never a
//! credential value or a request's query string.

use http::{HeaderValue, Response, StatusCode};

use super::body::{ProxyBody, full};

/// Header marking answers that came from polydev, not from the provider.
pub const BROKER_HEADER: &str = "x-polydev-broker";

/// Why the broker answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    BadRequest(String),
    /// No usable credential for this task (missing, removed, store off).
    #[error("{0}")]
    NoCredential(String),
    /// The credential source cannot answer now; retrying may help.
    #[error("{0}")]
    CredentialsUnavailable(String),
    #[error(
        "the request body is larger than the broker's limit of {limit} bytes; the operator can \
         raise broker {{ max_body_bytes }}"
    )]
    BodyTooLarge { limit: u64 },
    #[error(
        "the request body did not arrive: the client kept the broker waiting {after:?} in total \
         while sending it; send the body at once (the operator can raise broker {{ \
         request_body_timeout }})"
    )]
    BodyTooSlow { after: std::time::Duration },
    #[error("cannot reach {upstream}: {reason}")]
    Unreachable { upstream: String, reason: String },
    #[error(
        "{upstream} did not answer within {after:?}; the operator can raise broker {{ \
         upstream_timeout }}"
    )]
    Timeout {
        upstream: String,
        after: std::time::Duration,
    },
    #[error("{upstream} sent an invalid answer: {reason}")]
    BadUpstream { upstream: String, reason: String },
    #[error(
        "method {0} is not forwarded; the API is reached with GET, HEAD, POST, PUT, PATCH, DELETE \
         or OPTIONS"
    )]
    MethodNotAllowed(String),
    #[error(
        "{0} is not among this provider's api_paths; the operator can add its prefix to \
         provider {{ api_paths = [...] }}"
    )]
    PathNotAllowed(String),
    #[error(
        "the request path {path} is refused: {why}; send the API's plain path (no '.' or '..' \
         segments, no encoded '/', '\\' or '%')"
    )]
    UnsafePath {
        path: String,
        why: crate::request_path::UnsafePath,
    },
    #[error("{0}")]
    EgressRefused(String),
    #[error("{0}")]
    EgressFailed(String),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::NoCredential(_) => StatusCode::UNAUTHORIZED,
            Refusal::CredentialsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyTooSlow { .. } => StatusCode::REQUEST_TIMEOUT,
            Refusal::Unreachable { .. }
            | Refusal::BadUpstream { .. }
            | Refusal::EgressFailed(_) => StatusCode::BAD_GATEWAY,
            Refusal::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Refusal::EgressRefused(_) | Refusal::PathNotAllowed(_) | Refusal::UnsafePath { .. } => {
                StatusCode::FORBIDDEN
            }
            Refusal::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Google's status word for the code, which gemini-cli shows.
    fn google_status(&self) -> &'static str {
        match self.status() {
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => "INVALID_ARGUMENT",
            StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
            StatusCode::FORBIDDEN => "PERMISSION_DENIED",
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => "DEADLINE_EXCEEDED",
            _ => "UNAVAILABLE",
        }
    }

    /// The HTTP answer.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let body = serde_json::json!({
            "type": "error",
            "error": {
                "type": "polydev_broker",
                "code": status.as_u16(),
                "status": self.google_status(),
                "message": format!("polydev credential broker: {self}"),
            }
        });
        let mut response = Response::new(full(body.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(BROKER_HEADER, HeaderValue::from_static("error"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn answers_carry_the_message_where_every_cli_reads_it() {
        let response = Refusal::NoCredential("no credential for user u1".into()).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[BROKER_HEADER], "error");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], 401);
        assert_eq!(json["error"]["status"], "UNAUTHENTICATED");
        assert!(
            json["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no credential for user u1")
        );
    }

    #[test]
    fn statuses() {
        let timeout = Refusal::Timeout {
            upstream: "https://api.openai.com".into(),
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(timeout.to_string().contains("upstream_timeout"));
        assert_eq!(
            Refusal::BodyTooLarge { limit: 3 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            Refusal::EgressRefused("x".into()).status(),
            StatusCode::FORBIDDEN
        );
    }
}
