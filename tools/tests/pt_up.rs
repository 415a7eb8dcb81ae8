//! The `pt up` command itself: the real binary starts a cluster on free ports, prints the
//! addresses and the next commands, serves a client, and exits 0 after Ctrl-C (SIGINT).

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};

/// Kills `pt up` if the test fails before stopping it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn pt_up_prints_the_addresses_serves_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = Command::new(env!("CARGO_BIN_EXE_pt"))
        .args(["up", "--master-port", "0", "--worker-port", "0", "--interval", "200ms", "--data"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = KillOnDrop(up);
    let mut stderr_pipe = up.0.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        stderr_pipe.read_to_string(&mut text).unwrap();
        text
    });
    // The banner, up to its last line.
    let mut stdout = BufReader::new(up.0.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("Press Ctrl-C to stop.") {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let status = up.0.wait().unwrap();
            let stderr = stderr.join().unwrap();
            panic!("pt up ended ({status}) before its banner:\n{banner}\n{stderr}");
        }
        banner.push_str(&line);
    }
    let field = |name: &str| -> String {
        let line = banner
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{banner}"));
        line.split_whitespace().nth(1).unwrap().to_owned()
    };
    let master = field("master ");
    let worker = field("worker ");
    assert!(master.starts_with("127.0.0.1:"), "{banner}");
    for hint in ["pt register alice alice@example.com", "pt login alice", "pt buy AAPL 10"] {
        assert!(banner.contains(hint), "{hint} missing from:\n{banner}");
    }
    assert!(banner.contains(&format!("export PT_WORKER={worker} PT_MASTER={master}")), "{banner}");

    let workers = Command::new(env!("CARGO_BIN_EXE_pt"))
        .args(["workers", "--master", &master])
        .output()
        .unwrap();
    assert_eq!(workers.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&workers.stdout).contains(&worker));

    // Ctrl-C: workers, then the master, then exit 0.
    let kill = Command::new("kill").args(["-INT", &up.0.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = up.0.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.ends_with("Stopped.\n"), "{stderr}");

    // What it leaves: the master's key, one worker identity, the journal, the log.
    for file in ["master.key", "master.pub.asc", "papertrader.redb", "pt-up.log"] {
        assert!(data.join(file).is_file(), "{file}");
    }
    assert!(data.join("workers/w1/worker.key").is_file());
    let log = std::fs::read_to_string(data.join("pt-up.log")).unwrap();
    assert!(log.lines().count() > 1, "{log}");
}

/// Runs `pt up` with `args` and a data directory that does not exist yet; returns its exit
/// status, its stderr, and whether it created the data directory.
fn pt_up_refused(args: &[&str]) -> (Option<i32>, String, bool) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_pt"))
        .arg("up")
        .args(args)
        .arg("--data")
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned(), data.exists())
}

/// A master port among the workers' is a configuration error (exit 2), refused before
/// anything listens or is written, naming both.
#[test]
fn overlapping_ports_are_refused() {
    let (status, stderr, created) =
        pt_up_refused(&["--workers", "2", "--master-port", "40001", "--worker-port", "40000"]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("the master's port 40001 is one of the workers' (40000 to 40001)"),
        "{stderr}"
    );
    assert!(!created, "the data directory was made for a configuration that cannot run");
}

/// A price file that does not parse is a configuration error (exit 2, as `pt-master` says it),
/// named at its line, found before the data directory, a key or an identity is made.
#[test]
fn a_bad_price_file_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.csv");
    std::fs::write(
        &prices,
        "time,symbol,open,high,low,close,volume\n2000-01-03,AAPL,1,1,1,1,100\n2000-01-04,AAPL,1,1,1,one,100\n",
    )
    .unwrap();
    let (status, stderr, created) = pt_up_refused(&[
        "--master-port",
        "0",
        "--worker-port",
        "0",
        "--prices",
        prices.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("bad price file"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(!created, "the data directory was made for a price file that cannot be read");
}

/// A port another program listens on is found before the data directory is touched: exit 1
/// (the configuration is fine, the machine is busy), naming the address.
#[test]
fn a_busy_port_is_found_before_anything_is_written() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let (status, stderr, created) =
        pt_up_refused(&["--master-port", "0", "--worker-port", port.as_str()]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port} for the worker")),
        "{stderr}"
    );
    assert!(!created, "the data directory was made although a port was taken");
}

/// A data directory whose journal another process holds (a running `pt up` or `pt-master`) is
/// refused before anything listens, logs or is written, naming the directory: before, the
/// second `pt up` started, wrote into the first one's log and failed on the master's open.
#[test]
fn a_data_directory_in_use_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let held = journal::Journal::open_unrecovered(
        journal::path_in(&data),
        journal::JournalConfig::default(),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pt"))
        .args(["up", "--master-port", "0", "--worker-port", "0", "--data"])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is in use by another process"), "{stderr}");
    assert!(!data.join("pt-up.log").exists(), "it logged into the running one's directory");
    assert!(!data.join("master.key").exists(), "it wrote into the running one's directory");
    drop(held);
    assert!(!journal::Journal::in_use(journal::path_in(&data)));
}
