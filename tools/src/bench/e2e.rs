//! `e2e.*`: real `pt-master` and `pt-worker` processes on loopback, and a load generator in
//! this process that speaks the wire protocol (`net::FramedStream`), beside a plain tokio echo
//! server and client exchanging frames of the same size over the same loopback.
//!
//! 1. Start: `pt-worker keygen`, a master configuration in a temporary directory (the update
//!    interval, light argon2 costs so registering the load generator's users is quick, the
//!    worker registered from 127.0.0.1), `pt-master --config`, then `pt-worker run`; ready when
//!    the master lists the worker.
//! 2. Every connection registers its own user and logs in (expirable session).
//! 3. Measure: each connection keeps `--window` orders in flight (buy then sell one unit of
//!    AAPL, IBM or MSFT, alternately), sending a new one for each answer, for `--duration`.
//!    Acknowledged = a `purchaseSuccess`/`sellSuccess` or an engine rejection (both are
//!    journaled before the answer); latency from the write to the answer.
//! 4. Baseline: the echo server and client, same connections, same window, same frame size.
//! 5. Overload: the window raised by a third (past the worker's relays in flight): `busy`
//!    answers are counted and their latency reported.
//!
//! Every answer of a phase is counted: one that acknowledges nothing (`busy`, a failure, a
//! refusal on arrival, which is not journaled) in the steady phase makes its targets read
//! "missed", and is reported.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use engine::{Email, Qty, Symbol, Username};
use net::{DataPayload, FramedStream, Reason, Request, Response, SessionId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{BenchArgs, Figure, Histogram, base_dir, per_second};
use crate::client::password::hash_password;

/// The overload step's window per connection: a third more than the steady window, so the
/// offered load is a third more than the admission limit (see [`Processes::start`]).
pub fn overload_window(window: u32) -> u32 {
    window.saturating_add((window / 3).max(1))
}
/// Longest wait for one answer before the bench gives up on a connection.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the servers to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Registrations (argon2 hashes) in flight at once while preparing users.
const REGISTER_CONCURRENCY: usize = 32;
/// Symbols traded: present in the shipped prices from 2000 on.
const SYMBOLS: [&str; 3] = ["AAPL", "IBM", "MSFT"];
/// Target acknowledged orders per second.
pub const TARGET_ORDERS_PER_S: f64 = 50_000.0;
/// Target slack over one interval for the p99 latency.
pub const TARGET_P99_SLACK: Duration = Duration::from_millis(20);

/// argon2id costs written into the master's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Costs {
    /// Memory per hash, KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

/// The lightest costs the master accepts: registering thousands of bench users stays quick.
pub const LIGHT_ARGON2: Argon2Costs = Argon2Costs { m_cost_kib: 8, t_cost: 1, p_cost: 1 };
/// The master's defaults (OWASP's recommendation), for the login storm.
pub const DEFAULT_ARGON2: Argon2Costs = Argon2Costs { m_cost_kib: 19_456, t_cost: 2, p_cost: 1 };

/// `pt-master` and `pt-worker` next to this executable.
pub fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().context("cannot find the pt executable")?;
    let dir = exe.parent().context("the pt executable has no directory")?;
    let master = dir.join("pt-master");
    let worker = dir.join("pt-worker");
    if !master.is_file() || !worker.is_file() {
        bail!(
            "pt-master and pt-worker must be next to pt in {}: run `cargo build --release --bins` \
             first (and run `pt bench` from target/release)",
            dir.display()
        );
    }
    Ok((master, worker))
}

fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot find a free port")?;
    Ok(listener.local_addr().context("free port")?.port())
}

/// A master and a worker process, killed when dropped.
#[derive(Debug)]
pub struct Processes {
    master: Child,
    worker: Child,
    /// Where clients connect.
    pub worker_addr: SocketAddr,
    /// The master's address.
    pub master_addr: SocketAddr,
    /// The temporary directory (data, keys, logs).
    pub dir: tempfile::TempDir,
    /// When the master was started.
    started: Instant,
}

/// The master's slow intervals during a run (`master::slow`: settlement plus commit over
/// 20 ms, which answers all the interval's orders that much late), read from its log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowIntervals {
    /// Slow intervals the master logged.
    pub intervals: u64,
    /// The slowest one's settlement plus commit, in microseconds.
    pub slowest_micros: u64,
}

impl SlowIntervals {
    /// Reads the master's `slow intervals` warnings (`intervals=N slowest_settle_micros=S
    /// slowest_commit_micros=C`) from its log text.
    pub fn from_log(log: &str) -> SlowIntervals {
        let mut out = SlowIntervals::default();
        for line in log.lines().filter(|l| l.contains("slow intervals")) {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|token| token.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|value| value.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            out.intervals = out.intervals.saturating_add(field("intervals"));
            let took =
                field("slowest_settle_micros").saturating_add(field("slowest_commit_micros"));
            out.slowest_micros = out.slowest_micros.max(took);
        }
        out
    }

    /// The figure `name`: slow intervals beside the intervals of the run.
    pub fn figure(&self, name: &str, intervals_in_run: u64) -> Figure {
        Figure::new(
            name,
            self.intervals as f64,
            "intervals",
            intervals_in_run as f64,
            format!(
                "intervals in the run; slowest settle + commit {:.1} ms",
                self.slowest_micros as f64 / 1000.0
            ),
        )
    }
}

impl Processes {
    /// The master's slow intervals so far (from its log), and the intervals since it started.
    pub fn slow_intervals(&self, interval: Duration) -> (SlowIntervals, u64) {
        let log =
            std::fs::read_to_string(self.dir.path().join("master.stderr")).unwrap_or_default();
        let elapsed = self.started.elapsed().as_micros();
        let intervals = elapsed / interval.as_micros().max(1);
        (SlowIntervals::from_log(&log), u64::try_from(intervals).unwrap_or(u64::MAX))
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in [&mut self.worker, &mut self.master] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(binary: &Path, args: &[&str], log: &Path) -> anyhow::Result<Child> {
    let stderr =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    Command::new(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

fn check_alive(child: &mut Child, what: &str, log: &Path) -> anyhow::Result<()> {
    if let Ok(Some(status)) = child.try_wait() {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(10).collect::<Vec<_>>().join("\n");
        bail!("{what} exited with {status}: {tail}");
    }
    Ok(())
}

impl Processes {
    /// Starts a master (update `interval`, argon2 `costs`) and one worker in a temporary
    /// directory under `base`, and returns once the worker is linked. The worker admits
    /// `relays_in_flight_max` relays at once (`link.relays_in_flight_max`) and answers `busy`
    /// beyond: the admission limit an operator sizes to what the machine carries.
    pub async fn start(
        base: &Path,
        interval: Duration,
        costs: Argon2Costs,
        relays_in_flight_max: u32,
    ) -> anyhow::Result<Self> {
        let (master_bin, worker_bin) = binaries()?;
        std::fs::create_dir_all(base)
            .with_context(|| format!("cannot create {}", base.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("pt-bench-e2e-")
            .tempdir_in(base)
            .with_context(|| format!("cannot make a directory in {}", base.display()))?;
        let root = dir.path().to_path_buf();
        let key_dir = root.join("worker-key");
        let keygen = Command::new(&worker_bin)
            .args(["keygen", "--name", "bench", "--allow-ip", "127.0.0.1", "--out"])
            .arg(&key_dir)
            .stdin(Stdio::null())
            .output()
            .context("cannot run pt-worker keygen")?;
        if !keygen.status.success() {
            bail!("pt-worker keygen failed: {}", String::from_utf8_lossy(&keygen.stderr));
        }
        let uuid = std::fs::read_to_string(key_dir.join("worker.uuid"))
            .context("cannot read worker.uuid")?;
        let master_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let worker_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let data = root.join("master");
        let config = format!(
            "listen = \"{master_addr}\"\ndata_dir = {data:?}\nupdate_interval = \"{interval}\"\n\
             initial_cash = \"1000000000\"\n\n[auth]\nhash_threads = 2\nhash_queue_max = 64\n\n\
             [auth.argon2]\nm_cost_kib = {m}\nt_cost = {t}\np_cost = {p}\n\n\
             [auth.registrations]\nper_ip_max = 1000000\n\n\
             [[workers]]\nid = \"{uuid}\"\nname = \"bench\"\ncert = {cert:?}\n\
             allowed_ips = [\"127.0.0.1\"]\n",
            interval = humantime::format_duration(interval),
            m = costs.m_cost_kib,
            t = costs.t_cost,
            p = costs.p_cost,
            uuid = uuid.trim(),
            cert = key_dir.join("worker.pub.asc"),
        );
        let config_path = root.join("master.toml");
        std::fs::write(&config_path, config).context("cannot write the master configuration")?;
        let master_log = root.join("master.stderr");
        let config_arg = config_path.to_string_lossy().into_owned();
        let master = spawn(&master_bin, &["--config", &config_arg], &master_log)?;
        // Kill on every early return from here on.
        let worker_log = root.join("worker.stderr");
        let mut processes = Self {
            master,
            worker: Command::new("true").spawn().context("cannot spawn a placeholder")?,
            worker_addr,
            master_addr,
            dir,
            started: Instant::now(),
        };
        let cert = data.join("master.pub.asc");
        let deadline = Instant::now() + START_TIMEOUT;
        while !cert.is_file() {
            check_alive(&mut processes.master, "pt-master", &master_log)?;
            if Instant::now() > deadline {
                bail!("pt-master did not write {} in time", cert.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let listen = worker_addr.to_string();
        let key_arg = key_dir.to_string_lossy().into_owned();
        let cert_arg = cert.to_string_lossy().into_owned();
        let master_arg = master_addr.to_string();
        let log_arg = root.join("worker.log").to_string_lossy().into_owned();
        let worker_config = root.join("worker.toml");
        std::fs::write(
            &worker_config,
            // Every load connection comes from 127.0.0.1.
            format!(
                "[link]\nrelays_in_flight_max = {relays_in_flight_max}\n\n[clients]\n\
                 connections_per_address_max = {}\n",
                worker::config::CONNECTIONS_MAX
            ),
        )
        .context("cannot write the worker configuration")?;
        let worker_config_arg = worker_config.to_string_lossy().into_owned();
        let _ = processes.worker.wait();
        processes.worker = spawn(
            &worker_bin,
            &[
                "run",
                "--config",
                &worker_config_arg,
                "--listen",
                &listen,
                "--master",
                &master_arg,
                "--key-dir",
                &key_arg,
                "--master-cert",
                &cert_arg,
                "--log-file",
                &log_arg,
            ],
            &worker_log,
        )?;
        let uuid = uuid::Uuid::parse_str(uuid.trim()).context("worker.uuid")?;
        loop {
            check_alive(&mut processes.master, "pt-master", &master_log)?;
            check_alive(&mut processes.worker, "pt-worker", &worker_log)?;
            if linked(master_addr).await.is_ok_and(|ids| ids.contains(&uuid.as_u128())) {
                return Ok(processes);
            }
            if Instant::now() > deadline {
                bail!("the worker did not link to the master in time (see {})", root.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn linked(master: SocketAddr) -> anyhow::Result<Vec<u128>> {
    let mut stream = FramedStream::new(TcpStream::connect(master).await?);
    stream.writer().write_request(&Request::GetWorkers).await?;
    match stream.reader().read_response().await? {
        Some(Response::Data(DataPayload::WorkerList(list))) => {
            Ok(list.iter().map(|w| w.id.0).collect())
        }
        _ => bail!("no worker list"),
    }
}

/// One logged-in client connection.
#[derive(Debug)]
pub struct Trader {
    stream: FramedStream<TcpStream>,
    session: SessionId,
    index: u64,
    sent: u64,
}

async fn exchange(
    stream: &mut FramedStream<TcpStream>,
    request: &Request,
) -> anyhow::Result<Response> {
    stream.writer().write_request(request).await?;
    match tokio::time::timeout(ANSWER_TIMEOUT, stream.reader().read_response()).await {
        Ok(Ok(Some(response))) => Ok(response),
        Ok(Ok(None)) => bail!("the worker closed the connection"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("no answer within {ANSWER_TIMEOUT:?}"),
    }
}

/// The bench's user of index `i` (`b<run>x<i>`), its email and client password hash.
pub fn credentials(run: &str, i: u64) -> anyhow::Result<(Username, Email, net::HashedPassword)> {
    let name = format!("b{run}x{i}");
    let username = Username::new(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let email = Email::new(&format!("{name}@bench.invalid")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let password =
        hash_password(&username, "bench-password").map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((username, email, password))
}

/// Sends `request` until the answer is not `busy` (waiting a little between tries).
async fn until_not_busy(
    stream: &mut FramedStream<TcpStream>,
    request: &Request,
) -> anyhow::Result<Response> {
    loop {
        let response = exchange(stream, request).await?;
        match response.failure() {
            Some(f) if f.reason.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return Ok(response),
        }
    }
}

/// Connects, registers user `i` and logs in on the same connection.
pub async fn trader(addr: SocketAddr, run: &str, i: u64) -> anyhow::Result<Trader> {
    let (username, email, password) = credentials(run, i)?;
    let socket = TcpStream::connect(addr).await.context("cannot connect to the worker")?;
    socket.set_nodelay(true)?;
    let mut stream = FramedStream::new(socket);
    let register =
        Request::Register { username: username.clone(), email, password: password.clone() };
    match until_not_busy(&mut stream, &register).await? {
        Response::RegisterSuccess => {}
        other => bail!("register {username}: {}", describe(&other)),
    }
    let session = login(&mut stream, &username, &password).await?;
    Ok(Trader { stream, session, index: i, sent: 0 })
}

/// Logs in (expirable session) on `stream`, retrying while busy.
pub async fn login(
    stream: &mut FramedStream<TcpStream>,
    username: &Username,
    password: &net::HashedPassword,
) -> anyhow::Result<SessionId> {
    let request =
        Request::Login { username: username.clone(), password: password.clone(), expirable: true };
    match until_not_busy(stream, &request).await? {
        Response::SessionId(session) => Ok(session),
        other => bail!("login {username}: {}", describe(&other)),
    }
}

fn describe(response: &Response) -> String {
    match response.failure() {
        Some(f) => format!("{} ({}): {}", response.instruction(), f.reason, f.message),
        None => response.instruction().to_string(),
    }
}

/// Registers and logs in `count` users with at most `REGISTER_CONCURRENCY` at once.
pub async fn traders(addr: SocketAddr, run: &str, count: u32) -> anyhow::Result<Vec<Trader>> {
    let permits = Arc::new(tokio::sync::Semaphore::new(REGISTER_CONCURRENCY));
    let mut tasks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for i in 0..u64::from(count) {
        let permits = Arc::clone(&permits);
        let run = run.to_owned();
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            trader(addr, &run, i).await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.context("a registration task failed")??);
    }
    Ok(out)
}

/// What one load phase measured.
#[derive(Debug, Clone, Default)]
pub struct PhaseStats {
    /// Orders acknowledged (filled or rejected by the engine) within the phase.
    pub acked_in_time: u64,
    /// Latency of acknowledged orders.
    pub acked: Histogram,
    /// `busy` answers.
    pub busy: u64,
    /// Latency of `busy` answers.
    pub busy_latency: Histogram,
    /// Other answers (errors, failures other than engine rejections and busy).
    pub other: u64,
    /// The first answer of the phase that acknowledged nothing, in words (for the report).
    pub first_unacknowledged: Option<String>,
}

impl PhaseStats {
    fn merge(&mut self, other: &PhaseStats) {
        self.acked_in_time += other.acked_in_time;
        self.acked.merge(&other.acked);
        self.busy += other.busy;
        self.busy_latency.merge(&other.busy_latency);
        self.other += other.other;
        if self.first_unacknowledged.is_none() {
            self.first_unacknowledged.clone_from(&other.first_unacknowledged);
        }
    }

    /// What acknowledged nothing in the phase, in words (`None` when every answer did).
    pub fn unacknowledged_report(&self) -> Option<String> {
        (self.busy + self.other > 0).then(|| {
            format!(
                "{} busy, {} failed or refused on arrival (the first: {})",
                self.busy,
                self.other,
                self.first_unacknowledged.as_deref().unwrap_or("-")
            )
        })
    }

    /// Notes an answer that acknowledged nothing, keeping the first in words.
    fn unacknowledged(&mut self, response: &Response) {
        if self.first_unacknowledged.is_none() {
            self.first_unacknowledged = Some(describe(response));
        }
    }
}

impl Trader {
    fn next_order(&mut self) -> anyhow::Result<Request> {
        let n = self.sent;
        self.sent += 1;
        let symbol_index = usize::try_from((n / 2 + self.index) % 3).unwrap_or(0);
        let symbol = Symbol::new(SYMBOLS.get(symbol_index).copied().unwrap_or("AAPL"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let qty = Qty::from_units(1).context("one unit")?;
        let client_order_id = (self.index << 32) | (n & 0xFFFF_FFFF);
        Ok(if n.is_multiple_of(2) {
            Request::Purchase { session: self.session, symbol, qty, client_order_id }
        } else {
            Request::Sell { session: self.session, symbol, qty, client_order_id }
        })
    }

    /// Keeps `window` orders in flight until `until`, then waits for the last answers. An
    /// order answered `busy` is sent again after `busy_backoff`, as the answer asks ("retry in
    /// the next interval"), so an overloaded server sees the offered load, not a spin loop.
    pub async fn trade(
        &mut self,
        window: u32,
        until: Instant,
        busy_backoff: Duration,
    ) -> anyhow::Result<PhaseStats> {
        let mut stats = PhaseStats::default();
        let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(32);
        // Slots waiting to send again after a busy answer: when each may.
        let mut parked: VecDeque<Instant> = VecDeque::new();
        for _ in 0..window {
            let order = self.next_order()?;
            in_flight.push_back(Instant::now());
            self.stream.writer().feed_request(&order).await?;
        }
        self.stream.writer().flush().await?;
        while !in_flight.is_empty() || !parked.is_empty() {
            let due = parked.front().copied();
            let read = async {
                if in_flight.is_empty() {
                    std::future::pending::<()>().await;
                }
                tokio::time::timeout(ANSWER_TIMEOUT, self.stream.reader().read_response()).await
            };
            let wake = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due.into()).await,
                    None => std::future::pending().await,
                }
            };
            let response = tokio::select! {
                read = read => match read {
                    Ok(Ok(Some(response))) => response,
                    Ok(Ok(None)) => bail!("the worker closed the connection"),
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => bail!("no answer within {ANSWER_TIMEOUT:?}"),
                },
                () = wake => {
                    parked.pop_front();
                    if Instant::now() < until {
                        let order = self.next_order()?;
                        in_flight.push_back(Instant::now());
                        self.stream.writer().write_request(&order).await?;
                    }
                    continue;
                }
            };
            let Some(sent_at) = in_flight.pop_front() else {
                bail!("an answer nobody asked for: {}", response.instruction());
            };
            let now = Instant::now();
            let latency = now.saturating_duration_since(sent_at);
            let mut again = now < until;
            match &response {
                Response::PurchaseSuccess(_) | Response::SellSuccess(_) => {
                    stats.acked.record(latency);
                    stats.acked_in_time += u64::from(now <= until);
                }
                Response::PurchaseFail(f) | Response::SellFail(f) if f.reason == Reason::Busy => {
                    stats.unacknowledged(&response);
                    stats.busy += 1;
                    stats.busy_latency.record(latency);
                    if again {
                        parked.push_back(now + busy_backoff);
                    }
                    again = false;
                }
                Response::PurchaseFail(f) | Response::SellFail(f)
                    if settlement_rejection(f.reason) =>
                {
                    // An engine rejection at settlement: journaled before the answer, like a
                    // fill.
                    stats.acked.record(latency);
                    stats.acked_in_time += u64::from(now <= until);
                }
                _ => {
                    stats.unacknowledged(&response);
                    stats.other += 1;
                }
            }
            if again {
                let order = self.next_order()?;
                in_flight.push_back(Instant::now());
                self.stream.writer().feed_request(&order).await?;
            }
            // Like any pipelining client: the new orders go out together once the answers
            // that have arrived are read.
            if !self.stream.reader().has_buffered_frame() {
                self.stream.writer().flush().await?;
            }
        }
        Ok(stats)
    }
}

/// Runs every trader for `duration` with `window` orders in flight each; returns the traders
/// (for the next phase) and the merged statistics.
pub async fn phase(
    traders: Vec<Trader>,
    window: u32,
    duration: Duration,
    busy_backoff: Duration,
) -> anyhow::Result<(Vec<Trader>, PhaseStats)> {
    let until = Instant::now() + duration;
    let tasks: Vec<_> = traders
        .into_iter()
        .map(|mut t| {
            tokio::spawn(async move {
                let stats = t.trade(window, until, busy_backoff).await;
                (t, stats)
            })
        })
        .collect();
    let mut back = Vec::with_capacity(tasks.len());
    let mut total = PhaseStats::default();
    for task in tasks {
        let (trader, stats) = task.await.context("a trader task failed")?;
        total.merge(&stats?);
        back.push(trader);
    }
    Ok((back, total))
}

/// The byte length of one order frame on the wire.
pub async fn order_frame_bytes() -> anyhow::Result<usize> {
    let symbol = Symbol::new("AAPL").map_err(|e| anyhow::anyhow!("{e}"))?;
    let qty = Qty::from_units(1).context("one unit")?;
    let request =
        Request::Purchase { session: SessionId([7; 32]), symbol, qty, client_order_id: 1 };
    let mut writer = net::FrameWriter::new(Vec::new());
    writer.write_request(&request).await?;
    Ok(writer.into_inner().len())
}

/// The echo baseline: a tokio server echoing `frame_bytes`-byte frames, and `connections`
/// clients each keeping `window` frames in flight for `duration`. Returns (frames answered in
/// time, latency). Both sides do what a good server and client do, as ours do: the server
/// writes back whatever one read brought in with one write, the client sends the replacements
/// of all the frames one read brought back with one write.
pub async fn echo(
    frame_bytes: usize,
    connections: u32,
    window: u32,
    duration: Duration,
) -> anyhow::Result<(u64, Histogram)> {
    let frame_bytes = frame_bytes.max(1);
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; net::READ_CHUNK_BYTES];
                while let Ok(n @ 1..) = socket.read(&mut buf).await {
                    if socket.write_all(buf.get(..n).unwrap_or_default()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut sockets = Vec::new();
    for _ in 0..connections {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        sockets.push(socket);
    }
    let until = Instant::now() + duration;
    let window = usize::try_from(window).unwrap_or(1).max(1);
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let frames = vec![0x5au8; frame_bytes * window];
                let mut buf = vec![0u8; net::READ_CHUNK_BYTES.max(frame_bytes * window)];
                let mut partial = 0usize;
                let mut histogram = Histogram::new();
                let mut in_time = 0u64;
                let mut in_flight = VecDeque::with_capacity(window);
                for _ in 0..window {
                    in_flight.push_back(Instant::now());
                }
                socket.write_all(&frames).await?;
                while !in_flight.is_empty() {
                    let n = socket.read(&mut buf).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    partial += n;
                    let mut again = 0;
                    for _ in 0..partial / frame_bytes {
                        let Some(sent_at) = in_flight.pop_front() else { break };
                        let now = Instant::now();
                        histogram.record(now.saturating_duration_since(sent_at));
                        in_time += u64::from(now <= until);
                        if now < until {
                            in_flight.push_back(now);
                            again += 1;
                        }
                    }
                    partial %= frame_bytes;
                    if again > 0 {
                        socket
                            .write_all(frames.get(..again * frame_bytes).unwrap_or_default())
                            .await?;
                    }
                }
                Ok::<_, std::io::Error>((in_time, histogram))
            })
        })
        .collect();
    let mut total = 0;
    let mut histogram = Histogram::new();
    for task in tasks {
        let (n, h) = task.await.context("an echo task failed")??;
        total += n;
        histogram.merge(&h);
    }
    server.abort();
    Ok((total, histogram))
}

/// Whether an order refused for `reason` was refused by the engine at settlement, and so
/// journaled before the answer. Refusals the master makes on arrival (a quantity or symbol it
/// cannot take) are not journaled: they acknowledge nothing. One reason is both: `no_price` on
/// arrival for a listed asset the master no longer prices; the bench trades assets priced
/// throughout, so a `no_price` it sees comes from settlement.
fn settlement_rejection(reason: Reason) -> bool {
    use engine::RejectReason as R;
    matches!(
        reason,
        Reason::Rejected(r) if !matches!(r, R::ZeroQuantity | R::QuantityTooLarge | R::UnknownSymbol)
    )
}

/// The target text and verdict of a steady phase's figure: `met` only if every answer of the
/// phase acknowledged its order (none `busy`, failed or refused on arrival); otherwise the
/// figure does not describe full service, and says so.
pub fn served(target: String, met: bool, stats: &PhaseStats) -> (String, bool) {
    let missed = stats.busy.saturating_add(stats.other);
    if missed == 0 {
        (target, met)
    } else {
        (format!("{target}, with every order acknowledged ({missed} were not)"), false)
    }
}

/// A multi-threaded runtime for the load generator.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A short tag that keeps usernames of different runs apart.
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}", nanos % 0xFFFF)
}

/// Scales the phase durations and sizes for `--quick`.
pub fn sizes(args: &BenchArgs) -> (u32, Duration) {
    if args.quick {
        (args.connections.min(8), args.duration.min(Duration::from_millis(500)))
    } else {
        (args.connections, args.duration)
    }
}

/// Measures the e2e figures.
pub fn run(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let (connections, duration) = sizes(args);
    let runtime = runtime()?;
    runtime.block_on(async {
        // Admission sized to the steady load: the overload step offers a third more.
        let admitted = connections.saturating_mul(args.window);
        let processes =
            Processes::start(&base_dir(args), args.interval, LIGHT_ARGON2, admitted).await?;
        let traders = traders(processes.worker_addr, &run_tag(), connections).await?;
        let (traders, mut steady) = phase(traders, args.window, duration, args.interval).await?;
        let frame = order_frame_bytes().await?;
        let (echoed, mut echo_latency) = echo(frame, connections, args.window, duration).await?;
        let overload_window = overload_window(args.window);
        let (traders, mut overload) =
            phase(traders, overload_window, duration / 2, args.interval).await?;
        drop(traders);
        let (slow, intervals) = processes.slow_intervals(args.interval);
        drop(processes);

        let rate = per_second(steady.acked_in_time, duration);
        let echo_rate = per_second(echoed, duration);
        let interval_ms = args.interval.as_secs_f64() * 1000.0;
        let p99_target = interval_ms + TARGET_P99_SLACK.as_secs_f64() * 1000.0;
        let echo_is = format!("tokio echo, {frame}-byte frames");
        let (target, met) =
            served(">= 50,000 orders/s".to_owned(), rate >= TARGET_ORDERS_PER_S, &steady);
        let orders = Figure::new("e2e.orders", rate, "orders/s", echo_rate, &echo_is)
            .with_target(target, met);
        let p50 = Figure::new(
            "e2e.p50_ms",
            steady.acked.percentile_ms(500),
            "ms",
            echo_latency.percentile_ms(500),
            &echo_is,
        );
        let p99_value = steady.acked.percentile_ms(990);
        let (target, met) = served(
            format!("<= {p99_target:.0} ms (interval + 20 ms)"),
            p99_value <= p99_target,
            &steady,
        );
        let p99 =
            Figure::new("e2e.p99_ms", p99_value, "ms", echo_latency.percentile_ms(990), &echo_is)
                .with_target(target, met);
        let max = Figure::new(
            "e2e.max_ms",
            steady.acked.percentile_ms(1000),
            "ms",
            echo_latency.percentile_ms(1000),
            &echo_is,
        );
        let overload_rate = per_second(overload.acked_in_time, duration / 2);
        let busy_rate = per_second(overload.busy, duration / 2);
        let busy = Figure::new(
            "e2e.overload.busy_per_s",
            busy_rate,
            "answers/s",
            overload_rate,
            format!("orders acknowledged/s meanwhile, window {overload_window}"),
        );
        let busy_p99_value = overload.busy_latency.percentile_ms(990);
        let busy_p99 = Figure::new(
            "e2e.overload.busy_p99_ms",
            busy_p99_value,
            "ms",
            interval_ms,
            "one update interval",
        )
        .with_target(
            format!("busy answers come back, p99 <= {p99_target:.0} ms (interval + 20 ms)"),
            overload.busy > 0 && busy_p99_value <= p99_target,
        );
        let overload_p99_value = overload.acked.percentile_ms(990);
        let overload_p99 = Figure::new(
            "e2e.overload.p99_ms",
            overload_p99_value,
            "ms",
            steady.acked.percentile_ms(990),
            "e2e.p99_ms",
        )
        .with_target(format!("<= {p99_target:.0} ms (bounded)"), overload_p99_value <= p99_target);
        if let Some(report) = steady.unacknowledged_report() {
            eprintln!("pt bench e2e: answers of the steady phase that acknowledged nothing: {report}");
        }
        if overload.other > 0 {
            eprintln!(
                "pt bench e2e: answers of the overload step that failed or were refused on arrival: {}",
                overload.other
            );
        }
        let slow = slow.figure("e2e.slow_intervals", intervals);
        Ok(vec![orders, p50, p99, max, busy, busy_p99, overload_p99, slow])
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use master::slow::{IntervalWork, SlowReport};

    use super::SlowIntervals;

    /// Only the engine's rejections at settlement count as acknowledged (journaled); and one
    /// answer of a phase that acknowledged nothing makes its targets read missed.
    #[test]
    fn only_journaled_answers_acknowledge_and_any_other_misses_the_target() {
        use super::{PhaseStats, served, settlement_rejection};
        use engine::RejectReason as R;
        use net::Reason;
        assert!(settlement_rejection(Reason::Rejected(R::InsufficientCash)));
        assert!(settlement_rejection(Reason::Rejected(R::NoPrice)));
        for refused_on_arrival in [R::ZeroQuantity, R::QuantityTooLarge, R::UnknownSymbol] {
            assert!(!settlement_rejection(Reason::Rejected(refused_on_arrival)));
        }
        assert!(!settlement_rejection(Reason::Busy));
        assert!(!settlement_rejection(Reason::MasterUnavailable));
        let mut stats = PhaseStats::default();
        assert_eq!(served("t".to_owned(), true, &stats), ("t".to_owned(), true));
        assert_eq!(served("t".to_owned(), false, &stats), ("t".to_owned(), false));
        stats.busy = 1;
        stats.other = 2;
        let (text, met) = served("t".to_owned(), true, &stats);
        assert!(!met);
        assert!(text.contains("3 were not"), "{text}");
    }

    /// A writer into a shared buffer, for a `tracing` subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn slow_intervals_are_read_back_from_the_masters_own_log_lines() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let work = |settle_ms, commit_ms| IntervalWork {
            settle: Duration::from_millis(settle_ms),
            commit: Duration::from_millis(commit_ms),
        };
        tracing::subscriber::with_default(subscriber, || {
            master::slow::log(&SlowReport { intervals: 1, slowest: work(1, 48) });
            tracing::warn!("another warning: intervals=99");
            master::slow::log(&SlowReport { intervals: 3, slowest: work(2, 30) });
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            SlowIntervals::from_log(&log),
            SlowIntervals { intervals: 4, slowest_micros: 49_000 }
        );
        assert_eq!(SlowIntervals::from_log("no warnings at all\n"), SlowIntervals::default());
    }
}
