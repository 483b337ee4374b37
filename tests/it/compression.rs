//! Compressed topics: what `send_batch` compresses reads back exactly, through every reader
//! (polls from any offset, records that outlive their poll, time lookups, compaction, recovery),
//! takes less space, and damage to it is reported, never returned.

use std::fs;
use std::time::Duration;

use streamlog::{CleanupPolicy, Compression, ConsumerConfig, Error, OffsetReset, Queue, Record, TopicConfig, TopicPartition};

use crate::{TempDir, consumer_from_start, read_log};

/// A JSON-like value, as services send them.
fn order(i: u64) -> Vec<u8> {
    format!(r#"{{"order_id":{i},"customer":"customer-{}","status":"shipped","items":[{{"sku":"SKU-{}","qty":{}}}],"total_cents":{}}}"#,
        i % 97, i % 13, 1 + i % 4, 1000 + i * 7)
    .into_bytes()
}

/// Sends `count` orders to partition 0 of `topic` in batches of `batch`, with keys, headers,
/// a tombstone now and then and timestamps that go back and forth.
fn send_orders(queue: &Queue, topic: &str, count: u64, batch: u64) {
    let producer = queue.producer();
    for start in (0..count).step_by(batch as usize) {
        let records = (start..count.min(start + batch)).map(|i| {
            let key = format!("customer-{}", i % 97).into_bytes();
            let record = if i % 11 == 10 { Record::tombstone(key.clone()) } else { Record::new(order(i)).key(key) };
            record.header("trace", i.to_le_bytes().to_vec()).partition(0).timestamp(1_700_000_000_000 + i * 10 - (i % 3) * 25)
        });
        producer.send_batch(topic, records).unwrap();
    }
}

fn expected(i: u64) -> (Option<Vec<u8>>, Option<Vec<u8>>, u64) {
    let value = (i % 11 != 10).then(|| order(i));
    (Some(format!("customer-{}", i % 97).into_bytes()), value, 1_700_000_000_000 + i * 10 - (i % 3) * 25)
}

/// Bytes of data in partition 0's segments (each file's reserved zeros past its data left out).
fn log_bytes(dir: &std::path::Path, topic: &str) -> u64 {
    fs::read_dir(dir.join("topics").join(topic).join("0"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| fs::read(e.path()).unwrap().iter().rposition(|&b| b != 0).map_or(0, |p| p as u64 + 1))
        .sum()
}

#[test]
fn compressed_batches_read_back_exactly_from_any_offset() {
    let dir = TempDir::new("lz4-read");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("orders", TopicConfig::new(1).compression(Compression::Lz4).segment_bytes(64 << 10)).unwrap();
    send_orders(&queue, "orders", 2000, 100);
    let tp = TopicPartition::new("orders", 0);
    let log = read_log(&queue, &tp);
    assert_eq!(log.len(), 2000);
    assert!(log.iter().all(|(&i, stored)| *stored == expected(i)), "every record as it was sent");

    // Polls that start inside a compressed batch and stop inside one.
    let config = ConsumerConfig::new("seek").auto_offset_reset(OffsetReset::None).max_poll_records(7).auto_commit(None);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    for from in [0, 1, 55, 99, 100, 1234, 1999] {
        consumer.seek(&tp, from).unwrap();
        let records = consumer.poll(Duration::from_secs(1)).unwrap();
        let offsets: Vec<u64> = records.iter().map(|r| r.offset()).collect();
        assert_eq!(offsets, (from..2000.min(from + 7)).collect::<Vec<_>>());
        for r in records.iter() {
            let headers: Vec<_> = r.headers().collect();
            assert_eq!(headers, vec![("trace", &r.offset().to_le_bytes()[..])]);
        }
    }

    // Records taken out of their poll keep their expanded batch alive, on another thread too.
    consumer.seek(&tp, 300).unwrap();
    let taken: Vec<_> = consumer.poll(Duration::from_secs(1)).unwrap().into_iter().collect();
    let copies = std::thread::spawn(move || taken.iter().map(|r| (r.offset(), r.key().map(<[u8]>::to_vec))).collect::<Vec<_>>());
    let copies = copies.join().unwrap();
    assert!(copies.iter().all(|(offset, key)| *key == expected(*offset).0));

    // Time lookups see the timestamps inside compressed batches.
    let target = expected(1500).2;
    let found = queue.offset_for_time(&tp, target).unwrap().unwrap();
    assert!(found <= 1500 && (found..1500).all(|i| expected(i).2 < target || i == found), "{found}");
    assert!(expected(found).2 >= target);
}

#[test]
fn only_batches_compress_and_they_take_less_space() {
    let dir = TempDir::new("lz4-space");
    {
        let queue = Queue::open(dir.path()).unwrap();
        queue.create_topic_with("plain", TopicConfig::new(1)).unwrap();
        queue.create_topic_with("squeezed", TopicConfig::new(1).compression(Compression::Lz4)).unwrap();
        send_orders(&queue, "plain", 3000, 500);
        send_orders(&queue, "squeezed", 3000, 500);
    }
    let (plain, squeezed) = (log_bytes(dir.path(), "plain"), log_bytes(dir.path(), "squeezed"));
    assert!(squeezed * 3 < plain, "lz4 kept {squeezed} of {plain} bytes of JSON-like records");

    // A record sent alone is stored as it is, on a compressed topic too.
    let queue = Queue::open(dir.path()).unwrap();
    let before = log_bytes(dir.path(), "squeezed");
    queue.producer().send("squeezed", Record::new(vec![b'x'; 4000]).partition(0)).unwrap();
    drop(queue);
    assert!(log_bytes(dir.path(), "squeezed") - before > 4000, "a single send is not compressed");
}

#[test]
fn switching_compression_keeps_older_batches_readable_across_reopens() {
    let dir = TempDir::new("lz4-switch");
    {
        let queue = Queue::open(dir.path()).unwrap();
        queue.create_topic_with("orders", TopicConfig::new(1).segment_bytes(16 << 10)).unwrap();
        let producer = queue.producer();
        for i in 0..3000 {
            if i % 1000 == 0 {
                let compression = [Compression::Lz4, Compression::None, Compression::Lz4][i as usize / 1000];
                queue.alter_topic("orders", |c| c.compression(compression)).unwrap();
                assert_eq!(queue.topic_config("orders").unwrap().get_compression(), compression);
            }
            if i % 50 == 0 {
                let records = (i..i + 50).map(|j| {
                    let (key, value, timestamp) = expected(j);
                    let record = match value {
                        Some(value) => Record::new(value),
                        None => Record::tombstone(key.clone().unwrap()),
                    };
                    record.key(key.unwrap()).header("trace", j.to_le_bytes().to_vec()).partition(0).timestamp(timestamp)
                });
                producer.send_batch("orders", records).unwrap();
            }
        }
    }
    // Reopened alone: recovery walks the compressed batches too.
    let queue = crate::open_alone(dir.path()).unwrap();
    let log = read_log(&queue, &TopicPartition::new("orders", 0));
    assert_eq!(log.len(), 3000);
    assert!(log.iter().all(|(&i, stored)| *stored == expected(i)));
}

#[test]
fn compaction_keeps_the_latest_record_of_each_key_from_compressed_batches() {
    let dir = TempDir::new("lz4-compact");
    let queue = Queue::open(dir.path()).unwrap();
    let config = TopicConfig::new(1)
        .compression(Compression::Lz4)
        .segment_bytes(8 << 10)
        .cleanup_policy(CleanupPolicy::Compact)
        .min_cleanable_dirty_ratio(0.0)
        .delete_retention_ms(u64::MAX);
    queue.create_topic_with("orders", config).unwrap();
    send_orders(&queue, "orders", 3000, 40);
    let tp = TopicPartition::new("orders", 0);
    assert!(queue.run_maintenance().unwrap() > 0, "something was compacted");
    let log = read_log(&queue, &tp);
    // Every key's last record below the active segment survives; nothing returned is stale.
    for (&offset, stored) in &log {
        assert_eq!(*stored, expected(offset), "offset {offset} is not what was sent there");
    }
    let last_of_key = |k: u64| (0..3000).rev().find(|i| i % 97 == k).unwrap();
    for k in 0..97 {
        assert!(log.contains_key(&last_of_key(k)), "the last record of key {k} is gone");
    }
    assert!(log.len() < 3000, "compaction removed nothing");
}

#[test]
fn a_damaged_compressed_batch_is_reported_not_returned() {
    let dir = TempDir::new("lz4-damage");
    {
        let queue = Queue::open(dir.path()).unwrap();
        queue.create_topic_with("orders", TopicConfig::new(1).compression(Compression::Lz4)).unwrap();
        send_orders(&queue, "orders", 200, 100);
        queue.producer().flush().unwrap();
        // More data after, so that the damage is not a torn tail.
        queue
            .producer_with(streamlog::ProducerConfig::new().durability(streamlog::Durability::Sync))
            .send_batch("orders", (0..100).map(|i| Record::new(order(i)).partition(0)))
            .unwrap();
    }
    // The block's first bytes, with the checksum made right again: only the codec can tell.
    let path = dir.path().join("topics/orders/0/00000000000000000000.log");
    let mut bytes = fs::read(&path).unwrap();
    let batch_bytes = u32::from_le_bytes(bytes[64..68].try_into().unwrap()) as usize;
    for byte in &mut bytes[64 + 52 + 4..64 + 52 + 40] {
        *byte = 0xF0;
    }
    streamlog::fuzzing::forge_batch_checksum(&mut bytes[64..64 + batch_bytes]);
    fs::write(&path, &bytes).unwrap();
    let queue = crate::open_alone(dir.path()).unwrap();
    let mut consumer = consumer_from_start(&queue, "orders", 1);
    match consumer.poll(Duration::from_millis(200)) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("compressed"), "{reason}"),
        Ok(records) => panic!("returned {} records of a damaged block", records.len()),
        Err(other) => panic!("expected Error::Corrupt, got {other}"),
    }
}

#[cfg(not(feature = "zstd"))]
#[test]
fn zstd_without_its_feature_is_a_typed_error() {
    let dir = TempDir::new("zstd-missing");
    let queue = Queue::open(dir.path()).unwrap();
    let error = queue.create_topic_with("t", TopicConfig::new(1).compression(Compression::Zstd)).unwrap_err();
    assert!(matches!(error, Error::CompressionUnavailable { codec: "zstd" }), "{error}");
    queue.create_topic("u", 1).unwrap();
    let error = queue.alter_topic("u", |c| c.compression(Compression::Zstd)).unwrap_err();
    assert!(matches!(error, Error::CompressionUnavailable { .. }), "{error}");
    assert_eq!(Compression::from_name("zstd"), Some(Compression::Zstd));
    assert_eq!(Compression::from_name("gzip"), None, "codecs streamlog lacks are not named");
}

#[cfg(feature = "zstd")]
#[test]
fn zstd_batches_read_back_exactly() {
    let dir = TempDir::new("zstd-read");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("orders", TopicConfig::new(1).compression(Compression::Zstd)).unwrap();
    send_orders(&queue, "orders", 1000, 250);
    let log = read_log(&queue, &TopicPartition::new("orders", 0));
    assert_eq!(log.len(), 1000);
    assert!(log.iter().all(|(&i, stored)| *stored == expected(i)));
}
