//! The SSRF guard: classify every resolved address before dialing it.
//!
//! Pure logic. [`Guard::check`] answers whether one socket address may be dialed;
//! the caller resolves a name once, checks *every* address, and dials exactly a
//! checked one, so DNS rebinding between check and connect is impossible.

use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an address is not a public unicast destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// Globally routable unicast.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, fc00::/7, fec0::/10, 64:ff9b:1::/48.
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Cloud metadata endpoints (169.254.169.254, fd00:ec2::254, 100.100.100.200).
    Metadata,
    /// 100.64.0.0/10 carrier-grade NAT.
    Cgnat,
    /// 224.0.0.0/4, ff00::/8, 255.255.255.255.
    Multicast,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// Documentation, benchmarking, reserved and protocol-assignment ranges.
    Reserved,
}

impl AddrClass {
    /// Stable label for errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link_local",
            AddrClass::Metadata => "metadata",
            AddrClass::Cgnat => "cgnat",
            AddrClass::Multicast => "multicast",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Reserved => "reserved",
        }
    }
}

/// The IPv4 address an IPv6 address embeds, if it is one of the translation forms:
/// IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`,
/// 6to4 `2002::/16` and Teredo `2001::/32` (the obfuscated client address).
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    // IPv4-compatible (deprecated): ::a.b.c.d, excluding :: and ::1.
    if s[..6] == [0, 0, 0, 0, 0, 0] && u32::from_be_bytes([o[12], o[13], o[14], o[15]]) > 1 {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // NAT64 well-known prefix 64:ff9b::/96.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    // 6to4: 2002:AABB:CCDD::/48.
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    // Teredo: 2001:0000:server:server:flags:port:~client:~client.
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]));
    }
    None
}

/// Classifies an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let o = ip.octets();
    match o {
        [169, 254, 169, 254] | [100, 100, 100, 200] => AddrClass::Metadata,
        [127, ..] => AddrClass::Loopback,
        [10, ..] | [192, 168, ..] => AddrClass::Private,
        [172, b, ..] if (16..=31).contains(&b) => AddrClass::Private,
        [169, 254, ..] => AddrClass::LinkLocal,
        [100, b, ..] if (64..=127).contains(&b) => AddrClass::Cgnat,
        [0, ..] => AddrClass::Unspecified,
        [255, 255, 255, 255] => AddrClass::Multicast,
        [a, ..] if (224..=239).contains(&a) => AddrClass::Multicast,
        [a, ..] if a >= 240 => AddrClass::Reserved,
        [192, 0, 0, _] | [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => {
            AddrClass::Reserved
        }
        [198, b, ..] if b == 18 || b == 19 => AddrClass::Reserved,
        [192, 88, 99, _] => AddrClass::Reserved,
        _ => AddrClass::Public,
    }
}

/// Classifies any address; IPv6 forms that embed an IPv4 address are classified
/// as the worse of the two (a public 6to4 prefix never launders a private IPv4).
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                let c = classify_v4(v4);
                // Mapped, compatible and NAT64 forms are the IPv4 address; 6to4 and
                // Teredo live in 2000::/3 and must also pass the IPv6 checks.
                if c != AddrClass::Public || v6.segments()[0] & 0xe000 != 0x2000 {
                    return c;
                }
            }
            classify_v6(v6)
        }
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    let s = ip.segments();
    if ip.is_unspecified() {
        AddrClass::Unspecified
    } else if ip.is_loopback() {
        AddrClass::Loopback
    } else if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        AddrClass::Metadata
    } else if s[0] & 0xff00 == 0xff00 {
        AddrClass::Multicast
    } else if s[0] & 0xffc0 == 0xfe80 {
        AddrClass::LinkLocal
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 || s[..3] == [0x64, 0xff9b, 1] {
        AddrClass::Private
    } else if (s[0] == 0x2001 && s[1] == 0x0db8)
        || s[..4] == [0x0100, 0, 0, 0]
        || (s[0] == 0x2001 && s[1] < 0x0200 && s[1] != 0)
        || s[0] == 0x3fff
    {
        // documentation, discard-only, IETF protocol assignments (2001::/23 minus Teredo).
        AddrClass::Reserved
    } else if s[0] & 0xe000 != 0x2000 {
        // Outside 2000::/3 nothing is global unicast today.
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

/// Why the guard refused a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The address is not public and not in `proxy.allow_private`.
    Class {
        /// The refused address.
        addr: IpAddr,
        /// Its class.
        class: AddrClass,
    },
    /// The address is one of the gateway's own listeners.
    OwnListener(SocketAddr),
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Class { addr, class } => write!(
                f,
                "destination address {addr} is {} and not allowed",
                class.as_str()
            ),
            Denied::OwnListener(a) => {
                write!(f, "destination {a} is one of the gateway's own listeners")
            }
        }
    }
}

/// The configured guard.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow_private: Vec<IpNet>,
    own_listeners: Vec<SocketAddr>,
}

impl Guard {
    /// A guard allowing public destinations plus `allow_private`, never `own_listeners`.
    pub fn new(allow_private: Vec<IpNet>, own_listeners: Vec<SocketAddr>) -> Self {
        Self {
            allow_private,
            own_listeners,
        }
    }

    /// Decides whether `addr` may be dialed.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Denied> {
        let ip = canonical(addr.ip());
        if self.is_own_listener(ip, addr.port()) {
            return Err(Denied::OwnListener(addr));
        }
        let class = classify(ip);
        if class == AddrClass::Public || self.allow_private.iter().any(|n| n.contains(&ip)) {
            Ok(())
        } else {
            Err(Denied::Class { addr: ip, class })
        }
    }

    fn is_own_listener(&self, ip: IpAddr, port: u16) -> bool {
        self.own_listeners.iter().any(|l| {
            if l.port() != port {
                return false;
            }
            let lip = canonical(l.ip());
            if lip.is_unspecified() {
                // Bound to every interface: any local address reaches it.
                classify(ip) != AddrClass::Public || is_local_address(ip)
            } else {
                lip == ip
            }
        })
    }
}

/// IPv4-mapped IPv6 is treated as its IPv4 address everywhere (DESIGN §10).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `ip` is assigned to this host: binding to it only succeeds if so.
fn is_local_address(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Parses an IPv4 literal the way `inet_aton` does (`2130706433`, `0177.0.0.1`,
/// `0x7f.1`), so the guard classifies what a resolver would connect to.
/// Returns `None` for anything that is not such a literal.
pub fn parse_ipv4_lenient(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or(p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let n = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        nums.push(n);
    }
    let last = *nums.last()?;
    let head = &nums[..nums.len() - 1];
    if head.iter().any(|&n| n > 255) {
        return None;
    }
    let tail_bits = 8 * (4 - head.len() as u32);
    if tail_bits < 64 && last >= (1u64 << tail_bits) {
        return None;
    }
    let mut v: u32 = 0;
    for (i, &n) in head.iter().enumerate() {
        v |= (n as u32) << (24 - 8 * i as u32);
    }
    v |= last as u32;
    Some(Ipv4Addr::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> AddrClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classes() {
        let table = [
            ("8.8.8.8", AddrClass::Public),
            ("1.1.1.1", AddrClass::Public),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.0.9", AddrClass::Loopback),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("172.32.0.1", AddrClass::Public),
            ("192.168.1.1", AddrClass::Private),
            ("169.254.169.254", AddrClass::Metadata),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("100.64.0.1", AddrClass::Cgnat),
            ("100.127.255.255", AddrClass::Cgnat),
            ("100.128.0.1", AddrClass::Public),
            ("224.0.0.1", AddrClass::Multicast),
            ("255.255.255.255", AddrClass::Multicast),
            ("0.0.0.0", AddrClass::Unspecified),
            ("0.1.2.3", AddrClass::Unspecified),
            ("240.0.0.1", AddrClass::Reserved),
            ("192.0.2.1", AddrClass::Reserved),
            ("198.18.0.1", AddrClass::Reserved),
            ("::1", AddrClass::Loopback),
            ("::", AddrClass::Unspecified),
            ("fe80::1", AddrClass::LinkLocal),
            ("fc00::1", AddrClass::Private),
            ("fd12:3456::1", AddrClass::Private),
            ("fd00:ec2::254", AddrClass::Metadata),
            ("ff02::1", AddrClass::Multicast),
            ("2001:db8::1", AddrClass::Reserved),
            ("2606:4700:4700::1111", AddrClass::Public),
            // IPv4-mapped and -compatible
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:169.254.169.254", AddrClass::Metadata),
            ("::ffff:8.8.8.8", AddrClass::Public),
            ("::127.0.0.1", AddrClass::Loopback),
            // NAT64
            ("64:ff9b::7f00:1", AddrClass::Loopback),
            ("64:ff9b::a9fe:a9fe", AddrClass::Metadata),
            ("64:ff9b::808:808", AddrClass::Public),
            ("64:ff9b:1::1", AddrClass::Private),
            // 6to4
            ("2002:7f00:1::1", AddrClass::Loopback),
            ("2002:0a00:0001::", AddrClass::Private),
            ("2002:0808:0808::1", AddrClass::Public),
            // Teredo: client 127.0.0.1 obfuscated = 80ff:fffe
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", AddrClass::Loopback),
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", AddrClass::Public),
        ];
        for (ip, want) in table {
            assert_eq!(c(ip), want, "{ip}");
        }
    }

    #[test]
    fn lenient_ipv4() {
        let table = [
            ("2130706433", Some("127.0.0.1")),
            ("0177.0.0.1", Some("127.0.0.1")),
            ("0x7f.0.0.1", Some("127.0.0.1")),
            ("0x7f000001", Some("127.0.0.1")),
            ("127.1", Some("127.0.0.1")),
            ("127.0.1", Some("127.0.0.1")),
            ("10.0.0.1", Some("10.0.0.1")),
            ("0251.0376.0251.0376", Some("169.254.169.254")),
            ("256.0.0.1", None),
            ("1.2.3.4.5", None),
            ("example.com", None),
            ("", None),
            ("1..2", None),
            ("4294967296", None),
            ("08.0.0.1", None),
        ];
        for (s, want) in table {
            assert_eq!(
                parse_ipv4_lenient(s),
                want.map(|w| w.parse().unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn guard() {
        let g = Guard::new(
            vec!["127.0.0.1/32".parse().unwrap()],
            vec![
                "127.0.0.1:8080".parse().unwrap(),
                "0.0.0.0:8081".parse().unwrap(),
            ],
        );
        assert!(g.check("127.0.0.1:9000".parse().unwrap()).is_ok());
        assert!(g.check("[::ffff:127.0.0.1]:9000".parse().unwrap()).is_ok());
        assert!(matches!(
            g.check("127.0.0.1:8080".parse().unwrap()),
            Err(Denied::OwnListener(_))
        ));
        assert!(matches!(
            g.check("[::ffff:127.0.0.1]:8080".parse().unwrap()),
            Err(Denied::OwnListener(_))
        ));
        assert!(matches!(
            g.check("127.0.0.1:8081".parse().unwrap()),
            Err(Denied::OwnListener(_))
        ));
        assert!(matches!(
            g.check("127.0.0.2:9000".parse().unwrap()),
            Err(Denied::Class {
                class: AddrClass::Loopback,
                ..
            })
        ));
        assert!(matches!(
            g.check("169.254.169.254:80".parse().unwrap()),
            Err(Denied::Class {
                class: AddrClass::Metadata,
                ..
            })
        ));
        assert!(g.check("8.8.8.8:443".parse().unwrap()).is_ok());
        let strict = Guard::default();
        assert!(strict.check("127.0.0.1:9000".parse().unwrap()).is_err());
        assert!(strict.check("[::1]:9000".parse().unwrap()).is_err());
    }
}
