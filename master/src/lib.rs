//! PaperTrader master server: the one writer. This library holds the master's self-contained
//! parts; the binary wires them to the network, the journal and the clock.
//!
//! - [`config`]: the TOML configuration with its defaults and validation.
//! - [`prices`]: price sources (recorded file, Alpha Vantage over HTTP).
//! - [`auth`]: password hashing off the async threads, failed-login rate limits.
//! - [`sessions`]: session bookkeeping and the session record's binary layout.
//! - [`logbook`]: the log system: a bounded in-memory log plus a log file.
//! - [`worker_auth`]: the worker registry and the OpenPGP worker handshake checks.
//! - [`pgp`]: the handshake pieces master and worker share: signed bytes, OpenPGP sign/verify.
//! - [`admin`]: the stored worker registry, the admin socket and `pt-master worker ...`.
//! - [`core`]: the one writer: engine, order queue, sessions, journal commits.
//! - [`server`]: the network side: accept loop, worker links, relayed requests, the interval loop.
//! - [`history`]: price history aggregation for the get* queries.
//! - [`slow`]: which intervals were slow (settlement plus commit), for the log.
//! - [`shutdown`]: the SIGINT/SIGTERM future both daemons stop on.

pub mod admin;
pub mod auth;
pub mod config;
pub mod core;
pub mod history;
pub mod logbook;
pub mod pgp;
pub mod prices;
pub mod report;
pub mod retry;
pub mod server;
pub mod sessions;
pub mod shutdown;
pub mod slow;
pub mod snapshots;
pub mod worker_auth;
