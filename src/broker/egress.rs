//! The opt-in egress allowlist: `CONNECT host:port` through the broker's address, for the
//! destinations the operator listed in `egress { allow = [...] }` and nothing else.
//!
//! Invariants:
//! - A destination is tunnelled only if a rule allows the exact host and port the client
//!   asked for; everything else gets a 403 that names the destination and the fix.
//! - A rule naming a host resolves it here, on the host, and uses only an address that is
//!   public and not this host's own ([`super::addresses`]: loopback, link-local — the cloud
//!   metadata service —, private, shared, documentation and every other special-purpose block,
//!   also when carried in IPv6 — mapped, NAT64, 6to4 —, and every address of the host's
//!   interfaces) — so neither a DNS answer nor a rebinding turns an allowed name into a door to
//!   this machine or its networks (docker0, the host's public addresses). An internal
//!   destination is allowed by naming its IP address in a rule, which is taken as the operator
//!   wrote it.
//! - The tunnel is opaque bytes (TLS end to end between the CLI and the destination); the
//!   broker adds no credential to it. It holds the client connection's place among the task's
//!   `max_connections` and ends when idle or when the lease closes ([`super::tunnel`]).

use std::net::{IpAddr, SocketAddr};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::TaskContext;
use super::addresses;
use super::body::{ProxyBody, full};
use super::reply::Refusal;
use super::tunnel::{ConnectionSlot, Tunnel};
use crate::config::EgressRule;

/// Answer a `CONNECT`: refuse it, or accept it and tunnel in the background.
pub(super) async fn connect(
    ctx: &TaskContext,
    mut request: Request<Incoming>,
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
    Tunnel {
        task_id: ctx.task_id.clone(),
        destination: format!("{host}:{port}"),
        idle_timeout: ctx.limits.tunnel_idle_timeout,
        closed: ctx.closed.clone(),
        slot: request.extensions_mut().remove::<ConnectionSlot>(),
    }
    .spawn(hyper::upgrade::on(&mut request), stream);
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
    if let Ok(ip) = host.parse::<IpAddr>()
        && rule.is_address()
    {
        return Ok(SocketAddr::new(ip, port));
    }
    let own = addresses::own_addresses().map_err(|e| {
        Refusal::EgressFailed(format!(
            "cannot list this host's addresses, which egress by name must never reach: {e}"
        ))
    })?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match addresses::refusal(ip, &own) {
            None => Ok(SocketAddr::new(ip, port)),
            Some(what) => Err(Refusal::EgressRefused(format!(
                "{host} is a {what} address; only an egress rule naming it exactly may reach it"
            ))),
        };
    }
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| {
            Refusal::EgressFailed(format!("looking up {host} took longer than {timeout:?}"))
        })?
        .map_err(|e| Refusal::EgressFailed(format!("cannot look up {host}: {e}")))?;
    let answers: Vec<SocketAddr> = found.collect();
    answers
        .iter()
        .copied()
        .find(|address| addresses::refusal(address.ip(), &own).is_none())
        .ok_or_else(|| {
            let refused: Vec<String> = answers
                .iter()
                .map(|a| {
                    let what = addresses::refusal(a.ip(), &own).unwrap_or("refused");
                    format!("{} ({what})", a.ip())
                })
                .collect();
            Refusal::EgressRefused(format!(
                "{host} resolves only to addresses egress by name never reaches: {}; name the \
                 address itself in an egress rule if that is intended",
                refused.join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
