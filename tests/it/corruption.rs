//! Damaged, foreign and future files: each gets a clear error or a safe repair, never a panic,
//! and never a wrong record returned.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use streamlog::{Durability, Error, ProducerConfig, Queue, Record, TopicConfig, TopicPartition};

use crate::{TempDir, consumer_from_start};

/// Writes `count` records of 100 bytes to partition 0 of topic "t" and closes the queue.
fn write_log(dir: &Path, count: u32, config: TopicConfig) {
    let queue = crate::open_alone(dir).unwrap();
    queue.create_topic_with("t", config).unwrap();
    let producer = queue.producer();
    for i in 0..count {
        producer.send("t", Record::new(value(i)).partition(0)).unwrap();
    }
}

/// As `write_log`, and then synced: damage to these records is damage to durable data.
fn write_synced_log(dir: &Path, count: u32, config: TopicConfig) {
    let queue = crate::open_alone(dir).unwrap();
    queue.create_topic_with("t", config).unwrap();
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Interval(Duration::from_secs(3600))));
    for i in 0..count {
        producer.send("t", Record::new(value(i)).partition(0)).unwrap();
    }
    producer.flush().unwrap();
}

/// Bytes one single-record batch of a `value` takes: batch header, record header, value.
const BATCH_BYTES: u64 = 52 + 5 + 100;

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
    let queue = crate::open_alone(dir.path()).unwrap();
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
    // Synced: in unsynced records any bad batch is taken for a torn write and cut off.
    write_synced_log(dir.path(), 1000, TopicConfig::new(1));
    let log = &segments(dir.path())[0];
    // Record 500 is in the middle, before the last index entry and followed by valid data.
    flip_bit(log, 64 + 500 * BATCH_BYTES + 70);
    let queue = crate::open_alone(dir.path()).unwrap();
    let (values, error) = read_all(&queue);
    assert!(matches!(error, Some(Error::Corrupt { .. })), "{error:?}");
    assert_eq!(values.len(), 500, "records before the damage are returned, nothing after");
    assert!(values.iter().enumerate().all(|(i, v)| *v == value(i as u32)));
}

#[test]
fn damage_to_synced_data_is_reported_even_past_the_last_index_entry() {
    let dir = TempDir::new("synced-bit");
    {
        let queue = crate::open_alone(dir.path()).unwrap();
        queue.create_topic_with("t", TopicConfig::new(1).index_interval_bytes(1 << 20)).unwrap();
        let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
        for i in 0..1000 {
            producer.send("t", Record::new(value(i)).partition(0)).unwrap();
        }
    }
    flip_bit(&segments(dir.path())[0], 64 + 990 * BATCH_BYTES + 70);
    let queue = crate::open_alone(dir.path()).unwrap();
    let error = queue.offsets(&TopicPartition::new("t", 0)).unwrap_err();
    assert!(matches!(error, Error::Corrupt { position, .. } if position == 64 + 990 * BATCH_BYTES), "{error}");
}

#[test]
fn damage_to_unsynced_data_is_a_torn_tail_and_cut_off() {
    // With Buffered sends nothing was synced, so after a power cut any unsynced page may be
    // missing while later ones survived: recovery keeps the whole batches before the damage.
    let dir = TempDir::new("unsynced-bit");
    write_log(dir.path(), 1000, TopicConfig::new(1).index_interval_bytes(1 << 20));
    flip_bit(&segments(dir.path())[0], 64 + 990 * BATCH_BYTES + 70);
    let queue = crate::open_alone(dir.path()).unwrap();
    assert_eq!(queue.offsets(&TopicPartition::new("t", 0)).unwrap(), (0, 990));
    let (values, error) = read_all(&queue);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(values.len(), 990);
}

#[test]
fn a_checksum_is_checked_when_a_read_starts_inside_a_batch() {
    let dir = TempDir::new("seek-crc");
    {
        let queue = crate::open_alone(dir.path()).unwrap();
        queue.create_topic_with("t", TopicConfig::new(1).index_interval_bytes(64)).unwrap();
        let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Interval(Duration::from_secs(3600))));
        producer.send_batch("t", (0..3).map(|_| Record::new(b"AAAA"))).unwrap();
        // Later records, so that the damage is in the middle of the log (recovery checks synced
        // records only from the last index entry; reads check everything).
        for i in 0..20 {
            producer.send("t", Record::new(value(i))).unwrap();
        }
        producer.flush().unwrap();
    }
    // Each record takes 9 bytes (its value and 5 of framing); the last byte of the batch is
    // the third record's header count, the one before it the end of its value.
    flip_bit(&segments(dir.path())[0], 64 + 52 + 3 * 9 - 2);
    let queue = crate::open_alone(dir.path()).unwrap();
    let tp = TopicPartition::new("t", 0);
    let mut consumer = consumer_from_start(&queue, "t", 1);
    consumer.seek(&tp, 1).unwrap();
    let polled = consumer.poll(Duration::ZERO);
    assert!(
        matches!(polled, Err(Error::Corrupt { .. })),
        "{:?}",
        polled.map(|r| r.iter().map(|r| r.value().to_vec()).collect::<Vec<_>>())
    );
}

#[test]
fn a_damaged_partition_does_not_starve_the_others() {
    let dir = TempDir::new("starve");
    {
        let queue = crate::open_alone(dir.path()).unwrap();
        queue.create_topic_with("t", TopicConfig::new(2).index_interval_bytes(64)).unwrap();
        let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Interval(Duration::from_secs(3600))));
        for i in 0..10 {
            producer.send("t", Record::new(value(i)).partition(0)).unwrap();
            producer.send("t", Record::new(value(i)).partition(1)).unwrap();
        }
        producer.flush().unwrap();
    }
    flip_bit(&segments(dir.path())[0], 64 + 70);
    let queue = crate::open_alone(dir.path()).unwrap();
    let mut consumer = consumer_from_start(&queue, "t", 2);
    let mut from_partition_1 = 0;
    let mut errors = 0;
    for _ in 0..4 {
        match consumer.poll(Duration::ZERO) {
            Ok(records) => from_partition_1 += records.iter().filter(|r| r.partition() == 1).count(),
            Err(Error::Corrupt { .. }) => errors += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(from_partition_1, 10, "partition 1 is read in full despite partition 0");
    assert!(errors > 0, "partition 0's damage is reported once nothing else is left");
}

#[test]
fn a_truncated_sealed_segment_is_reported() {
    let dir = TempDir::new("truncated");
    {
        // Synced sends: every sealed segment is known to be whole, so a short one is damage.
        let queue = crate::open_alone(dir.path()).unwrap();
        queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
        let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
        for i in 0..200 {
            producer.send("t", Record::new(value(i)).partition(0)).unwrap();
        }
    }
    let logs = segments(dir.path());
    assert!(logs.len() > 2);
    let file = OpenOptions::new().write(true).open(&logs[0]).unwrap();
    let length = file.metadata().unwrap().len();
    file.set_len(length.min(4096) - 100).unwrap();
    let queue = crate::open_alone(dir.path()).unwrap();
    let error = queue.offsets(&TopicPartition::new("t", 0)).unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains(&logs[0].display().to_string()), "the error names the file: {error}");
}

#[test]
fn a_foreign_file_in_a_partition_directory_is_reported() {
    let dir = TempDir::new("foreign");
    write_log(dir.path(), 10, TopicConfig::new(1));
    fs::write(dir.path().join("topics/t/0/notes.txt"), b"hello").unwrap();
    let queue = crate::open_alone(dir.path()).unwrap();
    let error = queue.producer().send("t", Record::new(b"x").partition(0)).unwrap_err();
    assert!(matches!(&error, Error::ForeignFile { path, .. } if path.ends_with("notes.txt")), "{error}");
}

#[test]
fn a_garbage_segment_is_reported() {
    let dir = TempDir::new("garbage-segment");
    write_log(dir.path(), 10, TopicConfig::new(1));
    fs::write(dir.path().join("topics/t/0/00000000000000000005.log"), vec![0xAB; 4096]).unwrap();
    let queue = crate::open_alone(dir.path()).unwrap();
    let error = queue.offsets(&TopicPartition::new("t", 0)).unwrap_err();
    assert!(matches!(error, Error::ForeignFile { .. }), "{error}");
}

#[test]
fn a_future_format_version_is_refused() {
    let dir = TempDir::new("version");
    write_log(dir.path(), 1, TopicConfig::new(1));
    let meta = dir.path().join("streamlog.meta");
    let mut bytes = fs::read(&meta).unwrap();
    bytes[8] = 7;
    fs::write(&meta, &bytes).unwrap();
    assert!(matches!(crate::open_alone(dir.path()), Err(Error::IncompatibleVersion { found: 7, supported: 6, .. })));
}

#[test]
fn a_future_topic_format_is_refused() {
    let dir = TempDir::new("topic-version");
    write_log(dir.path(), 1, TopicConfig::new(1));
    let meta = dir.path().join("topics/t/topic.meta");
    let mut bytes = fs::read(&meta).unwrap();
    bytes[8] = 8;
    fs::write(&meta, &bytes).unwrap();
    let queue = crate::open_alone(dir.path()).unwrap();
    assert!(matches!(queue.partition_count("t"), Err(Error::IncompatibleVersion { found: 8, .. })));
}

#[test]
fn a_directory_of_something_else_is_refused() {
    let dir = TempDir::new("not-a-queue");
    fs::create_dir_all(dir.path()).unwrap();
    fs::write(dir.path().join("photo.jpg"), b"...").unwrap();
    assert!(matches!(crate::open_alone(dir.path()), Err(Error::ForeignFile { .. })));
}

#[test]
fn a_lost_or_damaged_index_is_rebuilt() {
    for damage in ["remove", "shorten", "scribble"] {
        let dir = TempDir::new("index");
        write_log(dir.path(), 2000, TopicConfig::new(1).index_interval_bytes(256));
        let index = dir.path().join("topics/t/0/00000000000000000000.index");
        match damage {
            "remove" => fs::remove_file(&index).unwrap(),
            "shorten" => OpenOptions::new().write(true).open(&index).unwrap().set_len(10).unwrap(),
            _ => OpenOptions::new().write(true).open(&index).unwrap().write_all_at(&[0x5A; 64], 64 + 16 * 3).unwrap(),
        }
        let queue = crate::open_alone(dir.path()).unwrap();
        let tp = TopicPartition::new("t", 0);
        let mut consumer = consumer_from_start(&queue, "t", 1);
        for target in [0u64, 1234, 1999, 77] {
            consumer.seek(&tp, target).unwrap();
            let first = consumer.poll(Duration::from_secs(1)).unwrap().into_iter().next().unwrap();
            assert_eq!((first.offset(), first.value()), (target, value(target as u32).as_slice()), "{damage}");
        }
    }
}

/// Makes the last segment look like one a roll published and nothing was appended to: its
/// header alone, and no synced marker. (Cutting the file alone is not that: a background seal
/// may have synced records of it and marked them so, and cutting those is damage to synced
/// data, which recovery rightly reports; whether it did depends on timing.)
pub(crate) fn empty_last_segment(log: &Path) {
    let file = OpenOptions::new().write(true).open(log).unwrap();
    file.set_len(64).unwrap();
    file.write_all_at(&[0u8; 16], 32).unwrap();
}

#[test]
fn a_synced_segment_that_becomes_active_again_opens() {
    // A roll publishes an empty segment; if the append after it fails (a full disk), the empty
    // segment stays last while the one before it is marked fully synced. The partition must
    // open and take appends, not report the synced segment as "damaged".
    let dir = TempDir::new("active-again");
    write_log(dir.path(), 60, TopicConfig::new(1).segment_bytes(4096));
    let logs = segments(dir.path());
    empty_last_segment(logs.last().unwrap());
    let queue = crate::open_alone(dir.path()).unwrap();
    let (_, end) = queue.offsets(&TopicPartition::new("t", 0)).unwrap();
    let (values, error) = read_all(&queue);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(values.len() as u64, end);
    assert_eq!(queue.producer().send("t", Record::new(b"more").partition(0)).unwrap().offset(), end);
}
