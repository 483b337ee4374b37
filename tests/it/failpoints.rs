//! Named failpoints (the `failpoints` feature, see `src/failpoint.rs`): a child process kills
//! itself at one chosen instruction, where a random kill rarely lands, and the parent reopens
//! the queue (or keeps using a handle it held meanwhile) and checks every invariant that
//! instruction could break.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use streamlog::{CleanupPolicy, ConsumerConfig, OffsetReset, Queue, Record, TopicConfig, TopicPartition};

use crate::child::{self, Reaper};
use crate::{TempDir, open_alone, read_log};

/// Runs child `role` with `args` until it dies at `failpoint`; returns the lines it printed.
/// Fails if the child finished without reaching the failpoint, or died another way.
fn die_at(failpoint: &str, role: &str, args: &[String]) -> Vec<String> {
    let mut process = child::spawn_with_env(role, args, &[("STREAMLOG_FAILPOINT", failpoint)]);
    let _reaper = Reaper(vec![process.id()]);
    // A line cut short by the kill is not a report: only whole lines count.
    let mut lines = Vec::new();
    let mut reader = BufReader::new(process.stdout.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        if let Some(whole) = line.strip_suffix('\n') {
            lines.push(whole.to_owned());
        }
        line.clear();
    }
    let status = process.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{role} never reached failpoint {failpoint}: {status}");
    lines
}

fn dir_arg(dir: &TempDir) -> String {
    dir.path().display().to_string()
}

/// The file names in a partition directory.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// Base offsets of the segments in a partition directory.
fn segment_bases(dir: &Path) -> Vec<u64> {
    file_names(dir).iter().filter_map(|n| n.strip_suffix(".log")?.parse().ok()).collect()
}

#[test]
fn a_writer_dying_between_its_data_write_and_the_tail_publish_loses_only_its_unacknowledged_batch() {
    // The writer dies at various appends; with a handle open meanwhile the next writer repairs
    // the append lock live, without one the next open recovers the files.
    for (round, (hit, durability, watch)) in
        [(1, "sync", true), (23, "buffered", true), (1, "buffered", false), (31, "sync", false)].into_iter().enumerate()
    {
        let dir = TempDir::new("fp-append");
        let watcher = Queue::open(dir.path()).unwrap();
        watcher.create_topic_with("crash", TopicConfig::new(2).segment_bytes(4096).index_interval_bytes(256)).unwrap();
        let watcher = watch.then_some(watcher);
        let args = [dir_arg(&dir), "crash".into(), "7".into(), "200".into(), "2".into(), durability.into()];
        let lines = die_at(&format!("append-before-publish@{hit}"), "produce", &args);
        let mut acked = HashMap::new();
        for (seq, partition, offset) in lines.iter().filter_map(|l| child::parse_ack(l)) {
            assert!(acked.insert((partition, offset), (7, seq)).is_none(), "offset {partition}/{offset} acknowledged twice");
        }
        // `produce` sends batches of three every fifth call: the appends before the fatal one
        // acknowledged at least `hit - 1` records.
        assert!(acked.len() >= hit - 1, "round {round}: only {} acknowledgements before append {hit}", acked.len());
        let queue = match watcher {
            Some(queue) => queue,
            None => open_alone(dir.path()).unwrap(),
        };
        let producer = queue.producer();
        for partition in 0..2 {
            // Acknowledged records present with their bytes, offsets dense; the batch that was
            // never published is either gone or whole (recovery may find it complete).
            let end = crate::crash::verify(&queue, partition, 0, &acked, round as u32);
            let acked_here = acked.keys().filter(|(p, _)| *p == partition).count() as u64;
            assert!(end == acked_here || (!watch && end <= acked_here + 3), "round {round}: {partition} ends at {end}");
            // The lock the writer died holding keeps working for every later writer, not just
            // the first (one that is not marked consistent again becomes unusable once released).
            for i in 0..3 {
                let sent = producer.send("crash", Record::new(child::value_for(8, i)).partition(partition)).unwrap();
                assert_eq!(sent.offset(), end + i, "round {round}: send {i} after the dead writer");
            }
            let log = read_log(&queue, &TopicPartition::new("crash", partition));
            for i in 0..3 {
                assert_eq!(log[&(end + i)].1.as_deref(), Some(&child::value_for(8, i)[..]), "round {round}: send {i} read back");
            }
        }
    }
}

#[test]
fn a_writer_dying_at_any_step_of_a_roll_loses_no_acknowledged_record_and_leaves_no_stray_file() {
    // Segments of 4 KiB roll every twenty records or so, each from a spare (made once an
    // eighth of the segment is full, synced in the background) when one is ready. The writer dies at
    // each step of that protocol; with a handle open meanwhile the next writer carries on from
    // the files as they are, without one the next open recovers them.
    let steps = [
        ("spare-prepared", 3),
        ("spare-synced", 2),
        ("spare-index-placed", 2),
        ("roll-before-publish", 5),
        ("roll-before-release", 4),
        ("seal-before-marker", 3),
    ];
    for (round, (step, hit)) in steps.into_iter().enumerate() {
        for (watch, durability) in [(true, "buffered"), (false, "sync")] {
            let dir = TempDir::new("fp-roll");
            let watcher = Queue::open(dir.path()).unwrap();
            watcher.create_topic_with("crash", TopicConfig::new(2).segment_bytes(4096).index_interval_bytes(256)).unwrap();
            let watcher = watch.then_some(watcher);
            let args = [dir_arg(&dir), "crash".into(), "7".into(), "100000".into(), "2".into(), durability.into()];
            let lines = die_at(&format!("{step}@{hit}"), "produce", &args);
            let mut acked = HashMap::new();
            for (seq, partition, offset) in lines.iter().filter_map(|l| child::parse_ack(l)) {
                assert!(acked.insert((partition, offset), (7, seq)).is_none(), "{step}: {partition}/{offset} acknowledged twice");
            }
            let queue = match watcher {
                Some(queue) => queue,
                None => open_alone(dir.path()).unwrap(),
            };
            let producer = queue.producer();
            let mut ends = Vec::new();
            for partition in 0..2 {
                // At most the one batch in flight (three records) was published unacknowledged.
                let end = crate::crash::verify(&queue, partition, 0, &acked, round as u32);
                let acked_here = acked.keys().filter(|(p, _)| *p == partition).count() as u64;
                assert!((acked_here..=acked_here + 3).contains(&end), "{step}, watched {watch}: {partition} ends at {end}");
                // Enough sends to roll a few times more, through whatever the dead writer left.
                for i in 0..60 {
                    let sent = producer.send("crash", Record::new(child::value_for(8, i)).partition(partition)).unwrap();
                    assert_eq!(sent.offset(), end + i, "{step}, watched {watch}: send {i} after the dead writer");
                }
                ends.push(end + 60);
            }
            drop(producer);
            drop(queue);
            // Alone again, recovery takes what is left: the dead writer's spares go, every
            // segment is whole, and the log reads back to where it ended.
            let queue = open_alone(dir.path()).unwrap();
            for (partition, end) in (0..2).zip(ends) {
                let log = read_log(&queue, &TopicPartition::new("crash", partition));
                assert_eq!(log.len() as u64, end, "{step}, watched {watch}: partition {partition} after recovery");
                for i in 0..60 {
                    assert_eq!(
                        log[&(end - 60 + i)].1.as_deref(),
                        Some(&child::value_for(8, i)[..]),
                        "{step}: send {i} read back"
                    );
                }
                let files = file_names(&dir.path().join("topics/crash").join(partition.to_string()));
                assert!(!files.iter().any(|name| name.ends_with(".tmp")), "{step}, watched {watch}: left behind {files:?}");
                let partition_dir = dir.path().join("topics/crash").join(partition.to_string());
                let bases = segment_bases(&partition_dir);
                for base in &bases {
                    assert!(files.contains(&format!("{base:020}.index")), "{step}: segment {base} has no index: {files:?}");
                }
                // What a sealed segment reserved past its data (1 MiB) went back, whether its
                // writer lived to give it back or recovery did.
                for base in &bases[..bases.len() - 1] {
                    let log = std::fs::metadata(partition_dir.join(format!("{base:020}.log"))).unwrap();
                    let allocated = std::os::unix::fs::MetadataExt::blocks(&log) * 512;
                    assert!(allocated <= 128 << 10, "{step}, watched {watch}: sealed segment {base} holds {allocated} bytes");
                }
            }
        }
    }
}

/// Starts a consumer of group `g` on topic `t`, waits until it owns all of `partitions`, commits
/// `offset` for each, and checks the group lists it alone.
fn group_is_usable(queue: &Queue, partitions: u32, offset: u64) {
    let config = ConsumerConfig::new("g").auto_commit(None).auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.subscribe(&["t"]).unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().len() < partitions as usize {
        assert!(Instant::now() < give_up, "the group is wedged: {:?}", queue.describe_group("g"));
        consumer.poll(Duration::from_millis(20)).unwrap();
    }
    let offsets: Vec<(TopicPartition, u64)> = (0..partitions).map(|p| (TopicPartition::new("t", p), offset)).collect();
    consumer.commit_offsets(&offsets).unwrap();
    let group = queue.describe_group("g").unwrap();
    assert_eq!(group.members.len(), 1, "a dead member is still listed: {group:?}");
    assert!(group.partitions.iter().all(|p| p.committed == Some(offset) && p.owner == Some(group.members[0].member_id)));
    consumer.close().unwrap();
}

#[test]
fn a_member_dying_inside_the_group_lock_leaves_the_group_usable_and_its_commits_in_place() {
    for failpoint in ["group-store-before-switch", "group-store-after-switch"] {
        // The first store is the member's join, the next ones its takes and the rebalance
        // that a second member (the parent's) causes.
        for hit in 1..=3 {
            let dir = TempDir::new("fp-group");
            let queue = Queue::open(dir.path()).unwrap();
            queue.create_topic("t", 3).unwrap();
            let producer = queue.producer();
            for i in 0..30u32 {
                producer.send("t", Record::new(&i.to_le_bytes()).partition(i % 3)).unwrap();
            }
            // Before the child's first store, the parent's member is already in the group when
            // the child's later stores happen: it rebalances, and keeps the keeper busy too.
            let mut other = (hit > 1).then(|| {
                let config = ConsumerConfig::new("g").auto_commit(None).session_timeout(Duration::from_secs(30));
                let mut other = queue.consumer(config).unwrap();
                other.subscribe(&["t"]).unwrap();
                other
            });
            let spec = format!("{failpoint}@{hit}");
            let mut process = child::spawn_with_env("fp-member", &[dir_arg(&dir)], &[("STREAMLOG_FAILPOINT", &spec)]);
            let _reaper = Reaper(vec![process.id()]);
            let stdout = process.stdout.take().unwrap();
            let lines = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>());
            let status = loop {
                if let Some(status) = process.try_wait().unwrap() {
                    break status;
                }
                if let Some(other) = other.as_mut() {
                    other.poll(Duration::from_millis(5)).unwrap();
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
            };
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{spec}: never reached: {status}");
            drop(other);
            let mut committed: BTreeMap<u32, u64> = BTreeMap::new();
            for line in lines.join().unwrap() {
                if let Some((p, o)) = line.strip_prefix("committed ").and_then(|rest| rest.split_once(' ')) {
                    committed.insert(p.parse().unwrap(), o.parse().unwrap());
                }
            }
            // Commits the dead member saw succeed are still there.
            let group = queue.describe_group("g").unwrap();
            for (p, offset) in &committed {
                let lag = group.partitions.iter().find(|l| l.partition == TopicPartition::new("t", *p)).unwrap();
                assert!(lag.committed >= Some(*offset), "{spec}: commit {p}@{offset} lost: {lag:?}");
            }
            group_is_usable(&queue, 3, 10);
            drop((producer, queue));
            // And after a reopen too.
            group_is_usable(&open_alone(dir.path()).unwrap(), 3, 10);
        }
    }
}

fn compacted_topic(queue: &Queue) {
    let config = TopicConfig::new(1)
        .segment_bytes(1024)
        .index_interval_bytes(128)
        .cleanup_policy(CleanupPolicy::Compact)
        .min_cleanable_dirty_ratio(0.0)
        .delete_retention_ms(24 * 3600 * 1000);
    queue.create_topic_with("t", config).unwrap();
}

/// The value and key `fp-compact` and `fp-retain` send as record `seq`.
fn keyed(seq: u64) -> (Vec<u8>, [u8; 8]) {
    let mut value = seq.to_le_bytes().to_vec();
    value.resize(40, b'v');
    (value, (seq % 16).to_le_bytes())
}

#[test]
fn compaction_dying_between_its_swap_renames_leaves_the_segment_either_whole_or_cleaned() {
    for failpoint in ["compaction-index-swapped", "compaction-log-swapped", "compaction-index-replaced"] {
        let dir = TempDir::new("fp-compact");
        compacted_topic(&Queue::open(dir.path()).unwrap());
        let lines = die_at(failpoint, "fp-compact", &[dir_arg(&dir), "t".into()]);
        let sent = lines.iter().filter(|l| l.parse::<u64>().is_ok()).count() as u64;
        assert_eq!(sent, 200, "{failpoint}: the child dies in its maintenance, after its sends");
        let partition_dir = dir.path().join("topics/t/0");
        let bases_before = segment_bases(&partition_dir);
        let queue = open_alone(dir.path()).unwrap();
        // Recovery runs when the partition is first used.
        let log = read_log(&queue, &TopicPartition::new("t", 0));
        let names = file_names(&partition_dir);
        assert!(!names.iter().any(|n| n.ends_with(".swap") || n.ends_with(".tmp")), "{failpoint}: left over: {names:?}");
        assert_eq!(segment_bases(&partition_dir), bases_before, "{failpoint}: a segment went missing");
        for (&offset, (key, value, _)) in &log {
            let (v, k) = keyed(offset);
            assert_eq!(
                (key.as_deref(), value.as_deref()),
                (Some(&k[..]), Some(&v[..])),
                "{failpoint}: record {offset} is not as sent"
            );
        }
        for seq in sent - 16..sent {
            assert!(log.contains_key(&seq), "{failpoint}: the latest record of key {} is gone", seq % 16);
        }
        // The failpoint is at the first swap: at most one segment was cleaned, and only before
        // the commit point is it left whole.
        let missing: Vec<u64> = (0..sent).filter(|o| !log.contains_key(o)).collect();
        if failpoint == "compaction-index-swapped" {
            assert!(missing.is_empty(), "{failpoint}: an uncommitted swap removed {missing:?}");
        } else {
            assert!(!missing.is_empty(), "{failpoint}: the committed swap was undone");
            let segment = bases_before.partition_point(|&b| b <= missing[0]) - 1;
            let end = bases_before.get(segment + 1).copied().unwrap_or(u64::MAX);
            assert!(*missing.last().unwrap() < end, "{failpoint}: more than one segment cleaned: {missing:?}");
        }
        // The log keeps working: sends and a full compaction.
        queue.producer().send("t", Record::new(&keyed(sent).0).key(&keyed(sent).1)).unwrap();
        queue.run_maintenance().unwrap();
        let log = read_log(&queue, &TopicPartition::new("t", 0));
        assert!((sent - 15..=sent).all(|seq| log.contains_key(&seq)), "{failpoint}: compaction after recovery");
    }
}

#[test]
fn retention_dying_between_its_log_start_write_and_its_unlinks_deletes_consistently() {
    for watch in [true, false] {
        let dir = TempDir::new("fp-retain");
        let watcher = Queue::open(dir.path()).unwrap();
        let config = TopicConfig::new(1).segment_bytes(1024).index_interval_bytes(128).retention_bytes(3000);
        watcher.create_topic_with("r", config).unwrap();
        let watcher = watch.then_some(watcher);
        let lines = die_at("retention-before-unlink", "fp-retain", &[dir_arg(&dir), "r".into()]);
        let sent = lines.iter().filter(|l| l.parse::<u64>().is_ok()).count() as u64;
        assert_eq!(sent, 200, "the child dies in its maintenance, after its sends");
        let partition_dir = dir.path().join("topics/r/0");
        let queue = match watcher {
            Some(queue) => queue,
            None => open_alone(dir.path()).unwrap(),
        };
        let tp = TopicPartition::new("r", 0);
        let (start, end) = queue.offsets(&tp).unwrap();
        assert!(start > 0, "the log start written before the kill is not in force");
        assert_eq!(end, sent, "acknowledged records lost");
        let check = |queue: &Queue| {
            let (start, end) = queue.offsets(&tp).unwrap();
            let log = read_log(queue, &tp);
            assert_eq!(log.keys().copied().collect::<Vec<_>>(), (start..end).collect::<Vec<_>>(), "watch {watch}: not dense");
            for (&offset, (key, value, _)) in &log {
                let (v, k) = keyed(offset);
                assert_eq!(
                    (key.as_deref(), value.as_deref()),
                    (Some(&k[..]), Some(&v[..])),
                    "watch {watch}: record {offset} is not as sent"
                );
            }
            start
        };
        check(&queue);
        // The next pass deletes what the dead one left below the start, and nothing else.
        queue.run_maintenance().unwrap();
        let start = check(&queue);
        let bases = segment_bases(&partition_dir);
        assert!(bases.iter().all(|&b| b >= start) && bases.first() == Some(&start), "watch {watch}: {bases:?} vs start {start}");
        assert_eq!(queue.producer().send("r", Record::new(b"after").key(b"k")).unwrap().offset(), sent);
    }
}

/// The roles of this module's child processes.
pub(crate) fn child(role: &str, args: &[String]) {
    match role {
        "fp-member" => member(args),
        "fp-compact" | "fp-retain" => send_then_maintain(args),
        other => panic!("unknown child role {other}"),
    }
}

/// `fp-member DIR`: joins group `g` on topic `t`, polls and commits its positions, printing
/// `committed P OFFSET` after each commit returned, for a bounded while; then closes.
fn member(args: &[String]) {
    let [dir] = args else { panic!("bad arguments {args:?}") };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let config = ConsumerConfig::new("g").auto_commit(None).auto_offset_reset(OffsetReset::Earliest).max_poll_records(3);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.subscribe(&["t"]).unwrap();
    for _ in 0..400 {
        consumer.poll(Duration::from_millis(5)).unwrap();
        let positions: Vec<(TopicPartition, u64)> =
            consumer.assignment().into_iter().map(|tp| (tp.clone(), consumer.position(&tp).unwrap())).collect();
        if consumer.commit_offsets(&positions).is_ok() {
            for (tp, offset) in positions {
                println!("committed {} {offset}", tp.partition());
            }
        }
    }
    consumer.close().unwrap();
}

/// `fp-compact DIR TOPIC` and `fp-retain DIR TOPIC`: sends 200 keyed records, printing the
/// number of each once its send returned, then runs maintenance.
fn send_then_maintain(args: &[String]) {
    let [dir, topic] = args else { panic!("bad arguments {args:?}") };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let producer = queue.producer();
    for seq in 0..200 {
        let (value, key) = keyed(seq);
        producer.send(topic, Record::new(&value).key(&key)).unwrap();
        println!("{seq}");
    }
    queue.run_maintenance().unwrap();
}
