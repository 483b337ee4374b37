//! Records read from the log: zero-copy views into mapped segments, and the batches of them a
//! poll returns.

#![expect(unsafe_code, reason = "a ConsumerRecord points into the segment mapping it keeps alive")]

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::log::format::{self, FLAG_HAS_KEY, FLAG_TOMBSTONE, RecordLayout};
use crate::log::segment::Segment;
use crate::topic::TopicPartition;

/// A record read from the log. It points into the mapped segment rather than holding a copy
/// (or, for a record of a compressed batch, into the batch's records expanded on the heap).
/// Inside [`Records`] it borrows the memory the `Records` keep alive; a record taken out (by
/// `into_iter` or `clone`) keeps its memory alive itself, so it can be stored or moved to
/// another thread freely.
pub struct ConsumerRecord {
    holder: Holder,
    /// Whether this record owns one strong count of its holder (see `Records`).
    owns_holder: bool,
    /// The record's first byte, inside its holder's memory.
    record: NonNull<u8>,
    record_bytes: u32,
    key_at: u32,
    key_bytes: u32,
    value_at: u32,
    value_bytes: u32,
    flags: u8,
    offset: u64,
    timestamp_ms: u64,
}

/// The memory a record's bytes live in, as a pointer that came from `Arc::as_ptr` (so that the
/// strong count may be reached through it).
#[derive(Clone, Copy)]
enum Holder {
    Mapped(NonNull<Segment>),
    Expanded(NonNull<ExpandedBatch>),
}

/// The records of one compressed batch, expanded on the heap, with the segment they came from.
pub(crate) struct ExpandedBatch {
    pub(crate) segment: Arc<Segment>,
    pub(crate) records: Box<[u8]>,
}

// SAFETY: the pointers target a `Segment` or an `ExpandedBatch` (both Send + Sync) and bytes of
// theirs that never change once published; the holder outlives the record (see
// `ConsumerRecord::bytes`).
unsafe impl Send for ConsumerRecord {}
// SAFETY: as above; the record only ever reads through its pointers.
unsafe impl Sync for ConsumerRecord {}

impl ConsumerRecord {
    fn bytes(&self, at: u32, len: u32) -> &[u8] {
        debug_assert!(at + len <= self.record_bytes);
        // SAFETY: `record` and `record_bytes` were taken from a bounds-checked slice of
        // published, never-changing bytes of the holder (a mapping, which lives as long as its
        // `Segment`, or an expanded batch), and `RecordLayout::parse` placed every part inside
        // them. The holder outlives this record: either the record owns a strong count, or it
        // lives inside a `Records` that holds one for it and hands it out only by reference.
        unsafe { std::slice::from_raw_parts(self.record.as_ptr().add(at as usize), len as usize) }
    }

    fn segment(&self) -> &Segment {
        // SAFETY: the holder outlives the record, as argued in `bytes`; an expanded batch holds
        // its segment.
        unsafe {
            match self.holder {
                Holder::Mapped(segment) => segment.as_ref(),
                Holder::Expanded(batch) => &batch.as_ref().segment,
            }
        }
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
        (self.flags & FLAG_HAS_KEY != 0).then(|| self.bytes(self.key_at, self.key_bytes))
    }

    /// The value; empty for a tombstone.
    pub fn value(&self) -> &[u8] {
        self.bytes(self.value_at, self.value_bytes)
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
        let start = self.value_at + self.value_bytes;
        format::parse_headers(self.bytes(start, self.record_bytes - start))
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

    /// This record, owning a strong count of its holder.
    pub(crate) fn into_owned(mut self) -> Self {
        if !self.owns_holder {
            // SAFETY: the holder is alive (see `bytes`), and its pointer came from `Arc::as_ptr`.
            unsafe {
                match self.holder {
                    Holder::Mapped(segment) => Arc::increment_strong_count(segment.as_ptr()),
                    Holder::Expanded(batch) => Arc::increment_strong_count(batch.as_ptr()),
                }
            }
            self.owns_holder = true;
        }
        self
    }
}

impl Clone for ConsumerRecord {
    fn clone(&self) -> Self {
        let copy = ConsumerRecord { owns_holder: false, ..*self };
        copy.into_owned()
    }
}

impl Drop for ConsumerRecord {
    fn drop(&mut self) {
        if self.owns_holder {
            // SAFETY: this record owns one strong count of its holder, taken in `into_owned`.
            unsafe {
                match self.holder {
                    Holder::Mapped(segment) => Arc::decrement_strong_count(segment.as_ptr()),
                    Holder::Expanded(batch) => Arc::decrement_strong_count(batch.as_ptr()),
                }
            }
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
/// segments they point into mapped (and the compressed batches they came from expanded), once
/// for all the records rather than once per record.
#[derive(Default)]
pub struct Records {
    // Declared first so that it drops first: its records borrow the holders below.
    records: Vec<ConsumerRecord>,
    segments: Vec<Arc<Segment>>,
    expanded: Vec<Arc<ExpandedBatch>>,
    missed: Vec<(TopicPartition, u64)>,
}

impl Records {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Records { records: Vec::with_capacity(capacity), segments: Vec::new(), expanded: Vec::new(), missed: Vec::new() }
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

    /// Adds the record `layout` describes, whose bytes `record` are published bytes of
    /// `segment`'s mapping.
    #[inline(always)]
    pub(crate) fn push_mapped(&mut self, segment: &Arc<Segment>, record: &[u8], offset: u64, layout: &RecordLayout) {
        if !self.segments.last().is_some_and(|last| Arc::ptr_eq(last, segment)) {
            self.segments.push(Arc::clone(segment));
        }
        self.push(Holder::Mapped(arc_pointer(segment)), record, offset, layout);
    }

    /// Adds the record `layout` describes, whose bytes `record` lie in `batch`'s records.
    pub(crate) fn push_expanded(&mut self, batch: &Arc<ExpandedBatch>, record: &[u8], offset: u64, layout: &RecordLayout) {
        if !self.expanded.last().is_some_and(|last| Arc::ptr_eq(last, batch)) {
            self.expanded.push(Arc::clone(batch));
        }
        self.push(Holder::Expanded(arc_pointer(batch)), record, offset, layout);
    }

    #[inline(always)]
    fn push(&mut self, holder: Holder, record: &[u8], offset: u64, layout: &RecordLayout) {
        self.records.push(ConsumerRecord {
            holder,
            owns_holder: false,
            record: NonNull::from(record).cast(),
            record_bytes: layout.record_bytes,
            key_at: layout.key_at,
            key_bytes: layout.key_bytes,
            value_at: layout.value_at,
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

/// The pointer `Arc::as_ptr` gives, through which the strong count may be reached later.
fn arc_pointer<T>(arc: &Arc<T>) -> NonNull<T> {
    NonNull::new(Arc::as_ptr(arc).cast_mut()).expect("an Arc is never null")
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.records).finish()
    }
}

impl IntoIterator for Records {
    type Item = ConsumerRecord;
    type IntoIter = RecordsIntoIter;
    fn into_iter(mut self) -> Self::IntoIter {
        // Every record takes its own count of its holder before `segments` and `expanded` let go.
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
