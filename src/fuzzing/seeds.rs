//! The seed queue (a real queue whose every record is known) and the seed inputs made from it
//! for every target.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

use super::FuzzDir;
use super::tree::{TreeFile, encode_tree, read_tree};
use crate::catalog::files;
use crate::log::format::{self, BATCH_HEADER_BYTES, BatchHeader, FILE_HEADER_BYTES};
use crate::{CleanupPolicy, Compression, ConsumerConfig, OffsetReset, Queue, QueueOptions, Record, TopicConfig, TopicPartition};

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
        ("squeezed", TopicConfig::new(1).segment_bytes(1024).compression(Compression::Lz4).retention_ms(u64::MAX), 30),
    ]
}

/// Records of a compressed seed topic are sent this many at a time (only batches compress).
const SEED_BATCH: u64 = 6;

/// The record `seed` describes, with its timestamp.
fn seed_as_record(seed: SeedRecord) -> Record<'static> {
    let SeedRecord { key, value, headers, timestamp_ms } = seed;
    let mut record = match value {
        Some(value) => Record::new(value),
        None => Record::tombstone(key.clone().unwrap_or_default()),
    };
    if let Some(key) = key {
        record = record.key(key);
    }
    for (name, value) in headers {
        record = record.header(name, value);
    }
    record.timestamp(timestamp_ms)
}

/// Makes a real queue in `dir` that `directory` accepts as its origin: the seed topics with
/// the seed records (several segments each), maintenance run (retention and compaction), and a
/// consumer group that subscribed and committed. Returns the queue's tree.
pub fn write_seed_queue(dir: &Path) -> crate::Result<Vec<TreeFile>> {
    let queue = Queue::open_with(dir, QueueOptions::new().maintenance_interval(Duration::from_secs(3600)))?;
    let producer = queue.producer();
    for (name, config, count) in seed_topics() {
        let (partitions, compresses) = (config.partitions, config.compression != Compression::None);
        queue.create_topic_with(name, config)?;
        for partition in 0..partitions {
            let records: Vec<Record<'static>> = (0..count).map(|offset| seed_as_record(seed_record(partition, offset))).collect();
            if compresses {
                for chunk in records.chunks(SEED_BATCH as usize) {
                    producer.send_batch(name, chunk.iter().map(|r| r.clone().partition(partition)))?;
                }
            } else {
                for record in records {
                    producer.send(name, record.partition(partition))?;
                }
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
