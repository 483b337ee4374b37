//! Retention and compaction: how fast compaction cleans a log, and what compaction and retention
//! running beside a producer cost it (the issue's requirement: compaction "runs in the background
//! without stalling producers").
//!
//! a. One `run_maintenance` over a compacted log in which most records are superseded: MB/s of
//!    sealed segments cleaned, and their size on disk before and after.
//! b. Each `send` of a producer paced at one per 5 µs to a compacted topic, timed, without and
//!    then with another thread running `run_maintenance` in a loop.
//! c. Each `send` of a producer going as fast as it can to a `Delete` topic of small segments,
//!    timed, with the queue's background maintenance every 10 ms, without and with a size limit.
//!
//! Sizes come from the files, so they count the space reserved on disk (a MiB at a time).
//! `cargo bench --bench maintenance` prints the table; `cargo test` runs it tiny, as a test.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Percentiles, Report, ScratchDir, micros, millions_per_second, monotonic_ns, per_second, spin_until};
use streamlog::{CleanupPolicy, ConsumerConfig, OffsetReset, Producer, Queue, QueueOptions, Record, TopicConfig, TopicPartition};

const TOPIC: &str = "bench";
const VALUE_BYTES: usize = 100;
/// So long that the queue's own maintenance thread never runs while something is measured.
const NO_BACKGROUND_MAINTENANCE: Duration = Duration::from_secs(24 * 3600);
/// A key that has no record yet, in the model of the latest offset per key.
const NO_RECORD: u64 = u64::MAX;

/// The sizes of one run: full under `cargo bench`, tiny under `cargo test`.
struct Sizes {
    /// Compaction throughput: records, distinct keys and segment size of the log cleaned.
    clean_records: u64,
    clean_keys: u64,
    clean_segment_bytes: u64,
    /// Producer latency beside compaction: records in the log before, records sent at a steady
    /// rate while measuring, distinct keys, segment size.
    steady_prefill: u64,
    steady_sends: u64,
    steady_rate: u64,
    steady_keys: u64,
    steady_segment_bytes: u64,
    /// Retention's cost: records sent as fast as possible, segment size, size limit, and how
    /// often the background maintenance runs.
    retention_sends: u64,
    retention_segment_bytes: u64,
    retention_bytes: u64,
    retention_interval: Duration,
}

const FULL: Sizes = Sizes {
    clean_records: 4_000_000,
    clean_keys: 100_000,
    clean_segment_bytes: 64 << 20,
    steady_prefill: 1_000_000,
    steady_sends: 1_500_000,
    steady_rate: 200_000,
    steady_keys: 100_000,
    steady_segment_bytes: 8 << 20,
    retention_sends: 3_000_000,
    retention_segment_bytes: 1 << 20,
    retention_bytes: 8 << 20,
    retention_interval: Duration::from_millis(10),
};

const TINY: Sizes = Sizes {
    clean_records: 10_000,
    clean_keys: 300,
    clean_segment_bytes: 256 << 10,
    steady_prefill: 1_000,
    steady_sends: 6_000,
    steady_rate: 200_000,
    steady_keys: 300,
    steady_segment_bytes: 128 << 10,
    retention_sends: 10_000,
    retention_segment_bytes: 128 << 10,
    retention_bytes: 256 << 10,
    retention_interval: Duration::from_millis(10),
};

fn main() {
    let full = common::full_mode();
    let sizes = if full { FULL } else { TINY };
    let mut report = Report::default();

    // a. One compaction of a log in which most records are superseded.
    if full {
        common::settle();
    }
    let cleaned = clean_once(&sizes, full);
    let mb_per_s = cleaned.sealed_before as f64 / cleaned.elapsed.as_secs_f64() / 1e6;
    let records_per_s = per_second(cleaned.sealed_records, cleaned.elapsed);
    report.add(
        &format!(
            "compaction: one `run_maintenance` over {} records, {} keys, {} MiB segments",
            thousands(sizes.clean_records),
            thousands(sizes.clean_keys),
            sizes.clean_segment_bytes >> 20
        ),
        format!(
            "{:.2} s = {mb_per_s:.0} MB/s of sealed log ({} records)",
            cleaned.elapsed.as_secs_f64(),
            millions_per_second(records_per_s)
        ),
        "",
        None,
    );
    report.add(
        &format!("sealed segments ({}) on disk before / after compaction", cleaned.segments),
        format!("{} / {}", mebibytes(cleaned.sealed_before), mebibytes(cleaned.sealed_after)),
        "",
        None,
    );

    // b. A producer's latency at a steady rate, without and then beside continuous compaction.
    let steady_what = format!(
        "`send` p50 / p99 / p99.9 / max; rate, paced at one per {} µs, compacted topic, {} MiB segments",
        1_000_000 / sizes.steady_rate,
        sizes.steady_segment_bytes >> 20
    );
    if full {
        common::settle();
    }
    let quiet = steady_producer(&sizes, false);
    report.add(&format!("{steady_what}, no compaction"), steady(&quiet, sizes.steady_sends), "", None);
    if full {
        common::settle();
    }
    let busy = steady_producer(&sizes, true);
    let met = busy.latencies.p99_ns <= 2 * quiet.latencies.p99_ns;
    report.add(
        &format!("{steady_what}, compaction running"),
        steady(&busy, sizes.steady_sends),
        "p99 ≤ 2× no compaction",
        Some(met),
    );
    report.add(
        "compaction during that run",
        format!(
            "{} passes taking {:.1} s in all (the producer ran {:.1} s), {} segments rewritten, {} sealed segments left ({} on disk)",
            busy.passes,
            busy.busy.as_secs_f64(),
            busy.measured.as_secs_f64(),
            thousands(busy.rewritten),
            busy.segments_left,
            mebibytes(busy.bytes_left)
        ),
        "",
        None,
    );
    report.add(
        "sends slower than 1 ms, no compaction / compaction running",
        format!("{} / {}", quiet.slower_than_1ms, busy.slower_than_1ms),
        "",
        None,
    );

    // c. A producer going flat out while background retention deletes segments, or not.
    let retention_what = format!(
        "`send` as fast as possible, {} MiB segments, maintenance every {} ms",
        sizes.retention_segment_bytes >> 20,
        sizes.retention_interval.as_millis()
    );
    if full {
        common::settle();
    }
    let kept = flat_out_producer(&sizes, false);
    if full {
        common::settle();
    }
    let trimmed = flat_out_producer(&sizes, true);
    report.add(&format!("{retention_what}, no retention: rate; p50 / p99 / p99.9 / max"), flat_out(&kept), "", None);
    report.add(
        &format!("{retention_what}, retention_bytes {} MiB: rate; p50 / p99 / p99.9 / max", sizes.retention_bytes >> 20),
        flat_out(&trimmed),
        "",
        None,
    );
    report.add(
        "retention's cost: rate, p99",
        format!(
            "{:+.0} %, {:+.0} %",
            (trimmed.rate / kept.rate - 1.0) * 100.0,
            (trimmed.latencies.p99_ns as f64 / kept.latencies.p99_ns as f64 - 1.0) * 100.0
        ),
        "",
        None,
    );
    report.add(
        "sends slower than 1 ms (their time of the total), no retention / retention",
        format!(
            "{} ({:.1} s of {:.1} s) / {} ({:.1} s of {:.1} s)",
            kept.slow,
            kept.slow_time.as_secs_f64(),
            kept.elapsed.as_secs_f64(),
            trimmed.slow,
            trimmed.slow_time.as_secs_f64(),
            trimmed.elapsed.as_secs_f64()
        ),
        "",
        None,
    );
    report.add(
        "log on disk at the end, no retention / retention",
        format!(
            "{} in {} segments / {} in {} segments (log start offset {})",
            mebibytes(kept.bytes_left),
            kept.segments_left,
            mebibytes(trimmed.bytes_left),
            trimmed.segments_left,
            thousands(trimmed.log_start)
        ),
        "",
        None,
    );

    report.print("Maintenance", full);
}

/// Keys drawn at random (xorshift64*) from `0..count`, reproducibly.
struct Keys {
    state: u64,
    count: u64,
}

impl Keys {
    fn new(count: u64) -> Keys {
        Keys { state: 0x9e37_79b9_7f4a_7c15, count }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d) % self.count
    }
}

/// A one-partition compacted topic that compacts whatever sealed segment it can.
fn compacted_topic(segment_bytes: u64) -> TopicConfig {
    TopicConfig::new(1).segment_bytes(segment_bytes).cleanup_policy(CleanupPolicy::Compact).min_cleanable_dirty_ratio(0.0)
}

/// Sends the next record: its sequence number (its offset, as only this producer writes) in
/// the value, a random key, and notes the offset as that key's latest.
fn send_keyed(producer: &Producer, seq: u64, keys: &mut Keys, latest: &mut [u64]) {
    let mut value = [0u8; VALUE_BYTES];
    value[..8].copy_from_slice(&seq.to_le_bytes());
    let key = keys.next();
    let metadata = producer.send(TOPIC, Record::new(&value).key(&key.to_le_bytes())).expect("send");
    assert_eq!(metadata.offset(), seq, "another writer in the log");
    latest[key as usize] = seq;
}

/// Base offset and bytes allocated on disk of each segment log of partition 0, oldest first.
fn segment_files(queue_dir: &Path) -> Vec<(u64, u64)> {
    let dir = queue_dir.join("topics").join(TOPIC).join("0");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("list the partition directory") {
        let entry = entry.expect("list the partition directory");
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = name.strip_suffix(".log").and_then(|base| base.parse::<u64>().ok()) {
            // Background retention may delete a segment between the listing and this.
            match entry.metadata() {
                Ok(metadata) => files.push((base, std::os::unix::fs::MetadataExt::blocks(&metadata) * 512)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("stat {name}: {e}"),
            }
        }
    }
    files.sort_unstable();
    files
}

/// The sealed segments (all but the newest): how many, and their bytes on disk.
fn sealed(files: &[(u64, u64)]) -> (usize, u64) {
    let sealed = &files[..files.len().saturating_sub(1)];
    (sealed.len(), sealed.iter().map(|&(_, bytes)| bytes).sum())
}

/// Reads the whole partition and checks it against the model of each key's latest offset:
/// every record is whole and at the offset it was sent to, and each key's last record read is
/// its latest. Returns how many records are left.
fn check_latest(queue: &Queue, latest: &[u64]) -> u64 {
    let tp = TopicPartition::new(TOPIC, 0);
    let config = ConsumerConfig::new("check").auto_commit(None).auto_offset_reset(OffsetReset::Earliest).max_poll_records(10_000);
    let mut consumer = queue.consumer(config).expect("consumer");
    consumer.assign(std::slice::from_ref(&tp)).expect("assign");
    let end = queue.offsets(&tp).expect("offsets").1;
    let mut seen = vec![NO_RECORD; latest.len()];
    let mut read = 0;
    let mut previous = None;
    while consumer.position(&tp).expect("position") < end {
        let records = consumer.poll(Duration::from_secs(1)).expect("poll");
        assert!(!records.is_empty(), "the log ended at offset {} of {end}", consumer.position(&tp).expect("position"));
        for record in records.iter() {
            let value = record.value();
            assert_eq!(value.len(), VALUE_BYTES);
            assert_eq!(u64::from_le_bytes(value[..8].try_into().expect("8 bytes")), record.offset(), "a record moved");
            assert!(previous < Some(record.offset()), "offsets out of order");
            previous = Some(record.offset());
            let key = u64::from_le_bytes(record.key().expect("a key").try_into().expect("an 8-byte key"));
            seen[key as usize] = record.offset();
            read += 1;
        }
    }
    assert!(seen == latest, "some key's latest record is missing");
    read
}

struct Cleaned {
    elapsed: Duration,
    segments: usize,
    sealed_records: u64,
    sealed_before: u64,
    sealed_after: u64,
}

/// Fills a compacted topic, then times one `run_maintenance`, which compacts its sealed segments.
fn clean_once(sizes: &Sizes, full: bool) -> Cleaned {
    let dir = ScratchDir::new("compact");
    let queue = Queue::open_with(dir.path(), QueueOptions::new().maintenance_interval(NO_BACKGROUND_MAINTENANCE))
        .expect("open the queue");
    queue.create_topic_with(TOPIC, compacted_topic(sizes.clean_segment_bytes)).expect("create the topic");
    let producer = queue.producer();
    let mut keys = Keys::new(sizes.clean_keys);
    let mut latest = vec![NO_RECORD; sizes.clean_keys as usize];
    for seq in 0..sizes.clean_records {
        send_keyed(&producer, seq, &mut keys, &mut latest);
    }
    drop(producer);
    let before = segment_files(dir.path());
    let (segments, sealed_before) = sealed(&before);
    assert!(segments >= 2, "only {segments} sealed segments");
    let sealed_records = before[segments].0;
    if full {
        // The fill's dirty pages would be written back during the measurement.
        common::settle();
    }

    let start = Instant::now();
    let rewritten = queue.run_maintenance().expect("run_maintenance");
    let elapsed = start.elapsed();

    let after = segment_files(dir.path());
    let (segments_after, sealed_after) = sealed(&after);
    assert_eq!(segments_after, segments, "compaction keeps one file per segment");
    assert!(rewritten > 0 && rewritten <= segments, "{rewritten} of {segments} segments rewritten");
    assert!(sealed_after < sealed_before / 2, "compaction left {sealed_after} of {sealed_before} bytes");
    let left = check_latest(&queue, &latest);
    assert!(left < sizes.clean_records / 2, "{left} of {} records left", sizes.clean_records);
    assert_eq!(queue.run_maintenance().expect("run_maintenance"), 0, "nothing more to compact");
    Cleaned { elapsed, segments, sealed_records, sealed_before, sealed_after }
}

struct Steady {
    latencies: Percentiles,
    slower_than_1ms: usize,
    passes: u64,
    rewritten: u64,
    /// Time the compacting thread spent in `run_maintenance`, and how long the producer ran.
    busy: Duration,
    measured: Duration,
    segments_left: usize,
    bytes_left: u64,
}

/// A producer sending keyed records at a steady rate to a compacted topic that already holds
/// `steady_prefill` records, timing each `send`; with `compacting`, another thread runs
/// `run_maintenance` in a loop meanwhile (pausing a millisecond after a pass that found
/// nothing to do, rather than spinning).
fn steady_producer(sizes: &Sizes, compacting: bool) -> Steady {
    let dir = ScratchDir::new(if compacting { "steady-compacting" } else { "steady" });
    let queue = Queue::open_with(dir.path(), QueueOptions::new().maintenance_interval(NO_BACKGROUND_MAINTENANCE))
        .expect("open the queue");
    queue.create_topic_with(TOPIC, compacted_topic(sizes.steady_segment_bytes)).expect("create the topic");
    let producer = queue.producer();
    let mut keys = Keys::new(sizes.steady_keys);
    let mut latest = vec![NO_RECORD; sizes.steady_keys as usize];
    for seq in 0..sizes.steady_prefill {
        send_keyed(&producer, seq, &mut keys, &mut latest);
    }

    let done = AtomicBool::new(false);
    let interval_ns = 1_000_000_000 / sizes.steady_rate;
    let (samples, measured, (passes, rewritten, busy)) = std::thread::scope(|scope| {
        let compactor = scope.spawn(|| {
            let (mut passes, mut rewritten, mut busy) = (0u64, 0u64, Duration::ZERO);
            while compacting && !done.load(Ordering::Acquire) {
                let pass_start = Instant::now();
                let changed = queue.run_maintenance().expect("run_maintenance") as u64;
                busy += pass_start.elapsed();
                passes += 1;
                rewritten += changed;
                if changed == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            (passes, rewritten, busy)
        });
        let mut samples = Vec::with_capacity(sizes.steady_sends as usize);
        let start = Instant::now();
        let mut next_send_ns = monotonic_ns();
        for seq in sizes.steady_prefill..sizes.steady_prefill + sizes.steady_sends {
            spin_until(next_send_ns);
            let now_ns = monotonic_ns();
            let send_start = Instant::now();
            send_keyed(&producer, seq, &mut keys, &mut latest);
            samples.push(send_start.elapsed().as_nanos() as u64);
            // From this send rather than the last deadline: a producer that fell behind does
            // not catch up in a burst.
            next_send_ns = now_ns + interval_ns;
        }
        let measured = start.elapsed();
        done.store(true, Ordering::Release);
        (samples, measured, compactor.join().expect("the compacting thread panicked"))
    });
    drop(producer);

    if compacting {
        assert!(rewritten > 0, "compaction found nothing to do in {passes} passes");
    }
    let left = check_latest(&queue, &latest);
    if compacting {
        assert!(left < sizes.steady_prefill + sizes.steady_sends, "compaction removed nothing");
    }
    let (segments_left, bytes_left) = sealed(&segment_files(dir.path()));
    let (slower_than_1ms, _) = slow_sends(&samples);
    Steady { latencies: Percentiles::of(samples), slower_than_1ms, passes, rewritten, busy, measured, segments_left, bytes_left }
}

struct FlatOut {
    rate: f64,
    elapsed: Duration,
    /// Sends slower than a millisecond (segment rolls, mostly), and their total time.
    slow: usize,
    slow_time: Duration,
    latencies: Percentiles,
    segments_left: usize,
    bytes_left: u64,
    log_start: u64,
}

/// A producer sending unkeyed records as fast as it can to a `Delete` topic with small
/// segments, timing each `send`, while the queue's background maintenance runs every
/// `retention_interval`; with `retention`, the topic keeps only `retention_bytes`.
fn flat_out_producer(sizes: &Sizes, retention: bool) -> FlatOut {
    let dir = ScratchDir::new(if retention { "retention" } else { "no-retention" });
    let queue =
        Queue::open_with(dir.path(), QueueOptions::new().maintenance_interval(sizes.retention_interval)).expect("open the queue");
    let limit = if retention { sizes.retention_bytes } else { u64::MAX };
    let config = TopicConfig::new(1)
        .segment_bytes(sizes.retention_segment_bytes)
        .cleanup_policy(CleanupPolicy::Delete)
        .retention_bytes(limit);
    queue.create_topic_with(TOPIC, config).expect("create the topic");
    let producer = queue.producer();
    let mut value = [0u8; VALUE_BYTES];
    let mut samples = Vec::with_capacity(sizes.retention_sends as usize);
    let start = Instant::now();
    for seq in 0..sizes.retention_sends {
        value[..8].copy_from_slice(&seq.to_le_bytes());
        let send_start = Instant::now();
        producer.send(TOPIC, Record::new(&value)).expect("send");
        samples.push(send_start.elapsed().as_nanos() as u64);
    }
    let elapsed = start.elapsed();
    let rate = per_second(sizes.retention_sends, elapsed);
    drop(producer);

    let tp = TopicPartition::new(TOPIC, 0);
    assert_eq!(queue.offsets(&tp).expect("offsets").1, sizes.retention_sends);
    // What retention keeps: less than the limit plus its oldest segment, and the active one
    // (which has a MiB reserved; sealed segments give back what they did not use).
    let most = sizes.retention_bytes + 2 * (sizes.retention_segment_bytes + (1 << 20));
    let on_disk = || {
        let files = segment_files(dir.path());
        (files.len(), files.iter().map(|&(_, bytes)| bytes).sum::<u64>())
    };
    // The background thread deletes what is over the limit within an interval or so.
    let deadline = Instant::now() + Duration::from_secs(5);
    while retention && on_disk().1 > most && Instant::now() < deadline {
        std::thread::sleep(sizes.retention_interval);
    }
    let (segments_left, bytes_left) = on_disk();
    let log_start = queue.offsets(&tp).expect("offsets").0;
    if retention {
        assert!(log_start > 0, "background retention deleted nothing");
        assert!(bytes_left <= most, "{bytes_left} bytes left with a limit of {}", sizes.retention_bytes);
    } else {
        assert_eq!(log_start, 0, "segments deleted without retention");
    }
    let (slow, slow_time) = slow_sends(&samples);
    FlatOut { rate, elapsed, slow, slow_time, latencies: Percentiles::of(samples), segments_left, bytes_left, log_start }
}

/// How many sends took over a millisecond, and how long they took together.
fn slow_sends(samples_ns: &[u64]) -> (usize, Duration) {
    let slow = samples_ns.iter().filter(|&&ns| ns > 1_000_000);
    (slow.clone().count(), Duration::from_nanos(slow.sum()))
}

fn percentiles(p: &Percentiles) -> String {
    format!("{} / {} / {} / {}", micros(p.p50_ns), micros(p.p99_ns), micros(p.p999_ns), micros(p.max_ns))
}

fn steady(run: &Steady, sends: u64) -> String {
    format!("{}; {:.0} k/s", percentiles(&run.latencies), per_second(sends, run.measured) / 1e3)
}

fn flat_out(run: &FlatOut) -> String {
    format!("{}; {}", millions_per_second(run.rate), percentiles(&run.latencies))
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
