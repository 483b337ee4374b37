//! Topic names and per-topic settings.

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 100_000;
/// Longest topic name, in bytes (Kafka's limit).
pub const MAX_TOPIC_NAME_BYTES: usize = 249;
/// Largest segment a topic may configure.
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
pub(crate) const MIN_SEGMENT_BYTES: u64 = 256;
/// Largest record a topic may allow.
pub const MAX_RECORD_BYTES_LIMIT: u32 = 64 << 20;
/// Most headers one record may carry (`Error::TooManyHeaders` beyond).
pub const MAX_HEADERS_PER_RECORD: usize = u16::MAX as usize;
/// Longest header name, in bytes of UTF-8 (`Error::HeaderNameTooLong` beyond).
pub const MAX_HEADER_NAME_BYTES: usize = u16::MAX as usize;

/// What happens to old records of a topic (Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CleanupPolicy {
    /// Whole old segments are deleted by time (`retention_ms`) and size (`retention_bytes`).
    #[default]
    Delete,
    /// Old records whose key has a newer record are removed (compaction); nothing is deleted
    /// by age or size.
    Compact,
    /// Both: compaction, and deletion by time and size.
    DeleteAndCompact,
}

impl CleanupPolicy {
    /// Whether retention by time and size applies.
    pub(crate) fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::DeleteAndCompact)
    }

    /// Whether compaction applies.
    pub(crate) fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::DeleteAndCompact)
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            CleanupPolicy::Delete => 1,
            CleanupPolicy::Compact => 2,
            CleanupPolicy::DeleteAndCompact => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        [CleanupPolicy::Delete, CleanupPolicy::Compact, CleanupPolicy::DeleteAndCompact].into_iter().find(|p| p.code() == code)
    }
}

/// How `send_batch` compresses a topic's batches (Kafka's `compression.type`, with its codec
/// names). Only batches compress, so records sent one at a time by `send` are stored as they
/// are; consumers decompress transparently, but records of a compressed batch are copied out
/// of it once per poll instead of being read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Batches are stored as they are.
    #[default]
    None,
    /// LZ4 (block format), fast on both sides.
    Lz4,
    /// Zstandard (level 3): smaller, slower to compress. Needs the crate's `zstd` feature to
    /// write or read.
    Zstd,
}

impl Compression {
    /// Kafka's name of the codec: `none`, `lz4` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The codec Kafka calls `name`, if streamlog has it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Compression::None, Compression::Lz4, Compression::Zstd].into_iter().find(|c| c.name() == name)
    }

    /// Kafka's number for the codec, as batch attributes and `topic.meta` store it.
    pub(crate) fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        [Compression::None, Compression::Lz4, Compression::Zstd].into_iter().find(|c| c.code() == code)
    }
}

/// Settings of one topic, persisted with it; all but the partition count can be changed later
/// with `Queue::alter_topic`, and `Queue::topic_config` reads the current ones back.
///
/// One naming rule for every setting: the builder method is the setting's name with its unit
/// (`retention_ms`, `segment_bytes`), as in Kafka's `retention.ms` and `segment.bytes`, and the
/// getter is the same name with `get_` (`get_retention_ms`), as `std::process::Command` does.
///
/// ```
/// use streamlog::{CleanupPolicy, TopicConfig};
/// let config = TopicConfig::new(4)
///     .segment_bytes(64 << 20)
///     .retention_ms(7 * 24 * 3600 * 1000)
///     .retention_bytes(10 << 30)
///     .cleanup_policy(CleanupPolicy::Delete);
/// assert_eq!(config.get_partitions(), 4);
/// assert_eq!(config.get_retention_bytes(), 10 << 30);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub(crate) partitions: u32,
    pub(crate) segment_bytes: u64,
    pub(crate) segment_ms: u64,
    pub(crate) max_record_bytes: u32,
    pub(crate) index_interval_bytes: u32,
    pub(crate) retention_ms: u64,
    pub(crate) retention_bytes: u64,
    pub(crate) cleanup_policy: CleanupPolicy,
    pub(crate) compression: Compression,
    pub(crate) min_compaction_lag_ms: u64,
    pub(crate) delete_retention_ms: u64,
    /// `min_cleanable_dirty_ratio` in millionths.
    pub(crate) min_cleanable_dirty_ppm: u32,
}

impl TopicConfig {
    /// A topic of `partitions` partitions with Kafka's defaults: 1 GiB segments rolled at
    /// least weekly, records up to 1 MiB, an index entry every 4 KiB, and the `Delete` cleanup
    /// policy keeping records for 7 days, whatever their size.
    pub fn new(partitions: u32) -> Self {
        TopicConfig {
            partitions,
            segment_bytes: MAX_SEGMENT_BYTES,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_record_bytes: 1 << 20,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: u64::MAX,
            cleanup_policy: CleanupPolicy::Delete,
            compression: Compression::None,
            min_compaction_lag_ms: 0,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ppm: 500_000,
        }
    }

    /// How long records are kept, in milliseconds: a sealed segment whose newest record is
    /// older than this is deleted. `u64::MAX` keeps them forever.
    pub fn retention_ms(mut self, ms: u64) -> Self {
        self.retention_ms = ms;
        self
    }

    /// How many bytes of log each partition keeps, counting the bytes of record batches (not
    /// the space files take): the oldest sealed segments are deleted while the log would still
    /// hold at least this much without them. `u64::MAX` (the default) sets no limit.
    pub fn retention_bytes(mut self, bytes: u64) -> Self {
        self.retention_bytes = bytes;
        self
    }

    /// Whether old records are deleted, compacted, or both.
    pub fn cleanup_policy(mut self, policy: CleanupPolicy) -> Self {
        self.cleanup_policy = policy;
        self
    }

    /// How batches are compressed from now on (batches already written stay as they are).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Records younger than this (milliseconds) are never compacted away.
    pub fn min_compaction_lag_ms(mut self, ms: u64) -> Self {
        self.min_compaction_lag_ms = ms;
        self
    }

    /// How long compaction keeps a tombstone, counted from the tombstone's own timestamp
    /// (milliseconds), so that consumers get to see the deletion; default one day.
    pub fn delete_retention_ms(mut self, ms: u64) -> Self {
        self.delete_retention_ms = ms;
        self
    }

    /// Compaction starts once this share (0 to 1) of a partition's log has not been compacted
    /// yet; default 0.5.
    pub fn min_cleanable_dirty_ratio(mut self, ratio: f64) -> Self {
        self.min_cleanable_dirty_ppm = (ratio.clamp(0.0, 1.0) * 1e6).round() as u32;
        self
    }

    /// A new segment starts once the active one holds this many bytes (256 B to 1 GiB).
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// A new segment starts once the active one is this old, in milliseconds.
    pub fn segment_ms(mut self, ms: u64) -> Self {
        self.segment_ms = ms;
        self
    }

    /// The largest record accepted, counting key, value, headers and per-record overhead.
    pub fn max_record_bytes(mut self, bytes: u32) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// Bytes of log between two entries of the sparse offset and time index.
    pub fn index_interval_bytes(mut self, bytes: u32) -> Self {
        self.index_interval_bytes = bytes;
        self
    }

    /// The number of partitions.
    pub fn get_partitions(&self) -> u32 {
        self.partitions
    }

    /// See [`segment_bytes`](Self::segment_bytes).
    pub fn get_segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// See [`segment_ms`](Self::segment_ms).
    pub fn get_segment_ms(&self) -> u64 {
        self.segment_ms
    }

    /// See [`max_record_bytes`](Self::max_record_bytes).
    pub fn get_max_record_bytes(&self) -> u32 {
        self.max_record_bytes
    }

    /// See [`index_interval_bytes`](Self::index_interval_bytes).
    pub fn get_index_interval_bytes(&self) -> u32 {
        self.index_interval_bytes
    }

    /// See [`retention_ms`](Self::retention_ms).
    pub fn get_retention_ms(&self) -> u64 {
        self.retention_ms
    }

    /// See [`retention_bytes`](Self::retention_bytes).
    pub fn get_retention_bytes(&self) -> u64 {
        self.retention_bytes
    }

    /// See [`cleanup_policy`](Self::cleanup_policy).
    pub fn get_cleanup_policy(&self) -> CleanupPolicy {
        self.cleanup_policy
    }

    /// See [`compression`](Self::compression).
    pub fn get_compression(&self) -> Compression {
        self.compression
    }

    /// See [`min_compaction_lag_ms`](Self::min_compaction_lag_ms).
    pub fn get_min_compaction_lag_ms(&self) -> u64 {
        self.min_compaction_lag_ms
    }

    /// See [`delete_retention_ms`](Self::delete_retention_ms).
    pub fn get_delete_retention_ms(&self) -> u64 {
        self.delete_retention_ms
    }

    /// See [`min_cleanable_dirty_ratio`](Self::min_cleanable_dirty_ratio); stored to a
    /// millionth.
    pub fn get_min_cleanable_dirty_ratio(&self) -> f64 {
        f64::from(self.min_cleanable_dirty_ppm) / 1e6
    }
}

/// Why `name` cannot name a topic or group (a directory): 1 to 249 bytes of `[A-Za-z0-9._-]`, not `.` or `..`.
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return Err("it is longer than 249 bytes");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are reserved");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// One partition of one topic.
///
/// ```
/// use streamlog::TopicPartition;
/// let tp = TopicPartition::new("orders", 3);
/// assert_eq!((tp.topic(), tp.partition(), tp.to_string()), ("orders", 3, "orders-3".to_string()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    topic: std::sync::Arc<str>,
    partition: u32,
}

impl TopicPartition {
    /// Names partition `partition` of `topic`.
    pub fn new(topic: &str, partition: u32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition number.
    pub fn partition(&self) -> u32 {
        self.partition
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}
