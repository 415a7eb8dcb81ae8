//! A small least-recently-used map with weights, the base of the asset and session caches.
//!
//! Every entry carries a weight (bytes, or 1); the map tracks the total. It does not evict on
//! its own: the caches decide their bounds and call [`Lru::pop_oldest`]. Lookups and updates
//! are O(log n): a hash map holds the entries, a B-tree orders them by last use.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug)]
struct Slot<V> {
    value: V,
    stamp: u64,
    weight: u64,
}

/// A map that remembers the order in which its entries were last used.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    map: HashMap<K, Slot<V>>,
    order: BTreeMap<u64, K>,
    next_stamp: u64,
    weight: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    pub(crate) fn new() -> Self {
        Self { map: HashMap::new(), order: BTreeMap::new(), next_stamp: 0, weight: 0 }
    }

    fn stamp(&mut self) -> u64 {
        let stamp = self.next_stamp;
        // 2^64 uses will not happen; wrapping would only disturb the eviction order.
        self.next_stamp = self.next_stamp.wrapping_add(1);
        stamp
    }

    /// The entry for `key`, marked as just used.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let stamp = self.stamp();
        let slot = self.map.get_mut(key)?;
        self.order.remove(&slot.stamp);
        slot.stamp = stamp;
        self.order.insert(stamp, key.clone());
        Some(&mut slot.value)
    }

    /// Inserts or replaces `key` as the most recently used entry; returns the old value.
    pub(crate) fn insert(&mut self, key: K, value: V, weight: u64) -> Option<V> {
        let old = self.remove(&key);
        let stamp = self.stamp();
        self.order.insert(stamp, key.clone());
        self.map.insert(key, Slot { value, stamp, weight });
        self.weight = self.weight.saturating_add(weight);
        old
    }

    /// Removes `key`.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.order.remove(&slot.stamp);
        self.weight = self.weight.saturating_sub(slot.weight);
        Some(slot.value)
    }

    /// Removes and returns the least recently used entry.
    pub(crate) fn pop_oldest(&mut self) -> Option<(K, V)> {
        // `order` and `map` hold the same keys; a key missing from `map` is skipped.
        while let Some((_, key)) = self.order.pop_first() {
            if let Some(slot) = self.map.remove(&key) {
                self.weight = self.weight.saturating_sub(slot.weight);
                return Some((key, slot.value));
            }
            debug_assert!(false, "the eviction order names a key the map does not hold");
        }
        None
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Sum of the entries' weights.
    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn evicts_in_order_of_last_use_and_tracks_weight() {
        let mut lru = Lru::new();
        lru.insert("a", 1, 10);
        lru.insert("b", 2, 20);
        lru.insert("c", 3, 30);
        assert_eq!(lru.weight(), 60);
        assert_eq!(lru.get_mut(&"a"), Some(&mut 1));
        assert_eq!(lru.pop_oldest(), Some(("b", 2)));
        assert_eq!(lru.insert("c", 4, 5), Some(3));
        assert_eq!(lru.weight(), 15);
        assert_eq!(lru.pop_oldest(), Some(("a", 1)));
        assert_eq!(lru.remove(&"c"), Some(4));
        assert_eq!(lru.len(), 0);
        assert_eq!(lru.weight(), 0);
        assert_eq!(lru.pop_oldest(), None);
    }
}
