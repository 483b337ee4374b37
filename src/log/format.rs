//! Every byte of the log's files (segments, indexes, batches, records, the partition state and
//! log start), their names, and every size limit of the log: pure encoding and decoding, no I/O.
//! Also the one magic-and-version check and the little-endian readers every other file's codec
//! uses too. The queue directory's own files (`streamlog.meta`, `queue.state`, `topic.meta`,
//! the lock files and folders) are encoded and named in `catalog/files.rs`; a group's file, its
//! state and its committed offsets beside the code that keeps them, in `group/`.
//! ARCHITECTURE.md draws these layouts. All integers are little-endian and fixed-width; nothing
//! on disk is a `usize`.

use std::path::Path;

use crate::error::{Error, Result};
use crate::record::Record;
use crate::topic::{MAX_RECORD_BYTES_LIMIT, TopicConfig};

/// The format version this build writes and the only one it reads. Version 3 added the log id
/// (topic id and partition) to segment and index headers; a queue of an older version is
/// refused as a whole (`Error::IncompatibleVersion` on its `streamlog.meta`), never half read.
pub(crate) const FORMAT_VERSION: u16 = 3;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"SLOGSEG\0";
pub(crate) const INDEX_MAGIC: [u8; 8] = *b"SLOGIDX\0";
pub(crate) const STATE_MAGIC: [u8; 8] = *b"SLOGSTA\0";
pub(crate) const LOG_START_MAGIC: [u8; 8] = *b"SLOGLST\0";

pub(crate) const STATE_FILE: &str = "state";
/// A partition's log start checkpoint (see `encode_log_start`).
pub(crate) const LOG_START_FILE: &str = "log_start";
/// Size of the log start checkpoint: two slots of `FILE_HEADER_BYTES`.
pub(crate) const LOG_START_FILE_BYTES: usize = 2 * FILE_HEADER_BYTES as usize;
/// The queue directory's folder of consumer groups. A name of the queue's, not of the log's: it
/// belongs with the others in `catalog/files.rs`, and stays here only because `queue.rs` takes
/// it from here.
pub(crate) const GROUPS_DIR: &str = "groups";

/// Every segment and index file starts with a header of this size; a slot of the log start
/// checkpoint and `streamlog.meta` are this size too.
pub(crate) const FILE_HEADER_BYTES: u32 = 64;
pub(crate) const BATCH_HEADER_BYTES: u32 = 40;
pub(crate) const RECORD_HEADER_BYTES: u32 = 24;
pub(crate) const HEADER_ENTRY_OVERHEAD: u32 = 6;
pub(crate) const INDEX_ENTRY_BYTES: u32 = 16;

/// The largest batch ever written: one record of the largest allowed size, or many small ones.
pub(crate) const MAX_BATCH_BYTES: u64 = MAX_RECORD_BYTES_LIMIT as u64 + BATCH_HEADER_BYTES as u64;
/// Batches `send_batch` builds are cut at this size unless one record alone is larger.
pub(crate) const TARGET_BATCH_BYTES: u64 = 1 << 20;
/// Log files grow on disk in steps of this size.
pub(crate) const LOG_RESERVE_STEP_BYTES: u64 = 1 << 20;
/// Index files grow on disk in steps of this size.
pub(crate) const INDEX_RESERVE_STEP_BYTES: u64 = 64 << 10;

/// Batches at least this large are written with `pwrite` from a buffer: copying into a fresh
/// mapping costs a page fault per page, which dominates for large writes.
pub(crate) const PWRITE_MIN_BATCH_BYTES: u64 = 16 << 10;

/// Holes punched past a sealed segment's data start at a multiple of this (a page and a file
/// system block), so that no page holding data is touched.
pub(crate) const HOLE_ALIGN_BYTES: u64 = 4096;

/// Bytes of an index file that can hold an entry for every `index_interval_bytes` of a log.
pub(crate) fn index_capacity_bytes(log_capacity_bytes: u64, config: &TopicConfig) -> u64 {
    let entries = log_capacity_bytes / u64::from(config.index_interval_bytes) + 1;
    u64::from(FILE_HEADER_BYTES) + entries * u64::from(INDEX_ENTRY_BYTES)
}

/// Record flag: the record has a key (a key may be empty).
pub(crate) const FLAG_HAS_KEY: u16 = 1;
/// Record flag: the record has no value (a tombstone).
pub(crate) const FLAG_TOMBSTONE: u16 = 2;

/// What a file in a partition directory is, judged by its name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PartitionFile {
    Segment(u64),
    Index(u64),
    State,
    LogStart,
    /// A half-made file left by a crash; safe to delete during recovery.
    Temporary,
    /// A compacted segment's log (or index) ready to replace the original: see `compaction.rs`.
    SwapLog(u64),
    SwapIndex(u64),
    Unknown,
}

pub(crate) fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

pub(crate) fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.index")
}

/// The name a compacted replacement of file `name` has before it takes its place.
pub(crate) fn swap_file_name(name: &str) -> String {
    format!("{name}.swap")
}

pub(crate) fn classify(name: &str) -> PartitionFile {
    if name == STATE_FILE {
        return PartitionFile::State;
    }
    if name == LOG_START_FILE {
        return PartitionFile::LogStart;
    }
    if name.ends_with(".tmp") {
        return PartitionFile::Temporary;
    }
    let parse =
        |stem: &str| (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse::<u64>().ok()).flatten();
    if let Some(base) = name.strip_suffix(".log.swap").and_then(parse) {
        return PartitionFile::SwapLog(base);
    }
    if let Some(base) = name.strip_suffix(".index.swap").and_then(parse) {
        return PartitionFile::SwapIndex(base);
    }
    if let Some(base) = name.strip_suffix(".log").and_then(parse) {
        return PartitionFile::Segment(base);
    }
    if let Some(base) = name.strip_suffix(".index").and_then(parse) {
        return PartitionFile::Index(base);
    }
    PartitionFile::Unknown
}

/// Which log a segment belongs to: the id of its topic (from `topic.meta`, unique per creation)
/// and its partition number. A group's offset log is a one-partition log with the id
/// `group_log_id(group)`. Every segment and index header carries it, so that a file copied in
/// from another partition, topic or queue is refused instead of served as this log's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogId {
    pub(crate) topic_id: u64,
    pub(crate) partition: u32,
}

/// The 64-byte header of segment and index files.
///
/// ```text
/// 0  magic [8]   8  version u16   10 flags u16   12 capacity_bytes u32
/// 16 base_offset u64   24 created_ms u64   32 synced_bytes u64   40 !synced_bytes u64
/// 48 topic_id u64   56 partition u32   60 crc32 of bytes 0..32 and 48..60
/// ```
///
/// `synced_bytes` (segments only) is a lower bound of how much of the file is known to be on
/// stable storage: written after an fsync completes, never before, so it may lag but never lead.
/// It is outside the checksum because it changes; its complement beside it guards it instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileHeader {
    pub(crate) magic: [u8; 8],
    /// How many bytes of the file may ever hold data: every process maps exactly this much.
    pub(crate) capacity_bytes: u32,
    pub(crate) base_offset: u64,
    pub(crate) created_ms: u64,
    /// `SEGMENT_COMPACTED` for files the cleaner wrote.
    pub(crate) flags: u16,
    /// The log the file belongs to.
    pub(crate) log: LogId,
}

/// Header flag: written by compaction. Its offsets may have gaps (records were removed), its
/// log file ends exactly where its data does, and it is on stable storage as a whole.
pub(crate) const SEGMENT_COMPACTED: u16 = 1;

/// Where a segment or index header keeps its topic id and partition number.
pub(crate) const LOG_ID_AT: usize = 48;

impl FileHeader {
    pub(crate) fn encode(&self) -> [u8; FILE_HEADER_BYTES as usize] {
        let mut out = [0u8; FILE_HEADER_BYTES as usize];
        out[0..8].copy_from_slice(&self.magic);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..16].copy_from_slice(&self.capacity_bytes.to_le_bytes());
        out[16..24].copy_from_slice(&self.base_offset.to_le_bytes());
        out[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        out[32..40].copy_from_slice(&u64::from(FILE_HEADER_BYTES).to_le_bytes());
        out[40..48].copy_from_slice(&(!u64::from(FILE_HEADER_BYTES)).to_le_bytes());
        out[48..56].copy_from_slice(&self.log.topic_id.to_le_bytes());
        out[56..60].copy_from_slice(&self.log.partition.to_le_bytes());
        let crc = header_checksum(&out);
        out[60..64].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8], magic: [u8; 8], path: &Path) -> Result<Self> {
        check_file_header(bytes, magic, path)?;
        if header_checksum(bytes) != u32_at(bytes, 60) {
            return Err(Error::corrupt(path, 0, "file header checksum mismatch"));
        }
        Ok(FileHeader {
            magic,
            capacity_bytes: u32_at(bytes, 12),
            base_offset: u64_at(bytes, 16),
            created_ms: u64_at(bytes, 24),
            flags: u16_at(bytes, 10),
            log: LogId { topic_id: u64_at(bytes, 48), partition: u32_at(bytes, 56) },
        })
    }
}

/// The checksum of a segment or index header: every byte but the synced marker (which changes)
/// and the checksum itself.
fn header_checksum(header: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..SYNCED_MARKER_AT]);
    hasher.update(&header[LOG_ID_AT..60]);
    hasher.finalize()
}

/// Where a segment header keeps its synced-bytes marker and the marker's complement.
pub(crate) const SYNCED_MARKER_AT: usize = 32;
/// A synced-bytes marker meaning "the whole segment is on stable storage".
pub(crate) const FULLY_SYNCED: u64 = u64::MAX;

/// Reads the synced-bytes marker from a marker word and its complement; a torn or damaged
/// marker counts as "nothing past the header is known to be synced".
pub(crate) fn synced_marker(value: u64, complement: u64) -> u64 {
    if value == !complement { value } else { u64::from(FILE_HEADER_BYTES) }
}

/// How the first ten bytes of a file differ from what a file of its kind starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderMismatch {
    /// Not this kind's magic number: another kind of file, or not streamlog's.
    Magic,
    /// The right magic number, but another format version (the one found).
    Version(u16),
}

impl HeaderMismatch {
    /// The error that reports the mismatch in the file at `path`.
    pub(crate) fn into_error(self, path: &Path) -> Error {
        match self {
            HeaderMismatch::Magic => Error::ForeignFile { path: path.to_path_buf(), reason: "wrong magic number".into() },
            HeaderMismatch::Version(found) => {
                Error::IncompatibleVersion { path: path.to_path_buf(), found, supported: FORMAT_VERSION }
            }
        }
    }
}

/// Checks the ten bytes every streamlog file starts with (`head` holds at least those): the
/// magic number of its kind, then this build's format version.
pub(crate) fn check_magic_version(head: &[u8], magic: [u8; 8]) -> std::result::Result<(), HeaderMismatch> {
    if head[0..8] != magic {
        return Err(HeaderMismatch::Magic);
    }
    match u16_at(head, 8) {
        FORMAT_VERSION => Ok(()),
        found => Err(HeaderMismatch::Version(found)),
    }
}

/// Checks that `bytes` hold a whole file header of the kind `magic` names, of this version.
pub(crate) fn check_file_header(bytes: &[u8], magic: [u8; 8], path: &Path) -> Result<()> {
    if bytes.len() < FILE_HEADER_BYTES as usize {
        return Err(Error::ForeignFile { path: path.to_path_buf(), reason: "shorter than a file header".into() });
    }
    check_magic_version(bytes, magic).map_err(|mismatch| mismatch.into_error(path))
}

/// One slot of a partition's log start checkpoint: the first offset retention kept. Retention
/// writes it (durably) before it unlinks a segment, so that recovery can tell a segment
/// retention deleted (whose unlink a power cut may undo) from one that went missing. The file
/// holds two slots (`LOG_START_FILE_BYTES`) and is written in place, one slot at a time, so that
/// retention needs no new disk space (it is what frees space on a full disk); the log start is
/// the larger of the valid slots, since it only moves forward, and a torn write leaves the
/// other slot in force.
///
/// ```text
/// 0 magic [8]   8 version u16   10 reserved [6]   16 log_start u64   24 reserved [36]   60 crc32
/// 64 the second slot, laid out the same
/// ```
pub(crate) fn encode_log_start(log_start: u64) -> [u8; FILE_HEADER_BYTES as usize] {
    let mut out = [0u8; FILE_HEADER_BYTES as usize];
    out[0..8].copy_from_slice(&LOG_START_MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&log_start.to_le_bytes());
    let crc = crc32fast::hash(&out[0..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Returns the offset stored in a log start checkpoint.
pub(crate) fn decode_log_start(bytes: &[u8], path: &Path) -> Result<u64> {
    check_file_header(bytes, LOG_START_MAGIC, path)?;
    if bytes.len() != FILE_HEADER_BYTES as usize || crc32fast::hash(&bytes[0..60]) != u32_at(bytes, 60) {
        return Err(Error::corrupt(path, 0, "log start checkpoint checksum mismatch"));
    }
    Ok(u64_at(bytes, 16))
}

/// The fixed part of a record batch.
///
/// ```text
/// 0  batch_bytes u32 (whole batch, header included)   4  crc32 of bytes 8..batch_bytes
/// 8  base_offset u64   16 record_count u32   20 attributes u32 (0)
/// 24 first_timestamp_ms u64   32 max_timestamp_ms u64
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) batch_bytes: u32,
    pub(crate) crc: u32,
    pub(crate) base_offset: u64,
    pub(crate) record_count: u32,
    pub(crate) max_timestamp_ms: u64,
}

impl BatchHeader {
    /// Reads the header at the start of `bytes`, which must hold at least `BATCH_HEADER_BYTES`.
    pub(crate) fn read(bytes: &[u8]) -> Self {
        BatchHeader {
            batch_bytes: u32_at(bytes, 0),
            crc: u32_at(bytes, 4),
            base_offset: u64_at(bytes, 8),
            record_count: u32_at(bytes, 16),
            max_timestamp_ms: u64_at(bytes, 32),
        }
    }

    /// The offset after this batch's last record.
    pub(crate) fn next_offset(&self) -> u64 {
        // Saturating: the header may be garbage that has not been checked yet.
        self.base_offset.saturating_add(u64::from(self.record_count))
    }

    /// Whether the header's sizes are possible at all, before the checksum is looked at.
    pub(crate) fn is_plausible(&self) -> bool {
        self.batch_bytes >= BATCH_HEADER_BYTES + RECORD_HEADER_BYTES && self.record_count > 0
    }
}

/// Whether `batch` (exactly one whole batch) matches its checksum.
pub(crate) fn batch_checksum_ok(batch: &[u8]) -> bool {
    checksum(&batch[8..]) == u32_at(batch, 4)
}

/// CRC-32 of `bytes`, as `crc32fast::hash` computes it, without asking the CPU which
/// instructions it has on every call (that question costs as much as checksumming a small
/// record): the answer is kept in a hasher made once and copied.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    static PROTOTYPE: std::sync::LazyLock<crc32fast::Hasher> = std::sync::LazyLock::new(crc32fast::Hasher::new);
    let mut hasher = PROTOTYPE.clone();
    hasher.update(bytes);
    hasher.finalize()
}

/// Bytes one record takes inside a batch.
pub(crate) fn record_bytes(record: &Record<'_>) -> u64 {
    let headers: u64 = record
        .headers
        .iter()
        .map(|(name, value)| u64::from(HEADER_ENTRY_OVERHEAD) + name.len() as u64 + value.len() as u64)
        .sum();
    u64::from(RECORD_HEADER_BYTES)
        + record.key_bytes().map_or(0, |k| k.len() as u64)
        + record.value_bytes().len() as u64
        + headers
}

/// Encodes `records` as one batch into `out`, which must be exactly the batch's size
/// (`BATCH_HEADER_BYTES` plus each record's `record_bytes`). Returns the batch's max timestamp.
pub(crate) fn write_batch(out: &mut [u8], base_offset: u64, records: &[Record<'_>], timestamps_ms: &[u64]) -> u64 {
    let mut at = BATCH_HEADER_BYTES as usize;
    let mut max_timestamp = 0;
    for (record, &timestamp) in records.iter().zip(timestamps_ms) {
        max_timestamp = max_timestamp.max(timestamp);
        let start = at;
        let key = record.key_bytes().unwrap_or_default();
        let value = record.value_bytes();
        let flags = if record.key.is_some() { FLAG_HAS_KEY } else { 0 } | if record.value.is_none() { FLAG_TOMBSTONE } else { 0 };
        at += RECORD_HEADER_BYTES as usize;
        put(out, &mut at, key);
        put(out, &mut at, value);
        for (name, header_value) in &record.headers {
            put(out, &mut at, &(name.len() as u16).to_le_bytes());
            put(out, &mut at, &(header_value.len() as u32).to_le_bytes());
            put(out, &mut at, name.as_bytes());
            put(out, &mut at, header_value);
        }
        let header = &mut out[start..start + RECORD_HEADER_BYTES as usize];
        header[0..4].copy_from_slice(&((at - start) as u32).to_le_bytes());
        header[4..6].copy_from_slice(&flags.to_le_bytes());
        header[6..8].copy_from_slice(&(record.headers.len() as u16).to_le_bytes());
        header[8..16].copy_from_slice(&timestamp.to_le_bytes());
        header[16..20].copy_from_slice(&(key.len() as u32).to_le_bytes());
        header[20..24].copy_from_slice(&(value.len() as u32).to_le_bytes());
    }
    debug_assert_eq!(at, out.len(), "batch size was computed wrongly");
    let first_timestamp = timestamps_ms.first().copied().unwrap_or(0);
    let batch_bytes = out.len() as u32;
    out[0..4].copy_from_slice(&batch_bytes.to_le_bytes());
    out[8..16].copy_from_slice(&base_offset.to_le_bytes());
    out[16..20].copy_from_slice(&(records.len() as u32).to_le_bytes());
    out[20..24].copy_from_slice(&0u32.to_le_bytes());
    out[24..32].copy_from_slice(&first_timestamp.to_le_bytes());
    out[32..40].copy_from_slice(&max_timestamp.to_le_bytes());
    let crc = checksum(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    max_timestamp
}

/// Encodes a one-record batch as the bytes before its value (`prefix`) and after it
/// (`suffix`), so that a large value can be written from the caller's memory without a copy:
/// `prefix`, the value and `suffix` together are exactly what `write_batch` would produce.
pub(crate) fn frame_single_record(
    prefix: &mut Vec<u8>,
    suffix: &mut Vec<u8>,
    base_offset: u64,
    record: &Record<'_>,
    timestamp_ms: u64,
) {
    let key = record.key_bytes().unwrap_or_default();
    let value = record.value_bytes();
    suffix.clear();
    for (name, header_value) in &record.headers {
        suffix.extend_from_slice(&(name.len() as u16).to_le_bytes());
        suffix.extend_from_slice(&(header_value.len() as u32).to_le_bytes());
        suffix.extend_from_slice(name.as_bytes());
        suffix.extend_from_slice(header_value);
    }
    let record_bytes = RECORD_HEADER_BYTES as usize + key.len() + value.len() + suffix.len();
    let batch_bytes = BATCH_HEADER_BYTES as usize + record_bytes;
    let flags = if record.key.is_some() { FLAG_HAS_KEY } else { 0 } | if record.value.is_none() { FLAG_TOMBSTONE } else { 0 };
    prefix.clear();
    prefix.extend_from_slice(&(batch_bytes as u32).to_le_bytes());
    prefix.extend_from_slice(&[0; 4]);
    prefix.extend_from_slice(&base_offset.to_le_bytes());
    prefix.extend_from_slice(&1u32.to_le_bytes());
    prefix.extend_from_slice(&0u32.to_le_bytes());
    prefix.extend_from_slice(&timestamp_ms.to_le_bytes());
    prefix.extend_from_slice(&timestamp_ms.to_le_bytes());
    prefix.extend_from_slice(&(record_bytes as u32).to_le_bytes());
    prefix.extend_from_slice(&flags.to_le_bytes());
    prefix.extend_from_slice(&(record.headers.len() as u16).to_le_bytes());
    prefix.extend_from_slice(&timestamp_ms.to_le_bytes());
    prefix.extend_from_slice(&(key.len() as u32).to_le_bytes());
    prefix.extend_from_slice(&(value.len() as u32).to_le_bytes());
    prefix.extend_from_slice(key);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&prefix[8..]);
    crc.update(value);
    crc.update(suffix);
    prefix[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
}

fn put(out: &mut [u8], at: &mut usize, bytes: &[u8]) {
    out[*at..*at + bytes.len()].copy_from_slice(bytes);
    *at += bytes.len();
}

/// Where one record's parts lie inside a batch, relative to the batch's first byte.
///
/// ```text
/// 0 record_bytes u32   4 flags u16   6 header_count u16   8 timestamp_ms u64
/// 16 key_bytes u32   20 value_bytes u32   24 key, value, then per header:
///    name_bytes u16, value_bytes u32, name (UTF-8), value
/// ```
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordLayout {
    pub(crate) record_bytes: u32,
    pub(crate) flags: u16,
    pub(crate) timestamp_ms: u64,
    pub(crate) key_bytes: u32,
    pub(crate) value_bytes: u32,
}

impl RecordLayout {
    /// Parses the record starting at `bytes[0]`; `None` if its sizes do not fit in `bytes`, or
    /// if it is not laid out as `write_batch` lays out a record: a checksum guards against
    /// damage, not against a deliberate change with the checksum recomputed (a fuzzer does it
    /// in one step), and what a reader returns and compaction copies must be what was written.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < RECORD_HEADER_BYTES as usize {
            return None;
        }
        let layout = RecordLayout {
            record_bytes: u32_at(bytes, 0),
            flags: u16_at(bytes, 4),
            timestamp_ms: u64_at(bytes, 8),
            key_bytes: u32_at(bytes, 16),
            value_bytes: u32_at(bytes, 20),
        };
        let fixed = u64::from(RECORD_HEADER_BYTES) + u64::from(layout.key_bytes) + u64::from(layout.value_bytes);
        let fits = u64::from(layout.record_bytes) >= fixed && layout.record_bytes as usize <= bytes.len();
        if !fits {
            return None;
        }
        let known_flags = layout.flags & !(FLAG_HAS_KEY | FLAG_TOMBSTONE) == 0;
        let key_ok = layout.flags & FLAG_HAS_KEY != 0 || layout.key_bytes == 0;
        let value_ok = layout.flags & FLAG_TOMBSTONE == 0 || layout.value_bytes == 0;
        let headers = &bytes[fixed as usize..layout.record_bytes as usize];
        (known_flags && key_ok && value_ok && headers_are_whole(headers, u16_at(bytes, 6))).then_some(layout)
    }
}

/// Whether `bytes` are exactly `count` headers, each whole, with a UTF-8 name.
fn headers_are_whole(bytes: &[u8], count: u16) -> bool {
    let mut at = 0usize;
    for _ in 0..count {
        if at + HEADER_ENTRY_OVERHEAD as usize > bytes.len() {
            return false;
        }
        let name_start = at + HEADER_ENTRY_OVERHEAD as usize;
        let name_end = name_start + u16_at(bytes, at) as usize;
        let end = name_end.saturating_add(u32_at(bytes, at + 2) as usize);
        if end > bytes.len() || std::str::from_utf8(&bytes[name_start..name_end]).is_err() {
            return false;
        }
        at = end;
    }
    at == bytes.len()
}

/// Iterates over the `(name, value)` headers encoded in `bytes`.
pub(crate) fn parse_headers(bytes: &[u8]) -> impl Iterator<Item = (&str, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + HEADER_ENTRY_OVERHEAD as usize > bytes.len() {
            return None;
        }
        let name_len = u16_at(bytes, at) as usize;
        let value_len = u32_at(bytes, at + 2) as usize;
        let name_start = at + HEADER_ENTRY_OVERHEAD as usize;
        let value_start = name_start + name_len;
        let end = value_start.checked_add(value_len)?;
        if end > bytes.len() {
            return None;
        }
        at = end;
        // Names are checked to be UTF-8 when sent, and again when the record was parsed.
        let name = std::str::from_utf8(&bytes[name_start..value_start]).unwrap_or_default();
        Some((name, &bytes[value_start..end]))
    })
}

/// One sparse index entry: the batch at `position` of the segment starts at
/// `base + relative_offset`, and every record before it has a timestamp of at most
/// `max_timestamp_before_ms`.
///
/// ```text
/// 0 relative_offset u32   4 position u32   8 max_timestamp_before_ms u64
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
    pub(crate) max_timestamp_before_ms: u64,
}

impl IndexEntry {
    /// The first eight bytes, packed so that one atomic store writes them whole.
    pub(crate) fn packed_location(&self) -> u64 {
        u64::from(self.relative_offset) | (u64::from(self.position) << 32)
    }

    pub(crate) fn from_words(location: u64, max_timestamp_before_ms: u64) -> Self {
        IndexEntry { relative_offset: location as u32, position: (location >> 32) as u32, max_timestamp_before_ms }
    }
}

pub(crate) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("two bytes"))
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips() {
        let records = [Record::new(b"first").key(b"k").header("trace", b"t1"), Record::tombstone(b"gone"), Record::new(b"")];
        let size = BATCH_HEADER_BYTES as u64 + records.iter().map(record_bytes).sum::<u64>();
        let mut batch = vec![0u8; size as usize];
        let max = write_batch(&mut batch, 77, &records, &[5, 9, 7]);
        assert_eq!(max, 9);
        let header = BatchHeader::read(&batch);
        assert_eq!((header.base_offset, header.record_count, header.batch_bytes as usize), (77, 3, batch.len()));
        assert!(batch_checksum_ok(&batch));

        let first = RecordLayout::parse(&batch[40..]).unwrap();
        assert_eq!((first.flags, first.timestamp_ms, first.key_bytes, first.value_bytes), (FLAG_HAS_KEY, 5, 1, 5));
        let headers_at = 40 + 24 + 1 + 5;
        let headers: Vec<_> = parse_headers(&batch[headers_at..40 + first.record_bytes as usize]).collect();
        assert_eq!(headers, vec![("trace", &b"t1"[..])]);
        let second = RecordLayout::parse(&batch[40 + first.record_bytes as usize..]).unwrap();
        assert_eq!(second.flags, FLAG_HAS_KEY | FLAG_TOMBSTONE);

        batch[50] ^= 1;
        assert!(!batch_checksum_ok(&batch), "a flipped bit must fail the checksum");
    }

    #[test]
    fn a_record_that_its_writer_could_not_have_written_does_not_parse() {
        let record = Record::new(b"value").key(b"k").header("trace", b"12345678").header("", b"");
        let mut batch = vec![0u8; BATCH_HEADER_BYTES as usize + record_bytes(&record) as usize];
        write_batch(&mut batch, 0, std::slice::from_ref(&record), &[1]);
        let at = BATCH_HEADER_BYTES as usize;
        assert!(RecordLayout::parse(&batch[at..]).is_some());
        // Each change below keeps the sizes consistent; found by the `batch` fuzz target,
        // which forges the batch checksum.
        let damaged = |change: &dyn Fn(&mut [u8])| {
            let mut copy = batch.clone();
            change(&mut copy[at..]);
            RecordLayout::parse(&copy[at..]).is_none()
        };
        assert!(damaged(&|r| r[6] = 1), "a header count that disagrees with the headers");
        assert!(damaged(&|r| r[6] = 3), "a header count past the headers");
        assert!(damaged(&|r| r[24 + 1 + 5 + 2] = 9), "a header that overruns the record");
        assert!(damaged(&|r| r[24 + 1 + 5 + 6] = 0xff), "a header name that is not UTF-8");
        assert!(damaged(&|r| r[4] |= 4), "an unknown flag");
        assert!(damaged(&|r| r[4] &= !(FLAG_HAS_KEY as u8)), "key bytes without a key");
        assert!(damaged(&|r| r[4] |= FLAG_TOMBSTONE as u8), "value bytes in a tombstone");
    }

    #[test]
    fn a_framed_single_record_equals_its_encoded_batch() {
        for record in
            [Record::new(b"value").key(b"k").header("h", b"v").header("", b""), Record::tombstone(b"gone"), Record::new(b"")]
        {
            let size = BATCH_HEADER_BYTES as u64 + record_bytes(&record);
            let mut batch = vec![0u8; size as usize];
            write_batch(&mut batch, 9, std::slice::from_ref(&record), &[42]);
            let (mut prefix, mut suffix) = (Vec::new(), Vec::new());
            frame_single_record(&mut prefix, &mut suffix, 9, &record, 42);
            let framed = [prefix.as_slice(), record.value_bytes(), suffix.as_slice()].concat();
            assert_eq!(framed, batch);
        }
    }

    #[test]
    fn headers_reject_foreign_and_future_files() {
        let path = Path::new("x");
        let log = LogId { topic_id: 0x1234_5678_9abc, partition: 7 };
        let header = FileHeader { magic: SEGMENT_MAGIC, capacity_bytes: 4096, base_offset: 12, created_ms: 3, flags: 0, log };
        let mut bytes = header.encode();
        assert_eq!(FileHeader::decode(&bytes, SEGMENT_MAGIC, path).unwrap(), header);
        assert!(matches!(FileHeader::decode(&bytes, INDEX_MAGIC, path), Err(Error::ForeignFile { .. })));
        bytes[8] = 9;
        assert!(matches!(FileHeader::decode(&bytes, SEGMENT_MAGIC, path), Err(Error::IncompatibleVersion { found: 9, .. })));
        bytes[8] = FORMAT_VERSION as u8;
        bytes[36] ^= 4;
        assert_eq!(FileHeader::decode(&bytes, SEGMENT_MAGIC, path).unwrap(), header, "the synced marker is not checksummed");
        bytes[20] ^= 4;
        assert!(matches!(FileHeader::decode(&bytes, SEGMENT_MAGIC, path), Err(Error::Corrupt { .. })));
        bytes[20] ^= 4;
        for at in [LOG_ID_AT, 56] {
            bytes[at] ^= 1;
            assert!(
                matches!(FileHeader::decode(&bytes, SEGMENT_MAGIC, path), Err(Error::Corrupt { .. })),
                "the log id at byte {at} is checksummed"
            );
            bytes[at] ^= 1;
        }
        assert_eq!(FileHeader::decode(&bytes, SEGMENT_MAGIC, path).unwrap(), header);
    }

    #[test]
    fn garbage_batch_headers_do_not_overflow() {
        let mut bytes = [0u8; 40];
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        bytes[16..20].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(BatchHeader::read(&bytes).next_offset(), u64::MAX);
    }

    #[test]
    fn a_log_start_checkpoint_round_trips_and_damage_is_refused() {
        let path = Path::new("log_start");
        let mut bytes = encode_log_start(4711);
        assert_eq!(decode_log_start(&bytes, path).unwrap(), 4711);
        bytes[17] ^= 1;
        assert!(matches!(decode_log_start(&bytes, path), Err(Error::Corrupt { .. })));
        assert!(matches!(decode_log_start(&bytes[..10], path), Err(Error::ForeignFile { .. })));
    }

    #[test]
    fn file_names_are_classified() {
        assert_eq!(classify(&segment_file_name(42)), PartitionFile::Segment(42));
        assert_eq!(classify(&index_file_name(7)), PartitionFile::Index(7));
        assert_eq!(classify("state"), PartitionFile::State);
        assert_eq!(classify(LOG_START_FILE), PartitionFile::LogStart);
        assert_eq!(classify("00000000000000000042.log.tmp"), PartitionFile::Temporary);
        // Every temporary name the crate makes is one recovery deletes.
        for name in
            [segment_file_name(42), index_file_name(42), LOG_START_FILE.to_owned(), format!("{}.cleaning", segment_file_name(42))]
        {
            for per_process in [false, true] {
                let temporary = crate::sys::file::temp_path(&std::path::Path::new("/q/t/0").join(&name), per_process);
                assert_eq!(
                    classify(&temporary.file_name().unwrap().to_string_lossy()),
                    PartitionFile::Temporary,
                    "{temporary:?}"
                );
            }
        }
        assert_eq!(
            crate::sys::file::temp_path(std::path::Path::new("/q/t/0/log_start"), false),
            std::path::Path::new("/q/t/0/log_start.tmp")
        );
        assert_eq!(classify("42.log"), PartitionFile::Unknown);
        assert_eq!(classify("notes.txt"), PartitionFile::Unknown);
    }
}
