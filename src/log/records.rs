//! Records read from the log: zero-copy views into mapped segments, and the batches of them a
//! poll returns.

#![expect(unsafe_code, reason = "a ConsumerRecord points into the segment mapping it keeps alive")]

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::log::format::{self, FLAG_HAS_KEY, FLAG_TOMBSTONE, RECORD_HEADER_BYTES, RecordLayout};
use crate::log::segment::Segment;
use crate::topic::TopicPartition;

/// A record read from the log. It points into the mapped segment rather than holding a copy.
/// Inside [`Records`] it borrows the segment mapping the `Records` keep alive; a record taken out
/// (by `into_iter` or `clone`) keeps the mapping alive itself, so it can be stored or moved to
/// another thread freely.
pub struct ConsumerRecord {
    segment: NonNull<Segment>,
    /// Whether this record owns one strong count of `segment` (see `Records`).
    owns_segment: bool,
    /// The first byte after the record's fixed header, inside `segment`'s mapping.
    body: NonNull<u8>,
    body_bytes: u32,
    key_bytes: u32,
    value_bytes: u32,
    flags: u16,
    offset: u64,
    timestamp_ms: u64,
}

// SAFETY: the pointers target a `Segment` (which is Send + Sync) and bytes of its mapping that
// never change once published; the segment outlives the record (see `ConsumerRecord::body`).
unsafe impl Send for ConsumerRecord {}
// SAFETY: as above; the record only ever reads through its pointers.
unsafe impl Sync for ConsumerRecord {}

impl ConsumerRecord {
    fn body(&self) -> &[u8] {
        // SAFETY: `body` and `body_bytes` were taken from a bounds-checked slice of published,
        // never-changing bytes of the mapping. The mapping lives as long as its `Segment`, and
        // the segment outlives this record: either the record owns a strong count, or it lives
        // inside a `Records` that holds one for it and hands it out only by reference.
        unsafe { std::slice::from_raw_parts(self.body.as_ptr(), self.body_bytes as usize) }
    }

    fn segment(&self) -> &Segment {
        // SAFETY: the segment outlives the record, as argued in `body`.
        unsafe { self.segment.as_ref() }
    }

    /// The topic the record was read from.
    pub fn topic(&self) -> &str {
        self.segment().partition.topic()
    }

    /// The partition the record was read from.
    pub fn partition(&self) -> u32 {
        self.segment().partition.partition()
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

    /// The value of the last header named `name` (as Kafka's `Headers.lastHeader`), if the
    /// record has one; [`headers`](Self::headers) gives every header, repeated names too.
    ///
    /// ```
    /// # fn main() -> Result<(), streamlog::Error> {
    /// # let dir = std::env::temp_dir().join(format!("streamlog-doc-header-{}", std::process::id()));
    /// # use streamlog::{ConsumerConfig, OffsetReset, Queue, Record, TopicPartition};
    /// # let queue = Queue::open(&dir)?;
    /// # queue.create_topic("t", 1)?;
    /// queue.producer().send("t", Record::new(b"v").header("trace", b"a").header("trace", b"b"))?;
    /// # let mut consumer = queue.consumer(ConsumerConfig::new("g").auto_offset_reset(OffsetReset::Earliest))?;
    /// # consumer.assign(&[TopicPartition::new("t", 0)])?;
    /// let records = consumer.poll(std::time::Duration::from_secs(1))?;
    /// let record = records.iter().next().unwrap();
    /// assert_eq!(record.header("trace"), Some(&b"b"[..]));
    /// assert_eq!(record.header("missing"), None);
    /// # drop((consumer, queue)); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().filter(|&(n, _)| n == name).last().map(|(_, value)| value)
    }

    /// This record, owning a strong count of its segment.
    pub(crate) fn into_owned(mut self) -> Self {
        if !self.owns_segment {
            // SAFETY: the segment is alive (see `body`), and its pointer came from `Arc::as_ptr`.
            unsafe { Arc::increment_strong_count(self.segment.as_ptr()) };
            self.owns_segment = true;
        }
        self
    }
}

impl Clone for ConsumerRecord {
    fn clone(&self) -> Self {
        let copy = ConsumerRecord { owns_segment: false, ..*self };
        copy.into_owned()
    }
}

impl Drop for ConsumerRecord {
    fn drop(&mut self) {
        if self.owns_segment {
            // SAFETY: this record owns one strong count of the segment, taken in `into_owned`.
            unsafe { Arc::decrement_strong_count(self.segment.as_ptr()) };
        }
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

/// The records one `poll` returned. They point into the mapped log; the `Records` keep the
/// segments they point into mapped, once for all the records rather than once per record.
#[derive(Default)]
pub struct Records {
    // Declared first so that it drops first: its records borrow the segments below.
    records: Vec<ConsumerRecord>,
    segments: Vec<Arc<Segment>>,
    missed: Vec<(TopicPartition, u64)>,
}

impl Records {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Records { records: Vec::with_capacity(capacity), segments: Vec::new(), missed: Vec::new() }
    }

    pub(crate) fn note_missed(&mut self, partition: TopicPartition, count: u64) {
        self.missed.push((partition, count));
    }

    /// Partitions where this poll had to skip records that retention deleted before they were
    /// read (the position was below the log start and `auto_offset_reset` moved it), with how
    /// many records were skipped.
    pub fn missed(&self) -> &[(TopicPartition, u64)] {
        &self.missed
    }

    /// Adds the record laid out at `record_position` of `segment`'s published bytes `batch`,
    /// which start at `batch_position`.
    pub(crate) fn push(
        &mut self,
        segment: &Arc<Segment>,
        batch: &[u8],
        batch_position: u64,
        record_position: u64,
        offset: u64,
        layout: &RecordLayout,
    ) {
        if !self.segments.last().is_some_and(|last| Arc::ptr_eq(last, segment)) {
            self.segments.push(Arc::clone(segment));
        }
        let body_at = (record_position - batch_position) as usize + RECORD_HEADER_BYTES as usize;
        let body = &batch[body_at..body_at + (layout.record_bytes - RECORD_HEADER_BYTES) as usize];
        self.records.push(ConsumerRecord {
            // From `Arc::as_ptr`, so that the strong count may be reached through it.
            segment: NonNull::new(Arc::as_ptr(segment).cast_mut()).expect("an Arc is never null"),
            owns_segment: false,
            body: NonNull::from(body).cast(),
            body_bytes: body.len() as u32,
            key_bytes: layout.key_bytes,
            value_bytes: layout.value_bytes,
            flags: layout.flags,
            offset,
            timestamp_ms: layout.timestamp_ms,
        });
    }

    /// How many records there are.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the poll returned nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, partition by partition, each partition's in offset order.
    #[inline]
    pub fn iter(&self) -> RecordsIter<'_> {
        RecordsIter(self.records.iter())
    }
}

/// The records of a [`Records`], by reference (from [`Records::iter`]).
#[derive(Debug, Clone)]
pub struct RecordsIter<'r>(std::slice::Iter<'r, ConsumerRecord>);

impl<'r> Iterator for RecordsIter<'r> {
    type Item = &'r ConsumerRecord;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for RecordsIter<'_> {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for RecordsIter<'_> {}

impl std::iter::FusedIterator for RecordsIter<'_> {}

/// The records of a [`Records`], taken out (from `Records::into_iter`): each keeps its segment
/// mapped by itself, so it may outlive the `Records` and move to another thread.
#[derive(Debug)]
pub struct RecordsIntoIter(std::vec::IntoIter<ConsumerRecord>);

impl Iterator for RecordsIntoIter {
    type Item = ConsumerRecord;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for RecordsIntoIter {
    #[inline]
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for RecordsIntoIter {}

impl std::iter::FusedIterator for RecordsIntoIter {}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.records).finish()
    }
}

impl IntoIterator for Records {
    type Item = ConsumerRecord;
    type IntoIter = RecordsIntoIter;
    fn into_iter(mut self) -> Self::IntoIter {
        // Every record takes its own count of its segment before `segments` lets go.
        let records: Vec<ConsumerRecord> =
            std::mem::take(&mut self.records).into_iter().map(ConsumerRecord::into_owned).collect();
        RecordsIntoIter(records.into_iter())
    }
}

impl<'r> IntoIterator for &'r Records {
    type Item = &'r ConsumerRecord;
    type IntoIter = RecordsIter<'r>;
    #[inline]
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
