//! Targets of the fixed-size headers and metadata files: segment and index headers,
//! `streamlog.meta`, the log start checkpoint, `topic.meta` and a partition's `state` header.

use std::fs;
use std::path::Path;

use super::{FuzzDir, put_crc, split_mode};
use crate::catalog::files;
use crate::log::format::{self, FILE_HEADER_BYTES, FileHeader, INDEX_MAGIC, SEGMENT_MAGIC};

/// Segment and index file headers (`FileHeader::decode`), with both magics.
pub fn file_header(data: &[u8]) {
    let (fix, mut bytes) = split_mode(data);
    if fix && bytes.len() >= 64 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&bytes[0..32]);
        hasher.update(&bytes[48..60]);
        put_crc(&mut bytes, 60, hasher.finalize());
    }
    for magic in [SEGMENT_MAGIC, INDEX_MAGIC] {
        if let Ok(header) = FileHeader::decode(&bytes, magic, Path::new("fuzz")) {
            let encoded = header.encode();
            // The synced marker (bytes 32..48) changes in place and is not part of the header.
            assert_eq!(encoded[..32], bytes[..32], "a decoded file header re-encodes differently");
            assert_eq!(encoded[48..], bytes[48..64], "a decoded file header re-encodes differently");
            let marker = format::synced_marker(format::u64_at(&bytes, 32), format::u64_at(&bytes, 40));
            assert!(marker == format::u64_at(&bytes, 32) || marker == u64::from(FILE_HEADER_BYTES));
        }
    }
}

/// `streamlog.meta` (`decode_queue_meta`).
pub fn queue_meta(data: &[u8]) {
    let (fix, mut bytes) = split_mode(data);
    if fix && bytes.len() >= 64 {
        let crc = crc32fast::hash(&bytes[0..60]);
        put_crc(&mut bytes, 60, crc);
    }
    if let Ok(epoch) = files::decode_queue_meta(&bytes, Path::new("fuzz")) {
        assert_eq!(epoch, format::u64_at(&bytes, 16));
        assert_eq!(files::decode_queue_meta(&files::encode_queue_meta(epoch), Path::new("fuzz")).ok(), Some(epoch));
    }
}

/// A partition's `log_start` checkpoint: both slots, decoded as recovery decodes them.
pub fn log_start(data: &[u8]) {
    let (fix, mut bytes) = split_mode(data);
    if fix {
        for slot in bytes.chunks_exact_mut(64) {
            let crc = crc32fast::hash(&slot[0..60]);
            put_crc(slot, 60, crc);
        }
    }
    let path = Path::new("fuzz");
    let mut slots = Vec::new();
    for at in (0..bytes.len()).step_by(64) {
        let slot = &bytes[at..bytes.len().min(at + 64)];
        if let Ok(log_start) = format::decode_log_start(slot, path) {
            assert_eq!(format::encode_log_start(log_start)[16..24], slot[16..24]);
            slots.push(log_start);
        }
    }
    if let Ok(found) = crate::log::dir::log_start_slots(&bytes, path) {
        // Recovery takes the larger of the valid slots as the log start.
        let valid: Vec<u64> = found.into_iter().flatten().collect();
        assert!(!valid.is_empty(), "a checkpoint without a valid slot was accepted");
        assert_eq!(valid, slots, "the slots recovery found differ from the slots that decode");
    }
}

/// A topic's `topic.meta` (`decode_topic_meta`).
pub fn topic_meta(data: &[u8]) {
    let (fix, mut bytes) = split_mode(data);
    if fix && bytes.len() >= 128 {
        let crc = crc32fast::hash(&bytes[0..124]);
        put_crc(&mut bytes, 124, crc);
    }
    if let Ok((config, topic_id)) = files::decode_topic_meta(&bytes, Path::new("fuzz")) {
        let encoded = files::encode_topic_meta(&config, topic_id);
        // Reserved bytes are written as zeros; every other byte must come back as it was.
        let mut expected = bytes.clone();
        for range in [10..12, 58..60, 88..124] {
            expected[range].fill(0);
        }
        if expected == bytes {
            assert_eq!(encoded[..], bytes[..], "a decoded topic.meta re-encodes differently");
        } else {
            assert_eq!(encoded[..124], expected[..124], "a decoded topic.meta re-encodes differently");
        }
    }
}

/// A partition's `state` file header (`SharedState::stored_epoch`), written to a file first.
pub fn state_header(data: &[u8]) {
    let dir = FuzzDir::new();
    let path = dir.path.join("state");
    if fs::write(&path, data).is_err() {
        return;
    }
    let Ok(file) = fs::File::open(&path) else { return };
    if let Ok(Some(epoch)) = crate::log::state::SharedState::stored_epoch(&file) {
        assert!(data.len() as u64 >= crate::log::state::STATE_FILE_BYTES);
        assert_eq!(
            (&data[0..8], format::u16_at(data, 8), format::u64_at(data, 16)),
            (&format::STATE_MAGIC[..], format::FORMAT_VERSION, epoch)
        );
    }
}
