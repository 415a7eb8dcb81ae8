//! Shared code of the PaperTrader command-line tools: `pt` (the client and local cluster) and
//! `pt-replay` (journal audits).

pub mod replay;
pub mod simulate;
