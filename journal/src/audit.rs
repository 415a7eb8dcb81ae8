//! The audit: every record verified and replayed from genesis, the invariants checked along the
//! way, and every snapshot compared with the replayed state. `pt-replay audit` prints it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use engine::{Digest, State};

use crate::error::{ReadError, SnapshotError, SnapshotInvalid, StorageFault, WriteError};
use crate::journal::Journal;
use crate::record::Seq;
use crate::replay::PROGRESS_EVERY_RECORDS;

/// Audit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// Check the engine invariants (linear in the history) after every this many events, besides
    /// at every snapshot and at the end. `State::apply` checks each event as it goes.
    pub invariants_every_events: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { invariants_every_events: 1_000_000 }
    }
}

/// What kind of problem an audit found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A record fails its checksum, link, sequence or decoding.
    Record,
    /// A record decodes but does not apply to the state.
    Apply,
    /// The state breaks an invariant.
    Invariant,
    /// A snapshot is damaged or disagrees with the replayed state.
    Snapshot,
}

impl ProblemKind {
    /// A stable snake_case name, for JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Record => "record",
            Self::Apply => "apply",
            Self::Invariant => "invariant",
            Self::Snapshot => "snapshot",
        }
    }
}

/// The first problem an audit found; the audit stops there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditProblem {
    /// The sequence number of the bad record (or the record a bad snapshot covers).
    pub seq: Seq,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What is wrong, in words (including the file).
    pub message: String,
}

impl fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} problem at sequence number {}: {}",
            self.kind.as_str(),
            self.seq,
            self.message
        )
    }
}

/// The outcome of an audit.
#[derive(Debug, Clone)]
pub struct AuditReport {
    /// The last record applied.
    pub last_seq: Seq,
    /// Records verified and applied.
    pub events: u64,
    /// Accounts in the final state.
    pub accounts: u64,
    /// Digest of the final state (of the state before the problem, if there is one).
    pub digest: Digest,
    /// Snapshots whose state was compared with the replay.
    pub snapshots_verified: u64,
    /// How many times the invariants were checked.
    pub invariant_checks: u64,
    /// Things worth knowing that are not problems (snapshots of another format version).
    pub notes: Vec<String>,
    /// The first problem, if any.
    pub problem: Option<AuditProblem>,
    /// The final state.
    pub state: State,
}

impl AuditReport {
    /// True when no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problem.is_none()
    }
}

enum Stop {
    Problem(AuditProblem),
    Fault(StorageFault),
}

impl From<StorageFault> for Stop {
    fn from(fault: StorageFault) -> Self {
        Stop::Fault(fault)
    }
}

struct Auditor<'j> {
    journal: &'j Journal,
    config: AuditConfig,
    state: State,
    last_seq: Seq,
    events: u64,
    snapshots_verified: u64,
    invariant_checks: u64,
    notes: Vec<String>,
    settled: SettledOrders,
    /// The last record after which the invariants were checked and held (`Seq(0)`: none yet).
    invariants_held_at: Seq,
}

/// The order ids that have an outcome, so that one settled twice is found. The master gives
/// each queued order a new id, above every id before it, and writes exactly one outcome for
/// it, while `State::apply` only holds an account's outcomes to order within one interval. So
/// every id of an interval must be above every id of the intervals before it, and appear once
/// in it: checked at each outcome with the interval's ids alone, in memory as large as the
/// interval (the file's size bounds it, whatever ids a forged file holds).
#[derive(Default)]
struct SettledOrders {
    /// The highest id of the intervals before the current one, if any.
    below: Option<u64>,
    /// The first id the current interval may hold (one above `below`).
    base: u64,
    /// The current interval's ids from `base` on, one bit each, for the first
    /// [`SettledOrders::WINDOW_IDS`] of them: the master's ids of an interval follow one
    /// another, so nearly all land here (128 KiB, made at the first outcome).
    window: Vec<u64>,
    /// Words of `window` set in the current interval (cleared when the next one starts).
    touched: usize,
    /// The current interval's ids past the window.
    far: HashSet<u64>,
    /// The highest id of the current interval.
    current_max: Option<u64>,
}

impl SettledOrders {
    const WINDOW_IDS: u64 = 1 << 20;

    /// Starts the next interval.
    fn next_interval(&mut self) {
        self.below = self.below.max(self.current_max);
        self.base = self.below.map_or(0, |below| below.saturating_add(1));
        let touched = self.touched.min(self.window.len());
        self.window[..touched].fill(0);
        self.touched = 0;
        self.far.clear();
        self.current_max = None;
    }

    /// Records the outcome of order `order`; the problem, if it is settled a second time.
    fn outcome(&mut self, order: &engine::Order) -> Option<String> {
        let id = order.id.0;
        let who = || format!("account {}, client order id {}", order.account.0, order.client_id.0);
        if let Some(below) = self.below.filter(|below| id <= *below) {
            return Some(format!(
                "order {id} ({}) is not above the ids of earlier intervals (up to {below}): an \
                 order settled a second time, or an id given twice",
                who()
            ));
        }
        let offset = id.saturating_sub(self.base);
        let new = if offset < Self::WINDOW_IDS {
            if self.window.is_empty() {
                self.window = vec![0; usize::try_from(Self::WINDOW_IDS / 64).unwrap_or(0)];
            }
            let word = usize::try_from(offset / 64).unwrap_or(0);
            let mask = 1u64 << (offset % 64);
            match self.window.get_mut(word) {
                Some(bits) => {
                    let new = *bits & mask == 0;
                    *bits |= mask;
                    self.touched = self.touched.max(word + 1);
                    new
                }
                None => self.far.insert(id),
            }
        } else {
            self.far.insert(id)
        };
        if !new {
            return Some(format!(
                "order {id} ({}) has an outcome already in this interval: an order is settled \
                 once",
                who()
            ));
        }
        self.current_max = self.current_max.max(Some(id));
        None
    }
}

impl Auditor<'_> {
    fn invariants(&mut self) -> Result<(), Stop> {
        self.invariant_checks += 1;
        let checked = self.state.check_invariants().map_err(|e| {
            // Checked every so many events: the record that broke it is one of those since the
            // last check that passed.
            let since = if self.invariants_held_at.0 + 1 < self.last_seq.0 {
                format!(
                    " (it held after record {}: the record that broke it is one of {} to {})",
                    self.invariants_held_at,
                    self.invariants_held_at.0 + 1,
                    self.last_seq
                )
            } else {
                String::new()
            };
            Stop::Problem(AuditProblem {
                seq: self.last_seq,
                kind: ProblemKind::Invariant,
                message: format!("state after this record breaks an invariant: {e}{since}"),
            })
        });
        if checked.is_ok() {
            self.invariants_held_at = self.last_seq;
        }
        checked
    }

    fn snapshot(&mut self, seq: Seq) -> Result<(), Stop> {
        let problem = |message: String| {
            Stop::Problem(AuditProblem { seq, kind: ProblemKind::Snapshot, message })
        };
        match self.journal.load_snapshot(seq) {
            Ok((_, info)) => {
                let replayed = self.state.digest();
                if info.digest != replayed {
                    return Err(problem(format!(
                        "snapshot digest {} differs from the replayed state's {replayed}",
                        info.digest
                    )));
                }
                self.snapshots_verified += 1;
                self.invariants()
            }
            Err(SnapshotError::Invalid {
                why: why @ (SnapshotInvalid::Format(_) | SnapshotInvalid::EventFormat(_)),
                ..
            }) => {
                self.notes.push(format!(
                    "snapshot at record {seq} ignored: {why} (open rebuilds it from the events)"
                ));
                // Still a point where the invariants are checked, as documented.
                self.invariants()
            }
            Err(SnapshotError::Read(ReadError::Storage(fault)))
            | Err(SnapshotError::Write(WriteError::Storage(fault))) => Err(Stop::Fault(fault)),
            Err(e) => Err(problem(e.to_string())),
        }
    }

    fn run(&mut self, progress: &mut dyn FnMut(Seq)) -> Result<(), Stop> {
        let snapshots: BTreeMap<Seq, ()> = self
            .journal
            .snapshots()
            .map_err(|e| self.read_stop(e))?
            .into_iter()
            .map(|entry| (entry.seq, ()))
            .collect();
        if snapshots.contains_key(&Seq(0)) {
            self.snapshot(Seq(0))?;
        }
        let mut records = self.journal.read_records(Seq(1)).map_err(|e| self.read_stop(e))?;
        let head = records.head();
        let mut since_check = 0u64;
        let mut since_progress = 0u64;
        for item in &mut records {
            let record = item.map_err(|e| self.read_stop(e))?;
            if let engine::Event::IntervalSettled(interval) = &record.event {
                self.settled.next_interval();
                // A price never goes back (the master leaves a tick older than the asset's
                // current one out of its interval): an older tick here was not the master's.
                let back = interval
                    .ticks
                    .iter()
                    .find_map(|tick| Some((tick, self.state.newer_tick_than(tick)?)));
                if let Some((tick, now)) = back {
                    return Err(Stop::Problem(AuditProblem {
                        seq: record.seq,
                        kind: ProblemKind::Invariant,
                        message: format!(
                            "a price goes back: interval {} has {}'s tick of {} after one of {} \
                             (the master never uses a tick older than the asset's current one)",
                            interval.interval, tick.symbol, tick.time, now.time
                        ),
                    }));
                }
            }
            if let Some(order) = record.event.outcome_order()
                && let Some(message) = self.settled.outcome(order)
            {
                return Err(Stop::Problem(AuditProblem {
                    seq: record.seq,
                    kind: ProblemKind::Apply,
                    message,
                }));
            }
            self.state.apply(&record.event).map_err(|e| {
                Stop::Problem(AuditProblem {
                    seq: record.seq,
                    kind: ProblemKind::Apply,
                    message: format!("event does not apply to the state: {e}"),
                })
            })?;
            self.last_seq = record.seq;
            self.events += 1;
            since_check += 1;
            since_progress += 1;
            if since_progress >= PROGRESS_EVERY_RECORDS {
                since_progress = 0;
                progress(record.seq);
            }
            if snapshots.contains_key(&record.seq) {
                since_check = 0;
                self.snapshot(record.seq)?;
            } else if since_check >= self.config.invariants_every_events {
                since_check = 0;
                self.invariants()?;
            }
        }
        progress(self.last_seq);
        self.invariants()?;
        if let Some(open) = self.state.interval_in_progress() {
            return Err(Stop::Problem(AuditProblem {
                seq: self.last_seq,
                kind: ProblemKind::Apply,
                message: format!(
                    "the journal ends inside interval {}: {} of its {} outcomes are recorded",
                    open.id, open.outcomes_applied, open.orders
                ),
            }));
        }
        if let Some((&seq, _)) = snapshots.range(Seq(head.0.saturating_add(1))..).next() {
            return Err(Stop::Problem(AuditProblem {
                seq,
                kind: ProblemKind::Snapshot,
                message: format!("snapshot covers record {seq}, the journal ends at {head}"),
            }));
        }
        Ok(())
    }

    fn read_stop(&self, e: ReadError) -> Stop {
        match e {
            ReadError::Storage(fault) => Stop::Fault(fault),
            ReadError::Corrupt { seq, .. } => Stop::Problem(AuditProblem {
                seq,
                kind: ProblemKind::Record,
                message: e.to_string(),
            }),
        }
    }
}

/// Audits the whole journal: reads every record, verifies checksums and links, replays from
/// genesis through `State::apply`, checks the invariants every `invariants_every_events`
/// events, at every snapshot and at the end, and compares every snapshot's digest with the
/// replayed state. Stops at the first problem (in the report). `Err` only when the storage
/// itself fails. `progress` gets the last record applied every few thousand records.
pub fn audit(
    journal: &Journal,
    config: AuditConfig,
    progress: &mut dyn FnMut(Seq),
) -> Result<AuditReport, StorageFault> {
    let mut auditor = Auditor {
        journal,
        config: AuditConfig { invariants_every_events: config.invariants_every_events.max(1) },
        state: State::new(),
        last_seq: Seq(0),
        events: 0,
        snapshots_verified: 0,
        invariant_checks: 0,
        notes: Vec::new(),
        settled: SettledOrders::default(),
        invariants_held_at: Seq(0),
    };
    let problem = match auditor.run(progress) {
        Ok(()) => None,
        Err(Stop::Problem(problem)) => Some(problem),
        Err(Stop::Fault(fault)) => return Err(fault),
    };
    Ok(AuditReport {
        last_seq: auditor.last_seq,
        events: auditor.events,
        accounts: auditor.state.accounts().len() as u64,
        digest: auditor.state.digest(),
        snapshots_verified: auditor.snapshots_verified,
        invariant_checks: auditor.invariant_checks,
        notes: auditor.notes,
        problem,
        state: auditor.state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{
        AccountId, ClientOrderId, Order, OrderId, OrderKind, Qty, Side, Symbol, Timestamp, WorkerId,
    };

    fn order(id: u64) -> Order {
        Order {
            id: OrderId(id),
            client_id: ClientOrderId(id),
            account: AccountId(1),
            symbol: Symbol::new("AAPL").unwrap_or_else(|_| unreachable!()),
            side: Side::Buy,
            qty: Qty::ZERO,
            kind: OrderKind::Market,
            placed_at: Timestamp(0),
            worker: WorkerId(0),
        }
    }

    /// Repeats are found in the window of bits and past it, the window starts afresh with
    /// each interval, and an id at or below the earlier intervals' is refused.
    #[test]
    fn settled_orders_find_repeats_in_and_past_the_window() {
        let mut settled = SettledOrders::default();
        let far = SettledOrders::WINDOW_IDS + 5;
        for id in [1, 2, 64, far] {
            assert_eq!(settled.outcome(&order(id)), None, "{id}");
        }
        for id in [2, far] {
            let problem = settled.outcome(&order(id));
            assert!(problem.is_some_and(|p| p.contains("has an outcome already")), "{id}");
        }
        settled.next_interval();
        let problem = settled.outcome(&order(far));
        assert!(problem.is_some_and(|p| p.contains("is not above")));
        // The next interval's ids, right above: the cleared window takes them again.
        for id in [far + 1, far + 2, far + 64] {
            assert_eq!(settled.outcome(&order(id)), None, "{id}");
        }
        assert!(settled.outcome(&order(far + 2)).is_some());
        settled.next_interval();
        assert_eq!(settled.outcome(&order(far + 65)), None);
    }
}
