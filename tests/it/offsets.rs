//! The offset store: a model-based property test across two handles (as two processes would
//! hold) and reopens, commits killed with SIGKILL mid-stream, and a committed offset beyond the
//! end of its log being clamped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use proptest::prelude::*;
use streamlog::{Consumer, ConsumerConfig, OffsetReset, Queue, RebalanceListener, Record, TopicPartition};

use crate::TempDir;
use crate::child::{self, Reaper};

fn plain_consumer(queue: &Queue) -> Consumer {
    queue.consumer(ConsumerConfig::new("ledger").auto_commit(None)).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    /// Commit through handle 0 or 1 these (partition, offset) pairs, all at once.
    Commit { handle: usize, offsets: Vec<(u32, u64)> },
    /// Drop both handles and open the queue again (running recovery).
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..2, prop::collection::vec((0u32..5, 0u64..1 << 40), 1..6)).prop_map(|(handle, offsets)| Op::Commit { handle, offsets }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever is committed through either handle reads back through both, after reopens too.
    #[test]
    fn committed_offsets_match_a_map(ops in prop::collection::vec(op(), 1..60)) {
        let dir = TempDir::new("offsets-model");
        let open = || {
            let queues = [Queue::open(dir.path()).unwrap(), Queue::open(dir.path()).unwrap()];
            let consumers = [plain_consumer(&queues[0]), plain_consumer(&queues[1])];
            (queues, consumers)
        };
        let (mut queues, mut consumers) = open();
        let mut model: HashMap<u32, u64> = HashMap::new();
        for op in ops {
            match op {
                Op::Commit { handle, offsets } => {
                    let tps: Vec<(TopicPartition, u64)> = offsets.iter().map(|&(p, o)| (TopicPartition::new("t", p), o)).collect();
                    consumers[handle].commit_offsets(&tps).unwrap();
                    model.extend(offsets);
                }
                Op::Reopen => {
                    drop((consumers, queues));
                    (queues, consumers) = open();
                }
            }
            for consumer in &consumers {
                for p in 0..5 {
                    prop_assert_eq!(consumer.committed(&TopicPartition::new("t", p)).unwrap(), model.get(&p).copied());
                }
            }
        }
    }
}

#[test]
fn a_commit_killed_midway_reads_back_whole_old_or_new() {
    let dir = TempDir::new("offsets-crash");
    std::fs::create_dir_all(dir.path()).unwrap();
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
    let mut start = 1u64;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    for round in 0..12 {
        let durability = if round % 3 == 2 { "sync" } else { "buffered" };
        // Some rounds keep a handle open here, so the next reader does not run recovery.
        let held = (round % 2 == 0).then(|| Queue::open(dir.path()).unwrap());
        let mut process = child::spawn("commit", &[dir.path().display().to_string(), start.to_string(), durability.to_string()]);
        let _reaper = Reaper(vec![process.id()]);
        let stdout = process.stdout.take().unwrap();
        let acks = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = line.parse::<u64>() {
                    last = Some(value);
                }
            }
            last
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(30 + rng % 120));
        process.kill().unwrap();
        process.wait().unwrap();
        let last_acked = acks.join().unwrap().unwrap_or(start - 1);
        drop(held);
        let queue = Queue::open(dir.path()).unwrap();
        let consumer = plain_consumer(&queue);
        let committed: Vec<Option<u64>> = tps.iter().map(|tp| consumer.committed(tp).unwrap()).collect();
        let value = committed[0].unwrap_or(0);
        assert!(
            committed.iter().all(|c| *c == committed[0]),
            "round {round}: a commit of three partitions was torn: {committed:?}"
        );
        assert!(value >= last_acked, "round {round}: acknowledged commit {last_acked} lost (found {value})");
        assert!(value <= last_acked + 1, "round {round}: found {value}, never sent after {last_acked}");
        start = value + 1;
    }
}

/// Records what the listener was told about clamped offsets.
struct ClampRecorder(std::sync::mpsc::Sender<(TopicPartition, u64, u64)>);

impl RebalanceListener for ClampRecorder {
    fn on_offset_clamped(&mut self, _: &mut Consumer, partition: &TopicPartition, committed: u64, end: u64) {
        self.0.send((partition.clone(), committed, end)).unwrap();
    }
}

#[test]
fn a_committed_offset_past_the_end_is_clamped_and_reported() {
    let dir = TempDir::new("offsets-clamp");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", 1).unwrap();
    for i in 0..10u32 {
        queue.producer().send("t", Record::new(&i.to_le_bytes())).unwrap();
    }
    let tp = TopicPartition::new("t", 0);
    // As if the log lost its unsynced tail in a power cut that the (synced) commit survived.
    plain_consumer(&queue).commit_offsets(&[(tp.clone(), 25)]).unwrap();
    let (sender, told) = std::sync::mpsc::channel();
    let config = ConsumerConfig::new("ledger").auto_commit(None).auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.subscribe_with(&["t"], ClampRecorder(sender)).unwrap();
    assert!(consumer.poll(Duration::from_millis(50)).unwrap().is_empty(), "nothing before the end is read again");
    assert_eq!(told.try_recv().unwrap(), (tp.clone(), 25, 10));
    assert_eq!(consumer.position(&tp).unwrap(), 10);
    queue.producer().send("t", Record::new(b"new")).unwrap();
    let records = consumer.poll(Duration::from_secs(5)).unwrap();
    assert_eq!(records.iter().map(|r| r.offset()).collect::<Vec<_>>(), [10]);
}

#[test]
fn maintenance_compacts_the_offset_log_to_the_latest_commits() {
    let dir = TempDir::new("offsets-compact");
    let queue = Queue::open(dir.path()).unwrap();
    let mut consumer = plain_consumer(&queue);
    let tps: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new("t", p)).collect();
    // Enough commits to fill a 16 MiB segment of the offset log and start another.
    for i in 0..200_000u64 {
        consumer.commit_offsets(&[(tps[(i % 4) as usize].clone(), i)]).unwrap();
    }
    let log_bytes = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir.join("groups/ledger/offsets"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let before = log_bytes(dir.path());
    assert!(queue.run_maintenance().unwrap() > 0);
    let after = log_bytes(dir.path());
    assert!(after < before / 2, "the offset log went from {before} to {after} bytes");
    let expected: Vec<Option<u64>> = (0..4).map(|p| Some(199_996 + p)).collect();
    let read = |consumer: &Consumer| tps.iter().map(|tp| consumer.committed(tp).unwrap()).collect::<Vec<_>>();
    assert_eq!(read(&consumer), expected);
    // A new handle folds the compacted log from its start.
    drop((consumer, queue));
    let queue = Queue::open(dir.path()).unwrap();
    assert_eq!(read(&plain_consumer(&queue)), expected);
}
