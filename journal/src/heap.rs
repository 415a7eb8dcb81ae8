//! The process heap that the journal's commits allocate from.
//!
//! Every commit allocates redb's page buffers (one 64 KiB page for a batch of 1,000 events, up
//! to megabytes for a busy interval) and frees them once they are written. With glibc's default
//! thresholds the top of the heap is trimmed (given back to the kernel) as soon as more than
//! 128 KiB is free there, which after a commit it usually is, so the next commit faults its
//! buffers in again (docs/PERFORMANCE.md, "Twenty-first session", has the cost).
//!
//! glibc raises its thresholds by itself whenever it frees a mapped block larger than the
//! current mmap threshold and at most 32 MiB: the mmap threshold to that block's size, the
//! trim threshold to twice that (mallopt(3), "dynamic mmap threshold"). A master reaches that
//! state at its first argon2id hash with the default costs (19 MiB); [`keep_commit_buffers`]
//! reaches it at start, so that the first commits, and a master whose password costs are light
//! (or above 32 MiB), do not depend on it. The price: up to twice [`KEPT_BUFFER_BYTES`] of free
//! memory may stay at the top of each of glibc's arenas instead of going back to the kernel.

/// The block [`keep_commit_buffers`] maps and frees: after it, allocations up to this size come
/// from the heap, and up to twice this much free memory stays at its top.
pub const KEPT_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// Makes glibc keep freed memory for reuse instead of trimming it and faulting it in again at
/// every commit (see the module documentation), by mapping and freeing one block of
/// [`KEPT_BUFFER_BYTES`]. Called once at start by each process that appends or replays (the
/// master, `pt up`, `pt-replay`, the benchmarks). With another allocator it costs one
/// allocation and changes nothing; it changes nothing either when any of glibc's thresholds
/// was set explicitly (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`,
/// `MALLOC_MMAP_MAX_`, or the same through `GLIBC_TUNABLES`), which turns the adjustment off.
pub fn keep_commit_buffers() {
    let mut block: Vec<u8> = Vec::with_capacity(KEPT_BUFFER_BYTES);
    // One byte written and the block passed to `black_box`: an allocation with an observable
    // use, which the compiler may not remove.
    block.push(1);
    drop(std::hint::black_box(block));
}
