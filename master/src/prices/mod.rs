//! Assets data retrieval (spec 3.1.6): where each interval's prices come from.
//!
//! A [`PriceSource`] is asked once per update interval for the prices of a list of symbols and
//! answers a [`PriceBatch`]: a tick for each symbol it could price, and a [`SymbolFailure`] for
//! each one it could not. A failure never breaks anything: that interval simply has no price for
//! the symbol, so orders on it are rejected by the engine for want of a price.
//!
//! Two sources: [`RecordedSource`] replays a recorded price file (the shipped one by default)
//! forever, and [`HttpSource`] asks Alpha Vantage's `GLOBAL_QUOTE` endpoint.
//! [`open_source`] builds the configured one.

pub mod http;
pub mod recorded;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use engine::{Symbol, Tick, TickSet, Timestamp};

pub use http::HttpSource;
pub use recorded::{RecordedSource, SHIPPED_PRICES};

use crate::config::PriceSourceConfig;

/// One interval's answer of a price source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceBatch {
    /// The source's own time for the interval: the recorded period's time (shifted forward on
    /// each loop) for a recorded source, `None` for a live one.
    pub time: Option<Timestamp>,
    /// A valid tick for each symbol priced, sorted by symbol, at most one per symbol.
    pub ticks: TickSet,
    /// The requested symbols with no price this interval, in request order.
    pub failures: Vec<SymbolFailure>,
}

impl PriceBatch {
    /// No price for any of `symbols`, each failed for `reason`.
    pub fn without_prices(
        symbols: impl IntoIterator<Item = Symbol>,
        reason: &FailureReason,
    ) -> Self {
        let failures = symbols
            .into_iter()
            .map(|symbol| SymbolFailure { symbol, reason: reason.clone() })
            .collect();
        Self { failures, ..Self::default() }
    }
}

/// A requested symbol that has no price this interval, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolFailure {
    /// The symbol.
    pub symbol: Symbol,
    /// Why it has no price.
    pub reason: FailureReason,
}

/// Why a symbol has no price this interval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureReason {
    /// The source has no data for the symbol (not in this recorded period, or an empty quote).
    #[error("no data for this symbol")]
    NoData,
    /// Not asked: the configured calls-per-minute cap was reached this interval.
    #[error("skipped: calls-per-minute cap reached")]
    CallCapReached,
    /// Not asked: the interval's time budget ran out.
    #[error("skipped: the interval's time budget ran out")]
    DeadlineReached,
    /// The provider refused: over its rate limit or quota (its message, key removed).
    #[error("provider rate limit: {0}")]
    RateLimited(String),
    /// The provider answered with an error message (key removed).
    #[error("provider error: {0}")]
    Provider(String),
    /// No answer within the timeout (after the retries).
    #[error("timed out")]
    Timeout,
    /// Could not connect or the connection broke (after the retries).
    #[error("connection failed: {0}")]
    Connection(String),
    /// An HTTP status other than 200 (after the retries for 5xx).
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    /// A body larger than the configured maximum.
    #[error("response larger than {0} bytes")]
    TooLarge(u32),
    /// A body that is not the expected JSON.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// Prices that contradict each other or are zero.
    #[error("unusable tick: {0}")]
    BadTick(String),
    /// A quote older than `prices.quote_age_max` (a delisted or suspended symbol's last close):
    /// not traded on.
    #[error("quote too old: latest trading day {0}")]
    Stale(String),
    /// A quote whose trading day starts more than a day after the master's clock: a provider
    /// error, which as the newest tick would stay the asset's current price for good.
    #[error("quote from the future: latest trading day {0}")]
    FromTheFuture(String),
    /// The recorded source's shifted time no longer fits in a timestamp.
    #[error("recorded time overflowed")]
    TimeOverflow,
}

/// A source of prices, asked once per update interval.
pub trait PriceSource: Send {
    /// Prices `symbols` for one interval. Each symbol ends up either with a tick or with a
    /// failure; duplicates are priced once. Never fails as a whole and never takes much longer
    /// than the source's time budget.
    fn fetch<'a>(
        &'a mut self,
        symbols: &'a [Symbol],
    ) -> impl Future<Output = PriceBatch> + Send + 'a;

    /// [`PriceSource::fetch`] within `budget` when that is shorter than the source's own: the
    /// master's last fetch as it stops, which must not hold the shutdown for a whole interval.
    fn fetch_within<'a>(
        &'a mut self,
        symbols: &'a [Symbol],
        budget: Duration,
    ) -> impl Future<Output = PriceBatch> + Send + 'a;

    /// The symbols the source knows without being told (every symbol of a recorded file), or
    /// `None` for a source that prices whatever it is asked.
    fn known_symbols(&self) -> Option<Vec<Symbol>>;

    /// A short name for logs (`recorded`, `http`).
    fn name(&self) -> &'static str;
}

/// Why a price source could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PriceSourceError {
    /// A recorded price file or split list could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A recorded price file or split list larger than
    /// [`recorded::RECORDED_FILE_BYTES_MAX`].
    #[error("{path} has {bytes} bytes or more, more than the {max} a price file or split list may have", path = path.display(), max = recorded::RECORDED_FILE_BYTES_MAX)]
    TooLarge {
        /// The file.
        path: std::path::PathBuf,
        /// Its size (for a pipe or a device, what was read before the limit stopped it).
        bytes: u64,
    },
    /// The recorded price file is malformed (the error names the line).
    #[error("price file {origin}: {source}")]
    Recorded {
        /// The file, or `shipped`.
        origin: String,
        /// The parser's error, naming the line.
        source: engine::recorded::RecordedError,
    },
    /// The split list is malformed, or a split cannot be applied to the prices (the error
    /// names the split list's line).
    #[error("split list {origin}: {source}")]
    Splits {
        /// The file, or `shipped`.
        origin: String,
        /// The parser's or the adjustment's error, naming the split's line.
        source: engine::recorded::RecordedError,
    },
    /// The recorded price file has no rows.
    #[error("price file {0} has no prices")]
    Empty(String),
    /// The HTTP source's settings are unusable.
    #[error("http price source: {0}")]
    Http(String),
    /// No asset to retrieve: none configured and none known to the source.
    #[error("no assets: list them in the config key `assets`")]
    NoAssets,
    /// The journal's current prices are dated further ahead of the clock than any quote of
    /// the HTTP source: it would refuse every quote as older than the price it holds (a price
    /// never goes back), so no asset would ever be priced again.
    #[error(
        "the data directory's newest price is dated {latest}, more than a day past this \
         machine's clock ({now}): the recorded source moves its dates on with every pass over \
         its file. The http source's quotes are dated today, older than that price, so every \
         one would be refused. Start the http source on a new data directory (or go on with the \
         recorded source here)"
    )]
    PricesAheadOfClock {
        /// The newest tick time in the journal.
        latest: Timestamp,
        /// The master's clock.
        now: Timestamp,
    },
}

/// Either configured source, behind one type.
#[derive(Debug)]
pub enum AnyPriceSource {
    /// A recorded file.
    Recorded(RecordedSource),
    /// Alpha Vantage over HTTP.
    Http(Box<HttpSource>),
}

impl PriceSource for AnyPriceSource {
    async fn fetch(&mut self, symbols: &[Symbol]) -> PriceBatch {
        match self {
            Self::Recorded(source) => source.fetch(symbols).await,
            Self::Http(source) => source.fetch(symbols).await,
        }
    }

    async fn fetch_within(&mut self, symbols: &[Symbol], budget: Duration) -> PriceBatch {
        match self {
            Self::Recorded(source) => source.fetch_within(symbols, budget).await,
            Self::Http(source) => source.fetch_within(symbols, budget).await,
        }
    }

    fn known_symbols(&self) -> Option<Vec<Symbol>> {
        match self {
            Self::Recorded(source) => source.known_symbols(),
            Self::Http(source) => source.known_symbols(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Recorded(source) => source.name(),
            Self::Http(source) => source.name(),
        }
    }
}

/// Builds the configured source. `update_interval` is the HTTP source's time budget per fetch.
/// Reads the recorded file when one is configured (blocking IO: call it at startup).
pub fn open_source(
    config: &PriceSourceConfig,
    update_interval: Duration,
) -> Result<AnyPriceSource, PriceSourceError> {
    match config {
        PriceSourceConfig::Recorded(recorded) => {
            let prices =
                recorded::load_prices(recorded.file.as_deref(), recorded.splits.as_deref())?;
            Ok(AnyPriceSource::Recorded(RecordedSource::from_prices(prices)?))
        }
        PriceSourceConfig::Http(http) => {
            Ok(AnyPriceSource::Http(Box::new(HttpSource::new(http, update_interval)?)))
        }
    }
}

/// The assets to retrieve (spec 2.3.1): the configured list when not empty, else every symbol
/// the source knows; sorted and without duplicates.
pub fn resolve_assets(
    configured: &[Symbol],
    source: &impl PriceSource,
) -> Result<Vec<Symbol>, PriceSourceError> {
    let assets: BTreeSet<Symbol> = if configured.is_empty() {
        source.known_symbols().unwrap_or_default().into_iter().collect()
    } else {
        configured.iter().copied().collect()
    };
    if assets.is_empty() {
        return Err(PriceSourceError::NoAssets);
    }
    Ok(assets.into_iter().collect())
}

/// The requested symbols without duplicates, in request order.
fn unique(symbols: &[Symbol]) -> Vec<Symbol> {
    let mut seen = BTreeSet::new();
    symbols.iter().copied().filter(|s| seen.insert(*s)).collect()
}

/// Builds a batch from valid ticks (at most one per symbol) and failures.
fn batch(
    time: Option<Timestamp>,
    ticks: Vec<Tick>,
    mut failures: Vec<SymbolFailure>,
) -> PriceBatch {
    match TickSet::new(ticks.clone()) {
        Ok(ticks) => PriceBatch { time, ticks, failures },
        Err(e) => {
            // Unreachable with validated, de-duplicated ticks; degrade to "no prices".
            let reason = FailureReason::BadTick(e.to_string());
            failures.extend(
                ticks.iter().map(|t| SymbolFailure { symbol: t.symbol, reason: reason.clone() }),
            );
            PriceBatch { time, ticks: TickSet::default(), failures }
        }
    }
}
