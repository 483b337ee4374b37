//! Damaged, foreign and future files: each gets a clear error or a safe repair, never a panic,
//! and never a wrong record returned.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use streamlog::{Error, Queue, Record, TopicConfig, TopicPartition};

use crate::{TempDir, consumer_from_start};

/// Writes `count` records of 100 bytes to partition 0 of topic "t" and closes the queue.
fn write_log(dir: &Path, count: u32, config: TopicConfig) {
    let queue = Queue::open(dir).unwrap();
    queue.create_topic_with("t", config).unwrap();
    let producer = queue.producer();
    for i in 0..count {
        producer.send("t", Record::new(&value(i)).partition(0)).unwrap();
    }
}

/// Bytes one single-record batch of a `value` takes: batch header, record header, value.
const BATCH_BYTES: u64 = 40 + 24 + 100;

fn value(i: u32) -> Vec<u8> {
    let mut v = format!("record-{i}-").into_bytes();
    v.resize(100, b'.');
    v
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir.join("topics/t/0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn flip_bit(path: &Path, position: u64) {
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, position).unwrap();
    byte[0] ^= 0x10;
    file.write_all_at(&byte, position).unwrap();
}

/// Reads partition 0 from the start: the records read, and the error that stopped it, if any.
fn read_all(queue: &Queue) -> (Vec<Vec<u8>>, Option<Error>) {
    let mut consumer = consumer_from_start(queue, "t", 1);
    let mut values = Vec::new();
    loop {
        match consumer.poll(Duration::from_millis(50)) {
            Ok(records) if records.is_empty() => return (values, None),
            Ok(records) => values.extend(records.iter().map(|r| r.value().to_vec())),
            Err(e) => return (values, Some(e)),
        }
    }
}

#[test]
fn a_flipped_bit_in_the_tail_is_cut_off() {
    let dir = TempDir::new("tail-bit");
    write_log(dir.path(), 100, TopicConfig::new(1));
    let log = &segments(dir.path())[0];
    // Files are allocated ahead of the data; the last record ends at 64 + 100 batches.
    flip_bit(log, 64 + 100 * BATCH_BYTES - 10);
    let queue = Queue::open(dir.path()).unwrap();
    let (values, error) = read_all(&queue);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(values.len(), 99, "the damaged last record is dropped");
    assert!(values.iter().enumerate().all(|(i, v)| *v == value(i as u32)), "the rest is kept");
    // The partition takes writes again, at the offset the cut record had.
    assert_eq!(queue.producer().send("t", Record::new(b"new").partition(0)).unwrap().offset(), 99);
}

#[test]
fn a_flipped_bit_in_the_middle_is_reported() {
    let dir = TempDir::new("middle-bit");
    write_log(dir.path(), 1000, TopicConfig::new(1));
    let log = &segments(dir.path())[0];
    // Record 500 is in the middle, before the last index entry and followed by valid data.
    flip_bit(log, 64 + 500 * BATCH_BYTES + 70);
    let queue = Queue::open(dir.path()).unwrap();
    let (values, error) = read_all(&queue);
    assert!(matches!(error, Some(Error::Corrupt { .. })), "{error:?}");
    assert_eq!(values.len(), 500, "records before the damage are returned, nothing after");
    assert!(values.iter().enumerate().all(|(i, v)| *v == value(i as u32)));
}

#[test]
fn damage_after_the_last_index_entry_with_valid_data_after_it_is_reported() {
    let dir = TempDir::new("late-bit");
    write_log(dir.path(), 1000, TopicConfig::new(1).index_interval_bytes(1 << 20));
    let log = &segments(dir.path())[0];
    flip_bit(log, 64 + 990 * BATCH_BYTES + 70);
    let queue = Queue::open(dir.path()).unwrap();
    let error = queue.offsets(&TopicPartition::new("t", 0)).unwrap_err();
    assert!(matches!(error, Error::Corrupt { position, .. } if position == 64 + 990 * BATCH_BYTES), "{error}");
}

#[test]
fn a_truncated_sealed_segment_is_reported() {
    let dir = TempDir::new("truncated");
    write_log(dir.path(), 200, TopicConfig::new(1).segment_bytes(4096));
    let logs = segments(dir.path());
    assert!(logs.len() > 2);
    let file = OpenOptions::new().write(true).open(&logs[0]).unwrap();
    let length = file.metadata().unwrap().len();
    file.set_len(length.min(4096) - 100).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let error = queue.offsets(&TopicPartition::new("t", 0)).unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains(&logs[0].display().to_string()), "the error names the file: {error}");
}

#[test]
fn a_foreign_file_in_a_partition_directory_is_reported() {
    let dir = TempDir::new("foreign");
    write_log(dir.path(), 10, TopicConfig::new(1));
    fs::write(dir.path().join("topics/t/0/notes.txt"), b"hello").unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let error = queue.producer().send("t", Record::new(b"x").partition(0)).unwrap_err();
    assert!(matches!(&error, Error::ForeignFile { path, .. } if path.ends_with("notes.txt")), "{error}");
}

#[test]
fn a_garbage_segment_is_reported() {
    let dir = TempDir::new("garbage-segment");
    write_log(dir.path(), 10, TopicConfig::new(1));
    fs::write(dir.path().join("topics/t/0/00000000000000000005.log"), vec![0xAB; 4096]).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let error = queue.offsets(&TopicPartition::new("t", 0)).unwrap_err();
    assert!(matches!(error, Error::ForeignFile { .. }), "{error}");
}

#[test]
fn a_future_format_version_is_refused() {
    let dir = TempDir::new("version");
    write_log(dir.path(), 1, TopicConfig::new(1));
    let meta = dir.path().join("streamlog.meta");
    let mut bytes = fs::read(&meta).unwrap();
    bytes[8] = 2;
    fs::write(&meta, &bytes).unwrap();
    assert!(matches!(Queue::open(dir.path()), Err(Error::IncompatibleVersion { found: 2, supported: 1, .. })));
}

#[test]
fn a_future_topic_format_is_refused() {
    let dir = TempDir::new("topic-version");
    write_log(dir.path(), 1, TopicConfig::new(1));
    let meta = dir.path().join("topics/t/topic.meta");
    let mut bytes = fs::read(&meta).unwrap();
    bytes[8] = 7;
    fs::write(&meta, &bytes).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    assert!(matches!(queue.partition_count("t"), Err(Error::IncompatibleVersion { found: 7, .. })));
}

#[test]
fn a_directory_of_something_else_is_refused() {
    let dir = TempDir::new("not-a-queue");
    fs::create_dir_all(dir.path()).unwrap();
    fs::write(dir.path().join("photo.jpg"), b"...").unwrap();
    assert!(matches!(Queue::open(dir.path()), Err(Error::ForeignFile { .. })));
}

#[test]
fn a_lost_or_damaged_index_is_rebuilt() {
    for damage in ["remove", "scribble"] {
        let dir = TempDir::new("index");
        write_log(dir.path(), 2000, TopicConfig::new(1).index_interval_bytes(256));
        let index = dir.path().join("topics/t/0/00000000000000000000.index");
        match damage {
            "remove" => fs::remove_file(&index).unwrap(),
            _ => OpenOptions::new().write(true).open(&index).unwrap().write_all_at(&[0x5A; 64], 64 + 16 * 3).unwrap(),
        }
        let queue = Queue::open(dir.path()).unwrap();
        let tp = TopicPartition::new("t", 0);
        let mut consumer = consumer_from_start(&queue, "t", 1);
        for target in [0u64, 1234, 1999, 77] {
            consumer.seek(&tp, target).unwrap();
            let first = consumer.poll(Duration::from_secs(1)).unwrap().into_iter().next().unwrap();
            assert_eq!((first.offset(), first.value()), (target, value(target as u32).as_slice()), "{damage}");
        }
    }
}
