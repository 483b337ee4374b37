//! Topic administration seen from other handles (as other processes hold them): changed
//! settings, added partitions, deleted and recreated topics.

use std::time::{Duration, Instant};

use streamlog::{CleanupPolicy, ConsumerConfig, Error, OffsetReset, Queue, QueueOptions, Record, TopicConfig, TopicPartition};

use crate::TempDir;
use crate::child::{self, Reaper};

#[test]
fn every_setting_reads_back_as_last_set_from_another_handle() {
    let dir = TempDir::new("admin-read-back");
    let queue = Queue::open(dir.path()).unwrap();
    let other = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 3).unwrap();
    let defaults = other.topic_config("t").unwrap();
    assert_eq!(defaults, TopicConfig::new(3));
    queue
        .alter_topic("t", |c| {
            c.segment_bytes(1 << 20)
                .segment_ms(60_000)
                .max_record_bytes(4096)
                .index_interval_bytes(512)
                .retention_ms(120_000)
                .retention_bytes(1 << 30)
                .cleanup_policy(CleanupPolicy::DeleteAndCompact)
                .min_compaction_lag_ms(5_000)
                .delete_retention_ms(7_000)
                .min_cleanable_dirty_ratio(0.25)
        })
        .unwrap();
    queue.add_partitions("t", 5).unwrap();
    let seen = other.topic_config("t").unwrap();
    assert_eq!(seen.get_partitions(), 5);
    assert_eq!((seen.get_segment_bytes(), seen.get_segment_ms()), (1 << 20, 60_000));
    assert_eq!((seen.get_max_record_bytes(), seen.get_index_interval_bytes()), (4096, 512));
    assert_eq!((seen.get_retention_ms(), seen.get_retention_bytes()), (120_000, 1 << 30));
    assert_eq!(seen.get_cleanup_policy(), CleanupPolicy::DeleteAndCompact);
    assert_eq!((seen.get_min_compaction_lag_ms(), seen.get_delete_retention_ms()), (5_000, 7_000));
    assert_eq!(seen.get_min_cleanable_dirty_ratio(), 0.25);
    assert_eq!(defaults.get_retention_bytes(), u64::MAX, "the default sets no size limit");
}

#[test]
fn altered_settings_persist_and_reach_every_handle() {
    let dir = TempDir::new("admin-alter");
    let queue = Queue::open(dir.path()).unwrap();
    let other = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("users", TopicConfig::new(2).cleanup_policy(CleanupPolicy::Compact)).unwrap();
    assert_eq!(other.topic_config("users").unwrap().get_cleanup_policy(), CleanupPolicy::Compact);
    queue.alter_topic("users", |c| c.retention_ms(3_600_000).cleanup_policy(CleanupPolicy::DeleteAndCompact)).unwrap();
    let seen = other.topic_config("users").unwrap();
    assert_eq!((seen.get_retention_ms(), seen.get_cleanup_policy()), (3_600_000, CleanupPolicy::DeleteAndCompact));
    queue.alter_topic("users", |c| c.segment_bytes(4096)).unwrap();
    assert!(matches!(queue.alter_topic("users", |_| TopicConfig::new(3)), Err(Error::InvalidConfig(_))));
    assert!(matches!(queue.alter_topic("nope", |c| c), Err(Error::UnknownTopic(_))));
    drop((queue, other));
    let reopened = Queue::open(dir.path()).unwrap();
    assert_eq!(
        reopened.topic_config("users").unwrap(),
        TopicConfig::new(2).retention_ms(3_600_000).cleanup_policy(CleanupPolicy::DeleteAndCompact).segment_bytes(4096)
    );
}

#[test]
fn a_smaller_segment_size_applies_from_the_next_segment() {
    let dir = TempDir::new("admin-segment");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(1 << 20)).unwrap();
    let producer = queue.producer();
    producer.send("t", Record::new(&[1u8; 100])).unwrap();
    queue.alter_topic("t", |c| c.segment_bytes(1024)).unwrap();
    for _ in 0..50 {
        producer.send("t", Record::new(&[2u8; 100])).unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("topics/t/0"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".log"));
    assert!(segments.count() > 3, "segments did not roll at the new size");
}

#[test]
fn added_partitions_are_seen_by_every_handle_and_group() {
    let dir = TempDir::new("admin-add");
    let queue = Queue::open(dir.path()).unwrap();
    let other = Queue::open(dir.path()).unwrap();
    queue.create_topic("orders", 2).unwrap();
    let config = ConsumerConfig::new("g").auto_commit(None).auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = other.consumer(config).unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    consumer.poll(Duration::from_millis(20)).unwrap();
    assert_eq!(consumer.assignment().len(), 2);
    queue.add_partitions("orders", 5).unwrap();
    assert_eq!(other.partition_count("orders").unwrap(), 5);
    other.producer().send("orders", Record::new(b"to the new one").partition(4)).unwrap();
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let records = consumer.poll(Duration::from_millis(20)).unwrap();
        if records.iter().any(|r| r.partition() == 4) {
            break;
        }
        assert!(Instant::now() < give_up, "the new partition was never consumed: {:?}", consumer.assignment());
    }
    assert_eq!(consumer.assignment().len(), 5);
    assert!(matches!(queue.add_partitions("orders", 5), Err(Error::InvalidConfig(_))));
}

#[test]
fn a_deleted_topic_fails_its_users_and_its_name_starts_afresh() {
    let dir = TempDir::new("admin-delete");
    let queue = Queue::open(dir.path()).unwrap();
    let other = Queue::open(dir.path()).unwrap();
    queue.create_topic("orders", 1).unwrap();
    let producer = other.producer();
    for i in 0..10u8 {
        producer.send("orders", Record::new(&[i])).unwrap();
    }
    let tp = TopicPartition::new("orders", 0);
    let mut reader = other.consumer(ConsumerConfig::new("g").auto_commit(None).auto_offset_reset(OffsetReset::Earliest)).unwrap();
    reader.assign(std::slice::from_ref(&tp)).unwrap();
    let held = reader.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(held.len(), 10);
    reader.commit().unwrap();

    queue.delete_topic("orders").unwrap();
    assert!(matches!(producer.send("orders", Record::new(b"late")), Err(Error::UnknownTopic(_))));
    assert!(matches!(reader.poll(Duration::from_millis(10)), Err(Error::UnknownTopic(_))));
    assert!(reader.assignment().is_empty());
    assert!(matches!(queue.delete_topic("orders"), Err(Error::UnknownTopic(_))));
    // Records already returned stay readable: their files were unlinked, not shortened.
    assert_eq!(held.iter().map(|r| r.value()[0]).collect::<Vec<_>>(), (0..10).collect::<Vec<u8>>());

    queue.create_topic("orders", 1).unwrap();
    producer.send("orders", Record::new(b"fresh")).unwrap();
    assert_eq!(other.offsets(&tp).unwrap(), (0, 1));
    // The old topic's committed offset does not apply to the new one.
    let mut fresh = other.consumer(ConsumerConfig::new("g").auto_commit(None).auto_offset_reset(OffsetReset::Earliest)).unwrap();
    assert_eq!(fresh.committed(&tp).unwrap(), None);
    fresh.assign(&[tp]).unwrap();
    let records = fresh.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(records.iter().map(|r| r.value().to_vec()).collect::<Vec<_>>(), [b"fresh".to_vec()]);
}

#[test]
fn a_pattern_subscription_follows_topics_created_and_deleted_anywhere() {
    let dir = TempDir::new("admin-pattern");
    let queue = Queue::open(dir.path()).unwrap();
    let other = Queue::open(dir.path()).unwrap();
    queue.create_topic("orders-eu", 1).unwrap();
    queue.create_topic("payments", 1).unwrap();
    let mut consumer =
        queue.consumer(ConsumerConfig::new("g").auto_commit(None).auto_offset_reset(OffsetReset::Earliest)).unwrap();
    consumer.subscribe_pattern("orders-.*").unwrap();
    assert!(matches!(consumer.subscribe_pattern("orders-("), Err(Error::InvalidPattern { .. })));
    // Valid only once anchored as `^(?:a)|(b)$`, which would match any name starting with `a`.
    assert!(matches!(consumer.subscribe_pattern("a)|(b"), Err(Error::InvalidPattern { .. })));
    other.create_topic("orders-us", 2).unwrap();
    other.create_topic("xorders-us", 1).unwrap();
    let give_up = Instant::now() + Duration::from_secs(20);
    let topics = |consumer: &streamlog::Consumer| {
        let mut topics: Vec<String> = consumer.assignment().iter().map(|tp| tp.topic().to_owned()).collect();
        topics.dedup();
        topics
    };
    while topics(&consumer) != ["orders-eu", "orders-us"] {
        assert!(Instant::now() < give_up, "{:?}", consumer.assignment());
        let _ = consumer.poll(Duration::from_millis(10));
    }
    assert_eq!(consumer.assignment().len(), 3);
    other.delete_topic("orders-eu").unwrap();
    while topics(&consumer) != ["orders-us"] {
        assert!(Instant::now() < give_up, "{:?}", consumer.assignment());
        let _ = consumer.poll(Duration::from_millis(10));
    }
}

#[test]
fn deleting_a_topic_under_live_processes_fails_them_cleanly() {
    use std::io::{BufRead, BufReader};
    let dir = TempDir::new("admin-delete-live");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("live", TopicConfig::new(1).segment_bytes(4096)).unwrap();
    let roles = ["send", "poll", "send"];
    let mut children: Vec<_> = roles
        .iter()
        .map(|role| child::spawn("until-gone", &[dir.path().display().to_string(), "live".into(), (*role).into()]))
        .collect();
    let _reaper = Reaper(children.iter().map(|c| c.id()).collect());
    let mut outputs: Vec<_> = children.iter_mut().map(|c| BufReader::new(c.stdout.take().unwrap()).lines()).collect();
    for output in &mut outputs[..1] {
        assert!(output.by_ref().map_while(Result::ok).any(|l| l == "running"), "the producer never got going");
    }
    std::thread::sleep(Duration::from_millis(50));
    queue.delete_topic("live").unwrap();
    for (output, child) in outputs.into_iter().zip(&mut children) {
        let lines: Vec<String> = output.map_while(Result::ok).collect();
        let status = child.wait().unwrap();
        assert!(status.success(), "a user of the deleted topic died: {status:?} {lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("gone: UnknownTopic")), "{lines:?}");
    }
    queue.create_topic("live", 1).unwrap();
    assert_eq!(queue.offsets(&TopicPartition::new("live", 0)).unwrap(), (0, 0));
}

#[test]
fn maintenance_skips_a_topic_another_handle_deletes_while_it_runs() {
    // Found by the power-cut campaign: a maintenance pass listed a topic, another process
    // deleted it, and the pass failed on the vanished directory instead of skipping it.
    let dir = TempDir::new("admin-maintain-deleted");
    let maintainer = Queue::open(dir.path()).unwrap();
    let admin = Queue::open(dir.path()).unwrap();
    let config = || TopicConfig::new(4).segment_bytes(1024).index_interval_bytes(128).retention_bytes(2048);
    let compacted = || config().cleanup_policy(CleanupPolicy::Compact).min_cleanable_dirty_ratio(0.01);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let producer = admin.producer();
            for round in 0..60 {
                let name = format!("churn-{round}");
                admin.create_topic_with(&name, if round % 2 == 0 { config() } else { compacted() }).unwrap();
                for i in 0..40u32 {
                    producer.send(&name, Record::new(&[7; 100]).key(&(i % 3).to_le_bytes()).partition(i % 4)).unwrap();
                }
                admin.delete_topic(&name).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let mut passes = 0;
        while !done.load(std::sync::atomic::Ordering::Acquire) {
            maintainer.run_maintenance().unwrap_or_else(|e| panic!("pass {passes}: {e}"));
            passes += 1;
        }
    });
}

#[test]
fn a_producer_sees_the_changes_another_process_makes_at_its_next_send() {
    // A producer remembers the topic it sent to last; changes made through another handle
    // must reach its very next send.
    let dir = TempDir::new("admin-producer-cache");
    let queue = Queue::open(dir.path()).unwrap();
    let other = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    let producer = queue.producer();
    assert_eq!(producer.send("t", Record::new(b"one")).unwrap().partition(), 0);
    assert!(matches!(producer.send("t", Record::new(b"x").partition(2)), Err(Error::PartitionOutOfRange { .. })));
    other.add_partitions("t", 3).unwrap();
    assert_eq!(producer.send("t", Record::new(b"two").partition(2)).unwrap().partition(), 2);
    let spread: std::collections::BTreeSet<u32> =
        (0..6).map(|_| producer.send("t", Record::new(b"round")).unwrap().partition()).collect();
    assert_eq!(spread, (0..3).collect(), "round-robin over the partitions added");
    other.alter_topic("t", |c| c.max_record_bytes(64)).unwrap();
    assert!(matches!(producer.send("t", Record::new(&[0u8; 100][..])), Err(Error::RecordTooLarge { .. })));
    other.delete_topic("t").unwrap();
    assert!(matches!(producer.send("t", Record::new(b"late")), Err(Error::UnknownTopic(_))));
    other.create_topic("t", 1).unwrap();
    assert_eq!(producer.send("t", Record::new(b"fresh")).unwrap().offset(), 0);
}

#[test]
fn a_deleted_topics_files_are_closed_while_the_producers_that_sent_to_it_stay_idle() {
    // A producer remembers the topic it sent to last; that must not keep a deleted topic's
    // files open (and their space taken) until its next send, in the deleting handle or in
    // another one, whose maintenance thread lets go of them.
    let dir = TempDir::new("admin-delete-idle");
    // The deleting handle's maintenance never ticks in this test: it must let go at once.
    let queue = Queue::open_with(dir.path(), QueueOptions::default().maintenance_interval(Duration::from_secs(3600))).unwrap();
    let other = Queue::open_with(dir.path(), QueueOptions::default().maintenance_interval(Duration::from_millis(20))).unwrap();
    let held = |needle: &str| held_files(dir.path()).into_iter().filter(|path| path.contains(needle)).count();
    for (topic, producer) in [("here", queue.producer()), ("there", other.producer())] {
        queue.create_topic(topic, 2).unwrap();
        producer.send(topic, Record::new(b"held")).unwrap();
        let open = format!("/topics/{topic}/");
        assert!(held(&open) > 0, "the producer's partition is open");
        queue.delete_topic(topic).unwrap();
        // What else may hold the files for a moment: a prefault job queued by the send, and
        // the other handle's maintenance pass (which opens every partition) until its next tick.
        let deadline = Instant::now() + Duration::from_secs(10);
        while held(" (deleted)") > 0 {
            assert!(Instant::now() < deadline, "{topic}: still open: {:?}", held_files(dir.path()));
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(producer);
    }
}

/// The files under `dir` this process has open or mapped, as the kernel names them (a deleted
/// file with " (deleted)" after its last path).
fn held_files(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapped = maps.lines().filter_map(|line| line.find('/').map(|at| line[at..].to_owned()));
    let open = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|path| path.display().to_string());
    mapped.chain(open).filter(|path| path.starts_with(&dir)).collect()
}
