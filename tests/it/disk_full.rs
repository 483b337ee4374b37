//! A full disk: sends fail with `Error::DiskFull`, nothing acknowledged is harmed, no process
//! is killed by SIGBUS, and sending works again once space is freed. Runs on a small tmpfs the
//! test mounts (it needs root, as the CI machine has).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use streamlog::{Error, Queue, Record, TopicConfig, TopicPartition};

use crate::{TempDir, consumer_from_start};

/// A size-limited tmpfs, unmounted on drop.
struct SmallFilesystem {
    mount_point: PathBuf,
    _dir: TempDir,
}

impl SmallFilesystem {
    fn mount(size_bytes: u64) -> Option<SmallFilesystem> {
        let dir = TempDir::new("small-fs");
        let mount_point = dir.path().to_path_buf();
        std::fs::create_dir_all(&mount_point).unwrap();
        let spawning = crate::SPAWNING.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"]).arg(&mount_point).status();
        drop(spawning);
        match status {
            Ok(status) if status.success() => Some(SmallFilesystem { mount_point, _dir: dir }),
            // SAFETY: geteuid has no preconditions.
            _ if unsafe { libc::geteuid() } != 0 => None,
            other => panic!("mounting a tmpfs as root failed: {other:?}"),
        }
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _spawning = crate::SPAWNING.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

#[test]
fn a_full_disk_fails_sends_cleanly_and_recovers() {
    let Some(fs) = SmallFilesystem::mount(6 << 20) else {
        eprintln!("NOT RUN: mounting a small tmpfs needs root");
        return;
    };
    let dir = fs.mount_point.join("queue");
    let filler = fs.mount_point.join("filler");
    std::fs::write(&filler, vec![1u8; 2 << 20]).unwrap();
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(1 << 20)).unwrap();
    let producer = queue.producer();
    let value = vec![7u8; 1000];
    let mut acknowledged = 0u64;
    let error = loop {
        match producer.send("t", Record::new(&value)) {
            Ok(meta) => {
                assert_eq!(meta.offset(), acknowledged);
                acknowledged += 1;
            }
            Err(error) => break error,
        }
        assert!(acknowledged < 100_000, "the disk never filled up");
    };
    assert!(matches!(error, Error::DiskFull { .. }), "{error}");
    assert!(acknowledged > 1000, "only {acknowledged} records fit");
    // A second attempt fails the same way, and nothing half-written became visible.
    assert!(matches!(producer.send("t", Record::new(&value)), Err(Error::DiskFull { .. })));
    let tp = TopicPartition::new("t", 0);
    assert_eq!(queue.offsets(&tp).unwrap(), (0, acknowledged));

    std::fs::remove_file(&filler).unwrap();
    let meta = producer.send("t", Record::new(b"after")).unwrap();
    assert_eq!(meta.offset(), acknowledged);

    let mut consumer = consumer_from_start(&queue, "t", 1);
    let mut read = 0u64;
    loop {
        let records = consumer.poll(Duration::from_millis(100)).unwrap();
        if records.is_empty() {
            break;
        }
        for r in records.iter() {
            assert_eq!(r.offset(), read);
            assert_eq!(r.value(), if read < acknowledged { &value[..] } else { b"after" });
            read += 1;
        }
    }
    assert_eq!(read, acknowledged + 1);
    drop((consumer, producer, queue));
    // Reopening (recovery) after the episode finds the same log.
    let queue = Queue::open(&dir).unwrap();
    assert_eq!(queue.offsets(&tp).unwrap(), (0, acknowledged + 1));
}

#[test]
fn retention_frees_a_full_disk_and_sending_resumes() {
    let Some(fs) = SmallFilesystem::mount(6 << 20) else {
        eprintln!("NOT RUN: mounting a small tmpfs needs root");
        return;
    };
    let dir = fs.mount_point.join("queue");
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(64 << 10)).unwrap();
    let producer = queue.producer();
    let value = vec![3u8; 1000];
    let mut acknowledged = 0u64;
    let error = loop {
        match producer.send("t", Record::new(&value)) {
            Ok(_) => acknowledged += 1,
            Err(error) => break error,
        }
        assert!(acknowledged < 100_000, "the disk never filled up");
    };
    assert!(matches!(error, Error::DiskFull { .. }), "{error}");
    queue.alter_topic("t", |c| c.retention_bytes(1)).unwrap();
    assert!(queue.run_maintenance().unwrap() > 0);
    let meta = producer.send("t", Record::new(b"after")).unwrap();
    assert_eq!(meta.offset(), acknowledged);
    let (start, end) = queue.offsets(&TopicPartition::new("t", 0)).unwrap();
    assert!(start > 0 && end == acknowledged + 1);
}

#[test]
fn retention_in_another_process_frees_a_full_disk_for_the_producer() {
    let Some(fs) = SmallFilesystem::mount(6 << 20) else {
        eprintln!("NOT RUN: mounting a small tmpfs needs root");
        return;
    };
    let dir = fs.mount_point.join("queue");
    // A child process another test forks holds copies of this process's descriptors and
    // mappings until it execs, and so the space of the segments retention deletes; holding
    // `SPAWNING` exclusively (see `open_alone`) makes sure that space is back when it is freed.
    let no_spawns = crate::SPAWNING.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let queue = Queue::open(&dir).unwrap();
    let maintainer = Queue::open(&dir).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(64 << 10)).unwrap();
    let producer = queue.producer();
    let value = vec![3u8; 1000];
    let error = loop {
        if let Err(error) = producer.send("t", Record::new(&value)) {
            break error;
        }
    };
    assert!(matches!(error, Error::DiskFull { .. }), "{error}");
    maintainer.alter_topic("t", |c| c.retention_bytes(1)).unwrap();
    assert!(maintainer.run_maintenance().unwrap() > 0);
    // The producer's process let go of the deleted segments, so their space came back: it can
    // fill new segments for a while (with the maintainer deleting the old ones again).
    for n in 1..=2000 {
        producer.send("t", Record::new(&value)).unwrap_or_else(|e| panic!("send {n} after retention freed space: {e}"));
        if n % 200 == 0 {
            maintainer.run_maintenance().unwrap();
        }
    }
    drop((producer, queue, maintainer, no_spawns));
}

/// Fills the file system of `path` until not one more byte fits.
fn fill_up(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    for chunk in [64 << 10, 4 << 10, 1] {
        let bytes = vec![9u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
}

#[test]
fn a_reader_needs_no_disk_space() {
    let Some(fs) = SmallFilesystem::mount(4 << 20) else {
        eprintln!("NOT RUN: mounting a small tmpfs needs root");
        return;
    };
    let dir = fs.mount_point.join("queue");
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(64 << 10)).unwrap();
    for i in 0..100u32 {
        queue.producer().send("t", Record::new(&i.to_le_bytes())).unwrap();
    }
    let filler = fs.mount_point.join("filler");
    fill_up(&filler);
    assert!(matches!(queue.producer().send("t", Record::new(&[0u8; 200_000])), Err(Error::DiskFull { .. })));

    // A new consumer of a new group, reading assigned partitions, creates no file.
    let tp = TopicPartition::new("t", 0);
    let config = streamlog::ConsumerConfig::new("readers").auto_commit(None).auto_offset_reset(streamlog::OffsetReset::Earliest);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(consumer.committed(&tp).unwrap(), None);
    let records = consumer.poll(Duration::from_secs(1)).unwrap();
    assert_eq!(records.iter().map(|r| r.offset()).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
    assert!(!dir.join("groups").join("readers").exists(), "the reader created its group's files");
    // Its first commit creates them, once there is room.
    assert!(matches!(consumer.commit(), Err(Error::DiskFull { .. })));
    std::fs::remove_file(&filler).unwrap();
    consumer.commit().unwrap();
    assert_eq!(consumer.committed(&tp).unwrap(), Some(100));
    drop((consumer, queue));
    let queue = Queue::open(&dir).unwrap();
    assert_eq!(queue.describe_group("readers").unwrap().partitions[0].committed, Some(100));
}

/// A send that rolls and then finds no space for its batch still seals the segment it rolled
/// away from: the roll is published, so that segment is done and gets its marker (and gives
/// back its reservation) like any other.
#[test]
fn a_send_failing_after_its_roll_still_seals_the_old_segment() {
    let Some(fs) = SmallFilesystem::mount(8 << 20) else {
        eprintln!("NOT RUN: mounting a small tmpfs needs root");
        return;
    };
    let dir = fs.mount_point.join("queue");
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(256).max_record_bytes(4 << 20)).unwrap();
    let producer = queue.producer();
    producer.send("t", Record::new(&[1u8; 100])).unwrap();
    // Leave room (1.5 MiB) for a new segment's first reservation (1 MiB), but not for a 3 MiB
    // batch. The batch cannot fit even after the sealer gives back the old segment's
    // reservation (1 MiB): whether that happened before the batch asks for its space is up to
    // the scheduler, so the outcome must not hang on it.
    std::fs::write(fs.mount_point.join("filler"), vec![1u8; (free_bytes(&fs.mount_point) - (3 << 19)) as usize]).unwrap();
    let error = producer.send("t", Record::new(vec![2u8; 3 << 20])).expect_err("no room for the batch");
    assert!(matches!(error, Error::DiskFull { ref path, .. } if path.ends_with("00000000000000000001.log")), "{error}");
    std::fs::remove_file(fs.mount_point.join("filler")).unwrap();
    drop((producer, queue)); // waits for the background sealing
    let first_path = dir.join("topics/t/0/00000000000000000000.log");
    let first = std::fs::read(&first_path).unwrap();
    let marker = u64::from_le_bytes(first[32..40].try_into().unwrap());
    assert_eq!(marker, u64::MAX, "the segment rolled away from is marked fully synced");
    let allocated = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&first_path).unwrap()) * 512;
    assert!(allocated <= 64 << 10, "the segment rolled away from still holds {allocated} bytes of its reservation");
}

/// A send that rolls gets the space its roll gives back: the old segment's reservation past
/// its data, which the sealer gives back in the background, is given back by the send itself
/// when its batch finds the disk full, not whenever the sealer gets to it. Each round fits a
/// 1.5 MiB batch only with the old segment's 1 MiB back; a release left to the scheduler lost
/// that race about every other round.
#[test]
fn a_rolling_send_gets_the_space_its_roll_gives_back() {
    let Some(fs) = SmallFilesystem::mount(8 << 20) else {
        eprintln!("NOT RUN: mounting a small tmpfs needs root");
        return;
    };
    for round in 0..10 {
        // A child process another test forks holds copies of this process's descriptors and
        // mappings until it execs, and so the space of the files a round deletes; holding
        // `SPAWNING` exclusively (see `open_alone`) makes sure every byte freed is back.
        let _no_spawns = crate::SPAWNING.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = fs.mount_point.join(format!("queue-{round}"));
        let queue = Queue::open(&dir).unwrap();
        queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(256).max_record_bytes(4 << 20)).unwrap();
        let producer = queue.producer();
        producer.send("t", Record::new(&[1u8; 100])).unwrap();
        // Leave 1.5 MiB: the new segment's first reservation (1 MiB) and the rest of the batch
        // (1 MiB more) fit only with the old segment's reservation (1 MiB) given back.
        let filler = fs.mount_point.join("filler");
        std::fs::write(&filler, vec![1u8; (free_bytes(&fs.mount_point) - (3 << 19)) as usize]).unwrap();
        let meta = producer
            .send("t", Record::new(vec![2u8; 3 << 19]))
            .unwrap_or_else(|e| panic!("round {round}: the batch did not get the space its roll gave back: {e}"));
        assert_eq!(meta.offset(), 1);
        let first_path = dir.join("topics/t/0/00000000000000000000.log");
        let allocated = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&first_path).unwrap()) * 512;
        assert!(allocated <= 64 << 10, "round {round}: the old segment still holds {allocated} bytes after the send");
        drop((producer, queue));
        std::fs::remove_file(&filler).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Bytes an unprivileged writer may still allocate on the file system of `path`.
fn free_bytes(path: &std::path::Path) -> u64 {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs reads the NUL-terminated path and writes the zeroed struct it is given.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stats) }, 0);
    stats.f_bavail * stats.f_frsize
}
