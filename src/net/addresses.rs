//! Connections held per client address, so that one address cannot take
//! every slot of `--max-connections`.
//!
//! An IPv4 address counts on its own; IPv6 addresses count by their /64
//! prefix, the block one subscriber is usually given (RFC 6177), so a
//! host cannot dodge the limit by walking its own address space. The
//! address is the TCP peer's; behind a reverse proxy every client shares
//! the proxy's, and the limit should then be raised or taken from a
//! forwarded header (not read yet: a later `--trust-proxy`).

use std::collections::HashMap;
use std::net::IpAddr;

/// The part of an address a limit counts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4([u8; 4]),
    /// The /64 prefix.
    V6([u8; 8]),
}

impl AddressKey {
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => AddressKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                AddressKey::V6(prefix)
            }
        }
    }
}

/// How many connections each address holds.
#[derive(Debug, Default)]
pub struct AddressCounts {
    counts: HashMap<AddressKey, u32>,
}

impl AddressCounts {
    /// Counts one more connection from `ip` unless it already holds
    /// `max` (0: no limit). Returns whether it may connect.
    pub fn try_add(&mut self, ip: IpAddr, max: usize) -> bool {
        let held = self.counts.entry(AddressKey::of(ip)).or_insert(0);
        if max > 0 && *held as usize >= max {
            return false;
        }
        *held += 1;
        true
    }

    /// A connection from `ip` ended.
    pub fn remove(&mut self, ip: IpAddr) {
        let key = AddressKey::of(ip);
        if let Some(held) = self.counts.get_mut(&key) {
            *held -= 1;
            if *held == 0 {
                self.counts.remove(&key);
            }
        }
    }

    /// How many addresses hold connections.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn each_address_has_its_limit() {
        let mut counts = AddressCounts::default();
        assert!(counts.try_add(ip("10.0.0.1"), 2));
        assert!(counts.try_add(ip("10.0.0.1"), 2));
        assert!(!counts.try_add(ip("10.0.0.1"), 2), "a third is refused");
        assert!(counts.try_add(ip("10.0.0.2"), 2), "another address is not");
        counts.remove(ip("10.0.0.1"));
        assert!(counts.try_add(ip("10.0.0.1"), 2), "a slot came free");
    }

    #[test]
    fn ipv6_counts_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let mut counts = AddressCounts::default();
        assert!(counts.try_add(ip("2001:db8:1:2::1"), 1));
        assert!(!counts.try_add(ip("2001:db8:1:2:ffff::9"), 1), "same /64");
        assert!(counts.try_add(ip("2001:db8:1:3::1"), 1), "another /64");
        assert!(counts.try_add(ip("192.0.2.7"), 1));
        assert!(
            !counts.try_add(ip("::ffff:192.0.2.7"), 1),
            "the same IPv4 host"
        );
    }

    #[test]
    fn zero_is_no_limit_and_empty_entries_go() {
        let mut counts = AddressCounts::default();
        for _ in 0..1000 {
            assert!(counts.try_add(ip("127.0.0.1"), 0));
        }
        for _ in 0..1000 {
            counts.remove(ip("127.0.0.1"));
        }
        assert!(counts.is_empty());
    }
}
