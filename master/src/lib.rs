//! PaperTrader master: not built yet.
