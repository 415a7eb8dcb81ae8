//! A master's usual interval at scale: 2,500 orders settled against a state of many accounts
//! (`cargo run --release -p engine --example many_accounts -- 1000000`; default one million),
//! 40 intervals, the median and fastest settlement printed. Settlement's cost should follow
//! the orders, not the accounts registered (docs/ENGINE.md).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout, clippy::cast_possible_wrap)]
use engine::workload::{self, WorkloadShape, XorShift};
use engine::{IntervalId, Timestamp};
use std::time::Instant;
fn main() {
    let accounts: u64 = std::env::args().nth(1).map(|a| a.parse().unwrap()).unwrap_or(1_000_000);
    let shape = WorkloadShape { accounts, symbols: 100, orders: 2_500, seed: 42 };
    let mut load = workload::build(shape).unwrap();
    let mut rng = XorShift::new(7);
    let mut next = shape.orders + 1;
    let mut times = Vec::new();
    for interval in 1..=40u64 {
        if interval > 1 {
            workload::queue_more(&mut load, shape, &mut rng, next, 2_500);
            next += 2_500;
        }
        let t = Instant::now();
        let events =
            workload::settle_as(&mut load, IntervalId(interval), Timestamp(interval as i64))
                .unwrap();
        times.push(t.elapsed());
        assert_eq!(events.len(), 2_501);
    }
    times.sort();
    println!("accounts {accounts}: median {:?} min {:?}", times[times.len() / 2], times[0]);
}
