//! Two processes, one queue directory: this program starts a copy of itself that produces
//! 100,000 records while the original consumes them as they arrive, then reports that all
//! arrived in order and how long each took to cross from one process to the other.
//!
//! ```text
//! cargo run --release --example two_processes
//! ```
//!
//! The copy is started as `two_processes produce DIR`; any other arguments make a consumer.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use streamlog::{ConsumerConfig, OffsetReset, Queue, Record, TopicPartition};

const TOPIC: &str = "events";
const RECORDS: u64 = 100_000;
/// The producer sends one record every 10 µs (about 1 s in all), so that the latencies
/// measure the crossing rather than records queueing behind one another.
const SEND_INTERVAL_NS: u64 = 10_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, dir] = &args[..]
        && role == "produce"
    {
        return produce(Path::new(dir));
    }
    let dir = std::env::temp_dir().join(format!("streamlog-two-processes-{}", std::process::id()));
    let outcome = consume(&dir);
    std::fs::remove_dir_all(&dir)?;
    outcome
}

/// The child: sends `RECORDS` records, each holding its sequence number and send time.
fn produce(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let producer = Queue::open(dir)?.producer();
    let mut next_send_ns = monotonic_ns();
    for seq in 0..RECORDS {
        while monotonic_ns() < next_send_ns {
            std::hint::spin_loop();
        }
        let sent_ns = monotonic_ns();
        let value = [seq.to_le_bytes(), sent_ns.to_le_bytes()].concat();
        producer.send(TOPIC, Record::new(&value))?;
        next_send_ns = sent_ns + SEND_INTERVAL_NS;
    }
    Ok(())
}

/// The parent: creates the topic, starts the producer, and reads until it has every record.
fn consume(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let queue = Queue::open(dir)?;
    queue.create_topic(TOPIC, 1)?;
    let mut consumer = queue.consumer(ConsumerConfig::new("parent").auto_offset_reset(OffsetReset::Earliest))?;
    consumer.assign(&[TopicPartition::new(TOPIC, 0)])?;

    let mut child = Command::new(std::env::current_exe()?).arg("produce").arg(dir).spawn()?;
    println!("process {} consumes what process {} produces, in {}", std::process::id(), child.id(), dir.display());

    let mut latencies_ns = Vec::with_capacity(RECORDS as usize);
    while (latencies_ns.len() as u64) < RECORDS {
        let records = consumer.poll(Duration::from_secs(10))?;
        let received_ns = monotonic_ns();
        if records.is_empty() {
            child.kill()?;
            return Err(format!("nothing arrived for 10 s after {} records", latencies_ns.len()).into());
        }
        for record in &records {
            let seq = u64::from_le_bytes(record.value()[..8].try_into()?);
            let sent_ns = u64::from_le_bytes(record.value()[8..16].try_into()?);
            if seq != latencies_ns.len() as u64 {
                child.kill()?;
                return Err(format!("expected record {}, got {seq}", latencies_ns.len()).into());
            }
            latencies_ns.push(received_ns - sent_ns);
        }
    }
    if !child.wait()?.success() {
        return Err("the producer process failed".into());
    }

    latencies_ns.sort_unstable();
    let micros = |fraction: f64| latencies_ns[((latencies_ns.len() - 1) as f64 * fraction) as usize] as f64 / 1e3;
    println!("all {RECORDS} records arrived, in order");
    println!(
        "latency from send to poll: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        micros(0.5),
        micros(0.99),
        micros(0.999),
        micros(1.0)
    );
    Ok(())
}

/// Nanoseconds on CLOCK_MONOTONIC, which both processes share (an `Instant` cannot be sent to
/// another process).
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this stack.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
