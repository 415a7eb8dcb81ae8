//! A copy-on-write view of a journal file, for [`crate::Journal::open_read_only`]: redb reads
//! the file, and what it writes (the integrity check's commit on open, the recovery of a file a
//! crash left, the trim on close) stays in memory. The file is opened read-only and left byte
//! for byte as it was, yet redb verifies every page's checksum first, as it does for the
//! master: a tool examining a journal never changes it, and misses no damage the master's open
//! would find.
//!
//! Locks: every lock redb asks of the file is taken shared, so such views share the file with
//! each other and exclude a writer (the master) both ways. A plain redb `ReadOnlyDatabase`
//! takes them for a writer's and does not open beside one.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The unit of copy-on-write: redb's page size.
const BLOCK: u64 = 4096;
/// [`BLOCK`] as a length.
const BLOCK_BYTES: usize = 4096;

/// The file, read-only, under the bytes redb wrote since it was opened.
#[derive(Debug)]
pub(crate) struct OverlayBackend {
    file: FileBackend,
    overlay: Mutex<Overlay>,
}

/// What redb wrote, and where the view no longer shows the file.
#[derive(Debug)]
struct Overlay {
    /// Written blocks, whole, by index (offset / `BLOCK`).
    blocks: HashMap<u64, Box<[u8]>>,
    /// The view's length (`None` until first asked: see [`OverlayBackend::lock`]).
    len: Option<u64>,
    /// Bytes at or past this offset that no written block holds read as zeros: the file's
    /// length, lowered by every shrink (what a shrink cut off and a growth brings back is zero).
    file_shown_below: u64,
}

impl OverlayBackend {
    /// A view of `file` (opened for reading).
    pub(crate) fn new(file: File) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            file: FileBackend::new(file)?,
            overlay: Mutex::new(Overlay { blocks: HashMap::new(), len: None, file_shown_below: 0 }),
        })
    }

    /// The overlay and the view's length. The file's length is read the first time, which
    /// is after redb took its locks: a writer closing the file (and trimming it) just before
    /// cannot leave the view with a stale length.
    fn lock(&self) -> Result<(MutexGuard<'_, Overlay>, u64), std::io::Error> {
        // Every change is made under the lock and leaves the overlay whole at each step.
        let mut overlay = self.overlay.lock().unwrap_or_else(PoisonError::into_inner);
        let len = match overlay.len {
            Some(len) => len,
            None => {
                let len = self.file.len()?;
                overlay.len = Some(len);
                overlay.file_shown_below = len;
                len
            }
        };
        Ok((overlay, len))
    }

    /// Reads `out.len()` bytes of the file at `offset`, zeros past `shown_below`.
    fn read_file(
        &self,
        offset: u64,
        out: &mut [u8],
        shown_below: u64,
    ) -> Result<(), std::io::Error> {
        let from_file = usize::try_from(shown_below.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(out.len());
        let (file_part, zeros) = out.split_at_mut(from_file);
        if !file_part.is_empty() {
            self.file.read(offset, file_part)?;
        }
        zeros.fill(0);
        Ok(())
    }
}

/// A length that does not fit in memory's addresses: not one redb asks for.
fn too_long() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "length out of range")
}

/// The block index and the offset in it of byte `at`.
fn split(at: u64) -> (u64, usize) {
    // The remainder is below BLOCK (4096): it fits.
    (at / BLOCK, (at % BLOCK) as usize)
}

/// The part of the bytes `offset..end` (not empty) that one block holds.
struct Span {
    /// The block's index.
    index: u64,
    /// Where the part starts in the block.
    in_block: usize,
    /// Where the part starts in the bytes.
    at: usize,
    /// Its length.
    len: usize,
}

/// The blocks `offset..end` (not empty) crosses, each with its part, in order.
fn spans(offset: u64, end: u64) -> impl Iterator<Item = Result<Span, std::io::Error>> {
    let (first, _) = split(offset);
    let (last, _) = split(end - 1);
    (first..=last).map(move |index| {
        let block_start = index * BLOCK;
        let from = offset.max(block_start);
        let to = end.min(block_start + BLOCK);
        let (_, in_block) = split(from);
        let len = usize::try_from(to - from).map_err(|_| too_long())?;
        let at = usize::try_from(from - offset).map_err(|_| too_long())?;
        Ok(Span { index, in_block, at, len })
    })
}

impl StorageBackend for OverlayBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.lock()?.1)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let (overlay, len) = self.lock()?;
        let end = offset.checked_add(out.len() as u64).ok_or_else(too_long)?;
        if end > len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the storage",
            ));
        }
        self.read_file(offset, out, overlay.file_shown_below)?;
        if overlay.blocks.is_empty() || out.is_empty() {
            return Ok(());
        }
        for span in spans(offset, end) {
            let Span { index, in_block, at, len } = span?;
            if let Some(block) = overlay.blocks.get(&index) {
                out[at..at + len].copy_from_slice(&block[in_block..in_block + len]);
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let (mut overlay, old_len) = self.lock()?;
        if len < old_len {
            overlay.blocks.retain(|index, _| index * BLOCK < len);
            let (index, in_block) = split(len);
            if let Some(block) = overlay.blocks.get_mut(&index) {
                block[in_block..].fill(0);
            }
        }
        overlay.file_shown_below = overlay.file_shown_below.min(len).min(old_len);
        overlay.len = Some(len);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let (mut overlay, len) = self.lock()?;
        let end = offset.checked_add(data.len() as u64).ok_or_else(too_long)?;
        if data.is_empty() {
            return Ok(());
        }
        if end > len {
            // A write past the end grows the storage, as a file's does.
            overlay.file_shown_below = overlay.file_shown_below.min(len);
            overlay.len = Some(end);
        }
        let shown_below = overlay.file_shown_below;
        for span in spans(offset, end) {
            let Span { index, in_block, at, len } = span?;
            let block = match overlay.blocks.entry(index) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    let mut block = vec![0u8; BLOCK_BYTES].into_boxed_slice();
                    self.read_file(index * BLOCK, &mut block, shown_below)?;
                    entry.insert(block)
                }
            };
            block[in_block..in_block + len].copy_from_slice(&data[at..at + len]);
        }
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
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

    /// A view of a file holding `bytes`, and the file's path (kept alive by the directory).
    fn view(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, OverlayBackend) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let backend = OverlayBackend::new(File::open(&path).unwrap()).unwrap();
        (dir, path, backend)
    }

    fn read(backend: &OverlayBackend, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0xAA; len];
        backend.read(offset, &mut out).unwrap();
        out
    }

    /// Against a plain `Vec` model: writes across block edges, shrinks and growths, reads of
    /// every kind; and the file itself never changes.
    #[test]
    fn the_view_reads_like_a_file_written_in_place_and_the_file_stays() {
        let original: Vec<u8> = (0..3 * BLOCK + 100).map(|i| (i % 251) as u8).collect();
        let (_dir, path, backend) = view(&original);
        let mut model = original.clone();
        let mut write = |offset: usize, data: &[u8]| {
            backend.write(offset as u64, data).unwrap();
            if model.len() < offset + data.len() {
                model.resize(offset + data.len(), 0);
            }
            model[offset..offset + data.len()].copy_from_slice(data);
        };
        write(4090, &[1; 20]);
        write(0, &[2; 3]);
        write(3 * 4096 + 90, &[3; 30]);
        let grown_to = model.len();
        assert_eq!(grown_to, 3 * 4096 + 120);
        assert_eq!(backend.len().unwrap(), grown_to as u64);
        assert_eq!(read(&backend, 0, grown_to), model);
        assert_eq!(read(&backend, 4085, 40), model[4085..4125]);
        // Shrink into a written block, then grow: what was cut off reads as zeros.
        backend.set_len(4095).unwrap();
        model.truncate(4095);
        backend.set_len(2 * BLOCK + 10).unwrap();
        model.resize(2 * 4096 + 10, 0);
        assert_eq!(read(&backend, 0, model.len()), model);
        // A write past the end grows it, with zeros between.
        backend.write(3 * BLOCK + 1, &[4; 5]).unwrap();
        model.resize(3 * 4096 + 1, 0);
        model.extend_from_slice(&[4; 5]);
        assert_eq!(read(&backend, 0, model.len()), model);
        let mut past = [0u8; 2];
        assert!(backend.read(model.len() as u64 - 1, &mut past).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), original, "the file changed");
    }

    /// A writer holding the file excludes the view, and the view excludes a writer; views
    /// share the file.
    #[test]
    fn views_share_the_file_and_exclude_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            drop(db);
        }
        let open_view = || {
            let backend = OverlayBackend::new(File::open(&path).unwrap()).unwrap();
            redb::Database::builder().create_with_backend(backend)
        };
        let writer = redb::Database::create(&path).unwrap();
        assert!(matches!(open_view(), Err(redb::DatabaseError::DatabaseAlreadyOpen)));
        drop(writer);
        let first = open_view().unwrap();
        let second = open_view().unwrap();
        assert!(matches!(
            redb::Database::create(&path),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
        ));
        drop((first, second));
        assert!(redb::Database::create(&path).is_ok());
    }
}
