//! Transactions: what readers of committed and of uncommitted records see of commits and
//! aborts, the last stable offset, fencing of older instances, transactions of dead processes
//! aborted, and a model-based property test against what a `ReadCommitted` reader must see.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use streamlog::{ConsumerConfig, Error, IsolationLevel, OffsetReset, Queue, Record, TopicPartition, TransactionalProducer};

use crate::TempDir;
use crate::child::{self, Reaper};

fn reader(queue: &Queue, level: IsolationLevel, partitions: &[TopicPartition]) -> streamlog::Consumer {
    let config = ConsumerConfig::new("readers").isolation_level(level).auto_offset_reset(OffsetReset::Earliest).auto_commit(None);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.assign(partitions).unwrap();
    consumer
}

/// Every record the consumer returns until a poll of `wait` returns nothing: (partition,
/// offset, value).
fn drain(consumer: &mut streamlog::Consumer, wait: Duration) -> Vec<(u32, u64, Vec<u8>)> {
    let mut seen = Vec::new();
    loop {
        let records = consumer.poll(wait).unwrap();
        if records.is_empty() {
            return seen;
        }
        seen.extend(records.iter().map(|r| (r.partition(), r.offset(), r.value().to_vec())));
    }
}

/// A fresh queue in a directory of its own, with topic `t` of `partitions` partitions.
fn queue_with_topic(name: &str, partitions: u32) -> (TempDir, Queue) {
    let dir = TempDir::new(name);
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("t", partitions).unwrap();
    (dir, queue)
}

fn values(seen: &[(u32, u64, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = seen.iter().map(|(_, _, v)| v.clone()).collect();
    values.sort();
    values
}

fn all_partitions(topic: &str, count: u32) -> Vec<TopicPartition> {
    (0..count).map(|p| TopicPartition::new(topic, p)).collect()
}

#[test]
fn committed_records_appear_together_and_aborted_ones_never() {
    let (_dir, queue) = queue_with_topic("txn-basic", 2);
    queue.create_topic("u", 1).unwrap();
    let producer = queue.transactional_producer("writer").unwrap();
    let mut committed = reader(&queue, IsolationLevel::ReadCommitted, &[all_partitions("t", 2), all_partitions("u", 1)].concat());
    let mut uncommitted =
        reader(&queue, IsolationLevel::ReadUncommitted, &[all_partitions("t", 2), all_partitions("u", 1)].concat());

    producer.begin_transaction().unwrap();
    producer.send("t", Record::new(b"a1").partition(0)).unwrap();
    producer.send_batch("t", [Record::new(b"a2").partition(1), Record::new(b"a3").partition(1)]).unwrap();
    producer.send("u", Record::new(b"a4")).unwrap();
    assert!(drain(&mut committed, Duration::from_millis(20)).is_empty(), "nothing of an open transaction is read");
    assert_eq!(values(&drain(&mut uncommitted, Duration::from_millis(20))), [&b"a1"[..], b"a2", b"a3", b"a4"]);
    producer.commit_transaction().unwrap();
    let seen = drain(&mut committed, Duration::from_millis(20));
    assert_eq!(values(&seen), [&b"a1"[..], b"a2", b"a3", b"a4"]);

    producer.begin_transaction().unwrap();
    producer.send("t", Record::new(b"b1").partition(0)).unwrap();
    producer.send("u", Record::new(b"b2")).unwrap();
    producer.abort_transaction().unwrap();
    queue.producer().send("t", Record::new(b"plain").partition(0)).unwrap();
    assert_eq!(values(&drain(&mut committed, Duration::from_millis(20))), [b"plain".to_vec()]);
    assert_eq!(values(&drain(&mut uncommitted, Duration::from_millis(20))), [&b"b1"[..], b"b2", b"plain"]);

    // Markers take offsets, and neither reader returns them: partition 0 of t holds a1, its
    // commit marker, b1, its abort marker, then the plain record.
    assert_eq!(queue.offsets(&TopicPartition::new("t", 0)).unwrap(), (0, 5));
    assert_eq!(committed.position(&TopicPartition::new("t", 0)).unwrap(), 5);
    drop((committed, uncommitted, producer, queue));
}

#[test]
fn a_reader_of_committed_records_stops_at_the_first_open_transaction() {
    let (_dir, queue) = queue_with_topic("txn-lso", 1);
    let plain = queue.producer();
    let first = queue.transactional_producer("first").unwrap();
    let second = queue.transactional_producer("second").unwrap();
    let mut committed = reader(&queue, IsolationLevel::ReadCommitted, &all_partitions("t", 1));
    plain.send("t", Record::new(b"p0")).unwrap();
    first.begin_transaction().unwrap();
    first.send("t", Record::new(b"f1")).unwrap();
    plain.send("t", Record::new(b"p1")).unwrap();
    second.begin_transaction().unwrap();
    second.send("t", Record::new(b"s1")).unwrap();
    second.commit_transaction().unwrap();
    plain.send("t", Record::new(b"p2")).unwrap();
    // first's transaction holds everything after it back, committed or not.
    assert_eq!(values(&drain(&mut committed, Duration::from_millis(20))), [b"p0".to_vec()]);
    let tp = TopicPartition::new("t", 0);
    assert_eq!(committed.position(&tp).unwrap(), 1);
    first.send("t", Record::new(b"f2")).unwrap();
    first.commit_transaction().unwrap();
    let seen = drain(&mut committed, Duration::from_millis(20));
    let in_order: Vec<&[u8]> = seen.iter().map(|(_, _, v)| v.as_slice()).collect();
    assert_eq!(in_order, [&b"f1"[..], b"p1", b"s1", b"p2", b"f2"], "in offset order");
    drop((committed, first, second, plain, queue));
}

#[test]
fn a_poll_waiting_at_the_last_stable_offset_wakes_when_the_transaction_commits() {
    let (_dir, queue) = queue_with_topic("txn-wake", 1);
    let producer = queue.transactional_producer("waker").unwrap();
    let mut committed = reader(&queue, IsolationLevel::ReadCommitted, &all_partitions("t", 1));
    producer.begin_transaction().unwrap();
    producer.send("t", Record::new(b"late")).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            producer.commit_transaction().unwrap();
        });
        let started = Instant::now();
        let records = committed.poll(Duration::from_secs(30)).unwrap();
        assert_eq!(records.iter().map(|r| r.value().to_vec()).collect::<Vec<_>>(), [b"late".to_vec()]);
        assert!(started.elapsed() < Duration::from_secs(10), "woken by the commit, not by the timeout");
    });
    drop((committed, producer, queue));
}

#[test]
fn a_new_instance_aborts_what_the_old_one_left_open_and_fences_it() {
    let (_dir, queue) = queue_with_topic("txn-fence", 2);
    let old = queue.transactional_producer("enricher").unwrap();
    old.begin_transaction().unwrap();
    old.send("t", Record::new(b"zombie").partition(0)).unwrap();
    let new = queue.transactional_producer("enricher").unwrap();
    let fenced = |result: Result<(), Error>| matches!(result, Err(Error::ProducerFenced { .. }));
    assert!(fenced(old.send("t", Record::new(b"late").partition(0)).map(drop)), "a partition already in the transaction");
    assert!(fenced(old.send("t", Record::new(b"late").partition(1)).map(drop)), "a partition not yet in it");
    assert!(fenced(old.commit_transaction()));
    new.begin_transaction().unwrap();
    new.send("t", Record::new(b"fresh").partition(0)).unwrap();
    new.commit_transaction().unwrap();
    assert!(fenced(old.begin_transaction().and_then(|()| old.abort_transaction())));
    let mut committed = reader(&queue, IsolationLevel::ReadCommitted, &all_partitions("t", 2));
    assert_eq!(values(&drain(&mut committed, Duration::from_millis(20))), [b"fresh".to_vec()]);
    drop((committed, old, new, queue));
}

#[test]
fn misuse_is_an_error_and_dropping_a_producer_aborts_its_transaction() {
    let (_dir, queue) = queue_with_topic("txn-misuse", 1);
    assert!(matches!(queue.transactional_producer("../x"), Err(Error::InvalidTransactionalId { .. })));
    let producer = queue.transactional_producer("p").unwrap();
    assert!(matches!(producer.send("t", Record::new(b"x")), Err(Error::IllegalState(_))), "outside a transaction");
    assert!(matches!(producer.commit_transaction(), Err(Error::IllegalState(_))));
    producer.begin_transaction().unwrap();
    assert!(matches!(producer.begin_transaction(), Err(Error::IllegalState(_))));
    producer.commit_transaction().unwrap();
    producer.begin_transaction().unwrap();
    producer.send("t", Record::new(b"dropped")).unwrap();
    drop(producer);
    queue.producer().send("t", Record::new(b"after")).unwrap();
    let mut committed = reader(&queue, IsolationLevel::ReadCommitted, &all_partitions("t", 1));
    assert_eq!(values(&drain(&mut committed, Duration::from_millis(20))), [b"after".to_vec()]);
    drop((committed, queue));
}

/// Child role `txn-hold DIR ID TOPIC PARTITIONS`: opens a transaction, sends one record to each
/// partition and group `held`'s offset 1 of partition 0, says `ready`, and waits to be killed.
pub(crate) fn child(role: &str, args: &[String]) {
    let [dir, id, topic, partitions] = args else { panic!("bad arguments {args:?}") };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let producer = queue.transactional_producer(id).unwrap();
    let partitions: u32 = partitions.parse().unwrap();
    let mut out = std::io::stdout().lock();
    match role {
        "txn-hold" => {
            producer.begin_transaction().unwrap();
            for partition in 0..partitions {
                producer.send(topic, Record::new(b"from the dead").partition(partition)).unwrap();
            }
            let mut consumer = queue.consumer(ConsumerConfig::new("held")).unwrap();
            consumer.assign(&[TopicPartition::new(topic, 0)]).unwrap();
            producer.send_offsets_to_transaction(&[(TopicPartition::new(topic, 0), 1)], &consumer.group_metadata()).unwrap();
            writeln!(out, "ready").unwrap();
            out.flush().unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Starts a `txn-hold` child and waits for its `ready` (the test harness may print other lines
/// first). Returns it with the reaper that kills it if the test fails.
fn spawn_holder(dir: &Path, id: &str, partitions: u32) -> (std::process::Child, Reaper) {
    let args = [dir.display().to_string(), id.to_owned(), "t".to_owned(), partitions.to_string()];
    let mut holder = child::spawn("txn-hold", &args);
    let reaper = Reaper(vec![holder.id()]);
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert!(lines.any(|line| line.unwrap().trim() == "ready"), "the holder ended before it was ready");
    (holder, reaper)
}

#[test]
fn the_transaction_of_a_killed_process_is_aborted_within_a_second() {
    let (dir, queue) = queue_with_topic("txn-dead", 2);
    let mut committed = reader(&queue, IsolationLevel::ReadCommitted, &all_partitions("t", 2));
    let (mut holder, _reaper) = spawn_holder(dir.path(), "doomed", 2);
    queue.producer().send("t", Record::new(b"behind").partition(0)).unwrap();
    assert!(drain(&mut committed, Duration::from_millis(20)).is_empty(), "held back by the open transaction");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let killed = Instant::now();
    // The keeper of this process (started by the committed reader) aborts it.
    let records = committed.poll(Duration::from_secs(30)).unwrap();
    let elapsed = killed.elapsed();
    assert_eq!(records.iter().map(|r| r.value().to_vec()).collect::<Vec<_>>(), [b"behind".to_vec()]);
    assert!(elapsed < Duration::from_secs(5), "aborted {elapsed:?} after the kill");
    // Its offsets were aborted with it: the group starts where it had committed (nowhere).
    let config =
        ConsumerConfig::new("held").isolation_level(IsolationLevel::ReadCommitted).auto_offset_reset(OffsetReset::Earliest);
    let mut held = queue.consumer(config).unwrap();
    let tp = TopicPartition::new("t", 0);
    held.assign(std::slice::from_ref(&tp)).unwrap();
    // Markers go to one participant after another: the offset log's may come a moment later.
    let position = loop {
        match held.position(&tp) {
            Err(Error::UnstableOffsetCommit { .. }) if killed.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            position => break position.unwrap(),
        }
    };
    assert_eq!((held.committed(&tp).unwrap(), position), (None, 0));
    // A new instance of the id starts from a finished transaction.
    let producer = queue.transactional_producer("doomed").unwrap();
    producer.begin_transaction().unwrap();
    producer.send("t", Record::new(b"reborn").partition(1)).unwrap();
    producer.commit_transaction().unwrap();
    assert_eq!(values(&drain(&mut committed, Duration::from_millis(20))), [b"reborn".to_vec()]);
    drop((committed, producer, queue));
}

#[test]
fn opening_the_queue_alone_aborts_what_dead_processes_left_open() {
    let dir = TempDir::new("txn-alone");
    {
        let queue = Queue::open(dir.path()).unwrap();
        queue.create_topic("t", 3).unwrap();
    }
    let (mut holder, _reaper) = spawn_holder(dir.path(), "left-open", 3);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let queue = crate::open_alone(dir.path()).unwrap();
    queue.producer().send("t", Record::new(b"after").partition(2)).unwrap();
    let mut committed = reader(&queue, IsolationLevel::ReadCommitted, &all_partitions("t", 3));
    // No keeper has had a tick yet to do it: the open did.
    let records = committed.poll(Duration::from_millis(1)).unwrap();
    assert_eq!(records.iter().map(|r| r.value().to_vec()).collect::<Vec<_>>(), [b"after".to_vec()]);
    for p in 0..3 {
        let tp = TopicPartition::new("t", p);
        assert_eq!(committed.position(&tp).unwrap(), queue.offsets(&tp).unwrap().1, "{tp}: read past the abort marker");
    }
    drop((committed, queue));
}

/// A consumer of group `group` reading `partitions` of committed records from the start.
fn group_reader(queue: &Queue, group: &str, partitions: &[TopicPartition]) -> streamlog::Consumer {
    let config = ConsumerConfig::new(group)
        .isolation_level(IsolationLevel::ReadCommitted)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(None);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.assign(partitions).unwrap();
    consumer
}

#[test]
fn offsets_sent_to_a_transaction_are_committed_exactly_when_it_commits() {
    let (_dir, queue) = queue_with_topic("txn-offsets", 1);
    queue.create_topic("out", 1).unwrap();
    let input = TopicPartition::new("t", 0);
    for i in 0..8u8 {
        queue.producer().send("t", Record::new(vec![i])).unwrap();
    }
    let mut source = group_reader(&queue, "stage", std::slice::from_ref(&input));
    assert_eq!(drain(&mut source, Duration::ZERO).len(), 8);
    let producer = queue.transactional_producer("stage-1").unwrap();
    producer.begin_transaction().unwrap();
    producer.send("out", Record::new(b"first five")).unwrap();
    producer.send_offsets_to_transaction(&[(input.clone(), 5)], &source.group_metadata()).unwrap();
    assert_eq!(source.committed(&input).unwrap(), None, "counted before the commit");
    // A reader given the partition now waits for the transaction instead of starting from the
    // old committed offset (or the reset policy), and is woken by the commit.
    let mut next = group_reader(&queue, "stage", std::slice::from_ref(&input));
    assert!(matches!(next.position(&input), Err(Error::UnstableOffsetCommit { .. })));
    assert!(next.poll(Duration::from_millis(20)).unwrap().is_empty());
    let waiting = std::thread::spawn(move || {
        let records = next.poll(Duration::from_secs(30)).unwrap();
        records.iter().map(|r| r.offset()).collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(50));
    producer.commit_transaction().unwrap();
    assert_eq!(waiting.join().unwrap(), [5, 6, 7], "the waiting reader starts at the offsets the transaction committed");
    assert_eq!(source.committed(&input).unwrap(), Some(5));
    // An aborted transaction's offsets never count.
    producer.begin_transaction().unwrap();
    producer.send_offsets_to_transaction(&[(input.clone(), 8)], &source.group_metadata()).unwrap();
    producer.abort_transaction().unwrap();
    assert_eq!(source.committed(&input).unwrap(), Some(5));
    let mut after = group_reader(&queue, "stage", std::slice::from_ref(&input));
    assert_eq!(after.position(&input).unwrap(), 5);
    drop((source, after, producer, queue));
}

#[test]
fn a_commit_made_after_offsets_were_sent_to_a_transaction_stays_in_force() {
    let (_dir, queue) = queue_with_topic("txn-offsets-order", 1);
    let input = TopicPartition::new("t", 0);
    let mut consumer = group_reader(&queue, "g", std::slice::from_ref(&input));
    let producer = queue.transactional_producer("p").unwrap();
    producer.begin_transaction().unwrap();
    producer.send_offsets_to_transaction(&[(input.clone(), 3)], &consumer.group_metadata()).unwrap();
    consumer.commit_offsets(&[(input.clone(), 7)]).unwrap();
    producer.commit_transaction().unwrap();
    // As in Kafka's group coordinator: the transaction's offset is older than the commit.
    assert_eq!(consumer.committed(&input).unwrap(), Some(7));
    drop((consumer, producer, queue));
}

#[test]
fn a_member_expelled_from_its_generation_cannot_commit_through_a_transaction() {
    let (_dir, queue) = queue_with_topic("txn-zombie", 2);
    let config = || ConsumerConfig::new("members").isolation_level(IsolationLevel::ReadCommitted).auto_commit(None);
    let mut first = queue.consumer(config()).unwrap();
    first.subscribe(&["t"]).unwrap();
    while first.assignment().len() < 2 {
        first.poll(Duration::from_millis(10)).unwrap();
    }
    let stale = first.group_metadata();
    assert_eq!((stale.group_id(), stale.member_id().is_some()), ("members", true));
    let mut second = queue.consumer(config()).unwrap();
    second.subscribe(&["t"]).unwrap();
    second.poll(Duration::ZERO).unwrap();
    let producer = queue.transactional_producer("zombie").unwrap();
    producer.begin_transaction().unwrap();
    let offsets = [(TopicPartition::new("t", 0), 1)];
    let refused = producer.send_offsets_to_transaction(&offsets, &stale);
    assert!(matches!(refused, Err(Error::CommitFailed { .. })), "{refused:?}");
    // Its output must not commit without the offsets: only an abort may follow.
    assert!(matches!(producer.commit_transaction(), Err(Error::IllegalState(_))));
    producer.abort_transaction().unwrap();
    // Caught up with the new generation, the member's offsets go through.
    while first.group_metadata().generation_id() == stale.generation_id() {
        first.poll(Duration::from_millis(10)).unwrap();
        second.poll(Duration::ZERO).unwrap();
    }
    let owned = first.assignment();
    producer.begin_transaction().unwrap();
    producer.send_offsets_to_transaction(&[(owned[0].clone(), 1)], &first.group_metadata()).unwrap();
    producer.commit_transaction().unwrap();
    assert_eq!(first.committed(&owned[0]).unwrap(), Some(1));
    drop((first, second, producer, queue));
}

/// Who wrote a record: a producer and its transaction's number, or nobody (a plain send).
type Writer = Option<(usize, u64)>;

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    Begin(usize),
    Send {
        producer: usize,
        partition: u32,
        records: u8,
    },
    Commit(usize),
    Abort(usize),
    /// A new instance of the producer's transactional id replaces it.
    Restart(usize),
    Plain {
        partition: u32,
    },
    /// The producer sends group `g`'s offset of `in` partition `partition` to its transaction.
    Offsets {
        producer: usize,
        partition: u32,
        offset: u8,
    },
    /// A consumer of group `g` commits the offset itself.
    CommitOffset {
        partition: u32,
        offset: u8,
    },
    /// Every handle closed and the queue opened again alone.
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize).prop_map(Step::Begin),
        6 => (0..3usize, 0..3u32, 1..4u8).prop_map(|(producer, partition, records)| Step::Send { producer, partition, records }),
        2 => (0..3usize).prop_map(Step::Commit),
        2 => (0..3usize).prop_map(Step::Abort),
        1 => (0..3usize).prop_map(Step::Restart),
        2 => (0..3u32).prop_map(|partition| Step::Plain { partition }),
        3 => (0..3usize, 0..2u32, any::<u8>()).prop_map(|(producer, partition, offset)| Step::Offsets { producer, partition, offset }),
        1 => (0..2u32, any::<u8>()).prop_map(|(partition, offset)| Step::CommitOffset { partition, offset }),
        1 => Just(Step::Reopen),
    ]
}

/// What a reader of committed records must see: per partition, each record's value and who
/// wrote it (a transactional producer's instance and transaction, or nobody), and each
/// transaction's fate.
#[derive(Default)]
struct Model {
    logs: BTreeMap<u32, Vec<(Vec<u8>, Writer)>>,
    /// Per producer: its open transaction's number, if it has one.
    open: [Option<u64>; 3],
    committed: std::collections::BTreeSet<(usize, u64)>,
    next_transaction: u64,
    /// Group `g`'s committed offsets of `in`, with the place of each in the offset log.
    offsets: BTreeMap<u32, (u64, u64)>,
    /// Per producer: offsets sent to its open transaction (partition, offset, place).
    pending: [Vec<(u32, u64, u64)>; 3],
    /// Offset-log appends so far.
    appended: u64,
}

impl Model {
    /// The values a reader of committed records sees in `partition`, in order: everything up
    /// to the first record of a transaction still open, less what aborted.
    fn visible(&self, partition: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (value, writer) in self.logs.get(&partition).into_iter().flatten() {
            match writer {
                None => out.push(value.clone()),
                Some((producer, txn)) if self.open[*producer] == Some(*txn) => break,
                Some(key) if self.committed.contains(key) => out.push(value.clone()),
                Some(_) => {}
            }
        }
        out
    }

    /// Ends producer `p`'s transaction: a commit applies its offsets over older ones.
    fn end(&mut self, p: usize, txn: u64, commit: bool) {
        let pending = std::mem::take(&mut self.pending[p]);
        if commit {
            self.committed.insert((p, txn));
            for (partition, offset, place) in pending {
                if self.offsets.get(&partition).is_none_or(|&(_, newer)| newer < place) {
                    self.offsets.insert(partition, (offset, place));
                }
            }
        }
    }

    fn append_offset(&mut self) -> u64 {
        self.appended += 1;
        self.appended
    }
}

/// Checks group `g`'s committed offsets of `in` and which of them wait for an open
/// transaction, as a new reader of committed records in the group finds them.
fn check_offsets(queue: &Queue, model: &Model) -> Result<(), TestCaseError> {
    let config = ConsumerConfig::new("g").isolation_level(IsolationLevel::ReadCommitted).auto_commit(None);
    let mut consumer = queue.consumer(config).unwrap();
    let partitions = all_partitions("in", 2);
    consumer.assign(&partitions).unwrap();
    let committed: Vec<Option<u64>> = consumer.committed_offsets(&partitions).unwrap().into_iter().map(|(_, o)| o).collect();
    let expected: Vec<Option<u64>> = (0..2).map(|p| model.offsets.get(&p).map(|&(offset, _)| offset)).collect();
    prop_assert_eq!(committed, expected);
    for tp in &partitions {
        let waits = model.pending.iter().flatten().any(|&(partition, _, _)| partition == tp.partition());
        let position = consumer.position(tp);
        prop_assert_eq!(matches!(position, Err(Error::UnstableOffsetCommit { .. })), waits, "{}: {:?}", tp, position);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn readers_of_committed_records_see_exactly_the_committed_ones(steps in proptest::collection::vec(step(), 1..40)) {
        let dir = TempDir::new("txn-model");
        let mut queue = Queue::open(dir.path()).unwrap();
        queue.create_topic("t", 3).unwrap();
        queue.create_topic("in", 2).unwrap();
        let group = |queue: &Queue| {
            let mut consumer = queue.consumer(ConsumerConfig::new("g").auto_commit(None)).unwrap();
            consumer.assign(&all_partitions("in", 2)).unwrap();
            consumer
        };
        let ids = ["a", "b", "c"];
        let mut producers: Vec<Option<TransactionalProducer>> =
            ids.iter().map(|id| Some(queue.transactional_producer(id).unwrap())).collect();
        let mut model = Model::default();
        let mut counter = 0u64;
        for step in &steps {
            match *step {
                Step::Begin(p) => {
                    let result = producers[p].as_ref().unwrap().begin_transaction();
                    prop_assert_eq!(result.is_ok(), model.open[p].is_none(), "{:?}", result);
                    if model.open[p].is_none() {
                        model.open[p] = Some(model.next_transaction);
                        model.next_transaction += 1;
                    }
                }
                Step::Send { producer: p, partition, records } => {
                    let values: Vec<Vec<u8>> = (0..records).map(|_| { counter += 1; counter.to_le_bytes().to_vec() }).collect();
                    let sent = producers[p].as_ref().unwrap().send_batch("t", values.iter().map(|v| Record::new(v).partition(partition)));
                    match model.open[p] {
                        Some(txn) => {
                            prop_assert!(sent.is_ok(), "{:?}", sent);
                            let log = model.logs.entry(partition).or_default();
                            log.extend(values.into_iter().map(|v| (v, Some((p, txn)))));
                        }
                        None => prop_assert!(matches!(sent, Err(Error::IllegalState(_))), "{:?}", sent),
                    }
                }
                Step::Commit(p) | Step::Abort(p) => {
                    let commit = matches!(step, Step::Commit(_));
                    let producer = producers[p].as_ref().unwrap();
                    let result = if commit { producer.commit_transaction() } else { producer.abort_transaction() };
                    match model.open[p].take() {
                        Some(txn) => {
                            prop_assert!(result.is_ok(), "{:?}", result);
                            model.end(p, txn, commit);
                        }
                        None => prop_assert!(matches!(result, Err(Error::IllegalState(_))), "{:?}", result),
                    }
                }
                Step::Restart(p) => {
                    let replacement = queue.transactional_producer(ids[p]).unwrap();
                    // The old instance is fenced: its next call fails.
                    let old = producers[p].replace(replacement).unwrap();
                    let was_open = model.open[p].take();
                    if let Some(txn) = was_open {
                        model.end(p, txn, false);
                    }
                    let fenced = if was_open.is_some() { old.commit_transaction() } else { old.begin_transaction() };
                    prop_assert!(matches!(fenced, Err(Error::ProducerFenced { .. })), "{:?}", fenced);
                }
                Step::Plain { partition } => {
                    counter += 1;
                    let value = counter.to_le_bytes().to_vec();
                    queue.producer().send("t", Record::new(&value).partition(partition)).unwrap();
                    model.logs.entry(partition).or_default().push((value, None));
                }
                Step::Offsets { producer: p, partition, offset } => {
                    let metadata = group(&queue).group_metadata();
                    let offsets = [(TopicPartition::new("in", partition), u64::from(offset))];
                    let sent = producers[p].as_ref().unwrap().send_offsets_to_transaction(&offsets, &metadata);
                    match model.open[p] {
                        Some(_) => {
                            prop_assert!(sent.is_ok(), "{:?}", sent);
                            let place = model.append_offset();
                            model.pending[p].push((partition, u64::from(offset), place));
                        }
                        None => prop_assert!(matches!(sent, Err(Error::IllegalState(_))), "{:?}", sent),
                    }
                }
                Step::CommitOffset { partition, offset } => {
                    group(&queue).commit_offsets(&[(TopicPartition::new("in", partition), u64::from(offset))]).unwrap();
                    let place = model.append_offset();
                    model.offsets.insert(partition, (u64::from(offset), place));
                }
                Step::Reopen => {
                    // Dropping a producer aborts its open transaction (a killed process's is
                    // aborted by the next open alone: see the test above).
                    producers.iter_mut().for_each(|producer| drop(producer.take()));
                    for p in 0..3 {
                        if let Some(txn) = model.open[p].take() {
                            model.end(p, txn, false);
                        }
                    }
                    drop(queue);
                    queue = crate::open_alone(dir.path()).unwrap();
                    for (p, id) in ids.iter().enumerate() {
                        producers[p] = Some(queue.transactional_producer(id).unwrap());
                    }
                }
            }
            let mut committed = reader(&queue, IsolationLevel::ReadCommitted, &all_partitions("t", 3));
            let seen = drain(&mut committed, Duration::ZERO);
            for partition in 0..3 {
                let got: Vec<Vec<u8>> = seen.iter().filter(|(p, _, _)| *p == partition).map(|(_, _, v)| v.clone()).collect();
                prop_assert_eq!(got, model.visible(partition), "partition {} after {:?}", partition, step);
            }
            check_offsets(&queue, &model)?;
        }
        drop((producers, queue));
    }
}

#[test]
fn compaction_leaves_transactions_whole_and_never_passes_the_last_stable_offset() {
    let dir = TempDir::new("txn-compact");
    let queue = Queue::open(dir.path()).unwrap();
    let config = streamlog::TopicConfig::new(1)
        .segment_bytes(1024)
        .cleanup_policy(streamlog::CleanupPolicy::Compact)
        .min_cleanable_dirty_ratio(0.0);
    queue.create_topic_with("t", config).unwrap();
    let producer = queue.transactional_producer("compacted").unwrap();
    let plain = queue.producer();
    // Plain records of three keys, enough to fill segments of their own.
    let filler = || {
        for i in 0..20 {
            plain.send("t", Record::new(vec![b'f'; 100]).key(format!("filler-{}", i % 3).into_bytes())).unwrap();
        }
    };
    filler();
    producer.begin_transaction().unwrap();
    producer.send("t", Record::new(b"committed").key(b"k")).unwrap();
    producer.commit_transaction().unwrap();
    producer.begin_transaction().unwrap();
    producer.send("t", Record::new(b"aborted").key(b"k")).unwrap();
    producer.abort_transaction().unwrap();
    filler();
    let other = queue.transactional_producer("still-open").unwrap();
    other.begin_transaction().unwrap();
    other.send("t", Record::new(b"open").key(b"k")).unwrap();
    filler();
    let tp = TopicPartition::new("t", 0);
    let segments_before = std::fs::read_dir(dir.path().join("topics/t/0")).unwrap().count();
    assert!(queue.run_maintenance().unwrap() > 0, "plain segments below the last stable offset are compacted");
    let mut uncommitted = reader(&queue, IsolationLevel::ReadUncommitted, std::slice::from_ref(&tp));
    let seen = drain(&mut uncommitted, Duration::from_millis(20));
    let not_filler = |seen: &[(u32, u64, Vec<u8>)]| -> Vec<Vec<u8>> {
        seen.iter().filter(|(_, _, v)| !v.starts_with(b"f")).map(|(_, _, v)| v.clone()).collect()
    };
    // The segment holding the transactions is left whole (its aborted record too); the open
    // transaction's record lies past the last stable offset.
    assert_eq!(not_filler(&seen), [b"committed".to_vec(), b"aborted".to_vec(), b"open".to_vec()]);
    assert!(seen.len() < 3 + 60, "some filler was compacted away ({} records, {segments_before} files)", seen.len());
    other.commit_transaction().unwrap();
    let mut committed = reader(&queue, IsolationLevel::ReadCommitted, std::slice::from_ref(&tp));
    let seen = drain(&mut committed, Duration::from_millis(20));
    assert_eq!(not_filler(&seen), [b"committed".to_vec(), b"open".to_vec()]);
    drop((committed, uncommitted, other, producer, plain, queue));
}

#[test]
fn a_reader_of_committed_records_without_a_position_starts_at_the_last_stable_offset() {
    let (_dir, queue) = queue_with_topic("txn-latest", 1);
    let producer = queue.transactional_producer("late").unwrap();
    producer.begin_transaction().unwrap();
    producer.send("t", Record::new(b"pending")).unwrap();
    let config = ConsumerConfig::new("latest").isolation_level(IsolationLevel::ReadCommitted).auto_commit(None);
    let mut consumer = queue.consumer(config).unwrap();
    let tp = TopicPartition::new("t", 0);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    // The end of the log would skip the open transaction's record for good.
    assert_eq!(consumer.position(&tp).unwrap(), 0);
    producer.commit_transaction().unwrap();
    assert_eq!(values(&drain(&mut consumer, Duration::from_millis(20))), [b"pending".to_vec()]);
    drop((consumer, producer, queue));
}
