//! The credential broker against a gateway that does what real ones do (`support::gateway`):
//! resolves dot segments and decodes escapes before routing, reflects what it was sent, redirects
//! with the query, speaks HTTP/2. A real broker (on the host's loopback) forwards to it over
//! real TLS; clients speak raw HTTP/1.1 as a task's CLI would, so every byte the container
//! would see is checked.
//!
//! - Paths: nothing that escapes `api_paths` or the upstream prefix once the gateway resolves
//!   it is ever sent (403 first); plain paths with queries still go through.

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
            credential: variable.into(),
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

fn text(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer).into_owned()
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
