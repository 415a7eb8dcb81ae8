//! Layout-2 batches and their format-3 payloads (`docs/JOURNAL.md`): every event the engine
//! makes comes back equal, in about half the bytes of layout 1; any change to a stored batch is
//! detected; any bytes give records or an error, never a panic; each event has one encoding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use engine::{AccountId, Cash, Event, Side, State, Symbol, Timestamp, WorkerId};
use journal::payload::{self, Context, WorkerTable, decode_in, encode_in};
use journal::record::{decode_batch, encode_batch};
use journal::{Corruption, Seq};
use proptest::prelude::*;

#[path = "../testkit/history.rs"]
#[allow(dead_code)]
mod history;

use history::{History, Shape};

#[path = "../testkit/samples.rs"]
mod samples;

use samples::{extreme_rejections, typical_fill};

const AT: Timestamp = Timestamp(1_763_800_000_200_000);

/// Alice's account, opened at `AT` with `initial_cash` (raw): its payload ends with the cash,
/// then the time.
fn opened(initial_cash: u64) -> Event {
    Event::AccountOpened(engine::AccountOpened {
        account: AccountId(1),
        username: engine::Username::new("alice").unwrap(),
        email: engine::Email::new("alice@example.com").unwrap(),
        password_hash: engine::PasswordHash::new("!").unwrap(),
        initial_cash: Cash::from_raw(initial_cash),
        at: AT,
    })
}

fn round_trip_in(event: &Event, base: Timestamp) -> Vec<u8> {
    let mut table = WorkerTable::default();
    let mut bytes = Vec::new();
    encode_in(event, &mut bytes, base, &mut table);
    let ctx = Context { base, workers: table.ids() };
    assert_eq!(&decode_in(&bytes, &ctx).unwrap(), event);
    bytes
}

#[test]
fn a_typical_fill_takes_under_half_its_layout_1_bytes() {
    let bytes = round_trip_in(&typical_fill(), AT);
    assert_eq!(bytes.len(), 38, "{bytes:02x?}");
    // In a batch: its length, its crc, its payload, against 109 bytes in layout 1.
    let batch = encode_batch(Seq(7), AT, 0, &[typical_fill(), typical_fill()]).unwrap();
    let one = (batch.len() - 36 - 16) / 2;
    assert_eq!(one, 1 + 4 + 38);
    assert!(one * 2 < 109, "{one} bytes");
}

#[test]
fn extreme_values_round_trip() {
    let raws = [0, 1, 127, 128, 10_000, 100_000_000, 123_450_000, u64::MAX, 18 * 10u64.pow(18)];
    for raw in raws {
        for base in [Timestamp(i64::MIN), Timestamp(0), AT, Timestamp(i64::MAX)] {
            for event in extreme_rejections(raw, Side::Sell) {
                round_trip_in(&event, base);
            }
        }
    }
}

#[test]
fn a_worker_outside_the_table_and_bad_scales_are_refused() {
    let mut table = WorkerTable::default();
    let mut bytes = Vec::new();
    encode_in(&typical_fill(), &mut bytes, AT, &mut table);
    assert_eq!(table.ids().len(), 1);
    let empty = Context { base: AT, workers: &[] };
    assert!(matches!(
        decode_in(&bytes, &empty),
        Err(payload::PayloadError::Invalid { field: "order worker", .. })
    ));
    // An `AccountOpened` ends with initial_cash then its time.
    let mut good = Vec::new();
    encode_in(&opened(0), &mut good, AT, &mut table);
    let ctx = Context { base: AT, workers: table.ids() };
    // initial_cash 0 is (0 << 2) | 2, the byte before the time's single 0 byte.
    assert_eq!(&good[good.len() - 2..], &[2, 0]);
    for (bad, why) in [(0u8, "0 at scale 0"), (1, "0 at scale 1"), (3, "scale code 3")] {
        let mut bytes = good.clone();
        let at = bytes.len() - 2;
        bytes[at] = bad;
        assert!(
            matches!(decode_in(&bytes, &ctx), Err(payload::PayloadError::Invalid { .. })),
            "{why}"
        );
    }
}

/// A layout-2 batch framed as docs/JOURNAL.md lays it out, the plain way: each payload from
/// `encode_in` into a `Vec` of its own, its length and chained crc in front of it, the worker
/// table at the end, the header and its crc. The batch encoder (which writes most payloads in
/// place, through other code, with one crc running over them) must give these bytes. The
/// payloads' own bytes are pinned by the fixed-byte tests and the round trips.
fn documented_batch(first: Seq, at: Timestamp, prev_crc: u32, events: &[Event]) -> Vec<u8> {
    let mut table = WorkerTable::default();
    let mut records = Vec::new();
    let mut crc = prev_crc;
    for event in events {
        let mut payload = Vec::new();
        encode_in(event, &mut payload, at, &mut table);
        let mut len = payload.len();
        while len >= 0x80 {
            records.push(u8::try_from(len & 0x7f).unwrap() | 0x80);
            len >>= 7;
        }
        records.push(u8::try_from(len).unwrap());
        let mut hasher = crc32fast::Hasher::new_with_initial(crc);
        hasher.update(&payload);
        crc = hasher.finalize();
        records.extend_from_slice(&crc.to_be_bytes());
        records.extend_from_slice(&payload);
    }
    let workers: Vec<u8> = table.ids().iter().flat_map(|w| w.0.to_be_bytes()).collect();
    let mut batch = vec![0, 2, 0, 3];
    batch.extend_from_slice(&first.0.to_be_bytes());
    batch.extend_from_slice(&at.0.to_be_bytes());
    batch.extend_from_slice(&prev_crc.to_be_bytes());
    batch.extend_from_slice(&u32::try_from(events.len()).unwrap().to_be_bytes());
    batch.extend_from_slice(&u32::try_from(workers.len()).unwrap().to_be_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&batch);
    hasher.update(&workers);
    batch.extend_from_slice(&hasher.finalize().to_be_bytes());
    batch.extend_from_slice(&records);
    batch.extend_from_slice(&workers);
    batch
}

/// Events whose payloads take the encoder's other path: 128 bytes or more (a two-byte length),
/// or too long for a record window (a header with many ticks).
fn long_events() -> Vec<Event> {
    let long_name = "a".repeat(engine::limits::USERNAME_CHARS_MAX);
    let mut opened = opened(u64::MAX);
    if let Event::AccountOpened(o) = &mut opened {
        o.username = engine::Username::new(&long_name).unwrap();
        o.email = engine::Email::new(&format!("{long_name}@example.com")).unwrap();
        o.password_hash = engine::PasswordHash::new(&"$".repeat(300)).unwrap();
    }
    let ticks = (0..40)
        .map(|i| engine::Tick {
            symbol: Symbol::new(&format!("S{i}")).unwrap(),
            open: engine::Price::from_raw(1),
            high: engine::Price::from_raw(u64::MAX),
            low: engine::Price::from_raw(12_345_678),
            close: engine::Price::from_raw(100 * engine::SCALE),
            volume: engine::Qty::from_raw(u64::MAX / 3),
            time: Timestamp(i64::MIN + i),
        })
        .collect();
    let settled = Event::IntervalSettled(engine::IntervalSettled {
        interval: engine::IntervalId(u64::MAX),
        at: Timestamp(i64::MAX),
        ticks,
        orders: 3,
    });
    vec![opened, settled]
}

/// A fill whose every number is `raw` (or far from any batch time), on a 16-character symbol,
/// by `worker`: up to 131 bytes, past the one-byte length.
fn extreme_fill(raw: u64, worker: u128) -> Event {
    let mut order = samples::order(raw, Side::Buy);
    order.id = engine::OrderId(raw);
    order.client_id = engine::ClientOrderId(raw);
    order.account = AccountId(raw);
    order.symbol = Symbol::new("ABCDEFGHIJKLMNOP").unwrap();
    order.placed_at = Timestamp(i64::MIN);
    order.worker = WorkerId(worker);
    Event::OrderFilled(engine::Fill {
        order,
        interval: engine::IntervalId(raw),
        price: engine::Price::from_raw(raw),
        tick_time: Timestamp(i64::MAX),
        amount: Cash::from_raw(raw),
        cash_after: Cash::from_raw(raw),
        holding_after: engine::Qty::from_raw(raw),
    })
}

#[test]
fn payloads_of_every_length_around_the_one_byte_limit_are_framed_as_documented() {
    // Account openings of 1 to 300 hash bytes: payloads from about 40 to 340 bytes, so 127,
    // 128, 255, 256 and 257 among them; and fills around 128 bytes.
    let mut events: Vec<Event> = (1..=300)
        .map(|len| {
            let mut event = opened(u64::MAX);
            if let Event::AccountOpened(o) = &mut event {
                o.password_hash = engine::PasswordHash::new(&"$".repeat(len)).unwrap();
            }
            event
        })
        .collect();
    let mut lengths = std::collections::BTreeSet::new();
    for raw in [1 << 56, (1 << 62) - 1, 1 << 62, (1 << 62) + 1, u64::MAX - 1, u64::MAX] {
        for worker in [7, 8, 7] {
            events.push(extreme_fill(raw, worker));
        }
    }
    for event in &events {
        lengths.insert(round_trip_in(event, AT).len());
    }
    for len in [127, 128, 255, 256, 257] {
        assert!(lengths.contains(&len), "no payload of {len} bytes: {lengths:?}");
    }
    assert!(lengths.iter().any(|len| (128..=140).contains(len)), "{lengths:?}");
    let bytes = encode_batch(Seq(1), AT, 0, &events).unwrap();
    assert_eq!(bytes, documented_batch(Seq(1), AT, 0, &events));
    let records = decode_batch(1, &bytes).unwrap();
    assert!(records.iter().map(|r| &r.event).eq(&events));
}

#[test]
fn many_workers_are_tabled_in_the_order_of_their_first_use() {
    // 20 workers, more than the encoder compares all at once, used out of order and again.
    let uses = [5u128, 0, 19, 5, 3, 12, 0, 7, 1, 2, 4, 6, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19];
    let events: Vec<Event> = uses
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let mut event = typical_fill();
            if let Event::OrderFilled(f) = &mut event {
                f.order.id = engine::OrderId(i as u64 + 1);
                f.order.worker = WorkerId(1000 + w);
            }
            event
        })
        .collect();
    let bytes = encode_batch(Seq(3), AT, 0, &events).unwrap();
    let mut first_use: Vec<u128> = Vec::new();
    for &w in &uses {
        if !first_use.contains(&(1000 + w)) {
            first_use.push(1000 + w);
        }
    }
    let table: Vec<u8> = first_use.iter().flat_map(|w| w.to_be_bytes()).collect();
    assert_eq!(first_use.len(), 20);
    assert!(bytes.ends_with(&table), "the worker table is not in the order of first use");
    let records = decode_batch(3, &bytes).unwrap();
    assert!(records.iter().map(|r| &r.event).eq(&events));
}

#[test]
fn an_event_over_the_size_limit_is_refused_with_its_index() {
    let ticks: Vec<engine::Tick> = (0..600_000i64)
        .map(|i| engine::Tick {
            symbol: Symbol::new("ABCDEFGHIJKLMNOP").unwrap(),
            open: engine::Price::from_raw(u64::MAX),
            high: engine::Price::from_raw(u64::MAX),
            low: engine::Price::from_raw(u64::MAX),
            close: engine::Price::from_raw(u64::MAX),
            volume: engine::Qty::from_raw(u64::MAX),
            time: Timestamp(i64::MIN + i),
        })
        .collect();
    let huge = Event::IntervalSettled(engine::IntervalSettled {
        interval: engine::IntervalId(1),
        at: AT,
        ticks,
        orders: 0,
    });
    let events = [typical_fill(), huge];
    match encode_batch(Seq(1), AT, 0, &events) {
        Err(journal::AppendError::EventTooLarge { index, bytes }) => {
            assert_eq!(index, 1);
            assert!(bytes > journal::limits::EVENT_BYTES_MAX, "{bytes}");
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
}

#[test]
fn the_encoder_writes_the_documented_layout_on_both_of_its_paths() {
    let mut events = long_events();
    for raw in [0, 1, 127, 128, 1 << 56, u64::MAX] {
        events.extend(extreme_rejections(raw, Side::Sell));
    }
    events.push(typical_fill());
    events.extend(long_events());
    for at in [AT, Timestamp(0), Timestamp(i64::MIN), Timestamp(i64::MAX)] {
        let bytes = encode_batch(Seq(9), at, 0xdead_beef, &events).unwrap();
        assert_eq!(bytes, documented_batch(Seq(9), at, 0xdead_beef, &events));
        let records = decode_batch(9, &bytes).unwrap();
        assert!(records.iter().map(|r| &r.event).eq(&events));
    }
}

/// Random valid histories, one batch per interval (as the master appends them).
fn history_batches(seed: u64, count: usize) -> Vec<Vec<Event>> {
    let mut history = History::new(State::new(), seed, Shape::default());
    (0..count).map(|_| history.next_batch()).filter(|b| !b.is_empty()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every batch of random valid histories, appended at any time, comes back equal, its
    /// records numbered from the batch's key and chained onto the previous batch.
    #[test]
    fn engine_histories_round_trip_in_batches(seed in any::<u64>(), at in any::<i64>()) {
        let mut prev = 0u32;
        let mut first = Seq(1);
        for events in history_batches(seed, 12) {
            let bytes = encode_batch(first, Timestamp(at), prev, &events).unwrap();
            let records = decode_batch(first.0, &bytes).unwrap();
            prop_assert_eq!(records.len(), events.len());
            for (i, (record, event)) in records.iter().zip(&events).enumerate() {
                prop_assert_eq!(record.seq, Seq(first.0 + i as u64));
                prop_assert_eq!(record.recorded_at, Timestamp(at));
                prop_assert_eq!(&record.event, event);
            }
            prop_assert_eq!(&bytes, &documented_batch(first, Timestamp(at), prev, &events));
            // Stored under another key, or chained onto another record, it is refused.
            prop_assert!(matches!(
                decode_batch(first.0 + 1, &bytes),
                Err((_, Corruption::SeqMismatch(_)))
            ));
            prev = records.last().unwrap().crc;
            first = Seq(first.0 + events.len() as u64);
        }
    }

    /// Any change to one byte of a stored batch, and any cut, is detected by the checksums
    /// (or the framing) before an event is decoded.
    #[test]
    fn every_changed_byte_and_every_cut_is_detected(
        seed in any::<u64>(),
        at in any::<usize>(),
        flip in 1u8..=255,
    ) {
        let events = history_batches(seed, 3).concat();
        let bytes = encode_batch(Seq(40), AT, 0xfeed, &events).unwrap();
        let at = at % bytes.len();
        let mut changed = bytes.clone();
        changed[at] ^= flip;
        prop_assert!(decode_batch(40, &changed).is_err(), "byte {} of {}", at, bytes.len());
        prop_assert!(decode_batch(40, &bytes[..at]).is_err(), "cut at {}", at);
    }

    /// Any bytes after a layout-2 start give records or an error, never a panic.
    #[test]
    fn any_bytes_decode_as_a_batch_without_panic(
        key in 0u64..4,
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut batch = vec![0, 2, 0, 3];
        batch.extend_from_slice(&bytes);
        let _ = decode_batch(key, &batch);
        let _ = decode_batch(key, &bytes);
    }

    /// Any bytes give an event or an error; an event re-encodes to the same bytes against the
    /// same table (one encoding per event).
    #[test]
    fn any_format_3_bytes_decode_to_one_encoding(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let workers = [WorkerId(3), WorkerId(1), WorkerId(u128::MAX)];
        let ctx = Context { base: AT, workers: &workers };
        if let Ok(event) = decode_in(&bytes, &ctx) {
            let mut table = WorkerTable::from_ids(workers.to_vec());
            let mut again = Vec::new();
            encode_in(&event, &mut again, AT, &mut table);
            prop_assert_eq!(again, bytes);
        }
    }
}

/// Format 3's damaged encodings (what a damaged disk gives: bytes changed, inserted or
/// removed in real events' encodings) decode to an event or an error, never a panic, and an
/// event re-encodes to the same bytes against the same table (one encoding per event). Random
/// bytes (above) almost never decode, so this is the case that checks the promise: the test
/// counts the damaged encodings that still decode and requires some.
#[test]
fn damaged_format_3_encodings_decode_to_one_encoding() {
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |bound: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        usize::try_from(rng % bound as u64).unwrap()
    };
    let (mut decoded, mut tried) = (0, 0);
    for seed in 0..100 {
        for event in history_batches(seed, 4).concat() {
            let mut table = WorkerTable::default();
            let mut bytes = Vec::new();
            encode_in(&event, &mut bytes, AT, &mut table);
            let workers = table.ids().to_vec();
            for _ in 0..4 {
                let mut damaged = bytes.clone();
                for _ in 0..1 + next(2) {
                    let at = next(damaged.len() + 1);
                    let value = u8::try_from(next(256)).unwrap();
                    match next(3) {
                        0 if at < damaged.len() => damaged[at] = value,
                        1 => damaged.insert(at, value),
                        _ if at < damaged.len() => {
                            damaged.remove(at);
                        }
                        _ => damaged.push(value),
                    }
                }
                tried += 1;
                let ctx = Context { base: AT, workers: &workers };
                if let Ok(event) = decode_in(&damaged, &ctx) {
                    decoded += 1;
                    let mut again_table = WorkerTable::from_ids(workers.clone());
                    let mut again = Vec::new();
                    encode_in(&event, &mut again, AT, &mut again_table);
                    assert_eq!(again, damaged, "{event:?}");
                }
            }
        }
    }
    assert!(decoded > 0, "none of {tried} damaged encodings decoded: the check checked nothing");
    eprintln!("{decoded} of {tried} damaged encodings decoded, each to its one encoding");
}

#[test]
fn a_batch_without_records_or_with_a_bad_table_is_refused() {
    let events = history_batches(5, 2).concat();
    let bytes = encode_batch(Seq(1), AT, 0, &events).unwrap();
    // Header only: no records, no table, with a valid header checksum.
    let mut header = bytes[..36].to_vec();
    header[24..32].copy_from_slice(&[0; 8]);
    let crc = crc32fast::hash(&header[..32]);
    header[32..36].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(decode_batch(1, &header), Err((Seq(1), Corruption::Framing(_)))));
    // A table longer than the batch.
    let mut long = bytes.clone();
    long[28..32].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode_batch(1, &long), Err((Seq(1), Corruption::Framing(_)))));
    // Another layout.
    let mut other = bytes.clone();
    other[1] = 9;
    assert_eq!(decode_batch(1, &other).unwrap_err().1, Corruption::RecordFormat(9));
}

/// Recomputes a layout-2 batch's header checksum (bytes 0..32, then the worker table at the
/// end), as a writer of such a batch would.
fn reseal(bytes: &mut [u8]) {
    let table_len = u32::from_be_bytes(bytes[28..32].try_into().unwrap()) as usize;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..32]);
    hasher.update(&bytes[bytes.len() - table_len..]);
    let crc = hasher.finalize();
    bytes[32..36].copy_from_slice(&crc.to_be_bytes());
}

fn listed(symbol: &str) -> Event {
    Event::AssetListed(engine::AssetListed { symbol: Symbol::new(symbol).unwrap(), at: AT })
}

#[test]
fn a_count_that_disagrees_with_the_records_is_refused() {
    // No orders, so no worker table: the count is what finds a cut at a record boundary.
    let bytes = encode_batch(Seq(5), AT, 9, &[listed("AAPL"), listed("IBM")]).unwrap();
    assert_eq!(decode_batch(5, &bytes).unwrap().len(), 2);
    for (count, expected) in [(1u32, "bytes after"), (3, "")] {
        let mut changed = bytes.clone();
        changed[24..28].copy_from_slice(&count.to_be_bytes());
        reseal(&mut changed);
        let (seq, what) = decode_batch(5, &changed).unwrap_err();
        match count {
            1 => {
                assert!(matches!(&what, Corruption::Framing(m) if m.contains(expected)), "{what:?}")
            }
            _ => assert_eq!((seq, what), (Seq(7), Corruption::Truncated(0))),
        }
    }
    // Records past the last sequence number, and a batch under key 0.
    let last = encode_batch(Seq(u64::MAX), AT, 9, &[listed("AAPL")]).unwrap();
    assert_eq!(decode_batch(u64::MAX, &last).unwrap().len(), 1);
    let mut past = last.clone();
    past[24..28].copy_from_slice(&2u32.to_be_bytes());
    reseal(&mut past);
    assert!(matches!(decode_batch(u64::MAX, &past), Err((_, Corruption::Framing(_)))));
    assert!(matches!(decode_batch(0, &bytes), Err((Seq(0), Corruption::Framing(_)))));
}

#[test]
fn a_worker_table_that_does_not_hold_together_is_refused() {
    let bytes = encode_batch(Seq(1), AT, 0, &[typical_fill()]).unwrap();
    let worker = bytes[bytes.len() - 16..].to_vec();
    // The same worker twice.
    let mut twice = bytes.clone();
    twice.extend_from_slice(&worker);
    twice[28..32].copy_from_slice(&32u32.to_be_bytes());
    reseal(&mut twice);
    assert!(
        matches!(decode_batch(1, &twice), Err((_, Corruption::Framing(m))) if m.contains("twice"))
    );
    // A table that is not whole workers.
    let mut ragged = bytes.clone();
    ragged.push(0);
    ragged[28..32].copy_from_slice(&17u32.to_be_bytes());
    reseal(&mut ragged);
    assert!(matches!(decode_batch(1, &ragged), Err((_, Corruption::Framing(_)))));
}

#[test]
fn a_scaled_varint_holds_at_most_66_bits() {
    // initial_cash u64::MAX is scale 0: (m << 2) | 0 takes ten bytes, the tenth holding 7.
    let good = round_trip_in(&opened(u64::MAX), AT);
    let tenth = good.len() - 2;
    assert_eq!(good[tenth], 7);
    let ctx = Context { base: AT, workers: &[] };
    for bad in [0u8, 8, 0x87] {
        let mut bytes = good.clone();
        bytes[tenth] = bad;
        assert!(
            matches!(decode_in(&bytes, &ctx), Err(payload::PayloadError::Varint(_))),
            "tenth byte {bad:#x}: {:?}",
            decode_in(&bytes, &ctx)
        );
    }
}
