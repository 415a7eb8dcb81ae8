//! `login.per_s` and `login.order_p99_ms`: a login storm against real processes with the
//! master's default argon2 costs (OWASP's: 19 MiB, 2 passes), while the e2e order load runs.
//!
//! - `login.per_s`: successful logins per second during the storm ([`STORM_CONNECTIONS`]
//!   connections, each logging in again as soon as it is answered), beside raw argon2id hashes
//!   per second with the same costs on the same number of threads as the master's hash pool,
//!   in this process, measured just before.
//! - `login.order_p99_ms`: the order latency p99 during the storm, beside the p99 of the same
//!   order load without a storm, measured just before on the same processes. argon2 runs on
//!   its own threads and must not stall orders: target p99 within one interval plus 20 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use argon2::{Algorithm, Argon2, Params, Version};
use net::{FramedStream, Request, Response};
use tokio::net::TcpStream;

use super::e2e::{self, DEFAULT_ARGON2, Processes};
use super::{BenchArgs, Figure, base_dir, per_second};

/// Connections that log in over and over during the storm.
pub const STORM_CONNECTIONS: u32 = 32;
/// Threads of the master's hash pool (`auth.hash_threads` in the written configuration).
const HASH_THREADS: u32 = 2;

/// Raw argon2id hashes per second with `DEFAULT_ARGON2` on [`HASH_THREADS`] threads.
fn argon2_rate(duration: Duration) -> anyhow::Result<f64> {
    let costs = DEFAULT_ARGON2;
    let params = Params::new(costs.m_cost_kib, costs.t_cost, costs.p_cost, Some(32))
        .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + duration;
    let threads: Vec<_> = (0..HASH_THREADS)
        .map(|_| {
            let params = params.clone();
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                let mut out = [0u8; 32];
                while Instant::now() < until {
                    if hasher
                        .hash_password_into(
                            b"bench-password-32-bytes-long....",
                            b"saltsaltsaltsalt",
                            &mut out,
                        )
                        .is_ok()
                    {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| anyhow::anyhow!("an argon2 thread panicked"))?;
    }
    Ok(per_second(count.load(Ordering::Relaxed), start.elapsed()))
}

/// Measures the login figures.
pub fn run(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let (connections, duration) = e2e::sizes(args);
    let storm_connections = if args.quick { 2 } else { STORM_CONNECTIONS };
    let baseline_rate = argon2_rate(duration.min(Duration::from_secs(2)))?;
    let runtime = e2e::runtime()?;
    runtime.block_on(async {
        // Admission: the traders' orders, one login per storm connection, and the logouts the
        // worker sends for the storm users' first sessions (their connections close just
        // before the storm), as many at once as its logout task sends.
        let logouts = u32::try_from(worker::server::LOGOUTS_AT_ONCE).unwrap_or(u32::MAX);
        let admitted = connections
            .saturating_mul(args.window)
            .saturating_add(storm_connections)
            .saturating_add(logouts);
        let processes =
            Processes::start(&base_dir(args), args.interval, DEFAULT_ARGON2, admitted).await?;
        let run = e2e::run_tag();
        let traders = e2e::traders(processes.worker_addr, &run, connections).await?;
        let (traders, mut quiet) =
            e2e::phase(traders, args.window, duration / 2, args.interval).await?;

        let storm_run = format!("{run}s");
        // The storm users register before the clock starts (their own argon2 work).
        let mut storm_users = Vec::new();
        for i in 0..u64::from(storm_connections) {
            storm_users.push(e2e::trader(processes.worker_addr, &storm_run, i).await?);
        }
        drop(storm_users);
        let start = Instant::now();
        let until = start + duration;
        let storms: Vec<_> = (0..u64::from(storm_connections))
            .map(|i| tokio::spawn(storm_login(processes.worker_addr, storm_run.clone(), i, until)))
            .collect();
        let (traders, mut stormy) =
            e2e::phase(traders, args.window, duration, args.interval).await?;
        let mut logins = 0u64;
        let mut busy = 0u64;
        for task in storms {
            let (l, b) = task.await.context("a storm task failed")??;
            logins += l;
            busy += b;
        }
        let elapsed = start.elapsed().max(duration);
        drop(traders);
        let (slow, intervals) = processes.slow_intervals(args.interval);
        drop(processes);
        if busy > 0 {
            eprintln!("pt bench login: {busy} logins answered busy during the storm");
        }
        for (phase, stats) in [("quiet", &quiet), ("storm", &stormy)] {
            if let Some(report) = stats.unacknowledged_report() {
                eprintln!("pt bench login: orders of the {phase} phase not acknowledged: {report}");
            }
        }
        let interval_ms = args.interval.as_secs_f64() * 1000.0;
        let target_ms = interval_ms + e2e::TARGET_P99_SLACK.as_secs_f64() * 1000.0;
        let per_s = Figure::new(
            "login.per_s",
            per_second(logins, elapsed),
            "logins/s",
            baseline_rate,
            format!("raw argon2id, {HASH_THREADS} threads"),
        );
        let p99 = stormy.acked.percentile_ms(990);
        let (target, met) = e2e::served(
            format!("<= {target_ms:.0} ms (interval + 20 ms)"),
            p99 <= target_ms,
            &stormy,
        );
        let order_p99 = Figure::new(
            "login.order_p99_ms",
            p99,
            "ms",
            quiet.acked.percentile_ms(990),
            "order p99 without the storm",
        )
        .with_target(target, met);
        Ok(vec![per_s, order_p99, slow.figure("login.slow_intervals", intervals)])
    })
}

/// One storm connection (see [`storm`]): the user is registered already.
async fn storm_login(
    addr: std::net::SocketAddr,
    run: String,
    index: u64,
    until: Instant,
) -> anyhow::Result<(u64, u64)> {
    let (username, _, password) = e2e::credentials(&run, index)?;
    let socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let mut stream = FramedStream::new(socket);
    let request = Request::Login { username, password, expirable: true };
    let (mut logins, mut busy) = (0u64, 0u64);
    while Instant::now() < until {
        stream.writer().write_request(&request).await?;
        match stream.reader().read_response().await? {
            Some(Response::SessionId(_)) => logins += 1,
            Some(other) if other.failure().is_some_and(|f| f.reason.is_retryable()) => busy += 1,
            Some(other) => anyhow::bail!("unexpected answer to a login: {}", other.instruction()),
            None => anyhow::bail!("the worker closed a storm connection"),
        }
    }
    Ok((logins, busy))
}
