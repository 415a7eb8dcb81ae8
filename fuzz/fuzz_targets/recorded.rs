//! Fuzzes the engine's recorded-format parsers (`engine::recorded`): prices, orders, split lists
//! (and the split adjustment of the prices) and times. Nothing may panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = engine::recorded::parse_prices(text);
    let _ = engine::recorded::parse_orders(text);
    let _ = engine::recorded::parse_splits(text);
    // Prices, a `---` line, a split list: the prices adjusted for the splits.
    if let Some((prices, splits)) = text.split_once("\n---\n")
        && let (Ok(prices), Ok(splits)) =
            (engine::recorded::parse_prices(prices), engine::recorded::parse_splits(splits))
    {
        let _ = engine::recorded::adjust_for_splits(prices, &splits);
    }
    for line in text.lines().take(64) {
        let _ = engine::recorded::parse_time(line);
    }
});
