//! Identifiers, names and time: validated newtypes that make invalid values unrepresentable.

use std::fmt;

use crate::limits::{
    EMAIL_CHARS_MAX, EMAIL_LOCAL_CHARS_MAX, PASSWORD_HASH_BYTES_MAX, SYMBOL_CHARS_MAX,
    USERNAME_CHARS_MAX,
};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
            rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
        )]
        #[rkyv(derive(Debug))]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

id_type!(
    /// An account's number, given by the engine in opening order starting at 1, never reused.
    AccountId(u64)
);
id_type!(
    /// An order's id, unique across the system, given by the master when it queues the order.
    OrderId(u64)
);
id_type!(
    /// An order id chosen by the client (an idempotency key, unique per account).
    ClientOrderId(u64)
);
id_type!(
    /// The worker that stamped an order: the 128-bit UUID of a registered worker, as an integer.
    /// Orders with equal timestamps are settled in ascending worker id.
    WorkerId(u128)
);
id_type!(
    /// The number of a settlement interval; strictly increasing from one settlement to the next.
    IntervalId(u64)
);

/// A point in time: microseconds since the Unix epoch, UTC. The engine never reads a clock; every
/// timestamp comes in as an argument.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Microseconds since the Unix epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// The same instant as a `time` value, or `None` when out of its range.
    pub fn to_offset_date_time(self) -> Option<time::OffsetDateTime> {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000).ok()
    }

    /// The instant of a `time` value, or `None` when it does not fit in 64 bits of microseconds.
    pub fn from_offset_date_time(at: time::OffsetDateTime) -> Option<Self> {
        i64::try_from(at.unix_timestamp_nanos() / 1_000).ok().map(Self)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, or the raw microseconds when out of range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .to_offset_date_time()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        {
            Some(text) => f.pad(&text),
            None => write!(f, "{}us", self.0),
        }
    }
}

/// Why a name, email, symbol or hash string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty where at least one character is required.
    #[error("{what} is empty")]
    Empty {
        /// Which kind of value.
        what: &'static str,
    },
    /// Longer than the limit.
    #[error("{what} has {len} characters, at most {max} are allowed")]
    TooLong {
        /// Which kind of value.
        what: &'static str,
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside the allowed set, at a 0-based character position.
    #[error("{what} has a character not allowed at position {position}: {ch:?}")]
    BadChar {
        /// Which kind of value.
        what: &'static str,
        /// The offending character.
        ch: char,
        /// Its position, counted in characters from 0.
        position: usize,
    },
    /// An email address that is not `local@domain.tld`.
    #[error("email address is malformed: {0}")]
    BadEmail(&'static str),
    /// A stored value (from an archive) that its constructor would not have built byte for byte:
    /// bytes that are not text, or bytes kept after a symbol's end.
    #[error("stored {what} is not in its canonical form")]
    NotCanonical {
        /// Which kind of value.
        what: &'static str,
    },
}

fn check_length(what: &'static str, text: &str, max: usize) -> Result<(), NameError> {
    if text.is_empty() {
        return Err(NameError::Empty { what });
    }
    let len = text.chars().count();
    if len > max {
        return Err(NameError::TooLong { what, len, max });
    }
    Ok(())
}

fn check_chars(
    what: &'static str,
    text: &str,
    allowed: impl Fn(usize, char) -> bool,
) -> Result<(), NameError> {
    match text.chars().enumerate().find(|&(i, c)| !allowed(i, c)) {
        Some((position, ch)) => Err(NameError::BadChar { what, ch, position }),
        None => Ok(()),
    }
}

/// A username: 1 to 24 characters, ASCII letters and digits, plus `.`, `_` and `-` after the first
/// character, which must be a letter or digit. Compared exactly, byte for byte and case-sensitive:
/// no pattern of any kind (`%`, `*`, `_` have no special meaning, and `%` and `*` are refused).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct Username(String);

impl Username {
    /// Validates and wraps a username.
    pub fn new(text: &str) -> Result<Self, NameError> {
        check_length("username", text, USERNAME_CHARS_MAX)?;
        check_chars("username", text, |i, c| {
            c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '.' | '_' | '-'))
        })?;
        Ok(Self(text.to_owned()))
    }

    /// The username as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// An email address: at most 321 characters (spec 2.4.1), printable ASCII, exactly one `@`, a local
/// part of 1 to 64 characters from RFC 5322's `atext` and dots (no leading, trailing or double dot),
/// and a domain of at least two dot-separated labels of letters, digits and inner hyphens.
/// Stored as given; never shown to anyone but its owner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize)]
#[rkyv(derive(Debug))]
pub struct Email(String);

impl Email {
    /// Validates and wraps an email address.
    pub fn new(text: &str) -> Result<Self, NameError> {
        check_length("email", text, EMAIL_CHARS_MAX)?;
        check_chars("email", text, |_, c| c.is_ascii_graphic())?;
        let Some((local, domain)) = text.split_once('@') else {
            return Err(NameError::BadEmail("no '@'"));
        };
        if domain.contains('@') {
            return Err(NameError::BadEmail("more than one '@'"));
        }
        if local.is_empty() || local.len() > EMAIL_LOCAL_CHARS_MAX {
            return Err(NameError::BadEmail("the part before '@' must be 1 to 64 characters"));
        }
        let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
        if local.split('.').any(|part| part.is_empty() || !part.chars().all(atext)) {
            return Err(NameError::BadEmail("the part before '@' has a character not allowed"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(NameError::BadEmail("the domain needs a dot"));
        }
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !labels.iter().all(label_ok) {
            return Err(NameError::BadEmail("the domain is not a valid host name"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// An asset symbol: 1 to 16 characters of `A-Z`, `0-9` and `.` `-` `/` `^` `=` (so `AAPL`,
/// `BRK.B`, `EUR/USD`, `BTC-USD`, `^GSPC` and `ES=F` all fit). Stored inline, so it is `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct Symbol {
    bytes: [u8; SYMBOL_CHARS_MAX],
    len: u8,
}

impl Symbol {
    /// Validates and wraps a symbol. Lower-case letters are refused, not folded: `aapl` is an
    /// error so that a symbol has exactly one spelling.
    pub fn new(text: &str) -> Result<Self, NameError> {
        check_length("symbol", text, SYMBOL_CHARS_MAX)?;
        check_chars("symbol", text, |_, c| {
            c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '/' | '^' | '=')
        })?;
        let mut bytes = [0u8; SYMBOL_CHARS_MAX];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        let len = u8::try_from(text.len()).map_err(|_| NameError::TooLong {
            what: "symbol",
            len: text.len(),
            max: SYMBOL_CHARS_MAX,
        })?;
        Ok(Self { bytes, len })
    }

    /// A key that orders symbols exactly as their `Ord` does (bytes, then length), compared as
    /// two integers instead of a byte array: settlement's tick index hashes and compares it.
    pub(crate) fn order_key(&self) -> (u128, u8) {
        (u128::from_be_bytes(self.bytes), self.len)
    }

    /// The symbol's ASCII bytes: [`Symbol::as_str`] without the UTF-8 check, for encoders
    /// that write it once per order.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(SYMBOL_CHARS_MAX)]
    }

    /// The symbol's bytes followed by zeros up to `SYMBOL_CHARS_MAX`: an encoder copies them
    /// with one fixed-size store, then counts only [`Symbol::as_bytes`]'s length.
    pub fn padded(&self) -> &[u8; SYMBOL_CHARS_MAX] {
        &self.bytes
    }

    /// The symbol as text.
    pub fn as_str(&self) -> &str {
        let len = usize::from(self.len).min(SYMBOL_CHARS_MAX);
        // Only ASCII is ever stored; an archived value that is not falls back to "".
        std::str::from_utf8(&self.bytes[..len]).unwrap_or("")
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({})", self.as_str())
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The stored password hash: an opaque string (the master stores an argon2id PHC string) of 1 to
/// 512 printable ASCII bytes. The engine never looks inside it; its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Validates and wraps a hash string.
    pub fn new(text: &str) -> Result<Self, NameError> {
        if text.is_empty() {
            return Err(NameError::Empty { what: "password hash" });
        }
        if text.len() > PASSWORD_HASH_BYTES_MAX {
            return Err(NameError::TooLong {
                what: "password hash",
                len: text.len(),
                max: PASSWORD_HASH_BYTES_MAX,
            });
        }
        check_chars("password hash", text, |_, c| c.is_ascii_graphic())?;
        Ok(Self(text.to_owned()))
    }

    /// The hash string, for the master's verifier only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

// Names come back from rkyv archives (snapshots, format-1 journal records) through their own
// constructors, never field by field: an archive that passed its checksums but holds a name the
// constructor refuses, or a symbol with bytes after its length, fails to deserialize with the
// constructor's error instead of building a value the type forbids (found by `fuzz/`'s
// `journal` target).

/// `Deserialize` for a name stored as text: through its `new`, whose error becomes the
/// deserializer's.
macro_rules! deserialize_text_name {
    ($($name:ident from $archived:ident),+) => {$(
        impl<D> rkyv::Deserialize<$name, D> for $archived
        where
            D: rkyv::rancor::Fallible + ?Sized,
            D::Error: rkyv::rancor::Source,
        {
            fn deserialize(&self, _: &mut D) -> Result<$name, D::Error> {
                $name::new(self.0.as_str()).map_err(rkyv::rancor::Source::new)
            }
        }
    )+};
}

deserialize_text_name!(
    Username from ArchivedUsername,
    Email from ArchivedEmail,
    PasswordHash from ArchivedPasswordHash
);

impl<D> rkyv::Deserialize<Symbol, D> for ArchivedSymbol
where
    D: rkyv::rancor::Fallible + ?Sized,
    D::Error: rkyv::rancor::Source,
{
    fn deserialize(&self, _: &mut D) -> Result<Symbol, D::Error> {
        use rkyv::rancor::Source as _;
        let not_canonical = || D::Error::new(NameError::NotCanonical { what: "symbol" });
        // A length beyond the 16 bytes, or bytes that are not text, are not a symbol.
        let text =
            self.bytes.get(..usize::from(self.len)).and_then(|b| std::str::from_utf8(b).ok());
        let symbol = Symbol::new(text.ok_or_else(not_canonical)?).map_err(D::Error::new)?;
        // `new` zeroes the bytes after the symbol: so must the archive, or two equal-looking
        // symbols would compare, hash and sort differently.
        if symbol.bytes != self.bytes {
            return Err(not_canonical());
        }
        Ok(symbol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(Username::new("alice").is_ok());
        assert!(Username::new("A.b_c-9").is_ok());
        assert!(Username::new(&"x".repeat(24)).is_ok());
        assert_eq!(
            Username::new(&"x".repeat(25)),
            Err(NameError::TooLong { what: "username", len: 25, max: 24 })
        );
        assert_eq!(Username::new(""), Err(NameError::Empty { what: "username" }));
        for bad in ["%", "a%", "a*", "_", "*", "a b", "é", "a'--", "_alice"] {
            assert!(matches!(Username::new(bad), Err(NameError::BadChar { .. })), "{bad}");
        }
        // Exact comparison: case and wildcard-looking characters matter.
        assert_ne!(Username::new("Alice").unwrap(), Username::new("alice").unwrap());
        assert_ne!(Username::new("a_c").unwrap(), Username::new("abc").unwrap());
    }

    #[test]
    fn emails() {
        for good in ["a@b.co", "first.last+tag@sub.example.org", "x!#$%&'*+/=?^_`{|}~-@e.io"] {
            assert!(Email::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "plain",
            "a@b",
            "@b.co",
            "a@@b.co",
            "a@b@c.co",
            "a..b@c.co",
            ".a@c.co",
            "a@-b.co",
            "a@b..co",
            "a b@c.co",
            "a@b.co ",
            "é@b.co",
        ] {
            assert!(Email::new(bad).is_err(), "{bad}");
        }
        let long_local = format!("{}@b.co", "a".repeat(65));
        assert!(Email::new(&long_local).is_err());
        let max = format!("{}@{}.{}", "a".repeat(64), "b".repeat(63), "c".repeat(63));
        assert!(Email::new(&max).is_ok());
        let over = format!("a@{}", vec!["b".repeat(63); 6].join("."));
        assert!(matches!(Email::new(&over), Err(NameError::TooLong { max: 321, .. })));
    }

    #[test]
    fn symbols() {
        for good in ["AAPL", "BRK.B", "EUR/USD", "BTC-USD", "^GSPC", "ES=F", "A"] {
            assert_eq!(Symbol::new(good).unwrap().as_str(), good);
        }
        for bad in ["", "aapl", "AAPL ", "TOOLONGSYMBOLNAME", "A*"] {
            assert!(Symbol::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_hash_is_never_printed() {
        let hash = PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").unwrap();
        assert!(!format!("{hash:?}").contains("argon2"));
        assert!(PasswordHash::new("has space").is_err());
    }

    #[test]
    fn timestamps_print_as_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(1_500_000).to_string(), "1970-01-01T00:00:01.5Z");
    }
}
