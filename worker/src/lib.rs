//! PaperTrader worker: not built yet.
