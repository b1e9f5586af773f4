//! The credential broker's HTTP handling, end to end over real sockets: a real broker (bound
//! on the host's loopback instead of a container's — the container side is tested against
//! real Docker in `broker_docker.rs`) forwarding over real TLS to the stand-in API of
//! `support::upstream`. Clients here speak raw HTTP/1.1, so malformed input can be sent.
//!
//! Every log line the broker writes in this test binary is captured; each test checks that
//! no key is in it.

mod support;

use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use polydev::broker::{Broker, BrokerLease, BrokeredTask, ListenerSite};
use polydev::credentials::{
    CredentialError, CredentialKey, CredentialSource, Credentials, EnvSource,
};
use rmpv::Value;
use secrecy::SecretString;
use support::upstream::{Mode, Recorded, Reply, StandIn};
use support::{cty_object, encode, str_list};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-ant-broker-test-0123456789";

/// Everything the broker logged in this test binary.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || CaptureWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_key_logged(key: &str) {
    let logs = String::from_utf8_lossy(&captured_logs().lock()).into_owned();
    assert!(!logs.contains(key), "a key is in the broker's log");
}

/// A credential source whose value the test changes (rotation, removal).
#[derive(Clone, Default)]
struct Switchable(Arc<Mutex<Option<String>>>);

impl Switchable {
    fn set(&self, value: Option<&str>) {
        *self.0.lock() = value.map(str::to_string);
    }
}

#[async_trait::async_trait]
impl CredentialSource for Switchable {
    async fn resolve(
        &self,
        key: &CredentialKey,
        required: &[String],
        _optional: &[String],
    ) -> Result<Credentials, CredentialError> {
        match self.0.lock().clone() {
            Some(value) => Ok(required
                .iter()
                .map(|name| (name.clone(), SecretString::from(value.clone())))
                .collect()),
            None => Err(CredentialError::NotRegistered {
                key: key.clone(),
                variable: required.first().cloned().unwrap_or_default(),
            }),
        }
    }
}

/// Broker settings of the plugin config; `limits` overrides keys of the `broker {}` block.
fn plugin_config(
    upstream: &str,
    ca_file: &str,
    limits: Vec<(&str, Value)>,
    egress: &[&str],
) -> polydev::config::PluginConfig {
    let provider = |auth: &str| {
        cty_object(vec![
            ("api_auth", Value::from(auth)),
            ("api_upstream", Value::from(upstream)),
            ("upstream_ca_file", Value::from(ca_file)),
        ])
    };
    let payload = encode(&cty_object(vec![
        ("broker", cty_object(limits)),
        ("egress", cty_object(vec![("allow", str_list(egress))])),
        (
            "provider",
            Value::Map(vec![
                (Value::from("anthropic"), provider("x-api-key")),
                (Value::from("google"), provider("query-key")),
            ]),
        ),
    ]));
    polydev::config::decode_plugin_config(&payload).unwrap()
}

struct Fixture {
    broker: Broker,
    _shutdown: CancellationToken,
}

fn fixture(config: &polydev::config::PluginConfig, source: Arc<dyn CredentialSource>) -> Fixture {
    captured_logs();
    let shutdown = CancellationToken::new();
    let broker = Broker::new(config, source, shutdown.clone())
        .unwrap()
        .binding_on_host_loopback();
    Fixture {
        broker,
        _shutdown: shutdown,
    }
}

impl Fixture {
    async fn open(&self, provider: &str, user: Option<&str>) -> BrokerLease {
        let variable = if provider == "google" {
            "GOOGLE_API_KEY"
        } else {
            "ANTHROPIC_API_KEY"
        };
        let task = BrokeredTask {
            task_id: format!("alloc/{provider}/1"),
            key: CredentialKey {
                namespace: "team-a".into(),
                user_id: user.map(str::to_string),
                provider: provider.into(),
            },
            key_variable: variable.into(),
        };
        self.broker
            .open(task, ListenerSite::HostLoopback, 0)
            .await
            .unwrap()
    }
}

fn shared_key() -> Arc<dyn CredentialSource> {
    Arc::new(EnvSource::from_pairs([
        ("ANTHROPIC_API_KEY".to_string(), KEY.to_string()),
        ("GOOGLE_API_KEY".to_string(), KEY.to_string()),
    ]))
}

/// Send `request` raw; read the whole answer until the broker closes or `limit` passes.
async fn exchange(port: u16, request: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn post(path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn sse_chunks(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("event: content_block_delta\ndata: {{\"i\":{i}}}\n\n"))
        .collect()
}

#[tokio::test]
async fn the_real_key_replaces_whatever_the_client_sent_and_sse_streams_through() {
    let api = StandIn::start(|_| Reply::Stream {
        chunks: sse_chunks(4),
        pause: Duration::from_millis(300),
    })
    .await;
    let f = fixture(
        &plugin_config(&api.origin(), &api.ca_path(), vec![], &[]),
        shared_key(),
    );
    let lease = f.open("anthropic", None).await;
    let mut stream = TcpStream::connect(("127.0.0.1", lease.port()))
        .await
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(&post(
            "/v1/messages?beta=true",
            "x-api-key: placeholder\r\nAuthorization: Bearer stolen\r\nCookie: s=1\r\nanthropic-version: 2023-06-01\r\n",
            "{\"stream\":true}",
        ))
        .await
        .unwrap();
    // The first event arrives long before the last one is sent: nothing is buffered.
    let mut first = vec![0u8; 4096];
    let mut got = String::new();
    while !got.contains("\"i\":0") {
        let n = stream.read(&mut first).await.unwrap();
        assert!(n > 0, "the stream ended early: {got}");
        got.push_str(&String::from_utf8_lossy(&first[..n]));
    }
    let first_event = started.elapsed();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    got.push_str(&String::from_utf8_lossy(&rest));
    let total = started.elapsed();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        got.contains("text/event-stream") && got.contains("\"i\":3"),
        "{got}"
    );
    assert!(
        first_event + Duration::from_millis(600) < total,
        "first event after {first_event:?}, all after {total:?}"
    );

    let request: Recorded = api.requests().remove(0);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/messages?beta=true");
    assert_eq!(request.header("x-api-key"), Some(KEY));
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.header("cookie"), None);
    assert_eq!(
        request.header("host"),
        Some(&format!("127.0.0.1:{}", api.port)[..])
    );
    assert!(!request.text().contains("placeholder") && !request.text().contains("stolen"));
    assert_eq!(request.body, b"{\"stream\":true}");
    assert_no_key_logged(KEY);
}

#[tokio::test]
async fn a_query_key_is_replaced_by_the_real_one() {
    let api = StandIn::start(|_| Reply::json("{}")).await;
    let f = fixture(
        &plugin_config(&api.origin(), &api.ca_path(), vec![], &[]),
        shared_key(),
    );
    let lease = f.open("google", None).await;
    let answer = exchange(
        lease.port(),
        &post(
            "/v1beta/models/m:generateContent?key=placeholder&alt=sse",
            "x-goog-api-key: placeholder\r\n",
            "{}",
        ),
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let request = api.requests().remove(0);
    assert_eq!(
        request.path,
        format!("/v1beta/models/m:generateContent?alt=sse&key={KEY}")
    );
    assert_eq!(request.header("x-goog-api-key"), None);
    assert_no_key_logged(KEY);
}

#[tokio::test]
async fn a_rotated_key_reaches_the_next_request_and_a_removed_one_gets_a_401() {
    let api = StandIn::start(|_| Reply::json("{}")).await;
    let source = Switchable::default();
    source.set(Some("sk-first-key-aaaa"));
    let f = fixture(
        &plugin_config(&api.origin(), &api.ca_path(), vec![], &[]),
        Arc::new(source.clone()),
    );
    let lease = f.open("anthropic", Some("user-7")).await;
    let request = post("/v1/messages", "", "{}");
    let ask = || exchange(lease.port(), &request, Duration::from_secs(10));
    assert!(ask().await.starts_with("HTTP/1.1 200"));
    source.set(Some("sk-second-key-bbbb"));
    assert!(ask().await.starts_with("HTTP/1.1 200"));
    let keys: Vec<String> = api
        .requests()
        .iter()
        .map(|r| r.header("x-api-key").unwrap().to_string())
        .collect();
    assert_eq!(keys, vec!["sk-first-key-aaaa", "sk-second-key-bbbb"]);

    source.set(None);
    let answer = ask().await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    for needed in [
        "team-a",
        "user-7",
        "anthropic",
        "ANTHROPIC_API_KEY",
        "polydev credentials set",
    ] {
        assert!(
            answer.contains(needed),
            "the 401 should name {needed}: {answer}"
        );
    }
    assert!(!answer.contains("sk-second-key"), "{answer}");
    assert_eq!(
        api.requests().len(),
        2,
        "nothing is forwarded without a key"
    );
    assert_no_key_logged("sk-first-key-aaaa");
    assert_no_key_logged("sk-second-key-bbbb");
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_answers_and_never_reach_the_api() {
    let api = StandIn::start(|_| Reply::json("{}")).await;
    let limits = vec![
        ("max_body_bytes", Value::from(1024)),
        ("max_header_bytes", Value::from(8192)),
    ];
    let f = fixture(
        &plugin_config(&api.origin(), &api.ca_path(), limits, &[]),
        shared_key(),
    );
    let lease = f.open("anthropic", None).await;
    let port = lease.port();
    let limit = Duration::from_secs(10);
    let big_header = format!("x-big: {}\r\n", "a".repeat(9000));
    let chunked_too_big = {
        let chunk = "b".repeat(600);
        format!(
            "POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len(),
            chunk.len()
        )
    };
    let mut non_ascii = post("/v1/messages", "x-note: caf", "{}");
    let at = non_ascii.windows(3).position(|w| w == b"caf").unwrap() + 3;
    non_ascii.splice(at..at, [0xe9]);
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "garbage",
            b"\x16\x03\x01 not http at all\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "",
        ),
        (
            "bad request line",
            b"GET\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "",
        ),
        // `*` would join onto the origin as a port (`https://host:8443*`) and send the key to 443.
        (
            "asterisk form",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "provider's API",
        ),
        // An API answering TRACE would echo the request, key included, to the container.
        (
            "TRACE",
            b"TRACE /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            "HTTP/1.1 405",
            "TRACE",
        ),
        (
            "unknown method",
            b"FROB /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            "HTTP/1.1 405",
            "FROB",
        ),
        (
            "absolute form",
            b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "provider's API",
        ),
        ("non-ASCII header", non_ascii, "HTTP/1.1 400", "x-note"),
        (
            "oversized headers",
            post("/v1/messages", &big_header, "{}"),
            "HTTP/1.1 431",
            "",
        ),
        (
            "oversized body",
            post("/v1/messages", "", &"c".repeat(2000)),
            "HTTP/1.1 413",
            "max_body_bytes",
        ),
        (
            "oversized chunked body",
            chunked_too_big.into_bytes(),
            "HTTP/1.1 413",
            "max_body_bytes",
        ),
        (
            "bad content length",
            b"POST /v1 HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
            "",
        ),
    ];
    for (what, request, status, says) in cases {
        let answer = exchange(port, &request, limit).await;
        assert!(answer.starts_with(status), "{what}: {answer:?}");
        assert!(
            answer.contains(says),
            "{what} should say {says:?}: {answer:?}"
        );
    }
    // The chunked body streamed to the API until it passed the limit; nothing else went out.
    assert!(api.requests().iter().all(|r| r.body.len() < 2000));
    // The broker still serves a good request afterwards.
    let answer = exchange(port, &post("/v1/messages", "", "{}"), limit).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_no_key_logged(KEY);
}

#[tokio::test]
async fn api_paths_limit_what_the_key_can_be_used_for_and_method_overrides_are_dropped() {
    let api = StandIn::start(|_| Reply::json("{}")).await;
    let mut config = plugin_config(&api.origin(), &api.ca_path(), vec![], &[]);
    let provider = std::sync::Arc::make_mut(config.providers.get_mut("anthropic").unwrap());
    if let polydev::config::CredentialMode::Broker(route) = &mut provider.credential_mode {
        route.paths = vec!["/v1/messages".into()];
    }
    let f = fixture(&config, shared_key());
    let lease = f.open("anthropic", None).await;
    let limit = Duration::from_secs(10);
    let answer = exchange(lease.port(), &post("/v1/files", "", "{}"), limit).await;
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("api_paths"),
        "{answer}"
    );
    let answer = exchange(
        lease.port(),
        &post(
            "/v1/messages/count_tokens",
            "X-HTTP-Method-Override: TRACE\r\nMax-Forwards: 0\r\n",
            "{}",
        ),
        limit,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let requests = api.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/messages/count_tokens");
    assert_eq!(requests[0].header("x-http-method-override"), None);
    assert_eq!(requests[0].header("max-forwards"), None);
}

#[tokio::test]
async fn slow_and_vanishing_clients_cost_nothing_and_other_tasks_are_unaffected() {
    let api = StandIn::start(|_| Reply::Stream {
        chunks: sse_chunks(50),
        pause: Duration::from_millis(100),
    })
    .await;
    let limits = vec![("client_timeout", Value::from("1s"))];
    let f = fixture(
        &plugin_config(&api.origin(), &api.ca_path(), limits, &[]),
        shared_key(),
    );
    let slow = f.open("anthropic", None).await;
    let other = f.open("anthropic", None).await;

    // Half a request line, then silence: the broker hangs up after client_timeout.
    let mut stalled = TcpStream::connect(("127.0.0.1", slow.port()))
        .await
        .unwrap();
    stalled.write_all(b"POST /v1/mess").await.unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "the broker kept a stalled client");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A client that disconnects in the middle of a stream.
    let mut quitter = TcpStream::connect(("127.0.0.1", slow.port()))
        .await
        .unwrap();
    quitter
        .write_all(&post("/v1/messages", "", "{}"))
        .await
        .unwrap();
    let mut buffer = [0u8; 256];
    assert!(quitter.read(&mut buffer).await.unwrap() > 0);
    drop(quitter);

    // The other task's broker, and the same one, serve on.
    for lease in [&other, &slow] {
        let mut client = TcpStream::connect(("127.0.0.1", lease.port()))
            .await
            .unwrap();
        client
            .write_all(&post("/v1/messages", "", "{}"))
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer))
            .await
            .expect("an answer")
            .unwrap();
        assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    }
    assert_no_key_logged(KEY);
}

#[tokio::test]
async fn a_failing_api_gets_502_or_504_naming_it() {
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let silent = StandIn::with_mode(Mode::Silent).await;
    let garbage = StandIn::with_mode(Mode::Garbage).await;
    let limits = || vec![("upstream_timeout", Value::from("1s"))];
    let cases = [
        (
            format!("https://127.0.0.1:{refused}"),
            garbage.ca_path(),
            "HTTP/1.1 502",
            "cannot reach",
        ),
        (
            silent.origin(),
            silent.ca_path(),
            "HTTP/1.1 504",
            "did not answer within 1s",
        ),
        (
            garbage.origin(),
            garbage.ca_path(),
            "HTTP/1.1 502",
            "invalid answer",
        ),
        // A certificate of another CA: the broker does not trust it.
        (
            garbage.origin(),
            silent.ca_path(),
            "HTTP/1.1 502",
            "certificate",
        ),
    ];
    for (origin, ca, status, says) in cases {
        let f = fixture(&plugin_config(&origin, &ca, limits(), &[]), shared_key());
        let lease = f.open("anthropic", None).await;
        let answer = exchange(
            lease.port(),
            &post("/v1/messages", "", "{}"),
            Duration::from_secs(15),
        )
        .await;
        assert!(answer.starts_with(status), "{origin}: {answer}");
        assert!(
            answer.contains(&origin) && answer.contains(says),
            "{origin} {says}: {answer}"
        );
    }
    assert_no_key_logged(KEY);
}

#[tokio::test]
async fn connect_reaches_allowed_destinations_only() {
    let api = StandIn::start(|_| Reply::json("{}")).await;
    // A plain TCP service that greets whoever connects.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_port = service.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = service.accept().await {
            let _ = client.write_all(b"hello from the allowed host\n").await;
        }
    });
    let allowed = format!("127.0.0.1:{service_port}");
    let f = fixture(
        &plugin_config(&api.origin(), &api.ca_path(), vec![], &[&allowed]),
        shared_key(),
    );
    let lease = f.open("anthropic", None).await;
    let answer = exchange(
        lease.port(),
        format!("CONNECT {allowed} HTTP/1.1\r\nHost: {allowed}\r\n\r\n").as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("hello from the allowed host"), "{answer}");

    for target in [
        format!("127.0.0.1:{}", api.port),
        format!("localhost:{service_port}"),
        "example.com:443".to_string(),
    ] {
        let answer = exchange(
            lease.port(),
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
            Duration::from_secs(3),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
        assert!(
            answer.contains(&target) && answer.contains("egress"),
            "{answer}"
        );
    }
}
