//! Events: everything that ever happened, as versioned plain data. State is their fold.
//!
//! Events are encoded with rkyv by the journal. The meaning of an encoded event never changes:
//! new kinds of events and new reject reasons are appended, never inserted or renumbered.

use std::fmt;

use crate::ids::{AccountId, Email, IntervalId, PasswordHash, Symbol, Timestamp, Username};
use crate::money::{Cash, Price, Qty};
use crate::order::Order;
use crate::tick::Tick;

/// Version of the rkyv archive layout of the events (and of the state that holds them): snapshot
/// headers carry it, and the journal reads records of its `event_format` 1 with it.
pub const EVENT_FORMAT_VERSION: u16 = 1;

/// One thing that happened, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Event {
    /// A symbol became tradable.
    AssetListed(AssetListed),
    /// A new account was opened.
    AccountOpened(AccountOpened),
    /// An interval settled against these ticks; the fills and rejections of its orders follow.
    IntervalSettled(IntervalSettled),
    /// An order filled.
    OrderFilled(Fill),
    /// An order was refused, with a stable reason.
    OrderRejected(Rejection),
    /// An account's stored password hash was replaced by a hash of the same password made with
    /// the master's current argon2 costs (on a login, after the costs changed).
    PasswordRehashed(PasswordRehashed),
}

impl Event {
    /// The order an outcome event (`OrderFilled` or `OrderRejected`) is about; `None` for the
    /// other events.
    pub fn outcome_order(&self) -> Option<&Order> {
        match self {
            Event::OrderFilled(fill) => Some(&fill.order),
            Event::OrderRejected(rejection) => Some(&rejection.order),
            Event::AssetListed(_)
            | Event::AccountOpened(_)
            | Event::IntervalSettled(_)
            | Event::PasswordRehashed(_) => None,
        }
    }
}

/// A symbol made tradable.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AssetListed {
    /// The symbol.
    pub symbol: Symbol,
    /// When (master clock).
    pub at: Timestamp,
}

/// The start of an interval's settlement; exactly `orders` outcomes follow it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct IntervalSettled {
    /// Which interval.
    pub interval: IntervalId,
    /// When it settled (master clock): the time every one of its transactions went through.
    pub at: Timestamp,
    /// The tick set used, sorted by symbol.
    #[rkyv(with = crate::archive::FreeOnError)]
    pub ticks: Vec<Tick>,
    /// How many orders settle in it (fills plus rejections that follow).
    pub orders: u64,
}

/// A new account, as opened.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AccountOpened {
    /// Its number: one more than the last account's.
    pub account: AccountId,
    /// Its unique username.
    pub username: Username,
    /// Its owner's email address.
    pub email: Email,
    /// The stored password hash (a PHC string), opaque to the engine.
    pub password_hash: PasswordHash,
    /// Cash it starts with.
    pub initial_cash: Cash,
    /// When (master clock).
    pub at: Timestamp,
}

/// An account's password hash replaced: same password, the costs configured now. The master
/// writes it after a login whose stored hash had other costs, so that a change of costs reaches
/// every account that logs in (docs/MASTER.md).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PasswordRehashed {
    /// The account.
    pub account: AccountId,
    /// The new stored password hash (a PHC string), opaque to the engine.
    pub password_hash: PasswordHash,
    /// When (master clock).
    pub at: Timestamp,
}

/// A filled order and everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Fill {
    /// The order as queued.
    pub order: Order,
    /// The interval that settled it.
    pub interval: IntervalId,
    /// The price it filled at: the close of `tick_time`'s tick.
    pub price: Price,
    /// Start of the tick used.
    pub tick_time: Timestamp,
    /// Cash moved: paid for a buy, received for a sell (see `money::notional` for rounding).
    pub amount: Cash,
    /// The account's cash after the fill.
    pub cash_after: Cash,
    /// The account's holding of the symbol after the fill.
    pub holding_after: Qty,
}

/// A refused order and what the engine saw when it refused it.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Rejection {
    /// The order as queued.
    pub order: Order,
    /// The interval that settled it.
    pub interval: IntervalId,
    /// Why.
    pub reason: RejectReason,
    /// The symbol's fill price this interval, if it had one.
    pub price_seen: Option<Price>,
    /// The account's cash when the order's turn came (zero for an unknown account).
    pub cash_seen: Cash,
    /// The account's holding of the symbol when the order's turn came.
    pub holding_seen: Qty,
}

/// Why an order was refused. The numeric codes are stable forever: they are on the wire and in
/// journals. Checks run in the order listed by [`crate::Engine::settle`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
#[repr(u16)]
pub enum RejectReason {
    /// No account has this id.
    UnknownAccount = 1,
    /// The quantity is zero.
    ZeroQuantity = 2,
    /// The quantity is over `limits::ORDER_QTY_UNITS_MAX` whole units.
    QuantityTooLarge = 3,
    /// The symbol is not listed.
    UnknownSymbol = 4,
    /// The symbol is listed but has no tick this interval.
    NoPrice = 5,
    /// A buy costs more than the account's cash at its turn in the queue.
    InsufficientCash = 6,
    /// A sell asks for more than the account holds at its turn in the queue.
    InsufficientHoldings = 7,
    /// An amount would not fit in 64 bits of `10^-8` units.
    Overflow = 8,
}

impl RejectReason {
    /// Every reason, in code order.
    pub const ALL: [RejectReason; 8] = [
        Self::UnknownAccount,
        Self::ZeroQuantity,
        Self::QuantityTooLarge,
        Self::UnknownSymbol,
        Self::NoPrice,
        Self::InsufficientCash,
        Self::InsufficientHoldings,
        Self::Overflow,
    ];

    /// The stable numeric code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The reason of a code, if it is one.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// A stable snake_case name, for logs, JSON and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownAccount => "unknown_account",
            Self::ZeroQuantity => "zero_quantity",
            Self::QuantityTooLarge => "quantity_too_large",
            Self::UnknownSymbol => "unknown_symbol",
            Self::NoPrice => "no_price",
            Self::InsufficientCash => "insufficient_cash",
            Self::InsufficientHoldings => "insufficient_holdings",
            Self::Overflow => "overflow",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}
