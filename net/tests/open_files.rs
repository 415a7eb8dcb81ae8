//! The open-file limit is raised to the hard one (its own process: the limit is the process's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(unix)]
#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one_and_never_lowered() {
    use net::open_files::raise_open_files_limit;
    use rlimit::Resource;
    let (_, hard) = Resource::NOFILE.get().unwrap();
    let hard_or_cap = hard.min(1 << 20);
    if hard_or_cap <= 256 {
        eprintln!("hard open-file limit {hard}: nothing to raise here");
        return;
    }
    // A process started at a low soft limit (as many are, at 1,024).
    Resource::NOFILE.set(256, hard).unwrap();
    let limit = raise_open_files_limit().unwrap();
    assert_eq!(limit.before, 256);
    assert_eq!(limit.now, hard_or_cap);
    assert_eq!(limit.hard, hard);
    assert_eq!(Resource::NOFILE.get().unwrap(), (hard_or_cap, hard));
    assert!(limit.allows(hard_or_cap) && !limit.allows(hard_or_cap + 1));
    // Raised already: left as it is.
    let again = raise_open_files_limit().unwrap();
    assert_eq!((again.before, again.now), (hard_or_cap, hard_or_cap));
}
