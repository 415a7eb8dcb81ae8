//! Asset ticks (spec 2.4.3) and the tick set one interval settles against.

use crate::ids::{Symbol, Timestamp};
use crate::limits::TICKS_PER_INTERVAL_MAX;
use crate::money::{Price, Qty};

/// One asset's prices for one period (spec 2.4.3): open, high, low, close and volume, and the
/// time the period starts. Orders fill at the `close`: the latest price the period knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[rkyv(derive(Debug))]
pub struct Tick {
    /// The asset.
    pub symbol: Symbol,
    /// First price of the period.
    pub open: Price,
    /// Highest price of the period.
    pub high: Price,
    /// Lowest price of the period.
    pub low: Price,
    /// Last price of the period; the fill price.
    pub close: Price,
    /// Units traded in the period.
    pub volume: Qty,
    /// When the period starts.
    pub time: Timestamp,
}

/// Why a tick or a tick set is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TickError {
    /// A price of zero.
    #[error("tick for {0} has a zero price")]
    ZeroPrice(Symbol),
    /// Prices that contradict each other (`low <= open, close <= high` does not hold).
    #[error("tick for {0} is inconsistent: low <= open, close <= high does not hold")]
    Inconsistent(Symbol),
    /// The same symbol twice in one interval.
    #[error("tick set has {0} twice")]
    DuplicateSymbol(Symbol),
    /// A stored tick list not sorted by symbol (a tick set always is): this symbol comes after
    /// a greater one.
    #[error("tick list is not sorted by symbol at {0}")]
    Unsorted(Symbol),
    /// More ticks than one interval may hold.
    #[error("tick set has {0} ticks, at most {TICKS_PER_INTERVAL_MAX} are allowed")]
    TooMany(usize),
}

impl Tick {
    /// Checks the tick's prices: all positive, and `low <= open, close <= high`.
    pub fn validate(&self) -> Result<(), TickError> {
        if [self.open, self.high, self.low, self.close].iter().any(|p| p.is_zero()) {
            return Err(TickError::ZeroPrice(self.symbol));
        }
        let within = |p: Price| self.low <= p && p <= self.high;
        if !(within(self.open) && within(self.close)) {
            return Err(TickError::Inconsistent(self.symbol));
        }
        Ok(())
    }

    /// The price an order fills at in the interval this tick belongs to.
    pub const fn fill_price(&self) -> Price {
        self.close
    }
}

/// Checks a list of ticks as a tick set holds them: at most [`TICKS_PER_INTERVAL_MAX`], each
/// valid, sorted by symbol, each symbol once. [`TickSet::new`] checks its input with it after
/// sorting; replay checks an interval header's stored list with it (`State::apply`).
pub(crate) fn check_list(ticks: &[Tick]) -> Result<(), TickError> {
    if ticks.len() > TICKS_PER_INTERVAL_MAX {
        return Err(TickError::TooMany(ticks.len()));
    }
    for tick in ticks {
        tick.validate()?;
    }
    match ticks.windows(2).find(|w| w[0].symbol >= w[1].symbol) {
        Some(w) if w[0].symbol == w[1].symbol => Err(TickError::DuplicateSymbol(w[0].symbol)),
        Some(w) => Err(TickError::Unsorted(w[1].symbol)),
        None => Ok(()),
    }
}

/// The ticks one interval settles against: at most one per symbol, sorted by symbol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickSet {
    ticks: Vec<Tick>,
}

impl TickSet {
    /// Validates every tick, sorts by symbol and refuses duplicates.
    pub fn new(mut ticks: Vec<Tick>) -> Result<Self, TickError> {
        if ticks.len() > TICKS_PER_INTERVAL_MAX {
            return Err(TickError::TooMany(ticks.len()));
        }
        ticks.sort_unstable_by_key(|t| t.symbol);
        check_list(&ticks)?;
        Ok(Self { ticks })
    }

    /// The tick of `symbol`, if the interval has one.
    pub fn get(&self, symbol: &Symbol) -> Option<&Tick> {
        self.ticks.binary_search_by_key(symbol, |t| t.symbol).ok().map(|i| &self.ticks[i])
    }

    /// All ticks, sorted by symbol.
    pub fn ticks(&self) -> &[Tick] {
        &self.ticks
    }

    /// Number of ticks.
    pub fn len(&self) -> usize {
        self.ticks.len()
    }

    /// True when no symbol has a price this interval.
    pub fn is_empty(&self) -> bool {
        self.ticks.is_empty()
    }
}
