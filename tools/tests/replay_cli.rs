//! `pt-replay` end to end: the real binary over real journals in temporary directories.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]

use std::path::Path;
use std::process::{Command, Output};

use engine::{Event, State, Timestamp};
use journal::{Journal, JournalConfig, Seq, encode_snapshot, test_util};
use serde_json::Value;

#[path = "../../journal/testkit/history.rs"]
#[allow(dead_code)]
mod history;

/// A journal of `batches` random batches in `dir`, with a snapshot after batch `snapshot_at`;
/// returns every event and the state after each batch, with its last sequence number.
fn make_journal(dir: &Path, batches: usize, snapshot_at: usize) -> (Vec<Event>, Vec<(Seq, State)>) {
    let path = journal::path_in(dir);
    let (journal, _) = Journal::open(&path, JournalConfig::default()).unwrap();
    let mut history = history::History::new(State::new(), 42, history::Shape::default());
    let mut events = Vec::new();
    let mut states = Vec::new();
    for i in 0..batches {
        let batch = history.next_batch();
        // Batch i is appended at i hours past the epoch.
        let receipt = journal.append_batch(&batch, Timestamp(i as i64 * 3_600_000_000)).unwrap();
        events.extend(batch);
        states.push((receipt.last_seq, history.state().clone()));
        if i == snapshot_at {
            journal
                .store_snapshot(encode_snapshot(history.state(), receipt.last_seq).unwrap())
                .unwrap();
        }
    }
    (events, states)
}

fn pt_replay(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pt-replay"))
        .args(args)
        .arg("--data")
        .arg(dir)
        .env_remove("CI")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

#[test]
fn audit_of_a_clean_journal_prints_one_line_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (events, states) = make_journal(dir.path(), 60, 30);
    let state = &states.last().unwrap().1;
    let output = pt_replay(&["audit"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(&format!(
            "clean: {} events, {} accounts, digest {}",
            events.len(),
            state.accounts().len(),
            state.digest()
        )),
        "{text}"
    );
    assert!(text.contains("events/s"), "{text}");

    let report = json(&pt_replay(&["audit", "--json"], dir.path()));
    assert_eq!(report["clean"], true);
    assert_eq!(report["events"], events.len());
    assert_eq!(report["digest"], state.digest().to_string());
    assert_eq!(report["snapshots_verified"], 1);
    assert!(report["problem"].is_null());
}

#[test]
fn audit_names_the_first_corrupt_record_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = make_journal(dir.path(), 40, 10);
    let bad = Seq(events.len() as u64 / 2);
    test_util::flip_record_payload_byte(&journal::path_in(dir.path()), bad, 3).unwrap();

    let output = pt_replay(&["audit"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stdout(&output);
    assert!(
        text.starts_with(&format!("FAILED at sequence number {bad}: record problem")),
        "{text}"
    );
    assert!(text.contains("checksum mismatch"), "{text}");
    // Every record before the damaged one was applied; the damaged one was not.
    let applied = bad.0 - 1;
    assert!(text.contains(&format!("({applied} events applied before it was found)")), "{text}");

    let report = json(&pt_replay(&["audit", "--json"], dir.path()));
    assert_eq!(report["clean"], false);
    assert_eq!(report["problem"]["seq"], bad.0);
    assert_eq!(report["problem"]["kind"], "record");
    assert_eq!(report["events"], bad.0 - 1);

    // The journal refuses to open at the same sequence number.
    let err = Journal::open(journal::path_in(dir.path()), JournalConfig::default()).unwrap_err();
    assert_eq!(err.seq(), Some(bad));
    // And rebuild refuses too, naming it.
    let output = pt_replay(&["rebuild"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("record {bad}:")));
}

/// A file damaged under redb (a page of a batch flipped in the file, after a clean close):
/// redb's page check finds it when the audit opens the file (in its copy-on-write view), and the
/// audit reports that as the problem it found (exit 1, a JSON report), not as a run that could
/// not start; the file is left as it was.
#[test]
fn audit_of_a_file_redb_finds_damaged_reports_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    make_journal(dir.path(), 12, 100);
    let path = journal::path_in(dir.path());
    // Batch 6 (its records start after batches 0 to 5) was appended at 6 hours.
    let first = batch_first_seq(&path, 6);
    test_util::flip_batch_in_file(&path, first, Timestamp(6 * 3_600_000_000)).unwrap();
    let damaged = std::fs::read(&path).unwrap();

    let output = pt_replay(&["audit"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stdout(&output).starts_with("FAILED opening the file: "), "{output:?}");
    let report = json(&pt_replay(&["audit", "--json"], dir.path()));
    assert_eq!(report["clean"], false);
    assert_eq!(report["problem"]["kind"], "file");
    assert!(std::fs::read(&path).unwrap() == damaged, "the audit changed the file");
}

/// The first sequence number of batch `batch` of [`make_journal`] (appended at `batch` hours).
fn batch_first_seq(path: &Path, batch: i64) -> Seq {
    let journal = Journal::open_read_only(path, JournalConfig::default()).unwrap();
    let records: Vec<_> = journal.read_records(Seq(1)).unwrap().map(Result::unwrap).collect();
    records.iter().find(|r| r.recorded_at == Timestamp(batch * 3_600_000_000)).unwrap().seq
}

/// The reading commands never write the journal they read: a cleanly closed file is byte for
/// byte the same after `audit`, `show` and `explain`, and they run while another reader holds
/// the file (a writer, such as the master, is refused then).
#[test]
fn reading_commands_leave_the_file_as_it_was_and_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = make_journal(dir.path(), 20, 10);
    let path = journal::path_in(dir.path());
    let before = std::fs::read(&path).unwrap();
    let order = events
        .iter()
        .find_map(|e| match e {
            Event::OrderFilled(fill) => Some(fill.order.id),
            _ => None,
        })
        .unwrap();
    // Another reader holds the file all along.
    let reader = Journal::open_read_only(&path, JournalConfig::default()).unwrap();
    assert!(reader.is_read_only());
    let err = Journal::open_unrecovered(&path, JournalConfig::default()).unwrap_err();
    assert!(matches!(err, journal::OpenError::Busy { .. }), "{err}");
    let order = order.to_string();
    for args in [
        &["audit"][..],
        &["audit", "--json"],
        &["show"],
        &["show", "--at", "5"],
        &["explain", "--order", &order],
    ] {
        let output = pt_replay(args, dir.path());
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
        assert!(std::fs::read(&path).unwrap() == before, "{args:?} changed the file");
    }
    // A read-only journal refuses writes, whatever they are.
    let err = reader.put_meta("key", b"value").unwrap_err();
    assert!(err.to_string().contains("opened read-only"), "{err}");
    assert!(std::fs::read(&path).unwrap() == before);
}

/// A copy of the journal [`make_journal`] made in `dir` with `batch` batches, taken while a
/// writer holds it open, after batch `batch` (at `batch` hours): what a crash leaves, a file
/// redb must recover before reading it.
fn copy_while_open(dir: &Path, batch: usize) -> tempfile::TempDir {
    let path = journal::path_in(dir);
    let (journal, _) = Journal::open(&path, JournalConfig::default()).unwrap();
    // The same history as make_journal's (same seed), past the batches already stored.
    let mut history = history::History::new(State::new(), 42, history::Shape::default());
    for _ in 0..batch {
        history.next_batch();
    }
    journal.append_batch(&history.next_batch(), Timestamp(batch as i64 * 3_600_000_000)).unwrap();
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&path, journal::path_in(copy.path())).unwrap();
    drop(journal);
    copy
}

/// A journal its master left without closing it (killed, crashed) needs redb's recovery: the
/// reading commands run it in memory, read the recovered journal and leave the file as it was.
/// When its last commit does not verify, the audit reports the file (exit 1).
#[test]
fn reading_a_journal_left_by_a_crash_recovers_it_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    make_journal(dir.path(), 6, 100);
    let copy = copy_while_open(dir.path(), 6);
    let path = journal::path_in(copy.path());
    let left = std::fs::read(&path).unwrap();
    for _ in 0..2 {
        let output = pt_replay(&["audit"], copy.path());
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        assert!(stdout(&output).starts_with("clean: "), "{output:?}");
        assert!(std::fs::read(&path).unwrap() == left, "the audit changed the file");
    }
    let output = pt_replay(&["show"], copy.path());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    // Not closed cleanly, the file still needs recovery: a read-only redb open refuses it.
    assert!(matches!(redb::ReadOnlyDatabase::open(&path), Err(redb::DatabaseError::RepairAborted)));

    // The same crash, with the last commit's pages damaged since.
    let copy = copy_while_open(dir.path(), 7);
    let path = journal::path_in(copy.path());
    let first = batch_first_seq(&journal::path_in(dir.path()), 7);
    test_util::flip_batch_in_file(&path, first, Timestamp(7 * 3_600_000_000)).unwrap();
    let damaged = std::fs::read(&path).unwrap();
    let output = pt_replay(&["audit"], copy.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stdout(&output).starts_with("FAILED opening the file: "), "{output:?}");
    assert!(stdout(&output).contains("last commit does not verify"), "{output:?}");
    let report = json(&pt_replay(&["audit", "--json"], copy.path()));
    assert_eq!(report["problem"]["kind"], "file");
    assert!(std::fs::read(&path).unwrap() == damaged, "the audit changed the file");
}

#[test]
fn audit_of_a_missing_journal_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let output = pt_replay(&["audit"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no journal at"));
    assert!(!journal::path_in(dir.path()).exists(), "the audit must not create a journal");
    // An empty file is not a journal either, and stays empty.
    std::fs::write(journal::path_in(dir.path()), b"").unwrap();
    let output = pt_replay(&["audit"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is empty: not a journal"));
    assert_eq!(std::fs::metadata(journal::path_in(dir.path())).unwrap().len(), 0);
}

#[test]
fn rebuild_writes_a_snapshot_that_the_audit_and_the_open_agree_with() {
    let dir = tempfile::tempdir().unwrap();
    let (events, states) = make_journal(dir.path(), 50, usize::MAX);
    let output = pt_replay(&["rebuild", "--json"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = json(&output);
    assert_eq!(report["snapshot_seq"], events.len());
    assert_eq!(report["digest"], states.last().unwrap().1.digest().to_string());
    let audit = json(&pt_replay(&["audit", "--json"], dir.path()));
    assert_eq!(audit["snapshots_verified"], 1);
    let (_, recovered) =
        Journal::open(journal::path_in(dir.path()), JournalConfig::default()).unwrap();
    assert_eq!(recovered.snapshot_used, Some(Seq(events.len() as u64)));
    assert_eq!(recovered.events_replayed, 0);
    drop(recovered);
    // Shown from the snapshot alone, the state still says when its last record was appended
    // (the last of the 50 batches, at 49 hours).
    let shown = json(&pt_replay(&["show", "--json"], dir.path()));
    assert_eq!(shown["at"]["seq"], events.len());
    assert_eq!(shown["at"]["recorded_at"], "1970-01-03T01:00:00Z", "{shown}");
}

#[test]
fn show_gives_the_state_at_any_sequence_number_or_time() {
    let dir = tempfile::tempdir().unwrap();
    let (events, states) = make_journal(dir.path(), 60, 20);
    // A point between an interval's outcomes is shown as such: a state no one saw.
    let (header, interval, orders) = events
        .iter()
        .enumerate()
        .find_map(|(i, e)| match e {
            Event::IntervalSettled(s) if s.orders >= 2 => {
                Some((i as u64 + 1, s.interval.0, s.orders))
            }
            _ => None,
        })
        .expect("an interval with two orders or more");
    let inside =
        json(&pt_replay(&["show", "--json", "--at", &(header + 1).to_string()], dir.path()));
    assert_eq!(inside["at"]["inside_interval"]["interval"], interval);
    assert_eq!(inside["at"]["inside_interval"]["outcomes_applied"], 1);
    assert_eq!(inside["at"]["inside_interval"]["orders"], orders);
    let text = stdout(&pt_replay(&["show", "--at", &(header + 1).to_string()], dir.path()));
    assert!(
        text.contains(&format!("inside interval {interval}: 1 of its {orders} outcomes")),
        "{text}"
    );
    let whole =
        json(&pt_replay(&["show", "--json", "--at", &(header + orders).to_string()], dir.path()));
    assert!(whole["at"]["inside_interval"].is_null(), "{whole}");
    for index in [0, 5, 19, 20, 21, 40, 59] {
        let (seq, state) = &states[index];
        let at = json(&pt_replay(&["show", "--json", "--at", &seq.to_string()], dir.path()));
        assert_eq!(at["at"]["seq"], seq.0);
        assert_eq!(at["at"]["digest"], state.digest().to_string());
        assert_eq!(at["accounts"].as_array().unwrap().len(), state.accounts().len());
        // Batch `index` was appended at `index` hours: half an hour later shows the same state.
        let time = format!("1970-01-01T{:02}:30:00Z", index);
        if index < 24 {
            let at = json(&pt_replay(&["show", "--json", "--at-time", &time], dir.path()));
            assert_eq!(at["at"]["seq"], seq.0, "{time}");
            assert_eq!(at["at"]["digest"], state.digest().to_string());
        }
    }
    let (seq, state) = states.last().unwrap();
    let account = &state.accounts()[0];
    let output = pt_replay(&["show", "--account", account.username.as_str()], dir.path());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains(&format!("state after sequence number {seq}")), "{text}");
    assert!(text.contains(&format!("cash {}", account.cash)), "{text}");
    let shown =
        json(&pt_replay(&["show", "--json", "--account", account.username.as_str()], dir.path()));
    assert_eq!(shown["account"]["cash"], account.cash.to_string());
    assert_eq!(shown["account"]["history"].as_array().unwrap().len(), account.history.len());
    assert_eq!(shown["account"]["holdings"].as_array().unwrap().len(), account.holdings.len());

    let beyond = pt_replay(&["show", "--at", &(seq.0 + 1).to_string()], dir.path());
    assert_eq!(beyond.status.code(), Some(1));
    let nobody = pt_replay(&["show", "--account", "nobody"], dir.path());
    assert_eq!(nobody.status.code(), Some(1));
}

#[test]
fn explain_shows_what_a_fill_and_a_rejection_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = make_journal(dir.path(), 80, 40);
    // The outcomes of each interval, with their queue turns: a fill whose turn differs from
    // its place among the interval's records (the journal holds them by account), so that
    // the turn shown cannot be the record's place.
    let mut intervals: Vec<Vec<&Event>> = Vec::new();
    for e in &events {
        match e {
            Event::IntervalSettled(_) => intervals.push(Vec::new()),
            _ if e.outcome_order().is_some() => {
                intervals.last_mut().expect("outcomes follow a header").push(e);
            }
            _ => {}
        }
    }
    let (fill, place, keys) = intervals
        .iter()
        .find_map(|outcomes| {
            let orders = outcomes.iter().filter_map(|e| e.outcome_order());
            let keys: Vec<_> = orders.map(|o| (o.account, o.queue_key())).collect();
            outcomes.iter().enumerate().find_map(|(place, e)| match e {
                Event::OrderFilled(f)
                    if keys.iter().filter(|(_, k)| *k < f.order.queue_key()).count() != place =>
                {
                    Some((f.clone(), place + 1, keys.clone()))
                }
                _ => None,
            })
        })
        .expect("the history fills an order whose queue turn is not its place");
    let output =
        pt_replay(&["explain", "--json", "--order", &fill.order.id.to_string()], dir.path());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let explained = json(&output);
    assert_eq!(explained["outcome"]["status"], "filled");
    // The worker as its UUID, the way `pt-master worker list` shows it.
    let worker = uuid::Uuid::from_u128(fill.order.worker.0).to_string();
    assert_eq!(explained["order"]["worker"], worker);
    assert_eq!(explained["outcome"]["price"], fill.price.to_string());
    assert_eq!(explained["outcome"]["cash_after"], fill.cash_after.to_string());
    assert_eq!(explained["interval"]["tick"]["close"], fill.price.to_string());
    // Its turn in the queue and among its account's orders, from the keys of its interval's
    // outcomes, not its place among them.
    let key = fill.order.queue_key();
    assert_ne!(explained["interval"]["turn"], place);
    let mine: Vec<_> = keys.iter().filter(|(a, _)| *a == fill.order.account).collect();
    assert_eq!(explained["interval"]["orders"], keys.len());
    assert_eq!(explained["interval"]["turn"], 1 + keys.iter().filter(|(_, k)| *k < key).count());
    assert_eq!(
        explained["interval"]["account_turn"],
        1 + mine.iter().filter(|(_, k)| *k < key).count()
    );
    assert_eq!(explained["interval"]["account_orders"], mine.len());
    let text = stdout(&pt_replay(&["explain", "--order", &fill.order.id.to_string()], dir.path()));
    assert!(text.contains("FILLED") && text.contains(&fill.price.to_string()), "{text}");
    let turn = format!("turn {} of {} in the queue", explained["interval"]["turn"], keys.len());
    assert!(text.contains(&turn), "{text}");

    let rejection = events.iter().find_map(|e| match e {
        Event::OrderRejected(r) => Some(r.clone()),
        _ => None,
    });
    let rejection = rejection.expect("the history rejects orders");
    let explained = json(&pt_replay(
        &["explain", "--json", "--order", &rejection.order.id.to_string()],
        dir.path(),
    ));
    assert_eq!(explained["outcome"]["status"], "rejected");
    assert_eq!(explained["outcome"]["reason"], rejection.reason.as_str());
    assert_eq!(explained["outcome"]["cash_seen"], rejection.cash_seen.to_string());

    let unknown = pt_replay(&["explain", "--order", "1"], dir.path());
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no outcome"));
}

/// A journal that ends inside an interval (its header announced outcomes that never came) does
/// not open; rebuild refuses it too, instead of storing a snapshot that would hide it.
#[test]
fn rebuild_refuses_a_journal_that_ends_inside_an_interval() {
    let dir = tempfile::tempdir().unwrap();
    make_journal(dir.path(), 5, usize::MAX);
    test_util::append_an_unfinished_interval(&journal::path_in(dir.path())).unwrap();
    let output = pt_replay(&["rebuild"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ends inside interval 1000"), "{stderr}");
    let journal =
        Journal::open_unrecovered(journal::path_in(dir.path()), JournalConfig::default()).unwrap();
    assert!(journal.snapshots().unwrap().is_empty(), "no snapshot was stored");
}

/// A snapshot past the journal's end is the one sign that committed records are gone: a
/// rebuild, which would delete it, refuses unless told `--accept-lost-records`.
#[test]
fn rebuild_keeps_the_sign_of_lost_records_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    let (_, states) = make_journal(dir.path(), 8, 7);
    let path = journal::path_in(dir.path());
    let (beyond, kept_head) = (states[7].0, states[5].0);
    let mut last = beyond;
    while last > kept_head {
        last = Seq(test_util::remove_batch(&path, last).unwrap().0 - 1);
    }
    test_util::set_head(&path, Some(kept_head.0)).unwrap();
    let output = pt_replay(&["rebuild"], dir.path());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("the snapshot at record {beyond} covers records past")),
        "{stderr}"
    );
    assert!(stderr.contains("--accept-lost-records"), "{stderr}");
    let snapshots = |path: &Path| {
        let journal = Journal::open_unrecovered(path, JournalConfig::default()).unwrap();
        journal.snapshots().unwrap().iter().map(|s| s.seq).collect::<Vec<_>>()
    };
    assert_eq!(snapshots(&path), [beyond], "nothing was written");

    let output = pt_replay(&["rebuild", "--accept-lost-records"], dir.path());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(snapshots(&path), [kept_head]);
}

/// Damage anywhere in a cleanly closed file ends as a report: one byte flipped at a time,
/// across the whole file, the audit exits 0 (the byte was unused) or 1 (a problem found), never
/// a crash or "could not run", and never changes the file. redb's page check runs in the
/// read-only view as it does for the master: a byte the audit passes as unused is one the
/// master's open passes too.
#[test]
fn audit_of_a_file_damaged_anywhere_reports_and_never_crashes() {
    let dir = tempfile::tempdir().unwrap();
    make_journal(dir.path(), 8, 4);
    let path = journal::path_in(dir.path());
    let clean = std::fs::read(&path).unwrap();
    let step = (clean.len() / 150).max(1);
    let mut found = 0;
    for at in (0..clean.len()).step_by(step) {
        let mut damaged = clean.clone();
        damaged[at] ^= 0x5a;
        std::fs::write(&path, &damaged).unwrap();
        let output = pt_replay(&["audit"], dir.path());
        let code = output.status.code();
        assert!(matches!(code, Some(0 | 1)), "byte {at}: {output:?}");
        let text = stdout(&output);
        assert!(text.starts_with("clean: ") || text.starts_with("FAILED"), "byte {at}: {text}");
        assert!(std::fs::read(&path).unwrap() == damaged, "byte {at}: the audit changed the file");
        if code == Some(1) {
            found += 1;
        } else {
            // Passed as unused: the master's open, which checks and writes, agrees.
            let copy = tempfile::tempdir().unwrap();
            std::fs::copy(&path, journal::path_in(copy.path())).unwrap();
            let opened = Journal::open(journal::path_in(copy.path()), JournalConfig::default());
            assert!(opened.is_ok(), "byte {at}: the audit passed what the master refuses");
        }
    }
    assert!(found > 0, "no flipped byte was found");
}
