//! Fixed-point money and quantity types.
//!
//! Every amount is an unsigned 64-bit integer counting units of `10^-8` ([`SCALE`]): eight decimal
//! places, enough for stock quotes (`812.25`), forex (`1.07083`) and crypto (`0.00001234`).
//! There are no floats anywhere. Parsing a decimal string with more than eight decimals is an
//! error, never a rounding. Every operation is checked: overflow is an error the caller turns
//! into a rejection, never a wrap.
//!
//! The engine divides in three places, each computed exactly in 128 bits and rounded once
//! (`docs/ENGINE.md` lists every rounding rule):
//! - [`notional`]: `price * qty / SCALE`, rounded **up** for a buy (the buyer never pays less
//!   than the exact value) and **down** for a sell (the seller never receives more than the exact
//!   value). With whole-unit quantities no rounding ever happens;
//! - [`pro_rata`]: the cost basis removed on a partial sell, rounded down (see
//!   [`Holding::remove`](crate::Holding::remove));
//! - [`mul_div_floor`]: a split's adjustment of a recorded price or quantity, rounded down.

use std::fmt;

/// Number of raw units in one whole unit of any fixed-point amount: eight decimal places.
pub const SCALE: u64 = 100_000_000;
/// Number of decimal places of every fixed-point amount.
pub const DECIMALS: u32 = 8;

/// Why a decimal string is not a valid fixed-point amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseAmountError {
    /// The string was empty.
    #[error("empty amount")]
    Empty,
    /// A character other than ASCII digits and one decimal point.
    #[error("invalid character {0:?} in amount (expected digits and at most one '.')")]
    InvalidChar(char),
    /// A decimal point with no digit before or after it.
    #[error("amount needs digits on both sides of the decimal point")]
    MissingDigits,
    /// More decimal places than the fixed-point scale holds.
    #[error("amount has {0} decimal places, at most {DECIMALS} are allowed")]
    TooManyDecimals(usize),
    /// The value does not fit in 64 bits of `10^-8` units.
    #[error("amount is too large")]
    Overflow,
}

/// Parses a non-negative decimal string (`"812.25"`, `"1.07083"`, `"42"`) into raw `10^-8` units.
pub fn parse_fixed(text: &str) -> Result<u64, ParseAmountError> {
    if text.is_empty() {
        return Err(ParseAmountError::Empty);
    }
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    if whole.is_empty() || frac.is_some_and(str::is_empty) {
        return Err(ParseAmountError::MissingDigits);
    }
    let frac = frac.unwrap_or("");
    if let Some(bad) = whole.chars().chain(frac.chars()).find(|c| !c.is_ascii_digit()) {
        return Err(ParseAmountError::InvalidChar(bad));
    }
    if frac.len() > DECIMALS as usize {
        return Err(ParseAmountError::TooManyDecimals(frac.len()));
    }
    let mut raw: u64 = 0;
    for digit in whole.bytes().chain(frac.bytes()) {
        raw = raw
            .checked_mul(10)
            .and_then(|r| r.checked_add(u64::from(digit - b'0')))
            .ok_or(ParseAmountError::Overflow)?;
    }
    let missing = DECIMALS - u32::try_from(frac.len()).map_err(|_| ParseAmountError::Overflow)?;
    raw.checked_mul(10u64.pow(missing)).ok_or(ParseAmountError::Overflow)
}

/// Writes raw `10^-8` units as a decimal string with trailing zeros trimmed, keeping at least
/// `min_decimals` decimal places.
fn fmt_fixed(raw: u64, min_decimals: usize, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let whole = raw / SCALE;
    let frac = raw % SCALE;
    let mut digits = format!("{frac:08}");
    while digits.len() > min_decimals && digits.ends_with('0') {
        digits.pop();
    }
    let text = if digits.is_empty() { format!("{whole}") } else { format!("{whole}.{digits}") };
    f.pad(&text)
}

macro_rules! fixed_point {
    ($(#[$doc:meta])* $name:ident, $min_decimals:expr) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
            rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
        )]
        #[rkyv(derive(Debug))]
        pub struct $name(u64);

        impl $name {
            /// Zero.
            pub const ZERO: Self = Self(0);

            /// Wraps a raw count of `10^-8` units.
            pub const fn from_raw(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw count of `10^-8` units.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// A whole number of units, or `None` on overflow.
            pub const fn from_units(units: u64) -> Option<Self> {
                match units.checked_mul(SCALE) {
                    Some(raw) => Some(Self(raw)),
                    None => None,
                }
            }

            /// Parses a decimal string; see [`parse_fixed`].
            pub fn parse(text: &str) -> Result<Self, ParseAmountError> {
                parse_fixed(text).map(Self)
            }

            /// `self + other`, or `None` on overflow.
            pub fn checked_add(self, other: Self) -> Option<Self> {
                self.0.checked_add(other.0).map(Self)
            }

            /// `self - other`, or `None` if it would go below zero.
            pub fn checked_sub(self, other: Self) -> Option<Self> {
                self.0.checked_sub(other.0).map(Self)
            }

            /// True for zero.
            pub const fn is_zero(self) -> bool {
                self.0 == 0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_fixed(self.0, $min_decimals, f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseAmountError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Self::parse(text)
            }
        }
    };
}

fixed_point!(
    /// A price per whole unit of an asset, in the account currency, with eight decimals.
    Price,
    0
);
fixed_point!(
    /// A quantity of an asset (shares, coins, lots), with eight decimals so crypto fractions fit.
    Qty,
    0
);
fixed_point!(
    /// An amount of cash in the account currency, with eight decimals; shown with at least two.
    Cash,
    2
);

/// Which way a trade goes; decides the rounding of [`notional`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub enum Side {
    /// Cash out, asset in.
    Buy,
    /// Asset out, cash in.
    Sell,
}

impl Side {
    /// `buy` or `sell`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The cash value of `qty` at `price`: `price * qty / SCALE`, exact in 128 bits, rounded up for
/// a [`Side::Buy`] and down for a [`Side::Sell`]. `None` when the result does not fit in [`Cash`].
pub fn notional(price: Price, qty: Qty, side: Side) -> Option<Cash> {
    // Split the quantity into whole units and a fraction: `price * whole` is exact in 64 bits
    // (or overflows), and only the fractional part needs the 128-bit division and rounding.
    // The result is identical to computing `price * qty / SCALE` in 128 bits at once.
    let whole = qty.raw() / SCALE;
    let fraction = qty.raw() % SCALE;
    let whole_value = price.raw().checked_mul(whole)?;
    if fraction == 0 {
        return Some(Cash::from_raw(whole_value));
    }
    let product = u128::from(price.raw()) * u128::from(fraction);
    let scale = u128::from(SCALE);
    let fraction_value = match side {
        Side::Buy => product.div_ceil(scale),
        Side::Sell => product / scale,
    };
    let fraction_value = u64::try_from(fraction_value).ok()?;
    whole_value.checked_add(fraction_value).map(Cash::from_raw)
}

/// `amount * part / whole` rounded down, exact in 128 bits; used to take a proportional share of a
/// cost basis. `None` if `whole` is zero or the result does not fit.
pub fn pro_rata(amount: Cash, part: Qty, whole: Qty) -> Option<Cash> {
    mul_div_floor(amount.raw(), u128::from(part.raw()), u128::from(whole.raw())).map(Cash::from_raw)
}

/// `value * times / by` rounded down once, exact in 128 bits: the one scaling of raw amounts by
/// a ratio (a share of a cost basis; a split's adjustment, whose ratio may be the product of
/// several splits). `None` if `by` is zero, or the product or the result does not fit (128 and
/// 64 bits).
pub fn mul_div_floor(value: u64, times: u128, by: u128) -> Option<u64> {
    let product = u128::from(value).checked_mul(times)?;
    u64::try_from(product.checked_div(by)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(Price::parse("1.07083").unwrap().raw(), 107_083_000);
        assert_eq!(Price::parse("812.25").unwrap().raw(), 81_225_000_000);
        assert_eq!(Price::parse("42").unwrap().raw(), 4_200_000_000);
        assert_eq!(Price::parse("0.00000001").unwrap().raw(), 1);
        assert_eq!(Price::parse("0").unwrap(), Price::ZERO);
    }

    #[test]
    fn refuses_instead_of_rounding() {
        assert_eq!(Price::parse("0.000000001"), Err(ParseAmountError::TooManyDecimals(9)));
        assert_eq!(Price::parse(""), Err(ParseAmountError::Empty));
        assert_eq!(Price::parse("-1"), Err(ParseAmountError::InvalidChar('-')));
        assert_eq!(Price::parse("+1"), Err(ParseAmountError::InvalidChar('+')));
        assert_eq!(Price::parse("1e5"), Err(ParseAmountError::InvalidChar('e')));
        assert_eq!(Price::parse("1.2.3"), Err(ParseAmountError::InvalidChar('.')));
        assert_eq!(Price::parse(".5"), Err(ParseAmountError::MissingDigits));
        assert_eq!(Price::parse("5."), Err(ParseAmountError::MissingDigits));
        assert_eq!(Price::parse("184467440737.09551616"), Err(ParseAmountError::Overflow));
        assert_eq!(Price::parse("184467440737.09551615").unwrap().raw(), u64::MAX);
    }

    #[test]
    fn displays_round_trip() {
        for text in ["1.07083", "812.25", "42", "0.00000001", "184467440737.09551615"] {
            assert_eq!(Price::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Cash::parse("100000").unwrap().to_string(), "100000.00");
        assert_eq!(Cash::parse("0.5").unwrap().to_string(), "0.50");
        assert_eq!(Cash::parse("0.123").unwrap().to_string(), "0.123");
    }

    #[test]
    fn notional_rounds_against_the_trader() {
        let price = Price::parse("0.00000003").unwrap();
        let qty = Qty::parse("0.5").unwrap();
        // Exact value 0.000000015: a buyer pays 0.00000002, a seller receives 0.00000001.
        assert_eq!(notional(price, qty, Side::Buy).unwrap().raw(), 2);
        assert_eq!(notional(price, qty, Side::Sell).unwrap().raw(), 1);
        let whole = Qty::from_units(3).unwrap();
        let p = Price::parse("812.25").unwrap();
        assert_eq!(notional(p, whole, Side::Buy), Cash::parse("2436.75").ok());
        assert_eq!(notional(p, whole, Side::Sell), Cash::parse("2436.75").ok());
        assert_eq!(
            notional(Price::from_raw(u64::MAX), Qty::from_units(2).unwrap(), Side::Buy),
            None
        );
    }

    #[test]
    fn split_notional_equals_the_128_bit_formula() {
        let reference = |p: u64, q: u64, side: Side| {
            let product = u128::from(p) * u128::from(q);
            let v = match side {
                Side::Buy => product.div_ceil(u128::from(SCALE)),
                Side::Sell => product / u128::from(SCALE),
            };
            u64::try_from(v).ok().map(Cash::from_raw)
        };
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = match i % 3 {
                0 => x,
                1 => x >> 20,
                _ => x >> 40,
            };
            let q = match i % 4 {
                0 => x.rotate_left(7),
                1 => (x >> 30) * SCALE,
                2 => x >> 25,
                _ => x % 1000,
            };
            for side in [Side::Buy, Side::Sell] {
                assert_eq!(
                    notional(Price::from_raw(p), Qty::from_raw(q), side),
                    reference(p, q, side),
                    "{p} {q}"
                );
            }
        }
    }

    #[test]
    fn pro_rata_rounds_down() {
        let basis = Cash::from_raw(10);
        assert_eq!(pro_rata(basis, Qty::from_raw(1), Qty::from_raw(3)), Some(Cash::from_raw(3)));
        assert_eq!(pro_rata(basis, Qty::from_raw(3), Qty::from_raw(3)), Some(basis));
        assert_eq!(pro_rata(basis, Qty::from_raw(1), Qty::ZERO), None);
    }
}
