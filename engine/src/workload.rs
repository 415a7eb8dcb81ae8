//! Synthetic, deterministic workloads for benchmarks and tests: accounts, symbols, ticks and
//! orders generated from a seed by a small xorshift generator. Same seed, same workload, on every
//! machine. Nothing here is used by settlement itself.

use crate::engine::{CommandError, Engine, OpenAccount};
use crate::ids::{
    AccountId, ClientOrderId, Email, IntervalId, OrderId, PasswordHash, Symbol, Timestamp,
    Username, WorkerId,
};
use crate::money::{Cash, Price, Qty, Side};
use crate::order::{Order, OrderKind, OrderQueue};
use crate::tick::{Tick, TickSet};

/// A tiny deterministic generator (xorshift64*); not for anything secret.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a seed (zero is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..bound` (bound > 0), by multiply-shift.
    pub fn below(&mut self, bound: u64) -> u64 {
        let wide = u128::from(self.next_u64()) * u128::from(bound.max(1));
        u64::try_from(wide >> 64).unwrap_or(0)
    }
}

/// The shape of a synthetic workload.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadShape {
    /// Accounts to open.
    pub accounts: u64,
    /// Symbols to list, each with a tick.
    pub symbols: u64,
    /// Orders to queue.
    pub orders: u64,
    /// Generator seed.
    pub seed: u64,
}

/// An engine with accounts and listed symbols, the tick set and a full queue, ready to settle.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The engine, accounts opened and symbols listed.
    pub engine: Engine,
    /// One tick per symbol.
    pub ticks: TickSet,
    /// The orders, not yet sorted.
    pub queue: OrderQueue,
}

impl Workload {
    /// Moves this workload's orders into `kept`, which becomes the workload's queue (`kept` is
    /// left with the workload's empty one). A benchmark that takes the queue back after each
    /// round (`std::mem::take(&mut workload.queue)`) settles every round in the memory of one
    /// queue, as the master settles every interval in the memory of its one queue.
    pub fn keep_queue(&mut self, kept: &mut OrderQueue) {
        kept.append(&mut self.queue);
        std::mem::swap(&mut self.queue, kept);
    }
}

/// The symbol of index `i`: `S0`, `S1`, ...
pub fn symbol_of(i: u64) -> Symbol {
    // "S" plus at most 20 digits always fits the 16-character limit for i < 10^15.
    Symbol::new(&format!("S{i}")).unwrap_or_else(|_| symbol_fallback())
}

fn symbol_fallback() -> Symbol {
    match Symbol::new("S") {
        Ok(s) => s,
        Err(_) => unreachable!("\"S\" is a valid symbol"),
    }
}

/// Builds a workload: every account starts with 1,000,000 cash and, so that sells can fill,
/// the first pass of orders buys; orders are 75% buys and 25% sells of 1 to 100 whole units at
/// prices between 1 and 1000.
pub fn build(shape: WorkloadShape) -> Result<Workload, CommandError> {
    let mut rng = XorShift::new(shape.seed);
    let mut engine = Engine::new();
    let at = Timestamp(0);
    let initial_cash = Cash::from_units(1_000_000).unwrap_or(Cash::ZERO);
    let password_hash = PasswordHash::new("!").map_err(|_| CommandError::UsernameTaken(user(0)))?;
    for i in 0..shape.symbols {
        engine.list_asset(symbol_of(i), at)?;
    }
    for i in 0..shape.accounts {
        let username = user(i);
        let email = Email::new(&format!("{username}@bench.invalid"))
            .map_err(|_| CommandError::UsernameTaken(username.clone()))?;
        engine.open_account(OpenAccount {
            username,
            email,
            password_hash: password_hash.clone(),
            initial_cash,
            at,
        })?;
    }
    let ticks: Vec<Tick> = (0..shape.symbols)
        .map(|i| {
            let close = Price::from_raw((1 + rng.below(1000)) * crate::money::SCALE);
            Tick {
                symbol: symbol_of(i),
                open: close,
                high: close,
                low: close,
                close,
                volume: Qty::ZERO,
                time: at,
            }
        })
        .collect();
    let ticks = TickSet::new(ticks).unwrap_or_default();
    let mut queue = OrderQueue::new();
    for i in 0..shape.orders {
        let side = if rng.below(4) == 0 { Side::Sell } else { Side::Buy };
        queue.push(Order {
            id: OrderId(i + 1),
            client_id: ClientOrderId(i + 1),
            account: AccountId(1 + rng.below(shape.accounts.max(1))),
            symbol: symbol_of(rng.below(shape.symbols.max(1))),
            side,
            qty: Qty::from_units(1 + rng.below(100)).unwrap_or(Qty::ZERO),
            kind: OrderKind::Market,
            placed_at: Timestamp(i64::try_from(rng.below(1_000_000)).unwrap_or(0)),
            worker: WorkerId(u128::from(rng.below(4))),
        });
    }
    Ok(Workload { engine, ticks, queue })
}

fn user(i: u64) -> Username {
    match Username::new(&format!("u{i}")) {
        Ok(u) => u,
        Err(_) => unreachable!("u followed by at most 20 digits is a valid username"),
    }
}

/// Settles a built workload as interval 1; returns the number of events.
pub fn settle(workload: &mut Workload) -> Result<usize, CommandError> {
    let events = workload.engine.settle(
        IntervalId(1),
        Timestamp(1),
        &workload.ticks,
        &mut workload.queue,
    )?;
    Ok(events.len())
}

/// Settles a built workload as interval 1 into `events` (replacing its contents and reusing its
/// memory, as a master settling every interval does with [`Engine::settle_into`]); returns the
/// number of events.
pub fn settle_into(
    workload: &mut Workload,
    events: &mut Vec<crate::event::Event>,
) -> Result<usize, CommandError> {
    workload.engine.settle_into(
        IntervalId(1),
        Timestamp(1),
        &workload.ticks,
        &mut workload.queue,
        events,
    )?;
    Ok(events.len())
}

/// Queues `count` more orders drawn like [`build`]'s (75% buys, 1 to 100 whole units, any
/// account and symbol of `shape`), with order ids from `first_id`, for a later interval.
pub fn queue_more(
    workload: &mut Workload,
    shape: WorkloadShape,
    rng: &mut XorShift,
    first_id: u64,
    count: u64,
) {
    for i in 0..count {
        let id = first_id.saturating_add(i);
        let side = if rng.below(4) == 0 { Side::Sell } else { Side::Buy };
        workload.queue.push(Order {
            id: OrderId(id),
            client_id: ClientOrderId(id),
            account: AccountId(1 + rng.below(shape.accounts.max(1))),
            symbol: symbol_of(rng.below(shape.symbols.max(1))),
            side,
            qty: Qty::from_units(1 + rng.below(100)).unwrap_or(Qty::ZERO),
            kind: OrderKind::Market,
            placed_at: Timestamp(i64::try_from(rng.below(1_000_000)).unwrap_or(0)),
            worker: WorkerId(u128::from(rng.below(4))),
        });
    }
}

/// Settles the queued orders as interval `interval` at `at` (intervals must increase); returns
/// the events: `IntervalSettled`, then one outcome per order.
pub fn settle_as(
    workload: &mut Workload,
    interval: IntervalId,
    at: Timestamp,
) -> Result<Vec<crate::event::Event>, CommandError> {
    workload.engine.settle(interval, at, &workload.ticks, &mut workload.queue)
}

/// The baseline the settlement benchmarks compare against: per order, only a look-up of its
/// account and its symbol's price in hash maps, and a sum. Build it from a workload, then time
/// [`LookupBaseline::run`] (the engine reads no clock; callers do).
#[derive(Debug, Clone)]
pub struct LookupBaseline {
    accounts: std::collections::HashMap<u64, u64>,
    prices: std::collections::HashMap<Symbol, u64>,
    orders: Vec<Order>,
}

impl LookupBaseline {
    /// The maps and the sorted orders of `workload`.
    pub fn new(workload: Workload) -> Self {
        let accounts =
            workload.engine.state().accounts().iter().map(|a| (a.id.0, a.cash.raw())).collect();
        let prices = workload.ticks.ticks().iter().map(|t| (t.symbol, t.close.raw())).collect();
        let mut queue = workload.queue;
        Self { accounts, prices, orders: queue.drain_sorted() }
    }

    /// One pass over the orders; returns the sum so the work cannot be optimised away.
    pub fn run(&self) -> u128 {
        let mut sum = 0u128;
        for order in &self.orders {
            let cash = self.accounts.get(&order.account.0).copied().unwrap_or(0);
            let price = self.prices.get(&order.symbol).copied().unwrap_or(0);
            sum = sum
                .wrapping_add(u128::from(price) * u128::from(order.qty.raw()))
                .wrapping_add(u128::from(cash & 1));
        }
        sum
    }
}
