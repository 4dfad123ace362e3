//! A peer's address as the loop keeps it: 18 bytes, not the 32 of a
//! `SocketAddr`.
//!
//! Every connection carries its remote address for the log lines about it
//! and to give back its slot in [`addresses`](super::addresses) when it
//! goes. `std::net::SocketAddr` spends 32 bytes on that (an IPv6 flow
//! label and scope id, and an enum tag, besides 16 bytes of address and
//! two of port); idle connections are most of a server's memory, so the
//! address is kept as 16 bytes (IPv4 in its IPv4-mapped form, RFC 4291
//! §2.5.5.2) and the port. What is lost is the scope id of a link-local
//! IPv6 peer (`fe80::1%eth0` logs as `fe80::1`) and the flow label, which
//! nothing here reads.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// A peer's IP address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    ip: [u8; 16],
    port: u16,
}

impl Remote {
    /// The address: an IPv4 peer (also one seen as IPv4-mapped on a
    /// dual-stack socket) comes back as IPv4.
    pub fn ip(&self) -> IpAddr {
        Ipv6Addr::from(self.ip).to_canonical()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.port)
    }
}

impl From<SocketAddr> for Remote {
    fn from(addr: SocketAddr) -> Remote {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        Remote {
            ip: ip.octets(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_back_as_they_went_in() {
        for text in [
            "127.0.0.1:8080",
            "[::1]:443",
            "[2001:db8::7]:65535",
            "0.0.0.0:0",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            let remote = Remote::from(addr);
            assert_eq!(remote.addr(), addr);
            assert_eq!(remote.to_string(), text);
        }
        assert_eq!(std::mem::size_of::<Remote>(), 18);
    }

    #[test]
    fn an_ipv4_mapped_peer_is_an_ipv4_peer() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:5000".parse().unwrap();
        let remote = Remote::from(mapped);
        assert_eq!(remote.ip(), IpAddr::from([192, 0, 2, 1]));
        assert_eq!(remote.to_string(), "192.0.2.1:5000");
        assert_eq!(remote.port(), 5000);
    }
}
