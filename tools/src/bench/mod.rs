//! `pt bench`: performance measured as ratios to a baseline measured in the same run, on the
//! same machine, because the machines are shared and noisy (issue 7, `docs/PERFORMANCE.md`).
//!
//! One file per figure: [`engine`] (settlement beside a map-lookup loop), [`journal`] (durable
//! append beside `write` + `fdatasync`, and audit replay beside read + crc32), [`e2e`] (real
//! `pt-master` and `pt-worker` processes under a load generator speaking the wire protocol,
//! beside a tokio echo server; plus an overload step), [`login`] (a login storm beside raw
//! argon2, and the order latency during it) and [`peer`] (our journal beside SQLite doing the
//! same work the way a typical server does it).
//!
//! Benches report; they never fail on a missed target. Only a bench that could not run at all
//! (a missing binary, a full disk) is an error. Rates and ratios are `f64` for printing;
//! latencies are collected in integer microseconds ([`Histogram`]).

#![allow(clippy::float_arithmetic)]

pub mod doc;
pub mod e2e;
pub mod engine;
pub mod journal;
pub mod login;
pub mod peer;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::UsageError;

/// Which figures to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// `engine.settle`.
    Engine,
    /// `journal.append.b1` to `.b10000`.
    Journal,
    /// `replay.audit`.
    Replay,
    /// `e2e.orders`, `e2e.p50_ms`, `e2e.p99_ms`, `e2e.max_ms` and the overload step.
    E2e,
    /// `login.per_s`, `login.order_p99_ms`.
    Login,
    /// `peer.sqlite`.
    Peer,
    /// Everything, in that order.
    All,
}

/// Arguments of `pt bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Which figures to measure.
    #[arg(value_enum, default_value = "all")]
    pub which: Which,
    /// Print one JSON object per line and per figure instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Tiny workloads and durations (a smoke test of the benches; the numbers mean nothing).
    #[arg(long)]
    pub quick: bool,
    /// Directory for the temporary journals, plain files and data directories (default: the
    /// system's temporary directory). The disk under it is the disk measured.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Replace the figures section of this Markdown file (between the `pt bench` markers) with
    /// the figures of this run, e.g. `docs/PERFORMANCE.md`.
    #[arg(long, value_name = "FILE")]
    pub write_doc: Option<PathBuf>,
    /// How long each load phase of `e2e` and `login` runs.
    #[arg(long, default_value = "5s", value_name = "DURATION",
          value_parser = crate::client::commands::parse_duration)]
    pub duration: Duration,
    /// Concurrent client connections of the load generator (`e2e`, `login`).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: u32,
    /// Orders each connection keeps in flight (closed loop: a new one for each answer).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub window: u32,
    /// The master's update interval in `e2e` and `login`.
    #[arg(long, default_value = "50ms", value_name = "DURATION",
          value_parser = crate::client::commands::parse_duration)]
    pub interval: Duration,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            which: Which::All,
            json: false,
            quick: false,
            dir: None,
            write_doc: None,
            duration: Duration::from_secs(5),
            connections: 256,
            window: 12,
            interval: Duration::from_millis(50),
        }
    }
}

/// One measured figure: the value, the baseline measured in the same run, their ratio. The JSON
/// form has exactly the fields `figure`, `value`, `unit`, `baseline`, `ratio`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// The figure's name (`engine.settle`, `e2e.p99_ms`...).
    pub figure: String,
    /// What was measured.
    pub value: f64,
    /// Its unit (`orders/s`, `events/s`, `ms`...).
    pub unit: &'static str,
    /// The baseline, in the same unit.
    pub baseline: f64,
    /// `value / baseline`.
    pub ratio: f64,
    /// What the baseline is, for the table.
    #[serde(skip)]
    pub baseline_is: String,
    /// The target, if the issue sets one, and whether this run met it.
    #[serde(skip)]
    pub target: Option<Target>,
}

/// A target and whether it was met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The target in words (`>= 2,000,000 orders/s and ratio >= 0.2`).
    pub text: String,
    /// Whether this run met it.
    pub met: bool,
}

impl Figure {
    /// A figure with its ratio computed (0 when the baseline is 0).
    pub fn new(
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
        baseline: f64,
        baseline_is: impl Into<String>,
    ) -> Self {
        let ratio = if baseline > 0.0 { value / baseline } else { 0.0 };
        Self {
            figure: figure.into(),
            value,
            unit,
            baseline,
            ratio,
            baseline_is: baseline_is.into(),
            target: None,
        }
    }

    /// The same figure with a target.
    pub fn with_target(mut self, text: impl Into<String>, met: bool) -> Self {
        self.target = Some(Target { text: text.into(), met });
        self
    }

    /// The JSON line, exactly as the issue writes it: `{"figure": "engine.settle", "value":
    /// 2500000.0, "unit": "orders/s", "baseline": 9000000.0, "ratio": 0.28}` (a space after
    /// each colon and comma; a number that is not finite is `null`).
    pub fn json(&self) -> String {
        let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| String::from("null"));
        let number = |x: f64| serde_json::to_string(&x).unwrap_or_else(|_| String::from("null"));
        format!(
            "{{\"figure\": {}, \"value\": {}, \"unit\": {}, \"baseline\": {}, \"ratio\": {}}}",
            text(&self.figure),
            number(self.value),
            text(self.unit),
            number(self.baseline),
            number(self.ratio)
        )
    }

    /// One line for the terminal.
    pub fn text(&self) -> String {
        let target = match &self.target {
            Some(t) => format!("  target {}: {}", t.text, if t.met { "met" } else { "MISSED" }),
            None => String::new(),
        };
        format!(
            "{:<22} {:>14} {:<9} baseline {:>14} ({})  ratio {:.3}{target}",
            self.figure,
            number(self.value),
            self.unit,
            number(self.baseline),
            self.baseline_is,
            self.ratio,
        )
    }
}

/// A number for humans: thousands separated by commas above 100, three decimals below.
pub fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value.abs() < 100.0 {
        return format!("{value:.3}");
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0.0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Events (or orders) per second.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Latencies in integer microseconds; percentiles are exact (the samples are kept and sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    samples_us: Vec<u64>,
    sorted: bool,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.samples_us.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        self.samples_us.extend_from_slice(&other.samples_us);
        self.sorted = false;
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        u64::try_from(self.samples_us.len()).unwrap_or(u64::MAX)
    }

    /// The `per_mille`-th per mille (500 = median, 990 = p99, 1000 = max) in microseconds; 0
    /// when empty.
    pub fn percentile_us(&mut self, per_mille: u64) -> u64 {
        if self.samples_us.is_empty() {
            return 0;
        }
        if !self.sorted {
            self.samples_us.sort_unstable();
            self.sorted = true;
        }
        let last = self.samples_us.len() - 1;
        let last_u64 = u64::try_from(last).unwrap_or(u64::MAX);
        let rank = last_u64.saturating_mul(per_mille.min(1000)).div_ceil(1000);
        let index = usize::try_from(rank).unwrap_or(last).min(last);
        self.samples_us.get(index).copied().unwrap_or(0)
    }

    /// The same percentile in milliseconds, for printing.
    pub fn percentile_ms(&mut self, per_mille: u64) -> f64 {
        self.percentile_us(per_mille) as f64 / 1000.0
    }
}

/// The directory benches write into: `--dir`, or the system's temporary directory.
pub fn base_dir(args: &BenchArgs) -> PathBuf {
    args.dir.clone().unwrap_or_else(std::env::temp_dir)
}

/// Runs the chosen benches, printing each figure as it is measured (JSON lines with `--json`,
/// otherwise a table), and returns every figure. A bench that cannot run is reported on stderr
/// and the others go on; the error is returned at the end.
pub fn run(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    // The doc's figures are one run of every bench: checked before minutes of benches.
    if let Some(path) = &args.write_doc {
        if args.which != Which::All {
            return Err(UsageError(
                "--write-doc replaces the figures of every bench: use it with `pt bench all`"
                    .to_owned(),
            )
            .into());
        }
        doc::check_writable(path)?;
    }
    let dir = base_dir(args);
    if doc::in_memory(&dir) {
        eprintln!(
            "pt bench: {} is on a filesystem in memory: fdatasync writes no disk there, so the \
             journal, replay, peer and e2e figures do not measure durable writes; pass --dir on \
             a disk",
            dir.display()
        );
    }
    // The journal runs in this process for the journal, replay and peer benches: with the
    // heap the master gives it at start (`journal::heap`), whichever benches ran before.
    ::journal::heap::keep_commit_buffers();
    let which = |w: Which| args.which == Which::All || args.which == w;
    let mut figures = Vec::new();
    let mut failures = Vec::new();
    let mut report = |name: &str, result: anyhow::Result<Vec<Figure>>| match result {
        Ok(measured) => {
            for figure in &measured {
                // A reader gone (`| head`) does not stop the run: the document is still written.
                let _ = crate::print_out(&if args.json { figure.json() } else { figure.text() });
            }
            figures.extend(measured);
        }
        Err(err) => {
            let text = master::report::chain(&*err);
            eprintln!("pt bench {name}: could not run: {text}");
            failures.push(format!("{name}: {text}"));
        }
    };
    if which(Which::Engine) {
        report("engine", engine::run(args));
    }
    if which(Which::Journal) {
        report("journal", journal::run_append(args));
    }
    if which(Which::Replay) {
        report("replay", journal::run_replay(args));
    }
    if which(Which::E2e) {
        report("e2e", e2e::run(args));
    }
    if which(Which::Login) {
        report("login", login::run(args));
    }
    if which(Which::Peer) {
        report("peer", peer::run(args));
    }
    if let Some(path) = &args.write_doc {
        if failures.is_empty() {
            doc::write(path, args, &figures)?;
            eprintln!("pt bench: wrote the figures into {}", path.display());
        } else {
            eprintln!(
                "pt bench: {} left as it was: a run with benches that could not run is not the \
                 figures of every bench",
                path.display()
            );
        }
    }
    if failures.is_empty() {
        Ok(figures)
    } else {
        anyhow::bail!("{} bench(es) could not run: {}", failures.len(), failures.join("; "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact_ranks() {
        let mut h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.percentile_us(0), 1);
        assert_eq!(h.percentile_us(500), 51);
        assert_eq!(h.percentile_us(990), 100);
        assert_eq!(h.percentile_us(1000), 100);
        assert_eq!(Histogram::new().percentile_us(990), 0);
    }

    #[test]
    fn figures_print_in_the_issue_shape() {
        let f = Figure::new("engine.settle", 2_500_000.0, "orders/s", 10_000_000.0, "loop");
        assert_eq!(
            f.json(),
            r#"{"figure": "engine.settle", "value": 2500000.0, "unit": "orders/s", "baseline": 10000000.0, "ratio": 0.25}"#
        );
        let v: serde_json::Value = serde_json::from_str(&f.json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 5);
        assert_eq!(v["ratio"], 0.25);
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(12.5), "12.500");
    }
}
