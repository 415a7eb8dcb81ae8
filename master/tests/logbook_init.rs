//! The global tracing set-up and the crash dump, in a process of their own (both are global).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use master::config::MasterConfig;
use master::logbook::{InitError, init_tracing, install_crash_dump};

#[test]
fn init_tracing_logs_to_the_file_and_a_panic_dumps_the_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = MasterConfig { data_dir: dir.path().join("data"), ..MasterConfig::default() };
    let guard = init_tracing(&config.logbook_config()).unwrap();
    tracing::info!(answer = 42, "master starting");
    tracing::debug!("below the default level");

    let text = std::fs::read_to_string(config.log_file_path()).unwrap();
    if std::env::var_os("RUST_LOG").is_none() {
        assert!(!text.contains("below the default level"), "{text}");
    }
    assert!(text.contains("INFO logbook_init (master/tests/logbook_init.rs:"), "{text}");
    assert!(text.lines().any(|l| l.ends_with(": master starting answer=42")), "{text}");
    assert!(matches!(init_tracing(&config.logbook_config()), Err(InitError::AlreadySet(_))));

    let crash_dir = dir.path().join("data");
    install_crash_dump(guard.logbook().clone(), crash_dir.clone());
    let joined = std::thread::spawn(|| panic!("deliberate test panic")).join();
    assert!(joined.is_err());
    let dumps: Vec<_> = std::fs::read_dir(&crash_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("crash-"))
        .collect();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let dump = std::fs::read_to_string(&dumps[0]).unwrap();
    assert!(dump.starts_with("panic: "), "{dump}");
    assert!(dump.contains("deliberate test panic"), "{dump}");
    assert!(dump.contains("master starting answer=42"), "{dump}");

    // A panic that recurs (contained each time) writes at most CRASH_DUMPS_MAX dumps.
    for _ in 0..master::logbook::CRASH_DUMPS_MAX + 3 {
        assert!(std::thread::spawn(|| panic!("again")).join().is_err());
    }
    let dumps = std::fs::read_dir(&crash_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("crash-"))
        .count();
    assert_eq!(dumps, master::logbook::CRASH_DUMPS_MAX);
}
