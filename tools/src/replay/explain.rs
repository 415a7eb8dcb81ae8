//! `pt-replay explain`: why an order filled or was rejected: the interval and tick it settled
//! against, the price, and the balances it saw.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::bail;
use engine::{
    AccountId, Event, Fill, IntervalSettled, Order, OrderId, Qty, Rejection, Side, Timestamp,
    Username, money,
};
use journal::{Record, Seq};
use serde_json::{Value, json};

use super::{Access, DataArgs, Outcome, open_journal, progress_bar};

/// Arguments of `pt-replay explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    /// The data directory.
    pub data: DataArgs,
    /// The order id (as given by the master).
    #[arg(long, value_name = "ID")]
    pub order: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The interval an outcome belongs to, as the journal recorded it.
struct Interval {
    seq: Seq,
    settled: IntervalSettled,
    /// The account and queue key of each of the interval's outcomes read so far.
    keys: Vec<(AccountId, QueueKey)>,
}

/// An order's place in the settlement order: [`Order::queue_key`].
type QueueKey = (Timestamp, engine::WorkerId, OrderId);

impl Interval {
    /// The order's turn in the interval's queue and among its account's orders, each counted
    /// from 1, with the account's number of orders in the interval. The journal holds an
    /// interval's outcomes by account (docs/ENGINE.md), so both turns are counted from the
    /// queue keys, not from the outcome's place in the journal.
    fn turns(&self, order: &Order) -> Turns {
        let key = order.queue_key();
        let before = self.keys.iter().filter(|(_, k)| *k < key).count();
        let account = self.keys.iter().filter(|(a, _)| *a == order.account);
        let account_before = account.clone().filter(|(_, k)| *k < key).count();
        Turns {
            queue: before as u64 + 1,
            account: account_before as u64 + 1,
            account_orders: account.count() as u64,
        }
    }
}

/// Where an order stood when its interval settled.
struct Turns {
    queue: u64,
    account: u64,
    account_orders: u64,
}

/// An order's outcome.
enum Settled {
    Filled(Fill),
    Rejected(Rejection),
}

/// What the scan found.
struct Found {
    seq: Seq,
    recorded_at: Timestamp,
    outcome: Settled,
    interval: Option<Interval>,
    username: Option<Username>,
}

/// Scans the journal for the order's outcome and explains it.
pub fn run(args: &ExplainArgs) -> anyhow::Result<Outcome> {
    let journal = open_journal(&args.data.data, Access::Read)?;
    let bar = progress_bar(journal.last_seq(), "searching");
    let wanted = OrderId(args.order);
    let mut usernames: BTreeMap<AccountId, Username> = BTreeMap::new();
    let mut interval: Option<Interval> = None;
    let mut found: Option<Found> = None;
    for (i, record) in journal.read_records(Seq(1))?.enumerate() {
        let Record { seq, recorded_at, event, .. } = record?;
        if i % 4096 == 0 {
            bar.set_position(seq.0);
        }
        let outcome = match event {
            Event::AccountOpened(opened) => {
                usernames.insert(opened.account, opened.username);
                continue;
            }
            Event::IntervalSettled(settled) => {
                if found.is_some() {
                    break;
                }
                interval = Some(Interval { seq, settled, keys: Vec::new() });
                continue;
            }
            Event::AssetListed(_) | Event::PasswordRehashed(_) => continue,
            Event::OrderFilled(fill) => Settled::Filled(fill),
            Event::OrderRejected(rejection) => Settled::Rejected(rejection),
        };
        let order = match &outcome {
            Settled::Filled(fill) => fill.order,
            Settled::Rejected(rejection) => rejection.order,
        };
        if let Some(current) = interval.as_mut() {
            current.keys.push((order.account, order.queue_key()));
        }
        if found.is_none() && order.id == wanted {
            let username = usernames.get(&order.account).cloned();
            found = Some(Found { seq, recorded_at, outcome, interval: None, username });
        }
        // The order's turn needs the keys of the whole interval: read to its last outcome.
        let interval_read =
            interval.as_ref().is_none_or(|i| i.keys.len() as u64 >= i.settled.orders);
        if found.is_some() && interval_read {
            break;
        }
    }
    if let Some(found) = found.as_mut() {
        found.interval = interval;
    }
    bar.finish_and_clear();
    let Some(found) = found else {
        bail!("order {wanted} has no outcome in the journal (unknown, or not settled yet)");
    };
    let output = if args.json { explain_json(&found).to_string() } else { explain_text(&found) };
    Ok(Outcome::ok(output))
}

fn order_text(order: &Order, username: Option<&Username>) -> String {
    let who = username.map_or_else(|| "no such account".to_owned(), |u| u.to_string());
    format!(
        "order {} ({} {} {} for account {} ({who}), placed at {} through worker {}, client id {})",
        order.id,
        order.side.as_str(),
        order.qty,
        order.symbol,
        order.account,
        order.placed_at,
        // As `pt-master worker list` and the worker's own files show it.
        uuid::Uuid::from_u128(order.worker.0),
        order.client_id,
    )
}

fn tick_text(interval: &Interval, order: &Order) -> String {
    match interval.settled.ticks.iter().find(|t| t.symbol == order.symbol) {
        Some(t) => format!(
            "the {} tick of {}: open {}, high {}, low {}, close {}, volume {}",
            t.symbol, t.time, t.open, t.high, t.low, t.close, t.volume
        ),
        None => format!("no tick for {} in that interval", order.symbol),
    }
}

/// Cash and holding before a fill, from the balances after it.
fn before_fill(fill: &Fill) -> (Option<engine::Cash>, Option<Qty>) {
    match fill.order.side {
        Side::Buy => (
            fill.cash_after.checked_add(fill.amount),
            fill.holding_after.checked_sub(fill.order.qty),
        ),
        Side::Sell => (
            fill.cash_after.checked_sub(fill.amount),
            fill.holding_after.checked_add(fill.order.qty),
        ),
    }
}

fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

fn explain_text(found: &Found) -> String {
    let mut out = String::new();
    let (order, verdict) = match &found.outcome {
        Settled::Filled(fill) => (fill.order, "FILLED"),
        Settled::Rejected(rejection) => (rejection.order, "REJECTED"),
    };
    let _ = writeln!(out, "{}: {verdict}", order_text(&order, found.username.as_ref()));
    let _ = write!(
        out,
        "outcome recorded at sequence number {} (appended at {})",
        found.seq, found.recorded_at
    );
    if let Some(interval) = &found.interval {
        let turns = interval.turns(&order);
        let _ = write!(
            out,
            "\nsettled in interval {} at {} (sequence number {}), turn {} of {} in the queue, \
             {} of {} for its account",
            interval.settled.interval,
            interval.settled.at,
            interval.seq,
            turns.queue,
            interval.settled.orders,
            turns.account,
            turns.account_orders
        );
        let _ = write!(out, "\nprice source: {}", tick_text(interval, &order));
    }
    match &found.outcome {
        Settled::Filled(fill) => {
            let (cash_before, holding_before) = before_fill(fill);
            let moved = match order.side {
                Side::Buy => "paid",
                Side::Sell => "received",
            };
            let _ = write!(
                out,
                "\nfilled at {} (the close of the tick of {}): {moved} {}",
                fill.price, fill.tick_time, fill.amount
            );
            let _ = write!(
                out,
                "\ncash {} -> {}; {} held {} -> {}",
                show(cash_before),
                fill.cash_after,
                order.symbol,
                show(holding_before),
                fill.holding_after
            );
        }
        Settled::Rejected(r) => {
            let _ = write!(out, "\nreason: {} (code {})", r.reason, r.reason.code());
            let needed = r.price_seen.and_then(|p| money::notional(p, order.qty, order.side));
            let _ = write!(
                out,
                "\nit saw: price {}, cash {}, {} held {}; the order's notional would be {}",
                show(r.price_seen),
                r.cash_seen,
                order.symbol,
                r.holding_seen,
                show(needed)
            );
        }
    }
    out
}

fn explain_json(found: &Found) -> Value {
    let (order, outcome) = match &found.outcome {
        Settled::Filled(fill) => {
            let (cash_before, holding_before) = before_fill(fill);
            (
                fill.order,
                json!({
                    "status": "filled",
                    "price": fill.price.to_string(),
                    "tick_time": fill.tick_time.to_string(),
                    "amount": fill.amount.to_string(),
                    "cash_before": cash_before.map(|c| c.to_string()),
                    "cash_after": fill.cash_after.to_string(),
                    "holding_before": holding_before.map(|q| q.to_string()),
                    "holding_after": fill.holding_after.to_string(),
                }),
            )
        }
        Settled::Rejected(r) => (
            r.order,
            json!({
                "status": "rejected",
                "reason": r.reason.as_str(),
                "code": r.reason.code(),
                "price_seen": r.price_seen.map(|p| p.to_string()),
                "cash_seen": r.cash_seen.to_string(),
                "holding_seen": r.holding_seen.to_string(),
            }),
        ),
    };
    let interval = found.interval.as_ref().map(|i| {
        let tick = i.settled.ticks.iter().find(|t| t.symbol == order.symbol).map(|t| {
            json!({
                "time": t.time.to_string(),
                "open": t.open.to_string(),
                "high": t.high.to_string(),
                "low": t.low.to_string(),
                "close": t.close.to_string(),
                "volume": t.volume.to_string(),
            })
        });
        let turns = i.turns(&order);
        json!({
            "id": i.settled.interval.0,
            "settled_at": i.settled.at.to_string(),
            "seq": i.seq.0,
            "turn": turns.queue,
            "orders": i.settled.orders,
            "account_turn": turns.account,
            "account_orders": turns.account_orders,
            "tick": tick,
        })
    });
    json!({
        "seq": found.seq.0,
        "recorded_at": found.recorded_at.to_string(),
        "order": {
            "id": order.id.0,
            "client_id": order.client_id.0,
            "account": order.account.0,
            "username": found.username.as_ref().map(|u| u.as_str().to_owned()),
            "side": order.side.as_str(),
            "symbol": order.symbol.as_str(),
            "qty": order.qty.to_string(),
            "placed_at": order.placed_at.to_string(),
            "worker": uuid::Uuid::from_u128(order.worker.0).to_string(),
        },
        "outcome": outcome,
        "interval": interval,
    })
}
