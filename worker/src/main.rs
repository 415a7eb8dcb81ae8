//! `pt-worker`: the PaperTrader worker server.
//!
//! - `pt-worker run [--config FILE] [--listen ADDR] [--advertise HOST:PORT] [--master HOST:PORT]
//!   [--key-dir DIR] [--master-cert FILE] [--log-file FILE]`: serve clients and relay to the
//!   master until SIGINT or SIGTERM, then shut down gracefully (exit 0). A bad configuration,
//!   identity or master certificate prints the problem and exits 2.
//! - `pt-worker keygen --out DIR [--name NAME] [--allow-ip IP]...`: create the worker's identity
//!   in DIR and print what to register on the master.
//!
//! Thin: flags, tracing and signals here; everything else is in the `worker` library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tracing::{error, info, warn};
use worker::config::{Overrides, WorkerConfig};
use worker::identity::{self, MasterTrust, WorkerIdentity};

/// Exit status for a configuration, identity or argument problem.
const EXIT_BAD_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(name = "pt-worker", version, about = "PaperTrader worker server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve clients and relay their requests to the master.
    Run(RunArgs),
    /// Create a worker identity (UUID and OpenPGP key) and print its registration.
    Keygen(KeygenArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// TOML configuration file (see docs/WORKER.md); without it, the defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on for clients (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// The host:port clients should use, announced to the master (overrides `advertise`).
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// The master's worker address (overrides `master`).
    #[arg(long, value_name = "HOST:PORT")]
    master: Option<String>,
    /// Directory of the worker identity made by `keygen` (overrides `key_dir`).
    #[arg(long, value_name = "DIR")]
    key_dir: Option<PathBuf>,
    /// The master's public certificate, master.pub.asc (overrides `master_cert`).
    #[arg(long, value_name = "FILE")]
    master_cert: Option<PathBuf>,
    /// The log file (overrides `log.file`).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Directory to write worker.key, worker.pub.asc and worker.uuid into.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A name for the master's logs and server list (default: "worker-" followed by the first
    /// digits of its UUID).
    #[arg(long)]
    name: Option<String>,
    /// An address or CIDR range the worker connects from (repeatable; default 127.0.0.1).
    #[arg(long = "allow-ip", value_name = "IP")]
    allow_ip: Vec<String>,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Keygen(args) => keygen(args),
    }
}

fn bad_config(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("pt-worker: {error}");
    ExitCode::from(EXIT_BAD_CONFIG)
}

fn load_config(args: &RunArgs) -> anyhow::Result<WorkerConfig> {
    let mut config = WorkerConfig::load(args.config.as_deref())?;
    config.apply(Overrides {
        listen: args.listen,
        advertise: args.advertise.clone(),
        master: args.master.clone(),
        key_dir: args.key_dir.clone(),
        master_cert: args.master_cert.clone(),
        log_file: args.log_file.clone(),
    });
    config.validate()?;
    Ok(config)
}

fn run(args: RunArgs) -> ExitCode {
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(e) => return bad_config(&master::report::chain(&*e)),
    };
    let identity = match WorkerIdentity::load(&config.key_dir) {
        Ok(identity) => identity,
        Err(e) => {
            return bad_config(&format!("worker identity in {}: {e}", config.key_dir.display()));
        }
    };
    let Some(cert_path) = config.master_cert.clone() else {
        return bad_config(&"master_cert is required");
    };
    let trust = match MasterTrust::load(&cert_path) {
        Ok(trust) => trust,
        Err(e) => return bad_config(&format!("master certificate {}: {e}", cert_path.display())),
    };
    let guard = match master::logbook::init_tracing(&config.logbook_config()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("pt-worker: cannot set up logging: {e}");
            return ExitCode::from(e.exit_status());
        }
    };
    let crash_dir = config
        .log
        .file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    master::logbook::install_crash_dump(guard.logbook().clone(), crash_dir);
    info!(
        worker = %identity.uuid(),
        fingerprint = %identity.fingerprint(),
        master_fingerprint = %trust.fingerprint(),
        "pt-worker starting (master_fingerprint: the master certificate trusted, to compare with \
         the fingerprint the master logs as 'master identity loaded')"
    );
    if let Some(warning) = config.advertise_warning() {
        warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            error!(cause = %e, "cannot start the async runtime");
            eprintln!("pt-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown =
            master::shutdown::shutdown_signal().context("cannot handle SIGINT and SIGTERM")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        worker::run(config, listener, identity, trust, shutdown).await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Printed as well as logged: a RUST_LOG filter may hide the log line, and a daemon
            // must never exit 1 without a word.
            let text = master::report::chain(&*e);
            error!(cause = %text, "pt-worker failed");
            eprintln!("pt-worker: {text}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(args: KeygenArgs) -> ExitCode {
    let uuid = uuid::Uuid::new_v4();
    let name = args.name.unwrap_or_else(|| {
        let hyphenated = uuid.hyphenated().to_string();
        format!("worker-{}", &hyphenated[..8])
    });
    if let Err(e) = identity::check_name(&name) {
        return bad_config(&format!("--name: {e}"));
    }
    let allow_ips =
        if args.allow_ip.is_empty() { vec!["127.0.0.1".to_owned()] } else { args.allow_ip };
    for ip in &allow_ips {
        if let Err(e) = ip.parse::<master::config::IpNet>() {
            return bad_config(&format!("--allow-ip: {e}"));
        }
    }
    match write_identity(uuid, &name, &args.out, &allow_ips) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pt-worker keygen: {}", master::report::chain(&*e));
            ExitCode::FAILURE
        }
    }
}

/// `word` as one shell word: as it is when it holds only characters no shell treats specially,
/// otherwise in single quotes (a quote inside written `'\''`), so the printed command can be
/// pasted as it is.
fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:@%+=,-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn write_identity(
    uuid: uuid::Uuid,
    name: &str,
    out: &Path,
    allow_ips: &[String],
) -> anyhow::Result<()> {
    let identity = WorkerIdentity::generate(uuid, name)?;
    // Everything printed is made before the identity is saved: a failure after the save would
    // leave an identity whose registration was never shown, and a second keygen refused.
    let cert_path = std::path::absolute(out.join(identity::PUBLIC_CERT_FILE_NAME))
        .context("cannot make the certificate path absolute")?;
    let snippet = identity.registration_toml(name, &cert_path, allow_ips)?;
    identity.save(out)?;
    println!("Worker identity written to {}", out.display());
    println!("  UUID:        {}", identity.uuid());
    println!("  fingerprint: {}", identity.fingerprint().to_hex());
    println!("  certificate: {}", cert_path.display());
    println!();
    println!("Copy the certificate to the master's host and register the worker there, either");
    println!("with the registry (takes effect at once, no restart):");
    println!();
    let allow: String =
        allow_ips.iter().map(|ip| format!(" --allow-ip {}", shell_word(ip))).collect();
    println!(
        "  pt-master worker add --data MASTER-DATA-DIR --id {} --name {} --cert {}{allow}",
        identity.uuid(),
        shell_word(name),
        shell_word(&cert_path.display().to_string())
    );
    println!();
    println!("or in the master's configuration file (then restart it), not both:");
    println!();
    print!("{snippet}");
    println!();
    println!("Keep {} secret; never copy it.", out.join(identity::KEY_FILE_NAME).display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    /// A printed command's words survive a paste into a shell: plain ones as they are, others
    /// quoted, a quote inside one too.
    #[test]
    fn words_are_quoted_only_when_a_shell_would_read_them_otherwise() {
        assert_eq!(shell_word("eu-1"), "eu-1");
        assert_eq!(shell_word("/srv/pt/worker.pub.asc"), "/srv/pt/worker.pub.asc");
        assert_eq!(shell_word("eu 1"), "'eu 1'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
