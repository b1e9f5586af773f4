//! Which IP addresses an egress rule naming a *host* may lead to: public addresses that are not
//! this machine's own.
//!
//! A name is resolved on the host, and its answer may be anything (a rebinding DNS server, a
//! wildcard rule reaching a name the task controls), so an answer is used only if it is
//! globally reachable and not one of this host's interface addresses: a public address of the
//! node would reach every service it binds on `0.0.0.0`.
//!
//! Refused, by the IANA special-purpose registries (RFC 6890 and later) — IPv4: `0/8`,
//! `10/8`, `100.64/10`, `127/8`, `169.254/16` (cloud metadata), `172.16/12`, `192.0.0/24`,
//! `192.0.2/24`, `192.88.99/24`, `192.168/16`, `198.18/15`, `198.51.100/24`, `203.0.113/24`,
//! `224/4`, `240/4` (broadcast included). IPv6: `::/128`, `::1/128`, IPv4-compatible `::/96`
//! (deprecated), IPv4-translated `::ffff:0:0:0/96`, local-use NAT64 `64:ff9b:1::/48`,
//! discard-only `100::/64`, dummy `100:0:0:1::/64`, IETF protocol assignments `2001::/23`
//! (Teredo, benchmarking, ORCHID — no API is served there), documentation `2001:db8::/32` and
//! `3fff::/20`, segment-routing `5f00::/16`, unique-local `fc00::/7`, link-local `fe80::/10`,
//! site-local `fec0::/10`, multicast `ff00::/8`.
//!
//! Forms that carry an IPv4 address — IPv4-mapped `::ffff:0:0/96`, NAT64 `64:ff9b::/96` and
//! 6to4 `2002::/16` — are judged by that address, own addresses included.
//!
//! Invariant: the host's addresses are listed at every check (one netlink dump), so an address
//! added after start is refused too; if they cannot be listed, nothing is allowed by name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Special-purpose IPv4 blocks: (network, prefix length, what it is).
const SPECIAL_V4: [(Ipv4Addr, u8, &str); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\""),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared (carrier-grade NAT)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local (cloud metadata)",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignment"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved or broadcast"),
];

/// Special-purpose IPv6 blocks that are refused whatever they carry. Order matters: the first
/// match names the refusal.
const SPECIAL_V6: [(Ipv6Addr, u8, &str); 16] = [
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        "IPv4-compatible (deprecated)",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0),
        96,
        "IPv4-translated",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0),
        64,
        "dummy prefix",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, "Teredo"),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignment",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation",
    ),
    (
        Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0),
        16,
        "segment routing",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique-local",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site-local (deprecated)",
    ),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

/// This host's interface addresses (every interface, up or not), for [`refusal`].
pub fn own_addresses() -> Result<Vec<IpAddr>, nix::Error> {
    let mut out = Vec::new();
    for interface in nix::ifaddrs::getifaddrs()? {
        let Some(address) = interface.address else {
            continue;
        };
        if let Some(v4) = address.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = address.as_sockaddr_in6() {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    Ok(out)
}

/// Why `ip` may not be reached through an egress rule naming a host, or `None` if it may:
/// `own` are this host's addresses.
pub fn refusal(ip: IpAddr, own: &[IpAddr]) -> Option<&'static str> {
    if own.contains(&ip) {
        return Some("this host's own address");
    }
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4, own),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => refusal_v4(v4, own),
            None => SPECIAL_V6
                .iter()
                .find(|(network, length, _)| in_v6(v6, *network, *length))
                .map(|(_, _, what)| *what),
        },
    }
}

fn refusal_v4(v4: Ipv4Addr, own: &[IpAddr]) -> Option<&'static str> {
    if own.contains(&IpAddr::V4(v4)) {
        return Some("this host's own address");
    }
    SPECIAL_V4
        .iter()
        .find(|(network, length, _)| in_v4(v4, *network, *length))
        .map(|(_, _, what)| *what)
}

/// The IPv4 address an IPv6 address carries where it is routed by it: IPv4-mapped, NAT64
/// well-known prefix, 6to4.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = v6.segments();
    let low = Ipv4Addr::from(u128::from(v6) as u32);
    let mapped = v6.to_ipv4_mapped().is_some();
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if mapped || nat64 {
        Some(low)
    } else if segments[0] == 0x2002 {
        let [a, b] = segments[1].to_be_bytes();
        let [c, d] = segments[2].to_be_bytes();
        Some(Ipv4Addr::new(a, b, c, d))
    } else {
        None
    }
}

fn in_v4(ip: Ipv4Addr, network: Ipv4Addr, length: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

fn in_v6(ip: Ipv6Addr, network: Ipv6Addr, length: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(network) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn every_special_purpose_block_is_refused_and_named() {
        for (address, why) in [
            ("0.1.2.3", "this network"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "shared"),
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "metadata"),
            ("172.17.0.1", "private"),
            ("192.0.0.8", "IETF"),
            ("192.0.2.2", "documentation"),
            ("192.88.99.1", "6to4 relay"),
            ("192.168.1.1", "private"),
            ("198.19.255.1", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::a00:1", "IPv4-compatible"),
            ("::8.8.8.8", "IPv4-compatible"),
            ("::ffff:0:808:808", "IPv4-translated"),
            ("64:ff9b:1::808:808", "local-use NAT64"),
            ("64:ff9b:1:ffff::1", "local-use NAT64"),
            ("100::1", "discard-only"),
            ("100:0:0:1::1", "dummy"),
            ("2001:db8::1", "documentation"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("2001:2::1", "IETF"),
            ("2001:20::1", "IETF"),
            ("3fff::1", "documentation"),
            ("5f00::1", "segment routing"),
            ("fd00::1", "unique-local"),
            ("fc00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            // IPv4 carried in IPv6 is judged by the IPv4 address.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a00:1", "private"),
            ("64:ff9b::a9fe:a9fe", "metadata"),
            ("2002:a00:1::1", "private"),
            ("2002:7f00:1::1", "loopback"),
        ] {
            let refused = refusal(ip(address), &[]);
            assert!(
                refused.is_some_and(|what| what.contains(why)),
                "{address}: {refused:?}, expected {why}"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "192.0.1.1",
            "192.0.3.1",
            "198.20.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "2001:4860:4860::8888",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(refusal(ip(public), &[]), None, "{public}");
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_refused_in_every_form() {
        let own = [ip("93.184.216.34"), ip("2606:4700::1111")];
        for form in [
            "93.184.216.34",
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
            "2606:4700::1111",
        ] {
            assert_eq!(
                refusal(ip(form), &own),
                Some("this host's own address"),
                "{form}"
            );
        }
        assert_eq!(refusal(ip("93.184.216.35"), &own), None);
    }

    #[test]
    fn this_hosts_interfaces_are_listed() {
        let own = own_addresses().unwrap();
        assert!(own.contains(&ip("127.0.0.1")), "{own:?}");
        // Every address `ip` shows for this host is among them, and refused.
        let shown = std::process::Command::new("ip")
            .args(["-o", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for line in shown.lines() {
            let Some(address) = line
                .split_whitespace()
                .skip_while(|w| *w != "inet" && *w != "inet6")
                .nth(1)
                .and_then(|cidr| cidr.split('/').next())
                .and_then(|text| text.parse::<IpAddr>().ok())
            else {
                continue;
            };
            assert!(own.contains(&address), "{address} missing from {own:?}");
            assert_eq!(refusal(address, &own), Some("this host's own address"));
        }
    }
}
