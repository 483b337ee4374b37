//! Reading records: partitions assigned by hand, positions, and polls that sleep until data
//! arrives from any thread or process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::partition::{Cursor, Partition};
use crate::queue::Queue;
use crate::record::Records;
use crate::sys;
use crate::topic::TopicPartition;

/// Where a consumer starts when it has no valid position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// At the first record still in the log.
    Earliest,
    /// At the end: only records sent from now on.
    #[default]
    Latest,
    /// Nowhere: `poll` and `position` fail with [`Error::OffsetOutOfRange`].
    None,
}

/// Options for a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub(crate) group: String,
    pub(crate) auto_offset_reset: OffsetReset,
    pub(crate) max_poll_records: usize,
    pub(crate) check_crcs: bool,
    pub(crate) busy_poll: bool,
}

impl ConsumerConfig {
    /// A consumer in consumer group `group`, starting at the end of each partition, returning
    /// at most 500 records a poll and checking every batch's CRC.
    pub fn new(group: &str) -> Self {
        ConsumerConfig {
            group: group.to_owned(),
            auto_offset_reset: OffsetReset::Latest,
            max_poll_records: 500,
            check_crcs: true,
            busy_poll: false,
        }
    }

    /// Where to start in a partition with no position, or one outside the log.
    pub fn auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }

    /// The most records one `poll` returns (at least 1).
    pub fn max_poll_records(mut self, max: usize) -> Self {
        self.max_poll_records = max.max(1);
        self
    }

    /// Whether each batch's CRC is checked when first read (on by default, as in Kafka).
    pub fn check_crcs(mut self, check: bool) -> Self {
        self.check_crcs = check;
        self
    }

    /// Spin instead of sleeping while `poll` waits: lower latency, one busy core.
    pub fn busy_poll(mut self, spin: bool) -> Self {
        self.busy_poll = spin;
        self
    }

    /// The consumer group's name.
    pub fn group(&self) -> &str {
        &self.group
    }
}

struct Assignment {
    tp: TopicPartition,
    partition: Arc<Partition>,
    /// The next offset to return; `None` until the reset policy gives one.
    position: Option<u64>,
    cursor: Option<Cursor>,
}

/// Reads records from the partitions assigned to it.
///
/// ```
/// # fn main() -> Result<(), streamlog::Error> {
/// # let dir = std::env::temp_dir().join(format!("streamlog-doc-consumer-{}", std::process::id()));
/// use std::time::Duration;
/// use streamlog::{ConsumerConfig, OffsetReset, Queue, Record, TopicPartition};
/// let queue = Queue::open(&dir)?;
/// queue.create_topic("orders", 1)?;
/// queue.producer().send("orders", Record::new(b"hello"))?;
///
/// let mut consumer = queue.consumer(ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest))?;
/// let tp = TopicPartition::new("orders", 0);
/// consumer.assign(&[tp.clone()])?;
/// let records = consumer.poll(Duration::from_millis(100))?;
/// assert_eq!(records.iter().next().unwrap().value(), b"hello");
/// assert_eq!(consumer.position(&tp)?, 1);
/// # drop((consumer, queue)); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
pub struct Consumer {
    queue: Queue,
    config: ConsumerConfig,
    assigned: Vec<Assignment>,
    /// Which assigned partition the next poll reads first, so none is starved.
    next_first: usize,
}

impl Consumer {
    pub(crate) fn new(queue: Queue, config: ConsumerConfig) -> Self {
        Consumer { queue, config, assigned: Vec::new(), next_first: 0 }
    }

    /// Reads exactly these partitions from now on. Partitions already assigned keep their
    /// positions; new ones start per the reset policy.
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let mut assigned = Vec::with_capacity(partitions.len());
        for tp in partitions {
            if assigned.iter().any(|a: &Assignment| &a.tp == tp) {
                continue;
            }
            let kept = self.assigned.iter().position(|a| &a.tp == tp).map(|i| self.assigned.swap_remove(i));
            let assignment = match kept {
                Some(assignment) => assignment,
                None => Assignment { tp: tp.clone(), partition: self.queue.inner.partition(tp)?, position: None, cursor: None },
            };
            assigned.push(assignment);
        }
        self.assigned = assigned;
        self.next_first = 0;
        Ok(())
    }

    /// The partitions assigned to this consumer.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.iter().map(|a| a.tp.clone()).collect()
    }

    /// Makes `offset` the next record `poll` returns from `partition`.
    pub fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<()> {
        let assignment = self.assignment_mut(partition)?;
        assignment.position = Some(offset);
        assignment.cursor = None;
        Ok(())
    }

    /// Moves to the first record still in the log.
    pub fn seek_to_beginning(&mut self, partition: &TopicPartition) -> Result<()> {
        let start = self.assignment_mut(partition)?.partition.start_offset();
        self.seek(partition, start)
    }

    /// Moves to the end of the log: only records sent later are returned.
    pub fn seek_to_end(&mut self, partition: &TopicPartition) -> Result<()> {
        let end = self.assignment_mut(partition)?.partition.tail().end_offset;
        self.seek(partition, end)
    }

    /// The offset of the next record `poll` will return from `partition`.
    pub fn position(&mut self, partition: &TopicPartition) -> Result<u64> {
        let reset = self.config.auto_offset_reset;
        let assignment = self.assignment_mut(partition)?;
        valid_position(assignment, reset)
    }

    fn assignment_mut(&mut self, partition: &TopicPartition) -> Result<&mut Assignment> {
        self.assigned.iter_mut().find(|a| &a.tp == partition).ok_or_else(|| Error::NotAssigned(partition.clone()))
    }

    /// Returns the records available now, or waits up to `timeout` for some to arrive. Records
    /// sent by any thread or process wake the wait at once.
    pub fn poll(&mut self, timeout: Duration) -> Result<Records> {
        let deadline = Instant::now() + timeout;
        let mut records = Records::with_capacity(self.config.max_poll_records.min(1 << 16));
        let mut spins = 0u32;
        loop {
            self.fetch(&mut records)?;
            if !records.is_empty() || Instant::now() >= deadline || self.assigned.is_empty() {
                if self.assigned.is_empty() {
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                }
                return Ok(records);
            }
            if self.config.busy_poll {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) {
                    std::thread::yield_now();
                }
                std::hint::spin_loop();
            } else {
                self.wait(deadline);
            }
        }
    }

    /// Reads what is available from every assigned partition, up to `max_poll_records`. A
    /// partition that fails does not hold up the others: its error is returned only when no
    /// partition had records, and its position stays at the failing offset.
    fn fetch(&mut self, records: &mut Records) -> Result<()> {
        let count = self.assigned.len();
        let max = self.config.max_poll_records;
        let mut first_error = None;
        for i in 0..count {
            if records.len() >= max {
                break;
            }
            let assignment = &mut self.assigned[(self.next_first + i) % count];
            if let Err(error) = fetch_partition(assignment, &self.config, records) {
                first_error.get_or_insert(error);
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

    /// Sleeps until a record arrives in an assigned partition or the deadline passes.
    fn wait(&self, deadline: Instant) {
        let words: Vec<_> = self.assigned.iter().map(|a| a.partition.begin_wait()).collect();
        // Re-check after registering: a record published before registration is seen here,
        // and one published after it wakes the futex.
        let nothing_new = self.assigned.iter().all(|a| a.position.is_some_and(|p| p >= a.partition.tail().end_offset));
        if nothing_new {
            sys::futex_wait_any(&words, deadline);
        }
        for assignment in &self.assigned {
            assignment.partition.end_wait();
        }
    }
}

/// Reads what is available from one partition into `records`, up to `max_poll_records` in all.
fn fetch_partition(assignment: &mut Assignment, config: &ConsumerConfig, records: &mut Records) -> Result<()> {
    let position = valid_position(assignment, config.auto_offset_reset)?;
    let partition = &assignment.partition;
    let tail = partition.tail();
    if position >= tail.end_offset {
        return Ok(());
    }
    let mut cursor = match assignment.cursor.take() {
        Some(cursor) if cursor.offset() == position => cursor,
        _ => partition.cursor_at(position, &tail, config.check_crcs)?,
    };
    let result = partition.advance(&mut cursor, &tail, u64::MAX, Some((records, config.max_poll_records)), config.check_crcs);
    assignment.position = Some(cursor.offset());
    assignment.cursor = Some(cursor);
    result
}

/// The assignment's position, applying the reset policy if it has none or lies outside the log.
fn valid_position(assignment: &mut Assignment, reset: OffsetReset) -> Result<u64> {
    let start = assignment.partition.start_offset();
    let end = assignment.partition.tail().end_offset;
    match assignment.position {
        Some(position) if (start..=end).contains(&position) => Ok(position),
        position => {
            let reset_to = match reset {
                OffsetReset::Earliest => start,
                OffsetReset::Latest => end,
                OffsetReset::None => {
                    return Err(Error::OffsetOutOfRange {
                        partition: assignment.tp.clone(),
                        offset: position.unwrap_or(0),
                        start,
                        end,
                    });
                }
            };
            assignment.position = Some(reset_to);
            assignment.cursor = None;
            Ok(reset_to)
        }
    }
}
