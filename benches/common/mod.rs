//! What the benchmarks share: tiny or full mode, scratch directories, a clock every process
//! agrees on, percentiles, the results table, and the limit probe.

#![allow(dead_code, reason = "each benchmark uses a different part of this module")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Whether `cargo bench` started this program (it passes `--bench`). Without it the program
/// runs as a test under `cargo test`: at a tiny size, still checking every result.
pub fn full_mode() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Writes back every dirty page on the machine (earlier runs leave gigabytes), so that their
/// writeback does not compete with the measurement for the disk and for one of the two cores.
pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// A directory under `std::env::temp_dir()` (on the real disk here, so fsync costs what it
/// costs), removed on drop so that a failed assertion does not leave gigabytes behind.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        static CREATED: AtomicU32 = AtomicU32::new(0);
        let unique = CREATED.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("streamlog-bench-{name}-{}-{unique}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        ScratchDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Nanoseconds on CLOCK_MONOTONIC. Unlike an `Instant`, the number means the same in every
/// process on the machine, so a sender can put it in a record for another process to compare.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this stack.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Spins until CLOCK_MONOTONIC reaches `deadline_ns`: sleeping cannot pace to microseconds.
pub fn spin_until(deadline_ns: u64) {
    while monotonic_ns() < deadline_ns {
        std::hint::spin_loop();
    }
}

/// Events per second.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub fn millions_per_second(rate: f64) -> String {
    format!("{:.2} M/s", rate / 1e6)
}

pub fn megabytes_per_second(rate_bytes: f64) -> String {
    format!("{:.0} MB/s", rate_bytes / 1e6)
}

pub fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

/// Latency percentiles of a set of samples.
pub struct Percentiles {
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Percentiles {
    pub fn of(mut samples_ns: Vec<u64>) -> Percentiles {
        assert!(!samples_ns.is_empty(), "no latency samples");
        samples_ns.sort_unstable();
        let at = |fraction: f64| samples_ns[((samples_ns.len() - 1) as f64 * fraction).round() as usize];
        Percentiles { p50_ns: at(0.5), p99_ns: at(0.99), p999_ns: at(0.999), max_ns: at(1.0) }
    }
}

/// The rows of a results table: what was measured, the number, and the target if there is one.
#[derive(Default)]
pub struct Report {
    rows: Vec<[String; 4]>,
}

impl Report {
    /// Adds a row; `met` is `None` for numbers that have no target (references).
    pub fn add(&mut self, what: &str, measured: String, target: &str, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        self.rows.push([what.to_owned(), measured, target.to_owned(), verdict.to_owned()]);
    }

    /// Prints the table in Markdown in full mode. A tiny run's numbers mean nothing, so it
    /// prints only that it passed its checks.
    pub fn print(&self, title: &str, full: bool) {
        if !full {
            println!("{title}: tiny run passed its checks ({} measurements)", self.rows.len());
            return;
        }
        println!("\n### {title}\n");
        println!("| measurement | result | target | met |");
        println!("|---|---:|---|---|");
        for [what, measured, target, verdict] in &self.rows {
            println!("| {what} | {measured} | {target} | {verdict} |");
        }
        println!();
    }
}

/// The limit probe the append path is measured against: the fastest append a shared log file
/// allows. Each record is a 16-byte header (length, CRC32, sequence) and its value, reserved
/// with one atomic `fetch_add` and published with one release store, in a file mapping whose
/// pages are all mapped writable beforehand.
pub struct ProbeLog {
    map: memmap2::MmapMut,
    reserved: std::sync::atomic::AtomicUsize,
    published: std::sync::atomic::AtomicUsize,
}

impl ProbeLog {
    pub const HEADER_BYTES: usize = 16;

    /// A new file of `bytes` at `path`, mapped and prefaulted.
    pub fn create(path: &Path, bytes: usize) -> ProbeLog {
        let file = std::fs::File::options().read(true).write(true).create_new(true).open(path).expect("create a file");
        file.set_len(bytes as u64).expect("size a file");
        // SAFETY: the file was just created in this run's own scratch directory; nothing else
        // maps, writes or shortens it while the mapping lives.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map a file");
        map.fill(0); // maps every page writable
        ProbeLog { map, reserved: Default::default(), published: Default::default() }
    }

    #[inline]
    pub fn append(&mut self, value: &[u8], sequence: u64) {
        let frame = Self::HEADER_BYTES + value.len();
        let at = self.reserved.fetch_add(frame, Ordering::Relaxed);
        let (header, body) = self.map[at..at + frame].split_at_mut(Self::HEADER_BYTES);
        body.copy_from_slice(value);
        header[..4].copy_from_slice(&(value.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
        header[8..].copy_from_slice(&sequence.to_le_bytes());
        self.published.store(at + frame, Ordering::Release);
    }

    /// Bytes published so far.
    pub fn published(&self) -> usize {
        std::hint::black_box(self.published.load(Ordering::Acquire))
    }
}
