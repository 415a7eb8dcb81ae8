//! The journal over real redb files in temporary directories: appends and reads, corruption
//! detection, snapshot fallback, sessions, meta and the tick index.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use std::path::{Path, PathBuf};

use engine::{Event, State, Symbol, Timestamp};
use journal::{
    AppendError, AuditConfig, Corruption, Journal, JournalConfig, OpenError, ProblemKind,
    ReadError, RecoveryWarning, Seq, SnapshotInvalid, VerifyOnOpen, WriteError, audit,
    encode_snapshot, test_util,
};

#[path = "../testkit/history.rs"]
#[allow(dead_code)]
mod history;

use history::{History, Shape};

fn config() -> JournalConfig {
    JournalConfig { snapshot_every_events: 50, ..JournalConfig::default() }
}

/// Appends `batches` random batches; returns the state after them.
fn fill(journal: &Journal, seed: u64, batches: usize) -> State {
    let mut history = History::new(journal.replay_end(), seed, Shape::default());
    for i in 0..batches {
        let events = history.next_batch();
        if !events.is_empty() {
            journal.append_batch(&events, Timestamp(1_000 + i as i64)).unwrap();
        }
    }
    history.state().clone()
}

trait ReplayEnd {
    fn replay_end(&self) -> State;
}

impl ReplayEnd for Journal {
    fn replay_end(&self) -> State {
        let options = journal::ReplayOptions {
            from: journal::ReplayFrom::Genesis,
            to: journal::ReplayTo::End,
            verify: VerifyOnOpen::FullChain,
        };
        self.replay(options, &mut |_| {}).unwrap().state
    }
}

fn new_journal() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = journal::path_in(dir.path());
    (dir, path)
}

fn snapshot_now(journal: &Journal, state: &State) -> Seq {
    journal.store_snapshot(encode_snapshot(state, journal.last_seq()).unwrap()).unwrap()
}

fn clean_audit(journal: &Journal) -> journal::AuditReport {
    let report = audit(journal, AuditConfig::default(), &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problem);
    report
}

#[test]
fn appends_are_read_back_in_order_and_survive_reopening() {
    let (_dir, path) = new_journal();
    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.last_seq, Seq(0));
    assert!(recovered.warnings.is_empty());
    let mut history = History::new(State::new(), 7, Shape::default());
    let mut all: Vec<Event> = Vec::new();
    for i in 0..40 {
        let events = history.next_batch();
        let receipt = journal.append_batch(&events, Timestamp(100 + i)).unwrap();
        assert_eq!(receipt.first_seq, Seq(all.len() as u64 + 1));
        all.extend(events);
        assert_eq!(receipt.last_seq, Seq(all.len() as u64));
    }
    assert!(matches!(journal.append_batch(&[], Timestamp(0)), Err(AppendError::EmptyBatch)));
    let read: Vec<_> = journal.read_records(Seq(1)).unwrap().map(Result::unwrap).collect();
    assert_eq!(read.len(), all.len());
    for (i, (record, event)) in read.iter().zip(&all).enumerate() {
        assert_eq!(record.seq, Seq(i as u64 + 1));
        assert_eq!(&record.event, event);
    }
    // Reading from any record, inside a batch or at its start, gives the rest in order.
    for from in 1..=all.len() + 1 {
        let tail: Vec<_> =
            journal.read_records(Seq(from as u64)).unwrap().map(|r| r.unwrap().event).collect();
        assert_eq!(tail, all[from - 1..].to_vec(), "from {from}");
    }
    assert_eq!(journal.read_records(Seq(all.len() as u64 + 5)).unwrap().count(), 0);
    drop(journal);

    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.last_seq, Seq(all.len() as u64));
    assert_eq!(&recovered.state, history.state());
    assert_eq!(recovered.digest, history.state().digest());
    assert_eq!(clean_audit(&journal).events, all.len() as u64);
}

#[test]
fn journals_written_by_earlier_builds_are_read_and_appended_to() {
    // As builds before the compact encoding (layout 1, rkyv payloads) and before layout 2
    // (layout 1, format-2 payloads) left the file.
    type Rewrite = fn(&Path) -> Result<u64, Box<dyn std::error::Error + Send + Sync>>;
    let rewrites: [(&str, Rewrite); 2] = [
        ("format 1", test_util::rewrite_as_format_1),
        ("format 2", test_util::rewrite_as_format_2),
    ];
    for (name, rewrite) in rewrites {
        let (_dir, path) = new_journal();
        let (journal, _) = Journal::open(&path, config()).unwrap();
        let state = fill(&journal, 11, 20);
        let before: Vec<_> = journal.read_records(Seq(1)).unwrap().map(Result::unwrap).collect();
        drop(journal);
        let rewritten = rewrite(&path).unwrap();
        assert_eq!(rewritten, before.len() as u64, "{name}");

        let (journal, recovered) = Journal::open(&path, config()).unwrap();
        assert_eq!(recovered.state, state, "{name}");
        let after: Vec<_> = journal.read_records(Seq(1)).unwrap().map(Result::unwrap).collect();
        assert_eq!(after.len(), before.len(), "{name}");
        for (old, new) in after.iter().zip(&before) {
            assert_eq!(
                (old.seq, old.recorded_at, &old.event),
                (new.seq, new.recorded_at, &new.event),
                "{name}"
            );
            // The checksums are those of the rewritten records: the chain was re-linked.
            assert_ne!(old.crc, new.crc, "{name}");
        }
        // Reading from inside the old records starts at the right one.
        let mid = before.len() as u64 / 2;
        let tail: Vec<_> = journal.read_records(Seq(mid)).unwrap().map(Result::unwrap).collect();
        assert_eq!(tail.first().map(|r| r.seq), Some(Seq(mid)), "{name}");
        // New batches (layout 2) chain onto the old records; the whole file audits clean.
        let state = {
            let mut history = History::new(recovered.state, 12, Shape::default());
            for i in 0..10 {
                let events = history.next_batch();
                if !events.is_empty() {
                    journal.append_batch(&events, Timestamp(5_000 + i)).unwrap();
                }
            }
            history.state().clone()
        };
        let report = clean_audit(&journal);
        assert!(report.events > before.len() as u64, "{name}");
        drop(journal);
        let (_journal, recovered) = Journal::open(&path, config()).unwrap();
        assert_eq!(recovered.state, state, "{name}");
    }
}

#[test]
fn a_broken_link_from_a_new_batch_onto_old_records_is_found_wherever_reading_starts() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let state = fill(&journal, 13, 8);
    drop(journal);
    test_util::rewrite_as_format_2(&path).unwrap();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let mut history = History::new(state, 14, Shape::default());
    let events = loop {
        let events = history.next_batch();
        if !events.is_empty() {
            break events;
        }
    };
    let first = journal.append_batch(&events, Timestamp(9_000)).unwrap().first_seq;
    assert_eq!(clean_audit(&journal).last_seq, journal.last_seq());
    drop(journal);
    // The new (layout-2) batch now claims to follow another record than the old last one.
    test_util::set_batch_link(&path, first, 0xbad_c0de).unwrap();

    let err = Journal::open(&path, config()).unwrap_err();
    assert_eq!(err.seq(), Some(first), "{err}");
    let journal = Journal::open_unrecovered(&path, config()).unwrap();
    for from in [Seq(1), Seq(first.0 - 1), first] {
        // Found when the reader starts (from the batch itself) or on the way to it.
        let bad = match journal.read_records(from) {
            Err(e) => e,
            Ok(mut records) => records.find_map(Result::err).unwrap(),
        };
        assert!(
            matches!(&bad, ReadError::Corrupt { seq, what: Corruption::BrokenLink { .. }, .. } if *seq == first),
            "from {from}: {bad}"
        );
    }
}

/// A new journal is readable by its owner only, whatever the umask or the directory's mode: it
/// holds every account's password hash and email.
#[cfg(unix)]
#[test]
fn a_new_journal_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("papertrader.redb");
    let (journal, _) = Journal::open(&path, config()).unwrap();
    drop(journal);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let (_dir, path) = new_journal();
    let (_journal, _) = Journal::open(&path, config()).unwrap();
    assert!(matches!(Journal::open(&path, config()), Err(OpenError::Busy { .. })));
}

#[test]
fn a_flipped_byte_stops_the_open_and_the_audit_at_its_sequence_number() {
    for (seq, offset) in [(1, 0), (17, 5), (30, 1_000)] {
        let (_dir, path) = new_journal();
        let (journal, _) = Journal::open(&path, config()).unwrap();
        let state = fill(&journal, 3, 30);
        snapshot_now(&journal, &state);
        let last = journal.last_seq();
        drop(journal);
        assert!(last.0 >= 30);
        test_util::flip_record_payload_byte(&path, Seq(seq), offset).unwrap();

        // The record is before the snapshot: the default full-chain check still finds it.
        let err = Journal::open(&path, config()).unwrap_err();
        assert_eq!(err.seq(), Some(Seq(seq)), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("record {seq}:")), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(matches!(
            err,
            OpenError::Read(ReadError::Corrupt { what: Corruption::Checksum { .. }, .. })
        ));

        let journal = Journal::open_unrecovered(&path, config()).unwrap();
        let report = audit(&journal, AuditConfig::default(), &mut |_| {}).unwrap();
        let problem = report.problem.unwrap();
        assert_eq!((problem.seq, problem.kind), (Seq(seq), ProblemKind::Record));
        assert_eq!(report.last_seq, Seq(seq - 1));
        let read: Vec<_> = journal.read_records(Seq(1)).unwrap().collect();
        assert_eq!(read.len(), seq as usize);
        assert_eq!(read.last().unwrap().as_ref().unwrap_err().seq(), Some(Seq(seq)));
    }
}

/// What opening (and, when it opens, auditing) a damaged file gave.
#[derive(Debug, PartialEq, Eq)]
enum Opened {
    Refused,
    Clean,
    Unclean,
}

#[test]
fn damage_to_the_file_itself_is_an_error_never_a_panic() {
    // Damage below the journal's records (redb's own pages: headers, B-tree nodes, the
    // allocator) is written straight into a copy of the file, page by page: a zeroed page, a
    // page of garbage, one flipped bit. redb trusts a cleanly closed file and may panic on such
    // damage, so the journal has redb check the file's page checksums when it opens.
    let (dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let state = fill(&journal, 9, 40);
    snapshot_now(&journal, &state);
    drop(journal);
    let pristine = std::fs::read(&path).unwrap();
    let damaged_path = dir.path().join("damaged.redb");
    let open = |bytes: &[u8]| {
        std::fs::write(&damaged_path, bytes).unwrap();
        std::panic::catch_unwind(|| match Journal::open(&damaged_path, config()) {
            Err(_) => Opened::Refused,
            Ok((journal, _)) => match audit(&journal, AuditConfig::default(), &mut |_| {}) {
                Ok(report) if report.is_clean() => Opened::Clean,
                _ => Opened::Unclean,
            },
        })
    };
    assert_eq!(open(&pristine).unwrap(), Opened::Clean);
    const PAGE: usize = 4096;
    let mut outcomes = Vec::new();
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    for start in (0..pristine.len()).step_by(PAGE) {
        let end = (start + PAGE).min(pristine.len());
        let mut zeroed = pristine.clone();
        zeroed[start..end].fill(0);
        let mut garbage = pristine.clone();
        for byte in &mut garbage[start..end] {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            *byte = noise as u8;
        }
        let mut flipped = pristine.clone();
        flipped[start + (noise as usize) % (end - start)] ^= 0x10;
        // A page of zeros is space redb has not written yet (the file grows by regions):
        // damage there changes nothing redb or the records rely on.
        let written = pristine[start..end].iter().any(|&b| b != 0);
        for (what, bytes) in [("zeroed", zeroed), ("garbage", garbage), ("flipped", flipped)] {
            match open(&bytes) {
                Ok(outcome) => outcomes.push((written, outcome)),
                Err(_) => panic!("a {what} page at offset {start} made the journal panic"),
            }
        }
    }
    // Most written pages are in use: damage to them is found, by redb or by the record
    // checksums. (Pages freed by later commits keep their old bytes, and damage there is not
    // damage to the journal.)
    let on_written: Vec<&Opened> = outcomes.iter().filter(|(w, _)| *w).map(|(_, o)| o).collect();
    let refused = on_written.iter().filter(|o| ***o != Opened::Clean).count();
    assert!(refused * 2 > on_written.len(), "{refused} of {} damages found", on_written.len());
}

#[test]
fn tail_only_verification_trusts_the_records_a_valid_snapshot_covers() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let state = fill(&journal, 4, 30);
    snapshot_now(&journal, &state);
    drop(journal);
    test_util::flip_record_payload_byte(&path, Seq(3), 0).unwrap();
    let tail_only = JournalConfig { verify_on_open: VerifyOnOpen::TailOnly, ..config() };
    let (journal, recovered) = Journal::open(&path, tail_only).unwrap();
    assert_eq!(recovered.state, state);
    drop(journal);
    // The default still finds it.
    assert_eq!(Journal::open(&path, config()).err().and_then(|e| e.seq()), Some(Seq(3)));
}

#[test]
fn swapped_and_missing_records_are_detected() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    fill(&journal, 5, 20);
    let last = journal.last_seq();
    drop(journal);

    // Records 1 to 5 are single-event batches (two listings, three accounts).
    test_util::swap_batches(&path, Seq(4), Seq(5)).unwrap();
    let err = Journal::open(&path, config()).unwrap_err();
    assert_eq!(err.seq(), Some(Seq(4)));
    assert!(matches!(
        err,
        OpenError::Read(ReadError::Corrupt { what: Corruption::SeqMismatch(Seq(5)), .. })
    ));
    test_util::swap_batches(&path, Seq(4), Seq(5)).unwrap();
    Journal::open(&path, config()).unwrap();

    let removed = test_util::remove_batch(&path, Seq(7)).unwrap();
    let err = Journal::open(&path, config()).unwrap_err();
    assert_eq!(err.seq(), Some(removed), "{err}");
    assert!(matches!(
        err,
        OpenError::Read(ReadError::Corrupt { what: Corruption::Gap { .. }, .. })
    ));

    let (_dir2, path2) = new_journal();
    let (journal, _) = Journal::open(&path2, config()).unwrap();
    fill(&journal, 5, 20);
    drop(journal);
    let removed = test_util::remove_batch(&path2, last).unwrap();
    let err = Journal::open(&path2, config()).unwrap_err();
    assert_eq!(err.seq(), Some(removed), "{err}");
    assert!(matches!(
        err,
        OpenError::Read(ReadError::Corrupt { what: Corruption::Missing { .. }, .. })
    ));
    // A journal whose head is damaged opens for reading but refuses to write.
    let journal = Journal::open_unrecovered(&path2, config()).unwrap();
    assert!(journal.halted().is_some());
    let events = History::new(State::new(), 1, Shape::default()).next_batch();
    assert!(matches!(
        journal.append_batch(&events, Timestamp(0)),
        Err(AppendError::Write(WriteError::Halted { .. }))
    ));
}

/// A head row that is gone, zero or behind the last record would hide the records after it:
/// the open and the audit name them instead, with a snapshot at the stored head or without one.
#[test]
fn records_past_a_damaged_head_are_found_not_hidden() {
    for with_snapshot in [false, true] {
        for head in [None, Some(0), Some(3)] {
            let (_dir, path) = new_journal();
            let (journal, _) = Journal::open(&path, config()).unwrap();
            let state = fill(&journal, 5, 20);
            if with_snapshot {
                snapshot_now(&journal, &state);
            }
            drop(journal);
            let stored = head.unwrap_or(0);
            test_util::set_head(&path, head).unwrap();
            let case = format!("head {head:?}, snapshot {with_snapshot}");
            let err = Journal::open(&path, config()).unwrap_err();
            assert!(
                matches!(
                    &err,
                    OpenError::Read(ReadError::Corrupt { what: Corruption::PastHead { .. }, .. })
                ),
                "{case}: {err}"
            );
            assert_eq!(err.seq(), Some(Seq(stored + 1)), "{case}: {err}");
            let journal = Journal::open_unrecovered(&path, config()).unwrap();
            let report = journal::audit(&journal, AuditConfig::default(), &mut |_| {}).unwrap();
            assert!(!report.is_clean(), "{case}: the audit found nothing");
        }
    }
}

/// An empty file where the journal should be (a truncated copy) is refused, not taken for a
/// new journal: it stays empty, and only a missing file makes a new journal.
#[test]
fn an_empty_journal_file_is_refused_not_started_over() {
    let (_dir, path) = new_journal();
    std::fs::write(&path, b"").unwrap();
    for _ in 0..2 {
        let err = Journal::open(&path, config()).map(|_| ()).unwrap_err();
        assert!(matches!(&err, OpenError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("the file is empty"), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "the file was written");
    }
    std::fs::remove_file(&path).unwrap();
    // A creation cut short leaves only its `.new` file beside (made whole, then renamed into
    // place): the next open starts again from scratch.
    let mut partial = path.clone().into_os_string();
    partial.push(".new");
    std::fs::write(&partial, b"half a journal").unwrap();
    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.last_seq, Seq(0));
    assert!(!std::path::Path::new(&partial).exists(), "the partial file is gone");
    drop(journal);
    let (_journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.last_seq, Seq(0));
}

/// A journal that lost its format row is damaged, not new: the open refuses it and leaves its
/// records and head alone.
#[test]
fn a_journal_without_its_format_row_is_refused_not_reset() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    fill(&journal, 5, 20);
    let last = journal.last_seq();
    drop(journal);
    test_util::remove_format(&path).unwrap();
    for _ in 0..2 {
        let err = Journal::open_unrecovered(&path, config()).unwrap_err();
        assert!(matches!(&err, OpenError::NoFormat { .. }), "{err}");
        assert!(err.to_string().contains("no format row"), "{err}");
    }
    // Nothing was written: with the row back, the journal opens whole.
    test_util::restore_format(&path).unwrap();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    assert_eq!(journal.last_seq(), last);
}

fn snapshot_warning_seqs(warnings: &[RecoveryWarning]) -> Vec<Seq> {
    warnings
        .iter()
        .filter_map(|w| match w {
            RecoveryWarning::SnapshotIgnored { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

/// A last commit that does not verify (a crash during it, or damage to its pages since) is
/// rolled back by the master's open, which says so; a tool's open refuses the file (here
/// without a byte changed), so an audit never rolls a journal back itself.
#[cfg(unix)]
#[test]
fn a_last_commit_that_does_not_verify_is_rolled_back_only_by_the_master_and_said() {
    let (_dir, path) = new_journal();
    // A process that crashes right after its twelfth commit: no closing commit follows it.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pt-journal-crash-child"))
        .arg(&path)
        .args(["11", "1000000", "12", "abort"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "it aborts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let commits: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("commit "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    let [.., before, last] = commits[..] else { panic!("fewer than two commits: {stdout}") };
    let before = Seq(before);
    // Then the pages of that last commit are damaged (or the crash had torn it). The child
    // stamps each batch with 1_700_000_000_000_000 plus its last record.
    let recorded_at = Timestamp(1_700_000_000_000_000 + i64::try_from(last).unwrap());
    test_util::flip_batch_in_file(&path, Seq(before.0 + 1), recorded_at).unwrap();
    let damaged = std::fs::read(&path).unwrap();

    let tools =
        JournalConfig { unverified_last_commit: journal::UnverifiedLastCommit::Refuse, ..config() };
    for _ in 0..2 {
        let err = Journal::open_unrecovered(&path, tools.clone()).unwrap_err();
        assert!(matches!(err, OpenError::LastCommitUnverified { .. }), "{err}");
        assert!(err.to_string().contains("last commit does not verify"), "{err}");
        assert!(std::fs::read(&path).unwrap() == damaged, "the tool's open changed the file");
    }

    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(journal.last_seq(), before, "the commit before");
    assert_eq!(recovered.warnings.first(), Some(&RecoveryWarning::LastCommitRolledBack));
    assert!(journal.rolled_back_last_commit());
    clean_audit(&journal);
    drop(journal);
    // Once rolled back, the file verifies: the next opens are plain.
    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert!(!journal.rolled_back_last_commit());
    assert!(!recovered.warnings.contains(&RecoveryWarning::LastCommitRolledBack));
    drop(journal);
    assert!(Journal::open_unrecovered(&path, tools).is_ok());
}

/// A journal of two accounts, one listed symbol and an interval per entry of `intervals`
/// (its orders settled by the engine, which checks no order id); the last record of each.
fn journal_of_orders(intervals: &[Vec<(u64, u64)>]) -> (tempfile::TempDir, Journal, Vec<Seq>) {
    use engine::{
        AccountId, Cash, ClientOrderId, Email, Engine, IntervalId, OpenAccount, Order, OrderId,
        OrderKind, OrderQueue, PasswordHash, Price, Qty, Side, Tick, TickSet, Username, WorkerId,
    };
    let (dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let mut engine = Engine::new();
    let aapl = Symbol::new("AAPL").unwrap();
    let mut setup = vec![engine.list_asset(aapl, Timestamp(0)).unwrap()];
    for name in ["alice", "bob"] {
        setup.push(
            engine
                .open_account(OpenAccount {
                    username: Username::new(name).unwrap(),
                    email: Email::new(&format!("{name}@example.com")).unwrap(),
                    password_hash: PasswordHash::new("!").unwrap(),
                    initial_cash: Cash::from_units(1000).unwrap(),
                    at: Timestamp(0),
                })
                .unwrap(),
        );
    }
    journal.append_batch(&setup, Timestamp(0)).unwrap();
    let close = Price::from_units(10).unwrap();
    let tick = Tick {
        symbol: aapl,
        open: close,
        high: close,
        low: close,
        close,
        volume: Qty::ZERO,
        time: Timestamp(0),
    };
    let ticks = TickSet::new(vec![tick]).unwrap();
    let mut seqs = Vec::new();
    for (n, orders) in intervals.iter().enumerate() {
        let mut queue = OrderQueue::new();
        for &(id, account) in orders {
            queue.push(Order {
                id: OrderId(id),
                client_id: ClientOrderId(id),
                account: AccountId(account),
                symbol: aapl,
                side: Side::Buy,
                qty: Qty::from_units(1).unwrap(),
                kind: OrderKind::Market,
                placed_at: Timestamp(1),
                worker: WorkerId(1),
            });
        }
        let at = Timestamp((n as i64 + 1) * 1_000);
        let events = engine.settle(IntervalId(n as u64 + 1), at, &ticks, &mut queue).unwrap();
        seqs.push(journal.append_batch(&events, at).unwrap().last_seq);
    }
    (dir, journal, seqs)
}

/// One order settled twice, with balances that agree: each outcome applies, but the audit
/// finds the second (the master gives each queued order a new id, above every earlier one,
/// and writes one outcome for it), in a later interval or in the same one.
#[test]
fn the_audit_finds_an_order_settled_twice() {
    let problem_of = |journal: &Journal| {
        let report = audit(journal, AuditConfig::default(), &mut |_| {}).unwrap();
        report.problem.expect("a problem")
    };
    // Order 1 again in the next interval.
    let (_dir, journal, seqs) = journal_of_orders(&[vec![(1, 1)], vec![(1, 1)]]);
    let problem = problem_of(&journal);
    assert_eq!(problem.seq, seqs[1], "the second outcome");
    assert_eq!(problem.kind, journal::ProblemKind::Apply);
    assert!(
        problem.message.contains("is not above the ids of earlier intervals (up to 1)"),
        "{}",
        problem.message
    );
    // Order 5 for both accounts in one interval (outcomes by account: alice's, then bob's).
    let (_dir, journal, seqs) = journal_of_orders(&[vec![(4, 1)], vec![(5, 1), (5, 2), (6, 2)]]);
    let report = audit(&journal, AuditConfig::default(), &mut |_| {}).unwrap();
    let problem = report.problem.expect("a problem");
    assert_eq!(problem.seq, Seq(seqs[1].0 - 1), "bob's order 5");
    assert!(problem.message.contains("order 5 (account 2"), "{}", problem.message);
    assert!(problem.message.contains("has an outcome already"), "{}", problem.message);
    assert_eq!(report.last_seq, Seq(problem.seq.0 - 1), "found at its own record");
    // The same ids, each once and rising from interval to interval, are clean.
    let (_dir, journal, _) = journal_of_orders(&[vec![(4, 1)], vec![(5, 1), (7, 2), (6, 2)]]);
    clean_audit(&journal);
}

/// A price never goes back (the master leaves an older tick out of its interval): a journal
/// whose interval carries a tick older than the asset's current one fails the audit there; a
/// tick restated (as old as the current one) is clean.
#[test]
fn the_audit_finds_a_price_that_goes_back() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let tick = |time: i64| {
        let price = engine::Price::from_raw(1_000);
        engine::Tick {
            symbol: Symbol::new("S0").unwrap(),
            open: price,
            high: price,
            low: price,
            close: price,
            volume: engine::Qty::from_raw(1),
            time: Timestamp(time),
        }
    };
    let settle = |interval: u64, time: i64| {
        vec![Event::IntervalSettled(engine::IntervalSettled {
            interval: engine::IntervalId(interval),
            at: Timestamp(i64::try_from(interval).unwrap() * 50_000),
            ticks: vec![tick(time)],
            orders: 0,
        })]
    };
    let listed = Event::AssetListed(engine::AssetListed {
        symbol: Symbol::new("S0").unwrap(),
        at: Timestamp(1),
    });
    journal.append_batch(&[listed], Timestamp(0)).unwrap();
    for (interval, time) in [(1, 1_000), (2, 2_000), (3, 2_000)] {
        journal.append_batch(&settle(interval, time), Timestamp(0)).unwrap();
    }
    clean_audit(&journal);
    let back = journal.append_batch(&settle(4, 1_500), Timestamp(0)).unwrap().last_seq;
    let report = audit(&journal, AuditConfig::default(), &mut |_| {}).unwrap();
    let problem = report.problem.expect("a problem");
    assert_eq!((problem.seq, problem.kind), (back, journal::ProblemKind::Invariant));
    assert!(problem.message.contains("a price goes back"), "{}", problem.message);
    // Times as everywhere else: RFC 3339, UTC.
    assert!(
        problem.message.contains(
            "S0's tick of 1970-01-01T00:00:00.0015Z after one of 1970-01-01T00:00:00.002Z"
        ),
        "{}",
        problem.message
    );
}

/// A store prunes to `snapshots_kept`, but rows past the head (their records lost) do not
/// count and are dropped, and the snapshot just stored stays. Before, a tool's store at the
/// head (`pt-replay rebuild`, which does not recover first) with two such rows kept only them,
/// deleting the valid older snapshot and the new one it had just reported stored.
#[test]
fn a_store_keeps_its_snapshot_and_drops_rows_past_the_head() {
    let (_dir, path) = new_journal();
    let kept = JournalConfig { snapshots_kept: 2, ..config() };
    // Three kept while the file is written, so the older one is still there.
    let (journal, _) =
        Journal::open(&path, JournalConfig { snapshots_kept: 3, ..config() }).unwrap();
    let older = snapshot_now(&journal, &fill(&journal, 21, 6));
    let head = {
        fill(&journal, 22, 6);
        journal.last_seq()
    };
    let beyond_1 = snapshot_now(&journal, &fill(&journal, 23, 6));
    let beyond_2 = snapshot_now(&journal, &fill(&journal, 24, 6));
    drop(journal);
    // The batches after `head` are lost, and the head row with them.
    let mut last = journal::Seq(beyond_2.0);
    while last > head {
        last = Seq(test_util::remove_batch(&path, last).unwrap().0 - 1);
    }
    assert_eq!(last, head, "batch boundaries");
    test_util::set_head(&path, Some(head.0)).unwrap();
    // A tool's open (no recovery) stores a snapshot at the head.
    let journal = Journal::open_unrecovered(&path, kept).unwrap();
    let state = journal.replay_end();
    let stored = snapshot_now(&journal, &state);
    assert_eq!(stored, head);
    let keys: Vec<Seq> = journal.snapshots().unwrap().iter().map(|s| s.seq).collect();
    assert_eq!(keys, [older, head], "past the head: {beyond_1} and {beyond_2}");
    assert_eq!(journal.newest_snapshot_seq(), head);
    drop(journal);
    let (_, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.snapshot_used, Some(head), "{:?}", recovered.warnings);
}

/// A snapshot past the end (its records lost with the head row) is ignored and replaced at the
/// open, and the snapshot schedule counts from the replacement: from the table, not from the
/// replaced snapshot's larger number, which would hold the next snapshot back until the
/// journal grew past it.
#[test]
fn a_snapshot_past_the_end_does_not_hold_the_schedule_back() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    fill(&journal, 8, 10);
    let kept_head = journal.last_seq();
    let state = fill(&journal, 9, 10);
    let beyond = snapshot_now(&journal, &state);
    assert!(beyond > kept_head);
    drop(journal);
    // The batches after `kept_head`, and the head with them, are lost.
    let mut last = beyond;
    while last > kept_head {
        last = Seq(test_util::remove_batch(&path, last).unwrap().0 - 1);
    }
    assert_eq!(last, kept_head, "batch boundaries");
    test_util::set_head(&path, Some(kept_head.0)).unwrap();
    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(journal.last_seq(), kept_head);
    assert_eq!(snapshot_warning_seqs(&recovered.warnings), [beyond], "{:?}", recovered.warnings);
    assert_eq!(journal.newest_snapshot_seq(), kept_head, "the replacement, at the head");
    // 50 events after it, a snapshot is due again.
    let mut history = History::new(recovered.state, 10, Shape::default());
    while journal.last_seq().0 < kept_head.0 + 50 {
        journal.append_batch(&history.next_batch(), Timestamp(9_000)).unwrap();
    }
    assert!(journal.snapshot_due());
}

#[test]
fn recovery_uses_the_newest_snapshot_and_replays_the_tail() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let state = fill(&journal, 6, 25);
    let at = snapshot_now(&journal, &state);
    let mut history = History::new(state, 66, Shape::default());
    for _ in 0..10 {
        journal.append_batch(&history.next_batch(), Timestamp(5)).unwrap();
    }
    drop(journal);
    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.snapshot_used, Some(at));
    assert_eq!(recovered.events_replayed, journal.last_seq().0 - at.0);
    assert_eq!(&recovered.state, history.state());
    assert!(recovered.warnings.is_empty());
    clean_audit(&journal);
}

#[test]
fn a_corrupt_snapshot_falls_back_to_the_events_with_a_warning() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let state = fill(&journal, 8, 30);
    let at = snapshot_now(&journal, &state);
    drop(journal);
    test_util::flip_snapshot_byte(&path, at, 10).unwrap();

    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.state, state);
    assert_eq!(recovered.snapshot_used, None);
    assert_eq!(snapshot_warning_seqs(&recovered.warnings), vec![at]);
    assert!(matches!(
        &recovered.warnings[0],
        RecoveryWarning::SnapshotIgnored { why: SnapshotInvalid::PayloadChecksum, .. }
    ));
    assert_eq!(recovered.warnings[1], RecoveryWarning::SnapshotRewritten { seq: at });
    clean_audit(&journal);
    drop(journal);
    // The rewritten snapshot is used next time.
    let (_, recovered) = Journal::open(&path, config()).unwrap();
    assert!(recovered.warnings.is_empty());
    assert_eq!(recovered.snapshot_used, Some(at));
}

type Damage = fn(&Path, Seq) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Damage to a snapshot, in its state, in its version bytes (the header checksum covers them:
/// damage, not a snapshot of another version to pass over quietly) or in its length field
/// (never trusted before the header's checksum: no overflow, no read sized by it): the audit
/// reports the snapshot, and recovery passes over it to the same state.
#[test]
fn a_damaged_snapshot_fails_the_audit_and_recovery_passes_over_it() {
    let damages: [(&str, Damage); 3] = [
        ("a state byte", |path, at| test_util::flip_snapshot_byte(path, at, 3)),
        ("its version", |path, at| test_util::set_snapshot_format(path, at, 99, false)),
        ("its length", |path, at| test_util::set_snapshot_declared_len(path, at, u64::MAX - 8)),
    ];
    for (what, damage) in damages {
        let (_dir, path) = new_journal();
        let (journal, _) = Journal::open(&path, config()).unwrap();
        let state = fill(&journal, 9, 30);
        let at = snapshot_now(&journal, &state);
        drop(journal);
        damage(&path, at).unwrap();
        let journal = Journal::open_unrecovered(&path, config()).unwrap();
        let report = audit(&journal, AuditConfig::default(), &mut |_| {}).unwrap();
        let problem = report.problem.unwrap_or_else(|| panic!("{what}: no problem reported"));
        assert_eq!((problem.seq, problem.kind), (at, ProblemKind::Snapshot), "{what}");
        if what != "a state byte" {
            let listed = journal.snapshots().unwrap();
            assert!(matches!(listed[0].header, Err(SnapshotInvalid::HeaderChecksum)), "{what}");
            assert_eq!(listed[0].bytes, 64, "{what}: a damaged header's length is not counted");
        }
        drop(journal);
        let (_journal, recovered) = Journal::open(&path, config()).unwrap();
        assert_eq!(recovered.state, state, "{what}");
        assert_eq!(recovered.snapshot_used, None, "{what}");
    }
}

#[test]
fn a_snapshot_of_another_version_is_ignored_and_rebuilt() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let state = fill(&journal, 10, 30);
    let at = snapshot_now(&journal, &state);
    drop(journal);
    test_util::set_snapshot_format(&path, at, 99, true).unwrap();
    {
        let journal = Journal::open_unrecovered(&path, config()).unwrap();
        let report = clean_audit(&journal);
        assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
    }
    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.state, state);
    assert!(matches!(
        &recovered.warnings[0],
        RecoveryWarning::SnapshotIgnored { why: SnapshotInvalid::Format(99), .. }
    ));
    let snapshots = journal.snapshots().unwrap();
    assert_eq!(snapshots.len(), 1);
    assert!(snapshots[0].header.is_ok());
    assert_eq!(clean_audit(&journal).snapshots_verified, 1);
}

#[test]
fn old_snapshots_are_pruned_and_snapshot_due_follows_the_config() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let mut history = History::new(State::new(), 11, Shape::default());
    let mut stored = Vec::new();
    while stored.len() < 4 {
        journal.append_batch(&history.next_batch(), Timestamp(1)).unwrap();
        if journal.snapshot_due() {
            assert!(journal.last_seq().0 - journal.newest_snapshot_seq().0 >= 50);
            stored.push(snapshot_now(&journal, history.state()));
        }
    }
    let kept: Vec<Seq> = journal.snapshots().unwrap().iter().map(|s| s.seq).collect();
    assert_eq!(kept, stored[2..].to_vec());
    assert_eq!(clean_audit(&journal).snapshots_verified, 2);
    // A snapshot that claims more records than the journal has is refused.
    let ahead = encode_snapshot(history.state(), Seq(journal.last_seq().0 + 1)).unwrap();
    assert!(journal.store_snapshot(ahead).is_err());
}

#[test]
fn replays_stop_at_a_sequence_number_or_a_time() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let mut history = History::new(State::new(), 12, Shape::default());
    let mut states = vec![(Seq(0), State::new())];
    for i in 0..30 {
        let receipt = journal.append_batch(&history.next_batch(), Timestamp(1_000 * i)).unwrap();
        states.push((receipt.last_seq, history.state().clone()));
        if i == 10 {
            snapshot_now(&journal, history.state());
        }
    }
    for (i, (seq, state)) in states.iter().enumerate() {
        for from in [journal::ReplayFrom::Genesis, journal::ReplayFrom::NewestSnapshot] {
            let options = journal::ReplayOptions {
                from,
                to: journal::ReplayTo::Seq(*seq),
                verify: VerifyOnOpen::FullChain,
            };
            let replayed = journal.replay(options, &mut |_| {}).unwrap();
            assert_eq!((replayed.last_seq, &replayed.state), (*seq, state));
        }
        if i > 0 {
            let options = journal::ReplayOptions {
                from: journal::ReplayFrom::NewestSnapshot,
                to: journal::ReplayTo::Time(Timestamp(1_000 * (i as i64 - 1))),
                verify: VerifyOnOpen::FullChain,
            };
            let replayed = journal.replay(options, &mut |_| {}).unwrap();
            assert_eq!(replayed.last_seq, *seq);
            assert_eq!(&replayed.state, state);
        }
    }
}

#[test]
fn sessions_and_meta_are_durable() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    journal.put_session([1; 32], b"alice").unwrap();
    journal.put_session([2; 32], b"bob").unwrap();
    journal.put_session([1; 32], b"alice again").unwrap();
    assert!(journal.remove_session([2; 32]).unwrap());
    assert!(!journal.remove_session([3; 32]).unwrap());
    journal.put_meta("next_order_id", &42u64.to_be_bytes()).unwrap();
    journal.put_meta("fingerprint", b"abc").unwrap();
    let too_big = vec![0u8; journal::limits::SESSION_BYTES_MAX + 1];
    assert!(matches!(journal.put_session([4; 32], &too_big), Err(WriteError::TooLarge { .. })));
    // Several in one commit; one too large refuses them all.
    journal.put_sessions(&[([5; 32], b"carol".to_vec()), ([6; 32], b"dave".to_vec())]).unwrap();
    let refused = journal.put_sessions(&[([7; 32], b"erin".to_vec()), ([8; 32], too_big)]);
    assert!(matches!(refused, Err(WriteError::TooLarge { .. })));
    assert!(journal.remove_session([6; 32]).unwrap());
    let events = History::new(State::new(), 1, Shape::default()).next_batch();
    journal.append_batch_with_meta(&events, Timestamp(0), &[("cursor", b"x")]).unwrap();
    drop(journal);
    let (journal, _) = Journal::open(&path, config()).unwrap();
    assert_eq!(
        journal.sessions().unwrap(),
        vec![([1; 32], b"alice again".to_vec()), ([5; 32], b"carol".to_vec())]
    );
    assert_eq!(journal.session([1; 32]).unwrap(), Some(b"alice again".to_vec()));
    assert_eq!(journal.meta("next_order_id").unwrap(), Some(42u64.to_be_bytes().to_vec()));
    assert_eq!(journal.meta("fingerprint").unwrap(), Some(b"abc".to_vec()));
    assert_eq!(journal.meta("cursor").unwrap(), Some(b"x".to_vec()));
    assert_eq!(journal.meta("absent").unwrap(), None);
    assert!(journal.remove_meta("cursor").unwrap());
    assert_eq!(journal.meta("cursor").unwrap(), None);
}

#[test]
fn settled_ticks_are_indexed_by_symbol_and_time() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let mut history = History::new(State::new(), 13, Shape::default());
    let mut expected: Vec<engine::Tick> = Vec::new();
    for _ in 0..60 {
        let events = history.next_batch();
        for event in &events {
            if let Event::IntervalSettled(s) = event {
                expected.extend(s.ticks.iter().copied());
            }
        }
        journal.append_batch(&events, Timestamp(0)).unwrap();
    }
    let s0 = Symbol::new("S0").unwrap();
    let mut want: Vec<_> = expected.iter().filter(|t| t.symbol == s0).copied().collect();
    want.sort_by_key(|t| t.time);
    assert!(want.len() > 3, "the history settles S0 a few times");
    let all = journal.ticks(s0, Timestamp(i64::MIN), Timestamp(i64::MAX), 1_000).unwrap();
    assert_eq!(all, want);
    let middle = journal.ticks(s0, want[1].time, want[3].time, 1_000).unwrap();
    assert_eq!(middle, want[1..3].to_vec());
    assert_eq!(
        journal.ticks(s0, want[0].time, Timestamp(i64::MAX), 2).unwrap(),
        want[..2].to_vec()
    );
    assert_eq!(journal.latest_tick(s0).unwrap(), want.last().copied());
    assert_eq!(journal.latest_tick(Symbol::new("NONE").unwrap()).unwrap(), None);
}

#[test]
fn a_restated_tick_keeps_its_row_and_a_revised_one_replaces_it() {
    let (_dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let symbol = Symbol::new("S0").unwrap();
    let tick = |time: i64, close: u64| engine::Tick {
        symbol,
        open: engine::Price::from_raw(close),
        high: engine::Price::from_raw(close),
        low: engine::Price::from_raw(close),
        close: engine::Price::from_raw(close),
        volume: engine::Qty::from_raw(7),
        time: Timestamp(time),
    };
    let settle = |interval: u64, ticks: Vec<engine::Tick>| {
        vec![Event::IntervalSettled(engine::IntervalSettled {
            interval: engine::IntervalId(interval),
            at: Timestamp(i64::try_from(interval).unwrap() * 50_000),
            ticks,
            orders: 0,
        })]
    };
    let everything = |journal: &Journal| {
        journal.ticks(symbol, Timestamp(i64::MIN), Timestamp(i64::MAX), 100).unwrap()
    };
    // The same tick three intervals running (a source with no newer price), then a revision
    // of it (same time, new price), then the revision restated.
    for interval in 1..=3 {
        journal.append_batch(&settle(interval, vec![tick(1_000, 10)]), Timestamp(0)).unwrap();
        assert_eq!(everything(&journal), vec![tick(1_000, 10)]);
    }
    journal.append_batch(&settle(4, vec![tick(1_000, 11)]), Timestamp(0)).unwrap();
    assert_eq!(everything(&journal), vec![tick(1_000, 11)]);
    journal.append_batch(&settle(5, vec![tick(1_000, 11)]), Timestamp(0)).unwrap();
    drop(journal);
    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.last_seq, Seq(5));
    assert_eq!(everything(&journal), vec![tick(1_000, 11)]);
    // After reopening: restated again, then a newer tick, then the older one revised while the
    // newer one is the latest, and both in one batch.
    journal.append_batch(&settle(6, vec![tick(1_000, 11)]), Timestamp(0)).unwrap();
    journal.append_batch(&settle(7, vec![tick(2_000, 12)]), Timestamp(0)).unwrap();
    journal.append_batch(&settle(8, vec![tick(1_000, 13)]), Timestamp(0)).unwrap();
    assert_eq!(everything(&journal), vec![tick(1_000, 13), tick(2_000, 12)]);
    let mut both = settle(9, vec![tick(2_000, 14)]);
    both.extend(settle(10, vec![tick(2_000, 12)]));
    journal.append_batch(&both, Timestamp(0)).unwrap();
    journal.append_batch(&settle(11, vec![tick(2_000, 12)]), Timestamp(0)).unwrap();
    assert_eq!(everything(&journal), vec![tick(1_000, 13), tick(2_000, 12)]);
    // A newer tick with the same prices as the last one is a new row.
    journal.append_batch(&settle(12, vec![tick(3_000, 12)]), Timestamp(0)).unwrap();
    assert_eq!(everything(&journal), vec![tick(1_000, 13), tick(2_000, 12), tick(3_000, 12)]);
    assert_eq!(journal.latest_tick(symbol).unwrap(), Some(tick(3_000, 12)));
    // In one batch, the latest row revised, then restated as it was committed before the
    // batch: the batch's last word stands.
    let mut back = settle(13, vec![tick(3_000, 15)]);
    back.extend(settle(14, vec![tick(3_000, 12)]));
    journal.append_batch(&back, Timestamp(0)).unwrap();
    assert_eq!(journal.latest_tick(symbol).unwrap(), Some(tick(3_000, 12)));
    clean_audit(&journal);
}

#[cfg(unix)]
#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing_acknowledged() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let (_dir, path) = new_journal();
    // The child runs with a small file size limit (and SIGXFSZ ignored, inherited over exec),
    // so its writes fail with EFBIG as on a full disk.
    let output = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 2048; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_pt-journal-crash-child"))
        .arg(&path)
        .arg("21")
        .arg("1000000")
        .arg("1000000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("storage fault") && stderr.contains("disk is full"), "{stderr}");
    // The fault halts every later write, and says so without the writer's lock.
    assert!(stderr.contains("(writes halted: true)"), "{stderr}");
    let mut acknowledged = None;
    for line in BufReader::new(output.stdout.as_slice()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("commit ") {
            acknowledged = rest.split_whitespace().next().map(|s| s.parse::<u64>().unwrap());
        }
    }
    let acknowledged = acknowledged.expect("some batches fit");
    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.last_seq, Seq(acknowledged));
    clean_audit(&journal);
    assert!(Path::new(&path).exists());
}

/// A journal that ends inside an interval (its header announces more outcomes than follow it;
/// the master writes an interval in one batch, so only a damaged or forged file holds one) does
/// not open, and the audit names the interval, instead of a master that would then refuse to
/// settle interval after interval.
#[test]
fn a_journal_ending_inside_an_interval_does_not_open() {
    let (_dir, path) = new_journal();
    {
        let (journal, _) = Journal::open(&path, config()).unwrap();
        fill(&journal, 7, 5);
    }
    test_util::append_an_unfinished_interval(&path).unwrap();
    {
        let journal = Journal::open_unrecovered(&path, config()).unwrap();
        let report = audit(&journal, AuditConfig::default(), &mut |_| {}).unwrap();
        let problem = report.problem.expect("the audit finds the unfinished interval");
        assert_eq!(problem.kind, ProblemKind::Apply);
        assert!(
            problem.message.contains("ends inside interval 1000: 0 of its 3 outcomes"),
            "{}",
            problem.message
        );
    }
    match Journal::open(&path, config()) {
        Err(e @ OpenError::EndsInsideInterval { orders: 3, outcomes: 0, .. }) => {
            assert!(e.to_string().contains("ends inside interval 1000"), "{e}");
        }
        other => panic!("expected EndsInsideInterval, got {:?}", other.map(|_| ())),
    }
}

/// A journal of 80,000 events and a snapshot of their state, which takes several parts.
fn with_a_large_snapshot() -> (tempfile::TempDir, PathBuf, Journal, State, Seq) {
    let (dir, path) = new_journal();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    for batch in journal::bench::events(80_000).chunks(20_000) {
        journal.append_batch(batch, Timestamp(1)).unwrap();
    }
    let state = journal.replay_end();
    let at = snapshot_now(&journal, &state);
    (dir, path, journal, state, at)
}

/// A state larger than one part is stored in parts (each its own commit, so a master's
/// interval commits never wait for the whole state), read back whole, used by recovery and
/// checked by the audit; damage in a later part is found; parts no snapshot owns (a crash
/// before publishing, or a snapshot row deleted by hand) are deleted by the next snapshot.
#[test]
fn a_large_snapshot_is_stored_in_parts() {
    let (_dir, path, journal, state, at) = with_a_large_snapshot();
    let entry = journal.snapshots().unwrap().into_iter().find(|s| s.seq == at).unwrap();
    let info = entry.header.unwrap();
    assert_eq!(entry.bytes, 64 + info.payload_bytes);
    assert_eq!(clean_audit(&journal).snapshots_verified, 1);
    drop(journal);
    let parts = test_util::snapshot_parts(&path, at).unwrap();
    let part = journal::SNAPSHOT_PART_BYTES as u64;
    assert_eq!(parts as u64, info.payload_bytes.div_ceil(part));
    assert!(parts >= 3, "{} bytes in {parts} parts", info.payload_bytes);
    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.snapshot_used, Some(at));
    assert_eq!(recovered.state, state);

    // A store cut short by a crash, and a row deleted by hand: their parts belong to no
    // snapshot, and the next store deletes them.
    drop(journal);
    test_util::cut_a_snapshot_store_short(&path, Seq(3)).unwrap();
    test_util::remove_snapshot(&path, at).unwrap();
    let (journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.snapshot_used, None);
    let again = match journal.snapshots().unwrap().last() {
        Some(rewritten) => rewritten.seq,
        None => snapshot_now(&journal, &state),
    };
    drop(journal);
    let keys = test_util::snapshot_part_keys(&path).unwrap();
    assert_eq!(keys.len(), parts, "only the parts of the snapshot at {again}: {keys:?}");
    assert!(keys.iter().all(|(seq, _)| *seq == again.0));

    // Damage in the last part: the payload checksum fails, recovery replays the events.
    test_util::flip_snapshot_byte(&path, again, usize::try_from(info.payload_bytes).unwrap() - 5)
        .unwrap();
    let (_journal, recovered) = Journal::open(&path, config()).unwrap();
    assert_eq!(recovered.snapshot_used, None);
    assert_eq!(recovered.state, state);
    assert!(matches!(
        &recovered.warnings[0],
        RecoveryWarning::SnapshotIgnored { why: SnapshotInvalid::PayloadChecksum, .. }
    ));
}

/// A crash in the middle of deleting a snapshot's parts (one part a commit) leaves the others
/// listed: a later run deletes them too, even when the next snapshot has a key of its own.
#[test]
fn parts_left_by_a_deletion_cut_short_are_deleted_later() {
    let (_dir, path, journal, _, at) = with_a_large_snapshot();
    drop(journal);
    assert!(test_util::snapshot_parts(&path, at).unwrap() >= 3);
    // The snapshot unlisted (its parts now unowned), and their deletion cut short after the
    // first part.
    test_util::remove_snapshot(&path, at).unwrap();
    test_util::remove_snapshot_part(&path, at, 0).unwrap();
    let (journal, _) = Journal::open(&path, config()).unwrap();
    let mut history = History::new(journal.replay_end(), 9, Shape::default());
    let events = std::iter::repeat_with(|| history.next_batch()).find(|b| !b.is_empty()).unwrap();
    journal.append_batch(&events, Timestamp(2)).unwrap();
    let newer = snapshot_now(&journal, &journal.replay_end());
    assert!(newer > at);
    drop(journal);
    let keys = test_util::snapshot_part_keys(&path).unwrap();
    assert!(keys.iter().all(|(seq, _)| *seq == newer.0), "parts left over: {keys:?}");
}

#[test]
fn a_file_damaged_while_open_is_closed_without_a_panic() {
    // Every page but redb's header zeroed under an open journal whose page cache is off: the
    // next append makes redb panic (a caller such as the master's core contains that), and
    // closing the file, where redb commits again, must not panic in the journal's drop.
    let (_dir, path) = new_journal();
    let uncached = JournalConfig { cache_bytes: 0, ..config() };
    let (journal, _) = Journal::open(&path, uncached).unwrap();
    let state = fill(&journal, 3, 10);
    journal::test_util::zero_all_but_redb_header(&path).unwrap();
    let mut history = History::new(state, 4, Shape::default());
    let events = std::iter::repeat_with(|| history.next_batch()).find(|b| !b.is_empty()).unwrap();
    let appended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        journal.append_batch(&events, Timestamp(99_000))
    }));
    assert!(appended.is_err(), "the append onto a zeroed file did not panic: {appended:?}");
    // The append panicked with the writer held: whoever takes the writer next finds the journal
    // halted, before its caller could halt it, and writes nothing.
    let err = journal.put_meta("key", b"value").unwrap_err();
    assert!(matches!(err, journal::WriteError::Halted { .. }), "{err}");
    let cause = journal.halted().unwrap();
    assert!(cause.contains("panicked while it held the journal"), "{cause}");
    drop(journal);
    // The damage is named when the file is opened again.
    assert!(Journal::open(&path, config()).is_err());
}

/// The journal's small writes (a meta value, a session) that meet a page damaged while the
/// file is open fail instead of panicking their caller, and halt every later write, the
/// interval's included: redb's panic is caught while the writer is held, so nothing commits
/// to the file between the panic and the halt. (A snapshot's transactions are run the same
/// way; the reads before them, like every read, panic their caller.)
#[test]
fn a_meta_or_session_write_that_meets_damage_halts_the_journal() {
    for write in ["session", "meta"] {
        let (_dir, path) = new_journal();
        let uncached = JournalConfig { cache_bytes: 0, ..config() };
        let (journal, _) = Journal::open(&path, uncached).unwrap();
        let state = fill(&journal, 3, 10);
        journal::test_util::zero_all_but_redb_header(&path).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match write {
            "session" => journal.put_session([7; 32], b"session").map_err(|e| e.to_string()),
            _ => journal.put_meta("key", b"value").map_err(|e| e.to_string()),
        }));
        let failed = outcome.unwrap_or_else(|_| panic!("the {write} write panicked its caller"));
        let err = failed.expect_err("a write onto a zeroed file succeeded");
        assert!(err.contains("redb panicked"), "{write}: {err}");
        assert!(journal.is_halted(), "{write}: the journal still takes writes");
        let mut history = History::new(state, 4, Shape::default());
        let events =
            std::iter::repeat_with(|| history.next_batch()).find(|b| !b.is_empty()).unwrap();
        let appended = journal.append_batch(&events, Timestamp(99_000));
        assert!(
            matches!(
                appended,
                Err(journal::AppendError::Write(journal::WriteError::Halted { .. }))
            ),
            "{write}: {appended:?}"
        );
    }
}

/// A snapshot keeps no interval's ticks: a state between an interval's header and its last
/// outcome is refused by the encoder, so no snapshot can stop a later open at the outcomes
/// after it.
#[test]
fn a_state_inside_an_interval_is_not_snapshotted() {
    let mut history = History::new(State::new(), 5, Shape::default());
    let (mut state, interval) = loop {
        let before = history.state().clone();
        let batch = history.next_batch();
        if batch.len() > 2 && matches!(batch[0], Event::IntervalSettled(_)) {
            break (before, batch);
        }
    };
    // Its header and one outcome applied.
    for event in &interval[..2] {
        state.apply(event).unwrap();
    }
    let err = encode_snapshot(&state, Seq(1)).unwrap_err();
    assert!(matches!(err, journal::SnapshotError::InsideInterval(_)), "{err}");
    for event in &interval[2..] {
        state.apply(event).unwrap();
    }
    encode_snapshot(&state, Seq(1)).unwrap();
}

/// The journal's file goes through the backend that writes zeros ahead of redb
/// (`zero_ahead.rs`), in the run that grew it and after a reopen: a 1,000-event commit writes
/// a 64 KiB page into new space, and without the zeros every commit allocated blocks at its
/// `fdatasync`; with them, a commit allocates only when it first writes into a megabyte of
/// new space (11 of the first 64 here, redb doubling its file while it is small; 2 of the 32
/// after the reopen, where 17 did when the holes the file had were not looked for), and the
/// others overwrite blocks that exist.
#[test]
fn most_commits_write_into_blocks_the_zeros_allocated() {
    let (_dir, path) = new_journal();
    drop(Journal::open(&path, config()).unwrap());
    if test_util::allocated_bytes(&path).is_none() {
        eprintln!("this file system does not count allocated blocks exactly: skipped");
        return;
    }
    let allocated = |path: &Path| test_util::allocated_bytes(path).unwrap();
    let events = journal::bench::events(96_000);
    let mut batches = events.chunks(1_000).enumerate();
    let mut commits = |count: usize| {
        // Without recovery: these batches end anywhere, not where an interval does.
        let journal = Journal::open_unrecovered(&path, config()).unwrap();
        let mut allocating = 0;
        for (i, batch) in batches.by_ref().take(count) {
            let before = allocated(&path);
            journal.append_batch(batch, Timestamp(1_000 + i as i64)).unwrap();
            if allocated(&path) > before {
                allocating += 1;
            }
        }
        allocating
    };
    let first = commits(64);
    assert!(first <= 16, "{first} of 64 commits allocated blocks");
    let after_reopen = commits(32);
    assert!(after_reopen <= 8, "{after_reopen} of 32 commits after a reopen allocated blocks");
}
