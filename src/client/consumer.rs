//! Reading records: the `Consumer`, its assignment and positions, and the `poll` loop. Joining
//! and leaving the group are in `membership.rs`, catching up with a rebalance in
//! `rebalance.rs`, commits in `commit.rs`, and reading and sleeping in `fetch.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::transactions::ReadBy;
use crate::catalog::{Catalog, UserHandle};
use crate::error::{Error, Result};
use crate::group::file::{Group, Membership};
use crate::group::offsets::OffsetStore;
use crate::log::partition::Partition;
use crate::log::read::Cursor;
use crate::log::records::Records;
use crate::options::{ConsumerConfig, IsolationLevel, validate_topic_name};
use crate::topic::TopicPartition;

mod commit;
mod fetch;
mod membership;
mod rebalance;

use fetch::{SPIN_BEFORE_SLEEP, valid_position};

/// Told by a subscribed consumer when its partitions change. Every method is called from inside
/// `poll` (or `close`), on the consumer's own thread, with the consumer itself so that the
/// listener can commit or seek.
pub trait RebalanceListener: Send {
    /// The consumer now owns `partitions`; it reads them from their committed offsets.
    fn on_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// The consumer is about to give up `partitions`, which another member will read next:
    /// the last chance to commit what was processed.
    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// `partitions` were taken away without a revoke (this member was expelled): another
    /// member may already be reading them, so do not commit; a commit would be refused.
    fn on_lost(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// The committed offset of `partition` lies beyond the end of its log (the log lost its
    /// unsynced tail in a crash that the commit survived), so reading starts at `end` instead.
    fn on_offset_clamped(&mut self, consumer: &mut Consumer, partition: &TopicPartition, committed: u64, end: u64) {
        let _ = (consumer, partition, committed, end);
    }
}

/// A consumer's membership of its group, while it is subscribed.
struct Subscription {
    /// The group, opened by `subscribe`: a consumer that only reads assigned partitions never
    /// creates its group's files.
    group: Arc<Group>,
    topics: Vec<String>,
    /// With `subscribe_pattern`: the topics are every topic whose whole name matches.
    pattern: Option<regex::Regex>,
    /// `None` after the member was expelled, until it joins again.
    member: Option<Membership>,
    /// The generation this consumer has caught up with.
    generation: u64,
    /// The group's change counter when this consumer last looked at the group.
    seen_change: u32,
    /// Whether it owns its whole assignment of `generation`.
    complete: bool,
    /// Set while it commits and calls `on_revoked` before giving partitions up: commits of
    /// partitions it still owns then go through even if the group moved on meanwhile.
    revoking: bool,
    listener: Option<Box<dyn RebalanceListener>>,
}

struct Assignment {
    tp: TopicPartition,
    /// The id of the topic this partition belongs to: if the topic is deleted (and perhaps
    /// created again), this assignment is over.
    topic_id: u64,
    partition: Arc<Partition>,
    /// The next offset to return; `None` until the reset policy gives one.
    position: Option<u64>,
    /// The position when the latest poll began: everything before it was returned by an
    /// earlier poll, and the application polled again, so it is done with those records.
    /// Dropping the consumer commits this rather than `position`.
    processed: Option<u64>,
    /// Records the reset policy skipped (the position was below the log start), to report in
    /// the next poll's `Records::missed`, whichever call moved the position.
    missed: u64,
    cursor: Option<Cursor>,
    /// For a reader of committed records: offsets of the partition were sent to a transaction
    /// still open when it was assigned, so it waits (no position, no reset) until the
    /// transaction ends and then starts from the committed offset.
    awaiting_stable: bool,
}

/// Reads records, from partitions it was given with [`assign`](Consumer::assign) or that its
/// consumer group gives it after [`subscribe`](Consumer::subscribe).
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
/// let config = ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest).auto_commit(None);
/// let mut consumer = queue.consumer(config)?;
/// consumer.subscribe(&["orders"])?;
/// let records = consumer.poll(Duration::from_secs(5))?;
/// assert_eq!(records.iter().next().unwrap().value(), b"hello");
/// consumer.commit()?;
/// let tp = TopicPartition::new("orders", 0);
/// assert_eq!((consumer.position(&tp)?, consumer.committed(&tp)?), (1, Some(1)));
/// consumer.close()?;
/// # drop(queue); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
pub struct Consumer {
    /// Declared first so that it drops first (see `UserHandle`): the catalog outlives it.
    _handle: Arc<UserHandle>,
    catalog: Arc<Catalog>,
    config: ConsumerConfig,
    /// The group's committed offsets; its files are created by the first commit.
    offsets: Arc<OffsetStore>,
    assigned: Vec<Assignment>,
    /// Which assigned partition the next poll reads first, so none is starved.
    next_first: usize,
    subscription: Option<Subscription>,
    last_auto_commit: Instant,
    /// Set while a rebalance listener runs, which may not poll or change the subscription.
    in_listener: bool,
    /// The queue's topic-change counter when the assigned topics were last checked.
    topics_version: u64,
    /// Whether records lately came soon enough for spinning before a sleep to pay off.
    spinning_pays: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subscription = self.subscription.as_ref().map(|s| &s.topics);
        f.debug_struct("Consumer")
            .field("queue", &self.catalog.dir())
            .field("group", &self.config.group)
            .field("client_id", &self.config.client_id)
            .field("subscription", &subscription)
            .field("assignment", &self.assignment())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(handle: Arc<UserHandle>, catalog: Arc<Catalog>, config: ConsumerConfig) -> Result<Self> {
        config.validate()?;
        let offsets = catalog.offset_store(&config.group)?;
        if config.isolation_level == IsolationLevel::ReadCommitted {
            // Its keeper finishes the transactions of producers that die, which would hold
            // this consumer back otherwise.
            catalog.start_keeper();
        }
        Ok(Consumer {
            _handle: handle,
            catalog,
            config,
            offsets,
            assigned: Vec::new(),
            next_first: 0,
            subscription: None,
            last_auto_commit: Instant::now(),
            in_listener: false,
            topics_version: 0,
            spinning_pays: true,
        })
    }

    /// Reads exactly these partitions from now on, outside any group rebalancing. Partitions
    /// already assigned keep their positions; new ones start at the group's committed offset,
    /// or per the reset policy.
    ///
    /// # Errors
    /// - [`Error::IllegalState`]: the consumer is subscribed, or this is a rebalance listener.
    /// - [`Error::InvalidTopicName`], [`Error::UnknownTopic`], [`Error::PartitionOutOfRange`].
    /// - the [file errors](crate#errors) from opening a partition or reading the committed offsets.
    pub fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.not_in_listener()?;
        if self.subscription.is_some() {
            return Err(Error::IllegalState("assign cannot be used while the consumer is subscribed; unsubscribe first"));
        }
        for tp in partitions {
            validate_topic_name(tp.topic())?;
        }
        let mut assigned = Vec::with_capacity(partitions.len());
        for tp in partitions {
            if assigned.iter().any(|a: &Assignment| &a.tp == tp) {
                continue;
            }
            let kept = self.assigned.iter().position(|a| &a.tp == tp).map(|i| self.assigned.swap_remove(i));
            let assignment = match kept {
                Some(assignment) => assignment,
                None => self.start(tp)?.0,
            };
            assigned.push(assignment);
        }
        self.assigned = assigned;
        self.next_first = 0;
        Ok(())
    }

    /// The partitions this consumer reads now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assigned.iter().map(|a| a.tp.clone()).collect()
    }

    /// The topics this consumer is subscribed to, sorted (with `subscribe_pattern`, those that
    /// match now); empty when it is not subscribed.
    pub fn subscription(&self) -> Vec<String> {
        self.subscription.as_ref().map(|s| s.topics.clone()).unwrap_or_default()
    }

    /// The latest group generation this member saw in a poll; `None` when it is not
    /// subscribed, has not polled since joining, or learned in a poll that it was expelled.
    /// Every rebalance starts a new generation, and commits are fenced by it. Under the
    /// cooperative strategy the member may still wait for partitions of that generation that
    /// their previous owner has not given up yet, and an expulsion shows only at the next poll.
    ///
    /// ```
    /// # fn main() -> Result<(), streamlog::Error> {
    /// # let dir = std::env::temp_dir().join(format!("streamlog-doc-generation-{}", std::process::id()));
    /// use std::time::Duration;
    /// use streamlog::{ConsumerConfig, Queue};
    /// let queue = Queue::open(&dir)?;
    /// queue.create_topic("orders", 2)?;
    /// let mut consumer = queue.consumer(ConsumerConfig::new("billing"))?;
    /// assert_eq!(consumer.generation(), None);
    /// consumer.subscribe(&["orders"])?;
    /// consumer.poll(Duration::from_millis(10))?;
    /// assert_eq!(consumer.subscription(), ["orders"]);
    /// assert!(consumer.generation().is_some());
    /// # drop((consumer, queue)); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn generation(&self) -> Option<u64> {
        let subscription = self.subscription.as_ref()?;
        subscription.member.as_ref()?;
        (subscription.generation > 0).then_some(subscription.generation)
    }

    /// Makes `offset` the next record `poll` returns from `partition`. An offset outside the
    /// log is reset per `auto_offset_reset` when it is next used.
    ///
    /// # Errors
    /// [`Error::NotAssigned`], [`Error::InvalidTopicName`].
    pub fn seek(&mut self, partition: &TopicPartition, offset: u64) -> Result<()> {
        let assignment = self.assignment_mut(partition)?;
        assignment.position = Some(offset);
        assignment.awaiting_stable = false;
        assignment.cursor = None;
        // The application chose where reading goes on; a reset of this new position counts
        // what it skips afresh.
        assignment.missed = 0;
        Ok(())
    }

    /// Moves to the first record still in the log.
    ///
    /// # Errors
    /// As [`seek`](Self::seek).
    pub fn seek_to_beginning(&mut self, partition: &TopicPartition) -> Result<()> {
        let start = self.assignment_mut(partition)?.partition.start_offset();
        self.seek(partition, start)
    }

    /// Moves to the end of the log (for a reader of committed records, to its last stable
    /// offset, as in Kafka): only records sent later are returned.
    ///
    /// # Errors
    /// As [`seek`](Self::seek).
    pub fn seek_to_end(&mut self, partition: &TopicPartition) -> Result<()> {
        let log = Arc::clone(&self.assignment_mut(partition)?.partition);
        let end = self.readable_end(&log);
        self.seek(partition, end)
    }

    /// The offset of the next record `poll` will return from `partition`. A position outside
    /// the log is reset here, per `auto_offset_reset`; records that skips are reported by the
    /// next poll's `Records::missed`.
    ///
    /// # Errors
    /// As [`seek`](Self::seek); with `OffsetReset::None`, [`Error::NoOffset`] when there is no
    /// position and [`Error::OffsetOutOfRange`] when it lies outside the log;
    /// [`Error::UnstableOffsetCommit`] for a reader of committed records while the partition's
    /// committed offset waits for an open transaction (see `poll`).
    pub fn position(&mut self, partition: &TopicPartition) -> Result<u64> {
        if self.assignment_mut(partition)?.awaiting_stable {
            self.start_settled()?;
        }
        let config = self.config.clone();
        let assignment = self.assignment_mut(partition)?;
        if assignment.awaiting_stable {
            return Err(Error::UnstableOffsetCommit { group: config.group, partition: partition.clone() });
        }
        valid_position(assignment, &config)
    }

    fn assignment_mut(&mut self, partition: &TopicPartition) -> Result<&mut Assignment> {
        validate_topic_name(partition.topic())?;
        self.assigned.iter_mut().find(|a| &a.tp == partition).ok_or_else(|| Error::NotAssigned(partition.clone()))
    }

    /// Returns the records available now, or waits up to `timeout` for some to arrive. Records
    /// sent by any thread or process wake the wait at once. A subscribed consumer also takes
    /// part in its group here: it joins, gives up and takes partitions, and calls its listener.
    ///
    /// An error of one partition does not hold up the others: it is returned only by a poll
    /// that has no records to return, and that partition's position stays where it failed.
    ///
    /// # Errors
    /// - [`Error::IllegalState`] inside a rebalance listener.
    /// - [`Error::UnknownTopic`]: an assigned topic was deleted (it is dropped from the
    ///   assignment; the next poll goes on with the rest).
    /// - With `OffsetReset::None`: [`Error::NoOffset`], [`Error::OffsetOutOfRange`].
    /// - [`Error::GroupFull`], [`Error::StrategyMismatch`], [`Error::GroupStateTooLarge`]: a
    ///   member that was expelled rejoins here, as in `subscribe`.
    /// - [`Error::Corrupt`] naming the file and byte of a damaged record, and the other
    ///   [file errors](crate#errors) of partitions and group files.
    pub fn poll(&mut self, timeout: Duration) -> Result<Records> {
        self.not_in_listener()?;
        let deadline = Instant::now().checked_add(timeout).unwrap_or_else(far_future);
        let mut records = Records::with_capacity(self.config.max_poll_records.min(1 << 16));
        if let Some(interval) = self.config.auto_commit
            && self.last_auto_commit.elapsed() >= interval
        {
            self.auto_commit_now();
        }
        for assignment in &mut self.assigned {
            assignment.processed = assignment.position;
        }
        let mut spins = 0u32;
        loop {
            // A failure to catch up with the group does not stop reading what this consumer
            // owns; it is reported when there is nothing to return.
            let synced = self.drop_deleted_topics().and_then(|()| self.sync_group());
            if let Err(error) = self.fetch(&mut records).and(synced)
                && records.is_empty()
            {
                return Err(error);
            }
            if !records.is_empty() && !self.still_member() {
                // Expelled while reading: another member may own these partitions already.
                records = Records::with_capacity(0);
                continue;
            }
            if !records.is_empty() || Instant::now() >= deadline {
                for assignment in &mut self.assigned {
                    if assignment.missed > 0 {
                        records.note_missed(assignment.tp.clone(), std::mem::take(&mut assignment.missed));
                    }
                }
                return Ok(records);
            }
            if self.config.busy_poll && !self.assigned.is_empty() {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) {
                    std::thread::yield_now();
                }
                std::hint::spin_loop();
            } else if !(self.spinning_pays && self.spin_for_records(deadline)) {
                // Spinning is worth it again once records come soon after going to sleep.
                let slept = Instant::now();
                self.wait(deadline);
                self.spinning_pays = slept.elapsed() < 2 * SPIN_BEFORE_SLEEP;
            }
        }
    }

    /// After any process changed topics: stops reading partitions whose topic was deleted (or
    /// deleted and created again), and reports the first such topic as `Error::UnknownTopic`.
    /// A subscribed consumer's group then rebalances them away.
    fn drop_deleted_topics(&mut self) -> Result<()> {
        let version = self.catalog.topics_version();
        if version == self.topics_version {
            return Ok(());
        }
        self.topics_version = version;
        if let Some(pattern) = self.subscription.as_ref().and_then(|s| s.pattern.clone()) {
            let topics = self.catalog.topic_names()?;
            let matching: Vec<&str> = topics.iter().map(String::as_str).filter(|t| pattern.is_match(t)).collect();
            if self.subscription.as_ref().is_some_and(|s| s.topics != matching) {
                self.subscribe_to(&matching, Some(pattern))?;
            }
        }
        let catalog = &self.catalog;
        let mut deleted = None;
        let mut failure = None;
        self.assigned.retain(|a| {
            let gone = match catalog.topic(a.tp.topic()) {
                Ok(t) => t.id != a.topic_id || a.tp.partition() >= t.config.partitions,
                Err(Error::UnknownTopic(_)) => true,
                // Not known to be gone (a file error): keep reading it, report the error.
                Err(error) => {
                    failure.get_or_insert(error);
                    false
                }
            };
            if gone {
                deleted.get_or_insert_with(|| a.tp.topic().to_owned());
            }
            !gone
        });
        if let Some(subscription) = &mut self.subscription
            && deleted.is_some()
        {
            subscription.complete = false;
        }
        if let Some(error) = failure {
            // Look again on the next poll.
            self.topics_version = version.wrapping_sub(1);
            return Err(error);
        }
        self.next_first = 0;
        match deleted {
            Some(topic) => Err(Error::UnknownTopic(topic)),
            None => Ok(()),
        }
    }

    fn not_in_listener(&self) -> Result<()> {
        if self.in_listener {
            return Err(Error::IllegalState(
                "a rebalance listener may commit, seek and ask for positions, but not poll, assign or change the subscription",
            ));
        }
        Ok(())
    }

    /// Whether this consumer may keep what it read: it is not subscribed, or still a member.
    fn still_member(&self) -> bool {
        match &self.subscription {
            None => true,
            Some(subscription) => subscription.member.as_ref().is_some_and(|m| subscription.group.is_member(m)),
        }
    }

    /// Calls the listener, if any, with this consumer and `partitions`.
    fn notify(
        &mut self,
        partitions: &[TopicPartition],
        call: impl FnOnce(&mut dyn RebalanceListener, &mut Consumer, &[TopicPartition]),
    ) {
        let Some(mut listener) = self.subscription.as_mut().and_then(|s| s.listener.take()) else {
            return;
        };
        self.in_listener = true;
        call(listener.as_mut(), self, partitions);
        self.in_listener = false;
        if let Some(subscription) = &mut self.subscription {
            subscription.listener.get_or_insert(listener);
        }
    }

    /// A new assignment of `tp`, positioned at the committed offset if there is one in the log.
    /// A committed offset past the end of the log is clamped to the end and returned as
    /// (committed, end) so the listener can be told. A reader of committed records whose
    /// partition has offsets in an open transaction gets no position yet (`awaiting_stable`).
    fn start(&self, tp: &TopicPartition) -> Result<(Assignment, Option<(u64, u64)>)> {
        let partition = self.catalog.partition(tp)?;
        let awaiting_stable = self.requires_stable() && self.offsets.unstable(std::slice::from_ref(tp))?;
        let topic_id = self.catalog.topic_id(tp.topic());
        let mut assignment = Assignment {
            tp: tp.clone(),
            topic_id,
            partition,
            position: None,
            processed: None,
            missed: 0,
            cursor: None,
            awaiting_stable,
        };
        let clamped = match awaiting_stable {
            true => None,
            false => self.start_at_committed(&mut assignment)?,
        };
        Ok((assignment, clamped))
    }

    /// Whether this consumer waits for offsets sent to open transactions before it starts from
    /// the committed offset: a reader of committed records does, as in Kafka.
    fn requires_stable(&self) -> bool {
        self.config.isolation_level == IsolationLevel::ReadCommitted
    }

    /// Positions `assignment` at its committed offset, if there is one (see `start`).
    fn start_at_committed(&self, assignment: &mut Assignment) -> Result<Option<(u64, u64)>> {
        let committed = self.committed(&assignment.tp)?;
        let end = assignment.partition.tail().end_offset;
        let (position, clamped) = match committed {
            Some(committed) if committed > end => (Some(end), Some((committed, end))),
            // Below the log start, the reset policy applies on the first fetch, which reports
            // the records retention deleted as missed.
            Some(committed) => (Some(committed), None),
            None => (None, None),
        };
        assignment.position = position;
        assignment.awaiting_stable = false;
        Ok(clamped)
    }

    /// Starts the partitions that waited for an open transaction's offsets, once it ended (a
    /// committed offset past the end is clamped to it, without telling the listener).
    fn start_settled(&mut self) -> Result<()> {
        if !self.assigned.iter().any(|a| a.awaiting_stable) {
            return Ok(());
        }
        let mut assigned = std::mem::take(&mut self.assigned);
        let mut result = Ok(());
        for assignment in assigned.iter_mut().filter(|a| a.awaiting_stable) {
            let started = match self.offsets.unstable(std::slice::from_ref(&assignment.tp)) {
                Ok(true) => Ok(None),
                Ok(false) => self.start_at_committed(assignment),
                Err(error) => Err(error),
            };
            if let Err(error) = started {
                result = Err(error);
                break;
            }
        }
        self.assigned = assigned;
        result
    }

    /// The consumer's group and its place in it, for offsets sent to a transaction
    /// ([`TransactionalProducer::send_offsets_to_transaction`](crate::TransactionalProducer::send_offsets_to_transaction)),
    /// as Kafka's `groupMetadata`: the transaction then commits them only while this
    /// consumer is still a member of the generation it is in now.
    pub fn group_metadata(&self) -> ConsumerGroupMetadata {
        let read_by = match &self.subscription {
            None => ReadBy::Assignment,
            Some(Subscription { member: Some(member), generation, .. }) => {
                ReadBy::Member { member: member.key(), generation: *generation }
            }
            Some(Subscription { member: None, .. }) => ReadBy::Expelled,
        };
        ConsumerGroupMetadata { group_id: self.config.group.clone(), read_by }
    }
}

/// What a transaction needs to know of the consumer whose offsets it commits (Kafka's
/// `ConsumerGroupMetadata`): its group, and for a subscribed consumer its member id and
/// generation, so that a member expelled since (a zombie) cannot have its offsets committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    group_id: String,
    read_by: ReadBy,
}

impl ConsumerGroupMetadata {
    /// The consumer group's name.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The generation the consumer was in; `None` for a consumer of assigned partitions.
    pub fn generation_id(&self) -> Option<u64> {
        match self.read_by {
            ReadBy::Member { generation, .. } => Some(generation),
            ReadBy::Assignment | ReadBy::Expelled => None,
        }
    }

    /// The consumer's member id; `None` for a consumer of assigned partitions or one that was
    /// removed from its group.
    pub fn member_id(&self) -> Option<u64> {
        match self.read_by {
            ReadBy::Member { member, .. } => Some(member.id),
            ReadBy::Assignment | ReadBy::Expelled => None,
        }
    }

    pub(crate) fn read_by(&self) -> ReadBy {
        self.read_by
    }
}

/// Dropping a subscribed consumer leaves its group at once. With auto-commit it first commits
/// the positions at which the last poll began (what every earlier poll returned), not the
/// records of the last poll, which an early return or a panic may have left unprocessed; while
/// the thread panics it commits nothing. `close` commits every position.
impl Drop for Consumer {
    fn drop(&mut self) {
        // Leaving at once lets the other members take the partitions without waiting for the
        // session to time out; nobody is left to hear an error. A drop may be an early return
        // or a panic in the middle of processing the last poll's records, so only what earlier
        // polls returned counts as processed (see `close`).
        let _ = self.leave_group(Processed::BeforeLastPoll);
    }
}

/// Which positions an automatic commit stores when partitions are given up.
#[derive(Clone, Copy)]
enum Processed {
    /// Everything `poll` returned: the application polled again (a revoke inside `poll`) or
    /// said it is done (`close`, `unsubscribe`).
    AllReturned,
    /// What every poll but the last returned, as the next poll's auto-commit would: the
    /// consumer is being dropped, perhaps with the last poll's records unprocessed.
    BeforeLastPoll,
}

/// A deadline no poll reaches: about thirty years from now.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(30 * 365 * 24 * 3600)
}
