//! The opt-in egress allowlist: `CONNECT host:port` through the broker's address, for the
//! destinations the operator listed in `egress { allow = [...] }` and nothing else.
//!
//! Invariants:
//! - A destination is tunnelled only if a rule allows the exact host and port the client
//!   asked for; everything else gets a 403 that names the destination and the fix.
//! - A rule naming a host resolves it here, on the host, and refuses every address that is
//!   not public: loopback, link-local (the cloud metadata service), private (RFC 1918, IPv6
//!   unique-local), shared (100.64/10), documentation, unspecified, multicast and broadcast,
//!   also when embedded in IPv6 (mapped, NAT64, 6to4) — so neither a DNS answer nor a rebinding
//!   turns an allowed name into a door to this machine or its networks (docker0, the host's
//!   addresses). An internal destination is allowed by naming its IP address in a rule, which
//!   is taken as the operator wrote it.
//! - The tunnel is opaque bytes (TLS end to end between the CLI and the destination); the
//!   broker adds no credential to it.

use std::net::{IpAddr, SocketAddr};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::TaskContext;
use super::body::{ProxyBody, full};
use super::reply::Refusal;
use crate::config::EgressRule;

/// Answer a `CONNECT`: refuse it, or accept it and tunnel in the background.
pub(super) async fn connect(
    ctx: &TaskContext,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Refusal> {
    let Some(authority) = request.uri().authority().cloned() else {
        return Err(Refusal::BadRequest(
            "CONNECT needs a host:port target".into(),
        ));
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let Some(port) = authority.port_u16() else {
        return Err(Refusal::BadRequest(format!(
            "CONNECT {authority}: the target needs a port, such as {host}:443"
        )));
    };
    let Some(rule) = ctx.egress.iter().find(|rule| rule.allows(host, port)) else {
        return Err(Refusal::EgressRefused(refused_message(
            host,
            port,
            &ctx.egress,
        )));
    };
    let target = resolve(rule, host, port, ctx.limits.connect_timeout).await?;
    let stream = tokio::time::timeout(ctx.limits.connect_timeout, TcpStream::connect(target))
        .await
        .map_err(|_| {
            Refusal::EgressFailed(format!(
                "{host}:{port} did not accept a connection within {:?}",
                ctx.limits.connect_timeout
            ))
        })?
        .map_err(|e| Refusal::EgressFailed(format!("cannot connect to {host}:{port}: {e}")))?;
    let _ = stream.set_nodelay(true);
    let task_id = ctx.task_id.clone();
    let (destination, cancel) = (format!("{host}:{port}"), ctx.closed.clone());
    tokio::spawn(async move {
        let mut upstream = stream;
        let tunnel = async {
            let upgraded = hyper::upgrade::on(request).await?;
            let mut client = TokioIo::new(upgraded);
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        tokio::select! {
            _ = cancel.cancelled() => {}
            ended = tunnel => if let Err(err) = ended {
                tracing::debug!(%task_id, %destination, error = %err, "egress tunnel ended");
            }
        }
    });
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

fn refused_message(host: &str, port: u16, rules: &[EgressRule]) -> String {
    let allowed = if rules.is_empty() {
        "none: only the provider's API".to_string()
    } else {
        rules
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "egress to {host}:{port} is not allowed (allowed: {allowed}); the operator can add it to \
         the plugin's egress {{ allow = [...] }}"
    )
}

/// The address to dial for an allowed destination.
async fn resolve(
    rule: &EgressRule,
    host: &str,
    port: u16,
    timeout: std::time::Duration,
) -> Result<SocketAddr, Refusal> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        if rule.is_address() || is_public(ip) {
            return Ok(SocketAddr::new(ip, port));
        }
        return Err(Refusal::EgressRefused(format!(
            "{host} is a local or link-local address; only an egress rule naming it exactly may \
             reach it"
        )));
    }
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| {
            Refusal::EgressFailed(format!("looking up {host} took longer than {timeout:?}"))
        })?
        .map_err(|e| Refusal::EgressFailed(format!("cannot look up {host}: {e}")))?;
    let addresses: Vec<SocketAddr> = found.collect();
    addresses
        .iter()
        .copied()
        .find(|address| is_public(address.ip()))
        .ok_or_else(|| {
            Refusal::EgressRefused(format!(
                "{host} resolves only to local or link-local addresses, which egress by name \
                 never reaches; name the address itself in an egress rule if that is intended"
            ))
        })
}

/// Addresses a name may lead to through the allowlist: public ones only.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let embedded = if let Some(v4) = v6.to_ipv4_mapped() {
                Some(v4)
            } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 well-known prefix 64:ff9b::/96.
                Some(std::net::Ipv4Addr::from(u128::from(v6) as u32))
            } else if segments[0] == 0x2002 {
                // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
                let [a, b] = segments[1].to_be_bytes();
                let [c, d] = segments[2].to_be_bytes();
                Some(std::net::Ipv4Addr::new(a, b, c, d))
            } else {
                None
            };
            match embedded {
                Some(v4) => is_public_v4(v4),
                None => {
                    !(v6.is_loopback()
                        || v6.is_unspecified()
                        || v6.is_multicast()
                        || v6.is_unicast_link_local()
                        || v6.is_unique_local()
                        // Documentation 2001:db8::/32.
                        || (segments[0] == 0x2001 && segments[1] == 0x0db8))
                }
            }
        }
    }
}

fn is_public_v4(v4: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    let shared = a == 100 && (64..128).contains(&b);
    !(v4.is_loopback()
        || v4.is_link_local()
        || v4.is_private()
        || v4.is_unspecified()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_documentation()
        || shared
        || a == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_reachable_by_name() {
        for local in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "10.1.2.3",
            "172.17.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "192.0.2.2",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            assert!(!is_public(local.parse().unwrap()), "{local}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn the_refusal_lists_what_is_allowed() {
        assert!(refused_message("x.com", 443, &[]).contains("only the provider's API"));
        let rule = EgressRule {
            host: "registry.npmjs.org".into(),
            wildcard: false,
            port: 443,
        };
        let message = refused_message("x.com", 443, &[rule]);
        assert!(
            message.contains("x.com:443") && message.contains("registry.npmjs.org:443"),
            "{message}"
        );
    }
}
