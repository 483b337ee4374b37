//! The Markdown report, the targets the issue set, and the plots.

use std::fmt::Write as _;
use std::path::Path;

use crate::plot::{self, BarGroup, Series};
use crate::results::{Metric, Results, si};
use crate::workloads::Scale;

/// The Markdown report: machine, tables, targets and notes.
pub fn markdown(results: &Results, scale: &Scale, command: &str) -> String {
    let mut out = String::new();
    writeln!(out, "Machine: {}. Command: `{command}`.\n", machine()).unwrap();
    let sections: [(u8, String, Vec<Metric>); 4] = [
        (1, format!("1. One producer, one consumer, {} records of 100 B (records/s)", scale.records), vec![]),
        (2, format!("2. Four producers, 8 partitions, a group of four consumers, {} records (records/s)", scale.records), vec![]),
        (
            3,
            "3. Fsync before every acknowledgement, one durable log (latency of each send call)".into(),
            vec![Metric::RecordsPerSecond, Metric::P50, Metric::P99, Metric::P999, Metric::Max],
        ),
        (
            4,
            "4. Send-to-arrival latency at a steady 100,000 records/s (records/s: the rate achieved)".into(),
            vec![Metric::RecordsPerSecond, Metric::P50, Metric::P99, Metric::P999, Metric::Max],
        ),
    ];
    for (workload, title, metrics) in sections {
        if results.cases(workload).is_empty() {
            continue;
        }
        writeln!(out, "#### {title}\n").unwrap();
        if metrics.is_empty() {
            out.push_str(&results.by_case(workload, Metric::RecordsPerSecond, &results.cases(workload)));
        } else {
            out.push_str(&results.by_contender(workload, &metrics));
        }
        out.push('\n');
    }
    if !results.cases(5).is_empty() {
        writeln!(out, "#### 5. Growth\n").unwrap();
        for (dimension, title) in [
            ("value bytes", "Record size, one producer and one consumer, end to end (records/s)"),
            ("partitions", "Partitions, one producer sending to all of them (records/s)"),
            ("threads", "Producing threads, 32 partitions (records/s)"),
            ("log MiB", "Log size, read back cold after dropping it from the page cache, 1 KiB values (records/s)"),
        ] {
            let cases = growth_cases(results, dimension);
            if cases.is_empty() {
                continue;
            }
            writeln!(out, "{title}:\n").unwrap();
            out.push_str(&results.by_case(5, Metric::RecordsPerSecond, &cases));
            out.push('\n');
            let memory = match dimension {
                "partitions" => "heap and anonymous RSS added by opening that many partitions and sending to each",
                "log MiB" => "heap and anonymous RSS of the whole harness after reading the log",
                _ => "heap held by the open store after the run",
            };
            writeln!(out, "Memory of streamlog ({memory}):\n").unwrap();
            out.push_str(&memory_table(results, &cases));
            out.push('\n');
        }
    }
    writeln!(out, "#### Targets\n\n{}", targets(results)).unwrap();
    if !results.notes.is_empty() {
        writeln!(out, "#### Notes\n").unwrap();
        for note in &results.notes {
            writeln!(out, "- {note}").unwrap();
        }
    }
    out
}

fn growth_cases(results: &Results, dimension: &str) -> Vec<String> {
    results.cases(5).into_iter().filter(|case| growth_x(case, dimension).is_some()).collect()
}

/// The number in a growth case such as "partitions 100", if the case is of that dimension.
fn growth_x(case: &str, dimension: &str) -> Option<f64> {
    case.strip_prefix(dimension)?.trim().parse().ok()
}

fn memory_table(results: &Results, cases: &[String]) -> String {
    let mut table = "| case | heap | anonymous RSS |\n|---|---:|---:|\n".to_string();
    for case in cases {
        let cell = |metric: Metric| results.get(5, case, "streamlog", metric).map_or("–".into(), |v| metric.format(v));
        if results.get(5, case, "streamlog", Metric::HeapBytes).is_some() {
            writeln!(table, "| {case} | {} | {} |", cell(Metric::HeapBytes), cell(Metric::ResidentAnonymousBytes)).unwrap();
        }
    }
    table
}

/// The targets, each as a measured ratio and whether it was met.
pub fn targets(results: &Results) -> String {
    let mut table = "| target | measured | met |\n|---|---|---|\n".to_string();
    let mut row = |target: &str, measured: Option<(f64, String)>, wanted: &dyn Fn(f64) -> bool| {
        let (cell, met) = match measured {
            Some((value, text)) => (text, if wanted(value) { "yes" } else { "**no**" }),
            None => ("not measured (see the notes)".to_string(), "**no**"),
        };
        writeln!(table, "| {target} | {cell} | {met} |").unwrap();
    };
    let ratio = |workload: u8, case: &str, ours: &str, theirs: &str, metric: Metric| {
        Some(results.get(workload, case, ours, metric)? / results.get(workload, case, theirs, metric)?)
    };
    let times = |r: f64| format!("{r:.1}×");
    for (case, wanted, label) in [("produce, batches of 1000", 1.5, "batches"), ("produce, one at a time", 5.0, "one at a time")]
    {
        let measured = ratio(1, case, "streamlog", "commitlog", Metric::RecordsPerSecond).map(|r| (r, times(r)));
        row(&format!("produce ≥ {wanted}× commitlog, {label}"), measured, &|r| r >= wanted);
    }
    for theirs in ["SQLite (WAL)", "Redis Streams"] {
        let measured = worst_ratio(results, theirs).map(|(r, case)| (r, format!("{} at worst ({case})", times(r))));
        row(&format!("≥ 10× {theirs} in every throughput workload without fsync"), measured, &|r| r >= 10.0);
    }
    let latency = ratio(4, "100 k/s", "streamlog", "crossbeam-channel", Metric::P50)
        .map(|r| (r, format!("{r:.2}× crossbeam-channel's p50")));
    row("one-process latency p50 within 3× of crossbeam-channel", latency, &|r| r <= 3.0);
    for (case, label) in [("16 threads, batches of 64", "batches and pipelines of 64"), ("16 threads", "one record per send")] {
        let fsync = (|| {
            let ours = results.get(3, case, "streamlog (fsync)", Metric::RecordsPerSecond)?;
            let theirs = results.get(3, case, "Redis Streams", Metric::RecordsPerSecond)?;
            let text = format!("{} vs {} records/s ({})", si(ours, ""), si(theirs, ""), times(ours / theirs));
            Some((ours / theirs, text))
        })();
        row(&format!("fsync before ack, 16 threads ≥ Redis with appendfsync always, {label}"), fsync, &|r| r >= 1.0);
    }
    let idle = results.get(5, "partitions 10000", "streamlog", Metric::HeapBytes).map(|h| (h, Metric::HeapBytes.format(h)));
    row("heap for 10,000 idle partitions < 64 MiB", idle, &|h| h < 64.0 * (1 << 20) as f64);
    let cold = growth_cases(results, "log MiB");
    let growth = (|| {
        let first = results.get(5, cold.first()?, "streamlog", Metric::HeapBytes)?;
        let last = results.get(5, cold.last()?, "streamlog", Metric::HeapBytes)?;
        Some((
            last - first,
            format!(
                "heap {} after {}, {} after {}",
                Metric::HeapBytes.format(first),
                cold.first()?,
                Metric::HeapBytes.format(last),
                cold.last()?
            ),
        ))
    })();
    row("memory does not grow with the log", growth, &|d| d < (4 << 20) as f64);
    table
}

/// The smallest ratio of streamlog's records/s over `theirs` across the throughput cases that
/// do not wait for fsync (with fsync, every contender waits for the same disk flush).
fn worst_ratio(results: &Results, theirs: &str) -> Option<(f64, String)> {
    let mut worst: Option<(f64, String)> = None;
    for row in results.rows.iter().filter(|r| r.contender == theirs && r.metric == Metric::RecordsPerSecond && r.workload != 3) {
        let ours = "streamlog";
        let Some(value) = results.get(row.workload, &row.case, ours, Metric::RecordsPerSecond) else { continue };
        let r = value / row.value;
        if worst.as_ref().is_none_or(|(w, _)| r < *w) {
            worst = Some((r, format!("workload {}, {}", row.workload, row.case)));
        }
    }
    worst
}

/// Writes the plots into `dir`; returns their file names.
pub fn plots(results: &Results, dir: &Path) -> std::io::Result<Vec<String>> {
    let mut written = Vec::new();
    if !results.cases(1).is_empty() {
        let groups: Vec<BarGroup> = results
            .cases(1)
            .into_iter()
            .map(|case| BarGroup {
                bars: results
                    .contenders(1)
                    .into_iter()
                    .filter_map(|c| Some((c.clone(), results.get(1, &case, &c, Metric::RecordsPerSecond)?)))
                    .collect(),
                // Short enough to sit under its group of bars.
                case: case.replace("end to end", "e2e").replace("one at a time", "1 by 1").replace("batches of ", "×"),
            })
            .collect();
        plot::bar_chart(&dir.join("one-to-one.svg"), "One producer, one consumer, 100 B records", "records/s", true, &groups)?;
        written.push("one-to-one.svg".into());
    }
    if !results.cases(4).is_empty() {
        let groups: Vec<BarGroup> = [Metric::P50, Metric::P99, Metric::P999]
            .into_iter()
            .map(|metric| BarGroup {
                case: metric.label().into(),
                bars: results
                    .contenders(4)
                    .into_iter()
                    .filter_map(|c| Some((c.clone(), results.get(4, "100 k/s", &c, metric)? / 1e3)))
                    .collect(),
            })
            .collect();
        plot::bar_chart(&dir.join("latency.svg"), "Send-to-arrival latency at 100,000 records/s", "µs", true, &groups)?;
        written.push("latency.svg".into());
    }
    for (dimension, file, title, x_label) in [
        ("value bytes", "record-size.svg", "Records/s by record size (end to end)", "value bytes"),
        ("partitions", "partitions.svg", "Records/s by partition count (producing)", "partitions"),
        ("threads", "threads.svg", "Records/s by producing threads", "threads"),
    ] {
        let cases = growth_cases(results, dimension);
        if cases.is_empty() {
            continue;
        }
        let series: Vec<Series> = results
            .contenders(5)
            .into_iter()
            .map(|name| Series {
                points: cases
                    .iter()
                    .filter_map(|case| Some((growth_x(case, dimension)?, results.get(5, case, &name, Metric::RecordsPerSecond)?)))
                    .collect(),
                name,
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        plot::line_chart(&dir.join(file), title, x_label, "records/s", true, true, &series)?;
        written.push(file.into());
    }
    Ok(written)
}

/// CPU model, cores, memory and kernel, read from /proc.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']).to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = crate::measure::memory_bytes() as f64 / (1u64 << 30) as f64;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{}, {cores} cores, {:.0} GiB RAM, Linux {}",
        model.unwrap_or_else(|| "unknown CPU".into()),
        memory_gib,
        kernel.trim()
    )
}
