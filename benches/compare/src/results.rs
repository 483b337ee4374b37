//! Measurements as they are taken, and the Markdown tables made from them.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// What a number measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    RecordsPerSecond,
    MegabytesPerSecond,
    P50,
    P99,
    P999,
    Max,
    HeapBytes,
    ResidentAnonymousBytes,
}

impl Metric {
    pub fn label(self) -> &'static str {
        match self {
            Metric::RecordsPerSecond => "records/s",
            Metric::MegabytesPerSecond => "MB/s",
            Metric::P50 => "p50",
            Metric::P99 => "p99",
            Metric::P999 => "p99.9",
            Metric::Max => "max",
            Metric::HeapBytes => "heap",
            Metric::ResidentAnonymousBytes => "anonymous RSS",
        }
    }

    pub fn format(self, value: f64) -> String {
        match self {
            Metric::RecordsPerSecond => si(value, ""),
            Metric::MegabytesPerSecond => format!("{value:.0}"),
            Metric::P50 | Metric::P99 | Metric::P999 | Metric::Max => duration(value),
            Metric::HeapBytes | Metric::ResidentAnonymousBytes if value < (1 << 20) as f64 => {
                format!("{:.0} KiB", value / 1024.0)
            }
            Metric::HeapBytes | Metric::ResidentAnonymousBytes => format!("{:.1} MiB", value / (1 << 20) as f64),
        }
    }
}

/// 1234567 → "1.23 M".
pub fn si(value: f64, unit: &str) -> String {
    let (scaled, prefix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, " G"),
        v if v >= 1e6 => (value / 1e6, " M"),
        v if v >= 1e3 => (value / 1e3, " k"),
        _ => (value, " "),
    };
    let digits = if scaled.abs() >= 100.0 {
        0
    } else if scaled.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.digits$}{prefix}{unit}").trim_end().to_string()
}

/// Nanoseconds → "850 ns", "12.3 µs", "4.1 ms".
pub fn duration(ns: f64) -> String {
    match ns {
        v if v >= 1e9 => format!("{:.2} s", v / 1e9),
        v if v >= 1e6 => format!("{:.1} ms", v / 1e6),
        v if v >= 1e3 => format!("{:.1} µs", v / 1e3),
        v => format!("{v:.0} ns"),
    }
}

/// One number: what was measured, on which case of which workload, for which contender.
#[derive(Debug, Clone)]
pub struct Row {
    pub workload: u8,
    pub case: String,
    pub contender: String,
    pub metric: Metric,
    pub value: f64,
}

#[derive(Default)]
pub struct Results {
    pub rows: Vec<Row>,
    /// Remarks printed under the tables: skipped contenders, errors, caps.
    pub notes: Vec<String>,
}

impl Results {
    pub fn add(&mut self, workload: u8, case: &str, contender: &str, metric: Metric, value: f64) {
        eprintln!("  {workload} | {case} | {contender} | {} = {}", metric.label(), metric.format(value));
        self.rows.push(Row { workload, case: case.into(), contender: contender.into(), metric, value });
    }

    pub fn note(&mut self, note: String) {
        eprintln!("  note: {note}");
        self.notes.push(note);
    }

    pub fn get(&self, workload: u8, case: &str, contender: &str, metric: Metric) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.workload == workload && r.case == case && r.contender == contender && r.metric == metric)
            .map(|r| r.value)
    }

    /// Cases of a workload in the order first measured.
    pub fn cases(&self, workload: u8) -> Vec<String> {
        unique(self.rows.iter().filter(|r| r.workload == workload).map(|r| r.case.clone()))
    }

    pub fn contenders(&self, workload: u8) -> Vec<String> {
        unique(self.rows.iter().filter(|r| r.workload == workload).map(|r| r.contender.clone()))
    }

    /// A table with one row per case and one column per contender, of one metric.
    pub fn by_case(&self, workload: u8, metric: Metric, cases: &[String]) -> String {
        let contenders = self.contenders(workload);
        let mut table = format!("| {} |", metric.label());
        for contender in &contenders {
            write!(table, " {contender} |").unwrap();
        }
        table.push_str(&format!("\n|---|{}\n", "---:|".repeat(contenders.len())));
        for case in cases {
            write!(table, "| {case} |").unwrap();
            for contender in &contenders {
                let cell = self.get(workload, case, contender, metric).map_or("–".into(), |v| metric.format(v));
                write!(table, " {cell} |").unwrap();
            }
            table.push('\n');
        }
        table
    }

    /// A table with one row per contender and case, and one column per metric.
    pub fn by_contender(&self, workload: u8, metrics: &[Metric]) -> String {
        let mut table = "| contender | case |".to_string();
        for metric in metrics {
            write!(table, " {} |", metric.label()).unwrap();
        }
        table.push_str(&format!("\n|---|---|{}\n", "---:|".repeat(metrics.len())));
        for contender in self.contenders(workload) {
            for case in self.cases(workload) {
                if !metrics.iter().any(|&m| self.get(workload, &case, &contender, m).is_some()) {
                    continue;
                }
                write!(table, "| {contender} | {case} |").unwrap();
                for &metric in metrics {
                    let cell = self.get(workload, &case, &contender, metric).map_or("–".into(), |v| metric.format(v));
                    write!(table, " {cell} |").unwrap();
                }
                table.push('\n');
            }
        }
        table
    }
}

fn unique(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items.filter(|item| seen.insert(item.clone())).collect()
}
