//! Compaction against a model (latest value per key, order and offsets kept, tombstones
//! expire), and compaction killed with SIGKILL at random moments.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use streamlog::{CleanupPolicy, ConsumerConfig, Queue, Record, TopicConfig, TopicPartition};

use crate::child::{self, Reaper};
use crate::{Stored, TempDir, read_log};

/// A record as sent: key, value (`None`: a tombstone), timestamp.
type Sent = (Option<u8>, Option<Vec<u8>>, u64);

const DAY_MS: u64 = 24 * 3600 * 1000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn compacted_topic(queue: &Queue) {
    let config = TopicConfig::new(1)
        .segment_bytes(1024)
        .index_interval_bytes(128)
        .cleanup_policy(CleanupPolicy::Compact)
        .min_cleanable_dirty_ratio(0.0)
        .delete_retention_ms(DAY_MS);
    queue.create_topic_with("t", config).unwrap();
}

/// Every record of `t`/0, by offset.
fn read_all(queue: &Queue) -> BTreeMap<u64, Stored> {
    read_log(queue, &TopicPartition::new("t", 0))
}

fn first_from(queue: &Queue, offset: u64) -> Option<u64> {
    let tp = TopicPartition::new("t", 0);
    let mut consumer = queue.consumer(ConsumerConfig::new("seek").auto_commit(None).max_poll_records(1)).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, offset).unwrap();
    if offset >= queue.offsets(&tp).unwrap().1 {
        return None;
    }
    consumer.poll(Duration::from_secs(1)).unwrap().iter().next().map(|r| r.offset())
}

#[derive(Debug, Clone)]
enum Op {
    Send(Vec<Sent>),
    Compact,
    Reopen,
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        prop::option::weighted(0.9, 0u8..8),
        prop::option::weighted(0.85, prop::collection::vec(any::<u8>(), 0..40)),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(key, value, old)| {
            // Tombstones need a key; half the tombstones are older than `delete_retention`.
            let value = if key.is_none() { Some(value.unwrap_or_default()) } else { value };
            (key, value, if old { 1_000 } else { now_ms() })
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(sent(), 1..30).prop_map(Op::Send),
        3 => Just(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn compaction_keeps_the_latest_value_of_every_key(ops in prop::collection::vec(op(), 1..25)) {
        let dir = TempDir::new("compaction-model");
        let mut queue = Queue::open(dir.path()).unwrap();
        compacted_topic(&queue);
        let mut model: Vec<Sent> = Vec::new();
        for op in ops {
            match op {
                Op::Send(records) => {
                    let producer = queue.producer();
                    for (key, value, timestamp) in &records {
                        let key_bytes = key.map(|k| [k]);
                        let record = match value {
                            Some(value) => Record::new(value),
                            None => Record::tombstone(key_bytes.as_ref().unwrap()),
                        };
                        let record = match &key_bytes {
                            Some(k) => record.key(k),
                            None => record,
                        };
                        producer.send("t", record.timestamp(*timestamp)).unwrap();
                    }
                    model.extend(records);
                }
                Op::Compact => {
                    queue.run_maintenance().unwrap();
                }
                Op::Reopen => {
                    drop(queue);
                    queue = Queue::open(dir.path()).unwrap();
                }
            }
            let log = read_all(&queue);
            // Whatever is left is exactly what was sent at that offset.
            for (&offset, (key, value, timestamp)) in &log {
                let (k, v, t) = &model[offset as usize];
                prop_assert_eq!(key.clone(), k.map(|k| vec![k]), "key at {}", offset);
                prop_assert_eq!(value, v, "value at {}", offset);
                prop_assert_eq!(timestamp, t, "timestamp at {}", offset);
            }
            // Unkeyed records all stay; every key's newest record stays, unless it is an old
            // tombstone, in which case the key may be gone entirely.
            let mut latest: HashMap<u8, usize> = HashMap::new();
            for (offset, (key, _, _)) in model.iter().enumerate() {
                match key {
                    Some(k) => {
                        latest.insert(*k, offset);
                    }
                    None => prop_assert!(log.contains_key(&(offset as u64)), "unkeyed record {} was removed", offset),
                }
            }
            for (&key, &offset) in &latest {
                let (_, value, timestamp) = &model[offset];
                let expired = value.is_none() && timestamp + DAY_MS < now_ms();
                let newest_left = log.iter().filter(|(_, (k, _, _))| k.as_deref() == Some(&[key][..])).map(|(&o, _)| o).max();
                if expired {
                    prop_assert!(newest_left.is_none() || newest_left == Some(offset as u64), "key {}: {:?}", key, newest_left);
                } else {
                    prop_assert_eq!(newest_left, Some(offset as u64), "key {} lost its newest record", key);
                }
            }
            // A read from a removed offset starts at the next record left.
            let end = model.len() as u64;
            for from in [0, end / 3, end / 2, end.saturating_sub(1)] {
                let expected = log.range(from..).next().map(|(&o, _)| o);
                prop_assert_eq!(first_from(&queue, from), expected, "reading from {}", from);
            }
        }
    }
}

#[test]
fn compaction_killed_at_random_moments_loses_no_key() {
    let dir = TempDir::new("compaction-crash");
    std::fs::create_dir_all(dir.path()).unwrap();
    compacted_topic(&Queue::open(dir.path()).unwrap());
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut round_start = 0u64;
    for round in 0..12 {
        let mut process = child::spawn("compact", &[dir.path().display().to_string(), round_start.to_string()]);
        let _reaper = Reaper(vec![process.id()]);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 250));
        process.kill().unwrap();
        process.wait().unwrap();
        // Every key's newest value reads back, and nothing is read twice or out of order.
        let queue = Queue::open(dir.path()).unwrap();
        let log = read_all(&queue);
        let mut newest: HashMap<Vec<u8>, (u64, Vec<u8>)> = HashMap::new();
        for (&offset, (key, value, _)) in &log {
            let (key, value) = (key.clone().unwrap(), value.clone().unwrap());
            let seq = u64::from_le_bytes(value[..8].try_into().unwrap());
            assert_eq!(seq, offset, "round {round}: record {offset} holds {seq}");
            newest.insert(key, (offset, value));
        }
        // Each key is written with every sequence number congruent to it: its newest record
        // is the last such offset below the end.
        let end = queue.offsets(&TopicPartition::new("t", 0)).unwrap().1;
        for k in 0..16u64 {
            let expected = (0..end).rev().find(|s| s % 16 == k);
            let found = newest.get(k.to_le_bytes().as_slice()).map(|(o, _)| *o);
            assert_eq!(found, expected, "round {round}: key {k}");
        }
        round_start = end;
    }
    // Whatever the kills left half-done, a compaction run to the end cleans the whole log.
    let queue = Queue::open(dir.path()).unwrap();
    queue.run_maintenance().unwrap();
    let left = read_all(&queue).len();
    assert!(left < round_start as usize / 4, "compaction left {left} of {round_start} records");
}

#[test]
fn a_leftover_swap_of_a_segment_retention_deleted_is_dropped() {
    let dir = TempDir::new("compaction-orphan-swap");
    let queue = Queue::open(dir.path()).unwrap();
    compacted_topic(&queue);
    let producer = queue.producer();
    for i in 0..300u32 {
        producer.send("t", Record::new(&[7u8; 40]).key(&(i % 5).to_le_bytes())).unwrap();
    }
    queue.alter_topic("t", |c| c.cleanup_policy(CleanupPolicy::DeleteAndCompact).retention_bytes(1)).unwrap();
    queue.run_maintenance().unwrap();
    let tp = TopicPartition::new("t", 0);
    let (start, end) = queue.offsets(&tp).unwrap();
    assert!(start > 0);
    drop((producer, queue));
    // As if a compaction of the first segment was interrupted before retention deleted it.
    let partition = dir.path().join("topics/t/0");
    let active = std::fs::read_dir(&partition)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".log"))
        .unwrap();
    std::fs::copy(partition.join(&active), partition.join("00000000000000000000.log.swap")).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    assert_eq!(queue.offsets(&tp).unwrap(), (start, end));
    assert!(!partition.join("00000000000000000000.log").exists());
    assert!(!partition.join("00000000000000000000.log.swap").exists());
}

#[test]
fn a_compacted_batch_never_outgrows_what_recovery_accepts() {
    let dir = TempDir::new("compaction-big-batch");
    let queue = Queue::open(dir.path()).unwrap();
    let config = TopicConfig::new(1)
        .segment_bytes(128 << 20)
        .max_record_bytes(64 << 20)
        .cleanup_policy(CleanupPolicy::Compact)
        .min_cleanable_dirty_ratio(0.0);
    queue.create_topic_with("t", config).unwrap();
    let producer = queue.producer();
    producer.send("t", Record::new(b"old").key(b"a")).unwrap();
    producer.send("t", Record::new(b"new").key(b"a")).unwrap();
    for _ in 0..240 {
        producer.send("t", Record::new(&[1u8; 1000])).unwrap();
    }
    let big = vec![2u8; (64 << 20) - 25];
    producer.send("t", Record::new(&big).key(b"b")).unwrap();
    producer.send("t", Record::new(&big).key(b"c")).unwrap();
    assert!(queue.run_maintenance().unwrap() > 0);
    drop((producer, queue));
    let queue = Queue::open(dir.path()).unwrap();
    assert_eq!(queue.offsets(&TopicPartition::new("t", 0)).unwrap(), (0, 244));
}

#[test]
fn a_background_pass_stops_soon_after_the_queue_is_dropped() {
    use streamlog::QueueOptions;
    let dir = TempDir::new("compaction-drop");
    {
        let queue = Queue::open_with(dir.path(), QueueOptions::new().maintenance_interval(Duration::from_secs(3600))).unwrap();
        let config =
            TopicConfig::new(1).segment_bytes(1 << 20).cleanup_policy(CleanupPolicy::Compact).min_cleanable_dirty_ratio(0.0);
        queue.create_topic_with("t", config).unwrap();
        let producer = queue.producer();
        let value = vec![5u8; 1000];
        for i in 0..200_000u32 {
            producer.send("t", Record::new(&value).key(&(i % 1000).to_le_bytes())).unwrap();
        }
    }
    let queue = Queue::open_with(dir.path(), QueueOptions::new().maintenance_interval(Duration::from_millis(1))).unwrap();
    let partition = dir.path().join("topics/t/0");
    let cleaning =
        || std::fs::read_dir(&partition).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("cleaning"));
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    while !cleaning() {
        assert!(std::time::Instant::now() < give_up, "background compaction never started");
    }
    let dropped = std::time::Instant::now();
    drop(queue);
    // The pass gives up after the segment it is on: soon, no handle is left anywhere (each holds a shared flock on
    // the directory).
    let users = std::fs::File::open(dir.path()).unwrap();
    while users.try_lock().is_err() {
        assert!(dropped.elapsed() < Duration::from_secs(1), "a background pass outlived the queue");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!cleaning());
}
