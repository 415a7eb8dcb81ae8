//! The master's network side: accepts connections on its port, tells a worker's link from a
//! client asking for the worker list, runs the OpenPGP handshake, and turns relayed client
//! requests into core requests. The clock, the sockets and the price source live here; the
//! decisions live in the engine and the core.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use engine::{ClientOrderId, Side, Symbol, Timestamp, WorkerId};
use journal::{Journal, JournalConfig};
use net::{
    Control, DataPayload, Direction, Failure, FramedStream, LinkOpener, LinkSealer, MessageType,
    PriceSeries, Reason, Relay, Request, Response, WorkerInfo,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use crate::admin::{AdminSocket, AdminState, ConnectedWorkers, LiveRegistry};
use crate::auth::{AuthError, ClientPassword, LoginLimiter, PasswordHasher, RegistrationLimiter};
use crate::config::MasterConfig;
use crate::core::{
    Core, CoreConfig, CoreEnd, CoreRequest, LinkOut, LinkReply, Reply, UserQuery, now, order_fail,
};
use crate::history;
use crate::prices::{self, PriceSource};
use crate::sessions::{SessionId, SessionTable};
use crate::slow;
use crate::worker_auth::{self, HelloBinding, MasterIdentity};

/// Requests the core may have waiting.
const CORE_QUEUE_DEPTH: usize = 65_536;
/// How long a peer has for each handshake step.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most ticks one price query reads (in chunks of `journal::limits::TICKS_QUERY_MAX`): ten
/// million take a few seconds on a blocking thread; a range holding more is refused as too large.
const PRICE_QUERY_TICKS_MAX: usize = 10_000_000;
/// Price-history reads (`getAssetValue*` over a range) running at once; one more is answered
/// `busy`. Each may scan up to `PRICE_QUERY_TICKS_MAX` ticks for seconds on a blocking thread,
/// and nothing else bounds how many clients ask at once: unbounded, a few clients asking for
/// long ranges could hold every blocking thread (which `getAssetInfo` needs too) and the
/// memory of every scan's chunks. The permit is held by the scan itself, so one whose asker
/// gave up still counts until it ends.
const PRICE_SERIES_READS_MAX: usize = 4;
/// Handshakes one worker UUID may have under way at once from one address (a worker relinking
/// has one; a second covers a retry while the first is still timing out). The slot is held
/// from the Hello until the link is accepted or refused. Counted per address so that a host
/// sharing a worker's allow-list (a CIDR range) cannot take the worker's own slots.
const HANDSHAKES_PER_WORKER_ADDRESS_MAX: usize = 2;
/// Handshakes one worker UUID may have under way at once from all addresses together: a host
/// with many addresses in the allow-list holds at most this many link places for it. The
/// address the worker last linked from is not held to it (only to the per-address cap).
const HANDSHAKES_PER_WORKER_MAX: usize = 8;
/// Handshakes one address may have under way at once, for all UUIDs together: a host in the
/// allow-lists of many workers (UUIDs are public) would otherwise hold two link places for each.
/// Enough for `pt up`'s 16 workers starting at once on one host; the handshakes of a worker at
/// the address it last linked from are not counted.
const HANDSHAKES_PER_ADDRESS_MAX: usize = 16;
/// Handshakes doing their OpenPGP work (sealing the link key and signing the master's proof,
/// or verifying the worker's proof) at once. That work runs on a blocking thread, never on the
/// async threads that serve every other connection, and one handshake at a time, so that
/// Hellos from admitted addresses, however many come, take at most one core; the others wait
/// their turn (the caps above bound how many can wait).
const HANDSHAKE_CRYPTO_AT_ONCE: usize = 1;
/// How long a new connection has to send its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// The least number of connections that may be open before identifying themselves.
const UNIDENTIFIED_MIN: usize = 256;
/// Most requests a client connection of the master gets answered (it only ever needs the
/// worker list once) before the master closes it, so a client cannot keep its place forever.
const CLIENT_REQUESTS_MAX: u32 = 16;
/// How long shutdown waits for connections to write their last answers.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Links one worker may have at once: it needs one, and a few more cover a relink while its old
/// link is not yet found dead (`LINK_IDLE_TIMEOUT`). Without a cap, one worker (a leaked key, a
/// bug relinking in a loop) could take every place of `limits.worker_connections_max`, and
/// multiply its per-link caps. One more is refused `busy`.
const LINKS_PER_WORKER_MAX: usize = 4;
/// Relays one worker link may have in flight.
const RELAYS_IN_FLIGHT_MAX: usize = 100_000;
/// Requests with a large answer (a transaction history, a price series) one worker link may
/// have in flight, from the request to the writer taking the answer: each answer may be near a
/// megabyte (`net::limits::HISTORY_ENTRIES_MAX`) or over ten (`PRICE_SERIES_BARS_MAX`), asked for
/// by one small request that any logged-in user may send again and again; one more is answered
/// `busy` at once.
const LARGE_ANSWERS_IN_FLIGHT_MAX: usize = 8;
/// How long a closing link waits for the worker to close its side (see `worker_link`).
const LINK_CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Messages of a link's reader itself (heartbeat answers, `busy` refusals) its writer may have
/// queued; past it the reader waits.
const LINK_OWN_MESSAGES_MAX: usize = 1_024;

/// Why the master could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory cannot be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The journal cannot be opened or recovered.
    #[error(transparent)]
    Journal(#[from] journal::OpenError),
    /// The master's OpenPGP key or the worker registry cannot be loaded.
    #[error("worker authentication: {0}")]
    WorkerAuth(String),
    /// The admin socket (`DATA_DIR/admin.sock`) cannot be set up.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// Password hashing cannot start.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The price source cannot start.
    #[error(transparent)]
    Prices(#[from] prices::PriceSourceError),
    /// The core stopped or failed to list assets.
    #[error("core: {0}")]
    Core(String),
    /// A task could not be joined.
    #[error("internal: {0}")]
    Internal(String),
}

/// Numbers worker links, so a link that closes after its worker reconnected does not remove the
/// newer link's entry.
static NEXT_LINK_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A linked worker that sends nothing (not even a heartbeat) for this long is dropped. Workers
/// refuse a `link.heartbeat_interval` over a third of it.
pub const LINK_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The most the master's last price fetch may take as it stops (before the final settlement
/// that answers the orders still queued).
const FINAL_FETCH_BUDGET: Duration = Duration::from_secs(5);

/// Longest a link's writer may wait without a byte going out. A worker that stops reading
/// (stopped, stuck) would otherwise hold its link, its place among
/// `limits.worker_connections_max` and the master's shutdown for ever; one that reads, however
/// slowly and however long the burst, keeps bytes going out.
const LINK_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's stream, counting the bytes written to it: how a link's writer sees that it
/// makes progress.
#[derive(Debug)]
struct CountingStream<S> {
    inner: S,
    written: Arc<std::sync::atomic::AtomicU64>,
}

impl<S> CountingStream<S> {
    fn new(inner: S) -> Self {
        Self { inner, written: Arc::default() }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            self.written.fetch_add(*n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection's framed stream.
type Framed = FramedStream<CountingStream<TcpStream>>;

/// Why a link's writer stopped before its queue closed.
#[derive(Debug)]
enum LinkWriteEnd {
    /// One write took longer than its limit.
    TimedOut,
    /// A write failed.
    Failed(net::WriteError),
}

/// Writes a link's queued messages until the queue closes: what was queued meanwhile (an
/// interval's answers come all at once) goes out in one write. Stops at the first write that
/// fails, or when no byte went out (`written`, the stream's count) for `write_timeout` while
/// writing; the messages still queued are dropped with the receiver (the worker answers its
/// clients `master_unavailable` when the link ends).
async fn write_link<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut net::FrameWriter<W>,
    out_rx: &mut mpsc::UnboundedReceiver<LinkOut>,
    written: &std::sync::atomic::AtomicU64,
    write_timeout: Duration,
) -> Result<(), LinkWriteEnd> {
    use std::sync::atomic::Ordering;
    while let Some(first) = out_rx.recv().await {
        let writing = writer.write_gathered(
            first,
            || out_rx.try_recv().ok(),
            |out| encode_for_link(&out.control),
        );
        tokio::pin!(writing);
        let mut seen = written.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                result = &mut writing => match result {
                    Ok(()) => break,
                    Err(e) => return Err(LinkWriteEnd::Failed(e)),
                },
                () = tokio::time::sleep(write_timeout) => {
                    let now = written.load(Ordering::Relaxed);
                    if now == seen {
                        return Err(LinkWriteEnd::TimedOut);
                    }
                    seen = now;
                }
            }
        }
    }
    Ok(())
}

/// What every connection task shares.
struct Shared {
    core: mpsc::Sender<CoreRequest>,
    journal: Arc<Journal>,
    hasher: PasswordHasher,
    limiter: Mutex<LoginLimiter>,
    /// Registrations per client address.
    registrations: Mutex<RegistrationLimiter>,
    /// The configuration's workers plus the stored registry, edited through the admin socket.
    registry: Arc<LiveRegistry>,
    identity: MasterIdentity,
    workers: ConnectedWorkers,
    /// Every listed symbol, sorted: a price query for another symbol is told it is not listed,
    /// not that its price is not known yet.
    listed: Vec<Symbol>,
    /// Permits for price-history reads (`PRICE_SERIES_READS_MAX`).
    price_reads: Arc<tokio::sync::Semaphore>,
    /// Handshakes under way, per worker UUID and per (UUID, address).
    handshakes: Arc<Mutex<Handshakes>>,
    /// Permits for handshakes' OpenPGP work (`HANDSHAKE_CRYPTO_AT_ONCE`).
    handshake_crypto: Arc<Semaphore>,
}

/// Handshakes under way: per worker UUID (`HANDSHAKES_PER_WORKER_MAX`), per UUID and address
/// (`HANDSHAKES_PER_WORKER_ADDRESS_MAX`), and per address (`HANDSHAKES_PER_ADDRESS_MAX`).
#[derive(Debug, Default)]
struct Handshakes {
    per_worker: HashMap<Uuid, usize>,
    per_address: HashMap<(Uuid, IpAddr), usize>,
    /// Those not at their worker's usual address, per address.
    per_ip: HashMap<IpAddr, usize>,
    /// The address each worker last linked from: its handshakes there are not counted against
    /// the cap of all addresses, so hosts elsewhere in its allow-list cannot use it up.
    linked_from: HashMap<Uuid, IpAddr>,
}

/// A handshake under way for a worker UUID from an address, counted while it lives.
struct HandshakeSlot {
    handshakes: Arc<Mutex<Handshakes>>,
    uuid: Uuid,
    ip: IpAddr,
    /// From the address the worker last linked from: not counted per address.
    usual: bool,
}

impl Shared {
    /// Whether some worker last linked from `ip` and may still link from there: one removed
    /// from the registry since, or whose allow-list no longer holds `ip`, does not count.
    fn is_linked_from(&self, ip: IpAddr) -> bool {
        let mut handshakes =
            self.handshakes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        handshakes.is_linked_from(ip, |uuid| self.registry.allows(uuid, ip))
    }
}

impl Handshakes {
    /// Whether a worker that `still_allowed` admits from `ip` last linked from there. The
    /// workers it no longer admits from `ip` are forgotten there, so that the addresses of
    /// removed workers do not keep places of the workers' own pool.
    fn is_linked_from(&mut self, ip: IpAddr, still_allowed: impl Fn(Uuid) -> bool) -> bool {
        let mut found = false;
        self.linked_from.retain(|&uuid, &mut from| {
            if from != ip {
                return true;
            }
            let allowed = still_allowed(uuid);
            found |= allowed;
            allowed
        });
        found
    }
}

impl HandshakeSlot {
    /// A slot for `uuid` from `ip`, or `None` when that address, or all addresses together,
    /// already have their most handshakes for it under way.
    fn take(handshakes: &Arc<Mutex<Handshakes>>, uuid: Uuid, ip: IpAddr) -> Option<Self> {
        let mut counts = handshakes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let worker = counts.per_worker.get(&uuid).copied().unwrap_or(0);
        let address = counts.per_address.get(&(uuid, ip)).copied().unwrap_or(0);
        let usual = counts.linked_from.get(&uuid) == Some(&ip);
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        // The worker's usual address is held to its per-address cap only.
        let crowded = worker >= HANDSHAKES_PER_WORKER_MAX || from_ip >= HANDSHAKES_PER_ADDRESS_MAX;
        if (crowded && !usual) || address >= HANDSHAKES_PER_WORKER_ADDRESS_MAX {
            return None;
        }
        counts.per_worker.insert(uuid, worker + 1);
        counts.per_address.insert((uuid, ip), address + 1);
        if !usual {
            counts.per_ip.insert(ip, from_ip + 1);
        }
        Some(Self { handshakes: Arc::clone(handshakes), uuid, ip, usual })
    }

    /// The handshake succeeded: this address is the worker's usual one from now on.
    fn linked(self) {
        let mut counts = self.handshakes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.linked_from.insert(self.uuid, self.ip);
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut counts = self.handshakes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
            if let Some(count) = map.get_mut(&key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    map.remove(&key);
                }
            }
        }
        release(&mut counts.per_worker, self.uuid);
        release(&mut counts.per_address, (self.uuid, self.ip));
        if !self.usual {
            release(&mut counts.per_ip, self.ip);
        }
    }
}

/// Runs the master on `listener` until `shutdown` completes: recovers from the journal, starts
/// the core, the interval loop and the accept loop. On shutdown it stops accepting, settles and
/// commits the current interval (answering its orders), and returns.
pub async fn run(
    config: MasterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    run_with_prices(config, None, listener, shutdown).await
}

/// [`run`] with its price source already opened (`pt-master` opens it before it sets up the
/// data directory, so that a bad price file is a configuration error that touches nothing);
/// `None` opens the configured one.
pub async fn run_with_prices(
    config: MasterConfig,
    prices: Option<prices::AnyPriceSource>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let dir = config.data_dir.clone();
    crate::config::create_data_dir(&dir)
        .map_err(|source| ServerError::DataDir { path: dir.clone(), source })?;
    let identity = MasterIdentity::load_or_generate(&dir)
        .map_err(|e| ServerError::WorkerAuth(e.to_string()))?;

    // The interval loop's commits reuse their page buffers from now on (journal::heap).
    journal::heap::keep_commit_buffers();
    let started = Instant::now();
    let journal_config = JournalConfig {
        snapshot_every_events: config.journal.snapshot_every_events,
        // Validated at most 64 GiB, which fits a 64-bit usize.
        cache_bytes: usize::try_from(config.journal.cache_bytes).unwrap_or(usize::MAX),
        ..JournalConfig::default()
    };
    let path = journal::path_in(&dir);
    let (journal, recovered) =
        tokio::task::spawn_blocking(move || Journal::open(&path, journal_config))
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))??;
    for warning in &recovered.warnings {
        warn!(?warning, "recovery");
    }
    info!(
        events = recovered.events_replayed,
        last_seq = recovered.last_seq.0,
        digest = %recovered.digest,
        took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "recovered from the journal"
    );
    let journal = Arc::new(journal);
    // The registry: the config's [[workers]] plus the workers stored in the journal.
    let registry = Arc::new(
        LiveRegistry::load(&config.workers, Arc::clone(&journal))
            .map_err(|e| ServerError::WorkerAuth(e.to_string()))?,
    );
    info!(fingerprint = %identity.fingerprint(), workers = registry.len(), "master identity loaded");
    let core = Core::new(
        engine::Engine::from_state(recovered.state),
        Arc::clone(&journal),
        CoreConfig {
            initial_cash: config.initial_cash,
            orders_per_interval_max: config.limits.orders_per_interval_max as usize,
            orders_per_account_per_interval_max: config.limits.orders_per_account_per_interval_max
                as usize,
            accounts_max: config.limits.accounts_max,
            remembered_outcomes_max: 1_000_000,
        },
        SessionTable::new(&config.sessions),
    );
    let (core_tx, core_rx) = mpsc::channel(CORE_QUEUE_DEPTH);
    // The interval loop's own lane: settlement never waits behind clients' requests.
    let (intervals_tx, intervals_rx) = mpsc::channel(2);
    // The core ends before shutdown only if it failed (`Core::run`): the accept loop hears of it.
    let (core_ended_tx, mut core_ended) = oneshot::channel();
    let core_thread = std::thread::Builder::new()
        .name("core".into())
        .spawn(move || {
            let mut core = core;
            let end = core.run_with_intervals(core_rx, intervals_rx);
            // Heard before the core is dropped (which waits for a snapshot being stored).
            let _ = core_ended_tx.send(end.clone());
            drop(core);
            end
        })
        .map_err(|e| ServerError::Internal(e.to_string()))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    // Start-up after the core runs: a failure here stops the core and waits for it, and a core
    // that failed meanwhile is reported with its own cause, not as a closed channel.
    let started = async {
        let mut source = match prices {
            Some(source) => source,
            None => prices::open_source(&config.prices, config.update_interval)?,
        };
        let assets = prices::resolve_assets(&config.assets, &source)?;
        let (tx, rx) = oneshot::channel();
        send_core(&core_tx, CoreRequest::ListAssets { symbols: assets.clone(), reply: tx }).await?;
        let listed =
            rx.await.map_err(|e| ServerError::Core(e.to_string()))?.map_err(ServerError::Core)?;
        let (tx, rx) = oneshot::channel();
        send_core(&core_tx, CoreRequest::LatestTickTime { reply: tx }).await?;
        let latest = rx.await.ok().flatten();
        match &mut source {
            prices::AnyPriceSource::Recorded(recorded) => {
                if let Some(latest) = latest {
                    recorded.seek_after(latest);
                }
                let _warned =
                    note_price_adjustment(&journal, recorded.adjustment(), latest.is_some());
            }
            prices::AnyPriceSource::Http(_) => {
                let now = crate::core::now();
                if let Some(latest) = latest.filter(|&l| prices::http::beyond_any_quote(l, now)) {
                    return Err(prices::PriceSourceError::PricesAheadOfClock { latest, now }.into());
                }
            }
        }
        info!(assets = assets.len(), newly_listed = listed, source = source.name(), "prices ready");
        let (tx, rx) = oneshot::channel();
        send_core(&core_tx, CoreRequest::ListedAssets { reply: tx }).await?;
        let listed = rx.await.map_err(|e| ServerError::Core(e.to_string()))?;

        let shared = Arc::new(Shared {
            core: core_tx.clone(),
            journal,
            hasher: PasswordHasher::new(&config.auth)?,
            limiter: Mutex::new(LoginLimiter::new(&config.auth.failed_logins)),
            registrations: Mutex::new(RegistrationLimiter::new(&config.auth.registrations)),
            registry,
            identity,
            workers: Arc::new(Mutex::new(BTreeMap::new())),
            listed,
            price_reads: Arc::new(tokio::sync::Semaphore::new(PRICE_SERIES_READS_MAX)),
            handshakes: Arc::default(),
            handshake_crypto: Arc::new(Semaphore::new(HANDSHAKE_CRYPTO_AT_ONCE)),
        });

        // A data directory whose path is too long for a Unix socket (about 100 bytes) still runs:
        // without the socket, `pt-master worker ...` edits the registry with the master stopped.
        let admin_socket = match AdminSocket::bind(&dir) {
            Ok(socket) => Some(socket),
            Err(crate::admin::AdminError::Socket { path, source, .. })
                if source.kind() == std::io::ErrorKind::InvalidInput =>
            {
                warn!(path = %path.display(), cause = %source, "no admin socket: its path is too long for a Unix socket; `pt-master worker add/remove` work only while the master is stopped");
                None
            }
            Err(e) => return Err(e.into()),
        };
        Ok::<_, ServerError>((source, assets, shared, admin_socket))
    }
    .await;
    let (source, assets, shared, admin_socket) = match started {
        Ok(started) => started,
        Err(e) => return Err(start_up_failed(e, core_tx, core_thread).await),
    };
    let admin_state = AdminState {
        registry: Arc::clone(&shared.registry),
        connected: Arc::clone(&shared.workers),
    };
    let admin_task =
        admin_socket.map(|socket| tokio::spawn(socket.serve(admin_state, stop_rx.clone())));
    let mut interval_task = tokio::spawn(interval_loop(
        source,
        assets,
        config.update_interval,
        CoreLanes { requests: core_tx.clone(), intervals: intervals_tx },
        stop_rx.clone(),
    ));
    info!(addr = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()), "master listening");
    // Worker links are limited by `limits.worker_connections_max`; connections that have not
    // identified themselves yet (and getWorkers clients) by separate, larger pools, so idle
    // sockets cannot use up the places of worker links. Connections from an address some
    // registered worker may link from wait in a pool of their own: clients elsewhere, however
    // many, cannot keep a worker from linking again.
    let connections = Arc::new(Semaphore::new(config.limits.worker_connections_max as usize));
    let unidentified_places =
        (config.limits.worker_connections_max as usize).saturating_mul(4).max(UNIDENTIFIED_MIN);
    let unidentified = Arc::new(Semaphore::new(unidentified_places));
    let from_worker_addresses = Arc::new(Semaphore::new(unidentified_places));
    // Any host of an allow-list range can fill the pool above; workers' own addresses (where
    // they last linked from, or named alone in an allow-list) have places of their own first,
    // so such a host cannot keep a worker from linking again (as with the handshakes,
    // `HandshakeSlot`).
    let from_linked_addresses =
        Arc::new(Semaphore::new(config.limits.worker_connections_max as usize));
    make_room_for_connections(
        (config.limits.worker_connections_max as usize)
            .saturating_mul(2)
            .saturating_add(unidentified_places.saturating_mul(2))
            .saturating_add(crate::admin::CONNECTIONS_MAX),
    );
    // Every connection's task: the shutdown waits for them (each holds the journal), so that
    // when `run` returns the journal is closed and a restart can open it at once.
    let mut connection_tasks = tokio::task::JoinSet::new();
    // Boxed, so that it can be dropped when the stop comes from a failure: a signal then ends
    // the process at once (`crate::shutdown::shutdown_signal`).
    let mut shutdown = Box::pin(shutdown);
    let mut core_failed = false;
    // The interval loop ends only when told to stop: one that ended on its own (a panic in a
    // price source, say) would leave the master taking orders it never settles. Its cause.
    let mut interval_ended: Option<String> = None;
    loop {
        // In this order: a core that failed also ends the interval loop (its requests fail),
        // and is the cause to report.
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            end = &mut core_ended => {
                // A contained failure was logged by the core with its cause; a thread that ended
                // without sending its end panicked outside a request, which only the panic
                // message on stderr (and the crash dump) tell. What is queued is answered
                // unavailable.
                if !matches!(end, Ok(CoreEnd::Failed(_))) {
                    error!(
                        "the core thread ended without a word: it panicked outside a request \
                         (the panic message and the crash dump are on stderr)"
                    );
                }
                core_failed = true;
                break;
            }
            ended = &mut interval_task => {
                let cause = match &ended {
                    Ok(()) => "it stopped on its own".to_owned(),
                    Err(e) => e.to_string(),
                };
                error!(%cause, "the interval loop ended while the master serves: stopping");
                interval_ended = Some(cause);
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let ip = peer.ip();
                    // A worker's own address (where it last linked from, or named alone in its
                    // allow-list, so known after a restart too) takes a place of its own pool
                    // first, then of the shared one.
                    let permit = if shared.is_linked_from(ip) || shared.registry.names_any(ip) {
                        Arc::clone(&from_linked_addresses)
                            .try_acquire_owned()
                            .or_else(|_| Arc::clone(&from_worker_addresses).try_acquire_owned())
                    } else if shared.registry.allows_any(ip) {
                        Arc::clone(&from_worker_addresses).try_acquire_owned()
                    } else {
                        Arc::clone(&unidentified).try_acquire_owned()
                    };
                    let Ok(permit) = permit else {
                        debug!(%peer, "too many unidentified connections; refusing");
                        drop(stream);
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    let stop = stop_rx.clone();
                    let links = Arc::clone(&connections);
                    let span = info_span!("conn", %peer);
                    // The tasks that ended are forgotten as new ones come.
                    while connection_tasks.try_join_next().is_some() {}
                    connection_tasks.spawn(async move {
                        handle_connection(stream, peer, shared, stop, links, permit).await;
                    }.instrument(span));
                }
                Err(e) => {
                    warn!(cause = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    // Stop accepting now: a connection made during the stop would only wait in the backlog
    // until it is cut off; refused, its client knows at once.
    drop(listener);
    if core_failed || interval_ended.is_some() {
        drop(shutdown);
    }
    if core_failed {
        error!("stopping the master: its core failed (see above); restart it");
    } else if interval_ended.is_some() {
        error!("stopping the master: its interval loop ended (see above); restart it");
    } else {
        info!("shutting down: settling the current interval");
    }
    let _ = stop_tx.send(true);
    let interval_failure = match interval_ended {
        Some(cause) => Some(cause),
        None => interval_task.await.err().map(|e| {
            error!(cause = %e, "interval loop failed");
            e.to_string()
        }),
    };
    // Let the links write the last interval's answers, and every connection end, before the
    // process goes; what is still busy after the drain time is cut off.
    let drained = tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, async {
        while connection_tasks.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        warn!(
            connections = connection_tasks.len(),
            "some connections were still busy at shutdown; closing them"
        );
    }
    connection_tasks.shutdown().await;
    if let Some(task) = admin_task
        && let Err(e) = task.await
    {
        error!(cause = %e, "admin socket task failed");
    }
    drop(shared);
    drop(core_tx);
    if let CoreEnd::Failed(cause) = join_core(core_thread).await? {
        return Err(ServerError::Core(format!(
            "the core failed and the master stopped: {cause}; a restart checks the journal"
        )));
    }
    if let Some(cause) = interval_failure {
        return Err(ServerError::Internal(format!(
            "the interval loop failed ({cause}), so the master stopped; restart it"
        )));
    }
    info!("master stopped");
    Ok(())
}

/// The error of a start-up that failed after the core started: the core is stopped (its
/// sender dropped) and waited for; if it had failed, its cause is the error, since the start-up
/// step only saw its channel close.
async fn start_up_failed(
    error: ServerError,
    core_tx: mpsc::Sender<CoreRequest>,
    core_thread: std::thread::JoinHandle<CoreEnd>,
) -> ServerError {
    drop(core_tx);
    match join_core(core_thread).await {
        Ok(CoreEnd::Failed(cause)) => {
            ServerError::Core(format!("the core failed while the master started: {cause}"))
        }
        Ok(CoreEnd::Stopped) => error,
        Err(joined) => {
            error!(cause = %error, %joined, "the core thread ended badly while the master started");
            error
        }
    }
}

/// Waits, off the runtime's threads, for the core thread to end (its senders gone) and gives
/// how it ended; a thread that panicked outside its contained request handling is an error.
async fn join_core(core_thread: std::thread::JoinHandle<CoreEnd>) -> Result<CoreEnd, ServerError> {
    tokio::task::spawn_blocking(move || core_thread.join())
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
        .map_err(|_| ServerError::Internal("the core thread panicked".into()))
}

async fn send_core(
    core: &mpsc::Sender<CoreRequest>,
    request: CoreRequest,
) -> Result<(), ServerError> {
    core.send(request).await.map_err(|_| ServerError::Core("the core stopped".into()))
}

/// The interval loop's ways to the core: its own lane for `Cut` and `Settle`, and the common
/// one (for the `Wake` after each, and `Stop`, which comes after every request already queued).
struct CoreLanes {
    requests: mpsc::Sender<CoreRequest>,
    intervals: mpsc::Sender<CoreRequest>,
}

impl CoreLanes {
    /// Sends `request` (`Cut`, `Settle`) on the interval lane and wakes the core; false when
    /// the core is gone.
    async fn send_interval_request(&self, request: CoreRequest) -> bool {
        if self.intervals.send(request).await.is_err() {
            return false;
        }
        // A full channel means a core with requests to take, which looks at the lane before
        // each: the wake-up is needed only by a core waiting on an empty channel, and waiting
        // for room here would put the loop behind the backlog again.
        match self.requests.try_send(CoreRequest::Wake) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Once per update interval: close the interval's order list (`Cut`), fetch prices, then
/// settle: an order fills at prices fetched after it was placed, never before (an order that
/// comes during the fetch waits for the next interval). A final settlement runs on shutdown so
/// that queued orders are answered.
async fn interval_loop(
    mut source: prices::AnyPriceSource,
    assets: Vec<Symbol>,
    every: Duration,
    core: CoreLanes,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut stopping = false;
    let mut slow_intervals = slow::SlowIntervals::default();
    let mut failed_intervals = slow::FailedIntervals::default();
    loop {
        if !stopping {
            stopping = tokio::select! {
                _ = ticker.tick() => false,
                _ = stop.changed() => true,
            };
        }
        let batch = if stopping {
            // The last interval's orders: everything already queued in the channel, so that
            // they settle in it instead of being refused by `Stop`.
            if core.requests.send(CoreRequest::Cut).await.is_err() {
                break;
            }
            // The last settlement's prices, within a few seconds: a source that takes its
            // whole budget (an HTTP source at its call cap) must not hold the shutdown for an
            // interval. Orders whose asset gets no price in time are refused `no_price`.
            source.fetch_within(&assets, FINAL_FETCH_BUDGET).await
        } else {
            if !core.send_interval_request(CoreRequest::Cut).await {
                break;
            }
            let fetch = source.fetch(&assets);
            tokio::pin!(fetch);
            let fetched = tokio::select! {
                batch = &mut fetch => Some(batch),
                _ = stop.changed() => None,
            };
            match fetched {
                Some(batch) => batch,
                // Stopped during a fetch: it has the last fetch's few seconds to finish (what
                // it fetched is kept); past them it is dropped, and the interval settles
                // without prices.
                None => {
                    stopping = true;
                    match tokio::time::timeout(FINAL_FETCH_BUDGET, &mut fetch).await {
                        Ok(batch) => batch,
                        Err(_) => {
                            warn!(
                                "the price fetch under way at shutdown did not end in time; the last interval settles without prices"
                            );
                            let deadline = prices::FailureReason::DeadlineReached;
                            prices::PriceBatch::without_prices(assets.iter().copied(), &deadline)
                        }
                    }
                }
            }
        };
        for failure in &batch.failures {
            debug!(symbol = %failure.symbol, reason = ?failure.reason, "no price this interval");
        }
        let (tx, rx) = oneshot::channel();
        let settle = CoreRequest::Settle { batch, reply: tx };
        if stopping {
            // The last interval goes behind everything already queued: it settles the orders
            // its `Cut` took (on this lane too when the stop came before the fetch, so the
            // orders waiting in the channel then settle in it). Orders that came after the
            // `Cut` (during the fetch) are refused by `Stop`: their prices were fetched
            // before they were placed.
            if core.requests.send(settle).await.is_err() {
                break;
            }
        } else if !core.send_interval_request(settle).await {
            break;
        }
        match rx.await {
            Ok(summary) if summary.failed => {
                if let Some(intervals) = failed_intervals.record(std::time::Instant::now()) {
                    warn!(?summary.interval, intervals, "intervals not committed since the last such line (the journal refuses writes? see above)");
                }
            }
            Ok(summary) => {
                if let Some(intervals) = failed_intervals.committed(std::time::Instant::now()) {
                    warn!(intervals, "intervals not committed before this one, which was");
                }
                debug!(
                    ?summary.interval,
                    summary.filled,
                    summary.rejected,
                    summary.settle_micros,
                    summary.commit_micros,
                    "interval settled"
                );
                let work = slow::IntervalWork {
                    settle: Duration::from_micros(summary.settle_micros),
                    commit: Duration::from_micros(summary.commit_micros),
                };
                if let Some(report) = slow_intervals.record(work, std::time::Instant::now()) {
                    slow::log(&report);
                }
            }
            Err(_) => break,
        }
        if stopping {
            break;
        }
        // A stop that came while this interval settled: one more, final interval settles the
        // orders that came since its cut (the top of the loop sees `stopping`).
        if *stop.borrow() {
            stopping = true;
        }
    }
    // Orders that reached the core after the last settlement would wait for an interval that
    // will not come (and hold their links open): the core answers them now.
    let (tx, rx) = oneshot::channel();
    if core.requests.send(CoreRequest::Stop { reply: tx }).await.is_ok() {
        let _ = rx.await;
    }
}

/// One accepted connection: a worker's link (it starts with `workerHello`) or a client that may
/// only ask for the worker list.
async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    links: Arc<Semaphore>,
    unidentified: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let stream = CountingStream::new(stream);
    let written = Arc::clone(&stream.written);
    let mut framed = FramedStream::new(stream);
    // Until it is a worker link, a connection sends small requests only (`workerHello`,
    // `getWorkers`): it cannot make the master hold a 16 MiB message.
    framed.reader().set_body_bytes_max(net::limits::REQUEST_BODY_BYTES_MAX);
    let mut stopping = stop.clone();
    let first = tokio::select! {
        first = tokio::time::timeout(FIRST_FRAME_TIMEOUT, framed.read_message()) => first,
        // Stopping: a connection that has said nothing yet is not waited for.
        _ = stopping.changed() => return,
    };
    let first = match first {
        Ok(Ok(Some(message))) => message,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            warn!(cause = %e, "bad first frame");
            refuse_frame(&mut framed, &e).await;
            return;
        }
        Err(_) => {
            debug!("no first frame in time");
            return;
        }
    };
    if first.message_type == MessageType::Control {
        match Control::decode(&first) {
            Ok(Control::WorkerHello(hello)) => {
                // Refused before it takes a link place: a Hello for a UUID that is not
                // registered, or from an address outside its allow-list, cannot hold one of
                // the places real workers link through (for the handshake's 10 s).
                let uuid = Uuid::from_u128(hello.worker.0);
                let spoken = u16::from(net::limits::PROTOCOL_VERSION);
                if hello.version != spoken {
                    warn!(worker = %uuid, version = hello.version, "worker refused: a protocol version this master does not speak");
                    let why = format!(
                        "protocol version {} is not spoken here; this master speaks {spoken}",
                        hello.version
                    );
                    return refuse_saying(&mut framed, Reason::InvalidArgument, why).await;
                }
                // Subscribed before the admission check, so that a removal in between is seen
                // by the link.
                let registry_changes = shared.registry.subscribe();
                let worker = match shared.registry.check_admission(uuid, peer.ip()) {
                    Ok(worker) => worker,
                    Err(e) => return refuse(&mut framed, uuid, e.reason()).await,
                };
                // A UUID is public (`getWorkers`): a host in its allow-list could send Hellos
                // for it without the key, each holding a link place for the handshake. Only a
                // few handshakes per UUID and address at once, so such a host holds a few
                // places, not all, and none of the worker's own address.
                let Some(handshake) = HandshakeSlot::take(&shared.handshakes, uuid, peer.ip())
                else {
                    warn!(worker = %uuid, "too many handshakes under way for this worker; refusing");
                    return refuse_busy(&mut framed, "a handshake for this worker is under way")
                        .await;
                };
                let Ok(link) = links.try_acquire_owned() else {
                    warn!(worker = %uuid, "worker link limit reached; refusing");
                    return refuse_busy(&mut framed, "too many worker links").await;
                };
                drop(unidentified);
                let admitted = Admitted { worker, registry_changes, handshake };
                worker_link(framed, written, peer, hello, shared, stop, admitted).await;
                drop(link);
            }
            Ok(other) => {
                // Not a link: answered as a client's unknown instruction would be.
                warn!(message = ?other.instruction(), "a link must start with workerHello");
                let unknown = Failure::new(
                    Reason::UnknownInstruction,
                    "a control message other than workerHello: a client may only ask for the \
                     worker list",
                );
                let _ = answer_client(&mut framed, &Response::Error(unknown)).await;
            }
            Err(e) => {
                warn!(cause = %e, "undecodable control message");
                let _ = answer_client(&mut framed, &Response::for_decode_error(&first, &e)).await;
            }
        }
        return;
    }
    // A client: it may ask for the worker list, and nothing else, a few times at most, and must
    // read its answers: the conversation holds a place of the unidentified pool.
    let mut next = Some(first);
    let mut answered = 0;
    while let Some(message) = next.take() {
        let response = match Request::decode(&message) {
            Ok(Request::GetWorkers) => {
                Response::Data(DataPayload::WorkerList(worker_list(&shared)))
            }
            Ok(other) => {
                warn!(instruction = ?other.instruction(), "client asked the master for more than the worker list");
                Response::Error(Failure::new(
                    Reason::Forbidden,
                    "clients may only ask the master for the worker list; use a worker",
                ))
            }
            Err(e) => Response::for_decode_error(&message, &e),
        };
        if !answer_client(&mut framed, &response).await {
            return;
        }
        answered += 1;
        if answered >= CLIENT_REQUESTS_MAX {
            debug!("client asked {answered} times; closing");
            return;
        }
        let mut stop = stop.clone();
        next = tokio::select! {
            read = tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.read_message()) => match read {
                Ok(Ok(Some(message))) => Some(message),
                // A broken frame is answered as the first one is (PROTOCOL.md section 10),
                // then the connection closes.
                Ok(Err(e)) => {
                    debug!(cause = %e, "bad frame from a client");
                    refuse_frame(&mut framed, &e).await;
                    None
                }
                Ok(Ok(None)) | Err(_) => None,
            },
            _ = stop.changed() => None,
        };
    }
}

/// Writes one answer to a connection that has not identified itself, giving a client that does
/// not read it `HANDSHAKE_TIMEOUT`; false when the answer did not go out (the caller closes).
async fn answer_client(
    framed: &mut FramedStream<CountingStream<TcpStream>>,
    response: &Response,
) -> bool {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.write_response(response)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            debug!("client does not read its answers; closing");
            false
        }
    }
}

/// Answers a broken frame with its `error`, when the protocol has one for it (PROTOCOL.md
/// section 10); the caller closes the connection, whose stream cannot be read further.
async fn refuse_frame(
    framed: &mut FramedStream<CountingStream<TcpStream>>,
    error: &net::ReadError,
) {
    if let Some(reason) = error.reason() {
        let _ =
            answer_client(framed, &Response::Error(Failure::new(reason, error.to_string()))).await;
    }
}

/// Encodes a message for a worker link. A relayed answer too large for one message is replaced
/// by a `tooLarge` failure of the same request: the client gets an answer, and the link and the
/// answers queued behind it carry on (an error here would end the link's writer).
fn encode_for_link(control: &Control) -> Result<net::Message, net::EncodeError> {
    control.encode().or_else(|cause| match control {
        Control::RelayReply { relay_id, response } => {
            warn!(relay_id, %cause, "an answer is too large to send; answering tooLarge instead");
            let failure = Failure::new(
                Reason::TooLarge,
                "the answer is over the 16 MiB message limit".to_owned(),
            );
            Control::RelayReply { relay_id: *relay_id, response: response.failed_as(failure) }
                .encode()
        }
        _ => Err(cause),
    })
}

fn worker_list(shared: &Shared) -> Vec<WorkerInfo> {
    shared
        .workers
        .lock()
        .map(|w| {
            w.values().filter_map(|links| links.last().map(|(_, info)| info.clone())).collect()
        })
        .unwrap_or_default()
}

/// Runs a handshake's OpenPGP work on a blocking thread once a permit of
/// `HANDSHAKE_CRYPTO_AT_ONCE` is free, holding the permit until the work ends (even if the
/// handshake is dropped meanwhile). `None` if the work panicked (logged).
async fn handshake_crypto<T: Send + 'static>(
    permits: &Arc<Semaphore>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let permit = Arc::clone(permits).acquire_owned().await.ok()?;
    let done = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await;
    match done {
        Ok(value) => Some(value),
        Err(e) => {
            error!(cause = %e, "a handshake's OpenPGP work failed");
            None
        }
    }
}

/// Refuses a worker: tells it only "forbidden" and logs the real cause.
async fn refuse(framed: &mut Framed, worker: Uuid, cause: &str) {
    warn!(%worker, %cause, "worker refused");
    let _ = framed
        .write_control(&Control::LinkRefused(Failure::new(Reason::Forbidden, "forbidden")))
        .await;
}

/// Takes a link off the worker list; the worker leaves the list only with its last link (a
/// worker that linked again is still up).
fn unlist(shared: &Shared, uuid: Uuid, link_id: u64) {
    let mut workers = shared.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(links) = workers.get_mut(&uuid) {
        links.retain(|(id, _)| *id != link_id);
        if links.is_empty() {
            workers.remove(&uuid);
        }
    }
}

/// Refuses a worker's Hello for lack of room, saying which (the caller logs it).
async fn refuse_busy(framed: &mut Framed, message: &str) {
    refuse_saying(framed, Reason::Busy, message.to_owned()).await;
}

/// Refuses a worker's Hello with the reason and why, for refusals that tell the worker nothing
/// an attacker could use (no room, a version not spoken); the caller logs it.
async fn refuse_saying(framed: &mut Framed, reason: Reason, message: String) {
    let _ = framed.write_control(&Control::LinkRefused(Failure::new(reason, message))).await;
}

/// What a Hello got before its link started: the registered worker it claims, admitted from
/// its address; the registry's changes, subscribed before that check; its handshake slot.
struct Admitted {
    worker: crate::worker_auth::RegisteredWorker,
    registry_changes: watch::Receiver<u64>,
    handshake: HandshakeSlot,
}

async fn worker_link(
    mut framed: Framed,
    written: Arc<std::sync::atomic::AtomicU64>,
    peer: SocketAddr,
    hello: net::WorkerHello,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    admitted: Admitted,
) {
    let uuid = Uuid::from_u128(hello.worker.0);
    let Admitted { worker, mut registry_changes, handshake } = admitted;
    let worker = Arc::new(worker);
    // The link key is sealed before the Challenge so that the master's proof covers the exact
    // sealed key (docs/WORKER_AUTH.md); it is used only once the worker's proof verifies.
    let challenge = handshake_crypto(&shared.handshake_crypto, {
        let (worker, shared) = (Arc::clone(&worker), Arc::clone(&shared));
        let (version, address, worker_nonce) = (hello.version, hello.address.clone(), hello.nonce);
        move || {
            let binding = HelloBinding { protocol_version: version, client_addr: &address };
            let key = worker_auth::new_link_key()?;
            let sealed_key = worker_auth::seal_link_key(&worker, &key)?;
            let nonce = worker_auth::new_challenge()?;
            let proof = shared.identity.sign_worker_challenge(
                uuid,
                &worker_nonce,
                &nonce,
                &binding,
                &sealed_key,
            )?;
            Ok::<_, worker_auth::AuthError>((key, nonce, proof, sealed_key))
        }
    })
    .await;
    let Some(challenge) = challenge else {
        return refuse(&mut framed, uuid, "the handshake's OpenPGP work failed").await;
    };
    let (key, nonce, master_proof, sealed_key) = match challenge {
        Ok(challenge) => challenge,
        Err(e) => {
            warn!(worker = %uuid, cause = %e, "cannot make the handshake's challenge");
            return refuse(&mut framed, uuid, e.reason()).await;
        }
    };
    let challenge = Control::Challenge { nonce, master_proof, sealed_key };
    if framed.write_control(&challenge).await.is_err() {
        return;
    }
    let signature = match tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.read_control()).await {
        Ok(Ok(Some(Control::HelloProof { signature }))) => signature,
        Ok(Ok(Some(_))) => return refuse(&mut framed, uuid, "expected helloProof").await,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return refuse(&mut framed, uuid, &e.to_string()).await,
        Err(_) => return refuse(&mut framed, uuid, "handshake timed out").await,
    };
    let verified = handshake_crypto(&shared.handshake_crypto, {
        let worker = Arc::clone(&worker);
        let (version, address) = (hello.version, hello.address.clone());
        move || {
            let binding = HelloBinding { protocol_version: version, client_addr: &address };
            worker_auth::verify_proof(&worker, &nonce, &binding, &signature, SystemTime::now())
        }
    })
    .await;
    match verified {
        Some(Ok(())) => {}
        Some(Err(e)) => return refuse(&mut framed, uuid, e.reason()).await,
        None => return refuse(&mut framed, uuid, "the handshake's OpenPGP work failed").await,
    }
    // Removed (or given another key) by the operator during the handshake: refused, as a
    // link already up would be closed.
    let fingerprint = worker.fingerprint();
    if !shared.registry.admits(uuid, &fingerprint, peer.ip()) {
        return refuse(&mut framed, uuid, "removed from the registry during the handshake").await;
    }
    // Listed before it is accepted, so that two handshakes at once cannot both pass the cap.
    let name = worker.name().to_owned();
    let link_id = NEXT_LINK_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let listed = {
        let mut workers = shared.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let links = workers.entry(uuid).or_default();
        let room = links.len() < LINKS_PER_WORKER_MAX;
        if room {
            let info =
                WorkerInfo { id: hello.worker, name: name.clone(), address: hello.address.clone() };
            links.push((link_id, info));
        }
        // (Refused, it has its other links: the entry is never left empty.)
        room
    };
    if !listed {
        warn!(%uuid, "this worker already has {LINKS_PER_WORKER_MAX} links; refusing another");
        return refuse_busy(
            &mut framed,
            &format!("this worker already has {LINKS_PER_WORKER_MAX} links"),
        )
        .await;
    }
    if framed.write_control(&Control::LinkAccepted).await.is_err() {
        unlist(&shared, uuid, link_id);
        return;
    }
    handshake.linked();
    framed.seal_link(
        LinkSealer::new(key.clone(), Direction::MasterToWorker),
        LinkOpener::new(key, Direction::WorkerToMaster),
    );
    // An authenticated worker relays its clients' requests, each with its own wrapping.
    framed.reader().set_body_bytes_max(net::limits::MESSAGE_BODY_BYTES_MAX);
    info!(%uuid, %name, address = %hello.address, "worker linked");

    let (mut reader, mut writer) = framed.into_split();
    // Every queued message holds a permit (a relay's, or one of the reader's own), released
    // when the writer takes it: the queue is bounded by the permits, and the core can queue an
    // order's reply without ever waiting.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<LinkOut>();
    let writer_task = tokio::spawn(async move {
        match write_link(&mut writer, &mut out_rx, &written, LINK_WRITE_TIMEOUT).await {
            Ok(()) => {}
            Err(LinkWriteEnd::TimedOut) => {
                warn!(%uuid, "the worker has not read its link for too long; closing the link");
            }
            Err(LinkWriteEnd::Failed(e)) => debug!(cause = %e, "link write failed"),
        }
    });
    let in_flight = Arc::new(Semaphore::new(RELAYS_IN_FLIGHT_MAX));
    let large_answers = Arc::new(Semaphore::new(LARGE_ANSWERS_IN_FLIGHT_MAX));
    let mut overflow = LinkOverflow::default();
    let own_messages = Arc::new(Semaphore::new(LINK_OWN_MESSAGES_MAX));
    // Queues one of the reader's own messages, waiting for room (backpressure on the reader).
    let send_own = |control: Control| {
        let (own_messages, out_tx) = (Arc::clone(&own_messages), out_tx.clone());
        async move {
            if let Ok(permit) = own_messages.acquire_owned().await {
                let _ = out_tx.send(LinkOut { control, permit, large: None });
            }
        }
    };
    let mut removed = false;
    loop {
        // Biased: a removal the operator was told is done closes the link before any relay
        // read after it is handled (the read is cancel-safe, so nothing is lost otherwise).
        let message = tokio::select! {
            biased;
            changed = registry_changes.changed() => {
                if changed.is_ok() && shared.registry.admits(uuid, &fingerprint, peer.ip()) {
                    continue;
                }
                info!(%uuid, "worker removed by the operator; closing its link");
                removed = true;
                break;
            }
            _ = stop.changed() => break,
            // The writer gave up (a failed write, or a worker that stopped reading): the link
            // is dead both ways.
            () = out_tx.closed() => break,
            read = tokio::time::timeout(LINK_IDLE_TIMEOUT, reader.read_message()) => match read {
                Ok(read) => read,
                Err(_) => {
                    warn!(%uuid, "worker silent for too long; closing the link");
                    break;
                }
            },
        };
        let message = match message {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(e) => {
                warn!(%uuid, cause = %e, "link frame refused; closing the link");
                break;
            }
        };
        match Control::decode(&message) {
            Ok(Control::Relay(relay)) => {
                let relay_id = relay.relay_id;
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    // The request's own failure return, as for any overloaded request.
                    let busy = relay
                        .request
                        .fail(Failure::new(Reason::Busy, "too many requests in flight"));
                    send_own(Control::RelayReply { relay_id, response: busy }).await;
                    continue;
                };
                let large = match large_answer_permit(&relay.request, &large_answers) {
                    Ok(large) => large,
                    Err(busy) => {
                        send_own(Control::RelayReply { relay_id, response: busy }).await;
                        continue;
                    }
                };
                let reply = Reply::Link(LinkReply { relay_id, out: out_tx.clone(), permit, large });
                if let Some(order) = RelayedOrder::of(hello.worker, &relay) {
                    // An order goes straight to the core, and its reply from the core straight
                    // to the writer: no task, no oneshot per order.
                    queue_order(&shared.core, &mut overflow, order.request(reply));
                    continue;
                }
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    reply.send(handle_relay(&shared, hello.worker, *relay).await);
                });
            }
            Ok(Control::Heartbeat { seq }) => {
                send_own(Control::HeartbeatAck { seq }).await;
            }
            Ok(other) => {
                warn!(%uuid, instruction = ?other.instruction(), "unexpected message on the link");
            }
            // Its frames were whole and their MACs sound, so the link is in step: only this
            // message is unreadable (a worker of another version, or a bug). A relay is answered
            // `malformed`; the other relays go on.
            Err(e) => match answer_unreadable(&message, &e) {
                Some(reply) => {
                    warn!(%uuid, cause = %e, "cannot read a relayed request; answering malformed");
                    send_own(reply).await;
                }
                None => {
                    warn!(%uuid, instruction = message.instruction, cause = %e, "cannot read a message on the link; ignored");
                }
            },
        }
    }
    unlist(&shared, uuid, link_id);
    drop(out_tx);
    if removed {
        // Replies still pending would go to a worker that is no longer trusted: close now.
        writer_task.abort();
    }
    let _ = writer_task.await;
    // The writer is gone, and with it our side of the link (the worker sees the end after the
    // last answers). Closing the socket while the worker's newer relays sit unread would make
    // the kernel answer with a reset, and a reset can discard those last answers before the
    // worker reads them: so read and drop what it still sends until it closes too.
    let drained = tokio::time::timeout(LINK_CLOSE_LINGER, async {
        while let Ok(Some(_)) = reader.read_message().await {}
    });
    if drained.await.is_err() {
        debug!(%uuid, "the worker did not close its side of the link in time");
    }
    info!(%uuid, "worker unlinked");
}

/// A history or price-series answer may be large: a link has few of them in flight
/// (`large_answers`), so a client asking again and again cannot fill the writer's queue with
/// copies of it. The permit for `request` (`None`: not a large answer), or the request's own
/// `busy` failure.
fn large_answer_permit(
    request: &Request,
    large_answers: &Arc<Semaphore>,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Response> {
    if !matches!(
        request,
        Request::GetUserTransactionHistory { .. }
            | Request::GetAssetValue { .. }
            | Request::GetAssetValueAllTime { .. }
    ) {
        return Ok(None);
    }
    match Arc::clone(large_answers).try_acquire_owned() {
        Ok(permit) => Ok(Some(permit)),
        Err(_) => Err(request.fail(Failure::new(
            Reason::Busy,
            format!(
                "{LARGE_ANSWERS_IN_FLIGHT_MAX} histories or price series already in flight on \
                 this worker's link; retry shortly"
            ),
        ))),
    }
}

/// The answer to a link message that does not decode: a relay whose id can be read is answered
/// `malformed` (its request alone fails); anything else gets no answer.
fn answer_unreadable(message: &net::Message, cause: &net::DecodeError) -> Option<Control> {
    let relay_id = Control::relay_id(message)?;
    let failure =
        Failure::new(Reason::Malformed, format!("the master could not read this request: {cause}"));
    Some(Control::RelayReply { relay_id, response: Response::Error(failure) })
}

/// Descriptors besides connections: the journal, the log, the listeners, the price source's
/// HTTP connections, and slack.
const FILES_BESIDES_CONNECTIONS: usize = 64;

/// Raises the open-file limit so that `connections` sockets (every place the configuration
/// allows) can be open at once; warns when even the hard limit does not allow them: past it,
/// `accept` fails and a connection gets no answer at all.
fn make_room_for_connections(connections: usize) {
    let wanted =
        u64::try_from(connections.saturating_add(FILES_BESIDES_CONNECTIONS)).unwrap_or(u64::MAX);
    make_room_for_files(wanted, "limits.worker_connections_max");
}

/// Raises the open-file limit to the hard one ([`net::open_files`]) and warns when even that
/// is below `wanted`, what `setting` may need: connections past it are not accepted, so they
/// get no answer (not even `busy`). Shared by the master and the worker.
pub fn make_room_for_files(wanted: u64, setting: &str) {
    match net::open_files::raise_open_files_limit() {
        Ok(limit) if limit.allows(wanted) => {
            if limit.now > limit.before {
                debug!(before = limit.before, now = limit.now, "open-file limit raised");
            }
        }
        Ok(limit) => warn!(
            limit = limit.now,
            hard = limit.hard,
            wanted,
            "the open-file limit is below what {setting} may need: connections past it are not \
             accepted (and get no busy answer); raise the hard limit (ulimit -Hn, or \
             LimitNOFILE= for a systemd service)"
        ),
        Err(e) => warn!(cause = %e, "cannot read or raise the open-file limit"),
    }
}

/// Answers one relayed client request.
async fn handle_relay(shared: &Shared, worker: WorkerId, relay: Relay) -> Response {
    let ip = relay.client_ip;
    match relay.request {
        Request::Login { username, password, expirable } => {
            login(shared, username, password, !expirable, ip).await
        }
        Request::LoginSession { session } => {
            let session = SessionId::from_bytes(*session.as_bytes());
            ask(shared, |reply| CoreRequest::ResumeSession { session, reply }, Response::LoginFail)
                .await
        }
        Request::Register { username, email, password } => {
            register(shared, username, email, password, ip).await
        }
        Request::Purchase { session, symbol, qty, client_order_id } => {
            let at = relay.received_at;
            let placed =
                RelayedOrder::new(worker, at, Side::Buy, &session, symbol, qty, client_order_id);
            ask(shared, |reply| placed.request(reply.into()), Response::PurchaseFail).await
        }
        Request::Sell { session, symbol, qty, client_order_id } => {
            let at = relay.received_at;
            let placed =
                RelayedOrder::new(worker, at, Side::Sell, &session, symbol, qty, client_order_id);
            ask(shared, |reply| placed.request(reply.into()), Response::SellFail).await
        }
        Request::SwitchState { session, state } => {
            let session = SessionId::from_bytes(*session.as_bytes());
            let (tx, rx) = oneshot::channel();
            if shared.core.send(CoreRequest::CheckSession { session, reply: tx }).await.is_err() {
                return Response::StateSwitchFail(unavailable());
            }
            match rx.await {
                Ok(Ok(_)) => Response::StateSwitchSuccess(state),
                Ok(Err(f)) => Response::StateSwitchFail(f),
                Err(_) => Response::StateSwitchFail(unavailable()),
            }
        }
        Request::Logout { session } => {
            let session = SessionId::from_bytes(*session.as_bytes());
            ask(shared, |reply| CoreRequest::Logout { session, reply }, Response::LogoutFail).await
        }
        Request::GetWorkers => Response::Data(DataPayload::WorkerList(worker_list(shared))),
        Request::GetAssetInfo { symbol } | Request::GetAssetValueCurrent { symbol } => {
            latest_tick(shared, symbol).await
        }
        Request::GetAssetValue { symbol, period, date } => match history::range(period, date) {
            Some((from, to)) => {
                price_series(shared, symbol, from, to, history::Series::Period(period)).await
            }
            None => Response::DataFail(Failure::new(Reason::InvalidArgument, "date out of range")),
        },
        Request::GetAssetValueAllTime { symbol } => {
            let (from, to) = (Timestamp(i64::MIN), Timestamp(i64::MAX));
            price_series(shared, symbol, from, to, history::Series::AllTime).await
        }
        Request::GetUserInfo { session, username } => {
            user(shared, session, username, UserQuery::Info).await
        }
        Request::GetUserPortfolio { session, username } => {
            user(shared, session, username, UserQuery::Portfolio).await
        }
        Request::GetUserTransactionHistory { session, username } => {
            user(shared, session, username, UserQuery::History).await
        }
    }
}

fn unavailable() -> Failure {
    Failure::new(Reason::Internal, "the master is shutting down; the request was not handled")
}

/// Sends a request built around a reply channel to the core and waits for its answer.
async fn ask(
    shared: &Shared,
    build: impl FnOnce(oneshot::Sender<Response>) -> CoreRequest,
    fail: fn(Failure) -> Response,
) -> Response {
    let (tx, rx) = oneshot::channel();
    if shared.core.send(build(tx)).await.is_err() {
        return fail(unavailable());
    }
    // The core took the request and ended before answering (it failed, or the master stops):
    // a write may have been stored or not.
    rx.await.unwrap_or_else(|_| {
        fail(Failure::new(
            Reason::Internal,
            "the master stopped before answering, so whether this request took effect is \
             unknown: check once the master is back",
        ))
    })
}

async fn login(
    shared: &Shared,
    username: engine::Username,
    password: net::HashedPassword,
    remember: bool,
    ip: IpAddr,
) -> Response {
    let now = now();
    let password = match ClientPassword::new(password.as_bytes()) {
        Ok(p) => p,
        Err(e) => return Response::LoginFail(Failure::new(Reason::InvalidArgument, e.to_string())),
    };
    // Counted against the username from here on, unless it succeeds or cannot be decided.
    // (A poisoned lock still limits: the tables stay consistent.)
    let limiter = || shared.limiter.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(blocked) = limiter().begin_attempt(&username, ip, now) {
        return Response::LoginFail(Failure::new(Reason::Forbidden, blocked.to_string()));
    }
    let cancel = || limiter().attempt_cancelled(&username);
    let (tx, rx) = oneshot::channel();
    if shared
        .core
        .send(CoreRequest::Credentials { username: username.clone(), reply: tx })
        .await
        .is_err()
    {
        cancel();
        return Response::LoginFail(unavailable());
    }
    // A dropped reply is the core failing or stopping, not an unknown username: answering
    // `bad_credentials` would count a failure against the user for the master's fault.
    let Ok(found) = rx.await else {
        cancel();
        return Response::LoginFail(unavailable());
    };
    let verified = match &found {
        Some((_, hash)) => shared.hasher.verify(&password, hash).await,
        None => shared.hasher.verify_dummy(&password).await,
    };
    match (verified, found) {
        (Ok(true), Some((account, stored))) => {
            limiter().record_success(&username);
            let answer = ask(
                shared,
                |reply| CoreRequest::StartSession { account, ip, remember, reply },
                Response::LoginFail,
            )
            .await;
            if matches!(answer, Response::SessionId(_)) && shared.hasher.needs_rehash(&stored) {
                rehash(shared, account, stored, &password).await;
            }
            answer
        }
        (Err(AuthError::Busy), _) => {
            cancel();
            Response::LoginFail(Failure::new(
                Reason::Busy,
                "too many logins at once; retry shortly",
            ))
        }
        (Err(e), _) => {
            cancel();
            warn!(cause = %e, "password check failed");
            Response::LoginFail(Failure::new(Reason::Internal, "the password could not be checked"))
        }
        // A wrong password or an unknown username: it stays counted against the username, and
        // counts against the address.
        _ => {
            limiter().attempt_failed(ip, now);
            Response::LoginFail(Failure::new(
                Reason::BadCredentials,
                "unknown username or wrong password",
            ))
        }
    }
}

/// After a login whose stored hash was made with other costs than the configured ones (or is
/// not argon2id): stores a hash of the same password with the configured costs
/// (`Event::PasswordRehashed`), before the login is answered. So a change of `auth.argon2`
/// reaches every account that logs in, and logins of existing and unknown usernames cost the
/// same again (docs/MASTER.md). Best effort: a busy hasher leaves the old hash, which still
/// verifies, and the next login tries again; a storage fault halts the journal's writes, as any
/// failed write does, and the login is answered all the same.
async fn rehash(
    shared: &Shared,
    account: engine::AccountId,
    stored: engine::PasswordHash,
    password: &ClientPassword,
) {
    let rehashed = match shared.hasher.hash(password).await {
        Ok(hash) => hash,
        Err(AuthError::Busy) => {
            debug!(%account, "no hash thread free to rehash the password; the next login will");
            return;
        }
        Err(e) => {
            warn!(%account, cause = %e, "cannot rehash the password");
            return;
        }
    };
    let (tx, rx) = oneshot::channel();
    let request = CoreRequest::RehashPassword { account, stored, rehashed, reply: tx };
    if shared.core.send(request).await.is_err() {
        return;
    }
    match rx.await {
        Ok(Ok(true)) => info!(%account, "password rehashed with the configured argon2 costs"),
        Ok(Ok(false)) | Err(_) => {}
        Ok(Err(why)) => warn!(%account, cause = %why, "cannot store the rehashed password"),
    }
}

async fn register(
    shared: &Shared,
    username: engine::Username,
    email: engine::Email,
    password: net::HashedPassword,
    ip: IpAddr,
) -> Response {
    let password = match ClientPassword::new(password.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            return Response::RegisterFail(Failure::new(Reason::InvalidArgument, e.to_string()));
        }
    };
    // Counted per client address, taken or not (`auth.registrations`).
    let began = shared
        .registrations
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .begin(ip, now());
    if let Err(blocked) = began {
        return Response::RegisterFail(Failure::new(Reason::Forbidden, blocked.to_string()));
    }

    // Cheap check first, so a taken name does not cost an argon2 hash.
    let (tx, rx) = oneshot::channel();
    if shared
        .core
        .send(CoreRequest::Credentials { username: username.clone(), reply: tx })
        .await
        .is_err()
    {
        return Response::RegisterFail(unavailable());
    }
    if let Ok(Some(_)) = rx.await {
        return Response::RegisterFail(Failure::new(
            Reason::UsernameTaken,
            "that username is taken",
        ));
    }
    let hash = match shared.hasher.hash(&password).await {
        Ok(hash) => hash,
        Err(AuthError::Busy) => {
            return Response::RegisterFail(Failure::new(
                Reason::Busy,
                "too many requests at once; retry shortly",
            ));
        }
        Err(e) => {
            warn!(cause = %e, "password hashing failed");
            return Response::RegisterFail(Failure::new(
                Reason::Internal,
                "the password could not be hashed",
            ));
        }
    };
    ask(
        shared,
        |reply| CoreRequest::Register { username, email, hash, reply },
        Response::RegisterFail,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
/// A relayed purchase or sale, as the core takes it.
#[derive(Debug)]
struct RelayedOrder {
    worker: WorkerId,
    placed_at: Timestamp,
    session: SessionId,
    side: Side,
    symbol: Symbol,
    qty: engine::Qty,
    client_id: ClientOrderId,
}

impl RelayedOrder {
    /// The order in `relay`, if it carries a purchase or a sale.
    fn of(worker: WorkerId, relay: &Relay) -> Option<Self> {
        let at = relay.received_at;
        match &relay.request {
            Request::Purchase { session, symbol, qty, client_order_id } => {
                Some(Self::new(worker, at, Side::Buy, session, *symbol, *qty, *client_order_id))
            }
            Request::Sell { session, symbol, qty, client_order_id } => {
                Some(Self::new(worker, at, Side::Sell, session, *symbol, *qty, *client_order_id))
            }
            _ => None,
        }
    }

    /// An order relayed by `worker`, received (by the worker) at `placed_at`.
    fn new(
        worker: WorkerId,
        placed_at: Timestamp,
        side: Side,
        session: &net::SessionId,
        symbol: Symbol,
        qty: engine::Qty,
        client_order_id: u64,
    ) -> Self {
        Self {
            worker,
            placed_at,
            session: SessionId::from_bytes(*session.as_bytes()),
            side,
            symbol,
            qty,
            client_id: ClientOrderId(client_order_id),
        }
    }

    /// The core request placing it, answered through `reply`.
    fn request(self, reply: Reply) -> CoreRequest {
        CoreRequest::Order {
            session: self.session,
            side: self.side,
            symbol: self.symbol,
            qty: self.qty,
            client_id: self.client_id,
            placed_at: self.placed_at,
            worker: self.worker,
            reply,
        }
    }
}

/// Queues an order for the core without waiting for room: when the core's queue is full, the
/// link's forwarding task ([`LinkOverflow`]) waits for it, so the link reader never stops
/// reading.
fn queue_order(
    core: &mpsc::Sender<CoreRequest>,
    overflow: &mut LinkOverflow,
    request: CoreRequest,
) {
    // Behind orders of this link still waiting for room, so that the core gets the link's
    // orders in the order they came (the settlement order of an account's orders in one
    // interval does not depend on it, but which interval an order lands in does).
    let request = if overflow.waiting.load(Ordering::Acquire) == 0 {
        match core.try_send(request) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(request)) => request,
            Err(mpsc::error::TrySendError::Closed(request)) => return fail_unsent(request),
        }
    } else {
        request
    };
    overflow.waiting.fetch_add(1, Ordering::AcqRel);
    let sender = overflow.sender.get_or_insert_with(|| {
        let (tx, mut rx) = mpsc::unbounded_channel::<CoreRequest>();
        let (core, waiting) = (core.clone(), Arc::clone(&overflow.waiting));
        tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                if let Err(mpsc::error::SendError(request)) = core.send(request).await {
                    fail_unsent(request);
                }
                waiting.fetch_sub(1, Ordering::AcqRel);
            }
        });
        tx
    });
    if let Err(mpsc::error::SendError(request)) = sender.send(request) {
        overflow.waiting.fetch_sub(1, Ordering::AcqRel);
        fail_unsent(request);
    }
}

/// A link's orders that found the core's channel full, waiting for room in the order they
/// came (one task per link forwards them; each holds one of the link's relay permits, so
/// they are bounded by `RELAYS_IN_FLIGHT_MAX`).
#[derive(Default)]
struct LinkOverflow {
    /// Orders taken by the forwarding task and not yet in the core's channel.
    waiting: Arc<AtomicUsize>,
    /// The forwarding task's queue, made when an order first finds the channel full.
    sender: Option<mpsc::UnboundedSender<CoreRequest>>,
}

/// Answers an order the core will never see (it stopped).
fn fail_unsent(request: CoreRequest) {
    if let CoreRequest::Order { side, reply, .. } = request {
        reply.send(order_fail(side, unavailable()));
    }
}

async fn user(
    shared: &Shared,
    session: net::SessionId,
    username: engine::Username,
    query: UserQuery,
) -> Response {
    let session = SessionId::from_bytes(*session.as_bytes());
    ask(shared, |reply| CoreRequest::User { session, username, query, reply }, Response::DataFail)
        .await
}

async fn latest_tick(shared: &Shared, symbol: Symbol) -> Response {
    let journal = Arc::clone(&shared.journal);
    match tokio::task::spawn_blocking(move || journal.latest_tick(symbol)).await {
        Ok(Ok(Some(tick))) => Response::Data(DataPayload::AssetInfo(tick)),
        Ok(Ok(None)) => {
            Response::DataFail(no_prices(shared, symbol, format!("no price for {symbol} yet")))
        }
        Ok(Err(e)) => {
            warn!(cause = %e, "tick read failed");
            Response::DataFail(Failure::new(Reason::Internal, "prices cannot be read"))
        }
        Err(e) => price_read_lost(&e, &shared.journal),
    }
}

/// The answer to a price query whose blocking read did not return: a panic in it (redb on a
/// damaged page), or, while the master stops, a read the runtime cancelled before it ran.
/// The query fails, and the cause is logged as what it is. After a panic the file is taken
/// to be damaged: a restart would refuse it, so the journal's writes are halted and no order
/// is acknowledged into it any more (a restart checks the file).
fn price_read_lost(e: &tokio::task::JoinError, journal: &Journal) -> Response {
    if e.is_cancelled() {
        info!("price read cancelled: the master is stopping");
    } else {
        error!(cause = %e, "price read failed: the journal file may be damaged; its writes are halted");
        journal.halt(&format!("a price read failed (a damaged page?): {e}"));
    }
    Response::DataFail(unavailable())
}

/// How much one price-series read may take.
#[derive(Debug, Clone, Copy)]
struct SeriesLimits {
    /// Ticks read: past it the query would take too long.
    ticks: usize,
    /// Bars made: past it the answer would not fit one message.
    bars: usize,
}

/// The limits of the master's price-series reads.
const SERIES_LIMITS: SeriesLimits =
    SeriesLimits { ticks: PRICE_QUERY_TICKS_MAX, bars: net::limits::PRICE_SERIES_BARS_MAX };

/// What [`read_series`] found.
#[derive(Debug, PartialEq)]
enum SeriesRead {
    /// The bars of the range.
    Bars(Vec<net::Bar>),
    /// The range holds more ticks than a query reads.
    TooManyTicks,
    /// The range makes more bars than one answer carries.
    TooManyBars,
}

/// The bars of `series` from every stored tick of `symbol` with `from <= time < to`, read in
/// chunks of the journal's largest tick read. A range past `limits` is refused, not cut: the
/// caller asks for less. The read stops as soon as it is past them.
fn read_series(
    journal: &Journal,
    (symbol, from, to): (Symbol, Timestamp, Timestamp),
    series: history::Series,
    limits: SeriesLimits,
) -> Result<SeriesRead, journal::StorageFault> {
    let mut bars = Vec::new();
    let (mut next, mut read) = (from, 0usize);
    loop {
        let ticks = journal.ticks(symbol, next, to, journal::limits::TICKS_QUERY_MAX)?;
        read = read.saturating_add(ticks.len());
        if read > limits.ticks {
            return Ok(SeriesRead::TooManyTicks);
        }
        series.extend(&mut bars, &ticks);
        if bars.len() > limits.bars {
            return Ok(SeriesRead::TooManyBars);
        }
        // A short read is the end of the range; tick times of one symbol are unique, so the
        // next chunk starts just after the last tick read.
        match ticks.last().and_then(|last| last.time.0.checked_add(1)) {
            Some(after) if ticks.len() == journal::limits::TICKS_QUERY_MAX => {
                next = Timestamp(after);
            }
            _ => break,
        }
    }
    // The first bar's period may start before the range (a year from 2000-03-15 has a March
    // bar): its time is the range's start, where its ticks begin.
    if let Some(first) = bars.first_mut() {
        first.time = first.time.max(from);
    }
    Ok(SeriesRead::Bars(bars))
}

/// The journal meta key of the split adjustment the recorded prices carry.
const PRICE_ADJUSTMENT_KEY: &str = "prices/adjustment";

/// Keeps which split adjustment the recorded prices carry in the journal, and warns when a
/// data directory that already has prices goes on with another one (a data directory of an
/// earlier build, whose prices were not split-adjusted, or a changed `prices.splits`): the
/// prices then jump at this restart, and the stored history mixes both scales. Returns whether
/// it warned.
fn note_price_adjustment(journal: &Journal, adjustment: &str, has_prices: bool) -> bool {
    let stored = match journal.meta(PRICE_ADJUSTMENT_KEY) {
        Ok(stored) => stored,
        Err(e) => {
            warn!(cause = %e, "cannot read the prices' split adjustment");
            return false;
        }
    };
    if stored.as_deref() == Some(adjustment.as_bytes()) {
        return false;
    }
    let warned = has_prices;
    if has_prices {
        let before = stored.map_or_else(
            || "unknown (an earlier build: no split adjustment)".to_owned(),
            |bytes| String::from_utf8_lossy(&bytes).into_owned(),
        );
        warn!(
            before = %before,
            now = %adjustment,
            "this data directory's prices were recorded with another split adjustment: prices \
             may jump at this restart (start with a new data directory to avoid it)"
        );
    }
    if let Err(e) = journal.put_meta(PRICE_ADJUSTMENT_KEY, adjustment.as_bytes()) {
        warn!(cause = %e, "cannot store the prices' split adjustment");
    }
    warned
}

/// The `not_found` answer to a price query that found no price: `listed_but` for a listed
/// symbol, else that the symbol is not listed, naming some that are.
fn no_prices(shared: &Shared, symbol: Symbol, listed_but: String) -> Failure {
    const NAMED_MAX: usize = 20;
    let message = if shared.listed.binary_search(&symbol).is_ok() {
        listed_but
    } else {
        let mut names: Vec<&str> =
            shared.listed.iter().take(NAMED_MAX).map(|s| s.as_str()).collect();
        if shared.listed.len() > NAMED_MAX {
            names.push("...");
        }
        format!("{symbol} is not a listed asset (listed: {})", names.join(", "))
    };
    Failure::new(Reason::NotFound, message)
}

/// A permit to run one price-history read, or the `busy` answer when
/// `PRICE_SERIES_READS_MAX` already run.
fn start_price_read(
    reads: &Arc<tokio::sync::Semaphore>,
) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
    Arc::clone(reads).try_acquire_owned().map_err(|_| {
        debug!("price-history read refused: {PRICE_SERIES_READS_MAX} already running");
        Response::DataFail(Failure::new(
            Reason::Busy,
            format!(
                "{PRICE_SERIES_READS_MAX} price-history reads are already running; retry shortly"
            ),
        ))
    })
}

async fn price_series(
    shared: &Shared,
    symbol: Symbol,
    from: Timestamp,
    to: Timestamp,
    series: history::Series,
) -> Response {
    let permit = match start_price_read(&shared.price_reads) {
        Ok(permit) => permit,
        Err(busy) => return busy,
    };
    let journal = Arc::clone(&shared.journal);
    let read = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        read_series(&journal, (symbol, from, to), series, SERIES_LIMITS)
    })
    .await;
    match read {
        Ok(Ok(SeriesRead::TooManyTicks)) => Response::DataFail(Failure::new(
            Reason::TooLarge,
            format!(
                "more than {PRICE_QUERY_TICKS_MAX} prices of {symbol} in that range; ask for a \
                 shorter period"
            ),
        )),
        Ok(Ok(SeriesRead::TooManyBars)) => Response::DataFail(Failure::new(
            Reason::TooLarge,
            format!(
                "more than {} bars of {symbol} in that range, more than one answer carries; ask \
                 for a shorter period",
                net::limits::PRICE_SERIES_BARS_MAX
            ),
        )),
        Ok(Ok(SeriesRead::Bars(bars))) if bars.is_empty() => Response::DataFail(no_prices(
            shared,
            symbol,
            format!("no prices for {symbol} in that range"),
        )),
        Ok(Ok(SeriesRead::Bars(bars))) => {
            Response::Data(DataPayload::PriceSeries(PriceSeries { symbol, bars }))
        }
        Ok(Err(e)) => {
            warn!(cause = %e, "tick read failed");
            Response::DataFail(Failure::new(Reason::Internal, "prices cannot be read"))
        }
        Err(e) => price_read_lost(&e, &shared.journal),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use engine::{Price, Qty};
    use net::{Bar, Instruction};

    /// A price read that panicked (redb on a damaged page) halts the journal's writes: the file
    /// is then known to be damaged, and no order may be acknowledged into it. A read the
    /// runtime cancelled while the master stops does not.
    #[tokio::test]
    async fn a_price_read_that_panicked_halts_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) =
            Journal::open(journal::path_in(dir.path()), JournalConfig::default()).unwrap();
        let sleeper = tokio::spawn(tokio::time::sleep(Duration::from_secs(3600)));
        sleeper.abort();
        let cancelled = sleeper.await.unwrap_err();
        assert!(cancelled.is_cancelled());
        assert!(matches!(price_read_lost(&cancelled, &journal), Response::DataFail(_)));
        assert!(!journal.is_halted(), "a cancelled read halted the journal");
        let panicked = tokio::task::spawn_blocking(|| panic!("a damaged page")).await.unwrap_err();
        assert!(matches!(price_read_lost(&panicked, &journal), Response::DataFail(_)));
        let cause = journal.halted().expect("a panicked read left the journal taking writes");
        assert!(cause.contains("a price read failed"), "{cause}");
    }

    /// Handshakes' OpenPGP work runs off the async threads, one handshake at a time: a
    /// second waits while the first is under way, and runs once it ends.
    #[tokio::test]
    async fn handshake_crypto_runs_one_at_a_time_off_the_async_threads() {
        let permits = Arc::new(Semaphore::new(HANDSHAKE_CRYPTO_AT_ONCE));
        let test_thread = std::thread::current().id();
        let (started_tx, started_rx) = oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn({
            let permits = Arc::clone(&permits);
            async move {
                handshake_crypto(&permits, move || {
                    let _ = started_tx.send(());
                    let _ = release_rx.recv();
                    std::thread::current().id()
                })
                .await
            }
        });
        started_rx.await.unwrap();
        assert_eq!(permits.available_permits(), 0, "the first holds the only permit");
        let second_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let second = tokio::spawn({
            let (permits, second_ran) = (Arc::clone(&permits), Arc::clone(&second_ran));
            async move {
                handshake_crypto(&permits, move || second_ran.store(true, Ordering::SeqCst)).await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second_ran.load(Ordering::SeqCst), "ran beside the first");
        release_tx.send(()).unwrap();
        let ran_on = first.await.unwrap().unwrap();
        assert_ne!(ran_on, test_thread, "the work ran on the runtime's own thread");
        second.await.unwrap().unwrap();
        assert!(second_ran.load(Ordering::SeqCst));
        assert_eq!(permits.available_permits(), HANDSHAKE_CRYPTO_AT_ONCE);
    }

    /// A worker's usual address keeps places of the workers' own pool only while the worker
    /// may still link from there: once removed (or its allow-list changed) it is forgotten.
    #[test]
    fn a_removed_worker_address_is_forgotten() {
        let handshakes = Arc::new(Mutex::new(Handshakes::default()));
        let (kept, removed) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let (shared_host, own_host) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        HandshakeSlot::take(&handshakes, kept, shared_host).unwrap().linked();
        HandshakeSlot::take(&handshakes, removed, own_host).unwrap().linked();
        let mut counts = handshakes.lock().unwrap();
        let registered = |uuid: Uuid| uuid == kept;
        assert!(counts.is_linked_from(shared_host, registered), "the kept worker's address");
        assert!(!counts.is_linked_from(own_host, registered), "only the removed one was there");
        assert_eq!(counts.linked_from.len(), 1, "{counts:?}");
        assert!(!counts.is_linked_from(shared_host, |_| false), "kept, then removed too");
        assert!(counts.linked_from.is_empty(), "{counts:?}");
    }

    /// Handshakes per worker: at most 2 per address and 8 in all, except from the address
    /// the worker last linked from, which hosts elsewhere in its range cannot lock out.
    #[test]
    fn handshake_slots_are_capped_per_address_and_worker_but_not_for_the_usual_address() {
        let handshakes = Arc::new(Mutex::new(Handshakes::default()));
        let uuid = Uuid::from_u128(7);
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let usual = HandshakeSlot::take(&handshakes, uuid, ip(1)).unwrap();
        usual.linked();
        let mut held = Vec::new();
        for n in 2..=5 {
            held.push(HandshakeSlot::take(&handshakes, uuid, ip(n)).unwrap());
            held.push(HandshakeSlot::take(&handshakes, uuid, ip(n)).unwrap());
        }
        assert!(HandshakeSlot::take(&handshakes, uuid, ip(2)).is_none(), "per address");
        assert!(HandshakeSlot::take(&handshakes, uuid, ip(6)).is_none(), "per worker");
        let first = HandshakeSlot::take(&handshakes, uuid, ip(1));
        let second = HandshakeSlot::take(&handshakes, uuid, ip(1));
        assert!(first.is_some() && second.is_some(), "the usual address keeps its two");
        assert!(HandshakeSlot::take(&handshakes, uuid, ip(1)).is_none());
        drop((first, second, held));
        let counts = handshakes.lock().unwrap();
        assert!(counts.per_worker.is_empty() && counts.per_address.is_empty(), "{counts:?}");
        assert!(counts.per_ip.is_empty(), "{counts:?}");
    }

    /// One address in the allow-lists of many workers (UUIDs are public) holds at most 16
    /// handshakes for all of them together, not two for each; a worker at the address it last
    /// linked from is not held to that.
    #[test]
    fn handshake_slots_are_capped_per_address_across_workers() {
        let handshakes = Arc::new(Mutex::new(Handshakes::default()));
        let host = IpAddr::from([10, 0, 0, 9]);
        let worker = Uuid::from_u128(1_000);
        HandshakeSlot::take(&handshakes, worker, host).unwrap().linked();
        let mut held = Vec::new();
        for n in 0..8u128 {
            for _ in 0..2 {
                held.push(HandshakeSlot::take(&handshakes, Uuid::from_u128(n + 1), host).unwrap());
            }
        }
        assert_eq!(held.len(), HANDSHAKES_PER_ADDRESS_MAX);
        assert!(HandshakeSlot::take(&handshakes, Uuid::from_u128(9), host).is_none());
        let own = HandshakeSlot::take(&handshakes, worker, host);
        assert!(own.is_some(), "the worker whose usual address this is");
        drop((own, held));
        let counts = handshakes.lock().unwrap();
        assert!(counts.per_ip.is_empty() && counts.per_address.is_empty(), "{counts:?}");
    }

    /// A link's history and price-series requests past `LARGE_ANSWERS_IN_FLIGHT_MAX` are
    /// answered `busy` (`dataFail`, the request's own return); other requests take no place; an
    /// answer the writer took gives its place back.
    #[test]
    fn large_answers_past_the_link_limit_are_busy() {
        let places = Arc::new(Semaphore::new(LARGE_ANSWERS_IN_FLIGHT_MAX));
        let history = Request::GetUserTransactionHistory {
            session: net::SessionId([1; 32]),
            username: engine::Username::new("alice").unwrap(),
        };
        let day = Request::GetAssetValue {
            symbol: Symbol::new("AAPL").unwrap(),
            period: net::Period::Day,
            date: Timestamp(0),
        };
        let all_time = Request::GetAssetValueAllTime { symbol: Symbol::new("AAPL").unwrap() };
        let mut held: Vec<_> = (0..LARGE_ANSWERS_IN_FLIGHT_MAX)
            .map(|i| {
                let request = [&history, &day, &all_time][i % 3];
                large_answer_permit(request, &places).unwrap().unwrap()
            })
            .collect();
        for request in [&history, &day, &all_time] {
            match large_answer_permit(request, &places) {
                Err(Response::DataFail(failure)) => assert_eq!(failure.reason, Reason::Busy),
                other => panic!("expected busy, got {:?}", other.map(|p| p.is_some())),
            }
        }
        let portfolio = Request::GetUserPortfolio {
            session: net::SessionId([1; 32]),
            username: engine::Username::new("alice").unwrap(),
        };
        assert!(large_answer_permit(&portfolio, &places).unwrap().is_none());
        held.pop();
        assert!(large_answer_permit(&history, &places).unwrap().is_some());
    }

    /// Price-history reads past `PRICE_SERIES_READS_MAX` are answered `busy` at once; a read
    /// that ends gives its place back.
    #[test]
    fn price_history_reads_past_the_limit_are_busy() {
        let reads = Arc::new(tokio::sync::Semaphore::new(PRICE_SERIES_READS_MAX));
        let mut running: Vec<_> =
            (0..PRICE_SERIES_READS_MAX).map(|_| start_price_read(&reads).unwrap()).collect();
        match start_price_read(&reads) {
            Err(Response::DataFail(failure)) => {
                assert_eq!(failure.reason, Reason::Busy);
                assert!(failure.message.contains("already running"), "{}", failure.message);
            }
            other => panic!("expected busy, got {:?}", other.map(|_| ())),
        }
        running.pop();
        assert!(start_price_read(&reads).is_ok());
    }

    /// An order with client order id `id`, answered nowhere.
    fn order_request(id: u64) -> CoreRequest {
        CoreRequest::Order {
            session: SessionId::from_bytes([1; 32]),
            side: engine::Side::Buy,
            symbol: engine::Symbol::new("AAPL").unwrap(),
            qty: Qty::from_units(1).unwrap(),
            client_id: engine::ClientOrderId(id),
            placed_at: engine::Timestamp(0),
            worker: engine::WorkerId(1),
            reply: Reply::Once(oneshot::channel().0),
        }
    }

    fn client_id_of(request: &CoreRequest) -> u64 {
        match request {
            CoreRequest::Order { client_id, .. } => client_id.0,
            _ => panic!("not an order"),
        }
    }

    /// A link's orders reach the core in the order they came, also when the core's channel is
    /// full: the later ones wait behind those waiting for room, even once room appears.
    #[tokio::test]
    async fn a_links_orders_keep_their_order_when_the_core_is_full() {
        let (core, mut received) = mpsc::channel(2);
        let mut overflow = LinkOverflow::default();
        for id in 1..=5 {
            queue_order(&core, &mut overflow, order_request(id));
        }
        // 1 and 2 went in; 3 to 5 wait. Room for one: 6 must not pass 3, 4 and 5.
        assert_eq!(client_id_of(&received.recv().await.unwrap()), 1);
        queue_order(&core, &mut overflow, order_request(6));
        let mut order = Vec::new();
        for _ in 0..5 {
            order.push(client_id_of(&received.recv().await.unwrap()));
        }
        assert_eq!(order, [2, 3, 4, 5, 6]);
        // Once every waiting order is in, the next goes straight in again.
        tokio::time::timeout(Duration::from_secs(10), async {
            while overflow.waiting.load(Ordering::Acquire) != 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        queue_order(&core, &mut overflow, order_request(7));
        assert_eq!(client_id_of(&received.try_recv().unwrap()), 7);
    }

    /// A TCP connection over loopback: (this end, the peer's).
    async fn loopback() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        (stream, peer)
    }

    /// A link writer over `stream`, and its count of the bytes written.
    fn counting_writer<S: tokio::io::AsyncWrite + Unpin>(
        stream: S,
    ) -> (net::FrameWriter<CountingStream<S>>, Arc<std::sync::atomic::AtomicU64>) {
        let stream = CountingStream::new(stream);
        let written = Arc::clone(&stream.written);
        (net::FrameWriter::new(stream), written)
    }

    /// A link writer's queue holding `n` heartbeat acks, each with its permit of `permits`.
    fn queued_acks(
        n: u64,
    ) -> (mpsc::UnboundedSender<LinkOut>, mpsc::UnboundedReceiver<LinkOut>, Arc<Semaphore>) {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        for seq in 0..n {
            let permit = Arc::clone(&permits).try_acquire_owned().unwrap();
            out_tx
                .send(LinkOut { control: Control::HeartbeatAck { seq }, permit, large: None })
                .unwrap();
        }
        (out_tx, out_rx, permits)
    }

    /// A worker that stops reading its link (stopped, stuck) ends the link's writer after the
    /// write timeout, instead of holding it, its place and the master's shutdown for ever.
    #[tokio::test]
    async fn a_link_writer_gives_up_on_a_worker_that_stops_reading() {
        // The other end is kept open, and never read.
        let (stream, _unread) = loopback().await;
        let (mut writer, written) = counting_writer(stream);
        // Far more than the sockets' buffers hold (tens of megabytes).
        let (_out_tx, mut out_rx, permits) = queued_acks(1_000_000);
        let writing = write_link(&mut writer, &mut out_rx, &written, Duration::from_millis(500));
        let end = tokio::time::timeout(Duration::from_secs(60), writing).await;
        assert!(matches!(end, Ok(Err(LinkWriteEnd::TimedOut))), "{end:?}");
        // The messages not written are dropped with the receiver, and their permits with them.
        drop(out_rx);
        assert_eq!(permits.available_permits(), Semaphore::MAX_PERMITS);
    }

    /// A relay that does not decode (a worker of another version) is answered `malformed` by
    /// its relay id; another unreadable message gets no answer.
    #[test]
    fn an_unreadable_relay_is_answered_malformed_by_its_id() {
        let relay = Control::Relay(Box::new(Relay {
            relay_id: 41,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            received_at: Timestamp(0),
            session: None,
            request: Request::GetWorkers,
        }));
        let mut message = relay.encode().unwrap();
        message.body.push(0);
        let cause = Control::decode(&message).unwrap_err();
        match answer_unreadable(&message, &cause) {
            Some(Control::RelayReply { relay_id: 41, response: Response::Error(failure) }) => {
                assert_eq!(failure.reason, Reason::Malformed);
            }
            other => panic!("{other:?}"),
        }
        let mut heartbeat = Control::Heartbeat { seq: 41 }.encode().unwrap();
        heartbeat.body.push(0);
        let cause = Control::decode(&heartbeat).unwrap_err();
        assert!(answer_unreadable(&heartbeat, &cause).is_none());
    }

    /// A worker that reads, however slowly, is never cut off, though one burst takes many
    /// times the write timeout: the timeout is on progress, not on the burst. The clock is
    /// paused (it moves only when every task waits), so the reader's pace and the timeout are
    /// exact however busy the machine is.
    #[tokio::test(start_paused = true)]
    async fn a_link_writer_waits_for_a_slow_reader() {
        use tokio::io::AsyncReadExt as _;
        // An in-memory pipe, not TCP: every wake-up is the runtime's own, so the paused clock
        // moves only when both ends wait for it (a late kernel ACK cannot make virtual time
        // run ahead of the bytes).
        let (stream, mut slow) = tokio::io::duplex(256 * 1024);
        let reader = tokio::spawn(async move {
            let (mut buf, mut total) = (vec![0u8; 256 * 1024], 0usize);
            loop {
                match slow.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
        let (mut writer, written) = counting_writer(stream);
        // About 12 MB: more than the pipe holds, read at about 6 MB/s.
        let (out_tx, mut out_rx, _) = queued_acks(400_000);
        drop(out_tx);
        let started = tokio::time::Instant::now();
        let timeout = Duration::from_millis(300);
        let end = write_link(&mut writer, &mut out_rx, &written, timeout).await;
        let took = started.elapsed();
        assert!(matches!(end, Ok(())), "{end:?} after {took:?}");
        // The burst outlasted the timeout (many times over), and was not cut off.
        assert!(took > timeout, "the burst took {took:?}");
        drop(writer);
        let read = reader.await.unwrap();
        assert_eq!(read as u64, written.load(std::sync::atomic::Ordering::Relaxed));
        assert!(read > 10_000_000, "{read} bytes");
    }

    /// A reader that keeps up gets every message, and the writer ends when the queue closes.
    #[tokio::test]
    async fn a_link_writer_writes_everything_queued_then_ends_with_its_queue() {
        let (stream, read_side) = loopback().await;
        let mut reader = FramedStream::new(read_side);
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        let permits = Arc::new(Semaphore::new(16));
        let writer = tokio::spawn(async move {
            let (mut writer, written) = counting_writer(stream);
            write_link(&mut writer, &mut out_rx, &written, Duration::from_secs(30)).await
        });
        for seq in 0..1_000 {
            let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
            out_tx
                .send(LinkOut { control: Control::HeartbeatAck { seq }, permit, large: None })
                .unwrap();
        }
        for seq in 0..1_000 {
            let got = reader.read_control().await.unwrap();
            assert_eq!(got, Some(Control::HeartbeatAck { seq }));
        }
        drop(out_tx);
        assert!(matches!(writer.await.unwrap(), Ok(())));
    }

    /// A start-up step that failed after the core started stops the core (its sender is
    /// dropped) and waits for it; when the core had failed, its cause is the error reported,
    /// not the step's closed channel.
    #[tokio::test]
    async fn a_failed_start_up_stops_the_core_and_reports_its_cause() {
        let closed = || ServerError::Core("channel closed".into());
        let thread = std::thread::spawn(|| CoreEnd::Failed("page 7 is damaged".into()));
        let (tx, _rx) = mpsc::channel(1);
        let error = start_up_failed(closed(), tx, thread).await;
        assert!(error.to_string().contains("page 7 is damaged"), "{error}");

        // A core still serving runs until its last sender goes, then is joined.
        let (tx, mut rx) = mpsc::channel::<CoreRequest>(1);
        let thread = std::thread::spawn(move || {
            while rx.blocking_recv().is_some() {}
            CoreEnd::Stopped
        });
        let prices = ServerError::Internal("no price source".into());
        let error =
            tokio::time::timeout(Duration::from_secs(10), start_up_failed(prices, tx, thread))
                .await
                .expect("the core is stopped and joined");
        assert!(matches!(&error, ServerError::Internal(m) if m == "no price source"), "{error}");
    }

    /// A data directory whose prices carry another split adjustment than the source's (one of
    /// an earlier build, or a changed split list) is warned about once; a new one, or the same
    /// adjustment again, is not.
    #[test]
    fn a_change_of_split_adjustment_is_warned_about_once() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) =
            Journal::open(journal::path_in(dir.path()), JournalConfig::default()).unwrap();
        let shipped = prices::RecordedSource::shipped().unwrap();
        let adjusted = shipped.adjustment();
        assert!(adjusted.starts_with("splits 3 "), "{adjusted}");
        // An earlier build's data directory: prices, and no adjustment stored.
        assert!(note_price_adjustment(&journal, adjusted, true));
        assert!(!note_price_adjustment(&journal, adjusted, true), "stored: warned once");
        assert!(note_price_adjustment(&journal, "none", true), "a changed list");
        // A new data directory: nothing to warn about.
        let fresh = tempfile::tempdir().unwrap();
        let (journal, _) =
            Journal::open(journal::path_in(fresh.path()), JournalConfig::default()).unwrap();
        assert!(!note_price_adjustment(&journal, adjusted, false));
        assert!(!note_price_adjustment(&journal, adjusted, true));
    }

    /// An answer over the message limit goes out as a `tooLarge` failure of the same request,
    /// for the same relay; other messages are encoded as they are.
    #[test]
    fn an_oversized_answer_becomes_a_too_large_failure() {
        let p = Price::from_raw(1);
        let bar = Bar { open: p, high: p, low: p, close: p, volume: Qty::ZERO, time: Timestamp(0) };
        // 54 bytes a bar: 400,000 bars are over 16 MiB.
        let series = PriceSeries { symbol: Symbol::new("AAPL").unwrap(), bars: vec![bar; 400_000] };
        let huge = Control::RelayReply {
            relay_id: 7,
            response: Response::Data(DataPayload::PriceSeries(series)),
        };
        assert!(huge.encode().is_err(), "the answer is over the limit");
        let sent = encode_for_link(&huge).unwrap();
        assert_eq!(sent.instruction, Instruction::RelayReply.code());
        match Control::decode(&sent).unwrap() {
            Control::RelayReply { relay_id: 7, response: Response::DataFail(failure) } => {
                assert_eq!(failure.reason, Reason::TooLarge);
            }
            other => panic!("{other:?}"),
        }
        let small = Control::RelayReply { relay_id: 8, response: Response::LogoutSuccess };
        assert_eq!(encode_for_link(&small).unwrap(), small.encode().unwrap());
    }

    /// A series over more ticks than one journal read returns covers every one of them (an
    /// all-time chart used to stop at the 100,000th tick), and a range over the query's cap is
    /// refused rather than cut.
    #[test]
    fn a_series_reads_every_tick_of_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) =
            Journal::open(journal::path_in(dir.path()), JournalConfig::default()).unwrap();
        let aapl = Symbol::new("AAPL").unwrap();
        let hour = 3_600_000_000;
        let start = engine::recorded::parse_time("2000-01-01").unwrap().0;
        let count = journal::limits::TICKS_QUERY_MAX + 2_000;
        let ticks: Vec<engine::Tick> = (0..count)
            .map(|i| {
                let p = Price::from_raw(1 + i as u64);
                let time = Timestamp(start + i as i64 * hour);
                engine::Tick {
                    symbol: aapl,
                    open: p,
                    high: p,
                    low: p,
                    close: p,
                    volume: Qty::ZERO,
                    time,
                }
            })
            .collect();
        let events: Vec<engine::Event> = ticks
            .iter()
            .enumerate()
            .map(|(i, tick)| {
                engine::Event::IntervalSettled(engine::IntervalSettled {
                    interval: engine::IntervalId(i as u64 + 1),
                    at: tick.time,
                    ticks: vec![*tick],
                    orders: 0,
                })
            })
            .collect();
        journal.append_batch(&events, Timestamp(0)).unwrap();
        let all = (aapl, Timestamp(i64::MIN), Timestamp(i64::MAX));
        let bars_of = |read| match read {
            Ok(SeriesRead::Bars(bars)) => bars,
            other => panic!("expected bars, got {other:?}"),
        };
        let bars = bars_of(read_series(&journal, all, history::Series::AllTime, SERIES_LIMITS));
        assert_eq!(bars, history::Series::AllTime.bars(&ticks));
        assert_eq!(bars.last().map(|b| b.close), ticks.last().map(|t| t.close));
        // One day, in the middle: its 24 hourly ticks.
        let day = (aapl, ticks[50_000].time, Timestamp(ticks[50_000].time.0 + 24 * hour));
        let limits = |ticks, bars| SeriesLimits { ticks, bars };
        let hours =
            read_series(&journal, day, history::Series::Period(net::Period::Day), limits(100, 100));
        assert_eq!(bars_of(hours).len(), 24);
        // Over either cap: refused, not cut. Every tick of a day query is a bar.
        let capped = read_series(&journal, all, history::Series::AllTime, limits(count - 1, count));
        assert_eq!(capped.unwrap(), SeriesRead::TooManyTicks);
        let capped =
            read_series(&journal, day, history::Series::Period(net::Period::Day), limits(100, 23));
        assert_eq!(capped.unwrap(), SeriesRead::TooManyBars);
        // A year from the middle of a month: the first (monthly) bar is dated where the range
        // and its ticks begin, not at its month's start; the next bars at their months' starts.
        let from = engine::recorded::parse_time("2000-03-15").unwrap();
        let year = (aapl, from, engine::recorded::parse_time("2001-03-15").unwrap());
        let bars = bars_of(read_series(
            &journal,
            year,
            history::Series::Period(net::Period::Year),
            limits(count, count),
        ));
        assert_eq!(bars[0].time, from);
        assert_eq!(bars[1].time, engine::recorded::parse_time("2000-04-01").unwrap());
    }
}
