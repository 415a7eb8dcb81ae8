//! The `pt` binary without servers: argument checking (exit status 2), and failures that never
//! reach a server (exit status 1 with a clear message).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `pt` with `args`, `stdin` as standard input, no PT_* settings from the environment and
/// the session file in `dir`.
fn pt(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pt"))
        .args(args)
        .env_remove("PT_WORKER")
        .env_remove("PT_MASTER")
        .env("PT_SESSION_FILE", dir.join("session"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An address where nothing listens: a port that was just free.
fn closed_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["buy", "AAPL"],
        &["buy", "AAPL", "0"],
        &["buy", "AAPL", "-3"],
        &["buy", "AAPL", "1.123456789"],
        &["sell", "AA PL", "1"],
        &["buy", "AAPL", "1", "--client-order-id", "x"],
        &["buy", "AAPL", "1", "--client-order-id", "-3"],
        &["price", "AAPL", "--rows", "-1"],
        &["portfolio", "--worker", "localhost"],
        &["workers", "--master", "127.0.0.1"],
        &["register", "bob", "not-an-email"],
        &["register", "b@d", "bob@example.com"],
        &["login", "a-name-that-is-far-too-long-for-us"],
        &["price", "AAPL", "--day", "2010-01-01", "--week", "2010-01-01"],
        &["price", "AAPL", "--month", "someday"],
        &["price", "AAPL", "--all", "--year", "2010-01-01"],
        // Rows of a table that only a range has.
        &["price", "AAPL", "--rows", "5"],
        // A period that ends past what the master can store: checked before anything is sent.
        &["price", "AAPL", "--year", "9999-12-31"],
        &["portfolio", "--timeout", "soon"],
        &["portfolio", "--timeout", "0s"],
        &["workers", "--timeout", "30days"],
        &["simulate", "--initial-cash", "abc"],
        &["simulate", "--initial-cash", "1.123456789", "--orders", "/nonexistent/orders.csv"],
        // A file that is not there, as for `pt up --prices`.
        &["simulate", "--orders", "/nonexistent/orders.csv"],
        &["simulate", "--prices", "/nonexistent/prices.csv"],
        &["user"],
        &["up", "--workers", "0"],
        &["up", "--workers", "17"],
        &["up", "--interval", "2days"],
        &["up", "--interval", "0s"],
        &["up", "--interval", "fast"],
    ];
    for args in cases {
        let output = pt(dir.path(), args, "");
        assert_eq!(output.status.code(), Some(2), "pt {args:?}: {}", stderr(&output));
        assert!(output.stdout.is_empty(), "pt {args:?}");
    }
    // The messages say what is expected, not clap's generic hints.
    for (args, says) in [
        (&["buy", "AAPL", "-3"][..], "the quantity must be more than zero"),
        (&["price", "AAPL", "--rows", "-1"], "is not a whole number (0 or more)"),
        (&["portfolio", "--worker", "localhost"], "expected HOST:PORT"),
        (&["price", "AAPL", "--day", "2010-13-01"], "expected 2010-06-01 (midnight UTC)"),
    ] {
        let text = stderr(&pt(dir.path(), args, ""));
        assert!(text.contains(says), "pt {args:?}: {text}");
        assert!(!text.contains("tip:"), "pt {args:?}: {text}");
    }
}

#[test]
fn bad_new_passwords_are_usage_errors_checked_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let worker = closed_addr();
    for (stdin, says) in [("short\n", "at least 8"), ("\n", "empty"), ("", "empty")] {
        let output = pt(
            dir.path(),
            &["register", "bob", "bob@example.com", "--password-stdin", "--worker", &worker],
            stdin,
        );
        assert_eq!(output.status.code(), Some(2), "{stdin:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(says), "{stdin:?}: {}", stderr(&output));
    }
}

#[test]
fn commands_needing_a_session_say_how_to_log_in() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["portfolio"][..],
        &["history"],
        &["buy", "AAPL", "1"],
        &["price", "aapl", "--all"],
        &["logout"],
    ] {
        let output = pt(dir.path(), args, "");
        assert_eq!(output.status.code(), Some(1), "pt {args:?}");
        let text = stderr(&output);
        assert!(text.starts_with("pt: not logged in"), "{text}");
        assert!(text.contains("pt login USER"), "{text}");
    }
}

#[test]
fn unreachable_servers_exit_1_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let addr = closed_addr();
    let output = pt(
        dir.path(),
        &["login", "alice", "--password-stdin", "--worker", &addr],
        "hunter2hunter2\n",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).starts_with(&format!("pt: cannot reach worker at {addr}: ")));

    let output = pt(dir.path(), &["workers", "--master", &addr], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).starts_with(&format!("pt: cannot reach master at {addr}: ")));

    let output = pt(dir.path(), &["workers", "--master", "no-such-host.invalid:2048"], "");
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot reach master at no-such-host.invalid:2048"));
    // Nothing was saved.
    assert!(!dir.path().join("session").exists());
}

#[test]
fn an_empty_environment_variable_counts_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    // `PT_MASTER=` means the default master, not an address "".
    let output = Command::new(env!("CARGO_BIN_EXE_pt"))
        .args(["workers", "--timeout", "2s"])
        .env("PT_MASTER", "")
        .env("PT_SESSION_FILE", "")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let text = stderr(&output);
    // Whether or not a master answers on the default address, the empty value was not used.
    assert!(
        output.status.success() || text.contains("cannot reach master at 127.0.0.1:2048"),
        "{text}"
    );
    // `PT_SESSION_FILE=` means the default session file under HOME.
    let output = Command::new(env!("CARGO_BIN_EXE_pt"))
        .args(["portfolio", "--worker", &closed_addr()])
        .env("PT_SESSION_FILE", "")
        .env("HOME", dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("pt login"), "{}", stderr(&output));
}

#[test]
fn help_lists_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let output = pt(dir.path(), &["--help"], "");
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8(output.stdout).unwrap();
    for command in [
        "workers",
        "register",
        "login",
        "logout",
        "buy",
        "sell",
        "portfolio",
        "history",
        "user",
        "info",
        "price",
        "up",
        "simulate",
    ] {
        assert!(text.contains(&format!("  {command} ")), "{command} missing from:\n{text}");
    }
}

/// A reader that closes the pipe before reading the output (`pt ... | head`) is no failure of
/// the command: `pt` exits 0 quietly, not with a panic on the broken pipe.
#[test]
fn a_closed_output_pipe_is_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pt"))
        .arg("simulate")
        .env("PT_SESSION_FILE", dir.path().join("session"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before `pt` settles the shipped prices and writes its report.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(output.stderr.is_empty(), "{}", stderr(&output));
}

/// `pt simulate` counts what it settled, and says so when orders dated after the last price
/// interval could not be settled (they are not counted as settled).
#[test]
fn simulate_reports_orders_it_could_not_settle() {
    let dir = tempfile::tempdir().unwrap();
    let orders = dir.path().join("orders.csv");
    std::fs::write(
        &orders,
        "time,username,side,symbol,qty\n2000-03-01,bob,buy,MSFT,11\n2013-03-05,bob,buy,IBM,1\n",
    )
    .unwrap();
    let orders = orders.to_str().unwrap();
    let output = pt(dir.path(), &["simulate", "--orders", orders], "");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("Settled 1 of 2 recorded orders"), "{text}");
    assert!(text.contains("1 order dated after the last price interval was not settled"), "{text}");
    let output = pt(dir.path(), &["simulate", "--orders", orders, "--json"], "");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["unsettled"], 1);
    assert_eq!(report["filled"], 1);
}
