//! Shared code of the PaperTrader command-line tools.
