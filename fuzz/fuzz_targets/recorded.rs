//! Fuzzes the engine's recorded-format parsers (`engine::recorded`): prices, orders and times.
//! Nothing may panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = engine::recorded::parse_prices(text);
    let _ = engine::recorded::parse_orders(text);
    for line in text.lines().take(64) {
        let _ = engine::recorded::parse_time(line);
    }
});
