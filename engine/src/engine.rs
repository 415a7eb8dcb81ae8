//! The commands: open an account, list an asset, settle an interval. Each decides its events
//! from the state and the arguments alone, then applies them through [`State::apply`], so the live
//! state is always exactly the fold of the events it returned.

use crate::event::{
    AccountOpened, AssetListed, Event, Fill, IntervalSettled, RejectReason, Rejection,
};
use crate::ids::{AccountId, Email, IntervalId, PasswordHash, Symbol, Timestamp, Username};
use crate::limits::ORDER_QTY_UNITS_MAX;
use crate::money::{Cash, Qty, Side, notional};
use crate::order::{Order, OrderKind, OrderQueue};
use crate::state::{ApplyError, Digest, Holding, State};
use crate::tick::{Tick, TickSet};

/// Opening an account.
#[derive(Debug, Clone)]
pub struct OpenAccount {
    /// The wanted username.
    pub username: Username,
    /// The owner's email address.
    pub email: Email,
    /// The stored password hash string.
    pub password_hash: PasswordHash,
    /// Starting cash (from the master's config).
    pub initial_cash: Cash,
    /// When (master clock).
    pub at: Timestamp,
}

/// Why a command was refused before producing any event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The username belongs to another account (compared exactly).
    #[error("username {0} is already taken")]
    UsernameTaken(Username),
    /// The symbol is listed already.
    #[error("asset {0} is already listed")]
    AssetAlreadyListed(Symbol),
    /// Settlement of an interval that is not after the last settled one.
    #[error("interval {got} does not follow interval {last}")]
    IntervalNotAfterLast {
        /// The last settled interval.
        last: IntervalId,
        /// The requested one.
        got: IntervalId,
    },
}

/// The engine: a [`State`] and the commands that change it.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    state: State,
}

/// What a fill moves: decided by settlement, checked again by [`State::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FillTerms {
    amount: Cash,
    cash_after: Cash,
    holding_after: Qty,
}

impl Engine {
    /// An engine with an empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// An engine continuing from a state (a snapshot or a replay).
    pub fn from_state(state: State) -> Self {
        Self { state }
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Gives the state back.
    pub fn into_state(self) -> State {
        self.state
    }

    /// The digest of the current state.
    pub fn digest(&self) -> Digest {
        self.state.digest()
    }

    /// Replays one recorded event.
    pub fn apply(&mut self, event: &Event) -> Result<(), ApplyError> {
        self.state.apply(event)
    }

    fn emit(&mut self, event: Event, out: &mut Vec<Event>) {
        let applied = self.state.apply(&event);
        // Every event is decided from the state it is applied to: refusal is an engine bug.
        debug_assert!(applied.is_ok(), "engine emitted an event its state refuses: {applied:?}");
        if applied.is_ok() {
            out.push(event);
        }
    }

    /// Lists a symbol for trading.
    pub fn list_asset(&mut self, symbol: Symbol, at: Timestamp) -> Result<Event, CommandError> {
        if self.state.is_listed(&symbol) {
            return Err(CommandError::AssetAlreadyListed(symbol));
        }
        let mut out = Vec::with_capacity(1);
        self.emit(Event::AssetListed(AssetListed { symbol, at }), &mut out);
        out.pop().ok_or(CommandError::AssetAlreadyListed(symbol))
    }

    /// Opens an account with the next account id.
    pub fn open_account(&mut self, request: OpenAccount) -> Result<Event, CommandError> {
        if self.state.account_by_username(&request.username).is_some() {
            return Err(CommandError::UsernameTaken(request.username));
        }
        let username = request.username.clone();
        let event = Event::AccountOpened(AccountOpened {
            account: self.state.next_account_id(),
            username: request.username,
            email: request.email,
            password_hash: request.password_hash,
            initial_cash: request.initial_cash,
            at: request.at,
        });
        let mut out = Vec::with_capacity(1);
        self.emit(event, &mut out);
        out.pop().ok_or(CommandError::UsernameTaken(username))
    }

    /// Settles one interval: drains the queue in settlement order ([`Order::queue_key`]) and
    /// fills or rejects each order against `ticks`, checking buying power in that order, so a
    /// sell earlier in the queue funds a later buy. Returns `IntervalSettled` followed by one
    /// `OrderFilled` or `OrderRejected` per order, in settlement order.
    ///
    /// Checks, in this order, each giving its [`RejectReason`]: the account exists; the quantity
    /// is not zero and at most `ORDER_QTY_UNITS_MAX` units; the symbol is listed; it has a tick
    /// this interval; the notional fits; a buy's cost is at most the cash, a sell's quantity at
    /// most the holding; the new balances fit.
    pub fn settle(
        &mut self,
        interval: IntervalId,
        at: Timestamp,
        ticks: &TickSet,
        queue: &mut OrderQueue,
    ) -> Result<Vec<Event>, CommandError> {
        if let Some(last) = self.state.last_interval()
            && interval <= last.id
        {
            return Err(CommandError::IntervalNotAfterLast { last: last.id, got: interval });
        }
        let orders = queue.drain_sorted();
        let mut out = Vec::with_capacity(orders.len() + 1);
        let header = Event::IntervalSettled(IntervalSettled {
            interval,
            at,
            ticks: ticks.ticks().to_vec(),
            orders: orders.len() as u64,
        });
        self.emit(header, &mut out);
        // An order's outcome depends only on its own account's earlier orders (cash and
        // holdings are per account) and on the tick set. So the orders are decided and applied
        // grouped by account, in queue order within each account, which keeps each account's
        // data hot in the cache; the events are then returned in queue order. Folding them in
        // that order gives the same state (property-tested), since accounts never interact.
        let mut by_account: Vec<(AccountId, usize)> =
            orders.iter().enumerate().map(|(i, o)| (o.account, i)).collect();
        by_account.sort_unstable();
        let mut decided: Vec<Option<Event>> = Vec::new();
        decided.resize_with(orders.len(), || None);
        for (_, index) in by_account {
            let event = self.decide(interval, ticks, orders[index]);
            let applied = self.state.apply(&event);
            debug_assert!(
                applied.is_ok(),
                "engine emitted an event its state refuses: {applied:?}"
            );
            if applied.is_ok() {
                decided[index] = Some(event);
            }
        }
        out.extend(decided.into_iter().flatten());
        Ok(out)
    }

    /// Decides one order's outcome from the current state; changes nothing.
    fn decide(&self, interval: IntervalId, ticks: &TickSet, order: Order) -> Event {
        let tick = ticks.get(&order.symbol);
        let account = self.state.account(order.account);
        let cash_seen = account.map(|a| a.cash).unwrap_or_default();
        let held = account.and_then(|a| a.holdings.get(&order.symbol)).copied().unwrap_or_default();
        match self.fill_terms(&order, tick, cash_seen, held) {
            Ok((tick, terms)) => Event::OrderFilled(Fill {
                order,
                interval,
                price: tick.fill_price(),
                tick_time: tick.time,
                amount: terms.amount,
                cash_after: terms.cash_after,
                holding_after: terms.holding_after,
            }),
            Err(reason) => Event::OrderRejected(Rejection {
                order,
                interval,
                reason,
                price_seen: tick.map(Tick::fill_price),
                cash_seen,
                holding_seen: held.qty,
            }),
        }
    }

    /// The terms an order fills on, or why it cannot fill.
    fn fill_terms<'t>(
        &self,
        order: &Order,
        tick: Option<&'t Tick>,
        cash: Cash,
        held: Holding,
    ) -> Result<(&'t Tick, FillTerms), RejectReason> {
        use RejectReason as R;
        if self.state.account(order.account).is_none() {
            return Err(R::UnknownAccount);
        }
        if order.qty.is_zero() {
            return Err(R::ZeroQuantity);
        }
        if Some(order.qty) > Qty::from_units(ORDER_QTY_UNITS_MAX) {
            return Err(R::QuantityTooLarge);
        }
        if !self.state.is_listed(&order.symbol) {
            return Err(R::UnknownSymbol);
        }
        let tick = tick.ok_or(R::NoPrice)?;
        let OrderKind::Market = order.kind;
        let amount = notional(tick.fill_price(), order.qty, order.side).ok_or(R::Overflow)?;
        let (cash_after, holding) = match order.side {
            Side::Buy => (
                cash.checked_sub(amount).ok_or(R::InsufficientCash)?,
                held.add(order.qty, amount).ok_or(R::Overflow)?,
            ),
            Side::Sell => {
                let holding = held.remove(order.qty).ok_or(R::InsufficientHoldings)?;
                (cash.checked_add(amount).ok_or(R::Overflow)?, holding)
            }
        };
        Ok((tick, FillTerms { amount, cash_after, holding_after: holding.qty }))
    }
}
