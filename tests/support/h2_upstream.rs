//! A stand-in API that speaks HTTP/2 only (ALPN `h2`) over real TLS on this host's loopback and
//! allows a fixed number of concurrent streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`),
//! as real API front ends do. Each request's body is read whole, then answered with `{"ok":true}`;
//! the stand-in counts requests in flight (headers received, answer not yet sent).
#![allow(dead_code)]

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The running HTTP/2 stand-in; stops when dropped.
pub struct H2StandIn {
    pub port: u16,
    pub ca_file: PathBuf,
    in_flight: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for H2StandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl H2StandIn {
    /// Serve HTTP/2 with at most `max_streams` concurrent streams per connection.
    pub async fn start(max_streams: u32) -> H2StandIn {
        let dir = tempfile::tempdir().unwrap();
        let (acceptor, ca_pem) = super::upstream::tls_acceptor(&[b"h2"]);
        let ca_file = dir.path().join("h2-stand-in-ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            acceptor,
            max_streams,
            in_flight.clone(),
            answered.clone(),
            stop.clone(),
        ));
        H2StandIn {
            port,
            ca_file,
            in_flight,
            answered,
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

    /// Requests whose headers arrived and that are not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Wait (bounded) until `wanted(requests in flight)` holds.
    pub async fn wait_in_flight(&self, wanted: impl Fn(usize) -> bool, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !wanted(self.in_flight()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the HTTP/2 stand-in still has {} requests in flight after {limit:?}",
                self.in_flight()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Counts a request in flight until dropped (the handler returned or was cancelled).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    max_streams: u32,
    in_flight: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
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
        let (acceptor, in_flight, answered, stop) = (
            acceptor.clone(),
            in_flight.clone(),
            answered.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let (in_flight, answered) = (in_flight.clone(), answered.clone());
                async move {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let _counted = InFlight(in_flight);
                    let body = request.into_body().collect().await;
                    let reply = match body {
                        Ok(_) => {
                            answered.fetch_add(1, Ordering::SeqCst);
                            Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                        }
                        Err(_) => {
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = http::StatusCode::BAD_REQUEST;
                            response
                        }
                    };
                    Ok::<_, Infallible>(reply)
                }
            });
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(max_streams)
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}
