//! The recorded price source as the master opens it from its configuration: the shipped file by
//! default, a file of one's own, and the errors of a bad one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use engine::{Symbol, Tick};
use master::config::{PriceSourceConfig, RecordedSourceConfig};
use master::prices::{PriceBatch, PriceSource, PriceSourceError, open_source, resolve_assets};

#[tokio::test]
async fn the_shipped_file_loops_forever_with_increasing_times() {
    let mut source = open_source(&PriceSourceConfig::default(), Duration::from_secs(1)).unwrap();
    assert_eq!(source.name(), "recorded");
    let assets = resolve_assets(&[], &source).unwrap();
    let names: Vec<&str> = assets.iter().map(Symbol::as_str).collect();
    assert_eq!(names, ["AAPL", "FB", "GOOG", "IBM", "MSFT"]);

    let master::prices::AnyPriceSource::Recorded(recorded) = &source else { panic!("recorded") };
    let periods = recorded.periods();
    let shift = recorded.period_micros();
    let mut first_loop: Vec<PriceBatch> = Vec::with_capacity(periods);
    for _ in 0..periods {
        first_loop.push(source.fetch(&assets).await);
    }
    let mut previous = first_loop.last().unwrap().time.unwrap();
    for original in &first_loop {
        let again = source.fetch(&assets).await;
        let time = again.time.unwrap();
        assert!(time > previous, "{time} after {previous}");
        previous = time;
        assert_eq!(time.0 - original.time.unwrap().0, shift);
        assert_eq!(again.failures, original.failures);
        assert_eq!(again.ticks.len(), original.ticks.len());
        for (a, b) in original.ticks.ticks().iter().zip(again.ticks.ticks()) {
            assert_eq!(b.time.0 - a.time.0, shift);
            assert_eq!(Tick { time: a.time, ..*b }, *a);
        }
    }
    // FB is listed from 2012 only: earlier periods report it as having no data.
    assert!(first_loop[0].failures.iter().any(|f| f.symbol.as_str() == "FB"));
}

#[tokio::test]
async fn a_configured_file_is_used_and_a_bad_one_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("prices.csv");
    std::fs::write(
        &good,
        "time,symbol,open,high,low,close,volume\n2020-01-02T14:30:00Z,BTC-USD,1.5,2,1,1.75,3\n",
    )
    .unwrap();
    let config = PriceSourceConfig::Recorded(RecordedSourceConfig { file: Some(good) });
    let mut source = open_source(&config, Duration::from_secs(1)).unwrap();
    let btc = Symbol::new("BTC-USD").unwrap();
    let batch = source.fetch(&[btc]).await;
    assert_eq!(batch.ticks.get(&btc).unwrap().close.to_string(), "1.75");

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "time,symbol,open,high,low,close,volume\n2020-01-02,IBM,1,2,1,2,3\n2020-01-03,IBM,1,2,1,2.5x,3\n",
    )
    .unwrap();
    let config = PriceSourceConfig::Recorded(RecordedSourceConfig { file: Some(bad) });
    let err = open_source(&config, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(&err, PriceSourceError::Recorded { source, .. } if source.line == 3), "{err}");
    assert!(err.to_string().contains("bad.csv: line 3"), "{err}");

    let missing = dir.path().join("missing.csv");
    let config = PriceSourceConfig::Recorded(RecordedSourceConfig { file: Some(missing) });
    assert!(matches!(
        open_source(&config, Duration::from_secs(1)),
        Err(PriceSourceError::Read { .. })
    ));
}
