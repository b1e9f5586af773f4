//! The `broker {}` and `egress {}` blocks of the plugin config: limits of the per-task
//! credential broker, and the hosts a task may reach through it besides its provider's API.
//!
//! ```hcl
//! broker {
//!   max_header_bytes = 65536     # request line + headers of one request
//!   max_body_bytes   = 33554432  # one request body (32 MiB)
//!   connect_timeout  = "10s"     # to the provider's API
//!   upstream_timeout = "10m"     # until the API answers, and between two chunks of its answer
//!   max_connections  = 64        # open connections per task, CONNECT tunnels included
//!   client_timeout   = "30s"     # for a client to send a request's headers
//!   request_body_timeout = "30s" # total wait for a client to send a request's body
//!   tunnel_idle_timeout  = "5m"  # a CONNECT tunnel with no byte either way is closed
//! }
//! egress { allow = ["registry.npmjs.org:443", "*.githubusercontent.com:443"] }
//! ```
//!
//! Invariants: every limit is positive and bounded (a typo cannot turn a limit off); egress
//! entries are `host:port` (a host name, optionally `*.`-prefixed, or an IP address; IPv6 in
//! brackets) and the list is empty by default: a task reaches its provider's API and nothing
//! else.

use std::time::Duration;

use super::ConfigError;
use super::cty::Obj;
use super::duration;
use super::hclspec::{Spec, attr, default, hcl_string, literal, object};

/// Default for `broker.max_header_bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Default for `broker.max_body_bytes`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
/// Default for `broker.connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: &str = "10s";
/// Default for `broker.upstream_timeout`.
pub const DEFAULT_UPSTREAM_TIMEOUT: &str = "10m";
/// Default for `broker.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 64;
/// Default for `broker.client_timeout`.
pub const DEFAULT_CLIENT_TIMEOUT: &str = "30s";
/// Default for `broker.request_body_timeout`.
pub const DEFAULT_REQUEST_BODY_TIMEOUT: &str = "30s";
/// Default for `broker.tunnel_idle_timeout`.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: &str = "5m";

/// Limits of the credential broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    /// Connections a task may hold open at once; a CONNECT tunnel holds its connection's
    /// place until the tunnel ends.
    pub max_connections: usize,
    /// For a client to send a request's headers.
    pub client_timeout: Duration,
    /// Total time the broker waits for a client to send a request's body (time the API takes
    /// to accept what was sent does not count).
    pub request_body_timeout: Duration,
    /// A CONNECT tunnel through which no byte passed, either way, for this long is closed.
    pub tunnel_idle_timeout: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES as usize,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            connect_timeout: duration::default(DEFAULT_CONNECT_TIMEOUT),
            upstream_timeout: duration::default(DEFAULT_UPSTREAM_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            client_timeout: duration::default(DEFAULT_CLIENT_TIMEOUT),
            request_body_timeout: duration::default(DEFAULT_REQUEST_BODY_TIMEOUT),
            tunnel_idle_timeout: duration::default(DEFAULT_TUNNEL_IDLE_TIMEOUT),
        }
    }
}

/// One allowed egress destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    /// Lower-case host name or IP address text; with `wildcard`, the suffix after `*.`.
    pub host: String,
    /// `*.example.com` matches every name under `example.com` (not `example.com` itself).
    pub wildcard: bool,
    pub port: u16,
}

impl EgressRule {
    /// Whether `host:port` (as a client asked for it) is allowed by this rule.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        port == self.port
            && if self.wildcard {
                host.len() > self.host.len() + 1
                    && host.ends_with(&self.host)
                    && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
            } else {
                host == self.host
            }
    }

    /// Whether the rule names an IP address (then it may be any address, loopback included).
    pub fn is_address(&self) -> bool {
        !self.wildcard && self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

impl std::fmt::Display for EgressRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let star = if self.wildcard { "*." } else { "" };
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{star}{}:{}", self.host, self.port)
        }
    }
}

/// The `broker {}` block's object.
pub fn broker_schema() -> Spec {
    fn with_default<'a>(name: &'a str, ty: &str, value: String) -> (&'a str, Spec) {
        (name, default(attr(name, ty, false), literal(&value)))
    }
    object([
        with_default(
            "max_header_bytes",
            "number",
            DEFAULT_MAX_HEADER_BYTES.to_string(),
        ),
        with_default(
            "max_body_bytes",
            "number",
            DEFAULT_MAX_BODY_BYTES.to_string(),
        ),
        with_default(
            "connect_timeout",
            "string",
            hcl_string(DEFAULT_CONNECT_TIMEOUT),
        ),
        with_default(
            "upstream_timeout",
            "string",
            hcl_string(DEFAULT_UPSTREAM_TIMEOUT),
        ),
        with_default(
            "max_connections",
            "number",
            DEFAULT_MAX_CONNECTIONS.to_string(),
        ),
        with_default(
            "client_timeout",
            "string",
            hcl_string(DEFAULT_CLIENT_TIMEOUT),
        ),
        with_default(
            "request_body_timeout",
            "string",
            hcl_string(DEFAULT_REQUEST_BODY_TIMEOUT),
        ),
        with_default(
            "tunnel_idle_timeout",
            "string",
            hcl_string(DEFAULT_TUNNEL_IDLE_TIMEOUT),
        ),
    ])
}

/// The `egress {}` block's object.
pub fn egress_schema() -> Spec {
    object([("allow", attr("allow", "list(string)", false))])
}

pub(crate) fn broker(obj: &Obj<'_>) -> Result<BrokerConfig, ConfigError> {
    let number = |key: &str, fallback: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
        match obj.integer(key)? {
            None => Ok(fallback),
            Some(n) => u64::try_from(n)
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ConfigError::invalid(
                        obj.field(key),
                        format!("{n} is out of range"),
                        format!("use a whole number from {min} to {max}, such as {fallback}"),
                    )
                }),
        }
    };
    let day = Duration::from_secs(24 * 3600);
    let duration = |key: &str, fallback: &str| duration::field(obj, key, fallback, day);
    Ok(BrokerConfig {
        // hyper refuses header buffers under 8 KiB.
        max_header_bytes: number("max_header_bytes", DEFAULT_MAX_HEADER_BYTES, 8192, 1 << 24)?
            as usize,
        max_body_bytes: number("max_body_bytes", DEFAULT_MAX_BODY_BYTES, 1, 1 << 34)?,
        connect_timeout: duration("connect_timeout", DEFAULT_CONNECT_TIMEOUT)?,
        upstream_timeout: duration("upstream_timeout", DEFAULT_UPSTREAM_TIMEOUT)?,
        max_connections: number("max_connections", DEFAULT_MAX_CONNECTIONS, 1, 4096)? as usize,
        client_timeout: duration("client_timeout", DEFAULT_CLIENT_TIMEOUT)?,
        request_body_timeout: duration("request_body_timeout", DEFAULT_REQUEST_BODY_TIMEOUT)?,
        tunnel_idle_timeout: duration("tunnel_idle_timeout", DEFAULT_TUNNEL_IDLE_TIMEOUT)?,
    })
}

pub(crate) fn egress(obj: &Obj<'_>) -> Result<Vec<EgressRule>, ConfigError> {
    let entries = obj.strings("allow")?.unwrap_or_default();
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            parse_rule(entry).ok_or_else(|| {
                ConfigError::invalid(
                    format!("{}[{i}]", obj.field("allow")),
                    format!("{entry:?} is not host:port"),
                    "write a host name (optionally starting with \"*.\") or an IP address, then \
                     ':' and the port, such as \"registry.npmjs.org:443\" or \"[2001:db8::1]:443\"",
                )
            })
        })
        .collect()
}

fn parse_rule(entry: &str) -> Option<EgressRule> {
    let (host, port) = entry.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            return Some(EgressRule {
                host: v6.to_ascii_lowercase(),
                wildcard: false,
                port,
            });
        }
        None => host,
    };
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return None;
    }
    Some(EgressRule {
        host: name,
        wildcard,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_exact_hosts_and_wildcard_subdomains() {
        let exact = parse_rule("Registry.NPMjs.org:443").unwrap();
        assert!(exact.allows("registry.npmjs.org", 443));
        assert!(exact.allows("REGISTRY.npmjs.org.", 443));
        assert!(!exact.allows("registry.npmjs.org", 80));
        assert!(!exact.allows("evil-registry.npmjs.org", 443));
        let wild = parse_rule("*.github.com:443").unwrap();
        assert!(wild.allows("api.github.com", 443));
        assert!(wild.allows("a.b.github.com", 443));
        assert!(!wild.allows("github.com", 443));
        assert!(!wild.allows("evilgithub.com", 443));
        let v6 = parse_rule("[::1]:8080").unwrap();
        assert!(v6.allows("::1", 8080) && v6.is_address());
        assert_eq!(v6.to_string(), "[::1]:8080");
        assert!(parse_rule("127.0.0.1:9").unwrap().is_address());
        assert!(!exact.is_address());
    }

    fn broker_block(fields: Vec<(&str, rmpv::Value)>) -> Result<BrokerConfig, ConfigError> {
        use crate::config::cty::fixtures::{encode, obj};
        crate::config::decode_plugin_config(&encode(&obj(vec![("broker", obj(fields))])))
            .map(|config| config.broker)
    }

    #[test]
    fn body_and_tunnel_timeouts_decode_with_defaults_and_bounds() {
        let defaults = broker_block(vec![]).unwrap();
        assert_eq!(defaults.request_body_timeout, Duration::from_secs(30));
        assert_eq!(defaults.tunnel_idle_timeout, Duration::from_secs(300));
        let set = broker_block(vec![
            ("request_body_timeout", "5s".into()),
            ("tunnel_idle_timeout", "1h".into()),
        ])
        .unwrap();
        assert_eq!(set.request_body_timeout, Duration::from_secs(5));
        assert_eq!(set.tunnel_idle_timeout, Duration::from_secs(3600));
        for key in ["request_body_timeout", "tunnel_idle_timeout"] {
            for bad in ["0s", "2d", "soon"] {
                let err = broker_block(vec![(key, bad.into())])
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(key) && err.contains(bad), "{key} {bad}: {err}");
            }
        }
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "",
            "host",
            "host:0",
            "host:99999",
            ":443",
            "*.:443",
            "a b:443",
            "[::1:443",
            "-x.com:443",
            "http://x.com:443",
        ] {
            assert_eq!(parse_rule(bad), None, "{bad}");
        }
    }
}
