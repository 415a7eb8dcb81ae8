//! Every limit the engine enforces, in one place, units last in the names.

/// Longest username, in characters (spec 2.4.1).
pub const USERNAME_CHARS_MAX: usize = 24;
/// Longest email address, in characters (spec 2.4.1).
pub const EMAIL_CHARS_MAX: usize = 321;
/// Longest local part of an email address (before the `@`), in characters (RFC 5321).
pub const EMAIL_LOCAL_CHARS_MAX: usize = 64;
/// Longest asset symbol, in characters.
pub const SYMBOL_CHARS_MAX: usize = 16;
/// Longest stored password hash string (an argon2 PHC string is about 100), in bytes.
pub const PASSWORD_HASH_BYTES_MAX: usize = 512;
/// Largest quantity one order may ask for: one billion whole units.
pub const ORDER_QTY_UNITS_MAX: u64 = 1_000_000_000;
/// Most ticks (symbols) one interval's tick set may hold.
pub const TICKS_PER_INTERVAL_MAX: usize = 100_000;
/// Most orders one interval may settle: settlement numbers an interval's orders with 32 bits
/// (the journal takes far fewer in one batch anyway).
pub const SETTLEMENT_ORDERS_MAX: usize = u32::MAX as usize;
