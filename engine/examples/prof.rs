//! Steady rounds of `Engine::settle_into` on the engine benchmark's workload, one event vector
//! and one order queue kept across rounds, for profiling (`cargo run --release -p engine
//! --example prof`, or under `perf record`).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]
use engine::workload::{self, WorkloadShape};
use std::time::Instant;
fn main() {
    let shape = WorkloadShape { accounts: 10_000, symbols: 100, orders: 1_000_000, seed: 42 };
    let mut events = Vec::new();
    let mut queue = engine::OrderQueue::new();
    for _ in 0..8 {
        let mut load = workload::build(shape).unwrap();
        load.keep_queue(&mut queue);
        let t = Instant::now();
        workload::settle_into(&mut load, &mut events).unwrap();
        println!("settle {:?}", t.elapsed());
        queue = std::mem::take(&mut load.queue);
    }
}
