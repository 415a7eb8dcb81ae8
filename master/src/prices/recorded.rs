//! The recorded price source: a price file in the recorded format (see
//! [`engine::recorded`]), one period per update interval, looping forever.
//!
//! When the file ends it starts again from its first period with every time shifted forward by
//! the file's *period*: its span (last time minus first time) plus one step (the shortest gap
//! between two consecutive periods, one day for a file of a single period). Times therefore
//! keep increasing across loops, and the ticks are otherwise identical, so a demo runs forever.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;

use engine::recorded::{
    RecordedInterval, RecordedSplit, adjust_for_splits, parse_prices, parse_splits,
};
use engine::{Symbol, Tick, Timestamp};

use super::{FailureReason, PriceBatch, PriceSource, PriceSourceError, SymbolFailure};

/// The shipped price file: daily prices of AAPL, FB, GOOG, IBM and MSFT, 2000-03-01 to
/// 2013-03-01 (origin in `data/README.md`).
pub const SHIPPED_PRICES: &str = include_str!("../../../data/stocks-2000-2013.csv");
/// The stock splits inside the shipped file's span (`data/README.md`): its prices are adjusted
/// for them, so that a holding keeps its value across a split.
pub const SHIPPED_SPLITS: &str = include_str!("../../../data/splits-2000-2013.csv");

/// A recorded price file as configured: its periods, adjusted for its split list.
#[derive(Debug, Clone)]
pub struct RecordedPrices {
    /// The periods, in time order.
    pub intervals: Vec<RecordedInterval>,
    /// The price file's name in errors: `shipped`, or its path.
    pub origin: String,
    /// Which split adjustment the periods carry (see [`RecordedSource::adjustment`]).
    pub adjustment: String,
}

/// The largest recorded price file or split list read, in bytes (1 GiB; the shipped prices
/// take 600 KB): a larger one is refused at start-up instead of exhausting memory.
pub const RECORDED_FILE_BYTES_MAX: u64 = 1 << 30;

/// Reads a price file (`file`, or the shipped one) and adjusts it for a split list (`splits`,
/// or, when `None`, the shipped list with the shipped file and none with a file of one's own).
/// The master's recorded source and `pt simulate` both load their prices this way. Errors name
/// the file and line: the price file's for a bad row, the split list's for a bad split.
pub fn load_prices(
    file: Option<&Path>,
    splits: Option<&Path>,
) -> Result<RecordedPrices, PriceSourceError> {
    let read = |path: &Path| {
        let failed = |source| PriceSourceError::Read { path: path.to_owned(), source };
        crate::config::read_text_bounded(path, RECORDED_FILE_BYTES_MAX)
            .map_err(failed)?
            .map_err(|bytes| PriceSourceError::TooLarge { path: path.to_owned(), bytes })
    };
    let splits_text = match (splits, file) {
        (Some(path), _) => Some((Cow::Owned(read(path)?), path.display().to_string())),
        (None, None) => Some((Cow::Borrowed(SHIPPED_SPLITS), "shipped".to_owned())),
        (None, Some(_)) => None,
    };
    let (text, origin) = match file {
        Some(path) => (Cow::Owned(read(path)?), path.display().to_string()),
        None => (Cow::Borrowed(SHIPPED_PRICES), "shipped".to_owned()),
    };
    let intervals = parse_file(&text, &origin)?;
    let (intervals, adjustment) = match splits_text {
        Some((list_text, list_origin)) => parse_splits(&list_text)
            .and_then(|list| Ok((adjust_for_splits(intervals, &list)?, adjustment_of(&list))))
            .map_err(|source| PriceSourceError::Splits { origin: list_origin, source })?,
        None => (intervals, adjustment_of(&[])),
    };
    Ok(RecordedPrices { intervals, origin, adjustment })
}

/// Parses a price file's text; errors name it (`origin`) and the line.
fn parse_file(text: &str, origin: &str) -> Result<Vec<RecordedInterval>, PriceSourceError> {
    parse_prices(text)
        .map_err(|source| PriceSourceError::Recorded { origin: origin.to_owned(), source })
}

/// See [`RecordedSource::adjustment`].
fn adjustment_of(splits: &[RecordedSplit]) -> String {
    if splits.is_empty() {
        return "none".to_owned();
    }
    // In (time, symbol) order: the rows' order in the file changes no price (several splits
    // after a tick are one ratio), so it must not change the key either.
    let mut sorted: Vec<&RecordedSplit> = splits.iter().collect();
    sorted.sort_by_key(|split| (split.time, split.symbol));
    let mut hasher = blake3::Hasher::new();
    for split in sorted {
        let line = format!("{} {} {}:{}\n", split.time.0, split.symbol, split.new, split.old);
        hasher.update(line.as_bytes());
    }
    format!("splits {} {}", splits.len(), hasher.finalize().to_hex())
}

/// Microseconds in a day: the step of a file with a single period.
const DAY_MICROS: i64 = 86_400_000_000;

/// Replays a recorded price file, one period per call, forever.
#[derive(Debug, Clone)]
pub struct RecordedSource {
    intervals: Vec<RecordedInterval>,
    symbols: Vec<Symbol>,
    /// Span plus one step, in microseconds; always positive.
    period_micros: i64,
    /// Index of the next period to hand out.
    next: usize,
    /// Completed loops.
    cycle: u64,
    /// Which split list the prices are adjusted for (see [`RecordedSource::adjustment`]).
    adjustment: String,
}

impl RecordedSource {
    /// Parses a price file, as recorded (no split list). `origin` names it in errors (a bad
    /// row's error names its line).
    pub fn from_csv(text: &str, origin: &str) -> Result<Self, PriceSourceError> {
        let intervals = parse_file(text, origin)?;
        let adjustment = adjustment_of(&[]);
        Self::from_prices(RecordedPrices { intervals, origin: origin.to_owned(), adjustment })
    }

    /// A source over loaded prices ([`load_prices`]); an error when they have no period.
    pub fn from_prices(prices: RecordedPrices) -> Result<Self, PriceSourceError> {
        let RecordedPrices { intervals, origin, adjustment } = prices;
        let mut source = Self::from_intervals(intervals).ok_or(PriceSourceError::Empty(origin))?;
        source.adjustment = adjustment;
        Ok(source)
    }

    /// Which split adjustment its prices carry: `none`, or `splits N HASH` for a list of N
    /// splits (HASH: BLAKE3 of their `time symbol new:old` lines, in order). The master keeps it
    /// in the journal to warn when a restart would continue a data directory's prices on
    /// another scale (a jump at the restart).
    pub fn adjustment(&self) -> &str {
        &self.adjustment
    }

    /// The shipped price file, adjusted for the shipped splits.
    pub fn shipped() -> Result<Self, PriceSourceError> {
        Self::from_prices(load_prices(None, None)?)
    }

    /// A source over parsed periods (in time order, as the parser gives them); `None` when
    /// there is none.
    pub fn from_intervals(intervals: Vec<RecordedInterval>) -> Option<Self> {
        let first = intervals.first()?.time;
        let last = intervals.last()?.time;
        let step = intervals
            .windows(2)
            .filter_map(|w| w[1].time.0.checked_sub(w[0].time.0))
            .filter(|gap| *gap > 0)
            .min()
            .unwrap_or(DAY_MICROS);
        let period_micros = last.0.checked_sub(first.0)?.checked_add(step)?;
        let symbols: BTreeSet<Symbol> =
            intervals.iter().flat_map(|i| i.ticks.ticks().iter().map(|t| t.symbol)).collect();
        Some(Self {
            intervals,
            symbols: symbols.into_iter().collect(),
            period_micros,
            next: 0,
            cycle: 0,
            adjustment: adjustment_of(&[]),
        })
    }

    /// Number of periods in one loop of the file.
    pub fn periods(&self) -> usize {
        self.intervals.len()
    }

    /// How far each loop shifts times: the span plus one step, in microseconds.
    pub fn period_micros(&self) -> i64 {
        self.period_micros
    }

    /// The next period, with its times shifted for the current loop, and advances; `None` when
    /// the shifted time would overflow (after some 290,000 years of looping).
    pub fn next_interval(&mut self) -> Option<RecordedInterval> {
        let shift = i64::try_from(self.cycle).ok()?.checked_mul(self.period_micros)?;
        let interval = self.intervals.get(self.next)?;
        let shifted = shift_interval(interval, shift)?;
        self.next += 1;
        if self.next == self.intervals.len() {
            self.next = 0;
            self.cycle = self.cycle.saturating_add(1);
        }
        Some(shifted)
    }

    /// Positions the source so that the next period is the first one strictly after `last`
    /// (e.g. the last settled time in the journal, so a restarted master keeps times
    /// increasing). Times before the file's first period leave the source at its start.
    pub fn seek_after(&mut self, last: Timestamp) {
        let Some(first) = self.intervals.first().map(|i| i.time) else { return };
        self.next = 0;
        self.cycle = 0;
        let Some(since) = last.0.checked_sub(first.0).filter(|d| *d >= 0) else { return };
        let cycle = since / self.period_micros;
        let offset = since % self.period_micros;
        // Periods of this loop at or before `last`, i.e. with time - first <= offset.
        let done = self.intervals.partition_point(|i| i.time.0 - first.0 <= offset);
        self.cycle = u64::try_from(cycle).unwrap_or(u64::MAX);
        self.next = done;
        if self.next == self.intervals.len() {
            self.next = 0;
            self.cycle = self.cycle.saturating_add(1);
        }
    }
}

fn shift_interval(interval: &RecordedInterval, shift: i64) -> Option<RecordedInterval> {
    let time = Timestamp(interval.time.0.checked_add(shift)?);
    let ticks: Option<Vec<Tick>> = interval
        .ticks
        .ticks()
        .iter()
        .map(|t| Some(Tick { time: Timestamp(t.time.0.checked_add(shift)?), ..*t }))
        .collect();
    let ticks = engine::TickSet::new(ticks?).ok()?;
    Some(RecordedInterval { time, ticks })
}

impl PriceSource for RecordedSource {
    /// Reading the next recorded interval takes no time: the budget does not matter.
    async fn fetch_within(
        &mut self,
        symbols: &[Symbol],
        _budget: std::time::Duration,
    ) -> PriceBatch {
        self.fetch(symbols).await
    }

    async fn fetch(&mut self, symbols: &[Symbol]) -> PriceBatch {
        let symbols = super::unique(symbols);
        let Some(interval) = self.next_interval() else {
            tracing::warn!("recorded price source: time overflowed; no prices");
            return PriceBatch::without_prices(symbols, &FailureReason::TimeOverflow);
        };
        let mut ticks = Vec::with_capacity(symbols.len());
        let mut failures = Vec::new();
        for symbol in symbols {
            match interval.ticks.get(&symbol) {
                Some(tick) => ticks.push(*tick),
                None => failures.push(SymbolFailure { symbol, reason: FailureReason::NoData }),
            }
        }
        super::batch(Some(interval.time), ticks, failures)
    }

    fn known_symbols(&self) -> Option<Vec<Symbol>> {
        Some(self.symbols.clone())
    }

    fn name(&self) -> &'static str {
        "recorded"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const TEXT: &str = "time,symbol,open,high,low,close,volume\n\
        2013-03-01,AAPL,1,2,1,2,10\n2013-03-01,IBM,3,4,3,4,5\n\
        2013-03-02,AAPL,2,3,2,3,7\n\
        2013-03-04,AAPL,3,3,3,3,1\n2013-03-04,IBM,4,4,4,4,1\n";

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    /// The adjustment key names the split list, not its rows' order (which changes no price);
    /// another list, or none, gives another key.
    #[test]
    fn the_adjustment_key_ignores_the_rows_order() {
        let splits = |text: &str| engine::recorded::parse_splits(text).unwrap();
        let one =
            splits("time,symbol,ratio\n2000-06-20,X,3:2\n2000-06-21,X,2:1\n2000-06-21,Y,2:1\n");
        let other =
            splits("time,symbol,ratio\n2000-06-21,Y,2:1\n2000-06-21,X,2:1\n2000-06-20,X,3:2\n");
        assert_eq!(adjustment_of(&one), adjustment_of(&other));
        let changed =
            splits("time,symbol,ratio\n2000-06-20,X,3:2\n2000-06-21,X,4:1\n2000-06-21,Y,2:1\n");
        assert_ne!(adjustment_of(&one), adjustment_of(&changed));
        assert_eq!(adjustment_of(&[]), "none");
    }

    #[test]
    fn shipped_file_parses() {
        let source = RecordedSource::shipped().unwrap();
        let names: Vec<&str> = source.symbols.iter().map(Symbol::as_str).collect();
        assert_eq!(names, ["AAPL", "FB", "GOOG", "IBM", "MSFT"]);
        assert!(source.periods() > 3000);
    }

    #[test]
    fn bad_rows_name_their_line() {
        let text = "time,symbol,open,high,low,close,volume\n2013-03-01,AAPL,1,2,1,2,10\nbad\n";
        let err = RecordedSource::from_csv(text, "demo.csv").unwrap_err();
        assert!(err.to_string().starts_with("price file demo.csv: line 3:"), "{err}");
        let empty = RecordedSource::from_csv("time,symbol,open,high,low,close,volume\n", "e");
        assert!(matches!(empty, Err(PriceSourceError::Empty(_))));
    }

    #[test]
    fn loops_shifting_time_by_span_plus_step() {
        let mut source = RecordedSource::from_csv(TEXT, "t").unwrap();
        let day = DAY_MICROS;
        // Span 3 days, shortest gap 1 day.
        assert_eq!(source.period_micros(), 4 * day);
        let first: Vec<RecordedInterval> =
            (0..3).map(|_| source.next_interval().unwrap()).collect();
        let second: Vec<RecordedInterval> =
            (0..3).map(|_| source.next_interval().unwrap()).collect();
        for (a, b) in first.iter().zip(&second) {
            assert_eq!(b.time.0 - a.time.0, 4 * day);
            assert_eq!(a.ticks.len(), b.ticks.len());
            for (ta, tb) in a.ticks.ticks().iter().zip(b.ticks.ticks()) {
                assert_eq!(tb.time.0 - ta.time.0, 4 * day);
                assert_eq!(Tick { time: ta.time, ..*tb }, *ta);
            }
        }
        let times: Vec<i64> = first.iter().chain(&second).map(|i| i.time.0).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    }

    #[test]
    fn seek_after_resumes_strictly_later() {
        let mut reference = RecordedSource::from_csv(TEXT, "t").unwrap();
        let times: Vec<Timestamp> =
            (0..9).map(|_| reference.next_interval().unwrap().time).collect();
        let mut source = reference.clone();
        for (i, t) in times.iter().enumerate().take(8) {
            source.seek_after(*t);
            assert_eq!(source.next_interval().unwrap().time, times[i + 1], "after {t}");
            // A time between two periods resumes at the later one.
            source.seek_after(Timestamp(t.0 + 1));
            assert_eq!(source.next_interval().unwrap().time, times[i + 1]);
        }
        source.seek_after(Timestamp(0));
        assert_eq!(source.next_interval().unwrap().time, times[0]);
    }

    #[tokio::test]
    async fn fetch_gives_ticks_and_no_data_failures() {
        let mut source = RecordedSource::from_csv(TEXT, "t").unwrap();
        let wanted = [sym("IBM"), sym("AAPL"), sym("MSFT"), sym("IBM")];
        let batch = source.fetch(&wanted).await;
        assert_eq!(batch.ticks.len(), 2);
        assert_eq!(
            batch.failures,
            vec![SymbolFailure { symbol: sym("MSFT"), reason: FailureReason::NoData }]
        );
        let batch = source.fetch(&wanted).await;
        assert_eq!(batch.ticks.len(), 1);
        assert_eq!(batch.failures.len(), 2);
        assert_eq!(source.known_symbols().unwrap(), vec![sym("AAPL"), sym("IBM")]);
    }

    #[test]
    fn single_period_files_step_one_day() {
        let text = "time,symbol,open,high,low,close,volume\n2013-03-01,AAPL,1,2,1,2,10\n";
        let mut source = RecordedSource::from_csv(text, "t").unwrap();
        let a = source.next_interval().unwrap();
        let b = source.next_interval().unwrap();
        assert_eq!(b.time.0 - a.time.0, DAY_MICROS);
    }
}
