//! The options users pass in (how durable a send or commit is, how a consumer reads, how a
//! queue runs its background work) and the checks every name and setting passes before it is used.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::topic::{
    Compression, MAX_PARTITIONS, MAX_RECORD_BYTES_LIMIT, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, TopicConfig, check_name,
};

/// When a sent record is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `send` returns once the record is in the shared file (the page cache): it survives the
    /// crash of any process, but not a power cut or kernel crash.
    #[default]
    Buffered,
    /// As `Buffered`, and a background thread fsyncs at least this often: a power cut loses at
    /// most about this much.
    Interval(Duration),
    /// `send` returns only after an fsync covering the record: it survives a power cut.
    /// Concurrent senders, in any process, share fsyncs (group commit).
    Sync,
}

/// Options for a [`Producer`](crate::Producer).
#[derive(Debug, Clone, Default)]
pub struct ProducerConfig {
    pub(crate) durability: Durability,
    pub(crate) idempotent: bool,
}

impl ProducerConfig {
    /// The defaults: `Durability::Buffered`, not idempotent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets when a send counts as done.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Makes the producer idempotent, as Kafka's `enable.idempotence`: it gets a producer id
    /// of its own (each clone too), and every batch it writes carries that id, an epoch and
    /// the sequence number of its first record among those it sent the partition. The
    /// partition appends a batch only if it comes next, and answers a repeat of a producer's
    /// last batch with the offsets the first one got instead of appending a second copy.
    /// Threads sharing one idempotent producer take turns to append; give each a clone to
    /// append in parallel.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

/// The shortest session timeout: heartbeats are written every 100 ms, so a shorter timeout
/// would expel healthy members whose heartbeat thread was briefly descheduled.
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_millis(500);

/// Where a consumer starts when it has no valid position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OffsetReset {
    /// At the first record still in the log.
    Earliest,
    /// At the end: only records sent from now on.
    #[default]
    Latest,
    /// Nowhere: `poll` and `position` fail with [`Error::NoOffset`] without a committed offset,
    /// and with [`Error::OffsetOutOfRange`] at a position outside the log.
    None,
}

/// Options for a [`Consumer`](crate::Consumer).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub(crate) group: String,
    pub(crate) client_id: String,
    pub(crate) auto_offset_reset: OffsetReset,
    pub(crate) max_poll_records: usize,
    pub(crate) check_crcs: bool,
    pub(crate) busy_poll: bool,
    pub(crate) assignment_strategy: AssignmentStrategy,
    pub(crate) session_timeout: Duration,
    pub(crate) max_poll_interval: Duration,
    pub(crate) auto_commit: Option<Duration>,
    pub(crate) commit_durability: Durability,
    pub(crate) isolation_level: IsolationLevel,
}

/// Which records of transactional producers a consumer reads, as Kafka's `isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// Every record, those of open and aborted transactions included (Kafka's default).
    #[default]
    ReadUncommitted,
    /// Only records outside transactions and those of committed transactions: a partition is
    /// read up to its last stable offset (the first offset of its earliest open transaction),
    /// and the records of aborted transactions are skipped. Markers are never returned
    /// either way; they take offsets, so a position may move past records it did not return.
    ReadCommitted,
}

impl ConsumerConfig {
    /// A consumer in consumer group `group`, with Kafka's defaults: start at the end of a
    /// partition with no committed offset, at most 500 records a poll, every batch's CRC
    /// checked, cooperative sticky assignment, a 10 s session timeout, a 5 min poll interval,
    /// and offsets committed automatically every 5 s (buffered).
    pub fn new(group: &str) -> Self {
        ConsumerConfig {
            group: group.to_owned(),
            client_id: format!("consumer-{}", std::process::id()),
            auto_offset_reset: OffsetReset::Latest,
            max_poll_records: 500,
            check_crcs: true,
            busy_poll: false,
            assignment_strategy: AssignmentStrategy::CooperativeSticky,
            session_timeout: Duration::from_secs(10),
            max_poll_interval: Duration::from_secs(300),
            auto_commit: Some(Duration::from_secs(5)),
            commit_durability: Durability::Buffered,
            isolation_level: IsolationLevel::ReadUncommitted,
        }
    }

    /// Where to start in a partition with no committed offset, or one outside the log.
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

    /// A name for this consumer, shown by `Queue::describe_group`.
    pub fn client_id(mut self, id: &str) -> Self {
        self.client_id = id.to_owned();
        self
    }

    /// How a subscribed group divides partitions; every member of a group must use the same.
    pub fn assignment_strategy(mut self, strategy: AssignmentStrategy) -> Self {
        self.assignment_strategy = strategy;
        self
    }

    /// How long a member may go without a heartbeat (its process paused or hung) before the
    /// group expels it. Heartbeats come from a background thread, not from `poll`. A member
    /// whose process dies is noticed within about 100 ms whatever this is. At least 500 ms.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How long a member may go between calls to `poll` before it leaves the group.
    pub fn max_poll_interval(mut self, interval: Duration) -> Self {
        self.max_poll_interval = interval;
        self
    }

    /// With `Some(interval)`, `poll` commits the positions reached by earlier polls at most
    /// this often, and a subscribed consumer commits every position before its partitions are
    /// revoked or it closes; `None` leaves committing to the application. Dropping a subscribed
    /// consumer without `close` commits only the positions reached by the polls before the
    /// last one, and nothing while the thread panics (see `Consumer::close`).
    pub fn auto_commit(mut self, interval: Option<Duration>) -> Self {
        self.auto_commit = interval;
        self
    }

    /// When a commit counts as done: `Durability::Sync` makes it survive a power cut before
    /// `commit` returns; `Interval` fsyncs in the background. Buffered by default.
    pub fn commit_durability(mut self, durability: Durability) -> Self {
        self.commit_durability = durability;
        self
    }

    /// Which records of transactions the consumer reads (`ReadUncommitted` by default, as in
    /// Kafka).
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = level;
        self
    }

    /// The consumer group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.session_timeout < MIN_SESSION_TIMEOUT {
            return Err(Error::InvalidConfig(format!(
                "session_timeout must be at least {MIN_SESSION_TIMEOUT:?}, not {:?}",
                self.session_timeout
            )));
        }
        if self.max_poll_interval < MIN_SESSION_TIMEOUT {
            return Err(Error::InvalidConfig(format!(
                "max_poll_interval must be at least {MIN_SESSION_TIMEOUT:?}, not {:?}",
                self.max_poll_interval
            )));
        }
        if self.client_id.len() > usize::from(u16::MAX) {
            return Err(Error::InvalidConfig("client_id must be shorter than 64 KiB".into()));
        }
        Ok(())
    }
}

/// How a consumer group divides partitions among its members (Kafka's `partition.assignment.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AssignmentStrategy {
    /// Kafka's RangeAssignor: per topic, consecutive ranges of partitions to members in member-id order.
    /// Eager: every rebalance revokes everything.
    Range,
    /// Kafka's RoundRobinAssignor: all partitions in (topic, partition) order dealt out to the members in
    /// member-id order, skipping members not subscribed to the partition's topic. Eager.
    RoundRobin,
    /// Kafka's CooperativeStickyAssignor: balanced within one partition per member, moves as few partitions
    /// as possible; only moved partitions are revoked.
    #[default]
    CooperativeSticky,
}

impl AssignmentStrategy {
    /// Whether rebalances revoke only the partitions that move (true) rather than all (false).
    pub(crate) fn is_cooperative(self) -> bool {
        matches!(self, Self::CooperativeSticky)
    }

    /// The name Kafka's consumers give the strategy in the group protocol.
    pub(crate) fn kafka_name(self) -> &'static str {
        match self {
            Self::Range => "range",
            Self::RoundRobin => "roundrobin",
            Self::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Stable one-byte code for the on-disk group state; `from_code` inverts it (None for unknown).
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Range => 1,
            Self::RoundRobin => 2,
            Self::CooperativeSticky => 3,
        }
    }

    /// The strategy whose `code` is `code`, or None for a code this version does not know.
    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Range),
            2 => Some(Self::RoundRobin),
            3 => Some(Self::CooperativeSticky),
            _ => None,
        }
    }
}

/// Options for [`Queue::open_with`](crate::Queue::open_with).
#[derive(Debug, Clone)]
pub struct QueueOptions {
    pub(crate) maintenance_interval: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions { maintenance_interval: Duration::from_secs(30) }
    }
}

impl QueueOptions {
    /// The defaults: retention and compaction run in the background every 30 seconds.
    pub fn new() -> Self {
        Self::default()
    }

    /// How often background maintenance (retention and compaction) runs, in whichever one
    /// process holds the maintenance role (Kafka's `log.retention.check.interval.ms`). At the
    /// same interval every process closes the files of topics deleted elsewhere.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval.max(Duration::from_millis(1));
        self
    }
}

/// Checks that every setting of `config` is within its limits.
pub(crate) fn validate_topic_config(config: &TopicConfig) -> Result<()> {
    let fail = |what: String| Err(Error::InvalidConfig(what));
    if config.partitions == 0 || config.partitions > MAX_PARTITIONS {
        return fail(format!("partitions must be 1 to {MAX_PARTITIONS}, not {}", config.partitions));
    }
    if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&config.segment_bytes) {
        return fail(format!("segment_bytes must be {MIN_SEGMENT_BYTES} to {MAX_SEGMENT_BYTES}, not {}", config.segment_bytes));
    }
    if config.segment_ms == 0 {
        return fail("segment_ms must be positive".into());
    }
    if config.max_record_bytes == 0 || config.max_record_bytes > MAX_RECORD_BYTES_LIMIT {
        return fail(format!("max_record_bytes must be 1 to {MAX_RECORD_BYTES_LIMIT}, not {}", config.max_record_bytes));
    }
    if !(64..=1 << 20).contains(&config.index_interval_bytes) {
        return fail(format!("index_interval_bytes must be 64 to {}, not {}", 1 << 20, config.index_interval_bytes));
    }
    if config.compression == Compression::Zstd && !cfg!(feature = "zstd") {
        return Err(Error::CompressionUnavailable { codec: "zstd" });
    }
    Ok(())
}

/// Checks a topic name: 1 to 249 bytes of `[A-Za-z0-9._-]`, and not `.` or `..`.
pub(crate) fn validate_topic_name(name: &str) -> Result<()> {
    check_name(name).map_err(|reason| Error::InvalidTopicName { name: name.to_owned(), reason })
}

/// Checks a transactional id by the same rules as a topic name (it names a file).
pub(crate) fn validate_transactional_id(name: &str) -> Result<()> {
    check_name(name).map_err(|reason| Error::InvalidTransactionalId { name: name.to_owned(), reason })
}

/// Checks a consumer group name by the same rules as a topic name (it names a directory too).
pub(crate) fn validate_group_name(name: &str) -> Result<()> {
    check_name(name).map_err(|reason| Error::InvalidGroupName { name: name.to_owned(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_the_directory_are_rejected() {
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", "a b", "ü", &"x".repeat(250), "a\0"] {
            assert!(matches!(validate_topic_name(bad), Err(Error::InvalidTopicName { .. })), "{bad:?}");
        }
        for good in ["orders", "a.b-c_d", "..a", "X9", &"x".repeat(249)] {
            validate_topic_name(good).unwrap();
        }
    }

    #[test]
    fn configs_outside_their_limits_are_rejected() {
        assert!(validate_topic_config(&TopicConfig::new(0)).is_err());
        assert!(validate_topic_config(&TopicConfig::new(1).segment_bytes(10)).is_err());
        assert!(validate_topic_config(&TopicConfig::new(1).max_record_bytes(0)).is_err());
        assert!(validate_topic_config(&TopicConfig::new(1).index_interval_bytes(1)).is_err());
        validate_topic_config(&TopicConfig::new(MAX_PARTITIONS)).unwrap();
    }
}
