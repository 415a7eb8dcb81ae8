//! The typed payloads of the `data` return (spec 4.6.27), sent with the packet mechanism.
//!
//! A `data` body is a `u16` payload kind followed by that kind's fields; see `docs/PROTOCOL.md`.

use engine::limits::{EMAIL_CHARS_MAX, SYMBOL_CHARS_MAX, USERNAME_CHARS_MAX};
use engine::{
    AccountId, Cash, Email, IntervalId, OrderId, Price, Qty, Side, Symbol, Tick, Timestamp,
    Transaction, Username, WorkerId,
};

use crate::args::{ArgReader, ArgWriter};
use crate::control::{read_address, write_address};
use crate::error::{DecodeError, EncodeError};
use crate::instruction::Instruction;
use crate::limits::{HISTORY_ENTRIES_MAX, PRICE_SERIES_BARS_MAX, WORKER_NAME_BYTES_MAX};
use crate::types::{side_code, side_from_code};

/// One period's prices of a series (a [`Tick`] without its symbol, which the series gives once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// First price.
    pub open: Price,
    /// Highest price.
    pub high: Price,
    /// Lowest price.
    pub low: Price,
    /// Last price.
    pub close: Price,
    /// Units traded.
    pub volume: Qty,
    /// Start of the period.
    pub time: Timestamp,
}

impl Bar {
    /// The bar of a tick (its symbol dropped).
    pub fn from_tick(tick: &Tick) -> Self {
        Self {
            open: tick.open,
            high: tick.high,
            low: tick.low,
            close: tick.close,
            volume: tick.volume,
            time: tick.time,
        }
    }

    /// The tick of this bar for `symbol`.
    pub fn to_tick(&self, symbol: Symbol) -> Tick {
        Tick {
            symbol,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume: self.volume,
            time: self.time,
        }
    }
}

/// A price series of one asset, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceSeries {
    /// The asset.
    pub symbol: Symbol,
    /// Its bars.
    pub bars: Vec<Bar>,
}

/// A user's information (spec 4.6.14). The public view has `email: None`; the owner's view has
/// the email. Nothing about the password is ever part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The username.
    pub username: Username,
    /// The account number.
    pub account: AccountId,
    /// When the account was opened.
    pub opened_at: Timestamp,
    /// The email address, for the owner only.
    pub email: Option<Email>,
}

/// One holding of a portfolio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortfolioHolding {
    /// The asset.
    pub symbol: Symbol,
    /// Units held.
    pub qty: Qty,
    /// Cash paid for the units held.
    pub cost_basis: Cash,
    /// The asset's latest price, if it has one.
    pub last_price: Option<Price>,
}

/// A user's portfolio (spec 4.6.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portfolio {
    /// Cash available.
    pub cash: Cash,
    /// Holdings, sorted by symbol.
    pub holdings: Vec<PortfolioHolding>,
}

/// One settled transaction of a user's history (spec 4.6.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The order's id.
    pub order: OrderId,
    /// Buy or sell.
    pub side: Side,
    /// The asset.
    pub symbol: Symbol,
    /// Quantity.
    pub qty: Qty,
    /// Fill price.
    pub price: Price,
    /// Cash moved.
    pub amount: Cash,
    /// The interval that settled it.
    pub interval: IntervalId,
    /// When it settled.
    pub settled_at: Timestamp,
    /// Start of the tick whose close was the price.
    pub tick_time: Timestamp,
}

impl HistoryEntry {
    /// The entry of an engine transaction.
    pub fn from_transaction(transaction: &Transaction) -> Self {
        Self {
            order: transaction.order.id,
            side: transaction.order.side,
            symbol: transaction.order.symbol,
            qty: transaction.order.qty,
            price: transaction.price,
            amount: transaction.amount,
            interval: transaction.interval,
            settled_at: transaction.settled_at,
            tick_time: transaction.tick_time,
        }
    }
}

/// A worker a client may connect to (spec 2.4.5, 3.1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The worker's UUID.
    pub id: WorkerId,
    /// Its display name, at most 64 bytes.
    pub name: String,
    /// Its client-facing address, `host:port` (port 2049 by default, spec 4.3.2), 1 to 255
    /// bytes of UTF-8, as the worker announced it in its `workerHello`.
    pub address: String,
}

/// The payload of a `data` return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPayload {
    /// Kind 1: one asset's latest tick (spec 2.4.3), for `getAssetInfo`/`getAssetValueCurrent`.
    AssetInfo(Tick),
    /// Kind 2: a price series, for `getAssetValueDay/Week/Month/Year/AllTime`.
    PriceSeries(PriceSeries),
    /// Kind 3: a user's information, for `getUserInfo`.
    UserInfo(UserInfo),
    /// Kind 4: a portfolio, for `getUserPortfolio`.
    Portfolio(Portfolio),
    /// Kind 5: settled transactions, oldest first, for `getUserTransactionHistory`: the newest
    /// [`HISTORY_ENTRIES_MAX`] at most, and how many older ones were left out.
    TransactionHistory {
        /// The transactions, oldest first.
        entries: Vec<HistoryEntry>,
        /// How many transactions older than the first entry the history holds and the payload
        /// leaves out (0 when it carries the whole history).
        older: u64,
    },
    /// Kind 6: the registered workers, for `getWorkers`.
    WorkerList(Vec<WorkerInfo>),
}

/// Fields per item of each list.
const BAR_FIELDS: u16 = 6;
const HOLDING_FIELDS: u16 = 4;
/// The order a portfolio's holdings come in: each symbol once, ascending.
const HOLDINGS_ORDER: &str = "holdings, sorted by symbol";
/// The order a history's transactions come in: by interval, oldest first.
const HISTORY_ORDER: &str = "transactions, oldest interval first";
/// The order a price series' bars come in: oldest first, one per period.
const BARS_ORDER: &str = "bars, oldest first, one per period";
const HISTORY_FIELDS: u16 = 9;
const WORKER_FIELDS: u16 = 3;

impl DataPayload {
    /// The payload kinds with their codes and names, in code order.
    pub const KINDS: [(u16, &'static str); 6] = [
        (1, "assetInfo"),
        (2, "priceSeries"),
        (3, "userInfo"),
        (4, "portfolio"),
        (5, "transactionHistory"),
        (6, "workerList"),
    ];

    /// The payload kind code.
    pub fn kind(&self) -> u16 {
        match self {
            Self::AssetInfo(_) => 1,
            Self::PriceSeries(_) => 2,
            Self::UserInfo(_) => 3,
            Self::Portfolio(_) => 4,
            Self::TransactionHistory { .. } => 5,
            Self::WorkerList(_) => 6,
        }
    }

    /// Number of top-level arguments (including the kind) of a kind, if the kind exists.
    pub(crate) fn arg_count_of(kind: u16) -> Option<u16> {
        match kind {
            1 => Some(8),
            2 | 4 | 5 => Some(3),
            3 => Some(5),
            6 => Some(2),
            _ => None,
        }
    }

    pub(crate) fn write(&self, w: &mut ArgWriter) {
        w.u16(self.kind());
        match self {
            Self::AssetInfo(tick) => {
                w.text("symbol", tick.symbol.as_str(), SYMBOL_CHARS_MAX);
                w.u64(tick.open.raw());
                w.u64(tick.high.raw());
                w.u64(tick.low.raw());
                w.u64(tick.close.raw());
                w.u64(tick.volume.raw());
                w.i64(tick.time.micros());
            }
            Self::PriceSeries(series) => {
                w.at_most("bars", series.bars.len(), PRICE_SERIES_BARS_MAX);
                if !series.bars.is_sorted_by(|a, b| a.time < b.time) {
                    w.fail(EncodeError::OutOfOrder { what: BARS_ORDER });
                }
                w.text("symbol", series.symbol.as_str(), SYMBOL_CHARS_MAX);
                w.list("bars", BAR_FIELDS, &series.bars, |w, bar| {
                    w.u64(bar.open.raw());
                    w.u64(bar.high.raw());
                    w.u64(bar.low.raw());
                    w.u64(bar.close.raw());
                    w.u64(bar.volume.raw());
                    w.i64(bar.time.micros());
                });
            }
            Self::UserInfo(info) => {
                w.text("username", info.username.as_str(), USERNAME_CHARS_MAX);
                w.u64(info.account.0);
                w.i64(info.opened_at.micros());
                match &info.email {
                    Some(email) => w.text("email", email.as_str(), EMAIL_CHARS_MAX),
                    None => w.none(),
                }
            }
            Self::Portfolio(portfolio) => {
                if !portfolio.holdings.is_sorted_by(|a, b| a.symbol < b.symbol) {
                    w.fail(EncodeError::OutOfOrder { what: HOLDINGS_ORDER });
                }
                w.u64(portfolio.cash.raw());
                w.list("holdings", HOLDING_FIELDS, &portfolio.holdings, |w, holding| {
                    w.text("symbol", holding.symbol.as_str(), SYMBOL_CHARS_MAX);
                    w.u64(holding.qty.raw());
                    w.u64(holding.cost_basis.raw());
                    match holding.last_price {
                        Some(price) => w.u64(price.raw()),
                        None => w.none(),
                    }
                });
            }
            Self::TransactionHistory { entries, older } => {
                w.at_most("transactions", entries.len(), HISTORY_ENTRIES_MAX);
                if !entries.is_sorted_by_key(|entry| entry.interval) {
                    w.fail(EncodeError::OutOfOrder { what: HISTORY_ORDER });
                }
                w.u64(*older);
                w.list("transactions", HISTORY_FIELDS, entries, |w, entry| {
                    w.u64(entry.order.0);
                    w.u16(side_code(entry.side));
                    w.text("symbol", entry.symbol.as_str(), SYMBOL_CHARS_MAX);
                    w.u64(entry.qty.raw());
                    w.u64(entry.price.raw());
                    w.u64(entry.amount.raw());
                    w.u64(entry.interval.0);
                    w.i64(entry.settled_at.micros());
                    w.i64(entry.tick_time.micros());
                });
            }
            Self::WorkerList(workers) => {
                w.list("workers", WORKER_FIELDS, workers, |w, worker| {
                    w.id16(&worker.id.0.to_be_bytes());
                    w.text("worker name", &worker.name, WORKER_NAME_BYTES_MAX);
                    write_address(w, &worker.address);
                });
            }
        }
    }

    /// Reads a payload: the kind, then (after checking the argument count) its fields.
    pub(crate) fn read(arg_count: u16, r: &mut ArgReader<'_>) -> Result<Self, DecodeError> {
        let field = r.next_field();
        let kind = r.u16("kind")?;
        let unknown = DecodeError::UnknownCode { field, what: "payload kind", code: kind };
        let expected = Self::arg_count_of(kind).ok_or(unknown.clone())?;
        if arg_count != expected {
            return Err(DecodeError::WrongArgCount {
                instruction: Instruction::Data,
                expected,
                got: arg_count,
            });
        }
        let symbol = |r: &mut ArgReader<'_>| r.name("symbol", SYMBOL_CHARS_MAX, Symbol::new);
        Ok(match kind {
            1 => Self::AssetInfo(Tick {
                symbol: symbol(r)?,
                open: Price::from_raw(r.u64("open")?),
                high: Price::from_raw(r.u64("high")?),
                low: Price::from_raw(r.u64("low")?),
                close: Price::from_raw(r.u64("close")?),
                volume: Qty::from_raw(r.u64("volume")?),
                time: Timestamp(r.i64("time")?),
            }),
            2 => {
                let symbol = symbol(r)?;
                // Named by the order check below, as by the count check.
                let field = r.next_field();
                let items = r.list_at_most("bars", BAR_FIELDS, PRICE_SERIES_BARS_MAX)?;
                let mut bars = r.vec_for(items);
                for _ in 0..items {
                    bars.push(Bar {
                        open: Price::from_raw(r.u64("open")?),
                        high: Price::from_raw(r.u64("high")?),
                        low: Price::from_raw(r.u64("low")?),
                        close: Price::from_raw(r.u64("close")?),
                        volume: Qty::from_raw(r.u64("volume")?),
                        time: Timestamp(r.i64("time")?),
                    });
                }
                if !bars.is_sorted_by(|a, b| a.time < b.time) {
                    return Err(DecodeError::OutOfOrder { field, what: BARS_ORDER });
                }
                Self::PriceSeries(PriceSeries { symbol, bars })
            }
            3 => {
                let username = r.name("username", USERNAME_CHARS_MAX, Username::new)?;
                let account = AccountId(r.u64("account")?);
                let opened_at = Timestamp(r.i64("openedAt")?);
                let email = if r.none_next()? {
                    None
                } else {
                    Some(r.name("email", EMAIL_CHARS_MAX, Email::new)?)
                };
                Self::UserInfo(UserInfo { username, account, opened_at, email })
            }
            4 => {
                let cash = Cash::from_raw(r.u64("cash")?);
                let field = r.next_field();
                let items = r.list("holdings", HOLDING_FIELDS)?;
                let mut holdings = r.vec_for(items);
                for _ in 0..items {
                    holdings.push(PortfolioHolding {
                        symbol: symbol(r)?,
                        qty: Qty::from_raw(r.u64("qty")?),
                        cost_basis: Cash::from_raw(r.u64("costBasis")?),
                        last_price: r.opt_u64("lastPrice")?.map(Price::from_raw),
                    });
                }
                if !holdings.is_sorted_by(|a, b| a.symbol < b.symbol) {
                    return Err(DecodeError::OutOfOrder { field, what: HOLDINGS_ORDER });
                }
                Self::Portfolio(Portfolio { cash, holdings })
            }
            5 => {
                let older = r.u64("older")?;
                // Named by the order check below, as by the count check.
                let field = r.next_field();
                let items = r.list_at_most("transactions", HISTORY_FIELDS, HISTORY_ENTRIES_MAX)?;
                let mut entries = r.vec_for(items);
                for _ in 0..items {
                    entries.push(HistoryEntry {
                        order: OrderId(r.u64("orderId")?),
                        side: r.code("side", side_from_code)?,
                        symbol: symbol(r)?,
                        qty: Qty::from_raw(r.u64("qty")?),
                        price: Price::from_raw(r.u64("price")?),
                        amount: Cash::from_raw(r.u64("amount")?),
                        interval: IntervalId(r.u64("interval")?),
                        settled_at: Timestamp(r.i64("settledAt")?),
                        tick_time: Timestamp(r.i64("tickTime")?),
                    });
                }
                if !entries.is_sorted_by_key(|entry| entry.interval) {
                    return Err(DecodeError::OutOfOrder { field, what: HISTORY_ORDER });
                }
                Self::TransactionHistory { entries, older }
            }
            6 => {
                let items = r.list("workers", WORKER_FIELDS)?;
                let mut workers = r.vec_for(items);
                for _ in 0..items {
                    let id = WorkerId(u128::from_be_bytes(r.id16("workerId")?));
                    let name = r.text("worker name", WORKER_NAME_BYTES_MAX)?.to_owned();
                    let address = read_address(r)?;
                    workers.push(WorkerInfo { id, name, address });
                }
                Self::WorkerList(workers)
            }
            _ => return Err(unknown),
        })
    }
}
