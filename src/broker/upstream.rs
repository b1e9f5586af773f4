//! The provider APIs the broker forwards to: one pooled HTTPS client per provider.
//!
//! Invariants:
//! - Only `https://` upstreams exist (the config refuses anything else), so a key never leaves
//!   the host in clear text. Certificates are checked against the system's roots plus the
//!   provider's `upstream_ca_file`; HTTP/2 or HTTP/1.1 is chosen by ALPN.
//! - A provider's requests go to its own upstream and nowhere else: the request path is
//!   appended to the configured origin and prefix; the client's Host header is never used.
//! - Each task has a client of its own ([`Upstream::for_task`]): its own connection pool, so
//!   one task's requests never wait for another's connections or HTTP/2 streams (an API
//!   allowing 4 concurrent streams per connection cannot be filled by one task for all). The
//!   provider's TLS settings, and with them the TLS session cache, are shared, so a task's
//!   first request resumes a session rather than paying a full handshake.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;

use super::body::ProxyBody;
use crate::config::{ApiAuth, ApiRoute, PluginConfig};
use crate::tls::{self, TlsSetupError};

/// How long an idle pooled connection to an upstream is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why the broker's upstreams could not be set up (at SetConfig).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(
        "provider {provider:?}: cannot read upstream_ca_file {path}: {reason}; point it at a \
         readable PEM file of CA certificates, or set it to \"\""
    )]
    CaFile {
        provider: String,
        path: String,
        reason: String,
    },
    #[error(
        "provider {provider:?}: no CA certificate to check {origin} against: the system has \
         none (install Debian's ca-certificates) and upstream_ca_file is not set"
    )]
    NoRoots { provider: String, origin: String },
    #[error("provider {provider:?}: cannot set up TLS: {reason}")]
    Tls { provider: String, reason: String },
}

/// The pooled HTTPS client type.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// One provider's API.
#[derive(Clone)]
pub struct Upstream {
    /// `https://host[:port]`.
    pub origin: String,
    /// `""` or `/prefix`.
    pub path: String,
    pub auth: ApiAuth,
    /// Path prefixes requests may have (`api_paths`, matched on segment boundaries); empty:
    /// any path.
    pub paths: Vec<String>,
    pub client: HttpsClient,
    /// TLS and TCP settings every task's client is built from.
    connector: HttpsConnector<HttpConnector>,
}

impl Upstream {
    /// This upstream with a client — a connection pool — of its own, for one task that keeps
    /// at most `max_connections` requests in flight (the most idle connections it keeps).
    pub fn for_task(&self, max_connections: usize) -> Upstream {
        Upstream {
            client: pooled_client(self.connector.clone(), max_connections),
            ..self.clone()
        }
    }

    /// The upstream URI for a request to `path_and_query` (starting with `/`).
    pub fn uri_for(&self, path_and_query: &str) -> Result<http::Uri, http::uri::InvalidUri> {
        format!("{}{}{}", self.origin, self.path, path_and_query).parse()
    }

    /// Whether a request for `path` (in [`crate::request_path::normalise`]d form) may be forwarded:
    /// `api_paths` is empty, or `path` lies within one of its prefixes on a segment boundary.
    pub fn allows_path(&self, path: &str) -> bool {
        self.paths.is_empty()
            || self
                .paths
                .iter()
                .any(|prefix| crate::request_path::within(path, prefix))
    }

    /// Whether `uri` goes to this upstream's own scheme, host and port (checked on every
    /// request, so no path can steer a key elsewhere).
    pub fn is_its_origin(&self, uri: &http::Uri) -> bool {
        match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => {
                format!("{scheme}://{}", authority.as_str()) == self.origin
            }
            _ => false,
        }
    }
}

/// The upstreams of every broker-mode provider of `config`.
pub fn upstreams(config: &PluginConfig) -> Result<BTreeMap<String, Arc<Upstream>>, UpstreamError> {
    let system_roots = tls::system_roots();
    let mut out = BTreeMap::new();
    for (name, provider) in &config.providers {
        let Some(route) = provider.credential_mode.route() else {
            continue;
        };
        let connector = connector(name, route, &system_roots, config.broker.connect_timeout)?;
        out.insert(
            name.clone(),
            Arc::new(Upstream {
                origin: route.upstream_origin.clone(),
                path: route.upstream_path.clone(),
                auth: route.auth,
                paths: route.paths.clone(),
                client: pooled_client(connector.clone(), config.broker.max_connections),
                connector,
            }),
        );
    }
    Ok(out)
}

fn connector(
    provider: &str,
    route: &ApiRoute,
    system_roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, UpstreamError> {
    let tls = tls::client_config(system_roots, route.ca_file.as_deref()).map_err(|err| {
        let provider = provider.to_string();
        match err {
            TlsSetupError::CaFile { path, reason } => UpstreamError::CaFile {
                provider,
                path,
                reason,
            },
            TlsSetupError::NoRoots => UpstreamError::NoRoots {
                provider,
                origin: route.upstream_origin.clone(),
            },
            TlsSetupError::Config(reason) => UpstreamError::Tls { provider, reason },
        }
    })?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_all_versions()
        .wrap_connector(http))
}

/// A client with a connection pool of its own over `connector`.
fn pooled_client(connector: HttpsConnector<HttpConnector>, max_idle: usize) -> HttpsClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_request_path_leaves_the_configured_origin() {
        let upstreams = upstreams(&PluginConfig::default()).unwrap();
        let openai = &upstreams["openai"];
        for path in [
            "/v1/responses",
            "//evil.example/v1",
            "/@evil.example/v1",
            "/%2F%2Fevil.example",
            "/v1?x=@evil.example:443",
        ] {
            let uri = openai.uri_for(path).unwrap();
            assert!(openai.is_its_origin(&uri), "{path} → {uri}");
            assert_eq!(uri.host(), Some("api.openai.com"), "{path}");
        }
        // Anything that would change the authority does not parse, or is refused.
        for path in ["*", ":8443/v1", ".evil.example/v1", "@evil.example/v1"] {
            let stays = openai
                .uri_for(path)
                .map(|uri| openai.is_its_origin(&uri))
                .unwrap_or(false);
            assert!(!stays, "{path}");
        }
    }
}
