//! Transactions: transactions of 1, 10, 100 and 1,000 records (`begin`, one `send_batch`,
//! `commit`) against plain `send_batch` of the same records to the same partitions, in the same
//! run and interleaved; the time a one-record transaction's commit takes; and consumption by a
//! `ReadCommitted` consumer of a log with no open transaction against `ReadUncommitted`.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{Percentiles, Report, ScratchDir, micros, per_second};
use streamlog::{ConsumerConfig, IsolationLevel, OffsetReset, Queue, Record, TopicPartition};

const VALUE_BYTES: usize = 100;
const PARTITIONS: u32 = 4;

fn main() {
    let full = common::full_mode();
    if full {
        common::settle();
    }
    let records: u64 = if full { 200_000 } else { 2_000 };
    let rounds = if full { 3 } else { 1 };
    let mut report = Report::default();

    for size in [1u64, 10, 100, 1_000] {
        // Fewer records for the small transactions, which are counted in transactions.
        let total = if size < 100 { records / 4 } else { records };
        let (mut transactional_best, mut plain_best) = (0.0f64, 0.0f64);
        for _ in 0..rounds {
            transactional_best = transactional_best.max(send_rate(total, size, true));
            plain_best = plain_best.max(send_rate(total, size, false));
        }
        let ratio = plain_best / transactional_best;
        report.add(
            &format!("transactions of {size}: transactions/s, records/s"),
            format!("{:.0} /s, {:.2} M records/s", transactional_best / size as f64, transactional_best / 1e6),
            "",
            None,
        );
        report.add(&format!("plain `send_batch` of {size}: records/s"), format!("{:.2} M/s", plain_best / 1e6), "", None);
        let (target, met) = match size {
            1_000 => ("≤ 1.5×", Some(ratio <= 1.5)),
            _ => ("", None),
        };
        report.add(&format!("cost of a transaction of {size} ÷ plain `send_batch`"), format!("{ratio:.2}×"), target, met);
    }

    let commits = Percentiles::of(commit_times(if full { 20_000 } else { 200 }));
    let measured = format!("{} / {} / {}", micros(commits.p50_ns), micros(commits.p99_ns), micros(commits.max_ns));
    report.add(
        "commit of a one-record transaction p50 / p99 / max (Buffered)",
        measured,
        "p50 < 10 µs",
        Some(commits.p50_ns < 10_000),
    );

    let dir = ScratchDir::new("transactions-read");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic("read", 1).expect("create the topic");
    let producer = queue.producer();
    let value = [7u8; VALUE_BYTES];
    for _ in 0..records / 1_000 {
        producer.send_batch("read", (0..1_000).map(|_| Record::new(&value[..]))).expect("send");
    }
    let (mut committed_best, mut uncommitted_best) = (0.0f64, 0.0f64);
    for _ in 0..rounds {
        committed_best = committed_best.max(read_rate(&queue, IsolationLevel::ReadCommitted, records));
        uncommitted_best = uncommitted_best.max(read_rate(&queue, IsolationLevel::ReadUncommitted, records));
    }
    let ratio = committed_best / uncommitted_best;
    report.add("`ReadCommitted` poll, no open transaction", format!("{:.2} M/s", committed_best / 1e6), "", None);
    report.add("`ReadUncommitted` poll", format!("{:.2} M/s", uncommitted_best / 1e6), "", None);
    report.add("`ReadCommitted` ÷ `ReadUncommitted`", format!("{:.0} %", ratio * 100.0), "≥ 90 %", Some(ratio >= 0.9));
    drop((producer, queue, dir));

    report.print("Transactions", full);
}

/// Records per second sending `total` records in batches of `size` round the partitions, each
/// batch in a transaction of its own or plainly.
fn send_rate(total: u64, size: u64, transactional: bool) -> f64 {
    let dir = ScratchDir::new("transactions-send");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic("t", PARTITIONS).expect("create the topic");
    let value = [1u8; VALUE_BYTES];
    let value = &value[..];
    let batch = |i: u64| (0..size).map(move |_| Record::new(black_box(value)).partition((i % u64::from(PARTITIONS)) as u32));
    let batches = total / size;
    let start = Instant::now();
    if transactional {
        let producer = queue.transactional_producer("bench").expect("transactional producer");
        for i in 0..batches {
            producer.begin_transaction().expect("begin");
            producer.send_batch("t", batch(i)).expect("send");
            producer.commit_transaction().expect("commit");
        }
    } else {
        let producer = queue.producer();
        for i in 0..batches {
            producer.send_batch("t", batch(i)).expect("send");
        }
    }
    per_second(batches * size, start.elapsed())
}

/// Nanoseconds each of `count` commits of a one-record transaction took.
fn commit_times(count: usize) -> Vec<u64> {
    let dir = ScratchDir::new("transactions-commit");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic("t", 1).expect("create the topic");
    let producer = queue.transactional_producer("commit-bench").expect("transactional producer");
    let value = [2u8; VALUE_BYTES];
    (0..count)
        .map(|_| {
            producer.begin_transaction().expect("begin");
            producer.send("t", Record::new(&value[..])).expect("send");
            let start = Instant::now();
            producer.commit_transaction().expect("commit");
            start.elapsed().as_nanos() as u64
        })
        .collect()
}

/// Records per second polling all `records` of topic `read` at `level`.
fn read_rate(queue: &Queue, level: IsolationLevel, records: u64) -> f64 {
    let config = ConsumerConfig::new("bench")
        .isolation_level(level)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .max_poll_records(10_000);
    let mut consumer = queue.consumer(config).expect("consumer");
    consumer.assign(&[TopicPartition::new("read", 0)]).expect("assign");
    let mut read = 0u64;
    let start = Instant::now();
    while read < records {
        let polled = consumer.poll(Duration::from_secs(10)).expect("poll");
        assert!(!polled.is_empty(), "records went missing at {read}");
        for record in &polled {
            black_box(record.value());
        }
        read += polled.len() as u64;
    }
    per_second(records, start.elapsed())
}
