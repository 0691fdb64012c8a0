//! Who is on the other end: the peer address, or, when the peer is a trusted proxy
//! (`--trusted-proxies`), the right-most address in `Forwarded` / `X-Forwarded-For` that is
//! not itself a trusted proxy.
//!
//! Right-most, because each proxy appends the address it received the request from: everything
//! left of the last untrusted hop was written by the client and proves nothing. Headers from a
//! peer that is not trusted are ignored entirely, so a client cannot pick its own key.

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use axum::http::{HeaderMap, header};

/// An address block, e.g. `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected an address with an optional /prefix, e.g. 10.0.0.0/8")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { net: mask(net, prefix), prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.net.is_ipv4() && mask(ip, self.prefix) == self.net
    }
}

/// The first `prefix` bits of `ip`.
pub(crate) fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack listener reports) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// True when `ip` is in one of `trusted`.
pub fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client's address: `peer` unless `peer` is trusted, then the right-most untrusted hop of
/// the forwarding headers (`Forwarded` first, RFC 7239; else `X-Forwarded-For`). If every hop is
/// trusted the left-most is the client; a header that does not parse counts as absent.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let hops = forwarded(headers).or_else(|| x_forwarded_for(headers));
    let Some(hops) = hops else { return peer };
    let hops: Vec<IpAddr> = hops.into_iter().map(canonical).collect();
    hops.iter().rev().find(|ip| !is_trusted(trusted, **ip)).or(hops.first()).copied().unwrap_or(peer)
}

/// Every `for=` of every `Forwarded` header, in order. `None` if absent or if any hop is not an
/// address (an obfuscated or `unknown` hop breaks the chain: trust nothing past it).
fn forwarded(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(header::FORWARDED) {
        let value = value.to_str().ok()?;
        for element in value.split(',') {
            for pair in element.split(';') {
                let Some((k, v)) = pair.trim().split_once('=') else { continue };
                if k.trim().eq_ignore_ascii_case("for") {
                    hops.push(node_ip(v.trim().trim_matches('"'))?);
                }
            }
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// A `Forwarded` node: `1.2.3.4`, `1.2.3.4:80`, `[::1]` or `[::1]:80`.
fn node_ip(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    node.parse().ok().or_else(|| node.rsplit_once(':')?.0.parse().ok())
}

fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        for hop in value.to_str().ok()?.split(',') {
            hops.push(node_ip(hop.trim())?);
        }
    }
    (!hops.is_empty()).then_some(hops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.200.0.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")), "mapped IPv4 is IPv4");
        assert!(!net.contains(ip("11.0.0.1")));
        let one: Cidr = "192.168.0.1".parse().unwrap();
        assert!(one.contains(ip("192.168.0.1")) && !one.contains(ip("192.168.0.2")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "x/1", "10.0.0.0/"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")]);
        // An untrusted peer's headers are ignored.
        assert_eq!(client_ip(ip("5.5.5.5"), &xff, &trusted), ip("5.5.5.5"));
        // Through trusted proxies: the right-most untrusted hop, not the client-written left.
        assert_eq!(client_ip(ip("10.0.0.1"), &xff, &trusted), ip("1.2.3.4"));
        // No header: the proxy itself.
        assert_eq!(client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
        // Forwarded wins over X-Forwarded-For, with ports, quotes and IPv6 brackets.
        let fwd = headers(&[
            ("forwarded", "for=6.6.6.6;proto=https, for=\"[2001:db8::1]:4711\""),
            ("x-forwarded-for", "7.7.7.7"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.1"), &fwd, &trusted), ip("2001:db8::1"));
        let port = headers(&[("forwarded", "for=1.2.3.4:80")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &port, &trusted), ip("1.2.3.4"));
        // A garbled header is ignored, never trusted in part.
        let junk = headers(&[("x-forwarded-for", "1.2.3.4, nonsense")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &junk, &trusted), ip("10.0.0.1"));
        // Every hop trusted: the left-most is the client.
        let inner = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &inner, &trusted), ip("10.9.9.9"));
        // No trusted proxies configured: headers never count.
        assert_eq!(client_ip(ip("10.0.0.1"), &xff, &[]), ip("10.0.0.1"));
    }
}
