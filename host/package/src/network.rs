//! Network grants: the outbound addresses a component may reach. Default is no network at all.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Which ports a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRange {
    /// `*`: every port.
    Any,
    /// One port.
    Port(u16),
}

/// One allow-list entry: an address block (`10.0.0.0/8`, `127.0.0.1`, `[fd00::/8]`) and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetRule {
    /// Network address (host bits may be set; they are ignored when matching).
    pub addr: IpAddr,
    /// Prefix length; 32 / 128 for a single host.
    pub prefix: u8,
    /// Port or any.
    pub port: PortRange,
}

impl NetRule {
    /// Parses `ip-or-cidr:port` where port is a number or `*`; IPv6 goes in brackets: `[::1]:80`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: missing ']'"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| format!("{text:?}: expected ':port' after ']'"))?;
            (host, port)
        } else {
            text.rsplit_once(':')
                .ok_or_else(|| format!("{text:?}: expected ip-or-cidr:port"))?
        };
        let port = match port {
            "*" => PortRange::Any,
            p => PortRange::Port(
                p.parse()
                    .map_err(|_| format!("{text:?}: bad port {p:?} (number or *)"))?,
            ),
        };
        let (ip, prefix) = match host.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (host, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{text:?}: bad IP address {ip:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(len) => match len.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{text:?}: bad prefix length {len:?} (0..={max})")),
            },
        };
        Ok(NetRule { addr, prefix, port })
    }

    /// True when `target` falls within this rule.
    pub fn allows(&self, target: SocketAddr) -> bool {
        let port_ok = match self.port {
            PortRange::Any => true,
            PortRange::Port(p) => p == target.port(),
        };
        port_ok && prefix_match(self.addr, target.ip(), self.prefix)
    }
}

fn prefix_match(net: IpAddr, ip: IpAddr, prefix: u8) -> bool {
    let (net, ip, bits) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32u32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128u32),
        _ => return false,
    };
    let host_bits = bits.saturating_sub(u32::from(prefix));
    // Shifting a u128 by 128 would overflow: prefix 0 matches everything of the family.
    host_bits >= 128 || (net >> host_bits) == (ip >> host_bits)
}

impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        let host = if self.prefix == full {
            self.addr.to_string()
        } else {
            format!("{}/{}", self.addr, self.prefix)
        };
        let host = if self.addr.is_ipv6() {
            format!("[{host}]")
        } else {
            host
        };
        match self.port {
            PortRange::Any => write!(f, "{host}:*"),
            PortRange::Port(p) => write!(f, "{host}:{p}"),
        }
    }
}

/// What a component may connect to and listen on; empty means no network (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkGrant {
    /// Allowed peers: destinations to connect or send to, sources to receive or accept from.
    pub allow: Vec<NetRule>,
    /// Local addresses the guest may bind and listen on (`0.0.0.0:8080`: every
    /// interface; `127.0.0.1:8080`: loopback only). Empty: outbound only, the
    /// OS picks the local port of each connection.
    pub bind: Vec<NetRule>,
}

impl NetworkGrant {
    /// True when nothing is granted: the runtime should not give the guest sockets at all.
    pub fn is_none(&self) -> bool {
        self.allow.is_empty() && self.bind.is_empty()
    }

    /// True when some rule allows `target`.
    pub fn allows(&self, target: SocketAddr) -> bool {
        self.allow.iter().any(|r| r.allows(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_matches_host_rule() {
        let r = NetRule::parse("127.0.0.1:8080").unwrap();
        assert!(r.allows(sa("127.0.0.1:8080")));
        assert!(!r.allows(sa("127.0.0.1:8081")));
        assert!(!r.allows(sa("127.0.0.2:8080")));
        assert_eq!(r.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn parses_cidr_with_any_port() {
        let r = NetRule::parse("10.0.0.0/8:*").unwrap();
        assert!(r.allows(sa("10.200.3.4:1")));
        assert!(!r.allows(sa("11.0.0.1:1")));
        assert!(!r.allows(sa("[::1]:1")));
        assert_eq!(r.to_string(), "10.0.0.0/8:*");
        assert!(
            NetRule::parse("0.0.0.0/0:*")
                .unwrap()
                .allows(sa("8.8.8.8:53"))
        );
    }

    #[test]
    fn parses_ipv6() {
        let r = NetRule::parse("[fd00::/8]:443").unwrap();
        assert!(r.allows(sa("[fd12::1]:443")));
        assert!(!r.allows(sa("[fe80::1]:443")));
        assert_eq!(r.to_string(), "[fd00::/8]:443");
        assert!(
            NetRule::parse("[::/0]:*")
                .unwrap()
                .allows(sa("[2001::1]:9"))
        );
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "127.0.0.1",
            "host:80",
            "10.0.0.0/33:*",
            "1.2.3.4:99999",
            "1.2.3.4:x",
            "[::1:80",
            ":*",
            "",
        ] {
            assert!(NetRule::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
