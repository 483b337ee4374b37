//! `Queue`, the handle users hold on a queue directory: opening it, topic administration,
//! producers and consumers, offsets and group descriptions. The work is done by the catalog.

use std::path::Path;
use std::sync::Arc;

use crate::catalog::{Catalog, UserHandle};
use crate::client::consumer::Consumer;
use crate::client::producer::Producer;
use crate::client::transactional::TransactionalProducer;
use crate::error::{Error, Result};
use crate::group::describe::{GroupDescription, describe};
use crate::options::{ConsumerConfig, Durability, ProducerConfig, QueueOptions, validate_group_name};
use crate::topic::{TopicConfig, TopicPartition};

/// A handle on a queue directory. Cheap to clone; every clone shares the same topics and
/// mappings. Any number of processes may open the same directory at once.
///
/// ```
/// # fn main() -> Result<(), streamlog::Error> {
/// # let dir = std::env::temp_dir().join(format!("streamlog-doc-queue-{}", std::process::id()));
/// let queue = streamlog::Queue::open(&dir)?;
/// queue.create_topic("orders", 4)?;
/// assert_eq!(queue.topics()?, vec!["orders".to_string()]);
/// assert_eq!(queue.partition_count("orders")?, 4);
/// # drop(queue); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    /// Declared first so that it drops first: while it stops the background threads, `inner`
    /// still holds the queue, so that the queue's last reference goes on this thread.
    handle: Arc<UserHandle>,
    pub(crate) inner: Arc<Catalog>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("path", &self.inner.dir()).finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens the queue in `dir`, creating the directory if it is missing, with default options.
    /// A directory that holds anything but a queue is refused (`Error::ForeignFile`), and
    /// nothing is created in it.
    ///
    /// # Errors
    /// - [`Error::InvalidPath`]: `dir` is empty.
    /// - [`Error::ForeignFile`], [`Error::UnexpectedFileType`]: `dir` holds something that is
    ///   not a queue, or a symbolic link, FIFO or device where a queue file belongs.
    /// - [`Error::IncompatibleVersion`]: the queue was written by another format version.
    /// - the [file errors](crate#errors): [`Error::Io`], [`Error::DiskFull`], [`Error::Corrupt`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Queue> {
        Self::open_with(dir, QueueOptions::default())
    }

    /// Opens the queue in `dir` with `options`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(dir: impl AsRef<Path>, options: QueueOptions) -> Result<Queue> {
        let inner = Catalog::open(dir.as_ref())?;
        let queue = Queue { handle: Arc::new(UserHandle::new(&inner)), inner };
        queue.inner.start_maintenance(options.maintenance_interval);
        Ok(queue)
    }

    /// Creates a topic with `partitions` partitions and default settings.
    ///
    /// # Errors
    /// As [`create_topic_with`](Self::create_topic_with).
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        self.create_topic_with(name, TopicConfig::new(partitions))
    }

    /// Creates a topic with the given settings, which are persisted with it. The topic appears
    /// to every process at once, whole, or not at all.
    ///
    /// # Errors
    /// - [`Error::InvalidTopicName`]: see [`MAX_TOPIC_NAME_BYTES`](crate::MAX_TOPIC_NAME_BYTES)
    ///   and the allowed characters.
    /// - [`Error::TopicExists`]: a topic of that name exists.
    /// - [`Error::InvalidConfig`]: a setting outside its range (0 or more than
    ///   [`MAX_PARTITIONS`](crate::MAX_PARTITIONS) partitions, a segment size outside 256 B to
    ///   [`MAX_SEGMENT_BYTES`](crate::MAX_SEGMENT_BYTES), and so on).
    /// - the [file errors](crate#errors).
    pub fn create_topic_with(&self, name: &str, config: TopicConfig) -> Result<()> {
        self.inner.create_topic(name, config)
    }

    /// Changes a topic's settings: `change` gets the current ones and returns the new ones. The
    /// partition count cannot change here (see `add_partitions`); new segment sizes apply from
    /// each partition's next segment. Every process sees the change on its next call.
    ///
    /// ```
    /// # fn main() -> Result<(), streamlog::Error> {
    /// # let dir = std::env::temp_dir().join(format!("streamlog-doc-alter-{}", std::process::id()));
    /// let queue = streamlog::Queue::open(&dir)?;
    /// queue.create_topic("users", 1)?;
    /// queue.alter_topic("users", |config| config.retention_ms(3600 * 1000))?;
    /// assert_eq!(queue.topic_config("users")?.get_retention_ms(), 3600 * 1000);
    /// # drop(queue); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidTopicName`], [`Error::UnknownTopic`]; [`Error::InvalidConfig`] when the new settings are out of range
    /// or change the partition count; the [file errors](crate#errors).
    pub fn alter_topic(&self, name: &str, change: impl FnOnce(TopicConfig) -> TopicConfig) -> Result<()> {
        self.inner.alter_topic(name, change)
    }

    /// Grows a topic to `partitions` partitions. Partitions are never removed. Keyed records
    /// go to the partition of their key's hash modulo the partition count, so after this, new
    /// records of a key may go to another partition than its older records did (as in Kafka).
    /// Consumer groups subscribed to the topic rebalance to include the new partitions.
    ///
    /// # Errors
    /// [`Error::InvalidTopicName`], [`Error::UnknownTopic`]; [`Error::InvalidConfig`] when `partitions` is not more than
    /// the topic has, or more than [`MAX_PARTITIONS`](crate::MAX_PARTITIONS); the [file errors](crate#errors).
    pub fn add_partitions(&self, name: &str, partitions: u32) -> Result<()> {
        self.inner.add_partitions(name, partitions)
    }

    /// Deletes a topic and its records. Producers and consumers using it, in any process, get
    /// `Error::UnknownTopic` on their next call; readers holding its records keep them valid
    /// (files are unlinked, never shortened). Creating the name again starts a fresh log, and
    /// committed offsets of the old topic no longer apply to it.
    ///
    /// # Errors
    /// [`Error::InvalidTopicName`], [`Error::UnknownTopic`], the [file errors](crate#errors).
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        self.inner.delete_topic(name)
    }

    /// The names of all topics, sorted.
    ///
    /// # Errors
    /// the [file errors](crate#errors) from listing the topics directory.
    pub fn topics(&self) -> Result<Vec<String>> {
        self.inner.topic_names()
    }

    /// How many partitions a topic has.
    ///
    /// # Errors
    /// [`Error::InvalidTopicName`], [`Error::UnknownTopic`], the [file errors](crate#errors) from reading its settings.
    pub fn partition_count(&self, topic: &str) -> Result<u32> {
        Ok(self.inner.topic(topic)?.config.partitions)
    }

    /// Every partition of a topic, in order: what [`Consumer::assign`] takes to read the whole
    /// topic.
    ///
    /// # Errors
    /// As [`partition_count`](Self::partition_count).
    pub fn partitions(&self, topic: &str) -> Result<Vec<TopicPartition>> {
        let count = self.partition_count(topic)?;
        Ok((0..count).map(|partition| TopicPartition::new(topic, partition)).collect())
    }

    /// The first offset still in each partition of a topic, as [`offsets`](Self::offsets)
    /// gives it.
    ///
    /// # Errors
    /// As [`offsets`](Self::offsets), for the first partition that fails.
    pub fn beginning_offsets(&self, topic: &str) -> Result<Vec<(TopicPartition, u64)>> {
        self.partitions(topic)?.into_iter().map(|tp| Ok((tp.clone(), self.offsets(&tp)?.0))).collect()
    }

    /// The end of each partition of a topic (the offset its next record will get), as
    /// [`offsets`](Self::offsets) gives it. Each partition is read at its own moment, so with
    /// appends going on the ends are lower bounds. As a list of next offsets to read, it is what
    /// [`Consumer::commit_offsets`] takes to skip a group past everything sent so far.
    ///
    /// ```
    /// # fn main() -> Result<(), streamlog::Error> {
    /// # let dir = std::env::temp_dir().join(format!("streamlog-doc-end-offsets-{}", std::process::id()));
    /// use streamlog::{ConsumerConfig, Queue, Record};
    /// let queue = Queue::open(&dir)?;
    /// queue.create_topic("orders", 2)?;
    /// queue.producer().send("orders", Record::new(b"x").partition(1))?;
    /// let ends = queue.end_offsets("orders")?;
    /// assert_eq!(ends.iter().map(|(_, end)| *end).collect::<Vec<_>>(), [0, 1]);
    /// let mut consumer = queue.consumer(ConsumerConfig::new("late-joiner"))?;
    /// consumer.assign(&queue.partitions("orders")?)?;
    /// consumer.commit_offsets(&ends)?;
    /// # drop((consumer, queue)); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`offsets`](Self::offsets), for the first partition that fails.
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<(TopicPartition, u64)>> {
        self.partitions(topic)?.into_iter().map(|tp| Ok((tp.clone(), self.offsets(&tp)?.1))).collect()
    }

    /// A topic's current settings: those it was created with, as changed since by
    /// `alter_topic` and `add_partitions` from any process.
    ///
    /// # Errors
    /// As [`partition_count`](Self::partition_count).
    pub fn topic_config(&self, topic: &str) -> Result<TopicConfig> {
        Ok(self.inner.topic(topic)?.config.clone())
    }

    /// The first offset still in a partition's log and the offset the next record will get.
    /// Both come from the partition's shared state, checked against its segments first: a
    /// damaged state file is `Error::Corrupt` naming it.
    ///
    /// # Errors
    /// [`Error::InvalidTopicName`], [`Error::UnknownTopic`], [`Error::PartitionOutOfRange`],
    /// and the [file errors](crate#errors) of the partition (opening it may recover it first).
    pub fn offsets(&self, partition: &TopicPartition) -> Result<(u64, u64)> {
        let partition = self.inner.partition(partition)?;
        let (start, tail) = partition.checked_offsets().map_err(|e| partition.explain(e))?;
        Ok((start, tail.end_offset))
    }

    /// The earliest offset of `partition` whose record's timestamp is at or after
    /// `timestamp_ms` (milliseconds since the Unix epoch), or `None` if no record is that new.
    ///
    /// ```
    /// # fn main() -> Result<(), streamlog::Error> {
    /// # let dir = std::env::temp_dir().join(format!("streamlog-doc-time-{}", std::process::id()));
    /// use streamlog::{Queue, Record, TopicPartition};
    /// let queue = Queue::open(&dir)?;
    /// queue.create_topic("orders", 1)?;
    /// for t in [1_000, 2_000, 3_000] {
    ///     queue.producer().send("orders", Record::new(b"x").timestamp(t))?;
    /// }
    /// let tp = TopicPartition::new("orders", 0);
    /// assert_eq!(queue.offset_for_time(&tp, 1_500)?, Some(1));
    /// assert_eq!(queue.offset_for_time(&tp, 9_000)?, None);
    /// # drop(queue); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`offsets`](Self::offsets).
    pub fn offset_for_time(&self, partition: &TopicPartition, timestamp_ms: u64) -> Result<Option<u64>> {
        self.inner.partition(partition)?.offset_for_time(timestamp_ms)
    }

    /// Applies every topic's retention and compaction now, in this process, and returns how many
    /// segments were deleted or rewritten. A background thread also does this (every 30 seconds unless
    /// `QueueOptions::maintenance_interval` says otherwise) in one of the processes that have
    /// the queue open.
    ///
    /// # Errors
    /// The first error met (the [file errors](crate#errors) of a damaged partition or offset log); every other
    /// partition was still maintained.
    pub fn run_maintenance(&self) -> Result<usize> {
        self.inner.run_maintenance(&|| false)
    }

    /// A producer that sends with `Durability::Buffered`.
    pub fn producer(&self) -> Producer {
        self.producer_with(ProducerConfig::default())
    }

    /// A producer with the given options.
    pub fn producer_with(&self, config: ProducerConfig) -> Producer {
        if let Durability::Interval(interval) = config.durability {
            self.inner.start_flusher(interval);
        }
        Producer::new(Arc::clone(&self.inner), Arc::clone(&self.handle), config)
    }

    /// The current instance of the transactional producer `transactional_id`, with the default
    /// options (see [`TransactionalProducer`]). Making it fences the previous instance (in
    /// any process) and aborts the transaction it left open, or finishes the commit or abort
    /// it was in.
    ///
    /// # Errors
    /// [`Error::InvalidTransactionalId`]; file errors.
    pub fn transactional_producer(&self, transactional_id: &str) -> Result<TransactionalProducer> {
        self.transactional_producer_with(transactional_id, ProducerConfig::default())
    }

    /// A transactional producer with the given options (its durability applies to its records
    /// and to its commits; it is idempotent whatever `config` says).
    ///
    /// # Errors
    /// As [`transactional_producer`](Self::transactional_producer).
    pub fn transactional_producer_with(&self, transactional_id: &str, config: ProducerConfig) -> Result<TransactionalProducer> {
        if let Durability::Interval(interval) = config.durability {
            self.inner.start_flusher(interval);
        }
        let instance = self.inner.init_transactions(transactional_id, config.durability == Durability::Sync)?;
        // Its keeper finishes the transactions of producers that die, in any process.
        self.inner.start_keeper();
        let (queue, handle) = (Arc::clone(&self.inner), Arc::clone(&self.handle));
        Ok(TransactionalProducer::new(|transaction| Producer::transactional(queue, handle, config, transaction), instance))
    }

    /// A consumer in `config`'s group; give it partitions with `subscribe` or `assign`. It
    /// creates no file: the group's files appear with its first `subscribe` or commit.
    ///
    /// # Errors
    /// [`Error::InvalidGroupName`]; [`Error::InvalidConfig`] for a session timeout below
    /// [`MIN_SESSION_TIMEOUT`](crate::MIN_SESSION_TIMEOUT) or another setting out of range.
    pub fn consumer(&self, config: ConsumerConfig) -> Result<Consumer> {
        if let Durability::Interval(interval) = config.commit_durability {
            self.inner.start_flusher(interval);
        }
        Consumer::new(Arc::clone(&self.handle), Arc::clone(&self.inner), config)
    }

    /// A consumer group as it stands now: its generation, members and what each owns, and for
    /// every partition of the subscribed topics (and every partition with a commit) the
    /// committed offset, the end of the log and the lag between them.
    ///
    /// ```
    /// # fn main() -> Result<(), streamlog::Error> {
    /// # let dir = std::env::temp_dir().join(format!("streamlog-doc-describe-{}", std::process::id()));
    /// use streamlog::{ConsumerConfig, Queue, Record, TopicPartition};
    /// let queue = Queue::open(&dir)?;
    /// queue.create_topic("orders", 1)?;
    /// queue.producer().send("orders", Record::new(b"one"))?;
    /// queue.producer().send("orders", Record::new(b"two"))?;
    /// let mut consumer = queue.consumer(ConsumerConfig::new("billing"))?;
    /// consumer.assign(&[TopicPartition::new("orders", 0)])?;
    /// consumer.commit_offsets(&[(TopicPartition::new("orders", 0), 1)])?;
    /// let group = queue.describe_group("billing")?;
    /// assert_eq!((group.partitions[0].committed, group.partitions[0].lag), (Some(1), Some(1)));
    /// # drop((consumer, queue)); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidGroupName`], [`Error::UnknownGroup`], and the [file errors](crate#errors) of the group file and
    /// offset log.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        validate_group_name(group)?;
        if !self.inner.has_group(group) {
            return Err(Error::UnknownGroup(group.to_owned()));
        }
        let handle = self.inner.group(group)?;
        // Expel members that died, so that they are not listed (this process may run no keeper).
        let _ = handle.tick(&self.inner.partition_counts());
        let state = handle.snapshot()?;
        let committed = handle.offsets.all()?;
        let end_offset = |partition: &TopicPartition| match self.offsets(partition) {
            Ok((_, end)) => Ok(Some(end)),
            Err(Error::UnknownTopic(_) | Error::PartitionOutOfRange { .. }) => Ok(None),
            Err(error) => Err(error),
        };
        describe(group, state, &committed, end_offset, |topic| self.inner.topic_id(topic))
    }

    /// Closes this handle, reporting what a drop cannot. It waits for the background syncs of
    /// sealed segments, makes every record of every partition and offset log this process
    /// opened durable, whatever the producers' `Durability` (waiting for a sync under way in
    /// another thread or process, so that its outcome counts), and returns the first failed
    /// fsync among them, now or earlier, in any process (then the data it covered may be
    /// lost; see [`Error::Poisoned`]). `Ok` means every record those partitions held survives
    /// a power cut. Producers, consumers and other clones of this queue keep it open; the last
    /// of them to go stops the background threads, as a drop does.
    ///
    /// ```
    /// # fn main() -> Result<(), streamlog::Error> {
    /// # let dir = std::env::temp_dir().join(format!("streamlog-doc-close-{}", std::process::id()));
    /// use std::time::Duration;
    /// use streamlog::{Durability, ProducerConfig, Queue, Record};
    /// let queue = Queue::open(&dir)?;
    /// queue.create_topic("orders", 1)?;
    /// let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Interval(Duration::from_secs(1))));
    /// producer.send("orders", Record::new(b"x"))?;
    /// drop(producer);
    /// queue.close()?; // synced, or the error that says it is not
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Poisoned`] for a partition or offset log whose fsync failed, now or earlier,
    /// and [`Error::Io`] or [`Error::DiskFull`] from the final sync.
    pub fn close(self) -> Result<()> {
        self.inner.final_sync()
    }

    /// The directory this queue lives in.
    pub fn path(&self) -> &Path {
        self.inner.dir()
    }
}

#[cfg(test)]
mod tests {
    use crate::{ConsumerConfig, Durability, Queue, TopicPartition};

    #[test]
    fn a_sync_commit_syncs_every_directory_above_the_offset_log() {
        // A power cut keeps a directory's entries only as of its last fsync: each directory
        // created on the way to the offset log must be synced before the commit returns.
        let dir = std::env::temp_dir().join(format!("streamlog-unit-group-dirs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let queue = Queue::open(&dir).unwrap();
        queue.create_topic("t", 1).unwrap();
        let mut consumer = queue.consumer(ConsumerConfig::new("g").commit_durability(Durability::Sync)).unwrap();
        consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
        consumer.commit_offsets(&[(TopicPartition::new("t", 0), 0)]).unwrap();
        let synced = crate::sys::file::synced_directories();
        let groups = dir.join("groups");
        for parent in [std::env::temp_dir(), dir.clone(), groups.clone(), groups.join("g"), groups.join("g").join("offsets")] {
            assert!(synced.contains(&parent), "{} was never synced", parent.display());
        }
        drop((consumer, queue));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn handles_show_their_queue_and_what_they_do() {
        let dir = std::env::temp_dir().join(format!("streamlog-unit-debug-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let queue = Queue::open(&dir).unwrap();
        queue.create_topic("t", 1).unwrap();
        let producer = queue.producer();
        let mut consumer = queue.consumer(ConsumerConfig::new("billing").client_id("c-1")).unwrap();
        consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
        let path = format!("{:?}", dir);
        assert!(format!("{queue:?}").starts_with("Queue") && format!("{queue:?}").contains(&path), "{queue:?}");
        let shown = format!("{producer:?}");
        assert!(shown.contains(&path) && shown.contains("Buffered"), "{shown}");
        let shown = format!("{consumer:?}");
        for part in [path.as_str(), "billing", "c-1", "t", "partition: 0"] {
            assert!(shown.contains(part), "{part} is missing from {shown}");
        }
        drop((consumer, producer, queue));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
