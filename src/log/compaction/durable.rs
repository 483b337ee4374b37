//! Compaction removes a record only because of a newer record of its key that is durable: a
//! power cut after the rewrite must find the newer record. The background sync of sealed
//! segments is held back here, as if it had not run yet, which is what made the loss possible.

use crate::group::offsets::offset_log_config;
use crate::log::partition::Partition;
use crate::sys::clock;
use crate::{CleanupPolicy, Durability, ProducerConfig, Queue, Record, TopicConfig, TopicPartition};

fn queue(name: &str) -> (Queue, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("streamlog-unit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    (Queue::open(&dir).unwrap(), dir)
}

/// Long after every record sent: every sealed segment is past any compaction lag.
fn later_ms() -> u64 {
    clock::wall_clock_ms() + 3_600_000
}

/// The offsets of the records with `key` that `partition` holds.
fn offsets_of(partition: &Partition, key: &[u8]) -> Vec<u64> {
    let tail = partition.tail();
    let mut cursor = partition.cursor_at(partition.start_offset(), &tail, true).unwrap();
    let mut found = Vec::new();
    let scanned = partition.scan(&mut cursor, &tail, tail.end_offset, 1024, |records, _| {
        found.extend(records.iter().filter(|r| r.key() == Some(key)).map(|r| r.offset()));
        Ok(std::ops::ControlFlow::<()>::Continue(()))
    });
    scanned.unwrap();
    found
}

/// Appends with `send` until `partition` rolls past `offset`, so that the segment holding it is
/// sealed.
fn seal_past(partition: &Partition, offset: u64, mut send: impl FnMut(u64)) {
    let mut filler = 0;
    while partition.tail().active_base <= offset {
        send(filler);
        filler += 1;
    }
}

/// After compaction, `key` must still have its record at `acknowledged`, or the newer record
/// at `newer` that replaced it must be durable.
fn assert_only_durable_records_decided(partition: &Partition, key: &[u8], acknowledged: u64, newer: u64) {
    let left = offsets_of(partition, key);
    assert!(left.contains(&newer), "the newest record of the key is gone: {left:?}");
    if !left.contains(&acknowledged) {
        let synced = partition.state.synced_offset();
        assert!(
            synced > newer,
            "offset {acknowledged} was removed because of offset {newer}, which is not durable (synced below {synced})"
        );
    }
}

#[test]
fn compaction_removes_a_synced_record_only_for_a_durable_newer_one() {
    let (queue, dir) = queue("durable-compaction");
    let config = TopicConfig::new(1).segment_bytes(1024).cleanup_policy(CleanupPolicy::Compact);
    queue.create_topic_with("t", config).unwrap();
    let partition = queue.inner.partition(&TopicPartition::new("t", 0)).unwrap();
    partition.background.hold_back();
    let sync = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    let buffered = queue.producer();
    let value = [7u8; 100];
    assert_eq!(sync.send("t", Record::new(b"acknowledged").key(b"K")).unwrap().offset(), 0);
    let fill = |i: u64| {
        buffered.send("t", Record::new(&value).key(format!("f{i}").as_bytes())).unwrap();
    };
    seal_past(&partition, 0, fill);
    let newer = buffered.send("t", Record::new(b"newer").key(b"K")).unwrap().offset();
    seal_past(&partition, newer, fill);
    assert_eq!(partition.state.synced_offset(), 1, "the setup: only the Sync send is durable");

    let rewritten = partition.compact(&queue.topic_config("t").unwrap(), later_ms(), &|| false).unwrap();
    assert!(rewritten > 0, "nothing was compacted");
    assert_only_durable_records_decided(&partition, b"K", 0, newer);
    drop((sync, buffered, partition, queue));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compaction_of_an_offset_log_never_erases_a_sync_commit_for_a_buffered_one() {
    let (queue, dir) = queue("durable-offset-compaction");
    let group = queue.inner.group("g").unwrap();
    let store = &group.offsets;
    let log = &store.log();
    log.background.hold_back();
    // Small segments, so that a few commits fill one (they apply to the open segment at once).
    log.set_config(offset_log_config().segment_bytes(1024));
    let tp = TopicPartition::new("t", 0);
    let end = store.commit(&[(tp.clone(), 5)], 1, 1, |_| 0).unwrap();
    store.make_durable(end, Durability::Sync).unwrap();
    let acknowledged = end - 1;
    let fill = |i: u64| {
        store.commit(&[(TopicPartition::new("t", 1 + i as u32), i)], 1, 1, |_| 0).unwrap();
    };
    seal_past(log, acknowledged, fill);
    // A Buffered commit: nothing waits for it to be durable.
    let newer = store.commit(&[(tp.clone(), 9)], 1, 1, |_| 0).unwrap() - 1;
    seal_past(log, newer, fill);
    assert_eq!(log.state.synced_offset(), acknowledged + 1, "the setup: only the Sync commit is durable");

    let rewritten = store.compact(later_ms(), &|| false).unwrap();
    assert!(rewritten > 0, "nothing was compacted");
    assert_only_durable_records_decided(log, &crate::group::offsets::encode_commit_key(&tp), acknowledged, newer);
    assert_eq!(store.committed(&tp).unwrap(), Some((9, 0)));
    drop((group, queue));
    std::fs::remove_dir_all(&dir).unwrap();
}
