//! The retry memory: what the core knows about orders by `(account, client order id)`, so that
//! a retried order is never filled twice. A queued order has callers waiting for its outcome; a
//! committed one keeps its answer, the newest `capacity` of them, for any later retry. Beyond
//! them, [`FillIndex`] knows every fill ever settled, so a retry however late (after a million
//! other orders, or a restart) is answered with its fill, never filled again; a retry of an
//! order rejected before the newest `capacity` outcomes is decided again (it was never
//! executed, so it is executed at most once).
//!
//! It is laid out for the core thread's hot path. The million remembered outcomes live in a ring
//! in commit order, and the table that finds them maps a key to a position only (24 bytes an
//! entry), so that the random accesses every order makes land in a table about a fifth of the
//! size it would be holding the answers themselves (a profile of the master under load showed
//! those accesses as its largest cost: cache and TLB misses). Queued orders, at most one
//! interval's worth, have a small table of their own.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use engine::{AccountId, Cash, ClientOrderId, Event, Order, Qty, Side, State, Symbol};
use net::{FillReport, Response};

use crate::core::Reply;

/// How the retry memory knows an order.
pub type OrderKey = (AccountId, ClientOrderId);

/// What an order asks for. A client order id names one order for good: a request under a known
/// id is a retry only if it asks for the same thing; otherwise it is refused, not answered with
/// the first order's outcome (which would tell a client its 100 shares were 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderTerms {
    /// Buy or sell.
    pub side: Side,
    /// The asset.
    pub symbol: Symbol,
    /// How much.
    pub qty: Qty,
}

impl OrderTerms {
    /// The terms of a queued or settled order.
    pub fn of(order: &Order) -> Self {
        Self { side: order.side, symbol: order.symbol, qty: order.qty }
    }
}

impl fmt::Display for OrderTerms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.side, self.qty, self.symbol)
    }
}

/// What the memory holds for a key.
#[derive(Debug)]
pub enum Known<'a> {
    /// Queued: what it asks for, and the callers waiting for its outcome (a retry joins them).
    Pending {
        /// The queued order's terms.
        terms: OrderTerms,
        /// Its callers.
        waiters: &'a mut Vec<Reply>,
    },
    /// Committed: what it asked for, and its answer.
    Done {
        /// The order's terms.
        terms: OrderTerms,
        /// Its answer.
        response: &'a Response,
    },
}

/// A queued order's terms and callers.
#[derive(Debug)]
struct Queued {
    terms: OrderTerms,
    waiters: Vec<Reply>,
}

/// Queued orders' callers and the newest `capacity` committed outcomes.
#[derive(Debug)]
pub struct RetryMemory {
    pending: HashMap<OrderKey, Queued>,
    /// Key to its outcome's position (`first` is the position of `outcomes.front()`).
    done: HashMap<OrderKey, u64>,
    outcomes: VecDeque<(OrderKey, OrderTerms, Response)>,
    first: u64,
    capacity: usize,
}

impl RetryMemory {
    /// An empty memory keeping the newest `capacity` outcomes, its tables sized once for that
    /// and for `pending_max` queued orders: growing a table of a million entries would move them
    /// all on the core thread and stall an interval.
    pub fn new(capacity: usize, pending_max: usize) -> Self {
        Self {
            pending: HashMap::with_capacity(pending_max),
            done: HashMap::with_capacity(capacity.saturating_add(1)),
            outcomes: VecDeque::with_capacity(capacity.saturating_add(1)),
            first: 0,
            capacity,
        }
    }

    /// What is known about `key`, if anything.
    pub fn get(&mut self, key: &OrderKey) -> Option<Known<'_>> {
        if let Some(queued) = self.pending.get_mut(key) {
            return Some(Known::Pending { terms: queued.terms, waiters: &mut queued.waiters });
        }
        let index = ring_index(&self.done, self.first, key)?;
        self.outcomes.get(index).map(|(_, terms, response)| Known::Done { terms: *terms, response })
    }

    /// Records a newly queued order, what it asks for and its caller.
    pub fn queue(&mut self, key: OrderKey, terms: OrderTerms, caller: Reply) {
        self.pending.insert(key, Queued { terms, waiters: vec![caller] });
    }

    /// Takes the callers waiting for `key` (the order settled or failed).
    pub fn take_waiters(&mut self, key: &OrderKey) -> Vec<Reply> {
        self.pending.remove(key).map(|queued| queued.waiters).unwrap_or_default()
    }

    /// Remembers a committed outcome. A key already remembered keeps its place and gets the
    /// new answer; past `capacity`, the oldest outcome is forgotten.
    pub fn remember(&mut self, key: OrderKey, terms: OrderTerms, response: Response) {
        if let Some(index) = ring_index(&self.done, self.first, &key)
            && let Some((_, slot_terms, slot)) = self.outcomes.get_mut(index)
        {
            (*slot_terms, *slot) = (terms, response);
            return;
        }
        let position = self.first + self.outcomes.len() as u64;
        self.outcomes.push_back((key, terms, response));
        self.done.insert(key, position);
        while self.outcomes.len() > self.capacity {
            let Some((old, _, _)) = self.outcomes.pop_front() else { break };
            // Each key is in the ring once (a repeat keeps its place), so this is its entry.
            debug_assert_eq!(self.done.get(&old), Some(&self.first));
            self.done.remove(&old);
            self.first += 1;
        }
        debug_assert_eq!(self.done.len(), self.outcomes.len());
    }

    /// How many committed outcomes are remembered.
    pub fn remembered(&self) -> usize {
        self.outcomes.len()
    }

    /// How many orders have callers waiting.
    pub fn queued(&self) -> usize {
        self.pending.len()
    }
}

/// Every fill in the state, by `(account, client order id)`: where in its account's history the
/// first fill with that key is, and the account's cash right after it (the history does not keep
/// it, and summing the fills before it on each late retry would take time proportional to the
/// history, on the core thread). Built from the state's histories at start, extended with each
/// committed interval's fills; about 50 bytes a fill, beside the 128 of its history entry.
///
/// One small table per account (accounts are numbered from 1, so a vector finds it): a
/// trader's table stays warm in the cache while it trades, and a table that grows rehashes only
/// that account's fills, never every fill at once on the core thread.
#[derive(Debug, Default)]
pub struct FillIndex {
    accounts: Vec<HashMap<ClientOrderId, IndexedFill>>,
    fills: usize,
}

/// Where a fill is, and the cash after it.
#[derive(Debug, Clone, Copy)]
struct IndexedFill {
    position: usize,
    cash_after: Cash,
}

impl FillIndex {
    /// The index of every fill in `state`. The cash after each fill is the account's initial
    /// cash plus the signed amounts of its fills up to it (cash moves only by fills: a state
    /// invariant, `State::check_invariants`).
    pub fn of_state(state: &State) -> Self {
        let mut index = FillIndex::default();
        for account in state.accounts() {
            let mut cash = Some(account.initial_cash);
            for (position, fill) in account.history.iter().enumerate() {
                cash = cash.and_then(|cash| match fill.order.side {
                    Side::Buy => cash.checked_sub(fill.amount),
                    Side::Sell => cash.checked_add(fill.amount),
                });
                let Some(cash_after) = cash else { break };
                let key = (account.id, fill.order.client_id);
                index.insert(key, IndexedFill { position, cash_after });
            }
        }
        index
    }

    /// Indexes the fill of `key`, unless `key` already has one (the first fill of a key is its
    /// answer).
    fn insert(&mut self, (account, client_id): OrderKey, fill: IndexedFill) {
        let Some(slot) = account.0.checked_sub(1).and_then(|n| usize::try_from(n).ok()) else {
            return;
        };
        if self.accounts.len() <= slot {
            self.accounts.resize_with(slot + 1, HashMap::new);
        }
        if let Some(table) = self.accounts.get_mut(slot)
            && let std::collections::hash_map::Entry::Vacant(entry) = table.entry(client_id)
        {
            entry.insert(fill);
            self.fills += 1;
        }
    }

    fn get(&self, (account, client_id): &OrderKey) -> Option<IndexedFill> {
        let slot = usize::try_from(account.0.checked_sub(1)?).ok()?;
        self.accounts.get(slot)?.get(client_id).copied()
    }

    /// Adds the fills of a committed interval's `events`, now applied to `state` (each is at the
    /// end of its account's history, in event order).
    pub fn add_committed(&mut self, state: &State, events: &[Event]) {
        let mut fills_per_account: HashMap<AccountId, usize> = HashMap::new();
        for event in events {
            if let Event::OrderFilled(fill) = event {
                *fills_per_account.entry(fill.order.account).or_default() += 1;
            }
        }
        // The next position of each account's fills: its history before this interval.
        let mut next: HashMap<AccountId, usize> = fills_per_account
            .into_iter()
            .filter_map(|(id, count)| {
                Some((id, state.account(id)?.history.len().checked_sub(count)?))
            })
            .collect();
        for event in events {
            if let Event::OrderFilled(fill) = event
                && let Some(position) = next.get_mut(&fill.order.account)
            {
                let indexed = IndexedFill { position: *position, cash_after: fill.cash_after };
                *position += 1;
                self.insert((fill.order.account, fill.order.client_id), indexed);
            }
        }
    }

    /// What the first fill of `key` asked for and the answer it was given, rebuilt from its
    /// account's history, if `key` ever filled.
    pub fn answer(&self, state: &State, key: &OrderKey) -> Option<(OrderTerms, Response)> {
        let indexed = self.get(key)?;
        let fill = state.account(key.0)?.history.get(indexed.position)?;
        let response = Response::filled(FillReport::from_transaction(fill, indexed.cash_after));
        Some((OrderTerms::of(&fill.order), response))
    }

    /// How many fills are indexed.
    pub fn len(&self) -> usize {
        self.fills
    }

    /// Whether no fill is indexed.
    pub fn is_empty(&self) -> bool {
        self.fills == 0
    }
}

/// Where `key`'s outcome is in the ring (`first` is the position of its front), if it is
/// remembered. A free function over the two fields, so that it can be called while the
/// pending table is borrowed.
fn ring_index(done: &HashMap<OrderKey, u64>, first: u64, key: &OrderKey) -> Option<usize> {
    let position = *done.get(key)?;
    usize::try_from(position.checked_sub(first)?).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use net::{Failure, Reason};
    use tokio::sync::oneshot;

    fn key(n: u64) -> OrderKey {
        (AccountId(n % 7), ClientOrderId(n))
    }

    fn terms() -> OrderTerms {
        OrderTerms { side: Side::Buy, symbol: Symbol::new("AAPL").unwrap(), qty: Qty::ZERO }
    }

    fn answer(n: u64) -> Response {
        Response::PurchaseFail(Failure::new(Reason::Busy, format!("answer {n}")))
    }

    fn done(memory: &mut RetryMemory, n: u64) -> Option<Response> {
        match memory.get(&key(n)) {
            Some(Known::Done { response, .. }) => Some(response.clone()),
            _ => None,
        }
    }

    #[test]
    fn keeps_exactly_the_newest_outcomes() {
        let mut memory = RetryMemory::new(3, 4);
        for n in 1..=10 {
            memory.remember(key(n), terms(), answer(n));
            assert_eq!(memory.remembered(), n.min(3) as usize);
        }
        for n in 1..=7 {
            assert_eq!(done(&mut memory, n), None, "{n} was forgotten");
        }
        for n in 8..=10 {
            assert_eq!(done(&mut memory, n), Some(answer(n)));
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_place_and_takes_the_new_answer() {
        let mut memory = RetryMemory::new(3, 4);
        for n in 1..=3 {
            memory.remember(key(n), terms(), answer(n));
        }
        memory.remember(key(1), terms(), answer(100));
        assert_eq!(done(&mut memory, 1), Some(answer(100)));
        memory.remember(key(4), terms(), answer(4));
        assert_eq!(done(&mut memory, 1), None, "key 1 kept its (oldest) place");
        assert_eq!(done(&mut memory, 2), Some(answer(2)));
        assert_eq!(memory.remembered(), 3);
    }

    #[test]
    fn queued_orders_gather_their_callers_until_taken() {
        let mut memory = RetryMemory::new(2, 4);
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        memory.queue(key(5), terms(), tx1.into());
        match memory.get(&key(5)) {
            Some(Known::Pending { waiters, .. }) => waiters.push(tx2.into()),
            other => panic!("{other:?}"),
        }
        assert_eq!(memory.queued(), 1);
        for waiter in memory.take_waiters(&key(5)) {
            waiter.send(answer(5));
        }
        assert_eq!((rx1.try_recv().unwrap(), rx2.try_recv().unwrap()), (answer(5), answer(5)));
        assert!(memory.get(&key(5)).is_none(), "not remembered until committed");
        assert!(memory.take_waiters(&key(5)).is_empty());
        memory.remember(key(5), terms(), answer(5));
        assert_eq!(done(&mut memory, 5), Some(answer(5)));
    }

    /// The index of an interval's fills (several per account, buys and sells) answers each
    /// exactly as the fill was answered, and the index built from the state afterwards is the
    /// same as the one extended interval by interval.
    #[test]
    fn the_fill_index_answers_as_the_fills_were_answered() {
        use engine::workload::{self, WorkloadShape};
        let shape = WorkloadShape { accounts: 20, symbols: 5, orders: 400, seed: 9 };
        let mut load = workload::build(shape).unwrap();
        let mut index = FillIndex::of_state(load.engine.state());
        let mut answered = Vec::new();
        let mut rng = workload::XorShift::new(3);
        for interval in 1..=3u64 {
            if interval > 1 {
                workload::queue_more(&mut load, shape, &mut rng, interval * 1_000, 400);
            }
            let at = engine::Timestamp(i64::try_from(interval).unwrap() * 1_000);
            let events = workload::settle_as(&mut load, engine::IntervalId(interval), at).unwrap();
            index.add_committed(load.engine.state(), &events);
            for event in &events {
                if let Event::OrderFilled(fill) = event {
                    let response = Response::filled(FillReport::from_fill(fill, at));
                    let first = (OrderTerms::of(&fill.order), response);
                    answered.push(((fill.order.account, fill.order.client_id), first));
                }
            }
        }
        assert!(answered.len() > 600, "most orders fill: {}", answered.len());
        let rebuilt = FillIndex::of_state(load.engine.state());
        assert_eq!(rebuilt.len(), answered.len());
        for (key, response) in &answered {
            assert_eq!(index.answer(load.engine.state(), key).as_ref(), Some(response));
            assert_eq!(rebuilt.answer(load.engine.state(), key).as_ref(), Some(response));
        }
        let unknown = (AccountId(1), ClientOrderId(u64::MAX));
        assert_eq!(index.answer(load.engine.state(), &unknown), None);
    }

    #[test]
    fn a_capacity_of_zero_remembers_nothing() {
        let mut memory = RetryMemory::new(0, 1);
        memory.remember(key(1), terms(), answer(1));
        assert_eq!(memory.remembered(), 0);
        assert_eq!(done(&mut memory, 1), None);
    }
}
