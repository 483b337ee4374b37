//! Reading a partition: cursors that walk its batches across segments, checking each batch's
//! CRC and shape before a record of it is handed out, one `scan` loop for the readers inside the
//! crate (compaction, the offset store, `offset_for_time`), and the search by timestamp.

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::log::format::codec::{self, ExpandError};
use crate::log::format::{
    self, BATCH_HEADER_BYTES, BatchHeader, FILE_HEADER_BYTES, IndexEntry, MAX_BATCH_BYTES, ProducerStamp, RecordLayout,
};
use crate::log::partition::Partition;
use crate::log::records::{ExpandedBatch, Records};
use crate::log::segment::Segment;
use crate::log::state::Tail;
use crate::topic::Compression;

/// Where a reader is in a partition's log.
pub(crate) struct Cursor {
    segment: Arc<Segment>,
    /// Byte position of the next batch, or of the next record inside the current batch.
    position: u64,
    /// Offset of the record (or batch) at `position`.
    offset: u64,
    /// End of the current batch, or 0 between batches.
    batch_end: u64,
    /// Offset after the current batch's last record.
    batch_end_offset: u64,
    /// The current batch's first timestamp, which its records' timestamps are relative to.
    first_timestamp_ms: u64,
    /// The records of the current batch when it is compressed, expanded, and how far into
    /// them the cursor is (`position` then stays at the batch's start).
    expanded: Option<(Arc<ExpandedBatch>, usize)>,
    /// For a reader of committed records only: what tells it which transactional batches
    /// were aborted.
    committed: Option<Box<Resolver>>,
}

impl Cursor {
    fn at_start(segment: Arc<Segment>) -> Self {
        let offset = segment.base_offset();
        Cursor {
            segment,
            position: u64::from(FILE_HEADER_BYTES),
            offset,
            batch_end: 0,
            batch_end_offset: 0,
            first_timestamp_ms: 0,
            expanded: None,
            committed: None,
        }
    }

    /// The offset of the next record this cursor reads.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Moves to the start of a new segment, keeping what the cursor reads.
    fn move_to(&mut self, segment: Arc<Segment>) {
        let committed = self.committed.take();
        *self = Cursor { committed, ..Cursor::at_start(segment) };
    }
}

/// One batch as `scan_batches` hands it out.
pub(crate) enum ScannedBatch {
    /// A batch of records, stamped by its producer (transactional or not).
    Records { producer: ProducerStamp, records: Records },
    /// A transaction's marker: its producer's transaction there committed or aborted.
    Marker { producer: ProducerStamp, commit: bool },
}

/// How a reader of committed records tells which transactional batches were aborted: each is
/// decided by its producer's first marker after it (a commit of the same epoch commits it; an
/// abort, or any marker of a newer epoch, aborts it), which a second cursor looks for ahead
/// of the reader, walking batch headers only. Below the last stable offset every transaction
/// is over, and its marker is published; a batch whose producer has no later marker at all
/// was left by a transaction that never ended (its coordinator's state was lost to a power
/// cut), which aborted it.
#[derive(Default)]
struct Resolver {
    ahead: Option<Cursor>,
    /// The markers `ahead` passed that the reader has not: (offset, producer id, epoch, commit).
    markers: std::collections::VecDeque<(u64, u64, u16, bool)>,
}

impl Partition {
    /// A cursor whose next record is `offset`, which must lie in `[start_offset, tail.end_offset]`.
    /// Like every cursor it passes markers without returning them.
    pub(crate) fn cursor_at(&self, offset: u64, tail: &Tail, check_crc: bool) -> Result<Cursor> {
        self.cursor_reading(offset, tail, check_crc, None)
    }

    /// A cursor like `cursor_at`'s that also passes the records of aborted transactions. It
    /// must read no further than the last stable offset (`last_stable_offset`): a transaction
    /// still open there is not known to commit or abort. Its next record is the first
    /// committed one at or after `offset`.
    pub(crate) fn committed_cursor_at(&self, offset: u64, tail: &Tail, check_crc: bool) -> Result<Cursor> {
        self.cursor_reading(offset, tail, check_crc, Some(Box::default()))
    }

    fn cursor_reading(&self, offset: u64, tail: &Tail, check_crc: bool, committed: Option<Box<Resolver>>) -> Result<Cursor> {
        let base = if offset >= tail.active_base {
            tail.active_base
        } else {
            self.list_through(tail.active_base)?;
            self.known_base_at_or_before(offset).ok_or_else(|| self.corrupt_at(0, format!("no segment holds offset {offset}")))?
        };
        let segment = self.segment(base)?;
        let mut cursor = Cursor { committed, ..Cursor::at_start(Arc::clone(&segment)) };
        if let Some(entry) = self.index_entry_before(&segment, offset, tail) {
            // Trust an index entry only if the batch it points at agrees with it.
            let start = u64::from(entry.position);
            let entry_offset = base + u64::from(entry.relative_offset);
            let agrees = segment
                .read(start, u64::from(BATCH_HEADER_BYTES))
                .is_ok_and(|h| BatchHeader::read(h).base_offset == entry_offset);
            if agrees {
                cursor.position = start;
                cursor.offset = entry_offset;
            }
        }
        self.advance(&mut cursor, tail, offset, None, check_crc)?;
        Ok(cursor)
    }

    /// The last index entry at or before `offset` in `segment`: among the published ones in the
    /// active segment, from the whole index in a sealed one.
    fn index_entry_before(&self, segment: &Segment, offset: u64, tail: &Tail) -> Option<IndexEntry> {
        let relative = offset - segment.base_offset();
        if segment.base_offset() == tail.active_base {
            segment.note_reserved(tail.log_reserved_bytes, tail.index_reserved_bytes);
            // Binary search for the first entry past `relative` among the published ones.
            let (mut low, mut high) = (0, tail.index_count);
            while low < high {
                let middle = low + (high - low) / 2;
                match segment.index_entry(middle) {
                    Some(entry) if u64::from(entry.relative_offset) <= relative => low = middle + 1,
                    _ => high = middle,
                }
            }
            return low.checked_sub(1).and_then(|n| segment.index_entry(n));
        }
        let entries = segment.sealed_index();
        let count = entries.partition_point(|e| u64::from(e.relative_offset) <= relative);
        count.checked_sub(1).map(|n| entries[n])
    }

    /// Moves `cursor` forward until its offset reaches `until` or the published end. With
    /// `out`, records passed are pushed to it, at most `max` in all.
    pub(crate) fn advance(
        &self,
        cursor: &mut Cursor,
        tail: &Tail,
        until: u64,
        mut out: Option<(&mut Records, usize)>,
        check_crc: bool,
    ) -> Result<()> {
        let until = until.min(tail.end_offset);
        // Held apart from the cursor, which moves on while the batch's records are read; cloned
        // again only when the cursor changes segment (not once per batch).
        let mut segment = Arc::clone(&cursor.segment);
        while cursor.offset < until {
            let room = match &out {
                Some((records, max)) if records.len() >= *max => return Ok(()),
                Some((records, max)) => max - records.len(),
                None => usize::MAX,
            };
            if cursor.batch_end == 0 {
                if !self.enter_batch(cursor, tail, until, out.is_some(), check_crc)? {
                    continue;
                }
                if cursor.offset >= until {
                    // The batch starts past `until` (compaction removed the records between).
                    return Ok(());
                }
            }
            // The records of the current batch, one bounds check for all of them.
            if !Arc::ptr_eq(&segment, &cursor.segment) {
                segment = Arc::clone(&cursor.segment);
            }
            let wanted = (until.min(cursor.batch_end_offset) - cursor.offset).min(room as u64);
            let records = match &cursor.expanded {
                Some((batch, at)) => &batch.records[*at..],
                None => segment.read(cursor.position, cursor.batch_end - cursor.position)?,
            };
            // One loop per kind of holder, so that the choice is made once per batch.
            let (first_timestamp_ms, offset) = (cursor.first_timestamp_ms, &mut cursor.offset);
            let mut at = 0usize;
            let whole = match (&mut out, &cursor.expanded) {
                (Some((out, _)), None) => walk(records, wanted, first_timestamp_ms, offset, &mut at, |record, offset, layout| {
                    out.push_mapped(&segment, record, offset, layout)
                }),
                (Some((out, _)), Some((batch, _))) => {
                    walk(records, wanted, first_timestamp_ms, offset, &mut at, |record, offset, layout| {
                        out.push_expanded(batch, record, offset, layout)
                    })
                }
                (None, _) => walk(records, wanted, first_timestamp_ms, offset, &mut at, |_, _, _| {}),
            };
            if !whole {
                return Err(record_corrupt(cursor, at, "a record does not fit in its batch"));
            }
            let batch_done = match &mut cursor.expanded {
                Some((batch, read)) => {
                    *read += at;
                    *read == batch.records.len()
                }
                None => {
                    cursor.position += at as u64;
                    cursor.position == cursor.batch_end
                }
            };
            if batch_done != (cursor.offset == cursor.batch_end_offset) {
                return Err(record_corrupt(cursor, 0, "a batch's record count disagrees with its size"));
            }
            if batch_done {
                cursor.position = cursor.batch_end;
                cursor.batch_end = 0;
                cursor.expanded = None;
            }
        }
        Ok(())
    }

    /// Hands the records from `cursor` up to offset `until` (at most the published end in
    /// `tail`) to `each`, `chunk` at a time with their CRCs checked, with the offset the cursor
    /// reached after them. Returns what `each` broke with, or `None` once `until` is reached.
    pub(crate) fn scan<B>(
        &self,
        cursor: &mut Cursor,
        tail: &Tail,
        until: u64,
        chunk: usize,
        mut each: impl FnMut(Records, u64) -> Result<ControlFlow<B>>,
    ) -> Result<Option<B>> {
        let until = until.min(tail.end_offset);
        while cursor.offset < until {
            let mut records = Records::with_capacity(chunk);
            self.advance(cursor, tail, until, Some((&mut records, chunk)), true)?;
            if let ControlFlow::Break(value) = each(records, cursor.offset)? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// Hands each batch from `cursor` up to offset `until` (at most the published end in
    /// `tail`) to `each` with its producer's stamp, markers included, for a reader that decides
    /// transactions itself (the offset store). The cursor must stand between batches; the
    /// records' CRCs are checked.
    pub(crate) fn scan_batches(
        &self,
        cursor: &mut Cursor,
        tail: &Tail,
        until: u64,
        mut each: impl FnMut(ScannedBatch) -> Result<()>,
    ) -> Result<()> {
        let until = until.min(tail.end_offset);
        while cursor.offset < until {
            if cursor.batch_end != 0 {
                return Err(cursor_corrupt(cursor, "a batch scan began inside a batch"));
            }
            let Some(header) = self.batch_header(cursor, tail)? else {
                continue;
            };
            if header.is_marker() {
                let batch = cursor.segment.read(cursor.position, u64::from(header.batch_bytes))?;
                let commit = format::batch_checksum_ok(batch).then(|| format::marker_commits(batch)).flatten();
                let commit = commit.ok_or_else(|| cursor_corrupt(cursor, "a damaged transaction marker"))?;
                cursor.position += u64::from(header.batch_bytes);
                cursor.offset = header.next_offset();
                each(ScannedBatch::Marker { producer: header.producer, commit })?;
                continue;
            }
            let mut records = Records::with_capacity((header.record_count as usize).min(4096));
            self.advance(cursor, tail, header.next_offset(), Some((&mut records, usize::MAX)), true)?;
            each(ScannedBatch::Records { producer: header.producer, records })?;
        }
        Ok(())
    }

    /// Positions `cursor` inside the batch at its position, moving to the next segment or
    /// skipping a batch as needed: a marker, an aborted one for a reader of committed records,
    /// or (when not `reading`) one that lies wholly before `until`. Returns false when the
    /// cursor moved without entering a batch (call again).
    fn enter_batch(&self, cursor: &mut Cursor, tail: &Tail, until: u64, reading: bool, check_crc: bool) -> Result<bool> {
        let Some(header) = self.batch_header(cursor, tail)? else {
            return Ok(false);
        };
        let skip = (!reading && header.next_offset() <= until)
            || header.is_marker()
            || (header.producer.transactional && cursor.committed.is_some() && self.aborted(cursor, &header)?);
        if skip {
            // Passed without decoding its records.
            cursor.position += u64::from(header.batch_bytes);
            cursor.offset = header.next_offset();
            return Ok(false);
        }
        let batch = cursor.segment.read(cursor.position, u64::from(header.batch_bytes))?;
        if check_crc && !format::batch_checksum_ok(batch) {
            return Err(cursor_corrupt(cursor, format!("checksum mismatch in the batch at offset {}", header.base_offset)));
        }
        cursor.batch_end = cursor.position + u64::from(header.batch_bytes);
        let compression = header.compression().expect("a plausible header names a codec");
        if compression != Compression::None {
            let records =
                codec::expand(compression, &batch[BATCH_HEADER_BYTES as usize..], MAX_BATCH_BYTES).map_err(|e| match e {
                    ExpandError::Unavailable(codec) => Error::CompressionUnavailable { codec },
                    ExpandError::Damaged(reason) => cursor_corrupt(cursor, format!("compressed records: {reason}")),
                })?;
            let segment = Arc::clone(&cursor.segment);
            cursor.expanded = Some((Arc::new(ExpandedBatch { segment, records: records.into_boxed_slice() }), 0));
        } else {
            cursor.position += u64::from(BATCH_HEADER_BYTES);
        }
        cursor.batch_end_offset = header.next_offset();
        cursor.first_timestamp_ms = header.first_timestamp_ms;
        cursor.offset = header.base_offset;
        Ok(true)
    }

    /// Whether the transactional batch `header`, at the position of `cursor` (a reader of
    /// committed records), was aborted (see `Resolver`).
    fn aborted(&self, cursor: &mut Cursor, header: &BatchHeader) -> Result<bool> {
        let after = header.next_offset();
        let producer = header.producer;
        let resolver = cursor.committed.as_mut().expect("only a reader of committed records resolves");
        while resolver.markers.front().is_some_and(|&(offset, ..)| offset < after) {
            resolver.markers.pop_front();
        }
        if resolver.ahead.as_ref().is_none_or(|ahead| ahead.offset < after) {
            // Markers before this batch decide nothing from here on.
            resolver.markers.clear();
            let mut ahead = Cursor::at_start(Arc::clone(&cursor.segment));
            ahead.position = cursor.position + u64::from(header.batch_bytes);
            ahead.offset = after;
            resolver.ahead = Some(ahead);
        }
        let ahead = resolver.ahead.as_mut().expect("set above");
        let mut tail = self.tail();
        loop {
            let decided = resolver.markers.iter().find(|&&(_, id, epoch, _)| id == producer.id && epoch >= producer.epoch);
            if let Some(&(_, _, epoch, commit)) = decided {
                return Ok(!(commit && epoch == producer.epoch));
            }
            if ahead.offset >= tail.end_offset {
                tail = self.tail();
                if ahead.offset >= tail.end_offset {
                    // No marker anywhere after it: its transaction never ended.
                    return Ok(true);
                }
            }
            let Some(next) = self.batch_header(ahead, &tail)? else {
                continue;
            };
            if next.is_marker() {
                let batch = ahead.segment.read(ahead.position, u64::from(next.batch_bytes))?;
                let commit = format::batch_checksum_ok(batch).then(|| format::marker_commits(batch)).flatten();
                let commit = commit.ok_or_else(|| cursor_corrupt(ahead, "a damaged transaction marker"))?;
                resolver.markers.push_back((next.base_offset, next.producer.id, next.producer.epoch, commit));
            }
            ahead.position += u64::from(next.batch_bytes);
            ahead.offset = next.next_offset();
        }
    }

    /// Whether any batch of the sealed segment `base` (the next one starting at `next`) is a
    /// transaction's (or a marker).
    pub(crate) fn holds_transactions(&self, base: u64, next: u64, tail: &Tail) -> Result<bool> {
        let mut cursor = Cursor::at_start(self.segment(base)?);
        while cursor.offset < next && cursor.segment.base_offset() == base {
            let Some(header) = self.batch_header(&mut cursor, tail)? else {
                continue;
            };
            if header.producer.transactional {
                return Ok(true);
            }
            cursor.position += u64::from(header.batch_bytes);
            cursor.offset = header.next_offset();
        }
        Ok(false)
    }

    /// The header of the batch at the position of `cursor`, checked against its place, or
    /// `None` when the cursor moved to the next segment instead (call again).
    fn batch_header(&self, cursor: &mut Cursor, tail: &Tail) -> Result<Option<BatchHeader>> {
        let base = cursor.segment.base_offset();
        // The batches below `tail`'s end are published (the state's tail is at least as new).
        cursor.segment.note_published(tail);
        let limit = if base == tail.active_base {
            cursor.segment.note_reserved(tail.log_reserved_bytes, tail.index_reserved_bytes);
            tail.end_position
        } else {
            let next = match self.known_base_after(base) {
                Some(next) => Some(next),
                None => {
                    self.refresh_segments(tail.active_base)?;
                    self.known_base_after(base)
                }
            };
            // A compacted segment's file ends where its data does, possibly before the offsets
            // it covers do (their records were removed).
            let compacted_end =
                cursor.segment.is_compacted() && cursor.position + u64::from(BATCH_HEADER_BYTES) > cursor.segment.log_length()?;
            match next {
                Some(next) if cursor.offset == next || (compacted_end && cursor.offset < next) => {
                    cursor.move_to(self.segment(next)?);
                    return Ok(None);
                }
                Some(next) if cursor.offset > next => {
                    return Err(cursor_corrupt(cursor, "the segment holds offsets of the next one"));
                }
                _ => cursor.segment.capacity_bytes(),
            }
        };
        if cursor.position + u64::from(BATCH_HEADER_BYTES) > limit {
            return Err(cursor_corrupt(cursor, format!("the log ends before offset {}", cursor.offset)));
        }
        let header = BatchHeader::read(cursor.segment.read(cursor.position, u64::from(BATCH_HEADER_BYTES))?);
        if !header.is_plausible() || cursor.position + u64::from(header.batch_bytes) > limit {
            return Err(cursor_corrupt(cursor, "impossible batch header"));
        }
        if cursor.segment.is_compacted() && !header.offset_checksummed() {
            // Its offsets may skip: a base offset no checksum covers could be any.
            return Err(cursor_corrupt(cursor, "a batch of a compacted segment without a checksummed base offset"));
        }
        let gap = cursor.segment.is_compacted() && header.base_offset > cursor.offset;
        if header.base_offset != cursor.offset && !gap {
            return Err(cursor_corrupt(
                cursor,
                format!("expected a batch starting at offset {}, found {}", cursor.offset, header.base_offset),
            ));
        }
        Ok(Some(header))
    }

    /// The earliest offset whose record has a timestamp at or after `timestamp_ms`, or `None`
    /// if there is none yet. Timestamps need not grow with offsets: every record from the
    /// first index entry that may precede a match is looked at.
    pub(crate) fn offset_for_time(&self, timestamp_ms: u64) -> Result<Option<u64>> {
        let tail = self.tail();
        self.refresh_segments(tail.active_base)?;
        let start = self.start_offset();
        let bases: Vec<u64> = self.segments.read().keys().copied().filter(|&b| b >= start || b == tail.active_base).collect();
        for (i, &base) in bases.iter().enumerate() {
            let next = bases.get(i + 1).copied();
            let segment_max = match next {
                Some(next) => self.max_timestamp_ms(base, next)?,
                None => tail.max_timestamp_ms,
            };
            if segment_max < timestamp_ms {
                continue;
            }
            // The last index entry before which every record is older than the target.
            let segment = self.segment(base)?;
            let entries = if next.is_some() { segment.sealed_index() } else { self.published_index(&segment, &tail) };
            let skip = entries.partition_point(|e| e.max_timestamp_before_ms < timestamp_ms);
            let from = skip.checked_sub(1).map_or(base, |k| base + u64::from(entries[k].relative_offset)).max(start);
            let mut cursor = self.cursor_at(from, &tail, true)?;
            let found = self.scan(&mut cursor, &tail, next.unwrap_or(tail.end_offset), 1024, |records, _| {
                Ok(match records.iter().find(|r| r.timestamp() >= timestamp_ms) {
                    Some(found) => ControlFlow::Break(found.offset()),
                    None => ControlFlow::Continue(()),
                })
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The index entries of the active segment that are published in `tail`.
    fn published_index(&self, segment: &Segment, tail: &Tail) -> Vec<IndexEntry> {
        segment.note_reserved(tail.log_reserved_bytes, tail.index_reserved_bytes);
        (0..tail.index_count).map_while(|n| segment.index_entry(n)).collect()
    }
}

/// Parses `wanted` records from `records[*at..]`, handing each to `push` with its offset (from
/// `*offset` on, which it advances, as it advances `*at`). False if a record does not parse.
#[inline(always)]
fn walk(
    records: &[u8],
    wanted: u64,
    first_timestamp_ms: u64,
    offset: &mut u64,
    at: &mut usize,
    mut push: impl FnMut(&[u8], u64, &RecordLayout),
) -> bool {
    for _ in 0..wanted {
        let Some(layout) = RecordLayout::parse(&records[*at..], first_timestamp_ms) else {
            return false;
        };
        push(&records[*at..*at + layout.record_bytes as usize], *offset, &layout);
        *at += layout.record_bytes as usize;
        *offset += 1;
    }
    true
}

/// The error for a damaged record `at` bytes into what is left of the cursor's batch.
fn record_corrupt(cursor: &Cursor, at: usize, reason: &str) -> Error {
    match &cursor.expanded {
        Some((_, read)) => Error::corrupt(
            cursor.segment.path(),
            cursor.position,
            format!("{reason} (at byte {} of the batch's expanded records)", read + at),
        ),
        None => Error::corrupt(cursor.segment.path(), cursor.position + at as u64, reason),
    }
}

fn cursor_corrupt(cursor: &Cursor, reason: impl Into<String>) -> Error {
    Error::corrupt(cursor.segment.path(), cursor.position, reason)
}
