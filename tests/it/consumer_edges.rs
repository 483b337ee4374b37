//! A consumer at the edges: what a drop commits (after a panic, after an early return), resets
//! reported as missed whichever call made them, the reset policy `None` without a commit, and
//! bad topic names and oversized commits refused before anything is written.

use std::time::{Duration, Instant};

use streamlog::{Consumer, ConsumerConfig, Error, OffsetReset, Queue, Record, TopicConfig, TopicPartition};

use crate::TempDir;

fn send(queue: &Queue, topic: &str, count: u32) {
    let producer = queue.producer();
    for i in 0..count {
        producer.send(topic, Record::new(&i.to_le_bytes())).unwrap();
    }
}

/// A consumer of group `group` with auto-commit on (the default), starting at the beginning.
fn auto_committing(queue: &Queue, group: &str, max_poll_records: usize) -> Consumer {
    let config = ConsumerConfig::new(group).auto_offset_reset(OffsetReset::Earliest).max_poll_records(max_poll_records);
    queue.consumer(config).unwrap()
}

/// Polls until a poll returns records, and returns their offsets.
fn poll_some(consumer: &mut Consumer) -> Vec<u64> {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let records = consumer.poll(Duration::from_millis(100)).unwrap();
        if !records.is_empty() {
            return records.iter().map(|r| r.offset()).collect();
        }
        assert!(Instant::now() < give_up, "no records arrived");
    }
}

/// The group's committed offset of `tp`, as a fresh consumer of the group sees it.
fn committed(queue: &Queue, group: &str, tp: &TopicPartition) -> Option<u64> {
    queue.consumer(ConsumerConfig::new(group).auto_commit(None)).unwrap().committed(tp).unwrap()
}

#[test]
fn a_panic_while_processing_commits_nothing() {
    let dir = TempDir::new("edges-panic");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    send(&queue, "t", 10);
    let tp = TopicPartition::new("t", 0);
    for subscribed in [true, false] {
        let group = if subscribed { "subscribed" } else { "assigned" };
        let thread_queue = queue.clone();
        let tp_in_thread = tp.clone();
        let outcome = std::thread::spawn(move || {
            let mut consumer = auto_committing(&thread_queue, group, 500);
            if subscribed {
                consumer.subscribe(&["t"]).unwrap();
            } else {
                consumer.assign(&[tp_in_thread]).unwrap();
            }
            let offsets = poll_some(&mut consumer);
            assert_eq!(offsets.len(), 10);
            panic!("processing the record at offset {} failed", offsets[0]);
        })
        .join();
        assert!(outcome.is_err(), "the thread panicked");
        assert_eq!(committed(&queue, group, &tp), None, "{group}: a panic commits nothing");
    }
}

#[test]
fn a_drop_commits_what_earlier_polls_returned_and_close_commits_everything() {
    let dir = TempDir::new("edges-drop");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    send(&queue, "t", 10);
    let tp = TopicPartition::new("t", 0);

    // An early return (a `?`) drops the consumer while the last poll's records are unprocessed:
    // only what the polls before it returned counts as processed.
    let process = |consumer: &mut Consumer| -> Result<(), Error> {
        assert_eq!(poll_some(consumer), [0, 1, 2, 3]);
        assert_eq!(poll_some(consumer), [4, 5, 6, 7]);
        Err(Error::IllegalState("processing offset 4 failed"))
    };
    let mut consumer = auto_committing(&queue, "g", 4);
    consumer.subscribe(&["t"]).unwrap();
    assert!(process(&mut consumer).is_err());
    drop(consumer);
    assert_eq!(committed(&queue, "g", &tp), Some(4), "a drop commits only what earlier polls returned");

    // `close` says everything returned was processed.
    let mut consumer = auto_committing(&queue, "g", 4);
    consumer.subscribe(&["t"]).unwrap();
    assert_eq!(poll_some(&mut consumer), [4, 5, 6, 7]);
    consumer.close().unwrap();
    assert_eq!(committed(&queue, "g", &tp), Some(8), "close commits everything poll returned");

    // A poll that returns nothing still says the records before it were processed.
    let mut consumer = auto_committing(&queue, "g", 4);
    consumer.subscribe(&["t"]).unwrap();
    assert_eq!(poll_some(&mut consumer), [8, 9]);
    assert!(consumer.poll(Duration::ZERO).unwrap().is_empty());
    drop(consumer);
    assert_eq!(committed(&queue, "g", &tp), Some(10));
}

#[test]
fn a_reset_by_position_is_reported_by_the_next_poll() {
    let dir = TempDir::new("edges-missed");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
    let producer = queue.producer();
    for i in 0..200u32 {
        producer.send("t", Record::new(i.to_le_bytes().repeat(50))).unwrap();
    }
    let tp = TopicPartition::new("t", 0);
    let config = ConsumerConfig::new("g").auto_commit(None).auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, 0).unwrap();
    queue.alter_topic("t", |c| c.retention_bytes(1)).unwrap();
    assert!(queue.run_maintenance().unwrap() > 0);
    let (start, _) = queue.offsets(&tp).unwrap();
    assert!(start > 0);

    // `position` applies the reset, and a commit after it stores the new position; the poll
    // after them still says what the reset skipped.
    assert_eq!(consumer.position(&tp).unwrap(), start);
    consumer.commit().unwrap();
    assert_eq!(consumer.committed(&tp).unwrap(), Some(start));
    let records = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(records.missed(), &[(tp.clone(), start)]);
    assert_eq!(records.iter().next().unwrap().offset(), start);
    // Reported once.
    assert!(consumer.poll(Duration::ZERO).unwrap().missed().is_empty());

    // A seek chooses the position anew: only the reset of the new position is reported.
    consumer.seek(&tp, 0).unwrap();
    assert_eq!(consumer.position(&tp).unwrap(), start);
    consumer.seek(&tp, 1).unwrap();
    let records = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(records.missed(), &[(tp, start - 1)]);
}

#[test]
fn no_committed_offset_with_the_reset_policy_none_says_so() {
    let dir = TempDir::new("edges-no-offset");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    let tp = TopicPartition::new("t", 0);
    let config = ConsumerConfig::new("g").auto_commit(None).auto_offset_reset(OffsetReset::None);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    let error = consumer.poll(Duration::ZERO).unwrap_err();
    assert!(matches!(&error, Error::NoOffset { group, partition } if group == "g" && partition == &tp), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("no committed offset") && message.contains("OffsetReset::None"), "{message}");
    assert!(matches!(consumer.position(&tp), Err(Error::NoOffset { .. })));
    // A seek gives it a position.
    consumer.seek(&tp, 0).unwrap();
    assert!(consumer.poll(Duration::ZERO).unwrap().is_empty());
}

#[test]
fn bad_topic_names_are_refused_by_every_call() {
    let dir = TempDir::new("edges-names");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    let good = TopicPartition::new("t", 0);
    let long = "x".repeat(250);
    let invalid = |result: Result<(), Error>| matches!(result, Err(Error::InvalidTopicName { .. }));
    for name in ["not a/valid name", "", "..", long.as_str()] {
        let bad = TopicPartition::new(name, 0);
        let shown = &name[..name.len().min(20)];
        let mut assigned = queue.consumer(ConsumerConfig::new("g").auto_commit(None)).unwrap();
        assigned.assign(std::slice::from_ref(&good)).unwrap();
        assert!(invalid(assigned.commit_offsets(&[(good.clone(), 1), (bad.clone(), 1)])), "{shown}");
        assert!(invalid(assigned.committed(&bad).map(drop)), "{shown}");
        assert!(invalid(assigned.seek(&bad, 0)), "{shown}");
        assert!(invalid(assigned.seek_to_beginning(&bad)), "{shown}");
        assert!(invalid(assigned.seek_to_end(&bad)), "{shown}");
        assert!(invalid(assigned.position(&bad).map(drop)), "{shown}");
        assert!(invalid(queue.offsets(&bad).map(drop)), "{shown}");
        assert!(invalid(queue.offset_for_time(&bad, 0).map(drop)), "{shown}");
        assert!(invalid(queue.partition_count(name).map(drop)), "{shown}");
        assert!(invalid(queue.topic_config(name).map(drop)), "{shown}");
        assert!(invalid(queue.alter_topic(name, |c| c)), "{shown}");
        assert!(invalid(queue.add_partitions(name, 2)), "{shown}");
        assert!(invalid(queue.delete_topic(name)), "{shown}");
        assert!(invalid(queue.producer().send(name, Record::new(b"x")).map(drop)), "{shown}");
        assert!(invalid(queue.producer().send_batch(name, [Record::new(b"x")]).map(drop)), "{shown}");
        assert!(invalid(assigned.assign(&[good.clone(), bad.clone()])), "{shown}");
        assert_eq!(assigned.assignment(), std::slice::from_ref(&good), "a refused assign changes nothing");
        drop(assigned);
        let mut subscribed = queue.consumer(ConsumerConfig::new("g").auto_commit(None)).unwrap();
        assert!(invalid(subscribed.subscribe(&["t", name])), "{shown}");
        subscribed.subscribe(&["t"]).unwrap();
        assert!(invalid(subscribed.commit_offsets(&[(bad, 1)])), "{shown}");
    }
    // A name longer than a whole batch (once a panic in debug builds, and in release builds a
    // commit that made the offset log unrecoverable) is refused like any other.
    let huge = TopicPartition::new(&"x".repeat(70 << 20), 0);
    let mut consumer = queue.consumer(ConsumerConfig::new("g").auto_commit(None)).unwrap();
    consumer.assign(std::slice::from_ref(&good)).unwrap();
    assert!(invalid(consumer.commit_offsets(&[(huge, 1)])));
    // Nothing was committed, so the group still describes itself, now and after a reopen.
    consumer.commit_offsets(&[(good.clone(), 0)]).unwrap();
    assert_eq!(queue.describe_group("g").unwrap().partitions.len(), 1);
    drop((consumer, queue));
    let queue = Queue::open(dir.path()).unwrap();
    let described = queue.describe_group("g").unwrap();
    assert_eq!(described.partitions.iter().map(|p| (&p.partition, p.committed)).collect::<Vec<_>>(), [(&good, Some(0))]);
}

#[test]
fn a_commit_too_large_for_one_batch_is_refused_whole() {
    let dir = TempDir::new("edges-large-commit");
    let queue = Queue::open(dir.path()).unwrap();
    let topic = "t".repeat(200);
    queue.create_topic(&topic, 1).unwrap();
    let mut consumer = queue.consumer(ConsumerConfig::new("g").auto_commit(None)).unwrap();
    let first = TopicPartition::new(&topic, 0);
    consumer.commit_offsets(&[(first.clone(), 1)]).unwrap();
    // About 260 bytes each: 300,000 of them make 78 MB, more than one 64 MiB batch holds.
    let offsets: Vec<(TopicPartition, u64)> = (0..300_000).map(|p| (TopicPartition::new(&topic, p), 2)).collect();
    let error = consumer.commit_offsets(&offsets).unwrap_err();
    assert!(
        matches!(error, Error::CommitTooLarge { partitions: 300_000, size_bytes, max_bytes } if size_bytes > max_bytes),
        "{error:?}"
    );
    assert_eq!(consumer.committed(&first).unwrap(), Some(1), "nothing of it was committed");
    drop((consumer, queue));
    let queue = Queue::open(dir.path()).unwrap();
    assert_eq!(queue.describe_group("g").unwrap().partitions[0].committed, Some(1));
}
