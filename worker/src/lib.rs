//! PaperTrader worker: the client-facing tier (spec 2.2.2, 3.2). It serves clients on its own
//! port, answers what it can from its caches, and relays the rest to the master over an
//! authenticated, sealed link.
//!
//! - [`config`]: the TOML configuration with its defaults and validation (`docs/WORKER.md`).
//! - [`identity`]: the worker's OpenPGP identity and its trust in the master's key
//!   (`docs/WORKER_AUTH.md`).
//! - [`master_link`]: the link to the master: handshake, relays, heartbeats, reconnection.
//! - [`server`]: the client connections: state machine, pipelining, limits, caching, relaying.
//! - [`cache`]: the bounded asset data cache (spec 3.2.6).
//! - [`sessions`]: the bounded session cache (spec 3.2.3).
//!
//! Architecture invariant: the caches and the configuration's defaults and validation do no IO
//! and read no clock (time is an argument; only `WorkerConfig::load` reads its file); only
//! [`server`] and [`master_link`] own sockets, timers and tasks.

pub mod cache;
pub mod config;
pub mod identity;
mod lru;
pub mod master_link;
pub mod per_address;
pub mod server;
pub mod sessions;

pub use config::WorkerConfig;
pub use master_link::{LinkState, MasterLink};
pub use server::{Stats, StatsSnapshot, run, run_with_stats};
