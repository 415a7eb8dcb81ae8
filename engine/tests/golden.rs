//! Golden test: the shipped recorded prices and order stream give exactly the pinned event stream
//! and final digest, as recorded and adjusted for the shipped splits (what the master and
//! `pt simulate` run). Regenerate the pinned files with `PT_BLESS=1 cargo test -p engine --test
//! golden` after an intended change, and say why in the commit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fmt::Write as _;

use engine::recorded::{
    RecordedInterval, SimulationConfig, adjust_for_splits, parse_orders, parse_prices,
    parse_splits, simulate,
};
use engine::{Cash, Engine, Event, RejectReason};

const PRICES: &str = include_str!("../../data/stocks-2000-2013.csv");
const ORDERS: &str = include_str!("../../data/orders-2000-2013.csv");
const SPLITS: &str = include_str!("../../data/splits-2000-2013.csv");
const GOLDEN: &str = "tests/golden/recorded.txt";
const GOLDEN_ADJUSTED: &str = "tests/golden/recorded-adjusted.txt";

fn render(prices: &[RecordedInterval], adjusted: bool) -> (String, engine::recorded::Simulation) {
    let orders = parse_orders(ORDERS).unwrap();
    let config = SimulationConfig { initial_cash: Cash::parse("100000").unwrap() };
    let sim = simulate(prices, &orders, &config).unwrap();
    let state = sim.engine.state();
    let name = |id: engine::AccountId| {
        state.account(id).map(|a| a.username.to_string()).unwrap_or_default()
    };
    let mut out = String::new();
    let splits = if adjusted { ", adjusted for data/splits-2000-2013.csv" } else { "" };
    writeln!(
        out,
        "# Outcomes of data/orders-2000-2013.csv on data/stocks-2000-2013.csv{splits}, 100000 \
         each."
    )
    .unwrap();
    for event in &sim.events {
        match event {
            Event::OrderFilled(f) => writeln!(
                out,
                "interval {} order {} {} {} {} {} -> filled at {} (tick {}) amount {} cash {} holding {}",
                f.interval, f.order.id, name(f.order.account), f.order.side, f.order.qty, f.order.symbol,
                f.price, f.tick_time, f.amount, f.cash_after, f.holding_after
            )
            .unwrap(),
            Event::OrderRejected(r) => writeln!(
                out,
                "interval {} order {} {} {} {} {} -> rejected {} (price {} cash {} holding {})",
                r.interval, r.order.id, name(r.order.account), r.order.side, r.order.qty, r.order.symbol,
                r.reason, r.price_seen.map(|p| p.to_string()).unwrap_or_else(|| "none".into()),
                r.cash_seen, r.holding_seen
            )
            .unwrap(),
            _ => {}
        }
    }
    for a in state.accounts() {
        write!(out, "account {} {} cash {}", a.id, a.username, a.cash).unwrap();
        for (s, h) in &a.holdings {
            write!(out, " {}={} (basis {})", s, h.qty, h.cost_basis).unwrap();
        }
        writeln!(out, " fills {}", a.history.len()).unwrap();
    }
    writeln!(
        out,
        "events {} intervals {} filled {} rejected {:?} unsettled {}",
        sim.events.len(),
        sim.intervals,
        sim.filled,
        sim.rejected,
        sim.unsettled
    )
    .unwrap();
    writeln!(out, "event bytes blake3 {}", blake3::hash(&common::encode_all(&sim.events)).to_hex())
        .unwrap();
    writeln!(out, "state digest {}", sim.digest()).unwrap();
    (out, sim)
}

#[test]
fn recorded_stream_matches_the_golden_file() {
    check(&parse_prices(PRICES).unwrap(), false, GOLDEN);
}

/// The run users get: the master and `pt simulate` adjust the recorded prices for the shipped
/// splits, so the rounding of `adjust_for_splits` is pinned too.
#[test]
fn split_adjusted_stream_matches_its_golden_file() {
    let prices = parse_prices(PRICES).unwrap();
    let adjusted = adjust_for_splits(prices.clone(), &parse_splits(SPLITS).unwrap()).unwrap();
    assert_ne!(adjusted, prices, "the shipped splits change prices");
    check(&adjusted, true, GOLDEN_ADJUSTED);
}

fn check(prices: &[RecordedInterval], adjusted: bool, golden_file: &str) {
    let (text, sim) = render(prices, adjusted);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(golden_file);
    if std::env::var_os("PT_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden =
        std::fs::read_to_string(&path).expect("golden file; run with PT_BLESS=1 to create it");
    if golden != text {
        let first = golden.lines().zip(text.lines()).position(|(a, b)| a != b);
        panic!(
            "event stream differs from {golden_file} at line {:?}; rerun with PT_BLESS=1 if \
             intended",
            first.map(|i| i + 1)
        );
    }

    // Independent of the pinned text: the run is sound.
    sim.engine.state().check_invariants().unwrap();
    let mut folded = Engine::new();
    for e in &sim.events {
        folded.apply(e).unwrap();
    }
    assert_eq!(folded.digest(), sim.digest());
    assert_eq!(sim.unsettled, 0);
    // The stream exercises every reason a simulation can reach (not UnknownAccount: every
    // username of the stream gets an account).
    for reason in RejectReason::ALL {
        let expected = reason != RejectReason::UnknownAccount;
        assert_eq!(sim.rejected_for(reason) > 0, expected, "{reason}");
    }
    // Every order of the file was decided, once.
    let orders = u64::try_from(parse_orders(ORDERS).unwrap().len()).unwrap();
    assert_eq!(sim.filled + sim.rejected.values().sum::<u64>(), orders);
}
