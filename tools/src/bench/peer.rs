//! `peer.sqlite`: the same settled-order workload persisted two ways on the same disk,
//! interval by interval, alternating:
//!
//! - ours: one durable `Journal::append_batch_with_meta` per interval (the interval's
//!   `IntervalSettled` and one outcome event per order, plus the next order id), as the master
//!   does;
//! - the peer: the way a typical paper-trading server does it, SQLite (bundled, WAL,
//!   `synchronous=FULL`) with one transaction per interval inserting one row per order, one row
//!   per fill and one row for the interval, through prepared statements.
//!
//! The value is our durable orders per second, the baseline SQLite's, so the ratio is ours over
//! theirs (target: at least 5).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use engine::workload::{self, WorkloadShape, XorShift};
use engine::{Event, IntervalId, Order, Side, Timestamp};
use journal::{Journal, JournalConfig};
use rusqlite::{Connection, params};

use super::{BenchArgs, Figure, base_dir, per_second};

/// The engine benchmark's accounts and symbols (`engine::workload`, 75% buys), settled in
/// intervals of [`ORDERS_PER_INTERVAL`] orders.
const SHAPE: WorkloadShape = WorkloadShape { accounts: 10_000, symbols: 100, orders: 0, seed: 7 };
/// Orders per interval: 50,000 orders/s at a 50 ms interval.
const ORDERS_PER_INTERVAL: u64 = 2_500;
/// Settled intervals measured.
const INTERVALS: usize = 150;
/// Settled intervals measured with `--quick`.
const QUICK_INTERVALS: usize = 4;
/// Target ratio (ours / SQLite).
pub const TARGET_RATIO: f64 = 5.0;

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE accounts (id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE,
        email TEXT NOT NULL, cash INTEGER NOT NULL);
    CREATE TABLE intervals (id INTEGER PRIMARY KEY, settled_at INTEGER NOT NULL,
        orders INTEGER NOT NULL);
    CREATE TABLE orders (id INTEGER PRIMARY KEY, client_id INTEGER NOT NULL,
        account INTEGER NOT NULL, symbol TEXT NOT NULL, side INTEGER NOT NULL,
        qty INTEGER NOT NULL, placed_at INTEGER NOT NULL, worker BLOB NOT NULL,
        interval INTEGER NOT NULL, status INTEGER NOT NULL, reason INTEGER);
    CREATE TABLE fills (order_id INTEGER PRIMARY KEY, interval INTEGER NOT NULL,
        price INTEGER NOT NULL, amount INTEGER NOT NULL, cash_after INTEGER NOT NULL,
        holding_after INTEGER NOT NULL);
";

/// SQLite stores signed 64-bit integers; our u64 amounts are stored bit for bit.
fn signed(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

fn insert_order(
    statement: &mut rusqlite::Statement<'_>,
    order: &Order,
    interval: u64,
    reason: Option<u16>,
) -> rusqlite::Result<usize> {
    let side = match order.side {
        Side::Buy => 0,
        Side::Sell => 1,
    };
    statement.execute(params![
        signed(order.id.0),
        signed(order.client_id.0),
        signed(order.account.0),
        order.symbol.as_str(),
        side,
        signed(order.qty.raw()),
        order.placed_at.0,
        order.worker.0.to_be_bytes().as_slice(),
        signed(interval),
        i32::from(reason.is_none()),
        reason,
    ])
}

/// Persists one batch in one SQLite transaction; returns the orders in it.
fn sqlite_batch(db: &mut Connection, events: &[Event]) -> rusqlite::Result<u64> {
    let tx = db.transaction()?;
    let mut orders = 0u64;
    {
        let mut order_row = tx.prepare_cached(
            "INSERT INTO orders (id, client_id, account, symbol, side, qty, placed_at, worker, \
             interval, status, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        let mut fill_row = tx.prepare_cached(
            "INSERT INTO fills (order_id, interval, price, amount, cash_after, holding_after) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for event in events {
            match event {
                Event::IntervalSettled(s) => {
                    tx.execute(
                        "INSERT INTO intervals (id, settled_at, orders) VALUES (?1, ?2, ?3)",
                        params![signed(s.interval.0), s.at.0, signed(s.orders)],
                    )?;
                }
                Event::OrderFilled(fill) => {
                    orders += 1;
                    insert_order(&mut order_row, &fill.order, fill.interval.0, None)?;
                    fill_row.execute(params![
                        signed(fill.order.id.0),
                        signed(fill.interval.0),
                        signed(fill.price.raw()),
                        signed(fill.amount.raw()),
                        signed(fill.cash_after.raw()),
                        signed(fill.holding_after.raw()),
                    ])?;
                }
                Event::OrderRejected(rejection) => {
                    orders += 1;
                    insert_order(
                        &mut order_row,
                        &rejection.order,
                        rejection.interval.0,
                        Some(rejection.reason.code()),
                    )?;
                }
                Event::AccountOpened(a) => {
                    tx.execute(
                        "INSERT INTO accounts (id, username, email, cash) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            signed(a.account.0),
                            a.username.as_str(),
                            a.email.as_str(),
                            signed(a.initial_cash.raw())
                        ],
                    )?;
                }
                Event::AssetListed(_) | Event::PasswordRehashed(_) => {}
            }
        }
    }
    tx.commit()?;
    Ok(orders)
}

/// Measures `peer.sqlite`.
pub fn run(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let base = base_dir(args);
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("pt-bench-peer-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot make a directory in {}", base.display()))?;
    let intervals = if args.quick { QUICK_INTERVALS } else { INTERVALS };

    // The workload, settled interval by interval before any timing.
    let mut load = workload::build(SHAPE).context("cannot build the workload")?;
    let mut rng = XorShift::new(SHAPE.seed);
    let mut settled = Vec::with_capacity(intervals);
    for k in 1..=intervals {
        let k = u64::try_from(k).unwrap_or(u64::MAX);
        let first_id = (k - 1) * ORDERS_PER_INTERVAL + 1;
        workload::queue_more(&mut load, SHAPE, &mut rng, first_id, ORDERS_PER_INTERVAL);
        let at = Timestamp(i64::try_from(k).unwrap_or(i64::MAX).saturating_mul(50_000));
        settled.push(workload::settle_as(&mut load, IntervalId(k), at).context("settlement")?);
    }
    // The accounts, as both stores would hold them (persisted untimed).
    let setup: Vec<Event> = load
        .engine
        .state()
        .accounts()
        .iter()
        .map(|a| {
            Event::AccountOpened(engine::AccountOpened {
                account: a.id,
                username: a.username.clone(),
                email: a.email.clone(),
                password_hash: a.password_hash.clone(),
                initial_cash: a.initial_cash,
                at: a.opened_at,
            })
        })
        .collect();
    drop(load);

    let (journal, _) = Journal::open(dir.path().join("peer.redb"), JournalConfig::default())
        .context("cannot open the journal")?;
    let mut db = Connection::open(dir.path().join("peer.sqlite")).context("cannot open SQLite")?;
    db.execute_batch(SCHEMA).context("cannot set up SQLite")?;
    journal.append_batch(&setup, Timestamp(0)).context("journal append")?;
    sqlite_batch(&mut db, &setup).context("SQLite insert")?;

    let (mut ours, mut theirs) = (Duration::ZERO, Duration::ZERO);
    let mut orders = 0u64;
    let mut next_order_id = 1u64;
    for batch in &settled {
        let start = Instant::now();
        let in_batch = sqlite_batch(&mut db, batch).context("SQLite insert")?;
        theirs += start.elapsed();
        orders += in_batch;
        next_order_id = next_order_id.saturating_add(in_batch);
        let start = Instant::now();
        journal
            .append_batch_with_meta(
                batch,
                Timestamp(0),
                &[("next_order_id", next_order_id.to_be_bytes().as_slice())],
            )
            .context("journal append")?;
        ours += start.elapsed();
    }
    let figure = Figure::new(
        "peer.sqlite",
        per_second(orders, ours),
        "orders/s",
        per_second(orders, theirs),
        "SQLite WAL, synchronous=FULL",
    );
    let met = figure.ratio >= TARGET_RATIO;
    Ok(vec![figure.with_target("ratio >= 5 (ours / SQLite)", met)])
}
