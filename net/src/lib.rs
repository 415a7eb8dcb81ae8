//! PaperTrader net: not built yet.
