//! The master's core: the one writer. It owns the engine, the order queue, the sessions and the
//! journal's write side, runs on a thread of its own and takes requests one at a time from a
//! bounded channel, so nothing in it needs a lock. Argon2 and socket IO happen elsewhere.
//!
//! **Architecture invariant:** no order, registration or session is answered with success before
//! the journal commit that holds it has returned.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use engine::{
    AccountId, Cash, ClientOrderId, Email, Engine, Event, IntervalId, OpenAccount, Order, OrderId,
    OrderKind, OrderQueue, PasswordHash, Qty, RejectReason, Side, Symbol, Tick, TickSet, Timestamp,
    Username, WorkerId,
};
use journal::Journal;
use net::{
    Control, DataPayload, Failure, FillReport, HistoryEntry, Portfolio, PortfolioHolding, Reason,
    Response, UserInfo,
};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tracing::{error, info, warn};

use crate::prices::PriceBatch;
use crate::retry::{FillIndex, Known, OrderKey, OrderTerms, RetryMemory};
use crate::sessions::{SessionId, SessionRecord, SessionTable};
use crate::snapshots::Snapshotter;

/// What an order hears when the master stops before its interval settles.
const SHUTTING_DOWN: &str = "the master is shutting down; retry in a moment";

/// The journal meta key holding the next order id.
pub const NEXT_ORDER_ID_KEY: &str = "next_order_id";

/// The master's wall clock, as the engine's timestamp.
pub fn now() -> Timestamp {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    Timestamp(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// Limits and settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Cash a new account starts with.
    pub initial_cash: Cash,
    /// Orders one interval may queue; past it orders are answered busy at once.
    pub orders_per_interval_max: usize,
    /// Orders one account may queue per interval.
    pub orders_per_account_per_interval_max: usize,
    /// Accounts the master accepts.
    pub accounts_max: u64,
    /// Order outcomes remembered for retried orders (by account and client order id).
    pub remembered_outcomes_max: usize,
}

/// What a user query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserQuery {
    /// getUserInfo.
    Info,
    /// getUserPortfolio.
    Portfolio,
    /// getUserTransactionHistory.
    History,
}

/// A request to the core; each carries the channel its answer goes back on.
#[derive(Debug)]
pub enum CoreRequest {
    /// Open an account with an already hashed password.
    Register {
        /// The username.
        username: Username,
        /// The email.
        email: Email,
        /// The argon2id PHC string.
        hash: PasswordHash,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// Look up an account's id and stored hash for a login.
    Credentials {
        /// The username, compared exactly.
        username: Username,
        /// Where the answer goes.
        reply: oneshot::Sender<Option<(AccountId, PasswordHash)>>,
    },
    /// Replace an account's stored hash by one of the same password with the configured costs,
    /// after a login (`Event::PasswordRehashed`); nothing happens if the stored hash is no
    /// longer `stored` (another login rehashed it first).
    RehashPassword {
        /// The account.
        account: AccountId,
        /// The hash the login verified against.
        stored: PasswordHash,
        /// The new hash.
        rehashed: PasswordHash,
        /// Where the answer goes: whether the new hash was stored, or why not.
        reply: oneshot::Sender<Result<bool, String>>,
    },
    /// Start a session after a verified login.
    StartSession {
        /// The account.
        account: AccountId,
        /// The client's IP.
        ip: IpAddr,
        /// Remembered (absolute lifetime) rather than expirable (idle timeout).
        remember: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// login(sessionID).
    ResumeSession {
        /// The session.
        session: SessionId,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// Checks a session (switchState).
    CheckSession {
        /// The session.
        session: SessionId,
        /// Where the answer goes: the account, or the failure.
        reply: oneshot::Sender<Result<AccountId, Failure>>,
    },
    /// logout(sessionID).
    Logout {
        /// The session.
        session: SessionId,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// purchaseAsset / sellAsset.
    Order {
        /// The caller's session.
        session: SessionId,
        /// Buy or sell.
        side: Side,
        /// The asset.
        symbol: Symbol,
        /// How much.
        qty: Qty,
        /// The client's id for the order (idempotency key per account).
        client_id: ClientOrderId,
        /// When the worker received it.
        placed_at: Timestamp,
        /// Which worker relayed it.
        worker: WorkerId,
        /// Where the answer goes, after the interval's commit.
        reply: Reply,
    },
    /// getUserInfo / getUserPortfolio / getUserTransactionHistory.
    User {
        /// The caller's session.
        session: SessionId,
        /// Whose data.
        username: Username,
        /// Which data.
        query: UserQuery,
        /// Where the answer goes.
        reply: oneshot::Sender<Response>,
    },
    /// The master is stopping and the last interval has settled: answer the orders queued
    /// since, and every later one, with a failure, so that no caller waits for an interval
    /// that will not come.
    Stop {
        /// Answered once done.
        reply: oneshot::Sender<()>,
    },
    /// Nothing: wakes a core waiting for requests to look at its interval lane
    /// ([`Core::run_with_intervals`]).
    Wake,
    /// Close the interval's order list: the orders queued so far settle at the next `Settle`,
    /// those that come after at the one after it. The interval loop sends it just before it
    /// starts fetching the interval's prices, so that no order fills at a price fetched
    /// before the order was placed.
    Cut,
    /// Settle the interval with these prices: the orders queued before the last `Cut` (every
    /// queued order when no `Cut` came since the last settlement).
    Settle {
        /// The interval's prices.
        batch: PriceBatch,
        /// Where the summary goes.
        reply: oneshot::Sender<SettleSummary>,
    },
    /// Lists symbols not listed yet (at start-up).
    ListAssets {
        /// The configured assets.
        symbols: Vec<Symbol>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// The latest tick time the engine has seen (to resume a recorded source).
    LatestTickTime {
        /// Where the answer goes.
        reply: oneshot::Sender<Option<Timestamp>>,
    },
    /// Every listed symbol, sorted (once listed at start-up, the set does not change).
    ListedAssets {
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<Symbol>>,
    },
}

/// How [`Core::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEnd {
    /// Every sender was gone: the master is shutting down.
    Stopped,
    /// Handling a request panicked (the panic's message): the core stopped serving.
    Failed(String),
}

/// Runs `f`, turning a panic in it into its message. What `f` captured is not used after a
/// panic by its callers ([`Core::run`] stops, the snapshot thread ends), hence
/// `AssertUnwindSafe`.
pub fn contain_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

/// What one settlement did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleSummary {
    /// The interval settled, if one was.
    pub interval: Option<IntervalId>,
    /// Orders filled.
    pub filled: usize,
    /// Orders rejected.
    pub rejected: usize,
    /// True when the journal refused the batch (nothing was acknowledged).
    pub failed: bool,
    /// Microseconds the engine took to settle the queue.
    pub settle_micros: u64,
    /// Microseconds the journal took to make the interval durable.
    pub commit_micros: u64,
}

/// Where the core sends the answer to an order.
#[derive(Debug)]
pub enum Reply {
    /// To a task waiting on a oneshot.
    Once(oneshot::Sender<Response>),
    /// Straight to a worker link's writer as the reply to a relay, with no task in between:
    /// an interval's answers then wake the writer once, not a task per order.
    Link(LinkReply),
}

/// The reply to one relayed order, routed to its link's writer.
#[derive(Debug)]
pub struct LinkReply {
    /// The worker's relay id, echoed in the reply.
    pub relay_id: u64,
    /// The link writer's queue.
    pub out: mpsc::UnboundedSender<LinkOut>,
    /// The relay's place in the link's in-flight bound: it travels with the reply and is
    /// released when the writer has taken it, so the queue never holds more than the bound.
    pub permit: OwnedSemaphorePermit,
    /// A place in a tighter bound of the link for large answers (histories), released with
    /// `permit`.
    pub large: Option<OwnedSemaphorePermit>,
}

/// A message for a worker link's writer and the permits that bound the writer's queue.
#[derive(Debug)]
pub struct LinkOut {
    /// The message.
    pub control: Control,
    /// Released when the writer takes the message.
    pub permit: OwnedSemaphorePermit,
    /// A large answer's place ([`LinkReply::large`]), released with `permit`.
    pub large: Option<OwnedSemaphorePermit>,
}

impl Reply {
    /// Sends the answer; a caller or link that is gone is not an error (it cannot be told).
    pub fn send(self, response: Response) {
        match self {
            Reply::Once(tx) => {
                let _ = tx.send(response);
            }
            Reply::Link(LinkReply { relay_id, out, permit, large }) => {
                let control = Control::RelayReply { relay_id, response };
                let _ = out.send(LinkOut { control, permit, large });
            }
        }
    }
}

impl From<oneshot::Sender<Response>> for Reply {
    fn from(tx: oneshot::Sender<Response>) -> Self {
        Reply::Once(tx)
    }
}

/// The core's state. Build with [`Core::new`], run with [`Core::run`] on a thread of its own.
pub struct Core {
    engine: Engine,
    journal: Arc<Journal>,
    config: CoreConfig,
    sessions: SessionTable,
    /// Orders queued since the last cut: they settle in the interval after the current one.
    queue: OrderQueue,
    /// Orders of the current interval, cut before its prices were fetched.
    settling: OrderQueue,
    /// Whether a [`CoreRequest::Cut`] came since the last settlement.
    cut_made: bool,
    /// The assets whose prices the master fetches, sorted (`None` until
    /// [`CoreRequest::ListAssets`] says): an asset listed by an earlier run but no longer
    /// fetched would take orders that wait an interval to be refused `no_price`, forever.
    priced: Option<Vec<Symbol>>,
    /// Orders per account in `queue` (the interval's limit per account).
    queued_per_account: HashMap<AccountId, usize>,
    retry: RetryMemory,
    /// Every fill ever settled, for retries the retry memory has forgotten.
    fills: FillIndex,
    /// Sessions whose last use is due for storing ([`crate::sessions::SessionInfo::store_again`]).
    sessions_due: Vec<crate::sessions::SessionKey>,
    /// Sessions found expired when used since the last interval: their rows are deleted with
    /// the interval's expired sessions.
    sessions_expired_on_use: Vec<crate::sessions::SessionKey>,
    /// The last interval's events; its memory is reused by the next settlement.
    settled_events: Vec<Event>,
    /// Set by [`CoreRequest::Stop`]: orders are refused.
    stopped: bool,
    next_order_id: u64,
    /// Set when the journal refused a write: the reason; writes are refused until a restart.
    halted: Option<String>,
    /// Why the core must stop serving (its state could not be taken back to the journal's
    /// after a failed write): [`Core::run`] returns [`CoreEnd::Failed`] with it.
    failed: Option<String>,
    /// The snapshot thread (none if it could not start: recovery then replays more events).
    /// Dropping the core drops it, which waits for the snapshot being written: it holds the
    /// journal open, and the file must be free (for a restart, `pt-replay`) once the core is
    /// gone.
    snapshotter: Option<Snapshotter>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("accounts", &self.engine.state().accounts().len())
            .field("queued", &self.queue.len())
            .field("settling", &self.settling.len())
            .field("next_order_id", &self.next_order_id)
            .field("halted", &self.halted)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

fn failure(reason: Reason, message: impl Into<String>) -> Failure {
    Failure::new(reason, message)
}

/// The answer to an order whose client order id already has an outcome (`first` asked for
/// `first_terms`): that outcome, when the order is the same (a retry); when the id was used for
/// another order (another side, symbol or quantity), filled or refused, a refusal of this one
/// that says so, in the return this request expects.
fn retry_answer(
    first_terms: OrderTerms,
    first: &Response,
    terms: OrderTerms,
    client_id: ClientOrderId,
) -> Response {
    if first_terms == terms {
        return first.clone();
    }
    let order = match first {
        Response::PurchaseSuccess(fill) | Response::SellSuccess(fill) => {
            format!("order {} ({first_terms}, filled)", fill.order)
        }
        Response::PurchaseFail(f) | Response::SellFail(f) => {
            format!("another order ({first_terms}), refused: {}: {}", f.reason.name(), f.message)
        }
        _ => format!("another order ({first_terms}, refused)"),
    };
    id_used_for_another_order(client_id, &order, terms.side)
}

/// The refusal of an order whose client order id names `order`, another order.
fn id_used_for_another_order(client_id: ClientOrderId, order: &str, side: Side) -> Response {
    let message = format!(
        "client order id {} was already used for {order}; this order was not placed: use \
         another id",
        client_id.0
    );
    order_fail(side, failure(Reason::InvalidArgument, message))
}

/// What a rejected order's answer says, in words: the client shows it after the reason's name
/// and code. `seen` is the engine's rejection, with what it saw (the price, the cash, the
/// holding), for an order refused at settlement; `None` for one refused on arrival.
fn rejection_message(
    reason: RejectReason,
    symbol: &Symbol,
    seen: Option<&engine::Rejection>,
) -> String {
    match (reason, seen) {
        (RejectReason::UnknownAccount, _) => "the account does not exist".to_owned(),
        (RejectReason::ZeroQuantity, _) => "the quantity must be more than zero".to_owned(),
        (RejectReason::QuantityTooLarge, _) => format!(
            "the quantity is over the limit of {} units per order",
            engine::limits::ORDER_QTY_UNITS_MAX
        ),
        (RejectReason::UnknownSymbol, _) => format!("{symbol} is not a listed asset"),
        (RejectReason::NoPrice, _) => format!("no price for {symbol} this interval"),
        (RejectReason::InsufficientCash, Some(r)) => {
            // What the buy would have cost at this interval's price (rounded up, as a buy is).
            let qty = r.order.qty;
            match r.price_seen.and_then(|p| Some((p, engine::money::notional(p, qty, Side::Buy)?)))
            {
                Some((price, cost)) => format!(
                    "not enough cash: {qty} {symbol} at {price} cost {cost}, have {}",
                    r.cash_seen
                ),
                None => format!("not enough cash: have {}", r.cash_seen),
            }
        }
        (RejectReason::InsufficientHoldings, Some(r)) => {
            format!("not enough {symbol}: selling {}, hold {}", r.order.qty, r.holding_seen)
        }
        (RejectReason::InsufficientCash, None) => "not enough cash".to_owned(),
        (RejectReason::InsufficientHoldings, None) => format!("not enough {symbol}"),
        (RejectReason::Overflow, _) => "the amount is too large to settle".to_owned(),
    }
}

/// The failure answer to an order of `side`.
pub(crate) fn order_fail(side: Side, failure: Failure) -> Response {
    match side {
        Side::Buy => Response::PurchaseFail(failure),
        Side::Sell => Response::SellFail(failure),
    }
}

impl Core {
    /// A core over a recovered engine and its open journal. Restores the sessions stored in the
    /// journal (dropping expired or unreadable ones) and the retry memory from the journal's tail.
    pub fn new(
        engine: Engine,
        journal: Arc<Journal>,
        config: CoreConfig,
        mut sessions: SessionTable,
    ) -> Self {
        let now = now();
        match journal.sessions() {
            Ok(stored) => {
                let mut restored = 0usize;
                let mut dropped = Vec::new();
                for (key, bytes) in stored {
                    let ok = SessionRecord::decode(&bytes)
                        .map(|record| sessions.restore(record, now))
                        .unwrap_or(false);
                    if ok {
                        restored += 1;
                    } else {
                        dropped.push(key);
                    }
                }
                // One commit for all of them: after a long stop, every expirable session may
                // have expired, and a commit each would hold the start-up for minutes.
                if let Err(e) = journal.remove_sessions(&dropped) {
                    warn!(cause = %e, "cannot remove the expired or unreadable sessions");
                }
                info!(restored, dropped = dropped.len(), "sessions restored");
            }
            Err(e) => warn!(cause = %e, "cannot read stored sessions; everyone must log in again"),
        }
        let stored = match journal.meta(NEXT_ORDER_ID_KEY) {
            Ok(None) => None,
            Ok(Some(bytes)) => match <[u8; 8]>::try_from(bytes.as_slice()) {
                Ok(bytes) => Some(u64::from_be_bytes(bytes)),
                Err(_) => {
                    warn!(
                        bytes = bytes.len(),
                        "the stored next order id is not 8 bytes; taking it from the orders the journal holds"
                    );
                    None
                }
            },
            Err(e) => {
                warn!(cause = %e, "cannot read the next order id; taking it from the orders the journal holds");
                None
            }
        };
        // Never below an id the journal holds, whatever the stored value says: past every fill
        // here, past the rejections of the journal's tail in `restore_outcomes`.
        let after_fills = engine
            .state()
            .accounts()
            .iter()
            .filter_map(|account| account.history.iter().map(|fill| fill.order.id.0).max())
            .max()
            .map_or(1, |id| id.saturating_add(1));
        let next_order_id = stored.unwrap_or(1).max(after_fills);
        let retry =
            // Two intervals' orders may wait at once: the one being settled (cut before its
            // prices were fetched) and the next one's, queued meanwhile.
            RetryMemory::new(
                config.remembered_outcomes_max,
                config.orders_per_interval_max.saturating_mul(2),
            );
        let fills = FillIndex::of_state(engine.state());
        // The snapshot thread's own copy of the state: made once, here, before serving.
        let copy = engine.state().clone();
        let snapshotter = Snapshotter::start(copy, journal.last_seq(), Arc::clone(&journal))
            .map_err(|e| warn!(cause = %e, "cannot start the snapshot thread; no snapshots"))
            .ok();
        let mut core = Self {
            engine,
            journal,
            config,
            sessions,
            queue: OrderQueue::new(),
            settling: OrderQueue::new(),
            cut_made: false,
            priced: None,
            queued_per_account: HashMap::new(),
            retry,
            fills,
            sessions_due: Vec::new(),
            sessions_expired_on_use: Vec::new(),
            settled_events: Vec::new(),
            stopped: false,
            next_order_id,
            halted: None,
            failed: None,
            snapshotter,
        };
        core.restore_outcomes();
        core
    }

    /// Rebuilds the retry memory from the newest committed order outcomes.
    fn restore_outcomes(&mut self) {
        let last = self.journal.last_seq().0;
        let window = self.config.remembered_outcomes_max as u64;
        let from = journal::Seq(last.saturating_sub(window.saturating_mul(2)).max(1));
        let records = match self.journal.read_records(from) {
            Ok(records) => records,
            Err(e) => {
                warn!(cause = %e, "cannot read the journal tail; retries of recent rejections are decided again (fills are still recognised)");
                return;
            }
        };
        // The outcomes before the first interval header read have no known settlement time:
        // they are left out of the retry memory (a fill among them is still answered from the
        // fill index); their ids still count for the next one.
        let mut settled_at = None;
        let mut saw_outcome = false;
        for record in records {
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    warn!(cause = %e, "cannot read the journal tail further; retries of the rejections after it are decided again (fills are still recognised)");
                    break;
                }
            };
            if record.event.outcome_order().is_some() {
                saw_outcome = true;
                let after = order_id_of(&record.event).saturating_add(1);
                self.next_order_id = self.next_order_id.max(after);
            }
            match (&record.event, settled_at) {
                (Event::IntervalSettled(s), _) => settled_at = Some(s.at),
                (Event::OrderFilled(_) | Event::OrderRejected(_), Some(settled_at)) => {
                    if let Some((key, terms, response)) =
                        outcome_response(&record.event, settled_at)
                    {
                        self.retry.remember(key, terms, response);
                    }
                }
                _ => {}
            }
        }
        // Order ids rise from interval to interval, so the tail's outcomes hold the highest id
        // given. A tail with none (quiet intervals only) says nothing of the rejections before
        // it, which the state does not keep: the journal is read further back, window after
        // doubling window, to the last outcome.
        if !saw_outcome && from.0 > 1 {
            let after = self.highest_order_id_before(from).map_or(0, |id| id.saturating_add(1));
            self.next_order_id = self.next_order_id.max(after);
        }
    }

    /// The highest order id of an outcome before record `end`, read back from `end` in windows
    /// that double, up to the first window holding an outcome (`None`: none at all).
    fn highest_order_id_before(&self, end: journal::Seq) -> Option<u64> {
        let mut end = end.0;
        let mut size = 1_024u64;
        while end > 1 {
            let start = end.saturating_sub(size).max(1);
            let records = match self.journal.read_records(journal::Seq(start)) {
                Ok(records) => records,
                Err(e) => {
                    warn!(cause = %e, "cannot read the journal back for the highest order id");
                    return None;
                }
            };
            let mut highest = None;
            for record in records {
                let Ok(record) = record else { break };
                if record.seq.0 >= end {
                    break;
                }
                if let Some(order) = record.event.outcome_order() {
                    highest = highest.max(Some(order.id.0));
                }
            }
            if highest.is_some() {
                return highest;
            }
            end = start;
            size = size.saturating_mul(2);
        }
        None
    }

    /// Serves requests until every sender is gone, or until handling one panics or leaves the
    /// state ahead of a journal it cannot be taken back to (see `Core::reload`).
    ///
    /// A panic is caught, logged and returned as [`CoreEnd::Failed`], and the core serves
    /// nothing more: it may have come in the middle of a settlement, with the engine's state
    /// ahead of the journal, so answering on would answer from a state that is not durable.
    /// The journal is halted first, so that no other writer (the snapshot thread, the admin
    /// socket) writes after it. The requests still queued, and the one being handled, are
    /// dropped unanswered: their callers answer a failure (`internal` or `master_unavailable`;
    /// an order's outcome is then unknown, as after any failed commit: redb may have made the
    /// commit durable before it panicked). The caller stops the master. The known cause is
    /// redb, which verifies its pages when the file opens and can panic on a page damaged since
    /// (docs/RELIABILITY.md); a restart checks the file again and names the damage.
    pub fn run(&mut self, requests: tokio::sync::mpsc::Receiver<CoreRequest>) -> CoreEnd {
        let (_none, intervals) = tokio::sync::mpsc::channel(1);
        self.run_with_intervals(requests, intervals)
    }

    /// [`Core::run`] with a lane of its own for the interval loop's requests (`Cut`, `Settle`;
    /// the final ones, as the master stops, come on `requests` behind what is queued): one
    /// waiting there is handled before the next of `requests`, so clients' requests queued by
    /// the thousand (history answers of 10,000 entries, say) do not delay settlement and the
    /// answers of the orders waiting for it. Whoever sends on `intervals` sends
    /// [`CoreRequest::Wake`] on `requests` after it, to wake a core waiting there.
    pub fn run_with_intervals(
        &mut self,
        mut requests: tokio::sync::mpsc::Receiver<CoreRequest>,
        mut intervals: tokio::sync::mpsc::Receiver<CoreRequest>,
    ) -> CoreEnd {
        loop {
            if let Some(cause) = self.failed.take() {
                return CoreEnd::Failed(cause);
            }
            let request = match intervals.try_recv() {
                Ok(request) => request,
                Err(_) => match requests.blocking_recv() {
                    Some(CoreRequest::Wake) => continue,
                    Some(request) => request,
                    None => break,
                },
            };
            if let Err(cause) = contain_panic(|| self.handle(request)) {
                error!(
                    %cause,
                    "the core failed while handling a request: it stops, and so does the master \
                     (a panic in redb means a damaged journal file: a restart checks it)"
                );
                self.journal.halt(&format!("the master's core failed: {cause}"));
                return CoreEnd::Failed(cause);
            }
        }
        info!("core stopped");
        CoreEnd::Stopped
    }

    /// Handles one request.
    pub fn handle(&mut self, request: CoreRequest) {
        match request {
            CoreRequest::Wake => {}
            CoreRequest::Cut => self.cut(),
            CoreRequest::Register { username, email, hash, reply } => {
                let _ = reply.send(self.register(username, email, hash));
            }
            CoreRequest::Credentials { username, reply } => {
                let found = self
                    .engine
                    .state()
                    .account_by_username(&username)
                    .map(|a| (a.id, a.password_hash.clone()));
                let _ = reply.send(found);
            }
            CoreRequest::StartSession { account, ip, remember, reply } => {
                let _ = reply.send(self.start_session(account, ip, remember));
            }
            CoreRequest::RehashPassword { account, stored, rehashed, reply } => {
                let _ = reply.send(self.rehash_password(account, &stored, rehashed));
            }
            CoreRequest::ResumeSession { session, reply } => {
                let response = match self.session_account(&session) {
                    Ok(_) => Response::SessionId(net::SessionId(*session.as_bytes())),
                    Err(f) => Response::LoginFail(f),
                };
                let _ = reply.send(response);
            }
            CoreRequest::CheckSession { session, reply } => {
                let _ = reply.send(self.session_account(&session));
            }
            CoreRequest::Logout { session, reply } => {
                // The session ends in memory at once either way; success is answered only once
                // it is gone from the journal too, so it cannot come back after a restart.
                let response = match self.sessions.remove(&session) {
                    Some(record) => match self.journal.remove_session(record.key.0) {
                        Ok(_) => Response::LogoutSuccess,
                        Err(e) => {
                            warn!(cause = %e, "cannot remove a session from the journal");
                            Response::LogoutFail(failure(
                                Reason::Internal,
                                "the session ended, but storage failed: it may be valid again \
                                 after the master restarts; log out again then",
                            ))
                        }
                    },
                    None => Response::LogoutFail(failure(Reason::BadSession, "no such session")),
                };
                let _ = reply.send(response);
            }
            CoreRequest::Order {
                session,
                side,
                symbol,
                qty,
                client_id,
                placed_at,
                worker,
                reply,
            } => {
                self.place_order(session, side, symbol, qty, client_id, placed_at, worker, reply);
            }
            CoreRequest::Stop { reply } => {
                self.stopped = true;
                self.fail_queue(Reason::MasterUnavailable, SHUTTING_DOWN);
                let _ = reply.send(());
            }
            CoreRequest::User { session, username, query, reply } => {
                let _ = reply.send(self.user_query(&session, &username, query));
            }
            CoreRequest::Settle { batch, reply } => {
                let _ = reply.send(self.settle(batch));
            }
            CoreRequest::ListAssets { symbols, reply } => {
                let _ = reply.send(self.list_assets(symbols));
            }
            CoreRequest::LatestTickTime { reply } => {
                let latest = self.engine.state().assets().values().flatten().map(|t| t.time).max();
                let _ = reply.send(latest);
            }
            CoreRequest::ListedAssets { reply } => {
                let _ = reply.send(self.engine.state().assets().keys().copied().collect());
            }
        }
    }

    /// The failure to answer a write with while the journal refuses writes, whether the core
    /// saw the fault itself or not ([`Core::note_journal_halt`]).
    fn halted_failure(&mut self) -> Option<Failure> {
        self.note_journal_halt();
        self.halted.as_ref().map(|why| {
            failure(Reason::Internal, format!("the master cannot write its journal: {why}"))
        })
    }

    /// Takes over a halt the journal decided by itself: a storage fault in any write (a
    /// snapshot part, a session, the admin's registry) halts every later write, and orders or
    /// registrations accepted after it could never be stored.
    fn note_journal_halt(&mut self) {
        if self.halted.is_none() && self.journal.is_halted() {
            let cause = self.journal.halted().unwrap_or_else(|| "a storage fault".to_owned());
            error!(%cause, "the journal refuses writes: orders, registrations and logins are refused until the master is restarted");
            self.halted = Some(cause);
        }
    }

    fn list_assets(&mut self, symbols: Vec<Symbol>) -> Result<usize, String> {
        let at = now();
        let mut priced = symbols.clone();
        priced.sort_unstable();
        priced.dedup();
        let unpriced: Vec<String> = self
            .engine
            .state()
            .assets()
            .keys()
            .filter(|s| priced.binary_search(s).is_err())
            .map(ToString::to_string)
            .collect();
        if !unpriced.is_empty() {
            warn!(
                assets = %unpriced.join(", "),
                "assets listed by an earlier run are not among the assets priced now: their \
                 orders are refused at once (no_price) and their holdings keep their last price \
                 until they are priced again (add them to `assets`)"
            );
        }
        self.priced = Some(priced);
        let mut events = Vec::new();
        let before = self.engine.clone();
        for symbol in symbols {
            if !self.engine.state().is_listed(&symbol) {
                match self.engine.list_asset(symbol, at) {
                    Ok(event) => events.push(event),
                    Err(e) => {
                        // The listings made before it were not stored.
                        self.engine = before;
                        return Err(e.to_string());
                    }
                }
            }
        }
        if events.is_empty() {
            return Ok(0);
        }
        match self.journal.append_batch(&events, at) {
            Ok(_) => Ok(events.len()),
            Err(e) => {
                // As every other write: the state the journal holds, with the listings if they
                // were stored after all.
                self.write_failed(&e.to_string());
                Err(e.to_string())
            }
        }
    }

    fn register(&mut self, username: Username, email: Email, hash: PasswordHash) -> Response {
        if let Some(f) = self.halted_failure() {
            return Response::RegisterFail(f);
        }
        if self.engine.state().accounts().len() as u64 >= self.config.accounts_max {
            return Response::RegisterFail(failure(Reason::Busy, "no more accounts can be opened"));
        }
        let at = now();
        let request = OpenAccount {
            username,
            email,
            password_hash: hash,
            initial_cash: self.config.initial_cash,
            at,
        };
        let event = match self.engine.open_account(request) {
            Ok(event) => event,
            Err(engine::CommandError::UsernameTaken(_)) => {
                return Response::RegisterFail(failure(
                    Reason::UsernameTaken,
                    "that username is taken",
                ));
            }
            Err(e) => return Response::RegisterFail(failure(Reason::Internal, e.to_string())),
        };
        match self.journal.append_batch(std::slice::from_ref(&event), at) {
            Ok(_) => {
                info!(account = %self.engine.state().next_account_id().0.saturating_sub(1), "account opened");
                Response::RegisterSuccess
            }
            Err(e) => {
                self.write_failed(&e.to_string());
                let why = if e.may_be_stored() {
                    "storing the account failed, so whether it exists is unknown: try logging in \
                     once the master is back"
                } else {
                    "the master cannot write its journal, so the account was not opened"
                };
                Response::RegisterFail(failure(Reason::Internal, why))
            }
        }
    }

    /// Stores `rehashed` as the account's hash if it still has `stored`: `Ok(true)` once the
    /// event is durable, `Ok(false)` if another login rehashed it first.
    fn rehash_password(
        &mut self,
        account: AccountId,
        stored: &PasswordHash,
        rehashed: PasswordHash,
    ) -> Result<bool, String> {
        if let Some(f) = self.halted_failure() {
            return Err(f.message);
        }
        match self.engine.state().account(account) {
            Some(found) if found.password_hash == *stored => {}
            _ => return Ok(false),
        }
        let at = now();
        let event =
            self.engine.rehash_password(account, rehashed, at).map_err(|e| e.to_string())?;
        match self.journal.append_batch(std::slice::from_ref(&event), at) {
            Ok(_) => Ok(true),
            Err(e) => {
                // Reloads the state the journal holds: the old hash, or the new one if the
                // event was stored after all. Both verify the same password.
                self.write_failed(&e.to_string());
                Err(e.to_string())
            }
        }
    }

    fn start_session(&mut self, account: AccountId, ip: IpAddr, remember: bool) -> Response {
        // A session needs a write: with the journal halted, refused before the table makes
        // room for it (ending the account's least recently used session in memory only,
        // while its stored row would bring it back at the next start).
        if let Some(f) = self.halted_failure() {
            return Response::LoginFail(f);
        }
        let now = now();
        let created = match self.sessions.create(account, ip, remember, now) {
            Ok(created) => created,
            Err(e) => return Response::LoginFail(failure(Reason::Busy, e.to_string())),
        };
        let ended: Vec<[u8; 32]> = created.ended.iter().map(|key| key.0).collect();
        if let Err(e) = self.journal.remove_sessions(&ended) {
            warn!(cause = %e, "cannot remove the ended sessions from the journal");
        }
        match self.journal.put_session(created.info.record.key.0, &created.info.record.encode()) {
            Ok(()) => Response::SessionId(net::SessionId(*created.id.as_bytes())),
            Err(e) => {
                self.sessions.remove(&created.id);
                warn!(cause = %e, "cannot store a session");
                Response::LoginFail(failure(Reason::Internal, "the session could not be stored"))
            }
        }
    }

    /// The account a session belongs to, recording its use.
    fn session_account(&mut self, session: &SessionId) -> Result<AccountId, Failure> {
        match self.sessions.touch(session, now()) {
            Ok(info) => {
                // Stored with the others due, in one commit after the interval's (not while
                // the journal refuses writes: nothing would drain them).
                if info.store_again && self.halted.is_none() {
                    self.sessions_due.push(info.record.key);
                }
                Ok(info.record.account)
            }
            Err(e) => {
                // Gone from memory; its row goes with the interval's other expired sessions.
                if e == crate::sessions::SessionError::Expired {
                    self.sessions_expired_on_use.push(session.key());
                }
                Err(failure(Reason::BadSession, e.to_string()))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn place_order(
        &mut self,
        session: SessionId,
        side: Side,
        symbol: Symbol,
        qty: Qty,
        client_id: ClientOrderId,
        placed_at: Timestamp,
        worker: WorkerId,
        reply: Reply,
    ) {
        let account = match self.session_account(&session) {
            Ok(account) => account,
            Err(f) => {
                reply.send(order_fail(side, f));
                return;
            }
        };
        // A retried order (same account, client order id and terms) gets the first one's
        // outcome; the same id for another order is refused. Checked before a journal halt:
        // a retry of a committed order is a read, and "not stored" would be a lie about it.
        let terms = OrderTerms { side, symbol, qty };
        match self.retry.get(&(account, client_id)) {
            Some(Known::Pending { terms: queued, waiters }) => {
                if queued == terms {
                    waiters.push(reply);
                } else {
                    let order = format!("an order queued for this interval ({queued})");
                    reply.send(id_used_for_another_order(client_id, &order, side));
                }
                return;
            }
            Some(Known::Done { terms: first_terms, response }) => {
                reply.send(retry_answer(first_terms, response, terms, client_id));
                return;
            }
            None => {}
        }
        // A retry of a fill the retry memory has forgotten: rebuilt from the account's history.
        if let Some((first_terms, response)) =
            self.fills.answer(self.engine.state(), &(account, client_id))
        {
            reply.send(retry_answer(first_terms, &response, terms, client_id));
            return;
        }
        // A new order needs a write.
        if let Some(f) = self.halted_failure() {
            reply.send(order_fail(side, f));
            return;
        }
        if self.stopped {
            reply.send(order_fail(side, failure(Reason::MasterUnavailable, SHUTTING_DOWN)));
            return;
        }
        // Validated at once: what can be known before the interval's prices.
        let immediate = if qty.is_zero() {
            Some(RejectReason::ZeroQuantity)
        } else if Some(qty) > Qty::from_units(engine::limits::ORDER_QTY_UNITS_MAX) {
            Some(RejectReason::QuantityTooLarge)
        } else if !self.engine.state().is_listed(&symbol) {
            Some(RejectReason::UnknownSymbol)
        } else {
            None
        };
        if let Some(reason) = immediate {
            reply.send(order_fail(
                side,
                failure(Reason::Rejected(reason), rejection_message(reason, &symbol, None)),
            ));
            return;
        }
        if self.priced.as_ref().is_some_and(|priced| priced.binary_search(&symbol).is_err()) {
            reply.send(order_fail(
                side,
                failure(
                    Reason::Rejected(RejectReason::NoPrice),
                    format!(
                        "{symbol} is listed, but this master no longer fetches its price: it \
                         cannot be traded until its operator prices it again"
                    ),
                ),
            ));
            return;
        }
        let queued = self.queued_per_account.get(&account).copied().unwrap_or(0);
        if self.queue.len() >= self.config.orders_per_interval_max
            || queued >= self.config.orders_per_account_per_interval_max
        {
            reply.send(order_fail(
                side,
                failure(Reason::Busy, "too many orders this interval; retry in the next one"),
            ));
            return;
        }
        let Some(next) = self.next_order_id.checked_add(1) else {
            error!("order ids are used up (the next would pass 2^64 - 1); refusing orders");
            reply.send(order_fail(
                side,
                failure(Reason::Internal, "the master has no order id left to give"),
            ));
            return;
        };
        let id = OrderId(self.next_order_id);
        self.next_order_id = next;
        self.queue.push(Order {
            id,
            client_id,
            account,
            symbol,
            side,
            qty,
            kind: OrderKind::Market,
            placed_at,
            worker,
        });
        *self.queued_per_account.entry(account).or_default() += 1;
        self.retry.queue((account, client_id), terms, reply);
    }

    /// Moves the queued orders to the interval being settled; the per-account limit counts
    /// again from zero for the orders that follow.
    fn cut(&mut self) {
        if self.settling.is_empty() {
            // Each keeps its memory for the next interval.
            std::mem::swap(&mut self.queue, &mut self.settling);
        } else {
            self.settling.append(&mut self.queue);
        }
        self.queued_per_account.clear();
        self.cut_made = true;
    }

    /// Settles the orders cut for this interval at the batch's prices, commits, and only then
    /// answers every order.
    fn settle(&mut self, batch: PriceBatch) -> SettleSummary {
        if !self.cut_made {
            self.cut();
        }
        self.cut_made = false;
        let at = now();
        let interval = IntervalId(self.engine.state().last_interval().map_or(1, |l| l.id.0 + 1));
        self.note_journal_halt();
        if self.halted.is_some() {
            self.fail_queue(
                Reason::Internal,
                "the master cannot write its journal, so this order was not executed",
            );
            return SettleSummary { failed: true, ..SettleSummary::default() };
        }
        // One vector for every interval's events: settling overwrites the last interval's in
        // place instead of allocating and first touching a new one.
        let mut events = std::mem::take(&mut self.settled_events);
        let summary = self.settle_into(interval, at, &batch, &mut events);
        self.settled_events = events;
        summary
    }

    /// [`Core::settle`] with its events vector taken out of `self` (answering borrows `self`).
    fn settle_into(
        &mut self,
        interval: IntervalId,
        at: Timestamp,
        batch: &PriceBatch,
        events: &mut Vec<Event>,
    ) -> SettleSummary {
        let started = std::time::Instant::now();
        let newer = self.without_older_ticks(&batch.ticks);
        let ticks = newer.as_ref().unwrap_or(&batch.ticks);
        if let Err(e) = self.engine.settle_into(interval, at, ticks, &mut self.settling, events) {
            error!(cause = %e, "settlement refused");
            self.fail_queue(Reason::Internal, "settlement failed");
            return SettleSummary { failed: true, ..SettleSummary::default() };
        }
        let settled = std::time::Instant::now();
        let next = self.next_order_id.to_be_bytes();
        if let Err(e) =
            self.journal.append_batch_with_meta(events, at, &[(NEXT_ORDER_ID_KEY, &next)])
        {
            self.write_failed(&e.to_string());
            let may_be_stored = e.may_be_stored();
            for event in events.iter() {
                if let Some(key) = Self::pending_key(event) {
                    self.answer(key, failure_for_event(event, may_be_stored), None);
                }
            }
            return SettleSummary { interval: Some(interval), failed: true, ..Default::default() };
        }
        self.fills.add_committed(self.engine.state(), events);
        let mut summary = SettleSummary {
            interval: Some(interval),
            settle_micros: crate::slow::micros(settled.duration_since(started)),
            commit_micros: crate::slow::micros(settled.elapsed()),
            ..SettleSummary::default()
        };
        for event in events.iter() {
            match event {
                Event::OrderFilled(_) => summary.filled += 1,
                Event::OrderRejected(_) => summary.rejected += 1,
                _ => continue,
            }
            if let Some((key, terms, response)) = outcome_response(event, at) {
                self.answer(key, response, Some(terms));
            }
        }
        self.expire_sessions(at);
        self.store_sessions_due();
        self.maybe_snapshot();
        summary
    }

    /// The interval's ticks without those older than their asset's current price, when there
    /// are any (`None`: all are kept). A provider that serves Friday's quote after Monday's
    /// (a stale cache) must not move a price back: orders would fill at the older close, and
    /// the current price would disagree with the newest tick the journal holds. Such an asset
    /// has no price this interval; a tick as old as the current one (a price restated) is kept.
    fn without_older_ticks(&self, ticks: &TickSet) -> Option<TickSet> {
        let state = self.engine.state();
        let older = |tick: &Tick| state.newer_tick_than(tick).is_some();
        if !ticks.ticks().iter().any(older) {
            return None;
        }
        for tick in ticks.ticks().iter().filter(|t| older(t)) {
            warn!(
                symbol = %tick.symbol,
                time = tick.time.0,
                "a price older than the asset's current one is not used: the asset has no price this interval"
            );
        }
        let kept = ticks.ticks().iter().filter(|t| !older(t)).copied().collect();
        TickSet::new(kept).ok()
    }

    /// The retry key of an order outcome event: its account and client order id.
    fn pending_key(event: &Event) -> Option<OrderKey> {
        event.outcome_order().map(|order| (order.account, order.client_id))
    }

    /// Sends an outcome to everyone waiting for it; a committed outcome (`Some` terms of its
    /// order) is kept by the retry memory for retries.
    fn answer(&mut self, key: OrderKey, response: Response, committed: Option<OrderTerms>) {
        for waiter in self.retry.take_waiters(&key) {
            waiter.send(response.clone());
        }
        if let Some(terms) = committed {
            self.retry.remember(key, terms, response);
        }
    }

    /// Answers every queued order, of this interval and the next, with a failure.
    fn fail_queue(&mut self, reason: Reason, why: &str) {
        let mut orders = self.settling.drain_sorted();
        orders.extend(self.queue.drain_sorted());
        for order in orders {
            let key = (order.account, order.client_id);
            self.answer(key, order_fail(order.side, failure(reason, why)), None);
        }
        self.queued_per_account.clear();
    }

    /// After a failed write: the in-memory engine is ahead of the journal. Go back to what the
    /// journal holds and refuse writes until the operator restarts the master.
    fn write_failed(&mut self, why: &str) {
        error!(cause = %why, "journal write failed: refusing writes until restart; nothing unacknowledged was lost");
        self.halted = Some(why.to_owned());
        let options = journal::ReplayOptions {
            from: journal::ReplayFrom::NewestSnapshot,
            to: journal::ReplayTo::End,
            verify: journal::VerifyOnOpen::TailOnly,
        };
        let reloaded = self.journal.replay(options, &mut |_| {});
        self.reload(reloaded);
    }

    /// Takes the state the journal holds back after a failed write. When it cannot be read
    /// back, the in-memory state holds what the journal does not (the failed interval's
    /// fills, a registration): answering from it would show users what was never stored, so
    /// the core fails instead, as after a panic ([`Core::run`] stops, and the master with it;
    /// a restart recovers from the journal).
    fn reload(&mut self, reloaded: Result<journal::Replayed, journal::OpenError>) {
        match reloaded {
            Ok(replayed) => self.engine = Engine::from_state(replayed.state),
            Err(e) => {
                error!(cause = %e, "cannot reload the state from the journal after a failed write: the core stops, and so does the master (its state holds what the journal does not)");
                let cause = format!("cannot reload the state after a failed write: {e}");
                self.journal.halt(&cause);
                self.failed = Some(cause);
            }
        }
    }

    /// Stores the last use of the sessions that came due since the last interval, in one
    /// commit: however many sessions come due together, settlement waits for one write. Only
    /// sessions still live are stored (one ended meanwhile must not come back after a
    /// restart). Not stored, the sessions would end a little early after a restart; but the
    /// storage fault halts the journal's writes, and the next order or registration is refused
    /// ([`Core::note_journal_halt`]).
    fn store_sessions_due(&mut self) {
        if self.sessions_due.is_empty() {
            return;
        }
        self.sessions_due.sort_unstable();
        self.sessions_due.dedup();
        let records: Vec<([u8; 32], Vec<u8>)> = self
            .sessions_due
            .drain(..)
            .filter_map(|key| self.sessions.record(&key))
            .map(|record| (record.key.0, record.encode()))
            .collect();
        if let Err(e) = self.journal.put_sessions(&records) {
            warn!(cause = %e, sessions = records.len(), "cannot store the sessions' last use");
        }
    }

    /// Ends the sessions idle or old past their limits, with those found expired when used
    /// since the last interval, and deletes their rows in one commit: however many end
    /// together, the core waits for one write (a row left behind would come back after a
    /// restart whose limits are longer).
    fn expire_sessions(&mut self, now: Timestamp) {
        let mut ended: Vec<[u8; 32]> = self.sessions.expire(now).iter().map(|key| key.0).collect();
        ended.extend(self.sessions_expired_on_use.drain(..).map(|key| key.0));
        if self.halted.is_some() || ended.is_empty() {
            return;
        }
        if let Err(e) = self.journal.remove_sessions(&ended) {
            warn!(cause = %e, sessions = ended.len(), "cannot remove expired sessions from the journal");
        }
    }

    /// Asks the snapshot thread for a snapshot when one is due. It keeps its own copy of the
    /// state and catches up from the journal (`master::snapshots`), so settlement neither
    /// clones the state nor waits. One at a time: while one is being made the request is not
    /// taken (the journal counts from the last *stored* snapshot, so it stays due until then).
    fn maybe_snapshot(&mut self) {
        if let Some(snapshotter) = &self.snapshotter
            && !snapshotter.is_busy()
            && self.journal.snapshot_due()
        {
            snapshotter.request(self.journal.last_seq());
        }
    }

    fn user_query(
        &mut self,
        session: &SessionId,
        username: &Username,
        query: UserQuery,
    ) -> Response {
        let caller = match self.session_account(session) {
            Ok(account) => account,
            Err(f) => return Response::DataFail(f),
        };
        let state = self.engine.state();
        let Some(account) = state.account_by_username(username) else {
            return Response::DataFail(failure(Reason::NotFound, "no such user"));
        };
        let owner = account.id == caller;
        let payload = match query {
            UserQuery::Info => DataPayload::UserInfo(UserInfo {
                username: account.username.clone(),
                account: account.id,
                opened_at: account.opened_at,
                // Public view: never the email nor anything about the password.
                email: owner.then(|| account.email.clone()),
            }),
            UserQuery::Portfolio => DataPayload::Portfolio(Portfolio {
                cash: account.cash,
                holdings: account
                    .holdings
                    .iter()
                    .map(|(symbol, h)| PortfolioHolding {
                        symbol: *symbol,
                        qty: h.qty,
                        cost_basis: h.cost_basis,
                        last_price: state.assets().get(symbol).copied().flatten().map(|t| t.close),
                    })
                    .collect(),
            }),
            UserQuery::History => {
                // The newest entries only, so the answer always fits one message.
                let first = account.history.len().saturating_sub(net::limits::HISTORY_ENTRIES_MAX);
                let shown = account.history.get(first..).unwrap_or_default();
                DataPayload::TransactionHistory {
                    entries: shown.iter().map(HistoryEntry::from_transaction).collect(),
                    older: first as u64,
                }
            }
        };
        Response::Data(payload)
    }
}

fn order_id_of(event: &Event) -> u64 {
    event.outcome_order().map_or(0, |order| order.id.0)
}

/// The answer an order outcome event gives, keyed by (account, client order id).
fn outcome_response(
    event: &Event,
    settled_at: Timestamp,
) -> Option<(OrderKey, OrderTerms, Response)> {
    match event {
        Event::OrderFilled(fill) => {
            let response = Response::filled(FillReport::from_fill(fill, settled_at));
            let order = &fill.order;
            Some(((order.account, order.client_id), OrderTerms::of(order), response))
        }
        Event::OrderRejected(r) => {
            let message = rejection_message(r.reason, &r.order.symbol, Some(r));
            let f = failure(Reason::Rejected(r.reason), message);
            let order = &r.order;
            Some((
                (order.account, order.client_id),
                OrderTerms::of(order),
                order_fail(order.side, f),
            ))
        }
        _ => None,
    }
}

/// The answer to an order whose interval could not be stored: its outcome is unknown when the
/// commit itself failed (`may_be_stored`), and certainly "not executed" when the journal
/// refused the batch before writing anything.
fn failure_for_event(event: &Event, may_be_stored: bool) -> Response {
    let side = event.outcome_order().map_or(Side::Buy, |order| order.side);
    let why = if may_be_stored {
        "storing the interval failed, so whether this order was executed is unknown: retry it \
         with the same client order id once the master is back to learn its outcome"
    } else {
        "the master cannot write its journal, so this order was not executed"
    };
    order_fail(side, failure(Reason::Internal, why))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A state that cannot be taken back to the journal's after a failed write stops the core:
    /// nothing more is answered from it.
    #[test]
    fn a_state_that_cannot_be_reloaded_after_a_failed_write_stops_the_core() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal::path_in(dir.path());
        let (journal, recovered) = Journal::open(&path, journal::JournalConfig::default()).unwrap();
        let journal = Arc::new(journal);
        let config = CoreConfig {
            initial_cash: Cash::parse("1000").unwrap(),
            orders_per_interval_max: 3,
            orders_per_account_per_interval_max: 2,
            accounts_max: 10,
            remembered_outcomes_max: 10,
        };
        let sessions = SessionTable::new(&crate::config::SessionsConfig::default());
        let mut core =
            Core::new(Engine::from_state(recovered.state), Arc::clone(&journal), config, sessions);
        let damage = journal::ReadError::Corrupt {
            path: path.clone(),
            seq: journal::Seq(1),
            what: journal::Corruption::Framing("a damaged page".into()),
        };
        core.reload(Err(journal::OpenError::Read(damage)));
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let (reply, mut answer) = oneshot::channel();
        let username = Username::new("alice").unwrap();
        tx.try_send(CoreRequest::Credentials { username, reply }).unwrap();
        drop(tx);
        match core.run(rx) {
            CoreEnd::Failed(cause) => assert!(cause.contains("a damaged page"), "{cause}"),
            CoreEnd::Stopped => panic!("the core went on serving"),
        }
        // The request was not answered from the state, and the journal takes no more writes.
        assert!(answer.try_recv().is_err());
        assert!(journal.put_meta("k", b"v").is_err());
    }
}
