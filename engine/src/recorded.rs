//! The recorded formats: price files and order streams as CSV text, and a simulation that
//! settles a recorded order stream against recorded prices. Pure: text in, values out.
//!
//! **Prices**: a header line `time,symbol,open,high,low,close,volume`, then one row per asset and
//! period, ordered by time. `time` is a date (`2013-03-01`, meaning 00:00 UTC) or an RFC 3339
//! timestamp; prices and volume are decimal strings (`812.25`) with at most eight decimals. All
//! rows with the same time form one interval's tick set.
//!
//! **Orders**: a header line `time,username,side,symbol,qty`, then one row per order, ordered by
//! time. An order settles in the first price interval whose time is at or after its own.
//!
//! **Splits**: a header line `time,symbol,ratio`, then one row per stock split, `ratio` written
//! `new:old` (`2:1`: each share became two from `time` on). [`adjust_for_splits`] divides the
//! prices before each split by its ratio, so that a price file of unadjusted closes does not
//! show a holder losing half its value overnight at a 2:1 split (the engine has no split event:
//! holdings never change by themselves).
//!
//! Blank lines are skipped and a trailing `\r` is ignored. Any other problem is an error naming
//! the 1-based line number.

use std::collections::BTreeMap;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::engine::{CommandError, Engine, OpenAccount};
use crate::event::{Event, RejectReason};
use crate::ids::{
    AccountId, ClientOrderId, Email, IntervalId, NameError, OrderId, PasswordHash, Symbol,
    Timestamp, Username, WorkerId,
};
use crate::money::{Cash, ParseAmountError, Price, Qty, Side, mul_div_floor};
use crate::order::{Order, OrderKind, OrderQueue};
use crate::state::Digest;
use crate::tick::{Tick, TickError, TickSet};

/// The header of a recorded price file.
pub const PRICES_HEADER: &str = "time,symbol,open,high,low,close,volume";
/// The header of a recorded order stream.
pub const ORDERS_HEADER: &str = "time,username,side,symbol,qty";
/// The header of a recorded split list.
pub const SPLITS_HEADER: &str = "time,symbol,ratio";
/// The largest term of a split ratio.
pub const SPLIT_RATIO_TERM_MAX: u64 = 1_000_000;
/// Most rows of a split list. Every period's ticks are checked against each split of their
/// symbol, so the work grows with periods x splits: real lists hold tens of rows, and this
/// bound keeps a mistaken file (a price file given as a split list) from stalling a start.
pub const SPLITS_MAX: usize = 10_000;

/// A problem in a recorded file, at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct RecordedError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub kind: RecordedErrorKind,
}

/// What is wrong with a line of a recorded file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordedErrorKind {
    /// The file is empty or its first line is not the expected header.
    #[error("expected the header {expected:?}")]
    BadHeader {
        /// The header the format needs.
        expected: &'static str,
    },
    /// A row with the wrong number of fields.
    #[error("expected {expected} comma-separated fields, found {found}")]
    FieldCount {
        /// Fields the format has.
        expected: usize,
        /// Fields the row has.
        found: usize,
    },
    /// A time that is neither `YYYY-MM-DD` nor RFC 3339.
    #[error("time {0:?} is neither a date (2013-03-01) nor an RFC 3339 timestamp")]
    BadTime(String),
    /// A row earlier than the row before it.
    #[error("rows must be ordered by time; this one goes back in time")]
    OutOfOrder,
    /// A bad decimal field.
    #[error("field {field}: {source}")]
    BadAmount {
        /// Which field.
        field: &'static str,
        /// Why.
        source: ParseAmountError,
    },
    /// A bad symbol or username.
    #[error(transparent)]
    BadName(#[from] NameError),
    /// A side other than `buy` or `sell`.
    #[error("side {0:?} is neither buy nor sell")]
    BadSide(String),
    /// A tick that contradicts itself, or a symbol twice in one period.
    #[error(transparent)]
    BadTick(#[from] TickError),
    /// A split ratio that is not `new:old` with two different whole numbers from 1 to
    /// [`SPLIT_RATIO_TERM_MAX`].
    #[error(
        "ratio {0:?} is not new:old with two different whole numbers from 1 to \
         {SPLIT_RATIO_TERM_MAX} (2:1 for two shares for one)"
    )]
    BadRatio(String),
    /// More rows than [`SPLITS_MAX`] in a split list.
    #[error("more than {SPLITS_MAX} splits")]
    TooManySplits,
    /// The same symbol split twice on one day: a copied row, which would compound.
    #[error("{symbol} already splits at this time (line {first})")]
    DuplicateSplit {
        /// The symbol.
        symbol: Symbol,
        /// The line of the first row.
        first: usize,
    },
    /// A split that would make a price before it zero (or a volume too large).
    #[error(
        "adjusting {symbol}'s prices before this split leaves a price of zero or a volume too large"
    )]
    SplitUnrepresentable {
        /// The symbol.
        symbol: Symbol,
    },
}

/// One interval of a recorded price file: its time and its ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedInterval {
    /// The period's time, shared by all its ticks.
    pub time: Timestamp,
    /// The ticks.
    pub ticks: TickSet,
}

/// One row of a recorded order stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedOrder {
    /// When it was placed.
    pub time: Timestamp,
    /// Who places it.
    pub username: Username,
    /// Which way.
    pub side: Side,
    /// What.
    pub symbol: Symbol,
    /// How much.
    pub qty: Qty,
}

/// Parses a `YYYY-MM-DD` date (00:00 UTC) or an RFC 3339 timestamp with at most six
/// fractional digits: times are kept in microseconds, and a finer time is refused rather than
/// cut (two rows a tenth of a microsecond apart would otherwise become one time).
pub fn parse_time(text: &str) -> Option<Timestamp> {
    let date_format = format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, &date_format) {
        return Timestamp::from_offset_date_time(date.midnight().assume_utc());
    }
    time::OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .filter(|at| at.nanosecond() % 1_000 == 0)
        .and_then(Timestamp::from_offset_date_time)
}

/// Rows of a CSV text after its header: (1-based line number, fields).
fn rows<'a>(
    text: &'a str,
    header: &'static str,
    field_count: usize,
) -> Result<impl Iterator<Item = Result<(usize, Vec<&'a str>), RecordedError>>, RecordedError> {
    // A UTF-8 byte order mark (spreadsheet exports write one) is not part of the header.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    match lines.next() {
        Some((_, first)) if first.trim() == header => {}
        _ => {
            return Err(RecordedError {
                line: 1,
                kind: RecordedErrorKind::BadHeader { expected: header },
            });
        }
    }
    Ok(lines.filter(|(_, l)| !l.trim().is_empty()).map(move |(line, l)| {
        let fields: Vec<&str> = l.split(',').map(str::trim).collect();
        if fields.len() == field_count {
            Ok((line, fields))
        } else {
            Err(RecordedError {
                line,
                kind: RecordedErrorKind::FieldCount { expected: field_count, found: fields.len() },
            })
        }
    }))
}

fn amount<T>(
    field: &'static str,
    text: &str,
    parse: fn(&str) -> Result<T, ParseAmountError>,
) -> Result<T, RecordedErrorKind> {
    parse(text).map_err(|source| RecordedErrorKind::BadAmount { field, source })
}

fn time_of(text: &str) -> Result<Timestamp, RecordedErrorKind> {
    parse_time(text).ok_or_else(|| RecordedErrorKind::BadTime(text.to_owned()))
}

/// Parses a recorded price file into its intervals, in time order.
pub fn parse_prices(text: &str) -> Result<Vec<RecordedInterval>, RecordedError> {
    let mut intervals: Vec<RecordedInterval> = Vec::new();
    let mut pending: Vec<Tick> = Vec::new();
    let mut pending_time: Option<(Timestamp, usize)> = None;
    let close = |time: Timestamp, line: usize, ticks: Vec<Tick>| {
        TickSet::new(ticks)
            .map(|ticks| RecordedInterval { time, ticks })
            .map_err(|e| RecordedError { line, kind: e.into() })
    };
    for row in rows(text, PRICES_HEADER, 7)? {
        let (line, f) = row?;
        let at = |kind: RecordedErrorKind| RecordedError { line, kind };
        let time = time_of(f[0]).map_err(at)?;
        let symbol = Symbol::new(f[1]).map_err(|e| at(e.into()))?;
        let tick = Tick {
            symbol,
            open: amount("open", f[2], Price::parse).map_err(at)?,
            high: amount("high", f[3], Price::parse).map_err(at)?,
            low: amount("low", f[4], Price::parse).map_err(at)?,
            close: amount("close", f[5], Price::parse).map_err(at)?,
            volume: amount("volume", f[6], Qty::parse).map_err(at)?,
            time,
        };
        tick.validate().map_err(|e| at(e.into()))?;
        match pending_time {
            Some((t, _)) if t == time => {}
            Some((t, _)) if time < t => return Err(at(RecordedErrorKind::OutOfOrder)),
            Some((t, start)) => {
                intervals.push(close(t, start, std::mem::take(&mut pending))?);
                pending_time = Some((time, line));
            }
            None => pending_time = Some((time, line)),
        }
        // Named at the repeated row, not at the period's first (where the set is closed).
        if pending.iter().any(|t| t.symbol == symbol) {
            return Err(at(crate::TickError::DuplicateSymbol(symbol).into()));
        }
        pending.push(tick);
    }
    if let Some((t, start)) = pending_time {
        intervals.push(close(t, start, pending)?);
    }
    Ok(intervals)
}

/// Parses a recorded order stream.
pub fn parse_orders(text: &str) -> Result<Vec<RecordedOrder>, RecordedError> {
    let mut orders: Vec<RecordedOrder> = Vec::new();
    for row in rows(text, ORDERS_HEADER, 5)? {
        let (line, f) = row?;
        let at = |kind: RecordedErrorKind| RecordedError { line, kind };
        let time = time_of(f[0]).map_err(at)?;
        if orders.last().is_some_and(|o| time < o.time) {
            return Err(at(RecordedErrorKind::OutOfOrder));
        }
        let side = match f[2] {
            "buy" => Side::Buy,
            "sell" => Side::Sell,
            other => return Err(at(RecordedErrorKind::BadSide(other.to_owned()))),
        };
        orders.push(RecordedOrder {
            time,
            username: Username::new(f[1]).map_err(|e| at(e.into()))?,
            side,
            symbol: Symbol::new(f[3]).map_err(|e| at(e.into()))?,
            qty: amount("qty", f[4], Qty::parse).map_err(at)?,
        });
    }
    Ok(orders)
}

/// A stock split: from `time` on, every `old` shares of `symbol` are `new` shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedSplit {
    /// When the split takes effect (its first trading period).
    pub time: Timestamp,
    /// The stock.
    pub symbol: Symbol,
    /// Shares after, per `old` shares before.
    pub new: u64,
    /// Shares before.
    pub old: u64,
    /// Its 1-based line in its file, for errors.
    pub line: usize,
}

/// Parses a split list (`time,symbol,ratio`), in any order.
pub fn parse_splits(text: &str) -> Result<Vec<RecordedSplit>, RecordedError> {
    let mut splits = Vec::new();
    // The line of each (time, symbol) seen, for duplicates.
    let mut seen: std::collections::HashMap<(Timestamp, Symbol), usize> =
        std::collections::HashMap::new();
    for row in rows(text, SPLITS_HEADER, 3)? {
        let (line, f) = row?;
        let at = |kind: RecordedErrorKind| RecordedError { line, kind };
        if splits.len() >= SPLITS_MAX {
            return Err(at(RecordedErrorKind::TooManySplits));
        }
        // Digits only: `u64::from_str` would also take a sign (`+2:1`).
        let term = |t: &str| {
            t.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| t.parse::<u64>().ok())
                .flatten()
                .filter(|n| (1..=SPLIT_RATIO_TERM_MAX).contains(n))
        };
        let (new, old) = f[2]
            .split_once(':')
            .and_then(|(new, old)| Some((term(new)?, term(old)?)))
            .filter(|(new, old)| new != old)
            .ok_or_else(|| at(RecordedErrorKind::BadRatio(f[2].to_owned())))?;
        let time = time_of(f[0]).map_err(at)?;
        let symbol = Symbol::new(f[1]).map_err(|e| at(e.into()))?;
        if let Some(&first) = seen.get(&(time, symbol)) {
            return Err(at(RecordedErrorKind::DuplicateSplit { symbol, first }));
        }
        seen.insert((time, symbol), line);
        splits.push(RecordedSplit { time, symbol, new, old, line });
    }
    Ok(splits)
}

/// Split-adjusts a price file: every tick of a split's symbol dated before the split has its
/// prices multiplied by `old / new` and its volume by `new / old`, each rounded down to the
/// 10^-8 unit (exact when the price in units divides by the ratio, as any price of at most
/// seven decimals does for 2:1; a 3:1 split of 100 gives 33.33333333, docs/ENGINE.md rule 4;
/// rounding down keeps `low <= open, close <= high`). A tick
/// before several splits is adjusted once, by their product (`old1 * old2 / (new1 * new2)`,
/// exact in 128 bits, rounded once), so the rows' order in the list never changes a price.
/// Prices from the split on are as recorded, so the series has no jump at the split and a
/// holding keeps its value across it.
pub fn adjust_for_splits(
    intervals: Vec<RecordedInterval>,
    splits: &[RecordedSplit],
) -> Result<Vec<RecordedInterval>, RecordedError> {
    if splits.is_empty() {
        return Ok(intervals);
    }
    intervals
        .into_iter()
        .map(|interval| {
            let touched = |s: &&RecordedSplit| {
                interval.time < s.time && interval.ticks.get(&s.symbol).is_some()
            };
            // A period no split changes keeps its tick set as it is.
            if !splits.iter().any(|s| touched(&s)) {
                return Ok(interval);
            }
            // Each touched symbol's combined ratio, reduced, and the line of its last split (the
            // one named if the product cannot be represented).
            let mut ratios: Vec<SplitRatio> = Vec::new();
            for split in splits.iter().filter(touched) {
                let unrepresentable = || RecordedError {
                    line: split.line,
                    kind: RecordedErrorKind::SplitUnrepresentable { symbol: split.symbol },
                };
                match ratios.iter_mut().find(|r| r.symbol == split.symbol) {
                    Some(ratio) => ratio.compound(split).ok_or_else(unrepresentable)?,
                    None => ratios.push(SplitRatio {
                        symbol: split.symbol,
                        new: u128::from(split.new),
                        old: u128::from(split.old),
                        line: split.line,
                    }),
                }
            }
            let mut ticks = interval.ticks.ticks().to_vec();
            for ratio in &ratios {
                let unrepresentable = || RecordedError {
                    line: ratio.line,
                    kind: RecordedErrorKind::SplitUnrepresentable { symbol: ratio.symbol },
                };
                for tick in ticks.iter_mut().filter(|t| t.symbol == ratio.symbol) {
                    let price = |p: Price| {
                        mul_div_floor(p.raw(), ratio.old, ratio.new)
                            .filter(|raw| *raw > 0)
                            .map(Price::from_raw)
                            .ok_or_else(unrepresentable)
                    };
                    tick.open = price(tick.open)?;
                    tick.high = price(tick.high)?;
                    tick.low = price(tick.low)?;
                    tick.close = price(tick.close)?;
                    tick.volume = mul_div_floor(tick.volume.raw(), ratio.new, ratio.old)
                        .map(Qty::from_raw)
                        .ok_or_else(unrepresentable)?;
                }
            }
            let ticks = TickSet::new(ticks).map_err(|e| RecordedError {
                line: splits.first().map_or(0, |s| s.line),
                kind: e.into(),
            })?;
            Ok(RecordedInterval { time: interval.time, ticks })
        })
        .collect()
}

/// The product of the splits after a tick, for one symbol: `new` shares for `old`, reduced.
struct SplitRatio {
    symbol: Symbol,
    new: u128,
    old: u128,
    /// The line of the last split multiplied in.
    line: usize,
}

impl SplitRatio {
    /// Multiplies `split` in and reduces the fraction; `None` past 128 bits.
    fn compound(&mut self, split: &RecordedSplit) -> Option<()> {
        let new = self.new.checked_mul(u128::from(split.new))?;
        let old = self.old.checked_mul(u128::from(split.old))?;
        let common = gcd(new, old);
        (self.new, self.old, self.line) = (new / common, old / common, split.line);
        Some(())
    }
}

/// The greatest common divisor (both arguments positive).
fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Settings of a simulation.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// Cash every account starts with.
    pub initial_cash: Cash,
}

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulationError {
    /// A username that cannot make an email address for its simulated account.
    #[error("cannot make an account for {0}: {1}")]
    BadAccount(Username, NameError),
    /// The engine refused a command (a duplicate symbol or username).
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// The result of settling a recorded order stream against recorded prices.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The engine after the last interval.
    pub engine: Engine,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Intervals settled.
    pub intervals: u64,
    /// Orders filled.
    pub filled: u64,
    /// Orders rejected, by reason.
    pub rejected: BTreeMap<u16, u64>,
    /// Orders placed after the last interval, never settled.
    pub unsettled: u64,
}

impl Simulation {
    /// The final state digest.
    pub fn digest(&self) -> Digest {
        self.engine.digest()
    }

    /// Rejections of one reason.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected.get(&reason.code()).copied().unwrap_or(0)
    }
}

/// Settles `orders` against `prices`: lists every symbol of the price file, opens one account per
/// username (in order of first appearance, each with `config.initial_cash`, the email
/// `USERNAME@simulation.invalid` and no usable password), then, interval by interval, queues the
/// orders placed since the previous interval (order ids in row order, worker 0) and settles
/// them at the interval's ticks. Settlement time is the interval's time: no clock is read.
pub fn simulate(
    prices: &[RecordedInterval],
    orders: &[RecordedOrder],
    config: &SimulationConfig,
) -> Result<Simulation, SimulationError> {
    let mut engine = Engine::new();
    let mut events = Vec::new();
    let start = prices.first().map(|i| i.time).unwrap_or_default();
    let symbols: std::collections::BTreeSet<Symbol> =
        prices.iter().flat_map(|i| i.ticks.ticks().iter().map(|t| t.symbol)).collect();
    for symbol in symbols {
        events.push(engine.list_asset(symbol, start)?);
    }
    let mut accounts: BTreeMap<Username, AccountId> = BTreeMap::new();
    for order in orders {
        if accounts.contains_key(&order.username) {
            continue;
        }
        let user = &order.username;
        let email = Email::new(&format!("{user}@simulation.invalid"))
            .map_err(|e| SimulationError::BadAccount(user.clone(), e))?;
        let password_hash =
            PasswordHash::new("!").map_err(|e| SimulationError::BadAccount(user.clone(), e))?;
        let id = engine.state().next_account_id();
        events.push(engine.open_account(OpenAccount {
            username: user.clone(),
            email,
            password_hash,
            initial_cash: config.initial_cash,
            at: start,
        })?);
        accounts.insert(user.clone(), id);
    }
    let mut next_order = orders.iter().enumerate().peekable();
    let mut queue = OrderQueue::new();
    let mut sim = Simulation {
        engine: Engine::new(),
        events: Vec::new(),
        intervals: 0,
        filled: 0,
        rejected: BTreeMap::new(),
        unsettled: 0,
    };
    for (index, interval) in prices.iter().enumerate() {
        while let Some((row, order)) = next_order.next_if(|(_, o)| o.time <= interval.time) {
            queue.push(Order {
                id: OrderId(row as u64 + 1),
                client_id: ClientOrderId(row as u64 + 1),
                account: accounts.get(&order.username).copied().unwrap_or_default(),
                symbol: order.symbol,
                side: order.side,
                qty: order.qty,
                kind: OrderKind::Market,
                placed_at: order.time,
                worker: WorkerId(0),
            });
        }
        let id = IntervalId(index as u64 + 1);
        let settled = engine.settle(id, interval.time, &interval.ticks, &mut queue)?;
        for event in &settled {
            match event {
                Event::OrderFilled(_) => sim.filled += 1,
                Event::OrderRejected(r) => *sim.rejected.entry(r.reason.code()).or_default() += 1,
                _ => {}
            }
        }
        events.extend(settled);
        sim.intervals += 1;
    }
    sim.unsettled = next_order.count() as u64;
    sim.engine = engine;
    sim.events = events;
    Ok(sim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates_and_rfc3339() {
        assert_eq!(parse_time("1970-01-02"), Some(Timestamp(86_400_000_000)));
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(Timestamp(1_500_000)));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(Timestamp(0)));
        assert_eq!(parse_time("1970-01-01T00:00:01.000001Z"), Some(Timestamp(1_000_001)));
        // Finer than a microsecond: refused, not cut.
        assert_eq!(parse_time("1970-01-01T00:00:01.0000001Z"), None);
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2013-02-30"), None);
    }

    #[test]
    fn splits_divide_the_prices_before_them() {
        let prices = parse_prices(
            "time,symbol,open,high,low,close,volume\n\
             2000-06-19,AAPL,100,102.5,99,101.25,10\n2000-06-19,IBM,10,11,9,10,5\n\
             2000-06-20,AAPL,99.99999999,101,98,99.99999999,3\n\
             2000-06-21,AAPL,50.5,51,50,50.75,20\n",
        )
        .unwrap();
        let splits = parse_splits("time,symbol,ratio\n2000-06-21,AAPL,2:1\n").unwrap();
        assert_eq!((splits[0].new, splits[0].old, splits[0].line), (2, 1, 2));
        let adjusted = adjust_for_splits(prices.clone(), &splits).unwrap();
        let tick =
            |i: usize, symbol: &str| *adjusted[i].ticks.get(&Symbol::new(symbol).unwrap()).unwrap();
        let p = |text: &str| Price::parse(text).unwrap();
        // Before the split: halved (exact), volume doubled; other symbols untouched.
        let day1 = tick(0, "AAPL");
        assert_eq!(
            (day1.open, day1.high, day1.low, day1.close),
            (p("50"), p("51.25"), p("49.5"), p("50.625"))
        );
        assert_eq!(day1.volume, Qty::parse("20").unwrap());
        assert_eq!(tick(0, "IBM"), *prices[0].ticks.get(&Symbol::new("IBM").unwrap()).unwrap());
        // An odd last unit is rounded down.
        assert_eq!(tick(1, "AAPL").close, p("49.99999999"));
        // From the split on: as recorded.
        assert_eq!(adjusted[2], prices[2]);
        // Two splits compound.
        let both = parse_splits("time,symbol,ratio\n2000-06-20,AAPL,2:1\n2000-06-21,AAPL,3:1\n");
        let adjusted = adjust_for_splits(prices.clone(), &both.unwrap()).unwrap();
        assert_eq!(adjusted[0].ticks.ticks()[0].open, Price::parse("16.66666666").unwrap());
        // Several splits are one ratio, rounded once: the rows' order changes nothing.
        // 9.99999999 before 3:2 and 2:1 is 3.33333333 (exact 3.333333330), not 3.33333332
        // (halved first, 4.99999999, then two thirds, rounded down twice).
        let odd = parse_prices(
            "time,symbol,open,high,low,close,volume\n2000-01-03,X,9.99999999,9.99999999,9.99999999,9.99999999,3\n",
        )
        .unwrap();
        for list in [
            "time,symbol,ratio\n2000-06-20,X,3:2\n2000-06-21,X,2:1\n",
            "time,symbol,ratio\n2000-06-21,X,2:1\n2000-06-20,X,3:2\n",
        ] {
            let adjusted = adjust_for_splits(odd.clone(), &parse_splits(list).unwrap()).unwrap();
            let tick = adjusted[0].ticks.ticks()[0];
            assert_eq!(tick.close, p("3.33333333"), "{list}");
            assert_eq!(tick.volume, Qty::parse("9").unwrap(), "{list}");
        }
        // A 2:1 and a 1:2 cancel out exactly, whatever the price.
        let back = parse_splits("time,symbol,ratio\n2000-06-20,X,2:1\n2000-06-21,X,1:2\n");
        assert_eq!(adjust_for_splits(odd.clone(), &back.unwrap()).unwrap(), odd);
        // A product past 128 bits names the split that took it there.
        let mut huge = String::from("time,symbol,ratio\n");
        for day in 1..=7 {
            huge.push_str(&format!("2000-07-{day:02},X,999983:1\n"));
        }
        let err = adjust_for_splits(odd.clone(), &parse_splits(&huge).unwrap()).unwrap_err();
        assert!(matches!(err.kind, RecordedErrorKind::SplitUnrepresentable { .. }), "{err}");
        assert_eq!(err.line, 8);
        // A reverse split (1:10) multiplies.
        let reverse = parse_splits("time,symbol,ratio\n2000-06-21,IBM,1:10\n").unwrap();
        let adjusted = adjust_for_splits(prices, &reverse).unwrap();
        assert_eq!(adjusted[0].ticks.ticks()[1].close, p("100"));
        let twice = parse_splits("time,symbol,ratio\n2000-06-21,AAPL,2:1\n2000-06-21,AAPL,2:1\n");
        let err = twice.unwrap_err();
        assert_eq!(err.line, 3);
        assert!(matches!(err.kind, RecordedErrorKind::DuplicateSplit { first: 2, .. }));
        // At most SPLITS_MAX rows: one more is refused at its line.
        let mut many = String::from("time,symbol,ratio\n");
        let days =
            (2000..2040).flat_map(|y| (1..=12).flat_map(move |m| (1..=28).map(move |d| (y, m, d))));
        for (y, m, d) in days.take(SPLITS_MAX + 1) {
            many.push_str(&format!("{y}-{m:02}-{d:02},AAPL,2:1\n"));
        }
        let err = parse_splits(&many).unwrap_err();
        assert!(matches!(err.kind, RecordedErrorKind::TooManySplits), "{err}");
        assert_eq!(err.line, SPLITS_MAX + 2);
        let at_most = many.lines().take(SPLITS_MAX + 1).collect::<Vec<_>>().join("\n");
        assert_eq!(parse_splits(&at_most).unwrap().len(), SPLITS_MAX);
        for bad in ["2", "1:1", "0:1", "2:x", "2:1:1", "1000001:1", "-2:1", "+2:1", "2:+1"] {
            let err = parse_splits(&format!("time,symbol,ratio\n2000-06-21,AAPL,{bad}\n"));
            assert!(matches!(err.unwrap_err().kind, RecordedErrorKind::BadRatio(_)), "{bad}");
        }
        // A price that would become zero names the split's line.
        let tiny = parse_prices("time,symbol,open,high,low,close,volume\n2000-01-01,X,0.00000001,0.00000001,0.00000001,0.00000001,1\n").unwrap();
        let split = parse_splits("time,symbol,ratio\n\n2000-06-21,X,2:1\n").unwrap();
        let err = adjust_for_splits(tiny, &split).unwrap_err();
        assert_eq!(err.line, 3);
        assert!(matches!(err.kind, RecordedErrorKind::SplitUnrepresentable { .. }));
    }

    #[test]
    fn groups_rows_by_time() {
        let text = "time,symbol,open,high,low,close,volume\n\
            2013-03-01,AAPL,1,2,1,2,10\n2013-03-01,IBM,3,4,3,4,5\r\n\n2013-03-02,AAPL,2,3,2,3,7\n";
        let intervals = parse_prices(text).unwrap();
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[0].ticks.len(), 2);
        assert_eq!(intervals[1].ticks.ticks()[0].close, Price::parse("3").unwrap());
        // The same file with a byte order mark, as spreadsheets export it.
        assert_eq!(parse_prices(&format!("\u{feff}{text}")).unwrap(), intervals);
    }

    #[test]
    fn bad_price_rows_name_their_line() {
        let header = "time,symbol,open,high,low,close,volume\n";
        type Case = (&'static str, usize, fn(&RecordedErrorKind) -> bool);
        let cases: [Case; 8] = [
            ("nope\n", 1, |k| matches!(k, RecordedErrorKind::BadHeader { .. })),
            ("2013-03-01,AAPL,1,2,1,2\n", 2, |k| matches!(k, RecordedErrorKind::FieldCount { .. })),
            ("03/01/2013,AAPL,1,2,1,2,3\n", 2, |k| matches!(k, RecordedErrorKind::BadTime(_))),
            ("2013-03-01,aapl,1,2,1,2,3\n", 2, |k| matches!(k, RecordedErrorKind::BadName(_))),
            ("2013-03-01,AAPL,1,2,1,2.123456789,3\n", 2, |k| {
                matches!(k, RecordedErrorKind::BadAmount { field: "close", .. })
            }),
            ("2013-03-01,AAPL,1,2,1,3,3\n", 2, |k| matches!(k, RecordedErrorKind::BadTick(_))),
            ("2013-03-02,AAPL,1,2,1,2,3\n2013-03-01,AAPL,1,2,1,2,3\n", 3, |k| {
                matches!(k, RecordedErrorKind::OutOfOrder)
            }),
            // Named at the repeated row, not at the period's first.
            (
                "2013-03-01,AAPL,1,2,1,2,3\n2013-03-01,IBM,1,2,1,2,3\n2013-03-01,AAPL,1,2,1,2,3\n",
                4,
                |k| matches!(k, RecordedErrorKind::BadTick(TickError::DuplicateSymbol(_))),
            ),
        ];
        for (body, line, check) in cases {
            let text =
                if body.starts_with("nope") { body.to_owned() } else { format!("{header}{body}") };
            let err = parse_prices(&text).unwrap_err();
            assert_eq!(err.line, line, "{body}: {err}");
            assert!(check(&err.kind), "{body}: {err}");
        }
    }

    #[test]
    fn bad_order_rows_name_their_line() {
        let text = "time,username,side,symbol,qty\n2013-03-01,alice,hold,AAPL,1\n";
        let err = parse_orders(text).unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.kind, RecordedErrorKind::BadSide("hold".into()));
        let text = "time,username,side,symbol,qty\n2013-03-01,al%ce,buy,AAPL,1\n";
        assert!(matches!(parse_orders(text).unwrap_err().kind, RecordedErrorKind::BadName(_)));
    }
}
