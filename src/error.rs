//! The one error type every fallible streamlog call returns.

use std::io;
use std::path::{Path, PathBuf};

use crate::topic::TopicPartition;

/// What went wrong. Each variant's message is a sentence that names the place of the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[expect(missing_docs, reason = "each field is named in its variant's message")]
pub enum Error {
    /// A topic name is empty, too long, `.`/`..`, or uses characters outside `[A-Za-z0-9._-]`.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    /// `create_topic` was called for a name that already exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The topic does not exist (or no longer exists).
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// A partition number at or beyond the topic's partition count.
    #[error("partition {partition} is out of range for topic {topic:?}, which has {count} partitions")]
    PartitionOutOfRange { topic: String, partition: u32, count: u32 },
    /// A record larger than the topic's `max_record_bytes`.
    #[error("a record of {size_bytes} bytes exceeds the limit of {max_bytes} bytes for topic {topic:?}")]
    RecordTooLarge { topic: String, size_bytes: u64, max_bytes: u64 },
    /// A record with more headers than one record can carry.
    #[error("a record for topic {topic:?} has {headers} headers, more than the {max_headers} one record can carry")]
    TooManyHeaders { topic: String, headers: usize, max_headers: usize },
    /// A header name longer than one record can carry.
    #[error("a record for topic {topic:?} has a header name of {name_bytes} bytes, more than the {max_bytes} allowed")]
    HeaderNameTooLong { topic: String, name_bytes: u64, max_bytes: u64 },
    /// A configuration value outside its allowed range (of a topic, a consumer, a producer or
    /// the queue).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A path that cannot name a queue directory, such as the empty path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    /// A topic pattern given to `subscribe_pattern` that is not a valid regular expression.
    #[error("invalid topic pattern {pattern:?}: {reason}")]
    InvalidPattern { pattern: String, reason: String },
    /// A file written by a format version this build cannot read.
    #[error("{path}: written in format version {found}, but this build reads only version {supported}")]
    IncompatibleVersion { path: PathBuf, found: u16, supported: u16 },
    /// Records compressed with a codec this build was compiled without (a topic set to
    /// `Compression::Zstd` needs the crate's `zstd` feature, to write and to read).
    #[error("records compressed with {codec}, which this build cannot do (enable streamlog's `{codec}` feature)")]
    CompressionUnavailable { codec: &'static str },
    /// A file in the queue directory that streamlog did not write.
    #[error("{path}: not a streamlog file ({reason})")]
    ForeignFile { path: PathBuf, reason: String },
    /// A path inside the queue directory that is not the kind of file streamlog keeps there,
    /// such as a symbolic link, a FIFO or a device. streamlog never follows or reads one.
    #[error("{path}: expected {expected}, found {found}")]
    UnexpectedFileType { path: PathBuf, expected: &'static str, found: &'static str },
    /// Damaged data: a bad checksum or an impossible value at a known place.
    #[error("{path}: corrupt data at byte {position}: {reason}")]
    Corrupt { path: PathBuf, position: u64, reason: String },
    /// The file system has no room left; nothing acknowledged was harmed and the operation can
    /// be retried once space is freed.
    #[error("no space left on device while trying to {operation} {path}")]
    DiskFull { operation: &'static str, path: PathBuf },
    /// A file operation failed.
    #[error("failed to {operation} {path}: {source}")]
    Io { operation: &'static str, path: PathBuf, source: io::Error },
    /// An fsync failed earlier, so this partition no longer accepts writes: the kernel may have
    /// dropped the unsynced data. Reopen the queue (from every process) to recover.
    #[error("partition {0} refuses writes because an earlier fsync failed; reopen the queue to recover")]
    Poisoned(TopicPartition),
    /// A consumer position outside the log, with `OffsetReset::None`.
    #[error("offset {offset} is outside the log of {partition}, which holds offsets {start}..{end}")]
    OffsetOutOfRange { partition: TopicPartition, offset: u64, start: u64, end: u64 },
    /// A consumer has no position in a partition: its group committed no offset for it, and
    /// `auto_offset_reset` is `OffsetReset::None`, so there is nowhere to start. Seek first.
    #[error(
        "group {group:?} has no committed offset for {partition}, and auto_offset_reset is OffsetReset::None; seek to choose where to start"
    )]
    NoOffset { group: String, partition: TopicPartition },
    /// A commit that does not fit in one batch of the offset log (a commit lands whole or not at
    /// all, so it is one batch); nothing was committed.
    #[error(
        "a commit of {partitions} partitions needs {size_bytes} bytes, more than the {max_bytes} one commit can hold; commit fewer partitions at once"
    )]
    CommitTooLarge { partitions: usize, size_bytes: u64, max_bytes: u64 },
    /// An operation on a partition that is not assigned to this consumer.
    #[error("partition {0} is not assigned to this consumer")]
    NotAssigned(TopicPartition),
    /// A consumer group name is empty, too long, `.`/`..`, or uses characters outside
    /// `[A-Za-z0-9._-]`.
    #[error("invalid group name {name:?}: {reason}")]
    InvalidGroupName { name: String, reason: &'static str },
    /// `describe_group` named a group that no consumer ever subscribed to or committed for.
    #[error("unknown consumer group {0:?}")]
    UnknownGroup(String),
    /// A consumer cannot join a group that has `MAX_GROUP_MEMBERS` live members already.
    #[error("group {group:?} already has {max_members} members; no more can join")]
    GroupFull { group: String, max_members: usize },
    /// A consumer asked to join a group whose live members use another assignment strategy;
    /// every member of a group uses the same one. The strategies are named as Kafka names them
    /// (`range`, `roundrobin`, `cooperative-sticky`).
    #[error("group {group:?} uses the {group_strategy} assignment strategy; a member asking for {requested} cannot join")]
    StrategyMismatch { group: String, group_strategy: &'static str, requested: &'static str },
    /// A group's state (members and their assignments) would not fit in its group file; use
    /// fewer members, topics or partitions in the group.
    #[error(
        "group {group:?} needs {size_bytes} bytes of state, more than the {max_bytes} its file holds; use fewer members or partitions"
    )]
    GroupStateTooLarge { group: String, size_bytes: u64, max_bytes: u64 },
    /// A group member's commit was refused because the member is a zombie: the group moved to a
    /// new generation it has not joined yet, or it is no longer a member at all.
    #[error("commit to group {group:?} refused: {reason}")]
    CommitFailed { group: String, reason: String },
    /// Offsets of the partition were sent to a transaction that is still open, so its
    /// committed offset may yet move: a reader of committed records does not start there until
    /// the transaction ends (Kafka's `UnstableOffsetCommitException`). `poll` waits for it by
    /// itself; retry after a poll.
    #[error("the committed offset of {partition} in group {group:?} waits for an open transaction")]
    UnstableOffsetCommit { group: String, partition: TopicPartition },
    /// An idempotent producer's batch was not the next one the partition expected from it: it
    /// skips sequence numbers or goes back to ones before its producer's last batch (a repeat
    /// of that last batch is not an error: it gets the offsets the first one got).
    #[error("producer {producer_id} sent {partition} sequence number {found}, where {expected} comes next")]
    OutOfOrderSequence { partition: TopicPartition, producer_id: u64, expected: u32, found: u32 },
    /// The producer was fenced: another instance with the same identity (the same
    /// transactional id) has a newer epoch. `partition` names the partition that refused the
    /// batch, or is `None` when the transaction's coordinator refused the call.
    #[error("producer {producer_id} of epoch {epoch} is fenced by its epoch {current_epoch}{}", on(partition))]
    ProducerFenced { partition: Option<TopicPartition>, producer_id: u64, epoch: u16, current_epoch: u16 },
    /// More transactions are open in the partition at once than its producer table holds.
    #[error("{partition} has {max} transactions open already")]
    TooManyOpenTransactions { partition: TopicPartition, max: usize },
    /// A transactional id that cannot name a transaction's file: empty, too long, `.` or `..`,
    /// or with a character outside ASCII letters, digits, `.`, `_` and `-`.
    #[error("invalid transactional id {name:?}: {reason}")]
    InvalidTransactionalId { name: String, reason: &'static str },
    /// The transaction touches more partitions, or sends more offsets, than its coordinator's
    /// file holds.
    #[error("transaction {transactional_id:?} needs {size_bytes} bytes of state, more than the {max_bytes} its file holds")]
    TransactionTooLarge { transactional_id: String, size_bytes: u64, max_bytes: u64 },
    /// A call that does not fit the consumer's state, such as `assign` on a subscribed consumer.
    #[error("{0}")]
    IllegalState(&'static str),
}

/// " on PARTITION", or nothing.
fn on(partition: &Option<TopicPartition>) -> String {
    partition.as_ref().map_or_else(String::new, |partition| format!(" on {partition}"))
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the operation and the path, recognising a full disk.
    pub(crate) fn io(operation: &'static str, path: &Path, source: io::Error) -> Self {
        let path = path.to_path_buf();
        if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
            Error::DiskFull { operation, path }
        } else {
            Error::Io { operation, path, source }
        }
    }

    pub(crate) fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt { path: path.to_path_buf(), position, reason: reason.into() }
    }
}

/// Attaches an operation and a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn during(self, operation: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn during(self, operation: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::io(operation, path, source))
    }
}
