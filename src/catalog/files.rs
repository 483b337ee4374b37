//! The queue directory's own files: their names, `streamlog.meta` (the epoch) and `topic.meta`
//! (a topic's settings and id) with their encodings, `queue.state` (the shared counter of topic
//! changes), the topic listing, lock files and the staging area. The files of a partition and
//! the shared header check are the log's (`log/format/`); ARCHITECTURE.md draws every layout.

use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::log::format::{self, FILE_HEADER_BYTES, FORMAT_VERSION, check_file_header, u32_at, u64_at};
use crate::options::{validate_topic_config, validate_topic_name};
use crate::sys::file::{self, Access};
use crate::sys::map::SharedMap;
use crate::topic::{CleanupPolicy, Compression, TopicConfig};

pub(crate) const QUEUE_MAGIC: [u8; 8] = *b"SLOGQUE\0";
pub(crate) const TOPIC_MAGIC: [u8; 8] = *b"SLOGTOP\0";
pub(crate) const QUEUE_STATE_MAGIC: [u8; 8] = *b"SLOGQST\0";

pub(crate) const QUEUE_META_FILE: &str = "streamlog.meta";
pub(crate) const QUEUE_STATE_FILE: &str = "queue.state";
/// Lock files of earlier versions, which locked these instead of the directories: a directory
/// holding only them is still a new queue.
pub(crate) const OPEN_LOCK_FILE: &str = "open.lock";
pub(crate) const USERS_LOCK_FILE: &str = "users.lock";
pub(crate) const MAINTENANCE_LOCK_FILE: &str = "maintenance.lock";
pub(crate) const TOPICS_DIR: &str = "topics";
pub(crate) const STAGING_DIR: &str = "staging";
pub(crate) const TOPIC_META_FILE: &str = "topic.meta";
pub(crate) const GROUPS_DIR: &str = "groups";
/// A group's offset store, inside its directory under `groups/`.
pub(crate) const OFFSETS_DIR: &str = "offsets";

/// Size of a topic's metadata file.
pub(crate) const TOPIC_META_BYTES: usize = 128;

/// The names of all topics in the queue directory `dir`, sorted.
pub(crate) fn list_topics(dir: &Path) -> Result<Vec<String>> {
    let topics = dir.join(TOPICS_DIR);
    let mut names = Vec::new();
    for entry in fs::read_dir(&topics).during("list", &topics)? {
        let entry = entry.during("list", &topics)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if validate_topic_name(&name).is_ok() && entry.path().join(TOPIC_META_FILE).exists() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Where `queue.state` keeps its counter of topic changes.
pub(crate) const TOPICS_VERSION_AT: usize = 16;
/// Where `queue.state` counts the idempotent producers made (see `Catalog::new_producer_id`).
pub(crate) const PRODUCER_IDS_AT: usize = 24;
pub(crate) const QUEUE_STATE_BYTES: usize = 4096;

/// A topic id no other topic gets: the clock, the process and a counter, mixed.
pub(crate) fn new_topic_id() -> u64 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut id =
        now ^ (u64::from(std::process::id()) << 32) ^ COUNT.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // SplitMix64's finaliser, so that ids made close together differ in every bit.
    id = (id ^ (id >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    id = (id ^ (id >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (id ^ (id >> 31)).max(1)
}

/// Maps `queue.state`, creating it if it is missing. It is never rebuilt or shortened: its one
/// counter only grows. A new file is written whole and then linked into place, which fails if
/// another process got there first, so every process maps the same file.
pub(crate) fn open_queue_state(dir: &Path) -> Result<SharedMap> {
    let path = dir.join(QUEUE_STATE_FILE);
    if !path.exists() {
        let mut bytes = vec![0u8; QUEUE_STATE_BYTES];
        bytes[0..8].copy_from_slice(&QUEUE_STATE_MAGIC);
        bytes[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // Whoever links it first made it; the others map that one.
        file::atomic_create(&path, &bytes)?;
    }
    let file = file::open_file(&path, Access::ReadWrite)?;
    let length = file.metadata().during("stat", &path)?.len();
    let mut head = [0u8; 64];
    if length != QUEUE_STATE_BYTES as u64 {
        return Err(Error::ForeignFile { path, reason: format!("{length} bytes long, not {QUEUE_STATE_BYTES}") });
    }
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).during("read", &path)?;
    format::check_magic_version(&head, QUEUE_STATE_MAGIC).map_err(|mismatch| mismatch.into_error(&path))?;
    let map = memmap2::MmapOptions::new().len(QUEUE_STATE_BYTES).map_raw(&file).during("map", &path)?;
    Ok(SharedMap(map))
}

pub(crate) fn lock_file(path: &Path) -> Result<File> {
    file::open_file(path, Access::Create)
}

pub(crate) fn read_epoch(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(QUEUE_META_FILE);
    match file::read_capped(&path, FILE_HEADER_BYTES as usize) {
        Ok(bytes) => decode_queue_meta(&bytes, &path).map(Some),
        Err(e) if file::is_not_found(&e) => {
            // A new queue, unless the directory already holds something else.
            let leftover = file::temp_path(Path::new(QUEUE_META_FILE), false);
            for entry in fs::read_dir(dir).during("list", dir)? {
                let name = entry.during("list", dir)?.file_name();
                if !(name == OPEN_LOCK_FILE || name == USERS_LOCK_FILE || name == leftover.as_os_str()) {
                    return Err(Error::ForeignFile {
                        path: dir.to_path_buf(),
                        reason: "a non-empty directory without streamlog.meta".into(),
                    });
                }
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn write_epoch(dir: &Path, epoch: u64) -> Result<()> {
    file::atomic_replace(&dir.join(QUEUE_META_FILE), &encode_queue_meta(epoch))
}

/// The queue directory's metadata file: magic, version, and the open epoch.
///
/// ```text
/// 0 magic [8]   8 version u16   10 reserved [6]   16 epoch u64   24 reserved [36]   60 crc32
/// ```
pub(crate) fn encode_queue_meta(epoch: u64) -> [u8; FILE_HEADER_BYTES as usize] {
    let mut out = [0u8; FILE_HEADER_BYTES as usize];
    out[0..8].copy_from_slice(&QUEUE_MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32fast::hash(&out[0..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Returns the epoch stored in a queue metadata file.
pub(crate) fn decode_queue_meta(bytes: &[u8], path: &Path) -> Result<u64> {
    check_file_header(bytes, QUEUE_MAGIC, path)?;
    if crc32fast::hash(&bytes[0..60]) != u32_at(bytes, 60) {
        return Err(Error::corrupt(path, 0, "queue metadata checksum mismatch"));
    }
    Ok(u64_at(bytes, 16))
}

/// A topic's persisted configuration.
///
/// ```text
/// 0 magic [8]   8 version u16   10 reserved u16   12 partitions u32
/// 16 segment_bytes u64   24 segment_ms u64   32 max_record_bytes u32   36 index_interval_bytes u32
/// 40 retention_ms u64   48 retention_bytes u64   56 cleanup_policy u8   57 compression u8 (Kafka's codec number)   58 reserved [2]
/// 60 min_cleanable_dirty_ppm u32   64 min_compaction_lag_ms u64   72 delete_retention_ms u64
/// 80 topic_id u64 (unique per creation: a topic deleted and created again is another topic)
/// 88 reserved [36]   124 crc32 of bytes 0..124
/// ```
pub(crate) fn encode_topic_meta(config: &TopicConfig, topic_id: u64) -> [u8; TOPIC_META_BYTES] {
    let mut out = [0u8; TOPIC_META_BYTES];
    out[0..8].copy_from_slice(&TOPIC_MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&config.partitions.to_le_bytes());
    out[16..24].copy_from_slice(&config.segment_bytes.to_le_bytes());
    out[24..32].copy_from_slice(&config.segment_ms.to_le_bytes());
    out[32..36].copy_from_slice(&config.max_record_bytes.to_le_bytes());
    out[36..40].copy_from_slice(&config.index_interval_bytes.to_le_bytes());
    out[40..48].copy_from_slice(&config.retention_ms.to_le_bytes());
    out[48..56].copy_from_slice(&config.retention_bytes.to_le_bytes());
    out[56] = config.cleanup_policy.code();
    out[57] = config.compression.code();
    out[60..64].copy_from_slice(&config.min_cleanable_dirty_ppm.to_le_bytes());
    out[64..72].copy_from_slice(&config.min_compaction_lag_ms.to_le_bytes());
    out[72..80].copy_from_slice(&config.delete_retention_ms.to_le_bytes());
    out[80..88].copy_from_slice(&topic_id.to_le_bytes());
    let crc = crc32fast::hash(&out[0..124]);
    out[124..128].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Returns a topic's configuration and id.
pub(crate) fn decode_topic_meta(bytes: &[u8], path: &Path) -> Result<(TopicConfig, u64)> {
    check_file_header(bytes, TOPIC_MAGIC, path)?;
    if bytes.len() != TOPIC_META_BYTES {
        return Err(Error::corrupt(path, 0, format!("topic metadata is {} bytes, expected {TOPIC_META_BYTES}", bytes.len())));
    }
    if crc32fast::hash(&bytes[0..124]) != u32_at(bytes, 124) {
        return Err(Error::corrupt(path, 0, "topic metadata checksum mismatch"));
    }
    let config = TopicConfig::new(u32_at(bytes, 12))
        .segment_bytes(u64_at(bytes, 16))
        .segment_ms(u64_at(bytes, 24))
        .max_record_bytes(u32_at(bytes, 32))
        .index_interval_bytes(u32_at(bytes, 36))
        .retention_ms(u64_at(bytes, 40))
        .retention_bytes(u64_at(bytes, 48))
        .cleanup_policy(CleanupPolicy::from_code(bytes[56]).ok_or_else(|| Error::corrupt(path, 56, "unknown cleanup policy"))?)
        .compression(Compression::from_code(bytes[57]).ok_or_else(|| Error::corrupt(path, 57, "unknown compression codec"))?)
        .min_compaction_lag_ms(u64_at(bytes, 64))
        .delete_retention_ms(u64_at(bytes, 72));
    let config = TopicConfig { min_cleanable_dirty_ppm: u32_at(bytes, 60), ..config };
    validate_topic_config(&config).map_err(|e| Error::corrupt(path, 12, e.to_string()))?;
    Ok((config, u64_at(bytes, 80)))
}

/// Removes what topic creations and deletions left in `staging/`. Nothing there is followed:
/// `staging` itself must be a directory (checked by `create_dir_durably`), a directory in it is
/// removed with everything inside (`remove_dir_all` does not follow symbolic links), and
/// anything else (a stray file, a link) is unlinked itself.
pub(crate) fn clear_staging(staging: &Path) -> Result<()> {
    for entry in fs::read_dir(staging).during("list", staging)? {
        let entry = entry.during("list", staging)?;
        let path = entry.path();
        if entry.file_type().during("stat", &path)?.is_dir() {
            fs::remove_dir_all(&path).during("remove leftover", &path)?;
        } else {
            fs::remove_file(&path).during("remove leftover", &path)?;
        }
    }
    Ok(())
}
