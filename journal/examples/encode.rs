//! Encodes the `peer` bench's intervals (2,500 settled orders each) as layout-2 batches again
//! and again and prints the best time per batch, for profiling the encoder (`cargo run
//! --release -p journal --example encode`, or under `perf record`).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]
use engine::workload::{self, WorkloadShape, XorShift};
use engine::{IntervalId, Timestamp};
use std::time::Instant;
fn main() {
    let shape = WorkloadShape { accounts: 10_000, symbols: 100, orders: 0, seed: 42 };
    let mut load = workload::build(shape).unwrap();
    let mut rng = XorShift::new(shape.seed);
    let mut settled = Vec::new();
    for k in 1..=20u64 {
        workload::queue_more(&mut load, shape, &mut rng, (k - 1) * 2500 + 1, 2500);
        let at = Timestamp(i64::try_from(k).unwrap() * 50_000);
        settled.push(workload::settle_as(&mut load, IntervalId(k), at).unwrap());
    }
    let mut best = std::time::Duration::MAX;
    let mut bytes = 0;
    for _ in 0..200 {
        for batch in &settled {
            let start = Instant::now();
            let encoded = journal::bench::batch_bytes(batch, batch.len()).unwrap();
            best = best.min(start.elapsed());
            bytes = encoded.iter().map(Vec::len).sum();
        }
    }
    println!("best {best:?} per batch of {} events, {bytes} bytes", settled[0].len());
}
