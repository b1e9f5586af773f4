//! A stand-in for a gateway in front of a provider's API, the kind the broker's path checks and
//! key scrub must hold against: a real HTTPS server on this host's loopback (its own CA, as in
//! `upstream.rs`) speaking HTTP/2 or HTTP/1.1 by ALPN, which
//! - records every request as received (raw path, headers, body and trailers), and what nginx
//!   would route it to ([`resolve_like_nginx`]: percent-decoded, `.`/`..` resolved, slashes
//!   merged);
//! - answers as the test says ([`Answer`]): any status, reason phrase and headers, a body sent
//!   in the chunks given — so a test can reflect the key back, redirect with the query, or
//!   compress.
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
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// One request as the gateway received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// `HTTP/2.0` or `HTTP/1.1`.
    pub version: String,
    /// Path and query, exactly as sent.
    pub raw: String,
    /// The path nginx would route to (`None`: nginx would answer 400), without the query.
    pub routed: Option<String>,
    pub query: Option<String>,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub trailers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The request's headers as `name: value` lines (what a reflecting endpoint echoes).
    pub fn header_lines(&self) -> String {
        self.headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect()
    }
}

/// What the gateway answers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// A non-standard HTTP/1 reason phrase.
    pub reason: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The body, sent chunk by chunk, `pause` apart.
    pub chunks: Vec<Vec<u8>>,
    pub pause: Duration,
}

impl Answer {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            reason: None,
            headers: Vec::new(),
            chunks: vec![body.into()],
            pause: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// The running gateway; stops when dropped.
pub struct Gateway {
    pub port: u16,
    pub ca_file: PathBuf,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Answerer = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

impl Gateway {
    /// Answer every request with `answer`; offer HTTP/2 and HTTP/1.1 (`http2`) or only 1.1.
    pub async fn start(
        http2: bool,
        answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, ca_pem) = tls(http2);
        let ca_file = dir.path().join("gateway-ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            acceptor,
            Arc::new(answer),
            seen.clone(),
            stop.clone(),
        ));
        Gateway {
            port,
            ca_file,
            seen,
            stop,
            _dir: dir,
        }
    }

    pub fn origin(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn ca_path(&self) -> String {
        self.ca_file.to_string_lossy().into_owned()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

/// The path nginx routes `path` to: percent-decoded (`%2F` too), `.` and `..` resolved, runs
/// of `/` merged; `None` where nginx answers 400 (a bad escape, or `..` above the root).
pub fn resolve_like_nginx(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = decoded.split('/').collect();
    let last = parts.len() - 1;
    let mut trailing_slash = false;
    for (n, segment) in parts.iter().enumerate() {
        match *segment {
            "" | "." => trailing_slash = n == last && n > 0,
            ".." => {
                segments.pop()?;
                trailing_slash = n == last;
            }
            other => {
                segments.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    if trailing_slash && !segments.is_empty() {
        out.push('/');
    }
    Some(out)
}

fn tls(http2: bool) -> (TlsAcceptor, String) {
    if http2 {
        super::upstream::tls_acceptor(&[b"h2", b"http/1.1"])
    } else {
        super::upstream::tls_acceptor(&[b"http/1.1"])
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    answer: Answerer,
    seen: Arc<Mutex<Vec<Seen>>>,
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
        let (acceptor, answer, seen, stop) =
            (acceptor.clone(), answer.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let service = service_fn(move |request: Request<Incoming>| {
                let (answer, seen) = (answer.clone(), seen.clone());
                async move {
                    let request = record(request).await;
                    let reply = answer(&request);
                    seen.lock().push(request);
                    Ok::<_, Infallible>(respond(reply))
                }
            });
            let io = TokioIo::new(tls);
            if h2 {
                let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = connection => {}
                }
            } else {
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = connection => {}
                }
            }
        });
    }
}

fn pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn record(request: Request<Incoming>) -> Seen {
    let (parts, body) = request.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().map(pairs).unwrap_or_default();
            (collected.to_bytes().to_vec(), trailers)
        }
        Err(_) => (Vec::new(), Vec::new()),
    };
    Seen {
        method: parts.method.to_string(),
        version: format!("{:?}", parts.version),
        raw: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        routed: resolve_like_nginx(parts.uri.path()),
        query: parts.uri.query().map(str::to_string),
        headers: pairs(&parts.headers),
        trailers,
        body,
    }
}

type GatewayBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn respond(answer: Answer) -> Response<GatewayBody> {
    let pause = answer.pause;
    let stream = futures::stream::unfold(answer.chunks.into_iter(), move |mut rest| async move {
        let chunk = rest.next()?;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(chunk))), rest))
    });
    let mut response = Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        response = response.header(name, value);
    }
    let mut response = response.body(StreamBody::new(stream).boxed()).unwrap();
    if let Some(reason) = answer.reason {
        response
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::try_from(reason.into_bytes()).unwrap());
    }
    response
}
