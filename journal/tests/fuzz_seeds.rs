//! Keeps the seeds of the `journal` and `snapshot` fuzz targets (`fuzz/seeds/journal/`,
//! `fuzz/seeds/snapshot/`) current: every seed is generated here, and each decodes the way its
//! target reads it. `PT_BLESS=1 cargo test -p journal --test fuzz_seeds` rewrites them after a
//! change to the event encodings or the state's archive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use engine::workload::{self, WorkloadShape};
use engine::{Event, State, Timestamp};
use journal::Seq;
use journal::payload::{self, COMPACT_EVENT_FORMAT};
use journal::record::{RKYV_EVENT_FORMAT, decode_batch, decode_payload, encode_batch};

fn seeds_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target)
}

/// One event of each kind (two kinds of rejection), in both payload formats: the format byte the
/// target reads first (0: compact, 1: rkyv), then the payload; and stored batches (selector 2):
/// the bench history's first events as this build stores them.
fn journal_seeds() -> Vec<(String, Vec<u8>)> {
    let mut first: BTreeMap<&str, Event> = BTreeMap::new();
    for event in journal::bench::events(20_000) {
        let kind = match &event {
            Event::AccountOpened(_) => "account-opened",
            Event::AssetListed(_) => "asset-listed",
            Event::IntervalSettled(_) => "interval-settled",
            Event::OrderFilled(_) => "order-filled",
            Event::OrderRejected(r) if r.price_seen.is_some() => "order-rejected-priced",
            Event::OrderRejected(_) => "order-rejected",
            Event::PasswordRehashed(_) => "password-rehashed",
        };
        first.entry(kind).or_insert(event);
    }
    assert_eq!(first.len(), 7, "the bench history has every kind of event");
    let mut seeds = Vec::new();
    for (kind, event) in first {
        let mut compact = vec![0u8];
        payload::encode(&event, &mut compact);
        seeds.push((format!("compact-{kind}"), compact));
        let mut archived = vec![1u8];
        archived.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(&event).unwrap());
        seeds.push((format!("rkyv-{kind}"), archived));
    }
    let events = journal::bench::events(60);
    for (name, range) in [("batch-setup", 0..20), ("batch-interval", 20..60)] {
        let first = Seq(range.start as u64 + 1);
        let mut batch = vec![2u8];
        batch.extend(
            encode_batch(first, Timestamp(1_763_800_000_000_000), 7, &events[range]).unwrap(),
        );
        seeds.push((name.to_owned(), batch));
    }
    seeds
}

/// States of the engine's synthetic workloads, settled and not, each after the target's order
/// prefix: one byte (16), then 16 bytes that each draw an order.
fn snapshot_seeds() -> Vec<(String, Vec<u8>)> {
    let orders: Vec<u8> = (0u8..16).map(|i| i.wrapping_mul(37).wrapping_add(3)).collect();
    let seed = |state: &State| {
        let mut input = vec![16u8];
        input.extend_from_slice(&orders);
        input.extend_from_slice(&rkyv::to_bytes::<rkyv::rancor::Error>(state).unwrap());
        input
    };
    let mut seeds = vec![("empty".to_owned(), seed(&State::new()))];
    for (name, accounts, symbols, orders) in
        [("one-order", 1, 1, 1), ("small", 3, 2, 12), ("busier", 5, 3, 40)]
    {
        let shape = WorkloadShape { accounts, symbols, orders, seed: 9 };
        let mut load = workload::build(shape).unwrap();
        seeds.push((format!("{name}-unsettled"), seed(load.engine.state())));
        workload::settle(&mut load).unwrap();
        seeds.push((name.to_owned(), seed(load.engine.state())));
    }
    seeds
}

fn check_current(target: &str, seeds: &[(String, Vec<u8>)]) {
    let bless = std::env::var_os("PT_BLESS").is_some_and(|v| v == "1");
    for (name, bytes) in seeds {
        let path = seeds_dir(target).join(name);
        if bless {
            std::fs::write(&path, bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap();
        assert!(
            &on_disk == bytes,
            "{} is stale; run `PT_BLESS=1 cargo test -p journal --test fuzz_seeds`",
            path.display()
        );
    }
}

#[test]
fn journal_seeds_are_current_and_decode() {
    let seeds = journal_seeds();
    check_current("journal", &seeds);
    let mut aligned = rkyv::util::AlignedVec::new();
    for (name, bytes) in &seeds {
        if bytes[0] == 2 {
            let key = u64::from_be_bytes(bytes[5..13].try_into().unwrap());
            let records =
                decode_batch(key, &bytes[1..]).unwrap_or_else(|e| panic!("seed {name}: {e:?}"));
            assert!(!records.is_empty(), "seed {name}");
            continue;
        }
        let format = if bytes[0] & 1 == 0 { COMPACT_EVENT_FORMAT } else { RKYV_EVENT_FORMAT };
        decode_payload(format, &bytes[1..], &mut aligned)
            .unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
}

#[test]
fn snapshot_seeds_are_current_and_decode() {
    let seeds = snapshot_seeds();
    check_current("snapshot", &seeds);
    for (name, bytes) in &seeds {
        let count = usize::from(bytes[0]);
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&bytes[1 + count..]);
        let state = rkyv::from_bytes::<State, rkyv::rancor::BoxedError>(&aligned)
            .unwrap_or_else(|e| panic!("seed {name}: {e}"));
        state.check_invariants().unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
}
