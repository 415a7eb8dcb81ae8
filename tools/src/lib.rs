//! Shared code of the PaperTrader command-line tools: `pt` (the client and local cluster) and
//! `pt-replay` (journal audits).

pub mod bench;
pub mod client;
pub mod replay;
pub mod simulate;
pub mod up;
