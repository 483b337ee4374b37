//! Compaction: rewriting sealed segments without the records whose key has a newer record, and
//! without tombstones older than `delete_retention_ms`. Offsets never change; a compacted
//! segment simply has gaps, and readers skip them.
//!
//! Each sealed segment is replaced one at a time, so that a crash at any moment leaves every
//! segment either whole and old or whole and cleaned — both hold the latest record of every
//! key. The replacement goes through names recovery understands:
//! 1. the cleaned log and index are written and synced as `*.cleaning.tmp` (recovery deletes
//!    temporary files: the old segment stays);
//! 2. the index becomes `N.index.swap`, then the log `N.log.swap` (this rename is the commit
//!    point: recovery completes a swap whose log is there and drops an index alone);
//! 3. the index, then the log, are renamed over the originals. Readers that mapped the old
//!    files keep them (renaming over unlinks, never shortens).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::failpoint::failpoint;
use crate::log::dir;
use crate::log::format::{
    self, FILE_HEADER_BYTES, FULLY_SYNCED, FileHeader, INDEX_MAGIC, IndexEntry, LogId, MAX_BATCH_BYTES, ProducerStamp,
    SEGMENT_COMPACTED, SEGMENT_MAGIC, SYNCED_MARKER_AT,
};
use crate::log::partition::Partition;
use crate::log::records::ConsumerRecord;
use crate::log::state::Tail;
use crate::record::Record;
use crate::sys::file::{self, Access};
use crate::topic::{Compression, TopicConfig};

/// The newest offset of every key in the part of the log being compacted.
pub(crate) type LatestOffsets = HashMap<Vec<u8>, u64>;

/// Whether compaction keeps `record`: records without a key always stay; a keyed record stays
/// if it is its key's newest, unless it is a tombstone older than `delete_retention_ms`.
pub(crate) fn keeps(record: &ConsumerRecord, latest: &LatestOffsets, now_ms: u64, delete_retention_ms: u64) -> bool {
    let Some(key) = record.key() else {
        return true;
    };
    if latest.get(key) != Some(&record.offset()) {
        return false;
    }
    !record.is_tombstone() || record.timestamp().saturating_add(delete_retention_ms) >= now_ms
}

/// Writes a cleaned copy of one segment: the records given to `push`, in offset order, in
/// batches of consecutive offsets, with a sparse index like the original's.
pub(crate) struct CleanedSegment {
    base: u64,
    log_id: LogId,
    created_ms: u64,
    index_interval_bytes: u64,
    /// The topic's codec: cleaned batches are compressed as the topic's new batches are.
    compression: Compression,
    log: BufWriter<File>,
    log_path: std::path::PathBuf,
    index_path: std::path::PathBuf,
    /// Bytes written to the log so far, header included.
    position: u64,
    last_indexed: u64,
    max_timestamp_ms: u64,
    index: Vec<IndexEntry>,
    /// The current batch: records with consecutive offsets, waiting to be written.
    pending: Vec<ConsumerRecord>,
    pending_bytes: u64,
    buffer: Vec<u8>,
    /// The records of a batch before they are compressed.
    scratch: Vec<u8>,
}

/// Batches of a cleaned segment are cut at this size.
const CLEANED_BATCH_BYTES: u64 = 256 << 10;

impl CleanedSegment {
    pub(crate) fn create(dir: &Path, base: u64, log_id: LogId, created_ms: u64, config: &TopicConfig) -> Result<Self> {
        let cleaning = |name: String| file::temp_path(&dir.join(format!("{name}.cleaning")), false);
        let log_path = cleaning(format::segment_file_name(base));
        let index_path = cleaning(format::index_file_name(base));
        let file = file::open_file(&log_path, Access::Replace)?;
        let mut log = BufWriter::with_capacity(1 << 20, file);
        // The header is written last, when the size is known.
        log.write_all(&[0u8; FILE_HEADER_BYTES as usize]).during("write", &log_path)?;
        Ok(CleanedSegment {
            base,
            log_id,
            created_ms,
            index_interval_bytes: u64::from(config.index_interval_bytes),
            compression: config.compression,
            log,
            log_path,
            index_path,
            position: u64::from(FILE_HEADER_BYTES),
            last_indexed: u64::from(FILE_HEADER_BYTES),
            max_timestamp_ms: 0,
            index: Vec::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            buffer: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Adds the next record kept (offsets must increase).
    pub(crate) fn push(&mut self, record: ConsumerRecord) -> Result<()> {
        let follows = self.pending.last().is_none_or(|last| last.offset() + 1 == record.offset());
        // Sized against the batch's first timestamp, or as the first if this record starts one.
        let first_ms = self.pending.first().map_or(record.timestamp(), ConsumerRecord::timestamp);
        let alone = format::record_bytes(&as_record(&record), record.timestamp(), record.timestamp());
        let bytes = format::record_bytes(&as_record(&record), record.timestamp(), first_ms);
        // A batch never outgrows what recovery accepts, however large one record is.
        let room = CLEANED_BATCH_BYTES.max(alone).min(MAX_BATCH_BYTES - u64::from(format::BATCH_HEADER_BYTES));
        let bytes = if !follows || self.pending_bytes + bytes > room {
            self.flush_batch()?;
            alone
        } else {
            bytes
        };
        self.pending_bytes += bytes;
        self.pending.push(record.into_owned());
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records: Vec<Record<'_>> = self.pending.iter().map(as_record).collect();
        let timestamps: Vec<u64> = self.pending.iter().map(ConsumerRecord::timestamp).collect();
        let batch_bytes = u64::from(format::BATCH_HEADER_BYTES) + self.pending_bytes;
        let base_offset = self.pending[0].offset();
        if self.position - self.last_indexed >= self.index_interval_bytes && self.position > u64::from(FILE_HEADER_BYTES) {
            self.index.push(IndexEntry {
                relative_offset: (base_offset - self.base) as u32,
                position: self.position as u32,
                max_timestamp_before_ms: self.max_timestamp_ms,
            });
            self.last_indexed = self.position;
        }
        let max_timestamp_ms = if self.compression == Compression::None {
            self.buffer.clear();
            self.buffer.resize(batch_bytes as usize, 0);
            format::write_batch(&mut self.buffer, base_offset, ProducerStamp::NONE, &records, &timestamps)
        } else {
            let max = format::write_compressed_batch(
                &mut self.buffer,
                &mut self.scratch,
                self.compression,
                ProducerStamp::NONE,
                &records,
                &timestamps,
            );
            format::set_base_offset(&mut self.buffer, base_offset);
            max
        };
        // Offsets in a compacted segment skip, so only the checksum can vouch for this one.
        format::checksum_base_offset(&mut self.buffer);
        self.log.write_all(&self.buffer).during("write", &self.log_path)?;
        self.max_timestamp_ms = self.max_timestamp_ms.max(max_timestamp_ms);
        self.position += self.buffer.len() as u64;
        drop(records);
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Writes the headers and the index, syncs both files, and puts them in place of the
    /// original segment's (see the module comment for the order and what a crash leaves).
    pub(crate) fn replace_original(self, dir: &Path) -> Result<()> {
        let (log_path, index_path) = (self.log_path.clone(), self.index_path.clone());
        let replaced = self.write_and_swap(dir);
        if replaced.is_err() {
            // Nothing took the original's place (a swap, once begun, is finished by recovery).
            let _ = fs::remove_file(&log_path);
            let _ = fs::remove_file(&index_path);
        }
        replaced
    }

    fn write_and_swap(mut self, dir: &Path) -> Result<()> {
        self.flush_batch()?;
        let header = FileHeader {
            magic: SEGMENT_MAGIC,
            capacity_bytes: self.position as u32,
            base_offset: self.base,
            created_ms: self.created_ms,
            flags: SEGMENT_COMPACTED,
            log: self.log_id,
        };
        let mut head = header.encode();
        // Synced as a whole before it takes its place.
        head[SYNCED_MARKER_AT..SYNCED_MARKER_AT + 8].copy_from_slice(&FULLY_SYNCED.to_le_bytes());
        head[SYNCED_MARKER_AT + 8..SYNCED_MARKER_AT + 16].copy_from_slice(&(!FULLY_SYNCED).to_le_bytes());
        let mut log = self.log.into_inner().map_err(|e| e.into_error()).during("write", &self.log_path)?;
        log.seek(SeekFrom::Start(0)).during("write", &self.log_path)?;
        log.write_all(&head).during("write", &self.log_path)?;
        file::sync_data(&log).during("sync", &self.log_path)?;

        let index_bytes = u64::from(FILE_HEADER_BYTES) + self.index.len() as u64 * u64::from(format::INDEX_ENTRY_BYTES);
        let index_header = FileHeader { magic: INDEX_MAGIC, capacity_bytes: index_bytes as u32, ..header };
        let mut index = index_header.encode().to_vec();
        for entry in &self.index {
            index.extend_from_slice(&entry.packed_location().to_le_bytes());
            index.extend_from_slice(&entry.max_timestamp_before_ms.to_le_bytes());
        }
        file::write_synced(&self.index_path, &index)?;

        let index_name = format::index_file_name(self.base);
        let log_name = format::segment_file_name(self.base);
        let index_swap = dir.join(format::swap_file_name(&index_name));
        let log_swap = dir.join(format::swap_file_name(&log_name));
        fs::rename(&self.index_path, &index_swap).during("rename into place", &index_swap)?;
        failpoint!("compaction-index-swapped");
        fs::rename(&self.log_path, &log_swap).during("rename into place", &log_swap)?;
        file::fsync_dir(dir)?;
        failpoint!("compaction-log-swapped");
        fs::rename(&index_swap, dir.join(&index_name)).during("rename into place", &dir.join(&index_name))?;
        failpoint!("compaction-index-replaced");
        fs::rename(&log_swap, dir.join(&log_name)).during("rename into place", &dir.join(&log_name))?;
        file::fsync_dir(dir)
    }

    /// Gives up: removes the temporary files.
    pub(crate) fn abandon(self) {
        let _ = fs::remove_file(&self.log_path);
        let _ = fs::remove_file(&self.index_path);
    }
}

/// The record to write again for a record read.
fn as_record(record: &ConsumerRecord) -> Record<'_> {
    let mut out = match record.is_tombstone() {
        true => Record::tombstone(record.key().unwrap_or_default()),
        false => Record::new(record.value()),
    };
    if let Some(key) = record.key() {
        out = out.key(key);
    }
    for (name, value) in record.headers() {
        out = out.header(name, value);
    }
    out.timestamp(record.timestamp())
}

impl Partition {
    /// Compacts the sealed segments old enough (`min_compaction_lag_ms`) when enough of them
    /// (`min_cleanable_dirty_ratio`) were never compacted: every record whose key has a newer
    /// record in that part of the log goes, and so do its tombstones older than
    /// `delete_retention_ms`. Under the maintenance lock (one process at a time); producers are
    /// not held up. Returns how many segments were rewritten.
    /// `stop` is asked between steps; when it says so, the pass ends early (each segment is
    /// replaced whole or not at all).
    pub(crate) fn compact(&self, config: &TopicConfig, now_ms: u64, stop: &dyn Fn() -> bool) -> Result<usize> {
        let compacted = self.state.try_maintain(|| {
            self.still_current()?;
            // A compaction that died here left its swap (or temporary) files: finish or drop
            // them now rather than at the next recovery.
            if dir::finish_swaps(&self.dir)? {
                self.state.note_compaction();
            }
            let tail = self.tail();
            self.refresh_segments(tail.active_base)?;
            let start = self.start_offset();
            let bases: Vec<u64> = self.segments.read().keys().copied().filter(|&b| b >= start).collect();
            // Only below the last stable offset is every transaction decided: a key's newest
            // record is its newest committed one (an aborted record replaces nothing).
            let stable = self.last_stable_offset(&tail);
            let sealed: Vec<(u64, u64)> =
                bases.windows(2).map(|pair| (pair[0], pair[1])).take_while(|&(_, next)| next <= stable).collect();
            let extent = |base, next| self.sealed_extent(base, next);
            let is_compacted = |base| Ok(self.segment(base)?.is_compacted());
            let cleanable = cleanable(&sealed, config, now_ms, extent, is_compacted)?;
            let Some(&(_, end)) = cleanable.last() else {
                return Ok(0);
            };
            // A record is removed because its key has a newer one, durably: a power cut must
            // not take the newer record once the older one is gone. Sealed segments are synced
            // in the background, which may not have happened yet (and Buffered sends never
            // sync), so every record that can decide what goes is made durable first.
            self.sync_through(end)?;
            // The newest offset of every key up to the end of the cleanable part.
            let mut latest = LatestOffsets::new();
            let mut cursor = self.committed_cursor_at(start, &tail, true)?;
            if stop() {
                return Ok(0);
            }
            let stopped = self.scan(&mut cursor, &tail, end, 4096, |records, _| {
                for record in records.iter() {
                    if let Some(key) = record.key() {
                        match latest.get_mut(key) {
                            Some(offset) => *offset = record.offset(),
                            None => {
                                latest.insert(key.to_vec(), record.offset());
                            }
                        }
                    }
                }
                Ok(if stop() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
            })?;
            if stopped.is_some() {
                return Ok(0);
            }
            let mut rewritten = 0;
            for (base, next) in cleanable {
                if stop() {
                    break;
                }
                if self.rewrite_segment(base, next, &tail, &latest, config, now_ms)? {
                    rewritten += 1;
                }
            }
            self.forget_sealed_mappings();
            Ok(rewritten)
        })?;
        Ok(compacted.unwrap_or(0))
    }

    /// Replaces sealed segment `base` (whose successor starts at `next`) by a copy holding only
    /// the records compaction keeps; false if it would keep them all. A segment holding any
    /// transaction's batch or marker is left whole: a reader deciding a batch by a marker in
    /// another segment may still map the old files of one and the new of the other.
    fn rewrite_segment(
        &self,
        base: u64,
        next: u64,
        tail: &Tail,
        latest: &LatestOffsets,
        config: &TopicConfig,
        now_ms: u64,
    ) -> Result<bool> {
        let segment = self.segment(base)?;
        let keeps = |r: &ConsumerRecord| keeps(r, latest, now_ms, config.delete_retention_ms);
        // A first pass: is there anything to remove?
        if self.holds_transactions(base, next, tail)? {
            return Ok(false);
        }
        let from = base.max(self.start_offset());
        let mut cursor = self.cursor_at(from, tail, true)?;
        let removable = self.scan(&mut cursor, tail, next, 4096, |records, _| {
            Ok(if records.iter().any(|r| !keeps(r)) { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
        })?;
        if removable.is_none() {
            return Ok(false);
        }
        let mut cleaned = CleanedSegment::create(&self.dir, base, self.log_id, segment.created_ms(), config)?;
        let written = (|| {
            let mut cursor = self.cursor_at(from, tail, true)?;
            self.scan(&mut cursor, tail, next, 4096, |records, _| {
                for record in records.into_iter().filter(|r| keeps(r)) {
                    cleaned.push(record)?;
                }
                Ok(ControlFlow::<()>::Continue(()))
            })?;
            Ok(())
        })();
        if let Err(error) = written {
            cleaned.abandon();
            return Err(error);
        }
        self.still_current()?;
        cleaned.replace_original(&self.dir)?;
        self.segments.write().insert(base, None);
        self.state.note_compaction();
        Ok(true)
    }
}

/// The sealed segments compaction cleans now, oldest first, as pairs of base and next base
/// (`sealed` lists them all): those whose newest record is older than `min_compaction_lag_ms`
/// at `now_ms`, up to the first that is not, provided the bytes of those never compacted make
/// at least `min_cleanable_dirty_ratio` of theirs. Empty when there is nothing to do.
/// `extent(base, next)` gives a segment's newest timestamp and bytes of batches, and
/// `is_compacted(base)` is asked only of segments old enough.
fn cleanable(
    sealed: &[(u64, u64)],
    config: &TopicConfig,
    now_ms: u64,
    mut extent: impl FnMut(u64, u64) -> Result<(u64, u64)>,
    mut is_compacted: impl FnMut(u64) -> Result<bool>,
) -> Result<Vec<(u64, u64)>> {
    let mut old_enough = Vec::new();
    let (mut dirty_bytes, mut total_bytes) = (0u64, 0u64);
    for &(base, next) in sealed {
        let (newest_ms, bytes) = extent(base, next)?;
        if newest_ms.saturating_add(config.min_compaction_lag_ms) > now_ms {
            break;
        }
        total_bytes += bytes;
        if !is_compacted(base)? {
            dirty_bytes += bytes;
        }
        old_enough.push((base, next));
    }
    if dirty_bytes == 0 || dirty_bytes * 1_000_000 < u64::from(config.min_cleanable_dirty_ppm) * total_bytes {
        return Ok(Vec::new());
    }
    Ok(old_enough)
}

#[cfg(test)]
mod durable;

#[cfg(test)]
mod tests {
    use super::*;

    /// `cleanable` over segments of 100 offsets each, with these newest timestamps, sizes and
    /// compacted flags.
    fn choose(config: &TopicConfig, segments: &[(u64, u64, bool)], now_ms: u64) -> Vec<(u64, u64)> {
        let sealed: Vec<(u64, u64)> = (0..segments.len() as u64).map(|i| (i * 100, i * 100 + 100)).collect();
        let at = |base: u64| segments[(base / 100) as usize];
        cleanable(&sealed, config, now_ms, |base, _| Ok((at(base).0, at(base).1)), |base| Ok(at(base).2)).unwrap()
    }

    #[test]
    fn only_segments_past_the_compaction_lag_are_cleaned_up_to_the_first_young_one() {
        let config = TopicConfig::new(1).min_compaction_lag_ms(50);
        let segments = [(10, 1, false), (20, 1, false), (90, 1, false), (10, 1, false)];
        assert_eq!(choose(&config, &segments, 100), vec![(0, 100), (100, 200)]);
        assert_eq!(choose(&config, &segments, 10), vec![]);
    }

    #[test]
    fn cleaning_waits_for_enough_dirty_bytes() {
        let config = TopicConfig::new(1).min_cleanable_dirty_ratio(0.5);
        // 40 of 100 bytes never compacted: below the ratio.
        assert_eq!(choose(&config, &[(0, 60, true), (0, 40, false)], 1), vec![]);
        // 50 of 100: at the ratio.
        assert_eq!(choose(&config, &[(0, 50, true), (0, 50, false)], 1), vec![(0, 100), (100, 200)]);
        // Everything compacted already: nothing to do even at a ratio of 0.
        assert_eq!(choose(&TopicConfig::new(1).min_cleanable_dirty_ratio(0.0), &[(0, 50, true)], 1), vec![]);
        assert_eq!(choose(&config, &[], 1), vec![]);
    }

    #[test]
    fn a_young_segment_is_never_asked_whether_it_was_compacted() {
        let config = TopicConfig::new(1).min_compaction_lag_ms(50);
        let chosen = cleanable(
            &[(0, 100), (100, 200)],
            &config,
            100,
            |base, _| Ok((if base == 0 { 0 } else { 99 }, 10)),
            |base| {
                assert_eq!(base, 0, "asked about a segment too young to clean");
                Ok(false)
            },
        );
        assert_eq!(chosen.unwrap(), vec![(0, 100)]);
    }
}
