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
    let config =
        PriceSourceConfig::Recorded(RecordedSourceConfig { file: Some(good), splits: None });
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
    let config =
        PriceSourceConfig::Recorded(RecordedSourceConfig { file: Some(bad), splits: None });
    let err = open_source(&config, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(&err, PriceSourceError::Recorded { source, .. } if source.line == 3), "{err}");
    assert!(err.to_string().contains("bad.csv: line 3"), "{err}");

    let missing = dir.path().join("missing.csv");
    let config =
        PriceSourceConfig::Recorded(RecordedSourceConfig { file: Some(missing), splits: None });
    assert!(matches!(
        open_source(&config, Duration::from_secs(1)),
        Err(PriceSourceError::Read { .. })
    ));

    // Over the size limit (a sparse file: nothing is written or read): refused by its size.
    let huge = dir.path().join("huge.csv");
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(master::prices::recorded::RECORDED_FILE_BYTES_MAX + 1).unwrap();
    for (file, splits) in [(Some(huge.clone()), None), (None, Some(huge.clone()))] {
        let config = PriceSourceConfig::Recorded(RecordedSourceConfig { file, splits });
        let err = open_source(&config, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(&err, PriceSourceError::TooLarge { path, .. } if path == &huge), "{err}");
        assert!(err.to_string().contains("huge.csv has 1073741825 bytes"), "{err}");
    }
}

/// The shipped prices are adjusted for the shipped splits: a holder of AAPL does not lose half
/// its value overnight on 2000-06-21 (2:1), and the prices from the split on are as recorded.
#[tokio::test]
async fn the_shipped_prices_are_split_adjusted() {
    let mut source = open_source(&PriceSourceConfig::default(), Duration::from_secs(1)).unwrap();
    let aapl = Symbol::new("AAPL").unwrap();
    let mut closes = Vec::new();
    loop {
        let batch = source.fetch(&[aapl]).await;
        let day = batch.time.unwrap().to_string();
        if let Some(tick) = batch.ticks.get(&aapl) {
            closes.push((day[..10].to_owned(), tick.open.to_string(), tick.close.to_string()));
        }
        if day.starts_with("2000-06-21") {
            break;
        }
    }
    let [.., before, split_day] = closes.as_slice() else { panic!("{closes:?}") };
    // Recorded: closed 101.25 on 06-20, opened 50.5 on 06-21: no jump once adjusted. Both
    // days are before the 2005 split too, so each is also halved for that one.
    assert_eq!((before.0.as_str(), before.2.as_str()), ("2000-06-20", "25.3125"));
    assert_eq!((split_day.0.as_str(), split_day.1.as_str()), ("2000-06-21", "25.25"));
    assert_eq!((closes[0].0.as_str(), closes[0].2.as_str()), ("2000-03-01", "32.5775"));

    // A file of one's own is as recorded, unless given a split list, whose errors name a line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prices.csv");
    std::fs::write(
        &file,
        "time,symbol,open,high,low,close,volume\n2020-01-02,IBM,10,12,9,11,3\n2020-01-03,IBM,5,6,5,6,3\n",
    )
    .unwrap();
    let splits = dir.path().join("splits.csv");
    std::fs::write(&splits, "time,symbol,ratio\n2020-01-03,IBM,2:1\n").unwrap();
    let ibm = Symbol::new("IBM").unwrap();
    for (with_splits, close) in [(None, "11"), (Some(splits), "5.5")] {
        let recorded = RecordedSourceConfig { file: Some(file.clone()), splits: with_splits };
        let mut source =
            open_source(&PriceSourceConfig::Recorded(recorded), Duration::from_secs(1)).unwrap();
        assert_eq!(source.fetch(&[ibm]).await.ticks.get(&ibm).unwrap().close.to_string(), close);
    }
    let bad = dir.path().join("bad-splits.csv");
    std::fs::write(&bad, "time,symbol,ratio\n2020-01-03,IBM,2:1\n2020-01-04,IBM,two\n").unwrap();
    let recorded = RecordedSourceConfig { file: Some(file), splits: Some(bad) };
    let err = open_source(&PriceSourceConfig::Recorded(recorded), Duration::from_secs(1));
    let err = err.unwrap_err().to_string();
    assert!(err.starts_with("split list ") && err.contains("bad-splits.csv: line 3"), "{err}");
    assert!(err.contains("ratio"), "{err}");
    // A split that cannot be applied (a price would become zero) names the split list's line,
    // not the price file's.
    let tiny = dir.path().join("tiny.csv");
    std::fs::write(&tiny, "time,symbol,open,high,low,close,volume\n2020-01-02,X,0.00000001,0.00000001,0.00000001,0.00000001,1\n").unwrap();
    let x_splits = dir.path().join("x-splits.csv");
    std::fs::write(&x_splits, "time,symbol,ratio\n2020-01-03,X,2:1\n").unwrap();
    let recorded = RecordedSourceConfig { file: Some(tiny), splits: Some(x_splits) };
    let err = open_source(&PriceSourceConfig::Recorded(recorded), Duration::from_secs(1));
    let err = err.unwrap_err().to_string();
    assert!(err.starts_with("split list ") && err.contains("x-splits.csv: line 2"), "{err}");
}
