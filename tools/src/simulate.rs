//! `pt simulate`: settles a recorded order stream against recorded prices with the engine alone
//! and reports the outcome. The shipped files are embedded, so it needs no setup.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use engine::recorded::{self, Simulation, SimulationConfig};
use engine::{Cash, RejectReason, money};

use crate::client::render;

/// The shipped recorded order stream (see `data/README.md`).
pub const SHIPPED_ORDERS: &str = include_str!("../../data/orders-2000-2013.csv");

/// Arguments of `pt simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Recorded price file (`time,symbol,open,high,low,close,volume`); default: the shipped one.
    #[arg(long)]
    pub prices: Option<PathBuf>,
    /// Recorded order stream (`time,username,side,symbol,qty`); default: the shipped one.
    #[arg(long)]
    pub orders: Option<PathBuf>,
    /// Split list (`time,symbol,ratio`) to adjust the prices for; default: the shipped list
    /// with the shipped prices, none with `--prices`.
    #[arg(long)]
    pub splits: Option<PathBuf>,
    /// Cash each account starts with, as a decimal (at most 8 decimals).
    #[arg(long, default_value = "100000", value_parser = parse_cash)]
    pub initial_cash: Cash,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// `--initial-cash`: checked by clap with the arguments, before any file is read.
fn parse_cash(text: &str) -> Result<Cash, String> {
    Cash::parse(text).map_err(|e| e.to_string())
}

/// The file at `path` (at most as large as a recorded price file may be), or `shipped`.
fn read_or(path: &Option<PathBuf>, shipped: &'static str) -> anyhow::Result<String> {
    let Some(p) = path else { return Ok(shipped.to_owned()) };
    let max = master::prices::recorded::RECORDED_FILE_BYTES_MAX;
    match master::config::read_text_bounded(p, max) {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(bytes)) => {
            anyhow::bail!("{} has {bytes} bytes or more, more than the {max} allowed", p.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}

/// Runs the simulation and renders the report (a table, or JSON with `--json`). A file named
/// that is not there is a usage error ([`crate::UsageError`], exit status 2), as for
/// `pt up --prices`.
pub fn run(args: &SimulateArgs) -> anyhow::Result<String> {
    for (what, path) in [("price", &args.prices), ("order", &args.orders), ("split", &args.splits)]
    {
        if let Some(path) = path.as_ref().filter(|p| !p.exists()) {
            let text = format!("no {what} file at {}", path.display());
            return Err(crate::UsageError(text).into());
        }
    }
    let orders_name =
        args.orders.as_ref().map_or("shipped orders".into(), |p| p.display().to_string());
    // As the master's recorded source loads them: the shipped split list goes with the shipped
    // prices only, and errors name the file and line.
    let prices =
        master::prices::recorded::load_prices(args.prices.as_deref(), args.splits.as_deref())?
            .intervals;
    let orders = recorded::parse_orders(&read_or(&args.orders, SHIPPED_ORDERS)?)
        .with_context(|| format!("in {orders_name}"))?;
    let config = SimulationConfig { initial_cash: args.initial_cash };
    let sim = recorded::simulate(&prices, &orders, &config)?;
    if args.json {
        Ok(render_json(&sim)?)
    } else {
        Ok(render_table(&sim, prices.len(), orders.len()))
    }
}

/// One account's valuation at the latest prices; `None` where a sum does not fit in 64 bits of
/// 10^-8 units (shown as "too large", never as a smaller number).
struct Valuation {
    holdings_value: Option<Cash>,
    total: Option<Cash>,
}

fn value(sim: &Simulation, account: &engine::Account) -> Valuation {
    let assets = sim.engine.state().assets();
    let holdings_value = account.holdings.iter().try_fold(Cash::ZERO, |sum, (symbol, h)| {
        // A holding came from a fill, so its symbol has a tick. Valued as a sale would be:
        // rounded down.
        let price = assets.get(symbol).copied().flatten()?.close;
        sum.checked_add(money::notional(price, h.qty, engine::Side::Sell)?)
    });
    let total = holdings_value.and_then(|v| account.cash.checked_add(v));
    Valuation { holdings_value, total }
}

/// An amount, or "too large" when it did not fit.
fn amount_text(amount: Option<Cash>) -> String {
    amount.map_or_else(|| "too large".to_owned(), |a| a.to_string())
}

fn render_table(sim: &Simulation, price_intervals: usize, order_rows: usize) -> String {
    let state = sim.engine.state();
    let mut out = String::new();
    let rejected = sim.rejected.values().sum::<u64>();
    let _ = writeln!(
        out,
        "Settled {} of {order_rows} recorded orders over {price_intervals} price intervals ({} \
         events).",
        sim.filled.saturating_add(rejected),
        sim.events.len()
    );
    match sim.unsettled {
        0 => {}
        1 => {
            let _ = writeln!(out, "1 order dated after the last price interval was not settled.");
        }
        n => {
            let _ =
                writeln!(out, "{n} orders dated after the last price interval were not settled.");
        }
    }
    let _ = writeln!(out, "Filled {}, rejected {rejected}.", sim.filled);
    for reason in RejectReason::ALL {
        let n = sim.rejected_for(reason);
        if n > 0 {
            let _ = writeln!(out, "  rejected {:<22} {n:>6}", reason.as_str());
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<10} {:>16} {:>16} {:>16} {:>16}  holdings",
        "account", "cash", "holdings value", "total", "change"
    );
    for a in state.accounts() {
        let v = value(sim, a);
        let holdings: Vec<String> =
            a.holdings.iter().map(|(s, h)| format!("{s} {}", h.qty)).collect();
        let _ = writeln!(
            out,
            "{:<10} {:>16} {:>16} {:>16} {:>16}  {}",
            a.username.as_str(),
            a.cash.to_string(),
            amount_text(v.holdings_value),
            amount_text(v.total),
            v.total.map_or_else(|| "-".to_owned(), |t| render::signed_change(a.initial_cash, t)),
            holdings.join(", ")
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Holdings valued at each symbol's latest close, rounded down.");
    let _ = writeln!(out, "State digest {}", sim.digest());
    out
}

fn render_json(sim: &Simulation) -> anyhow::Result<String> {
    let state = sim.engine.state();
    let accounts: Vec<serde_json::Value> = state
        .accounts()
        .iter()
        .map(|a| {
            let v = value(sim, a);
            serde_json::json!({
                "username": a.username.as_str(),
                "cash": a.cash.to_string(),
                "holdings_value": v.holdings_value.map(|c| c.to_string()),
                "total": v.total.map(|c| c.to_string()),
                "holdings": a.holdings.iter().map(|(s, h)| serde_json::json!({
                    "symbol": s.as_str(), "qty": h.qty.to_string(), "cost_basis": h.cost_basis.to_string()
                })).collect::<Vec<_>>(),
                "fills": a.history.len(),
            })
        })
        .collect();
    let rejected: serde_json::Map<String, serde_json::Value> = RejectReason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), serde_json::Value::from(sim.rejected_for(*r))))
        .collect();
    let report = serde_json::json!({
        "events": sim.events.len(),
        "intervals": sim.intervals,
        "filled": sim.filled,
        "rejected": rejected,
        "unsettled": sim.unsettled,
        "accounts": accounts,
        "digest": sim.digest().to_string(),
    });
    Ok(serde_json::to_string_pretty(&report)?)
}
