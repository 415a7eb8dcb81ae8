//! The compact event encoding (record `event_format` 2): every event the engine makes comes back
//! equal, smaller than its rkyv archive; any byte string decodes to an event or an error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use engine::{Event, Side, State, Symbol, Timestamp};
use journal::payload::{PayloadError, decode, encode};
use proptest::prelude::*;

#[path = "../testkit/history.rs"]
#[allow(dead_code)]
mod history;

use history::{History, Shape};

#[path = "../testkit/samples.rs"]
mod samples;

use samples::{extreme_rejections, typical_fill};

fn round_trip(event: &Event) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode(event, &mut bytes);
    assert_eq!(&decode(&bytes).unwrap(), event);
    bytes
}

#[test]
fn a_typical_fill_takes_half_its_rkyv_size() {
    let fill = typical_fill();
    let bytes = round_trip(&fill);
    assert_eq!(bytes.len(), 77, "{bytes:02x?}");
    let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&fill).unwrap();
    assert!(
        bytes.len() * 2 <= archived.len(),
        "{} bytes against rkyv's {}",
        bytes.len(),
        archived.len()
    );
}

#[test]
fn extreme_values_round_trip() {
    for raw in [0, 1, 127, 128, u64::MAX] {
        for side in [Side::Buy, Side::Sell] {
            for event in extreme_rejections(raw, side) {
                round_trip(&event);
            }
        }
    }
}

#[test]
fn bad_tags_codes_and_trailing_bytes_are_refused() {
    assert_eq!(decode(&[]), Err(PayloadError::Truncated("the event tag")));
    assert_eq!(decode(&[0]), Err(PayloadError::Tag(0)));
    assert_eq!(decode(&[9]), Err(PayloadError::Tag(9)));
    let mut bytes = Vec::new();
    encode(
        &Event::AssetListed(engine::AssetListed {
            symbol: Symbol::new("AAPL").unwrap(),
            at: Timestamp(5),
        }),
        &mut bytes,
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(decode(&longer), Err(PayloadError::Trailing(1)));
    // A symbol that Symbol::new refuses (lower case is not allowed, nor are empty ones).
    let mut bad = bytes.clone();
    bad[2] = b'a';
    assert!(matches!(decode(&bad), Err(PayloadError::Invalid { .. })), "{:?}", decode(&bad));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every event of random valid histories round-trips, is smaller than its rkyv archive,
    /// and every shorter prefix of its bytes is refused.
    #[test]
    fn engine_histories_round_trip(seed in any::<u64>()) {
        let mut history = History::new(State::new(), seed, Shape::default());
        for _ in 0..30 {
            for event in history.next_batch() {
                let bytes = round_trip(&event);
                let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&event).unwrap();
                prop_assert!(bytes.len() < archived.len(), "{} bytes: {event:?}", bytes.len());
                for cut in 0..bytes.len() {
                    prop_assert!(decode(&bytes[..cut]).is_err());
                }
            }
        }
    }

    /// Valid encodings with bytes changed, inserted or removed (what a damaged disk gives) decode
    /// to an event or an error, never a panic; an event re-encodes to the same bytes.
    #[test]
    fn damaged_encodings_decode_without_panic(
        seed in any::<u64>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut history = History::new(State::new(), seed, Shape::default());
        for _ in 0..6 {
            for event in history.next_batch() {
                let mut bytes = Vec::new();
                encode(&event, &mut bytes);
                for &(at, value, op) in &edits {
                    let at = at % (bytes.len() + 1);
                    match op {
                        0 if at < bytes.len() => bytes[at] = value,
                        1 => bytes.insert(at, value),
                        _ if at < bytes.len() => { bytes.remove(at); }
                        _ => bytes.push(value),
                    }
                }
                if let Ok(decoded) = decode(&bytes) {
                    let mut again = Vec::new();
                    encode(&decoded, &mut again);
                    prop_assert_eq!(again, bytes);
                }
            }
        }
    }

    /// Any bytes give an event or an error, never a panic; an event re-encodes to the same
    /// bytes (one encoding per event).
    #[test]
    fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(event) = decode(&bytes) {
            let mut again = Vec::new();
            encode(&event, &mut again);
            prop_assert_eq!(again, bytes);
        }
    }
}

/// A format-1 (rkyv) payload whose symbol keeps a byte after its end passes bytecheck, but its
/// name is rebuilt through `Symbol::new` on the way in: a `Payload` corruption, not an event.
#[test]
fn an_rkyv_payload_with_a_non_canonical_symbol_is_corrupt() {
    use journal::Corruption;
    use journal::record::{RKYV_EVENT_FORMAT, decode_payload};
    let event = Event::AssetListed(engine::AssetListed {
        symbol: Symbol::new("MSFT").unwrap(),
        at: Timestamp(5),
    });
    let archived = rkyv::to_bytes::<rkyv::rancor::Error>(&event).unwrap().to_vec();
    let mut aligned = rkyv::util::AlignedVec::new();
    assert_eq!(decode_payload(RKYV_EVENT_FORMAT, &archived, &mut aligned).unwrap(), event);
    let at = archived.windows(4).position(|w| w == b"MSFT").unwrap();
    let mut damaged = archived.clone();
    damaged[at + 6] = b'X';
    match decode_payload(RKYV_EVENT_FORMAT, &damaged, &mut aligned) {
        Err(Corruption::Payload(why)) => assert!(why.contains("canonical"), "{why}"),
        other => panic!("expected a payload corruption, got {other:?}"),
    }
}
