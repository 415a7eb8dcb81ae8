//! Fuzzes the journal's readers of stored bytes. The first byte picks what the rest is:
//!
//! - 2 (mod 4): a whole stored batch (`journal::record::decode_batch`), in either layout, under
//!   the key its layout-2 header names (or 1): what the journal verifies and decodes from disk;
//! - other even values: a format-2 (compact) event payload (`journal::record::decode_payload`);
//! - odd values: a format-1 (rkyv) payload, still read from older files (bytecheck validates it).
//!
//! Nothing may panic. A compact payload that decodes re-encodes to the same bytes; whatever
//! decodes, in any format, is an event our own encoders write and read back equal (so a decoder
//! cannot build a value the engine's types forbid, such as an over-long symbol); a batch that
//! decodes, encoded again at the same place, decodes to the same records.
#![no_main]

use engine::Event;
use engine::limits::TICKS_PER_INTERVAL_MAX;
use journal::Seq;
use journal::payload::{self, COMPACT_EVENT_FORMAT};
use journal::record::{RKYV_EVENT_FORMAT, decode_batch, decode_payload, encode_batch};
use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    if selector % 4 == 2 {
        return batch(bytes);
    }
    let format = if selector & 1 == 0 { COMPACT_EVENT_FORMAT } else { RKYV_EVENT_FORMAT };
    let mut aligned = AlignedVec::new();
    let Ok(event) = decode_payload(format, bytes, &mut aligned) else { return };
    // The compact format bounds an interval's ticks; rkyv's does not (a format-1 record with
    // more is replayed as it is, its ticks for unlisted symbols ignored).
    if let Event::IntervalSettled(settled) = &event
        && settled.ticks.len() > TICKS_PER_INTERVAL_MAX
    {
        return;
    }
    let mut compact = Vec::new();
    payload::encode(&event, &mut compact);
    if format == COMPACT_EVENT_FORMAT {
        assert_eq!(compact, bytes, "a decoded compact payload re-encodes to its bytes");
    }
    let again = payload::decode(&compact).expect("an encoded event decodes");
    assert_eq!(again, event, "an event survives the compact format");
});

fn batch(bytes: &[u8]) {
    let key = match bytes.get(4..12) {
        Some(raw) if bytes.starts_with(&[0, 2]) => {
            u64::from_be_bytes(raw.try_into().expect("eight bytes"))
        }
        _ => 1,
    };
    let Ok(records) = decode_batch(key, bytes) else { return };
    let (Some(first), Some(last)) = (records.first(), records.last()) else { return };
    // Past the last sequence number, or an rkyv interval with more ticks than the compact
    // formats allow: not encodable again, and not what a journal holds.
    let too_many_ticks = records.iter().any(|r| {
        matches!(&r.event, Event::IntervalSettled(s) if s.ticks.len() > TICKS_PER_INTERVAL_MAX)
    });
    if last.seq.0 == u64::MAX || too_many_ticks {
        return;
    }
    let events: Vec<Event> = records.iter().map(|r| r.event.clone()).collect();
    let prev = if bytes.starts_with(&[0, 2]) {
        u32::from_be_bytes(bytes[20..24].try_into().expect("four bytes"))
    } else {
        0
    };
    let again = encode_batch(Seq(key), first.recorded_at, prev, &events)
        .expect("decoded events encode");
    let decoded = decode_batch(key, &again).expect("an encoded batch decodes");
    assert_eq!(decoded.len(), records.len());
    // A layout-1 batch may hold records of different times; layout 2 has one time per batch.
    let layout_2 = bytes.starts_with(&[0, 2]);
    for (a, b) in decoded.iter().zip(&records) {
        assert_eq!((a.seq, &a.event), (b.seq, &b.event));
        if layout_2 {
            assert_eq!(a.recorded_at, b.recorded_at);
        }
    }
}
