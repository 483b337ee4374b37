//! Throughput of one thread sending and one consumer reading, against the limit probe,
//! commitlog (a Kafka-style log crate) and in-memory and plain-file references, all measured
//! in the same run.
//!
//! `cargo bench --bench throughput` prints the table; `cargo test` runs it tiny, as a test.

mod common;

use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{ProbeLog, Report, ScratchDir, megabytes_per_second, millions_per_second, per_second};
use streamlog::{ConsumerConfig, OffsetReset, ProducerConfig, Queue, Record, TopicPartition};

const TOPIC: &str = "bench";
const VALUE_BYTES: usize = 100;
const LARGE_VALUE_BYTES: usize = 64 << 10;
/// Records per `send_batch` call: enough to amortise the call, small enough to stay in cache.
const BATCH_RECORDS: usize = 1_000;

fn main() {
    let full = common::full_mode();
    if full {
        common::settle();
    }
    let records = if full { 10_000_000 } else { 20_000 };
    let large_total_bytes = if full { 512 << 20 } else { 4 << 20 };
    let large_rounds = if full { 3 } else { 1 };
    let mut report = Report::default();

    let (send_rate, slowest_sends, poll_single_rate) = send_one_by_one(records, ProducerConfig::new());
    report.add("`send`, 1 thread, 100 B values", millions_per_second(send_rate), "≥ 10 M/s", Some(send_rate >= 10e6));
    report.add("slowest 1,000 `send`s of those", format!("{:.1} ms", slowest_sends.as_secs_f64() * 1e3), "", None);
    let what = "`poll` of those (one-record batches), CRC checked";
    report.add(what, millions_per_second(poll_single_rate), "≥ 40 M/s", Some(poll_single_rate >= 40e6));
    // Plain and idempotent sends alternating (the first plain round is the one above), best of each.
    let (mut plain_rate, mut idempotent_rate) = (send_rate, 0.0f64);
    for round in 0..if full { 2 } else { 1 } {
        if round > 0 {
            plain_rate = plain_rate.max(send_one_by_one(records, ProducerConfig::new()).0);
        }
        idempotent_rate = idempotent_rate.max(send_one_by_one(records, ProducerConfig::new().idempotent(true)).0);
    }
    report.add("`send`, 1 thread, idempotent producer", millions_per_second(idempotent_rate), "", None);
    report.add(
        "idempotent `send` ÷ plain `send` (best of each)",
        format!("{:.0} %", 100.0 * idempotent_rate / plain_rate),
        "",
        None,
    );
    let (commitlog_send, commitlog_batch, commitlog_read) = commitlog_rates(records);
    report.add("commitlog `append` of one 100 B record at a time", millions_per_second(commitlog_send), "", None);
    report.add(&format!("commitlog `append` of {BATCH_RECORDS} at a time"), millions_per_second(commitlog_batch), "", None);
    report.add("commitlog `read` of its log, 1 MiB at a time", millions_per_second(commitlog_read), "", None);
    let times = |ours: f64, theirs: f64| format!("{:.1}×", ours / theirs);
    report.add(
        "`send` ÷ commitlog one at a time",
        times(send_rate, commitlog_send),
        "≥ 8×",
        Some(send_rate >= 8.0 * commitlog_send),
    );
    let what = "`poll` of one-record batches ÷ commitlog `read`";
    report.add(what, times(poll_single_rate, commitlog_read), "≥ 1.5×", Some(poll_single_rate >= 1.5 * commitlog_read));

    // One log serves both the `send_batch` and the `poll` measurements.
    let dir = ScratchDir::new("throughput");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic(TOPIC, 1).expect("create the topic");
    let (batch_rate, slowest_batch) = send_in_batches(&queue, records);
    let batch_what = format!("`send_batch` of {BATCH_RECORDS}, 1 thread, 100 B values");
    report.add(&batch_what, millions_per_second(batch_rate), "", None);
    report.add(&format!("`send_batch` ÷ commitlog {BATCH_RECORDS} at a time"), times(batch_rate, commitlog_batch), "", None);
    report.add("slowest `send_batch` of those", format!("{:.1} ms", slowest_batch.as_secs_f64() * 1e3), "", None);

    let limit_rate = limit_probe(records);
    report.add(
        "limit probe: prefaulted mapping, `fetch_add`, 16 B header, CRC32, release store",
        millions_per_second(limit_rate),
        "",
        None,
    );
    let share = |rate: f64| format!("{:.0} %", 100.0 * rate / limit_rate);
    report.add("`send` ÷ limit probe", share(send_rate), "≥ 33 %", Some(send_rate >= limit_rate / 3.0));
    report.add("`send_batch` ÷ limit probe", share(batch_rate), "≥ 80 %", Some(batch_rate >= 0.8 * limit_rate));

    let channel_rate = crossbeam_send_recv(records);
    report.add("reference: crossbeam-channel send+recv of 100 B `Vec`s", millions_per_second(channel_rate), "", None);

    for check_crcs in [true, false] {
        let poll_rate = poll_all(&queue, records, check_crcs);
        let what = format!("`poll` of the `send_batch` log, max_poll_records 10,000, check_crcs {check_crcs}");
        report.add(&what, millions_per_second(poll_rate), "≥ 60 M/s", Some(poll_rate >= 60e6));
        if check_crcs {
            let what = "`poll` of the `send_batch` log, CRC checked ÷ commitlog `read`";
            report.add(what, times(poll_rate, commitlog_read), "≥ 1.5×", Some(poll_rate >= 1.5 * commitlog_read));
        }
    }
    drop(queue);
    drop(dir);

    // The best of a few rounds, alternating, so that neither side is favoured by background
    // writeback of the other's dirty pages.
    let (mut streamlog_best, mut file_best) = (0.0f64, 0.0f64);
    for _ in 0..large_rounds {
        streamlog_best = streamlog_best.max(streamlog_large_values(large_total_bytes));
        file_best = file_best.max(file_large_writes(large_total_bytes));
    }
    let ratio = streamlog_best / file_best;
    report.add("`send` of 64 KiB values", megabytes_per_second(streamlog_best), "", None);
    report.add("reference: `write_all` of 64 KiB to a file", megabytes_per_second(file_best), "", None);
    report.add("64 KiB `send` ÷ file `write_all`", format!("{:.0} %", ratio * 100.0), "≥ 90 %", Some(ratio >= 0.9));

    report.print("Throughput", full);
}

/// Records per second of the limit probe (`common::ProbeLog`) appending `records` records.
fn limit_probe(records: u64) -> f64 {
    let dir = ScratchDir::new("limit");
    std::fs::create_dir_all(dir.path()).expect("create the directory");
    let frame = ProbeLog::HEADER_BYTES + VALUE_BYTES;
    let mut log = ProbeLog::create(&dir.path().join("log"), records as usize * frame);
    let value = value_of(3);
    let start = Instant::now();
    for sequence in 0..records {
        log.append(&value, sequence);
    }
    let rate = per_second(records, start.elapsed());
    assert_eq!(log.published(), records as usize * frame);
    rate
}

fn value_of(fill: u8) -> [u8; VALUE_BYTES] {
    [fill; VALUE_BYTES]
}

/// Records per second for `records` single-record sends by a producer made with `config` to
/// a fresh one-partition topic, the
/// longest time 1,000 consecutive sends took (timing each send would cost more than one), and
/// records per second reading them back with CRCs checked.
fn send_one_by_one(records: u64, config: ProducerConfig) -> (f64, Duration, f64) {
    let dir = ScratchDir::new("send");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic(TOPIC, 1).expect("create the topic");
    let producer = queue.producer_with(config);
    let value = value_of(1);
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    let mut sent = 0;
    while sent < records {
        let chunk_start = Instant::now();
        let chunk = (records - sent).min(1_000);
        for _ in 0..chunk {
            producer.send(TOPIC, Record::new(black_box(&value))).expect("send");
        }
        slowest = slowest.max(chunk_start.elapsed());
        sent += chunk;
    }
    let elapsed = start.elapsed();
    assert_eq!(queue.offsets(&TopicPartition::new(TOPIC, 0)).expect("offsets"), (0, records));
    (per_second(records, elapsed), slowest, poll_all(&queue, records, true))
}

/// commitlog in the same run: records per second appending `records` 100-byte values one at a
/// time, then as many `BATCH_RECORDS` at a time to a second log, then reading that log back
/// (each value touched, as `read_back` does).
fn commitlog_rates(records: u64) -> (f64, f64, f64) {
    use commitlog::message::{MessageBuf, MessageSet};
    use commitlog::{CommitLog, LogOptions, ReadLimit};
    let open = |dir: &ScratchDir| {
        let mut options = LogOptions::new(dir.path());
        // As streamlog's default segment; its message limit counts a whole append.
        options.segment_max_bytes(1 << 30).message_max_bytes(1 << 30);
        CommitLog::new(options).expect("open commitlog")
    };
    let value = value_of(4);
    let single_dir = ScratchDir::new("commitlog-single");
    let mut log = open(&single_dir);
    let start = Instant::now();
    for _ in 0..records {
        let mut one = MessageBuf::default();
        one.push(black_box(&value)).expect("a 100 B message");
        log.append(&mut one).expect("append");
    }
    let single = per_second(records, start.elapsed());
    drop(log);
    drop(single_dir);

    let batch_dir = ScratchDir::new("commitlog-batch");
    let mut log = open(&batch_dir);
    let start = Instant::now();
    let mut sent = 0;
    while sent < records {
        let batch = (records - sent).min(BATCH_RECORDS as u64);
        let mut messages = MessageBuf::default();
        for _ in 0..batch {
            messages.push(black_box(&value)).expect("a 100 B message");
        }
        log.append(&mut messages).expect("append");
        sent += batch;
    }
    let batched = per_second(records, start.elapsed());

    let start = Instant::now();
    let (mut next_offset, mut first_bytes) = (0u64, 0u64);
    while next_offset < records {
        let messages = log.read(next_offset, ReadLimit::max_bytes(1 << 20)).expect("read");
        assert!(!messages.is_empty(), "commitlog's log ended at {next_offset} of {records}");
        for message in messages.iter() {
            assert_eq!((message.offset(), message.payload().len()), (next_offset, VALUE_BYTES));
            first_bytes += u64::from(message.payload()[0]);
            next_offset += 1;
        }
    }
    black_box(first_bytes);
    (single, batched, per_second(records, start.elapsed()))
}

/// Records per second for `records` records sent `BATCH_RECORDS` at a time to `queue`'s
/// one-partition topic, which must be empty, and the longest one call took.
fn send_in_batches(queue: &Queue, records: u64) -> (f64, Duration) {
    let producer = queue.producer();
    let value = value_of(2);
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    let mut sent = 0;
    while sent < records {
        let batch_start = Instant::now();
        let batch = (records - sent).min(BATCH_RECORDS as u64);
        let metadata = producer.send_batch(TOPIC, (0..batch).map(|_| Record::new(black_box(&value)))).expect("send_batch");
        slowest = slowest.max(batch_start.elapsed());
        assert_eq!(metadata.last().map(|m| m.offset()), Some(sent + batch - 1));
        sent += batch;
    }
    let elapsed = start.elapsed();
    assert_eq!(queue.offsets(&TopicPartition::new(TOPIC, 0)).expect("offsets"), (0, records));
    (per_second(records, elapsed), slowest)
}

/// Records per second through a bounded crossbeam channel from one thread to another, each a
/// freshly allocated 100-byte `Vec`: what passing records in memory costs.
fn crossbeam_send_recv(records: u64) -> f64 {
    let (sender, receiver) = crossbeam_channel::bounded::<Vec<u8>>(1024);
    let value = value_of(3);
    let start = Instant::now();
    let received_bytes = std::thread::scope(|scope| {
        scope.spawn(move || {
            for _ in 0..records {
                sender.send(black_box(&value).to_vec()).expect("send to the channel");
            }
        });
        receiver.iter().map(|v| black_box(v).len() as u64).sum::<u64>()
    });
    let elapsed = start.elapsed();
    assert_eq!(received_bytes, records * VALUE_BYTES as u64);
    per_second(records, elapsed)
}

/// Records per second for one consumer reading the whole topic from the start.
fn poll_all(queue: &Queue, records: u64, check_crcs: bool) -> f64 {
    let start = Instant::now();
    let read = read_back(queue, records, check_crcs);
    let elapsed = start.elapsed();
    assert_eq!(read, records);
    per_second(records, elapsed)
}

/// Reads partition 0 of the topic from the start until `records` records arrived, checking
/// that offsets are dense and each value is whole, and returns how many it read.
fn read_back(queue: &Queue, records: u64, check_crcs: bool) -> u64 {
    let config =
        ConsumerConfig::new("bench").auto_offset_reset(OffsetReset::Earliest).max_poll_records(10_000).check_crcs(check_crcs);
    let mut consumer = queue.consumer(config).expect("consumer");
    consumer.assign(&[TopicPartition::new(TOPIC, 0)]).expect("assign");
    let mut next_offset = 0;
    let mut first_bytes = 0u64;
    while next_offset < records {
        let polled = consumer.poll(Duration::from_secs(1)).expect("poll");
        assert!(!polled.is_empty(), "the log ended at offset {next_offset} of {records}");
        for record in polled.iter() {
            assert_eq!(record.offset(), next_offset);
            let value = record.value();
            assert_eq!(value.len(), VALUE_BYTES);
            // Touching the value keeps the measurement honest: a real consumer reads its data.
            first_bytes += u64::from(value[0]);
            next_offset += 1;
        }
    }
    black_box(first_bytes);
    next_offset
}

/// MB/s of 64 KiB values sent one by one to a fresh one-partition topic.
fn streamlog_large_values(total_bytes: u64) -> f64 {
    let dir = ScratchDir::new("large");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic(TOPIC, 1).expect("create the topic");
    let producer = queue.producer();
    let value = vec![4u8; LARGE_VALUE_BYTES];
    let records = total_bytes / LARGE_VALUE_BYTES as u64;
    let start = Instant::now();
    for _ in 0..records {
        producer.send(TOPIC, Record::new(black_box(&value))).expect("send");
    }
    let elapsed = start.elapsed();
    assert_eq!(queue.offsets(&TopicPartition::new(TOPIC, 0)).expect("offsets"), (0, records));
    per_second(records * LARGE_VALUE_BYTES as u64, elapsed)
}

/// MB/s of plain 64 KiB `write_all` calls to a new file on the same file system.
fn file_large_writes(total_bytes: u64) -> f64 {
    let dir = ScratchDir::new("file");
    std::fs::create_dir_all(dir.path()).expect("create the directory");
    let path = dir.path().join("plain.log");
    let mut file = File::create(&path).expect("create the file");
    let value = vec![5u8; LARGE_VALUE_BYTES];
    let writes = total_bytes / LARGE_VALUE_BYTES as u64;
    let start = Instant::now();
    for _ in 0..writes {
        file.write_all(black_box(&value)).expect("write");
    }
    let elapsed = start.elapsed();
    assert_eq!(file.metadata().expect("metadata").len(), writes * LARGE_VALUE_BYTES as u64);
    per_second(writes * LARGE_VALUE_BYTES as u64, elapsed)
}
