//! The compact encoding of an event in a record's payload (record `event_format` 2).
//!
//! rkyv gives every variant of `engine::Event` the size of the largest (160 bytes), mostly
//! zeros; this encoding writes each field once, with no padding, so a fill takes about 80 bytes.
//! Fewer bytes per event is what a durable append costs most (see `docs/PERFORMANCE.md`), and it
//! makes journals smaller. The layout is in `docs/JOURNAL.md`:
//!
//! - `u`: an unsigned LEB128 varint (7 bits a byte, least significant group first, high bit set
//!   on every byte but the last), at most 10 bytes, in its shortest form;
//! - `i`: an `i64` as zigzag (`(n << 1) ^ (n >> 63)`) then `u`;
//! - `str`: `u` length, then that many UTF-8 bytes; `sym`: one length byte, then the ASCII;
//! - `id128`: 16 bytes, big-endian; `b`: one byte.
//!
//! Decoding is total: any byte string gives an event or a [`PayloadError`], never a panic, and
//! names and symbols pass the engine's own constructors, so a decoded event holds only values the
//! engine could have made. Encoding is deterministic: one event, one byte string.

use engine::limits::{
    EMAIL_CHARS_MAX, PASSWORD_HASH_BYTES_MAX, SYMBOL_CHARS_MAX, TICKS_PER_INTERVAL_MAX,
    USERNAME_CHARS_MAX,
};
use engine::{
    AccountId, AccountOpened, AssetListed, Cash, ClientOrderId, Email, Event, Fill, IntervalId,
    IntervalSettled, Order, OrderId, OrderKind, PasswordHash, Price, Qty, RejectReason, Rejection,
    Side, Symbol, Tick, Timestamp, Username, WorkerId,
};

/// The `event_format` of a record whose payload is this encoding.
pub const COMPACT_EVENT_FORMAT: u16 = 2;

/// Tag byte of each event variant.
mod tag {
    pub const ASSET_LISTED: u8 = 1;
    pub const ACCOUNT_OPENED: u8 = 2;
    pub const INTERVAL_SETTLED: u8 = 3;
    pub const ORDER_FILLED: u8 = 4;
    pub const ORDER_REJECTED: u8 = 5;
}

const SIDE_BUY: u8 = 1;
const SIDE_SELL: u8 = 2;
const KIND_MARKET: u8 = 1;
const PRICE_ABSENT: u8 = 0;
const PRICE_PRESENT: u8 = 1;
/// The longest `u`: ten groups of seven bits hold 64.
const VARINT_BYTES_MAX: usize = 10;

/// Why a payload is not a compact event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The bytes ended inside a field.
    #[error("ends inside {0}")]
    Truncated(&'static str),
    /// A varint longer than ten bytes, over 64 bits, or not in its shortest form.
    #[error("{0} is not a valid varint")]
    Varint(&'static str),
    /// An unknown event tag.
    #[error("unknown event tag {0}")]
    Tag(u8),
    /// A field holds a value its type cannot take.
    #[error("{field}: {detail}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Bytes left after the event.
    #[error("{0} bytes after the event")]
    Trailing(usize),
}

/// Appends the compact encoding of `event` to `out`.
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    match event {
        Event::AssetListed(e) => {
            w.byte(tag::ASSET_LISTED);
            w.symbol(&e.symbol);
            w.time(e.at);
        }
        Event::AccountOpened(e) => {
            w.byte(tag::ACCOUNT_OPENED);
            w.uint(e.account.0);
            w.text(e.username.as_str());
            w.text(e.email.as_str());
            w.text(e.password_hash.as_str());
            w.uint(e.initial_cash.raw());
            w.time(e.at);
        }
        Event::IntervalSettled(e) => {
            w.byte(tag::INTERVAL_SETTLED);
            w.uint(e.interval.0);
            w.time(e.at);
            w.uint(e.orders);
            w.uint(e.ticks.len() as u64);
            for tick in &e.ticks {
                w.symbol(&tick.symbol);
                w.uint(tick.open.raw());
                w.uint(tick.high.raw());
                w.uint(tick.low.raw());
                w.uint(tick.close.raw());
                w.uint(tick.volume.raw());
                w.time(tick.time);
            }
        }
        Event::OrderFilled(f) => {
            w.byte(tag::ORDER_FILLED);
            w.order(&f.order);
            w.uint(f.interval.0);
            w.uint(f.price.raw());
            w.time(f.tick_time);
            w.uint(f.amount.raw());
            w.uint(f.cash_after.raw());
            w.uint(f.holding_after.raw());
        }
        Event::OrderRejected(r) => {
            w.byte(tag::ORDER_REJECTED);
            w.order(&r.order);
            w.uint(r.interval.0);
            w.uint(u64::from(r.reason.code()));
            match r.price_seen {
                None => w.byte(PRICE_ABSENT),
                Some(price) => {
                    w.byte(PRICE_PRESENT);
                    w.uint(price.raw());
                }
            }
            w.uint(r.cash_seen.raw());
            w.uint(r.holding_seen.raw());
        }
    }
}

/// Decodes one compact event that fills `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<Event, PayloadError> {
    let mut r = Reader { bytes, at: 0 };
    let event = match r.byte("the event tag")? {
        tag::ASSET_LISTED => {
            Event::AssetListed(AssetListed { symbol: r.symbol("symbol")?, at: r.time("at")? })
        }
        tag::ACCOUNT_OPENED => Event::AccountOpened(AccountOpened {
            account: AccountId(r.uint("account")?),
            username: Username::new(r.text("username", USERNAME_CHARS_MAX * 4)?)
                .map_err(|e| invalid("username", e))?,
            email: Email::new(r.text("email", EMAIL_CHARS_MAX * 4)?)
                .map_err(|e| invalid("email", e))?,
            password_hash: PasswordHash::new(r.text("password_hash", PASSWORD_HASH_BYTES_MAX)?)
                .map_err(|e| invalid("password_hash", e))?,
            initial_cash: Cash::from_raw(r.uint("initial_cash")?),
            at: r.time("at")?,
        }),
        tag::INTERVAL_SETTLED => {
            let interval = IntervalId(r.uint("interval")?);
            let at = r.time("at")?;
            let orders = r.uint("orders")?;
            let count = r.uint("the tick count")?;
            // Each tick takes at least 8 bytes: a bound that cannot be forged by a large count.
            let count = usize::try_from(count)
                .ok()
                .filter(|&n| n <= TICKS_PER_INTERVAL_MAX && n <= r.remaining() / 8)
                .ok_or_else(|| invalid("ticks", format!("{count} ticks")))?;
            let mut ticks = Vec::with_capacity(count);
            for _ in 0..count {
                ticks.push(Tick {
                    symbol: r.symbol("tick symbol")?,
                    open: Price::from_raw(r.uint("tick open")?),
                    high: Price::from_raw(r.uint("tick high")?),
                    low: Price::from_raw(r.uint("tick low")?),
                    close: Price::from_raw(r.uint("tick close")?),
                    volume: Qty::from_raw(r.uint("tick volume")?),
                    time: r.time("tick time")?,
                });
            }
            Event::IntervalSettled(IntervalSettled { interval, at, ticks, orders })
        }
        tag::ORDER_FILLED => Event::OrderFilled(Fill {
            order: r.order()?,
            interval: IntervalId(r.uint("interval")?),
            price: Price::from_raw(r.uint("price")?),
            tick_time: r.time("tick_time")?,
            amount: Cash::from_raw(r.uint("amount")?),
            cash_after: Cash::from_raw(r.uint("cash_after")?),
            holding_after: Qty::from_raw(r.uint("holding_after")?),
        }),
        tag::ORDER_REJECTED => Event::OrderRejected(Rejection {
            order: r.order()?,
            interval: IntervalId(r.uint("interval")?),
            reason: {
                let code = r.uint("reason")?;
                u16::try_from(code)
                    .ok()
                    .and_then(RejectReason::from_code)
                    .ok_or_else(|| invalid("reason", format!("unknown code {code}")))?
            },
            price_seen: match r.byte("price_seen")? {
                PRICE_ABSENT => None,
                PRICE_PRESENT => Some(Price::from_raw(r.uint("price_seen")?)),
                other => return Err(invalid("price_seen", format!("presence byte {other}"))),
            },
            cash_seen: Cash::from_raw(r.uint("cash_seen")?),
            holding_seen: Qty::from_raw(r.uint("holding_seen")?),
        }),
        other => return Err(PayloadError::Tag(other)),
    };
    match r.remaining() {
        0 => Ok(event),
        left => Err(PayloadError::Trailing(left)),
    }
}

fn invalid(field: &'static str, detail: impl ToString) -> PayloadError {
    PayloadError::Invalid { field, detail: detail.to_string() }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }

    fn uint(&mut self, mut n: u64) {
        while n >= 0x80 {
            // The low seven bits, with the continuation bit.
            self.0.push((n.to_le_bytes()[0] & 0x7f) | 0x80);
            n >>= 7;
        }
        // n < 0x80 here: its low byte is all of it.
        self.0.push(n.to_le_bytes()[0]);
    }

    fn time(&mut self, t: Timestamp) {
        let n = t.0;
        self.uint(((n << 1) ^ (n >> 63)).cast_unsigned());
    }

    fn text(&mut self, s: &str) {
        self.uint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn symbol(&mut self, s: &Symbol) {
        let text = s.as_str();
        debug_assert!(text.len() <= SYMBOL_CHARS_MAX, "Symbol::new bounds its length");
        self.byte(u8::try_from(text.len()).unwrap_or(u8::MAX));
        self.0.extend_from_slice(text.as_bytes());
    }

    fn order(&mut self, o: &Order) {
        self.uint(o.id.0);
        self.uint(o.client_id.0);
        self.uint(o.account.0);
        self.symbol(&o.symbol);
        self.byte(match o.side {
            Side::Buy => SIDE_BUY,
            Side::Sell => SIDE_SELL,
        });
        self.uint(o.qty.raw());
        self.byte(match o.kind {
            OrderKind::Market => KIND_MARKET,
        });
        self.time(o.placed_at);
        self.0.extend_from_slice(&o.worker.0.to_be_bytes());
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PayloadError> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or(PayloadError::Truncated(what))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, PayloadError> {
        Ok(self.take(1, what)?[0])
    }

    fn uint(&mut self, what: &'static str) -> Result<u64, PayloadError> {
        let mut n = 0u64;
        for index in 0..VARINT_BYTES_MAX {
            let b = self.byte(what)?;
            let group = u64::from(b & 0x7f);
            let shift = 7 * index;
            // The tenth byte may only carry the 64th bit.
            if index == VARINT_BYTES_MAX - 1 && group > 1 {
                return Err(PayloadError::Varint(what));
            }
            n |= group << shift;
            if b & 0x80 == 0 {
                // Shortest form: a last byte of zero is only allowed as the whole number.
                if b == 0 && index > 0 {
                    return Err(PayloadError::Varint(what));
                }
                return Ok(n);
            }
        }
        Err(PayloadError::Varint(what))
    }

    fn time(&mut self, what: &'static str) -> Result<Timestamp, PayloadError> {
        let z = self.uint(what)?;
        Ok(Timestamp((z >> 1).cast_signed() ^ -(z & 1).cast_signed()))
    }

    fn text(&mut self, what: &'static str, bytes_max: usize) -> Result<&'a str, PayloadError> {
        let len = self.uint(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= bytes_max)
            .ok_or_else(|| invalid(what, format!("{len} bytes, at most {bytes_max}")))?;
        std::str::from_utf8(self.take(len, what)?).map_err(|e| invalid(what, e))
    }

    fn symbol(&mut self, what: &'static str) -> Result<Symbol, PayloadError> {
        let len = usize::from(self.byte(what)?);
        let raw = self.take(len, what)?;
        let text = std::str::from_utf8(raw).map_err(|e| invalid(what, e))?;
        Symbol::new(text).map_err(|e| invalid(what, e))
    }

    fn order(&mut self) -> Result<Order, PayloadError> {
        Ok(Order {
            id: OrderId(self.uint("order id")?),
            client_id: ClientOrderId(self.uint("client order id")?),
            account: AccountId(self.uint("order account")?),
            symbol: self.symbol("order symbol")?,
            side: match self.byte("order side")? {
                SIDE_BUY => Side::Buy,
                SIDE_SELL => Side::Sell,
                other => return Err(invalid("order side", format!("code {other}"))),
            },
            qty: Qty::from_raw(self.uint("order qty")?),
            kind: match self.byte("order kind")? {
                KIND_MARKET => OrderKind::Market,
                other => return Err(invalid("order kind", format!("code {other}"))),
            },
            placed_at: self.time("order placed_at")?,
            worker: {
                let raw = self.take(16, "order worker")?;
                let mut b = [0u8; 16];
                b.copy_from_slice(raw);
                WorkerId(u128::from_be_bytes(b))
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn uint_bytes(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Writer(&mut out).uint(n);
        out
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for shift in 0..64 {
            for n in [1u64 << shift, (1u64 << shift) - 1, u64::MAX >> shift] {
                let bytes = uint_bytes(n);
                let mut r = Reader { bytes: &bytes, at: 0 };
                assert_eq!(r.uint("n").unwrap(), n);
                assert_eq!(r.remaining(), 0);
            }
        }
        assert_eq!(uint_bytes(0), [0]);
        assert_eq!(uint_bytes(300), [0xac, 0x02]);
        assert_eq!(uint_bytes(u64::MAX).len(), 10);
    }

    #[test]
    fn bad_varints_are_refused() {
        for bad in [
            &[0x80, 0x00][..],                                                 // not shortest
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..], // over 64 bits
            &[0x80; 11][..],                                                   // too long
            &[0x80][..],                                                       // truncated
        ] {
            let mut r = Reader { bytes: bad, at: 0 };
            assert!(r.uint("n").is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn zigzag_times_round_trip() {
        for t in [0, 1, -1, i64::MIN, i64::MAX, 1_700_000_000_000_000, -86_400_000_000] {
            let mut out = Vec::new();
            Writer(&mut out).time(Timestamp(t));
            let mut r = Reader { bytes: &out, at: 0 };
            assert_eq!(r.time("t").unwrap(), Timestamp(t));
        }
    }

    #[test]
    fn a_large_tick_count_is_refused_before_allocating() {
        // IntervalSettled claiming u64::MAX ticks in a few bytes.
        let mut out = vec![tag::INTERVAL_SETTLED, 1, 0, 0];
        Writer(&mut out).uint(u64::MAX);
        assert!(matches!(decode(&out), Err(PayloadError::Invalid { field: "ticks", .. })));
    }
}
