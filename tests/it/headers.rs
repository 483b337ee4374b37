//! Files whose checksums hold but whose contents do not fit where they are: a segment copied in
//! from another partition or queue, an older format, a header claiming an impossible capacity,
//! index entries pointing into the file header, and a damaged shared state file. Each gets a
//! typed error naming the file, or is ignored where it is only a hint, never a panic or a
//! record of another log.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use streamlog::{Error, Queue, Record, TopicConfig, TopicPartition};

use crate::{TempDir, consumer_from_start};

fn log_path(dir: &Path, partition: u32, base: u64) -> PathBuf {
    dir.join(format!("topics/t/{partition}/{base:020}.log"))
}

fn index_path(dir: &Path, partition: u32, base: u64) -> PathBuf {
    dir.join(format!("topics/t/{partition}/{base:020}.index"))
}

/// Creates topic "t" with `config` and sends `count` records of 100 bytes to each partition.
fn write_topic(dir: &Path, config: TopicConfig, count: u32) {
    let queue = Queue::open(dir).unwrap();
    let partitions = config.get_partitions();
    queue.create_topic_with("t", config).unwrap();
    let producer = queue.producer();
    for partition in 0..partitions {
        for i in 0..count {
            producer.send("t", Record::new(&[i as u8; 100]).partition(partition)).unwrap();
        }
        // Opens the partition, so that its first segment exists even without records.
        queue.offsets(&TopicPartition::new("t", partition)).unwrap();
    }
}

/// Replaces `to` by a copy of `from`, as a user restoring the wrong backup would.
fn copy_over(from: &Path, to: &Path) {
    let temporary = to.with_extension("copying");
    fs::copy(from, &temporary).unwrap();
    fs::rename(&temporary, to).unwrap();
}

fn assert_corrupt_at(error: &Error, file: &Path, at: u64) {
    match error {
        Error::Corrupt { path, position, .. } => {
            assert_eq!((path.as_path(), *position), (file, at), "{error}");
        }
        other => panic!("expected corruption of {}, got {other}", file.display()),
    }
}

/// Rewrites the header of a segment or index file with `change` applied, checksum included
/// (CRC-32 of bytes 0..32 and 48..60, at 60).
fn rewrite_header(path: &Path, change: impl FnOnce(&mut [u8; 64])) {
    let file = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).unwrap();
    change(&mut header);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[0..32]);
    crc.update(&header[48..60]);
    header[60..64].copy_from_slice(&crc.finalize().to_le_bytes());
    file.write_all_at(&header, 0).unwrap();
}

#[test]
fn a_segment_copied_from_another_partition_is_refused_by_recovery() {
    let dir = TempDir::new("copied-partition");
    write_topic(dir.path(), TopicConfig::new(2), 5);
    copy_over(&log_path(dir.path(), 0, 0), &log_path(dir.path(), 1, 0));
    copy_over(&index_path(dir.path(), 0, 0), &index_path(dir.path(), 1, 0));
    let queue = Queue::open(dir.path()).unwrap();
    assert_eq!(queue.offsets(&TopicPartition::new("t", 0)).unwrap(), (0, 5), "partition 0 is untouched");
    let error = queue.offsets(&TopicPartition::new("t", 1)).unwrap_err();
    assert_corrupt_at(&error, &log_path(dir.path(), 1, 0), 48);
    assert!(error.to_string().contains("partition 0"), "{error}");
}

#[test]
fn a_sealed_segment_copied_from_another_partition_is_refused_while_the_queue_is_open() {
    // Same epoch, so no recovery runs: the check is on every open of a segment.
    let dir = TempDir::new("copied-sealed");
    let config = TopicConfig::new(2).segment_bytes(1024);
    write_topic(dir.path(), config, 30);
    let queue = Queue::open(dir.path()).unwrap();
    assert_eq!(queue.offsets(&TopicPartition::new("t", 1)).unwrap(), (0, 30));
    // Both partitions got the same records, so their segments have the same base offsets.
    copy_over(&log_path(dir.path(), 0, 0), &log_path(dir.path(), 1, 0));
    let other = Queue::open(dir.path()).unwrap();
    let mut consumer = consumer_from_start(&other, "t", 2);
    let error = loop {
        match consumer.poll(Duration::from_millis(50)) {
            Ok(records) => assert!(records.iter().all(|r| r.partition() == 0), "a record of partition 1 was served"),
            Err(error) => break error,
        }
    };
    assert_corrupt_at(&error, &log_path(dir.path(), 1, 0), 48);
}

#[test]
fn a_segment_copied_from_another_queue_is_refused() {
    let (first, second) = (TempDir::new("copied-queue-a"), TempDir::new("copied-queue-b"));
    write_topic(first.path(), TopicConfig::new(1), 5);
    write_topic(second.path(), TopicConfig::new(1), 5);
    for path in [log_path, index_path] {
        copy_over(&path(first.path(), 0, 0), &path(second.path(), 0, 0));
    }
    let queue = Queue::open(second.path()).unwrap();
    let error = queue.offsets(&TopicPartition::new("t", 0)).unwrap_err();
    assert_corrupt_at(&error, &log_path(second.path(), 0, 0), 48);
}

#[test]
fn an_index_copied_from_another_partition_is_rebuilt() {
    // The index only speeds up reads: recovery rebuilds one that belongs to another log.
    let dir = TempDir::new("copied-index");
    write_topic(dir.path(), TopicConfig::new(2).index_interval_bytes(200), 20);
    copy_over(&index_path(dir.path(), 0, 0), &index_path(dir.path(), 1, 0));
    let queue = Queue::open(dir.path()).unwrap();
    let mut consumer = consumer_from_start(&queue, "t", 2);
    let records = crate::read_exactly(&mut consumer, 40);
    assert_eq!(records.iter().filter(|r| r.0 == 1).count(), 20);
}

#[test]
fn files_of_the_previous_format_version_are_refused() {
    let dir = TempDir::new("old-version");
    write_topic(dir.path(), TopicConfig::new(1), 3);
    // A segment of version 5 (no offsets in transactions) in a queue of this version.
    let log = log_path(dir.path(), 0, 0);
    rewrite_header(&log, |header| header[8] = 5);
    let queue = Queue::open(dir.path()).unwrap();
    let error = queue.offsets(&TopicPartition::new("t", 0)).unwrap_err();
    assert!(matches!(&error, Error::IncompatibleVersion { path, found: 5, supported: 6 } if *path == log), "{error}");
    drop(queue);
    // A whole queue of version 5 is refused at the door.
    let meta = dir.path().join("streamlog.meta");
    let mut bytes = fs::read(&meta).unwrap();
    bytes[8] = 5;
    fs::write(&meta, &bytes).unwrap();
    let error = Queue::open(dir.path()).expect_err("an old queue must be refused");
    assert!(matches!(&error, Error::IncompatibleVersion { path, found: 5, supported: 6 } if *path == meta), "{error}");
}

#[test]
fn an_empty_segment_claiming_a_small_capacity_is_refused() {
    let dir = TempDir::new("small-capacity");
    write_topic(dir.path(), TopicConfig::new(1), 0);
    let log = log_path(dir.path(), 0, 0);
    rewrite_header(&log, |header| header[12..16].copy_from_slice(&4096u32.to_le_bytes()));
    let queue = Queue::open(dir.path()).unwrap();
    // A batch larger than the claimed capacity: before the check, this send panicked.
    let error = queue.producer().send("t", Record::new(&[7u8; 8192])).unwrap_err();
    assert_corrupt_at(&error, &log, 12);
    assert_corrupt_at(&queue.offsets(&TopicPartition::new("t", 0)).unwrap_err(), &log, 12);
}

#[test]
fn a_segment_claiming_a_huge_capacity_is_refused() {
    let dir = TempDir::new("huge-capacity");
    write_topic(dir.path(), TopicConfig::new(1), 2);
    let log = log_path(dir.path(), 0, 0);
    rewrite_header(&log, |header| header[12..16].copy_from_slice(&u32::MAX.to_le_bytes()));
    let queue = Queue::open(dir.path()).unwrap();
    assert_corrupt_at(&queue.offsets(&TopicPartition::new("t", 0)).unwrap_err(), &log, 12);
}

/// Writes index entry `n` of `path` (relative offset, position, max timestamp before).
fn write_index_entry(path: &Path, n: u64, relative_offset: u32, position: u32) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    let mut entry = [0u8; 16];
    entry[0..4].copy_from_slice(&relative_offset.to_le_bytes());
    entry[4..8].copy_from_slice(&position.to_le_bytes());
    file.write_all_at(&entry, 64 + n * 16).unwrap();
}

#[test]
fn index_entries_pointing_into_the_file_header_are_ignored() {
    // Before the check, an entry at position 32 made a slice over the header's synced marker
    // (which other processes write) and read it as a batch: "impossible batch header".
    for position in [1, 32, 40, 63] {
        let dir = TempDir::new("index-into-header");
        write_topic(dir.path(), TopicConfig::new(1).segment_bytes(2048).index_interval_bytes(300), 40);
        write_index_entry(&index_path(dir.path(), 0, 0), 0, 0, position);
        let queue = Queue::open(dir.path()).unwrap();
        let mut consumer = consumer_from_start(&queue, "t", 1);
        let records = crate::read_exactly(&mut consumer, 40);
        assert!(records.iter().enumerate().all(|(i, r)| r.1 == i as u64 && r.3 == [i as u8; 100]));
    }
}

#[test]
fn an_index_entry_pointing_into_the_header_is_ignored_while_the_queue_is_open() {
    let dir = TempDir::new("index-into-header-live");
    write_topic(dir.path(), TopicConfig::new(1).segment_bytes(2048).index_interval_bytes(300), 40);
    let queue = Queue::open(dir.path()).unwrap();
    assert_eq!(queue.offsets(&TopicPartition::new("t", 0)).unwrap(), (0, 40));
    // Sealed segment 0 and the active segment both get a bad first entry.
    let tp = TopicPartition::new("t", 0);
    let mut bases: Vec<u64> = fs::read_dir(dir.path().join("topics/t/0"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".index")?.parse().ok())
        .collect();
    bases.sort_unstable();
    assert!(bases.len() > 1, "the test needs a sealed segment");
    // At 32, a fully synced segment's marker complement (0) reads as base offset 0.
    for &base in [bases[0], *bases.last().unwrap()].iter() {
        write_index_entry(&index_path(dir.path(), 0, base), 0, 0, 32);
    }
    for &base in &bases {
        let mut consumer = consumer_from_start(&queue, "t", 1);
        consumer.seek(&tp, base).unwrap();
        let records = crate::read_exactly(&mut consumer, (40 - base) as usize);
        assert_eq!(records[0].1, base);
    }
}

/// Writes `value` over word `word` of both tail slots of partition 0's shared state file.
fn damage_tail(dir: &Path, word: u64, value: u64) {
    let file = OpenOptions::new().write(true).open(dir.join("topics/t/0/state")).unwrap();
    for slot in [64, 128] {
        file.write_all_at(&value.to_le_bytes(), slot + word * 8).unwrap();
    }
}

#[test]
fn offsets_from_a_damaged_state_file_are_refused() {
    let dir = TempDir::new("damaged-state");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    let tp = TopicPartition::new("t", 0);
    for i in 0..3u8 {
        queue.producer().send("t", Record::new(&[i; 10])).unwrap();
    }
    assert_eq!(queue.offsets(&tp).unwrap(), (0, 3));
    let state = dir.path().join("topics/t/0/state");
    // The end offset (word 0): far more records than the active segment holds bytes for.
    damage_tail(dir.path(), 0, 68_000_000_000_000_000);
    let error = queue.offsets(&tp).unwrap_err();
    assert!(matches!(&error, Error::Corrupt { path, .. } if *path == state), "{error}");
    // The active segment's base (word 1) and end offset: a segment that does not exist.
    damage_tail(dir.path(), 1, 1000);
    damage_tail(dir.path(), 0, 1000);
    let error = queue.offsets(&tp).unwrap_err();
    assert!(matches!(&error, Error::Corrupt { path, .. } if *path == state), "{error}");
    // The end position (word 2) and the reserved bytes (word 5), past the segment's capacity.
    damage_tail(dir.path(), 1, 0);
    damage_tail(dir.path(), 0, 3);
    damage_tail(dir.path(), 2, 1 << 40);
    damage_tail(dir.path(), 5, 1 << 40);
    let error = queue.offsets(&tp).unwrap_err();
    assert!(matches!(&error, Error::Corrupt { path, .. } if *path == state), "{error}");
    // Recovery rebuilds the state file when the queue is next opened alone.
    drop(queue);
    assert_eq!(Queue::open(dir.path()).unwrap().offsets(&tp).unwrap(), (0, 3));
}

#[test]
fn an_offset_log_copied_from_another_group_is_refused() {
    let dir = TempDir::new("copied-offset-log");
    write_topic(dir.path(), TopicConfig::new(1), 5);
    let tp = TopicPartition::new("t", 0);
    {
        let queue = Queue::open(dir.path()).unwrap();
        for (group, offset) in [("first", 2), ("second", 4)] {
            let mut consumer = queue.consumer(streamlog::ConsumerConfig::new(group).auto_commit(None)).unwrap();
            consumer.assign(std::slice::from_ref(&tp)).unwrap();
            consumer.commit_offsets(&[(tp.clone(), offset)]).unwrap();
        }
    }
    let offset_log = |group: &str| dir.path().join(format!("groups/{group}/offsets/{:020}.log", 0));
    copy_over(&offset_log("first"), &offset_log("second"));
    let queue = Queue::open(dir.path()).unwrap();
    let consumer = queue.consumer(streamlog::ConsumerConfig::new("second")).unwrap();
    let error = consumer.committed(&tp).expect_err("the copied offset log is refused");
    assert_corrupt_at(&error, &offset_log("second"), 48);
    let consumer = queue.consumer(streamlog::ConsumerConfig::new("first")).unwrap();
    assert_eq!(consumer.committed(&tp).unwrap(), Some(2));
}

#[test]
fn a_damaged_reserved_size_in_the_state_file_is_reported_and_does_not_crash_a_writer() {
    // The state file claims far more of the active segment allocated than its file holds.
    // Believed, it made the writer copy a batch into mapped pages past the end of the file:
    // SIGBUS once the data passed the first megabyte really allocated.
    let dir = TempDir::new("damaged-reserved");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    let tp = TopicPartition::new("t", 0);
    let producer = queue.producer();
    producer.send("t", Record::new(b"first")).unwrap();
    damage_tail(dir.path(), 5, 100 << 20);
    let error = queue.offsets(&tp).unwrap_err();
    assert!(matches!(&error, Error::Corrupt { path, .. } if path.ends_with("topics/t/0/state")), "{error}");
    // Batches below 16 KiB are copied into the mapping; 150 of 10 KB pass the first MiB.
    for i in 0..150u8 {
        producer.send("t", Record::new(&[i; 10_000])).unwrap();
    }
    // The writer believed the file, not the claim, and published a true tail again.
    assert_eq!(queue.offsets(&tp).unwrap(), (0, 151));
    let mut consumer = consumer_from_start(&queue, "t", 1);
    let records = crate::read_exactly(&mut consumer, 151);
    assert!(records[1..].iter().enumerate().all(|(i, r)| r.3 == [i as u8; 10_000]));
}
