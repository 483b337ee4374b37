//! The public API through its main paths.

use std::time::Duration;

use streamlog::{ConsumerConfig, Error, OffsetReset, Queue, Record, TopicConfig, TopicPartition};

use crate::{TempDir, consumer_from_start, read_exactly};

#[test]
fn send_and_poll_round_trip_every_field() {
    let dir = TempDir::new("round-trip");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("orders", 4).unwrap();
    let producer = queue.producer();
    let meta = producer
        .send("orders", Record::new(b"value").key(b"customer-7").header("trace", b"x").header("h2", b"").timestamp(1234))
        .unwrap();
    assert_eq!(meta.partition(), streamlog::partition_for_key(b"customer-7", 4).unwrap());
    assert_eq!((meta.offset(), meta.timestamp()), (0, 1234));

    let mut consumer = consumer_from_start(&queue, "orders", 4);
    let records = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(records.len(), 1);
    let r = records.iter().next().unwrap();
    assert_eq!((r.topic(), r.partition(), r.offset(), r.timestamp()), ("orders", meta.partition(), 0, 1234));
    assert_eq!((r.key(), r.value(), r.is_tombstone()), (Some(&b"customer-7"[..]), &b"value"[..], false));
    assert_eq!(r.headers().collect::<Vec<_>>(), vec![("trace", &b"x"[..]), ("h2", &b""[..])]);
    let tp = TopicPartition::new("orders", meta.partition());
    assert_eq!(consumer.position(&tp).unwrap(), 1);
}

#[test]
fn owned_records_headers_by_name_and_topic_wide_offsets() {
    let dir = TempDir::new("topic-wide");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 3).unwrap();
    let producer = queue.producer();
    // Owned values and keys map straight into records that outlive their sources.
    let owned: Vec<Record<'static>> = (0..5u32)
        .map(|i| Record::new(format!("v{i}")).key(i.to_le_bytes().to_vec()).header("n", i.to_string()).header("n", "last"))
        .map(|record| record.partition(1))
        .collect();
    producer.send_batch("t", owned).unwrap();
    producer.send("t", Record::new(String::from("p2")).key(Box::<[u8]>::from(&b"boxed"[..])).partition(2)).unwrap();
    let partitions = queue.partitions("t").unwrap();
    assert_eq!(partitions, (0..3).map(|p| TopicPartition::new("t", p)).collect::<Vec<_>>());
    let ends: Vec<u64> = queue.end_offsets("t").unwrap().into_iter().map(|(_, end)| end).collect();
    assert_eq!(ends, [0, 5, 1]);
    let starts: Vec<u64> = queue.beginning_offsets("t").unwrap().into_iter().map(|(_, start)| start).collect();
    assert_eq!(starts, [0, 0, 0]);
    assert!(matches!(queue.end_offsets("nope"), Err(Error::UnknownTopic(_))));

    let mut consumer = queue.consumer(ConsumerConfig::new("g").auto_offset_reset(OffsetReset::Earliest)).unwrap();
    consumer.assign(&partitions).unwrap();
    let records = consumer.poll(Duration::from_secs(1)).unwrap();
    let in_one: Vec<&streamlog::ConsumerRecord> = records.iter().filter(|r| r.partition() == 1).collect();
    assert_eq!(in_one.len(), 5);
    assert_eq!(in_one[3].value(), b"v3");
    assert_eq!(in_one[3].key(), Some(&3u32.to_le_bytes()[..]));
    assert_eq!(records.iter().find(|r| r.partition() == 2).unwrap().key(), Some(&b"boxed"[..]));
    assert_eq!(in_one[3].header("n"), Some(&b"last"[..]), "the last header of a name, as Kafka's lastHeader");
    assert_eq!(in_one[3].headers().filter(|(name, _)| *name == "n").count(), 2);
    assert_eq!(in_one[3].header("missing"), None);
    assert_eq!(records.iter().len(), 6);
    assert_eq!(records.iter().rev().count(), 6);

    // Skipping the group to the end is the end offsets, committed.
    consumer.commit_offsets(&queue.end_offsets("t").unwrap()).unwrap();
    let committed: Vec<Option<u64>> = consumer.committed_offsets(&partitions).unwrap().into_iter().map(|(_, o)| o).collect();
    assert_eq!(committed, [Some(0), Some(5), Some(1)]);
    assert!(consumer.subscription().is_empty() && consumer.generation().is_none(), "an assigned consumer is in no generation");
}

#[test]
fn a_subscribed_consumer_shows_its_subscription_and_generation() {
    let dir = TempDir::new("generation");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("b", 2).unwrap();
    queue.create_topic("a", 2).unwrap();
    let config = || ConsumerConfig::new("g").session_timeout(Duration::from_secs(10));
    let mut first = queue.consumer(config()).unwrap();
    first.subscribe(&["b", "a", "b"]).unwrap();
    assert_eq!(first.subscription(), ["a", "b"], "sorted, without repeats");
    first.poll(Duration::from_millis(50)).unwrap();
    let before = first.generation().expect("a member that polled is in a generation");
    let mut second = queue.consumer(config()).unwrap();
    second.subscribe(&["a", "b"]).unwrap();
    // The second member's join starts a new generation, which both see in their polls.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first.generation() == Some(before) || second.generation().is_none() {
        assert!(std::time::Instant::now() < deadline, "no new generation seen");
        first.poll(Duration::from_millis(10)).unwrap();
        second.poll(Duration::from_millis(10)).unwrap();
    }
    assert!(first.generation().unwrap() > before);
    second.unsubscribe().unwrap();
    assert!(second.subscription().is_empty() && second.generation().is_none());
}

#[test]
fn records_outlive_the_consumer_and_move_between_threads() {
    let dir = TempDir::new("outlive");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    queue.producer().send("t", Record::new(b"kept")).unwrap();
    let records = {
        let mut consumer = consumer_from_start(&queue, "t", 1);
        consumer.poll(Duration::from_secs(1)).unwrap()
    };
    drop(queue);
    let value = std::thread::spawn(move || records.into_iter().next().unwrap().value().to_vec()).join().unwrap();
    assert_eq!(value, b"kept");
}

#[test]
fn keyed_records_keep_order_per_partition_and_unkeyed_ones_spread() {
    let dir = TempDir::new("order");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 4).unwrap();
    let producer = queue.producer();
    for i in 0..400u32 {
        let key = format!("k{}", i % 10);
        producer.send("t", Record::new(&i.to_le_bytes()).key(key.as_bytes())).unwrap();
        producer.send("t", Record::new(b"unkeyed")).unwrap();
    }
    let mut consumer = consumer_from_start(&queue, "t", 4);
    let records = read_exactly(&mut consumer, 800);
    let mut last: std::collections::HashMap<Vec<u8>, u32> = Default::default();
    let mut unkeyed_per_partition = [0; 4];
    for (partition, _, key, value) in records {
        match key {
            Some(key) => {
                assert_eq!(partition, streamlog::partition_for_key(&key, 4).unwrap());
                let value = u32::from_le_bytes(value.try_into().unwrap());
                if let Some(previous) = last.insert(key, value) {
                    assert!(previous < value, "per-key order broken");
                }
            }
            None => unkeyed_per_partition[partition as usize] += 1,
        }
    }
    assert_eq!(unkeyed_per_partition, [100; 4], "round-robin spreads unkeyed records evenly");
}

#[test]
fn seek_position_and_batches() {
    let dir = TempDir::new("seek");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096).index_interval_bytes(256)).unwrap();
    let producer = queue.producer();
    let values: Vec<Vec<u8>> = (0..2000u32).map(|i| format!("value-{i}").into_bytes()).collect();
    let metas = producer.send_batch("t", values[..1000].iter().map(Record::new)).unwrap();
    assert!(metas.iter().enumerate().all(|(i, m)| m.offset() == i as u64 && m.partition() == 0));
    for v in &values[1000..] {
        producer.send("t", Record::new(v)).unwrap();
    }
    let tp = TopicPartition::new("t", 0);
    assert_eq!(queue.offsets(&tp).unwrap(), (0, 2000));
    let mut consumer = consumer_from_start(&queue, "t", 1);
    for target in [0u64, 1, 999, 1000, 1001, 1500, 1999, 733, 5] {
        consumer.seek(&tp, target).unwrap();
        let records = consumer.poll(Duration::from_secs(1)).unwrap();
        let first = records.iter().next().unwrap();
        assert_eq!(first.offset(), target);
        assert_eq!(first.value(), values[target as usize].as_slice());
        let offsets: Vec<u64> = records.iter().map(|r| r.offset()).collect();
        assert_eq!(offsets, (target..target + offsets.len() as u64).collect::<Vec<_>>());
    }
    consumer.seek_to_end(&tp).unwrap();
    assert_eq!(consumer.position(&tp).unwrap(), 2000);
    assert!(consumer.poll(Duration::from_millis(10)).unwrap().is_empty());
    consumer.seek_to_beginning(&tp).unwrap();
    assert_eq!(consumer.position(&tp).unwrap(), 0);
    let segments = std::fs::read_dir(dir.path().join("topics/t/0"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
        .count();
    assert!(segments > 5, "4 KiB segments must have rolled, found {segments}");
}

#[test]
fn positions_outside_the_log_follow_the_reset_policy() {
    let dir = TempDir::new("reset");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    let producer = queue.producer();
    for _ in 0..5 {
        producer.send("t", Record::new(b"x")).unwrap();
    }
    let tp = TopicPartition::new("t", 0);
    let mut latest = queue.consumer(ConsumerConfig::new("g")).unwrap();
    latest.assign(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(latest.position(&tp).unwrap(), 5);
    let mut strict = queue.consumer(ConsumerConfig::new("g").auto_offset_reset(OffsetReset::None)).unwrap();
    strict.assign(std::slice::from_ref(&tp)).unwrap();
    assert!(matches!(strict.poll(Duration::ZERO), Err(Error::NoOffset { .. })));
    strict.seek(&tp, 3).unwrap();
    assert_eq!(strict.poll(Duration::ZERO).unwrap().len(), 2);
    strict.seek(&tp, 99).unwrap();
    assert!(matches!(strict.poll(Duration::ZERO), Err(Error::OffsetOutOfRange { offset: 99, start: 0, end: 5, .. })));
    let mut earliest = queue.consumer(ConsumerConfig::new("g").auto_offset_reset(OffsetReset::Earliest)).unwrap();
    earliest.assign(std::slice::from_ref(&tp)).unwrap();
    earliest.seek(&tp, 99).unwrap();
    assert_eq!(earliest.poll(Duration::ZERO).unwrap().len(), 5);
    assert!(matches!(earliest.seek(&TopicPartition::new("t", 7), 0), Err(Error::NotAssigned(_))));
}

#[test]
fn bad_input_gets_typed_errors() {
    let dir = TempDir::new("bad-input");
    let queue = Queue::open(dir.path()).unwrap();
    for name in ["", ".", "..", "../escape", "a/b", &"x".repeat(250)] {
        assert!(matches!(queue.create_topic(name, 1), Err(Error::InvalidTopicName { .. })), "{name:?}");
    }
    assert!(!dir.path().parent().unwrap().join("escape").exists());
    queue.create_topic("t", 2).unwrap();
    assert!(matches!(queue.create_topic("t", 2), Err(Error::TopicExists(_))));
    assert!(matches!(queue.create_topic("zero", 0), Err(Error::InvalidConfig(_))));
    let producer = queue.producer();
    assert!(matches!(producer.send("nope", Record::new(b"x")), Err(Error::UnknownTopic(_))));
    assert!(matches!(
        producer.send("t", Record::new(b"x").partition(2)),
        Err(Error::PartitionOutOfRange { partition: 2, count: 2, .. })
    ));
    let big = vec![0u8; 1 << 20];
    assert!(matches!(producer.send("t", Record::new(&big)), Err(Error::RecordTooLarge { .. })));
    let crowded = (0..=u16::MAX as usize).fold(Record::new(b"x"), |record, _| record.header("h", b""));
    assert!(matches!(producer.send("t", crowded), Err(Error::TooManyHeaders { headers: 65_536, max_headers: 65_535, .. })));
    let long_name = "n".repeat(65_536);
    assert!(matches!(
        producer.send("t", Record::new(b"x").header(long_name, b"")),
        Err(Error::HeaderNameTooLong { name_bytes: 65_536, max_bytes: 65_535, .. })
    ));
    assert_eq!(queue.offsets(&TopicPartition::new("t", 0)).unwrap(), (0, 0), "a refused record was written");
    let mut consumer = queue.consumer(ConsumerConfig::new("g")).unwrap();
    assert!(matches!(consumer.assign(&[TopicPartition::new("nope", 0)]), Err(Error::UnknownTopic(_))));
    assert!(matches!(consumer.assign(&[TopicPartition::new("t", 5)]), Err(Error::PartitionOutOfRange { .. })));
    assert_eq!(queue.topics().unwrap(), vec!["t".to_string()]);
    assert_eq!(queue.partition_count("t").unwrap(), 2);
}

#[test]
fn topics_and_settings_persist_across_reopen() {
    let dir = TempDir::new("persist");
    let config = TopicConfig::new(3).segment_bytes(1 << 20).segment_ms(60_000).max_record_bytes(4096);
    {
        let queue = Queue::open(dir.path()).unwrap();
        queue.create_topic_with("audit", config.clone()).unwrap();
        queue.producer().send("audit", Record::new(b"a").partition(1)).unwrap();
    }
    let queue = Queue::open(dir.path()).unwrap();
    assert_eq!(queue.topic_config("audit").unwrap(), config);
    assert_eq!(queue.offsets(&TopicPartition::new("audit", 1)).unwrap(), (0, 1));
    let meta = queue.producer().send("audit", Record::new(b"b").partition(1)).unwrap();
    assert_eq!(meta.offset(), 1);
}

#[test]
fn poll_wakes_when_another_thread_sends() {
    let dir = TempDir::new("wake");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 2).unwrap();
    let mut consumer = consumer_from_start(&queue, "t", 2);
    let producer = queue.producer();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        producer.send("t", Record::new(b"late").partition(1)).unwrap();
    });
    let started = std::time::Instant::now();
    let records = consumer.poll(Duration::from_secs(10)).unwrap();
    assert_eq!(records.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5), "the send must wake the poll, not its timeout");
    sender.join().unwrap();
    let started = std::time::Instant::now();
    assert!(consumer.poll(Duration::from_millis(100)).unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this stack.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[test]
fn a_poll_that_waits_sleeps_instead_of_spinning() {
    let dir = TempDir::new("idle");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    let mut consumer = consumer_from_start(&queue, "t", 1);
    let producer = queue.producer();
    // Records that come rarely: `poll` may spin briefly for each, but must sleep in between.
    let sender = std::thread::spawn(move || {
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(30));
            producer.send("t", Record::new(b"rare")).unwrap();
        }
    });
    let (started, cpu_before) = (std::time::Instant::now(), thread_cpu_time());
    let mut received = 0;
    while received < 10 {
        received += consumer.poll(Duration::from_secs(10)).unwrap().len();
    }
    let (elapsed, cpu) = (started.elapsed(), thread_cpu_time() - cpu_before);
    sender.join().unwrap();
    assert!(cpu * 10 < elapsed, "polling used {cpu:?} of CPU in {elapsed:?}");
}

#[test]
fn an_open_partition_holds_one_file_descriptor() {
    // The descriptor limit, not memory, caps how many partitions a process can use: the log
    // keeps its file open, the index reopens its file on the rare occasions it needs it.
    let dir = TempDir::new("descriptors");
    let child = crate::child::spawn("open-files", &[dir.path().display().to_string(), "300".into()]);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let opened: usize = stdout.lines().find_map(|line| line.strip_prefix("descriptors ")).expect("the count").parse().unwrap();
    assert!(opened <= 300 + 20, "300 partitions opened {opened} descriptors");
}

#[test]
fn large_records_round_trip() {
    let dir = TempDir::new("large");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(256 << 10)).unwrap();
    let producer = queue.producer();
    let values: Vec<Vec<u8>> = (0..20u32).map(|i| (0..(20_000 + i * 5_000)).map(|j| (j * 7 + i) as u8).collect()).collect();
    for (i, value) in values.iter().enumerate() {
        let key = format!("key-{i}");
        let meta = producer.send("t", Record::new(value).key(key.as_bytes()).header("n", key.as_bytes())).unwrap();
        assert_eq!(meta.offset(), i as u64);
    }
    producer.send_batch("t", values.iter().map(Record::new)).unwrap();
    let mut consumer = consumer_from_start(&queue, "t", 1);
    let records = read_exactly(&mut consumer, 40);
    for (i, (_, offset, key, value)) in records.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        assert_eq!(value, &values[i % 20], "record {i}");
        assert_eq!(key.is_some(), i < 20);
    }
}

/// A record's timestamp is never earlier than the wall clock read before `send` was called, so
/// `offset_for_time` with that reading finds the record. (A coarse clock, which lags the real
/// one by up to a scheduler tick, fails this within a few ticks.)
#[test]
fn timestamps_are_never_earlier_than_the_clock_read_before_send() {
    let dir = TempDir::new("timestamps");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    let tp = TopicPartition::new("t", 0);
    let producer = queue.producer();
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // Enough sends to cross many clock ticks (each tick is 1 to 4 ms).
    let deadline = std::time::Instant::now() + Duration::from_millis(50);
    let mut sends = 0u64;
    while std::time::Instant::now() < deadline || sends < 1000 {
        let before_ms = now_ms();
        let meta = producer.send("t", Record::new(b"v")).unwrap();
        assert!(meta.timestamp() >= before_ms, "send {sends}: timestamp {} < clock {before_ms} read before it", meta.timestamp());
        let batch = producer.send_batch("t", [Record::new(b"a"), Record::new(b"b")]).unwrap();
        assert!(batch.iter().all(|m| m.timestamp() >= before_ms), "send_batch {sends}");
        sends += 1;
        if sends.is_multiple_of(97) {
            let found = queue.offset_for_time(&tp, before_ms).unwrap();
            assert!(
                found.is_some_and(|offset| offset <= meta.offset()),
                "offset_for_time({before_ms}) = {found:?}, sent at {}",
                meta.offset()
            );
        }
    }
}
