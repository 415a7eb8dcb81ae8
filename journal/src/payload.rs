//! The compact encodings of an event in a record's payload: `event_format` 2 (written by
//! earlier builds, still read) and `event_format` 3 (written), which is format 2 written against
//! its batch's [`Context`].
//!
//! rkyv gives every variant of `engine::Event` the size of the largest (160 bytes), mostly
//! zeros; these encodings write each field once, with no padding: a fill takes about 80 bytes
//! in format 2 and about 40 in format 3. Fewer bytes per event is what a durable append costs
//! most (see `docs/PERFORMANCE.md`), and it makes journals smaller. The layout is in
//! `docs/JOURNAL.md`:
//!
//! - `u`: an unsigned LEB128 varint (7 bits a byte, least significant group first, high bit set
//!   on every byte but the last), at most 10 bytes, in its shortest form;
//! - `i`: an `i64` as zigzag (`(n << 1) ^ (n >> 63)`) then `u`;
//! - `str`: `u` length, then that many UTF-8 bytes; `sym`: one length byte, then the ASCII;
//! - `id128`: 16 bytes, big-endian; `b`: one byte.
//!
//! Format 3 differs in three field types only: a time is `i` of its difference from the
//! batch's `recorded_at` (wrapping, so every `i64` has one); an amount of money or of units
//! (`Price`, `Qty`, `Cash`, raw counts of 10^-8 units) is a scaled varint `d`, `u` of
//! `(m << 2) | c` where the raw count is `m * 10^8` (c = 2) if it is a whole number of units,
//! else `m * 10^4` (c = 1) if it is a whole number of 10^-4 units, else `m` (c = 0); a worker is
//! `u`, its index in the batch's worker table.
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
    IntervalSettled, Order, OrderId, OrderKind, PasswordHash, PasswordRehashed, Price, Qty,
    RejectReason, Rejection, Side, Symbol, Tick, Timestamp, Username, WorkerId,
};

/// The `event_format` of a record whose payload is the compact encoding without context
/// (written by earlier builds in record layout 1, still read).
pub const COMPACT_EVENT_FORMAT: u16 = 2;
/// The `event_format` of the compact encoding written against a batch's [`Context`]: what
/// record layout 2 batches hold.
pub const BATCH_EVENT_FORMAT: u16 = 3;

/// What a format-3 payload is read against: its batch's time and its batch's workers.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The batch's `recorded_at`: times are written as their difference from it.
    pub base: Timestamp,
    /// The batch's workers in the order of their first use: a worker is written as its index.
    pub workers: &'a [WorkerId],
}

/// The workers of a batch being written, in the order of their first use: a worker is written
/// as its index here, and the table is stored with the batch. Finding a worker is a scan of the
/// table (the registered workers: a handful), skipped when an order has the previous order's
/// worker.
#[derive(Debug, Clone, Default)]
pub struct WorkerTable {
    ids: Vec<WorkerId>,
    /// The last worker looked up and its index.
    last: Option<(WorkerId, u64)>,
}

impl WorkerTable {
    /// A table that starts with `ids` (distinct), as a batch's stored table reads: encoding a
    /// decoded event against it gives back its bytes.
    pub fn from_ids(ids: Vec<WorkerId>) -> WorkerTable {
        WorkerTable { ids, last: None }
    }

    /// Empties the table, for the next batch.
    pub fn clear(&mut self) {
        self.ids.clear();
        self.last = None;
    }

    /// The workers, in the order of their first use.
    pub fn ids(&self) -> &[WorkerId] {
        &self.ids
    }

    /// The index of `worker`, added at the end if it is new.
    fn index(&mut self, worker: WorkerId) -> u64 {
        if let Some((last, index)) = self.last
            && last == worker
        {
            return index;
        }
        let found = if self.ids.len() <= SCAN_ALL_WORKERS_MAX {
            // Comparing with every worker, without an early exit, costs no mispredicted branch
            // when orders of several workers alternate. Backwards, so that the first match is
            // the one kept (the workers are distinct, but `from_ids` takes any list).
            let mut found = None;
            for (at, &id) in self.ids.iter().enumerate().rev() {
                found = if id == worker { Some(at) } else { found };
            }
            found
        } else {
            self.ids.iter().position(|&id| id == worker)
        };
        let at = match found {
            Some(at) => at,
            None => {
                self.ids.push(worker);
                self.ids.len() - 1
            }
        };
        let index = at as u64;
        self.last = Some((worker, index));
        index
    }
}

/// Up to this many workers in a batch, finding one compares it with all of them.
const SCAN_ALL_WORKERS_MAX: usize = 16;

/// What a payload is written against.
enum WriteContext<'c> {
    /// Format 2: nothing.
    None,
    /// Format 3: the batch's time and its worker table.
    Batch {
        /// The batch's `recorded_at`.
        base: Timestamp,
        /// Its workers so far.
        workers: &'c mut WorkerTable,
    },
}

/// A scaled varint's scales: its low two bits say which power of ten its count was divided by.
const SCALES: [u64; 3] = [1, 10_000, 100_000_000];
/// Bits of a scaled varint that hold the scale.
const SCALE_BITS: u32 = 2;

/// Tag byte of each event variant.
mod tag {
    pub const ASSET_LISTED: u8 = 1;
    pub const ACCOUNT_OPENED: u8 = 2;
    pub const INTERVAL_SETTLED: u8 = 3;
    pub const ORDER_FILLED: u8 = 4;
    pub const ORDER_REJECTED: u8 = 5;
    pub const PASSWORD_REHASHED: u8 = 6;
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

/// Appends the format-2 encoding of `event` to `out` (what earlier builds wrote; kept so that
/// tests and the fuzz target can make and check format-2 payloads).
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    Writer { out, ctx: WriteContext::None }.event(event);
}

/// Appends the format-3 encoding of `event` to `out`: its times relative to `base` (its batch's
/// `recorded_at`), its worker as an index in `workers` (added there if new).
pub fn encode_in(event: &Event, out: &mut Vec<u8>, base: Timestamp, workers: &mut WorkerTable) {
    Writer { out, ctx: WriteContext::Batch { base, workers } }.event(event);
}

/// Decodes one format-2 event that fills `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<Event, PayloadError> {
    Reader { bytes, at: 0, ctx: None }.event()
}

/// Decodes one format-3 event, written against `ctx`, that fills `bytes` exactly.
pub fn decode_in(bytes: &[u8], ctx: &Context<'_>) -> Result<Event, PayloadError> {
    Reader { bytes, at: 0, ctx: Some(*ctx) }.event()
}

impl<S: Sink> Writer<'_, '_, S> {
    fn event(&mut self, event: &Event) {
        let w = self;
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
                w.money(e.initial_cash.raw());
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
                    w.money(tick.open.raw());
                    w.money(tick.high.raw());
                    w.money(tick.low.raw());
                    w.money(tick.close.raw());
                    w.money(tick.volume.raw());
                    w.time(tick.time);
                }
            }
            Event::OrderFilled(f) => {
                w.byte(tag::ORDER_FILLED);
                w.order(&f.order);
                w.uint(f.interval.0);
                w.money(f.price.raw());
                w.time(f.tick_time);
                w.money(f.amount.raw());
                w.money(f.cash_after.raw());
                w.money(f.holding_after.raw());
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
                        w.money(price.raw());
                    }
                }
                w.money(r.cash_seen.raw());
                w.money(r.holding_seen.raw());
            }
            Event::PasswordRehashed(e) => {
                w.byte(tag::PASSWORD_REHASHED);
                w.uint(e.account.0);
                w.text(e.password_hash.as_str());
                w.time(e.at);
            }
        }
    }
}

impl Reader<'_, '_> {
    fn event(&mut self) -> Result<Event, PayloadError> {
        let r = self;
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
                initial_cash: Cash::from_raw(r.money("initial_cash")?),
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
                        open: Price::from_raw(r.money("tick open")?),
                        high: Price::from_raw(r.money("tick high")?),
                        low: Price::from_raw(r.money("tick low")?),
                        close: Price::from_raw(r.money("tick close")?),
                        volume: Qty::from_raw(r.money("tick volume")?),
                        time: r.time("tick time")?,
                    });
                }
                Event::IntervalSettled(IntervalSettled { interval, at, ticks, orders })
            }
            tag::ORDER_FILLED => Event::OrderFilled(Fill {
                order: r.order()?,
                interval: IntervalId(r.uint("interval")?),
                price: Price::from_raw(r.money("price")?),
                tick_time: r.time("tick_time")?,
                amount: Cash::from_raw(r.money("amount")?),
                cash_after: Cash::from_raw(r.money("cash_after")?),
                holding_after: Qty::from_raw(r.money("holding_after")?),
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
                    PRICE_PRESENT => Some(Price::from_raw(r.money("price_seen")?)),
                    other => return Err(invalid("price_seen", format!("presence byte {other}"))),
                },
                cash_seen: Cash::from_raw(r.money("cash_seen")?),
                holding_seen: Qty::from_raw(r.money("holding_seen")?),
            }),
            tag::PASSWORD_REHASHED => Event::PasswordRehashed(PasswordRehashed {
                account: AccountId(r.uint("account")?),
                password_hash: PasswordHash::new(r.text("password_hash", PASSWORD_HASH_BYTES_MAX)?)
                    .map_err(|e| invalid("password_hash", e))?,
                at: r.time("at")?,
            }),
            other => return Err(PayloadError::Tag(other)),
        };
        match r.remaining() {
            0 => Ok(event),
            left => Err(PayloadError::Trailing(left)),
        }
    }
}

fn invalid(field: &'static str, detail: impl ToString) -> PayloadError {
    PayloadError::Invalid { field, detail: detail.to_string() }
}

/// The scaled split of a raw count of 10^-8 units: `(m, c)` with `raw = m * SCALES[c]` and `c`
/// as large as it can be: whole units (c = 2), else whole 10^-4 units (c = 1), else the count
/// (c = 0). Prices, quantities and cash are mostly one of the first two.
#[inline(always)]
fn scaled_split(raw: u64) -> (u64, usize) {
    // Both quotients, then a selection (no branch: which scale a field takes varies from
    // value to value, and a mispredicted branch costs more than the second division by a
    // constant, which is a multiplication).
    let (units, quarters) = (raw / SCALES[2], raw / SCALES[1]);
    let whole = units * SCALES[2] == raw;
    let in_quarters = quarters * SCALES[1] == raw;
    let m = if whole {
        units
    } else if in_quarters {
        quarters
    } else {
        raw
    };
    // A whole number of units is also a whole number of 10^-4 units: c = 2, 1 or 0.
    (m, usize::from(whole) + usize::from(in_quarters))
}

/// Where a [`Writer`] puts its bytes: a growing `Vec`, or a [`RecordWindow`].
trait Sink {
    /// Appends one byte.
    fn put(&mut self, b: u8);
    /// Appends `bytes`.
    fn put_all(&mut self, bytes: &[u8]);

    /// Appends the first `len` bytes of `padded`.
    fn put_padded(&mut self, padded: &[u8; SYMBOL_CHARS_MAX], len: usize) {
        self.put_all(&padded[..len.min(SYMBOL_CHARS_MAX)]);
    }

    /// Appends `n` as `u`.
    fn put_uint(&mut self, n: u64)
    where
        Self: Sized,
    {
        put_uint_bytes(self, n);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, b: u8) {
        self.push(b);
    }

    fn put_all(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// How much a [`RecordWindow`] may hold: a fill takes at most 140 bytes, a rejection 124.
pub(crate) const RECORD_WINDOW_BYTES: usize = 256;
/// Bytes a [`RecordWindow`] has beyond what it may hold, so that a varint or a symbol is always
/// written with one fixed-size store.
pub(crate) const RECORD_WINDOW_SLACK: usize = 16;
const _: () = assert!(RECORD_WINDOW_SLACK >= SYMBOL_CHARS_MAX && RECORD_WINDOW_SLACK >= 8);

/// Writes one payload straight into the batch being built: a window of the batch's vector
/// (already sized, so nothing grows), written through a cursor. Writing a byte is a bounds
/// check and a store, a varint is spread into a register without a branch on its length and
/// stored at once, a symbol is one 16-byte store. The batch encoder uses it for fills and
/// rejections (nearly every record), which always fit; other events go to a `Vec`.
pub(crate) struct RecordWindow<'w> {
    /// `RECORD_WINDOW_BYTES + RECORD_WINDOW_SLACK` bytes.
    bytes: &'w mut [u8],
    /// Where the next byte goes.
    len: usize,
    /// Whether something did not fit.
    overflowed: bool,
}

impl Sink for RecordWindow<'_> {
    #[inline(always)]
    fn put(&mut self, b: u8) {
        match self.bytes.get_mut(self.len) {
            Some(slot) if self.len < RECORD_WINDOW_BYTES => {
                *slot = b;
                self.len += 1;
            }
            _ => self.overflowed = true,
        }
    }

    #[inline(always)]
    fn put_all(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.bytes.get_mut(self.len..end) {
            Some(slots) if end <= RECORD_WINDOW_BYTES => {
                slots.copy_from_slice(bytes);
                self.len = end;
            }
            _ => self.overflowed = true,
        }
    }

    #[inline(always)]
    fn put_padded(&mut self, padded: &[u8; SYMBOL_CHARS_MAX], len: usize) {
        let end = self.len + len;
        match self.bytes.get_mut(self.len..self.len + SYMBOL_CHARS_MAX) {
            Some(slots) if end <= RECORD_WINDOW_BYTES && len <= SYMBOL_CHARS_MAX => {
                slots.copy_from_slice(padded);
                self.len = end;
            }
            _ => self.overflowed = true,
        }
    }

    /// Values below 2^56 (nearly all) go without a branch on their length: a loop's exit
    /// branch, mispredicted at every field whose length differs from the last one's, was most
    /// of what encoding cost.
    #[inline(always)]
    fn put_uint(&mut self, n: u64) {
        if n >= 1 << 56 {
            // Nine or ten bytes (counts of 10^-8 units, far times): rare.
            return put_uint_bytes(self, n);
        }
        let end = self.len + varint_len(n);
        match self.bytes.get_mut(self.len..self.len + 8) {
            Some(slots) if end <= RECORD_WINDOW_BYTES => {
                slots.copy_from_slice(&spread_varint(n).to_le_bytes());
                self.len = end;
            }
            _ => self.overflowed = true,
        }
    }
}

impl<'w> RecordWindow<'w> {
    /// Writes the format-3 encoding of `event` (the bytes [`encode_in`] writes) at the start of
    /// `window`, which must be at least `RECORD_WINDOW_BYTES + RECORD_WINDOW_SLACK` long.
    /// Returns its length, or `None` if it did not fit: the caller then encodes it with
    /// [`encode_in`] (a worker it added to `workers` is found there again).
    pub(crate) fn encode_in(
        window: &'w mut [u8],
        event: &Event,
        base: Timestamp,
        workers: &mut WorkerTable,
    ) -> Option<usize> {
        if window.len() < RECORD_WINDOW_BYTES + RECORD_WINDOW_SLACK {
            return None;
        }
        let mut sink = RecordWindow { bytes: window, len: 0, overflowed: false };
        Writer { out: &mut sink, ctx: WriteContext::Batch { base, workers } }.event(event);
        (!sink.overflowed).then_some(sink.len)
    }
}

/// The byte loop of [`Sink::put_uint`], for a sink that overrides it.
fn put_uint_bytes(sink: &mut impl Sink, mut n: u64) {
    while n >= 0x80 {
        // The low seven bits, with the continuation bit.
        sink.put((n.to_le_bytes()[0] & 0x7f) | 0x80);
        n >>= 7;
    }
    // n < 0x80 here: its low byte is all of it.
    sink.put(n.to_le_bytes()[0]);
}

/// The continuation bits of a `u` of each length up to 8: on every byte but the last.
const VARINT_CONTINUATION: [u64; 9] = {
    let mut table = [0u64; 9];
    let mut len = 2;
    while len < 9 {
        table[len] = table[len - 1] | (0x80 << (8 * (len - 2)));
        len += 1;
    }
    table
};

/// Bytes of `u` for `n < 2^56`, by its bit length: 1 for 0 to 7 bits, 2 for 8 to 14, ...
/// (a look-up: it measured faster than the division).
const VARINT_LEN_BY_BITS: [usize; 57] = {
    let mut table = [1; 57];
    let mut bits = 1;
    while bits < 57 {
        table[bits] = bits.div_ceil(7);
        bits += 1;
    }
    table
};

/// Length of `u` for `n < 2^56`.
#[inline(always)]
fn varint_len(n: u64) -> usize {
    let bits = (u64::BITS - n.leading_zeros()) as usize;
    VARINT_LEN_BY_BITS[bits.min(56)]
}

/// `u` of `n < 2^56` as the little-endian bytes of a `u64`: the seven-bit groups moved to one
/// byte each (three steps of masks and shifts), the continuation bits set. Bytes past the
/// varint's length are zero.
#[inline(always)]
fn spread_varint(n: u64) -> u64 {
    debug_assert!(n < 1 << 56);
    // 28-bit halves to 32-bit lanes, 14-bit quarters to 16-bit lanes, 7-bit groups to bytes.
    let x = (n & 0x0FFF_FFFF) | ((n & 0x00FF_FFFF_F000_0000) << 4);
    let x = (x & 0x0000_3FFF_0000_3FFF) | ((x & 0x0FFF_C000_0FFF_C000) << 2);
    let x = (x & 0x007F_007F_007F_007F) | ((x & 0x3F80_3F80_3F80_3F80) << 1);
    x | VARINT_CONTINUATION[varint_len(n)]
}

struct Writer<'o, 'c, S: Sink> {
    out: &'o mut S,
    ctx: WriteContext<'c>,
}

// The field writers, and the `RecordWindow` sink's, are inlined into `event`, so that the
// window's length stays in a register from one field to the next instead of going through
// memory at every call: 7% off encoding an interval (docs/PERFORMANCE.md, twenty-first session).
impl<S: Sink> Writer<'_, '_, S> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.out.put(b);
    }

    #[inline(always)]
    fn uint(&mut self, n: u64) {
        self.out.put_uint(n);
    }

    /// A varint of more than 64 bits (a scaled varint's `(m << 2) | c` needs up to 66).
    fn wide(&mut self, n: u128) {
        match u64::try_from(n) {
            Ok(n) => self.uint(n),
            Err(_) => {
                // Over 64 bits: the low 63 as nine full groups, then the rest (at most 7 bits).
                let low = u64::try_from(n & ((1 << 63) - 1)).unwrap_or(0);
                for group in 0..9 {
                    self.out.put((low >> (7 * group)).to_le_bytes()[0] | 0x80);
                }
                self.out.put(u8::try_from(n >> 63).unwrap_or(u8::MAX));
            }
        }
    }

    #[inline(always)]
    fn time(&mut self, t: Timestamp) {
        let n = match &self.ctx {
            WriteContext::None => t.0,
            WriteContext::Batch { base, .. } => t.0.wrapping_sub(base.0),
        };
        self.uint(((n << 1) ^ (n >> 63)).cast_unsigned());
    }

    /// A raw count of 10^-8 units: `u` in format 2, `d` in format 3.
    #[inline(always)]
    fn money(&mut self, raw: u64) {
        if matches!(self.ctx, WriteContext::None) {
            return self.uint(raw);
        }
        let (m, c) = scaled_split(raw);
        // `(m << 2) | c` fits 64 bits unless `m` is a count of 10^-8 units over 2^62.
        if m < 1 << (u64::BITS - SCALE_BITS) {
            self.uint((m << SCALE_BITS) | c as u64);
        } else {
            self.wide((u128::from(m) << SCALE_BITS) | c as u128);
        }
    }

    fn text(&mut self, s: &str) {
        self.uint(s.len() as u64);
        self.out.put_all(s.as_bytes());
    }

    #[inline(always)]
    fn symbol(&mut self, s: &Symbol) {
        let len = s.as_bytes().len();
        debug_assert!(len <= SYMBOL_CHARS_MAX, "Symbol::new bounds its length");
        self.byte(u8::try_from(len).unwrap_or(u8::MAX));
        self.out.put_padded(s.padded(), len);
    }

    #[inline(always)]
    fn worker(&mut self, worker: WorkerId) {
        match &mut self.ctx {
            WriteContext::None => self.out.put_all(&worker.0.to_be_bytes()),
            WriteContext::Batch { workers, .. } => {
                let index = workers.index(worker);
                self.uint(index);
            }
        }
    }

    #[inline(always)]
    fn order(&mut self, o: &Order) {
        self.uint(o.id.0);
        self.uint(o.client_id.0);
        self.uint(o.account.0);
        self.symbol(&o.symbol);
        self.byte(match o.side {
            Side::Buy => SIDE_BUY,
            Side::Sell => SIDE_SELL,
        });
        self.money(o.qty.raw());
        self.byte(match o.kind {
            OrderKind::Market => KIND_MARKET,
        });
        self.time(o.placed_at);
        self.worker(o.worker);
    }
}

struct Reader<'a, 'c> {
    bytes: &'a [u8],
    at: usize,
    /// The batch context of a format-3 payload; `None` for format 2.
    ctx: Option<Context<'c>>,
}

impl<'a> Reader<'a, '_> {
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
        // 64 bits: the tenth byte may only carry the 64th bit.
        let n = self.wide(what, 1)?;
        u64::try_from(n).map_err(|_| PayloadError::Varint(what))
    }

    /// A varint of ten bytes at most, whose tenth byte holds at most `last_max`. The first nine
    /// bytes (63 bits) are gathered in a `u64`: nearly every varint ends there.
    fn wide(&mut self, what: &'static str, last_max: u8) -> Result<u128, PayloadError> {
        let mut n = 0u64;
        for index in 0..VARINT_BYTES_MAX - 1 {
            let b = self.byte(what)?;
            n |= u64::from(b & 0x7f) << (7 * index);
            if b & 0x80 == 0 {
                // Shortest form: a last byte of zero is only allowed as the whole number.
                if b == 0 && index > 0 {
                    return Err(PayloadError::Varint(what));
                }
                return Ok(u128::from(n));
            }
        }
        // The tenth byte: the last one, not zero, and within what the value may hold.
        let b = self.byte(what)?;
        if b == 0 || b > last_max {
            return Err(PayloadError::Varint(what));
        }
        Ok(u128::from(n) | (u128::from(b) << 63))
    }

    fn time(&mut self, what: &'static str) -> Result<Timestamp, PayloadError> {
        let z = self.uint(what)?;
        let n = (z >> 1).cast_signed() ^ -(z & 1).cast_signed();
        Ok(Timestamp(match self.ctx {
            None => n,
            Some(ctx) => n.wrapping_add(ctx.base.0),
        }))
    }

    /// A raw count of 10^-8 units: `u` in format 2, `d` in format 3 (only its one encoding:
    /// the largest scale that divides the count, the count within 64 bits).
    fn money(&mut self, what: &'static str) -> Result<u64, PayloadError> {
        if self.ctx.is_none() {
            return self.uint(what);
        }
        // (m << 2) | c with m < 2^64 takes 66 bits: the tenth byte holds at most 3 of them.
        let n = self.wide(what, 0x07)?;
        let c = usize::try_from(n & ((1 << SCALE_BITS) - 1)).unwrap_or(usize::MAX);
        let m = u64::try_from(n >> SCALE_BITS).map_err(|_| PayloadError::Varint(what))?;
        let Some(&scale) = SCALES.get(c) else {
            return Err(invalid(what, format!("scale code {c}")));
        };
        // A smaller scale than the largest that divides the count is not its one encoding.
        if c < 2 && m.is_multiple_of(SCALES[1]) {
            return Err(invalid(what, format!("{m} at scale code {c} is not in its one form")));
        }
        m.checked_mul(scale).ok_or_else(|| invalid(what, format!("{m} x {scale} is over 64 bits")))
    }

    fn worker(&mut self) -> Result<WorkerId, PayloadError> {
        let Some(ctx) = self.ctx else {
            let raw = self.take(16, "order worker")?;
            let mut b = [0u8; 16];
            b.copy_from_slice(raw);
            return Ok(WorkerId(u128::from_be_bytes(b)));
        };
        let index = self.uint("order worker")?;
        usize::try_from(index)
            .ok()
            .and_then(|i| ctx.workers.get(i))
            .copied()
            .ok_or_else(|| invalid("order worker", format!("index {index} is not in the batch")))
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
            qty: Qty::from_raw(self.money("order qty")?),
            kind: match self.byte("order kind")? {
                KIND_MARKET => OrderKind::Market,
                other => return Err(invalid("order kind", format!("code {other}"))),
            },
            placed_at: self.time("order placed_at")?,
            worker: self.worker()?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn uint_bytes(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Writer { out: &mut out, ctx: WriteContext::None }.uint(n);
        out
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for shift in 0..64 {
            for n in [1u64 << shift, (1u64 << shift) - 1, u64::MAX >> shift] {
                let bytes = uint_bytes(n);
                let mut r = Reader { bytes: &bytes, at: 0, ctx: None };
                assert_eq!(r.uint("n").unwrap(), n);
                assert_eq!(r.remaining(), 0);
            }
        }
        assert_eq!(uint_bytes(0), [0]);
        assert_eq!(uint_bytes(300), [0xac, 0x02]);
        assert_eq!(uint_bytes(u64::MAX).len(), 10);
    }

    /// `u` written through a record window: the spread for values below 2^56, the loop above.
    fn window_uint_bytes(n: u64, at: usize) -> Option<Vec<u8>> {
        let mut bytes = [0xa5u8; RECORD_WINDOW_BYTES + RECORD_WINDOW_SLACK];
        let mut window = RecordWindow { bytes: &mut bytes, len: at, overflowed: false };
        window.put_uint(n);
        let end = window.len;
        (!window.overflowed).then(|| bytes[at..end].to_vec())
    }

    #[test]
    fn window_varints_are_the_byte_loops_at_every_width() {
        for shift in 0..64 {
            for n in [1u64 << shift, (1u64 << shift) - 1, u64::MAX >> shift, 0x5555 << shift] {
                assert_eq!(window_uint_bytes(n, 0).unwrap(), uint_bytes(n), "{n:#x}");
                assert_eq!(window_uint_bytes(n, 100).unwrap(), uint_bytes(n), "{n:#x}");
            }
        }
        for n in 0..(1 << 16) {
            assert_eq!(window_uint_bytes(n, 3).unwrap(), uint_bytes(n), "{n:#x}");
        }
    }

    #[test]
    fn a_full_window_overflows_instead_of_writing_past_its_room() {
        // Two bytes of room left: a two-byte varint fits, a three-byte one does not (nor a
        // ten-byte one, written by the loop).
        assert_eq!(window_uint_bytes(300, RECORD_WINDOW_BYTES - 2).unwrap(), [0xac, 0x02]);
        assert_eq!(window_uint_bytes(1 << 14, RECORD_WINDOW_BYTES - 2), None);
        assert_eq!(window_uint_bytes(u64::MAX, RECORD_WINDOW_BYTES - 2), None);
        let mut bytes = [0u8; RECORD_WINDOW_BYTES + RECORD_WINDOW_SLACK];
        let mut window =
            RecordWindow { bytes: &mut bytes, len: RECORD_WINDOW_BYTES - 3, overflowed: false };
        let symbol = Symbol::new("MSFT").unwrap();
        window.put_padded(symbol.padded(), 4);
        assert!(window.overflowed);
        // A window shorter than its room and slack is refused before anything is written.
        let mut short = [0u8; RECORD_WINDOW_BYTES];
        let event = Event::AssetListed(AssetListed { symbol, at: Timestamp(0) });
        let encoded =
            RecordWindow::encode_in(&mut short, &event, Timestamp(0), &mut WorkerTable::default());
        assert_eq!(encoded, None);
    }

    #[test]
    fn a_worker_is_found_at_its_first_place_in_any_table() {
        let (w, other) = (WorkerId(7), WorkerId(8));
        // Short tables are compared in full, long ones searched: the first match either way.
        for others in [0, 3, SCAN_ALL_WORKERS_MAX, SCAN_ALL_WORKERS_MAX + 5] {
            let mut ids = vec![other; others];
            ids.extend([w, w, other]);
            let mut table = WorkerTable::from_ids(ids);
            assert_eq!(table.index(w), others as u64, "{others} before");
            assert_eq!(table.index(other), if others == 0 { 2 } else { 0 });
            assert_eq!(table.index(WorkerId(9)), others as u64 + 3, "a new worker goes last");
        }
    }

    #[test]
    fn scaled_split_takes_the_largest_scale() {
        for (raw, split) in [
            (0, (0, 2)),
            (SCALES[2], (1, 2)),
            (SCALES[1], (1, 1)),
            (1, (1, 0)),
            (41_234_000_000, (4_123_400, 1)),
            (u64::MAX, (u64::MAX, 0)),
            (u64::MAX / SCALES[2] * SCALES[2], (u64::MAX / SCALES[2], 2)),
        ] {
            assert_eq!(scaled_split(raw), split, "{raw}");
        }
    }

    #[test]
    fn bad_varints_are_refused() {
        for bad in [
            &[0x80, 0x00][..],                                                 // not shortest
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..], // over 64 bits
            &[0x80; 11][..],                                                   // too long
            &[0x80][..],                                                       // truncated
        ] {
            let mut r = Reader { bytes: bad, at: 0, ctx: None };
            assert!(r.uint("n").is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn zigzag_times_round_trip() {
        for t in [0, 1, -1, i64::MIN, i64::MAX, 1_700_000_000_000_000, -86_400_000_000] {
            let mut out = Vec::new();
            Writer { out: &mut out, ctx: WriteContext::None }.time(Timestamp(t));
            let mut r = Reader { bytes: &out, at: 0, ctx: None };
            assert_eq!(r.time("t").unwrap(), Timestamp(t));
        }
    }

    #[test]
    fn a_large_tick_count_is_refused_before_allocating() {
        // IntervalSettled claiming u64::MAX ticks in a few bytes.
        let mut out = vec![tag::INTERVAL_SETTLED, 1, 0, 0];
        Writer { out: &mut out, ctx: WriteContext::None }.uint(u64::MAX);
        assert!(matches!(decode(&out), Err(PayloadError::Invalid { field: "ticks", .. })));
    }
}
