//! The fixed-size parts of a partition's files: the 64-byte header every segment and index file
//! starts with (the log it belongs to, its synced marker), the 16-byte entries of an index, and
//! the 64-byte slots of the log start checkpoint.

use std::path::Path;

use super::{FILE_HEADER_BYTES, FORMAT_VERSION, LOG_START_MAGIC, check_file_header, u16_at, u32_at, u64_at};
use crate::error::{Error, Result};
use crate::topic::TopicConfig;

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
    /// `SEGMENT_COMPACTED` for files the cleaner wrote, `SEGMENT_SPARE` for files made ahead
    /// of a roll.
    pub(crate) flags: u16,
    /// The log the file belongs to.
    pub(crate) log: LogId,
}

/// Header flag: written by compaction. Its offsets may have gaps (records were removed), its
/// log file ends exactly where its data does, and it is on stable storage as a whole.
pub(crate) const SEGMENT_COMPACTED: u16 = 1;

/// Header flag: the placeholder header of a segment's files made ahead of the roll that will
/// use them (`Spare`), whose base offset and creation time are not known yet. The roll writes
/// the real header before it renames the files into place, without an fsync, so a named file
/// shows this flag only after a power cut that kept the rename and lost that write; recovery
/// then writes the header again, the base offset taken from the file's name.
pub(crate) const SEGMENT_SPARE: u16 = 2;

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

pub(crate) const INDEX_ENTRY_BYTES: u32 = 16;

/// Bytes of an index file that can hold an entry for every `index_interval_bytes` of a log.
pub(crate) fn index_capacity_bytes(log_capacity_bytes: u64, config: &TopicConfig) -> u64 {
    let entries = log_capacity_bytes / u64::from(config.index_interval_bytes) + 1;
    u64::from(FILE_HEADER_BYTES) + entries * u64::from(INDEX_ENTRY_BYTES)
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

/// Size of the log start checkpoint: two slots of `FILE_HEADER_BYTES`.
pub(crate) const LOG_START_FILE_BYTES: usize = 2 * FILE_HEADER_BYTES as usize;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::{INDEX_MAGIC, SEGMENT_MAGIC};

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
    fn a_log_start_checkpoint_round_trips_and_damage_is_refused() {
        let path = Path::new("log_start");
        let mut bytes = encode_log_start(4711);
        assert_eq!(decode_log_start(&bytes, path).unwrap(), 4711);
        bytes[17] ^= 1;
        assert!(matches!(decode_log_start(&bytes, path), Err(Error::Corrupt { .. })));
        assert!(matches!(decode_log_start(&bytes[..10], path), Err(Error::ForeignFile { .. })));
    }
}
