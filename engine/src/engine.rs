//! The commands: open an account, list an asset, settle an interval. Each decides its events
//! from the state and the arguments alone, then applies them, so the live state is always exactly
//! the fold of the events it returned: through [`State::apply`], except the order outcomes of a
//! settlement, which are applied account by account with the same effect (see
//! `Engine::decide_apply_emit`; the property tests fold the events and compare).

use std::collections::BTreeMap;
use std::ops::Range;

use crate::event::{
    AccountOpened, AssetListed, Event, Fill, IntervalSettled, PasswordRehashed, RejectReason,
    Rejection,
};
use crate::ids::{AccountId, Email, IntervalId, PasswordHash, Symbol, Timestamp, Username};
use crate::limits::{ORDER_QTY_UNITS_MAX, SETTLEMENT_ORDERS_MAX, TICKS_PER_INTERVAL_MAX};
use crate::money::{Cash, Qty, Side, notional};
use crate::order::{Order, OrderKind, OrderQueue, Settling};
use crate::state::{ApplyError, Digest, Holding, State, Transaction};
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
    /// Settlement after an interval whose outcomes are not all in the state (a state replayed
    /// to a point inside an interval, or restored from a damaged snapshot): no interval can
    /// follow it.
    #[error("interval {0} is missing outcomes, so no interval can follow it")]
    IntervalIncomplete(IntervalId),
    /// More orders queued than one interval may settle (`SETTLEMENT_ORDERS_MAX`); nothing
    /// is settled and the queue is left as it was.
    #[error(
        "{queued} orders are queued, more than the {SETTLEMENT_ORDERS_MAX} one interval may settle"
    )]
    TooManyOrders {
        /// The orders queued.
        queued: usize,
    },
    /// No account has this id.
    #[error("no account {0}")]
    UnknownAccount(AccountId),
    /// The state refused the command's event for a reason the command does not check itself:
    /// a listing, an opening or a rehash in a state replayed to the middle of an interval, or a
    /// check added to `State::apply` later. An error (the state and the queue left as they
    /// were), not a panic or lost orders.
    #[error("the state refuses the command: {0}")]
    StateRefused(ApplyError),
}

/// The engine: a [`State`] and the commands that change it.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    state: State,
}

/// What a fill moves: decided by settlement, decided again by [`State::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FillTerms {
    pub(crate) amount: Cash,
    pub(crate) cash_after: Cash,
    pub(crate) holding_after: Qty,
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

    /// Lists a symbol for trading.
    pub fn list_asset(&mut self, symbol: Symbol, at: Timestamp) -> Result<Event, CommandError> {
        if self.state.is_listed(&symbol) {
            return Err(CommandError::AssetAlreadyListed(symbol));
        }
        let event = Event::AssetListed(AssetListed { symbol, at });
        self.state.apply(&event).map_err(CommandError::StateRefused)?;
        Ok(event)
    }

    /// Opens an account with the next account id.
    pub fn open_account(&mut self, request: OpenAccount) -> Result<Event, CommandError> {
        if self.state.account_by_username(&request.username).is_some() {
            return Err(CommandError::UsernameTaken(request.username));
        }
        let event = Event::AccountOpened(AccountOpened {
            account: self.state.next_account_id(),
            username: request.username,
            email: request.email,
            password_hash: request.password_hash,
            initial_cash: request.initial_cash,
            at: request.at,
        });
        self.state.apply(&event).map_err(CommandError::StateRefused)?;
        Ok(event)
    }

    /// Replaces an account's stored password hash (`Event::PasswordRehashed`).
    pub fn rehash_password(
        &mut self,
        account: AccountId,
        password_hash: PasswordHash,
        at: Timestamp,
    ) -> Result<Event, CommandError> {
        if self.state.account(account).is_none() {
            return Err(CommandError::UnknownAccount(account));
        }
        let event = Event::PasswordRehashed(PasswordRehashed { account, password_hash, at });
        self.state.apply(&event).map_err(CommandError::StateRefused)?;
        Ok(event)
    }

    /// Settles one interval: drains the queue and fills or rejects each order against `ticks`,
    /// taking each account's orders in settlement order ([`Order::queue_key`]) and checking
    /// buying power in that order, so a sell earlier in the queue funds a later buy of the same
    /// account. Returns `IntervalSettled` followed by one `OrderFilled` or `OrderRejected` per
    /// order, by account number and each account's in settlement order: sorted by (account id,
    /// queue key). Different accounts' outcomes do not depend on each other, so this order,
    /// which settlement produces without sorting the whole queue, loses nothing (docs/ENGINE.md).
    ///
    /// Checks, in this order, each giving its [`RejectReason`]: the account exists; the quantity
    /// is not zero and at most `ORDER_QTY_UNITS_MAX` units; the symbol is listed; it has a tick
    /// this interval; the notional fits; a buy's cost is at most the cash, a sell's quantity at
    /// most the holding; the new balances fit.
    ///
    /// A caller that settles every interval should keep one vector and call
    /// [`Engine::settle_into`] instead: same events, without allocating and first touching a
    /// vector of one event per order each time.
    pub fn settle(
        &mut self,
        interval: IntervalId,
        at: Timestamp,
        ticks: &TickSet,
        queue: &mut OrderQueue,
    ) -> Result<Vec<Event>, CommandError> {
        let mut events = Vec::new();
        self.settle_into(interval, at, ticks, queue, &mut events)?;
        Ok(events)
    }

    /// [`Engine::settle`], writing the events into `events` instead of a new vector: on success
    /// `events` holds exactly what `settle` would have returned, its previous contents replaced
    /// (overwritten in place, so the memory of the last interval's events is reused and its old
    /// events are dropped as they are overwritten). On error, `events` and the queue are left as
    /// they were.
    pub fn settle_into(
        &mut self,
        interval: IntervalId,
        at: Timestamp,
        ticks: &TickSet,
        queue: &mut OrderQueue,
        events: &mut Vec<Event>,
    ) -> Result<(), CommandError> {
        if queue.len() > SETTLEMENT_ORDERS_MAX {
            return Err(CommandError::TooManyOrders { queued: queue.len() });
        }
        let header = Event::IntervalSettled(IntervalSettled {
            interval,
            at,
            ticks: ticks.ticks().to_vec(),
            orders: queue.len() as u64,
        });
        // The state checks the header before changing anything: refused, nothing has moved and
        // every order is still queued for the caller to answer.
        match self.state.apply(&header) {
            Ok(()) => {}
            Err(ApplyError::IntervalOutOfOrder { last, got }) => {
                return Err(CommandError::IntervalNotAfterLast { last, got });
            }
            Err(ApplyError::IntervalIncomplete(last)) => {
                return Err(CommandError::IntervalIncomplete(last));
            }
            Err(other) => return Err(CommandError::StateRefused(other)),
        }
        // Settled in the queue's memory, and cleared at the end: the queue keeps its memory.
        let settling = queue.for_settlement(self.state.accounts().len());
        let count = settling.orders.len();
        self.decide_apply_emit(interval, at, ticks, settling, header, events);
        self.state.count_outcomes(count as u64);
        queue.clear_kept();
        Ok(())
    }

    /// Decides every order's outcome, applies it, and writes its event into `events` after
    /// `header`, account by account.
    ///
    /// An order's outcome depends only on its own account's earlier orders (cash and holdings
    /// are per account) and on the tick set. So the orders are copied into groups by account
    /// ([`group_by_account`]: the copy lets the account pass read each group in one sweep
    /// instead of fetching each order from anywhere in the queue), each group is put in
    /// settlement order in the cache (a permutation of its slots, sorted by
    /// [`Order::queue_key`]), and each account's orders are decided, applied and written out
    /// together, which keeps that account's data hot in the cache and touches each of its
    /// holdings in the B-tree once: read on first use, written back at the end of the account,
    /// all changes together ([`write_back`]). What is applied is exactly what [`State::apply`]
    /// does for the `OrderFilled` events built from the outcomes (cash, holding, history), so
    /// the state is the fold of the returned events (property-tested).
    fn decide_apply_emit(
        &mut self,
        interval: IntervalId,
        at: Timestamp,
        ticks: &TickSet,
        settling: Settling<'_>,
        header: Event,
        events: &mut Vec<Event>,
    ) {
        let Settling { orders, per_account, scratch } = settling;
        let mut out = EventWriter::new(events, header, orders.len());
        if orders.is_empty() {
            out.finish();
            return;
        }
        let tick_list = ticks.ticks();
        let listed_ticks: Vec<bool> =
            tick_list.iter().map(|t| self.state.is_listed(&t.symbol)).collect();
        let tick_index = TickIndex::new(tick_list);
        let accounts = self.state.accounts().len();
        let state = &self.state;
        let tick_of = |order: &Order| match tick_index.position(&order.symbol) {
            Some(index) => TickRef::of_index(index),
            None if state.is_listed(&order.symbol) => TickRef::NONE,
            None => TickRef::UNLISTED,
        };
        let sizes = (accounts, COUNTED_BUCKETS_PER_ORDER);
        group_by_account(orders, sizes, per_account, tick_of, scratch);
        let SettleScratch { grouped, ticks: grouped_ticks, permutation, keys, groups, .. } =
            scratch;
        // The current account's holdings of the symbols that have ticks, loaded on first use.
        let mut cache: Vec<Option<CachedHolding>> = vec![None; tick_list.len()];
        let mut loaded: Vec<usize> = Vec::new();
        let mut changes: Vec<(Symbol, Holding)> = Vec::new();
        for &(bucket, ref slots) in groups.iter() {
            let group = &grouped[slots.clone()];
            let group_ticks = &grouped_ticks[slots.clone()];
            // Accounts are numbered 1 to their count: buckets 0 and `accounts + 1` have none.
            let Some(account) = self.state.account_mut(AccountId(bucket as u64)) else {
                debug_assert!(bucket == 0 || bucket > accounts, "account {bucket} is missing");
                // Orders of no account: rejected, nothing applied; the last bucket holds
                // several account numbers, in number order.
                in_order(permutation, group, |o| (o.account, o.queue_key()));
                for &k in permutation.iter() {
                    let k = k as usize;
                    out.push(Decided::unknown(group_ticks[k]).event(group[k], interval, tick_list));
                }
                continue;
            };
            in_settlement_order(permutation, keys, group);
            account.history.reserve(group.len());
            for &k in permutation.iter() {
                let k = k as usize;
                let (order, tick_ref) = (&group[k], group_ticks[k]);
                let tick = tick_ref.index().and_then(|i| tick_list.get(i).map(|t| (i, t)));
                let listed = match tick {
                    Some((index, _)) => listed_ticks.get(index).copied().unwrap_or(false),
                    None => tick_ref == TickRef::NONE,
                };
                let held = match tick {
                    Some((index, t)) => {
                        cache[index]
                            .get_or_insert_with(|| {
                                loaded.push(index);
                                let holding =
                                    account.holdings.get(&t.symbol).copied().unwrap_or_default();
                                CachedHolding { holding, changed: false }
                            })
                            .holding
                    }
                    None => account.holdings.get(&order.symbol).copied().unwrap_or_default(),
                };
                let cash = account.cash;
                let outcome = match fill_terms(order, tick.map(|(_, t)| t), listed, cash, held) {
                    Ok((terms, holding)) => {
                        let Some((index, t)) = tick else {
                            unreachable!("an order only fills on a tick")
                        };
                        account.cash = terms.cash_after;
                        cache[index] = Some(CachedHolding { holding, changed: true });
                        account.history.push(Transaction {
                            order: *order,
                            interval,
                            settled_at: at,
                            tick_time: t.time,
                            price: t.fill_price(),
                            amount: terms.amount,
                        });
                        Decided::Filled { tick: tick_ref, terms }
                    }
                    Err(reason) => Decided::Rejected {
                        tick: tick_ref,
                        reason,
                        cash_seen: cash,
                        holding_seen: held.qty,
                    },
                };
                out.push(outcome.event(*order, interval, tick_list));
            }
            // Tick order is symbol order: the changes come out sorted by symbol. Sorting the
            // loaded indices, or, when they are many of the ticks, walking the whole cache in
            // order, which costs less than sorting them.
            changes.clear();
            let mut take = |index: usize| {
                if let (Some(cached), Some(t)) = (cache[index].take(), tick_list.get(index))
                    && cached.changed
                {
                    changes.push((t.symbol, cached.holding));
                }
            };
            if loaded.len().saturating_mul(WALK_CACHE_LOADED_PER_TICKS) >= tick_list.len() {
                (0..tick_list.len()).for_each(&mut take);
                loaded.clear();
            } else {
                loaded.sort_unstable();
                loaded.drain(..).for_each(take);
            }
            write_back(&mut account.holdings, &changes);
        }
        out.finish();
    }
}

/// Fills `permutation` with the positions of `group`'s orders sorted by `key` (a total order
/// on them): the identity when the group is in that order already, as the orders of one
/// account arriving from one worker are.
fn in_order<K: Ord>(permutation: &mut Vec<u32>, group: &[Order], key: impl Fn(&Order) -> K) {
    permutation.clear();
    permutation.extend((0..group.len()).map(index32));
    if !group.is_sorted_by_key(&key) {
        permutation.sort_unstable_by_key(|&k| key(&group[k as usize]));
    }
}

/// [`in_order`] by [`Order::queue_key`], the same permutation, faster: an out-of-order group
/// is sorted by its worker timestamps, each as its distance from the group's earliest packed
/// with its position into one `u64` (a sort of plain integers, where the whole key is a
/// 32-byte tuple read through the position), and only the runs of equal timestamps are then
/// sorted by the whole key. A group whose timestamps spread too far for that (years apart) is
/// sorted by the whole key.
#[allow(clippy::cast_possible_truncation, reason = "a key's low bits are its position")]
fn in_settlement_order(permutation: &mut Vec<u32>, keys: &mut Vec<u64>, group: &[Order]) {
    permutation.clear();
    if group.is_sorted_by_key(Order::queue_key) {
        permutation.extend((0..group.len()).map(index32));
        return;
    }
    let times = group.iter().map(|o| o.placed_at.0);
    let (earliest, latest) = times.fold((i64::MAX, i64::MIN), |(e, l), t| (e.min(t), l.max(t)));
    // Bits for a position, and what is left for a time's distance from the earliest.
    let position_bits = usize::BITS - group.len().leading_zeros();
    let fits = latest.abs_diff(earliest).checked_shr(u64::BITS - position_bits) == Some(0);
    if !fits {
        in_order(permutation, group, Order::queue_key);
        return;
    }
    keys.clear();
    keys.extend(
        group
            .iter()
            .enumerate()
            .map(|(k, o)| (o.placed_at.0.abs_diff(earliest) << position_bits) | k as u64),
    );
    keys.sort_unstable();
    let position_mask = (1u64 << position_bits) - 1;
    // A position is below the group's length, which is below 2^32 (`index32`).
    permutation.extend(keys.iter().map(|&key| (key & position_mask) as u32));
    let mut run = 0;
    while run < keys.len() {
        let at = keys[run] >> position_bits;
        let end = run + keys[run..].iter().take_while(|&&key| key >> position_bits == at).count();
        if end - run > 1 {
            permutation[run..end].sort_unstable_by_key(|&k| group[k as usize].queue_key());
        }
        run = end;
    }
}

/// Writes a settlement's events over a vector's old ones: the header, then each pushed event,
/// in the vector's existing slots first (the old event is dropped there, while its memory is
/// written anyway), then past them; `finish` drops what is left of the old events.
struct EventWriter<'a> {
    events: &'a mut Vec<Event>,
    next: usize,
}

impl<'a> EventWriter<'a> {
    fn new(events: &'a mut Vec<Event>, header: Event, outcomes: usize) -> Self {
        events.truncate(outcomes + 1);
        events.reserve(outcomes + 1 - events.len());
        match events.first_mut() {
            Some(slot) => *slot = header,
            None => events.push(header),
        }
        EventWriter { events, next: 1 }
    }

    fn push(&mut self, event: Event) {
        match self.events.get_mut(self.next) {
            Some(slot) => *slot = event,
            None => self.events.push(event),
        }
        self.next += 1;
    }

    fn finish(self) {
        self.events.truncate(self.next);
    }
}

/// Settlement's per-order tables, kept in the [`OrderQueue`] between intervals so that each
/// settlement writes into memory the last one used (see [`Engine::settle_into`]). Nothing in
/// them is read before the settlement that uses them has written it.
#[derive(Debug, Default)]
pub(crate) struct SettleScratch {
    /// Each order, copied, grouped by account.
    grouped: Vec<Order>,
    /// Each grouped order's tick (beside the orders rather than with them, since an order is
    /// 16-byte aligned and the pair would take 96 bytes).
    ticks: Vec<TickRef>,
    /// The groups: each one's bucket and slots in `grouped`, in bucket order.
    groups: Vec<(usize, Range<usize>)>,
    /// Where each bucket starts in `grouped` (counting sort), and each bucket's next slot.
    starts: Vec<usize>,
    fill_at: Vec<usize>,
    /// Each order's bucket and queue position, sorted (grouping by sort).
    bucketed: Vec<u128>,
    /// One group's positions in settlement order (as many as the largest group).
    permutation: Vec<u32>,
    /// One group's worker timestamps, each with its position, being sorted.
    keys: Vec<u64>,
}

impl SettleScratch {
    /// How many orders the tables have room for.
    pub(crate) fn room(&self) -> usize {
        let per_order = self.grouped.capacity().max(self.ticks.capacity());
        per_order.max(self.bucketed.capacity()).max(self.permutation.capacity())
    }
}

/// Grouping counts orders into one bucket per account number when the accounts are at most
/// this many per order; with more, it sorts the orders by bucket instead, so that an
/// interval's settlement costs in proportion to its orders, not to the accounts registered.
const COUNTED_BUCKETS_PER_ORDER: usize = 4;

/// Copies `orders` into `scratch.grouped`, grouped by bucket, with each one's tick (`tick_of`)
/// in `scratch.ticks`, and lists the non-empty groups in `scratch.groups` in bucket order.
/// Bucket `n` holds the orders of account `n` (bucket 0 those of account 0, which does not
/// exist) and bucket `accounts + 1` those of every account number above the last. Within a
/// group the orders keep no particular order: the account pass sorts each group.
///
/// With many orders per account (at most `per_order` buckets per order; settlement gives
/// [`COUNTED_BUCKETS_PER_ORDER`]), a counting sort: each bucket's count (from `per_account`,
/// the counts the queue kept as orders were pushed, when it has them, else from a pass over
/// the orders), then one copy of each order to its bucket's next slot. With few, a sort of
/// each order's (bucket, position) packed into a `u128`, then the copies in that order.
/// Every entry of `grouped` and `ticks` below `orders.len()` is written before it is read, so
/// nothing stale from an earlier interval is seen.
fn group_by_account(
    orders: &[Order],
    (accounts, per_order): (usize, usize),
    per_account: Option<&[u32]>,
    tick_of: impl Fn(&Order) -> TickRef,
    scratch: &mut SettleScratch,
) {
    let Some(&first) = orders.first() else {
        scratch.groups.clear();
        return;
    };
    let beyond = accounts + 1;
    let bucket_of = |order: &Order| {
        usize::try_from(order.account.0).ok().filter(|&n| n <= accounts).unwrap_or(beyond)
    };
    let SettleScratch { grouped, ticks, groups, starts, fill_at, bucketed, .. } = scratch;
    let grouped = grow_to(grouped, orders.len(), first);
    let ticks = grow_to(ticks, orders.len(), TickRef::UNLISTED);
    groups.clear();
    if beyond + 1 > orders.len().saturating_mul(per_order) {
        bucketed.clear();
        bucketed.extend(orders.iter().enumerate().map(|(position, order)| {
            (bucket_of(order) as u128) << 32 | u128::from(index32(position))
        }));
        bucketed.sort_unstable();
        for (slot, &key) in bucketed.iter().enumerate() {
            #[allow(clippy::cast_possible_truncation, reason = "the low 32 bits: a position")]
            let order = &orders[key as u32 as usize];
            grouped[slot] = *order;
            ticks[slot] = tick_of(order);
            #[allow(clippy::cast_possible_truncation, reason = "a bucket, at most `beyond`")]
            let bucket = (key >> 32) as usize;
            match groups.last_mut() {
                Some((last, slots)) if *last == bucket => slots.end = slot + 1,
                _ => groups.push((bucket, slot..slot + 1)),
            }
        }
        return;
    }
    // Each bucket's count at `starts[b + 1]`: as the queue kept them, or counted here.
    starts.clear();
    starts.resize(beyond + 2, 0);
    let count_here = |starts: &mut [usize]| {
        starts.fill(0);
        for order in orders {
            starts[bucket_of(order) + 1] += 1;
        }
    };
    let kept = per_account.is_some_and(|kept| {
        for (start, &count) in starts[1..=beyond].iter_mut().zip(kept) {
            *start = count as usize;
        }
        // The orders of account numbers above the last, counted or not, by difference.
        let counted: usize = starts[1..=beyond].iter().sum();
        orders.len().checked_sub(counted).map(|rest| starts[beyond + 1] = rest).is_some()
    });
    if !kept {
        count_here(starts);
    }
    let mut copy = |starts: &mut Vec<usize>, fill_at: &mut Vec<usize>| {
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        fill_at.clear();
        fill_at.extend_from_slice(starts);
        let mut fitted = true;
        for order in orders {
            let slot = &mut fill_at[bucket_of(order)];
            if let (Some(copy), Some(tick)) = (grouped.get_mut(*slot), ticks.get_mut(*slot)) {
                *copy = *order;
                *tick = tick_of(order);
            } else {
                fitted = false;
            }
            *slot += 1;
        }
        // Each bucket filled exactly, unless the counts were not the orders'.
        fitted && fill_at[..=beyond] == starts[1..]
    };
    if !copy(starts, fill_at) {
        // Counts kept by the queue that are not its orders' (a bug) would mix accounts in a
        // group, or run the last bucket past the tables: counted again from the orders, and
        // copied again.
        debug_assert!(false, "the queue's per-account counts are not its orders'");
        count_here(starts);
        let _exact = copy(starts, fill_at);
    }
    groups.extend(
        starts.windows(2).enumerate().filter(|(_, w)| w[0] < w[1]).map(|(b, w)| (b, w[0]..w[1])),
    );
}

/// The first `len` entries of `table`, which is grown with `filler` if shorter. The entries
/// keep what an earlier settlement left there (writing them all first would cost a pass over
/// the memory): the caller writes each one before reading it.
fn grow_to<T: Copy>(table: &mut Vec<T>, len: usize, filler: T) -> &mut [T] {
    if table.len() < len {
        table.resize(len, filler);
    }
    &mut table[..len]
}

/// The account pass walks its whole holding cache in tick order, instead of sorting the indices
/// it loaded, when it loaded at least one tick in this many.
const WALK_CACHE_LOADED_PER_TICKS: usize = 8;

/// Fewest changed holdings for which [`write_back`] rebuilds an account's B-tree instead of
/// updating it entry by entry.
const REBUILD_CHANGES_MIN: usize = 8;

/// Sets an account's changed holdings (sorted by symbol, each symbol once), removing those sold
/// to zero: the map ends up exactly as inserting and removing them one by one would leave it.
/// When the changes are many next to the map, the map is rebuilt from one merged, sorted pass
/// (a bulk build, far cheaper than as many searches and inserts).
fn write_back(holdings: &mut BTreeMap<Symbol, Holding>, changes: &[(Symbol, Holding)]) {
    if changes.len() < REBUILD_CHANGES_MIN || changes.len().saturating_mul(4) < holdings.len() {
        for (symbol, holding) in changes {
            if holding.qty.is_zero() {
                holdings.remove(symbol);
            } else {
                holdings.insert(*symbol, *holding);
            }
        }
        return;
    }
    let mut old = std::mem::take(holdings).into_iter().peekable();
    let mut merged = Vec::with_capacity(old.len() + changes.len());
    for &(symbol, holding) in changes {
        while let Some(kept) = old.next_if(|(held, _)| *held < symbol) {
            merged.push(kept);
        }
        // The old value of a changed symbol is replaced (or removed, when sold to zero).
        let _replaced = old.next_if(|(held, _)| *held == symbol);
        if !holding.qty.is_zero() {
            merged.push((symbol, holding));
        }
    }
    merged.extend(old);
    *holdings = BTreeMap::from_iter(merged);
}

/// Where each symbol's tick is in a tick set: an open-addressing hash table of the symbols'
/// [`Symbol::order_key`]s, at most half full, since every order of an interval looks its
/// symbol up (a hash and, nearly always, one probe, where a binary search of a hundred ticks
/// takes seven dependent steps).
#[derive(Debug)]
struct TickIndex {
    /// Each slot: a tick's key and its index in the tick set, or `EMPTY`.
    slots: Vec<((u128, u8), u32)>,
    /// `slots.len() - 1`; the length is a power of two.
    mask: usize,
    /// 64 less the bits of a slot number: a hash's top bits pick its first slot.
    shift: u32,
}

impl TickIndex {
    /// No symbol is empty, so no key has length 0.
    const EMPTY: ((u128, u8), u32) = ((0, 0), 0);

    fn new(ticks: &[Tick]) -> TickIndex {
        let len = ticks.len().saturating_mul(2).max(16).next_power_of_two();
        let mask = len - 1;
        let shift = u64::BITS - len.trailing_zeros();
        let mut slots = vec![Self::EMPTY; len];
        for (index, tick) in ticks.iter().enumerate() {
            let key = tick.symbol.order_key();
            let mut slot = Self::first_slot(key, shift);
            // A tick set holds each symbol once and the table has free slots: this ends.
            while slots[slot] != Self::EMPTY {
                slot = (slot + 1) & mask;
            }
            slots[slot] = (key, TickRef::of_index(index).0);
        }
        TickIndex { slots, mask, shift }
    }

    /// The slot a key's probe starts at: the top `64 - shift` bits of its bits folded into 64
    /// and multiplied by an odd constant (Fibonacci hashing: a product's top bits depend on
    /// every bit of the input, its low bits only on the input's low bits). Not for anything
    /// adversarial: the keys are the listed symbols, and a probe sequence is at worst as long
    /// as the tick set.
    #[allow(clippy::cast_possible_truncation, reason = "a hash keeps some of the bits")]
    fn first_slot((bytes, len): (u128, u8), shift: u32) -> usize {
        let folded = (bytes as u64) ^ ((bytes >> 64) as u64).rotate_left(29) ^ u64::from(len);
        (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
    }

    /// The index of `symbol`'s tick, if the tick set has one.
    fn position(&self, symbol: &Symbol) -> Option<usize> {
        let key = symbol.order_key();
        let mut slot = Self::first_slot(key, self.shift);
        loop {
            let (held, index) = self.slots[slot];
            if held == key {
                return usize::try_from(index).ok();
            }
            if held == Self::EMPTY.0 {
                return None;
            }
            slot = (slot + 1) & self.mask;
        }
    }
}

/// An order's tick: the index of its symbol's tick in the tick set, or the reason it has none.
/// Four bytes, since settlement keeps one per order (a tick set has at most
/// `TICKS_PER_INTERVAL_MAX` ticks, far below the two reserved values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TickRef(u32);

const _: () = assert!(TICKS_PER_INTERVAL_MAX < TickRef::NONE.0 as usize);

impl TickRef {
    /// The symbol is listed but has no tick this interval.
    const NONE: TickRef = TickRef(u32::MAX - 1);
    /// The symbol is not listed and has no tick this interval.
    const UNLISTED: TickRef = TickRef(u32::MAX);

    fn of_index(index: usize) -> TickRef {
        match u32::try_from(index) {
            Ok(index) if index < Self::NONE.0 => TickRef(index),
            _ => unreachable!("a tick set has at most TICKS_PER_INTERVAL_MAX ticks"),
        }
    }

    fn index(self) -> Option<usize> {
        if self.0 < Self::NONE.0 { usize::try_from(self.0).ok() } else { None }
    }
}

/// A holding of the account being settled, as settlement has left it so far.
#[derive(Debug, Clone, Copy)]
struct CachedHolding {
    holding: Holding,
    changed: bool,
}

/// A slot among the orders grouped by account, in 32 bits: settlement refuses more than
/// [`SETTLEMENT_ORDERS_MAX`] orders before numbering them.
fn index32(index: usize) -> u32 {
    debug_assert!(index < SETTLEMENT_ORDERS_MAX, "settlement checks the queue length first");
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// One order's outcome, as decided, before its event is built.
#[derive(Debug, Clone, Copy)]
enum Decided {
    /// Filled on this tick.
    Filled { tick: TickRef, terms: FillTerms },
    /// Rejected, with what the engine saw.
    Rejected { tick: TickRef, reason: RejectReason, cash_seen: Cash, holding_seen: Qty },
}

impl Decided {
    /// The outcome of an order whose account does not exist.
    fn unknown(tick: TickRef) -> Decided {
        Decided::Rejected {
            tick,
            reason: RejectReason::UnknownAccount,
            cash_seen: Cash::ZERO,
            holding_seen: Qty::ZERO,
        }
    }

    fn event(&self, order: Order, interval: IntervalId, ticks: &[Tick]) -> Event {
        let tick = |tick: TickRef| tick.index().and_then(|index| ticks.get(index));
        match *self {
            Decided::Filled { tick: filled_on, terms } => match tick(filled_on) {
                Some(tick) => Event::OrderFilled(Fill {
                    order,
                    interval,
                    price: tick.fill_price(),
                    tick_time: tick.time,
                    amount: terms.amount,
                    cash_after: terms.cash_after,
                    holding_after: terms.holding_after,
                }),
                None => unreachable!("a fill's tick is in the tick set"),
            },
            Decided::Rejected { tick: seen, reason, cash_seen, holding_seen } => {
                Event::OrderRejected(Rejection {
                    order,
                    interval,
                    reason,
                    price_seen: tick(seen).map(Tick::fill_price),
                    cash_seen,
                    holding_seen,
                })
            }
        }
    }
}

/// The terms an order of an existing account fills on and the holding after it, or why it
/// cannot fill: settlement's decision, also made again by replay (`State::apply`).
pub(crate) fn fill_terms(
    order: &Order,
    tick: Option<&Tick>,
    listed: bool,
    cash: Cash,
    held: Holding,
) -> Result<(FillTerms, Holding), RejectReason> {
    use RejectReason as R;
    if order.qty.is_zero() {
        return Err(R::ZeroQuantity);
    }
    if Some(order.qty) > Qty::from_units(ORDER_QTY_UNITS_MAX) {
        return Err(R::QuantityTooLarge);
    }
    if !listed {
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
    Ok((FillTerms { amount, cash_after, holding_after: holding.qty }, holding))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 24] = [
        "A", "AA", "AB", "B", "BA", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N",
        "O", "P", "Q", "R", "S", "T", "U",
    ];

    fn holding(qty: u64) -> Holding {
        Holding { qty: Qty::from_raw(qty), cost_basis: Cash::from_raw(qty.saturating_mul(3)) }
    }

    proptest! {
        /// Whichever way `write_back` takes (entry by entry or a rebuild), the map ends up as
        /// inserting and removing the changes one by one leaves it.
        #[test]
        fn write_back_is_insert_and_remove(
            old in proptest::collection::btree_map(0..NAMES.len(), 1..5u64, 0..NAMES.len()),
            changed in proptest::collection::btree_map(0..NAMES.len(), 0..5u64, 0..NAMES.len()),
        ) {
            let symbol = |i: usize| Symbol::new(NAMES[i]).unwrap();
            let mut holdings: BTreeMap<Symbol, Holding> =
                old.iter().map(|(i, q)| (symbol(*i), holding(*q))).collect();
            let mut changes: Vec<(Symbol, Holding)> =
                changed.iter().map(|(i, q)| (symbol(*i), holding(*q))).collect();
            changes.sort_unstable_by_key(|(s, _)| *s);
            let mut expected = holdings.clone();
            for (s, h) in &changes {
                if h.qty.is_zero() {
                    expected.remove(s);
                } else {
                    expected.insert(*s, *h);
                }
            }
            write_back(&mut holdings, &changes);
            prop_assert_eq!(holdings, expected);
        }

    }

    fn order_at(id: u64, placed_at: i64, worker: u128) -> Order {
        Order {
            id: crate::ids::OrderId(id),
            client_id: crate::ids::ClientOrderId(id),
            account: AccountId(1),
            symbol: Symbol::new("A").unwrap(),
            side: Side::Buy,
            qty: Qty::from_raw(1),
            kind: OrderKind::Market,
            placed_at: Timestamp(placed_at),
            worker: crate::ids::WorkerId(worker),
        }
    }

    proptest! {
        /// The packed-key sort of a group gives exactly the permutation of the comparison sort
        /// by the whole queue key, with times equal, close, anywhere in `i64` (the ends
        /// included, where a distance from the earliest needs all 64 bits and the comparison
        /// sort takes over), and workers and ids breaking the ties.
        #[test]
        fn settlement_order_is_the_queue_key_order(
            times in proptest::collection::vec(
                (prop_oneof![
                    prop::sample::select(vec![i64::MIN, -1, 0, 1, i64::MAX]),
                    0..4i64,
                    any::<i64>(),
                ], 0..3u128),
                0..120,
            ),
            ids in any::<u64>(),
            narrow in prop::option::of((any::<i64>(), 1..64i64)),
        ) {
            // Times as drawn, or (the packed keys' case) squeezed into a few values anywhere
            // in `i64`, the ends included.
            let squeeze = |at: i64| match narrow {
                Some((base, spread)) => base.saturating_add(at.rem_euclid(spread)),
                None => at,
            };
            let group: Vec<Order> = times
                .iter()
                .enumerate()
                .map(|(i, &(at, worker))| {
                    order_at((i as u64).wrapping_mul(ids | 1), squeeze(at), worker)
                })
                .collect();
            let (mut expected, mut got, mut keys) = (Vec::new(), Vec::new(), Vec::new());
            in_order(&mut expected, &group, Order::queue_key);
            in_settlement_order(&mut got, &mut keys, &group);
            prop_assert_eq!(&got, &expected);
            let sorted: Vec<_> = got.iter().map(|&k| group[k as usize].queue_key()).collect();
            prop_assert!(sorted.is_sorted());
        }
    }

    /// At the edge of the packed keys: three orders leave 62 bits for a time's distance from
    /// the earliest, so a spread of 2^62 - 1 is packed and one past 2^62 sorted by the whole
    /// key (packed, its distance would lose its top bit and sort before a nearer time); both
    /// give the comparison sort's order.
    #[test]
    fn the_widest_packed_spread_and_the_first_too_wide() {
        for spread in [(1i64 << 62) - 1, (1 << 62) + 1] {
            for base in [i64::MIN, -7, 0, i64::MAX - spread] {
                let group = [
                    order_at(3, base + spread, 0),
                    order_at(1, base, 1),
                    order_at(5, base + 5, 0),
                    order_at(2, base, 0),
                ];
                for len in [3, 4] {
                    let group = &group[..len];
                    let (mut expected, mut got, mut keys) = (Vec::new(), Vec::new(), Vec::new());
                    in_order(&mut expected, group, Order::queue_key);
                    in_settlement_order(&mut got, &mut keys, group);
                    assert_eq!(got, expected, "spread {spread}, base {base}, {len} orders");
                }
            }
        }
    }

    proptest! {
        /// Grouping by a sort and by counting (with the queue's counts or without) give the
        /// same groups, in bucket order, each with the same orders and their ticks, for account
        /// numbers 0, known, and past the last (up to `u64::MAX`) alike.
        #[test]
        fn grouping_by_sort_and_by_counting_agree(
            numbers in proptest::collection::vec(
                prop_oneof![0..12u64, prop::sample::select(vec![40, 1 << 20, u64::MAX])],
                1..200,
            ),
            accounts in 0..10usize,
        ) {
            let orders: Vec<Order> = numbers
                .iter()
                .enumerate()
                .map(|(i, &n)| Order { account: AccountId(n), ..order_at(i as u64, 0, 0) })
                .collect();
            let mut kept = vec![0u32; 64];
            for order in &orders {
                if let Some(count) = usize::try_from(order.account.0).ok().and_then(|n| kept.get_mut(n)) {
                    *count += 1;
                }
            }
            let tick_of = |order: &Order| TickRef((order.id.0 % 7) as u32);
            let grouped = |per_order: usize, per_account: Option<&[u32]>| {
                let mut scratch = SettleScratch::default();
                group_by_account(&orders, (accounts, per_order), per_account, tick_of, &mut scratch);
                scratch
                    .groups
                    .iter()
                    .map(|(bucket, slots)| {
                        let mut group: Vec<(u64, u64, TickRef)> = slots
                            .clone()
                            .map(|s| (scratch.grouped[s].id.0, scratch.grouped[s].account.0, scratch.ticks[s]))
                            .collect();
                        group.sort_unstable_by_key(|&(id, _, _)| id);
                        (*bucket, group)
                    })
                    .collect::<Vec<_>>()
            };
            let by_sort = grouped(0, None);
            prop_assert_eq!(&grouped(usize::MAX, None), &by_sort);
            prop_assert_eq!(&grouped(usize::MAX, Some(&kept)), &by_sort);
            let mut seen = 0;
            for (bucket, group) in &by_sort {
                for &(id, account, tick) in group {
                    let expected = usize::try_from(account).ok().filter(|&n| n <= accounts);
                    prop_assert_eq!(*bucket, expected.unwrap_or(accounts + 1));
                    prop_assert_eq!(tick, tick_of(&orders[usize::try_from(id).unwrap()]));
                    seen += 1;
                }
            }
            prop_assert_eq!(seen, orders.len());
            prop_assert!(by_sort.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    /// Symbols that differ in one character start their probes in different slots: the first
    /// slot comes from the top bits of the hash, which depend on every character.
    #[test]
    fn symbols_one_character_apart_spread_over_the_slots() {
        for stem in ["ABC", "GOOG", "BRK.", "EURUS"] {
            let symbols: Vec<Symbol> =
                ('A'..='Z').map(|c| Symbol::new(&format!("{stem}{c}")).unwrap()).collect();
            let shift = u64::BITS - 64u32.trailing_zeros();
            let slots: std::collections::BTreeSet<usize> =
                symbols.iter().map(|s| TickIndex::first_slot(s.order_key(), shift)).collect();
            // 26 keys thrown into 64 slots at random fill about 21 of them; a hash whose slot
            // came from the product's middle bits gave 1 to 4 here.
            assert!(slots.len() >= 12, "{stem}?: {} first slots of 64", slots.len());
        }
    }

    proptest! {
        /// The tick index finds each symbol's tick where the tick set has it, and no other.
        #[test]
        fn tick_index_matches_the_tick_set(
            present in proptest::collection::btree_set(0..NAMES.len(), 0..NAMES.len()),
            wanted in 0..NAMES.len(),
        ) {
            let symbol = |i: usize| Symbol::new(NAMES[i]).unwrap();
            let mut symbols: Vec<Symbol> = present.iter().map(|i| symbol(*i)).collect();
            symbols.sort_unstable();
            let price = crate::money::Price::from_raw(1);
            let ticks: Vec<Tick> = symbols
                .iter()
                .map(|&symbol| Tick {
                    symbol,
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    volume: Qty::ZERO,
                    time: Timestamp(0),
                })
                .collect();
            let index = TickIndex::new(&ticks);
            for (position, known) in symbols.iter().enumerate() {
                prop_assert_eq!(index.position(known), Some(position));
            }
            prop_assert_eq!(
                index.position(&symbol(wanted)),
                symbols.binary_search(&symbol(wanted)).ok()
            );
        }
    }
}
