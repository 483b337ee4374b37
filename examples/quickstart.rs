//! streamlog in one page: four threads send a million orders for a thousand customers to a
//! four-partition topic, then one consumer reads every partition back and checks that each
//! order arrived exactly once and, per customer, in the order it was sent.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::time::{Duration, Instant};

use streamlog::{ConsumerConfig, OffsetReset, Queue, Record, TopicPartition};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 4;
const PRODUCER_THREADS: u64 = 4;
const RECORDS: u64 = 1_000_000;
const CUSTOMERS: u64 = 1_000;
const VALUE_BYTES: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("streamlog-quickstart-{}", std::process::id()));
    let outcome = run(&dir);
    std::fs::remove_dir_all(&dir)?;
    let problems = outcome?;
    if problems.is_empty() {
        println!("check: all {RECORDS} records arrived exactly once, each customer's in order");
        Ok(())
    } else {
        for problem in problems.iter().take(10) {
            eprintln!("check failed: {problem}");
        }
        std::process::exit(1);
    }
}

/// Produces, consumes, and returns what the check found wrong (nothing, one hopes).
fn run(dir: &std::path::Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let queue = Queue::open(dir)?;
    queue.create_topic(TOPIC, PARTITIONS)?;
    println!("queue in {}, topic {TOPIC:?} with {PARTITIONS} partitions", dir.display());

    // Record n is for customer n % 1000. As 4 divides 1000, each customer's orders all come
    // from one thread, and a producer keeps the order of one thread's sends to a partition.
    let start = Instant::now();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..PRODUCER_THREADS)
            .map(|thread| {
                let producer = queue.producer();
                scope.spawn(move || -> Result<(), streamlog::Error> {
                    let mut value = [b' '; VALUE_BYTES];
                    for n in (thread..RECORDS).step_by(PRODUCER_THREADS as usize) {
                        let key = format!("customer-{}", n % CUSTOMERS);
                        // The value starts with the order's number among its customer's orders.
                        value[..8].copy_from_slice(&(n / CUSTOMERS).to_le_bytes());
                        producer.send(TOPIC, Record::new(&value).key(key.as_bytes()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        threads.into_iter().try_for_each(|thread| thread.join().expect("a producer thread panicked"))
    })?;
    let produce_elapsed = start.elapsed();

    let config = ConsumerConfig::new("quickstart").auto_offset_reset(OffsetReset::Earliest).max_poll_records(10_000);
    let mut consumer = queue.consumer(config)?;
    let partitions: Vec<_> = (0..PARTITIONS).map(|p| TopicPartition::new(TOPIC, p)).collect();
    consumer.assign(&partitions)?;

    let start = Instant::now();
    let mut next_order = vec![0u64; CUSTOMERS as usize];
    let mut problems = Vec::new();
    let (mut received, mut received_bytes) = (0, 0);
    while received < RECORDS {
        let records = consumer.poll(Duration::from_millis(100))?;
        if records.is_empty() {
            problems.push(format!("only {received} of {RECORDS} records arrived"));
            break;
        }
        for record in &records {
            let key = std::str::from_utf8(record.key().unwrap_or_default())?;
            let customer: usize = key.trim_start_matches("customer-").parse()?;
            let order = u64::from_le_bytes(record.value()[..8].try_into()?);
            if order != next_order[customer] {
                problems.push(format!("{key}: expected order {}, got {order}", next_order[customer]));
            }
            next_order[customer] = order + 1;
            received += 1;
            received_bytes += (key.len() + record.value().len()) as u64;
        }
    }
    let consume_elapsed = start.elapsed();
    if !consumer.poll(Duration::ZERO)?.is_empty() {
        problems.push(format!("more than the {RECORDS} records sent arrived"));
    }
    if received == RECORDS && next_order.iter().any(|&n| n != RECORDS / CUSTOMERS) {
        problems.push("some customer's orders are missing or repeated".into());
    }
    // Both sides moved the same keys and values, counted here.
    report("produced", RECORDS, received_bytes, produce_elapsed, PRODUCER_THREADS);
    report("consumed", received, received_bytes, consume_elapsed, 1);
    Ok(problems)
}

fn report(what: &str, records: u64, bytes: u64, elapsed: Duration, threads: u64) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{what} {records} records with {threads} thread(s) in {:.0} ms: {:.2} M records/s, {:.0} MB/s of keys and values",
        seconds * 1e3,
        records as f64 / seconds / 1e6,
        bytes as f64 / seconds / 1e6,
    );
}
