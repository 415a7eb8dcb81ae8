//! The worker's link to the master (spec 3.2.2, 4.3.1; `docs/PROTOCOL.md` section 11,
//! `docs/WORKER_AUTH.md`).
//!
//! One task ([`MasterLink::start`]) owns the connection: it connects, performs the mutual
//! handshake (the worker checks the master's proof, which covers the sealed link key of the
//! Challenge, with the configured master certificate, then proves itself and, once accepted,
//! decrypts that link key), seals the link, and then multiplexes:
//! - [`MasterLink::relay`] sends a client's request as a `relay` with a fresh relay id and waits
//!   for the `relayReply` with that id. Replies may come in any order (an order is answered when
//!   its interval settles), so many relays are in flight at once; the in-flight map is bounded
//!   (`link.relays_in_flight_max`, beyond which a relay is answered `busy`).
//! - relays reach the wire in the order their callers got a place in the writer's queue (a
//!   fair, bounded queue): commands go to the master in the order they were handed over.
//! - a heartbeat goes out right after the handshake and then every `link.heartbeat_interval`;
//!   the link is dropped when nothing has come from the master for `link.heartbeat_timeout`.
//! - when the link is down, or drops while a relay waits, or the master does not answer within
//!   `link.relay_timeout`, the relay answers the request's own failure return with
//!   `master_unavailable`: never an error, never a hang.
//! - a login whose caller stopped waiting (the relay timed out, or the caller's task dropped
//!   it) may still be answered by the master with a new session that no client will ever know:
//!   the link hands such sessions to the worker ([`MasterLink::take_orphan_sessions`]), which
//!   logs them out. (A login answered on a link that then drops is not known to the worker; its
//!   session ends with the master's timeouts.)
//! - after a failure the task reconnects with exponential backoff
//!   (`link.reconnect_backoff_min`, doubled up to `link.reconnect_backoff_max`, back to the
//!   minimum after a successful handshake). Every change of state is logged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use engine::{Timestamp, WorkerId};
use net::{
    Control, Direction, Failure, FramedStream, LinkOpener, LinkSealer, Message, Reason, Relay,
    Request, Response, SessionId, WorkerHello,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::LinkConfig;
use crate::identity::{
    self, HelloBinding, IdentityError, MasterChallenge, MasterTrust, WorkerIdentity,
};

/// The state of the link, as seen by relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting or handshaking (the first attempt, or after a failure).
    Connecting,
    /// Sealed and carrying relays.
    Up,
    /// Down, waiting before the next attempt.
    Down,
    /// Stopped for good (shutdown).
    Stopped,
}

/// Why a handshake with the master failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The TCP connection could not be made.
    #[error("cannot connect to the master at {address}: {source}")]
    Connect {
        /// The master's address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A step took too long.
    #[error("the master did not complete the {step} in time")]
    Timeout {
        /// Which step.
        step: &'static str,
    },
    /// Reading from the master failed.
    #[error("reading from the master: {0}")]
    Read(#[from] net::ReadError),
    /// Writing to the master failed.
    #[error("writing to the master: {0}")]
    Write(#[from] net::WriteError),
    /// The master closed the connection during the handshake.
    #[error("the master closed the connection during the handshake")]
    Closed,
    /// The master refused the worker.
    #[error("the master refused this worker: {0}")]
    Refused(Failure),
    /// The master sent something else than the next handshake message.
    #[error("unexpected {got} from the master during the handshake (expected {expected})")]
    Unexpected {
        /// What came.
        got: net::Instruction,
        /// What was expected.
        expected: &'static str,
    },
    /// Our identity or the master's proof failed a check (including an impostor master).
    #[error("{0}")]
    Identity(#[from] IdentityError),
}

/// Why a relay ended without the master's answer (a dropped channel means the link went down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// No answer within `link.relay_timeout` (the link task's sweep).
    TimedOut,
    /// The master's answer came but could not be decoded.
    Unreadable,
}

/// A request waiting for the master's answer: where the answer goes, and until when.
#[derive(Debug)]
struct Waiter {
    answer: oneshot::Sender<Result<Response, Lost>>,
    deadline: Instant,
    /// For a `login`, the client's address: if the caller stops waiting, a late answer's
    /// session is an orphan to log out.
    login_from: Option<IpAddr>,
}

/// Logins whose callers stopped waiting, remembered per link until their late answer (the
/// oldest are forgotten first).
const ABANDONED_LOGINS_MAX: usize = 1024;
/// Sessions to log out that the worker has not taken yet (the oldest are dropped first).
const ORPHAN_SESSIONS_MAX: usize = 1024;

/// One sealed link's shared part: the writer's queue and the relays waiting for an answer.
#[derive(Debug)]
struct Up {
    out: mpsc::Sender<Message>,
    /// `None` once the link is down: no relay may register any more.
    waiting: Mutex<Option<HashMap<u64, Waiter>>>,
    next_relay_id: AtomicU64,
    /// Relay id to client address of the logins nobody waits for any more.
    abandoned_logins: Mutex<BTreeMap<u64, IpAddr>>,
}

impl Up {
    /// A new link's part, with no relay waiting.
    fn new(out: mpsc::Sender<Message>) -> Self {
        Self {
            out,
            waiting: Mutex::new(Some(HashMap::new())),
            next_relay_id: AtomicU64::new(1),
            abandoned_logins: Mutex::new(BTreeMap::new()),
        }
    }

    fn waiting(&self) -> MutexGuard<'_, Option<HashMap<u64, Waiter>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers every relay past its deadline with [`Lost::TimedOut`], and forgets those whose
    /// caller stopped waiting.
    fn sweep(&self, now: Instant) {
        // Abandoned logins are remembered under the map's lock (see `WaitGuard`).
        let mut waiting = self.waiting();
        if let Some(map) = waiting.as_mut() {
            let done =
                map.extract_if(|_, waiter| waiter.answer.is_closed() || waiter.deadline <= now);
            for (relay_id, waiter) in done {
                if let Some(ip) = waiter.login_from {
                    self.abandon_login(relay_id, ip);
                }
                // A caller that stopped waiting is not told (the send fails, harmlessly).
                let _ = waiter.answer.send(Err(Lost::TimedOut));
            }
        }
    }

    /// Remembers a login nobody waits for, so that its late answer's session is logged out.
    /// Called with the waiting map's lock held (the lock order is `waiting`, then
    /// `abandoned_logins`; the link task takes them one after the other, never nested).
    fn abandon_login(&self, relay_id: u64, ip: IpAddr) {
        let mut abandoned = self.abandoned_logins.lock().unwrap_or_else(PoisonError::into_inner);
        if abandoned.len() >= ABANDONED_LOGINS_MAX {
            abandoned.pop_first();
        }
        abandoned.insert(relay_id, ip);
    }

    /// The client address of an abandoned login, if `relay_id` is one (forgotten then).
    fn abandoned_login(&self, relay_id: u64) -> Option<IpAddr> {
        self.abandoned_logins.lock().unwrap_or_else(PoisonError::into_inner).remove(&relay_id)
    }

    /// Closes the link for relays: every waiting relay sees its answer channel dropped.
    fn close(&self) -> usize {
        self.waiting().take().map_or(0, |map| map.len())
    }
}

#[derive(Debug)]
struct Shared {
    config: LinkConfig,
    current: Mutex<Option<Arc<Up>>>,
    state: watch::Sender<LinkState>,
    /// How many times the link came up: a watcher of `state` that missed a quick down-and-up
    /// (a watch keeps only the last value) still sees a new link.
    generation: std::sync::atomic::AtomicU64,
    /// Sessions made by logins whose callers stopped waiting, with the client's address.
    orphans: Mutex<VecDeque<(SessionId, IpAddr)>>,
    /// Wakes whoever logs the orphans out.
    orphans_found: tokio::sync::Notify,
}

impl Shared {
    /// A link that has not come up yet.
    fn new(config: LinkConfig, state: watch::Sender<LinkState>) -> Self {
        Self {
            config,
            current: Mutex::new(None),
            state,
            generation: std::sync::atomic::AtomicU64::new(0),
            orphans: Mutex::new(VecDeque::new()),
            orphans_found: tokio::sync::Notify::new(),
        }
    }

    fn current(&self) -> Option<Arc<Up>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_current(&self, up: Option<Arc<Up>>) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = up;
    }

    fn set_state(&self, state: LinkState) {
        self.state.send_replace(state);
    }

    /// Keeps a session no client knows, for the worker to log out.
    fn orphaned(&self, session: SessionId, ip: IpAddr) {
        {
            let mut orphans = self.orphans.lock().unwrap_or_else(PoisonError::into_inner);
            if orphans.len() >= ORPHAN_SESSIONS_MAX {
                orphans.pop_front();
            }
            orphans.push_back((session, ip));
        }
        self.orphans_found.notify_one();
    }
}

/// Everything the link task needs to connect and authenticate.
#[derive(Debug, Clone)]
pub struct LinkParams {
    /// The master's address, `host:port`.
    pub master: String,
    /// The address announced to clients, sent in the Hello.
    pub advertise: String,
    /// Timeouts, backoff, heartbeat and bounds.
    pub config: LinkConfig,
}

/// A handle on the link to the master; cheap to clone.
#[derive(Debug, Clone)]
pub struct MasterLink {
    shared: Arc<Shared>,
}

/// Removes a relay from the waiting map when its caller stops waiting (answer, timeout, or the
/// client's task ending), so the in-flight count stays exact.
#[derive(Debug)]
struct WaitGuard {
    up: Arc<Up>,
    relay_id: u64,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        // Still in the map: the caller stopped waiting before the answer. Remembered as
        // abandoned under the map's lock, so that a reply read meanwhile finds one or the other.
        let mut waiting = self.up.waiting();
        let waiter = waiting.as_mut().and_then(|map| map.remove(&self.relay_id));
        if let Some(ip) = waiter.and_then(|w| w.login_from) {
            self.up.abandon_login(self.relay_id, ip);
        }
    }
}

/// A relay handed to the link: a future of the master's answer (or of the request's failure
/// return, when the link drops or the master does not answer within `link.relay_timeout`). It
/// needs no task and no timer of its own: the link task answers it, and sweeps the late ones.
/// Dropping it forgets the relay.
#[derive(Debug)]
pub struct PendingRelay {
    state: Pending,
}

#[derive(Debug)]
enum Pending {
    /// Answered before it was sent (no link, busy, cannot encode), or already taken.
    Ready(Option<Response>),
    /// Sent; waiting for the link task.
    Waiting {
        answer: oneshot::Receiver<Result<Response, Lost>>,
        request: Request,
        timeout: std::time::Duration,
        _guard: WaitGuard,
    },
}

impl PendingRelay {
    fn ready(response: Response) -> Self {
        Self { state: Pending::Ready(Some(response)) }
    }

    /// The answer if it has come, without waiting.
    pub fn try_take(&mut self) -> Option<Response> {
        let outcome = match &mut self.state {
            Pending::Ready(response) => return response.take(),
            Pending::Waiting { answer, .. } => match answer.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return None,
                Ok(outcome) => Some(outcome),
                Err(oneshot::error::TryRecvError::Closed) => None,
            },
        };
        Some(self.finish(outcome))
    }

    /// The answer, once the link task has sent `outcome` (`None`: the channel dropped); the
    /// relay is done (and leaves the waiting map) from here on.
    fn finish(&mut self, outcome: Option<Result<Response, Lost>>) -> Response {
        match std::mem::replace(&mut self.state, Pending::Ready(None)) {
            Pending::Waiting { request, timeout, .. } => {
                outcome_response(outcome, &request, timeout)
            }
            Pending::Ready(response) => response.unwrap_or_else(taken_twice),
        }
    }
}

/// What a relay polled again after its answer was taken gives (a caller bug, not a panic).
fn taken_twice() -> Response {
    Response::Error(Failure::new(Reason::Internal, "relay answer taken twice"))
}

/// The caller's answer from what the link task sent: the master's answer, or the request's
/// failure return (`None`: the link went down).
fn outcome_response(
    outcome: Option<Result<Response, Lost>>,
    request: &Request,
    timeout: std::time::Duration,
) -> Response {
    match outcome {
        Some(Ok(response)) => response,
        Some(Err(Lost::TimedOut)) => unavailable(
            request,
            format!(
                "the master did not answer within {}; {}",
                humantime::format_duration(timeout),
                unknown_outcome(request)
            ),
        ),
        Some(Err(Lost::Unreadable)) => request.fail(Failure::new(
            Reason::Internal,
            format!("the master's answer could not be read; {}", unknown_outcome(request)),
        )),
        None => link_lost(request),
    }
}

impl std::future::Future for PendingRelay {
    type Output = Response;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Response> {
        let outcome = match &mut self.state {
            // `finish` gives the ready answer (or `taken_twice`).
            Pending::Ready(_) => None,
            Pending::Waiting { answer, .. } => match std::pin::Pin::new(answer).poll(cx) {
                std::task::Poll::Pending => return std::task::Poll::Pending,
                std::task::Poll::Ready(outcome) => outcome.ok(),
            },
        };
        std::task::Poll::Ready(self.finish(outcome))
    }
}

fn unavailable(request: &Request, message: impl Into<String>) -> Response {
    request.fail(Failure::new(Reason::MasterUnavailable, message))
}

/// The answer of a request not relayed because the link is down: it never reached the master.
fn link_down(request: &Request) -> Response {
    unavailable(request, "the link to the master is down, so the request was not sent; retry later")
}

/// The answer of a relay whose link went down after it was sent, before the master answered:
/// the master may have done it (see [`unknown_outcome`]).
fn link_lost(request: &Request) -> Response {
    unavailable(
        request,
        format!(
            "the link to the master went down before it answered; {}",
            unknown_outcome(request)
        ),
    )
}

/// What a client should know of a relayed request the master may have done without the answer
/// reaching it: for the requests that change something, what is unknown and how a retry tells.
fn unknown_outcome(request: &Request) -> &'static str {
    match request {
        Request::Purchase { .. } | Request::Sell { .. } => {
            "whether the order was executed is unknown: retry it with the same client order id \
             to learn its outcome"
        }
        Request::Register { .. } => {
            "whether the account was opened is unknown: register again (`username_taken` then \
             means it was), or log in"
        }
        Request::Logout { .. } => {
            "whether the session ended is unknown: log out again (`bad_session` then means it did)"
        }
        _ => "retry later",
    }
}

impl MasterLink {
    /// Starts the link task; it runs until `shutdown` turns true. Returns the handle and the
    /// task (which ends after the shutdown, having failed every waiting relay).
    pub fn start(
        params: LinkParams,
        identity: WorkerIdentity,
        trust: MasterTrust,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, JoinHandle<()>) {
        let (state, _) = watch::channel(LinkState::Connecting);
        let shared = Arc::new(Shared::new(params.config, state));
        let link = Self { shared: shared.clone() };
        let span = info_span!("master_link", master = %params.master);
        let task =
            tokio::spawn(supervise(shared, params, identity, trust, shutdown).instrument(span));
        (link, task)
    }

    /// The link's state now.
    pub fn state(&self) -> LinkState {
        *self.shared.state.borrow()
    }

    /// A receiver of the link's state changes.
    pub fn subscribe(&self) -> watch::Receiver<LinkState> {
        self.shared.state.subscribe()
    }

    /// The sessions made by logins whose callers stopped waiting (timed out, or the client
    /// gone) before the master's answer came: no client knows them, so the worker logs them
    /// out (with the client address each login came from). Taking them empties the list.
    pub fn take_orphan_sessions(&self) -> Vec<(SessionId, IpAddr)> {
        self.shared.orphans.lock().unwrap_or_else(PoisonError::into_inner).drain(..).collect()
    }

    /// Resolves when sessions were added to [`MasterLink::take_orphan_sessions`] (or at once,
    /// if some were added since the last wait).
    pub async fn orphan_sessions_found(&self) {
        self.shared.orphans_found.notified().await;
    }

    /// How many times the link has come up (0 before the first): it changes with every new
    /// link, also one a state watcher saw no `Down` before.
    pub fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Relays `request` to the master with the client's IP, the worker's receive time and the
    /// connection's session, and returns the master's answer. When the link is down, drops
    /// before the answer, or the answer takes longer than `link.relay_timeout`, the answer is the
    /// request's failure return with `master_unavailable`; when too many relays wait already,
    /// with `busy`. Never hangs past the relay timeout (plus the link task's sweep period, a
    /// tenth of it, at most a second).
    pub async fn relay(
        &self,
        client_ip: IpAddr,
        received_at: Timestamp,
        session: Option<SessionId>,
        request: &Request,
    ) -> Response {
        self.send_relay(client_ip, received_at, session, request).await.await
    }

    /// Sends `request` as [`MasterLink::relay`] does and returns as soon as it is queued for
    /// the wire: the answer is the returned [`PendingRelay`]. Callers that pipeline (a client's
    /// orders) keep many pending without a task each.
    pub async fn send_relay(
        &self,
        client_ip: IpAddr,
        received_at: Timestamp,
        session: Option<SessionId>,
        request: &Request,
    ) -> PendingRelay {
        let Some(up) = self.shared.current() else {
            return PendingRelay::ready(unavailable(
                request,
                "the worker is not connected to the master; retry later",
            ));
        };
        let timeout = self.shared.config.relay_timeout;
        // The relay's whole life counts against the timeout, its wait for a place included.
        let deadline = Instant::now() + timeout;
        let in_flight_max =
            usize::try_from(self.shared.config.relays_in_flight_max).unwrap_or(usize::MAX);
        // A place in the writer's queue first, so relay ids grow in wire order. Waiting for one
        // is the only wait here, and it counts against the relay timeout too.
        let permit = match up.out.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Closed(())) => {
                return PendingRelay::ready(link_down(request));
            }
            Err(mpsc::error::TrySendError::Full(())) => {
                match tokio::time::timeout_at(deadline.into(), up.out.reserve()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => {
                        return PendingRelay::ready(link_down(request));
                    }
                    Err(_) => {
                        return PendingRelay::ready(unavailable(
                            request,
                            format!(
                                "the link to the master had no room for this request within \
                                 {}, so it was not sent; retry later",
                                humantime::format_duration(timeout)
                            ),
                        ));
                    }
                }
            }
        };
        let relay_id = up.next_relay_id.fetch_add(1, Ordering::Relaxed);
        let relay = Relay { relay_id, client_ip, received_at, session, request: request.clone() };
        let message = match Control::Relay(Box::new(relay)).encode() {
            Ok(message) => message,
            Err(e) => {
                warn!(relay_id, cause = %e, "cannot encode a relay");
                return PendingRelay::ready(
                    request.fail(Failure::new(Reason::Internal, "the request cannot be relayed")),
                );
            }
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = up.waiting();
            let Some(map) = waiting.as_mut() else {
                return PendingRelay::ready(link_down(request));
            };
            // Callers that stopped waiting are already gone (WaitGuard), so the count is exact
            // and refusing costs nothing under overload.
            if map.len() >= in_flight_max {
                return PendingRelay::ready(request.fail(Failure::new(
                    Reason::Busy,
                    "too many requests are waiting for the master; retry later",
                )));
            }
            let login_from = matches!(request, Request::Login { .. }).then_some(client_ip);
            map.insert(relay_id, Waiter { answer: tx, deadline, login_from });
        }
        permit.send(message);
        PendingRelay {
            state: Pending::Waiting {
                answer: rx,
                request: request.clone(),
                timeout,
                _guard: WaitGuard { up, relay_id },
            },
        }
    }
}

/// The link task: connect, handshake, carry, and reconnect with backoff until shutdown.
async fn supervise(
    shared: Arc<Shared>,
    params: LinkParams,
    identity: WorkerIdentity,
    trust: MasterTrust,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = params.config;
    let mut backoff = config.reconnect_backoff_min;
    let mut failures: u64 = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        shared.set_state(LinkState::Connecting);
        let attempt = handshake(&params, &identity, &trust);
        let result = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            result = attempt => result,
        };
        match result {
            Ok(framed) => {
                failures = 0;
                backoff = config.reconnect_backoff_min;
                let reason = carry(&shared, framed, &mut shutdown).await;
                match reason {
                    Down::Shutdown => break,
                    Down::Failed(reason) => {
                        warn!(%reason, retry_in = ?backoff, "link to the master is down");
                    }
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    warn!(cause = %error, retry_in = ?backoff, "cannot establish the link to the master");
                } else {
                    debug!(cause = %error, attempt = failures, retry_in = ?backoff, "still cannot reach the master");
                }
            }
        }
        shared.set_state(LinkState::Down);
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = backoff.saturating_mul(2).min(config.reconnect_backoff_max);
    }
    shared.set_state(LinkState::Stopped);
    info!("link to the master stopped");
}

/// Connects and performs the mutual handshake of `docs/WORKER_AUTH.md`; returns the sealed link.
async fn handshake(
    params: &LinkParams,
    identity: &WorkerIdentity,
    trust: &MasterTrust,
) -> Result<FramedStream<TcpStream>, HandshakeError> {
    let config = &params.config;
    let connect = TcpStream::connect(params.master.as_str());
    let stream = tokio::time::timeout(config.connect_timeout, connect)
        .await
        .map_err(|_| HandshakeError::Timeout { step: "TCP connection" })?
        .map_err(|source| HandshakeError::Connect { address: params.master.clone(), source })?;
    // Small frames (heartbeats, relays) must not wait for Nagle.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(cause = %e, "cannot set TCP_NODELAY on the link");
    }
    let exchange = async {
        let mut framed = FramedStream::new(stream);
        // Until the master has proved itself, what it sends (a `challenge` of a few KiB) is
        // held to a small message: a host posing as the master at every reconnect cannot make
        // the worker hold 16 MiB.
        framed.reader().set_body_bytes_max(net::limits::REQUEST_BODY_BYTES_MAX);
        let uuid = identity.uuid();
        let version = u16::from(net::limits::PROTOCOL_VERSION);
        let binding = HelloBinding { protocol_version: version, client_addr: &params.advertise };
        let worker_nonce = identity::new_nonce()?;
        let hello = WorkerHello {
            worker: WorkerId(uuid.as_u128()),
            version,
            address: params.advertise.clone(),
            nonce: worker_nonce,
        };
        framed.write_control(&Control::WorkerHello(hello)).await?;
        let (master_nonce, master_proof, sealed_key) = match framed.read_control().await? {
            Some(Control::Challenge { nonce, master_proof, sealed_key }) => {
                (nonce, master_proof, sealed_key)
            }
            Some(Control::LinkRefused(failure)) => return Err(HandshakeError::Refused(failure)),
            Some(other) => {
                return Err(HandshakeError::Unexpected {
                    got: other.instruction(),
                    expected: "challenge",
                });
            }
            None => return Err(HandshakeError::Closed),
        };
        // Authenticate the master, and the sealed link key it sent, before proving anything.
        let challenge = MasterChallenge {
            nonce: &master_nonce,
            master_proof: &master_proof,
            sealed_key: &sealed_key,
        };
        trust.verify_master_proof(uuid, &worker_nonce, &binding, &challenge, SystemTime::now())?;
        let signature = identity.sign_challenge(&master_nonce, &binding)?;
        framed.write_control(&Control::HelloProof { signature }).await?;
        // The key is the one the verified Challenge carried: linkAccepted carries none.
        match framed.read_control().await? {
            Some(Control::LinkAccepted) => {}
            Some(Control::LinkRefused(failure)) => return Err(HandshakeError::Refused(failure)),
            Some(other) => {
                return Err(HandshakeError::Unexpected {
                    got: other.instruction(),
                    expected: "linkAccepted",
                });
            }
            None => return Err(HandshakeError::Closed),
        }
        let key = identity.decrypt_link_key(&sealed_key)?;
        framed.reader().set_body_bytes_max(net::limits::MESSAGE_BODY_BYTES_MAX);
        framed.seal_link(
            LinkSealer::new(key.clone(), Direction::WorkerToMaster),
            LinkOpener::new(key, Direction::MasterToWorker),
        );
        Ok(framed)
    };
    tokio::time::timeout(config.handshake_timeout, exchange)
        .await
        .map_err(|_| HandshakeError::Timeout { step: "handshake" })?
}

/// Why a sealed link ended.
enum Down {
    Shutdown,
    Failed(String),
}

/// Carries a sealed link until it fails or the worker shuts down.
async fn carry(
    shared: &Shared,
    framed: FramedStream<TcpStream>,
    shutdown: &mut watch::Receiver<bool>,
) -> Down {
    let config = shared.config;
    let queue_depth = usize::try_from(config.queue_depth_max).unwrap_or(usize::MAX).max(1);
    let (out, mut out_rx) = mpsc::channel::<Message>(queue_depth);
    let up = Arc::new(Up::new(out.clone()));
    let (mut reader, mut writer) = framed.into_split();
    let write_loop = async move {
        // Orders come in bursts, and each waits for its interval anyway: what is queued
        // behind the first message goes out with it, in one write.
        while let Some(message) = out_rx.recv().await {
            writer.write_gathered(message, || out_rx.try_recv().ok(), Ok).await?;
        }
        Ok::<(), net::WriteError>(())
    };
    tokio::pin!(write_loop);
    shared.set_current(Some(up.clone()));
    shared.generation.fetch_add(1, Ordering::AcqRel);
    shared.set_state(LinkState::Up);
    info!("link to the master is up");

    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat_seq: u64 = 0;
    // Relays past `link.relay_timeout` are answered by this sweep, a tenth of the timeout
    // apart (at most a second): a relay is answered at most that long after its deadline.
    let mut sweep = tokio::time::interval(
        (config.relay_timeout / 10)
            .clamp(std::time::Duration::from_millis(1), std::time::Duration::from_secs(1)),
    );
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let down = loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break Down::Shutdown,
            result = &mut write_loop => {
                break Down::Failed(match result {
                    Ok(()) => "the writer stopped".to_owned(),
                    Err(e) => e.to_string(),
                });
            }
            message = reader.read_message() => {
                last_heard = Instant::now();
                let message = match message {
                    Ok(Some(message)) => message,
                    Ok(None) => break Down::Failed("the master closed the link".to_owned()),
                    Err(e) => break Down::Failed(e.to_string()),
                };
                match Control::decode(&message) {
                    Ok(Control::RelayReply { relay_id, response }) => {
                        let waiter = up.waiting().as_mut().and_then(|map| map.remove(&relay_id));
                        match waiter {
                            Some(waiter) => {
                                // The caller may have given up in the meantime: nothing to do,
                                // unless its answer was a new session nobody will know.
                                if let Err(Ok(Response::SessionId(session))) =
                                    waiter.answer.send(Ok(response))
                                    && let Some(ip) = waiter.login_from
                                {
                                    info!(relay_id, "a login was answered as its client stopped waiting; its session is logged out");
                                    shared.orphaned(session, ip);
                                }
                            }
                            None => match (up.abandoned_login(relay_id), response) {
                                (Some(ip), Response::SessionId(session)) => {
                                    info!(relay_id, "a login was answered after its client stopped waiting; its session is logged out");
                                    shared.orphaned(session, ip);
                                }
                                _ => debug!(relay_id, "reply to a relay nobody waits for any more"),
                            },
                        }
                    }
                    Ok(Control::HeartbeatAck { .. }) => {}
                    Ok(other) => {
                        break Down::Failed(format!(
                            "unexpected {} from the master",
                            other.instruction()
                        ));
                    }
                    // Its frames were whole and their MACs sound, so the link is in step: only
                    // this message is unreadable (a master of another version, or a bug). Its
                    // relay fails alone; the other clients' relays go on.
                    Err(e) => {
                        let relay_id = Control::relay_id(&message);
                        let waiter = relay_id
                            .and_then(|id| up.waiting().as_mut().and_then(|map| map.remove(&id)));
                        match waiter {
                            Some(waiter) => {
                                warn!(relay_id, cause = %e, "cannot read the master's answer to a relay; that request fails");
                                let _ = waiter.answer.send(Err(Lost::Unreadable));
                            }
                            None => warn!(
                                instruction = message.instruction,
                                cause = %e,
                                "cannot read a message from the master; ignored"
                            ),
                        }
                    }
                }
            }
            _ = heartbeat.tick() => {
                let silent = last_heard.elapsed();
                if silent > config.heartbeat_timeout {
                    break Down::Failed(format!(
                        "nothing from the master for {}",
                        humantime::format_duration(silent)
                    ));
                }
                heartbeat_seq = heartbeat_seq.saturating_add(1);
                match (Control::Heartbeat { seq: heartbeat_seq }).encode() {
                    // A full queue already proves the link busy; skip this beat.
                    Ok(message) => { let _ = out.try_send(message); }
                    Err(e) => warn!(cause = %e, "cannot encode a heartbeat"),
                }
            }
            _ = sweep.tick() => up.sweep(Instant::now()),
        }
    };
    shared.set_current(None);
    let failed = up.close();
    if failed > 0 {
        warn!(relays = failed, "relays lost with the link; their clients get master_unavailable");
    }
    down
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A relay lost with its answer says what is unknown for the requests that change
    /// something, and how a retry tells; reads are simply retried.
    #[test]
    fn a_lost_answer_says_what_is_unknown() {
        let session = net::SessionId([1; 32]);
        let symbol = engine::Symbol::new("AAPL").unwrap();
        let qty = engine::Qty::from_units(1).unwrap();
        let order = Request::Purchase { session, symbol, qty, client_order_id: 7 };
        let register = Request::Register {
            username: engine::Username::new("alice").unwrap(),
            email: engine::Email::new("alice@example.com").unwrap(),
            password: net::HashedPassword::new(vec![1; 32]).unwrap(),
        };
        let message = |response: Response| response.failure().unwrap().message.clone();
        let lost = message(link_lost(&order));
        assert!(lost.contains("same client order id"), "{lost}");
        let lost = message(link_lost(&register));
        assert!(lost.contains("username_taken"), "{lost}");
        let lost = message(link_lost(&Request::Logout { session }));
        assert!(lost.contains("bad_session"), "{lost}");
        let lost = message(link_lost(&Request::GetAssetInfo { symbol }));
        assert!(lost.ends_with("retry later"), "{lost}");
    }

    #[tokio::test]
    async fn a_relay_without_a_link_fails_at_once_with_master_unavailable() {
        let (state, _) = watch::channel(LinkState::Down);
        let link = MasterLink { shared: Arc::new(Shared::new(LinkConfig::default(), state)) };
        let request = Request::GetWorkers;
        let response = link.relay("127.0.0.1".parse().unwrap(), Timestamp(1), None, &request).await;
        let failure = response.failure().unwrap();
        assert_eq!(response.instruction(), net::Instruction::DataFail);
        assert_eq!(failure.reason, Reason::MasterUnavailable);
    }

    /// A link with one relay of `request` waiting, from 192.0.2.1.
    fn waiting_relay(request: &Request) -> (Arc<Up>, PendingRelay) {
        let (out, _out_rx) = mpsc::channel(1);
        let up = Arc::new(Up::new(out));
        let (answer, rx) = oneshot::channel();
        let login_from =
            matches!(request, Request::Login { .. }).then(|| "192.0.2.1".parse().unwrap());
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        up.waiting().as_mut().unwrap().insert(7, Waiter { answer, deadline, login_from });
        let pending = PendingRelay {
            state: Pending::Waiting {
                answer: rx,
                request: request.clone(),
                timeout: std::time::Duration::from_secs(60),
                _guard: WaitGuard { up: Arc::clone(&up), relay_id: 7 },
            },
        };
        (up, pending)
    }

    fn login() -> Request {
        Request::Login {
            username: engine::Username::new("alice").unwrap(),
            password: net::HashedPassword::new(vec![1; 32]).unwrap(),
            expirable: false,
        }
    }

    /// A login whose caller stops waiting (the client's task ended) is remembered, so that the
    /// session of its late answer is logged out; other relays, and answered logins, are not.
    #[test]
    fn a_login_given_up_is_remembered_and_nothing_else() {
        let (up, pending) = waiting_relay(&login());
        drop(pending);
        assert_eq!(up.abandoned_login(7), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(up.abandoned_login(7), None, "taken once");

        let (up, pending) = waiting_relay(&Request::GetWorkers);
        drop(pending);
        assert_eq!(up.abandoned_login(7), None);

        // Answered: the link task took the waiter out before the caller finished.
        let (up, pending) = waiting_relay(&login());
        let waiter = up.waiting().as_mut().unwrap().remove(&7).unwrap();
        waiter.answer.send(Ok(Response::SessionId(net::SessionId([1; 32])))).unwrap();
        drop(pending);
        assert_eq!(up.abandoned_login(7), None);

        // Timed out: the sweep remembers it.
        let (up, _pending) = waiting_relay(&login());
        up.sweep(Instant::now() + std::time::Duration::from_secs(61));
        assert_eq!(up.abandoned_login(7), Some("192.0.2.1".parse().unwrap()));
    }
}
