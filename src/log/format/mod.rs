//! Every byte of the log's files (segments, indexes, batches, records, the log start
//! checkpoint), their names, and every size limit of the log: pure encoding and decoding, no
//! I/O. ARCHITECTURE.md draws these layouts. All integers are little-endian and fixed-width;
//! nothing on disk is a `usize`.
//!
//! This module holds what every file streamlog writes shares: the format version, the log's
//! magic numbers, the one magic-and-version check and the little-endian readers, which the
//! queue's, topics' and groups' codecs use too. The rest is one module per kind of bytes:
//! `header` (the 64-byte header of segment and index files, index entries, the log start
//! checkpoint), `batch` (record batches and the records inside them), `codec` (compressed batches' records) and `names` (the files of a
//! partition directory). The queue directory's own files (`streamlog.meta`, `queue.state`,
//! `topic.meta`, the lock files and folders) are encoded and named in `catalog/files.rs`; a
//! group's file, its state and its committed offsets beside the code that keeps them, in
//! `group/`. The partition `state` file is shared memory, drawn in `log/state.rs`.

pub(crate) mod batch;
pub(crate) mod codec;
mod header;
mod names;

use std::path::Path;

use crate::error::{Error, Result};

pub(crate) use batch::{
    BATCH_HEADER_BYTES, BatchHeader, FLAG_HAS_KEY, FLAG_TOMBSTONE, MAX_BATCH_BYTES, ProducerStamp, RecordLayout,
    TARGET_BATCH_BYTES, batch_bytes, batch_checksum_ok, checksum_base_offset, frame_single_record, marker_commits,
    max_records_in, parse_headers, record_bytes, set_base_offset, write_batch, write_compressed_batch, write_marker,
};
pub(crate) use header::{
    FULLY_SYNCED, FileHeader, INDEX_ENTRY_BYTES, IndexEntry, LOG_ID_AT, LOG_START_FILE_BYTES, LogId, SEGMENT_COMPACTED,
    SEGMENT_SPARE, SYNCED_MARKER_AT, decode_log_start, encode_log_start, index_capacity_bytes, synced_marker,
};
pub(crate) use names::{LOG_START_FILE, PartitionFile, STATE_FILE, classify, index_file_name, segment_file_name, swap_file_name};

/// The format version this build writes and the only one it reads. Version 3 added the log id
/// (topic id and partition) to segment and index headers; version 4 framed records with
/// varints, left the base offset out of the batch checksum and gave batches a codec and
/// producer fields; version 5 added transactions (the transactional and marker attribute bits,
/// the open transactions in each partition's state, the transaction coordinators' files);
/// version 6 let transactions write to a group's offset log (offsets sent to a transaction). A
/// queue of another version is refused as a whole (`Error::IncompatibleVersion` on its
/// `streamlog.meta`), never half read.
pub(crate) const FORMAT_VERSION: u16 = 6;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"SLOGSEG\0";
pub(crate) const INDEX_MAGIC: [u8; 8] = *b"SLOGIDX\0";
pub(crate) const STATE_MAGIC: [u8; 8] = *b"SLOGSTA\0";
pub(crate) const LOG_START_MAGIC: [u8; 8] = *b"SLOGLST\0";

/// Every segment and index file starts with a header of this size; a slot of the log start
/// checkpoint and `streamlog.meta` are this size too.
pub(crate) const FILE_HEADER_BYTES: u32 = 64;

/// Log files grow on disk in steps of this size.
pub(crate) const LOG_RESERVE_STEP_BYTES: u64 = 1 << 20;
/// The least and the most of a segment's log a writer keeps mapped ahead of its tail (see
/// `Segment::claim_prefault`). Writers reserve space at least the most ahead of the tail.
pub(crate) const PREFAULT_MIN_BYTES: u64 = 16 << 10;
pub(crate) const PREFAULT_MAX_BYTES: u64 = 256 << 10;
/// Index files grow on disk in steps of this size.
pub(crate) const INDEX_RESERVE_STEP_BYTES: u64 = 64 << 10;

/// Batches at least this large are written with `pwrite` from a buffer: copying into a fresh
/// mapping costs a page fault per page, which dominates for large writes.
pub(crate) const PWRITE_MIN_BATCH_BYTES: u64 = 16 << 10;

/// Holes punched past a sealed segment's data start at a multiple of this (a page and a file
/// system block), so that no page holding data is touched.
pub(crate) const HOLE_ALIGN_BYTES: u64 = 4096;

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

#[inline]
pub(crate) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().expect("two bytes"))
}

#[inline]
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

#[inline]
pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}
