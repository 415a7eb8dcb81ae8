//! The journal's file as redb's storage, with the space redb grows into written with zeros
//! ahead of redb's first write there (docs/JOURNAL.md, "Writing ahead with zeros").
//!
//! redb grows its file with `set_len`, which leaves a hole: no block of the file system is
//! allocated under it. The first write into a hole makes the next `fdatasync` allocate blocks
//! and commit the file system's own journal as well as write the data, which on ext4 costs
//! a commit of the journal as much again as the data's write. The journal appends into new
//! space at every commit, so every commit paid it. This backend writes zeros into the file a
//! chunk ([`ZERO_CHUNK_BYTES`]) at a time, ahead of the furthest byte redb has written, so redb's
//! later writes there overwrite blocks that exist and are written, and one allocation serves
//! a chunk's worth of commits.
//!
//! The zeros change no byte redb can read: they go only where redb has not written since the
//! file was opened and which lies inside the length redb set, and such bytes read as zeros
//! (`StorageBackend::set_len` says so). They never grow the file. Every write redb asks for
//! goes to the file unchanged, and `sync_data` makes the zeros durable with redb's own bytes.

use std::fs::File;
use std::ops::Bound;
use std::sync::{Mutex, PoisonError};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// How far ahead of redb's furthest write the zeros go, rounded to a multiple of this from
/// the file's start. A chunk of zeros is written in the commit that first writes past the
/// last one: 1 MiB costs that commit about a millisecond, and serves sixteen 1,000-event
/// commits (measured in docs/PERFORMANCE.md).
const ZERO_CHUNK_BYTES: u64 = 1 << 20;
/// A write of redb's this long, past the mark, moves the mark without zeros: one allocation
/// is already spread over its size, and zeroing around such writes doubled the bytes written
/// by 10,000-event commits for no gain.
const WRITTEN_ALONE_BYTES: u64 = ZERO_CHUNK_BYTES / 2;
/// The zeros written per call.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// redb's file, written with zeros ahead of redb (see the module's documentation).
#[derive(Debug)]
pub(crate) struct ZeroAheadBackend {
    file: FileBackend,
    /// The mark: redb has written no byte at or past this offset since the file was opened
    /// (such bytes read as zeros, and only they get zeros here). It only ever moves past
    /// what redb writes, and back with a shrink.
    written_below: Mutex<u64>,
}

impl ZeroAheadBackend {
    /// The backend over `file` (opened for reading and writing). What the file holds when
    /// opened counts as written, whatever holes it has: nothing is ever written over it.
    pub(crate) fn new(file: File) -> Result<Self, redb::DatabaseError> {
        let len = file.metadata()?.len();
        Ok(Self { file: FileBackend::new(file)?, written_below: Mutex::new(len) })
    }

    /// Before redb writes `offset..end`, past the written mark: writes zeros from the mark
    /// up to the chunk boundary past `end` (no further than the file's length), except where
    /// redb's write goes, and moves the mark there. Called with the mark held; redb writes
    /// below the mark only, or through here, so no byte it wrote is ever zeroed.
    fn zero_ahead(
        &self,
        written_below: &mut u64,
        offset: u64,
        end: u64,
    ) -> Result<(), std::io::Error> {
        let len = self.file.len()?;
        let chunk_end = end.div_ceil(ZERO_CHUNK_BYTES).saturating_mul(ZERO_CHUNK_BYTES);
        let zero_to = chunk_end.min(len);
        self.write_zeros(*written_below, offset.min(zero_to))?;
        self.write_zeros(end.max(*written_below), zero_to)?;
        // Past the length (a write that grows the file itself), redb's write covers it.
        *written_below = zero_to.max(end);
        Ok(())
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

impl StorageBackend for ZeroAheadBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut written_below = self.written_below.lock().unwrap_or_else(PoisonError::into_inner);
        self.file.set_len(len)?;
        // What a shrink cut off comes back, on a growth, as a hole.
        *written_below = (*written_below).min(len);
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
            let mut written_below =
                self.written_below.lock().unwrap_or_else(PoisonError::into_inner);
            if end > *written_below {
                if data.len() as u64 >= WRITTEN_ALONE_BYTES {
                    *written_below = end;
                } else {
                    self.zero_ahead(&mut written_below, offset, end)?;
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

    /// Bytes of the file that the file system has allocated (holes excluded).
    #[cfg(unix)]
    fn allocated(path: &std::path::Path) -> u64 {
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512
    }

    /// The point of the backend: a small write into space redb grew into allocates the chunk
    /// around it, so the commits that write there next find blocks that exist. (A file system
    /// that stores zeros as holes, as a compressing one may, fails this, and the backend gains
    /// nothing there.)
    #[cfg(unix)]
    #[test]
    fn a_small_write_into_new_space_is_preceded_by_zeros_to_the_chunks_end() {
        let (_dir, path, backend) = backend(&[7; 4096]);
        backend.set_len(8 * MIB).unwrap();
        assert!(allocated(&path) < MIB, "set_len alone allocated {} bytes", allocated(&path));
        backend.write(MIB + 4096, &[1; 4096]).unwrap();
        backend.sync_data().unwrap();
        let after = allocated(&path);
        assert!((2 * MIB..3 * MIB).contains(&after), "allocated {after} bytes");
        // Below the mark, nothing more is written.
        backend.write(3 * 4096, &[2; 4096]).unwrap();
        assert_eq!(allocated(&path), after);
        // The zeros never grow the file, and what it held is kept.
        assert_eq!(backend.len().unwrap(), 8 * MIB);
        let mut head = [0u8; 4096];
        backend.read(0, &mut head).unwrap();
        assert_eq!(head, [7; 4096]);
    }

    /// A write as long as [`WRITTEN_ALONE_BYTES`] gets no zeros around it.
    #[cfg(unix)]
    #[test]
    fn a_long_write_gets_no_zeros() {
        let (_dir, path, backend) = backend(&[]);
        backend.set_len(8 * MIB).unwrap();
        let long = usize::try_from(WRITTEN_ALONE_BYTES).unwrap();
        backend.write(2 * MIB, &vec![3; long]).unwrap();
        backend.sync_data().unwrap();
        let after = allocated(&path);
        assert!(after < WRITTEN_ALONE_BYTES + MIB / 4, "allocated {after} bytes");
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
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Against a plain `Vec`: whatever redb writes, shrinks and grows, from a file that
        /// held bytes already, the backend and the file read as a file written in place would
        /// (the zeros never cover a byte written, nor grow the file).
        #[test]
        fn the_file_reads_as_if_written_in_place(
            initial in 0..2usize << 20,
            ops in proptest::collection::vec(op(), 1..16),
        ) {
            let original: Vec<u8> = (0..initial).map(|i| u8::try_from(i % 251).unwrap() | 1).collect();
            let (_dir, path, backend) = backend(&original);
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
