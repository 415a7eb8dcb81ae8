//! Client connections counted per address, so that one host cannot take every place the
//! worker has (`clients.connections_per_address_max` of `clients.connections_max`).
//!
//! Addresses are counted as the master's limits count them ([`master::auth::ip_key`]): an
//! IPv4 address is its own bucket, an IPv6 address counts with its /64 (a host given a /64 has
//! 2^64 addresses to connect from), and an IPv4-mapped IPv6 address as its IPv4 address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use master::auth::ip_key;

/// The connections open from each address bucket.
#[derive(Debug)]
pub struct AddressCounts {
    open: Mutex<HashMap<IpAddr, u32>>,
    max: u32,
}

/// A connection's place in its address's count, given back when dropped.
#[derive(Debug)]
pub struct AddressPlace {
    counts: Arc<AddressCounts>,
    bucket: IpAddr,
}

impl AddressCounts {
    /// Counts that allow `max` connections per bucket.
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(Self { open: Mutex::new(HashMap::new()), max })
    }

    /// A place for one more connection from `ip`, or `None` when its bucket has `max` open.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressPlace> {
        let bucket = ip_key(ip);
        // A panic elsewhere while the lock was held leaves the counts as they were: still
        // counts, so the limit holds.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(bucket).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressPlace { counts: Arc::clone(self), bucket })
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.bucket) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.bucket);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Connections open from `ip`'s bucket.
    fn open_from(counts: &AddressCounts, ip: IpAddr) -> u32 {
        counts.open.lock().unwrap().get(&ip_key(ip)).copied().unwrap_or(0)
    }

    #[test]
    fn counts_each_bucket_up_to_its_limit_and_forgets_empty_ones() {
        let counts = AddressCounts::new(2);
        let a = counts.try_take(ip("192.0.2.1")).unwrap();
        let b = counts.try_take(ip("192.0.2.1")).unwrap();
        assert!(counts.try_take(ip("192.0.2.1")).is_none(), "a third from one address");
        // Another address has its own places.
        let other = counts.try_take(ip("192.0.2.2")).unwrap();
        assert_eq!(open_from(&counts, ip("192.0.2.1")), 2);
        drop(a);
        let c = counts.try_take(ip("192.0.2.1")).unwrap();
        drop((b, c, other));
        assert!(counts.open.lock().unwrap().is_empty(), "empty buckets are forgotten");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let counts = AddressCounts::new(1);
        let _first = counts.try_take(ip("2001:db8:1:2::1")).unwrap();
        assert!(counts.try_take(ip("2001:db8:1:2:ffff::9")).is_none(), "same /64");
        let _next = counts.try_take(ip("2001:db8:1:3::1")).unwrap();
        let _v4 = counts.try_take(ip("192.0.2.7")).unwrap();
        assert!(counts.try_take(ip("::ffff:192.0.2.7")).is_none(), "mapped: the same host");
        assert_eq!(ip_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }
}
