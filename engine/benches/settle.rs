//! `cargo bench -p engine`: settles 1,000,000 queued orders over 10,000 accounts and 100
//! symbols on one thread and prints orders per second, beside a baseline loop that only looks up
//! each order's account and symbol in maps and sums the amounts, measured in the same run.
//! Settlement writes into one event vector and settles in one order queue, both kept across the
//! rounds (`Engine::settle_into`), as the master keeps them across intervals; the first round
//! starts from empty ones.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::float_arithmetic)]

use std::hint::black_box;
use std::time::Instant;

use engine::workload::{self, WorkloadShape};

const SHAPE: WorkloadShape =
    WorkloadShape { accounts: 10_000, symbols: 100, orders: 1_000_000, seed: 42 };
const ROUNDS: usize = 5;

fn main() {
    let mut best_settle = f64::MAX;
    let mut best_baseline = f64::MAX;
    let mut events_buffer = Vec::new();
    let mut queue = engine::OrderQueue::new();
    for _ in 0..ROUNDS {
        let mut load = workload::build(SHAPE).unwrap();
        load.keep_queue(&mut queue);
        let start = Instant::now();
        let events = workload::settle_into(&mut load, &mut events_buffer).unwrap();
        best_settle = best_settle.min(start.elapsed().as_secs_f64());
        queue = std::mem::take(&mut load.queue);
        assert_eq!(events as u64, SHAPE.orders + 1);

        let baseline = workload::LookupBaseline::new(workload::build(SHAPE).unwrap());
        let start = Instant::now();
        black_box(baseline.run());
        best_baseline = best_baseline.min(start.elapsed().as_secs_f64());
    }
    let rate = SHAPE.orders as f64 / best_settle;
    let baseline = SHAPE.orders as f64 / best_baseline;
    println!(
        "engine.settle: {rate:.0} orders/s (group + validate + emit + apply; target >= 2,000,000); \
         baseline map-lookup loop {baseline:.0} orders/s; ratio {:.3}",
        rate / baseline
    );
}
