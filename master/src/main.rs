//! `pt-master`: the PaperTrader master server, the one writer. A thin binary: flags and config,
//! tracing, signals; everything else is in the library (`master::server::run`, and
//! `master::admin` for the `worker add|list|remove` commands).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use master::admin::{self, AdminTarget, NewWorker, Via};
use master::config::{IpNet, MasterConfig, PriceSourceConfig, RecordedSourceConfig};
use tracing::error;
use uuid::Uuid;

/// The PaperTrader master server: accounts, prices, the order queue and the journal.
///
/// Without a command, runs the server (as `pt-master run`).
#[derive(Debug, Parser)]
#[command(name = "pt-master", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Run(RunArgs),
    /// Manage the registered workers: through the running master when DATA/admin.sock answers,
    /// otherwise directly in the journal.
    #[command(subcommand)]
    Worker(WorkerCommand),
}

#[derive(Debug, Subcommand)]
enum WorkerCommand {
    /// Register a worker: its UUID, name, public certificate and allowed addresses.
    Add {
        #[command(flatten)]
        target: TargetArgs,
        /// The worker's UUID (`worker.uuid` from `pt-worker keygen`).
        #[arg(long)]
        id: Uuid,
        /// A name for logs and the server list (1 to 64 bytes).
        #[arg(long)]
        name: String,
        /// The worker's ASCII-armored public certificate (`worker.pub.asc`, never `worker.key`).
        #[arg(long)]
        cert: PathBuf,
        /// An address or CIDR range the worker may connect from; repeat for more.
        #[arg(long = "allow-ip", required = true)]
        allow_ip: Vec<IpNet>,
    },
    /// List the registered workers (configuration and registry).
    List {
        #[command(flatten)]
        target: TargetArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a registered worker; a running master closes its link at once.
    Remove {
        #[command(flatten)]
        target: TargetArgs,
        /// The worker's UUID.
        #[arg(long)]
        id: Uuid,
    },
}

/// Which master the worker commands act on.
#[derive(Debug, Args)]
struct TargetArgs {
    /// The master's TOML configuration file: its `data_dir`, and its `[[workers]]` for offline
    /// listings and checks.
    #[arg(long, env = "PT_MASTER_CONFIG")]
    config: Option<PathBuf>,
    /// The master's data directory; overrides `data_dir`.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// The server's flags.
#[derive(Debug, Args)]
struct RunArgs {
    /// TOML configuration file (see docs/CONFIG.md); every key has a default.
    #[arg(long, env = "PT_MASTER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (journal, keys, logs); overrides `data_dir`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address to listen on for workers and worker-list requests; overrides `listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Update interval, e.g. `1s`, `250ms`; overrides `update_interval`.
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// A recorded price file to replay instead of the configured price source.
    #[arg(long)]
    prices: Option<PathBuf>,
    /// A split list (`time,symbol,ratio`) the `--prices` file is adjusted for.
    #[arg(long, requires = "prices")]
    splits: Option<PathBuf>,
    /// Cash new accounts start with, a decimal such as `100000`; overrides `initial_cash`.
    #[arg(long)]
    initial_cash: Option<String>,
    /// Log entries kept in memory; overrides `log.memory_entries_max`.
    #[arg(long)]
    log_memory: Option<u32>,
    /// Assets to trade, comma-separated (e.g. `AAPL,IBM`); overrides `assets`.
    #[arg(long, value_delimiter = ',')]
    assets: Option<Vec<String>>,
    /// Idle time after which an expirable session ends, e.g. `30m`; overrides
    /// `sessions.idle_timeout`.
    #[arg(long, value_parser = humantime::parse_duration)]
    session_idle: Option<Duration>,
    /// Lifetime of a remembered session, e.g. `30d`; overrides `sessions.remembered_lifetime`.
    #[arg(long, value_parser = humantime::parse_duration)]
    session_lifetime: Option<Duration>,
    /// Orders one interval may queue before answering busy; overrides
    /// `limits.orders_per_interval_max`.
    #[arg(long)]
    queue_limit: Option<u32>,
}

fn load_config(cli: &RunArgs) -> anyhow::Result<MasterConfig> {
    // Flags override the file and the environment, then the result is validated once: a
    // `--prices` file replaces an HTTP source whose API key is not set, say.
    let mut config = MasterConfig::load_unchecked(cli.config.as_deref())?;
    if let Some(dir) = &cli.data {
        config.data_dir.clone_from(dir);
    }
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(interval) = cli.interval {
        config.update_interval = interval;
    }
    if let Some(file) = &cli.prices {
        config.prices = PriceSourceConfig::Recorded(RecordedSourceConfig {
            file: Some(file.clone()),
            splits: cli.splits.clone(),
        });
    }
    if let Some(cash) = &cli.initial_cash {
        config.initial_cash = engine::Cash::parse(cash).context("--initial-cash")?;
    }
    if let Some(entries) = cli.log_memory {
        config.log.memory_entries_max = entries;
    }
    if let Some(assets) = &cli.assets {
        config.assets = assets
            .iter()
            .map(|a| engine::Symbol::new(a.trim()).with_context(|| format!("--assets: {a:?}")))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(idle) = cli.session_idle {
        config.sessions.idle_timeout = idle;
    }
    if let Some(lifetime) = cli.session_lifetime {
        config.sessions.remembered_lifetime = lifetime;
    }
    if let Some(limit) = cli.queue_limit {
        config.limits.orders_per_interval_max = limit;
    }
    config.validate()?;
    config.check_files()?;
    Ok(config)
}

fn main() -> ExitCode {
    // An environment variable set but empty counts as unset (`PT_MASTER= pt workers`).
    let matches = master::config::empty_env_as_unset(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        None => run(&cli.run),
        Some(Command::Run(args)) => run(&args),
        Some(Command::Worker(command)) => match worker_command(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pt-master: {}", master::report::chain(&*e));
                ExitCode::FAILURE
            }
        },
    }
}

/// `pt-master worker ...`: prints its result on stdout.
fn worker_command(command: WorkerCommand) -> anyhow::Result<()> {
    let target = |args: &TargetArgs| -> anyhow::Result<AdminTarget> {
        let mut config = MasterConfig::load_unchecked(args.config.as_deref())?;
        if let Some(dir) = &args.data {
            config.data_dir.clone_from(dir);
        }
        config.validate_for_admin()?;
        Ok(AdminTarget {
            data_dir: config.data_dir,
            config_workers: if args.config.is_some() { config.workers } else { Vec::new() },
        })
    };
    let via = |via| match via {
        Via::Master => "through the running master",
        Via::Journal => "in the journal (the master is not running)",
    };
    match command {
        WorkerCommand::Add { target: args, id, name, cert, allow_ip } => {
            let target = target(&args)?;
            let text = admin::read_cert_file(&cert)?;
            let new = NewWorker { id, name, cert: text, allowed_ips: allow_ip };
            let (added, how) = admin::add_worker(&target, new)
                .with_context(|| format!("cannot add worker {id} ({})", cert.display()))?;
            println!(
                "added worker {} ({}), fingerprint {}, {}",
                added.id,
                added.name,
                added.fingerprint,
                via(how)
            );
        }
        WorkerCommand::List { target: args, json } => {
            let (workers, how) = admin::list_workers(&target(&args)?)?;
            for problem in admin::listing_problems(&workers) {
                eprintln!("pt-master: {problem}");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&workers)?);
            } else {
                print!("{}", admin::render_table(&workers));
                if how == Via::Journal {
                    println!("(the master is not running: CONNECTED is unknown)");
                }
            }
        }
        WorkerCommand::Remove { target: args, id } => {
            let (was_connected, how) = admin::remove_worker(&target(&args)?, id)
                .with_context(|| format!("cannot remove worker {id}"))?;
            let link = if was_connected == Some(true) { "; its link was closed" } else { "" };
            println!("removed worker {id} {}{link}", via(how));
        }
    }
    Ok(())
}

/// Runs the server until SIGINT or SIGTERM.
fn run(args: &RunArgs) -> ExitCode {
    let config = match load_config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pt-master: bad configuration: {}", master::report::chain(&*e));
            return ExitCode::from(2);
        }
    };
    // The configuration's [[workers]] (each certificate read and checked, duplicates, address
    // counts) too: the registry built at start-up adds the stored workers to these.
    if let Err(e) = master::worker_auth::WorkerRegistry::from_entries(&config.workers) {
        eprintln!("pt-master: bad configuration: [[workers]]: {}", master::report::chain(&e));
        return ExitCode::from(2);
    }
    // The price file is read (and checked, row by row) before anything is set up: a bad one
    // is a configuration error that leaves no data directory behind.
    let prices = match master::prices::open_source(&config.prices, config.update_interval) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("pt-master: bad configuration: {}", master::report::chain(&e));
            return ExitCode::from(2);
        }
    };
    if let Err(e) = master::config::create_data_dir(&config.data_dir) {
        eprintln!("pt-master: cannot create data directory {}: {e}", config.data_dir.display());
        return ExitCode::FAILURE;
    }
    let _log = match master::logbook::init_tracing(&config.logbook_config()) {
        Ok(guard) => {
            master::logbook::install_crash_dump(guard.logbook().clone(), config.data_dir.clone());
            guard
        }
        Err(e) => {
            eprintln!("pt-master: cannot set up logging: {e}");
            return ExitCode::from(e.exit_status());
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            // Printed as well as logged: a RUST_LOG filter may hide the log line.
            error!(cause = %e, "cannot start the runtime");
            eprintln!("pt-master: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Installed first: a signal during start-up stops the master cleanly once it serves.
        let shutdown =
            master::shutdown::shutdown_signal().context("cannot handle SIGINT and SIGTERM")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        master::server::run_with_prices(config, Some(prices), listener, shutdown).await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = master::report::chain(&*e);
            error!(cause = %text, "master stopped with an error");
            eprintln!("pt-master: {text}");
            ExitCode::FAILURE
        }
    }
}
