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
pub struct OrderQueue {
    orders: Vec<Order>,
    /// The earliest and latest worker timestamps of the queued orders (`EMPTY_RANGE` when none),
    /// kept as they are pushed so that the bucket sort need not read every order to find them.
    /// Sorting checks every order against it and finds the range itself if one is outside.
    placed: (i64, i64),
    /// The sort's destination: after a bucket sort the orders live here and the buffers swap.
    /// Its contents are stale copies, never read before being overwritten.
    spare: Vec<Order>,
    /// Settlement's per-order tables.
    pub(crate) scratch: SettleScratch,
}

/// The time range of no orders: any order widens it to its own time.
const EMPTY_RANGE: (i64, i64) = (i64::MAX, i64::MIN);

impl Default for OrderQueue {
    fn default() -> Self {
        Self {
            orders: Vec::new(),
            placed: EMPTY_RANGE,
            spare: Vec::new(),
            scratch: SettleScratch::default(),
        }
    }
}

impl Clone for OrderQueue {
    fn clone(&self) -> Self {
        Self { orders: self.orders.clone(), placed: self.placed, ..Self::default() }
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
/// Orders' worth of settlement memory a queue keeps whatever its intervals' sizes (about
/// 18 MiB: the two order buffers and settlement's tables take 280 bytes an order).
const KEPT_ORDERS_MIN: usize = 1 << 16;

impl OrderQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an order.
    pub fn push(&mut self, order: Order) {
        self.placed = widen(self.placed, order.placed_at.0);
        self.orders.push(order);
    }

    /// Moves every order of `other` to the end of this queue, leaving `other` empty (with its
    /// memory).
    pub fn append(&mut self, other: &mut OrderQueue) {
        self.placed = (self.placed.0.min(other.placed.0), self.placed.1.max(other.placed.1));
        other.placed = EMPTY_RANGE;
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
        self.placed = EMPTY_RANGE;
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
            sort_by_time_buckets(&mut self.orders, &mut self.spare, buckets, self.placed);
        }
    }

    /// Empties the queue after a settlement, keeping its memory for the next one, unless that
    /// memory is sized for far more orders than were settled: when the buffers or the tables
    /// have room for more than four times the orders just settled (and more than
    /// `KEPT_ORDERS_MIN`), they are given back, so after a burst a master keeps no more than
    /// its recent intervals need.
    pub(crate) fn clear_kept(&mut self) {
        let settled = self.orders.len();
        self.orders.clear();
        self.placed = EMPTY_RANGE;
        let kept = settled.saturating_mul(4).max(KEPT_ORDERS_MIN);
        let room = self.orders.capacity().max(self.spare.capacity()).max(self.scratch.room());
        if room > kept {
            self.orders.shrink_to(kept);
            self.spare = Vec::new();
            self.scratch = SettleScratch::default();
        }
    }
}

/// Sorts `orders` by [`Order::queue_key`], the same result as a comparison sort (the key is a
/// total order), in fewer moves of the 80-byte orders when there are many: one pass counts the
/// orders of each of at most `buckets` equal slices of the time range `placed` (the queue's,
/// kept as orders are pushed; a power of two of slices, so a bucket is a shift of the time
/// since the earliest order), one copies every order into its bucket's place in `spare`, and
/// each bucket, a few orders in the cache, is sorted by the whole key. The sorted orders end
/// in `orders`: the two buffers are swapped, so `spare` holds the old buffer, whose memory the
/// next sort reuses. If an order falls outside `placed`, the counting pass notices and the
/// range is found from the orders instead: the result never depends on `placed`.
///
/// Timestamps bunched into one slice make one large bucket, which is still sorted correctly,
/// only without the gain.
fn sort_by_time_buckets(
    orders: &mut Vec<Order>,
    spare: &mut Vec<Order>,
    buckets: usize,
    placed: (i64, i64),
) {
    let count = orders.len();
    let Some(&first) = orders.first() else {
        return;
    };
    let (slices, starts) = match TimeBuckets::count(orders, placed, buckets) {
        Some(counted) => counted,
        None => {
            // An order outside the range the queue kept: not expected (the queue's own tests
            // check the range), but the sort's result must not depend on it. The range of the
            // orders themselves holds every one of them.
            let range = orders.iter().fold(EMPTY_RANGE, |range, o| widen(range, o.placed_at.0));
            match TimeBuckets::count(orders, range, buckets) {
                Some(counted) => counted,
                None => unreachable!("every order is inside the range of all of them"),
            }
        }
    };
    if spare.len() < count {
        spare.resize(count, first);
    }
    let mut fill_at = starts.clone();
    for order in orders.iter() {
        let slot = &mut fill_at[slices.of(order).unwrap_or(0)];
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

/// `range` widened to hold `time`.
fn widen(range: (i64, i64), time: i64) -> (i64, i64) {
    (range.0.min(time), range.1.max(time))
}

/// Equal slices of a time range, a power of two of them: the slice of a time is a shift of its
/// distance from the range's start.
#[derive(Debug, Clone, Copy)]
struct TimeBuckets {
    earliest: i64,
    shift: u32,
    /// The slices the range covers.
    used: usize,
}

impl TimeBuckets {
    /// At most `buckets` slices of `[earliest, latest]` (at least one slice).
    fn new((earliest, latest): (i64, i64), buckets: usize) -> TimeBuckets {
        // `(t - earliest) >> shift` for every t in the range is below 2^bits_kept (a shift by
        // all 64 bits, when one slice is kept of a full range, gives slice 0).
        let bits_kept = usize::BITS - 1 - buckets.max(1).leading_zeros();
        let span = latest.abs_diff(earliest);
        let shift = (u64::BITS - span.leading_zeros()).saturating_sub(bits_kept);
        let mut slices = TimeBuckets { earliest, shift, used: usize::MAX };
        slices.used = slices.slice(latest).map_or(1, |last| last + 1);
        debug_assert!(slices.used <= buckets.max(1), "{} slices for {buckets}", slices.used);
        slices
    }

    fn slice(&self, time: i64) -> Option<usize> {
        if time < self.earliest {
            return None;
        }
        let offset = time.abs_diff(self.earliest).checked_shr(self.shift).unwrap_or(0);
        usize::try_from(offset).ok().filter(|&slice| slice < self.used)
    }

    /// The slice of an order's time, if inside the range.
    fn of(&self, order: &Order) -> Option<usize> {
        self.slice(order.placed_at.0)
    }

    /// The slices of `range` and where each slice's orders start (the number of orders last),
    /// or `None` if an order is outside `range`.
    fn count(orders: &[Order], range: (i64, i64), buckets: usize) -> Option<(Self, Vec<usize>)> {
        let slices = TimeBuckets::new(range, buckets);
        let mut starts = vec![0usize; slices.used + 1];
        for order in orders {
            starts[slices.of(order)? + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        Some((slices, starts))
    }
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
            wrong_range in prop::option::of((placed_at(), placed_at())),
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
            // The orders' range, or (rarely) a wrong one, which must not change the result.
            let range = wrong_range.unwrap_or_else(|| {
                orders.iter().fold(EMPTY_RANGE, |range, o| widen(range, o.placed_at.0))
            });
            sort_by_time_buckets(&mut orders, &mut spare, buckets, range);
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

    /// The queue's time range is that of the orders queued, through pushes, appends, drains
    /// and settlements.
    #[test]
    fn the_time_range_follows_the_queued_orders() {
        let mut queue = OrderQueue::new();
        assert_eq!(queue.placed, EMPTY_RANGE);
        queue.push(order(1, 5, 0));
        queue.push(order(2, -3, 0));
        assert_eq!(queue.placed, (-3, 5));
        let mut other = OrderQueue::new();
        other.push(order(3, 9, 0));
        queue.append(&mut other);
        assert_eq!((queue.placed, other.placed), ((-3, 9), EMPTY_RANGE));
        assert_eq!(queue.clone().placed, (-3, 9));
        assert_eq!(queue.drain_sorted().len(), 3);
        assert_eq!(queue.placed, EMPTY_RANGE);
        queue.push(order(4, 7, 0));
        assert_eq!(queue.placed, (7, 7));
        queue.sort_in_place();
        queue.clear_kept();
        assert_eq!(queue.placed, EMPTY_RANGE);
    }

    /// After a burst, an interval of far fewer orders gives the burst's memory back, whether
    /// it is sorted by buckets (which swaps the buffers) or by one comparison sort; an interval
    /// of a quarter of the room or more keeps it.
    #[test]
    fn a_smaller_interval_after_a_burst_gives_the_memory_back() {
        let burst = KEPT_ORDERS_MIN * 2;
        for (after, given_back) in
            [(1, true), (BUCKET_SORT_ORDERS_MIN + 1, true), (burst / 2, false)]
        {
            let mut queue = OrderQueue::new();
            for (count, at) in [(burst, 1_000), (after, 777)] {
                for id in 0..count as u64 {
                    queue.push(order(id, (id % at) as i64, 0));
                }
                queue.sort_in_place();
                queue.clear_kept();
            }
            let room = queue.orders.capacity().max(queue.spare.capacity());
            if given_back {
                let kept = (after * 4).max(KEPT_ORDERS_MIN);
                assert!(room <= kept, "{after} after {burst}: room for {room}");
            } else {
                assert!(room >= burst, "{after} after {burst}: room for {room}");
            }
        }
    }
}
