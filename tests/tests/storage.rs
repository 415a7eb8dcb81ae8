//! Storage faults under the real master: a journal with accounts, fills and snapshots is made by
//! a real master and worker, copied, damaged (journal's `test-util` helpers), and the master is
//! started on each copy. A flipped byte in an event stops the start with an error naming the file
//! and the record (and `audit` finds the same record; the state before it can still be rebuilt);
//! a deleted snapshot and a snapshot of another format version are replayed around with nothing
//! lost; a data directory on a full disk (a small tmpfs when this runs as root, which can mount)
//! refuses the order that could not be stored with `internal`, then every write with a message
//! naming the journal and the full disk, keeps what was acknowledged, and after freeing space a
//! restart serves again with nothing lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Client, Pair, failure_reason, login, register_and_login, user};
use engine::{Qty, Symbol};
use journal::{Journal, JournalConfig, RecoveryWarning, Seq};
use net::{DataPayload, Reason, Request, Response};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The fills in the journal at `path`.
fn fills(path: &Path) -> usize {
    let journal = Journal::open_unrecovered(path, JournalConfig::default()).unwrap();
    journal
        .read_records(Seq(1))
        .unwrap()
        .filter(|r| matches!(r.as_ref().unwrap().event, engine::Event::OrderFilled(_)))
        .count()
}

fn buy(session: net::SessionId, id: u64) -> Request {
    Request::Purchase {
        session,
        symbol: Symbol::new("IBM").unwrap(),
        qty: Qty::from_units(1).unwrap(),
        client_order_id: id,
    }
}

/// A history made by the real master: alice with `fills` fills, snapshots every few events.
/// Returns the master's data directory and the digest of its state.
async fn make_history(root: &Path, fills: u64) -> (PathBuf, engine::Digest) {
    let pair = Pair::start(root, Duration::from_millis(50), |master, _| {
        master.journal.snapshot_every_events = 4;
    })
    .await;
    let mut alice = Client::connect(pair.worker.addr).await;
    let session = register_and_login(&mut alice, "alice", 1).await;
    for id in 1..=fills {
        let bought = alice.send(buy(session, id)).await;
        assert!(matches!(bought, Response::PurchaseSuccess(_)), "{bought:?}");
    }
    let dir = pair.master_dir.clone();
    pair.stop().await;
    let (_journal, recovered) =
        Journal::open(journal::path_in(&dir), JournalConfig::default()).unwrap();
    (dir, recovered.digest)
}

/// The master started on `dir` with the one test worker, and its first result: `Err` if it
/// refused to start, else it is stopped again.
async fn start_master(dir: &Path) -> Result<(), master::server::ServerError> {
    let config =
        common::master_config(dir, "127.0.0.1:0".parse().unwrap(), &[], Duration::from_millis(50));
    common::MasterTask::start(config).await.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_records_and_snapshots_are_named_or_replayed_around() {
    let root = tempfile::tempdir().unwrap();
    let (dir, digest) = make_history(&root.path().join("made"), 6).await;
    let path = journal::path_in(&dir);
    let (head, snapshots) = {
        let journal = Journal::open_unrecovered(&path, JournalConfig::default()).unwrap();
        let snapshots: Vec<Seq> = journal.snapshots().unwrap().iter().map(|s| s.seq).collect();
        let head = journal.read_records(Seq(1)).unwrap().head();
        (head, snapshots)
    };
    assert!(!snapshots.is_empty(), "the master stored snapshots");
    let mut faults = 0;

    // A byte flipped in an event: the master refuses to start, naming the file and the record.
    for seq in [Seq(2), Seq(head.0 / 2), head] {
        let copy = root.path().join(format!("flipped-{}", seq.0));
        copy_dir(&dir, &copy);
        let copy_path = journal::path_in(&copy);
        journal::test_util::flip_record_payload_byte(&copy_path, seq, 7).unwrap();
        faults += 1;
        let refused = start_master(&copy).await.expect_err("a damaged journal must stop the start");
        let message = refused.to_string();
        assert!(message.contains(&format!("record {}", seq.0)), "{message}");
        assert!(message.contains(&copy_path.display().to_string()), "{message}");
        // No silent loss: the audit stops at the same record...
        let journal = Journal::open_unrecovered(&copy_path, JournalConfig::default()).unwrap();
        let report =
            journal::audit(&journal, journal::AuditConfig::default(), &mut |_| {}).unwrap();
        let problem = report.problem.expect("the audit finds it");
        assert_eq!(problem.seq, seq, "{problem:?}");
        // ...and the state before it can be rebuilt (`pt-replay show --at`) for the operator.
        if seq.0 > 1 {
            let before = journal
                .replay(
                    journal::ReplayOptions {
                        from: journal::ReplayFrom::Genesis,
                        to: journal::ReplayTo::Seq(Seq(seq.0 - 1)),
                        verify: journal::VerifyOnOpen::FullChain,
                    },
                    &mut |_| {},
                )
                .unwrap();
            assert_eq!(before.last_seq, Seq(seq.0 - 1));
        }
    }

    // Deleted snapshots, and a snapshot of another format version: on one copy the journal
    // recovers the same state digest (with a warning naming an ignored snapshot); on another the
    // master starts, and still holds every fill.
    let newest = *snapshots.last().unwrap();
    let fills_before = fills(&path);
    for fault in ["deleted", "future-version"] {
        let damage = |copy: &Path| {
            let copy_path = journal::path_in(copy);
            if fault == "deleted" {
                for seq in &snapshots {
                    journal::test_util::remove_snapshot(&copy_path, *seq).unwrap();
                }
            } else {
                journal::test_util::set_snapshot_format(&copy_path, newest, 99, true).unwrap();
            }
        };
        let copy = root.path().join(format!("{fault}-journal"));
        copy_dir(&dir, &copy);
        damage(&copy);
        faults += 1;
        let (_journal, recovered) =
            Journal::open(journal::path_in(&copy), JournalConfig::default()).unwrap();
        assert_eq!(recovered.digest, digest, "{fault} snapshots: nothing lost");
        if fault == "future-version" {
            let warned = recovered.warnings.iter().any(
                |w| matches!(w, RecoveryWarning::SnapshotIgnored { seq, .. } if *seq == newest),
            );
            assert!(warned, "{:?}", recovered.warnings);
            let text = recovered.warnings[0].to_string();
            assert!(text.contains(&format!("record {}", newest.0)), "{text}");
        }
        let copy = root.path().join(format!("{fault}-master"));
        copy_dir(&dir, &copy);
        damage(&copy);
        start_master(&copy).await.unwrap();
        assert_eq!(fills(&journal::path_in(&copy)), fills_before, "{fault}: the master lost fills");
    }
    eprintln!("storage faults injected and detected: {faults}");
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with `dir/filler` until it refuses.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let mut byte = [0u8; 1];
    while file.write_all(&byte[..1]).is_ok() {
        byte[0] = byte[0].wrapping_add(1);
    }
    let _ = file.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_and_loses_nothing_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    let Some(tmpfs) = Tmpfs::mount(&root.path().join("small"), "64m") else {
        // Not root (or no mount): the journal's own test covers a full disk with `ulimit -f`
        // (journal/tests/journal.rs); here there is nothing more to check.
        eprintln!("tmpfs cannot be mounted here: full-disk test skipped");
        return;
    };
    let pair = Pair::start(&tmpfs.0, Duration::from_millis(50), |_, _| {}).await;
    let mut alice = Client::connect(pair.worker.addr).await;
    let session = register_and_login(&mut alice, "alice", 1).await;
    let mut acknowledged = 0;
    for id in 1..=3 {
        assert!(matches!(alice.send(buy(session, id)).await, Response::PurchaseSuccess(_)));
        acknowledged += 1;
    }
    let filler = fill(&tmpfs.0);
    // Orders until one cannot be stored (redb may still have room in its file for a few).
    let mut id = 100;
    let refused = loop {
        id += 1;
        match alice.send(buy(session, id)).await {
            Response::PurchaseSuccess(_) => acknowledged += 1,
            other => break other,
        }
        assert!(id < 10_000, "the full disk was never noticed");
    };
    assert_eq!(failure_reason(&refused), Some(Reason::Internal), "{refused:?}");
    // Every further write is refused, naming the journal and the full disk.
    let next = alice.send(buy(session, id + 1)).await;
    let Response::PurchaseFail(failure) = next.clone() else { panic!("{next:?}") };
    assert_eq!(failure.reason, Reason::Internal);
    assert!(failure.message.contains("papertrader.redb"), "{}", failure.message);
    assert!(failure.message.contains("disk is full"), "{}", failure.message);
    // Reads keep working.
    let portfolio =
        alice.send(Request::SwitchState { session, state: net::ConnState::DataTransfer }).await;
    assert!(matches!(portfolio, Response::StateSwitchSuccess(_)), "{portfolio:?}");
    let read = alice.send(Request::GetUserPortfolio { session, username: user("alice") }).await;
    let Response::Data(DataPayload::Portfolio(p)) = read else { panic!("{read:?}") };
    assert_eq!(p.holdings[0].qty, Qty::from_units(acknowledged).unwrap());
    // A logout the journal cannot record is not answered as done: the session ends at once,
    // but the answer says it may be valid again after a restart.
    let back = alice.send(Request::SwitchState { session, state: net::ConnState::Command }).await;
    assert!(matches!(back, Response::StateSwitchSuccess(_)), "{back:?}");
    let logout = alice.send(Request::Logout { session }).await;
    let Response::LogoutFail(ended) = &logout else { panic!("{logout:?}") };
    assert_eq!(ended.reason, Reason::Internal);
    assert!(ended.message.contains("log out again"), "{}", ended.message);
    drop(alice);

    // The documented recovery: free space, restart. Nothing acknowledged is lost.
    let master_dir = pair.master_dir.clone();
    pair.stop().await;
    std::fs::remove_file(filler).unwrap();
    let pair = Pair::start(&tmpfs.0, Duration::from_millis(50), |_, _| {}).await;
    let mut alice = Client::connect(pair.worker.addr).await;
    let _ = alice.send_when_linked(Request::GetWorkers).await;
    let session = login(&mut alice, "alice", 1).await;
    assert!(matches!(alice.send(buy(session, 9_999_999)).await, Response::PurchaseSuccess(_)));
    drop(alice);
    pair.stop().await;
    let journal =
        Journal::open_unrecovered(journal::path_in(&master_dir), JournalConfig::default()).unwrap();
    let report = journal::audit(&journal, journal::AuditConfig::default(), &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problem);
    drop(journal);
    eprintln!(
        "full disk: {acknowledged} orders acknowledged before and while filling; refused with \
         {refused:?}; then {}",
        failure.message
    );
    let fills = fills(&journal::path_in(&master_dir));
    assert_eq!(
        u64::try_from(fills).unwrap(),
        acknowledged + 1,
        "acknowledged fills before and after the fault"
    );
    drop(tmpfs);
}

/// redb's pages damaged while the master runs (every page but redb's header zeroed, with the
/// journal's page cache off so that redb reads the damage): redb panics inside the next
/// interval's commit. The master does not go on from a state the journal does not hold, nor
/// sit there with a dead core: it stops by itself with an error saying the core failed. A
/// restart refuses the file and names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_damaged_while_the_master_runs_stops_it_with_an_error() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("master");
    let mut config =
        common::master_config(&dir, "127.0.0.1:0".parse().unwrap(), &[], Duration::from_millis(50));
    config.journal.cache_bytes = 0;
    let master = common::MasterTask::start(config).await;
    // Serving (the core and the interval loop run) once a client's getWorkers is answered.
    let mut client = Client::connect(master.addr).await;
    assert!(matches!(client.send(Request::GetWorkers).await, Response::Data(_)));

    let path = journal::path_in(&dir);
    let zeroed = journal::test_util::zero_all_but_redb_header(&path).unwrap();
    assert!(zeroed > 0, "a started journal is more than redb's header: {zeroed} bytes after it");

    let ended = master.ended_within(Duration::from_secs(30)).await;
    let stopped = ended.expect("the master stops by itself").expect_err("with an error");
    let message = stopped.to_string();
    assert!(message.contains("the core failed and the master stopped"), "{message}");
    // Refused for the damage (not because the file is still in use), naming the file.
    let refused = start_master(&dir).await.expect_err("a damaged journal must stop the start");
    let message = refused.to_string();
    assert!(
        matches!(
            &refused,
            master::server::ServerError::Journal(journal::OpenError::Storage(fault))
                if fault.op == "opening the file"
        ),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
}
