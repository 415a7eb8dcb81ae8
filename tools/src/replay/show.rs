//! `pt-replay show`: the state as of any point in the journal: accounts, cash, holdings and
//! history ("what did this account hold at 14:00 yesterday").

use std::fmt::Write as _;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use engine::{Account, Side, State, Username, money};
use journal::{ReplayFrom, ReplayOptions, ReplayTo, Replayed, Seq, VerifyOnOpen};
use serde_json::{Value, json};

use super::{Access, DataArgs, Outcome, open_journal, progress_bar, time::parse_time};

/// Arguments of `pt-replay show`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    /// The data directory.
    pub data: DataArgs,
    /// Show one account (by exact username) in full: holdings and transaction history.
    #[arg(long, value_name = "USER")]
    pub account: Option<String>,
    /// The state after this record (default: after the last one).
    #[arg(long, value_name = "SEQ", conflicts_with = "at_time")]
    pub at: Option<u64>,
    /// The state after the records appended at or before this time: `2025-03-14T14:00:00Z`,
    /// `"2025-03-14 14:00:00"` (UTC) or `"26h ago"`.
    #[arg(long, value_name = "TIME")]
    pub at_time: Option<String>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Replays to the requested point and renders the state.
pub fn run(args: &ShowArgs) -> anyhow::Result<Outcome> {
    let journal = open_journal(&args.data.data, Access::Read)?;
    let last = journal.last_seq();
    let to = match (&args.at, &args.at_time) {
        (Some(seq), _) => {
            if *seq > last.0 {
                bail!("--at {seq}: the journal ends at sequence number {last}");
            }
            ReplayTo::Seq(Seq(*seq))
        }
        (None, Some(text)) => ReplayTo::Time(parse_time(text, SystemTime::now())?),
        (None, None) => ReplayTo::End,
    };
    let username = match &args.account {
        Some(name) => Some(Username::new(name).with_context(|| format!("--account {name:?}"))?),
        None => None,
    };
    let bar = progress_bar(last, "replaying");
    let options =
        ReplayOptions { from: ReplayFrom::NewestSnapshot, to, verify: VerifyOnOpen::TailOnly };
    let mut replayed = journal.replay(options, &mut |seq| bar.set_position(seq.0))?;
    bar.finish_and_clear();
    // A state from a snapshot alone (right after `rebuild`, or at the snapshot's record) still
    // says when its last record was appended: read here, not in every replay (the master's
    // open has no use for it). A read that fails leaves it unknown.
    if replayed.last_recorded_at.is_none()
        && replayed.last_seq.0 > 0
        && let Ok(mut records) = journal.read_records(replayed.last_seq)
        && let Some(Ok(record)) = records.next()
    {
        replayed.last_recorded_at = Some(record.recorded_at);
    }
    let output = match &username {
        Some(name) => {
            let Some(account) = replayed.state.account_by_username(name) else {
                bail!("no account {name} at sequence number {}", replayed.last_seq);
            };
            if args.json {
                json!({ "at": at_json(&replayed), "account": account_json(account, &replayed.state) })
                    .to_string()
            } else {
                format!("{}\n{}", at_text(&replayed), account_text(account, &replayed.state))
            }
        }
        None if args.json => state_json(&replayed).to_string(),
        None => state_text(&replayed),
    };
    Ok(Outcome::ok(output))
}

fn at_text(replayed: &Replayed) -> String {
    let when = replayed.last_recorded_at.map(|t| format!(", appended at {t}")).unwrap_or_default();
    let mut text = format!(
        "state after sequence number {}{when}; digest {}",
        replayed.last_seq,
        replayed.state.digest()
    );
    // An interval's outcomes all went through at once: a point among them is a state no client
    // and no master ever saw, some accounts' orders settled and others' not yet.
    if let Some(open) = replayed.state.interval_in_progress() {
        let _ = write!(
            text,
            "
inside interval {}: {} of its {} outcomes applied (a state between its outcomes, \
             which went through at once; no one saw it)",
            open.id, open.outcomes_applied, open.orders
        );
    }
    text
}

fn at_json(replayed: &Replayed) -> Value {
    let inside = replayed.state.interval_in_progress().map(|open| {
        json!({
            "interval": open.id.0,
            "outcomes_applied": open.outcomes_applied,
            "orders": open.orders,
        })
    });
    json!({
        "seq": replayed.last_seq.0,
        "recorded_at": replayed.last_recorded_at.map(|t| t.to_string()),
        "digest": replayed.state.digest().to_string(),
        "inside_interval": inside,
    })
}

/// The value of a holding at the symbol's latest price (rounded down), if it has one.
fn market_value(state: &State, account: &Account, symbol: &engine::Symbol) -> Option<engine::Cash> {
    let tick = state.assets().get(symbol).copied().flatten()?;
    let qty = account.holdings.get(symbol)?.qty;
    money::notional(tick.fill_price(), qty, Side::Sell)
}

fn account_text(account: &Account, state: &State) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "account {} {}: cash {} (started with {} on {})",
        account.id, account.username, account.cash, account.initial_cash, account.opened_at
    );
    if account.holdings.is_empty() {
        let _ = writeln!(out, "holdings: none");
    } else {
        let _ = writeln!(out, "holdings:");
        let _ =
            writeln!(out, "  {:<16} {:>20} {:>20} {:>20}", "symbol", "qty", "cost basis", "value");
        for (symbol, holding) in &account.holdings {
            let priced = state.assets().get(symbol).is_some_and(Option::is_some);
            let value = match market_value(state, account, symbol) {
                Some(v) => v.to_string(),
                None if priced => "too large".into(),
                None => "-".into(),
            };
            let _ = writeln!(
                out,
                "  {:<16} {:>20} {:>20} {:>20}",
                symbol.as_str(),
                holding.qty.to_string(),
                holding.cost_basis.to_string(),
                value
            );
        }
    }
    if account.history.is_empty() {
        let _ = write!(out, "history: none");
    } else {
        let _ = write!(out, "history ({} fills, oldest first):", account.history.len());
        for t in &account.history {
            let _ = write!(
                out,
                "\n  {} order {} {} {} {} @ {} = {} (interval {})",
                t.settled_at,
                t.order.id,
                t.order.side.as_str(),
                t.order.qty,
                t.order.symbol,
                t.price,
                t.amount,
                t.interval
            );
        }
    }
    out
}

fn account_json(account: &Account, state: &State) -> Value {
    let holdings: Vec<Value> = account
        .holdings
        .iter()
        .map(|(symbol, h)| {
            json!({
                "symbol": symbol.as_str(),
                "qty": h.qty.to_string(),
                "cost_basis": h.cost_basis.to_string(),
                "value": market_value(state, account, symbol).map(|v| v.to_string()),
            })
        })
        .collect();
    let history: Vec<Value> = account
        .history
        .iter()
        .map(|t| {
            json!({
                "order": t.order.id.0,
                "side": t.order.side.as_str(),
                "symbol": t.order.symbol.as_str(),
                "qty": t.order.qty.to_string(),
                "price": t.price.to_string(),
                "amount": t.amount.to_string(),
                "interval": t.interval.0,
                "settled_at": t.settled_at.to_string(),
                "tick_time": t.tick_time.to_string(),
            })
        })
        .collect();
    json!({
        "id": account.id.0,
        "username": account.username.as_str(),
        "opened_at": account.opened_at.to_string(),
        "initial_cash": account.initial_cash.to_string(),
        "cash": account.cash.to_string(),
        "holdings": holdings,
        "history": history,
    })
}

fn state_text(replayed: &Replayed) -> String {
    let state = &replayed.state;
    let mut out = at_text(replayed);
    match state.last_interval() {
        Some(l) => {
            let _ =
                write!(out, "\nlast interval {} settled at {} ({} orders)", l.id, l.at, l.orders);
        }
        None => out.push_str("\nno interval settled yet"),
    }
    let _ = write!(out, "\nassets ({}):", state.assets().len());
    for (symbol, tick) in state.assets() {
        match tick {
            Some(t) => {
                let _ = write!(
                    out,
                    "\n  {:<16} last close {} (tick of {})",
                    symbol.as_str(),
                    t.close,
                    t.time
                );
            }
            None => {
                let _ = write!(out, "\n  {:<16} no tick yet", symbol.as_str());
            }
        }
    }
    let _ = write!(out, "\naccounts ({}):", state.accounts().len());
    let _ = write!(
        out,
        "\n  {:>6} {:<24} {:>20} {:>8} {:>8}",
        "id", "username", "cash", "holdings", "fills"
    );
    for a in state.accounts() {
        let _ = write!(
            out,
            "\n  {:>6} {:<24} {:>20} {:>8} {:>8}",
            a.id.0,
            a.username.as_str(),
            a.cash.to_string(),
            a.holdings.len(),
            a.history.len()
        );
    }
    out
}

fn state_json(replayed: &Replayed) -> Value {
    let state = &replayed.state;
    let assets: Vec<Value> = state
        .assets()
        .iter()
        .map(|(symbol, tick)| {
            json!({
                "symbol": symbol.as_str(),
                "last_close": tick.map(|t| t.close.to_string()),
                "tick_time": tick.map(|t| t.time.to_string()),
            })
        })
        .collect();
    let accounts: Vec<Value> = state
        .accounts()
        .iter()
        .map(|a| {
            json!({
                "id": a.id.0,
                "username": a.username.as_str(),
                "cash": a.cash.to_string(),
                "holdings": a
                    .holdings
                    .iter()
                    .map(|(s, h)| (s.as_str().to_owned(), json!(h.qty.to_string())))
                    .collect::<serde_json::Map<String, Value>>(),
                "fills": a.history.len(),
            })
        })
        .collect();
    json!({
        "at": at_json(replayed),
        "last_interval": state.last_interval().map(|l| json!({
            "id": l.id.0, "at": l.at.to_string(), "orders": l.orders,
        })),
        "assets": assets,
        "accounts": accounts,
    })
}
