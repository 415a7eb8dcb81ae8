//! Crash safety: a child process appends batches and is killed with SIGKILL at random moments,
//! many times. After each kill the journal reopens with every batch whose commit returned,
//! nothing else (at most the one batch in flight, whole), and the audit is clean.
//!
//! `PT_SOAK=1` runs 300 kills instead of 25; `PT_SEED=n` replays a run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use engine::workload::XorShift;
use journal::{AuditConfig, Journal, JournalConfig, Seq, audit};

struct Line {
    kind: String,
    seq: u64,
    digest: String,
}

fn parse(line: &str) -> Line {
    let mut parts = line.split_whitespace();
    let kind = parts.next().unwrap_or_default().to_owned();
    let seq =
        parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad line {line:?}"));
    let digest = parts.next().unwrap_or_default().to_owned();
    Line { kind, seq, digest }
}

#[test]
fn killed_writers_lose_nothing_acknowledged_and_add_nothing_else() {
    let soak = std::env::var("PT_SOAK").is_ok_and(|v| v == "1");
    let kills = if soak { 300 } else { 25 };
    let seed = std::env::var("PT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    eprintln!("crash test: PT_SEED={seed}, {kills} kills");
    let mut rng = XorShift::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = journal::path_in(dir.path());
    let mut acknowledged = (0u64, engine::State::new().digest().to_string());
    let mut snapshots_seen = 0;
    // Kills during a commit: the batch landed whole, or not at all.
    let (mut landed, mut lost) = (0usize, 0usize);
    for round in 0..kills {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pt-journal-crash-child"))
            .arg(&path)
            .arg(rng.next_u64().to_string())
            .arg((50 + rng.below(400)).to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = parse(&lines.next().expect("the child says ready").unwrap());
        assert_eq!(ready.kind, "ready");
        assert_eq!((ready.seq, &ready.digest), (acknowledged.0, &acknowledged.1), "round {round}");
        // Kill after a random number of lines: before, during or after a commit.
        let wait_lines = 1 + rng.below(40);
        let mut in_flight: Option<(u64, String)> = None;
        let mut handle =
            |line: Line, in_flight: &mut Option<(u64, String)>| match line.kind.as_str() {
                "begin" => *in_flight = Some((line.seq, line.digest)),
                "commit" => {
                    assert_eq!(in_flight.take().map(|f| f.0), Some(line.seq));
                    acknowledged = (line.seq, line.digest);
                }
                "snapshot" => snapshots_seen += 1,
                other => panic!("unexpected line kind {other}"),
            };
        for _ in 0..wait_lines {
            let Some(line) = lines.next() else { break };
            handle(parse(&line.unwrap()), &mut in_flight);
        }
        child.kill().unwrap();
        // Lines the child wrote before it died are still in the pipe: they count too.
        for line in lines {
            handle(parse(&line.unwrap()), &mut in_flight);
        }
        child.wait().unwrap();

        let (journal, recovered) = Journal::open(&path, JournalConfig::default()).unwrap();
        let found = (recovered.last_seq.0, recovered.digest.to_string());
        match &in_flight {
            Some(flight) if found == *flight => {
                landed += 1;
                acknowledged = found.clone();
            }
            _ => {
                assert_eq!(found, acknowledged, "round {round}: reopened head is not a batch end");
                lost += usize::from(in_flight.is_some());
            }
        }
        let report =
            audit(&journal, AuditConfig { invariants_every_events: 500 }, &mut |_| {}).unwrap();
        assert!(report.is_clean(), "round {round}: {:?}", report.problem);
        assert_eq!(report.last_seq, Seq(acknowledged.0));
        assert_eq!(report.digest.to_string(), acknowledged.1);
    }
    assert!(acknowledged.0 > 0);
    eprintln!(
        "crash test: head {} after {kills} kills, {snapshots_seen} snapshots; batches in flight \
         at the kill: {landed} landed whole, {lost} not at all",
        acknowledged.0
    );
}
