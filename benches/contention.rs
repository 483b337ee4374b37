//! N producers on one partition, as threads of one process and as separate processes, each
//! sending 100-byte records one at a time: the total rate, and its ratio to one producer in
//! the same run.
//!
//! `cargo bench --bench contention` prints the table; `cargo test` runs it tiny, as a test.
//! The process rows run this same program as its children (`--child DIR COUNT`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{Report, ScratchDir, millions_per_second, per_second};
use streamlog::{Queue, Record, TopicPartition};

const TOPIC: &str = "t";
const VALUE_BYTES: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        child(Path::new(&args[at + 1]), args[at + 2].parse().expect("a record count"));
        return;
    }
    let full = common::full_mode();
    if full {
        common::settle();
    }
    let records: u64 = if full { 4_000_000 } else { 4_000 };
    let rounds = if full { 3 } else { 1 };
    let counts = [1usize, 2, 4];
    // The best of the rounds, the counts interleaved within each.
    let mut threads = [0.0f64; 3];
    let mut processes = [0.0f64; 3];
    for _ in 0..rounds {
        for (i, &n) in counts.iter().enumerate() {
            threads[i] = threads[i].max(with_threads(n, records));
            processes[i] = processes[i].max(with_processes(n, records));
        }
    }
    let mut report = Report::default();
    for (kind, rates) in [("threads", threads), ("processes", processes)] {
        for (i, &n) in counts.iter().enumerate() {
            let ratio = rates[i] / rates[0];
            let (target, met) = match n {
                1 => ("", None),
                2 => ("≥ 1.5× one", Some(ratio >= 1.5)),
                _ => ("≥ 1× one", Some(ratio >= 1.0)),
            };
            let measured = format!("{} ({ratio:.2}× one)", millions_per_second(rates[i]));
            report.add(&format!("{n} producer {kind}, one partition, `send` of 100 B"), measured, target, met);
        }
    }
    report.print("Producers on one partition", full);
}

fn fresh_queue(dir: &ScratchDir) -> Queue {
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic(TOPIC, 1).expect("create the topic");
    queue
}

/// Records per second of `n` threads of this process sending `records` in all.
fn with_threads(n: usize, records: u64) -> f64 {
    let dir = ScratchDir::new("contention-threads");
    let queue = fresh_queue(&dir);
    let each = records / n as u64;
    let barrier = std::sync::Barrier::new(n + 1);
    let elapsed = std::thread::scope(|scope| {
        for _ in 0..n {
            scope.spawn(|| {
                let producer = queue.producer();
                let value = [1u8; VALUE_BYTES];
                barrier.wait();
                for _ in 0..each {
                    producer.send(TOPIC, Record::new(&value)).expect("send");
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins the senders before it returns.
        start
    })
    .elapsed();
    assert_eq!(queue.offsets(&TopicPartition::new(TOPIC, 0)).expect("offsets"), (0, each * n as u64));
    per_second(each * n as u64, elapsed)
}

/// Records per second of `n` child processes sending `records` in all, timed from the moment
/// all of them have the queue open to the moment the last one is done.
fn with_processes(n: usize, records: u64) -> f64 {
    let dir = ScratchDir::new("contention-processes");
    let queue = fresh_queue(&dir);
    let each = records / n as u64;
    let program = std::env::current_exe().expect("this program's path");
    let mut children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(&program)
                .arg("--child")
                .arg(dir.path())
                .arg(each.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a child")
        })
        .collect();
    for child in &mut children {
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("the child's stdout")).read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "ready");
    }
    let start = Instant::now();
    for child in &mut children {
        child.stdin.take().expect("the child's stdin").write_all(b"go\n").expect("start the child");
    }
    for mut child in children {
        assert!(child.wait().expect("wait for the child").success(), "a child failed");
    }
    let elapsed = start.elapsed();
    assert_eq!(queue.offsets(&TopicPartition::new(TOPIC, 0)).expect("offsets"), (0, each * n as u64));
    per_second(each * n as u64, elapsed)
}

/// A child: opens the queue in `dir`, says it is ready, waits for the go, sends `count`.
fn child(dir: &Path, count: u64) {
    let queue = Queue::open(dir).expect("open the queue");
    let producer = queue.producer();
    // Open the partition before the clock starts.
    producer.send(TOPIC, Record::new(b"")).expect("send");
    println!("ready");
    std::io::stdout().flush().expect("flush");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("wait for the go");
    let value = [2u8; VALUE_BYTES];
    for _ in 1..count {
        producer.send(TOPIC, Record::new(&value)).expect("send");
    }
}
