//! One producer sending round-robin over many partitions of one topic, one record per `send`,
//! with each count's rate as a share of the one-partition rate of the same run and of a limit
//! probe: the same round-robin appends into one prefaulted mapped file per partition.
//!
//! `cargo bench --bench partitions` prints the table; `cargo test` runs it tiny, as a test.

mod common;

use std::time::Instant;

use common::{ProbeLog, Report, ScratchDir, per_second};
use streamlog::{Queue, Record, TopicConfig};

const VALUE_BYTES: usize = 100;

fn main() {
    let full = common::full_mode();
    if full {
        common::settle();
    }
    let counts: &[u32] = if full { &[1, 100, 1_000, 10_000] } else { &[1, 10] };
    let mut report = Report::default();
    let mut one_partition_rate = None;
    for &partitions in counts {
        let records = if full { (400 * partitions as u64).max(2_000_000) } else { 2_000 };
        let rate = round_robin(partitions, records);
        let limit = limit_probe(partitions, records);
        let share =
            one_partition_rate.map(|one: f64| format!(", {:.0} % of 1 partition", 100.0 * rate / one)).unwrap_or_default();
        one_partition_rate.get_or_insert(rate);
        report.add(
            &format!("`send` round-robin over {partitions} partitions, 100 B values"),
            format!("{} ({:.0} % of the limit{share})", common::millions_per_second(rate), 100.0 * rate / limit),
            "",
            None,
        );
        report.add(&format!("limit probe over {partitions} files"), common::millions_per_second(limit), "", None);
    }
    report.print("Many partitions", full);
}

/// Records per second of the limit probe (`common::ProbeLog`) with one file per partition,
/// appending to them in turn.
fn limit_probe(partitions: u32, records: u64) -> f64 {
    let dir = ScratchDir::new("partitions-limit");
    std::fs::create_dir_all(dir.path()).expect("create the directory");
    let frame = ProbeLog::HEADER_BYTES + VALUE_BYTES;
    let per_partition = records.div_ceil(u64::from(partitions)) as usize * frame;
    let mut logs: Vec<ProbeLog> =
        (0..partitions).map(|partition| ProbeLog::create(&dir.path().join(partition.to_string()), per_partition)).collect();
    let value = [3u8; VALUE_BYTES];
    let start = Instant::now();
    for sequence in 0..records {
        logs[(sequence % u64::from(partitions)) as usize].append(&value, sequence);
    }
    let rate = per_second(records, start.elapsed());
    assert_eq!(logs.iter().map(ProbeLog::published).sum::<usize>(), records as usize * frame);
    rate
}

/// Records per second of one thread sending `records` records, partition by partition in turn.
fn round_robin(partitions: u32, records: u64) -> f64 {
    let dir = ScratchDir::new("partitions");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic_with("t", TopicConfig::new(partitions)).expect("create the topic");
    let producer = queue.producer();
    let value = [7u8; VALUE_BYTES];
    // Open every partition first: opening is not what is measured.
    for partition in 0..partitions {
        producer.send("t", Record::new(&value).partition(partition)).expect("send");
    }
    let start = Instant::now();
    for i in 0..records {
        producer.send("t", Record::new(&value).partition((i % u64::from(partitions)) as u32)).expect("send");
    }
    let rate = per_second(records, start.elapsed());
    let sent: u64 = (0..partitions).map(|p| queue.offsets(&streamlog::TopicPartition::new("t", p)).expect("offsets").1).sum();
    assert_eq!(sent, records + u64::from(partitions));
    rate
}
