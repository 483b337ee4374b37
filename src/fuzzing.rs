//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their corpus
//! (`tests/it/fuzz_corpus.rs`). Compiled only with the `fuzzing` feature and hidden from the
//! docs: the parsers stay `pub(crate)`, and each function here takes untrusted bytes, drives
//! the parser streamlog uses on bytes from disk, and panics only when a property fails (a
//! decoded value that does not re-encode to the bytes it came from, or a record that was never
//! written as that record). Any panic inside streamlog itself is a finding too.
//!
//! Checksums stop a byte-mutating fuzzer at the first check, so the targets of checksummed
//! formats read a mode byte first: with its low bit set, the target recomputes the checksum
//! before decoding, so that the fuzzer reaches the checks behind it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::catalog::files;
use crate::log::format::{
    self, BATCH_HEADER_BYTES, BatchHeader, FILE_HEADER_BYTES, FileHeader, INDEX_MAGIC, RECORD_HEADER_BYTES, RecordLayout,
    SEGMENT_MAGIC,
};
use crate::{CleanupPolicy, ConsumerConfig, OffsetReset, Queue, QueueOptions, Record, TopicConfig, TopicPartition};

/// The mode byte of a checksummed target, and the bytes after it.
fn split_mode(data: &[u8]) -> (bool, Vec<u8>) {
    match data.split_first() {
        Some((mode, rest)) => (mode & 1 == 1, rest.to_vec()),
        None => (false, Vec::new()),
    }
}

fn put_crc(bytes: &mut [u8], at: usize, crc: u32) {
    bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

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
        for range in [10..12, 57..60, 88..124] {
            expected[range].fill(0);
        }
        if expected == bytes {
            assert_eq!(encoded[..], bytes[..], "a decoded topic.meta re-encodes differently");
        } else {
            assert_eq!(encoded[..124], expected[..124], "a decoded topic.meta re-encodes differently");
        }
    }
}

/// A run of record batches as they lie in a segment, read the way a consumer reads them
/// (`BatchHeader`, its checks, `RecordLayout::parse` for each record, `parse_headers`). Every
/// batch that is accepted must re-encode (`write_batch`) to exactly its bytes, but for the
/// words the reader does not use for records. Returns how many records were accepted.
pub fn batch(data: &[u8]) -> usize {
    let (fix, mut bytes) = split_mode(data);
    let mut at = 0usize;
    let mut expected_offset = None;
    let mut accepted = 0;
    while at + BATCH_HEADER_BYTES as usize <= bytes.len() {
        let header = BatchHeader::read(&bytes[at..]);
        let end = at as u64 + u64::from(header.batch_bytes);
        if !header.is_plausible() || end > bytes.len() as u64 {
            return accepted;
        }
        let end = end as usize;
        if fix {
            forge_batch_checksum(&mut bytes[at..end]);
        }
        let batch = &bytes[at..end];
        if expected_offset.is_some_and(|offset| offset != header.base_offset) || !format::batch_checksum_ok(batch) {
            return accepted;
        }
        let Some(records) = decode_batch(batch, &header) else {
            return accepted;
        };
        let rebuilt: Vec<Record<'_>> = records
            .iter()
            .map(|r| {
                let mut record = match r.value {
                    Some(value) => Record::new(value),
                    None => Record { value: None, ..Record::new(b"") },
                };
                record.key = r.key.map(Cow::Borrowed);
                record.headers = r.headers.iter().map(|&(name, value)| (Cow::Borrowed(name), Cow::Borrowed(value))).collect();
                record
            })
            .collect();
        let timestamps: Vec<u64> = records.iter().map(|r| r.timestamp_ms).collect();
        let size = u64::from(BATCH_HEADER_BYTES) + rebuilt.iter().map(format::record_bytes).sum::<u64>();
        assert_eq!(size, batch.len() as u64, "an accepted batch holds bytes that are no part of its records");
        let mut encoded = vec![0u8; batch.len()];
        format::write_batch(&mut encoded, header.base_offset, &rebuilt, &timestamps);
        // Its size, base offset, count and records must be as written. The words the reader
        // does not use for records (the checksum, which a forged one makes right anyway, the
        // attributes and the timestamps of the batch) are left out.
        for range in [0..4, 8..20, BATCH_HEADER_BYTES as usize..batch.len()] {
            assert_eq!(encoded[range.clone()], batch[range], "an accepted batch does not re-encode to its bytes");
        }
        accepted += records.len();
        expected_offset = Some(header.next_offset());
        at = end;
    }
    accepted
}

/// Recomputes the checksum of `batch` (one whole batch), as a writer would have: for the
/// targets' checksum mode and for tests that must show a checker catching a record that was
/// never written.
pub fn forge_batch_checksum(batch: &mut [u8]) {
    let crc = format::checksum(&batch[8..]);
    put_crc(batch, 4, crc);
}

/// One record as the consumer's view of it would show it.
struct DecodedRecord<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a str, &'a [u8])>,
    timestamp_ms: u64,
}

/// Decodes the records of a whole batch as `Partition::advance` does; `None` where the reader
/// reports corruption.
fn decode_batch<'a>(batch: &'a [u8], header: &BatchHeader) -> Option<Vec<DecodedRecord<'a>>> {
    let mut at = BATCH_HEADER_BYTES as usize;
    let mut records = Vec::new();
    for _ in 0..header.record_count {
        let layout = RecordLayout::parse(&batch[at..])?;
        let body = &batch[at + RECORD_HEADER_BYTES as usize..at + layout.record_bytes as usize];
        let key_end = layout.key_bytes as usize;
        let value_end = key_end + layout.value_bytes as usize;
        records.push(DecodedRecord {
            key: (layout.flags & format::FLAG_HAS_KEY != 0).then(|| &body[..key_end]),
            value: (layout.flags & format::FLAG_TOMBSTONE == 0).then(|| &body[key_end..value_end]),
            headers: format::parse_headers(&body[value_end..]).collect(),
            timestamp_ms: layout.timestamp_ms,
        });
        at += layout.record_bytes as usize;
        if at == batch.len() && records.len() < header.record_count as usize {
            return None;
        }
    }
    (at == batch.len()).then_some(records)
}

/// A consumer group's state blob, framed as in the group file (length, checksum, state), and
/// decoded by `decode_group_state`.
pub fn group_state(data: &[u8]) {
    let (fix, mut bytes) = split_mode(data);
    if bytes.len() < 8 {
        return;
    }
    if fix {
        let length = (bytes.len() - 8) as u32;
        let crc = crc32fast::hash(&bytes[8..]);
        bytes[0..4].copy_from_slice(&length.to_le_bytes());
        put_crc(&mut bytes, 4, crc);
    }
    let length = format::u32_at(&bytes, 0) as usize;
    let Some(blob) = bytes.get(8..8 + length) else {
        return;
    };
    if crc32fast::hash(blob) != format::u32_at(&bytes, 4) {
        return;
    }
    if let Ok(state) = crate::group::state::decode_group_state(blob, Path::new("fuzz")) {
        let encoded = crate::group::state::encode_group_state(&state);
        let again = crate::group::state::decode_group_state(&encoded, Path::new("fuzz")).expect("an encoded group state decodes");
        assert_eq!(crate::group::state::encode_group_state(&again), encoded, "group state encoding is not stable");
        // Topics are kept in a map, written in name order: a blob that names them out of
        // order (or one twice) decodes to the same state, so only its members must match.
        let (names, members_at) = topic_names(blob);
        if names.windows(2).all(|pair| pair[0] < pair[1]) {
            assert_eq!(encoded, blob, "a decoded group state re-encodes differently");
        } else {
            let (_, encoded_members_at) = topic_names(&encoded);
            assert_eq!(encoded[encoded_members_at..], blob[members_at..], "a decoded group state re-encodes differently");
        }
    }
}

/// The topic names of a group state blob that decodes, and where its members start.
fn topic_names(blob: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut at = 21;
    let names = (0..format::u32_at(blob, 17))
        .map(|_| {
            let length = usize::from(format::u16_at(blob, at));
            let name = &blob[at + 2..at + 2 + length];
            at += 2 + length + 4;
            name
        })
        .collect();
    (names, at)
}

/// The key and value of an offset-store record (`decode_commit_key`, `decode_commit_value`):
/// the first two bytes give the key's length, the rest is key then value.
pub fn commit(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let key_bytes = usize::from(format::u16_at(data, 0)).min(data.len() - 2);
    let (key, value) = data[2..].split_at(key_bytes);
    if let Some(partition) = crate::group::offsets::decode_commit_key(key) {
        assert_eq!(crate::group::offsets::encode_commit_key(&partition), key, "a decoded commit key re-encodes differently");
    }
    if let Some((offset, topic_id)) = crate::group::offsets::decode_commit_value(value) {
        let encoded =
            crate::group::offsets::encode_commit_value(offset, format::u64_at(value, 8), format::u64_at(value, 16), topic_id);
        assert_eq!(encoded[..], value[..], "a decoded commit value re-encodes differently");
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

/// A temporary directory for one input, removed when dropped.
struct FuzzDir {
    path: PathBuf,
}

impl FuzzDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let path = base.join(format!("streamlog-fuzz-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("a temporary directory");
        FuzzDir { path }
    }
}

impl Drop for FuzzDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Files above this size are not made: a fuzzed length must not fill the disk (they are sparse,
/// but a test file system may not be).
const MAX_TREE_FILE_BYTES: u64 = 256 << 20;

/// One file of a directory tree: its path relative to the queue directory, its length, and the
/// parts of it that are not zeros (offset and bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// The path relative to the queue directory.
    pub path: String,
    /// The file's length; everything outside `extents` is zeros.
    pub len: u64,
    /// Non-zero parts: offset and bytes.
    pub extents: Vec<(u64, Vec<u8>)>,
}

/// Encodes a tree: per file `path_len u16, path, len u64, extent_count u16`, then per extent
/// `offset u64, bytes_len u32, bytes`.
pub fn encode_tree(files: &[TreeFile]) -> Vec<u8> {
    let mut out = Vec::new();
    for file in files {
        out.extend_from_slice(&(file.path.len() as u16).to_le_bytes());
        out.extend_from_slice(file.path.as_bytes());
        out.extend_from_slice(&file.len.to_le_bytes());
        out.extend_from_slice(&(file.extents.len() as u16).to_le_bytes());
        for (offset, bytes) in &file.extents {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
    out
}

/// Decodes what `encode_tree` wrote, as far as it is well formed (a fuzzed input may stop
/// anywhere).
pub fn decode_tree(mut data: &[u8]) -> Vec<TreeFile> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = data.split_at_checked(n)?;
        *data = rest;
        Some(head)
    }
    let mut files = Vec::new();
    let one = |data: &mut &[u8]| -> Option<TreeFile> {
        let path_len = usize::from(format::u16_at(take(data, 2)?, 0));
        let path = String::from_utf8(take(data, path_len)?.to_vec()).ok()?;
        let len = format::u64_at(take(data, 8)?, 0);
        let count = format::u16_at(take(data, 2)?, 0);
        let mut extents = Vec::new();
        for _ in 0..count {
            let offset = format::u64_at(take(data, 8)?, 0);
            let bytes_len = format::u32_at(take(data, 4)?, 0) as usize;
            extents.push((offset, take(data, bytes_len)?.to_vec()));
        }
        Some(TreeFile { path, len, extents })
    };
    while let Some(file) = one(&mut data) {
        files.push(file);
    }
    files
}

/// Reads the tree under `dir` (regular files only), keeping the non-zero 512-byte blocks.
pub fn read_tree(dir: &Path) -> io::Result<Vec<TreeFile>> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut entries: Vec<_> = fs::read_dir(dir.join(&relative))?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = relative.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = fs::read(entry.path())?;
            let mut extents: Vec<(u64, Vec<u8>)> = Vec::new();
            for (n, block) in bytes.chunks(512).enumerate() {
                if block.iter().all(|&b| b == 0) {
                    continue;
                }
                let offset = n as u64 * 512;
                match extents.last_mut() {
                    Some((start, run)) if *start + run.len() as u64 == offset => run.extend_from_slice(block),
                    _ => extents.push((offset, block.to_vec())),
                }
            }
            files.push(TreeFile { path: path.to_string_lossy().into_owned(), len: bytes.len() as u64, extents });
        }
    }
    Ok(files)
}

/// Writes `files` under `dir`, skipping any whose path leaves it or cannot be made.
fn write_tree(dir: &Path, files: &[TreeFile]) {
    for file in files.iter().take(256) {
        let relative = Path::new(&file.path);
        if file.path.is_empty()
            || !relative.components().all(|c| matches!(c, Component::Normal(_)))
            || file.len > MAX_TREE_FILE_BYTES
        {
            continue;
        }
        let path = dir.join(relative);
        if path.parent().is_some_and(|parent| fs::create_dir_all(parent).is_err()) {
            continue;
        }
        let Ok(out) = fs::File::create(&path) else { continue };
        let _ = out.set_len(file.len);
        for (offset, bytes) in &file.extents {
            let end = offset.saturating_add(bytes.len() as u64);
            if end <= file.len {
                let _ = out.write_all_at(bytes, *offset);
            }
        }
    }
}

/// A record as the seed queues hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedRecord {
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The timestamp, in milliseconds.
    pub timestamp_ms: u64,
}

/// The record the seed queues hold at `offset` of partition `partition` of every topic: the
/// directory target accepts a record only if it is this one.
pub fn seed_record(partition: u32, offset: u64) -> SeedRecord {
    let key = (offset % 3 != 2).then(|| format!("key-{}", offset % 5).into_bytes());
    let value = (offset % 7 != 6 || key.is_none())
        .then(|| format!("p{partition} o{offset} {}", "v".repeat((offset % 40) as usize)).into_bytes());
    let headers = if offset.is_multiple_of(4) {
        vec![("trace".to_owned(), offset.to_le_bytes().to_vec()), (String::new(), Vec::new())]
    } else {
        Vec::new()
    };
    SeedRecord { key, value, headers, timestamp_ms: 1_700_000_000_000 + offset * 1000 }
}

/// The topics of a seed queue: `(name, config, records per partition)`.
fn seed_topics() -> Vec<(&'static str, TopicConfig, u64)> {
    vec![
        ("plain", TopicConfig::new(2).segment_bytes(512).index_interval_bytes(64).retention_ms(u64::MAX), 30),
        (
            "compacted",
            TopicConfig::new(1).segment_bytes(512).cleanup_policy(CleanupPolicy::Compact).min_cleanable_dirty_ratio(0.0),
            40,
        ),
        ("sized", TopicConfig::new(1).segment_bytes(256).retention_bytes(600).retention_ms(u64::MAX), 25),
    ]
}

/// Makes a real queue in `dir` that `directory` accepts as its origin: the seed topics with
/// the seed records (several segments each), maintenance run (retention and compaction), and a
/// consumer group that subscribed and committed. Returns the queue's tree.
pub fn write_seed_queue(dir: &Path) -> crate::Result<Vec<TreeFile>> {
    let queue = Queue::open_with(dir, QueueOptions::new().maintenance_interval(Duration::from_secs(3600)))?;
    let producer = queue.producer();
    for (name, config, count) in seed_topics() {
        let partitions = config.partitions;
        queue.create_topic_with(name, config)?;
        for partition in 0..partitions {
            for offset in 0..count {
                let SeedRecord { key, value, headers, timestamp_ms } = seed_record(partition, offset);
                let mut record = match &value {
                    Some(value) => Record::new(value),
                    None => Record::tombstone(key.as_deref().unwrap_or_default()),
                };
                if let Some(key) = &key {
                    record = record.key(key);
                }
                for (name, value) in &headers {
                    record = record.header(name, value);
                }
                producer.send(name, record.partition(partition).timestamp(timestamp_ms))?;
            }
        }
    }
    producer.flush()?;
    queue.run_maintenance()?;
    let mut consumer = queue.consumer(ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest))?;
    consumer.subscribe(&["plain", "compacted"])?;
    for _ in 0..4 {
        consumer.poll(Duration::from_millis(10))?;
    }
    consumer.commit()?;
    consumer.close()?;
    drop((producer, queue));
    read_tree(dir).map_err(|source| crate::Error::Io { operation: "read the seed queue", path: dir.to_path_buf(), source })
}

/// A whole queue directory, written from an encoded tree (see `encode_tree`) into a fresh
/// directory: opened, its topics listed, every partition read to its end, a group consumer
/// subscribed and polled, maintenance run, and reopened and read again. Every error must be a
/// typed error, and every record read must be the seed record at its offset (`seed_record`).
/// Returns how many records were read and checked.
///
/// The first byte is the mode: with its low bit set, the checksums of every file header
/// (segments, indexes, swaps, `streamlog.meta`, `topic.meta`, `log_start`, the group state
/// copies) are recomputed after the tree is written, so that the fuzzer reaches what lies
/// behind them. Batch checksums are never recomputed: they are what makes a record the record
/// that was written, so the record check holds in both modes.
pub fn directory(data: &[u8]) -> u64 {
    let (fix, data) = split_mode(data);
    let dir = FuzzDir::new();
    write_tree(&dir.path, &decode_tree(&data));
    if fix {
        reseal_headers(&dir.path);
    }
    let mut checked = 0;
    for round in 0..2 {
        let Ok(queue) = Queue::open_with(&dir.path, QueueOptions::new().maintenance_interval(Duration::from_secs(3600))) else {
            break;
        };
        let _ = exercise(&queue, round == 0, &mut checked);
    }
    checked
}

/// Recomputes the header checksums of every file under `dir` that has one (see `directory`).
fn reseal_headers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            reseal_headers(&path);
            continue;
        }
        let Ok(file) = fs::OpenOptions::new().read(true).write(true).open(&path) else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut head = [0u8; 128];
        let head_bytes = file.read_at(&mut head, 0).unwrap_or(0);
        let reseal = |bytes: &mut [u8], crc: u32, crc_at: usize, file_at: u64| {
            put_crc(bytes, crc_at, crc);
            let _ = file.write_all_at(&bytes[crc_at..crc_at + 4], file_at + crc_at as u64);
        };
        if name == crate::group::file::GROUP_FILE {
            for half in 0..2 {
                let at = crate::group::file::blob_at(half);
                let mut prefix = [0u8; 8];
                if file.read_exact_at(&mut prefix, at).is_err() {
                    continue;
                }
                let mut blob = vec![0u8; (format::u32_at(&prefix, 0) as usize).min(1 << 20)];
                if file.read_exact_at(&mut blob, at + 8).is_ok() {
                    reseal(&mut prefix, crc32fast::hash(&blob), 4, at);
                }
            }
        } else if name == files::TOPIC_META_FILE && head_bytes >= 128 {
            let crc = crc32fast::hash(&head[0..124]);
            reseal(&mut head, crc, 124, 0);
        } else if head_bytes >= 64 {
            let stem = name.strip_suffix(".swap").unwrap_or(&name);
            match format::classify(stem) {
                format::PartitionFile::Segment(_) | format::PartitionFile::Index(_) => {
                    let mut hasher = crc32fast::Hasher::new();
                    hasher.update(&head[0..32]);
                    hasher.update(&head[48..60]);
                    reseal(&mut head, hasher.finalize(), 60, 0);
                }
                format::PartitionFile::LogStart => {
                    for slot in 0..head_bytes / 64 {
                        let at = slot * 64;
                        let crc = crc32fast::hash(&head[at..at + 60]);
                        reseal(&mut head[at..at + 64], crc, 60, at as u64);
                    }
                }
                _ if name == files::QUEUE_META_FILE => {
                    let crc = crc32fast::hash(&head[0..60]);
                    reseal(&mut head, crc, 60, 0);
                }
                _ => {}
            }
        }
    }
}

/// Reads everything `queue` holds, checking each record; with `maintain`, also polls a group
/// member and runs maintenance. Stops at the first error, which is allowed.
fn exercise(queue: &Queue, maintain: bool, checked: &mut u64) -> crate::Result<()> {
    let mut partitions = Vec::new();
    for topic in queue.topics()? {
        for partition in 0..queue.partition_count(&topic)? {
            partitions.push(TopicPartition::new(&topic, partition));
        }
    }
    let mut reader = queue.consumer(ConsumerConfig::new("reader").max_poll_records(64))?;
    reader.assign(&partitions)?;
    let mut ends = BTreeMap::new();
    for partition in &partitions {
        let (start, end) = queue.offsets(partition)?;
        assert!(start <= end, "log start {start} past the end {end} of {partition:?}");
        reader.seek(partition, start)?;
        ends.insert(partition.clone(), end);
        let _ = reader.committed(partition);
    }
    // Every poll returns at least one record until all partitions are at their ends, so this
    // loop is bounded by the records in the queue (and the bytes of the input).
    let total: u64 = ends.values().sum();
    for _ in 0..=total {
        let records = reader.poll(Duration::ZERO)?;
        if records.is_empty() {
            break;
        }
        for record in &records {
            check_record(record);
            *checked += 1;
        }
    }
    if maintain {
        let topics: Vec<String> = queue.topics()?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let mut member = queue.consumer(ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest))?;
        member.subscribe(&names)?;
        for _ in 0..3 {
            for record in &member.poll(Duration::ZERO)? {
                check_record(record);
                *checked += 1;
            }
        }
        member.commit()?;
        member.close()?;
        queue.run_maintenance()?;
    }
    Ok(())
}

/// Panics unless `record` is the seed record at its offset.
fn check_record(record: &crate::ConsumerRecord) {
    let found = SeedRecord {
        key: record.key().map(<[u8]>::to_vec),
        value: (!record.is_tombstone()).then(|| record.value().to_vec()),
        headers: record.headers().map(|(n, v)| (n.to_owned(), v.to_vec())).collect(),
        timestamp_ms: record.timestamp(),
    };
    assert_eq!(
        found,
        seed_record(record.partition(), record.offset()),
        "a record that was never written at offset {} of {}/{}",
        record.offset(),
        record.topic(),
        record.partition()
    );
}

/// Writes the seed inputs of every target into `out/<target>/`: the files of a real queue made
/// by `write_seed_queue` (each parser's files, as the parser reads them) and the whole tree for
/// the directory target, plus variants of it (a compaction swap left in place, a group file
/// gone, an unsynced tail cut).
pub fn write_seeds(out: &Path) -> io::Result<()> {
    let dir = FuzzDir::new();
    let tree = write_seed_queue(&dir.path.join("queue")).map_err(io::Error::other)?;
    let flat = |file: &TreeFile| {
        let mut bytes = vec![0u8; file.len.min(1 << 20) as usize];
        for (offset, data) in &file.extents {
            let start = *offset as usize;
            if start < bytes.len() {
                let end = bytes.len().min(start + data.len());
                bytes[start..end].copy_from_slice(&data[..end - start]);
            }
        }
        bytes
    };
    let mut seeds: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    let with_mode = |bytes: &[u8]| [&[0u8][..], bytes].concat();
    for file in &tree {
        let bytes = flat(file);
        let name = Path::new(&file.path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match format::classify(&name) {
            format::PartitionFile::Segment(_) => {
                seeds.entry("file_header").or_default().push(with_mode(&bytes[..64]));
                seeds.entry("batch").or_default().push(with_mode(&bytes[64..batches_end(&bytes)]));
            }
            format::PartitionFile::Index(_) => seeds.entry("file_header").or_default().push(with_mode(&bytes[..64])),
            format::PartitionFile::State => seeds.entry("state_header").or_default().push(bytes[..64].to_vec()),
            format::PartitionFile::LogStart => seeds.entry("log_start").or_default().push(with_mode(&bytes)),
            _ if name == files::QUEUE_META_FILE => seeds.entry("queue_meta").or_default().push(with_mode(&bytes)),
            _ if name == files::TOPIC_META_FILE => seeds.entry("topic_meta").or_default().push(with_mode(&bytes)),
            _ if name == crate::group::file::GROUP_FILE => {
                let file_bytes = fs::read(dir.path.join("queue").join(&file.path))?;
                for half in 0..2 {
                    let at = crate::group::file::blob_at(half) as usize;
                    let length = format::u32_at(&file_bytes, at) as usize;
                    if length > 0 {
                        seeds.entry("group_state").or_default().push(with_mode(&file_bytes[at..at + 8 + length]));
                    }
                }
            }
            _ => {}
        }
    }
    // Commit records: key and value as the offset store writes them.
    let key = crate::group::offsets::encode_commit_key(&TopicPartition::new("plain", 1));
    let value = crate::group::offsets::encode_commit_value(17, 3, 2, 0x1234);
    seeds.entry("commit").or_default().push([&(key.len() as u16).to_le_bytes()[..], &key, &value].concat());
    // The directory: the queue as it is, and variants.
    let mut directories = vec![[&[0u8][..], &encode_tree(&tree)].concat(), [&[1u8][..], &encode_tree(&tree)].concat()];
    let mut swapped = tree.clone();
    if let Some(segment) = tree.iter().find(|f| f.path.starts_with("topics/compacted/0/") && f.path.ends_with(".log")) {
        swapped.push(TreeFile { path: format!("{}.swap", segment.path), ..segment.clone() });
    }
    directories.push([&[1u8][..], &encode_tree(&swapped)].concat());
    let without_groups: Vec<TreeFile> = tree.iter().filter(|f| !f.path.starts_with("groups/")).cloned().collect();
    directories.push([&[1u8][..], &encode_tree(&without_groups)].concat());
    seeds.insert("directory", directories);
    for (target, inputs) in seeds {
        let target_dir = out.join(target);
        fs::create_dir_all(&target_dir)?;
        for (n, input) in inputs.iter().enumerate() {
            fs::write(target_dir.join(format!("seed-{n:03}")), input)?;
        }
    }
    Ok(())
}

/// Where the run of plausible batches that starts after a segment's header ends.
fn batches_end(segment: &[u8]) -> usize {
    let mut at = FILE_HEADER_BYTES as usize;
    while at + BATCH_HEADER_BYTES as usize <= segment.len() {
        let header = BatchHeader::read(&segment[at..]);
        if !header.is_plausible() || at + header.batch_bytes as usize > segment.len() {
            break;
        }
        at += header.batch_bytes as usize;
    }
    at
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("file_header", file_header),
    ("queue_meta", queue_meta),
    ("log_start", log_start),
    ("topic_meta", topic_meta),
    ("batch", |data| {
        batch(data);
    }),
    ("group_state", group_state),
    ("commit", commit),
    ("state_header", state_header),
    ("directory", |data| {
        directory(data);
    }),
];
