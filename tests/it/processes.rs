//! Several processes (and threads) sharing one directory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use streamlog::{Queue, Record, TopicConfig};

use crate::child::{self, value_for};
use crate::{TempDir, consumer_from_start, read_exactly};

#[test]
fn processes_send_to_one_partition_while_another_consumes() {
    let dir = TempDir::new("processes");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("shared", TopicConfig::new(1).segment_bytes(256 << 10)).unwrap();
    let per_child = 6_000u64;
    let children: Vec<_> = (0..3)
        .map(|id| {
            let args = [
                dir.path().display().to_string(),
                "shared".into(),
                id.to_string(),
                per_child.to_string(),
                "1".into(),
                "buffered".into(),
            ];
            let mut child = child::spawn("produce", &args);
            let acks = child::collect_acks(&mut child);
            (child, acks)
        })
        .collect();
    // Consume while they produce: every record exactly once, dense offsets, each child's order kept.
    let mut consumer = consumer_from_start(&queue, "shared", 1);
    let records = read_exactly(&mut consumer, 3 * per_child as usize);
    let mut next_seq: HashMap<u32, u64> = HashMap::new();
    for (i, (_, offset, key, value)) in records.iter().enumerate() {
        assert_eq!(*offset, i as u64, "offsets are dense and unique");
        let producer = match key {
            Some(key) => u32::from_le_bytes(key.as_slice().try_into().unwrap()),
            None => std::str::from_utf8(&value[1..2]).unwrap().parse().unwrap(),
        };
        let text = String::from_utf8_lossy(value);
        let seq: u64 = text.split('-').nth(1).unwrap()[1..].parse().unwrap();
        assert_eq!(value, &value_for(producer, seq), "record {offset} changed");
        let expected = next_seq.entry(producer).or_insert(0);
        assert_eq!(seq, *expected, "producer {producer}'s records out of order");
        *expected += 1;
    }
    for (mut child, acks) in children {
        assert!(child.wait().unwrap().success());
        assert_eq!(acks.join().unwrap().len() as u64, per_child);
    }
}

#[test]
fn threads_send_to_one_partition() {
    let dir = TempDir::new("threads");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(128 << 10)).unwrap();
    let threads = 8u32;
    let per_thread = 5_000u64;
    std::thread::scope(|scope| {
        for id in 0..threads {
            let producer = queue.producer();
            scope.spawn(move || {
                for seq in 0..per_thread {
                    let value = value_for(id, seq);
                    if seq % 7 == 0 {
                        producer.send_batch("t", [Record::new(&value).key(&id.to_le_bytes())]).unwrap();
                    } else {
                        producer.send("t", Record::new(&value).key(&id.to_le_bytes())).unwrap();
                    }
                }
            });
        }
    });
    let mut consumer = consumer_from_start(&queue, "t", 1);
    let records = read_exactly(&mut consumer, (threads as u64 * per_thread) as usize);
    let mut next_seq = vec![0u64; threads as usize];
    for (i, (_, offset, key, value)) in records.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        let id = u32::from_le_bytes(key.as_deref().unwrap().try_into().unwrap());
        assert_eq!(value, &value_for(id, next_seq[id as usize]));
        next_seq[id as usize] += 1;
    }
}

#[test]
fn a_send_from_another_process_wakes_a_waiting_poll() {
    let dir = TempDir::new("cross-wake");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 3).unwrap();
    let mut consumer = consumer_from_start(&queue, "t", 3);
    let mut child = child::spawn("send-after", &[dir.path().display().to_string(), "t".into(), "300".into()]);
    let started = Instant::now();
    let records = consumer.poll(Duration::from_secs(20)).unwrap();
    assert_eq!(records.len(), 1);
    assert!(started.elapsed() < Duration::from_secs(10), "woken by the send, not by the timeout");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_poll_on_more_partitions_than_one_futex_wait_takes_still_wakes() {
    let dir = TempDir::new("many-partitions");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 130).unwrap();
    let mut consumer = consumer_from_start(&queue, "t", 130);
    let producer = queue.producer();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        producer.send("t", Record::new(b"last partition").partition(129)).unwrap();
    });
    let started = Instant::now();
    assert_eq!(consumer.poll(Duration::from_secs(20)).unwrap().len(), 1);
    assert!(started.elapsed() < Duration::from_secs(5), "woken by the send, not by the timeout");
    sender.join().unwrap();
}

#[test]
fn a_handle_that_missed_rolls_reads_across_them() {
    // Two handles on one directory behave like two processes. The reader's handle knows the
    // first segment; the other handle rolls twice; the reader then sends once (learning only
    // of the newest segment) and must still read every record in order.
    let dir = TempDir::new("missed-rolls");
    let reader = Queue::open(dir.path()).unwrap();
    reader.create_topic_with("t", TopicConfig::new(1).segment_bytes(1024)).unwrap();
    reader.producer().send("t", Record::new(&[0u8; 600])).unwrap();
    let writer = Queue::open(dir.path()).unwrap();
    for _ in 0..3 {
        writer.producer().send("t", Record::new(&[1u8; 600])).unwrap();
    }
    reader.producer().send("t", Record::new(&[2u8; 600])).unwrap();
    let mut consumer = consumer_from_start(&reader, "t", 1);
    let records = read_exactly(&mut consumer, 5);
    let firsts: Vec<u8> = records.iter().map(|(_, _, _, v)| v[0]).collect();
    assert_eq!(firsts, [0, 1, 1, 1, 2]);
}
