//! Rough timing of settlement phases, for engine development (`cargo run --release -p engine --example prof`).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]
use engine::workload::{self, WorkloadShape};
use std::time::Instant;
fn main() {
    println!(
        "Event {} Order {} Transaction {} Fill {}",
        size_of::<engine::Event>(),
        size_of::<engine::Order>(),
        size_of::<engine::Transaction>(),
        size_of::<engine::Fill>()
    );
    let shape = WorkloadShape { accounts: 10_000, symbols: 100, orders: 1_000_000, seed: 42 };
    for _ in 0..3 {
        let mut load = workload::build(shape).unwrap();
        let t = Instant::now();
        let sorted = load.queue.drain_sorted();
        let sort = t.elapsed();
        for o in sorted {
            load.queue.push(o);
        }
        let t = Instant::now();
        workload::settle(&mut load).unwrap();
        println!("sort {:?} settle(total incl sort) {:?}", sort, t.elapsed());
    }
}
