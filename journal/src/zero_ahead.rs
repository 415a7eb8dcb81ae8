//! The journal's file as redb's storage, with the space redb grows into written with zeros
//! when redb first writes into it (docs/JOURNAL.md, "Writing ahead with zeros").
//!
//! redb grows its file with `set_len`, which leaves a hole: no block of the file system is
//! allocated under it. The first write into a hole makes the next `fdatasync` allocate blocks
//! and commit the file system's own journal as well as write the data: on ext4 about a
//! quarter of a 1,000-event commit. The journal writes each batch into new space, so every
//! commit paid it. This backend knows the file's holes, and when redb first writes into an
//! aligned chunk ([`ZERO_CHUNK_BYTES`]) that still has some, writes zeros over them (not where
//! the write goes), in the same commit. redb's next writes in that chunk overwrite blocks
//! that exist, and one allocation serves a chunk's worth of commits, whatever order redb's
//! allocator hands the chunk's pages out in.
//!
//! The holes known are those this backend's `set_len` made (bytes past the file's length
//! when redb grew it, which read as zeros, `StorageBackend::set_len` says so) and, on Linux,
//! those the file already had when redb first changed it (found with `SEEK_HOLE`: the space a
//! growth of an earlier run left unwritten, up to half the file while redb doubles it). The
//! zeros change no byte redb can read: they go only into known holes that nothing has written
//! since, and they never grow the file. Every write redb asks for goes to the file unchanged,
//! and `sync_data` makes the zeros durable with redb's own bytes.
//!
//! It also relies on redb writing only inside the length it set, never past the end while it
//! grows or shrinks the file (redb orders its writes and resizes so). And on redb being the
//! file's one writer, which its default `ConcurrencyMode::ExclusiveWriter` (kept by the
//! journal) enforces with a lock taken before redb grows or writes the file; with another
//! process writing (`MultiWriter`), a hole known here could hold that process's bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::sync::{Mutex, PoisonError};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The zeros go over the holes of the aligned chunk of this size around redb's first write
/// into it: one more megabyte for that commit's `fdatasync`, which then serves the 64 KiB
/// batches of sixteen 1,000-event commits (docs/PERFORMANCE.md, "Twenty-second session",
/// has the chunk sizes tried).
const ZERO_CHUNK_BYTES: u64 = 1 << 20;
/// A write of redb's this long gets no zeros around it: one allocation is already spread over
/// its size, and zeroing around such writes doubled the bytes written by 10,000-event commits
/// for no gain.
const WRITTEN_ALONE_BYTES: u64 = ZERO_CHUNK_BYTES / 2;
/// The zeros written per call.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
/// The holes of a file as opened that are looked for, at most: two `lseek`s each, so the
/// first write of a file written in many scattered places costs it at most a few tens of
/// milliseconds. Holes past the last one found are left alone.
#[cfg(target_os = "linux")]
const HOLES_FOUND_MAX: usize = 65_536;

/// redb's file, with zeros written into the holes redb's growth left (see the module's
/// documentation).
#[derive(Debug)]
pub(crate) struct ZeroAheadBackend {
    file: FileBackend,
    /// The holes known, and the handle that finds the file's own holes once.
    state: Mutex<State>,
}

/// What the backend knows of the file's holes.
#[derive(Debug, Default)]
struct State {
    /// The known holes that nothing has written since: the only ranges that ever get zeros.
    holes: Holes,
    /// A second handle on the file, until the holes it already has are looked for: at redb's
    /// first `write` or `set_len`, which come after redb has locked the file and before any
    /// write of this backend is under way (see [`ZeroAheadBackend::known_holes`]).
    unexamined: Option<File>,
}

/// Disjoint byte ranges of the file, by start.
#[derive(Debug, Default)]
struct Holes {
    /// `start -> end` (exclusive), disjoint.
    ranges: BTreeMap<u64, u64>,
}

impl Holes {
    /// Adds `start..end`, which overlaps no range already held (it is past the file's end,
    /// or past every hole found before it).
    fn add(&mut self, start: u64, end: u64) {
        if start < end {
            debug_assert!(
                self.ranges.range(..end).next_back().is_none_or(|(_, &e)| e <= start),
                "hole {start}..{end} overlaps one already known"
            );
            self.ranges.insert(start, end);
        }
    }

    /// Removes `start..end` from the holes, and returns the parts of it that were holes, in
    /// order.
    fn take(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut taken = Vec::new();
        if start >= end {
            return taken;
        }
        // The range that starts at or before `start` (it may reach into `start..end`), and
        // those that start inside it.
        let before = self.ranges.range(..=start).next_back().map(|(&s, &e)| (s, e));
        let inside: Vec<(u64, u64)> = self
            .ranges
            .range((Bound::Excluded(start), Bound::Excluded(end)))
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in before.into_iter().chain(inside) {
            if e <= start || s >= end {
                continue;
            }
            self.ranges.remove(&s);
            if s < start {
                self.ranges.insert(s, start);
            }
            if e > end {
                self.ranges.insert(end, e);
            }
            taken.push((s.max(start), e.min(end)));
        }
        taken
    }
}

impl ZeroAheadBackend {
    /// The backend over `file` (opened for reading and writing).
    pub(crate) fn new(file: File) -> Result<Self, redb::DatabaseError> {
        // Without a second handle the file's own holes are left alone: they get no zeros.
        let unexamined = file.try_clone().ok();
        let state = State { holes: Holes::default(), unexamined };
        Ok(Self { file: FileBackend::new(file)?, state: Mutex::new(state) })
    }

    /// The known holes, with those the file had looked for first if they have not been.
    ///
    /// The first call is redb's first `write` or `set_len`: redb holds the file's lock by
    /// then, so no other process writes it, and no write of this backend is under way (each
    /// makes its call here, under the same lock, before it writes). So what reads as a hole
    /// then holds nothing anyone wrote, and nothing is written into it but through here.
    fn known_holes<'a>(&self, state: &'a mut State) -> &'a mut Holes {
        if let Some(file) = state.unexamined.take() {
            // On an error the holes found before it are kept; the others get no zeros, which
            // costs speed only.
            let found = self.file.len().and_then(|len| find_holes(&file, len, &mut state.holes));
            if let Err(e) = found {
                tracing::debug!(error = %e, "journal file's holes not all looked for");
            }
        }
        &mut state.holes
    }

    /// Writes zeros over `from..to` (nothing when `to <= from`).
    fn write_zeros(&self, from: u64, to: u64) -> Result<(), std::io::Error> {
        let mut at = from;
        while at < to {
            let n = usize::try_from(to - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            self.file.write(at, &ZEROS[..n])?;
            at += n as u64;
        }
        Ok(())
    }
}

/// Adds the holes of `file` below `len` to `holes` (`SEEK_HOLE`, `SEEK_DATA`), up to
/// [`HOLES_FOUND_MAX`]; stops at the first error (a file system that cannot say).
#[cfg(target_os = "linux")]
fn find_holes(file: &File, len: u64, holes: &mut Holes) -> std::io::Result<()> {
    use rustix::fs::{SeekFrom, seek};
    let mut at = 0;
    let mut found = 0;
    while at < len && found < HOLES_FOUND_MAX {
        let hole = seek(file, SeekFrom::Hole(at))?;
        if hole >= len {
            break;
        }
        let data = match seek(file, SeekFrom::Data(hole)) {
            Ok(data) => data.min(len),
            // No data past the hole: it runs to the end.
            Err(rustix::io::Errno::NXIO) => len,
            Err(e) => return Err(e.into()),
        };
        if data <= hole {
            break;
        }
        holes.add(hole, data);
        found += 1;
        at = data;
    }
    Ok(())
}

/// Elsewhere the file's own holes are not looked for: they get no zeros.
#[cfg(not(target_os = "linux"))]
fn find_holes(_file: &File, _len: u64, _holes: &mut Holes) -> std::io::Result<()> {
    Ok(())
}

impl StorageBackend for ZeroAheadBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let holes = self.known_holes(&mut state);
        let old_len = self.file.len()?;
        self.file.set_len(len)?;
        if len > old_len {
            holes.add(old_len, len);
        } else {
            holes.take(len, u64::MAX);
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "write past the largest offset")
        })?;
        {
            // The write's own range leaves the holes before the lock is let go, so no zeros
            // can land on it afterwards. A part taken whose zeros fail stays a plain hole.
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let holes = self.known_holes(&mut state);
            if data.len() as u64 >= WRITTEN_ALONE_BYTES {
                holes.take(offset, end);
            } else {
                let chunk_start = offset - offset % ZERO_CHUNK_BYTES;
                let chunk_end = end.div_ceil(ZERO_CHUNK_BYTES).saturating_mul(ZERO_CHUNK_BYTES);
                for (from, to) in holes.take(chunk_start, chunk_end) {
                    self.write_zeros(from, to.min(offset))?;
                    self.write_zeros(from.max(end), to)?;
                }
            }
        }
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    /// A backend over a new file holding `bytes`, and the file's path (kept alive by the
    /// directory).
    fn backend(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, ZeroAheadBackend) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        (dir, path, ZeroAheadBackend::new(file).unwrap())
    }

    /// Bytes of the file that the file system has allocated (holes excluded), or `None` on a
    /// file system that does not count them one for one (the test then skips).
    fn allocated(path: &std::path::Path) -> Option<u64> {
        let allocated = crate::test_util::allocated_bytes(path);
        if allocated.is_none() {
            eprintln!("this file system does not count allocated blocks exactly: skipped");
        }
        allocated
    }

    /// The point of the backend: a small write into space redb grew into allocates the chunk
    /// around it, so the commits that write there next find blocks that exist, in whatever
    /// order redb hands out the chunk's pages.
    #[test]
    fn a_small_write_into_new_space_is_given_its_chunk_in_zeros() {
        let (_dir, path, backend) = backend(&[7; 4096]);
        backend.set_len(16 * MIB).unwrap();
        let Some(grown) = allocated(&path) else { return };
        assert!(grown < MIB, "set_len alone allocated {grown} bytes");
        // redb's allocator may start anywhere: the top of the grown space first.
        backend.write(15 * MIB + 4096, &[1; 4096]).unwrap();
        backend.sync_data().unwrap();
        let after_top = allocated(&path).unwrap();
        assert!((MIB..MIB + MIB / 4).contains(&after_top), "allocated {after_top} bytes");
        // The chunk is written: more writes in it allocate nothing.
        backend.write(15 * MIB + 65536, &[2; 65536]).unwrap();
        backend.write(15 * MIB, &[2; 4096]).unwrap();
        backend.sync_data().unwrap();
        assert_eq!(allocated(&path).unwrap(), after_top);
        // A write across two chunks gets both.
        backend.write(3 * MIB - 4096, &[3; 8192]).unwrap();
        backend.sync_data().unwrap();
        let after_two = allocated(&path).unwrap();
        assert!((after_top + 2 * MIB..after_top + 2 * MIB + MIB / 4).contains(&after_two));
        // The zeros never grow the file, and what it held is kept.
        assert_eq!(backend.len().unwrap(), 16 * MIB);
        let mut head = [0u8; 4096];
        backend.read(0, &mut head).unwrap();
        assert_eq!(head, [7; 4096]);
    }

    /// A write as long as [`WRITTEN_ALONE_BYTES`] gets no zeros around it.
    #[test]
    fn a_long_write_gets_no_zeros() {
        let (_dir, path, backend) = backend(&[]);
        backend.set_len(8 * MIB).unwrap();
        let long = usize::try_from(WRITTEN_ALONE_BYTES).unwrap();
        backend.write(5 * MIB + 4096, &vec![3; long]).unwrap();
        backend.sync_data().unwrap();
        let Some(after) = allocated(&path) else { return };
        assert!(after < WRITTEN_ALONE_BYTES + MIB / 4, "allocated {after} bytes");
    }

    /// The holes a file has when opened (the space an earlier run grew into and did not
    /// write) get zeros as new space does, and the bytes around them are kept.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_holes_of_a_file_as_opened_get_zeros_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        {
            let file = File::create(&path).unwrap();
            file.set_len(8 * MIB).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, &[1; 4096], 0).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&file, &[2; 4096], 2 * MIB).unwrap();
            file.sync_all().unwrap();
        }
        let Some(before) = allocated(&path) else { return };
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let backend = ZeroAheadBackend::new(file).unwrap();
        backend.write(MIB + 8192, &[3; 4096]).unwrap();
        backend.write(2 * MIB + 8192, &[4; 4096]).unwrap();
        backend.sync_data().unwrap();
        let after = allocated(&path).unwrap();
        let expected = before + 2 * MIB - 4096..before + 2 * MIB + MIB / 4;
        assert!(expected.contains(&after), "allocated {after} bytes, {before} before");
        let mut read = vec![0u8; 3 << 20];
        backend.read(0, &mut read).unwrap();
        let mut model = vec![0u8; 3 << 20];
        model[..4096].fill(1);
        model[(1 << 20) + 8192..(1 << 20) + 12288].fill(3);
        model[2 << 20..(2 << 20) + 4096].fill(2);
        model[(2 << 20) + 8192..(2 << 20) + 12288].fill(4);
        assert!(read == model, "the file reads other bytes");
    }

    /// Bytes another process wrote before redb's growth (before its lock) are in no hole
    /// known, and are kept.
    #[cfg(unix)]
    #[test]
    fn bytes_written_before_a_growth_are_never_zeroed() {
        let (_dir, path, backend) = backend(&[1; 4096]);
        {
            let other = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&other, &[9; 8192], 4096).unwrap();
        }
        backend.set_len(4 * MIB).unwrap();
        backend.write(3 * 4096 + 100, &[2; 10]).unwrap();
        let mut read = vec![0u8; 3 * 4096];
        backend.read(0, &mut read).unwrap();
        assert_eq!(read[..4096], [1; 4096]);
        assert_eq!(read[4096..], [9; 8192]);
    }

    /// Writes from several threads at once (redb's flush and a reader's eviction may share
    /// the backend): the zeros one thread writes for a chunk never cover another's bytes,
    /// whichever takes the lock first.
    #[test]
    fn writes_from_several_threads_keep_every_byte() {
        const CHUNKS: u64 = 32;
        const THREADS: u64 = 4;
        let (_dir, path, backend) = backend(&[]);
        backend.set_len(CHUNKS * MIB).unwrap();
        let backend = std::sync::Arc::new(backend);
        let together =
            std::sync::Arc::new(std::sync::Barrier::new(usize::try_from(THREADS).unwrap()));
        // Into each new chunk at once: thread t writes the page a t-th of the way into it, so
        // the first to take the chunk zeros the others' pages while they write them.
        let page_of = |chunk: u64, t: u64| chunk * 256 + t * (256 / THREADS) + 3;
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let backend = std::sync::Arc::clone(&backend);
                let together = std::sync::Arc::clone(&together);
                std::thread::spawn(move || {
                    for chunk in 0..CHUNKS {
                        together.wait();
                        let page = page_of(chunk, t);
                        let byte = u8::try_from(page % 251).unwrap() | 1;
                        backend.write(page * 4096, &[byte; 4096]).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        backend.sync_data().unwrap();
        let file = std::fs::read(&path).unwrap();
        assert_eq!(file.len() as u64, CHUNKS * MIB);
        let mut model = vec![0u8; file.len()];
        for chunk in 0..CHUNKS {
            for t in 0..THREADS {
                let page = page_of(chunk, t);
                let at = usize::try_from(page * 4096).unwrap();
                model[at..at + 4096].fill(u8::try_from(page % 251).unwrap() | 1);
            }
        }
        for (page, (read, written)) in file.chunks(4096).zip(model.chunks(4096)).enumerate() {
            assert!(read == written, "page {page} reads other bytes");
        }
    }

    /// `Holes::take` cuts ranges at both ends and keeps what lies outside.
    #[test]
    fn holes_are_taken_in_parts_and_the_rest_kept() {
        let mut holes = Holes::default();
        holes.add(10, 20);
        holes.add(30, 40);
        holes.add(50, 50);
        assert_eq!(holes.take(15, 35), vec![(15, 20), (30, 35)]);
        assert_eq!(holes.ranges, BTreeMap::from([(10, 15), (35, 40)]));
        assert_eq!(holes.take(0, 10), vec![]);
        assert_eq!(holes.take(36, 38), vec![(36, 38)]);
        assert_eq!(holes.take(0, u64::MAX), vec![(10, 15), (35, 36), (38, 40)]);
        assert!(holes.ranges.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write { offset: u64, len: usize, byte: u8 },
        SetLen(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3 * MIB, 1usize..64 * 1024, 1u8..=255)
                .prop_map(|(offset, len, byte)| Op::Write { offset, len, byte }),
            1 => (0..3 * MIB, 512 * 1024usize..600 * 1024, 1u8..=255)
                .prop_map(|(offset, len, byte)| Op::Write { offset, len, byte }),
            2 => (0..4 * MIB).prop_map(Op::SetLen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Against a plain `Vec`: whatever redb writes, shrinks and grows, from a file that
        /// held bytes already, the backend and the file read as a file written in place would
        /// (the zeros never cover a byte written, nor grow the file).
        #[test]
        fn the_file_reads_as_if_written_in_place(
            initial in 0..2usize << 20,
            hole in 0..2usize << 20,
            ops in proptest::collection::vec(op(), 1..24),
        ) {
            // The file as opened: bytes, a hole, and a block of bytes after it.
            let mut original: Vec<u8> =
                (0..initial).map(|i| u8::try_from(i % 251).unwrap() | 1).collect();
            let island = original.len() + hole;
            let (_dir, path, backend) = {
                let (dir, path, _) = backend(&original);
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&file, &[0xEE; 4096], island as u64)
                    .unwrap();
                let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
                (dir, path, ZeroAheadBackend::new(file).unwrap())
            };
            original.resize(island, 0);
            original.extend_from_slice(&[0xEE; 4096]);
            let mut model = original;
            for op in ops {
                match op {
                    Op::Write { offset, len, byte } => {
                        // redb writes inside the length it set; past it, a file grows.
                        let offset = usize::try_from(offset).unwrap();
                        backend.write(offset as u64, &vec![byte; len]).unwrap();
                        if model.len() < offset + len {
                            model.resize(offset + len, 0);
                        }
                        model[offset..offset + len].fill(byte);
                    }
                    Op::SetLen(len) => {
                        backend.set_len(len).unwrap();
                        model.resize(usize::try_from(len).unwrap(), 0);
                    }
                }
                prop_assert_eq!(backend.len().unwrap(), model.len() as u64);
                let mut read = vec![0xAA; model.len()];
                backend.read(0, &mut read).unwrap();
                prop_assert!(read == model, "the backend reads other bytes");
            }
            backend.sync_data().unwrap();
            prop_assert!(std::fs::read(&path).unwrap() == model, "the file holds other bytes");
        }
    }
}
