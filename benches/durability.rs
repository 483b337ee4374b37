//! `Durability::Sync` sends from 1 and from 16 threads to one partition on the real disk.
//! Every such send waits for an fsync; concurrent senders share them (group commit), so 16
//! threads should send many times more than one.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Report, ScratchDir, per_second};
use streamlog::{ConsumerConfig, Durability, OffsetReset, ProducerConfig, Queue, Record, TopicPartition};

const TOPIC: &str = "durable";
const VALUE_BYTES: usize = 100;

fn main() {
    let full = common::full_mode();
    if full {
        common::settle();
    }
    let duration = if full { Duration::from_secs(5) } else { Duration::from_millis(200) };
    let mut report = Report::default();

    let one_rate = sync_sends(1, duration);
    report.add("`Durability::Sync` `send`, 1 thread", format!("{one_rate:.0} records/s"), "", None);
    let many_rate = sync_sends(16, duration);
    report.add("`Durability::Sync` `send`, 16 threads", format!("{many_rate:.0} records/s"), "", None);
    let speedup = many_rate / one_rate;
    report.add("16 threads ÷ 1 thread (group commit)", format!("{speedup:.1}×"), "≥ 10×", Some(speedup >= 10.0));

    report.print("Durability", full);
}

/// Records per second that `threads` threads send with `Durability::Sync` to one partition of
/// a fresh queue for about `duration`. Afterwards every acknowledged record is read back.
fn sync_sends(threads: usize, duration: Duration) -> f64 {
    let dir = ScratchDir::new("durability");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic(TOPIC, 1).expect("create the topic");
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    let stop = AtomicBool::new(false);
    let acknowledged = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (producer, stop, acknowledged) = (producer.clone(), &stop, &acknowledged);
            scope.spawn(move || {
                let value = [thread as u8; VALUE_BYTES];
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    producer.send(TOPIC, Record::new(&value)).expect("send");
                    sent += 1;
                }
                acknowledged.fetch_add(sent, Ordering::Relaxed);
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed();
    let records = acknowledged.into_inner();
    assert!(records > 0, "no send finished in {duration:?}");
    assert_eq!(read_all(&queue), records, "records acknowledged and records in the log differ");
    per_second(records, elapsed)
}

/// How many records partition 0 holds, read one by one with CRCs checked.
fn read_all(queue: &Queue) -> u64 {
    let tp = TopicPartition::new(TOPIC, 0);
    let (_, end_offset) = queue.offsets(&tp).expect("offsets");
    let config = ConsumerConfig::new("check").auto_offset_reset(OffsetReset::Earliest).max_poll_records(10_000);
    let mut consumer = queue.consumer(config).expect("consumer");
    consumer.assign(&[tp]).expect("assign");
    let mut read = 0;
    while read < end_offset {
        let records = consumer.poll(Duration::from_secs(1)).expect("poll");
        assert!(!records.is_empty(), "the log ended at offset {read} of {end_offset}");
        for record in records.iter() {
            assert_eq!((record.offset(), record.value().len()), (read, VALUE_BYTES));
            read += 1;
        }
    }
    read
}
