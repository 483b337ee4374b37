//! Recovery against missing segment files, torn unsynced tails, retention undone by a power cut,
//! and the races that once made recovery tests flaky (each looped under contention).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use streamlog::{Durability, Error, ProducerConfig, Queue, QueueOptions, Record, TopicConfig, TopicPartition};

use crate::{TempDir, consumer_from_start};

fn value(i: u32) -> Vec<u8> {
    let mut v = format!("record-{i}-").into_bytes();
    v.resize(100, b'.');
    v
}

fn partition_dir(dir: &Path) -> PathBuf {
    dir.join("topics/t/0")
}

/// The partition's files with extension `extension`, in offset order.
fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(partition_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    found.sort();
    found
}

/// 200 records sent with `Durability::Sync` to 4 KiB segments (about nine of them); the queue
/// is closed when this returns.
fn write_synced(dir: &Path) {
    let queue = crate::open_alone(dir).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    for i in 0..200 {
        producer.send("t", Record::new(value(i))).unwrap();
    }
}

/// Opens the queue and asks for the partition's offsets, which recovers it.
fn recovered(dir: &Path) -> streamlog::Result<(u64, u64)> {
    crate::open_alone(dir).unwrap().offsets(&TopicPartition::new("t", 0))
}

fn assert_names(error: &Error, file: &Path) {
    assert!(
        matches!(error, Error::Corrupt { path, .. } if path == file),
        "expected an error naming {}, got {error}",
        file.display()
    );
}

#[test]
fn a_missing_middle_segment_is_reported_and_nothing_after_it_is_removed() {
    let dir = TempDir::new("missing-middle");
    write_synced(dir.path());
    let logs = files(dir.path(), "log");
    assert!(logs.len() > 4, "{} segments", logs.len());
    let missing = logs[logs.len() / 2].clone();
    fs::remove_file(&missing).unwrap();
    let error = recovered(dir.path()).unwrap_err();
    assert_names(&error, &missing);
    // Nothing was cut: the later, intact segments are all still there, and still refused.
    assert_eq!(files(dir.path(), "log").len(), logs.len() - 1);
    assert_names(&recovered(dir.path()).unwrap_err(), &missing);
}

#[test]
fn a_missing_last_segment_is_reported() {
    for with_index in [false, true] {
        let dir = TempDir::new("missing-last");
        write_synced(dir.path());
        let logs = files(dir.path(), "log");
        let missing = logs.last().unwrap().clone();
        fs::remove_file(&missing).unwrap();
        if with_index {
            fs::remove_file(missing.with_extension("index")).unwrap();
        }
        let error = recovered(dir.path()).unwrap_err();
        assert_names(&error, &missing);
        assert_eq!(files(dir.path(), "log").len(), logs.len() - 1, "with its index: {with_index}");
    }
}

#[test]
fn a_missing_first_segment_is_reported_but_retention_is_not() {
    let dir = TempDir::new("missing-first");
    write_synced(dir.path());
    let first = files(dir.path(), "log")[0].clone();
    fs::remove_file(&first).unwrap();
    assert_names(&recovered(dir.path()).unwrap_err(), &first);

    // The same shape left by retention opens, with the log starting where retention left it.
    let dir = TempDir::new("retention-start");
    let queue = crate::open_alone(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096).retention_ms(3_600_000)).unwrap();
    let old_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 - 7_200_000;
    let producer = queue.producer();
    for i in 0..200 {
        producer.send("t", Record::new(value(i)).timestamp(old_ms)).unwrap();
    }
    assert!(queue.run_maintenance().unwrap() > 0);
    let (start, end) = queue.offsets(&TopicPartition::new("t", 0)).unwrap();
    assert!(start > 0);
    drop((producer, queue));
    assert_eq!(recovered(dir.path()).unwrap(), (start, end));
}

#[test]
fn segments_retention_deleted_stay_deleted_when_their_unlinks_are_undone() {
    // A power cut can undo unlinks whose directory was not synced since: the deleted files are
    // back. The log start must not move backwards; the files are deleted again.
    let dir = TempDir::new("retention-undone");
    let queue = crate::open_alone(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096).retention_ms(3_600_000)).unwrap();
    let old_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 - 7_200_000;
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    for i in 0..200 {
        producer.send("t", Record::new(value(i)).timestamp(old_ms)).unwrap();
    }
    let saved = TempDir::new("retention-undone-copy");
    fs::create_dir_all(saved.path()).unwrap();
    let before = files(dir.path(), "log");
    for path in before.iter().flat_map(|log| [log.clone(), log.with_extension("index")]) {
        fs::copy(&path, saved.path().join(path.file_name().unwrap())).unwrap();
    }
    assert!(queue.run_maintenance().unwrap() > 0);
    let (start, end) = queue.offsets(&TopicPartition::new("t", 0)).unwrap();
    drop((producer, queue));
    for entry in fs::read_dir(saved.path()).unwrap() {
        let path = entry.unwrap().path();
        let back = partition_dir(dir.path()).join(path.file_name().unwrap());
        if !back.exists() {
            fs::copy(&path, &back).unwrap();
        }
    }
    assert_eq!(recovered(dir.path()).unwrap(), (start, end));
    assert!(files(dir.path(), "log").len() < before.len(), "the deleted segments were deleted again");
    let queue = crate::open_alone(dir.path()).unwrap();
    let mut consumer = consumer_from_start(&queue, "t", 1);
    let records = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(records.iter().next().unwrap().offset(), start);
}

#[test]
fn a_torn_unsynced_tail_is_cut_at_the_first_bad_batch() {
    // Buffered sends were never synced: a power cut with partial writeback can leave any page
    // of them zeroed. Recovery must cut at the first bad batch, not keep it behind good ones.
    let dir = TempDir::new("torn-unsynced");
    {
        let queue = crate::open_alone(dir.path()).unwrap();
        queue.create_topic_with("t", TopicConfig::new(1).index_interval_bytes(1024)).unwrap();
        let producer = queue.producer();
        for i in 0..200 {
            producer.send("t", Record::new(value(i))).unwrap();
        }
    }
    // One single-record batch of a `value` takes 52 + 5 + 100 bytes; zero 100 bytes of record
    // 76's batch, far before the last index entry. (Batch headers stay whole, so every index
    // entry still agrees with the log and gives no hint of the damage.)
    let log = files(dir.path(), "log")[0].clone();
    let file = OpenOptions::new().write(true).open(&log).unwrap();
    file.write_all_at(&[0u8; 100], 64 + 76 * 157 + 50).unwrap();
    drop(file);
    assert_eq!(recovered(dir.path()).unwrap(), (0, 76));
    let queue = crate::open_alone(dir.path()).unwrap();
    let mut consumer = consumer_from_start(&queue, "t", 1);
    let records = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(records.len(), 76);
    assert!(records.iter().enumerate().all(|(i, r)| r.value() == value(i as u32).as_slice()));
    assert_eq!(queue.producer().send("t", Record::new(b"after").partition(0)).unwrap().offset(), 76);
    let more = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(more.iter().map(|r| r.value().to_vec()).collect::<Vec<_>>(), vec![b"after".to_vec()]);
}

/// Keeps every core busy (and sends to another topic) until dropped, so that the background
/// threads of the queue under test run late, as on a loaded machine.
struct Contention {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Contention {
    fn new() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        }
                        std::hint::black_box(x);
                    }
                })
            })
            .collect();
        Contention { stop, threads }
    }
}

impl Drop for Contention {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
    }
}

#[test]
fn a_synced_segment_that_becomes_active_again_opens_under_contention() {
    // The scenario of `corruption::a_synced_segment_that_becomes_active_again_opens`, looped
    // while other threads compete for the processor and concurrent senders roll segments.
    let _busy = Contention::new();
    for round in 0..8 {
        let dir = TempDir::new("active-again-loop");
        {
            let queue = crate::open_alone(dir.path()).unwrap();
            queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
            std::thread::scope(|s| {
                for sender in 0..3u32 {
                    let producer = queue.producer();
                    s.spawn(move || {
                        for i in 0..20 {
                            producer.send("t", Record::new(value(sender * 100 + i))).unwrap();
                        }
                    });
                }
            });
        }
        let logs = files(dir.path(), "log");
        crate::corruption::empty_last_segment(logs.last().unwrap());
        let queue = crate::open_alone(dir.path()).unwrap();
        let (_, end) = queue.offsets(&TopicPartition::new("t", 0)).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let mut consumer = consumer_from_start(&queue, "t", 1);
        crate::read_exactly(&mut consumer, end as usize);
        assert_eq!(queue.producer().send("t", Record::new(b"more").partition(0)).unwrap().offset(), end);
        // Records appended now were never synced: a torn one among them is a torn tail, cut
        // off, whichever segment they went to (no marker may claim them).
        let producer = queue.producer();
        for i in 0..10 {
            producer.send("t", Record::new(value(i))).unwrap();
        }
        drop((producer, consumer, queue));
        let last = files(dir.path(), "log").pop().unwrap();
        let batches = batch_positions(&last);
        let torn = batches[batches.len() - 3];
        OpenOptions::new().write(true).open(&last).unwrap().write_all_at(&[0u8; 20], torn + 50).unwrap();
        let reopened = recovered(dir.path()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(reopened, (0, end + 11 - 3), "round {round}");
    }
}

/// Positions of the batches in a log file, from each batch's length field.
fn batch_positions(log: &Path) -> Vec<u64> {
    let bytes = fs::read(log).unwrap();
    let mut positions = Vec::new();
    let mut at = 64usize;
    while at + 4 <= bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if length == 0 {
            break;
        }
        positions.push(at as u64);
        at += length;
    }
    positions
}

#[test]
fn the_last_handle_dropped_leaves_the_queue_to_the_next_opener() {
    // A background thread (maintenance here, ticking every millisecond) briefly holds the queue;
    // if the user's drop was not the last one, the queue closed later in that thread, and an
    // open right after the drop was not alone: no recovery ran, and damage went unseen.
    let _busy = Contention::new();
    for round in 0..30 {
        let dir = TempDir::new("last-handle");
        {
            let options = QueueOptions::new().maintenance_interval(Duration::from_millis(1));
            let queue = Queue::open_with(dir.path(), options).unwrap();
            queue.create_topic_with("t", TopicConfig::new(1).index_interval_bytes(1 << 20)).unwrap();
            let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
            for i in 0..20 {
                producer.send("t", Record::new(value(i))).unwrap();
            }
        }
        // Damage to synced data, which only recovery looks for.
        let log = files(dir.path(), "log")[0].clone();
        let file = OpenOptions::new().write(true).open(&log).unwrap();
        file.write_all_at(&[0xFF; 8], 64 + 10 * 164 + 70).unwrap();
        drop(file);
        let error = recovered(dir.path());
        assert!(matches!(error, Err(Error::Corrupt { .. })), "round {round}: {error:?}");
    }
}
