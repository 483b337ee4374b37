//! Compressed topics on JSON-like values: the space each codec saves, and what it costs
//! `send_batch` and `poll`, against the same topic uncompressed, interleaved in one run.
//!
//! `cargo bench --bench compression` prints the table (`--features zstd` adds zstd);
//! `cargo test` runs it tiny, as a test.

mod common;

use std::hint::black_box;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Report, ScratchDir, megabytes_per_second, millions_per_second, per_second};
use streamlog::{Compression, ConsumerConfig, OffsetReset, Queue, Record, TopicConfig, TopicPartition};

const TOPIC: &str = "orders";
/// Records per `send_batch` call, as a service batching its output would send them.
const BATCH_RECORDS: usize = 1_000;

fn main() {
    let full = common::full_mode();
    if full {
        common::settle();
    }
    let records = if full { 2_000_000 } else { 5_000 };
    let rounds = if full { 3 } else { 1 };
    let values: Vec<Vec<u8>> = (0..records).map(order).collect();
    let value_bytes: u64 = values.iter().map(|v| v.len() as u64).sum();
    let mut codecs = vec![Compression::None, Compression::Lz4];
    if cfg!(feature = "zstd") {
        codecs.push(Compression::Zstd);
    }
    // Per codec: the best send and poll rates of the rounds, and the bytes on disk.
    let mut best = vec![(0.0f64, 0.0f64, 0u64); codecs.len()];
    for _ in 0..rounds {
        for (i, &codec) in codecs.iter().enumerate() {
            let (send, poll, disk) = run(codec, &values);
            best[i] = (best[i].0.max(send), best[i].1.max(poll), disk);
        }
    }
    let mut report = Report::default();
    let mean = value_bytes as f64 / records as f64;
    let (plain_send, plain_poll, plain_disk) = best[0];
    for (&codec, &(send, poll, disk)) in codecs.iter().zip(&best) {
        let name = codec.name();
        report.add(
            &format!("{name}: bytes on disk per record ({mean:.0} B JSON values)"),
            format!("{:.1} B", disk as f64 / records as f64),
            "",
            None,
        );
        report.add(
            &format!("{name}: `send_batch` of {BATCH_RECORDS}"),
            format!("{} ({})", millions_per_second(send), megabytes_per_second(send * mean)),
            "",
            None,
        );
        report.add(
            &format!("{name}: `poll`, CRC checked, values read"),
            format!("{} ({})", millions_per_second(poll), megabytes_per_second(poll * mean)),
            "",
            None,
        );
        if codec != Compression::None {
            report.add(
                &format!("{name}: space ÷ uncompressed"),
                format!("{:.0} %", 100.0 * disk as f64 / plain_disk as f64),
                "",
                None,
            );
            report.add(&format!("{name}: `send_batch` ÷ uncompressed"), format!("{:.0} %", 100.0 * send / plain_send), "", None);
            report.add(&format!("{name}: `poll` ÷ uncompressed"), format!("{:.0} %", 100.0 * poll / plain_poll), "", None);
        }
    }
    report.print("Compression (JSON-like values)", full);
}

/// A JSON order of about 250 bytes whose numbers and names vary as real ones do.
fn order(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let tiers = ["bronze", "silver", "gold", "platinum"];
    let statuses = ["created", "paid", "packed", "shipped", "delivered"];
    let countries = ["DE", "FR", "US", "JP", "BR", "IN", "GB"];
    format!(
        r#"{{"order_id":{},"customer":{{"id":"c-{}","tier":"{}","country":"{}"}},"items":[{{"sku":"SKU-{:05}","qty":{},"price_cents":{}}},{{"sku":"SKU-{:05}","qty":{},"price_cents":{}}}],"status":"{}","created_at":"2026-12-{:02}T{:02}:{:02}:{:02}.{:03}Z"}}"#,
        1_000_000 + i,
        next(100_000),
        tiers[next(4) as usize],
        countries[next(7) as usize],
        next(50_000),
        1 + next(5),
        99 + next(20_000),
        next(50_000),
        1 + next(5),
        99 + next(20_000),
        statuses[next(5) as usize],
        1 + next(28),
        next(24),
        next(60),
        next(60),
        next(1000),
    )
    .into_bytes()
}

/// Sends every value to a fresh topic compressed with `codec` and reads them back: the send
/// and poll rates (records per second) and the bytes the log takes on disk.
fn run(codec: Compression, values: &[Vec<u8>]) -> (f64, f64, u64) {
    let dir = ScratchDir::new("compression");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic_with(TOPIC, TopicConfig::new(1).compression(codec)).expect("create the topic");
    let producer = queue.producer();
    let start = Instant::now();
    for chunk in values.chunks(BATCH_RECORDS) {
        producer.send_batch(TOPIC, chunk.iter().map(|v| Record::new(v.as_slice()))).expect("send_batch");
    }
    let send = per_second(values.len() as u64, start.elapsed());

    let config = ConsumerConfig::new("bench").auto_offset_reset(OffsetReset::Earliest).max_poll_records(10_000);
    let mut consumer = queue.consumer(config).expect("consumer");
    consumer.assign(&[TopicPartition::new(TOPIC, 0)]).expect("assign");
    let start = Instant::now();
    let (mut read, mut checksum) = (0usize, 0u64);
    while read < values.len() {
        let polled = consumer.poll(Duration::from_secs(1)).expect("poll");
        assert!(!polled.is_empty(), "the log ended at {read} of {}", values.len());
        for record in polled.iter() {
            let value = record.value();
            assert_eq!(value.len(), values[read].len(), "record {read}");
            // A consumer reads its data: touch both ends of every value.
            checksum += u64::from(value[0]) + u64::from(value[value.len() - 1]);
            read += 1;
        }
    }
    let poll = per_second(read as u64, start.elapsed());
    black_box(checksum);
    assert_eq!(consumer.poll(Duration::ZERO).expect("poll").len(), 0, "nothing past what was sent");
    drop((consumer, producer, queue));
    (send, poll, disk_bytes(&dir.path().join("topics").join(TOPIC).join("0")))
}

/// Bytes the segment files take on disk (allocated blocks: sealed segments gave back what was
/// reserved past their data; the active one may hold up to about a MiB more).
fn disk_bytes(partition: &Path) -> u64 {
    std::fs::read_dir(partition)
        .expect("list the partition")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .map(|entry| entry.metadata().expect("stat").blocks() * 512)
        .sum()
}
