//! `pt` end to end: a real cluster from `pt up`'s core (a master and a worker in this process,
//! on loopback ports chosen by the OS, a real journal in a temporary directory) and the real `pt`
//! binary for every command, checking outputs and exit statuses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use engine::{Cash, Price, Qty, Side, money};
use pt_tools::up::{Cluster, ClusterConfig};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

struct Env {
    worker: String,
    master: String,
    session: PathBuf,
}

impl Env {
    fn new(cluster: &Cluster, dir: &Path) -> Self {
        Self {
            worker: cluster.workers()[0].addr.to_string(),
            master: cluster.master_addr().to_string(),
            session: dir.join("config").join("session"),
        }
    }

    /// `pt args` against this cluster, started, its stdin, stdout and stderr piped.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_pt"))
            .args(args)
            .env("PT_WORKER", &self.worker)
            .env("PT_MASTER", &self.master)
            .env("PT_SESSION_FILE", &self.session)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self.spawn(args);
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, "")
    }

    fn ok_with(&self, args: &[&str], stdin: &str) -> String {
        let output = self.run(args, stdin);
        assert_eq!(
            output.status.code(),
            Some(0),
            "pt {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let text = self.ok(&args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("pt {args:?}: {e}: {text}"))
    }

    /// Runs a command the server must refuse (exit 1); returns its stderr.
    fn refused(&self, args: &[&str], stdin: &str) -> String {
        let output = self.run(args, stdin);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "pt {args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "pt {args:?}");
        stderr
    }

    fn login(&self) {
        let out = self.ok_with(&["login", "alice", "--password-stdin"], &format!("{PASSWORD}\n"));
        assert!(out.starts_with("Logged in as alice."), "{out}");
    }
}

fn config(dir: &Path) -> ClusterConfig {
    ClusterConfig {
        data_dir: dir.join("pt-data"),
        workers: 1,
        interval: Duration::from_millis(200),
        prices: None,
        master_port: 0,
        worker_port: 0,
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

#[test]
fn a_user_trades_through_a_local_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(Cluster::start(config(dir.path()))).unwrap();
    let env = Env::new(&cluster, dir.path());
    let worker_id = cluster.workers()[0].uuid;

    // The master lists the worker.
    let workers = env.json(&["workers"]);
    assert_eq!(text(&workers["workers"][0]["id"]), worker_id.hyphenated().to_string());
    assert_eq!(text(&workers["workers"][0]["address"]), env.worker);
    assert!(env.ok(&["workers"]).contains(&env.worker));

    // Register, twice.
    let stdin = format!("{PASSWORD}\n");
    let out = env.ok_with(&["register", "alice", "alice@example.com", "--password-stdin"], &stdin);
    assert_eq!(out, "Registered alice (alice@example.com). Next: pt login alice\n");
    let err = env.refused(&["register", "alice", "alice@example.com", "--password-stdin"], &stdin);
    assert!(err.starts_with("pt: register refused: username_taken (106): "), "{err}");

    // A wrong password, then the right one.
    let err = env.refused(&["login", "alice", "--password-stdin"], "not the password\n");
    assert!(err.starts_with("pt: login refused: bad_credentials (105): "), "{err}");
    assert!(!env.session.exists());
    env.login();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&env.session).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Buy: the fill comes back once the interval settles.
    let fill = env.json(&["buy", "AAPL", "10"]);
    assert_eq!(text(&fill["side"]), "buy");
    assert_eq!(text(&fill["symbol"]), "AAPL");
    assert_eq!(text(&fill["qty"]), "10");
    let price = Price::parse(text(&fill["price"])).unwrap();
    let paid = money::notional(price, Qty::parse("10").unwrap(), Side::Buy).unwrap();
    assert_eq!(text(&fill["amount"]), paid.to_string());
    let initial = Cash::parse("100000").unwrap();
    let cash_after = initial.checked_sub(paid).unwrap();
    assert_eq!(text(&fill["cash_after"]), cash_after.to_string());
    let order = fill["order"].as_u64().unwrap();

    // The engine's refusals come back with their reason, on stderr, exit 1.
    let err = env.refused(&["buy", "AAPL", "100000000"], "");
    assert!(err.starts_with("pt: purchase refused: insufficient_cash (6): "), "{err}");
    let err = env.refused(&["sell", "IBM", "1"], "");
    assert!(err.starts_with("pt: sale refused: insufficient_holdings (7): "), "{err}");

    // Portfolio and history agree with the fill.
    let portfolio = env.json(&["portfolio"]);
    assert_eq!(text(&portfolio["username"]), "alice");
    assert_eq!(text(&portfolio["cash"]), cash_after.to_string());
    let holdings = portfolio["holdings"].as_array().unwrap();
    assert_eq!(holdings.len(), 1);
    assert_eq!(text(&holdings[0]["symbol"]), "AAPL");
    assert_eq!(text(&holdings[0]["qty"]), "10");
    assert_eq!(text(&holdings[0]["cost_basis"]), paid.to_string());
    let table = env.ok(&["portfolio"]);
    assert!(table.starts_with(&format!("Portfolio of alice\nCash: {cash_after}\n")), "{table}");
    let history = env.json(&["history"]);
    let transactions = history["transactions"].as_array().unwrap();
    assert_eq!(transactions.len(), 1);
    assert_eq!(transactions[0]["order"].as_u64(), Some(order));
    assert_eq!(text(&transactions[0]["side"]), "buy");

    // Sell half, as a table.
    let out = env.ok(&["sell", "aapl", "5"]);
    assert!(out.starts_with("Sold 5 AAPL at "), "{out}");
    let history = env.json(&["history"]);
    assert_eq!(history["transactions"].as_array().unwrap().len(), 2);
    assert_eq!(text(&history["transactions"][1]["side"]), "sell");

    // Prices: the current tick, a month of the shipped file with its chart, all time.
    let tick = env.json(&["price", "AAPL"]);
    assert_eq!(text(&tick["symbol"]), "AAPL");
    assert!(Price::parse(text(&tick["close"])).unwrap() > Price::ZERO);
    assert_eq!(text(&env.json(&["info", "AAPL"])["symbol"]), "AAPL");
    // The replay, a day per interval, reaches March 2000's second trading day (a chart needs
    // two closes).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let series = loop {
        let series = env.json(&["price", "AAPL", "--month", "2000-03-01"]);
        if series["bars"].as_array().is_some_and(|bars| bars.len() >= 2) {
            break series;
        }
        assert!(std::time::Instant::now() < deadline, "the replay never reached March: {series}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let bars = series["bars"].as_array().unwrap();
    assert!(text(&bars[0]["time"]).starts_with("2000-03-01"), "{series}");
    let month = env.ok(&["price", "AAPL", "--month", "2000-03-01"]);
    assert!(month.starts_with("AAPL month from 2000-03-01: "), "{month}");
    assert!(month.contains(" │"), "no chart in:\n{month}");
    assert_eq!(text(&env.json(&["price", "AAPL", "--all"])["symbol"]), "AAPL");
    let err = env.refused(&["info", "ZZZZ"], "");
    assert!(err.contains("not_found (108)"), "{err}");
    // A mistyped symbol is told so (not "no price yet"), with the symbols that are listed.
    assert!(err.contains("ZZZZ is not a listed asset (listed: AAPL"), "{err}");
    let err = env.refused(&["price", "ZZZZ", "--all"], "");
    assert!(err.contains("ZZZZ is not a listed asset"), "{err}");

    // Users: the owner sees the email.
    let me = env.json(&["user", "alice"]);
    assert_eq!(text(&me["email"]), "alice@example.com");
    let err = env.refused(&["user", "nobody"], "");
    assert!(err.contains("not_found (108)"), "{err}");

    // A client order id: the same order again gets the first fill, not a second one; another
    // order with the same id is refused, saying so.
    let first = env.json(&["buy", "IBM", "1", "--client-order-id", "4242"]);
    assert_eq!(first["settled_before_command"], false);
    let again = env.json(&["buy", "IBM", "1", "--client-order-id", "4242"]);
    assert_eq!(first["order"], again["order"]);
    // A fill that settled more than a second before the command began is said to be the
    // earlier order's, not a new purchase.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let later = env.ok(&["buy", "IBM", "1", "--client-order-id", "4242"]);
    assert!(later.starts_with("Already placed: "), "{later}");
    let json = env.json(&["buy", "IBM", "1", "--client-order-id", "4242"]);
    assert_eq!(json["settled_before_command"], true);
    let err = env.refused(&["buy", "MSFT", "2", "--client-order-id", "4242"], "");
    assert!(err.contains("client order id 4242 was already used for order"), "{err}");
    let err = env.refused(&["sell", "IBM", "1", "--client-order-id", "4242"], "");
    assert!(err.contains("this order was not placed"), "{err}");

    // Log out: the session file goes, and commands say to log in.
    assert_eq!(env.ok(&["logout"]), "Logged out alice.\n");
    assert!(!env.session.exists());
    let err = env.refused(&["portfolio"], "");
    assert!(err.starts_with("pt: not logged in"), "{err}");

    // A session the server no longer knows is refused and forgotten.
    env.login();
    let stale = std::fs::read(&env.session).unwrap();
    env.ok(&["logout"]);
    std::fs::write(&env.session, &stale).unwrap();
    let err = env.refused(&["history"], "");
    assert!(err.starts_with("pt: session refused: bad_session (101): "), "{err}");
    assert!(err.contains("pt login alice"), "{err}");
    // Said once: the worker's message already says to log in.
    assert_eq!(err.matches("log in").count() + err.matches("login").count(), 2, "{err}");
    assert!(!env.session.exists());

    // Without --remember, the client ends a session idle for more than 30 minutes.
    env.login();
    let saved = std::fs::read_to_string(&env.session).unwrap();
    assert!(saved.contains("remember=false\n"), "{saved}");
    let idle = saved
        .lines()
        .map(|l| if l.starts_with("last_used=") { "last_used=0" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&env.session, &idle).unwrap();
    let err = env.refused(&["portfolio"], "");
    assert!(err.contains("ended after 30 minutes without use"), "{err}");
    assert!(!env.session.exists());
    // ... and on the master: the same session, freshly dated, is refused.
    std::fs::write(&env.session, saved).unwrap();
    let err = env.refused(&["portfolio"], "");
    assert!(err.contains("bad_session (101)"), "{err}");

    // With --remember there is no client-side limit.
    let out = env
        .ok_with(&["login", "alice", "--remember", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert!(out.contains("30 days"), "{out}");
    let saved = std::fs::read_to_string(&env.session).unwrap();
    assert!(saved.contains("remember=true\n"), "{saved}");
    let idle = saved
        .lines()
        .map(|l| if l.starts_with("last_used=") { "last_used=0" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&env.session, idle).unwrap();
    assert_eq!(text(&env.json(&["portfolio"])["username"]), "alice");
    env.ok(&["logout"]);

    runtime.block_on(cluster.shutdown()).unwrap();

    // pt-replay reads the data directory of pt up.
    let audit = Command::new(env!("CARGO_BIN_EXE_pt-replay"))
        .args(["audit", "--data"])
        .arg(dir.path().join("pt-data"))
        .env_remove("CI")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.status.code(), Some(0), "{report}");
    assert!(report.starts_with("clean: "), "{report}");
    assert!(report.contains(" 1 accounts"), "{report}");

    // A second run keeps the worker's identity and the accounts.
    let cluster = runtime.block_on(Cluster::start(config(dir.path()))).unwrap();
    assert_eq!(cluster.workers()[0].uuid, worker_id);
    let env = Env::new(&cluster, dir.path());
    env.login();
    let history = env.json(&["history"]);
    assert_eq!(history["transactions"].as_array().unwrap().len(), 3, "AAPL buy and sell, IBM");
    assert_eq!(text(&env.json(&["portfolio"])["holdings"][0]["qty"]), "5");
    runtime.block_on(cluster.shutdown()).unwrap();
}

/// A login whose session file cannot be written (here a directory) fails, and ends the session
/// it made on the master: a 30-day session whose id no one saw could never be used nor ended.
#[test]
fn a_login_that_cannot_save_its_session_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = runtime.block_on(Cluster::start(config(dir.path()))).unwrap();
    let mut env = Env::new(&cluster, dir.path());
    let stdin = format!("{PASSWORD}\n");
    env.ok_with(&["register", "alice", "alice@example.com", "--password-stdin"], &stdin);
    env.session = dir.path().join("a-directory");
    std::fs::create_dir(&env.session).unwrap();
    let err = env.refused(&["login", "alice", "--password-stdin"], &stdin);
    assert!(err.contains("not logged in: the session was ended"), "{err}");
    runtime.block_on(cluster.shutdown()).unwrap();

    let journal = journal::Journal::open_unrecovered(
        journal::path_in(&dir.path().join("pt-data")),
        journal::JournalConfig::default(),
    )
    .unwrap();
    assert!(journal.last_seq().0 > 0, "the cluster's journal, with alice's account");
    assert_eq!(journal.sessions().unwrap().len(), 0, "a session was left on the master");
}

/// A Ctrl-C while the workers link (here: before) gives the start-up up at once: what started
/// is stopped cleanly, the master closing its journal (a read-only redb open, which refuses a
/// file left open, accepts it), and nothing is left running on the ports.
#[test]
fn a_start_up_interrupted_stops_what_started_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = runtime.block_on(async {
        let prepared = pt_tools::up::Prepared::new(config(dir.path())).await.unwrap();
        let interrupted = std::future::ready(());
        tokio::pin!(interrupted);
        prepared.start_unless(interrupted).await.unwrap()
    });
    assert!(started.is_none(), "the cluster came up although interrupted");
    let journal = journal::path_in(&dir.path().join("pt-data"));
    // The master opens its journal before it looks at a stop, and the stop waits for it.
    assert!(journal.exists());
    assert!(!journal::Journal::in_use(&journal));
    assert!(redb::ReadOnlyDatabase::open(&journal).is_ok(), "the journal was left open");
}

/// A stop while an order waits for a long interval is not held by it: past a short grace the
/// master is told to stop too; it settles the interval at once, and the order is answered (a
/// fill, not an error).
#[test]
fn a_stop_is_not_held_by_an_order_waiting_for_a_long_interval() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = ClusterConfig { interval: Duration::from_secs(3600), ..config(dir.path()) };
    let cluster = runtime.block_on(Cluster::start(config)).unwrap();
    let env = Env::new(&cluster, dir.path());
    let stdin = format!("{PASSWORD}\n");
    env.ok_with(&["register", "alice", "alice@example.com", "--password-stdin"], &stdin);
    env.login();
    let relayed = cluster.worker_stats()[0].relays;
    let mut buy = env.spawn(&["buy", "AAPL", "1"]);
    drop(buy.stdin.take());
    // The worker has relayed the order (and waits an hour for its interval): `pt buy` makes two
    // relays, its `loginSession`, then the order.
    let mut waited = 0;
    while cluster.worker_stats()[0].relays < relayed + 2 {
        assert!(waited < 6000, "the order was never relayed");
        std::thread::sleep(Duration::from_millis(10));
        waited += 1;
    }
    // Well within the interval's hour: the stop ends, and the order got its fill.
    let stopped = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(300), cluster.shutdown()).await
    });
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    let output = buy.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("Bought"), "{stdout}");
}

/// A session saved through one PaperTrader's worker and sent to another's (a second `pt up`, a
/// mistyped `--worker`) is refused there, but not removed: its own worker still takes it, and
/// only its own worker's `bad_session` removes it. `pt logout` through the other ends it
/// through its own worker, or, with that one gone, forgets it here and says so.
#[test]
fn a_session_refused_by_another_papertrader_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let first = runtime.block_on(Cluster::start(config(dir.path()))).unwrap();
    let other_dir = dir.path().join("other");
    let other = runtime.block_on(Cluster::start(config(&other_dir))).unwrap();
    let env = Env::new(&first, dir.path());
    let other_worker = other.workers()[0].addr.to_string();
    let stdin = format!("{PASSWORD}\n");
    env.ok_with(&["register", "alice", "alice@example.com", "--password-stdin"], &stdin);
    env.login();

    let err = env.refused(&["portfolio", "--worker", &other_worker], "");
    assert!(err.contains("bad_session"), "{err}");
    assert!(err.contains(&format!("made through the worker at {}", env.worker)), "{err}");
    assert!(env.session.exists(), "the session was removed");
    let portfolio = env.json(&["portfolio"]);
    assert_eq!(text(&portfolio["username"]), "alice");
    let saved = std::fs::read(&env.session).unwrap();

    // Logged out through the other: ended through its own worker.
    assert_eq!(env.ok(&["logout", "--worker", &other_worker]), "Logged out alice.\n");
    assert!(!env.session.exists());
    std::fs::write(&env.session, &saved).unwrap();
    let err = env.refused(&["portfolio"], "");
    assert!(err.contains("bad_session"), "the session was not ended: {err}");
    assert!(!env.session.exists(), "its own worker's bad_session removes it");

    // With its own PaperTrader gone, logging out through the other only forgets it here.
    env.login();
    runtime.block_on(first.shutdown()).unwrap();
    let out = env.ok(&["logout", "--worker", &other_worker]);
    assert!(out.starts_with("Logged out alice on this machine: "), "{out}");
    assert!(out.contains(&env.worker), "{out}");
    assert!(!env.session.exists());
    runtime.block_on(other.shutdown()).unwrap();
}
