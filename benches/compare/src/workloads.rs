//! The five workloads of the comparison, each recording its numbers in `Results`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::contender::{Ack, Contender, Feature, Res, Spec, Store};
use crate::drive::{self, Outcome, Run};
use crate::measure::{heap_bytes, percentiles, rate, resident_anonymous};
use crate::results::{Metric, Results};

/// How big a run is: full for the README, tiny for the test suite.
#[derive(Debug, Clone)]
pub struct Scale {
    /// Records in workloads 1 and 2.
    pub records: u64,
    /// Longest a producer phase may run; slow contenders send fewer records in that time.
    pub cap: Duration,
    /// Runs of workload 1 whose median is reported.
    pub repeats: usize,
    /// How long workloads 3 and 4 run for each contender.
    pub timed: Duration,
    /// Bytes each record-size step of workload 5 sends.
    pub size_budget: u64,
    pub partition_counts: Vec<u32>,
    pub thread_counts: Vec<usize>,
    /// Log sizes for the cold-read part of workload 5.
    pub log_sizes: Vec<u64>,
}

impl Scale {
    pub fn full() -> Scale {
        Scale {
            records: 5_000_000,
            cap: Duration::from_secs(10),
            repeats: 3,
            timed: Duration::from_secs(5),
            size_budget: 1 << 30,
            partition_counts: vec![1, 10, 100, 1_000, 10_000],
            thread_counts: vec![1, 2, 4, 8, 16, 32],
            log_sizes: vec![1 << 30, 8 << 30, crate::measure::memory_bytes() / 4 * 5],
        }
    }

    pub fn tiny() -> Scale {
        Scale {
            records: 2_000,
            cap: Duration::from_secs(5),
            repeats: 1,
            timed: Duration::from_millis(200),
            size_budget: 4 << 20,
            partition_counts: vec![1, 100],
            thread_counts: vec![1, 4],
            log_sizes: vec![4 << 20],
        }
    }
}

pub const VALUE_BYTES: usize = 100;

/// A workload: runs against every able contender and records what it measures.
pub type Workload = fn(&Bench, &mut Results);

/// Everything a workload needs: the contenders, the scale and a scratch directory.
pub struct Bench {
    pub contenders: Vec<Box<dyn Contender>>,
    pub scale: Scale,
    pub scratch: PathBuf,
}

impl Bench {
    /// Opens a fresh store of `contender` in an empty scratch directory. The directory comes
    /// first so that it is dropped (removed) after the store.
    fn open(&self, contender: &dyn Contender, spec: &Spec) -> Res<(Scratch, Arc<dyn Store>)> {
        // Earlier runs leave gigabytes of dirty pages; writing them back now keeps that work
        // from landing on (and slowing) whichever contender comes next.
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        let scratch = Scratch::new(&self.scratch);
        let store = contender.open(&scratch.0, spec)?;
        Ok((scratch, store))
    }

    /// Contenders that can run `spec` with `feature`.
    fn able(&self, spec: &Spec, feature: Feature) -> Vec<&dyn Contender> {
        self.contenders.iter().map(|c| &**c).filter(|c| c.supports(spec, feature)).collect()
    }
}

/// Runs `measure` and records its error as a note instead of stopping the whole run.
fn attempt(results: &mut Results, what: &str, contender: &str, measure: impl FnOnce(&mut Results) -> Res<()>) {
    if let Err(error) = measure(results) {
        results.note(format!("{what}: {contender} failed: {error}"));
    }
}

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(root: &Path) -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = root.join(format!("run-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("scratch directory");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn buffered(partitions: u32, max_value_bytes: usize) -> Spec {
    Spec { partitions, ack: Ack::Buffered, max_value_bytes }
}

/// Notes when a contender sent fewer records than asked because the time cap ran out.
fn note_cap(results: &mut Results, workload: u8, case: &str, contender: &str, asked: u64, outcome: &Outcome) {
    if outcome.produced < asked {
        results.note(format!(
            "workload {workload}, {case}: {contender} sent {} of {asked} records in the {:.0} s cap",
            outcome.produced,
            outcome.produce_time.as_secs_f64()
        ));
    }
}

/// 1. One producer, one consumer: producing (one at a time and in batches), consuming what
///    is there, and end to end with both running. Each number is the median of
///    `Scale::repeats` runs, because single runs on a shared machine vary by up to 2×.
pub fn one_to_one(bench: &Bench, all: &mut Results) {
    let spec = buffered(1, VALUE_BYTES);
    let records = bench.scale.records;
    let cap = bench.scale.cap;
    for contender in bench.able(&spec, Feature::Basic) {
        let name = contender.name();
        eprintln!("workload 1: {name}");
        for (case, batch) in [("one at a time", 1), ("batches of 1000", 1000)] {
            attempt(all, "workload 1", &name, |results| {
                let produce = format!("produce, {case}");
                let end_to_end = format!("end to end, {case}");
                let mut samples: Vec<(&str, f64)> = Vec::new();
                for repeat in 0..bench.scale.repeats {
                    let (_scratch, store) = bench.open(contender, &spec)?;
                    let sent = drive::run(&store, &Run::produce(records, batch, VALUE_BYTES, cap), "w1")?;
                    if repeat == 0 {
                        note_cap(results, 1, &produce, &name, records, &sent);
                    }
                    samples.push((&produce, rate(sent.produced, sent.produce_time)));
                    if batch == 1 {
                        let read = drive::run(&store, &Run::consume(sent.produced, 1), "w1")?;
                        samples.push(("consume", rate(read.consumed, read.total_time)));
                    }
                    drop((store, _scratch));
                    let (_scratch, store) = bench.open(contender, &spec)?;
                    let both = drive::run(&store, &Run { consumers: 1, ..Run::produce(records, batch, VALUE_BYTES, cap) }, "w1")?;
                    if repeat == 0 {
                        note_cap(results, 1, &end_to_end, &name, records, &both);
                    }
                    samples.push((&end_to_end, rate(both.consumed, both.total_time)));
                }
                for case in [produce.as_str(), "consume", end_to_end.as_str()] {
                    let mut values: Vec<f64> = samples.iter().filter(|(c, _)| *c == case).map(|&(_, v)| v).collect();
                    if !values.is_empty() {
                        values.sort_by(f64::total_cmp);
                        results.add(1, case, &name, Metric::RecordsPerSecond, values[values.len() / 2]);
                    }
                }
                Ok(())
            });
        }
    }
}

/// 2. Four producers into eight partitions, read by a group of four: threads in one process,
///    then (for streamlog) separate processes.
pub fn fan_in_fan_out(bench: &Bench, all: &mut Results) {
    let spec = buffered(8, VALUE_BYTES);
    let records = bench.scale.records;
    for contender in bench.able(&spec, Feature::Groups) {
        let name = contender.name();
        eprintln!("workload 2: {name}");
        if !contender.supports(&spec, Feature::ConcurrentProducers) {
            continue;
        }
        attempt(all, "workload 2", &name, |results| {
            let (_scratch, store) = bench.open(contender, &spec)?;
            let run = Run { producers: 4, consumers: 4, ..Run::produce(records, 1, VALUE_BYTES, bench.scale.cap) };
            let outcome = drive::run(&store, &run, "w2")?;
            note_cap(results, 2, "threads", &name, records, &outcome);
            results.add(2, "threads", &name, Metric::RecordsPerSecond, rate(outcome.consumed, outcome.total_time));
            Ok(())
        });
    }
    attempt(all, "workload 2", "streamlog", |results| {
        let scratch = Scratch::new(&bench.scratch);
        let (sent, elapsed) = crate::processes::fan_in_fan_out(&scratch.0, records)?;
        results.add(2, "processes", "streamlog", Metric::RecordsPerSecond, rate(sent, elapsed));
        Ok(())
    });
}

/// 3. Every send waits for an fsync: 1 and 16 threads sending one record at a time, and 16
///    threads sending batches (pipelines) of 64.
pub fn fsync_before_ack(bench: &Bench, all: &mut Results) {
    // One partition: a single durable log, like Redis's append-only file and SQLite's WAL.
    let spec = Spec { partitions: 1, ack: Ack::Fsync, max_value_bytes: VALUE_BYTES };
    for contender in bench.able(&spec, Feature::Basic) {
        let name = contender.name();
        eprintln!("workload 3: {name}");
        for (case, threads, batch) in [("1 thread", 1, 1), ("16 threads", 16, 1), ("16 threads, batches of 64", 16, 64)] {
            if threads > 1 && !contender.supports(&spec, Feature::ConcurrentProducers) {
                continue;
            }
            attempt(all, "workload 3", &name, |results| {
                let (_scratch, store) = bench.open(contender, &spec)?;
                let run =
                    Run { producers: threads, timed: true, ..Run::produce(u64::MAX / 2, batch, VALUE_BYTES, bench.scale.timed) };
                let outcome = drive::run(&store, &run, "w3")?;
                results.add(3, case, &name, Metric::RecordsPerSecond, rate(outcome.produced, outcome.produce_time));
                let [p50, p99, p999, max] = percentiles(&outcome.send_latency);
                for (metric, value) in [(Metric::P50, p50), (Metric::P99, p99), (Metric::P999, p999), (Metric::Max, max)] {
                    results.add(3, case, &name, metric, value as f64);
                }
                Ok(())
            });
        }
    }
}

/// 4. Latency from send to arrival while one producer sends a steady 100,000 records/s.
pub fn steady_latency(bench: &Bench, all: &mut Results) {
    const RATE: f64 = 100_000.0;
    let spec = buffered(1, VALUE_BYTES);
    for contender in bench.able(&spec, Feature::Basic) {
        let name = contender.name();
        eprintln!("workload 4: {name}");
        attempt(all, "workload 4", &name, |results| {
            let (_scratch, store) = bench.open(contender, &spec)?;
            let records = (RATE * bench.scale.timed.as_secs_f64()) as u64;
            let run = Run {
                consumers: 1,
                pace: Some(RATE),
                timed: true,
                ..Run::produce(records, 1, VALUE_BYTES, bench.scale.timed * 4)
            };
            let outcome = drive::run(&store, &run, "w4")?;
            let case = "100 k/s";
            let achieved = rate(outcome.produced, outcome.produce_time);
            results.add(4, case, &name, Metric::RecordsPerSecond, achieved);
            if achieved < RATE * 0.95 {
                results.note(format!(
                    "workload 4: {name} kept up only {achieved:.0} records/s of the {RATE:.0} asked, so its latencies include the growing backlog"
                ));
            }
            let [p50, p99, p999, max] = percentiles(&outcome.delivery_latency);
            for (metric, value) in [(Metric::P50, p50), (Metric::P99, p99), (Metric::P999, p999), (Metric::Max, max)] {
                results.add(4, case, &name, metric, value as f64);
            }
            Ok(())
        });
    }
}

/// 5. How cost grows: with record size, partitions, producing threads and log size.
pub fn growth(bench: &Bench, all: &mut Results) {
    growth_record_size(bench, all);
    growth_partitions(bench, all);
    growth_threads(bench, all);
    growth_cold_log(bench, all);
}

/// A case name whose numeric part plots on the x axis: "size 4096 B".
pub fn growth_case(dimension: &str, x: u64) -> String {
    format!("{dimension} {x}")
}

fn growth_record_size(bench: &Bench, all: &mut Results) {
    for bytes in [16usize, 256, 4096, 65536, 1 << 20] {
        let spec = buffered(1, bytes);
        let records = (bench.scale.size_budget / bytes as u64).clamp(16, bench.scale.records);
        for contender in bench.able(&spec, Feature::Basic) {
            let name = contender.name();
            eprintln!("workload 5, {bytes} B records: {name}");
            attempt(all, "workload 5 (record size)", &name, |results| {
                let heap_before = heap_bytes();
                let (_scratch, store) = bench.open(contender, &spec)?;
                let batch = (1 << 20) / bytes.max(1024);
                let run = Run { consumers: 1, ..Run::produce(records, batch.max(1), bytes, bench.scale.cap) };
                let outcome = drive::run(&store, &run, "w5")?;
                let case = growth_case("value bytes", bytes as u64);
                if name == "streamlog" {
                    results.add(5, &case, &name, Metric::HeapBytes, heap_bytes().saturating_sub(heap_before) as f64);
                }
                add_rates(results, &case, &name, &outcome, bytes);
                Ok(())
            });
        }
    }
}

fn growth_partitions(bench: &Bench, all: &mut Results) {
    for &partitions in &bench.scale.partition_counts.clone() {
        let spec = buffered(partitions, VALUE_BYTES);
        for contender in bench.able(&spec, Feature::Partitions) {
            let name = contender.name();
            eprintln!("workload 5, {partitions} partitions: {name}");
            attempt(all, "workload 5 (partitions)", &name, |results| {
                let heap_before = heap_bytes();
                let anonymous_before = resident_anonymous();
                let (_scratch, store) = bench.open(contender, &spec)?;
                // Touch every partition once, so that each is open: the idle cost of a partition.
                let mut producer = store.producer()?;
                let value = [0u8; VALUE_BYTES];
                let mut key = 0;
                while key < u64::from(partitions) * 4 {
                    producer.send(key, &value)?;
                    key += 1;
                }
                let case = growth_case("partitions", u64::from(partitions));
                if name.starts_with("streamlog") {
                    results.add(5, &case, &name, Metric::HeapBytes, heap_bytes().saturating_sub(heap_before) as f64);
                    let anonymous = resident_anonymous().saturating_sub(anonymous_before);
                    results.add(5, &case, &name, Metric::ResidentAnonymousBytes, anonymous as f64);
                }
                let records = bench.scale.records.min(1_000_000);
                let run = Run { producers: 1, ..Run::produce(records, 1, VALUE_BYTES, bench.scale.cap) };
                let outcome = drive::run(&store, &run, "w5")?;
                results.add(5, &case, &name, Metric::RecordsPerSecond, rate(outcome.produced, outcome.produce_time));
                Ok(())
            });
        }
    }
}

fn growth_threads(bench: &Bench, all: &mut Results) {
    let spec = buffered(32, VALUE_BYTES);
    for &threads in &bench.scale.thread_counts.clone() {
        for contender in bench.able(&spec, Feature::ConcurrentProducers) {
            let name = contender.name();
            eprintln!("workload 5, {threads} producing threads: {name}");
            attempt(all, "workload 5 (threads)", &name, |results| {
                let heap_before = heap_bytes();
                let (_scratch, store) = bench.open(contender, &spec)?;
                let run = Run { producers: threads, ..Run::produce(bench.scale.records, 1, VALUE_BYTES, bench.scale.cap) };
                let outcome = drive::run(&store, &run, "w5")?;
                let case = growth_case("threads", threads as u64);
                if name == "streamlog" {
                    results.add(5, &case, &name, Metric::HeapBytes, heap_bytes().saturating_sub(heap_before) as f64);
                }
                results.add(5, &case, &name, Metric::RecordsPerSecond, rate(outcome.produced, outcome.produce_time));
                Ok(())
            });
        }
    }
}

/// Writes logs of growing size, drops them from the page cache, and reads them back cold;
/// memory is read after each step to show it does not grow with the log.
fn growth_cold_log(bench: &Bench, all: &mut Results) {
    const COLD_VALUE_BYTES: usize = 1024;
    let spec = buffered(1, COLD_VALUE_BYTES);
    for contender in bench.able(&spec, Feature::Basic) {
        let name = contender.name();
        if !(name == "streamlog" || name == "commitlog") {
            continue;
        }
        for &log_bytes in &bench.scale.log_sizes.clone() {
            eprintln!("workload 5, cold {} MiB log: {name}", log_bytes >> 20);
            attempt(all, "workload 5 (cold log)", &name, |results| {
                let (scratch, store) = bench.open(contender, &spec)?;
                let records = log_bytes / COLD_VALUE_BYTES as u64;
                let run = Run::produce(records, 1000, COLD_VALUE_BYTES, Duration::from_secs(3600));
                drive::run(&store, &run, "w5")?;
                evict_directory(&scratch.0)?;
                let case = growth_case("log MiB", log_bytes >> 20);
                let outcome = drive::run(&store, &Run::consume(records, 1), "w5")?;
                add_rates(results, &case, &name, &outcome, COLD_VALUE_BYTES);
                results.add(5, &case, &name, Metric::HeapBytes, heap_bytes() as f64);
                results.add(5, &case, &name, Metric::ResidentAnonymousBytes, resident_anonymous() as f64);
                Ok(())
            });
        }
    }
}

/// Records and megabytes of values read per second, from start to the last arrival.
fn add_rates(results: &mut Results, case: &str, name: &str, outcome: &Outcome, value_bytes: usize) {
    results.add(5, case, name, Metric::RecordsPerSecond, rate(outcome.consumed, outcome.total_time));
    let megabytes_per_second = rate(outcome.consumed * value_bytes as u64, outcome.total_time) / 1e6;
    results.add(5, case, name, Metric::MegabytesPerSecond, megabytes_per_second);
}

/// Drops every file under `dir` from the page cache.
fn evict_directory(dir: &Path) -> Res<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            evict_directory(&path)?;
        } else {
            crate::measure::evict_from_page_cache(&path)?;
        }
    }
    Ok(())
}
