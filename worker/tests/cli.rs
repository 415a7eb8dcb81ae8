//! The `pt-worker` binary: `keygen`, configuration errors (exit status 2), and a clean stop on
//! SIGTERM (exit status 0).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::Keys;
use master::config::MasterConfig;
use master::worker_auth::WorkerRegistry;
use worker::identity::WorkerIdentity;

const BIN: &str = env!("CARGO_BIN_EXE_pt-worker");

fn pt_worker(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("RUST_LOG", "info").output().unwrap()
}

#[test]
fn keygen_writes_an_identity_and_prints_a_registration_the_master_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("key");
    let out_arg = out.to_str().unwrap();
    let output =
        pt_worker(&["keygen", "--out", out_arg, "--name", "eu-1", "--allow-ip", "10.0.0.0/8"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let identity = WorkerIdentity::load(&out).unwrap();
    assert!(stdout.contains(&identity.uuid().to_string()), "{stdout}");
    assert!(stdout.contains(&identity.fingerprint().to_hex()), "{stdout}");
    // The printed snippet is the master's configuration for this worker.
    let start = stdout.find("[[workers]]").expect("a [[workers]] snippet");
    let end = start + stdout[start..].find("\n\n").expect("the snippet ends");
    let config = MasterConfig::from_toml_str(&stdout[start..end], "keygen output").unwrap();
    config.validate().unwrap();
    assert_eq!(config.workers[0].id, identity.uuid());
    assert_eq!(config.workers[0].name.as_deref(), Some("eu-1"));
    let registry = WorkerRegistry::from_entries(&config.workers).unwrap();
    assert!(registry.check_admission(identity.uuid(), "10.1.2.3".parse().unwrap()).is_ok());

    // Never overwrites an identity.
    let again = pt_worker(&["keygen", "--out", out_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // Bad arguments are refused before anything is written.
    let other = dir.path().join("other");
    let bad_ip = pt_worker(&["keygen", "--out", other.to_str().unwrap(), "--allow-ip", "nope"]);
    assert_eq!(bad_ip.status.code(), Some(2));
    let bad_name = pt_worker(&["keygen", "--out", other.to_str().unwrap(), "--name", ""]);
    assert_eq!(bad_name.status.code(), Some(2));
    assert!(!other.exists());
}

#[test]
fn run_refuses_a_bad_configuration_with_status_2() {
    let keys = Keys::new();
    let key_dir = keys.worker_key_dir.to_str().unwrap();
    let cert = keys.master_cert.to_str().unwrap();
    let stderr =
        |output: &std::process::Output| String::from_utf8_lossy(&output.stderr).into_owned();

    let no_cert = pt_worker(&["run", "--key-dir", key_dir]);
    assert_eq!(no_cert.status.code(), Some(2));
    assert!(stderr(&no_cert).contains("master_cert"), "{}", stderr(&no_cert));

    let config = keys.dir.path().join("worker.toml");
    std::fs::write(&config, "[cache]\nttl = \"1s\"\nsize = 3\n").unwrap();
    let unknown = pt_worker(&["run", "--config", config.to_str().unwrap(), "--master-cert", cert]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("size"), "{}", stderr(&unknown));

    std::fs::write(&config, "[link]\nheartbeat_timeout = \"1s\"\n").unwrap();
    let invalid = pt_worker(&["run", "--config", config.to_str().unwrap(), "--master-cert", cert]);
    assert_eq!(invalid.status.code(), Some(2));
    assert!(stderr(&invalid).contains("link.heartbeat_timeout"), "{}", stderr(&invalid));

    let missing_dir = keys.dir.path().join("nowhere");
    let no_identity =
        pt_worker(&["run", "--key-dir", missing_dir.to_str().unwrap(), "--master-cert", cert]);
    assert_eq!(no_identity.status.code(), Some(2));
    assert!(stderr(&no_identity).contains("worker.key"), "{}", stderr(&no_identity));

    // A secret key in place of the master's public certificate is refused.
    let secret = keys.worker_key_dir.join("worker.key");
    let wrong_cert =
        pt_worker(&["run", "--key-dir", key_dir, "--master-cert", secret.to_str().unwrap()]);
    assert_eq!(wrong_cert.status.code(), Some(2));
    assert!(stderr(&wrong_cert).contains("master certificate"), "{}", stderr(&wrong_cert));
}

#[test]
fn run_serves_and_stops_cleanly_on_sigterm() {
    let keys = Keys::new();
    let log = keys.dir.path().join("logs/worker.log");
    // Nothing listens on the master's address: the worker serves clients anyway.
    let mut child = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--master", "127.0.0.1:9"])
        .args(["--key-dir", keys.worker_key_dir.to_str().unwrap()])
        .args(["--master-cert", keys.master_cert.to_str().unwrap()])
        .args(["--log-file", log.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serving = lines
        .by_ref()
        .map(|line| line.unwrap())
        .find(|line| line.contains("worker serving clients"))
        .expect("the worker starts serving");
    assert!(serving.contains("127.0.0.1:"), "{serving}");
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map(|line| line.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert!(rest.iter().any(|line| line.contains("worker stopped")), "{rest:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("worker serving clients") && logged.contains("worker stopped"));
}

/// A worker that fails while starting says why on stderr, whatever `RUST_LOG` lets through
/// (here nothing): exit status 1 with a word, never silence.
#[test]
fn a_failure_is_printed_even_with_logging_off() {
    let keys = Keys::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let log = keys.dir.path().join("logs/worker.log");
    let output = Command::new(BIN)
        .args(["run", "--listen", &addr, "--master", "127.0.0.1:9"])
        .args(["--key-dir", keys.worker_key_dir.to_str().unwrap()])
        .args(["--master-cert", keys.master_cert.to_str().unwrap()])
        .args(["--log-file", log.to_str().unwrap()])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("pt-worker: cannot listen on {addr}")), "{text}");
    drop(taken);
}

/// A log file that cannot be opened (here a directory) is a bad configuration: exit status 2,
/// naming the key and the path.
#[test]
fn an_unusable_log_file_is_a_configuration_error() {
    let keys = Keys::new();
    let log = keys.dir.path().join("a-directory");
    std::fs::create_dir(&log).unwrap();
    let output = Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--master", "127.0.0.1:9"])
        .args(["--key-dir", keys.worker_key_dir.to_str().unwrap()])
        .args(["--master-cert", keys.master_cert.to_str().unwrap()])
        .args(["--log-file", log.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains("(log.file)") && text.contains(log.to_str().unwrap()), "{text}");
}
