//! The process heap that the journal's commits allocate from.
//!
//! Every commit allocates redb's page buffers (one 64 KiB page for a batch of 1,000 events, up
//! to megabytes for a busy interval) and frees them once they are written. With glibc's default
//! thresholds, a buffer of 128 KiB or more is mapped and unmapped every time, and a smaller one
//! comes from the top of the heap, which is trimmed (given back to the kernel) as soon as more
//! than 128 KiB is free there. Either way the next commit faults its buffers in again: about
//! 25 µs of a 1,000-event commit of about 450 µs (docs/PERFORMANCE.md, "Twenty-first session").
//!
//! glibc raises both thresholds by itself the first time a mapped block of at most 32 MiB is
//! freed: the mmap threshold to that block's size and the trim threshold to twice that
//! (mallopt(3), "dynamic mmap threshold"). A master reaches that state at its first argon2id
//! hash with the default costs (19 MiB); [`keep_commit_buffers`] reaches it at start, so that
//! the first commits, and a master whose password costs are light, do not depend on it.

/// The block [`keep_commit_buffers`] maps and frees: after it, buffers up to this size come
/// from the heap, and up to twice this much free memory stays at its top.
pub const KEPT_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// Makes glibc keep freed memory for reuse instead of faulting it in again at every commit (see
/// the module documentation), by mapping and freeing one block of [`KEPT_BUFFER_BYTES`]. Called
/// once at start by each process that appends (the master, `pt up`, the benchmarks). With
/// another allocator it costs one allocation and changes nothing; it does nothing either when
/// the thresholds were set explicitly (`MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES`), which
/// turns glibc's adjustment off.
pub fn keep_commit_buffers() {
    // Never written: mapped and unmapped without a page being touched. `black_box` keeps the
    // allocation, which the compiler could otherwise remove as unused.
    let block: Vec<u8> = Vec::with_capacity(KEPT_BUFFER_BYTES);
    drop(std::hint::black_box(block));
}
