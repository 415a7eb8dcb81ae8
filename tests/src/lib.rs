//! End-to-end tests for PaperTrader live in `tests/tests/`.
