//! Consumer groups within one process: splitting partitions, idle members, independent groups,
//! commits and resumption, auto-commit, listener calls, zombie fencing and new topics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamlog::{
    AssignmentStrategy, Consumer, ConsumerConfig, Error, OffsetReset, Queue, RebalanceListener, Record, TopicPartition,
};

use crate::TempDir;

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .session_timeout(Duration::from_secs(10))
        .max_poll_records(100_000)
}

fn fill(queue: &Queue, topic: &str, partitions: u32, per_partition: u64) {
    queue.create_topic(topic, partitions).unwrap();
    let producer = queue.producer();
    for p in 0..partitions {
        for i in 0..per_partition {
            producer.send(topic, Record::new(format!("{p}-{i}").as_bytes()).partition(p)).unwrap();
        }
    }
}

/// Polls every consumer in turn until `done` holds for their assignments (or panics after 20 s).
fn settle(consumers: &mut [&mut Consumer], done: impl Fn(&[Vec<TopicPartition>]) -> bool) -> Vec<Vec<(u32, u64)>> {
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut read = vec![Vec::new(); consumers.len()];
    loop {
        for (i, consumer) in consumers.iter_mut().enumerate() {
            for r in consumer.poll(Duration::from_millis(5)).unwrap().iter() {
                read[i].push((r.partition(), r.offset()));
            }
        }
        let assignments: Vec<_> = consumers.iter().map(|c| c.assignment()).collect();
        if done(&assignments) {
            return read;
        }
        assert!(Instant::now() < give_up, "the group did not settle: {assignments:?}");
    }
}

fn disjoint_and_covering(assignments: &[Vec<TopicPartition>], total: usize) -> bool {
    let all: Vec<&TopicPartition> = assignments.iter().flatten().collect();
    let unique: BTreeSet<&TopicPartition> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a partition is owned twice: {assignments:?}");
    unique.len() == total
}

#[test]
fn members_split_partitions_and_each_record_is_read_once() {
    let dir = TempDir::new("group-split");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 6, 20);
    let mut a = queue.consumer(config("billing")).unwrap();
    let mut b = queue.consumer(config("billing")).unwrap();
    a.subscribe(&["orders"]).unwrap();
    b.subscribe(&["orders"]).unwrap();
    let mut seen = BTreeMap::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    while seen.len() < 120 {
        assert!(Instant::now() < give_up, "read only {} records", seen.len());
        for (name, consumer) in [("a", &mut a), ("b", &mut b)] {
            for r in consumer.poll(Duration::from_millis(5)).unwrap().iter() {
                let previous = seen.insert((r.partition(), r.offset()), name);
                assert!(previous.is_none(), "{}-{} read twice", r.partition(), r.offset());
            }
        }
    }
    let (sa, sb) = (a.assignment(), b.assignment());
    assert_eq!((sa.len(), sb.len()), (3, 3), "balanced: {sa:?} {sb:?}");
    assert!(disjoint_and_covering(&[sa, sb], 6));
}

#[test]
fn surplus_members_idle_and_take_over_when_a_member_leaves() {
    let dir = TempDir::new("group-idle");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 2, 1);
    let mut members: Vec<Consumer> = (0..3).map(|_| queue.consumer(config("g")).unwrap()).collect();
    for member in &mut members {
        member.subscribe(&["orders"]).unwrap();
    }
    let mut refs: Vec<&mut Consumer> = members.iter_mut().collect();
    settle(&mut refs, |a| disjoint_and_covering(a, 2) && a.iter().filter(|p| p.is_empty()).count() == 1);
    let busy = members.iter().position(|m| !m.assignment().is_empty()).unwrap();
    members.remove(busy).close().unwrap();
    let mut refs: Vec<&mut Consumer> = members.iter_mut().collect();
    settle(&mut refs, |a| disjoint_and_covering(a, 2) && a.iter().all(|p| p.len() == 1));
}

#[test]
fn every_group_reads_every_record() {
    let dir = TempDir::new("group-independent");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 3, 10);
    for group in ["one", "two"] {
        let mut consumer = queue.consumer(config(group)).unwrap();
        consumer.subscribe(&["orders"]).unwrap();
        let mut read = BTreeSet::new();
        let give_up = Instant::now() + Duration::from_secs(20);
        while read.len() < 30 {
            assert!(Instant::now() < give_up);
            read.extend(consumer.poll(Duration::from_millis(50)).unwrap().iter().map(|r| (r.partition(), r.offset())));
        }
        consumer.commit().unwrap();
    }
    let one = queue.describe_group("one").unwrap();
    assert_eq!(one.partitions.len(), 3);
    assert!(one.partitions.iter().all(|p| p.committed == Some(10) && p.lag == Some(0)), "{one:?}");
}

#[test]
fn a_replacement_resumes_at_the_committed_offset() {
    let dir = TempDir::new("group-resume");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 1, 10);
    let tp = TopicPartition::new("orders", 0);
    let mut first = queue.consumer(config("g").max_poll_records(4)).unwrap();
    first.subscribe(&["orders"]).unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        got.extend(first.poll(Duration::from_millis(50)).unwrap().iter().map(|r| r.offset()));
    }
    assert_eq!(got, [0, 1, 2, 3]);
    first.commit().unwrap();
    assert_eq!(first.committed(&tp).unwrap(), Some(4));
    first.close().unwrap();
    drop(queue);

    // A new process (here: a reopened queue) resumes where the group committed.
    let queue = Queue::open(dir.path()).unwrap();
    let mut second = queue.consumer(config("g")).unwrap();
    second.subscribe(&["orders"]).unwrap();
    let mut rest = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(20);
    while rest.len() < 6 {
        assert!(Instant::now() < give_up);
        rest.extend(second.poll(Duration::from_millis(50)).unwrap().iter().map(|r| r.offset()));
    }
    assert_eq!(rest, [4, 5, 6, 7, 8, 9]);
    second.commit_offsets(&[(tp.clone(), 7)]).unwrap();
    assert_eq!(second.committed(&tp).unwrap(), Some(7));
    assert!(matches!(second.commit_offsets(&[(TopicPartition::new("orders", 5), 1)]), Err(Error::NotAssigned(_))));
}

#[test]
fn auto_commit_commits_what_earlier_polls_returned() {
    let dir = TempDir::new("group-auto");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 1, 5);
    let tp = TopicPartition::new("orders", 0);
    let mut consumer = queue.consumer(config("g").auto_commit(Some(Duration::from_millis(1)))).unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    let mut read = 0;
    while read < 5 {
        read += consumer.poll(Duration::from_millis(50)).unwrap().len();
    }
    // Returned records count as processed only once the next poll begins.
    assert_eq!(consumer.committed(&tp).unwrap(), None);
    std::thread::sleep(Duration::from_millis(2));
    consumer.poll(Duration::ZERO).unwrap();
    assert_eq!(consumer.committed(&tp).unwrap(), Some(5));
    queue.producer().send("orders", Record::new(b"six")).unwrap();
    while consumer.poll(Duration::from_millis(50)).unwrap().is_empty() {}
    consumer.close().unwrap();
    assert_eq!(queue.describe_group("g").unwrap().partitions[0].committed, Some(6), "close commits");
}

/// A listener call: which member, which event, which partitions.
type ListenerCall = (String, &'static str, Vec<u32>);

/// Records every listener call, in order, across members.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<ListenerCall>>>);

struct Recorder {
    name: String,
    journal: Journal,
    commit_on_revoke: bool,
}

impl Recorder {
    fn note(&self, event: &'static str, partitions: &[TopicPartition]) {
        self.journal.0.lock().unwrap().push((self.name.clone(), event, partitions.iter().map(|p| p.partition()).collect()));
    }
}

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.note("assigned", partitions);
    }

    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        if self.commit_on_revoke {
            consumer.commit().unwrap();
        }
        self.note("revoked", partitions);
    }

    fn on_lost(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.note("lost", partitions);
    }
}

#[test]
fn cooperative_rebalances_revoke_only_what_moves_and_before_it_is_assigned() {
    let dir = TempDir::new("group-listener");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 4, 3);
    let journal = Journal::default();
    let recorder = |name: &str| Recorder { name: name.into(), journal: journal.clone(), commit_on_revoke: true };
    let mut a = queue.consumer(config("g")).unwrap();
    a.subscribe_with(&["orders"], recorder("a")).unwrap();
    settle(&mut [&mut a], |s| s[0].len() == 4);
    let mut b = queue.consumer(config("g")).unwrap();
    b.subscribe_with(&["orders"], recorder("b")).unwrap();
    settle(&mut [&mut a, &mut b], |s| s[0].len() == 2 && s[1].len() == 2);
    let events = journal.0.lock().unwrap().clone();
    assert_eq!(events[0], ("a".into(), "assigned", vec![0, 1, 2, 3]));
    // a gives up exactly the two partitions that move, and b gets them only afterwards.
    let revoke = events.iter().position(|e| e.0 == "a" && e.1 == "revoked").expect("a revoked");
    let assign = events.iter().position(|e| e.0 == "b" && e.1 == "assigned").expect("b assigned");
    assert!(revoke < assign, "{events:?}");
    assert_eq!(events[revoke].2, events[assign].2);
    assert_eq!(events.len(), 3, "{events:?}");
    // What a read before the revoke was committed in the listener, so b does not read it again.
    for tp in b.assignment() {
        assert_eq!(b.committed(&tp).unwrap(), Some(3));
    }
}

/// Starts yet another member from inside `on_revoked`, then commits: the group has moved to a
/// newer generation by the time of the commit.
struct JoinThenCommit {
    queue: Queue,
    joined: Arc<Mutex<Vec<Consumer>>>,
}

impl RebalanceListener for JoinThenCommit {
    fn on_revoked(&mut self, consumer: &mut Consumer, _: &[TopicPartition]) {
        let mut late = self.queue.consumer(config("g")).unwrap();
        late.subscribe(&["orders"]).unwrap();
        self.joined.lock().unwrap().push(late);
        consumer.commit().expect("a commit of partitions still owned, while revoking, goes through");
    }
}

#[test]
fn a_commit_while_revoking_survives_a_newer_rebalance() {
    let dir = TempDir::new("group-revoke-race");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 4, 5);
    let joined = Arc::new(Mutex::new(Vec::new()));
    let mut a = queue.consumer(config("g")).unwrap();
    a.subscribe_with(&["orders"], JoinThenCommit { queue: queue.clone(), joined: Arc::clone(&joined) }).unwrap();
    settle(&mut [&mut a], |s| s[0].len() == 4);
    let mut b = queue.consumer(config("g")).unwrap();
    b.subscribe(&["orders"]).unwrap();
    settle(&mut [&mut a, &mut b], |s| s[0].len() < 4 && !s[1].is_empty());
    assert!(!joined.lock().unwrap().is_empty(), "the listener ran");
    // Everything a read before giving partitions up was committed, so nobody reads it again.
    for tp in (0..4).map(|p| TopicPartition::new("orders", p)) {
        assert_eq!(b.committed(&tp).unwrap(), Some(5), "{tp}");
    }
    // Outside a revoke, a member that has not caught up is still refused.
    let mut late = queue.consumer(config("g")).unwrap();
    late.subscribe(&["orders"]).unwrap();
    assert!(matches!(a.commit(), Err(Error::CommitFailed { .. })));
}

#[test]
fn eager_strategies_revoke_everything_and_follow_kafkas_range_assignor() {
    let dir = TempDir::new("group-eager");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 3, 1);
    let journal = Journal::default();
    let eager = config("g").assignment_strategy(AssignmentStrategy::Range);
    let mut a = queue.consumer(eager.clone()).unwrap();
    a.subscribe_with(&["orders"], Recorder { name: "a".into(), journal: journal.clone(), commit_on_revoke: false }).unwrap();
    settle(&mut [&mut a], |s| s[0].len() == 3);
    let mut b = queue.consumer(eager).unwrap();
    b.subscribe(&["orders"]).unwrap();
    settle(&mut [&mut a, &mut b], |s| s[0].len() == 2 && s[1].len() == 1);
    // Range: the first member (by id) takes partitions 0 and 1, the second takes 2.
    assert_eq!(a.assignment().iter().map(|p| p.partition()).collect::<Vec<_>>(), [0, 1]);
    let events = journal.0.lock().unwrap().clone();
    let names: Vec<_> = events.iter().map(|e| (e.1, e.2.clone())).collect();
    assert_eq!(names, [("assigned", vec![0, 1, 2]), ("revoked", vec![0, 1, 2]), ("assigned", vec![0, 1])]);
    // A member asking for another strategy cannot join this group.
    let mut odd = queue.consumer(config("g").assignment_strategy(AssignmentStrategy::RoundRobin)).unwrap();
    assert!(matches!(
        odd.subscribe(&["orders"]),
        Err(Error::StrategyMismatch { group_strategy: "range", requested: "roundrobin", .. })
    ));
}

#[test]
fn a_full_group_refuses_one_more_member() {
    let dir = TempDir::new("full-group");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("orders", 1).unwrap();
    let members: Vec<Consumer> = (0..streamlog::MAX_GROUP_MEMBERS)
        .map(|_| {
            let mut member = queue.consumer(config("g")).unwrap();
            member.subscribe(&["orders"]).unwrap();
            member
        })
        .collect();
    let mut one_more = queue.consumer(config("g")).unwrap();
    let error = one_more.subscribe(&["orders"]).unwrap_err();
    assert!(matches!(&error, Error::GroupFull { group, max_members: 1024 } if group == "g"), "{error}");
    drop(members);
    one_more.subscribe(&["orders"]).unwrap();
}

#[test]
fn a_stale_member_is_fenced_until_it_polls() {
    let dir = TempDir::new("group-fence");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 2, 2);
    let mut a = queue.consumer(config("g")).unwrap();
    a.subscribe(&["orders"]).unwrap();
    settle(&mut [&mut a], |s| s[0].len() == 2);
    let mut b = queue.consumer(config("g")).unwrap();
    b.subscribe(&["orders"]).unwrap();
    // b's join started a new generation that a has not seen: its commit is refused.
    let refused = a.commit();
    assert!(matches!(refused, Err(Error::CommitFailed { .. })), "{refused:?}");
    settle(&mut [&mut a, &mut b], |s| s[0].len() == 1 && s[1].len() == 1);
    a.commit().unwrap();
}

#[test]
fn a_member_that_stops_polling_is_expelled_and_learns_it_lost_its_partitions() {
    let dir = TempDir::new("group-max-poll");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 2, 1);
    let journal = Journal::default();
    let slow = config("g").max_poll_interval(Duration::from_millis(600));
    let mut a = queue.consumer(slow).unwrap();
    a.subscribe_with(&["orders"], Recorder { name: "a".into(), journal: journal.clone(), commit_on_revoke: false }).unwrap();
    settle(&mut [&mut a], |s| s[0].len() == 2);
    let mut b = queue.consumer(config("g")).unwrap();
    b.subscribe(&["orders"]).unwrap();
    settle(&mut [&mut a, &mut b], |s| s[0].len() == 1 && s[1].len() == 1);
    // a stops polling; b keeps going and soon owns everything.
    let give_up = Instant::now() + Duration::from_secs(20);
    while b.assignment().len() < 2 {
        assert!(Instant::now() < give_up, "a was never expelled");
        b.poll(Duration::from_millis(50)).unwrap();
    }
    assert!(matches!(a.commit(), Err(Error::CommitFailed { .. })));
    // a's next poll reports the loss, rejoins, and the two share again.
    settle(&mut [&mut a, &mut b], |s| s[0].len() == 1 && s[1].len() == 1);
    let events = journal.0.lock().unwrap().clone();
    assert!(events.iter().any(|e| e.1 == "lost" && e.2.len() == 1), "{events:?}");
    a.commit().unwrap();
}

#[test]
fn a_topic_created_later_is_picked_up() {
    let dir = TempDir::new("group-new-topic");
    let queue = Queue::open(dir.path()).unwrap();
    let mut consumer = queue.consumer(config("g")).unwrap();
    consumer.subscribe(&["later"]).unwrap();
    assert!(consumer.poll(Duration::from_millis(20)).unwrap().is_empty());
    fill(&queue, "later", 2, 1);
    let give_up = Instant::now() + Duration::from_secs(20);
    let mut read = 0;
    while read < 2 {
        assert!(Instant::now() < give_up, "the new topic was not picked up");
        read += consumer.poll(Duration::from_millis(50)).unwrap().len();
    }
    assert_eq!(consumer.assignment().len(), 2);
}

#[test]
fn describe_group_shows_members_owners_and_lag() {
    let dir = TempDir::new("group-describe");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 2, 5);
    let mut consumer = queue.consumer(config("g").client_id("worker-1")).unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    settle(&mut [&mut consumer], |s| s[0].len() == 2);
    consumer.commit_offsets(&[(TopicPartition::new("orders", 0), 2)]).unwrap();
    let described = queue.describe_group("g").unwrap();
    assert_eq!(described.members.len(), 1);
    let member = &described.members[0];
    assert_eq!((member.client_id.as_str(), member.pid, member.owned.len()), ("worker-1", std::process::id(), 2));
    let lags: Vec<_> = described.partitions.iter().map(|p| (p.partition.partition(), p.committed, p.end_offset, p.lag)).collect();
    assert_eq!(lags, [(0, Some(2), 5, Some(3)), (1, None, 5, None)]);
    assert!(described.partitions.iter().all(|p| p.owner == Some(member.member_id)));
    assert!(matches!(queue.describe_group("nobody"), Err(Error::UnknownGroup(_))));
    assert!(matches!(queue.consumer(ConsumerConfig::new("../escape")), Err(Error::InvalidGroupName { .. })));
}

#[test]
fn damaged_or_foreign_group_files_are_reported() {
    use std::os::unix::fs::FileExt;
    let dir = TempDir::new("group-damaged");
    let path = dir.path().join("groups").join("g").join("group");
    let queue = Queue::open(dir.path()).unwrap();
    let mut consumer = queue.consumer(config("g")).unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    // Damaged state copies (36,864 is where the first starts, the second 64 MiB later) are
    // found by their checksums.
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(b"garbage!", 36_864 + 8).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(b"garbage!", 36_864 + (64 << 20) + 8).unwrap();
    assert!(matches!(queue.describe_group("g"), Err(Error::Corrupt { .. })));
    drop((consumer, queue));
    std::fs::write(&path, b"this is not a group file, though it is long enough for a header").unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    // A consumer that only reads does not open the group file; subscribing does.
    let mut consumer = queue.consumer(config("g")).unwrap();
    assert!(matches!(consumer.subscribe(&["orders"]), Err(Error::ForeignFile { .. })));
}

#[test]
fn a_member_whose_slot_vanished_is_expelled_and_rejoins() {
    use std::os::unix::fs::FileExt;
    let dir = TempDir::new("group-ghost");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 2, 1);
    let mut a = queue.consumer(config("g")).unwrap();
    let mut b = queue.consumer(config("g")).unwrap();
    a.subscribe(&["orders"]).unwrap();
    b.subscribe(&["orders"]).unwrap();
    settle(&mut [&mut a, &mut b], |s| s[0].len() == 1 && s[1].len() == 1);
    // Clear b's slot (the second, at byte 128 + 32) behind the group's back, as a remover that
    // died half-way would: the keeper must notice that the state lists a member without a slot.
    let group_file = std::fs::OpenOptions::new().write(true).open(dir.path().join("groups/g/group")).unwrap();
    group_file.write_all_at(&0u64.to_le_bytes(), 128 + 32).unwrap();
    let give_up = Instant::now() + Duration::from_secs(20);
    while a.assignment().len() < 2 {
        assert!(Instant::now() < give_up, "the ghost kept its partition");
        a.poll(Duration::from_millis(20)).unwrap();
    }
    settle(&mut [&mut a, &mut b], |s| s[0].len() == 1 && s[1].len() == 1);
}

#[test]
fn a_blocking_poll_counts_as_polling() {
    let dir = TempDir::new("group-blocking-poll");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("orders", 1).unwrap();
    let mut consumer = queue.consumer(config("g").max_poll_interval(Duration::from_millis(600))).unwrap();
    consumer
        .subscribe_with(&["orders"], Recorder { name: "c".into(), journal: Journal::default(), commit_on_revoke: false })
        .unwrap();
    consumer.poll(Duration::from_millis(100)).unwrap();
    let generation = queue.describe_group("g").unwrap().generation;
    for _ in 0..3 {
        assert!(consumer.poll(Duration::from_millis(700)).unwrap().is_empty());
    }
    assert_eq!(queue.describe_group("g").unwrap().generation, generation, "the waiting member was expelled");
    // Records already there come back at once, whatever the timeout.
    queue.producer().send("orders", Record::new(b"now")).unwrap();
    assert_eq!(consumer.poll(Duration::MAX).unwrap().len(), 1);
}

#[test]
fn closing_an_expelled_member_does_not_rejoin() {
    let dir = TempDir::new("group-close-expelled");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 2, 1);
    let mut a = queue.consumer(config("g").max_poll_interval(Duration::from_millis(500))).unwrap();
    let mut b = queue.consumer(config("g")).unwrap();
    a.subscribe(&["orders"]).unwrap();
    b.subscribe(&["orders"]).unwrap();
    settle(&mut [&mut a, &mut b], |s| s[0].len() == 1 && s[1].len() == 1);
    let give_up = Instant::now() + Duration::from_secs(20);
    while b.assignment().len() < 2 {
        assert!(Instant::now() < give_up, "a was never expelled");
        b.poll(Duration::from_millis(20)).unwrap();
    }
    let generation = queue.describe_group("g").unwrap().generation;
    a.close().unwrap();
    assert_eq!(queue.describe_group("g").unwrap().generation, generation);
}

/// Tries everything a listener may not do, and one thing it may.
struct Reentrant(Arc<Mutex<Vec<String>>>);

impl RebalanceListener for Reentrant {
    fn on_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let mut outcomes = self.0.lock().unwrap();
        outcomes.push(format!("{:?}", consumer.poll(Duration::ZERO).map(|r| r.len())));
        outcomes.push(format!("{:?}", consumer.unsubscribe()));
        outcomes.push(format!("{:?}", consumer.subscribe(&["other"])));
        outcomes.push(format!("{:?}", consumer.seek(&partitions[0], 1)));
    }
}

#[test]
fn a_listener_may_seek_but_not_poll_or_resubscribe() {
    let dir = TempDir::new("group-reentrant");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 1, 3);
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let mut consumer = queue.consumer(config("g")).unwrap();
    consumer.subscribe_with(&["orders"], Reentrant(Arc::clone(&outcomes))).unwrap();
    let records = consumer.poll(Duration::from_secs(5)).unwrap();
    assert_eq!(records.iter().map(|r| r.offset()).collect::<Vec<_>>(), [1, 2], "the seek took effect");
    let outcomes = outcomes.lock().unwrap().clone();
    assert!(outcomes[..3].iter().all(|o| o.starts_with("Err(IllegalState")), "{outcomes:?}");
    assert_eq!(outcomes[3], "Ok(())");
}

#[test]
fn a_partition_that_failed_to_start_is_retried() {
    let dir = TempDir::new("group-start-retry");
    let queue = Queue::open(dir.path()).unwrap();
    fill(&queue, "orders", 2, 2);
    let hidden = dir.path().join("hidden");
    let partition = dir.path().join("topics/orders/1");
    std::fs::rename(&partition, &hidden).unwrap();
    // A second handle, as another process would have: it has not opened the partition yet.
    let other = Queue::open(dir.path()).unwrap();
    let mut consumer = other.consumer(config("g")).unwrap();
    consumer.subscribe(&["orders"]).unwrap();
    // Partition 1 cannot be opened: the other is read meanwhile.
    let mut read: BTreeSet<(u32, u64)> =
        consumer.poll(Duration::from_millis(50)).unwrap().iter().map(|r| (r.partition(), r.offset())).collect();
    assert!(read.iter().all(|&(p, _)| p == 0), "{read:?}");
    std::fs::rename(&hidden, &partition).unwrap();
    let give_up = Instant::now() + Duration::from_secs(20);
    while read.len() < 4 {
        assert!(Instant::now() < give_up, "read only {read:?}");
        read.extend(consumer.poll(Duration::from_millis(20)).unwrap().iter().map(|r| (r.partition(), r.offset())));
    }
}

mod model {
    //! The group protocol against its invariants, under random joins, leaves, polls and commits
    //! by several members driven from one thread.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Join(usize),
        Close(usize),
        Poll(usize),
        Commit(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0usize..4).prop_map(Op::Join),
            1 => (0usize..4).prop_map(Op::Close),
            6 => (0usize..4).prop_map(Op::Poll),
            2 => (0usize..4).prop_map(Op::Commit),
        ]
    }

    fn strategy() -> impl Strategy<Value = AssignmentStrategy> {
        prop_oneof![
            Just(AssignmentStrategy::CooperativeSticky),
            Just(AssignmentStrategy::Range),
            Just(AssignmentStrategy::RoundRobin)
        ]
    }

    /// No partition is owned twice, and what the consumers hold is exactly what the group says
    /// they own. (A member may own a partition no longer assigned to it until its next poll.)
    fn check_ownership(queue: &Queue, members: &[Option<Consumer>]) -> Result<(), TestCaseError> {
        let group = match queue.describe_group("model") {
            Err(Error::UnknownGroup(_)) if members.iter().all(Option::is_none) => return Ok(()),
            result => result.unwrap(),
        };
        let mut owned: Vec<TopicPartition> = Vec::new();
        for member in &group.members {
            owned.extend(member.owned.iter().cloned());
        }
        let mut held: Vec<TopicPartition> = members.iter().flatten().flat_map(|c| c.assignment()).collect();
        owned.sort();
        held.sort();
        let unique: BTreeSet<&TopicPartition> = owned.iter().collect();
        prop_assert_eq!(unique.len(), owned.len(), "a partition is owned twice");
        prop_assert_eq!(owned, held);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn ownership_stays_exclusive_and_every_record_is_read(
            strategy in strategy(),
            partitions in 1u32..7,
            ops in prop::collection::vec(op(), 1..40),
        ) {
            let dir = TempDir::new("group-model");
            let queue = Queue::open(dir.path()).unwrap();
            fill(&queue, "orders", partitions, 3);
            let config = config("model").assignment_strategy(strategy);
            let mut members: Vec<Option<Consumer>> = (0..4).map(|_| None).collect();
            let mut read: BTreeSet<(u32, u64)> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Join(i) if members[i].is_none() => {
                        let mut consumer = queue.consumer(config.clone()).unwrap();
                        consumer.subscribe(&["orders"]).unwrap();
                        members[i] = Some(consumer);
                    }
                    Op::Close(i) => {
                        if let Some(consumer) = members[i].take() {
                            consumer.close().unwrap();
                        }
                    }
                    Op::Poll(i) => {
                        if let Some(consumer) = &mut members[i] {
                            read.extend(consumer.poll(Duration::ZERO).unwrap().iter().map(|r| (r.partition(), r.offset())));
                        }
                    }
                    Op::Commit(i) => {
                        if let Some(consumer) = &mut members[i] {
                            // Refused right after a rebalance this member has not seen yet.
                            match consumer.commit() {
                                Ok(()) | Err(Error::CommitFailed { .. }) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    Op::Join(_) => {}
                }
                check_ownership(&queue, &members)?;
            }
            // Let everyone catch up: then every partition is owned, the counts are balanced,
            // and every record has been read by someone.
            if members.iter().all(Option::is_none) {
                members[0] = Some(queue.consumer(config.clone()).unwrap());
                members[0].as_mut().unwrap().subscribe(&["orders"]).unwrap();
            }
            let live = members.iter().flatten().count() as u32;
            let give_up = Instant::now() + Duration::from_secs(20);
            loop {
                for consumer in members.iter_mut().flatten() {
                    read.extend(consumer.poll(Duration::from_millis(1)).unwrap().iter().map(|r| (r.partition(), r.offset())));
                }
                check_ownership(&queue, &members)?;
                let counts: Vec<u32> = members.iter().flatten().map(|c| c.assignment().len() as u32).collect();
                let settled = counts.iter().sum::<u32>() == partitions
                    && counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1
                    && counts.iter().filter(|&&c| c > 0).count() as u32 == live.min(partitions)
                    && read.len() as u32 == partitions * 3;
                if settled {
                    break;
                }
                prop_assert!(Instant::now() < give_up, "never settled: {counts:?}, read {}", read.len());
            }
        }
    }
}
