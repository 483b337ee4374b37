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
use std::path::Path;

use crate::error::{IoContext, Result};
use crate::failpoint::failpoint;
use crate::log::format::{
    self, FILE_HEADER_BYTES, FULLY_SYNCED, FileHeader, INDEX_MAGIC, IndexEntry, LogId, MAX_BATCH_BYTES, SEGMENT_COMPACTED,
    SEGMENT_MAGIC, SYNCED_MARKER_AT,
};
use crate::log::records::ConsumerRecord;
use crate::record::Record;
use crate::sys::file::{self, Access};

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
}

/// Batches of a cleaned segment are cut at this size.
const CLEANED_BATCH_BYTES: u64 = 256 << 10;

impl CleanedSegment {
    pub(crate) fn create(dir: &Path, base: u64, log_id: LogId, created_ms: u64, index_interval_bytes: u32) -> Result<Self> {
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
            index_interval_bytes: u64::from(index_interval_bytes),
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
        })
    }

    /// Adds the next record kept (offsets must increase).
    pub(crate) fn push(&mut self, record: ConsumerRecord) -> Result<()> {
        let follows = self.pending.last().is_none_or(|last| last.offset() + 1 == record.offset());
        let bytes = format::record_bytes(&as_record(&record));
        // A batch never outgrows what recovery accepts, however large one record is.
        let room = CLEANED_BATCH_BYTES.max(bytes).min(MAX_BATCH_BYTES - u64::from(format::BATCH_HEADER_BYTES));
        if !follows || self.pending_bytes + bytes > room {
            self.flush_batch()?;
        }
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
        self.buffer.clear();
        self.buffer.resize(batch_bytes as usize, 0);
        let max_timestamp_ms = format::write_batch(&mut self.buffer, base_offset, &records, &timestamps);
        self.log.write_all(&self.buffer).during("write", &self.log_path)?;
        self.max_timestamp_ms = self.max_timestamp_ms.max(max_timestamp_ms);
        self.position += batch_bytes;
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

#[cfg(test)]
mod durable;
