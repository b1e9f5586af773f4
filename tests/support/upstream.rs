//! A stand-in for a provider's API: a real HTTPS server on this host's loopback with a CA of
//! its own (written to a PEM file the plugin is given as `upstream_ca_file`). It records every
//! request it receives and answers each with a canned reply in the API's own format,
//! streaming where the API streams. The providers' real APIs are unreachable from here.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its head had arrived (before the body was read).
    pub arrived: std::time::Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Everything received, as text (for searches for a value).
    pub fn text(&self) -> String {
        let headers: String = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect();
        format!(
            "{} {}\n{headers}\n{}",
            self.method,
            self.path,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A canned answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// One complete body with this status and content type.
    Whole {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// `text/event-stream`: each chunk sent on its own, `pause` apart.
    Stream {
        chunks: Vec<String>,
        pause: Duration,
    },
}

impl Reply {
    pub fn json(body: impl Into<String>) -> Reply {
        Reply::Whole {
            status: 200,
            content_type: "application/json",
            body: body.into(),
        }
    }

    pub fn sse(chunks: Vec<String>) -> Reply {
        Reply::Stream {
            chunks,
            pause: Duration::ZERO,
        }
    }
}

/// How the stand-in behaves.
#[derive(Clone)]
pub enum Mode {
    /// Answer every request with `answer(request)`.
    Http(Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>),
    /// Complete TLS, then send bytes that are not HTTP and close.
    Garbage,
    /// Complete TLS, read the request, never answer.
    Silent,
}

/// The running stand-in; stops when dropped.
pub struct StandIn {
    pub port: u16,
    pub ca_file: PathBuf,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl StandIn {
    /// Answer every request with `answer`.
    pub async fn start(answer: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> StandIn {
        StandIn::with_mode(Mode::Http(Arc::new(answer))).await
    }

    pub async fn with_mode(mode: Mode) -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, ca_pem) = tls_acceptor(&[b"http/1.1"]);
        let ca_file = dir.path().join("stand-in-ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            acceptor,
            mode,
            requests.clone(),
            stop.clone(),
        ));
        StandIn {
            port,
            ca_file,
            requests,
            stop,
            _dir: dir,
        }
    }

    /// `https://127.0.0.1:<port>`, the plugin's `api_upstream`.
    pub fn origin(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn ca_path(&self) -> String {
        self.ca_file.to_string_lossy().into_owned()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().clone()
    }

    /// Wait (bounded) until at least `count` requests arrived.
    pub async fn wait_for_requests(&self, count: usize, limit: Duration) -> Vec<Recorded> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let got = self.requests();
            if got.len() >= count {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the stand-in API got {} of {count} requests: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A fresh CA and a leaf for `127.0.0.1`/`localhost` signed by it, as PEM: (CA certificate,
/// leaf certificate, leaf private key).
pub fn test_certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "polydev test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// A TLS acceptor for a fresh leaf offering the protocols `alpn`, and its CA's PEM.
pub fn tls_acceptor(alpn: &[&[u8]]) -> (TlsAcceptor, String) {
    use rustls::pki_types::pem::PemObject;
    let (ca, leaf, key) = test_certificates();
    let leaf = rustls::pki_types::CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf], key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (TlsAcceptor::from(Arc::new(config)), ca)
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mode: Mode,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let (acceptor, mode, requests, stop) = (
            acceptor.clone(),
            mode.clone(),
            requests.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            match mode {
                Mode::Garbage => {
                    let _ = tls.write_all(b"THIS IS NOT HTTP\r\n\r\n").await;
                    let _ = tls.shutdown().await;
                }
                Mode::Silent => {
                    let mut sink = vec![0u8; 4096];
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = async {
                            use tokio::io::AsyncReadExt;
                            while tls.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
                        } => {}
                    }
                }
                Mode::Http(answer) => {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (answer, requests) = (answer.clone(), requests.clone());
                        async move {
                            let recorded = record(request).await;
                            let reply = answer(&recorded);
                            requests.lock().push(recorded);
                            Ok::<_, Infallible>(respond(reply))
                        }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service);
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = connection => {}
                    }
                }
            }
        });
    }
}

async fn record(request: Request<Incoming>) -> Recorded {
    let arrived = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        arrived,
    }
}

type StandInBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn respond(reply: Reply) -> Response<StandInBody> {
    match reply {
        Reply::Whole {
            status,
            content_type,
            body,
        } => Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(http_body_util::Full::new(Bytes::from(body)).boxed())
            .unwrap(),
        Reply::Stream { chunks, pause } => {
            let stream = futures::stream::unfold(chunks.into_iter(), move |mut rest| async move {
                let chunk = rest.next()?;
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))), rest))
            });
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
    }
}
