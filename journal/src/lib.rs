//! PaperTrader journal: not built yet.
