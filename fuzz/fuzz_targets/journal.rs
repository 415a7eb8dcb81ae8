//! Fuzzes the journal's event decoders (`journal::record::decode_payload`): the compact format
//! every record is written in, and rkyv format 1, still read from older files (validated with
//! bytecheck). The first byte picks the format, the rest is the payload. Nothing may panic; a
//! compact payload that decodes re-encodes to the same bytes; and whatever decodes, in either
//! format, is an event our own encoder writes and reads back equal (so a decoder cannot build a
//! value the engine's types forbid, such as an over-long symbol).
#![no_main]

use engine::Event;
use engine::limits::TICKS_PER_INTERVAL_MAX;
use journal::payload::{self, COMPACT_EVENT_FORMAT};
use journal::record::{RKYV_EVENT_FORMAT, decode_payload};
use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
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
