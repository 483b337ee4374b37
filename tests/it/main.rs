//! The integration tests: one binary, one module per feature, all through the public API.
//! Tests that need other processes re-run this binary with `STREAMLOG_CHILD` set (see `child`).

mod admin;
mod api;
mod child;
mod compaction;
mod compression;
mod consumer_edges;
mod corruption;
mod crash;
mod disk_full;
mod exactly_once;
mod failpoints;
mod fuzz_corpus;
mod group_processes;
mod groups;
mod headers;
mod history;
mod layout;
mod model;
mod offsets;
mod powercut;
mod powercut_regressions;
mod processes;
mod recovery;
mod retention;
mod space;
mod tampering;
mod testfs;
mod transactions;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use streamlog::{Consumer, ConsumerConfig, OffsetReset, Queue, TopicPartition};

/// A tiny deterministic generator (xorshift), so a randomised test can be repeated from its
/// printed seed. The seed must not be zero.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A directory removed when the test ends.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var_os("STREAMLOG_TEST_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!("streamlog-{name}-{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Held (shared) while a child process is spawned; see `open_alone`.
pub(crate) static SPAWNING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Opens a queue that the test just closed and damaged, so that it is recovered. A child
/// process spawned by another test while the queue was open gets a copy of the queue's lock
/// file descriptor and holds it (and so the queue's "users" lock) until its exec has closed
/// it; an open in that window is not alone, skips recovery, and never sees the damage.
/// Holding `SPAWNING` exclusively keeps new children from being spawned, but `Command::spawn`
/// returns once the child's exec has replaced its memory (which wakes the parent of a vfork),
/// and the kernel closes the close-on-exec descriptors after that, and releases their locks
/// only as the child returns from `execve`: a child spawned just before may still hold the
/// lock for a moment (measured: about 1 in 10 runs of the process tests beside a build). So
/// this also waits until no descriptor anywhere holds the lock.
pub(crate) fn open_alone(dir: &Path) -> streamlog::Result<Queue> {
    let _no_spawns = SPAWNING.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Ok(directory) = std::fs::File::open(dir) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while matches!(directory.try_lock(), Err(std::fs::TryLockError::WouldBlock)) {
            assert!(std::time::Instant::now() < deadline, "{} is still locked by another handle", dir.display());
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Queue::open(dir)
}

/// A consumer reading `partitions` of `topic` from the beginning.
pub(crate) fn consumer_from_start(queue: &Queue, topic: &str, partitions: u32) -> Consumer {
    let mut consumer = queue
        .consumer(
            ConsumerConfig::new("tests").auto_offset_reset(OffsetReset::Earliest).max_poll_records(10_000).auto_commit(None),
        )
        .unwrap();
    let tps: Vec<_> = (0..partitions).map(|p| TopicPartition::new(topic, p)).collect();
    consumer.assign(&tps).unwrap();
    consumer
}

/// A record read back: key, value (`None`: a tombstone), timestamp.
pub(crate) type Stored = (Option<Vec<u8>>, Option<Vec<u8>>, u64);

/// Every record of `tp` from its start to its end, by offset (each offset read once).
pub(crate) fn read_log(queue: &Queue, tp: &TopicPartition) -> std::collections::BTreeMap<u64, Stored> {
    let mut consumer =
        queue.consumer(ConsumerConfig::new("check").auto_commit(None).auto_offset_reset(OffsetReset::Earliest)).unwrap();
    consumer.assign(std::slice::from_ref(tp)).unwrap();
    let end = queue.offsets(tp).unwrap().1;
    let mut out = std::collections::BTreeMap::new();
    while consumer.position(tp).unwrap() < end {
        for r in consumer.poll(Duration::from_secs(1)).unwrap().iter() {
            let value = (!r.is_tombstone()).then(|| r.value().to_vec());
            let previous = out.insert(r.offset(), (r.key().map(<[u8]>::to_vec), value, r.timestamp()));
            assert!(previous.is_none(), "offset {} read twice", r.offset());
        }
    }
    out
}

/// `(partition, offset, key, value)` of a record read.
pub(crate) type Polled = (u32, u64, Option<Vec<u8>>, Vec<u8>);

/// Polls until `count` records arrived (or panics after a generous while).
pub(crate) fn read_exactly(consumer: &mut Consumer, count: usize) -> Vec<Polled> {
    let mut out = Vec::with_capacity(count);
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while out.len() < count {
        assert!(std::time::Instant::now() < give_up, "only {} of {count} records arrived", out.len());
        for r in consumer.poll(Duration::from_millis(200)).unwrap().iter() {
            out.push((r.partition(), r.offset(), r.key().map(<[u8]>::to_vec), r.value().to_vec()));
        }
    }
    assert_eq!(out.len(), count, "more records than expected");
    out
}
