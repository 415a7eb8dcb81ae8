//! `pt-master`: the PaperTrader master server (being wired up).

fn main() {}
