//! The engine state: accounts, holdings, history and the latest prices. It is the fold of the
//! events, and [`State::apply`] is the only code that changes it, except settlement, which
//! applies the outcomes it decides account by account with the same effect (property-tested:
//! folding the returned events gives the same state).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::engine::fill_terms;
use crate::event::{AccountOpened, Event, Fill, IntervalSettled, RejectReason, Rejection};
use crate::ids::{AccountId, Email, IntervalId, PasswordHash, Symbol, Timestamp, Username};
use crate::money::{Cash, Price, Qty, Side, notional, pro_rata};
use crate::order::{Order, OrderKind};
use crate::tick::{Tick, TickError};

/// An asset position: how much is held and what it cost.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Holding {
    /// Units held.
    pub qty: Qty,
    /// Total cost of the units held (average-cost method).
    pub cost_basis: Cash,
}

impl Holding {
    /// The position after buying `qty` for `amount`, or `None` on overflow.
    pub fn add(self, qty: Qty, amount: Cash) -> Option<Holding> {
        Some(Holding {
            qty: self.qty.checked_add(qty)?,
            cost_basis: self.cost_basis.checked_add(amount)?,
        })
    }

    /// The position after selling `qty`, or `None` if more than held. The cost basis removed is
    /// `cost_basis * qty / held`, rounded down; selling everything removes all of it.
    pub fn remove(self, qty: Qty) -> Option<Holding> {
        let left = self.qty.checked_sub(qty)?;
        if left.is_zero() {
            return Some(Holding::default());
        }
        let removed = pro_rata(self.cost_basis, qty, self.qty)?;
        Some(Holding { qty: left, cost_basis: self.cost_basis.checked_sub(removed)? })
    }
}

/// One line of an account's transaction history (spec 3.1.7).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Transaction {
    /// The order that filled.
    pub order: Order,
    /// The interval that settled it.
    pub interval: IntervalId,
    /// When it went through: the interval's settlement time.
    pub settled_at: Timestamp,
    /// Start of the tick it used.
    pub tick_time: Timestamp,
    /// The fill price.
    pub price: Price,
    /// Cash paid (buy) or received (sell).
    pub amount: Cash,
}

/// An account and everything it owns.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Account {
    /// Its number.
    pub id: AccountId,
    /// Its unique username.
    pub username: Username,
    /// Its owner's email address.
    pub email: Email,
    /// The stored password hash.
    pub password_hash: PasswordHash,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// Cash it started with.
    pub initial_cash: Cash,
    /// Cash now.
    pub cash: Cash,
    /// Positions, by symbol; a position sold to zero is removed.
    pub holdings: BTreeMap<Symbol, Holding>,
    /// Fills, oldest first.
    #[rkyv(with = crate::archive::FreeOnError)]
    pub history: Vec<Transaction>,
}

/// The interval settled last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SettledInterval {
    /// Its number.
    pub id: IntervalId,
    /// When it settled.
    pub at: Timestamp,
    /// How many order outcomes it announced.
    pub orders: u64,
    /// How many of them have been applied so far.
    pub outcomes_applied: u64,
}

/// Everything the engine knows. Equal states have equal [`State::digest`]s on every machine.
#[derive(Debug, Clone, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct State {
    /// Accounts; account `n` is at index `n - 1`.
    #[rkyv(with = crate::archive::FreeOnError)]
    accounts: Vec<Account>,
    /// Account ids by exact username.
    by_username: BTreeMap<Username, AccountId>,
    /// Listed symbols, with the latest tick each has had (if any).
    assets: BTreeMap<Symbol, Option<Tick>>,
    /// The interval settled last.
    last_interval: Option<SettledInterval>,
    /// The ticks of the interval being applied, as its header listed them (sorted by symbol):
    /// what replay decides each of its outcomes against. Scratch for [`State::apply`], not part
    /// of the state: not archived (an empty unit in the archive, so snapshots keep their bytes;
    /// a snapshot is taken between intervals and the next header sets it), not compared, not
    /// in the digest.
    #[rkyv(with = rkyv::with::Skip)]
    interval_ticks: Vec<Tick>,
    /// Per account, the settlement key of its last outcome applied in the interval being
    /// applied: replay refuses an account's outcomes out of settlement order, or an order's
    /// twice, which settlement never emits. Scratch like `interval_ticks` (a lookup only: its
    /// order reaches nothing).
    #[rkyv(with = rkyv::with::Skip)]
    interval_last_keys: HashMap<AccountId, OrderKey>,
}

/// An order's place in settlement order within its account ([`Order::queue_key`]).
type OrderKey = (Timestamp, crate::WorkerId, crate::OrderId);

impl PartialEq for State {
    /// The state proper: accounts, names, assets and the last interval (not the scratch ticks).
    fn eq(&self, other: &Self) -> bool {
        self.accounts == other.accounts
            && self.by_username == other.by_username
            && self.assets == other.assets
            && self.last_interval == other.last_interval
    }
}

impl Eq for State {}

/// Why an event cannot be applied to the state: the event stream is inconsistent (a bug or a
/// corrupted journal). Live settlement never produces one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// An asset listed twice.
    #[error("asset {0} is already listed")]
    AssetAlreadyListed(Symbol),
    /// An account opened with an id other than the next one.
    #[error("account opened as {got}, expected {expected}")]
    AccountIdOutOfOrder {
        /// The next id.
        expected: AccountId,
        /// The event's id.
        got: AccountId,
    },
    /// An account opened with a username already taken.
    #[error("username {0} is already taken")]
    UsernameTaken(Username),
    /// A password rehash for an account that does not exist.
    #[error("password rehash for unknown account {0}")]
    UnknownAccount(AccountId),
    /// An interval not after the last one.
    #[error("interval {got} does not follow interval {last}")]
    IntervalOutOfOrder {
        /// The last interval.
        last: IntervalId,
        /// The event's interval.
        got: IntervalId,
    },
    /// A new interval began before all outcomes of the previous one were applied.
    #[error("interval {0} ended with outcomes missing")]
    IntervalIncomplete(IntervalId),
    /// An account's order outcome after the outcome of an order settled later, or an order's
    /// outcome twice: not the order settlement decides in.
    #[error("order {order} outcome is out of its account's settlement order, or repeated")]
    OutcomeOutOfOrder {
        /// The order.
        order: u64,
    },
    /// An event other than an outcome in the middle of an interval: settlement writes an
    /// interval's header and outcomes together, with nothing between them.
    #[error("{what} in the middle of interval {interval}")]
    InsideInterval {
        /// The event.
        what: &'static str,
        /// The interval not yet complete.
        interval: IntervalId,
    },
    /// An order outcome outside its interval, or more outcomes than announced.
    #[error("order {order} outcome does not belong to the current interval")]
    OutcomeOutsideInterval {
        /// The order.
        order: u64,
    },
    /// A fill for an account that does not exist or a symbol that is not listed.
    #[error("order {order} fill refers to an unknown account or symbol")]
    UnknownReference {
        /// The order.
        order: u64,
    },
    /// An order outcome settlement would not have given: a fill of an order it would have
    /// refused, a refusal of one it would have filled, or a refusal for another reason or with
    /// other values seen.
    #[error("order {order}: settlement would have given {decided}, the event records {recorded}")]
    OutcomeMismatch {
        /// The order.
        order: u64,
        /// What deciding the order again gives.
        decided: String,
        /// What the event says.
        recorded: String,
    },
    /// An interval header whose ticks no tick set could hold: a bad price, or symbols not
    /// sorted and unique.
    #[error("interval {interval} has an unusable tick set: {why}")]
    BadTicks {
        /// The interval.
        interval: IntervalId,
        /// What is wrong.
        why: TickError,
    },
    /// A fill that does not follow from the state and its interval: its price is not the
    /// symbol's tick in this interval, its amount not price times quantity (rounded as
    /// `money::notional` rounds), or its balances do not add up. (A fill of an order
    /// settlement would have refused is an [`ApplyError::OutcomeMismatch`].)
    #[error("order {order} fill does not add up: {what}")]
    FillMismatch {
        /// The order.
        order: u64,
        /// What differs.
        what: &'static str,
    },
}

/// A broken state invariant (see [`State::check_invariants`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantError {
    /// Account ids are not dense or the username index disagrees with the accounts.
    #[error("account ids or the username index are inconsistent")]
    UsernameIndex,
    /// An account's cash is not its initial cash plus the signed sum of its fills.
    #[error("account {0}: cash is not initial cash plus the signed sum of its fills")]
    CashMismatch(AccountId),
    /// An account's holdings are not the net quantities of its fills.
    #[error("account {0}: holdings are not the net quantities of its fills")]
    HoldingMismatch(AccountId),
    /// An account holds a symbol that is not listed.
    #[error("account {0} holds unlisted symbol {1}")]
    UnlistedHolding(AccountId, Symbol),
    /// The last interval counts more applied outcomes than it announced orders.
    #[error("interval {0} has more outcomes than orders")]
    OutcomesBeyondOrders(IntervalId),
    /// A fill in an account's history whose amount is not its price times its quantity.
    #[error("account {0}: a fill's amount is not its price times its quantity")]
    AmountMismatch(AccountId),
}

impl State {
    /// An empty state: no accounts, no assets.
    pub fn new() -> Self {
        Self::default()
    }

    /// The account with this id.
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        let index = usize::try_from(id.0.checked_sub(1)?).ok()?;
        self.accounts.get(index)
    }

    /// The account with this id, to change. Only [`State::apply`] and settlement's batched
    /// application of its own decisions (`Engine::settle`) use it.
    pub(crate) fn account_mut(&mut self, id: AccountId) -> Option<&mut Account> {
        let index = usize::try_from(id.0.checked_sub(1)?).ok()?;
        self.accounts.get_mut(index)
    }

    /// The account with exactly this username.
    pub fn account_by_username(&self, username: &Username) -> Option<&Account> {
        self.by_username.get(username).and_then(|id| self.account(*id))
    }

    /// All accounts, by id.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// The id the next account will get.
    pub fn next_account_id(&self) -> AccountId {
        AccountId(self.accounts.len() as u64 + 1)
    }

    /// True if the symbol is listed.
    pub fn is_listed(&self, symbol: &Symbol) -> bool {
        self.assets.contains_key(symbol)
    }

    /// Listed symbols with their latest tick, by symbol.
    pub fn assets(&self) -> &BTreeMap<Symbol, Option<Tick>> {
        &self.assets
    }

    /// The asset's current tick when `tick` is older than it: `tick` would move its price
    /// back in time (the master leaves such a tick out of its interval; the audit reports one
    /// in a journal). A tick as old as the current one (a price restated) is not.
    pub fn newer_tick_than(&self, tick: &Tick) -> Option<Tick> {
        self.assets.get(&tick.symbol).copied().flatten().filter(|now| tick.time < now.time)
    }

    /// The last interval, if some of its announced outcomes are not applied yet: a state
    /// replayed to a point inside an interval. A whole journal never ends in one (an interval's
    /// header and outcomes are one batch), so recovery and the audit refuse it there.
    pub fn interval_in_progress(&self) -> Option<SettledInterval> {
        self.last_interval.filter(|last| last.outcomes_applied < last.orders)
    }

    /// The interval settled last, if any.
    pub fn last_interval(&self) -> Option<SettledInterval> {
        self.last_interval
    }

    /// Applies one event. On error the state is unchanged.
    pub fn apply(&mut self, event: &Event) -> Result<(), ApplyError> {
        if let Some(last) = self.interval_in_progress() {
            let what = match event {
                Event::AssetListed(_) => Some("an asset listing"),
                Event::AccountOpened(_) => Some("an account opening"),
                Event::PasswordRehashed(_) => Some("a password rehash"),
                Event::IntervalSettled(_) | Event::OrderFilled(_) | Event::OrderRejected(_) => None,
            };
            if let Some(what) = what {
                return Err(ApplyError::InsideInterval { what, interval: last.id });
            }
        }
        match event {
            Event::AssetListed(listed) => {
                if self.assets.contains_key(&listed.symbol) {
                    return Err(ApplyError::AssetAlreadyListed(listed.symbol));
                }
                self.assets.insert(listed.symbol, None);
            }
            Event::AccountOpened(opened) => self.apply_account_opened(opened)?,
            Event::PasswordRehashed(rehashed) => {
                let account = self
                    .account_mut(rehashed.account)
                    .ok_or(ApplyError::UnknownAccount(rehashed.account))?;
                account.password_hash = rehashed.password_hash.clone();
            }
            Event::IntervalSettled(IntervalSettled { interval, at, ticks, orders }) => {
                if let Some(last) = self.last_interval {
                    if *interval <= last.id {
                        return Err(ApplyError::IntervalOutOfOrder {
                            last: last.id,
                            got: *interval,
                        });
                    }
                    if last.outcomes_applied != last.orders {
                        return Err(ApplyError::IntervalIncomplete(last.id));
                    }
                }
                crate::tick::check_list(ticks)
                    .map_err(|why| ApplyError::BadTicks { interval: *interval, why })?;
                for tick in ticks {
                    if let Some(slot) = self.assets.get_mut(&tick.symbol) {
                        *slot = Some(*tick);
                    }
                }
                self.interval_ticks.clear();
                self.interval_last_keys.clear();
                self.interval_ticks.extend_from_slice(ticks);
                self.last_interval = Some(SettledInterval {
                    id: *interval,
                    at: *at,
                    orders: *orders,
                    outcomes_applied: 0,
                });
            }
            Event::OrderFilled(fill) => {
                self.check_outcome(&fill.order, fill.interval)?;
                self.apply_fill(fill)?;
                self.count_outcome(&fill.order);
            }
            Event::OrderRejected(rejection) => {
                self.check_outcome(&rejection.order, rejection.interval)?;
                self.check_rejection(rejection)?;
                self.count_outcome(&rejection.order);
            }
        }
        Ok(())
    }

    fn apply_account_opened(&mut self, opened: &AccountOpened) -> Result<(), ApplyError> {
        let expected = self.next_account_id();
        if opened.account != expected {
            return Err(ApplyError::AccountIdOutOfOrder { expected, got: opened.account });
        }
        if self.by_username.contains_key(&opened.username) {
            return Err(ApplyError::UsernameTaken(opened.username.clone()));
        }
        self.by_username.insert(opened.username.clone(), opened.account);
        self.accounts.push(Account {
            id: opened.account,
            username: opened.username.clone(),
            email: opened.email.clone(),
            password_hash: opened.password_hash.clone(),
            opened_at: opened.at,
            initial_cash: opened.initial_cash,
            cash: opened.initial_cash,
            holdings: BTreeMap::new(),
            history: Vec::new(),
        });
        Ok(())
    }

    /// An outcome belongs to the interval being applied, and comes after every outcome of its
    /// account applied in it (settlement order, each order once).
    fn check_outcome(&self, order: &Order, interval: IntervalId) -> Result<(), ApplyError> {
        let id = order.id.0;
        match self.last_interval {
            Some(last) if last.id == interval && last.outcomes_applied < last.orders => {}
            _ => return Err(ApplyError::OutcomeOutsideInterval { order: id }),
        }
        match self.interval_last_keys.get(&order.account) {
            Some(last) if *last >= order.queue_key() => {
                Err(ApplyError::OutcomeOutOfOrder { order: id })
            }
            _ => Ok(()),
        }
    }

    fn count_outcome(&mut self, order: &Order) {
        self.interval_last_keys.insert(order.account, order.queue_key());
        self.count_outcomes(1);
    }

    /// Counts `count` outcomes of the current interval as applied (settlement applies a whole
    /// interval's outcomes at once; their effects are applied by `Engine::settle`).
    pub(crate) fn count_outcomes(&mut self, count: u64) {
        if let Some(last) = self.last_interval.as_mut() {
            last.outcomes_applied += count;
        }
    }

    /// The current interval's tick of `symbol`, if its header had one.
    fn interval_tick(&self, symbol: &Symbol) -> Option<Tick> {
        let index = self.interval_ticks.binary_search_by_key(symbol, |t| t.symbol).ok()?;
        self.interval_ticks.get(index).copied()
    }

    /// Applies a fill after deciding its order again, as settlement does
    /// ([`crate::engine::fill_terms`]) from the account as the events before it left it and the
    /// interval's tick: the order must fill, at that tick's price and time, for that amount,
    /// leaving that cash and holding.
    fn apply_fill(&mut self, fill: &Fill) -> Result<(), ApplyError> {
        let order = &fill.order;
        let id = order.id.0;
        let mismatch = |what| ApplyError::FillMismatch { order: id, what };
        let settled_at = self.last_interval.map(|l| l.at).unwrap_or_default();
        if !self.assets.contains_key(&order.symbol) {
            return Err(ApplyError::UnknownReference { order: id });
        }
        let tick = self.interval_tick(&order.symbol);
        if tick.is_none_or(|t| (t.fill_price(), t.time) != (fill.price, fill.tick_time)) {
            return Err(mismatch("price is not the symbol's tick in this interval"));
        }
        let account =
            self.account_mut(order.account).ok_or(ApplyError::UnknownReference { order: id })?;
        let held = account.holdings.get(&order.symbol).copied().unwrap_or_default();
        let (terms, holding) =
            fill_terms(order, tick.as_ref(), true, account.cash, held).map_err(|reason| {
                ApplyError::OutcomeMismatch {
                    order: id,
                    decided: format!("a refusal ({reason})"),
                    recorded: "a fill".to_owned(),
                }
            })?;
        if terms.amount != fill.amount {
            return Err(mismatch("amount is not price times quantity"));
        }
        if terms.cash_after != fill.cash_after {
            return Err(mismatch("cash after"));
        }
        if terms.holding_after != fill.holding_after {
            return Err(mismatch("holding after"));
        }
        account.cash = terms.cash_after;
        if holding.qty.is_zero() {
            account.holdings.remove(&order.symbol);
        } else {
            account.holdings.insert(order.symbol, holding);
        }
        account.history.push(Transaction {
            order: *order,
            interval: fill.interval,
            settled_at,
            tick_time: fill.tick_time,
            price: fill.price,
            amount: fill.amount,
        });
        Ok(())
    }

    /// Checks a refusal by deciding its order again, as settlement does: the same reason, and
    /// the same price, cash and holding seen.
    fn check_rejection(&self, rejection: &Rejection) -> Result<(), ApplyError> {
        let order = &rejection.order;
        let tick = self.interval_tick(&order.symbol);
        let price_seen = tick.map(|t| t.fill_price());
        let decided = match self.account(order.account) {
            None => Err((RejectReason::UnknownAccount, price_seen, Cash::ZERO, Qty::ZERO)),
            Some(account) => {
                let held = account.holdings.get(&order.symbol).copied().unwrap_or_default();
                let listed = self.assets.contains_key(&order.symbol);
                fill_terms(order, tick.as_ref(), listed, account.cash, held)
                    .map(|_| ())
                    .map_err(|reason| (reason, price_seen, account.cash, held.qty))
            }
        };
        let recorded =
            (rejection.reason, rejection.price_seen, rejection.cash_seen, rejection.holding_seen);
        let seen = |(reason, price, cash, holding): (RejectReason, Option<Price>, Cash, Qty)| {
            let price = price.map_or_else(|| "none".to_owned(), |p| p.to_string());
            format!("a refusal ({reason}, price {price}, cash {cash}, holding {holding})")
        };
        match decided {
            Err(expected) if expected == recorded => Ok(()),
            Err(expected) => Err(ApplyError::OutcomeMismatch {
                order: order.id.0,
                decided: seen(expected),
                recorded: seen(recorded),
            }),
            Ok(()) => Err(ApplyError::OutcomeMismatch {
                order: order.id.0,
                decided: "a fill".to_owned(),
                recorded: seen(recorded),
            }),
        }
    }

    /// Checks the invariants that hold between events, over the whole state (linear in the size of
    /// the history, so callers run it at interval ends and snapshots, not per event):
    /// account ids are dense from 1 and the username index matches them; for every account,
    /// `cash == initial_cash - sum(buy amounts) + sum(sell amounts)` exactly, and every holding
    /// (its quantity and its cost basis) equals its fills folded in order through
    /// [`Holding::add`] and [`Holding::remove`], with no zero-quantity positions kept; every
    /// held symbol is listed.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        if let Some(last) = self.last_interval
            && last.outcomes_applied > last.orders
        {
            return Err(InvariantError::OutcomesBeyondOrders(last.id));
        }
        if self.by_username.len() != self.accounts.len() {
            return Err(InvariantError::UsernameIndex);
        }
        for (index, account) in self.accounts.iter().enumerate() {
            let id = account.id;
            if id.0 != index as u64 + 1 || self.by_username.get(&account.username) != Some(&id) {
                return Err(InvariantError::UsernameIndex);
            }
            let mut cash = i128::from(account.initial_cash.raw());
            let mut folded: BTreeMap<Symbol, Holding> = BTreeMap::new();
            for t in &account.history {
                if notional(t.price, t.order.qty, t.order.side) != Some(t.amount) {
                    return Err(InvariantError::AmountMismatch(id));
                }
                let holding = folded.entry(t.order.symbol).or_default();
                let (cash_sign, after) = match t.order.side {
                    Side::Buy => (-1, holding.add(t.order.qty, t.amount)),
                    Side::Sell => (1, holding.remove(t.order.qty)),
                };
                let Some(after) = after else {
                    return Err(InvariantError::HoldingMismatch(id));
                };
                cash += cash_sign * i128::from(t.amount.raw());
                *holding = after;
            }
            if cash != i128::from(account.cash.raw()) {
                return Err(InvariantError::CashMismatch(id));
            }
            folded.retain(|_, h| !h.qty.is_zero());
            let held = account.holdings.len() == folded.len()
                && account.holdings.iter().all(|(s, h)| folded.get(s) == Some(h));
            if !held {
                return Err(InvariantError::HoldingMismatch(id));
            }
            if let Some(symbol) = account.holdings.keys().find(|s| !self.assets.contains_key(s)) {
                return Err(InvariantError::UnlistedHolding(id, *symbol));
            }
        }
        Ok(())
    }

    /// A BLAKE3 digest of the canonical encoding of the state (see [`State::canonical_bytes`]).
    pub fn digest(&self) -> Digest {
        let mut hasher = blake3::Hasher::new();
        self.write_canonical(&mut |bytes| {
            hasher.update(bytes);
        });
        Digest(*hasher.finalize().as_bytes())
    }

    /// The canonical encoding of the state: fields in a fixed order, integers big-endian, strings
    /// and lists prefixed with their length as a u64, maps in key order. Documented in
    /// `docs/ENGINE.md`; the same on every machine.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_canonical(&mut |bytes| out.extend_from_slice(bytes));
        out
    }

    fn write_canonical(&self, out: &mut dyn FnMut(&[u8])) {
        let u64_be = |out: &mut dyn FnMut(&[u8]), v: u64| out(&v.to_be_bytes());
        let text = |out: &mut dyn FnMut(&[u8]), s: &str| {
            out(&(s.len() as u64).to_be_bytes());
            out(s.as_bytes());
        };
        let tick = |out: &mut dyn FnMut(&[u8]), t: &Tick| {
            for p in [t.open, t.high, t.low, t.close] {
                out(&p.raw().to_be_bytes());
            }
            out(&t.volume.raw().to_be_bytes());
            out(&t.time.0.to_be_bytes());
        };
        out(b"papertrader-state-v1");
        u64_be(out, self.assets.len() as u64);
        for (symbol, last) in &self.assets {
            text(out, symbol.as_str());
            match last {
                None => out(&[0]),
                Some(t) => {
                    out(&[1]);
                    tick(out, t);
                }
            }
        }
        match self.last_interval {
            None => out(&[0]),
            Some(l) => {
                out(&[1]);
                u64_be(out, l.id.0);
                out(&l.at.0.to_be_bytes());
                u64_be(out, l.orders);
                u64_be(out, l.outcomes_applied);
            }
        }
        u64_be(out, self.accounts.len() as u64);
        for a in &self.accounts {
            u64_be(out, a.id.0);
            text(out, a.username.as_str());
            text(out, a.email.as_str());
            text(out, a.password_hash.as_str());
            out(&a.opened_at.0.to_be_bytes());
            u64_be(out, a.initial_cash.raw());
            u64_be(out, a.cash.raw());
            u64_be(out, a.holdings.len() as u64);
            for (symbol, h) in &a.holdings {
                text(out, symbol.as_str());
                u64_be(out, h.qty.raw());
                u64_be(out, h.cost_basis.raw());
            }
            u64_be(out, a.history.len() as u64);
            for t in &a.history {
                write_order(out, &t.order);
                u64_be(out, t.interval.0);
                out(&t.settled_at.0.to_be_bytes());
                out(&t.tick_time.0.to_be_bytes());
                u64_be(out, t.price.raw());
                u64_be(out, t.amount.raw());
            }
        }
    }
}

fn write_order(out: &mut dyn FnMut(&[u8]), o: &Order) {
    out(&o.id.0.to_be_bytes());
    out(&o.client_id.0.to_be_bytes());
    out(&o.account.0.to_be_bytes());
    out(&(o.symbol.as_str().len() as u64).to_be_bytes());
    out(o.symbol.as_str().as_bytes());
    out(&[match o.side {
        Side::Buy => 0,
        Side::Sell => 1,
    }]);
    out(&o.qty.raw().to_be_bytes());
    out(&[match o.kind {
        OrderKind::Market => 0,
    }]);
    out(&o.placed_at.0.to_be_bytes());
    out(&o.worker.0.to_be_bytes());
}

/// A 32-byte BLAKE3 digest of a state; shown as 64 lowercase hex digits.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A holding's cost basis that its fills do not give (a snapshot encoder's or copier's
    /// drift) breaks an invariant, as a wrong quantity does; the state the fills built passes.
    #[test]
    fn a_cost_basis_its_fills_do_not_give_breaks_an_invariant() {
        let shape =
            crate::workload::WorkloadShape { accounts: 50, symbols: 5, orders: 2_000, seed: 3 };
        let mut workload = crate::workload::build(shape).unwrap();
        crate::workload::settle(&mut workload).unwrap();
        // A second interval, whose sells take holdings down (the fold's `remove`).
        let mut rng = crate::workload::XorShift::new(4);
        crate::workload::queue_more(&mut workload, shape, &mut rng, 2_001, 2_000);
        crate::workload::settle_as(&mut workload, IntervalId(2), Timestamp(2)).unwrap();
        assert!(workload.engine.state().accounts().iter().any(|a| {
            a.history
                .iter()
                .any(|t| t.order.side == Side::Sell && a.holdings.contains_key(&t.order.symbol))
        }));
        let state = workload.engine.state().clone();
        assert_eq!(state.check_invariants(), Ok(()));
        let (id, symbol) = state
            .accounts()
            .iter()
            .find_map(|a| a.holdings.keys().next().map(|s| (a.id, *s)))
            .unwrap();
        for change in [
            |h: &mut Holding| h.cost_basis = Cash::from_raw(h.cost_basis.raw() + 1),
            |h: &mut Holding| h.qty = Qty::from_raw(h.qty.raw() + 1),
        ] {
            let mut drifted = state.clone();
            change(drifted.account_mut(id).unwrap().holdings.get_mut(&symbol).unwrap());
            assert_eq!(drifted.check_invariants(), Err(InvariantError::HoldingMismatch(id)));
        }
    }

    /// A last interval with more outcomes than orders (only a damaged snapshot can hold one; no
    /// event sequence builds it) breaks an invariant; as many as its orders do not.
    #[test]
    fn more_outcomes_than_orders_break_an_invariant() {
        let mut state = State::new();
        let interval = |orders, outcomes_applied| {
            Some(SettledInterval { id: IntervalId(4), at: Timestamp(1), orders, outcomes_applied })
        };
        state.last_interval = interval(2, 2);
        assert_eq!(state.check_invariants(), Ok(()));
        state.last_interval = interval(2, 1);
        assert_eq!(state.check_invariants(), Ok(()));
        state.last_interval = interval(2, 3);
        assert_eq!(
            state.check_invariants(),
            Err(InvariantError::OutcomesBeyondOrders(IntervalId(4)))
        );
    }
}
