//! Rendering answers for people (aligned tables, a price chart) and for scripts (JSON).
//!
//! Pure functions from protocol payloads to text. Money and quantities are shown with the
//! engine's `Display` (exact decimals) and put in JSON as decimal strings; times are UTC. There
//! are no floats: values and the chart are computed with integers.

use std::fmt::Write as _;

use engine::money::{self, Side};
use engine::{Cash, Price, Tick, Timestamp, Username};
use net::{Bar, FillReport, HistoryEntry, Portfolio, PriceSeries, UserInfo, WorkerInfo};
use serde_json::{Value, json};

/// Width of the price chart in columns.
pub const CHART_WIDTH: usize = 60;
/// Height of the price chart in rows (each row has eight levels).
pub const CHART_HEIGHT: usize = 8;

const EIGHTHS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// How a column is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table of aligned columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(columns: &[(&'static str, Align)]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row (missing cells are empty, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, two spaces between columns, no trailing spaces. In a right-aligned
    /// column the decimal points of the numbers line up: a number with fewer decimals than the
    /// column's most is padded with spaces after it (the number itself is printed as it is,
    /// exact, with no zeros added).
    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let decimals: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(i).and_then(|cell| decimals_of(cell)))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(i, cell)| match (self.columns.get(i), decimals_of(cell)) {
                        (Some((_, Align::Right)), Some(have)) if decimals[i] > 0 => {
                            // The point itself is padded too when the number has none.
                            let pad = decimals[i] - have + usize::from(have == 0);
                            format!("{cell}{}", " ".repeat(pad))
                        }
                        _ => cell.clone(),
                    })
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| width(h)).collect();
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i > 0 {
                    line.push_str("  ");
                }
                let _ = match align {
                    Align::Left => write!(line, "{cell:<w$}"),
                    Align::Right => write!(line, "{cell:>w$}"),
                };
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The number of decimals of a plain decimal number (`-12.5` has 1, `105` has 0), or `None`
/// for any other text (a date, a dash, a word).
fn decimals_of(cell: &str) -> Option<usize> {
    let digits = cell.strip_prefix(['-', '+']).unwrap_or(cell);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let numeric = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    (!whole.is_empty()
        && numeric(whole)
        && numeric(fraction)
        && (!fraction.is_empty() || !digits.ends_with('.')))
    .then_some(fraction.len())
}

/// A time for tables: `2013-03-01` at midnight UTC, else `2013-03-01 14:30:05` (UTC, whole
/// seconds).
pub fn fmt_time(at: Timestamp) -> String {
    let Some(t) = at.to_offset_date_time() else { return at.to_string() };
    let date = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
    if (t.hour(), t.minute(), t.second(), t.nanosecond()) == (0, 0, 0, 0) {
        date
    } else {
        format!("{date} {:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
    }
}

/// `+1.50` or `-1.50`: `to - from`.
pub fn signed_change(from: Cash, to: Cash) -> String {
    signed_difference(from.raw(), to.raw(), Cash::from_raw)
}

/// `to - from` of two raw amounts with its sign, the difference written as `amount` writes
/// one (`Cash` with at least two decimals, `Price` with none required).
pub fn signed_difference<T: std::fmt::Display>(from: u64, to: u64, amount: fn(u64) -> T) -> String {
    match to.checked_sub(from) {
        Some(up) => format!("+{}", amount(up)),
        None => format!("-{}", amount(from.saturating_sub(to))),
    }
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// `pt workers`.
pub fn workers(list: &[WorkerInfo], as_json: bool) -> String {
    if as_json {
        let items: Vec<Value> = list
            .iter()
            .map(|w| {
                let id = uuid_text(w.id.0);
                json!({ "id": id, "name": w.name, "address": w.address })
            })
            .collect();
        return pretty(&json!({ "workers": items }));
    }
    if list.is_empty() {
        return "No worker is connected to the master.\n".to_owned();
    }
    let mut sorted: Vec<&WorkerInfo> = list.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.address).cmp(&(&b.name, &b.address)));
    let mut table =
        Table::new(&[("name", Align::Left), ("address", Align::Left), ("id", Align::Left)]);
    for w in sorted {
        table.row(vec![w.name.clone(), w.address.clone(), uuid_text(w.id.0)]);
    }
    table.render()
}

/// A 128-bit id in the hyphenated UUID form.
pub fn uuid_text(id: u128) -> String {
    let hex = format!("{id:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// `pt register`.
pub fn registered(username: &Username, email: &str, as_json: bool) -> String {
    if as_json {
        return pretty(&json!({ "registered": username.as_str(), "email": email }));
    }
    format!("Registered {username} ({email}). Next: pt login {username}\n")
}

/// `pt login`.
pub fn logged_in(username: &Username, remember: bool, session_file: &str, as_json: bool) -> String {
    if as_json {
        return pretty(&json!({
            "logged_in": username.as_str(),
            "remembered": remember,
            "session_file": session_file,
        }));
    }
    let lifetime = if remember {
        "it lasts until `pt logout` or the master's remembered lifetime (30 days by default)"
    } else {
        "it ends after 30 minutes without a command (--remember keeps it for 30 days)"
    };
    format!("Logged in as {username}. Session saved to {session_file}; {lifetime}.\n")
}

/// `pt logout`.
/// `unknown_elsewhere`: neither the worker asked nor the one at this address, which the session
/// was saved through, could end the session (it may still be valid on another PaperTrader).
pub fn logged_out(
    username: &Username,
    ended_on_server: bool,
    unknown_elsewhere: Option<&str>,
    as_json: bool,
) -> String {
    if as_json {
        let mut out = json!({ "logged_out": username.as_str(), "ended": ended_on_server });
        if let Some(saved_through) = unknown_elsewhere {
            out["saved_through"] = json!(saved_through);
        }
        return pretty(&out);
    }
    match (ended_on_server, unknown_elsewhere) {
        (true, _) => format!("Logged out {username}.\n"),
        (false, Some(saved_through)) => format!(
            "Logged out {username} on this machine: this worker did not know the session, and \
             the one it was saved through ({saved_through}) could not be told to end it (not \
             reachable, not knowing it, or not answering); it ends by itself when it expires.\n"
        ),
        (false, None) => {
            format!("Logged out {username} (the session had already ended on the server).\n")
        }
    }
}

/// `pt buy` / `pt sell`: the fill. `earlier`: by the master's clock it settled more than a
/// second before this command began by this machine's (with synchronised clocks: the client
/// order id named an order placed before, and this command ordered nothing new).
pub fn fill(report: &FillReport, earlier: bool, as_json: bool) -> String {
    if as_json {
        return pretty(&json!({
            "settled_before_command": earlier,
            "order": report.order.0,
            "side": report.side.as_str(),
            "symbol": report.symbol.as_str(),
            "qty": report.qty.to_string(),
            "price": report.price.to_string(),
            "amount": report.amount.to_string(),
            "interval": report.interval.0,
            "settled_at": report.settled_at.to_string(),
            "cash_after": report.cash_after.to_string(),
        }));
    }
    let (verb, paid) = match report.side {
        Side::Buy => ("Bought", "paid"),
        Side::Sell => ("Sold", "received"),
    };
    let already = if earlier {
        "Already placed: by the master's clock this fill settled before this command began by \
         this machine's; with the clocks in step, it is the outcome of an earlier command with \
         this client order id (one id never places two orders).\n"
    } else {
        ""
    };
    format!(
        "{already}{verb} {} {} at {} ({paid} {}).\nOrder {} settled in interval {} at {}. Cash \
         after this fill: {}.\n",
        report.qty,
        report.symbol,
        report.price,
        report.amount,
        report.order,
        report.interval,
        fmt_time(report.settled_at),
        report.cash_after,
    )
}

/// One holding's value at its last price (rounded down, as a sale would be).
fn holding_value(qty: engine::Qty, last: Option<Price>) -> Option<Cash> {
    money::notional(last?, qty, Side::Sell)
}

/// `pt portfolio`.
pub fn portfolio(username: &Username, p: &Portfolio, as_json: bool) -> String {
    let mut total = Some(p.cash);
    let mut rows = Vec::new();
    for h in &p.holdings {
        let value = holding_value(h.qty, h.last_price);
        total = match (total, value) {
            (Some(t), Some(v)) => t.checked_add(v),
            _ => None,
        };
        rows.push((h, value));
    }
    if as_json {
        let holdings: Vec<Value> = rows
            .iter()
            .map(|(h, value)| {
                json!({
                    "symbol": h.symbol.as_str(),
                    "qty": h.qty.to_string(),
                    "cost_basis": h.cost_basis.to_string(),
                    "last_price": h.last_price.map(|p| p.to_string()),
                    "value": value.map(|v| v.to_string()),
                })
            })
            .collect();
        return pretty(&json!({
            "username": username.as_str(),
            "cash": p.cash.to_string(),
            "holdings": holdings,
            "total": total.map(|t| t.to_string()),
        }));
    }
    let mut out = String::new();
    let _ = writeln!(out, "Portfolio of {username}");
    let _ = writeln!(out, "Cash: {}", p.cash);
    if rows.is_empty() {
        let _ = writeln!(out, "No holdings.");
    } else {
        let mut table = Table::new(&[
            ("symbol", Align::Left),
            ("qty", Align::Right),
            ("cost basis", Align::Right),
            ("last price", Align::Right),
            ("value", Align::Right),
            ("gain", Align::Right),
        ]);
        for (h, value) in &rows {
            let dash = || "-".to_owned();
            // No value with a price: the value does not fit in 64 bits of 10^-8 units.
            let unknown = || if h.last_price.is_some() { "too large" } else { "-" }.to_owned();
            table.row(vec![
                h.symbol.to_string(),
                h.qty.to_string(),
                h.cost_basis.to_string(),
                h.last_price.map_or_else(dash, |p| p.to_string()),
                value.map_or_else(unknown, |v| v.to_string()),
                value.map_or_else(dash, |v| signed_change(h.cost_basis, v)),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
        out.push('\n');
    }
    match total {
        Some(total) => {
            let _ = writeln!(out, "Total: {total} (holdings valued at their last price)");
        }
        None if p.holdings.iter().any(|h| h.last_price.is_none()) => {
            let _ = writeln!(out, "Total: unknown (a holding has no price)");
        }
        None => {
            let _ = writeln!(out, "Total: too large to add up (over 64 bits of 10^-8 units)");
        }
    }
    out
}

/// `pt history`: the entries the master sent, and how many older ones it left out.
pub fn history(username: &Username, entries: &[HistoryEntry], older: u64, as_json: bool) -> String {
    if as_json {
        let items: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "order": e.order.0,
                    "side": e.side.as_str(),
                    "symbol": e.symbol.as_str(),
                    "qty": e.qty.to_string(),
                    "price": e.price.to_string(),
                    "amount": e.amount.to_string(),
                    "interval": e.interval.0,
                    "settled_at": e.settled_at.to_string(),
                    "tick_time": e.tick_time.to_string(),
                })
            })
            .collect();
        return pretty(&json!({
            "username": username.as_str(),
            "older_not_shown": older,
            "transactions": items,
        }));
    }
    if entries.is_empty() {
        return format!("No transactions for {username}.\n");
    }
    let mut table = Table::new(&[
        ("settled", Align::Left),
        ("order", Align::Right),
        ("side", Align::Left),
        ("symbol", Align::Left),
        ("qty", Align::Right),
        ("price", Align::Right),
        ("amount", Align::Right),
        ("price date", Align::Left),
    ]);
    for e in entries {
        table.row(vec![
            fmt_time(e.settled_at),
            e.order.to_string(),
            e.side.to_string(),
            e.symbol.to_string(),
            e.qty.to_string(),
            e.price.to_string(),
            e.amount.to_string(),
            fmt_time(e.tick_time),
        ]);
    }
    let mut out = format!("Transactions of {username}, oldest first\n\n{}", table.render());
    if older > 0 {
        let _ = writeln!(out, "\n{older} older transactions not shown (the newest are).");
    }
    out
}

/// `pt user`.
pub fn user(info: &UserInfo, as_json: bool) -> String {
    if as_json {
        return pretty(&json!({
            "username": info.username.as_str(),
            "account": info.account.0,
            "opened_at": info.opened_at.to_string(),
            "email": info.email.as_ref().map(|e| e.as_str()),
        }));
    }
    let mut out = String::new();
    let _ = writeln!(out, "user     {}", info.username);
    let _ = writeln!(out, "account  {}", info.account);
    let _ = writeln!(out, "opened   {}", fmt_time(info.opened_at));
    if let Some(email) = &info.email {
        let _ = writeln!(out, "email    {email}");
    }
    out
}

/// `pt info` and `pt price` without a range: one tick.
pub fn tick(t: &Tick, as_json: bool) -> String {
    if as_json {
        return pretty(&json!({
            "symbol": t.symbol.as_str(),
            "open": t.open.to_string(),
            "high": t.high.to_string(),
            "low": t.low.to_string(),
            "close": t.close.to_string(),
            "volume": t.volume.to_string(),
            "time": t.time.to_string(),
        }));
    }
    let mut table = Table::new(&[
        ("symbol", Align::Left),
        ("time", Align::Left),
        ("open", Align::Right),
        ("high", Align::Right),
        ("low", Align::Right),
        ("close", Align::Right),
        ("volume", Align::Right),
    ]);
    table.row(vec![
        t.symbol.to_string(),
        fmt_time(t.time),
        t.open.to_string(),
        t.high.to_string(),
        t.low.to_string(),
        t.close.to_string(),
        t.volume.to_string(),
    ]);
    table.render()
}

fn bar_json(b: &Bar) -> Value {
    json!({
        "time": b.time.to_string(),
        "open": b.open.to_string(),
        "high": b.high.to_string(),
        "low": b.low.to_string(),
        "close": b.close.to_string(),
        "volume": b.volume.to_string(),
    })
}

/// `pt price` with a range: a chart of the closes, a summary, and the last `rows` bars as a
/// table (`rows == 0`: every bar). JSON has every bar.
pub fn series(s: &PriceSeries, range: &str, rows: usize, as_json: bool) -> String {
    if as_json {
        let bars: Vec<Value> = s.bars.iter().map(bar_json).collect();
        return pretty(&json!({ "symbol": s.symbol.as_str(), "range": range, "bars": bars }));
    }
    let (Some(first), Some(last)) = (s.bars.first(), s.bars.last()) else {
        return format!("No prices for {} ({range}).\n", s.symbol);
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {range}: {} bar{}, {} to {}",
        s.symbol,
        s.bars.len(),
        if s.bars.len() == 1 { "" } else { "s" },
        fmt_time(first.time),
        fmt_time(last.time)
    );
    out.push('\n');
    if s.bars.len() > 1 {
        out.push_str(&chart(&s.bars, CHART_WIDTH, CHART_HEIGHT));
        out.push('\n');
    }
    let high = s.bars.iter().map(|b| b.high).max().unwrap_or(Price::ZERO);
    let low = s.bars.iter().map(|b| b.low).min().unwrap_or(Price::ZERO);
    // A price's change, written as the prices beside it are (no minimum of two decimals).
    let change = signed_difference(first.open.raw(), last.close.raw(), Price::from_raw);
    let _ = writeln!(
        out,
        "open {}  close {}  change {}  high {}  low {}",
        first.open, last.close, change, high, low
    );
    out.push('\n');
    let shown = if rows == 0 { s.bars.len() } else { rows.min(s.bars.len()) };
    let mut table = Table::new(&[
        ("time", Align::Left),
        ("open", Align::Right),
        ("high", Align::Right),
        ("low", Align::Right),
        ("close", Align::Right),
        ("volume", Align::Right),
    ]);
    for b in &s.bars[s.bars.len() - shown..] {
        table.row(vec![
            fmt_time(b.time),
            b.open.to_string(),
            b.high.to_string(),
            b.low.to_string(),
            b.close.to_string(),
            b.volume.to_string(),
        ]);
    }
    if shown < s.bars.len() {
        let _ = writeln!(out, "Last {shown} of {} bars (--rows 0 shows all):", s.bars.len());
    }
    out.push_str(&table.render());
    out
}

/// A bar chart of the closes: `width` columns (each the last close of its slice of bars) by
/// `height` rows of eighth-blocks, with the highest and lowest close on the left and the first
/// and last time below. Integer math only. Empty for no bars.
pub fn chart(bars: &[Bar], width: usize, height: usize) -> String {
    if bars.is_empty() || width == 0 || height == 0 {
        return String::new();
    }
    let n = bars.len();
    let columns = width.min(n);
    let closes: Vec<u64> = (0..columns)
        .map(|c| {
            // The last bar of column c's slice [c*n/columns, (c+1)*n/columns).
            let end = (c + 1) * n / columns;
            bars[end.saturating_sub(1)].close.raw()
        })
        .collect();
    // The scale (and the labels) run from the lowest to the highest close of all the bars, not
    // only of the closes the columns show: with more bars than columns, an extreme inside a
    // slice is still the label.
    let min = bars.iter().map(|b| b.close.raw()).min().unwrap_or(0);
    let max = bars.iter().map(|b| b.close.raw()).max().unwrap_or(0);
    let levels_max = height * 8;
    let level = |v: u64| -> usize {
        if max == min {
            return levels_max / 2;
        }
        // 1..=levels_max: the lowest close still shows a sliver.
        let scaled = u128::from(v - min) * (levels_max as u128 - 1) / u128::from(max - min);
        usize::try_from(scaled).unwrap_or(levels_max - 1) + 1
    };
    let levels: Vec<usize> = closes.iter().map(|&v| level(v)).collect();
    let top = Price::from_raw(max).to_string();
    let bottom = Price::from_raw(min).to_string();
    let label_width = top.chars().count().max(bottom.chars().count());
    let mut out = String::new();
    for row in (0..height).rev() {
        let label = if row + 1 == height {
            top.as_str()
        } else if row == 0 {
            bottom.as_str()
        } else {
            ""
        };
        let mut line = format!("{label:>label_width$} │");
        for &l in &levels {
            let floor = row * 8;
            line.push(if l >= floor + 8 {
                '█'
            } else if l > floor {
                EIGHTHS[l - floor - 1]
            } else {
                ' '
            });
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let _ = writeln!(out, "{:>label_width$} └{}", "", "─".repeat(columns));
    let (first, last) = (fmt_time(bars[0].time), fmt_time(bars[n - 1].time));
    let gap = columns.saturating_sub(first.chars().count() + last.chars().count()).max(1);
    let _ = writeln!(out, "{:>label_width$}  {first}{}{last}", "", " ".repeat(gap));
    out
}
