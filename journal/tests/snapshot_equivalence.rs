//! Snapshot equivalence: for random histories, the state from a snapshot plus the tail equals
//! the state replayed from genesis, digest for digest, at every point.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use engine::{State, Timestamp};
use journal::{
    Journal, JournalConfig, ReplayFrom, ReplayOptions, ReplayTo, Seq, VerifyOnOpen, encode_snapshot,
};
use proptest::prelude::*;

#[path = "../testkit/history.rs"]
#[allow(dead_code)]
mod history;

/// The last record applied, the state, and the snapshot the replay started from.
fn replay(journal: &Journal, from: ReplayFrom, to: ReplayTo) -> (Seq, State, Option<Seq>) {
    let options = ReplayOptions { from, to, verify: VerifyOnOpen::FullChain };
    let replayed = journal.replay(options, &mut |_| {}).unwrap();
    (replayed.last_seq, replayed.state, replayed.snapshot_used)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_plus_tail_equals_genesis_replay(
        seed in any::<u64>(),
        snapshot_after in proptest::collection::vec(proptest::bool::weighted(0.2), 1..50),
        kept in 1usize..4,
        probes in proptest::collection::vec(any::<u64>(), 4),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = journal::path_in(dir.path());
        let config = JournalConfig { snapshots_kept: kept, ..JournalConfig::default() };
        let (journal, _) = Journal::open(&path, config.clone()).unwrap();
        let mut history = history::History::new(State::new(), seed, history::Shape::default());
        let mut stored = Vec::new();
        for (i, snapshot) in snapshot_after.iter().enumerate() {
            let events = history.next_batch();
            journal.append_batch(&events, Timestamp(i as i64)).unwrap();
            if *snapshot {
                let bytes = encode_snapshot(history.state(), journal.last_seq()).unwrap();
                stored.push(journal.last_seq());
                journal.store_snapshot(bytes).unwrap();
            }
        }
        // The newest `kept` snapshots are the ones left to start from.
        let kept_seqs = &stored[stored.len().saturating_sub(kept)..];
        let last = journal.last_seq();
        let (genesis_seq, genesis, none) = replay(&journal, ReplayFrom::Genesis, ReplayTo::End);
        prop_assert_eq!(genesis_seq, last);
        prop_assert_eq!(none, None);
        prop_assert_eq!(genesis.digest(), history.state().digest());
        for probe in probes {
            let at_seq = Seq(probe % (last.0 + 1));
            let at = ReplayTo::Seq(at_seq);
            let (a_seq, a, _) = replay(&journal, ReplayFrom::Genesis, at);
            let (b_seq, b, used) = replay(&journal, ReplayFrom::NewestSnapshot, at);
            // The replay really started from the newest kept snapshot at or before the point.
            prop_assert_eq!(used, kept_seqs.iter().copied().filter(|&s| s <= at_seq).max());
            prop_assert_eq!(a_seq, b_seq);
            prop_assert_eq!(a.digest(), b.digest());
            prop_assert_eq!(a, b);
        }
        drop(journal);
        let (_journal, recovered) = Journal::open(&path, config).unwrap();
        prop_assert!(recovered.warnings.is_empty());
        prop_assert_eq!(recovered.snapshot_used, kept_seqs.last().copied());
        prop_assert_eq!(recovered.last_seq, last);
        prop_assert_eq!(recovered.digest, genesis.digest());
        prop_assert_eq!(recovered.state, genesis);
    }
}
