//! The credential broker against a gateway that does what real ones do (`support::gateway`):
//! resolves dot segments and decodes escapes before routing, reflects what it was sent, redirects
//! with the query, speaks HTTP/2. A real broker (on the host's loopback) forwards to it over
//! real TLS; clients speak raw HTTP/1.1 as a task's CLI would, so every byte the container
//! would see is checked.
//!
//! - Paths: nothing that escapes `api_paths` or the upstream prefix once the gateway resolves
//!   it is ever sent (403 first); plain paths with queries still go through.
//! - Answers: the key never reaches the client — not in the status line, a header or the body,
//!   even split across frames, in a redirect's `Location`, percent-encoded or over HTTP/2.
//! - Client credentials: encoded `key` parameters and request trailers never reach the API.

mod support;

use std::sync::Arc;
use std::time::Duration;

use polydev::broker::{Broker, BrokerLease, BrokeredTask, ListenerSite};
use polydev::credentials::{CredentialKey, EnvSource};
use rmpv::Value;
use support::gateway::{Answer, Gateway, Seen, resolve_like_nginx};
use support::{cty_object, encode, str_list};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk-ant-gateway-test-Zq8mR1vX4yT7uW0pL3kN6bJ9";
/// A key with characters a query must percent-encode, so its encoded form differs.
const QUERY_KEY: &str = "AIzaSy-gateway/test+key=0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(10);

struct Fixture {
    broker: Broker,
    _shutdown: CancellationToken,
}

/// A broker for anthropic (`x-api-key`), openai (`bearer`) and google (`query-key`), all going
/// to `gateway` under the prefix `/gw`; anthropic limited to `api_paths`.
fn fixture(gateway: &Gateway, api_paths: &[&str]) -> Fixture {
    let upstream = format!("{}/gw", gateway.origin());
    let provider = |auth: &str, paths: &[&str]| {
        cty_object(vec![
            ("api_auth", Value::from(auth)),
            ("api_upstream", Value::from(upstream.as_str())),
            ("upstream_ca_file", Value::from(gateway.ca_path())),
            ("api_paths", str_list(paths)),
        ])
    };
    let payload = encode(&cty_object(vec![(
        "provider",
        Value::Map(vec![
            (Value::from("anthropic"), provider("x-api-key", api_paths)),
            (Value::from("openai"), provider("bearer", &[])),
            (Value::from("google"), provider("query-key", &[])),
        ]),
    )]));
    let config = polydev::config::decode_plugin_config(&payload).unwrap();
    let source = Arc::new(EnvSource::from_pairs([
        ("ANTHROPIC_API_KEY".to_string(), KEY.to_string()),
        ("OPENAI_API_KEY".to_string(), KEY.to_string()),
        ("GOOGLE_API_KEY".to_string(), QUERY_KEY.to_string()),
    ]));
    let shutdown = CancellationToken::new();
    let broker = Broker::new(&config, source, shutdown.clone())
        .unwrap()
        .binding_on_host_loopback();
    Fixture {
        broker,
        _shutdown: shutdown,
    }
}

impl Fixture {
    async fn open(&self, provider: &str, variable: &str) -> BrokerLease {
        let task = BrokeredTask {
            task_id: format!("alloc/{provider}/1"),
            key: CredentialKey {
                namespace: "default".into(),
                user_id: None,
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

/// Send `request` raw; everything the broker answers until it closes (or `LIMIT`).
async fn exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(LIMIT, stream.read_to_end(&mut answer)).await;
    answer
}

fn get(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n")
        .into_bytes()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn text(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer).into_owned()
}

fn stars(n: usize) -> String {
    "*".repeat(n)
}

/// `text` percent-encoded as the broker writes a query value.
fn query_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn the_gateway_resolves_paths_as_nginx_does() {
    let cases = [
        ("/v1/messages", Some("/v1/messages")),
        ("/gw/v1/messages/../files", Some("/gw/v1/files")),
        ("/gw/v1/messages/%2e%2e/files", Some("/gw/v1/files")),
        ("/gw/v1/messages/../../../admin/users", Some("/admin/users")),
        ("/gw/v1/messages%2f..%2f..%2fx", Some("/gw/x")),
        ("/a//b/./c/", Some("/a/b/c/")),
        ("/..", None),
        ("/a/%zz", None),
    ];
    for (path, want) in cases {
        assert_eq!(resolve_like_nginx(path).as_deref(), want, "{path}");
    }
}

#[tokio::test]
async fn paths_that_escape_api_paths_or_the_prefix_get_403_and_never_reach_the_gateway() {
    let gateway = Gateway::start(false, |seen: &Seen| {
        Answer::new(200, format!("{{\"routed\":{:?}}}", seen.routed))
    })
    .await;
    let f = fixture(&gateway, &["/v1/messages"]);
    let lease = f.open("anthropic", "ANTHROPIC_API_KEY").await;
    let escapes = [
        "/v1/messages/../files",
        "/v1/messages/%2e%2e/files",
        "/v1/messages/%2E%2E/files",
        "/v1/messages/.%2e/files",
        "/v1/messages/%2E./files",
        "/v1/messages/./../files",
        "/v1/messages/../../../admin/users",
        "/v1/messages/%2e%2e/%2e%2e/%2e%2e/admin/users",
        "/v1/messages%2f..%2ffiles",
        "/v1/messages%2F..%2F..%2F..%2Fadmin",
        "/v1/messages/..;/files",
        "/v1/messages/%252e%252e/files",
        "/v1/messages/%5c..%5c..%5cfiles",
        "/v1/messages\\..\\files",
        "/v1/messages/a%00b",
        "/v1/messagesXYZ",
        "/v1/messages.json",
    ];
    for path in escapes {
        let answer = text(&exchange(lease.port(), &get(&format!("{path}?beta=true"), "")).await);
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{path} should be refused: {answer}"
        );
        assert!(
            answer.contains("x-polydev-broker: error")
                && (answer.contains("is refused") || answer.contains("api_paths")),
            "{path}: {answer}"
        );
        assert!(!answer.contains(KEY), "{answer}");
        let seen = gateway.seen();
        assert!(
            seen.is_empty(),
            "{path} reached the gateway as {:?}",
            seen.iter().map(|s| (&s.raw, &s.routed)).collect::<Vec<_>>()
        );
    }

    for (path, forwarded) in [
        ("/v1/messages?beta=true", "/gw/v1/messages?beta=true"),
        (
            "/v1/messages/count_tokens?x=1&y=a%2Fb",
            "/gw/v1/messages/count_tokens?x=1&y=a%2Fb",
        ),
        ("/v1/messag%65s/batches", "/gw/v1/messages/batches"),
        ("/v1/messages:batch", "/gw/v1/messages:batch"),
    ] {
        let answer = text(&exchange(lease.port(), &get(path, "")).await);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        let seen = gateway.seen().pop().unwrap();
        assert_eq!(seen.raw, forwarded);
        assert_eq!(seen.header("x-api-key"), Some(KEY));
    }
    for seen in gateway.seen() {
        let routed = seen.routed.unwrap();
        assert!(routed.starts_with("/gw/v1/messages"), "{routed}");
    }
}

/// An endpoint that reflects the request's headers everywhere it can: in the reason phrase, in
/// response headers and in the body, which is sent in two frames cut inside the key.
fn reflect_headers(seen: &Seen) -> Answer {
    let echoed = seen
        .header("x-api-key")
        .or(seen.header("authorization"))
        .unwrap_or_default()
        .to_string();
    let body = format!("{{\"you sent\":{:?}}}\n", seen.header_lines());
    let cut = body
        .find(KEY)
        .map_or(body.len() / 2, |at| at + KEY.len() / 2);
    let (first, second) = body.split_at(cut);
    Answer {
        status: 200,
        reason: Some(format!("OK {echoed}")),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-echo".into(), echoed.clone()),
            ("link".into(), format!("<https://gw/next?auth={echoed}>")),
        ],
        chunks: vec![first.as_bytes().to_vec(), second.as_bytes().to_vec()],
        pause: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn reflected_headers_reach_the_container_with_the_key_scrubbed() {
    for http2 in [false, true] {
        let gateway = Gateway::start(http2, reflect_headers).await;
        let f = fixture(&gateway, &[]);
        for (provider, variable) in [
            ("anthropic", "ANTHROPIC_API_KEY"),
            ("openai", "OPENAI_API_KEY"),
        ] {
            let lease = f.open(provider, variable).await;
            let answer = exchange(
                lease.port(),
                &get(
                    "/v1/echo",
                    "x-api-key: placeholder\r\nAuthorization: Bearer placeholder\r\nAccept-Encoding: gzip, br\r\nRange: bytes=10-\r\n",
                ),
            )
            .await;
            let what = format!("{provider} over {}", if http2 { "h2" } else { "h1" });
            let seen = gateway.seen().pop().unwrap();
            assert_eq!(seen.version, if http2 { "HTTP/2.0" } else { "HTTP/1.1" });
            // The gateway got the key (so it really reflected it) ...
            assert!(seen.header_lines().contains(KEY), "{what}: {seen:?}");
            assert_eq!(seen.header("accept-encoding"), Some("identity"), "{what}");
            assert_eq!(seen.header("range"), None, "{what}");
            // ... and the container sees it nowhere.
            let shown = text(&answer);
            assert!(!contains(&answer, KEY), "{what}: {shown}");
            assert!(!contains(&answer, &KEY[..16]), "{what}: {shown}");
            assert!(shown.starts_with("HTTP/1.1 200 OK\r\n"), "{what}: {shown}");
            let redacted = stars(KEY.len());
            assert!(
                shown.contains(&format!(
                    "x-echo: {}",
                    if provider == "openai" {
                        format!("Bearer {redacted}")
                    } else {
                        redacted.clone()
                    }
                )),
                "{what}: {shown}"
            );
            assert!(
                shown.contains("link: <https://gw/next?auth=") && !shown.contains("auth=sk-"),
                "{what}: {shown}"
            );
            assert!(
                shown.contains(&format!("{redacted}\\n")),
                "the body keeps its shape, key replaced: {what}: {shown}"
            );
        }
    }
}

#[tokio::test]
async fn a_redirect_that_repeats_the_query_hands_back_no_key() {
    let gateway = Gateway::start(false, |seen: &Seen| {
        let query = seen.query.clone().unwrap_or_default();
        let location = format!("https://127.0.0.1/gw/v1beta/models?{query}");
        // The body repeats the query raw and, as some servers do, decoded.
        let decoded = query
            .replace("%2F", "/")
            .replace("%2B", "+")
            .replace("%3D", "=");
        let lower_hex = query
            .replace("%2F", "%2f")
            .replace("%2B", "%2b")
            .replace("%3D", "%3d");
        Answer::new(
            301,
            format!("<a href=\"{location}\">moved</a> (you asked for {decoded}; {lower_hex})"),
        )
        .header("location", &location)
        .header("content-type", "text/html")
    })
    .await;
    let f = fixture(&gateway, &[]);
    let lease = f.open("google", "GOOGLE_API_KEY").await;
    let answer = exchange(lease.port(), &get("/v1beta/models?pageSize=5", "")).await;
    let shown = text(&answer);
    let encoded = query_encoded(QUERY_KEY);
    assert_ne!(encoded, QUERY_KEY);
    let seen = gateway.seen().pop().unwrap();
    assert_eq!(
        seen.query.as_deref(),
        Some(&format!("pageSize=5&key={encoded}")[..])
    );
    assert!(shown.starts_with("HTTP/1.1 301"), "{shown}");
    let lower_hex = encoded
        .replace("%2F", "%2f")
        .replace("%2B", "%2b")
        .replace("%3D", "%3d");
    for form in [QUERY_KEY.to_string(), encoded.clone(), lower_hex] {
        assert!(!contains(&answer, &form), "{form} in {shown}");
    }
    assert!(
        shown.contains(&format!(
            "location: https://127.0.0.1/gw/v1beta/models?pageSize=5&key={}\r\n",
            stars(encoded.len())
        )),
        "{shown}"
    );
}

#[tokio::test]
async fn a_compressed_answer_is_refused_since_the_scrub_cannot_read_it() {
    let gateway = Gateway::start(false, |_: &Seen| {
        Answer::new(200, b"\x1f\x8b\x08\x00not really gzip".to_vec())
            .header("content-encoding", "gzip")
            .header("content-type", "application/json")
    })
    .await;
    let f = fixture(&gateway, &[]);
    let lease = f.open("anthropic", "ANTHROPIC_API_KEY").await;
    let answer = text(
        &exchange(
            lease.port(),
            &get("/v1/models", "Accept-Encoding: gzip\r\n"),
        )
        .await,
    );
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("Content-Encoding \\\"gzip\\\""), "{answer}");
    let seen = gateway.seen().pop().unwrap();
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
}

#[tokio::test]
async fn percent_encoded_key_parameters_from_the_client_never_reach_the_api() {
    let gateway = Gateway::start(false, |_: &Seen| Answer::new(200, "{}")).await;
    let f = fixture(&gateway, &[]);
    let lease = f.open("google", "GOOGLE_API_KEY").await;
    let answer = text(
        &exchange(
            lease.port(),
            &get(
                "/v1beta/models?%6Bey=stolen1&k%65y=stolen2&%6b%65%79=stolen3&KEY=stolen4&Key=stolen5&alt=sse&keyword=1",
                "",
            ),
        )
        .await,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = gateway.seen().pop().unwrap();
    assert_eq!(
        seen.query.as_deref(),
        Some(&format!("alt=sse&keyword=1&key={}", query_encoded(QUERY_KEY))[..])
    );
}

#[tokio::test]
async fn request_trailers_never_reach_an_http2_api() {
    let gateway = Gateway::start(true, |_: &Seen| Answer::new(200, "{}")).await;
    let f = fixture(&gateway, &[]);
    let lease = f.open("anthropic", "ANTHROPIC_API_KEY").await;
    let request = "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
                   Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
                   Trailer: x-api-key, authorization\r\n\r\n\
                   2\r\n{}\r\n0\r\nx-api-key: stolen\r\nauthorization: Bearer stolen\r\n\r\n";
    let answer = text(&exchange(lease.port(), request.as_bytes()).await);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = gateway.seen().pop().unwrap();
    assert_eq!(seen.version, "HTTP/2.0");
    assert_eq!(seen.body, b"{}");
    assert_eq!(seen.header("x-api-key"), Some(KEY));
    assert!(
        seen.trailers.is_empty(),
        "trailers reached the API: {:?}",
        seen.trailers
    );
}
