//! Names come back from rkyv archives (snapshots, format-1 journal records) only through their
//! constructors: an archive that passes bytecheck but holds a name its type forbids is refused
//! with the constructor's error, never turned into an invalid value.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use engine::{
    AccountId, AccountOpened, AssetListed, Cash, Email, Event, PasswordHash, Symbol, Timestamp,
    Username,
};

fn archive(event: &Event) -> Vec<u8> {
    rkyv::to_bytes::<rkyv::rancor::Error>(event).unwrap().to_vec()
}

fn restore(bytes: &[u8]) -> Result<Event, String> {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Event, rkyv::rancor::BoxedError>(&aligned).map_err(|e| e.to_string())
}

/// The archive with the only occurrence of `from` replaced by `to` (same length).
fn edited(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at: Vec<usize> =
        (0..=bytes.len() - from.len()).filter(|&i| &bytes[i..i + from.len()] == from).collect();
    assert_eq!(at.len(), 1, "{from:?} occurs once in the archive");
    let mut out = bytes.to_vec();
    out[at[0]..at[0] + to.len()].copy_from_slice(to);
    out
}

fn listed(symbol: &str) -> Event {
    Event::AssetListed(AssetListed { symbol: Symbol::new(symbol).unwrap(), at: Timestamp(7) })
}

fn opened() -> Event {
    Event::AccountOpened(AccountOpened {
        account: AccountId(1),
        username: Username::new("alice.smith").unwrap(),
        email: Email::new("alice@example.com").unwrap(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").unwrap(),
        initial_cash: Cash::from_raw(1),
        at: Timestamp(1),
    })
}

#[test]
fn valid_names_come_back_equal() {
    for event in [listed("BRK.B"), listed("ABCDEFGHIJKLMNOP"), opened()] {
        assert_eq!(restore(&archive(&event)).unwrap(), event);
    }
}

#[test]
fn a_symbol_with_bytes_after_its_end_is_refused() {
    // "AB" is stored in 16 bytes, zeroed after the symbol; the archive keeps them as they are.
    let good = archive(&listed("AB"));
    let mut zeros = b"AB".to_vec();
    zeros.resize(16, 0);
    let mut garbage = zeros.clone();
    garbage[9] = b'C';
    let error = restore(&edited(&good, &zeros, &garbage)).unwrap_err();
    assert!(error.contains("symbol is not in its canonical form"), "{error}");
}

#[test]
fn a_symbol_the_constructor_refuses_is_refused() {
    let good = archive(&listed("ABCD"));
    let error = restore(&edited(&good, b"ABCD", b"AbCD")).unwrap_err();
    assert!(error.contains("symbol has a character not allowed at position 1"), "{error}");
    let error = restore(&edited(&good, b"ABCD", &[b'A', 0xff, b'C', b'D'])).unwrap_err();
    assert!(error.contains("symbol is not in its canonical form"), "{error}");
}

#[test]
fn account_names_the_constructors_refuse_are_refused() {
    let good = archive(&opened());
    let error = restore(&edited(&good, b"alice.smith", b"alice%smith")).unwrap_err();
    assert!(error.contains("username has a character not allowed at position 5"), "{error}");
    let error = restore(&edited(&good, b"alice@example", b"alice_example")).unwrap_err();
    assert!(error.contains("email address is malformed: no '@'"), "{error}");
    let error = restore(&edited(&good, b"$argon2id$", b"$argon2id ")).unwrap_err();
    assert!(error.contains("password hash has a character not allowed"), "{error}");
}

/// A refused name inside a vector (the second of an interval's ticks) fails the whole event; the
/// vector is rebuilt element by element, so the tick built before it is freed (the `snapshot`
/// and `journal` fuzz targets run with the leak checker on).
#[test]
fn a_refused_name_inside_a_vector_is_refused() {
    let tick = |symbol: &str| engine::Tick {
        symbol: Symbol::new(symbol).unwrap(),
        open: engine::Price::from_raw(1),
        high: engine::Price::from_raw(1),
        low: engine::Price::from_raw(1),
        close: engine::Price::from_raw(1),
        volume: engine::Qty::ZERO,
        time: Timestamp(3),
    };
    let event = Event::IntervalSettled(engine::IntervalSettled {
        interval: engine::IntervalId(2),
        at: Timestamp(4),
        ticks: vec![tick("AAPL"), tick("MSFT")],
        orders: 0,
    });
    let good = archive(&event);
    assert_eq!(restore(&good).unwrap(), event);
    let error = restore(&edited(&good, b"MSFT", b"MS%T")).unwrap_err();
    assert!(error.contains("symbol has a character not allowed at position 2"), "{error}");
}

/// A stored length beyond the 16 bytes is refused, not cut to them.
#[test]
fn a_symbol_length_beyond_its_bytes_is_refused() {
    let good = archive(&listed("ABCDEFGHIJKLMNOP"));
    let mut stored = b"ABCDEFGHIJKLMNOP".to_vec();
    stored.push(16);
    let mut too_long = stored.clone();
    too_long[16] = 200;
    let error = restore(&edited(&good, &stored, &too_long)).unwrap_err();
    assert!(error.contains("symbol is not in its canonical form"), "{error}");
}
