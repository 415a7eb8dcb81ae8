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

/// Orders waiting for the next settlement, in the order they were pushed. Settlement takes each
/// account's orders in [`Order::queue_key`] order, whatever order they were pushed in.
///
/// The queue also keeps the memory settlement works in (the per-order tables of
/// [`Engine::settle_into`](crate::Engine::settle_into)), so a caller that keeps one queue across
/// intervals, as the master does, settles each interval in memory it already has instead of new
/// pages. Cloning a queue clones its orders (and their counts) only.
#[derive(Default)]
pub struct OrderQueue {
    orders: Vec<Order>,
    /// How many of the queued orders each account number below `COUNTED_ACCOUNTS_MAX` has (the
    /// vector as long as the highest such number seen, plus one), kept as orders are pushed,
    /// while each is in the cache, so that settlement need not read the whole queue once more
    /// to group it by account.
    per_account: Vec<u32>,
    /// A count of `per_account` would have passed `u32::MAX`: the counts are not used.
    counts_lost: bool,
    /// Settlement's per-order tables.
    scratch: SettleScratch,
}

impl Clone for OrderQueue {
    fn clone(&self) -> Self {
        Self {
            orders: self.orders.clone(),
            per_account: self.per_account.clone(),
            counts_lost: self.counts_lost,
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for OrderQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderQueue").field("orders", &self.orders).finish_non_exhaustive()
    }
}

/// A queue being settled: its orders as pushed, the counts it kept of each account number's
/// orders (`per_account[n]`, for numbers below `COUNTED_ACCOUNTS_MAX`; numbers past its length
/// have none), and settlement's tables.
pub(crate) struct Settling<'a> {
    pub(crate) orders: &'a [Order],
    pub(crate) per_account: Option<&'a [u32]>,
    pub(crate) scratch: &'a mut SettleScratch,
}

/// Account numbers from this one up are not counted as orders are pushed (settlement finds how
/// many orders they have by difference); a state with this many accounts or more is grouped
/// from the orders themselves. The counts take 4 bytes per account number, at most 4 MiB.
const COUNTED_ACCOUNTS_MAX: u64 = 1 << 20;

/// Orders' worth of settlement memory a queue keeps whatever its intervals' sizes (about
/// 10 MiB: the queue and settlement's tables take 164 bytes an order).
const KEPT_ORDERS_MIN: usize = 1 << 16;

impl OrderQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an order.
    pub fn push(&mut self, order: Order) {
        if let Ok(number) = usize::try_from(order.account.0)
            && order.account.0 < COUNTED_ACCOUNTS_MAX
        {
            self.count(number, 1);
        }
        self.orders.push(order);
    }

    /// Adds `orders` to account number `number`'s count, lengthening the counts to hold it.
    fn count(&mut self, number: usize, orders: u32) {
        if self.per_account.len() <= number {
            self.per_account.resize(number + 1, 0);
        }
        match self.per_account[number].checked_add(orders) {
            Some(count) => self.per_account[number] = count,
            // Four billion orders of one account: no longer counted (settlement, which refuses
            // far fewer, would not take the queue anyway).
            None => self.counts_lost = true,
        }
    }

    /// Moves every order of `other` to the end of this queue, leaving `other` empty (with its
    /// memory).
    pub fn append(&mut self, other: &mut OrderQueue) {
        for (number, &orders) in other.per_account.iter().enumerate() {
            if orders > 0 {
                self.count(number, orders);
            }
        }
        self.counts_lost |= other.counts_lost;
        other.forget_counts();
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

    /// Empties the queue, returning its orders sorted by [`Order::queue_key`]. Order ids are
    /// unique, so the key is a total order and an unstable sort gives the same result on every
    /// machine.
    pub fn drain_sorted(&mut self) -> Vec<Order> {
        self.orders.sort_unstable_by_key(Order::queue_key);
        self.forget_counts();
        std::mem::take(&mut self.orders)
    }

    /// The waiting orders, as pushed, with the counts kept of each account number's orders
    /// (`None` when they are lost, or do not cover the `accounts` of the state settling: a
    /// state of `COUNTED_ACCOUNTS_MAX` accounts or more) and settlement's tables. The orders
    /// stay queued until [`OrderQueue::clear_kept`]: settlement uses this and then empties the
    /// queue, so the queue keeps its memory for the next interval's orders.
    pub(crate) fn for_settlement(&mut self, accounts: usize) -> Settling<'_> {
        let covered = u64::try_from(accounts).is_ok_and(|n| n < COUNTED_ACCOUNTS_MAX);
        Settling {
            orders: &self.orders,
            per_account: (covered && !self.counts_lost).then_some(&self.per_account[..]),
            scratch: &mut self.scratch,
        }
    }

    /// Sets the counts of the queued orders back to zero before the orders leave the queue:
    /// the counts of their accounts when they are few next to the counts, all of them
    /// otherwise, so that this costs in proportion to the orders. The counts keep their length
    /// (at most `COUNTED_ACCOUNTS_MAX` entries), so the next orders need not zero them again.
    fn forget_counts(&mut self) {
        if self.per_account.len() / 4 > self.orders.len() {
            for order in &self.orders {
                let number = usize::try_from(order.account.0).ok();
                if let Some(count) = number.and_then(|n| self.per_account.get_mut(n)) {
                    *count = 0;
                }
            }
        } else {
            self.per_account.fill(0);
        }
        self.counts_lost = false;
    }

    /// Orders' worth of memory the queue holds: its own buffer or settlement's tables,
    /// whichever has room for more.
    fn room(&self) -> usize {
        self.orders.capacity().max(self.scratch.room())
    }

    /// Empties the queue after a settlement, keeping its memory for the next one, unless that
    /// memory is sized for far more orders than were settled: when the buffer or the tables
    /// have room for more than four times the orders just settled (and more than
    /// `KEPT_ORDERS_MIN`), they are given back, so after a burst a master keeps no more than
    /// its recent intervals need.
    pub(crate) fn clear_kept(&mut self) {
        let settled = self.orders.len();
        self.forget_counts();
        self.orders.clear();
        let kept = settled.saturating_mul(4).max(KEPT_ORDERS_MIN);
        if self.room() > kept {
            self.orders.shrink_to(kept);
            self.scratch = SettleScratch::default();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::ids::IntervalId;
    use crate::workload::{self, WorkloadShape, XorShift};

    /// After a burst, an interval of far fewer orders gives the burst's memory back (the queue's
    /// buffer and settlement's tables); an interval of a quarter of the room or more keeps it.
    #[test]
    fn a_smaller_interval_after_a_burst_gives_the_memory_back() {
        let burst = KEPT_ORDERS_MIN * 2;
        for (after, given_back) in [(1, true), (KEPT_ORDERS_MIN / 4, true), (burst / 2, false)] {
            let shape = WorkloadShape { accounts: 50, symbols: 3, orders: burst as u64, seed: 5 };
            let mut load = workload::build(shape).unwrap();
            workload::settle_as(&mut load, IntervalId(1), Timestamp(1)).unwrap();
            assert!(load.queue.room() >= burst, "settling {burst} orders takes room for them");
            let mut rng = XorShift::new(3);
            workload::queue_more(&mut load, shape, &mut rng, burst as u64 + 1, after as u64);
            workload::settle_as(&mut load, IntervalId(2), Timestamp(2)).unwrap();
            assert!(load.queue.is_empty());
            let room = load.queue.room();
            if given_back {
                let kept = (after * 4).max(KEPT_ORDERS_MIN);
                assert!(room <= kept, "{after} after {burst}: room for {room}");
            } else {
                assert!(room >= burst, "{after} after {burst}: room for {room}");
            }
        }
    }

    fn order_of(id: u64, account: u64) -> Order {
        Order {
            id: OrderId(id),
            client_id: ClientOrderId(id),
            account: AccountId(account),
            symbol: workload::symbol_of(0),
            side: Side::Buy,
            qty: Qty::from_raw(1),
            kind: OrderKind::Market,
            placed_at: Timestamp(0),
            worker: WorkerId(0),
        }
    }

    /// Checks the counts a queue keeps against its orders: each counted number's entry is its
    /// orders' count (every other entry zero), and settlement is given them unless they are
    /// lost or the state has too many accounts for them.
    fn check_counts(queue: &mut OrderQueue) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut expected = vec![0u32; queue.per_account.len()];
        for order in &queue.orders {
            if order.account.0 < COUNTED_ACCOUNTS_MAX {
                let number = usize::try_from(order.account.0).unwrap();
                proptest::prop_assert!(number < expected.len(), "{number} is not counted");
                expected[number] += 1;
            }
        }
        proptest::prop_assert_eq!(&queue.per_account, &expected);
        for accounts in [0, 5, 20] {
            proptest::prop_assert!(queue.for_settlement(accounts).per_account.is_some());
        }
        let past = usize::try_from(COUNTED_ACCOUNTS_MAX).unwrap();
        proptest::prop_assert!(queue.for_settlement(past).per_account.is_none());
        Ok(())
    }

    proptest::proptest! {
        /// The counts kept as orders are pushed, appended, drained and settled are the orders'
        /// own, account numbers 0 and past the counted ones included, and settle back to zero
        /// as the orders leave.
        #[test]
        fn the_per_account_counts_are_the_orders(
            steps in proptest::collection::vec(
                (0..6u8, proptest::prop_oneof![
                    0..12u64,
                    proptest::sample::select(vec![COUNTED_ACCOUNTS_MAX, u64::MAX]),
                ]),
                0..80,
            ),
        ) {
            let mut queue = OrderQueue::new();
            let mut other = OrderQueue::new();
            for (id, (step, account)) in steps.into_iter().enumerate() {
                let order = order_of(id as u64, account);
                match step {
                    0 | 1 => queue.push(order),
                    2 => other.push(order),
                    3 => queue.append(&mut other),
                    4 => {
                        let _ = queue.drain_sorted();
                    }
                    _ => {
                        let _ = queue.clone();
                        queue.clear_kept();
                    }
                }
                check_counts(&mut queue)?;
                check_counts(&mut other)?;
                check_counts(&mut queue.clone())?;
            }
        }
    }

    /// The highest counted account number is counted, and its count goes back to zero with a
    /// few orders next to the long counts (each order's own entry zeroed) as with many.
    #[test]
    fn the_last_counted_number_is_counted_and_forgotten() {
        let last = COUNTED_ACCOUNTS_MAX - 1;
        let mut queue = OrderQueue::new();
        queue.push(order_of(1, last));
        queue.push(order_of(2, 3));
        check_counts(&mut queue).unwrap();
        queue.clear_kept();
        check_counts(&mut queue).unwrap();
        assert!(queue.per_account.iter().all(|&count| count == 0));
        queue.push(order_of(3, last));
        assert_eq!(queue.per_account[usize::try_from(last).unwrap()], 1);
    }

    /// `drain_sorted` empties the queue in key order, whatever the push order.
    #[test]
    fn drain_sorted_returns_the_orders_by_key() {
        let mut queue = OrderQueue::new();
        let mut rng = XorShift::new(11);
        for id in 0..500u64 {
            queue.push(Order {
                id: OrderId(id),
                client_id: ClientOrderId(id),
                account: AccountId(1),
                symbol: workload::symbol_of(0),
                side: Side::Buy,
                qty: Qty::from_raw(1),
                kind: OrderKind::Market,
                placed_at: Timestamp(i64::try_from(rng.below(50)).unwrap()),
                worker: WorkerId(u128::from(rng.below(3))),
            });
        }
        let mut expected = queue.clone().orders;
        expected.sort_by_key(Order::queue_key);
        assert_eq!(queue.drain_sorted(), expected);
        assert!(queue.is_empty());
    }
}
