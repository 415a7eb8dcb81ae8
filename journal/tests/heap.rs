//! `journal::heap::keep_commit_buffers` under glibc: after it, buffers of a commit's size that
//! are freed and allocated again are no longer faulted in again. This must stay the only test
//! in its binary: nothing else may change the allocator's thresholds (process-wide) before the
//! first measurement.

#![cfg(all(target_os = "linux", target_env = "gnu"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Minor page faults of the calling thread so far (`/proc/thread-self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.split(' ').nth(7).unwrap().parse().unwrap()
}

/// Faults taken by `times` rounds of allocating, filling and freeing four 64 KiB buffers, as a
/// commit of a few thousand events does with its pages: below the mmap threshold, from the top
/// of the heap.
fn faults_of_buffers(times: usize) -> u64 {
    let before = minor_faults();
    for round in 0..times {
        let mark = u8::try_from(round % 256).unwrap_or(1);
        let buffers: Vec<Vec<u8>> = (0..4)
            .map(|_| {
                let mut buffer = vec![0u8; 64 * 1024];
                buffer.iter_mut().step_by(4096).for_each(|b| *b = mark);
                buffer
            })
            .collect();
        drop(std::hint::black_box(buffers));
    }
    minor_faults() - before
}

#[test]
fn freed_commit_buffers_are_reused_instead_of_faulted_in_again() {
    let tuned = [
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
        "MALLOC_TOP_PAD_",
        "MALLOC_MMAP_MAX_",
        "GLIBC_TUNABLES",
    ]
    .into_iter()
    .filter(|name| std::env::var_os(name).is_some())
    .collect::<Vec<_>>();
    if !tuned.is_empty() {
        eprintln!("skipped: {tuned:?} set, which turns glibc's threshold adjustment off");
        return;
    }
    // Before: the heap's top is trimmed after every round (more than 128 KiB free), and the
    // next round faults its pages in again. After: kept at the top of the heap once freed,
    // faulted in once. (Seen here, with 4 KiB pages: 352 faults before, 33 after.)
    let cold = faults_of_buffers(10);
    journal::heap::keep_commit_buffers();
    let warm = faults_of_buffers(10);
    assert!(cold >= 20, "expected the buffers faulted in again every round, got {cold} faults");
    assert!(
        warm.saturating_mul(4) <= cold,
        "expected the buffers kept between rounds: {warm} faults after, {cold} before"
    );
}
