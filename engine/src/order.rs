//! Orders and the queue that holds them until their interval settles.

use crate::engine::SettleScratch;
use crate::ids::{AccountId, ClientOrderId, OrderId, Symbol, Timestamp, WorkerId};
use crate::money::{Qty, Side};

/// How an order is priced. Only market orders exist today; limit and stop orders will be new
/// variants appended after `Market`, so every event already in a journal keeps its meaning.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub enum OrderKind {
    /// Fill at the symbol's tick in the interval that settles the order, whatever it is.
    Market,
}

/// A buy or sell order as queued by the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct Order {
    /// Unique id, given by the master in arrival order; the last tie-breaker of the queue.
    pub id: OrderId,
    /// The id the client chose for the order, so that a retried order is recognised and not
    /// filled twice (the master keeps `(account, client_id)` unique). The engine only records it.
    pub client_id: ClientOrderId,
    /// Who trades.
    pub account: AccountId,
    /// What is traded.
    pub symbol: Symbol,
    /// Which way.
    pub side: Side,
    /// How much, in units of the asset.
    pub qty: Qty,
    /// How it is priced.
    pub kind: OrderKind,
    /// When the worker received it from the client (the worker's clock).
    pub placed_at: Timestamp,
    /// Which worker stamped it.
    pub worker: WorkerId,
}

impl Order {
    /// The settlement order key: worker timestamp, then worker id, then arrival (order id).
    pub const fn queue_key(&self) -> (Timestamp, WorkerId, OrderId) {
        (self.placed_at, self.worker, self.id)
    }
}

/// Orders waiting for the next settlement. Settlement takes them in [`Order::queue_key`] order,
/// whatever order they were pushed in.
///
/// The queue also keeps the memory settlement works in (a second order buffer for the sort and
/// the per-order tables of [`Engine::settle_into`](crate::Engine::settle_into)), so a caller that
/// keeps one queue across intervals, as the master does, settles each interval in memory it
/// already has instead of new pages. Cloning a queue clones its orders only.
#[derive(Default)]
pub struct OrderQueue {
    orders: Vec<Order>,
    /// The sort's destination: after a bucket sort the orders live here and the buffers swap.
    /// Its contents are stale copies, never read before being overwritten.
    spare: Vec<Order>,
    /// Settlement's per-order tables.
    pub(crate) scratch: SettleScratch,
}

impl Clone for OrderQueue {
    fn clone(&self) -> Self {
        Self { orders: self.orders.clone(), ..Self::default() }
    }
}

impl std::fmt::Debug for OrderQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderQueue").field("orders", &self.orders).finish_non_exhaustive()
    }
}

/// Queues with at least this many orders are sorted by time buckets first
/// ([`sort_by_time_buckets`]); smaller ones, which fit in the caches, by one comparison sort.
const BUCKET_SORT_ORDERS_MIN: usize = 1 << 14;
/// Orders aimed at per time bucket: each bucket's sort runs on a few cache lines (measured on
/// the `engine.settle` workload: 8 a bucket sorted a million orders in 32.5 ms, 16 in 34, 32
/// in 37; the comparison sort takes 57).
const ORDERS_PER_BUCKET: usize = 8;
/// Most time buckets: their counters (1 MiB) stay in the core's cache.
const BUCKETS_MAX: usize = 1 << 17;
/// Orders' worth of settlement memory a queue keeps whatever its intervals' sizes (about 15 MiB).
const KEPT_ORDERS_MIN: usize = 1 << 16;

impl OrderQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an order.
    pub fn push(&mut self, order: Order) {
        self.orders.push(order);
    }

    /// Moves every order of `other` to the end of this queue, leaving `other` empty (with its
    /// memory).
    pub fn append(&mut self, other: &mut OrderQueue) {
        self.orders.append(&mut other.orders);
    }

    /// Number of orders waiting.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// True when no order waits.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    /// Empties the queue, returning its orders in settlement order. Order ids are unique, so the
    /// key is a total order and an unstable sort gives the same result on every machine.
    pub fn drain_sorted(&mut self) -> Vec<Order> {
        self.sort_in_place();
        std::mem::take(&mut self.orders)
    }

    /// Sorts the waiting orders into settlement order and returns them, with settlement's
    /// tables; they stay queued until [`OrderQueue::clear_kept`]. Settlement uses this and then
    /// empties the queue, so the queue keeps its memory for the next interval's orders.
    pub(crate) fn sort_for_settlement(&mut self) -> (&[Order], &mut SettleScratch) {
        self.sort_in_place();
        (&self.orders, &mut self.scratch)
    }

    fn sort_in_place(&mut self) {
        if self.orders.len() < BUCKET_SORT_ORDERS_MIN {
            self.orders.sort_unstable_by_key(Order::queue_key);
        } else {
            let buckets = (self.orders.len() / ORDERS_PER_BUCKET).min(BUCKETS_MAX);
            sort_by_time_buckets(&mut self.orders, &mut self.spare, buckets);
        }
    }

    /// Empties the queue after a settlement, keeping its memory for the next one, unless that
    /// memory is sized for far more orders than were settled: after a burst, the first interval
    /// with under a quarter of its orders (and a sort buffer past `KEPT_ORDERS_MIN`) gives the
    /// buffers back, so a master keeps no more than its recent intervals need.
    pub(crate) fn clear_kept(&mut self) {
        let settled = self.orders.len();
        self.orders.clear();
        let kept = settled.saturating_mul(4).max(KEPT_ORDERS_MIN);
        if self.spare.len() > kept {
            self.orders.shrink_to(kept);
            self.spare = Vec::new();
            self.scratch = SettleScratch::default();
        }
    }
}

/// Sorts `orders` by [`Order::queue_key`], the same result as a comparison sort (the key is a
/// total order), in fewer moves of the 80-byte orders when there are many: one pass finds the
/// time range, one counts the orders of each of at most `buckets` equal slices of it (a
/// power of two, so a bucket is a shift of the time since the earliest order), one copies every
/// order into its bucket's place in `spare`, and each bucket, a few orders in the cache, is
/// sorted by the whole key. The sorted orders end in `orders`: the two buffers are swapped, so
/// `spare` holds the old buffer, whose memory the next sort reuses.
///
/// Timestamps bunched into one slice make one large bucket, which is still sorted correctly,
/// only without the gain.
fn sort_by_time_buckets(orders: &mut Vec<Order>, spare: &mut Vec<Order>, buckets: usize) {
    let count = orders.len();
    let Some(&first) = orders.first() else {
        return;
    };
    let (mut earliest, mut latest) = (first.placed_at.0, first.placed_at.0);
    for order in orders.iter() {
        earliest = earliest.min(order.placed_at.0);
        latest = latest.max(order.placed_at.0);
    }
    // Bucket `(t - earliest) >> shift` for every t in [earliest, latest] is below 2^bits_kept
    // (a shift by all 64 bits, when one bucket is kept of a full range, gives bucket 0).
    let bits_kept = usize::BITS - 1 - buckets.max(1).leading_zeros();
    let span = latest.abs_diff(earliest);
    let shift = (u64::BITS - span.leading_zeros()).saturating_sub(bits_kept);
    let bucket_of = |order: &Order| {
        let offset = order.placed_at.0.abs_diff(earliest).checked_shr(shift).unwrap_or(0);
        usize::try_from(offset).unwrap_or(usize::MAX)
    };
    let used = bucket_of(&Order { placed_at: Timestamp(latest), ..first }) + 1;
    debug_assert!(used <= buckets.max(1), "{used} buckets for {buckets}");
    let mut starts = vec![0usize; used + 1];
    for order in orders.iter() {
        if let Some(next) = starts.get_mut(bucket_of(order) + 1) {
            *next += 1;
        }
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    if spare.len() < count {
        spare.resize(count, first);
    }
    let mut fill_at = starts.clone();
    for order in orders.iter() {
        let slot = &mut fill_at[bucket_of(order)];
        spare[*slot] = *order;
        *slot += 1;
    }
    for bounds in starts.windows(2) {
        let bucket = &mut spare[bounds[0]..bounds[1]];
        if !bucket.is_sorted_by_key(Order::queue_key) {
            bucket.sort_unstable_by_key(Order::queue_key);
        }
    }
    std::mem::swap(orders, spare);
    orders.truncate(count);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::money::{Qty, Side};
    use proptest::prelude::*;

    fn order(id: u64, placed_at: i64, worker: u128) -> Order {
        Order {
            id: OrderId(id),
            client_id: ClientOrderId(id),
            account: AccountId(1),
            symbol: Symbol::new("A").unwrap(),
            side: Side::Buy,
            qty: Qty::from_raw(1),
            kind: OrderKind::Market,
            placed_at: Timestamp(placed_at),
            worker: WorkerId(worker),
        }
    }

    /// Times from a few clustered values, a small range, or anywhere in `i64` (the extremes
    /// included), so that buckets are empty, crowded, or span the whole range.
    fn placed_at() -> impl Strategy<Value = i64> {
        prop_oneof![
            prop::sample::select(vec![i64::MIN, -1, 0, 1, i64::MAX]),
            0..64i64,
            any::<i64>(),
        ]
    }

    proptest! {
        /// Sorting by time buckets gives exactly the comparison sort's order, whatever the
        /// number of buckets, and leaves the spare buffer's old contents out of the result.
        #[test]
        fn time_buckets_sort_like_the_comparison_sort(
            times in prop::collection::vec((placed_at(), 0..3u128), 0..300),
            buckets in 0..80usize,
            stale in 0..400usize,
            ids in any::<u64>(),
        ) {
            // Unique ids in an order unrelated to the times.
            let mut orders: Vec<Order> = times
                .iter()
                .enumerate()
                .map(|(i, &(at, worker))| {
                    order((i as u64).wrapping_mul(ids | 1), at, worker)
                })
                .collect();
            let mut expected = orders.clone();
            expected.sort_unstable_by_key(Order::queue_key);
            let mut spare = vec![order(u64::MAX, 7, 9); stale];
            sort_by_time_buckets(&mut orders, &mut spare, buckets);
            prop_assert_eq!(orders, expected);
        }
    }

    /// A queue past the bucket sort's threshold drains in settlement order, twice in a row in the
    /// same memory (the second time over the first sort's stale buffer).
    #[test]
    fn a_large_queue_drains_in_settlement_order() {
        let mut queue = OrderQueue::new();
        for count in [BUCKET_SORT_ORDERS_MIN * 2, BUCKET_SORT_ORDERS_MIN + 1] {
            let mut rng = crate::workload::XorShift::new(count as u64);
            for id in 0..count as u64 {
                let at = i64::try_from(rng.below(50_000)).unwrap();
                queue.push(order(id, at, u128::from(rng.below(4))));
            }
            let mut expected = queue.clone().orders;
            expected.sort_unstable_by_key(Order::queue_key);
            queue.sort_in_place();
            assert_eq!(queue.orders, expected);
            queue.clear_kept();
        }
        // The two buffers swapped at each sort: one holds the last sort's stale copy, the other
        // (the queue's) still has the larger interval's room.
        assert_eq!(queue.spare.len(), BUCKET_SORT_ORDERS_MIN + 1);
        assert!(queue.orders.capacity() >= BUCKET_SORT_ORDERS_MIN * 2, "the memory is kept");
    }

    /// After a burst, an interval of far fewer orders gives the burst's memory back.
    #[test]
    fn a_small_interval_after_a_burst_gives_the_memory_back() {
        let mut queue = OrderQueue::new();
        for id in 0..(KEPT_ORDERS_MIN * 2) as u64 {
            queue.push(order(id, (id % 1_000) as i64, 0));
        }
        queue.sort_in_place();
        queue.clear_kept();
        assert_eq!(queue.spare.len(), KEPT_ORDERS_MIN * 2, "a full interval keeps its memory");
        queue.push(order(1, 1, 0));
        queue.sort_in_place();
        queue.clear_kept();
        assert_eq!(queue.spare.capacity(), 0);
        assert!(queue.orders.capacity() <= KEPT_ORDERS_MIN);
    }
}
