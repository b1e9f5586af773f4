//! A real credential broker in the test process, bound on the host's loopback (the container
//! side is tested against real Docker in `broker_docker.rs`), for the Anthropic provider
//! forwarding to a local stand-in API; and raw HTTP/1.1 clients of it, so tests can send
//! what a hostile task would.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use polydev::broker::{Broker, BrokerError, BrokerLease, BrokeredTask, ListenerSite};
use polydev::credentials::{CredentialKey, CredentialSource, EnvSource};
use rmpv::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub const KEY: &str = "sk-ant-isolation-test-0123456789";

/// The plugin config: the `broker {}` block's `limits`, `egress` rules, and the Anthropic
/// provider forwarding to `upstream` (trusting `ca_file`).
pub fn plugin_config(
    upstream: &str,
    ca_file: &str,
    limits: Vec<(&str, Value)>,
    egress: &[&str],
) -> polydev::config::PluginConfig {
    let provider = super::cty_object(vec![
        ("api_auth", Value::from("x-api-key")),
        ("api_upstream", Value::from(upstream)),
        ("upstream_ca_file", Value::from(ca_file)),
    ]);
    let payload = super::encode(&super::cty_object(vec![
        ("broker", super::cty_object(limits)),
        (
            "egress",
            super::cty_object(vec![("allow", super::str_list(egress))]),
        ),
        (
            "provider",
            Value::Map(vec![(Value::from("anthropic"), provider)]),
        ),
    ]));
    polydev::config::decode_plugin_config(&payload).unwrap()
}

/// A broker of its own; its listeners end when dropped.
pub struct BrokerFixture {
    pub broker: Broker,
    shutdown: CancellationToken,
}

impl Drop for BrokerFixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl BrokerFixture {
    pub fn new(config: &polydev::config::PluginConfig) -> BrokerFixture {
        Self::build(config, None)
    }

    /// A broker whose descriptor budget is sized for a process limit of `limit`.
    pub fn with_descriptor_limit(
        config: &polydev::config::PluginConfig,
        limit: usize,
    ) -> BrokerFixture {
        Self::build(config, Some(limit))
    }

    fn build(config: &polydev::config::PluginConfig, limit: Option<usize>) -> BrokerFixture {
        let source: Arc<dyn CredentialSource> = Arc::new(EnvSource::from_pairs([(
            "ANTHROPIC_API_KEY".to_string(),
            KEY.to_string(),
        )]));
        let shutdown = CancellationToken::new();
        let mut broker = Broker::new(config, source, shutdown.clone())
            .unwrap()
            .binding_on_host_loopback();
        if let Some(limit) = limit {
            broker = broker.with_descriptor_limit(limit);
        }
        BrokerFixture { broker, shutdown }
    }

    /// Open the broker of task `task_id`.
    pub async fn try_open(&self, task_id: &str) -> Result<BrokerLease, BrokerError> {
        let task = BrokeredTask {
            task_id: task_id.into(),
            key: CredentialKey {
                namespace: "team-a".into(),
                user_id: None,
                provider: "anthropic".into(),
            },
            key_variable: "ANTHROPIC_API_KEY".into(),
        };
        self.broker.open(task, ListenerSite::HostLoopback, 0).await
    }

    pub async fn open(&self, task_id: &str) -> BrokerLease {
        self.try_open(task_id).await.unwrap()
    }
}

/// `POST path` with `body`, closing the connection after the answer.
pub fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Send `request` to the broker on `port` and read the whole answer; `Err` says what failed
/// (connect, write, or no complete answer within `limit`).
pub async fn exchange(port: u16, request: &[u8], limit: Duration) -> Result<String, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| format!("no complete answer within {limit:?}"))?
}

/// [`exchange`] of a `POST /v1/messages`, timed; the answer must be a 200.
pub async fn timed_api_call(port: u16, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let answer = exchange(port, &post("/v1/messages", "{\"model\":\"m\"}"), limit).await?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("not a 200: {answer}"));
    }
    Ok(started.elapsed())
}

/// Connect to the broker on `port` (within `limit`: a full backlog drops the handshake) and
/// send `CONNECT target` without waiting for the answer.
pub async fn ask_for_tunnel(
    port: u16,
    target: &str,
    limit: Duration,
) -> std::io::Result<TcpStream> {
    let mut stream = tokio::time::timeout(limit, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    Ok(stream)
}

/// Ask for a CONNECT tunnel to `target`; the stream and the answer's head, or what failed.
pub async fn open_tunnel(
    port: u16,
    target: &str,
    limit: Duration,
) -> Result<(TcpStream, String), String> {
    let mut stream = tokio::time::timeout(limit, TcpStream::connect(("127.0.0.1", port)))
        .await
        .map_err(|_| format!("connect: none within {limit:?}"))?
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let head = read_head(&mut stream, limit).await?;
    Ok((stream, head))
}

/// Read an answer's head (through the blank line) within `limit`.
pub async fn read_head(stream: &mut TcpStream, limit: Duration) -> Result<String, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let reading = async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(0) => return Err("closed before an answer".to_string()),
                Ok(_) => head.push(byte[0]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(())
    };
    tokio::time::timeout(limit, reading)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))??;
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A TCP service on this host's loopback that echoes what each connection sends; stops
/// accepting when dropped.
pub struct Echo {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut connection, _)) = listener.accept().await else {
                    // Out of descriptors, say: try again shortly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let (mut read, mut write) = connection.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        Echo { port, task }
    }

    /// `127.0.0.1:<port>`, as an egress rule and a CONNECT target.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
