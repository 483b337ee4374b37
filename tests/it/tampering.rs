//! Files planted, replaced or removed in and around the queue directory by users, cleaners or
//! adversaries: FIFOs, symbolic links, stray files, deleted lock files, foreign directories,
//! the longest topic names. Nothing may hang, nothing outside the queue may change, and every
//! refusal is a typed error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use streamlog::{Error, Queue, Record, TopicConfig, TopicPartition};

use crate::child::{self, Reaper, value_for};
use crate::{TempDir, consumer_from_start, read_exactly};

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path and nothing else.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());
}

/// Replaces the file at `path` with a FIFO.
fn plant_fifo(path: &Path) {
    std::fs::remove_file(path).unwrap();
    mkfifo(path);
}

/// Replaces the file at `path` with a symbolic link to `target`.
fn plant_link(path: &Path, target: &Path) {
    if path.is_dir() {
        std::fs::remove_dir_all(path).unwrap();
    } else {
        std::fs::remove_file(path).unwrap();
    }
    std::os::unix::fs::symlink(target, path).unwrap();
}

/// Runs `work` on its own thread and fails the test if it has not returned after a minute.
/// Hanging is the bug some of these tests look for: it must fail the test, not stall the run.
fn without_hanging<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || sender.send(work()));
    receiver.recv_timeout(Duration::from_secs(60)).expect("the call hung")
}

/// A closed queue in `dir` with one record in `t-0`, and a file outside it, in `outside`, that
/// nothing of streamlog's may touch.
fn closed_queue_and_victim(dir: &TempDir, outside: &TempDir) -> PathBuf {
    std::fs::create_dir_all(outside.path()).unwrap();
    let victim = outside.path().join("precious");
    std::fs::write(&victim, b"not streamlog's").unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    queue.producer().send("t", Record::new(b"one")).unwrap();
    victim
}

fn is_unexpected(error: &Error, wanted: &str) -> bool {
    matches!(error, Error::UnexpectedFileType { found, .. } if *found == wanted)
}

#[test]
fn queue_metadata_that_is_a_fifo_or_a_link_to_dev_zero_is_refused() {
    let dir = TempDir::new("tamper-queue-meta");
    drop(Queue::open(dir.path()).unwrap());
    let meta = dir.path().join("streamlog.meta");
    plant_fifo(&meta);
    let path = dir.path().to_path_buf();
    let error = without_hanging(move || Queue::open(&path).err()).expect("the FIFO was refused");
    assert!(is_unexpected(&error, "a FIFO"), "{error}");
    plant_link(&meta, Path::new("/dev/zero"));
    let error = Queue::open(dir.path()).expect_err("the link was refused");
    assert!(is_unexpected(&error, "a symbolic link"), "{error}");
}

#[test]
fn topic_metadata_that_is_a_fifo_or_a_link_to_dev_zero_is_refused() {
    let dir = TempDir::new("tamper-topic-meta");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    drop(queue);
    let meta = dir.path().join("topics/t/topic.meta");
    plant_fifo(&meta);
    let path = dir.path().to_path_buf();
    let error = without_hanging(move || Queue::open(&path).unwrap().partition_count("t").err()).expect("refused");
    assert!(is_unexpected(&error, "a FIFO"), "{error}");
    plant_link(&meta, Path::new("/dev/zero"));
    let error = Queue::open(dir.path()).unwrap().partition_count("t").expect_err("refused");
    assert!(is_unexpected(&error, "a symbolic link"), "{error}");
}

#[test]
fn an_index_that_is_a_fifo_is_refused_by_recovery() {
    let dir = TempDir::new("tamper-index");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(1024)).unwrap();
    for _ in 0..10 {
        queue.producer().send("t", Record::new(&[7u8; 300])).unwrap();
    }
    drop(queue);
    plant_fifo(&dir.path().join("topics/t/0/00000000000000000000.index"));
    let path = dir.path().to_path_buf();
    let error = without_hanging(move || Queue::open(&path).unwrap().offsets(&TopicPartition::new("t", 0)).err())
        .expect("the FIFO was refused");
    assert!(is_unexpected(&error, "a FIFO"), "{error}");
}

#[test]
fn a_staging_directory_that_is_a_link_is_refused_and_its_target_kept() {
    let dir = TempDir::new("tamper-staging");
    let outside = TempDir::new("tamper-staging-outside");
    for sub in ["a", "b"] {
        std::fs::create_dir_all(outside.path().join(sub)).unwrap();
    }
    drop(Queue::open(dir.path()).unwrap());
    plant_link(&dir.path().join("staging"), outside.path());
    let error = Queue::open(dir.path()).expect_err("the link was refused");
    assert!(is_unexpected(&error, "a symbolic link"), "{error}");
    assert!(outside.path().join("a").is_dir() && outside.path().join("b").is_dir(), "files outside the queue were deleted");
}

#[test]
fn a_state_file_that_is_a_link_is_refused_and_its_target_kept() {
    let (dir, outside) = (TempDir::new("tamper-state"), TempDir::new("tamper-state-outside"));
    let victim = closed_queue_and_victim(&dir, &outside);
    plant_link(&dir.path().join("topics/t/0/state"), &victim);
    let error = Queue::open(dir.path()).unwrap().offsets(&TopicPartition::new("t", 0)).expect_err("refused");
    assert!(is_unexpected(&error, "a symbolic link"), "{error}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"not streamlog's");
}

#[test]
fn a_foreign_directory_is_refused_and_left_as_it_was() {
    let dir = TempDir::new("tamper-foreign");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    assert!(matches!(Queue::open(dir.path()), Err(Error::ForeignFile { .. })));
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["notes.txt"], "the refused open left files behind");
}

#[test]
fn the_empty_path_is_refused() {
    let here: Vec<PathBuf> = std::fs::read_dir(".").unwrap().map(|e| e.unwrap().path()).collect();
    assert!(matches!(Queue::open(""), Err(Error::InvalidPath { .. })));
    let after: Vec<PathBuf> = std::fs::read_dir(".").unwrap().map(|e| e.unwrap().path()).collect();
    assert!(after.iter().all(|p| here.contains(p)), "files were created in the working directory: {after:?}");
}

#[test]
fn a_stray_file_in_staging_does_not_stop_later_opens() {
    let dir = TempDir::new("tamper-stray");
    drop(Queue::open(dir.path()).unwrap());
    std::fs::write(dir.path().join("staging/stray"), b"?").unwrap();
    std::os::unix::fs::symlink("/", dir.path().join("staging/link")).unwrap();
    for _ in 0..2 {
        let queue = Queue::open(dir.path()).unwrap();
        queue.create_topic("t", 1).unwrap();
        queue.delete_topic("t").unwrap();
    }
}

#[test]
fn every_valid_topic_name_length_creates_sends_reads_deletes_and_creates_again() {
    let dir = TempDir::new("tamper-names");
    let queue = Queue::open(dir.path()).unwrap();
    for length in [1, 200, 239, 240, 246, 247, 248, streamlog::MAX_TOPIC_NAME_BYTES] {
        let name = "n".repeat(length);
        for round in 0..2u8 {
            queue.create_topic(&name, 1).unwrap();
            queue.producer().send(&name, Record::new(&[round])).unwrap();
            let records = read_exactly(&mut consumer_from_start(&queue, &name, 1), 1);
            assert_eq!((records[0].1, records[0].3.as_slice()), (0, &[round][..]), "name of {length} bytes");
            queue.delete_topic(&name).unwrap();
        }
    }
    assert!(queue.topics().unwrap().is_empty());
}

#[test]
fn deleting_the_lock_files_does_not_let_an_opener_think_it_is_alone() {
    // A writer in another process keeps sending while every `*.lock` file is deleted (a user
    // cleaning "stale" locks) and this process opens the queue: the writer must not notice.
    let dir = TempDir::new("tamper-locks");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    drop(queue);
    let args = [dir.path().display().to_string(), "t".into(), "0".into(), "0".into(), "1".into(), "buffered".into()];
    let mut writer = child::spawn("produce", &args);
    let _reaper = Reaper(vec![writer.id()]);
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let acks = child::collect_acks_counting(&mut writer, Arc::clone(&acknowledged));
    let wait_for_acks = |writer: &mut std::process::Child, count: usize| {
        let give_up = Instant::now() + Duration::from_secs(60);
        while acknowledged.load(Ordering::Relaxed) < count {
            if let Some(status) = writer.try_wait().unwrap() {
                panic!("the writer died ({status}) after {} records", acknowledged.load(Ordering::Relaxed));
            }
            assert!(Instant::now() < give_up, "the writer stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for_acks(&mut writer, 100);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "lock") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let queue = Queue::open(dir.path()).unwrap();
    let seen = acknowledged.load(Ordering::Relaxed);
    let mut reader = consumer_from_start(&queue, "t", 1);
    let mut read = 0;
    while read < seen {
        read += reader.poll(Duration::from_millis(100)).unwrap().len();
    }
    wait_for_acks(&mut writer, seen + 2_000);
    writer.kill().unwrap();
    writer.wait().unwrap();
    let acks = acks.join().unwrap();
    // Nothing acknowledged was cut off: every record is there, whole.
    let (_, end) = queue.offsets(&TopicPartition::new("t", 0)).unwrap();
    assert!(end >= acks.len() as u64, "the log was shortened to {end} of {} records", acks.len());
    let records = read_exactly(&mut consumer_from_start(&queue, "t", 1), end as usize);
    for (seq, _, offset) in acks {
        assert_eq!(records[offset as usize].3, value_for(0, seq), "record {offset} changed");
    }
}

#[test]
fn a_log_start_checkpoint_planted_as_a_link_is_refused_and_its_target_kept() {
    let (dir, outside) = (TempDir::new("tamper-log-start"), TempDir::new("tamper-log-start-outside"));
    let victim = closed_queue_and_victim(&dir, &outside);
    // Recovery writes a missing checkpoint through a temporary file: a link planted there must
    // not be followed, and neither may one planted as the checkpoint itself.
    let partition = dir.path().join("topics/t/0");
    std::fs::remove_file(partition.join("log_start")).unwrap();
    std::os::unix::fs::symlink(&victim, partition.join("log_start.tmp")).unwrap();
    let error = crate::open_alone(dir.path()).unwrap().offsets(&TopicPartition::new("t", 0)).expect_err("refused");
    assert!(is_unexpected(&error, "a symbolic link"), "{error}");
    std::fs::remove_file(partition.join("log_start.tmp")).unwrap();
    std::os::unix::fs::symlink(&victim, partition.join("log_start")).unwrap();
    let error = crate::open_alone(dir.path()).unwrap().offsets(&TopicPartition::new("t", 0)).expect_err("refused");
    assert!(is_unexpected(&error, "a symbolic link"), "{error}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"not streamlog's");
}
