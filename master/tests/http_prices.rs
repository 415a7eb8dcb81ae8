//! The HTTP price source against a real HTTP/1.1 server on loopback: a small hand-written
//! responder over `tokio::net::TcpListener` that answers each request with the next reply of a
//! script and records what it was asked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{Price, Qty, Symbol};
use master::config::{ApiKey, HttpSourceConfig};
use master::logbook::{Logbook, LogbookConfig};
use master::prices::{FailureReason, HttpSource, PriceSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt as _;

const KEY: &str = "TESTKEY-9f8e7d";

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    /// 200 with this JSON body.
    Json(String),
    /// This status with a short body.
    Status(u16),
    /// Read the request, never answer, keep the connection open.
    Silent,
}

struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    async fn start(script: Vec<Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let seen = Arc::clone(&seen);
                let script = Arc::clone(&script);
                tokio::spawn(async move { answer(stream, seen, script).await });
            }
        });
        Self { addr, requests }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn answer(
    mut stream: TcpStream,
    seen: Arc<Mutex<Vec<String>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        head.extend_from_slice(&buf[..n]);
        assert!(head.len() < 16 * 1024, "request head too long");
    }
    let head = String::from_utf8(head).unwrap();
    let target = head.split(' ').nth(1).unwrap().to_owned();
    seen.lock().unwrap().push(target);
    let reply = script.lock().unwrap().pop_front().unwrap_or(Reply::Status(500));
    let (status, body) = match reply {
        Reply::Json(body) => (200, body),
        Reply::Status(status) => (status, "{}".to_owned()),
        Reply::Silent => {
            std::future::pending::<()>().await;
            return;
        }
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
}

fn quote(symbol: &str, open: &str, high: &str, low: &str, price: &str, volume: &str) -> Reply {
    Reply::Json(format!(
        r#"{{"Global Quote": {{"01. symbol": "{symbol}", "02. open": "{open}", "03. high": "{high}",
        "04. low": "{low}", "05. price": "{price}", "06. volume": "{volume}",
        "07. latest trading day": "2024-05-10", "08. previous close": "1.0000",
        "09. change": "0.1000", "10. change percent": "0.1%"}}}}"#
    ))
}

fn config(server: &Server) -> HttpSourceConfig {
    HttpSourceConfig {
        base_url: server.base_url(),
        api_key: Some(ApiKey::new(KEY)),
        calls_per_minute_max: 100,
        timeout: Duration::from_secs(10),
        retries_max: 2,
        retry_backoff: Duration::from_millis(1),
        // The fixture's quotes are of 2024-05-10: old enough for the default limit.
        quote_age_max: Duration::from_secs(100 * 365 * 86_400),
        ..HttpSourceConfig::default()
    }
}

fn symbols(names: &[&str]) -> Vec<Symbol> {
    names.iter().map(|n| Symbol::new(n).unwrap()).collect()
}

/// Captures every log entry of this thread (the tests run on a current-thread runtime).
fn capture_logs() -> (Logbook, tracing::subscriber::DefaultGuard) {
    let logbook =
        Logbook::new(&LogbookConfig { memory_entries_max: 10_000, ..LogbookConfig::default() })
            .unwrap();
    let guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(logbook.layer()));
    (logbook, guard)
}

fn assert_key_never_logged(logbook: &Logbook) {
    for entry in logbook.dump() {
        assert!(!entry.to_string().contains(KEY), "the API key leaked: {entry}");
    }
}

fn reasons(batch: &master::prices::PriceBatch) -> Vec<(String, FailureReason)> {
    batch.failures.iter().map(|f| (f.symbol.to_string(), f.reason.clone())).collect()
}

#[tokio::test]
async fn quotes_are_parsed_exactly() {
    let (logbook, _guard) = capture_logs();
    let server = Server::start(vec![
        quote("IBM", "167.5000", "168.1234", "166.0001", "167.9999", "3458834"),
        quote("AAPL", "0.0001", "182.0000", "0.0001", "181.1800", "0"),
    ])
    .await;
    let mut source = HttpSource::new(&config(&server), Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM", "AAPL", "IBM"])).await;
    assert_eq!(batch.failures, vec![]);
    assert_eq!(batch.time, None);
    let ibm = batch.ticks.get(&Symbol::new("IBM").unwrap()).unwrap();
    assert_eq!(ibm.open, Price::parse("167.5").unwrap());
    assert_eq!(ibm.high.raw(), 16_812_340_000);
    assert_eq!(ibm.low.raw(), 16_600_010_000);
    assert_eq!(ibm.close.raw(), 16_799_990_000);
    assert_eq!(ibm.volume, Qty::from_units(3_458_834).unwrap());
    assert_eq!(ibm.time.to_string(), "2024-05-10T00:00:00Z");
    let aapl = batch.ticks.get(&Symbol::new("AAPL").unwrap()).unwrap();
    assert_eq!(aapl.open.raw(), 10_000);
    assert_eq!(aapl.close, Price::parse("181.18").unwrap());

    let requests = server.requests();
    assert_eq!(requests.len(), 2, "the duplicate IBM is asked once: {requests:?}");
    assert_eq!(requests[0], format!("/query?function=GLOBAL_QUOTE&symbol=IBM&apikey={KEY}"));
    assert_eq!(requests[1], format!("/query?function=GLOBAL_QUOTE&symbol=AAPL&apikey={KEY}"));
    assert_key_never_logged(&logbook);
}

/// With the default `quote_age_max` (7 days), a quote whose latest trading day is long past
/// (the fixture's 2024-05-10: a delisted symbol's last close) gives no price.
#[tokio::test]
async fn a_quote_older_than_the_limit_gives_no_price() {
    let server = Server::start(vec![quote("IBM", "1", "2", "1", "2", "1")]).await;
    let config = HttpSourceConfig {
        quote_age_max: HttpSourceConfig::default().quote_age_max,
        ..config(&server)
    };
    let mut source = HttpSource::new(&config, Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM"])).await;
    assert!(batch.ticks.is_empty());
    assert_eq!(
        reasons(&batch),
        vec![("IBM".to_owned(), FailureReason::Stale("2024-05-10T00:00:00Z".to_owned()))]
    );
}

/// A quote dated in the future (a provider's error) gives no price, whatever the age limit:
/// as the newest tick it would stay the asset's current price for good.
#[tokio::test]
async fn a_quote_from_the_future_gives_no_price() {
    let Reply::Json(body) = quote("IBM", "1", "2", "1", "2", "1") else { unreachable!() };
    let server = Server::start(vec![Reply::Json(body.replace("2024-05-10", "2099-01-01"))]).await;
    let mut source = HttpSource::new(&config(&server), Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM"])).await;
    assert!(batch.ticks.is_empty());
    assert_eq!(
        reasons(&batch),
        vec![("IBM".to_owned(), FailureReason::FromTheFuture("2099-01-01T00:00:00Z".to_owned()))]
    );
}

#[tokio::test]
async fn a_server_error_is_retried() {
    let (logbook, _guard) = capture_logs();
    let server = Server::start(vec![
        Reply::Status(500),
        Reply::Status(503),
        quote("IBM", "1", "2", "1", "2", "10"),
    ])
    .await;
    let mut source = HttpSource::new(&config(&server), Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM"])).await;
    assert_eq!(batch.failures, vec![]);
    assert_eq!(batch.ticks.len(), 1);
    assert_eq!(server.requests().len(), 3);
    assert_key_never_logged(&logbook);
}

#[tokio::test]
async fn retries_run_out_then_the_symbol_has_no_price() {
    let (logbook, _guard) = capture_logs();
    let server = Server::start(vec![Reply::Status(502); 3]).await;
    let mut source = HttpSource::new(&config(&server), Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM"])).await;
    assert!(batch.ticks.is_empty());
    assert_eq!(reasons(&batch), vec![("IBM".to_owned(), FailureReason::HttpStatus(502))]);
    assert_eq!(server.requests().len(), 3, "one try and two retries");
    let warned = logbook
        .dump()
        .into_iter()
        .any(|e| e.level == Level::WARN && e.message.contains("http price source is down"));
    assert!(warned, "{:#?}", logbook.dump());
    assert_key_never_logged(&logbook);
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let server = Server::start(vec![Reply::Status(404)]).await;
    let mut source = HttpSource::new(&config(&server), Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM"])).await;
    assert_eq!(reasons(&batch), vec![("IBM".to_owned(), FailureReason::HttpStatus(404))]);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let (logbook, _guard) = capture_logs();
    let server = Server::start(vec![Reply::Silent, Reply::Silent]).await;
    let config =
        HttpSourceConfig { timeout: Duration::from_millis(200), retries_max: 1, ..config(&server) };
    let mut source = HttpSource::new(&config, Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM"])).await;
    assert!(batch.ticks.is_empty());
    assert_eq!(reasons(&batch), vec![("IBM".to_owned(), FailureReason::Timeout)]);
    assert_key_never_logged(&logbook);
}

/// A fetch within a shorter budget (the master's last one as it stops) ends by that budget,
/// not by the request timeout or the source's own budget.
#[tokio::test]
async fn a_fetch_within_a_short_budget_ends_by_it() {
    let server = Server::start(vec![Reply::Silent, Reply::Silent, Reply::Silent]).await;
    let config = HttpSourceConfig { timeout: Duration::from_secs(3600), ..config(&server) };
    let mut source = HttpSource::new(&config, Duration::from_secs(3600)).unwrap();
    let assets = symbols(&["IBM", "AAPL"]);
    let fetch = source.fetch_within(&assets, Duration::from_millis(200));
    let batch = tokio::time::timeout(Duration::from_secs(30), fetch)
        .await
        .expect("the fetch ended by its budget, not by the hour-long timeout");
    assert!(batch.ticks.is_empty());
    let reasons = reasons(&batch);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|(_, r)| matches!(r, FailureReason::Timeout | FailureReason::DeadlineReached)),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connection_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (logbook, _guard) = capture_logs();
    let config = HttpSourceConfig {
        base_url: format!("http://{addr}"),
        api_key: Some(ApiKey::new(KEY)),
        retries_max: 1,
        retry_backoff: Duration::from_millis(1),
        ..HttpSourceConfig::default()
    };
    let mut source = HttpSource::new(&config, Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM", "MSFT"])).await;
    assert!(batch.ticks.is_empty());
    assert_eq!(batch.failures.len(), 2);
    for failure in &batch.failures {
        assert!(matches!(failure.reason, FailureReason::Connection(_)), "{failure:?}");
        assert!(!failure.reason.to_string().contains(KEY));
    }
    assert_key_never_logged(&logbook);
}

#[tokio::test]
async fn the_rate_limit_note_skips_the_rest_of_the_interval() {
    let (logbook, _guard) = capture_logs();
    let note = format!(
        r#"{{"Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute. apikey={KEY}"}}"#
    );
    let server = Server::start(vec![
        quote("AAPL", "1", "2", "1", "2", "10"),
        Reply::Json(note),
        quote("MSFT", "1", "2", "1", "2", "10"),
    ])
    .await;
    let mut source = HttpSource::new(&config(&server), Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["AAPL", "IBM", "MSFT"])).await;
    assert_eq!(batch.ticks.len(), 1);
    let failures = reasons(&batch);
    assert_eq!(failures.len(), 2);
    for (_, reason) in &failures {
        let FailureReason::RateLimited(text) = reason else { panic!("{reason:?}") };
        assert!(text.contains("5 calls per minute") && !text.contains(KEY), "{text}");
    }
    assert_eq!(server.requests().len(), 2, "MSFT is not asked after the note");
    assert_key_never_logged(&logbook);
}

#[tokio::test]
async fn malformed_json_fails_the_symbol_only() {
    let server = Server::start(vec![
        Reply::Json("{\"Global Quote\": {\"01. symbol\": \"IBM\", \"05. price\": ".to_owned()),
        Reply::Json(r#"{"Error Message": "Invalid API call."}"#.to_owned()),
        Reply::Json(r#"{"Global Quote": {}}"#.to_owned()),
        quote("MSFT", "1", "2", "1", "1.5", "10"),
    ])
    .await;
    let mut source = HttpSource::new(&config(&server), Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM", "BAD", "NONE", "MSFT"])).await;
    let failures = reasons(&batch);
    assert!(matches!(&failures[0], (s, FailureReason::Malformed(_)) if s == "IBM"), "{failures:?}");
    assert!(matches!(&failures[1], (s, FailureReason::Provider(_)) if s == "BAD"), "{failures:?}");
    assert_eq!(failures[2], ("NONE".to_owned(), FailureReason::NoData));
    assert_eq!(batch.ticks.len(), 1);
    assert_eq!(server.requests().len(), 4, "malformed answers are not retried");
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let padding = "x".repeat(4096);
    let server = Server::start(vec![Reply::Json(format!(r#"{{"pad": "{padding}"}}"#))]).await;
    let config = HttpSourceConfig { response_bytes_max: 1024, ..config(&server) };
    let mut source = HttpSource::new(&config, Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM"])).await;
    assert_eq!(reasons(&batch), vec![("IBM".to_owned(), FailureReason::TooLarge(1024))]);
}

#[tokio::test]
async fn the_calls_per_minute_cap_skips_the_remaining_symbols() {
    let server = Server::start(vec![
        quote("AAPL", "1", "2", "1", "2", "10"),
        quote("IBM", "1", "2", "1", "2", "10"),
        quote("MSFT", "1", "2", "1", "2", "10"),
    ])
    .await;
    let config = HttpSourceConfig { calls_per_minute_max: 2, ..config(&server) };
    let mut source = HttpSource::new(&config, Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["AAPL", "IBM", "MSFT", "GOOG"])).await;
    assert_eq!(batch.ticks.len(), 2);
    assert_eq!(
        reasons(&batch),
        vec![
            ("MSFT".to_owned(), FailureReason::CallCapReached),
            ("GOOG".to_owned(), FailureReason::CallCapReached),
        ]
    );
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn retries_count_against_the_cap() {
    let server = Server::start(vec![Reply::Status(500), Reply::Status(500)]).await;
    let config = HttpSourceConfig { calls_per_minute_max: 2, retries_max: 5, ..config(&server) };
    let mut source = HttpSource::new(&config, Duration::from_secs(60)).unwrap();
    let batch = source.fetch(&symbols(&["IBM", "MSFT"])).await;
    assert_eq!(
        reasons(&batch),
        vec![
            ("IBM".to_owned(), FailureReason::HttpStatus(500)),
            ("MSFT".to_owned(), FailureReason::CallCapReached),
        ]
    );
    assert_eq!(server.requests().len(), 2);
}

/// After an interval cut short (the rate-limit note, the call cap), the next one starts with the
/// first asset it skipped: every asset gets its turn, instead of the first ones taking every
/// request the quota allows and the others never getting a price.
#[tokio::test]
async fn the_next_interval_starts_where_the_last_one_stopped() {
    let note = r#"{"Note": "Our standard API call frequency is 5 calls per minute."}"#;
    let server = Server::start(vec![
        quote("AAPL", "1", "2", "1", "2", "10"),
        Reply::Json(note.to_owned()),
        quote("IBM", "1", "2", "1", "2", "10"),
        quote("MSFT", "1", "2", "1", "2", "10"),
        quote("AAPL", "1", "2", "1", "2", "10"),
    ])
    .await;
    let mut source = HttpSource::new(&config(&server), Duration::from_secs(60)).unwrap();
    let assets = symbols(&["AAPL", "IBM", "MSFT"]);
    let first = source.fetch(&assets).await;
    assert_eq!(first.ticks.len(), 1, "AAPL only: IBM got the note, MSFT was skipped");
    let second = source.fetch(&assets).await;
    assert_eq!(second.ticks.len(), 3);
    let asked: Vec<String> = server.requests();
    let order: Vec<&str> = asked
        .iter()
        .map(|url| {
            ["AAPL", "IBM", "MSFT"]
                .into_iter()
                .find(|s| url.contains(&format!("symbol={s}&")))
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(order, vec!["AAPL", "IBM", "IBM", "MSFT", "AAPL"], "{asked:?}");
}
