//! `journal::heap::keep_commit_buffers` under glibc: after it, a buffer of a busy commit's size
//! freed and allocated again is no longer faulted in again. Alone in its test binary, so that
//! nothing else has changed the allocator's thresholds before the first measurement.

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
    // A round is 64 pages. Before: the heap's top is trimmed after every round (more than
    // 128 KiB free), and the next round faults its pages in again.
    // (Seen here: 352 faults before, 33 after.)
    let cold = faults_of_buffers(10);
    assert!(cold >= 200, "expected the buffers faulted in anew every round, got {cold} faults");
    journal::heap::keep_commit_buffers();
    // After: kept at the top of the heap once freed, faulted in at most once.
    let warm = faults_of_buffers(10);
    assert!(
        warm <= 100,
        "expected the buffers kept between rounds, got {warm} faults ({cold} before)"
    );
}
