//! Records: what a producer sends and what a consumer receives.

use std::fmt;
use std::sync::Arc;

use crate::format::{self, FLAG_HAS_KEY, FLAG_TOMBSTONE, RECORD_HEADER_BYTES};
use crate::segment::Segment;

/// A record to send. It borrows its bytes; `send` copies them into the log.
///
/// ```
/// use streamlog::Record;
/// let record = Record::new(b"42 EUR").key(b"customer-7").header("trace", b"abc").partition(1);
/// ```
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Vec<(&'a str, &'a [u8])>,
    pub(crate) partition: Option<u32>,
    pub(crate) timestamp_ms: Option<u64>,
}

impl<'a> Record<'a> {
    /// A record with this value, no key, and the send time as its timestamp.
    pub fn new(value: &'a [u8]) -> Self {
        Record { key: None, value: Some(value), headers: Vec::new(), partition: None, timestamp_ms: None }
    }

    /// A record with a key and no value: under compaction it deletes the key.
    pub fn tombstone(key: &'a [u8]) -> Self {
        Record { key: Some(key), value: None, headers: Vec::new(), partition: None, timestamp_ms: None }
    }

    /// Sets the key; keyed records go to the partition the key hashes to.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Adds a header. Names are UTF-8; a record may carry up to 65,535 headers.
    pub fn header(mut self, name: &'a str, value: &'a [u8]) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Sends to this partition instead of the one the key or the round-robin would choose.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp, in milliseconds since the Unix epoch.
    pub fn timestamp(mut self, timestamp_ms: u64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// A record read from the log. It points into the mapped segment rather than holding a copy,
/// and keeps that mapping alive for as long as it exists, so it can be stored or moved to
/// another thread freely.
#[derive(Clone)]
pub struct ConsumerRecord {
    pub(crate) segment: Arc<Segment>,
    pub(crate) offset: u64,
    pub(crate) timestamp_ms: u64,
    /// Position in the segment of the first byte after the record's fixed header.
    pub(crate) body_position: u32,
    pub(crate) body_bytes: u32,
    pub(crate) key_bytes: u32,
    pub(crate) value_bytes: u32,
    pub(crate) flags: u16,
}

impl ConsumerRecord {
    pub(crate) fn new(segment: &Arc<Segment>, offset: u64, record_position: u32, layout: &format::RecordLayout) -> Self {
        ConsumerRecord {
            segment: Arc::clone(segment),
            offset,
            timestamp_ms: layout.timestamp_ms,
            body_position: record_position + RECORD_HEADER_BYTES,
            body_bytes: layout.record_bytes - RECORD_HEADER_BYTES,
            key_bytes: layout.key_bytes,
            value_bytes: layout.value_bytes,
            flags: layout.flags,
        }
    }

    fn body(&self) -> &[u8] {
        // The record was read from the published part of the segment, which never changes.
        self.segment.published_bytes(self.body_position, self.body_bytes)
    }

    /// The topic the record was read from.
    pub fn topic(&self) -> &str {
        self.segment.partition.topic()
    }

    /// The partition the record was read from.
    pub fn partition(&self) -> u32 {
        self.segment.partition.partition()
    }

    /// The record's offset in its partition.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The key, if the record has one.
    pub fn key(&self) -> Option<&[u8]> {
        (self.flags & FLAG_HAS_KEY != 0).then(|| &self.body()[..self.key_bytes as usize])
    }

    /// The value; empty for a tombstone.
    pub fn value(&self) -> &[u8] {
        let start = self.key_bytes as usize;
        &self.body()[start..start + self.value_bytes as usize]
    }

    /// Whether the record is a tombstone: a key with no value.
    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }

    /// The timestamp, in milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> u64 {
        self.timestamp_ms
    }

    /// The headers, in the order they were added.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let start = (self.key_bytes + self.value_bytes) as usize;
        format::parse_headers(&self.body()[start..])
    }
}

impl fmt::Debug for ConsumerRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerRecord")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp_ms)
            .field("key_bytes", &self.key().map(<[u8]>::len))
            .field("value_bytes", &self.value_bytes)
            .finish()
    }
}

/// The records one `poll` returned.
#[derive(Debug, Default)]
pub struct Records {
    pub(crate) records: Vec<ConsumerRecord>,
}

impl Records {
    /// How many records there are.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the poll returned nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, partition by partition, each partition's in offset order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConsumerRecord> {
        self.records.iter()
    }
}

impl IntoIterator for Records {
    type Item = ConsumerRecord;
    type IntoIter = std::vec::IntoIter<ConsumerRecord>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.into_iter()
    }
}

impl<'r> IntoIterator for &'r Records {
    type Item = &'r ConsumerRecord;
    type IntoIter = std::slice::Iter<'r, ConsumerRecord>;
    fn into_iter(self) -> Self::IntoIter {
        self.records.iter()
    }
}
