//! PaperTrader worker: the client-facing tier. It serves clients on its own port and forwards
//! their orders to the master over an authenticated link.

pub mod identity;
