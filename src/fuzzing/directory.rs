//! The target of whole queue directories: a tree written into a fresh directory, opened, read,
//! maintained and reopened, every record read checked against the seed queue's.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use super::seeds::{SeedRecord, seed_record};
use super::tree::{decode_tree, write_tree};
use super::{FuzzDir, put_crc, split_mode};
use crate::catalog::files;
use crate::log::format;
use crate::{ConsumerConfig, OffsetReset, Queue, QueueOptions, TopicPartition};

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
