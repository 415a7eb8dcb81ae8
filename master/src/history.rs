//! Price history queries (spec 4.6.7 to 4.6.13) answered from stored ticks, with the aggregation
//! documented in `docs/MASTER.md`:
//!
//! - Day: every tick of the 24 hours from the date.
//! - Week: one OHLCV bar per UTC day for the 7 days from the date.
//! - Month: one bar per UTC day for the calendar month from the date (same day next month).
//! - Year: one bar per calendar month for the 12 months from the date.
//! - All time: one bar per calendar month over every stored tick.
//!
//! A bar's open is its first tick's open, close the last tick's close, high and low the extremes,
//! volume the sum (saturating at the largest quantity), and time the start of its UTC day or month.
//! Buckets with no tick are left out. Pure: ticks in, bars out.

use engine::{Qty, Tick, Timestamp};
use net::{Bar, Period};
use time::{Date, Month, OffsetDateTime, Time};

/// Microseconds in one day.
const DAY_MICROS: i64 = 86_400_000_000;

/// The half-open time range `[from, to)` a query covers.
pub fn range(period: Period, date: Timestamp) -> Option<(Timestamp, Timestamp)> {
    let start = date.to_offset_date_time()?;
    let end = match period {
        Period::Day => start.checked_add(time::Duration::days(1))?,
        Period::Week => start.checked_add(time::Duration::days(7))?,
        Period::Month => add_months(start, 1)?,
        Period::Year => add_months(start, 12)?,
    };
    Some((date, Timestamp::from_offset_date_time(end)?))
}

fn add_months(at: OffsetDateTime, months: i32) -> Option<OffsetDateTime> {
    let total = at.year() * 12 + i32::from(u8::from(at.month())) - 1 + months;
    let year = total.div_euclid(12);
    let month = Month::try_from(u8::try_from(total.rem_euclid(12) + 1).ok()?).ok()?;
    let last_day = time::util::days_in_month(month, year);
    let day = at.day().min(last_day);
    let date = Date::from_calendar_date(year, month, day).ok()?;
    Some(date.with_time(at.time()).assume_utc())
}

/// Start of the UTC day containing `t`.
fn day_start(t: Timestamp) -> Timestamp {
    Timestamp(t.0.div_euclid(DAY_MICROS) * DAY_MICROS)
}

/// Start of the UTC calendar month containing `t`.
fn month_start(t: Timestamp) -> Timestamp {
    t.to_offset_date_time()
        .and_then(|at| Date::from_calendar_date(at.year(), at.month(), 1).ok())
        .and_then(|d| Timestamp::from_offset_date_time(d.with_time(Time::MIDNIGHT).assume_utc()))
        .unwrap_or(t)
}

/// Groups time-ordered ticks into bars by `bucket(tick time)`, after the bars already in `bars`
/// (built from earlier ticks): the last of them continues if the first tick falls in its bucket.
fn aggregate(bars: &mut Vec<Bar>, ticks: &[Tick], bucket: impl Fn(Timestamp) -> Timestamp) {
    for tick in ticks {
        let start = bucket(tick.time);
        match bars.last_mut() {
            Some(bar) if bar.time == start => {
                bar.high = bar.high.max(tick.high);
                bar.low = bar.low.min(tick.low);
                bar.close = tick.close;
                bar.volume = Qty::from_raw(bar.volume.raw().saturating_add(tick.volume.raw()));
            }
            _ => bars.push(Bar {
                open: tick.open,
                high: tick.high,
                low: tick.low,
                close: tick.close,
                volume: tick.volume,
                time: start,
            }),
        }
    }
}

/// How a price query turns its ticks into bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// A period query over its [`range`].
    Period(Period),
    /// The all-time query: one bar per calendar month.
    AllTime,
}

impl Series {
    /// Adds the bars of `ticks` (in time order, each after every tick already added) to
    /// `bars`, so that a query can read its ticks in chunks: the result is the same as from all
    /// the ticks at once.
    pub fn extend(self, bars: &mut Vec<Bar>, ticks: &[Tick]) {
        match self {
            Series::Period(Period::Day) => bars.extend(ticks.iter().map(Bar::from_tick)),
            Series::Period(Period::Week | Period::Month) => aggregate(bars, ticks, day_start),
            Series::Period(Period::Year) | Series::AllTime => aggregate(bars, ticks, month_start),
        }
    }

    /// The bars of `ticks` (in time order) read at once.
    pub fn bars(self, ticks: &[Tick]) -> Vec<Bar> {
        let mut bars = Vec::new();
        self.extend(&mut bars, ticks);
        bars
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Price, Symbol};

    fn tick(date: &str, open: &str, high: &str, low: &str, close: &str, volume: u64) -> Tick {
        Tick {
            symbol: Symbol::new("AAPL").unwrap(),
            open: Price::parse(open).unwrap(),
            high: Price::parse(high).unwrap(),
            low: Price::parse(low).unwrap(),
            close: Price::parse(close).unwrap(),
            volume: Qty::from_units(volume).unwrap(),
            time: engine::recorded::parse_time(date).unwrap(),
        }
    }

    #[test]
    fn ranges_follow_the_calendar() {
        let t = |s| engine::recorded::parse_time(s).unwrap();
        assert_eq!(range(Period::Day, t("2013-01-31")), Some((t("2013-01-31"), t("2013-02-01"))));
        assert_eq!(range(Period::Week, t("2013-01-31")), Some((t("2013-01-31"), t("2013-02-07"))));
        assert_eq!(range(Period::Month, t("2013-01-31")), Some((t("2013-01-31"), t("2013-02-28"))));
        assert_eq!(range(Period::Year, t("2012-02-29")), Some((t("2012-02-29"), t("2013-02-28"))));
        assert_eq!(range(Period::Month, t("2012-12-15")), Some((t("2012-12-15"), t("2013-01-15"))));
    }

    #[test]
    fn months_aggregate_ohlcv() {
        let ticks = [
            tick("2013-01-02", "10", "12", "9", "11", 5),
            tick("2013-01-03", "11", "15", "10", "14", 7),
            tick("2013-02-01", "14", "14", "8", "9", 1),
        ];
        let bars = Series::Period(Period::Year).bars(&ticks);
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0].open, Price::parse("10").unwrap());
        assert_eq!(bars[0].high, Price::parse("15").unwrap());
        assert_eq!(bars[0].low, Price::parse("9").unwrap());
        assert_eq!(bars[0].close, Price::parse("14").unwrap());
        assert_eq!(bars[0].volume, Qty::from_units(12).unwrap());
        assert_eq!(bars[0].time, engine::recorded::parse_time("2013-01-01").unwrap());
        assert_eq!(bars[1].time, engine::recorded::parse_time("2013-02-01").unwrap());
        assert_eq!(Series::Period(Period::Week).bars(&ticks).len(), 3);
        assert_eq!(Series::AllTime.bars(&ticks), bars);
        assert_eq!(
            Series::Period(Period::Day).bars(&ticks[..1])[0].close,
            Price::parse("11").unwrap()
        );
    }

    /// Ticks read in chunks, cut anywhere, give the bars of all the ticks at once.
    #[test]
    fn chunks_give_the_bars_of_the_whole() {
        let ticks = [
            tick("2013-01-02", "10", "12", "9", "11", 5),
            tick("2013-01-02T12:00:00Z", "11", "13", "10", "12", 2),
            tick("2013-01-03", "11", "15", "10", "14", 7),
            tick("2013-02-01", "14", "14", "8", "9", 1),
            tick("2013-02-02", "9", "10", "7", "8", 3),
        ];
        let all = [Period::Day, Period::Week, Period::Month, Period::Year]
            .map(Series::Period)
            .into_iter()
            .chain([Series::AllTime]);
        for series in all {
            let whole = series.bars(&ticks);
            for cut in 0..=ticks.len() {
                let mut chunked = Vec::new();
                series.extend(&mut chunked, &ticks[..cut]);
                series.extend(&mut chunked, &ticks[cut..]);
                assert_eq!(chunked, whole, "{series:?} cut at {cut}");
            }
        }
    }
}
