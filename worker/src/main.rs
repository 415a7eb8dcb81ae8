//! `pt-worker`: the PaperTrader worker server (being wired up).

fn main() {}
