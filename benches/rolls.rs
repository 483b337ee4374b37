//! What a segment roll costs the send that triggers it: one producer sends 100-byte records one
//! at a time (`Durability::Buffered`) to a topic with small segments, timing every `send`, and
//! the sends that started a new segment (their offsets are the segments' base offsets) are
//! compared with the rest. The goal (issue 13): no send over 1 ms at a roll.
//!
//! `cargo bench --bench rolls` prints the table; `cargo test` runs it tiny, as a test.

mod common;

use std::time::{Duration, Instant};

use common::{Percentiles, Report, ScratchDir, micros};
use streamlog::{Queue, Record, TopicConfig};

const TOPIC: &str = "t";
const VALUE_BYTES: usize = 100;

fn main() {
    let full = common::full_mode();
    if full {
        common::settle();
    }
    let mut report = Report::default();
    // 1 GiB is the default segment size: a record of 100 B takes 170 B of log sent alone, so
    // 15,000,000 of them fill two.
    let sizes: &[(u64, u64)] =
        if full { &[(1 << 20, 500_000), (16 << 20, 2_000_000), (1 << 30, 15_000_000)] } else { &[(64 << 10, 5_000)] };
    for &(segment_bytes, records) in sizes {
        let run = send_over_rolls(segment_bytes, records);
        assert!(run.rolls.len() >= 2, "only {} rolls", run.rolls.len());
        let slow_rolls = run.rolls.iter().filter(|d| **d > Duration::from_millis(1)).count();
        let rolls = Percentiles::of(run.rolls.iter().map(|d| d.as_nanos() as u64).collect());
        report.add(
            &format!("`send` that rolls, {} segments ({} rolls): p50 / max", size(segment_bytes), run.rolls.len()),
            format!("{} / {}", micros(rolls.p50_ns), micros(rolls.max_ns)),
            "no roll over 1 ms",
            Some(slow_rolls == 0),
        );
        report.add(
            &format!("other `send`s, {} segments: p50 / p99 / max", size(segment_bytes)),
            format!("{} / {} / {}", micros(run.others.p50_ns), micros(run.others.p99_ns), micros(run.others.max_ns)),
            "",
            None,
        );
    }
    report.print("Segment rolls", full);
}

struct Run {
    /// How long each send that started a new segment took.
    rolls: Vec<Duration>,
    others: Percentiles,
}

fn send_over_rolls(segment_bytes: u64, records: u64) -> Run {
    let dir = ScratchDir::new("rolls");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic_with(TOPIC, TopicConfig::new(1).segment_bytes(segment_bytes)).expect("create the topic");
    let producer = queue.producer();
    let value = [7u8; VALUE_BYTES];
    // The time of the send of each offset (one producer on a new topic: offsets count from
    // 0), in nanoseconds, to keep millions of samples small.
    let mut took_ns: Vec<u32> = Vec::with_capacity(records as usize);
    for expected in 0..records {
        let start = Instant::now();
        let offset = producer.send(TOPIC, Record::new(&value)).expect("send").offset();
        took_ns.push(u32::try_from(start.elapsed().as_nanos()).unwrap_or(u32::MAX));
        assert_eq!(offset, expected);
    }
    drop(producer);
    drop(queue);
    // The segments' base offsets, from the file names: the sends at those offsets rolled.
    let bases: std::collections::HashSet<u64> = std::fs::read_dir(dir.path().join("topics").join(TOPIC).join("0"))
        .expect("list the partition")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .filter(|&base| base > 0)
        .collect();
    let rolls = bases.iter().map(|&base| Duration::from_nanos(u64::from(took_ns[base as usize]))).collect();
    let others = took_ns.iter().enumerate().filter(|(offset, _)| !bases.contains(&(*offset as u64)));
    Run { rolls, others: Percentiles::of(others.map(|(_, &ns)| u64::from(ns)).collect()) }
}

/// `bytes` in KiB, MiB or GiB, whichever is whole.
fn size(bytes: u64) -> String {
    match bytes {
        b if b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{} KiB", b >> 10),
    }
}
