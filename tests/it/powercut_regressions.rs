//! Power-cut regressions of bugs of issue 10 that the random campaigns (`powercut`) look for,
//! as direct cases. Each of these fails on the library before that fixes (commit
//! 09c5217):
//! - a group's first Sync commit lost because the directories it created were never synced
//!   (item 7): `a_groups_first_sync_commit_survives_a_clean_cut`;
//! - compaction removing an acknowledged record because of a newer one that was not durable
//!   (item 9), in a topic and in a group's offset log:
//!   `compaction_keeps_a_sync_record_whose_newer_record_never_became_durable`,
//!   `offset_log_compaction_keeps_a_sync_commit_whose_newer_buffered_commit_never_became_durable`;
//! - retention's unlinks undone by the cut, the log start moving backwards (item 1):
//!   `the_log_start_retention_reported_survives_a_clean_cut`.
//!
//! A torn unsynced tail that recovery must cut so that every read succeeds (item 8) passes on
//! 09c5217 too, because that recovery drops the whole unsynced tail here; the exact item-8
//! damage, one zeroed sector below the last index entry, is
//! `recovery::a_torn_unsynced_tail_is_cut_at_the_first_bad_batch`.
//!
//! The tests make the topic (or group) durable themselves (every file and directory of the
//! queue fsynced) before the step under test, so that only that step's own durability is
//! checked. The compaction cases need a newer record that is still not durable when the
//! compaction runs; a background seal usually syncs it first, so there the seal's fsync of
//! that one segment fails instead (`PowerCutFs::fail_fsync`), which stands for a seal that had
//! not run yet when the power went.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use powercut::Cut;
use streamlog::{
    CleanupPolicy, ConsumerConfig, Durability, OffsetReset, Producer, ProducerConfig, Queue, Record, TopicConfig, TopicPartition,
};

use crate::child::{self, value_for};
use crate::testfs::Mounted;

/// Fsyncs every file and directory under `path`, `path` itself and its parent.
fn sync_tree(path: &Path) {
    fn walk(path: &Path) {
        let file = std::fs::File::open(path).unwrap();
        if file.metadata().unwrap().is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path());
            }
        }
        file.sync_all().unwrap();
    }
    walk(path);
    std::fs::File::open(path.parent().unwrap()).unwrap().sync_all().unwrap();
}

#[test]
fn a_groups_first_sync_commit_survives_a_clean_cut() {
    let mut m = Mounted::new("pcreg-commit");
    let dir = m.path("q");
    let tp = TopicPartition::new("t", 0);
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic("t", 1).unwrap();
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    for i in 0..3u32 {
        producer.send("t", Record::new(&i.to_le_bytes()).partition(0)).unwrap();
    }
    drop(producer);
    sync_tree(&dir);
    // The group's first commit creates its files and directories; Sync promises they survive.
    let mut consumer =
        queue.consumer(ConsumerConfig::new("ledger").auto_commit(None).commit_durability(Durability::Sync)).unwrap();
    consumer.commit_offsets(&[(tp.clone(), 2)]).unwrap();
    drop((consumer, queue));
    let report = m.fs.cut(Cut::Clean).unwrap();
    let queue = crate::open_alone(&dir).unwrap();
    let consumer = queue.consumer(ConsumerConfig::new("ledger").auto_commit(None)).unwrap();
    assert_eq!(consumer.committed(&tp).unwrap(), Some(2), "the acknowledged Sync commit is gone after the cut: {report:?}");
}

/// Whether `value` is exactly what `child::produce` sent as some producer's record.
fn sent_by_a_producer(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(&value[..value.len().min(30)]) else { return false };
    let Some((producer, rest)) = text.strip_prefix('p').and_then(|t| t.split_once("-s")) else { return false };
    let Some((seq, _)) = rest.split_once('-') else { return false };
    match (producer.parse(), seq.parse()) {
        (Ok(producer), Ok(seq)) => value == value_for(producer, seq).as_slice(),
        _ => false,
    }
}

/// Reads `tp` from its start to its end: every poll must succeed and every record be whole.
fn read_all(queue: &Queue, tp: &TopicPartition) -> Result<u64, String> {
    let (start, end) = queue.offsets(tp).map_err(|e| format!("offsets: {e}"))?;
    let config =
        ConsumerConfig::new("checker").auto_commit(None).auto_offset_reset(OffsetReset::Earliest).max_poll_records(10_000);
    let mut consumer = queue.consumer(config).map_err(|e| e.to_string())?;
    consumer.assign(std::slice::from_ref(tp)).map_err(|e| e.to_string())?;
    consumer.seek(tp, start).map_err(|e| e.to_string())?;
    let mut next = start;
    let give_up = Instant::now() + Duration::from_secs(60);
    while consumer.position(tp).map_err(|e| e.to_string())? < end {
        if Instant::now() > give_up {
            return Err(format!("did not read to the end {end}, stuck at {next}"));
        }
        for record in consumer.poll(Duration::from_millis(200)).map_err(|e| format!("poll at {next}: {e}"))?.iter() {
            if record.offset() != next {
                return Err(format!("offset {} read where {next} was next", record.offset()));
            }
            if record.value() != b"after" && !sent_by_a_producer(record.value()) {
                return Err(format!("offset {next} holds bytes no send wrote"));
            }
            next += 1;
        }
    }
    Ok(end - start)
}

/// Asks the kernel to write the mount's dirty pages back (syncfs: no fsync reaches the files).
fn write_back(mount: &Path) {
    let root = std::fs::File::open(mount).unwrap();
    // SAFETY: syncfs has no memory preconditions; `root` is an open descriptor.
    unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&root)) };
}

#[test]
fn a_torn_unsynced_tail_is_cut_and_the_log_stays_readable() {
    let mut m = Mounted::new("pcreg-torn");
    let dir = m.path("q");
    let tp = TopicPartition::new("t", 0);
    let queue = Queue::open(&dir).unwrap();
    // Dense index entries: the old recovery scanned only from the last one.
    queue.create_topic_with("t", TopicConfig::new(1).index_interval_bytes(256)).unwrap();
    drop(queue);
    sync_tree(&dir);
    // Several rounds, each with its own torn writeback, so that some tear a batch in two.
    for round in 0..6u32 {
        let args = [dir.display().to_string(), "t".into(), round.to_string(), "0".into(), "1".into(), "buffered".into()];
        let mut producer = child::spawn("produce", &args);
        let _reaper = child::Reaper(vec![producer.id()]);
        let mut lines = BufReader::new(producer.stdout.take().unwrap()).lines();
        for _ in 0..200 {
            lines.next().expect("the producer acknowledges 200 Buffered sends").unwrap();
        }
        producer.kill().unwrap();
        producer.wait().unwrap();
        drop(lines);
        // Dirty mapped pages reach the file system (without becoming durable), so that the
        // torn cut has unsynced sectors to keep or drop.
        write_back(m.fs.path());
        // The index happened to reach the disk before the data it points at (writeback has no
        // order): recovery must not trust it past the synced point.
        for entry in std::fs::read_dir(dir.join("topics/t/0")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "index") {
                std::fs::File::open(&path).unwrap().sync_all().unwrap();
            }
        }
        let report = m.fs.cut(Cut::Torn { seed: 0x9e37_79b9 + u64::from(round) }).unwrap();
        let queue = crate::open_alone(&dir).unwrap_or_else(|e| panic!("round {round}: the queue did not open: {e} ({report:?})"));
        let read = read_all(&queue, &tp).unwrap_or_else(|e| panic!("round {round}: {e} ({report:?})"));
        // The queue keeps accepting sends, and they read back.
        queue.producer().send("t", Record::new(b"after").partition(0)).unwrap();
        read_all(&queue, &tp).unwrap_or_else(|e| panic!("round {round}, after a send: {e}"));
        // The cut had unsynced sectors to tear, else the round proved nothing.
        assert!(report.sectors_unsynced > 0, "round {round} ({read} records): {report:?}");
    }
}

/// The base offsets of the segment files in the log directory `log`, in order.
fn segment_bases(log: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(log)
        .unwrap()
        .filter_map(|entry| entry.unwrap().file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort_unstable();
    bases
}

/// `(offset, key)` of every record of `tp`, read from its start to its end.
fn keyed_records(queue: &Queue, tp: &TopicPartition) -> Vec<(u64, Option<Vec<u8>>)> {
    let end = queue.offsets(tp).unwrap().1;
    let mut consumer = crate::consumer_from_start(queue, tp.topic(), 1);
    let mut found = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(60);
    while consumer.position(tp).unwrap() < end {
        assert!(Instant::now() < give_up, "did not read to the end {end}: {} records read", found.len());
        for record in consumer.poll(Duration::from_millis(200)).unwrap().iter() {
            found.push((record.offset(), record.key().map(<[u8]>::to_vec)));
        }
    }
    found
}

#[test]
fn compaction_keeps_a_sync_record_whose_newer_record_never_became_durable() {
    // Issue 10, item 9: key K sent with Sync at offset 0, again Buffered at offset 21; the
    // segment holding offset 0 compacted; a power cut. The background seal of the segment
    // holding offset 21 fails its fsync here, which stands for a seal that had not run yet
    // when the power went: that segment's newer records are never durable.
    let mut m = Mounted::new("pcreg-compact");
    let dir = m.path("q");
    let tp = TopicPartition::new("t", 0);
    let queue = Queue::open(&dir).unwrap();
    let config = TopicConfig::new(1).segment_bytes(4096).cleanup_policy(CleanupPolicy::Compact).min_cleanable_dirty_ratio(0.01);
    queue.create_topic_with("t", config).unwrap();
    sync_tree(&dir);
    let log = dir.join("topics/t/0");
    let sync = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    let buffered = queue.producer();
    // A batch of one record with an 8-byte key and this value takes 40 + 24 + 8 + 440 = 512
    // bytes: eight fill a 4096-byte segment, so offsets 16..24 share a segment.
    let value = [7u8; 440];
    let send = |producer: &Producer, key: &[u8]| producer.send("t", Record::new(&value).key(key).partition(0)).unwrap().offset();
    let key = b"key-K...";
    assert_eq!(send(&sync, key), 0);
    for i in 1..20 {
        send(&buffered, format!("fill{i:04}").as_bytes());
    }
    // Everything so far is durable, and no background seal is left to run.
    assert_eq!(send(&sync, b"fill0020"), 20);
    assert_eq!(segment_bases(&log), [0, 8, 16], "the setup: eight records a segment");
    m.fs.fail_fsync(format!("q/topics/t/0/{:020}.log", 16), 1);
    assert_eq!(send(&buffered, key), 21);
    for i in 22..25 {
        send(&buffered, format!("fill{i:04}").as_bytes());
    }
    assert_eq!(segment_bases(&log), [0, 8, 16, 24], "the setup: offset 24 sealed the segment holding offset 21");
    let maintenance = queue.run_maintenance();
    drop((sync, buffered, queue));
    assert_eq!(m.fs.stats().failed_fsyncs, 1, "the setup: the segment holding offset 21 was never synced");
    let report = m.fs.cut(Cut::Clean).unwrap();
    let queue = crate::open_alone(&dir).unwrap();
    let left: Vec<u64> =
        keyed_records(&queue, &tp).into_iter().filter(|(_, k)| k.as_deref() == Some(key)).map(|(offset, _)| offset).collect();
    assert_eq!(
        left,
        [0],
        "the key's acknowledged Sync record must survive, its newer record was never durable \
         (maintenance returned {maintenance:?}; {report:?})"
    );
}

#[test]
fn offset_log_compaction_keeps_a_sync_commit_whose_newer_buffered_commit_never_became_durable() {
    // The same for a group's offset log: a Sync commit of offset 5, then a Buffered commit of
    // 9 for the same partition in a later segment whose fsync fails (as above), compaction,
    // a power cut: the committed offset is 5, not gone.
    let mut m = Mounted::new("pcreg-commit-compact");
    let dir = m.path("q");
    let tp = TopicPartition::new("t", 0);
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic("t", 2).unwrap();
    let config = ConsumerConfig::new("ledger").auto_commit(None);
    let mut sync = queue.consumer(config.clone().commit_durability(Durability::Sync)).unwrap();
    let mut buffered = queue.consumer(config.commit_durability(Durability::Buffered)).unwrap();
    sync.commit_offsets(&[(tp.clone(), 5)]).unwrap();
    // The group's directories are durable: that a first commit makes them so is another test.
    sync_tree(&dir);
    let log = dir.join("groups/ledger/offsets");
    // Offset logs roll at 16 MiB, which the public API does not change: a commit of 50,000
    // partitions of a 200-byte topic name (24 + 4 + 200 + 32 bytes each, about 13 MB) leaves
    // no room for a second one in a segment.
    let filler_topic = "f".repeat(200);
    let filler = |offset: u64| -> Vec<(TopicPartition, u64)> {
        (0..50_000).map(|p| (TopicPartition::new(&filler_topic, p), offset)).collect()
    };
    buffered.commit_offsets(&filler(1)).unwrap();
    buffered.commit_offsets(&filler(2)).unwrap();
    let bases = segment_bases(&log);
    assert_eq!(bases.len(), 2, "the setup: the second large commit rolled the offset log ({bases:?})");
    // Everything so far is durable, and no background seal is left to run.
    sync.commit_offsets(&[(TopicPartition::new("t", 1), 1)]).unwrap();
    m.fs.fail_fsync(format!("q/groups/ledger/offsets/{:020}.log", bases[1]), 1);
    buffered.commit_offsets(&[(tp.clone(), 9)]).unwrap();
    buffered.commit_offsets(&filler(3)).unwrap();
    assert_eq!(segment_bases(&log).len(), 3, "the setup: the third large commit sealed the segment holding the commit of 9");
    let maintenance = queue.run_maintenance();
    drop((sync, buffered, queue));
    assert_eq!(m.fs.stats().failed_fsyncs, 1, "the setup: the segment holding the commit of 9 was never synced");
    let report = m.fs.cut(Cut::Clean).unwrap();
    let queue = crate::open_alone(&dir).unwrap();
    let consumer = queue.consumer(ConsumerConfig::new("ledger").auto_commit(None)).unwrap();
    assert_eq!(
        consumer.committed(&tp).unwrap(),
        Some(5),
        "the acknowledged Sync commit must survive, the Buffered one after it was never durable \
         (maintenance returned {maintenance:?}; {report:?})"
    );
}

/// A recognisable value for record `i`, 100 bytes long.
fn numbered(i: u64) -> Vec<u8> {
    let mut value = format!("record-{i}-").into_bytes();
    value.resize(100, b'.');
    value
}

#[test]
fn the_log_start_retention_reported_survives_a_clean_cut() {
    // Issue 10, item 1: retention's unlinks are not durable until their directory is synced,
    // and a power cut brought the deleted segments back, the log start moving backwards.
    let mut m = Mounted::new("pcreg-retention");
    let dir = m.path("q");
    let tp = TopicPartition::new("t", 0);
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096).retention_bytes(8192)).unwrap();
    sync_tree(&dir);
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    for i in 0..200 {
        assert_eq!(producer.send("t", Record::new(numbered(i)).partition(0)).unwrap().offset(), i);
    }
    assert!(queue.run_maintenance().unwrap() > 0, "retention deleted nothing");
    let (start, end) = queue.offsets(&tp).unwrap();
    assert!(start > 0 && end == 200, "the setup: retention moved the log start ({start}..{end})");
    drop((producer, queue));
    let report = m.fs.cut(Cut::Clean).unwrap();
    let queue = crate::open_alone(&dir).unwrap();
    // Retention made its log start durable before it unlinked anything: the log starts there.
    assert_eq!(queue.offsets(&tp).unwrap(), (start, end), "the log start moved after the cut ({report:?})");
    let mut consumer = crate::consumer_from_start(&queue, "t", 1);
    consumer.seek(&tp, 0).unwrap();
    let read = crate::read_exactly(&mut consumer, (end - start) as usize);
    for (i, (_, offset, _, value)) in read.iter().enumerate() {
        assert_eq!(*offset, start + i as u64, "a read from offset 0 after the cut");
        assert_eq!(value, &numbered(*offset));
    }
}
