//! How long reopening a large log takes: after a clean shutdown, and after the writing process
//! was killed with SIGKILL (recovery then checks the unsynced tail).
//!
//! `cargo bench --bench recovery` writes 10 GiB; `cargo test` runs it tiny, as a test.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{Report, ScratchDir};
use streamlog::{Queue, Record, TopicConfig, TopicPartition};

const TOPIC: &str = "big";
const VALUE_BYTES: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("writer") {
        return writer(Path::new(&args[2]), args[3].parse().unwrap(), args[4].parse().unwrap());
    }
    let full = common::full_mode();
    if full {
        common::settle();
    }
    let (total_bytes, segment_bytes) = if full { (10u64 << 30, 1u64 << 30) } else { (16 << 20, 1 << 20) };
    let mut report = Report::default();
    for killed in [false, true] {
        let dir = ScratchDir::new("recovery");
        let records = write_log(dir.path(), total_bytes, segment_bytes, killed);
        let started = Instant::now();
        let queue = Queue::open(dir.path()).expect("reopen");
        let (start, end) = queue.offsets(&TopicPartition::new(TOPIC, 0)).expect("recover the partition");
        let elapsed = started.elapsed();
        assert_eq!((start, end), (0, records), "every acknowledged record is still there");
        let how = if killed { "after the writer was killed (SIGKILL)" } else { "after a clean shutdown" };
        let size = format!("{:.1} GiB", total_bytes as f64 / f64::from(1u32 << 30));
        report.add(
            &format!("reopen a {size} log {how}"),
            format!("{:.1} ms", elapsed.as_secs_f64() * 1e3),
            "< 1 s",
            Some(elapsed.as_secs() < 1),
        );
    }
    report.print("Recovery", full);
}

/// Writes about `total_bytes` of records in a child process and returns how many were written.
/// The child either exits cleanly or is killed as soon as it has acknowledged them all.
fn write_log(dir: &Path, total_bytes: u64, segment_bytes: u64, kill: bool) -> u64 {
    let queue = Queue::open(dir).expect("open");
    queue.create_topic_with(TOPIC, TopicConfig::new(1).segment_bytes(segment_bytes)).expect("create the topic");
    drop(queue);
    let records = total_bytes / VALUE_BYTES as u64;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["writer", &dir.display().to_string(), &records.to_string(), &u8::from(kill).to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the writer reports");
    assert_eq!(line.trim(), "written");
    if kill {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    records
}

fn writer(dir: &Path, records: u64, wait_for_kill: u8) {
    let queue = Queue::open(dir).expect("open");
    let producer = queue.producer();
    let value = [b'r'; VALUE_BYTES];
    let mut sent = 0;
    while sent < records {
        let batch = (records - sent).min(1000);
        producer.send_batch(TOPIC, (0..batch).map(|_| Record::new(&value))).expect("send");
        sent += batch;
    }
    println!("written");
    if wait_for_kill == 1 {
        std::thread::park();
    }
    drop((producer, queue));
}
