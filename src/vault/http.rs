//! A thin HTTPS client for Vault's HTTP API: one pooled connection set per plugin, JSON in and
//! out, every request bounded in time and in answer size.
//!
//! Invariants:
//! - Certificates are checked against the system's roots plus `ca_file`; plain `http://` only
//!   reaches loopback (the config refuses anything else).
//! - The token travels in `X-Vault-Token` and nowhere else; no error of this module holds a
//!   token, a request body or an answer's secret data (Vault's own error strings are kept: they
//!   never contain secrets).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};

use super::VaultError;
use crate::config::VaultConfig;
use crate::tls::TlsSetupError;

/// Largest answer read from Vault (a KV entry with a few keys is a few KB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// What Vault answered: its status and its JSON body (`Null` when empty). Deliberately not
/// `Debug`: the body may hold keys or a token.
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl Answer {
    /// Vault's `errors` list, joined (empty when there is none).
    pub fn errors(&self) -> String {
        self.body
            .get("errors")
            .and_then(|e| e.as_array())
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }
}

/// Vault's HTTP API at one address.
pub struct VaultHttp {
    address: String,
    namespace: Option<String>,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl VaultHttp {
    pub fn new(config: &VaultConfig) -> Result<Self, VaultError> {
        let tls = crate::tls::client_config(&crate::tls::system_roots(), config.ca_file.as_deref())
            .map_err(|err| match err {
                TlsSetupError::CaFile { path, reason } => VaultError::File {
                    what: "vault.ca_file",
                    path,
                    reason,
                },
                TlsSetupError::NoRoots => VaultError::Setup(format!(
                    "no CA certificate to check {} against: the system has none (install \
                     Debian's ca-certificates) and vault.ca_file is not set",
                    config.address
                )),
                TlsSetupError::Config(reason) => VaultError::Setup(reason),
            })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.request_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(VaultHttp {
            address: config.address.clone(),
            namespace: config.namespace.clone(),
            timeout: config.request_timeout,
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(https),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// `method` on `/v1/<path>` with an optional JSON body and token.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        token: Option<&SecretString>,
    ) -> Result<Answer, VaultError> {
        let unreachable = |reason: String| VaultError::Unreachable {
            address: self.address.clone(),
            reason,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}/v1/{path}", self.address));
        if let Some(token) = token {
            let mut value = http::HeaderValue::from_str(token.expose_secret())
                .map_err(|_| VaultError::Setup("the Vault token is not a header value".into()))?;
            value.set_sensitive(true);
            request = request.header("x-vault-token", value);
        }
        if let Some(namespace) = &self.namespace {
            request = request.header("x-vault-namespace", namespace);
        }
        let payload = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| VaultError::Setup(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = response.status();
            let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading its answer: {e}")))?
                .to_bytes();
            let body = if bytes.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
            };
            Ok(Answer { status, body })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(unreachable(format!(
                "no answer within {} (vault.request_timeout)",
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}

/// An error and its sources, e.g. "client error (Connect): tcp connect error: Connection refused".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
