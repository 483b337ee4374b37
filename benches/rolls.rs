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
    let sizes: &[(u64, u64)] = if full { &[(1 << 20, 500_000), (16 << 20, 2_000_000)] } else { &[(64 << 10, 5_000)] };
    for &(segment_bytes, records) in sizes {
        let run = send_over_rolls(segment_bytes, records);
        assert!(run.rolls.len() >= 2, "only {} rolls", run.rolls.len());
        let slow_rolls = run.rolls.iter().filter(|d| **d > Duration::from_millis(1)).count();
        let rolls = Percentiles::of(run.rolls.iter().map(|d| d.as_nanos() as u64).collect());
        report.add(
            &format!("`send` that rolls, {} MiB segments ({} rolls): p50 / max", segment_bytes >> 20, run.rolls.len()),
            format!("{} / {}", micros(rolls.p50_ns), micros(rolls.max_ns)),
            "no roll over 1 ms",
            Some(slow_rolls == 0),
        );
        report.add(
            &format!("other `send`s, {} MiB segments: p50 / p99 / max", segment_bytes >> 20),
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
    let mut samples = Vec::with_capacity(records as usize);
    for _ in 0..records {
        let start = Instant::now();
        let offset = producer.send(TOPIC, Record::new(&value)).expect("send").offset();
        samples.push((offset, start.elapsed()));
    }
    drop(producer);
    drop(queue);
    // The segments' base offsets, from the file names: the sends at those offsets rolled.
    let bases: std::collections::HashSet<u64> = std::fs::read_dir(dir.path().join("topics").join(TOPIC).join("0"))
        .expect("list the partition")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .filter(|&base| base > 0)
        .collect();
    let (rolls, others): (Vec<_>, Vec<_>) = samples.into_iter().partition(|(offset, _)| bases.contains(offset));
    Run {
        rolls: rolls.into_iter().map(|(_, took)| took).collect(),
        others: Percentiles::of(others.into_iter().map(|(_, took)| took.as_nanos() as u64).collect()),
    }
}
