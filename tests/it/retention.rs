//! Retention by size and by time, readers in another process holding deleted records, the
//! reset of consumers left below the log start, background maintenance, and `offset_for_time`
//! against a brute-force scan.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use streamlog::{CleanupPolicy, ConsumerConfig, Error, OffsetReset, Queue, QueueOptions, Record, TopicConfig, TopicPartition};

use crate::TempDir;
use crate::child::{self, Reaper};

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("topics/t/0"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".log"))
        .count()
}

fn fill(queue: &Queue, count: u32, timestamp_ms: Option<u64>) {
    let producer = queue.producer();
    for i in 0..count {
        let value = i.to_le_bytes().repeat(50);
        let record = Record::new(&value);
        producer.send("t", timestamp_ms.map_or(record.clone(), |t| record.timestamp(t))).unwrap();
    }
}

#[test]
fn retention_by_size_deletes_the_oldest_segments_and_keeps_offsets() {
    let dir = TempDir::new("retention-size");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
    fill(&queue, 2000, None);
    let tp = TopicPartition::new("t", 0);
    let before = segment_files(dir.path());
    assert!(before > 20, "{before} segments");
    assert_eq!(queue.run_maintenance().unwrap(), 0, "no limit set: nothing goes");
    // Retention counts the bytes of record batches: 15 batches of 264 bytes fill a segment, and
    // the active one holds 5, so 16 KiB takes it and four sealed segments.
    queue.alter_topic("t", |c| c.retention_bytes(16 << 10)).unwrap();
    let deleted = queue.run_maintenance().unwrap();
    assert_eq!(segment_files(dir.path()), 5, "deleted {deleted} of {before}");
    let (start, end) = queue.offsets(&tp).unwrap();
    assert!(start > 0 && end == 2000, "{start}..{end}");
    // Offsets are not renumbered: the first record left is the one sent as number `start`.
    let mut consumer =
        queue.consumer(ConsumerConfig::new("r").auto_commit(None).auto_offset_reset(OffsetReset::Earliest)).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, 0).unwrap();
    let records = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(records.missed(), &[(tp.clone(), start)]);
    let first = records.iter().next().unwrap();
    assert_eq!((first.offset(), first.value()), (start, (start as u32).to_le_bytes().repeat(50).as_slice()));
    // A consumer that does not reset is told where the log is now.
    let mut strict = queue.consumer(ConsumerConfig::new("s").auto_commit(None).auto_offset_reset(OffsetReset::None)).unwrap();
    strict.assign(std::slice::from_ref(&tp)).unwrap();
    strict.seek(&tp, 1).unwrap();
    assert!(matches!(strict.poll(Duration::ZERO), Err(Error::OffsetOutOfRange { start: s, .. }) if s == start));
    // The start survives reopening (recovery finds the first segment left).
    drop((consumer, strict, queue));
    assert_eq!(Queue::open(dir.path()).unwrap().offsets(&tp).unwrap(), (start, 2000));
}

#[test]
fn retention_by_time_spares_the_active_segment_and_compacted_topics() {
    let dir = TempDir::new("retention-time");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096).retention_ms(3_600_000)).unwrap();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    fill(&queue, 500, Some(now_ms - 2 * 3_600_000));
    let old_end = queue.offsets(&TopicPartition::new("t", 0)).unwrap().1;
    queue.alter_topic("t", |c| c.cleanup_policy(CleanupPolicy::Compact)).unwrap();
    assert_eq!(queue.run_maintenance().unwrap(), 0, "compacted topics are not deleted by age");
    queue.alter_topic("t", |c| c.cleanup_policy(CleanupPolicy::Delete)).unwrap();
    assert!(queue.run_maintenance().unwrap() > 0);
    // Everything was old, but the active segment stays.
    assert_eq!(segment_files(dir.path()), 1);
    let (start, end) = queue.offsets(&TopicPartition::new("t", 0)).unwrap();
    assert!(start > 0 && end == old_end);
    fill(&queue, 200, None);
    let files = segment_files(dir.path());
    queue.run_maintenance().unwrap();
    assert!(segment_files(dir.path()) >= files - 1, "recent records were deleted");
}

#[test]
fn background_maintenance_runs_in_one_process() {
    let dir = TempDir::new("retention-background");
    let queue = Queue::open_with(dir.path(), QueueOptions::new().maintenance_interval(Duration::from_millis(20))).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096).retention_bytes(4 << 10)).unwrap();
    fill(&queue, 1000, None);
    let give_up = Instant::now() + Duration::from_secs(20);
    while segment_files(dir.path()) > 2 {
        assert!(Instant::now() < give_up, "the background never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_reader_in_another_process_keeps_records_whose_files_were_deleted() {
    let dir = TempDir::new("retention-reader");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
    fill(&queue, 1000, None);
    let mut reader = child::spawn("hold", &[dir.path().display().to_string(), "1000".into()]);
    let _reaper = Reaper(vec![reader.id()]);
    let mut lines = BufReader::new(reader.stdout.take().unwrap()).lines();
    // The test harness of the child prints lines of its own around the role's.
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l == "held"));
    queue.alter_topic("t", |c| c.retention_bytes(1)).unwrap();
    assert!(queue.run_maintenance().unwrap() > 10);
    assert_eq!(segment_files(dir.path()), 1);
    writeln!(reader.stdin.take().unwrap(), "go").unwrap();
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l == "intact"), "the reader found damage");
    lines.for_each(drop);
    assert!(reader.wait().unwrap().success());
}

/// `(offset, timestamp)` of every record, for the brute-force answer.
fn brute_force(records: &[(u64, u64)], start: u64, t: u64) -> Option<u64> {
    records.iter().find(|&&(offset, timestamp)| offset >= start && timestamp >= t).map(|&(offset, _)| offset)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn offset_for_time_matches_a_scan(
        timestamps in prop::collection::vec(0u64..10_000, 1..400),
        probes in prop::collection::vec(0u64..10_500, 1..20),
        retain_bytes in prop::option::of(1u64..4),
    ) {
        let dir = TempDir::new("retention-time-index");
        let queue = Queue::open(dir.path()).unwrap();
        queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(2048).index_interval_bytes(256)).unwrap();
        let producer = queue.producer();
        let mut sent = Vec::new();
        for (i, &t) in timestamps.iter().enumerate() {
            let meta = producer.send("t", Record::new(&[i as u8; 60]).timestamp(t)).unwrap();
            sent.push((meta.offset(), t));
        }
        if let Some(segments) = retain_bytes {
            queue.alter_topic("t", |c| c.retention_bytes(segments << 11)).unwrap();
            queue.run_maintenance().unwrap();
        }
        let tp = TopicPartition::new("t", 0);
        let start = queue.offsets(&tp).unwrap().0;
        for t in probes {
            prop_assert_eq!(queue.offset_for_time(&tp, t).unwrap(), brute_force(&sent, start, t), "t = {}", t);
        }
    }
}

fn quiet(dir: &Path) -> Queue {
    Queue::open_with(dir, QueueOptions::new().maintenance_interval(Duration::from_secs(3600))).unwrap()
}

#[test]
fn a_consumer_resuming_below_the_log_start_is_told_what_it_missed() {
    let dir = TempDir::new("retention-missed-commit");
    let queue = quiet(dir.path());
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
    fill(&queue, 2000, None);
    let tp = TopicPartition::new("t", 0);
    let config = ConsumerConfig::new("g").auto_commit(None).auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = queue.consumer(config.clone()).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.commit_offsets(&[(tp.clone(), 5)]).unwrap();
    drop(consumer);
    queue.alter_topic("t", |c| c.retention_bytes(16 << 10)).unwrap();
    queue.run_maintenance().unwrap();
    let start = queue.offsets(&tp).unwrap().0;
    assert!(start > 5);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.subscribe(&["t"]).unwrap();
    let records = consumer.poll(Duration::from_secs(5)).unwrap();
    assert_eq!(records.iter().next().unwrap().offset(), start);
    assert_eq!(records.missed(), &[(tp, start - 5)]);
}

#[test]
fn a_reader_racing_retention_resets_instead_of_failing() {
    let dir = TempDir::new("retention-race");
    let queue = quiet(dir.path());
    let other = quiet(dir.path());
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
    let tp = TopicPartition::new("t", 0);
    for _ in 0..40 {
        fill(&queue, 400, None);
        let config = ConsumerConfig::new("r").auto_commit(None).auto_offset_reset(OffsetReset::Earliest).max_poll_records(50);
        let mut consumer = other.consumer(config).unwrap();
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        consumer.seek_to_beginning(&tp).unwrap();
        let maintainer = queue.clone();
        let retention = std::thread::spawn(move || {
            maintainer.alter_topic("t", |c| c.retention_bytes(1)).unwrap();
            maintainer.run_maintenance().unwrap();
            maintainer.alter_topic("t", |c| c.retention_bytes(u64::MAX)).unwrap();
        });
        for _ in 0..10 {
            consumer.poll(Duration::ZERO).unwrap();
        }
        retention.join().unwrap();
    }
}

#[test]
fn sync_sends_work_after_another_process_deleted_segments() {
    let dir = TempDir::new("retention-sync");
    {
        let queue = quiet(dir.path());
        queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
        fill(&queue, 400, None);
    }
    let tp = TopicPartition::new("t", 0);
    let producer_side = quiet(dir.path());
    let maintainer = quiet(dir.path());
    producer_side.offsets(&tp).unwrap();
    maintainer.alter_topic("t", |c| c.retention_bytes(12 << 10)).unwrap();
    assert!(maintainer.run_maintenance().unwrap() > 0);
    let sync = producer_side.producer_with(streamlog::ProducerConfig::new().durability(streamlog::Durability::Sync));
    for _ in 0..3 {
        sync.send("t", Record::new(b"x")).unwrap();
    }
    assert_eq!(producer_side.offsets(&tp).unwrap().1, 403);
}

#[test]
fn maintenance_does_not_keep_every_segment_mapped() {
    let dir = TempDir::new("retention-fds");
    {
        let queue = quiet(dir.path());
        queue.create_topic_with("t", TopicConfig::new(4).segment_bytes(4096)).unwrap();
        let producer = queue.producer();
        for i in 0..16_000u32 {
            producer.send("t", Record::new(i.to_le_bytes().repeat(50)).partition(i % 4)).unwrap();
        }
    }
    let descriptors = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let queue = quiet(dir.path());
    let before = descriptors();
    queue.run_maintenance().unwrap();
    // Four partitions' state files and active segments, not two descriptors for each of the
    // hundreds of sealed segments (other tests running meanwhile open some too).
    assert!(descriptors() < before + 300, "{before} descriptors before, {} after", descriptors());
}
