//! Random but valid histories for tests, the crash helper and the benchmark: an engine driven
//! by a seeded generator, listing assets, opening accounts, rehashing passwords and settling
//! intervals of random orders against random ticks. Included with `#[path]` by the test files, the
//! `pt-journal-crash-child` binary and the benchmark, so that the library carries none of it.

use engine::workload::XorShift;
use engine::{
    AccountId, Cash, ClientOrderId, Email, Engine, Event, IntervalId, OpenAccount, Order, OrderId,
    OrderKind, OrderQueue, PasswordHash, Price, Qty, SCALE, Side, State, Symbol, Tick, TickSet,
    Timestamp, Username, WorkerId,
};

/// The shape of the histories a generator makes.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Symbols listed at most.
    pub symbols_max: u64,
    /// Accounts opened at most.
    pub accounts_max: u64,
    /// Orders per interval at most.
    pub orders_per_interval_max: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Self { symbols_max: 6, accounts_max: 12, orders_per_interval_max: 24 }
    }
}

/// A generator of valid event batches, continuing from any state.
pub struct History {
    engine: Engine,
    rng: XorShift,
    shape: Shape,
    next_order: u64,
}

fn symbol(i: u64) -> Symbol {
    Symbol::new(&format!("S{i}")).unwrap_or_else(|_| unreachable!("S<digits> is a valid symbol"))
}

impl History {
    /// A generator continuing from `state`.
    pub fn new(state: State, seed: u64, shape: Shape) -> Self {
        let next_order = state.last_interval().map(|l| l.id.0 * 1_000_000).unwrap_or(0) + 1_000_000;
        Self { engine: Engine::from_state(state), rng: XorShift::new(seed), shape, next_order }
    }

    /// The state after every batch so far.
    pub fn state(&self) -> &State {
        self.engine.state()
    }

    /// The next batch: a listing, an account, a password rehash, or a whole settled interval.
    pub fn next_batch(&mut self) -> Vec<Event> {
        let state = self.engine.state();
        let assets = state.assets().len() as u64;
        let accounts = state.accounts().len() as u64;
        let roll = self.rng.below(100);
        if assets < 2 || (assets < self.shape.symbols_max && roll < 5) {
            let at = self.now();
            return self.engine.list_asset(symbol(assets), at).map(|e| vec![e]).unwrap_or_default();
        }
        if accounts < 3 || (accounts < self.shape.accounts_max && roll < 15) {
            let name = format!("u{accounts}");
            let username = Username::new(&name).unwrap_or_else(|_| unreachable!("valid username"));
            let email = Email::new(&format!("{name}@example.com"))
                .unwrap_or_else(|_| unreachable!("valid email"));
            let request = OpenAccount {
                username,
                email,
                password_hash: PasswordHash::new("$argon2id$fake")
                    .unwrap_or_else(|_| unreachable!("valid")),
                initial_cash: Cash::from_units(10_000 + self.rng.below(100_000))
                    .unwrap_or(Cash::ZERO),
                at: self.now(),
            };
            return self.engine.open_account(request).map(|e| vec![e]).unwrap_or_default();
        }
        if roll >= 97 {
            let account = AccountId(1 + self.rng.below(accounts));
            let hash = PasswordHash::new(&format!("$argon2id$rehashed{}", self.next_order))
                .unwrap_or_else(|_| unreachable!("valid"));
            let at = self.now();
            return self
                .engine
                .rehash_password(account, hash, at)
                .map(|e| vec![e])
                .unwrap_or_default();
        }
        self.settle()
    }

    fn now(&self) -> Timestamp {
        let interval = self.engine.state().last_interval().map(|l| l.id.0).unwrap_or(0);
        Timestamp(1_700_000_000_000_000 + i64::try_from(interval).unwrap_or(0) * 60_000_000)
    }

    fn settle(&mut self) -> Vec<Event> {
        let state = self.engine.state();
        let interval = IntervalId(state.last_interval().map(|l| l.id.0).unwrap_or(0) + 1);
        let at =
            Timestamp(1_700_000_000_000_000 + i64::try_from(interval.0).unwrap_or(0) * 60_000_000);
        let assets = state.assets().len() as u64;
        let accounts = state.accounts().len() as u64;
        let mut ticks = Vec::new();
        for i in 0..assets {
            if self.rng.below(4) == 0 {
                continue;
            }
            let low = 1 + self.rng.below(500);
            let high = low + self.rng.below(500);
            let close = low + self.rng.below(high - low + 1);
            let units = |u: u64, frac: u64| Price::from_raw(u * SCALE + frac);
            let frac = self.rng.below(SCALE);
            ticks.push(Tick {
                symbol: symbol(i),
                open: units(low, 0),
                high: units(high, 0),
                low: units(low, 0),
                close: if close == high { units(high, 0) } else { units(close, frac) },
                volume: Qty::from_raw(self.rng.below(1_000_000) * SCALE),
                time: Timestamp(at.0 - 60_000_000),
            });
        }
        let ticks = TickSet::new(ticks).unwrap_or_default();
        let mut queue = OrderQueue::new();
        let orders = self.rng.below(self.shape.orders_per_interval_max + 1);
        for _ in 0..orders {
            self.next_order += 1;
            let side = if self.rng.below(3) == 0 { Side::Sell } else { Side::Buy };
            // Mostly whole units; sometimes fractions, zero, or an unknown account or symbol.
            let qty = match self.rng.below(20) {
                0 => Qty::ZERO,
                1 => Qty::from_raw(self.rng.below(5 * SCALE)),
                _ => Qty::from_units(1 + self.rng.below(40)).unwrap_or(Qty::ZERO),
            };
            queue.push(Order {
                id: OrderId(self.next_order),
                client_id: ClientOrderId(self.next_order),
                account: AccountId(1 + self.rng.below(accounts + 1)),
                symbol: symbol(self.rng.below(assets + 1)),
                side,
                qty,
                kind: OrderKind::Market,
                placed_at: Timestamp(at.0 - i64::try_from(self.rng.below(60_000_000)).unwrap_or(0)),
                worker: WorkerId(u128::from(self.rng.below(3))),
            });
        }
        self.engine.settle(interval, at, &ticks, &mut queue).unwrap_or_default()
    }
}
