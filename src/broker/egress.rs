//! The opt-in egress allowlist: `CONNECT host:port` through the broker's address, for the
//! destinations the operator listed in `egress { allow = [...] }` and nothing else.
//!
//! Invariants:
//! - A destination is tunnelled only if a rule allows the exact host and port the client
//!   asked for; everything else gets a 403 that names the destination and the fix.
//! - A rule naming a host resolves it here, on the host, and refuses addresses that no public
//!   name should lead to (loopback, link-local such as the cloud metadata service,
//!   unspecified, multicast), so a DNS answer cannot turn an allowed name into a door to this
//!   machine. A rule naming an IP address is taken as the operator wrote it.
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

/// Addresses a name may lead to through the allowlist.
fn is_public(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_metadata_addresses_are_not_public() {
        for local in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!is_public(local.parse().unwrap()), "{local}");
        }
        for public in ["93.184.216.34", "10.1.2.3", "2001:db8::1"] {
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
