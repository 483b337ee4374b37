//! Fetching and waiting: reading what the assigned partitions hold from each one's position,
//! and sleeping on their wake words (after a short spin) until more arrives.

use std::time::{Duration, Instant};

use super::{Assignment, Consumer};
use crate::error::{Error, Result};
use crate::log::partition::Partition;
use crate::log::records::Records;
use crate::options::{ConsumerConfig, IsolationLevel, OffsetReset};
use crate::sys::futex;

impl Consumer {
    /// Watches the assigned partitions' tails for a short while before going to sleep, as
    /// crossbeam-channel and parking_lot do: at high rates the next record usually comes within
    /// microseconds, and catching it here saves the few microseconds a futex wake-up costs.
    /// It yields the processor between looks, so that on a busy machine the producer it waits
    /// for gets to run; `poll` stops spinning while records come too rarely for it to pay.
    /// Returns whether a record arrived.
    pub(super) fn spin_for_records(&self, deadline: Instant) -> bool {
        if self.assigned.is_empty() {
            return false;
        }
        let until = deadline.min(Instant::now() + SPIN_BEFORE_SLEEP);
        for round in 0u32.. {
            if self.assigned.iter().any(|a| a.position.is_some_and(|p| p < self.readable_end(&a.partition))) {
                return true;
            }
            if round < 6 {
                for _ in 0..1 << round {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            if Instant::now() >= until {
                break;
            }
        }
        false
    }

    /// Where this consumer's reading of `partition` stops for now: the end of the log, or for
    /// a reader of committed records its last stable offset.
    pub(super) fn readable_end(&self, partition: &Partition) -> u64 {
        let tail = partition.tail();
        match self.config.isolation_level {
            IsolationLevel::ReadCommitted => partition.last_stable_offset(&tail),
            IsolationLevel::ReadUncommitted => tail.end_offset,
        }
    }

    /// Reads what is available from every assigned partition, up to `max_poll_records`. A
    /// partition that fails does not hold up the others: its error is returned only when no
    /// partition had records, and its position stays at the failing offset.
    pub(super) fn fetch(&mut self, records: &mut Records) -> Result<()> {
        // A failure to read the offset log holds up only the partitions waiting for it.
        let mut first_error = self.start_settled().err();
        let count = self.assigned.len();
        let max = self.config.max_poll_records;
        for i in 0..count {
            if records.len() >= max {
                break;
            }
            let assignment = &mut self.assigned[(self.next_first + i) % count];
            if let Err(error) = fetch_partition(assignment, &self.config, records) {
                first_error.get_or_insert(assignment.partition.explain(error));
            }
        }
        if count > 0 {
            self.next_first = (self.next_first + 1) % count;
        }
        match first_error {
            Some(error) if records.is_empty() => Err(error),
            _ => Ok(()),
        }
    }

    /// Sleeps until a record arrives in an assigned partition, the group changes, or the
    /// deadline passes. A subscribed consumer wakes at least every second to note that it is
    /// still polling.
    pub(super) fn wait(&self, deadline: Instant) {
        let mut words: Vec<_> = self.assigned.iter().map(|a| a.partition.begin_wait()).collect();
        let mut deadline = deadline;
        if let Some(subscription) = &self.subscription {
            let (word, change) = subscription.group.change_word();
            words.insert(0, (word, subscription.seen_change));
            if change != subscription.seen_change {
                deadline = Instant::now();
            }
            // Wake in time to note the poll before `max_poll_interval` runs out.
            deadline = deadline.min(Instant::now() + (self.config.max_poll_interval / 2).min(Duration::from_secs(1)));
        }
        // A partition waiting for an open transaction's offsets wakes with the offset log.
        let offset_log = self.assigned.iter().any(|a| a.awaiting_stable).then(|| self.offsets.opened_log()).flatten();
        if let Some(log) = &offset_log {
            words.push(log.begin_wait());
        }
        // Re-check after registering: a record published before registration is seen here,
        // and one published after it wakes the futex.
        let settled = || {
            self.assigned
                .iter()
                .any(|a| a.awaiting_stable && self.offsets.unstable(std::slice::from_ref(&a.tp)).is_ok_and(|u| !u))
        };
        let nothing_new =
            self.assigned.iter().all(|a| a.awaiting_stable || a.position.is_some_and(|p| p >= self.readable_end(&a.partition)))
                && !settled();
        if nothing_new {
            if words.is_empty() {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            } else {
                futex::futex_wait_any(&words, deadline);
            }
        }
        for assignment in &self.assigned {
            assignment.partition.end_wait();
        }
        if let Some(log) = &offset_log {
            log.end_wait();
        }
    }
}

/// How long `poll` watches for records before it sleeps.
pub(super) const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(20);

/// Reads what is available from one partition into `records`, up to `max_poll_records` in all:
/// to the end of the log, or for a reader of committed records to its last stable offset.
fn fetch_partition(assignment: &mut Assignment, config: &ConsumerConfig, records: &mut Records) -> Result<()> {
    if assignment.awaiting_stable {
        return Ok(());
    }
    let position = valid_position(assignment, config)?;
    let partition = &assignment.partition;
    let tail = partition.tail();
    let committed = config.isolation_level == IsolationLevel::ReadCommitted;
    let until = if committed { partition.last_stable_offset(&tail) } else { tail.end_offset };
    if position >= until {
        return Ok(());
    }
    let new_cursor = || match committed {
        true => partition.committed_cursor_at(position, &tail, config.check_crcs),
        false => partition.cursor_at(position, &tail, config.check_crcs),
    };
    let mut cursor = match assignment.cursor.take() {
        Some(cursor) if cursor.offset() == position => cursor,
        _ => match new_cursor() {
            Ok(cursor) => cursor,
            // Retention deleted the segment meanwhile: the next fetch applies the reset policy.
            Err(_) if position < partition.start_offset() => return Ok(()),
            Err(error) => return Err(error),
        },
    };
    let result = partition.advance(&mut cursor, &tail, until, Some((records, config.max_poll_records)), config.check_crcs);
    assignment.position = Some(cursor.offset());
    if result.is_err() && cursor.offset() < partition.start_offset() {
        // Retention deleted what the cursor was about to read: the next fetch resets.
        assignment.cursor = None;
        return Ok(());
    }
    assignment.cursor = Some(cursor);
    result
}

/// The assignment's position, applying the reset policy if it has none or lies outside the log.
/// A reset from below the log start (retention deleted records not read yet) adds what it
/// skips to the records the next poll reports missed. `Latest` is the end of the log, or for a
/// reader of committed records its last stable offset (as in Kafka: a transaction open there
/// may yet commit).
pub(super) fn valid_position(assignment: &mut Assignment, config: &ConsumerConfig) -> Result<u64> {
    let (reset, group) = (config.auto_offset_reset, &config.group);
    let start = assignment.partition.start_offset();
    let tail = assignment.partition.tail();
    let end = tail.end_offset;
    match assignment.position {
        Some(position) if (start..=end).contains(&position) => Ok(position),
        position => {
            let reset_to = match reset {
                OffsetReset::Earliest => start,
                OffsetReset::Latest if config.isolation_level == IsolationLevel::ReadCommitted => {
                    assignment.partition.last_stable_offset(&tail)
                }
                OffsetReset::Latest => end,
                OffsetReset::None => {
                    let partition = assignment.tp.clone();
                    return Err(match position {
                        // Without a position there was no committed offset to start from.
                        None => Error::NoOffset { group: group.to_owned(), partition },
                        Some(offset) => Error::OffsetOutOfRange { partition, offset, start, end },
                    });
                }
            };
            if let Some(old) = position
                && old < start
            {
                assignment.missed += reset_to - old;
            }
            assignment.position = Some(reset_to);
            assignment.cursor = None;
            Ok(reset_to)
        }
    }
}
