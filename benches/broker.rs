//! `cargo bench --bench broker`: what the credential broker adds to a request, against the
//! same local HTTPS stand-in API (`tests/support/upstream.rs`) reached directly.
//!
//! Two clients, both keeping their connections alive as the CLIs do:
//! - **direct**: HTTPS to the stand-in (what a CLI holding its key would do);
//! - **broker**: plain HTTP to a real broker listening on the host's loopback (in a task it
//!   listens in the container's namespace, which does not change its code path), which
//!   forwards over HTTPS to the same stand-in with the key swapped in.
//!
//! Two answers: a small JSON body, and a 1 MiB SSE stream (1024 events of 1 KiB, each a text
//! delta of English-like words, as a model streams them). For each, time to the first body byte
//! (TTFB) and to the end; throughput of the stream. The broker's path includes the key scrub
//! of every answer (`polydev::broker::scrub`); its own cost is measured alone too, on the same
//! stream and on a worst case (a near-copy of the key every 16 bytes), with the per-request
//! setup of its search. Prints markdown tables and writes `benches/broker.svg`. No timing
//! asserts: targets are reported. Sample counts: `BENCH_BROKER_JSON` (default 400),
//! `BENCH_BROKER_SSE` (default 60), `BENCH_BROKER_SCRUB` (default 200).

#[allow(dead_code)]
#[path = "startup/stats.rs"]
mod stats;
#[path = "startup/svg.rs"]
mod svg;
#[path = "../tests/support/upstream.rs"]
mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use polydev::broker::scrub::{KeyForms, Scrubber};
use polydev::broker::{Broker, BrokeredTask, ListenerSite};
use polydev::credentials::{CredentialKey, EnvSource};
use rmpv::Value;
use tokio_util::sync::CancellationToken;
use upstream::{Reply, StandIn};

const KEY: &str = "sk-ant-bench-0123456789abcdef";
const EVENT_BYTES: usize = 1024;
const EVENTS: usize = 1024;

type Body = Empty<Bytes>;

struct Sample {
    ttfb: Duration,
    total: Duration,
    bytes: usize,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench());
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn bench() {
    let json_n = knob("BENCH_BROKER_JSON", 400);
    let sse_n = knob("BENCH_BROKER_SSE", 60);
    let scrub_n = knob("BENCH_BROKER_SCRUB", 200);
    let events = text_events();
    let stream_events = events.clone();
    let api = StandIn::start(move |request| {
        if request.path.starts_with("/stream") {
            Reply::sse(stream_events.clone())
        } else {
            Reply::json("{\"id\":\"msg_1\",\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}")
        }
    })
    .await;

    let shutdown = CancellationToken::new();
    let broker = Broker::new(
        &plugin_config(&api),
        Arc::new(EnvSource::from_pairs([(
            "ANTHROPIC_API_KEY".to_string(),
            KEY.to_string(),
        )])),
        shutdown.clone(),
    )
    .expect("broker")
    .binding_on_host_loopback();
    let task = BrokeredTask {
        task_id: "bench/task/1".into(),
        key: CredentialKey {
            namespace: "default".into(),
            user_id: None,
            provider: "anthropic".into(),
        },
        key_variable: "ANTHROPIC_API_KEY".into(),
    };
    let lease = broker
        .open(task, ListenerSite::HostLoopback, 0)
        .await
        .expect("open the broker");

    let direct = direct_client(&api);
    let brokered: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let direct_base = api.origin();
    let broker_base = format!("http://127.0.0.1:{}", lease.port());

    let mut results = Vec::new();
    for (what, path, n) in [
        ("small JSON", "/v1/messages", json_n),
        ("1 MiB SSE", "/stream", sse_n),
    ] {
        // Interleave the two so drift on this machine hits both alike.
        let (mut via_direct, mut via_broker) = (Vec::new(), Vec::new());
        for i in 0..n + 10 {
            let d = fetch(&direct, &format!("{direct_base}{path}")).await;
            let b = fetch(&brokered, &format!("{broker_base}{path}")).await;
            if i >= 10 {
                via_direct.push(d);
                via_broker.push(b);
            }
        }
        results.push((what, via_direct, via_broker));
    }
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.header("x-api-key") == Some(KEY))
            .count()
            > 0
    );

    println!("{}", table(&results));
    let scrub = scrub_alone(&events, scrub_n);
    let broker_stream = results
        .iter()
        .find(|(what, _, _)| what.contains("SSE"))
        .map(|(_, _, broker)| summary(&broker.iter().map(|s| s.total).collect::<Vec<_>>()).p50)
        .expect("the stream was measured");
    println!("\n{}", scrub_table(&scrub, broker_stream));
    let svg_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/broker.svg");
    std::fs::write(&svg_path, chart(&results)).expect("write the chart");
    println!("chart: {}", svg_path.display());
    drop(lease);
    shutdown.cancel();
}

/// The stream's events: Anthropic-style text deltas of words a model writes (some with the
/// letters the key starts with), each exactly `EVENT_BYTES` long.
fn text_events() -> Vec<String> {
    const WORDS: [&str; 16] = [
        "the", "task", "asks", "skills", "an", "API", "key", "sk-", "stream", "tokens", "desk",
        "ant", "bench", "returns", "JSON", "and",
    ];
    let head = "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"";
    let tail = "\"}}\n\n";
    let mut seed: u32 = 0x9e37_79b9;
    (0..EVENTS)
        .map(|_| {
            let mut text = String::new();
            while text.len() < EVENT_BYTES - head.len() - tail.len() {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                text.push_str(WORDS[(seed >> 28) as usize]);
                text.push(' ');
            }
            text.truncate(EVENT_BYTES - head.len() - tail.len());
            format!("{head}{text}{tail}")
        })
        .collect()
}

/// The scrub alone: each 1 MiB stream pushed frame by frame through a fresh scrubber.
struct ScrubResult {
    what: &'static str,
    per_stream: Vec<Duration>,
}

fn scrub_alone(events: &[String], n: usize) -> (Vec<ScrubResult>, Duration) {
    // The worst case: every 16 bytes the key's first 14 bytes, which the search must check
    // and reject, and frames that end inside them (held back, then joined).
    let near = &KEY[..14];
    let worst: Vec<String> = (0..EVENTS)
        .map(|_| {
            let mut event = String::new();
            while event.len() < EVENT_BYTES {
                event.push_str(near);
                event.push_str("! ");
            }
            event.truncate(EVENT_BYTES - 3);
            event.push_str(&KEY[..3]);
            event
        })
        .collect();
    let mut out = Vec::new();
    for (what, stream) in [
        ("the SSE stream above", events.to_vec()),
        ("worst case: a near-copy of the key every 16 bytes", worst),
    ] {
        let frames: Vec<Bytes> = stream.into_iter().map(Bytes::from).collect();
        assert_eq!(
            frames.iter().map(Bytes::len).sum::<usize>(),
            EVENTS * EVENT_BYTES
        );
        let mut per_stream = Vec::with_capacity(n);
        for i in 0..n + 10 {
            let started = Instant::now();
            let mut scrubber = Scrubber::new(Arc::new(KeyForms::of(KEY)));
            let mut sent = 0;
            for frame in &frames {
                sent += std::hint::black_box(scrubber.push(frame.clone())).len();
            }
            sent += scrubber.finish().len();
            let took = started.elapsed();
            assert_eq!(sent, EVENTS * EVENT_BYTES);
            if i >= 10 {
                per_stream.push(took);
            }
        }
        out.push(ScrubResult { what, per_stream });
    }
    // The per-request setup: the key's forms and their searchers.
    let rounds = 10_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(KeyForms::of(std::hint::black_box(KEY)));
    }
    (out, started.elapsed() / rounds)
}

fn scrub_table((results, setup): &(Vec<ScrubResult>, Duration), broker_stream: Duration) -> String {
    let mut out = String::from(
        "| Scrub alone, 1 MiB in 1024 frames | n | p50 | p99 | Throughput (p50) |\n\
         |---|--:|--:|--:|--:|\n",
    );
    for result in results {
        let s = summary(&result.per_stream);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} GiB/s |\n",
            result.what,
            s.n,
            ms(s.p50),
            ms(s.p99),
            1.0 / 1024.0 / s.p50.as_secs_f64()
        ));
    }
    let realistic = summary(&results[0].per_stream).p50;
    out.push_str(&format!(
        "\n- Setup per request (the key's forms and searchers): {:.2} µs\n\
         - The scrub's share of the brokered stream: {} of its {} p50 ({:.1} %)",
        setup.as_secs_f64() * 1e6,
        ms(realistic),
        ms(broker_stream),
        realistic.as_secs_f64() / broker_stream.as_secs_f64() * 100.0
    ));
    out
}

fn plugin_config(api: &StandIn) -> polydev::config::PluginConfig {
    let entry = |k: &str, v: Value| (Value::from(k), v);
    let provider = Value::Map(vec![
        entry("api_upstream", Value::from(api.origin())),
        entry("upstream_ca_file", Value::from(api.ca_path())),
    ]);
    let config = Value::Map(vec![entry(
        "provider",
        Value::Map(vec![entry("anthropic", provider)]),
    )]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &config).unwrap();
    polydev::config::decode_plugin_config(&bytes).expect("plugin config")
}

fn direct_client(api: &StandIn) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Body> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&api.ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

async fn fetch<C>(client: &Client<C, Body>, url: &str) -> Sample
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let request = hyper::Request::post(url)
        .header("x-api-key", "placeholder")
        .header("content-type", "application/json")
        .body(Empty::new())
        .unwrap();
    let started = Instant::now();
    let response = client.request(request).await.expect("request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    let mut body = response.into_body();
    let mut ttfb = None;
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.expect("body").data_ref() {
            ttfb.get_or_insert_with(|| started.elapsed());
            bytes += data.len();
        }
    }
    let total = started.elapsed();
    Sample {
        ttfb: ttfb.unwrap_or(total),
        total,
        bytes,
    }
}

fn summary(samples: &[Duration]) -> stats::Summary {
    stats::Summary::of(samples).expect("samples")
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

type Results<'a> = Vec<(&'a str, Vec<Sample>, Vec<Sample>)>;

fn table(results: &Results<'_>) -> String {
    let mut out = String::from(
        "| Answer | Path | n | TTFB p50 | TTFB p99 | Total p50 | Total p99 | Throughput (p50) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let mut verdicts = Vec::new();
    for (what, direct, broker) in results {
        let mut p50s = Vec::new();
        for (path, samples) in [("direct", direct), ("broker", broker)] {
            let ttfb: Vec<Duration> = samples.iter().map(|s| s.ttfb).collect();
            let total: Vec<Duration> = samples.iter().map(|s| s.total).collect();
            let bytes = samples.first().map(|s| s.bytes).unwrap_or(0);
            let (ttfb, total) = (summary(&ttfb), summary(&total));
            let throughput = if bytes >= EVENTS * EVENT_BYTES {
                format!(
                    "{:.0} MiB/s",
                    bytes as f64 / total.p50.as_secs_f64() / (1 << 20) as f64
                )
            } else {
                "—".to_string()
            };
            out.push_str(&format!(
                "| {what} | {path} | {} | {} | {} | {} | {} | {throughput} |\n",
                samples.len(),
                ms(ttfb.p50),
                ms(ttfb.p99),
                ms(total.p50),
                ms(total.p99),
            ));
            p50s.push((ttfb.p50, total.p50));
        }
        let added = p50s[1].0.saturating_sub(p50s[0].0);
        let met = |ok: bool| if ok { "met" } else { "missed" };
        let mut verdict = format!(
            "- {what}: the broker adds {} to the TTFB p50 (target ≤ 1 ms: {})",
            ms(added),
            met(added <= Duration::from_millis(1)),
        );
        if direct
            .first()
            .is_some_and(|s| s.bytes >= EVENTS * EVENT_BYTES)
        {
            let ratio = p50s[0].1.as_secs_f64() / p50s[1].1.as_secs_f64() * 100.0;
            verdict.push_str(&format!(
                "; its throughput is {ratio:.0} % of direct (target ≥ 90 %: {})",
                met(ratio >= 90.0)
            ));
        }
        verdicts.push(verdict);
    }
    out.push('\n');
    out.push_str(&verdicts.join("\n"));
    out
}

fn chart(results: &Results<'_>) -> String {
    let row = |label: String, samples: &[Duration]| {
        let s = summary(samples);
        svg::Row {
            label,
            p50: s.p50,
            p99: s.p99,
            n: s.n,
        }
    };
    let sections: Vec<svg::Section> = results
        .iter()
        .map(|(what, direct, broker)| {
            let pick =
                |s: &[Sample], f: fn(&Sample) -> Duration| s.iter().map(f).collect::<Vec<_>>();
            svg::Section {
                title: (*what).to_string(),
                rows: vec![
                    row("direct: TTFB".into(), &pick(direct, |s| s.ttfb)),
                    row("broker: TTFB".into(), &pick(broker, |s| s.ttfb)),
                    row("direct: whole answer".into(), &pick(direct, |s| s.total)),
                    row("broker: whole answer".into(), &pick(broker, |s| s.total)),
                ],
            }
        })
        .collect();
    svg::render(
        "polydev credential broker: added latency (dark p50, light p99)",
        &[format!(
            "{} CPUs; keep-alive clients; the same local HTTPS stand-in API direct and through the broker",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        )],
        &sections,
        &[],
    )
}
