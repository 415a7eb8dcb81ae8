//! Reading records in order, verifying each one against the one before it.

use std::path::PathBuf;

use redb::{AccessGuard, ReadableDatabase, ReadableTable};
use rkyv::util::AlignedVec;

use crate::batch::{self, Cursor, FindError};
use crate::error::{Corruption, Fault, OrFault, ReadError, StorageFault};
use crate::journal::{EVENTS, INFO, INFO_HEAD, Journal};
use crate::record::{GENESIS_LINK, Header, Record, Seq};

/// An iterator over verified, decoded records (see [`Journal::read_records`]). It reads one
/// consistent snapshot of the file; after the first error it yields nothing more.
pub struct Records {
    range: redb::Range<'static, u64, &'static [u8]>,
    /// The batch being read and the cursor at its next record.
    batch: Option<(AccessGuard<'static, &'static [u8]>, Cursor)>,
    path: PathBuf,
    next: Seq,
    prev_crc: u32,
    head: Seq,
    aligned: AlignedVec,
    done: bool,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("path", &self.path)
            .field("next", &self.next)
            .field("head", &self.head)
            .finish()
    }
}

/// What reading one record from a batch gave.
enum Step {
    /// A verified record, and its event if decoded.
    Record(Header, Option<engine::Event>),
    /// The batch has no more records.
    EndOfBatch,
}

impl Records {
    pub(crate) fn new(journal: &Journal, from: Seq) -> Result<Records, ReadError> {
        let path = journal.path().to_path_buf();
        let fault = Fault(&path, "reading records");
        let read = journal.database().begin_read().or_fault(fault)?;
        let events = read.open_table(EVENTS).or_fault(fault)?;
        let head = read.open_table(INFO).or_fault(fault)?.get(INFO_HEAD).or_fault(fault)?;
        let head = Seq(head.map(|v| v.value()).unwrap_or(0));
        let from = from.max(Seq(1));
        let corrupt = |seq, what| ReadError::Corrupt { path: path.clone(), seq, what };
        let from_batch = |error: FindError| match error {
            FindError::Storage(e) => {
                ReadError::from(StorageFault::new(&path, "reading records", e))
            }
            FindError::Corrupt(seq, what) => corrupt(seq, what),
        };
        if from > head {
            // Nothing to read, unless records lie past the head (a damaged or missing head row
            // would otherwise hide every record after it): the last batch tells.
            if let Some((key, value)) = events.last().or_fault(fault)? {
                let last = match batch::walk(key.value(), value.value(), None, Seq(u64::MAX)) {
                    Ok((walk, _)) => walk.last.map_or(Seq(key.value()), |h| h.seq),
                    Err((seq, what)) => return Err(corrupt(seq, what)),
                };
                if last > head {
                    let past = Seq(head.0.saturating_add(1));
                    return Err(corrupt(past, Corruption::PastHead { head }));
                }
            }
        }
        let mut records = Records {
            range: events.range(from.0..).or_fault(fault)?,
            batch: None,
            path: path.clone(),
            next: from,
            prev_crc: GENESIS_LINK,
            head,
            aligned: AlignedVec::new(),
            done: from > head,
        };
        if records.done {
            return Ok(records);
        }
        let prev = Seq(from.0 - 1);
        if prev > Seq(0) {
            match batch::header_of(&events, prev).map_err(from_batch)? {
                Some(header) => records.prev_crc = header.crc,
                None => return Err(corrupt(prev, Corruption::Missing { head })),
            }
        }
        // Start inside the batch holding `from`, if it began earlier.
        let holding = events.range(..=from.0).or_fault(fault)?.next_back();
        if let Some(entry) = holding {
            let (key, value) = entry.or_fault(fault)?;
            let key = key.value();
            // A batch starting at `from` must chain onto the record before it.
            let link = (key == from.0).then_some(records.prev_crc);
            let (walk, cursor) = batch::walk(key, value.value(), link, from)
                .map_err(|(seq, what)| corrupt(seq, what))?;
            if walk.next == from && !walk.at_end {
                records.batch = Some((value, cursor));
                records.range = events.range(key.saturating_add(1)..).or_fault(fault)?;
            }
        }
        Ok(records)
    }

    /// The journal's head when the iterator started: the last record it will yield.
    pub fn head(&self) -> Seq {
        self.head
    }

    /// The sequence number of the record the iterator reads next.
    pub(crate) fn next_seq(&self) -> Seq {
        self.next
    }

    fn corrupt(&mut self, seq: Seq, what: Corruption) -> ReadError {
        self.done = true;
        ReadError::Corrupt { path: self.path.clone(), seq, what }
    }

    /// Reads the next record of the current batch.
    fn in_batch(&mut self, decode: bool) -> Result<Step, Corruption> {
        let Some((guard, cursor)) = &mut self.batch else { return Ok(Step::EndOfBatch) };
        let bytes = guard.value();
        if cursor.at_end(bytes) {
            return Ok(Step::EndOfBatch);
        }
        if self.next > self.head {
            return Err(Corruption::PastHead { head: self.head });
        }
        debug_assert_eq!(cursor.next_seq(), self.next, "the cursor reads the next record");
        let found = cursor.step(bytes)?;
        let event =
            if decode { Some(cursor.decode(bytes, &found, &mut self.aligned)?) } else { None };
        Ok(Step::Record(found.header, event))
    }

    /// The next record, verified; decoded only when `decode` is set.
    pub(crate) fn step(
        &mut self,
        decode: bool,
    ) -> Option<Result<(Header, Option<engine::Event>), ReadError>> {
        loop {
            if self.done {
                return None;
            }
            match self.in_batch(decode) {
                Err(what) => {
                    let seq = self.next;
                    return Some(Err(self.corrupt(seq, what)));
                }
                Ok(Step::Record(header, event)) => {
                    self.prev_crc = header.crc;
                    match self.next.next() {
                        Some(next) => self.next = next,
                        None => self.done = true,
                    }
                    return Some(Ok((header, event)));
                }
                Ok(Step::EndOfBatch) => self.batch = None,
            }
            match self.range.next() {
                None => {
                    self.done = true;
                    if self.next <= self.head {
                        let (seq, head) = (self.next, self.head);
                        return Some(Err(self.corrupt(seq, Corruption::Missing { head })));
                    }
                    return None;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(StorageFault::new(&self.path, "reading records", e).into()));
                }
                Some(Ok((key, value))) => {
                    let expected = self.next;
                    if key.value() != expected.0 {
                        let found = Seq(key.value());
                        return Some(Err(
                            self.corrupt(expected, Corruption::Gap { expected, found })
                        ));
                    }
                    match Cursor::open(expected.0, value.value(), Some(self.prev_crc)) {
                        Ok(cursor) => self.batch = Some((value, cursor)),
                        Err((seq, what)) => return Some(Err(self.corrupt(seq, what))),
                    }
                }
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.step(true)?.and_then(|(header, event)| match event {
            Some(event) => Ok(Record {
                seq: header.seq,
                recorded_at: header.recorded_at,
                crc: header.crc,
                event,
            }),
            None => Err(ReadError::Corrupt {
                path: self.path.clone(),
                seq: header.seq,
                what: Corruption::Payload("not decoded".to_owned()),
            }),
        }))
    }
}
