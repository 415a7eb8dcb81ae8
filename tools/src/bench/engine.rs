//! `engine.settle`: orders settled per second by `Engine::settle` on one thread (1,000,000
//! orders, 10,000 accounts, 100 symbols: `engine::workload`, as `cargo bench -p engine`),
//! beside a baseline loop over the same orders that only looks up each order's account and
//! symbol in hash maps and sums the amounts. Best of three rounds each.
//!
//! Each round settles a freshly built workload with `Engine::settle_into` into one event vector
//! and in one order queue, both kept across the rounds, as the master keeps them across
//! intervals: the first round writes into new memory (cold), the later ones into the memory the
//! previous round used (the event vector's old events and the queue's settlement tables). The
//! accounts' histories grow into new memory every round, as in the master.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use engine::OrderQueue;
use engine::workload::{self, WorkloadShape};

use super::{BenchArgs, Figure, per_second};

/// The workload.
pub const SHAPE: WorkloadShape =
    WorkloadShape { accounts: 10_000, symbols: 100, orders: 1_000_000, seed: 42 };
/// The `--quick` workload.
pub const QUICK_SHAPE: WorkloadShape =
    WorkloadShape { accounts: 100, symbols: 10, orders: 10_000, seed: 42 };
/// Rounds; the best of each is kept.
const ROUNDS: usize = 3;
/// Target rate.
pub const TARGET_ORDERS_PER_S: f64 = 2_000_000.0;
/// Target ratio to the baseline ("within 5x").
pub const TARGET_RATIO: f64 = 0.2;

/// The baseline: per order, two hash-map look-ups and a sum.
fn baseline(shape: WorkloadShape) -> anyhow::Result<Duration> {
    let load = workload::build(shape).context("cannot build the workload")?;
    let baseline = workload::LookupBaseline::new(load);
    let start = Instant::now();
    black_box(baseline.run());
    Ok(start.elapsed())
}

/// Measures `engine.settle`.
pub fn run(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let shape = if args.quick { QUICK_SHAPE } else { SHAPE };
    let rounds = if args.quick { 1 } else { ROUNDS };
    let mut best_settle = Duration::MAX;
    let mut best_baseline = Duration::MAX;
    let mut events_buffer = Vec::new();
    let mut queue = OrderQueue::new();
    for _ in 0..rounds {
        let mut load = workload::build(shape).context("cannot build the workload")?;
        load.keep_queue(&mut queue);
        let start = Instant::now();
        let events =
            workload::settle_into(&mut load, &mut events_buffer).context("settlement failed")?;
        best_settle = best_settle.min(start.elapsed());
        queue = std::mem::take(&mut load.queue);
        anyhow::ensure!(
            u64::try_from(events).ok() == shape.orders.checked_add(1),
            "settlement gave {events} events for {} orders",
            shape.orders
        );
        drop(load);
        best_baseline = best_baseline.min(baseline(shape)?);
    }
    let rate = per_second(shape.orders, best_settle);
    let base = per_second(shape.orders, best_baseline);
    let figure = Figure::new("engine.settle", rate, "orders/s", base, "map-lookup loop");
    let met = rate >= TARGET_ORDERS_PER_S && figure.ratio >= TARGET_RATIO;
    Ok(vec![figure.with_target(">= 2,000,000 orders/s and ratio >= 0.2", met)])
}
