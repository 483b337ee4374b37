//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their corpus
//! (`tests/it/fuzz_corpus.rs`). Compiled only with the `fuzzing` feature and hidden from the
//! docs: the parsers stay `pub(crate)`, and each function here takes untrusted bytes, drives
//! the parser streamlog uses on bytes from disk, and panics only when a property fails (a
//! decoded value that does not re-encode to the bytes it came from, or a record that was never
//! written as that record). Any panic inside streamlog itself is a finding too.
//!
//! Checksums stop a byte-mutating fuzzer at the first check, so the targets of checksummed
//! formats read a mode byte first: with its low bit set, the target recomputes the checksum
//! before decoding, so that the fuzzer reaches the checks behind it.
//!
//! One module per family of targets: `headers` (the fixed-size headers and metadata files),
//! `batch` (record batches), `group` (a group's state and its commits) and `directory` (whole
//! queue directories), with the tree encoding the directory target reads (`tree`) and the seed
//! queue every target's first inputs come from (`seeds`).

mod batch;
mod directory;
mod group;
mod headers;
mod seeds;
mod tree;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use batch::{batch, forge_batch_checksum};
pub use directory::directory;
pub use group::{commit, group_state};
pub use headers::{file_header, log_start, queue_meta, state_header, topic_meta};
pub use seeds::{SeedRecord, seed_record, write_seed_queue, write_seeds};
pub use tree::{TreeFile, decode_tree, encode_tree, read_tree};

/// The mode byte of a checksummed target, and the bytes after it.
fn split_mode(data: &[u8]) -> (bool, Vec<u8>) {
    match data.split_first() {
        Some((mode, rest)) => (mode & 1 == 1, rest.to_vec()),
        None => (false, Vec::new()),
    }
}

fn put_crc(bytes: &mut [u8], at: usize, crc: u32) {
    bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A temporary directory for one input, removed when dropped.
struct FuzzDir {
    path: PathBuf,
}

impl FuzzDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let path = base.join(format!("streamlog-fuzz-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("a temporary directory");
        FuzzDir { path }
    }
}

impl Drop for FuzzDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("file_header", file_header),
    ("queue_meta", queue_meta),
    ("log_start", log_start),
    ("topic_meta", topic_meta),
    ("batch", |data| {
        batch(data);
    }),
    ("group_state", group_state),
    ("commit", commit),
    ("state_header", state_header),
    ("directory", |data| {
        directory(data);
    }),
];
