//! The client-facing server (spec 3.2.1, 3.2.3, 4.3.2): accepts clients, runs the connection
//! state machine of each, answers what the worker can answer itself (state switches, cached asset
//! data, sessions it knows are dead) and relays the rest to the master.
//!
//! One task per client. Inside it, a reader stamps each request with its receive time as it is
//! read and queues it (at most `clients.pipeline_depth_max`), and a processor handles the queue
//! one request at a time, in order (`docs/PROTOCOL.md` section 9): decide with
//! [`net::Connection`], answer from the caches or relay to the master and wait, record the
//! answer, send it (in packets of `clients.packet_data_bytes`), then take the next. So the
//! answers to one client go back in the order of its requests, and pipelined requests are read
//! (and stamped) while an earlier one waits for the master.
//!
//! Isolation: a client only ever holds its own task, its own bounded queue and (while it waits)
//! one relay; a bad frame closes only its connection (after an `error` return saying why); a slow
//! reader only stalls its own writes (`clients.write_timeout`). Over `clients.connections_max`,
//! a new connection is answered `error(busy)` and closed.
//!
//! Shutdown ([`run`]'s `shutdown` future): stop accepting, stop reading requests, answer every
//! request already read, close the connections, then stop the master link.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::Timestamp;
use net::{
    Connection, DataPayload, Failure, FrameReader, FrameWriter, FramedStream, Reason, Request,
    Response, SessionId, Verdict,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, Span, debug, error, info, info_span, warn};

use crate::cache::{AssetCache, CacheKey};
use crate::config::{ConfigError, WorkerConfig};
use crate::identity::{MasterTrust, WorkerIdentity};
use crate::master_link::{LinkParams, MasterLink, PendingRelay};
use crate::per_address::{AddressCounts, AddressPlace};
use crate::sessions::{SessionCache, SessionStatus};

/// Connections being refused (`busy`) at once; more are dropped without an answer.
pub const REFUSALS_IN_PROGRESS_MAX: usize = 64;
/// How long a refusal may take to write.
pub const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait after a failed `accept` (e.g. out of file descriptors) before the next.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener's address could not be read.
    #[error("cannot read the listening address: {0}")]
    Listener(#[source] std::io::Error),
}

/// Counters of a running worker, for tests and monitoring. Cheap to clone (a handle); pass one
/// to [`run_with_stats`] and read it with [`Stats::snapshot`].
#[derive(Debug, Clone, Default)]
pub struct Stats(Arc<StatsInner>);

#[derive(Debug, Default)]
struct StatsInner {
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_open: AtomicU64,
    requests: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    relays: AtomicU64,
    master_unavailable: AtomicU64,
    sessions_refused_locally: AtomicU64,
    master_linked: std::sync::atomic::AtomicBool,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Client connections served so far.
    pub connections_accepted: u64,
    /// Client connections answered `busy` (or dropped) because of the connection limit.
    pub connections_refused: u64,
    /// Client connections open now.
    pub connections_open: u64,
    /// Requests read (well-formed or not).
    pub requests: u64,
    /// Asset requests answered from the cache.
    pub cache_hits: u64,
    /// Asset requests the cache could not answer.
    pub cache_misses: u64,
    /// Requests relayed to the master (including session checks and expirable logouts).
    pub relays: u64,
    /// Relays answered `master_unavailable` by the worker.
    pub master_unavailable: u64,
    /// Requests refused by the worker because their session is known to be dead.
    pub sessions_refused_locally: u64,
    /// Whether the link to the master is up now (requests for the master can be relayed).
    pub master_linked: bool,
}

impl Stats {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = &self.0;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_accepted: get(&s.connections_accepted),
            connections_refused: get(&s.connections_refused),
            connections_open: get(&s.connections_open),
            requests: get(&s.requests),
            cache_hits: get(&s.cache_hits),
            cache_misses: get(&s.cache_misses),
            relays: get(&s.relays),
            master_unavailable: get(&s.master_unavailable),
            sessions_refused_locally: get(&s.sessions_refused_locally),
            master_linked: s.master_linked.load(Ordering::Acquire),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Receive-time stamps: microseconds since the epoch, strictly increasing across the whole
/// worker, so that the order of the stamps is the order in which requests were read.
#[derive(Debug, Default)]
struct Clock {
    last: AtomicI64,
}

impl Clock {
    fn stamp(&self) -> Timestamp {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_micros()).ok())
            .unwrap_or(0);
        let previous = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last.saturating_add(1)))
            })
            .unwrap_or_else(|last| last);
        Timestamp(now.max(previous.saturating_add(1)))
    }
}

/// What every client task shares.
#[derive(Debug)]
struct Shared {
    config: WorkerConfig,
    link: MasterLink,
    cache: Mutex<AssetCache>,
    sessions: Mutex<SessionCache>,
    /// Sessions no client uses any more (expirable sessions whose connection closed, sessions
    /// of logins whose client never got the answer), with the client's address, oldest first:
    /// the logout task ends them on the master, keeps them while the link is down and sends
    /// again those the master could not take (busy, or no answer in time).
    pending_logouts: Mutex<VecDeque<(SessionId, IpAddr)>>,
    /// Wakes the logout task: a logout was queued, or the link came back.
    logouts_wanted: tokio::sync::Notify,
    /// Logouts taken from `pending_logouts` whose answers the logout task waits for.
    logouts_in_flight: AtomicUsize,
    /// Places for answers that may be large, all clients together (`LARGE_ANSWERS_MAX`).
    large_answers: Arc<Semaphore>,
    /// Of those, per client address bucket ([`large_answers_per_address`]).
    large_answers_per_address: Arc<AddressCounts>,
    stats: Stats,
    clock: Clock,
}

/// Answers that may be large (a transaction history, a price series) the worker writes at once,
/// all clients together, from the answer's arrival (from the cache or the master) until it is
/// written; one more is answered `busy`, its answer dropped. A day of one-second bars is about
/// 13 MB, held three times while it is written (the answer, its encoding, its packets), and a
/// client that does not read holds it up to `clients.write_timeout`. A cached series never
/// reaches the master's own cap per link, so without this, connections asking for one and never
/// reading would hold gigabytes.
pub const LARGE_ANSWERS_MAX: usize = 16;

/// Of [`LARGE_ANSWERS_MAX`], how many one client address bucket may hold (counted as
/// `clients.connections_per_address_max` counts connections), so that one host cannot take
/// every place: the address's share of the connections, at least one. With the defaults (256 of
/// 1,024 connections) 4; where one address may take every connection (behind a NAT, `pt up`)
/// all 16.
pub fn large_answers_per_address(clients: &crate::config::ClientsConfig) -> u32 {
    let all = u64::from(clients.connections_max.max(1));
    let share = (LARGE_ANSWERS_MAX as u64)
        .saturating_mul(u64::from(clients.connections_per_address_max))
        / all;
    u32::try_from(share.clamp(1, LARGE_ANSWERS_MAX as u64)).unwrap_or(1)
}

/// A large answer's places, worker-wide and for its client's address, given back when dropped.
type LargeAnswerPlace = (tokio::sync::OwnedSemaphorePermit, AddressPlace);

/// Whether `request`'s answer may be large: a transaction history or a price series.
fn may_answer_large(request: &Request) -> bool {
    matches!(
        request,
        Request::GetUserTransactionHistory { .. }
            | Request::GetAssetValue { .. }
            | Request::GetAssetValueAllTime { .. }
    )
}

/// Expirable-session logouts kept for the master; past it, the oldest are left to the master's
/// idle timeout.
const PENDING_LOGOUTS_MAX: usize = 100_000;
/// Logouts the logout task sends at once.
pub const LOGOUTS_AT_ONCE: usize = 16;
/// How long the logout task waits before it sends again the logouts the master could not take
/// (the link down, the master busy or not answering in time).
const LOGOUT_RETRY: Duration = Duration::from_secs(1);
/// How long a stopping worker gives the logouts still queued.
const LOGOUTS_AT_SHUTDOWN: Duration = Duration::from_secs(5);

impl Shared {
    /// Queues the logout of a closed connection's expirable session for the logout task.
    fn log_out_later(&self, session: SessionId, ip: IpAddr) {
        self.keep_logout(session, ip);
        self.logouts_wanted.notify_one();
    }

    /// Logouts queued or under way.
    fn logouts_left(&self) -> usize {
        let queued = self.pending_logouts.lock().unwrap_or_else(PoisonError::into_inner).len();
        queued.saturating_add(self.logouts_in_flight.load(Ordering::Acquire))
    }

    /// Queues the logouts of the sessions the link found orphaned (logins whose clients stopped
    /// waiting before the answer: no client knows them).
    fn adopt_orphans(&self) {
        for (session, ip) in self.link.take_orphan_sessions() {
            self.keep_logout(session, ip);
        }
    }

    /// Keeps a logout to send; when too many are kept, the oldest is dropped.
    fn keep_logout(&self, session: SessionId, ip: IpAddr) {
        let mut pending = self.pending_logouts.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= PENDING_LOGOUTS_MAX {
            pending.pop_front();
        }
        pending.push_back((session, ip));
    }

    /// Sends the queued logouts, [`LOGOUTS_AT_ONCE`] at a time, while the link is up. Returns
    /// whether some are left to send later: the link is down, or the master could not take
    /// them.
    async fn send_logouts(self: &Arc<Self>) -> bool {
        loop {
            self.adopt_orphans();
            if self.link.state() != crate::LinkState::Up {
                return !self
                    .pending_logouts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_empty();
            }
            let batch: Vec<(SessionId, IpAddr)> = {
                let mut pending =
                    self.pending_logouts.lock().unwrap_or_else(PoisonError::into_inner);
                let count = pending.len().min(LOGOUTS_AT_ONCE);
                self.logouts_in_flight.fetch_add(count, Ordering::AcqRel);
                pending.drain(..count).collect()
            };
            if batch.is_empty() {
                return false;
            }
            let mut sends = JoinSet::new();
            for (session, ip) in batch {
                let shared = Arc::clone(self);
                sends.spawn(async move { shared.log_out_closed(session, ip).await });
            }
            let mut again = false;
            while let Some(done) = sends.join_next().await {
                again |= done.unwrap_or(false);
                self.logouts_in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            if again {
                return true;
            }
        }
    }

    /// Ends a session no client uses any more on the master (the expirable session of a closed
    /// connection, or one made by a login whose client stopped waiting); returns whether it
    /// must be sent again later (kept again: the master could not be told, or was busy).
    async fn log_out_closed(&self, session: SessionId, ip: IpAddr) -> bool {
        let logout = Request::Logout { session };
        let answer = self.relay(ip, self.clock.stamp(), Some(session), &logout).await;
        match answer.failure() {
            None => {
                debug!("session of a gone client ended");
                false
            }
            Some(failure) if matches!(failure.reason, Reason::MasterUnavailable | Reason::Busy) => {
                self.keep_logout(session, ip);
                true
            }
            // Already ended (a logout sent before whose answer was lost, say).
            Some(failure) if failure.reason == Reason::BadSession => false,
            Some(failure) => {
                info!(cause = %failure, "could not end the session of a gone client");
                false
            }
        }
    }

    fn cache(&self) -> MutexGuard<'_, AssetCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sessions(&self) -> MutexGuard<'_, SessionCache> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Relays through the link, counting.
    async fn relay(
        &self,
        client_ip: IpAddr,
        received_at: Timestamp,
        session: Option<SessionId>,
        request: &Request,
    ) -> Response {
        let response = self.send_relay(client_ip, received_at, session, request).await.await;
        self.count_unavailable(&response);
        response
    }

    /// Sends a relay without waiting for its answer (a client's pipelined orders).
    async fn send_relay(
        &self,
        client_ip: IpAddr,
        received_at: Timestamp,
        session: Option<SessionId>,
        request: &Request,
    ) -> PendingRelay {
        Stats::bump(&self.stats.0.relays);
        self.link.send_relay(client_ip, received_at, session, request).await
    }

    /// Counts an answer that says the master was unavailable.
    fn count_unavailable(&self, response: &Response) {
        if response.failure().is_some_and(|f| f.reason == Reason::MasterUnavailable) {
            Stats::bump(&self.stats.0.master_unavailable);
        }
    }
}

/// Runs the worker on `listener` until `shutdown` completes: connects to the master with
/// `identity` (checking the master against `master_trust`) and serves clients. Returns after a
/// graceful shutdown.
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    identity: WorkerIdentity,
    master_trust: MasterTrust,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_with_stats(config, listener, identity, master_trust, shutdown, Stats::new()).await
}

/// [`run`], counting into `stats`.
pub async fn run_with_stats(
    config: WorkerConfig,
    listener: TcpListener,
    identity: WorkerIdentity,
    master_trust: MasterTrust,
    shutdown: impl Future<Output = ()>,
    stats: Stats,
) -> Result<(), ServerError> {
    config.validate()?;
    make_room_for_connections(&config);
    let bound = listener.local_addr().map_err(ServerError::Listener)?;
    let advertise = config.advertise_address(bound);
    let (link_stop, link_stop_rx) = watch::channel(false);
    let params = LinkParams {
        master: config.master.clone(),
        advertise: advertise.clone(),
        config: config.link,
    };
    let (link, link_task) = MasterLink::start(params, identity, master_trust, link_stop_rx);
    info!(listen = %bound, %advertise, master = %config.master, "worker serving clients");
    if config.advertise.is_none() && bound.ip().is_unspecified() {
        info!(%advertise, "announcing a loopback address; set `advertise` for remote clients");
    }

    let connections_max = usize::try_from(config.clients.connections_max).unwrap_or(usize::MAX);
    let shared = Arc::new(Shared {
        cache: Mutex::new(AssetCache::new(&config.cache)),
        sessions: Mutex::new(SessionCache::new(&config.sessions)),
        pending_logouts: Mutex::new(VecDeque::new()),
        logouts_wanted: tokio::sync::Notify::new(),
        logouts_in_flight: AtomicUsize::new(0),
        large_answers: Arc::new(Semaphore::new(LARGE_ANSWERS_MAX)),
        large_answers_per_address: AddressCounts::new(large_answers_per_address(&config.clients)),
        config,
        link,
        stats,
        clock: Clock::default(),
    });
    // The link's state, kept in the counters for whoever waits for the worker to be ready. A
    // link that comes back may lead to another master (restarted, perhaps on another data
    // directory): nothing learned from the last one is served from the cache, and the logouts
    // it could not be told of are sent.
    // A new link is told apart by the link's generation, not by a Down seen before it: a
    // watch keeps only the last state, so a quick down-and-up can look like Up all along.
    let mut link_states = shared.link.subscribe();
    let linked = shared.stats.clone();
    let weak = Arc::downgrade(&shared);
    tokio::spawn(async move {
        let mut seen_generation = 0;
        loop {
            let up = *link_states.borrow_and_update() == crate::LinkState::Up;
            linked.0.master_linked.store(up, Ordering::Release);
            if up {
                let Some(shared) = weak.upgrade() else { break };
                let generation = shared.link.generation();
                if generation != seen_generation {
                    if seen_generation != 0 {
                        shared.cache().forget_all();
                        info!("linked to the master again: the asset cache starts empty");
                    }
                    seen_generation = generation;
                    shared.logouts_wanted.notify_one();
                }
            }
            if link_states.changed().await.is_err() {
                break;
            }
        }
    });
    let (logouts_stop, logouts_stop_rx) = watch::channel(false);
    let logouts = tokio::spawn(logout_task(Arc::clone(&shared), logouts_stop_rx));
    let limit = Arc::new(Semaphore::new(connections_max));
    let per_address = AddressCounts::new(shared.config.clients.connections_per_address_max);
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_PROGRESS_MAX));
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let limits = Limits { all: &limit, per_address: &per_address };
                    admit(&shared, limits, &refusals, &mut tasks, socket, peer, &stop_rx);
                }
                Err(e) => {
                    warn!(cause = %e, "accepting a client failed");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                }
            },
            Some(done) = tasks.join_next(), if !tasks.is_empty() => reap(done),
        }
    }
    drop(listener);
    info!(connections = tasks.len(), "shutting down: answering requests already read");
    stop.send_replace(true);
    while let Some(done) = tasks.join_next().await {
        reap(done);
    }
    // The closed connections' logouts, and the sessions of logins answered too late, sent by
    // the logout task while the link is still up (a few seconds at most).
    shared.adopt_orphans();
    shared.logouts_wanted.notify_one();
    let deadline = tokio::time::Instant::now() + LOGOUTS_AT_SHUTDOWN;
    while shared.logouts_left() > 0 {
        if tokio::time::Instant::now() >= deadline || shared.link.state() != crate::LinkState::Up {
            warn!(
                left = shared.logouts_left(),
                "shutting down: some expirable sessions are left to the master's idle timeout"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    logouts_stop.send_replace(true);
    if let Err(e) = logouts.await {
        error!(cause = %e, "the logout task failed");
    }
    link_stop.send_replace(true);
    if let Err(e) = link_task.await {
        error!(cause = %e, "the master link task failed");
    }
    info!("worker stopped");
    Ok(())
}

/// Descriptors besides client connections: the link, the listener, the log, and slack.
const FILES_BESIDES_CLIENTS: u64 = 64;

/// Raises the open-file limit so that every client connection `clients.connections_max`
/// allows (and the refusals in progress) can be open at once; warns when even the hard limit
/// does not allow them: past it, `accept` fails and a client waits in the backlog instead of
/// getting `busy`.
fn make_room_for_connections(config: &WorkerConfig) {
    let wanted = u64::from(config.clients.connections_max)
        .saturating_add(REFUSALS_IN_PROGRESS_MAX as u64)
        .saturating_add(FILES_BESIDES_CLIENTS);
    master::server::make_room_for_files(wanted, "clients.connections_max");
}

/// Sends the logouts of sessions no client uses any more (closed connections' expirable
/// sessions, and those of logins whose clients stopped waiting) as they come, and again those
/// the master could not take, every [`LOGOUT_RETRY`] and whenever the link comes back, until
/// `stop`.
async fn logout_task(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = shared.logouts_wanted.notified() => {}
            () = shared.link.orphan_sessions_found() => {}
            _ = stop.changed() => return,
        }
        loop {
            // A stop does not wait for the logouts under way (their relays end with the link).
            let again = tokio::select! {
                again = shared.send_logouts() => again,
                _ = stop.changed() => return,
            };
            if !again {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(LOGOUT_RETRY) => {}
                () = shared.logouts_wanted.notified() => {}
                () = shared.link.orphan_sessions_found() => {}
                _ = stop.changed() => return,
            }
        }
    }
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        error!(cause = %e, "a client task panicked");
    }
}

/// The limits a new client connection must fit in.
#[derive(Clone, Copy)]
struct Limits<'a> {
    /// `clients.connections_max`.
    all: &'a Arc<Semaphore>,
    /// `clients.connections_per_address_max`.
    per_address: &'a Arc<AddressCounts>,
}

/// The place a served connection holds until it ends: one of all, one of its address's.
struct Places {
    _all: OwnedSemaphorePermit,
    _address: AddressPlace,
}

/// Starts serving `socket`, or refuses it with `busy` when its address has all the places it
/// may hold, or the worker all it has.
fn admit(
    shared: &Arc<Shared>,
    limits: Limits<'_>,
    refusals: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    socket: TcpStream,
    peer: SocketAddr,
    stop: &watch::Receiver<bool>,
) {
    let span = info_span!("client", %peer, session = tracing::field::Empty);
    let clients = &shared.config.clients;
    let places = match limits.per_address.try_take(peer.ip()) {
        None => Err(format!(
            "{} connections from your address already; close some, or retry later",
            clients.connections_per_address_max
        )),
        Some(address) => match limits.all.clone().try_acquire_owned() {
            Ok(all) => Ok(Places { _all: all, _address: address }),
            Err(_) => Err(format!(
                "the worker serves {} clients already; retry later",
                clients.connections_max
            )),
        },
    };
    match places {
        Ok(places) => {
            Stats::bump(&shared.stats.0.connections_accepted);
            let task = serve(shared.clone(), socket, peer, places, stop.clone());
            tasks.spawn(task.instrument(span));
        }
        Err(why) => {
            Stats::bump(&shared.stats.0.connections_refused);
            span.in_scope(|| info!(%why, "refusing a client"));
            // Under a flood, drop without an answer rather than queue refusals.
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tasks.spawn(refuse_busy(socket, why, permit).instrument(span));
            }
        }
    }
}

async fn refuse_busy(socket: TcpStream, why: String, _permit: OwnedSemaphorePermit) {
    let mut framed = FramedStream::new(socket);
    let answer = Response::Error(Failure::new(Reason::Busy, why));
    let refuse = async {
        framed.write_response(&answer).await?;
        framed.writer().shutdown().await
    };
    if let Err(e) = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, refuse).await.unwrap_or(Ok(())) {
        debug!(cause = %e, "could not tell the client it was refused");
    }
}

/// A request read from a client, or what to do instead.
enum Item {
    /// A request, stamped with its receive time.
    Request { request: Request, received_at: Timestamp },
    /// A request that did not decode: its fail return is ready.
    Answer(Response),
    /// The stream is broken: send this `error` return (if any), then close.
    Close(Option<Response>),
}

/// What the reader needs to know of the processor, for the idle timeout.
#[derive(Debug)]
struct Activity {
    /// Requests read and not yet answered.
    pending: AtomicUsize,
    /// When the last request was read or the last answer sent.
    last: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self { pending: AtomicUsize::new(0), last: Mutex::new(Instant::now()) }
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn begin(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    fn end(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    fn idle_for(&self, idle: Duration) -> bool {
        self.pending.load(Ordering::Relaxed) == 0 && self.last().elapsed() >= idle
    }
}

/// One client's protocol state and what the worker knows of it.
struct Client {
    shared: Arc<Shared>,
    peer: SocketAddr,
    conn: Connection,
    /// The sessions this connection made with `login(..., isExpirable = true)` and that have
    /// not ended: each ends when the client goes (spec 4.6.1), whatever the connection did
    /// after (`loginSession`, another `login`). At most [`EXPIRABLE_PER_CONNECTION_MAX`]; past
    /// that, the oldest is left to the master's idle timeout.
    expirable: Vec<SessionId>,
    /// Until when this connection does not ask the master again about its session for a
    /// sessionless request in data transfer: set when the master could not answer such a check
    /// (down, busy, late), so that every cached price poll does not wait for, or add to, a
    /// master in trouble.
    session_check_after: Option<Instant>,
}

/// Expirable sessions one connection's end logs out.
const EXPIRABLE_PER_CONNECTION_MAX: usize = 16;

/// Serves one client until it leaves, misbehaves, idles out or the worker shuts down.
async fn serve(
    shared: Arc<Shared>,
    socket: TcpStream,
    peer: SocketAddr,
    _places: Places,
    stop: watch::Receiver<bool>,
) {
    let stats = shared.stats.clone();
    stats.0.connections_open.fetch_add(1, Ordering::Relaxed);
    debug!("client connected");
    if let Err(e) = socket.set_nodelay(true) {
        debug!(cause = %e, "cannot set TCP_NODELAY");
    }
    let (mut reader, writer) = FramedStream::new(socket).into_split();
    // A client's requests are small: it cannot make the worker hold a 16 MiB message.
    reader.set_body_bytes_max(net::limits::REQUEST_BODY_BYTES_MAX);
    let depth = usize::try_from(shared.config.clients.pipeline_depth_max).unwrap_or(1).max(1);
    let (tx, rx) = mpsc::channel(depth);
    let activity = Activity::new();
    let mut client = Client {
        shared: shared.clone(),
        peer,
        conn: Connection::new(),
        expirable: Vec::new(),
        session_check_after: None,
    };
    {
        let read = read_requests(&shared, reader, tx, &activity, stop);
        let process = client.process(rx, writer, &activity);
        tokio::pin!(read, process);
        tokio::select! {
            // The processor stopped (the client cannot be written to, or a fatal error was
            // answered): stop reading.
            () = &mut process => {}
            // The reader stopped (EOF, bad frames, idle, shutdown): answer what was read.
            () = &mut read => process.await,
        }
    }
    client.disconnected().await;
    stats.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    debug!("client disconnected");
}

/// When the reader next checks whether the connection is idle: one idle period after the last
/// activity, or, when that is past (a request has been pending longer than the idle timeout, so
/// the connection is not idle), one idle period from now. Always after `now`, so the reader
/// never spins on a deadline already past while an answer takes its time.
fn next_idle_check(last: Instant, now: Instant, idle: Duration) -> Instant {
    last.checked_add(idle)
        .filter(|deadline| *deadline > now)
        .or_else(|| now.checked_add(idle.max(Duration::from_millis(1))))
        .unwrap_or(now)
}

/// Reads and stamps requests into `queue` until EOF, a broken stream, the idle timeout or the
/// shutdown.
/// Requests that did not decode logged at info per connection; the rest go to debug.
const UNDECODABLE_LOGGED_MAX: u32 = 3;

async fn read_requests<R: AsyncRead + Unpin>(
    shared: &Shared,
    mut reader: FrameReader<R>,
    queue: mpsc::Sender<Item>,
    activity: &Activity,
    mut stop: watch::Receiver<bool>,
) {
    let idle = shared.config.clients.idle_timeout;
    // Until its first request, a connection has the shorter `first_request_timeout`.
    let first_by = Instant::now() + shared.config.clients.first_request_timeout.min(idle);
    let mut heard = false;
    // Requests that did not decode, on this connection: the first few are logged at info,
    // the rest at debug, so one client cannot flood the log.
    let mut undecodable = 0u32;
    loop {
        let deadline = next_idle_check(activity.last(), Instant::now(), idle);
        let read = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => {
                debug!("shutting down: no more requests read");
                return;
            }
            read = reader.read_request() => read,
            () = tokio::time::sleep_until(first_by.into()), if !heard => {
                info!("no first request in time; closing");
                return;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if activity.idle_for(idle) {
                    info!(idle = %humantime::format_duration(idle), "idle timeout; closing");
                    return;
                }
                continue;
            }
        };
        let item = match read {
            Ok(Some(Ok(request))) => {
                Stats::bump(&shared.stats.0.requests);
                Item::Request { request, received_at: shared.clock.stamp() }
            }
            Ok(Some(Err(answer))) => {
                Stats::bump(&shared.stats.0.requests);
                let cause = answer.failure().map_or("", |f| f.message.as_str());
                undecodable = undecodable.saturating_add(1);
                if undecodable <= UNDECODABLE_LOGGED_MAX {
                    info!(answer = %answer.instruction(), cause, "request did not decode; answered");
                } else {
                    debug!(answer = %answer.instruction(), cause, "request did not decode; answered");
                }
                Item::Answer(answer)
            }
            Ok(None) => {
                debug!("client closed the connection");
                return;
            }
            Err(error) => {
                info!(cause = %error, "bad frames from the client; closing");
                let reason = error.reason();
                activity.begin();
                let answer = reason.map(|r| Response::Error(Failure::new(r, error.to_string())));
                let _ = queue.send(Item::Close(answer)).await;
                return;
            }
        };
        heard = true;
        activity.begin();
        if queue.send(item).await.is_err() {
            return;
        }
    }
}

/// True when a failure with `reason`, answering a request that carries a session, means the
/// master does not know that session (any more).
fn ends_session(reason: Reason) -> bool {
    matches!(reason, Reason::BadSession | Reason::NotLoggedIn)
}

/// The answer a client gets for `request`: a relayed `error` (the master refusing the relay
/// itself: busy, malformed) becomes the request's own failure return with the same reason, as
/// PROTOCOL.md section 10 promises for a request the worker took; anything else as it is.
fn own_return(request: &Request, response: Response) -> Response {
    match response {
        Response::Error(failure) => request.fail(failure),
        response => response,
    }
}

/// True when `response` is one of the answers `request` may get.
fn answers(request: &Request, response: &Response) -> bool {
    if matches!(response, Response::Error(_)) {
        return true;
    }
    let failure = request.fail(Failure::new(Reason::Internal, ""));
    if response.failure().is_some() {
        return response.instruction() == failure.instruction();
    }
    match (request, response) {
        (Request::Login { .. } | Request::LoginSession { .. }, Response::SessionId(_))
        | (Request::Register { .. }, Response::RegisterSuccess)
        | (Request::Purchase { .. }, Response::PurchaseSuccess(_))
        | (Request::Sell { .. }, Response::SellSuccess(_))
        | (Request::SwitchState { .. }, Response::StateSwitchSuccess(_))
        | (Request::Logout { .. }, Response::LogoutSuccess) => true,
        (request, Response::Data(payload)) => matches!(
            (request, payload),
            (Request::GetWorkers, DataPayload::WorkerList(_))
                | (
                    Request::GetAssetInfo { .. } | Request::GetAssetValueCurrent { .. },
                    DataPayload::AssetInfo(_)
                )
                | (
                    Request::GetAssetValue { .. } | Request::GetAssetValueAllTime { .. },
                    DataPayload::PriceSeries(_)
                )
                | (Request::GetUserInfo { .. }, DataPayload::UserInfo(_))
                | (Request::GetUserPortfolio { .. }, DataPayload::Portfolio(_))
                | (
                    Request::GetUserTransactionHistory { .. },
                    DataPayload::TransactionHistory { .. }
                )
        ),
        _ => false,
    }
}

impl Client {
    fn ip(&self) -> IpAddr {
        self.peer.ip()
    }

    /// Answers the queued requests in order until the queue ends or the client cannot be
    /// written to. Orders (purchase and sell) pass the connection's checks in order and are then
    /// relayed at once, without waiting for the answers of the orders before them, so a client
    /// that pipelines orders has them all settled in the same interval; every other request
    /// first waits for the orders before it, and answers always go out in request order.
    async fn process<W: AsyncWrite + Unpin>(
        &mut self,
        mut queue: mpsc::Receiver<Item>,
        mut writer: FrameWriter<W>,
        activity: &Activity,
    ) {
        let depth =
            usize::try_from(self.shared.config.clients.pipeline_depth_max).unwrap_or(1).max(1);
        let mut orders: VecDeque<(Request, PendingRelay)> = VecDeque::new();
        loop {
            let room = orders.len() < depth;
            let item = match orders.front_mut() {
                Some((_, relay)) => tokio::select! {
                    done = relay => {
                        let Some((request, _)) = orders.pop_front() else { continue };
                        if !self.answer_order(request, done, &mut writer, activity).await {
                            return;
                        }
                        // An interval's answers come back together: let the link task deliver
                        // the others, then write every answer that is ready (still in request
                        // order) with a single flush.
                        if !orders.is_empty() {
                            tokio::task::yield_now().await;
                        }
                        while let Some(done) =
                            orders.front_mut().and_then(|(_, relay)| relay.try_take())
                        {
                            let Some((request, _)) = orders.pop_front() else { break };
                            if !self.answer_order(request, done, &mut writer, activity).await {
                                return;
                            }
                        }
                        if !self.flush(&mut writer).await {
                            return;
                        }
                        continue;
                    }
                    item = queue.recv(), if room => item,
                },
                None => queue.recv().await,
            };
            let Some(item) = item else { break };
            if let Item::Request { request, received_at } = &item
                && matches!(request, Request::Purchase { .. } | Request::Sell { .. })
            {
                let (request, received_at) = (request.clone(), *received_at);
                match self.order_checks(&request, received_at).await {
                    None => {
                        let (ip, session) = (self.ip(), self.conn.session());
                        let relay =
                            self.shared.send_relay(ip, received_at, session, &request).await;
                        orders.push_back((request, relay));
                        continue;
                    }
                    Some(answer) => {
                        if !self.flush_orders(&mut orders, &mut writer, activity).await
                            || !self.send(&mut writer, &answer).await
                        {
                            return;
                        }
                        activity.end();
                        continue;
                    }
                }
            }
            if !self.flush_orders(&mut orders, &mut writer, activity).await {
                return;
            }
            // Held until the answer is written (or the write fails), then given back.
            let mut large_answer_place = None;
            let (response, close, login) = match item {
                Item::Request { request, received_at } => {
                    let login = matches!(request, Request::Login { .. });
                    let large = may_answer_large(&request).then(|| request.clone());
                    let response = self.handle(request, received_at).await;
                    match large.map(|request| self.large_answer_place(&request, &response)) {
                        Some(Err(busy)) => (busy, false, login),
                        Some(Ok(place)) => {
                            large_answer_place = place;
                            (response, false, login)
                        }
                        None => (response, false, login),
                    }
                }
                Item::Answer(answer) => (answer, false, false),
                Item::Close(Some(answer)) => (answer, true, false),
                Item::Close(None) => break,
            };
            if !self.send(&mut writer, &response).await {
                if login && let Response::SessionId(session) = response {
                    // The client is gone before it could read its new session: nobody will
                    // ever use it.
                    debug!("a new session could not be written to its client; it is logged out");
                    self.session_ended(session);
                    self.shared.log_out_later(session, self.ip());
                }
                return;
            }
            drop(large_answer_place);
            activity.end();
            if close {
                break;
            }
        }
        if !self.flush_orders(&mut orders, &mut writer, activity).await {
            return;
        }
        let timeout = self.shared.config.clients.write_timeout;
        let _ = tokio::time::timeout(timeout, writer.shutdown()).await;
    }

    /// A place for writing `response`, the answer to `request` (one that [`may_answer_large`]),
    /// taken once the answer is there, so that waiting for the master holds none
    /// (`LARGE_ANSWERS_MAX`): `Ok(None)` for a failure (small), the `busy` refusal of `request`
    /// when the worker or this client's address has no place free (the answer is dropped).
    fn large_answer_place(
        &self,
        request: &Request,
        response: &Response,
    ) -> Result<Option<LargeAnswerPlace>, Response> {
        if !matches!(response, Response::Data(_)) {
            return Ok(None);
        }
        let busy = |why: &str| {
            debug!(request = %request.instruction(), "{why}: answered busy");
            request.fail(Failure::new(Reason::Busy, format!("{why}; retry shortly")))
        };
        let Ok(permit) = Arc::clone(&self.shared.large_answers).try_acquire_owned() else {
            return Err(busy(&format!(
                "{LARGE_ANSWERS_MAX} histories or price series are being served"
            )));
        };
        let Some(place) = self.shared.large_answers_per_address.try_take(self.ip()) else {
            return Err(busy(
                "this address's share of the histories and price series served at once is taken",
            ));
        };
        Ok(Some((permit, place)))
    }

    /// The connection's checks of an order, in request order: `None` when it may be relayed,
    /// or the answer that refuses it.
    async fn order_checks(
        &mut self,
        request: &Request,
        received_at: Timestamp,
    ) -> Option<Response> {
        debug!(request = %request.instruction(), "request");
        if let Some(answer) = self.check_session(request, received_at).await {
            return Some(answer);
        }
        match self.conn.handle(request) {
            Verdict::Reply(answer) => Some(answer),
            Verdict::Proceed => None,
        }
    }

    /// Writes the answers of all relayed orders, in order. False when the client is gone.
    async fn flush_orders<W: AsyncWrite + Unpin>(
        &mut self,
        orders: &mut VecDeque<(Request, PendingRelay)>,
        writer: &mut FrameWriter<W>,
        activity: &Activity,
    ) -> bool {
        while let Some((request, mut relay)) = orders.pop_front() {
            let done = match relay.try_take() {
                Some(done) => done,
                None => {
                    if !self.flush(writer).await {
                        return false;
                    }
                    relay.await
                }
            };
            if !self.answer_order(request, done, writer, activity).await {
                return false;
            }
        }
        self.flush(writer).await
    }

    /// Checks one relayed order's answer and feeds it to `writer` (sent at the next flush).
    /// False when the client is gone.
    async fn answer_order<W: AsyncWrite + Unpin>(
        &mut self,
        request: Request,
        done: Response,
        writer: &mut FrameWriter<W>,
        activity: &Activity,
    ) -> bool {
        self.shared.count_unavailable(&done);
        let response = match done {
            response if answers(&request, &response) => {
                self.learn(&request, &response);
                own_return(&request, response)
            }
            response => {
                warn!(
                    request = %request.instruction(),
                    answer = %response.instruction(),
                    "the master answered with the wrong instruction"
                );
                request.fail(Failure::new(
                    Reason::Internal,
                    "the master's answer did not fit the request",
                ))
            }
        };
        if let Err(e) = self.feed(writer, &response).await {
            debug!(cause = %e, "cannot write to the client; closing");
            return false;
        }
        activity.end();
        true
    }

    /// Writes out everything fed to `writer`. False when the client is gone.
    async fn flush<W: AsyncWrite + Unpin>(&self, writer: &mut FrameWriter<W>) -> bool {
        let timeout = self.shared.config.clients.write_timeout;
        match tokio::time::timeout(timeout, writer.flush()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                debug!(cause = %e, "cannot write to the client; closing");
                false
            }
            Err(_) => {
                debug!("the client does not read its answers; closing");
                false
            }
        }
    }

    /// Sends one answer in packets of `clients.packet_data_bytes`, after anything fed before.
    /// False when the client is gone.
    async fn send<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut FrameWriter<W>,
        response: &Response,
    ) -> bool {
        if let Err(e) = self.feed(writer, response).await {
            debug!(cause = %e, "cannot write to the client; closing");
            return false;
        }
        self.flush(writer).await
    }

    /// Encodes one answer into `writer`'s buffer in packets of `clients.packet_data_bytes`, or
    /// of the fewest bytes that fit it in 4,096 packets when that is more (written out at once
    /// only past the buffer's size).
    async fn feed<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut FrameWriter<W>,
        response: &Response,
    ) -> Result<(), String> {
        let clients = &self.shared.config.clients;
        let message = match response.encode() {
            Ok(message) => message,
            Err(e) => {
                warn!(cause = %e, answer = %response.instruction(), "cannot encode an answer");
                Response::Error(Failure::new(Reason::Internal, "the answer could not be encoded"))
                    .encode()
                    .map_err(|e| e.to_string())?
            }
        };
        // Never smaller than what fits the answer in the protocol's 4,096 packets: a small
        // `clients.packet_data_bytes` must not make a large answer unsendable.
        let packets_max = usize::try_from(net::limits::PACKETS_PER_MESSAGE_MAX).unwrap_or(1);
        let packet_bytes = usize::try_from(clients.packet_data_bytes)
            .unwrap_or(usize::MAX)
            .max(message.body.len().div_ceil(packets_max));
        let write = writer.feed_message_in_packets(&message, packet_bytes);
        match tokio::time::timeout(clients.write_timeout, write).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the client does not read its answers".to_owned()),
        }
    }

    /// Answers one request: the worker's own checks, then the cache, then the master.
    async fn handle(&mut self, request: Request, received_at: Timestamp) -> Response {
        let instruction = request.instruction();
        debug!(request = %instruction, "request");
        if let Some(answer) = self.check_session(&request, received_at).await {
            return answer;
        }
        if let Verdict::Reply(answer) = self.conn.handle(&request) {
            return answer;
        }
        if let Request::LoginSession { session } = &request
            && self.session_status(session) == SessionStatus::Invalid
        {
            Stats::bump(&self.shared.stats.0.sessions_refused_locally);
            return request.fail(Failure::new(
                Reason::BadSession,
                "this session has ended; log in with your username and password",
            ));
        }
        let key = CacheKey::for_request(&request);
        let mut asked = None;
        if let Some(key) = key {
            let mut cache = self.shared.cache();
            let cached = cache.get(&key, Instant::now());
            match cached {
                Some(answer) => {
                    drop(cache);
                    Stats::bump(&self.shared.stats.0.cache_hits);
                    // Copied once the lock is free: a series may be megabytes.
                    return Response::clone(&answer);
                }
                None => Stats::bump(&self.shared.stats.0.cache_misses),
            }
            asked = Some(cache.asked(key, Instant::now()));
        }
        let session = self.conn.session();
        let response = self.shared.relay(self.ip(), received_at, session, &request).await;
        if !answers(&request, &response) {
            warn!(
                request = %instruction,
                answer = %response.instruction(),
                "the master answered with the wrong instruction"
            );
            return request.fail(Failure::new(
                Reason::Internal,
                "the master's answer did not fit the request",
            ));
        }
        let response = own_return(&request, response);
        // (With the cache off, no answer is encoded and copied for nothing.)
        if let Some(asked) = asked
            && self.shared.config.cache.entries_max > 0
            && let Some(ready) = AssetCache::ready(&asked, &response)
        {
            self.shared.cache().insert_ready(asked, ready);
        }
        self.learn(&request, &response);
        response
    }

    fn session_status(&self, session: &SessionId) -> SessionStatus {
        self.shared.sessions().status(session, Instant::now())
    }

    /// The worker's session checks, before the state machine (which performs `switchState`):
    /// a request with this connection's session is refused when the session is known to be
    /// dead; a `switchState` with a session not confirmed lately is checked with the master.
    async fn check_session(
        &mut self,
        request: &Request,
        received_at: Timestamp,
    ) -> Option<Response> {
        // A request without a session (an asset query, say) does not carry the connection's,
        // but it rides on it: a connection whose session is known to have ended (logged out on
        // another connection) is back in command state all the same (docs/PROTOCOL.md), and in
        // data transfer a session not confirmed within `sessions.validity` is confirmed first.
        // So a session ended on the master (by another worker, or expired) stops serving here
        // within that time, and the check keeps an active session from expiring on the master.
        if request.session().is_none()
            && let Some(own) = self.conn.session()
        {
            match self.session_status(&own) {
                SessionStatus::Invalid => {
                    // Known here to have ended (logged out on another connection): as when
                    // the master says so, a data request fails `bad_session` and the
                    // connection is back in command state (PROTOCOL.md rules 5 and 6).
                    let in_data = self.conn.state() == net::ConnState::DataTransfer;
                    self.session_ended(own);
                    if in_data && !matches!(request, Request::GetWorkers) {
                        Stats::bump(&self.shared.stats.0.sessions_refused_locally);
                        return Some(request.fail(Failure::new(
                            Reason::BadSession,
                            "this connection's session has ended; log in again",
                        )));
                    }
                }
                // Only the asset queries ride on the connection's session (PROTOCOL.md rule 5):
                // `getWorkers` needs none, and a login or registration in data transfer state
                // is refused `wrong_state` by the state machine, without asking the master.
                SessionStatus::Unknown
                    if self.conn.state() == net::ConnState::DataTransfer
                        && CacheKey::for_request(request).is_some()
                        && self.session_check_after.is_none_or(|after| Instant::now() >= after) =>
                {
                    if let Err(refused) = self.confirm_session(own, request, received_at).await {
                        if self.conn.session() != Some(own) {
                            return Some(refused);
                        }
                        // Not confirmed for another reason (the link down, the master busy or
                        // late): the request goes on, and this connection asks again after
                        // `sessions.validity`.
                        let validity = self.shared.config.sessions.validity;
                        self.session_check_after = Some(Instant::now() + validity);
                    }
                }
                SessionStatus::Unknown | SessionStatus::Valid => {}
            }
        }
        let session = request.session()?;
        if matches!(request, Request::LoginSession { .. }) || self.conn.session() != Some(session) {
            return None;
        }
        match self.session_status(&session) {
            SessionStatus::Valid => None,
            SessionStatus::Invalid => {
                Stats::bump(&self.shared.stats.0.sessions_refused_locally);
                self.session_ended(session);
                Some(
                    request.fail(Failure::new(
                        Reason::BadSession,
                        "this session has ended; log in again",
                    )),
                )
            }
            SessionStatus::Unknown if matches!(request, Request::SwitchState { .. }) => {
                self.confirm_session(session, request, received_at).await.err()
            }
            SessionStatus::Unknown => None,
        }
    }

    /// Asks the master whether `session` is still valid (by relaying `loginSession`); on a
    /// refusal, returns `request`'s failure return with the master's reason.
    async fn confirm_session(
        &mut self,
        session: SessionId,
        request: &Request,
        received_at: Timestamp,
    ) -> Result<(), Response> {
        let check = Request::LoginSession { session };
        let answer = self.shared.relay(self.ip(), received_at, Some(session), &check).await;
        match answer {
            Response::SessionId(confirmed) if confirmed == session => {
                self.shared.sessions().confirm(session, Instant::now());
                Ok(())
            }
            Response::LoginFail(failure) | Response::Error(failure) => {
                if ends_session(failure.reason) {
                    self.session_ended(session);
                }
                Err(request.fail(failure))
            }
            other => {
                warn!(answer = %other.instruction(), "unexpected answer to a session check");
                Err(request.fail(Failure::new(
                    Reason::Internal,
                    "the master's answer to the session check did not fit",
                )))
            }
        }
    }

    /// The session is dead: remember it, and log this connection out if it used it.
    fn session_ended(&mut self, session: SessionId) {
        self.shared.sessions().end(session);
        self.expirable.retain(|&s| s != session);
        if self.conn.session() == Some(session) {
            self.conn.end_session();
            debug!("session ended; connection logged out");
        }
    }

    /// Records what the master's answer to a relayed request says about sessions.
    fn learn(&mut self, request: &Request, response: &Response) {
        let now = Instant::now();
        match response {
            Response::SessionId(session) => {
                self.shared.sessions().confirm(*session, now);
                if matches!(request, Request::Login { expirable: true, .. })
                    && !self.expirable.contains(session)
                {
                    if self.expirable.len() >= EXPIRABLE_PER_CONNECTION_MAX {
                        self.expirable.remove(0);
                    }
                    self.expirable.push(*session);
                }
                Span::current().record("session", tracing::field::display(session));
            }
            Response::LogoutSuccess => {
                if let Some(session) = request.session() {
                    self.shared.sessions().end(session);
                    self.expirable.retain(|&s| s != session);
                }
            }
            _ => {}
        }
        if let Some(session) = request.session() {
            match response.failure() {
                // A `loginSession` refused for a session this worker never saw (a guess, or a
                // session of another worker) is not remembered: anyone may send those without
                // logging in, and each would push a real session out of the cache.
                Some(failure)
                    if ends_session(failure.reason)
                        && matches!(request, Request::LoginSession { .. })
                        && self.conn.session() != Some(session)
                        && self.session_status(&session) == SessionStatus::Unknown => {}
                Some(failure) if ends_session(failure.reason) => self.session_ended(session),
                Some(_) => {}
                None if matches!(request, Request::Logout { .. }) => {}
                None => self.shared.sessions().confirm(session, now),
            }
        }
        self.conn.on_response(response);
    }

    /// The client is gone: end the expirable sessions it made.
    async fn disconnected(&mut self) {
        if !self.shared.config.sessions.logout_expirable_on_disconnect {
            return;
        }
        // Sent by the logout task: the connection's place is free at once, however slow the
        // master is to answer.
        for session in std::mem::take(&mut self.expirable) {
            self.shared.sessions().end(session);
            self.shared.log_out_later(session, self.ip());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// An address's share of the large answers follows its share of the connections, at least
    /// one and at most all.
    #[test]
    fn an_address_gets_its_share_of_the_large_answers() {
        let share = |per_address, all| {
            let clients = crate::config::ClientsConfig {
                connections_per_address_max: per_address,
                connections_max: all,
                ..crate::config::ClientsConfig::default()
            };
            large_answers_per_address(&clients)
        };
        assert_eq!(share(256, 1024), 4);
        assert_eq!(share(1024, 1024), 16);
        assert_eq!(share(2048, 1024), 16);
        assert_eq!(share(1, 1_000_000), 1);
        assert_eq!(share(u32::MAX, 0), 16);
    }

    /// The reader's next idle check is always ahead of now: one idle period after the last
    /// activity while that is ahead, else one idle period from now (a request pending longer
    /// than the idle timeout left the reader spinning on a deadline in the past).
    #[test]
    fn the_next_idle_check_is_never_in_the_past() {
        let idle = Duration::from_secs(20);
        let start = Instant::now();
        let soon = start + Duration::from_secs(5);
        assert_eq!(next_idle_check(start, soon, idle), start + idle);
        let late = start + Duration::from_secs(30);
        assert_eq!(next_idle_check(start, late, idle), late + idle);
        assert_eq!(next_idle_check(start, start + idle, idle), start + idle + idle);
    }

    #[test]
    fn stamps_strictly_increase() {
        let clock = Clock::default();
        let mut last = clock.stamp();
        for _ in 0..10_000 {
            let next = clock.stamp();
            assert!(next > last);
            last = next;
        }
    }

    #[test]
    fn answers_match_requests() {
        let s = SessionId([1; 32]);
        let symbol = engine::Symbol::new("AAPL").unwrap();
        let qty = engine::Qty::from_raw(1);
        let buy = Request::Purchase { session: s, symbol, qty, client_order_id: 1 };
        let fail = |r| Failure::new(r, "x");
        assert!(answers(&buy, &Response::PurchaseFail(fail(Reason::Busy))));
        assert!(answers(&buy, &Response::Error(fail(Reason::Malformed))));
        assert!(!answers(&buy, &Response::SellFail(fail(Reason::Busy))));
        assert!(!answers(&buy, &Response::RegisterSuccess));
        let info = Request::GetAssetInfo { symbol };
        assert!(answers(&info, &Response::DataFail(fail(Reason::NotFound))));
        assert!(!answers(&info, &Response::Data(DataPayload::WorkerList(vec![]))));
        assert!(answers(&Request::GetWorkers, &Response::Data(DataPayload::WorkerList(vec![]))));
        assert!(answers(&Request::LoginSession { session: s }, &Response::SessionId(s)));
        // A relayed `error` (the master refusing the relay itself) reaches the client as the
        // request's own failure return, with the same reason; other answers pass as they are.
        assert_eq!(
            own_return(&buy, Response::Error(fail(Reason::Busy))),
            Response::PurchaseFail(fail(Reason::Busy))
        );
        assert_eq!(
            own_return(&info, Response::Error(fail(Reason::Malformed))),
            Response::DataFail(fail(Reason::Malformed))
        );
        assert_eq!(own_return(&buy, Response::RegisterSuccess), Response::RegisterSuccess);
    }
}
