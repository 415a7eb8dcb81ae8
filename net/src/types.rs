//! Protocol value types: session ids, password hashes, states, reason codes, fill reports.

use std::fmt;

use engine::RejectReason;
use engine::{
    Cash, Fill, IntervalId, Order, OrderId, Price, Qty, Side, Symbol, Timestamp, Transaction,
};

use crate::limits::{
    FAILURE_MESSAGE_BYTES_MAX, HASHED_PASSWORD_BYTES_MAX, HASHED_PASSWORD_BYTES_MIN,
    SESSION_ID_BYTES,
};

/// A session id: 32 random bytes chosen by the master. A bearer secret, so its `Debug` and
/// `Display` show only the first four bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; SESSION_ID_BYTES]);

impl SessionId {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; SESSION_ID_BYTES] {
        &self.0
    }

    /// A short, non-secret label for logs: the first four bytes in hex.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}..)", self.short())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..", self.short())
    }
}

/// A byte string whose length is outside its bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {len} bytes long, it must be {min}..={max}")]
pub struct LengthError {
    /// Which value.
    pub what: &'static str,
    /// Its length.
    pub len: usize,
    /// The minimum.
    pub min: usize,
    /// The maximum.
    pub max: usize,
}

/// The spec's `hashedPass`: the client's hash of the password, opaque to the protocol, 16 to
/// 128 bytes. The master hashes it again (argon2) before storing. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedPassword(Vec<u8>);

impl HashedPassword {
    /// Wraps the client's hash, checking its length.
    pub fn new(bytes: Vec<u8>) -> Result<Self, LengthError> {
        let (min, max) = (HASHED_PASSWORD_BYTES_MIN, HASHED_PASSWORD_BYTES_MAX);
        if !(min..=max).contains(&bytes.len()) {
            return Err(LengthError { what: "hashedPass", len: bytes.len(), min, max });
        }
        Ok(Self(bytes))
    }

    /// The bytes, for the master's verifier only.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for HashedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashedPassword(<redacted>)")
    }
}

/// A connection's state (spec 4.2). The wire code is the `state` argument of `switchState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ConnState {
    /// Command state (spec 4.2.1): where every connection starts.
    Command = 1,
    /// Data transfer state (spec 4.2.2).
    DataTransfer = 2,
}

impl ConnState {
    /// The wire code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The state of a wire code, if it is one.
    pub fn from_code(code: u16) -> Option<Self> {
        match code {
            1 => Some(Self::Command),
            2 => Some(Self::DataTransfer),
            _ => None,
        }
    }

    /// A stable name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::DataTransfer => "data transfer",
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The wire code of a trade side: 1 buy, 2 sell.
pub const fn side_code(side: Side) -> u16 {
    match side {
        Side::Buy => 1,
        Side::Sell => 2,
    }
}

/// The side of a wire code, if it is one.
pub fn side_from_code(code: u16) -> Option<Side> {
    match code {
        1 => Some(Side::Buy),
        2 => Some(Side::Sell),
        _ => None,
    }
}

/// The span of a historical price request (`getAssetValueDay/Week/Month/Year`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// 24 hours from the date.
    Day,
    /// A week of days from the date.
    Week,
    /// A month of days from the date.
    Month,
    /// A year of months from the date.
    Year,
}

impl Period {
    /// Every period.
    pub const ALL: [Period; 4] = [Self::Day, Self::Week, Self::Month, Self::Year];
}

/// Why something failed: a stable `u16` code carried by every `...Fail` return, `linkRefused`
/// and `error`. Codes 1..=99 are the engine's [`RejectReason`]s; 100 and up are the protocol's.
/// Codes are never renumbered; a code this version does not know decodes as [`Reason::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The engine refused the order (codes 1..=8 today, see `engine::RejectReason`).
    Rejected(RejectReason),
    /// 100: the request needs a session and this connection has not logged in.
    NotLoggedIn,
    /// 101: the session id is unknown, expired, or not the one this connection logged in with.
    BadSession,
    /// 102: the instruction is not allowed in the connection's current state.
    WrongState,
    /// 103: the server is overloaded; the client may retry later.
    Busy,
    /// 104: the worker cannot reach the master; the client may retry later.
    MasterUnavailable,
    /// 105: unknown username or wrong password.
    BadCredentials,
    /// 106: the username is already registered.
    UsernameTaken,
    /// 107: an argument is well-formed but not acceptable (e.g. a quantity of zero).
    InvalidArgument,
    /// 108: the asset, user or data asked for does not exist.
    NotFound,
    /// 109: the instruction is unknown, or not one this peer takes.
    UnknownInstruction,
    /// 110: the message could not be decoded.
    Malformed,
    /// 111: the peer speaks another protocol version.
    UnsupportedVersion,
    /// 112: a frame or message is over a size limit.
    TooLarge,
    /// 113: the caller may not do this (e.g. an unregistered worker).
    Forbidden,
    /// 114: the server failed; not the client's fault.
    Internal,
    /// A code this version does not know, kept as received.
    Other(u16),
}

impl Reason {
    /// Every protocol-level reason with its code, name and meaning, in code order.
    pub const PROTOCOL: [(Reason, u16, &'static str, &'static str); 15] = [
        (Self::NotLoggedIn, 100, "not_logged_in", "the request needs a logged-in connection"),
        (
            Self::BadSession,
            101,
            "bad_session",
            "unknown or expired session, or not this connection's",
        ),
        (Self::WrongState, 102, "wrong_state", "not allowed in the connection's current state"),
        (Self::Busy, 103, "busy", "server overloaded; retry later"),
        (
            Self::MasterUnavailable,
            104,
            "master_unavailable",
            "worker cannot reach the master; retry later",
        ),
        (Self::BadCredentials, 105, "bad_credentials", "unknown username or wrong password"),
        (Self::UsernameTaken, 106, "username_taken", "the username is already registered"),
        (Self::InvalidArgument, 107, "invalid_argument", "well-formed but unacceptable argument"),
        (Self::NotFound, 108, "not_found", "no such asset, user or data"),
        (
            Self::UnknownInstruction,
            109,
            "unknown_instruction",
            "instruction unknown or not taken here",
        ),
        (Self::Malformed, 110, "malformed", "the message could not be decoded"),
        (Self::UnsupportedVersion, 111, "unsupported_version", "another protocol version"),
        (Self::TooLarge, 112, "too_large", "a frame or message over a size limit"),
        (Self::Forbidden, 113, "forbidden", "not allowed for this caller (e.g. unknown worker)"),
        (Self::Internal, 114, "internal", "the server failed; not the client's fault"),
    ];

    /// The wire code.
    pub fn code(self) -> u16 {
        match self {
            Self::Rejected(reject) => reject.code(),
            Self::Other(code) => code,
            known => Self::PROTOCOL
                .iter()
                .find(|(reason, ..)| *reason == known)
                .map_or(0, |&(_, code, ..)| code),
        }
    }

    /// The reason of a wire code; unknown codes give [`Reason::Other`].
    pub fn from_code(code: u16) -> Self {
        if let Some(reject) = RejectReason::from_code(code) {
            return Self::Rejected(reject);
        }
        Self::PROTOCOL
            .iter()
            .find(|&&(_, c, ..)| c == code)
            .map_or(Self::Other(code), |&(reason, ..)| reason)
    }

    /// A stable snake_case name (`insufficient_cash`, `busy`...); `other` for unknown codes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rejected(reject) => reject.as_str(),
            Self::Other(_) => "other",
            known => {
                Self::PROTOCOL.iter().find(|(r, ..)| *r == known).map_or("other", |&(_, _, n, _)| n)
            }
        }
    }

    /// True for reasons where the same request may succeed later (`busy`,
    /// `master_unavailable`).
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Busy | Self::MasterUnavailable)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

/// The arguments of every failure return: a reason code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The stable code; clients act on this.
    pub reason: Reason,
    /// A human-readable explanation, at most [`FAILURE_MESSAGE_BYTES_MAX`] bytes; for people.
    pub message: String,
}

impl Failure {
    /// A failure; the message is cut at a character boundary to fit the limit.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > FAILURE_MESSAGE_BYTES_MAX {
            let mut end = FAILURE_MESSAGE_BYTES_MAX;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { reason, message }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

/// The arguments of `purchaseSuccess` and `sellSuccess`: the order as filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillReport {
    /// The order's id.
    pub order: OrderId,
    /// The asset.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// Quantity filled.
    pub qty: Qty,
    /// Fill price.
    pub price: Price,
    /// Cash paid (buy) or received (sell).
    pub amount: Cash,
    /// The interval that settled it.
    pub interval: IntervalId,
    /// When the interval settled (master clock).
    pub settled_at: Timestamp,
    /// The account's cash after the fill.
    pub cash_after: Cash,
}

impl FillReport {
    /// The report of an engine fill settled at `settled_at`.
    pub fn from_fill(fill: &Fill, settled_at: Timestamp) -> Self {
        Self::of(&fill.order, fill.interval, fill.price, fill.amount, settled_at, fill.cash_after)
    }

    /// The report of a fill as the account's history keeps it, with the cash after it (which
    /// the history does not keep: the caller sums the fills up to it).
    pub fn from_transaction(fill: &Transaction, cash_after: Cash) -> Self {
        Self::of(&fill.order, fill.interval, fill.price, fill.amount, fill.settled_at, cash_after)
    }

    fn of(
        order: &Order,
        interval: IntervalId,
        price: Price,
        amount: Cash,
        settled_at: Timestamp,
        cash_after: Cash,
    ) -> Self {
        Self {
            order: order.id,
            symbol: order.symbol,
            side: order.side,
            qty: order.qty,
            price,
            amount,
            interval,
            settled_at,
            cash_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_stable_and_round_trip() {
        for code in 0..=u16::MAX {
            assert_eq!(Reason::from_code(code).code(), code);
        }
        assert_eq!(Reason::from_code(6), Reason::Rejected(RejectReason::InsufficientCash));
        assert_eq!(Reason::Busy.code(), 103);
        assert_eq!(Reason::from_code(9999), Reason::Other(9999));
        assert_eq!(Reason::WrongState.name(), "wrong_state");
    }

    #[test]
    fn failure_message_is_cut_at_a_char_boundary() {
        let failure = Failure::new(Reason::Internal, "é".repeat(1000));
        assert!(failure.message.len() <= FAILURE_MESSAGE_BYTES_MAX);
        assert_eq!(failure.message.len(), FAILURE_MESSAGE_BYTES_MAX);
    }

    #[test]
    fn secrets_are_not_printed() {
        let password = HashedPassword::new(vec![7; 32]).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(format!("{password:?}"), "HashedPassword(<redacted>)");
        let session = SessionId([0xab; 32]);
        assert_eq!(format!("{session:?}"), "SessionId(abababab..)");
        assert!(HashedPassword::new(vec![0; 15]).is_err());
        assert!(HashedPassword::new(vec![0; 129]).is_err());
    }
}
