//! The HTTP price source: Alpha Vantage's `GLOBAL_QUOTE` endpoint, one request per symbol:
//! `GET {base_url}/query?function=GLOBAL_QUOTE&symbol=IBM&apikey=KEY`, answering
//! `{"Global Quote": {"01. symbol": "IBM", "02. open": "...", "03. high": "...", "04. low":
//! "...", "05. price": "...", "06. volume": "...", "07. latest trading day": "2024-05-10", ...}}`.
//! Prices are parsed as exact decimals ([`Price::parse`]), never through floats. The tick's
//! `close` is the current price, its `time` the latest trading day (00:00 UTC).
//!
//! Every fetch has a time budget (the update interval): no request starts after it, and a
//! request's timeout is cut to what is left of it, so a fetch never runs into the next interval.
//! Calls are capped per minute by a token bucket (GCRA): when the cap is reached, the remaining
//! symbols are skipped for this interval, as they are after the provider's rate-limit answer
//! (`Note` or `Information`). Server errors (5xx), timeouts and connection errors are retried
//! with exponential backoff, each retry a call. Other answers fail the symbol at once.
//!
//! The API key travels only in the request URL: it never appears in a log line or an error
//! (reqwest errors are stripped of their URL, and provider messages have the key cut out).

use std::collections::VecDeque;
use std::time::Duration;

use engine::{Price, Qty, Symbol, Tick, Timestamp};
use serde::Deserialize;
use tokio::time::Instant;

use super::{FailureReason, PriceBatch, PriceSource, PriceSourceError, SymbolFailure};
use crate::config::{ApiKey, HttpSourceConfig};

/// Longest wait before one retry.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest provider message kept in a failure, in bytes.
const PROVIDER_MESSAGE_BYTES_MAX: usize = 200;
/// While the source stays down, at most one warning per this long.
const DOWN_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Prices from Alpha Vantage over HTTP.
pub struct HttpSource {
    client: reqwest::Client,
    /// `{base_url}/query`, without the key.
    endpoint: reqwest::Url,
    api_key: ApiKey,
    config: HttpSourceConfig,
    budget: Duration,
    calls: CallWindow,
    /// When the last "source down" warning was logged, while down.
    down_since_warning: Option<Instant>,
    /// Where in the sorted asset list the next interval starts: the first asset the call cap
    /// or the deadline made this one skip, so that every asset gets its turn.
    next_start: usize,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("endpoint", &self.endpoint.as_str())
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// A source with the given settings; `budget` is the most one fetch may take (the update
    /// interval). The settings must hold an API key.
    pub fn new(config: &HttpSourceConfig, budget: Duration) -> Result<Self, PriceSourceError> {
        let api_key = config
            .api_key
            .clone()
            .ok_or_else(|| PriceSourceError::Http("no API key configured".to_owned()))?;
        let endpoint = format!("{}/query", config.base_url.trim_end_matches('/'));
        let endpoint = reqwest::Url::parse(&endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| PriceSourceError::Http(format!("bad base URL {:?}", config.base_url)))?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            // A redirect would carry the key to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("papertrader-master/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PriceSourceError::Http(e.without_url().to_string()))?;
        Ok(Self {
            client,
            endpoint,
            api_key,
            config: config.clone(),
            budget,
            calls: CallWindow::new(config.calls_per_minute_max),
            down_since_warning: None,
            next_start: 0,
        })
    }

    /// Prices one symbol: retries, backoff, cap and deadline. A failure carries the symbol's
    /// reason and, when the rest of the interval's symbols must be skipped, theirs.
    async fn fetch_one(
        &mut self,
        symbol: Symbol,
        deadline: Instant,
    ) -> Result<Tick, (FailureReason, Option<FailureReason>)> {
        let mut attempt: u32 = 0;
        let mut last: Option<FailureReason> = None;
        loop {
            let mut now = Instant::now();
            // The next call the quota allows: now, or later in this interval (waited for), or
            // not before the deadline (the rest of the interval's assets are skipped).
            let allowed = self.calls.next_allowed(now);
            let blocked = if now >= deadline {
                Some(FailureReason::DeadlineReached)
            } else if allowed >= deadline {
                Some(FailureReason::CallCapReached)
            } else {
                None
            };
            if blocked.is_none() && allowed > now {
                tokio::time::sleep_until(allowed).await;
                now = Instant::now();
            }
            if let Some(rest) = blocked {
                // A blocked retry reports the failure that called for it.
                return Err((last.unwrap_or_else(|| rest.clone()), Some(rest)));
            }
            self.calls.take(now);
            let timeout = self.config.timeout.min(deadline.saturating_duration_since(now));
            let reason = match self.request(symbol, timeout).await {
                Ok(tick) => return Ok(tick),
                Err(Attempt::Final(reason @ FailureReason::RateLimited(_))) => {
                    return Err((reason.clone(), Some(reason)));
                }
                Err(Attempt::Final(reason)) => return Err((reason, None)),
                Err(Attempt::Retryable(reason)) => reason,
            };
            if attempt >= self.config.retries_max {
                return Err((reason, None));
            }
            let backoff = self
                .config
                .retry_backoff
                .checked_mul(1u32 << attempt.min(16))
                .unwrap_or(RETRY_BACKOFF_MAX)
                .min(RETRY_BACKOFF_MAX);
            if Instant::now() + backoff >= deadline {
                return Err((reason, None));
            }
            tracing::debug!(%symbol, attempt, cause = %reason, ?backoff, "price request failed; retrying");
            tokio::time::sleep(backoff).await;
            last = Some(reason);
            attempt += 1;
        }
    }

    /// One request, one answer.
    async fn request(&self, symbol: Symbol, timeout: Duration) -> Result<Tick, Attempt> {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("function", "GLOBAL_QUOTE")
            .append_pair("symbol", symbol.as_str())
            .append_pair("apikey", self.api_key.expose());
        let mut response =
            self.client.get(url).timeout(timeout).send().await.map_err(transport_error)?;
        let status = response.status();
        if status.as_u16() == 429 {
            return Err(Attempt::Final(FailureReason::RateLimited("HTTP 429".to_owned())));
        }
        if status.is_server_error() {
            return Err(Attempt::Retryable(FailureReason::HttpStatus(status.as_u16())));
        }
        if !status.is_success() {
            return Err(Attempt::Final(FailureReason::HttpStatus(status.as_u16())));
        }
        let max = self.config.response_bytes_max;
        let max_bytes = usize::try_from(max).unwrap_or(usize::MAX);
        if response.content_length().is_some_and(|n| n > u64::from(max)) {
            return Err(Attempt::Final(FailureReason::TooLarge(max)));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len().saturating_add(chunk.len()) > max_bytes {
                return Err(Attempt::Final(FailureReason::TooLarge(max)));
            }
            body.extend_from_slice(&chunk);
        }
        let tick = parse_answer(&body, symbol, self.api_key.expose()).map_err(Attempt::Final)?;
        check_age(&tick, crate::core::now(), self.config.quote_age_max).map_err(Attempt::Final)?;
        Ok(tick)
    }

    /// Logs the outcome of one fetch: a warning when symbols got no price (at most one a
    /// minute while the source stays down), an info line when it comes back.
    fn report(&mut self, asked: usize, failures: &[SymbolFailure]) {
        let host = self.endpoint.host_str().unwrap_or("?").to_owned();
        let Some(first) = failures.first() else {
            if self.down_since_warning.take().is_some() {
                tracing::info!(%host, "http price source is answering again");
            }
            return;
        };
        for failure in failures {
            tracing::debug!(symbol = %failure.symbol, cause = %failure.reason, "no price");
        }
        let now = Instant::now();
        let due = self.down_since_warning.is_none_or(|at| now - at >= DOWN_WARNING_EVERY);
        if due {
            self.down_since_warning = Some(now);
            let failed = failures.len();
            let (symbol, cause) = (first.symbol, &first.reason);
            if failed == asked {
                tracing::warn!(%host, failed, %symbol, %cause,
                    "http price source is down: no price for any asset this interval");
            } else {
                tracing::warn!(%host, failed, asked, %symbol, %cause,
                    "http price source: some assets have no price this interval");
            }
        }
    }
}

impl PriceSource for HttpSource {
    async fn fetch(&mut self, symbols: &[Symbol]) -> PriceBatch {
        self.fetch_within(symbols, self.budget).await
    }

    async fn fetch_within(&mut self, symbols: &[Symbol], budget: Duration) -> PriceBatch {
        let mut symbols = super::unique(symbols);
        // Round robin: start where the last interval had to stop, or the call cap would give
        // every request to the first assets and leave the others without a price for good.
        let start = if symbols.is_empty() { 0 } else { self.next_start % symbols.len() };
        symbols.rotate_left(start);
        let deadline = Instant::now() + budget.min(self.budget);
        let mut ticks = Vec::with_capacity(symbols.len());
        let mut failures = Vec::new();
        // Set once the rest of this interval's symbols must be skipped.
        let mut stop: Option<FailureReason> = None;
        let mut first_skipped = None;
        for (index, &symbol) in symbols.iter().enumerate() {
            if let Some(reason) = &stop {
                first_skipped.get_or_insert(index);
                failures.push(SymbolFailure { symbol, reason: reason.clone() });
                continue;
            }
            match self.fetch_one(symbol, deadline).await {
                Ok(tick) => ticks.push(tick),
                Err((reason, rest)) => {
                    if rest.is_some() {
                        // This one was not asked for (or its retry was not): its turn is next.
                        first_skipped.get_or_insert(index);
                    }
                    stop = rest;
                    failures.push(SymbolFailure { symbol, reason });
                }
            }
        }
        self.next_start = first_skipped.map_or(start, |index| start + index);
        self.report(symbols.len(), &failures);
        super::batch(None, ticks, failures)
    }

    fn known_symbols(&self) -> Option<Vec<Symbol>> {
        None
    }

    fn name(&self) -> &'static str {
        "http"
    }
}

/// A failed attempt: worth retrying or not.
enum Attempt {
    Retryable(FailureReason),
    Final(FailureReason),
}

fn transport_error(e: reqwest::Error) -> Attempt {
    let e = e.without_url();
    if e.is_timeout() {
        Attempt::Retryable(FailureReason::Timeout)
    } else {
        Attempt::Retryable(FailureReason::Connection(error_chain(&e)))
    }
}

/// An error and its causes on one line (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "Global Quote")]
    quote: Option<Quote>,
    #[serde(rename = "Note")]
    note: Option<String>,
    #[serde(rename = "Information")]
    information: Option<String>,
    #[serde(rename = "Error Message")]
    error_message: Option<String>,
}

#[derive(Deserialize)]
struct Quote {
    #[serde(rename = "01. symbol")]
    symbol: Option<String>,
    #[serde(rename = "02. open")]
    open: Option<String>,
    #[serde(rename = "03. high")]
    high: Option<String>,
    #[serde(rename = "04. low")]
    low: Option<String>,
    #[serde(rename = "05. price")]
    price: Option<String>,
    #[serde(rename = "06. volume")]
    volume: Option<String>,
    #[serde(rename = "07. latest trading day")]
    latest_trading_day: Option<String>,
}

/// A provider message, shortened, with the key cut out.
fn provider_text(message: &str, api_key: &str) -> String {
    let clean =
        if api_key.is_empty() { message.to_owned() } else { message.replace(api_key, "<key>") };
    let mut end = clean.len().min(PROVIDER_MESSAGE_BYTES_MAX);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].to_owned()
}

/// How far past the master's clock a quote's trading day may start: one day, for a market
/// whose date is ahead of UTC's.
const QUOTE_AHEAD_MAX_MICROS: i64 = 86_400_000_000;

/// Whether a price dated `time` is further ahead of `now` than any quote this source takes:
/// a journal whose current prices are would refuse every quote as older.
pub fn beyond_any_quote(time: Timestamp, now: Timestamp) -> bool {
    time.0.saturating_sub(now.0) > QUOTE_AHEAD_MAX_MICROS
}

/// Refuses a quote whose period (its latest trading day, 00:00 UTC) started more than
/// `age_max` before `now`: the last close of a delisted or suspended symbol is not a price to
/// trade on. Refuses one that starts more than a day after `now` too: the newest tick is an
/// asset's current price, so a quote dated in the future would stay it for good.
fn check_age(tick: &Tick, now: Timestamp, age_max: Duration) -> Result<(), FailureReason> {
    let age_max = i64::try_from(age_max.as_micros()).unwrap_or(i64::MAX);
    if now.0.saturating_sub(tick.time.0) > age_max {
        return Err(FailureReason::Stale(tick.time.to_string()));
    }
    if beyond_any_quote(tick.time, now) {
        return Err(FailureReason::FromTheFuture(tick.time.to_string()));
    }
    Ok(())
}

/// Parses one `GLOBAL_QUOTE` answer into a valid tick for `symbol`.
fn parse_answer(body: &[u8], symbol: Symbol, api_key: &str) -> Result<Tick, FailureReason> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        FailureReason::Malformed(provider_text(&format!("not a quote JSON object: {e}"), api_key))
    })?;
    if let Some(note) = answer.note.as_deref().or(answer.information.as_deref()) {
        return Err(FailureReason::RateLimited(provider_text(note, api_key)));
    }
    if let Some(message) = &answer.error_message {
        return Err(FailureReason::Provider(provider_text(message, api_key)));
    }
    let Some(quote) = answer.quote else {
        return Err(FailureReason::Malformed("no \"Global Quote\" object".to_owned()));
    };
    if quote.symbol.is_none() && quote.price.is_none() {
        // Alpha Vantage answers an unknown symbol with an empty quote.
        return Err(FailureReason::NoData);
    }
    // A quote must say whose it is: one without a symbol is not taken for the one asked.
    match quote.symbol.as_deref() {
        Some(s) if s == symbol.as_str() => {}
        Some(_) => return Err(FailureReason::Malformed("quote for another symbol".to_owned())),
        None => return Err(FailureReason::Malformed("no \"01. symbol\"".to_owned())),
    }
    let field = |name: &'static str, value: &Option<String>| -> Result<String, FailureReason> {
        value.clone().ok_or_else(|| FailureReason::Malformed(format!("no {name:?}")))
    };
    let price = |name: &'static str, value: &Option<String>| -> Result<Price, FailureReason> {
        let text = field(name, value)?;
        Price::parse(&text).map_err(|e| FailureReason::Malformed(format!("{name:?} {text:?}: {e}")))
    };
    let volume_text = field("06. volume", &quote.volume)?;
    let volume = Qty::parse(&volume_text)
        .map_err(|e| FailureReason::Malformed(format!("\"06. volume\" {volume_text:?}: {e}")))?;
    let day = field("07. latest trading day", &quote.latest_trading_day)?;
    let time = engine::recorded::parse_time(&day)
        .ok_or_else(|| FailureReason::Malformed(format!("latest trading day {day:?}")))?;
    let tick = Tick {
        symbol,
        open: price("02. open", &quote.open)?,
        high: price("03. high", &quote.high)?,
        low: price("04. low", &quote.low)?,
        close: price("05. price", &quote.price)?,
        volume,
        time,
    };
    tick.validate().map_err(|e| FailureReason::BadTick(e.to_string()))?;
    Ok(tick)
}

/// The calls-per-minute cap as a GCRA token bucket: a burst of up to `cap` calls, then one
/// every `60 s / cap`. Pure: `now` comes in.
/// The provider's quota: at most `cap` calls in any 60 seconds, retries included. A sliding
/// window of the last calls' times, so that no minute, however it is cut, holds more (a token
/// bucket that starts full allows `2 * cap - 1` in the first minute, and after every pause).
#[derive(Debug, Clone)]
struct CallWindow {
    cap: usize,
    /// The times of the calls of the last 60 seconds (at most `cap`), oldest first.
    calls: VecDeque<Instant>,
}

/// The quota's window.
const QUOTA_WINDOW: Duration = Duration::from_secs(60);

impl CallWindow {
    fn new(calls_per_minute_max: u32) -> Self {
        let cap = usize::try_from(calls_per_minute_max.max(1)).unwrap_or(usize::MAX);
        Self { cap, calls: VecDeque::new() }
    }

    /// When the next call is allowed: `now` when the last 60 seconds hold fewer than `cap`
    /// calls, else 60 seconds after the oldest of them.
    fn next_allowed(&mut self, now: Instant) -> Instant {
        while self
            .calls
            .front()
            .is_some_and(|&at| now.saturating_duration_since(at) >= QUOTA_WINDOW)
        {
            self.calls.pop_front();
        }
        match self.calls.front() {
            Some(&oldest) if self.calls.len() >= self.cap => oldest + QUOTA_WINDOW,
            _ => now,
        }
    }

    /// Records a call made at `at` (at or after [`CallWindow::next_allowed`]).
    fn take(&mut self, at: Instant) {
        debug_assert!(
            self.calls.len() < self.cap
                || self.calls.front().is_some_and(|&o| at >= o + QUOTA_WINDOW)
        );
        if self.calls.len() >= self.cap {
            self.calls.pop_front();
        }
        self.calls.push_back(at);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn ibm() -> Symbol {
        Symbol::new("IBM").unwrap()
    }

    /// No 60 seconds, however they are cut, hold more than `cap` calls: after a full window
    /// the next call waits for the oldest to leave it.
    #[test]
    fn the_call_window_never_allows_more_than_the_cap_in_a_minute() {
        let start = Instant::now();
        let mut window = CallWindow::new(3);
        for second in [0, 10, 20] {
            let at = start + Duration::from_secs(second);
            assert_eq!(window.next_allowed(at), at);
            window.take(at);
        }
        // Full: the next call is allowed 60 s after the oldest, not before.
        let at = start + Duration::from_secs(30);
        assert_eq!(window.next_allowed(at), start + QUOTA_WINDOW);
        window.take(start + QUOTA_WINDOW);
        assert_eq!(
            window.next_allowed(start + QUOTA_WINDOW),
            start + Duration::from_secs(70),
            "then 60 s after the call at 10 s"
        );
        // Simulated over ten minutes of calls made as soon as allowed: every 60 s window
        // holds at most 3.
        let mut window = CallWindow::new(3);
        let mut made = Vec::new();
        let mut now = start;
        loop {
            now = window.next_allowed(now);
            if now >= start + Duration::from_secs(600) {
                break;
            }
            window.take(now);
            made.push(now);
        }
        for (i, &first) in made.iter().enumerate() {
            let in_window = made[i..].iter().take_while(|&&t| t < first + QUOTA_WINDOW).count();
            assert!(in_window <= 3, "{in_window} calls in the minute from call {i}");
        }
        assert_eq!(made.len(), 30, "and the whole quota is used");
    }

    #[test]
    fn a_quote_older_than_the_limit_is_not_used() {
        let body = br#"{"Global Quote": {"01. symbol": "IBM", "02. open": "1", "03. high": "2",
            "04. low": "1", "05. price": "2", "06. volume": "1", "07. latest trading day": "2024-05-10"}}"#;
        let tick = parse_answer(body, ibm(), "k").unwrap();
        let day = 86_400_000_000;
        let week = Duration::from_secs(7 * 86_400);
        // Friday's quote on Monday, and a week later to the microsecond: used.
        assert_eq!(check_age(&tick, Timestamp(tick.time.0 + 3 * day), week), Ok(()));
        assert_eq!(check_age(&tick, Timestamp(tick.time.0 + 7 * day), week), Ok(()));
        // Older: refused, naming the day.
        match check_age(&tick, Timestamp(tick.time.0 + 7 * day + 1), week) {
            Err(FailureReason::Stale(day)) => assert!(day.starts_with("2024-05-10"), "{day}"),
            other => panic!("{other:?}"),
        }
        // A trading day up to a day ahead of the clock (a market east of UTC): used.
        assert_eq!(check_age(&tick, Timestamp(tick.time.0 - day), week), Ok(()));
        // Further ahead: refused, naming the day, even with no age limit to speak of.
        for age_max in [week, Duration::MAX] {
            match check_age(&tick, Timestamp(tick.time.0 - day - 1), age_max) {
                Err(FailureReason::FromTheFuture(day)) => {
                    assert!(day.starts_with("2024-05-10"), "{day}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn parses_a_quote_exactly() {
        let body = br#"{"Global Quote": {"01. symbol": "IBM", "02. open": "167.5000",
            "03. high": "168.1234", "04. low": "166.0001", "05. price": "167.9999",
            "06. volume": "3458834", "07. latest trading day": "2024-05-10",
            "08. previous close": "167.1500", "09. change": "0.8499", "10. change percent": "0.5%"}}"#;
        let tick = parse_answer(body, ibm(), "k").unwrap();
        assert_eq!(tick.open.raw(), 16_750_000_000);
        assert_eq!(tick.high.raw(), 16_812_340_000);
        assert_eq!(tick.low.raw(), 16_600_010_000);
        assert_eq!(tick.close.raw(), 16_799_990_000);
        assert_eq!(tick.volume, Qty::from_units(3_458_834).unwrap());
        assert_eq!(tick.time.to_string(), "2024-05-10T00:00:00Z");
    }

    #[test]
    fn refusals_and_garbage() {
        let note = br#"{"Note": "Thank you for using Alpha Vantage! key SECRETKEY limit 5/min"}"#;
        match parse_answer(note, ibm(), "SECRETKEY") {
            Err(FailureReason::RateLimited(text)) => {
                assert!(!text.contains("SECRETKEY"));
                assert!(text.contains("<key>"));
            }
            other => panic!("{other:?}"),
        }
        let info = br#"{"Information": "daily limit"}"#;
        assert!(matches!(parse_answer(info, ibm(), "k"), Err(FailureReason::RateLimited(_))));
        let error = br#"{"Error Message": "Invalid API call."}"#;
        assert!(matches!(parse_answer(error, ibm(), "k"), Err(FailureReason::Provider(_))));
        let empty = br#"{"Global Quote": {}}"#;
        assert_eq!(parse_answer(empty, ibm(), "k").unwrap_err(), FailureReason::NoData);
        for garbage in [&b"{"[..], b"[]", b"<html>", b"{\"Global Quote\": 5}", b"{}"] {
            assert!(matches!(parse_answer(garbage, ibm(), "k"), Err(FailureReason::Malformed(_))));
        }
        let float = br#"{"Global Quote": {"01. symbol": "IBM", "02. open": "1e2", "03. high": "2",
            "04. low": "1", "05. price": "1", "06. volume": "1", "07. latest trading day": "2024-05-10"}}"#;
        assert!(matches!(parse_answer(float, ibm(), "k"), Err(FailureReason::Malformed(_))));
        let inconsistent = br#"{"Global Quote": {"01. symbol": "IBM", "02. open": "5", "03. high": "2",
            "04. low": "1", "05. price": "1", "06. volume": "1", "07. latest trading day": "2024-05-10"}}"#;
        assert!(matches!(parse_answer(inconsistent, ibm(), "k"), Err(FailureReason::BadTick(_))));
        let other = br#"{"Global Quote": {"01. symbol": "MSFT", "02. open": "1", "03. high": "2",
            "04. low": "1", "05. price": "1", "06. volume": "1", "07. latest trading day": "2024-05-10"}}"#;
        assert!(matches!(parse_answer(other, ibm(), "k"), Err(FailureReason::Malformed(_))));
        let nameless = br#"{"Global Quote": {"02. open": "1", "03. high": "2", "04. low": "1",
            "05. price": "2", "06. volume": "1", "07. latest trading day": "2019-01-02"}}"#;
        match parse_answer(nameless, ibm(), "k") {
            Err(FailureReason::Malformed(why)) => assert!(why.contains("01. symbol"), "{why}"),
            other => panic!("a quote without a symbol was taken: {other:?}"),
        }
    }
}
