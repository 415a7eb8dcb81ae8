//! Snapshots that cost the core nothing: a thread of its own keeps a copy of the engine's state
//! and, when asked, brings it up to the journal's head by applying the records written since
//! (the live state is the fold of the events: property-tested in `engine`), then encodes and
//! stores it, at the lowest CPU priority. The core only asks.
//!
//! Before, the core cloned its state for each snapshot: 85 ms of settlement stopped at a million
//! fills, growing with the state. The price now is memory: a second copy of the state for the
//! life of the master (docs/MASTER.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use engine::State;
use journal::{Journal, Seq};
use tracing::{error, info, warn};

/// The snapshot thread and the way to ask it for a snapshot.
#[derive(Debug)]
pub struct Snapshotter {
    requests: Option<SyncSender<Seq>>,
    /// Set from a request until its snapshot is stored (or failed): one at a time.
    busy: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Whether the thread's end (a panic, or a copy that could not follow) was logged.
    ended_logged: AtomicBool,
}

impl Snapshotter {
    /// Starts the thread with `state`, the state as of record `at`.
    pub fn start(state: State, at: Seq, journal: Arc<Journal>) -> std::io::Result<Self> {
        let (requests, received) = sync_channel(1);
        let busy = Arc::new(AtomicBool::new(false));
        let thread_busy = Arc::clone(&busy);
        let thread = std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || run(state, at, &journal, &received, &thread_busy))?;
        Ok(Self {
            requests: Some(requests),
            busy,
            thread: Some(thread),
            ended_logged: AtomicBool::new(false),
        })
    }

    /// Whether a snapshot is being made.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire) && self.is_running()
    }

    fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|thread| !thread.is_finished())
    }

    /// Asks for a snapshot of the state as of record `seq`, unless one is being made; returns
    /// whether it was asked.
    pub fn request(&self, seq: Seq) -> bool {
        if !self.is_running() {
            if !self.ended_logged.swap(true, Ordering::AcqRel) {
                error!("the snapshot thread has ended; no more snapshots until a restart");
            }
            return false;
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        let sent = self.requests.as_ref().is_some_and(|requests| requests.try_send(seq).is_ok());
        if !sent {
            self.busy.store(false, Ordering::Release);
        }
        sent
    }
}

impl Drop for Snapshotter {
    /// Lets the snapshot being made finish (it holds the journal open), then stops the thread.
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the snapshot thread panicked; recovery will replay more events");
        }
    }
}

fn run(
    mut state: State,
    mut at: Seq,
    journal: &Journal,
    requests: &Receiver<Seq>,
    busy: &AtomicBool,
) {
    // Catching up, encoding and storing take the CPU that orders leave, like password hashing.
    if let Err(e) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
    {
        warn!(cause = ?e, "cannot lower the priority of the snapshot thread");
    }
    while let Ok(seq) = requests.recv() {
        // redb panics on a page damaged while the file is open, in the reads here as in the
        // writes (which halt the journal themselves): the file is then known to be damaged,
        // and a restart will refuse it, so no order may be acknowledged into it any more. A
        // panic from a bug here (the copy's `apply`, the encoder) halts too: it cannot be told
        // from damage.
        let made = crate::core::contain_panic(|| make_one(&mut state, &mut at, seq, journal, busy));
        match made {
            Ok(true) => {}
            Ok(false) => return,
            Err(cause) => {
                busy.store(false, Ordering::Release);
                error!(%cause, "the snapshot thread failed (a damaged page, or a bug): the journal's writes are halted; no more snapshots until a restart");
                journal.halt(&format!("the snapshot thread failed: {cause}"));
                return;
            }
        }
    }
}

/// Catches the copy up to record `seq` and stores its snapshot. False when the copy can no
/// longer follow the journal (no more snapshots from it).
fn make_one(
    state: &mut State,
    at: &mut Seq,
    seq: Seq,
    journal: &Journal,
    busy: &AtomicBool,
) -> bool {
    let started = Instant::now();
    let applied = match catch_up(state, at, seq, journal) {
        Ok(applied) => applied,
        Err(why) => {
            busy.store(false, Ordering::Release);
            // The copy no longer follows the journal: no more snapshots from it.
            error!(cause = %why, "the snapshot thread cannot follow the journal; no more snapshots until a restart (recovery replays more events)");
            return false;
        }
    };
    let stored =
        journal::encode_snapshot(state, seq).and_then(|bytes| journal.store_snapshot(bytes));
    busy.store(false, Ordering::Release);
    let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match stored {
        Ok(seq) => info!(seq = seq.0, applied, took_ms, "snapshot written"),
        // A storage fault also halts the journal's writes (the core then refuses orders);
        // anything else (a snapshot too large, say) only costs a longer recovery.
        Err(why) => warn!(cause = %why, "snapshot failed; recovery will replay more events"),
    }
    true
}

/// Applies the journal's records after `at` up to `seq` to `state`; returns how many.
fn catch_up(state: &mut State, at: &mut Seq, seq: Seq, journal: &Journal) -> Result<u64, String> {
    // A copy ahead of the snapshot asked for cannot go back: stored under `seq`, it would
    // claim records it holds past it.
    if *at > seq {
        return Err(format!("the state copy is at record {at}, past record {seq} asked for"));
    }
    let Some(from) = at.next().filter(|from| *from <= seq) else {
        return Ok(0);
    };
    let mut applied = 0;
    for record in journal.read_records(from).map_err(|e| e.to_string())? {
        let record = record.map_err(|e| e.to_string())?;
        if record.seq > seq {
            break;
        }
        state.apply(&record.event).map_err(|e| format!("record {}: {e}", record.seq))?;
        *at = record.seq;
        applied += 1;
    }
    if *at == seq {
        Ok(applied)
    } else {
        Err(format!("the journal ends at record {at}, before record {seq}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use engine::workload::{self, WorkloadShape};
    use engine::{IntervalId, Timestamp};

    /// The copy, caught up from the journal, is the live state: the stored snapshot recovers
    /// the live digest.
    #[test]
    fn snapshots_from_the_copy_recover_the_live_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal::path_in(dir.path());
        let (journal, _) = Journal::open(&path, journal::JournalConfig::default()).unwrap();
        let journal = Arc::new(journal);
        let shape = WorkloadShape { accounts: 30, symbols: 4, orders: 300, seed: 5 };
        let mut load = workload::build(shape).unwrap();
        // The workload's setup (accounts opened, assets listed) as events, then intervals.
        let mut replayed = State::new();
        let setup: Vec<engine::Event> = setup_events(load.engine.state());
        for event in &setup {
            replayed.apply(event).unwrap();
        }
        journal.append_batch(&setup, Timestamp(1)).unwrap();
        let snapshotter =
            Snapshotter::start(replayed, journal.last_seq(), Arc::clone(&journal)).unwrap();
        let mut rng = workload::XorShift::new(8);
        for interval in 1..=4u64 {
            if interval > 1 {
                workload::queue_more(&mut load, shape, &mut rng, interval * 1_000, 300);
            }
            let at = Timestamp(i64::try_from(interval).unwrap() * 10);
            let events = workload::settle_as(&mut load, IntervalId(interval), at).unwrap();
            journal.append_batch(&events, at).unwrap();
        }
        let head = journal.last_seq();
        assert!(snapshotter.request(head));
        drop(snapshotter); // waits for the snapshot
        let stored: Vec<Seq> = journal.snapshots().unwrap().iter().map(|s| s.seq).collect();
        assert_eq!(stored, vec![head]);
        let (state, _) = journal.load_snapshot(head).unwrap();
        assert_eq!(state.digest(), load.engine.state().digest());
    }

    /// A snapshot thread that meets a page damaged while the master runs (redb panics on it,
    /// here in the catching up) halts the journal's writes: the file is known to be damaged,
    /// and no order may be acknowledged into it any more. The thread ends; nothing panics
    /// its owner.
    #[test]
    fn a_snapshot_thread_that_meets_damage_halts_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal::path_in(dir.path());
        // No page cache in redb, so that the damage is read.
        let config = journal::JournalConfig { cache_bytes: 0, ..journal::JournalConfig::default() };
        let (journal, _) = Journal::open(&path, config).unwrap();
        let journal = Arc::new(journal);
        let shape = WorkloadShape { accounts: 10, symbols: 2, orders: 50, seed: 6 };
        let load = workload::build(shape).unwrap();
        let setup = setup_events(load.engine.state());
        journal.append_batch(&setup, Timestamp(1)).unwrap();
        // A copy from genesis: catching up reads every record.
        let snapshotter = Snapshotter::start(State::new(), Seq(0), Arc::clone(&journal)).unwrap();
        journal::test_util::zero_all_but_redb_header(&path).unwrap();
        assert!(snapshotter.request(journal.last_seq()));
        drop(snapshotter); // waits for the thread
        let cause = journal.halted().expect("the journal still takes writes after the damage");
        assert!(cause.starts_with("the snapshot thread failed"), "{cause}");
    }

    /// A copy already past the record asked for is an error, not a snapshot of more than
    /// that record under its key.
    #[test]
    fn a_copy_past_the_record_asked_for_is_not_stored_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) =
            Journal::open(journal::path_in(dir.path()), journal::JournalConfig::default()).unwrap();
        let mut state = State::new();
        let mut at = Seq(5);
        let err = catch_up(&mut state, &mut at, Seq(3), &journal).unwrap_err();
        assert!(err.contains("past record 3"), "{err}");
        assert_eq!(at, Seq(5));
        // At the record asked for: nothing to apply.
        assert_eq!(catch_up(&mut state, &mut at, Seq(5), &journal), Ok(0));
    }

    /// The events that open the accounts and list the assets of a workload's state.
    fn setup_events(state: &State) -> Vec<engine::Event> {
        let mut events: Vec<engine::Event> = state
            .assets()
            .keys()
            .map(|symbol| {
                engine::Event::AssetListed(engine::AssetListed {
                    symbol: *symbol,
                    at: Timestamp(0),
                })
            })
            .collect();
        events.extend(state.accounts().iter().map(|account| {
            engine::Event::AccountOpened(engine::AccountOpened {
                account: account.id,
                username: account.username.clone(),
                email: account.email.clone(),
                password_hash: account.password_hash.clone(),
                initial_cash: account.initial_cash,
                at: account.opened_at,
            })
        }));
        events
    }
}
