//! Disk space: sealed segments give back what was reserved past their data, and
//! `retention_bytes` counts the bytes of records, not the space reserved for them.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use streamlog::{ConsumerConfig, OffsetReset, Queue, Record, TopicConfig, TopicPartition};

use crate::TempDir;

/// Bytes on disk (allocated blocks) of a partition's segment files, and how many segments.
fn disk_usage(partition_dir: &std::path::Path) -> (u64, u64) {
    let (mut bytes, mut segments) = (0, 0);
    for entry in std::fs::read_dir(partition_dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") || name.ends_with(".index") {
            bytes += entry.metadata().unwrap().blocks() * 512;
            segments += u64::from(name.ends_with(".log"));
        }
    }
    (bytes, segments)
}

fn read_values(queue: &Queue, count: usize) -> Vec<Vec<u8>> {
    let config = ConsumerConfig::new("r").auto_commit(None).auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = queue.consumer(config.max_poll_records(count)).unwrap();
    consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
    let mut values = Vec::new();
    while values.len() < count {
        let records = consumer.poll(Duration::from_secs(5)).unwrap();
        assert!(!records.is_empty(), "only {} of {count} records", values.len());
        values.extend(records.iter().map(|r| r.value().to_vec()));
    }
    values
}

#[test]
fn many_small_sealed_segments_take_about_their_data_on_disk() {
    let dir = TempDir::new("space-sealed");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(16 << 10)).unwrap();
    // A reader whose mappings were made before the segments were sealed.
    let early = queue.clone();
    let producer = queue.producer();
    let values: Vec<Vec<u8>> = (0..2000u32).map(|i| i.to_le_bytes().repeat(250)).collect();
    producer.send("t", Record::new(&values[0])).unwrap();
    assert_eq!(read_values(&early, 1), values[..1]);
    for value in &values[1..] {
        producer.send("t", Record::new(value)).unwrap();
    }
    // Dropping the queue waits for the background work that follows each roll.
    drop((producer, queue));
    assert_eq!(read_values(&early, values.len()), values, "the data changed");
    drop(early);

    let data: u64 = values.iter().map(|v| v.len() as u64).sum();
    let (used, segments) = disk_usage(&dir.path().join("topics/t/0"));
    assert!(segments > 100, "{segments} segments");
    // A record batch is its value and some 64 bytes more; each sealed segment keeps the pages
    // its data touches plus one, and one page of index; the active segment keeps its
    // reservation (a MiB of log, 64 KiB of index).
    let most = data + data / 10 + segments * 3 * 4096 + (1 << 20) + (64 << 10);
    assert!(used <= most, "{used} bytes on disk for {data} bytes of records in {segments} segments (at most {most})");
    // Reopening (which recovers, since no handle is left) reads every record back.
    let queue = Queue::open(dir.path()).unwrap();
    assert_eq!(read_values(&queue, values.len()), values);
}

#[test]
fn retention_bytes_keeps_about_that_many_bytes_of_records() {
    let dir = TempDir::new("space-retention");
    let queue = Queue::open(dir.path()).unwrap();
    let limit = 64 << 10;
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096).retention_bytes(limit)).unwrap();
    let producer = queue.producer();
    let value = [3u8; 200];
    for _ in 0..2000 {
        producer.send("t", Record::new(&value)).unwrap();
    }
    assert!(queue.run_maintenance().unwrap() > 0);
    let (start, end) = queue.offsets(&TopicPartition::new("t", 0)).unwrap();
    assert_eq!(end, 2000);
    // Each record is one batch of 264 bytes, 200 of them its value: the log keeps at least the
    // limit in batches (about 250 records), and less than one segment (4 KiB) more.
    let kept = (end - start) * value.len() as u64;
    assert!(kept <= limit && kept * 10 >= limit * 7, "{kept} bytes of values kept with a limit of {limit}");
}
