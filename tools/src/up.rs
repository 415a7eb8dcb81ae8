//! `pt up`: a whole PaperTrader on loopback in one process: the master and N workers as tokio
//! tasks, through their libraries, with the embedded defaults.
//!
//! The data directory (default `./pt-data`) is the master's: the journal
//! (`papertrader.redb`, so `pt-replay --data DIR` reads it), the master's key (`master.key`,
//! `master.pub.asc`) and the log (`pt-up.log`). Worker identities are made on the first run in
//! `DIR/workers/wN/` and kept; each run registers them with the master (in memory, allowed from
//! `127.0.0.1` and `::1`) and gives each worker the master's certificate. [`Prepared::new`]
//! checks the configuration and the price file and listens on the ports before anything is
//! written; [`Cluster::start`] is the core (tests call it with port 0); [`run`] adds logging,
//! the banner and Ctrl-C.
//!
//! Shutdown stops the workers first (they answer the requests they already read), then the
//! master, which settles and commits the current interval.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use master::config::{IpNet, MasterConfig, PriceSourceConfig, RecordedSourceConfig};
use master::worker_auth::MasterIdentity;
use net::{DataPayload, Request, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;
use worker::identity::{MasterTrust, WorkerIdentity};

use crate::client::{Client, ConnectConfig};

/// Most workers `pt up` starts.
pub const WORKERS_MAX: usize = 16;
/// Longest wait for every worker to link to the master at start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two checks of the worker list while starting.
const READY_POLL: Duration = Duration::from_millis(50);
/// Name of the log file in the data directory.
pub const LOG_FILE_NAME: &str = "pt-up.log";
/// Registrations per hour from 127.0.0.1 in `pt up` (all its clients).
const LOCAL_REGISTRATIONS_PER_WINDOW: u32 = 1_000_000;
/// Failed logins per client address and window in a local cluster: as good as unlimited (the
/// limit per username still holds).
const LOCAL_FAILED_LOGINS_PER_WINDOW: u32 = 1_000_000;

/// `--interval`: checked with the other arguments against the master's range.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let range = Duration::from_millis(1)..=master::config::UPDATE_INTERVAL_MAX;
    crate::client::commands::parse_duration_in(text, range, "the interval must be 1ms to 1 day")
}

/// Shortest relay timeout given to the workers: a relayed order waits for its interval.
const RELAY_TIMEOUT_MIN: Duration = Duration::from_secs(30);

/// Arguments of `pt up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Data directory: journal, keys, worker identities, log.
    #[arg(long, value_name = "DIR", default_value = "./pt-data")]
    pub data: PathBuf,
    /// How many workers to start (1 to 16).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub workers: u16,
    /// Time between two price updates (settlements), e.g. `1s`, `500ms`: 1ms to 1 day, as the
    /// master takes.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Duration,
    /// A recorded price file (`time,symbol,open,high,low,close,volume`); default: the shipped
    /// one (daily prices 2000 to 2013 of AAPL, FB, GOOG, IBM, MSFT), replayed one day per
    /// interval.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// The master's port on 127.0.0.1 (workers and `pt workers` connect to it).
    #[arg(long, default_value_t = 2048)]
    pub master_port: u16,
    /// The first worker's port on 127.0.0.1; worker N listens on this port + N - 1.
    #[arg(long, default_value_t = 2049)]
    pub worker_port: u16,
}

/// How long a stop waits for the workers before it tells the master to stop too (the master
/// then settles the interval at once, answering the orders the workers wait for).
pub const WORKERS_STOP_GRACE: Duration = Duration::from_secs(2);

/// What a cluster is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The master's data directory.
    pub data_dir: PathBuf,
    /// Workers to start, 1 to [`WORKERS_MAX`].
    pub workers: usize,
    /// The master's update interval.
    pub interval: Duration,
    /// A recorded price file, or `None` for the shipped one.
    pub prices: Option<PathBuf>,
    /// The master's port on 127.0.0.1; 0 for any free port.
    pub master_port: u16,
    /// The first worker's port on 127.0.0.1 (the next ones follow); 0 for any free ports.
    pub worker_port: u16,
}

impl ClusterConfig {
    /// The configuration of `pt up`'s flags.
    pub fn from_args(args: &UpArgs) -> Self {
        Self {
            data_dir: args.data.clone(),
            workers: usize::from(args.workers),
            interval: args.interval,
            prices: args.prices.clone(),
            master_port: args.master_port,
            worker_port: args.worker_port,
        }
    }
}

/// One started worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalWorker {
    /// Its name (`w1`, `w2`...).
    pub name: String,
    /// Its UUID.
    pub uuid: Uuid,
    /// Where clients reach it.
    pub addr: SocketAddr,
}

type Task<E> = JoinHandle<Result<(), E>>;

/// A running master and its workers; stop it with [`Cluster::shutdown`].
#[derive(Debug)]
pub struct Cluster {
    data_dir: PathBuf,
    master_addr: SocketAddr,
    workers: Vec<LocalWorker>,
    worker_stop: watch::Sender<bool>,
    master_stop: watch::Sender<bool>,
    /// `None` once awaited (a finished task must not be awaited twice).
    worker_tasks: Vec<Option<Task<worker::server::ServerError>>>,
    /// Each worker's counters, which also say whether its link to the master is up.
    worker_stats: Vec<worker::Stats>,
    master_task: Option<Task<master::server::ServerError>>,
}

/// Completes when `stop` becomes true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Loads the worker identity saved in `dir`, or makes one named `name` and saves it there.
fn worker_identity(dir: &Path, name: &str) -> anyhow::Result<WorkerIdentity> {
    if dir.join(worker::identity::KEY_FILE_NAME).exists() {
        return WorkerIdentity::load(dir)
            .with_context(|| format!("cannot load the worker identity in {}", dir.display()));
    }
    let identity = WorkerIdentity::generate(Uuid::new_v4(), name)
        .context("cannot generate a worker identity")?;
    identity.save(dir).with_context(|| {
        format!(
            "cannot save the worker identity in {} (remove the directory to start afresh)",
            dir.display()
        )
    })?;
    Ok(identity)
}

async fn bind(port: u16, what: &str) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what} (is another PaperTrader running? pick another port)")
    })
}

/// A `pt up` configuration refused before anything is created or started (`pt up` exits 2,
/// as `pt-master` does for a bad configuration): a bad price file, overlapping ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A cluster checked and bound but not started: the price file read and checked, every port
/// listened on. Nothing is written until [`Prepared::start`], so a configuration that cannot
/// run (a bad price file, a port in use) leaves no data directory, key or identity behind.
#[derive(Debug)]
pub struct Prepared {
    config: ClusterConfig,
    prices: master::prices::AnyPriceSource,
    master_listener: TcpListener,
    worker_listeners: Vec<TcpListener>,
}

impl Prepared {
    /// Checks `config` (workers, ports, the price file, row by row) and listens on its ports.
    pub async fn new(config: ClusterConfig) -> anyhow::Result<Self> {
        if !(1..=WORKERS_MAX).contains(&config.workers) {
            return Err(ConfigError(format!("--workers must be 1 to {WORKERS_MAX}")).into());
        }
        if config.master_port != 0 && config.worker_port != 0 {
            let workers = u16::try_from(config.workers.saturating_sub(1)).unwrap_or(u16::MAX);
            let last = config.worker_port.saturating_add(workers);
            if (config.worker_port..=last).contains(&config.master_port) {
                return Err(ConfigError(format!(
                    "the master's port {} is one of the workers' ({} to {last}): pick ports that \
                     do not overlap",
                    config.master_port, config.worker_port
                ))
                .into());
            }
        }
        let mut worker_ports = Vec::with_capacity(config.workers);
        for n in 0..config.workers {
            worker_ports.push(if config.worker_port == 0 {
                0
            } else {
                u16::try_from(n).ok().and_then(|n| config.worker_port.checked_add(n)).ok_or_else(
                    || {
                        ConfigError(
                            "worker ports run past 65535; pick a lower --worker-port".to_owned(),
                        )
                    },
                )?
            });
        }
        // Another `pt up` or `pt-master` on this data directory: said before anything is
        // bound, logged or written (its log is this directory's log too).
        let journal = journal::path_in(&config.data_dir);
        if journal::Journal::in_use(&journal) {
            bail!(
                "{} is in use by another process (a pt up or pt-master running on it, or a \
                 pt-replay or pt-master worker command reading its journal {}): stop it, or \
                 pass another --data",
                config.data_dir.display(),
                journal.display()
            );
        }
        if let Some(prices) = &config.prices
            && !prices.is_file()
        {
            return Err(ConfigError(format!("no price file at {}", prices.display())).into());
        }
        let prices = master::prices::open_source(&Self::price_config(&config), config.interval)
            .map_err(|e| ConfigError(format!("bad price file: {}", master::report::chain(&e))))?;

        let master_listener = bind(config.master_port, "master").await?;
        let mut worker_listeners = Vec::with_capacity(config.workers);
        for port in worker_ports {
            worker_listeners.push(bind(port, "worker").await?);
        }
        Ok(Self { config, prices, master_listener, worker_listeners })
    }

    /// The master's price source of `config`: the recorded file, or the shipped one.
    fn price_config(config: &ClusterConfig) -> PriceSourceConfig {
        PriceSourceConfig::Recorded(RecordedSourceConfig {
            file: config.prices.clone(),
            splits: None,
        })
    }

    /// Sets up the data directory (the master's key and the workers' identities, made on the
    /// first run), starts the master and the workers on the bound ports, and returns once every
    /// worker is linked to the master, so clients can be served.
    pub async fn start(self) -> anyhow::Result<Cluster> {
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        match self.start_unless(never).await? {
            Some(cluster) => Ok(cluster),
            None => bail!("start-up interrupted"),
        }
    }

    /// [`Prepared::start`], given up when `interrupted` completes first (Ctrl-C while the
    /// workers link): what started is stopped cleanly (the master closes its journal), and the
    /// answer is `None`.
    pub async fn start_unless(
        self,
        interrupted: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> anyhow::Result<Option<Cluster>> {
        let Self { config, prices, master_listener, worker_listeners } = self;
        let dir = &config.data_dir;
        master::config::create_data_dir(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot resolve the data directory {}", dir.display()))?;

        // The master's key (made on the first run), which the workers trust.
        let master_identity =
            MasterIdentity::load_or_generate(&dir).context("cannot set up the master's key")?;
        let master_cert = MasterIdentity::public_cert_path(&dir);
        let trust = MasterTrust::load(&master_cert)
            .with_context(|| format!("cannot read {}", master_cert.display()))?;
        drop(master_identity);

        // The workers' identities (made on the first run), registered with the master.
        let mut identities = Vec::with_capacity(config.workers);
        let mut registrations = Vec::with_capacity(config.workers);
        let loopback = vec![
            IpNet::new(Ipv4Addr::LOCALHOST.into(), 32).context("loopback range")?,
            IpNet::new(Ipv6Addr::LOCALHOST.into(), 128).context("loopback range")?,
        ];
        for n in 1..=config.workers {
            let name = format!("w{n}");
            let key_dir = dir.join("workers").join(&name);
            let identity = worker_identity(&key_dir, &name)?;
            registrations.push(master::config::WorkerConfig {
                id: identity.uuid(),
                name: Some(name.clone()),
                cert: key_dir.join(worker::identity::PUBLIC_CERT_FILE_NAME),
                allowed_ips: loopback.clone(),
            });
            identities.push((name, key_dir, identity));
        }
        let master_addr = master_listener.local_addr().context("the master's address")?;

        let mut master_config = MasterConfig {
            listen: master_addr,
            data_dir: dir.clone(),
            update_interval: config.interval,
            prices: Self::price_config(&config),
            workers: registrations,
            ..MasterConfig::default()
        };
        // A local sandbox: every client is on 127.0.0.1, so a limit per address would count
        // them all as one.
        master_config.auth.registrations.per_ip_max = LOCAL_REGISTRATIONS_PER_WINDOW;
        // Failed logins too: one user's typos must not lock every local user out. Each
        // username keeps its own limit.
        master_config.auth.failed_logins.per_ip_max = LOCAL_FAILED_LOGINS_PER_WINDOW;
        master_config.validate().context("master configuration")?;

        let (master_stop, master_stop_rx) = watch::channel(false);
        let (worker_stop, worker_stop_rx) = watch::channel(false);
        let master_task = tokio::spawn(master::server::run_with_prices(
            master_config,
            Some(prices),
            master_listener,
            stopped(master_stop_rx),
        ));
        let mut cluster = Cluster {
            data_dir: dir.clone(),
            master_addr,
            workers: Vec::with_capacity(config.workers),
            worker_stop,
            master_stop,
            worker_tasks: Vec::with_capacity(config.workers),
            worker_stats: Vec::with_capacity(config.workers),
            master_task: Some(master_task),
        };

        for ((name, key_dir, identity), listener) in identities.into_iter().zip(worker_listeners) {
            let addr = listener.local_addr().context("a worker's address")?;
            let mut worker_config = worker::WorkerConfig {
                listen: addr,
                master: master_addr.to_string(),
                key_dir: key_dir.clone(),
                master_cert: Some(master_cert.clone()),
                ..worker::WorkerConfig::default()
            };
            worker_config.log.file = dir.join(LOG_FILE_NAME);
            // A local sandbox: every client is on 127.0.0.1.
            worker_config.clients.connections_per_address_max =
                worker_config.clients.connections_max;
            // Current prices change once per interval; an order waits for its interval.
            worker_config.cache.ttl = config.interval;
            worker_config.link.relay_timeout = config
                .interval
                .saturating_mul(2)
                .saturating_add(Duration::from_secs(10))
                .max(RELAY_TIMEOUT_MIN);
            worker_config.validate().context("worker configuration")?;
            let stats = worker::Stats::new();
            cluster.workers.push(LocalWorker { name, uuid: identity.uuid(), addr });
            cluster.worker_stats.push(stats.clone());
            cluster.worker_tasks.push(Some(tokio::spawn(worker::run_with_stats(
                worker_config,
                listener,
                identity,
                trust.clone(),
                stopped(worker_stop_rx.clone()),
                stats,
            ))));
        }

        let ready = tokio::select! {
            ready = cluster.wait_ready() => ready,
            () = interrupted => {
                cluster.stop().await?;
                return Ok(None);
            }
        };
        if let Err(e) = ready {
            let _ = cluster.stop().await;
            return Err(e);
        }
        Ok(Some(cluster))
    }
}

impl Cluster {
    /// [`Prepared::new`] then [`Prepared::start`]: checks `config`, listens on its ports, then
    /// starts the master and the workers and returns once every worker is linked to the master.
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Self> {
        Prepared::new(config).await?.start().await
    }

    /// Waits until the master lists every worker and every worker has its link up (both sides
    /// of each link ready: a client's first request is relayed), or a server stops.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let wanted: Vec<u128> = self.workers.iter().map(|w| w.uuid.as_u128()).collect();
        loop {
            self.check_running().await?;
            if let Ok(linked) = self.linked_workers().await
                && wanted.iter().all(|id| linked.contains(id))
                && self.worker_stats.iter().all(|stats| stats.snapshot().master_linked)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the workers did not link to the master within {} (see {})",
                    humantime::format_duration(READY_TIMEOUT),
                    self.log_path().display()
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// The ids of the workers the master lists.
    async fn linked_workers(&self) -> anyhow::Result<Vec<u128>> {
        let config = ConnectConfig {
            addr: self.master_addr.to_string(),
            role: "master",
            timeout: Duration::from_secs(5),
        };
        let mut client = Client::connect(config).await?;
        match client.exchange_once(&Request::GetWorkers).await? {
            Response::Data(DataPayload::WorkerList(list)) => {
                Ok(list.iter().map(|w| w.id.0).collect())
            }
            other => bail!("unexpected answer to getWorkers: {}", other.instruction()),
        }
    }

    /// An error if a server has stopped (with its error, if it failed).
    async fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(task) = self.master_task.as_mut()
            && task.is_finished()
        {
            let result = task.await;
            self.master_task = None;
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("the master stopped")),
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("the master failed")),
                Err(e) => Err(anyhow::anyhow!("the master task failed: {e}")),
            };
        }
        for (n, slot) in self.worker_tasks.iter_mut().enumerate() {
            if let Some(task) = slot.take_if(|t| t.is_finished()) {
                let result = task.await;
                let name = self.workers.get(n).map_or("?", |w| w.name.as_str()).to_owned();
                return match result {
                    Ok(Ok(())) => Err(anyhow::anyhow!("worker {name} stopped")),
                    Ok(Err(e)) => {
                        Err(anyhow::Error::new(e).context(format!("worker {name} failed")))
                    }
                    Err(e) => Err(anyhow::anyhow!("worker {name}'s task failed: {e}")),
                };
            }
        }
        Ok(())
    }

    /// Completes when a server stops on its own (a failure), with its error.
    pub async fn failed(&mut self) -> anyhow::Error {
        loop {
            if let Err(e) = self.check_running().await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The master's address (for workers and `pt workers`).
    pub fn master_addr(&self) -> SocketAddr {
        self.master_addr
    }

    /// The workers, in order.
    pub fn workers(&self) -> &[LocalWorker] {
        &self.workers
    }

    /// Each worker's counters now (relays sent, connections...), in worker order.
    pub fn worker_stats(&self) -> Vec<worker::StatsSnapshot> {
        self.worker_stats.iter().map(worker::Stats::snapshot).collect()
    }

    /// The (absolute) data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE_NAME)
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        self.worker_stop.send_replace(true);
        // The workers answer what they already read; an order among it waits for its
        // interval. Past a short grace the master is told to stop too: it settles the current
        // interval at once, so a long interval (`--interval 1h`) does not hold the stop.
        let tasks: Vec<_> = self
            .worker_tasks
            .iter_mut()
            .enumerate()
            .filter_map(|(n, slot)| {
                let name = self.workers.get(n).map_or("?", |w| w.name.as_str()).to_owned();
                slot.take().map(|task| (name, task))
            })
            .collect();
        let workers = async {
            let mut outcomes = Vec::new();
            for (name, task) in tasks {
                outcomes.push((name, task.await));
            }
            outcomes
        };
        tokio::pin!(workers);
        let outcomes = tokio::select! {
            outcomes = &mut workers => outcomes,
            () = tokio::time::sleep(WORKERS_STOP_GRACE) => {
                self.master_stop.send_replace(true);
                workers.await
            }
        };
        for (name, outcome) in outcomes {
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("worker {name}: {e}")),
                Err(e) => errors.push(format!("worker {name}'s task: {e}")),
            }
        }
        self.master_stop.send_replace(true);
        if let Some(task) = self.master_task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(format!("master: {e}")),
                Err(e) => errors.push(format!("master task: {e}")),
            }
        }
        if errors.is_empty() { Ok(()) } else { bail!("{}", errors.join("; ")) }
    }

    /// Stops the workers (each answers what it already read), then the master (it settles and
    /// commits the current interval), and waits for all of them. The master is told to stop
    /// after [`WORKERS_STOP_GRACE`] even if a worker still waits for an order's interval.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop().await
    }
}

/// The `--timeout` a trade needs with update interval `interval`, when the client's default is
/// too short: a trade waits up to one interval for its settlement, plus its way there and back.
pub fn trade_timeout(interval: Duration) -> Option<Duration> {
    let needed = interval.saturating_add(Duration::from_secs(30));
    (needed > crate::client::commands::TIMEOUT_DEFAULT)
        .then(|| interval.saturating_mul(2).max(needed))
}

/// `duration` as one shell word, in whole seconds rounded up (`570s`): humantime's `9m 30s`
/// would be two.
fn seconds_word(duration: Duration) -> String {
    let seconds = duration.as_secs().saturating_add(u64::from(duration.subsec_nanos() > 0));
    format!("{seconds}s")
}

/// The text `pt up` prints once the cluster is ready.
pub fn banner(cluster: &Cluster, config: &ClusterConfig) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let prices = config.prices.as_ref().map_or_else(
        || "the shipped 2000-2013 daily prices".to_owned(),
        |p| p.display().to_string(),
    );
    let _ = writeln!(
        out,
        "PaperTrader is up: one day of {prices} per {}.",
        humantime::format_duration(config.interval)
    );
    if config.prices.is_none() {
        let _ = writeln!(
            out,
            "  (AAPL, IBM and MSFT trade from the start; GOOG from its 2004 listing and FB from \
             2012, when the replay reaches them)"
        );
    }
    let _ = writeln!(out, "  master  {}", cluster.master_addr());
    for w in cluster.workers() {
        let _ = writeln!(out, "  worker  {}  {}", w.addr, w.name);
    }
    let _ = writeln!(out, "  data    {}", cluster.data_dir().display());
    let _ = writeln!(out, "  log     {}", cluster.log_path().display());
    let _ = writeln!(out);
    let _ = writeln!(out, "Try, in another terminal:");
    let default_worker: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, 2049));
    let default_master: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, 2048));
    let first = cluster.workers().first().map(|w| w.addr);
    if first.is_some_and(|a| a != default_worker) || cluster.master_addr() != default_master {
        let worker = first.map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(out, "  export PT_WORKER={worker} PT_MASTER={}", cluster.master_addr());
    }
    // A trade waits for its interval: one longer than the client's default wait needs more.
    let wait = trade_timeout(config.interval)
        .map(|wait| format!(" --timeout {}", seconds_word(wait)))
        .unwrap_or_default();
    for line in [
        "pt workers".to_owned(),
        "pt register alice alice@example.com".to_owned(),
        "pt login alice".to_owned(),
        format!("pt buy AAPL 10{wait}"),
        "pt portfolio".to_owned(),
        "pt history".to_owned(),
        "pt price AAPL --all".to_owned(),
        format!("pt sell AAPL 5{wait}"),
    ] {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Press Ctrl-C to stop.");
    out
}

/// Sets up logging: every entry at `RUST_LOG` (default `info`) into the logbook and
/// `DIR/pt-up.log`; warnings and errors also on stderr.
fn init_logging(dir: &Path) -> anyhow::Result<master::logbook::Logbook> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let logbook = master::logbook::Logbook::new(&master::logbook::LogbookConfig {
        file: Some(dir.join(LOG_FILE_NAME)),
        ..master::logbook::LogbookConfig::default()
    })
    .with_context(|| format!("cannot open {}", dir.join(LOG_FILE_NAME).display()))?;
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing::level_filters::LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::registry()
        .with(logbook.layer().with_filter(filter))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(tracing::level_filters::LevelFilter::WARN),
        )
        .try_init()
        .context("cannot set up logging")?;
    Ok(logbook)
}

/// `pt up`: starts the cluster, prints the banner, runs until Ctrl-C (or SIGTERM), then shuts
/// down cleanly.
pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    let config = ClusterConfig::from_args(args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Installed first, as the daemons do: a Ctrl-C during start-up is kept and stops the
        // cluster cleanly once it is up.
        let shutdown =
            master::shutdown::shutdown_signal().context("cannot handle SIGINT and SIGTERM")?;
        // The ports and the price file are checked before the data directory is touched.
        let prepared = Prepared::new(config.clone()).await?;
        master::config::create_data_dir(&config.data_dir).with_context(|| {
            format!("cannot create the data directory {}", config.data_dir.display())
        })?;
        let logbook = init_logging(&config.data_dir)?;
        master::logbook::install_crash_dump(logbook, config.data_dir.clone());
        eprintln!("Starting the master and {} worker(s)...", config.workers);
        // Boxed, so that it can be dropped when the stop comes from a failure: a Ctrl-C then
        // ends `pt up` at once (`master::shutdown::shutdown_signal`).
        let mut shutdown = Box::pin(shutdown);
        // A Ctrl-C during start-up stops what started, at once, without announcing it as up.
        let Some(mut cluster) = prepared.start_unless(shutdown.as_mut()).await? else {
            eprintln!("Stopped before the workers linked.");
            return Ok(());
        };
        println!("{}", banner(&cluster, &config));
        let failure = tokio::select! {
            () = &mut shutdown => None,
            e = cluster.failed() => Some(e),
        };
        if failure.is_some() {
            drop(shutdown);
            eprintln!("A server stopped on its own (its error below): stopping the others...");
        } else {
            eprintln!(
                "Stopping: workers first, then the master (it settles the current interval)..."
            );
        }
        let stopped = cluster.shutdown().await;
        if let Some(e) = failure {
            return Err(e);
        }
        stopped?;
        eprintln!("Stopped.");
        Ok(())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The banner's trades get a `--timeout` only when the interval would outlast the client's
    /// default wait, and then one covering the interval with room to spare.
    #[test]
    fn trades_get_a_longer_timeout_only_with_a_long_interval() {
        assert_eq!(trade_timeout(Duration::from_secs(1)), None);
        assert_eq!(trade_timeout(Duration::from_secs(4 * 60)), None);
        let ten_minutes = Duration::from_secs(10 * 60);
        assert_eq!(trade_timeout(ten_minutes), Some(ten_minutes * 2));
        let day = Duration::from_secs(24 * 60 * 60);
        let wait = trade_timeout(day).unwrap();
        assert!(wait > day, "{wait:?}");
        // What the banner prints is one shell word that `--timeout` takes, at least the wait.
        let odd = trade_timeout(Duration::from_millis(4 * 60 * 1000 + 45_500)).unwrap();
        for wait in [odd, trade_timeout(day).unwrap()] {
            let word = seconds_word(wait);
            assert!(!word.contains(' '), "{word}");
            let parsed = crate::client::commands::parse_duration(&word).unwrap();
            assert!(parsed >= wait && parsed < wait + Duration::from_secs(1), "{word}");
        }
    }
}
