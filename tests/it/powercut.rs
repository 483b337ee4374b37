//! Power-cut campaigns. Child processes produce (Sync and Buffered), commit (Sync and
//! Buffered), create and delete topics, compact and run retention over tiny segments, on the
//! power-cut file system (`tools/powercut`); at a random moment every child is SIGKILLed and the
//! power is cut, which drops everything not fsynced (or, torn, a random part of it). Then the
//! queue is opened again and checked against what the children were told:
//! - Sync: every acknowledged record is at its offset with its bytes, offsets are dense, every
//!   acknowledged Sync commit is there, every topic whose creation returned exists and every
//!   topic whose deletion returned stays deleted;
//! - Buffered: records may be lost, but what is read is whole and as sent, offsets are dense,
//!   and the queue keeps accepting sends.
//!
//! `STREAMLOG_POWERCUT_ROUNDS` sets the number of rounds of `campaign_*` (a few by default),
//! `STREAMLOG_POWERCUT_EPOCH` how many rounds share one queue before a fresh one (25), and
//! `STREAMLOG_POWERCUT_SEED` repeats a run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use powercut::{Cut, PowerCutFs};
use streamlog::{
    CleanupPolicy, ConsumerConfig, Durability, OffsetReset, ProducerConfig, Queue, Record, TopicConfig, TopicPartition,
};

use crate::Rng;
use crate::child::{self, value_for};
use crate::open_alone;
use crate::testfs::Mounted;

/// Sync sends: nothing acknowledged may be lost.
const SYNCED: &str = "synced";
/// Buffered sends: may lose a tail, never return it changed.
const BUFFERED: &str = "buffered";
/// Sync sends with keys, compacted while they are sent.
const COMPACTED: &str = "compacted";
/// Sync sends, with retention deleting whole segments while they are sent.
const RETAINED: &str = "retained";
const PARTITIONS: u32 = 2;
/// Keys of the compacted topic.
const KEYS: u64 = 8;
/// The group whose commits are Sync, and the one whose commits are Buffered.
const SYNC_GROUP: &str = "ledger-sync";
const BUFFERED_GROUP: &str = "ledger-buffered";

/// What a round found wrong. Each names what was promised and what was read instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Anomaly {
    /// The queue did not open after the cut.
    OpenFailed(String),
    /// Reading, or sending after the cut, failed.
    Unusable(String),
    /// An acknowledged record is not in the log (or not where it was acknowledged).
    Lost { topic: String, partition: u32, offset: u64 },
    /// An offset holds another record than the one acknowledged there.
    Changed { topic: String, partition: u32, offset: u64, expected: (u32, u64), found: (u32, u64) },
    /// A record whose bytes are not those of any record sent.
    Garbage { topic: String, partition: u32, offset: u64 },
    /// One record sent once is in the log twice.
    Duplicated { topic: String, producer: u32, seq: u64 },
    /// The offsets read are not dense (`expected` was next, `found` came).
    Hole { topic: String, partition: u32, expected: u64, found: u64 },
    /// The newest acknowledged record of a key of a compacted topic is gone with nothing newer.
    KeyLost { partition: u32, key: u64, offset: u64 },
    /// An acknowledged Sync commit was not kept.
    CommitLost { group: String, partition: u32, acknowledged: u64, found: Option<u64> },
    /// A committed offset that no commit wrote.
    CommitInvented { group: String, partition: u32, found: u64 },
    /// A topic whose creation returned is gone.
    TopicLost(String),
    /// A topic whose deletion returned is back.
    TopicResurrected(String),
}

/// What a campaign did and found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) rounds: u32,
    pub(crate) torn_rounds: u32,
    /// Acknowledged sends: Sync (all topics) and Buffered.
    pub(crate) synced_acks: usize,
    pub(crate) buffered_acks: usize,
    /// Buffered acknowledged records the cuts took (allowed).
    pub(crate) buffered_lost: usize,
    pub(crate) sync_commits: usize,
    pub(crate) buffered_commits: usize,
    pub(crate) topics_created: usize,
    pub(crate) topics_deleted: usize,
    pub(crate) anomalies: Vec<(u32, Anomaly)>,
}

impl Report {
    /// One line of the figures, for progress output.
    fn summary(&self) -> String {
        format!(
            "{} rounds ({} torn), Sync acks {}, Buffered acks {} ({} lost), commits {} Sync / {} Buffered, topics {} created / {} deleted, {} anomalies",
            self.rounds,
            self.torn_rounds,
            self.synced_acks,
            self.buffered_acks,
            self.buffered_lost,
            self.sync_commits,
            self.buffered_commits,
            self.topics_created,
            self.topics_deleted,
            self.anomalies.len()
        )
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    env_or("STREAMLOG_POWERCUT_SEED", clock | 1)
}

#[test]
fn campaign_clean_cuts() {
    let report = Campaign::new("clean", seed(), env_or("STREAMLOG_POWERCUT_ROUNDS", 3)).run(|_| false, |_, _| {});
    println!("{report:#?}");
    assert!(report.anomalies.is_empty(), "anomalies: {:#?}", report.anomalies);
    assert!(report.synced_acks > 0 && report.sync_commits > 0 && report.topics_created > 0, "{report:?}");
}

#[test]
fn campaign_torn_cuts() {
    let report = Campaign::new("torn", seed(), env_or("STREAMLOG_POWERCUT_ROUNDS", 3)).run(|_| true, |_, _| {});
    println!("{report:#?}");
    assert!(report.anomalies.is_empty(), "anomalies: {:#?}", report.anomalies);
    assert!(report.synced_acks > 0 && report.buffered_acks > 0, "{report:?}");
}

/// The checks are not vacuous: a disk whose fsync lies loses acknowledged Sync records and
/// commits, and the campaign says so.
#[test]
fn a_lying_fsync_is_caught() {
    let campaign = Campaign::new("lying", seed(), 2);
    let report = campaign.run(|_| false, |round, fs| fs.set_fsync_lies(round == 1));
    println!("{report:#?}");
    assert!(report.anomalies.iter().all(|(round, _)| *round == 1), "{:#?}", report.anomalies);
    let lost = |a: &Anomaly| matches!(a, Anomaly::Lost { .. } | Anomaly::KeyLost { .. } | Anomaly::CommitLost { .. });
    assert!(report.anomalies.iter().any(|(_, a)| lost(a)), "a lying fsync went unnoticed: {report:#?}");
}

struct Campaign {
    name: &'static str,
    seed: u64,
    rounds: u32,
}

/// Everything acknowledged so far that a later cut must still show.
#[derive(Default)]
struct Promises {
    /// (topic, partition, offset) -> (producer, seq), for Sync topics, over all rounds.
    synced: HashMap<(String, u32, u64), (u32, u64)>,
    /// As `synced` for the Buffered topic; entries at or past a cut's end are forgotten.
    buffered: HashMap<(u32, u64), (u32, u64)>,
    /// The newest acknowledged offset of each (partition, key) of the compacted topic.
    newest_of_key: HashMap<(u32, u64), u64>,
    /// The highest acknowledged Sync commit per partition, and the highest value any commit
    /// (of either group) may have written.
    sync_commit: BTreeMap<u32, u64>,
    commit_ceiling: u64,
    /// Topics whose creation returned and whose deletion did not start, and deleted ones.
    topics: BTreeSet<String>,
    deleted: BTreeSet<String>,
    /// Topics whose creation or deletion was under way at the kill: either outcome is fine.
    in_doubt: BTreeSet<String>,
    /// Topics whose creation and first (Sync) record were acknowledged.
    with_record: BTreeSet<String>,
}

impl Campaign {
    fn new(name: &'static str, seed: u64, rounds: u32) -> Campaign {
        println!("power-cut campaign {name}: seed {seed} (STREAMLOG_POWERCUT_SEED repeats it), {rounds} rounds");
        Campaign { name, seed, rounds }
    }

    /// Runs the rounds; `torn(round)` chooses the cut, `before(round, fs)` may set the file
    /// system's faults for the round.
    fn run(&self, torn: impl Fn(u32) -> bool, before: impl Fn(u32, &PowerCutFs)) -> Report {
        let mut mounted = Mounted::new(&format!("powercut-{}", self.name));
        let fs = &mut mounted.fs;
        let epoch = env_or("STREAMLOG_POWERCUT_EPOCH", 25).max(1);
        let mut dir = fs.path().join("queue-0");
        let mut rng = Rng(self.seed);
        let mut promises = Promises::default();
        let mut report = Report::default();
        for round in 0..self.rounds {
            // Every `epoch` rounds a fresh queue, so that a long campaign's logs (above all the
            // Buffered group's offset log, millions of commits) do not grow without bound.
            if round % epoch == 0 {
                if round > 0 {
                    println!("after {round} rounds: {}", report.summary());
                    std::fs::remove_dir_all(&dir).unwrap();
                    // Durably gone, so that its pages are freed rather than kept for a cut.
                    std::fs::File::open(fs.path()).unwrap().sync_all().unwrap();
                }
                dir = fs.path().join(format!("queue-{}", round / epoch));
                create_topics(&dir);
                promises = Promises::default();
            }
            before(round, fs);
            let acked = run_round(&dir, round, &mut rng, fs);
            record_promises(&mut promises, &mut report, &acked);
            let torn = torn(round);
            let cut = if torn { Cut::Torn { seed: rng.below(u64::MAX) } } else { Cut::Clean };
            fs.cut(cut).expect("power cut");
            report.rounds += 1;
            report.torn_rounds += u32::from(torn);
            for anomaly in check(&dir, &mut promises, &mut report) {
                // At once too, so that a long run stopped early still shows what it found.
                println!("round {round}: {anomaly:?}");
                report.anomalies.push((round, anomaly));
            }
            // Faults end with the round; what the next one writes is stored honestly.
            fs.set_fsync_lies(false);
        }
        report
    }
}

fn create_topics(dir: &Path) {
    let queue = Queue::open(dir).unwrap();
    let tiny = |partitions| TopicConfig::new(partitions).segment_bytes(4096).index_interval_bytes(256);
    queue.create_topic_with(SYNCED, tiny(PARTITIONS)).unwrap();
    queue.create_topic_with(BUFFERED, tiny(PARTITIONS)).unwrap();
    queue
        .create_topic_with(COMPACTED, tiny(PARTITIONS).cleanup_policy(CleanupPolicy::Compact).min_cleanable_dirty_ratio(0.01))
        .unwrap();
    queue.create_topic_with(RETAINED, tiny(PARTITIONS).retention_bytes(16 << 10)).unwrap();
}

/// The complete lines each child printed before it was killed, by role.
struct Acked {
    round: u32,
    synced: Vec<String>,
    buffered: Vec<String>,
    maintain: Vec<String>,
    admin: Vec<String>,
    sync_commits: Vec<String>,
    buffered_commits: Vec<String>,
}

fn producer_id(round: u32, role: u32) -> u32 {
    round * 10 + role
}

/// Starts every child, waits for a random amount of acknowledged work, kills them all at once.
fn run_round(dir: &Path, round: u32, rng: &mut Rng, fs: &PowerCutFs) -> Acked {
    let dir_arg = dir.display().to_string();
    let produce = |topic: &str, role: u32, durability: &str| {
        let args = [
            dir_arg.clone(),
            topic.into(),
            producer_id(round, role).to_string(),
            "0".into(),
            PARTITIONS.to_string(),
            durability.into(),
        ];
        child::spawn("produce", &args)
    };
    let mut children: Vec<(&str, Child)> = vec![
        ("synced", produce(SYNCED, 0, "sync")),
        ("buffered", produce(BUFFERED, 1, "buffered")),
        ("maintain", child::spawn("powercut-maintain", &[dir_arg.clone(), producer_id(round, 2).to_string()])),
        ("admin", child::spawn("powercut-admin", &[dir_arg.clone(), round.to_string()])),
        (
            "sync-commits",
            child::spawn("powercut-commit", &[dir_arg.clone(), SYNC_GROUP.into(), "sync".into(), round.to_string()]),
        ),
        (
            "buffered-commits",
            child::spawn("powercut-commit", &[dir_arg.clone(), BUFFERED_GROUP.into(), "buffered".into(), round.to_string()]),
        ),
    ];
    let reaper = child::Reaper(children.iter().map(|(_, c)| c.id()).collect());
    let synced_count = Arc::new(AtomicUsize::new(0));
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|(role, c)| {
            let count = (*role == "synced").then(|| synced_count.clone());
            (*role, collect_lines(c, count))
        })
        .collect();
    // The moment of the cut: after a random number of acknowledged Sync sends, sometimes
    // after the kernel wrote dirty pages back (which does not make them durable).
    let target = 1 + rng.below(200) as usize;
    let give_up = Instant::now() + Duration::from_secs(60);
    while synced_count.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < give_up, "only {} Sync sends acknowledged in a minute", synced_count.load(Ordering::Relaxed));
        assert!(children.iter_mut().all(|(_, c)| c.try_wait().unwrap().is_none()), "a child died before the kill");
        std::thread::sleep(Duration::from_millis(2));
    }
    if rng.below(2) == 0 {
        write_back(fs.path());
    }
    std::thread::sleep(Duration::from_millis(rng.below(20)));
    for (_, c) in &mut children {
        c.kill().unwrap();
    }
    for (_, c) in &mut children {
        c.wait().unwrap();
    }
    drop(reaper);
    let mut lines: HashMap<&str, Vec<String>> = readers.drain(..).map(|(role, h)| (role, h.join().unwrap())).collect();
    let mut take = |role| lines.remove(role).unwrap();
    Acked {
        round,
        synced: take("synced"),
        buffered: take("buffered"),
        maintain: take("maintain"),
        admin: take("admin"),
        sync_commits: take("sync-commits"),
        buffered_commits: take("buffered-commits"),
    }
}

/// Asks the kernel to write dirty pages of the mount back (syncfs; over FUSE it may write some
/// or none): the file system sees what it writes, but only an fsync makes anything durable.
fn write_back(mount: &Path) {
    let root = std::fs::File::open(mount).unwrap();
    // SAFETY: syncfs has no memory preconditions; `root` is an open descriptor.
    unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&root)) };
}

/// Reads a child's complete lines on a thread (so its pipe never fills) until it dies; a line
/// cut short by the kill is not an acknowledgement.
fn collect_lines(child: &mut Child, count: Option<Arc<AtomicUsize>>) -> std::thread::JoinHandle<Vec<String>> {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            // The test harness of the child prints a blank line and "running 1 test" first.
            if let Some(complete) = line.strip_suffix('\n').filter(|l| !l.is_empty() && !l.starts_with("running ")) {
                lines.push(complete.to_owned());
                if let Some(count) = &count {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            line.clear();
        }
        lines
    })
}

fn numbers(line: &str) -> Vec<u64> {
    line.split(' ').filter_map(|w| w.parse().ok()).collect()
}

/// Adds what the children were told to the promises.
fn record_promises(promises: &mut Promises, report: &mut Report, acked: &Acked) {
    let round = acked.round;
    for line in &acked.synced {
        let [seq, partition, offset] = numbers(line)[..] else { panic!("bad line {line:?}") };
        promises.synced.insert((SYNCED.into(), partition as u32, offset), (producer_id(round, 0), seq));
        report.synced_acks += 1;
    }
    for line in &acked.buffered {
        let [seq, partition, offset] = numbers(line)[..] else { panic!("bad line {line:?}") };
        promises.buffered.insert((partition as u32, offset), (producer_id(round, 1), seq));
        report.buffered_acks += 1;
    }
    for line in &acked.maintain {
        let (topic, rest) = line.split_once(' ').unwrap();
        let [seq, partition, offset] = numbers(rest)[..] else { panic!("bad line {line:?}") };
        let topic = if topic == "c" { COMPACTED } else { RETAINED };
        promises.synced.insert((topic.into(), partition as u32, offset), (producer_id(round, 2), seq));
        if topic == COMPACTED {
            promises.newest_of_key.insert((partition as u32, seq % KEYS), offset);
        }
        report.synced_acks += 1;
    }
    for line in &acked.admin {
        let (verb, name) = line.split_once(' ').unwrap();
        match verb {
            "creating" | "deleting" => {
                promises.in_doubt.insert(name.into());
                promises.topics.remove(name);
            }
            "created" => {
                promises.in_doubt.remove(name);
                promises.topics.insert(name.into());
                promises.with_record.insert(name.into());
                report.topics_created += 1;
            }
            "deleted" => {
                promises.in_doubt.remove(name);
                promises.deleted.insert(name.into());
                report.topics_deleted += 1;
            }
            _ => panic!("bad line {line:?}"),
        }
    }
    // Commit children print `value` after the commit of that value to both partitions returned.
    let ceiling = |lines: &[String]| lines.last().map_or(0, |l| l.parse::<u64>().unwrap());
    for line in &acked.sync_commits {
        let value: u64 = line.parse().unwrap();
        for partition in 0..PARTITIONS {
            promises.sync_commit.insert(partition, value);
        }
    }
    report.sync_commits += acked.sync_commits.len();
    report.buffered_commits += acked.buffered_commits.len();
    // A commit in flight at the kill may have been written too: one past the last printed.
    let started = commit_base(round);
    promises.commit_ceiling =
        promises.commit_ceiling.max(ceiling(&acked.sync_commits).max(ceiling(&acked.buffered_commits)).max(started) + 1);
}

/// Commit children start from here in each round, so values only grow.
fn commit_base(round: u32) -> u64 {
    u64::from(round) * 1_000_000 + 1
}

/// Opens the queue after a cut and checks every promise; updates what later rounds must see.
fn check(dir: &Path, promises: &mut Promises, report: &mut Report) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    let queue = match open_alone(dir) {
        Ok(queue) => queue,
        Err(e) => return vec![Anomaly::OpenFailed(e.to_string())],
    };
    if let Err(e) = check_queue(&queue, promises, report, &mut anomalies) {
        anomalies.push(Anomaly::Unusable(e.to_string()));
    }
    anomalies
}

fn check_queue(
    queue: &Queue,
    promises: &mut Promises,
    report: &mut Report,
    anomalies: &mut Vec<Anomaly>,
) -> streamlog::Result<()> {
    // Topics.
    let topics: BTreeSet<String> = queue.topics()?.into_iter().collect();
    for topic in &promises.topics {
        if !topics.contains(topic) {
            anomalies.push(Anomaly::TopicLost(topic.clone()));
        }
    }
    for topic in &promises.deleted {
        if topics.contains(topic) && !promises.in_doubt.contains(topic) {
            anomalies.push(Anomaly::TopicResurrected(topic.clone()));
        }
    }
    // Whatever was in doubt is now settled one way or the other.
    for topic in std::mem::take(&mut promises.in_doubt) {
        if topics.contains(&topic) {
            promises.topics.insert(topic);
        }
    }
    // Every churn topic that exists holds only whole records (and the one Sync record its
    // creator sent once its creation returned, if that was acknowledged).
    for topic in topics.iter().filter(|t| t.starts_with("churn-")) {
        let read = read_checked(queue, topic, 1, anomalies)?;
        if promises.with_record.contains(topic) && !read.contains_key(&(0, 0)) {
            anomalies.push(Anomaly::Lost { topic: topic.clone(), partition: 0, offset: 0 });
        }
    }
    // Sync topics: everything acknowledged is where it was acknowledged.
    for topic in [SYNCED, COMPACTED, RETAINED] {
        let read = read_checked(queue, topic, PARTITIONS, anomalies)?;
        for ((t, partition, offset), &identity) in &promises.synced {
            if t != topic {
                continue;
            }
            let (log_start, _) = queue.offsets(&TopicPartition::new(topic, *partition))?;
            match read.get(&(*partition, *offset)) {
                Some(&found) if found == identity => {}
                Some(&found) => anomalies.push(Anomaly::Changed {
                    topic: topic.into(),
                    partition: *partition,
                    offset: *offset,
                    expected: identity,
                    found,
                }),
                // Compaction and retention may remove what they are allowed to (checked below).
                None if topic == COMPACTED || (topic == RETAINED && *offset < log_start) => {}
                None => anomalies.push(Anomaly::Lost { topic: topic.into(), partition: *partition, offset: *offset }),
            }
        }
        if topic == COMPACTED {
            for (&(partition, key), &offset) in &promises.newest_of_key {
                let kept = read.range((partition, offset)..(partition + 1, 0)).any(|(_, &(_, seq))| seq % KEYS == key);
                if !kept {
                    anomalies.push(Anomaly::KeyLost { partition, key, offset });
                }
            }
        }
    }
    // The Buffered topic: what is there is as sent; a lost tail is allowed, and its offsets
    // may be reused by later rounds.
    let read = read_checked(queue, BUFFERED, PARTITIONS, anomalies)?;
    let ends: Vec<u64> = (0..PARTITIONS)
        .map(|p| queue.offsets(&TopicPartition::new(BUFFERED, p)).map(|o| o.1))
        .collect::<streamlog::Result<_>>()?;
    promises.buffered.retain(|&(partition, offset), identity| {
        if offset >= ends[partition as usize] {
            report.buffered_lost += 1;
            return false;
        }
        match read.get(&(partition, offset)) {
            Some(found) if found == identity => {}
            Some(&found) => {
                anomalies.push(Anomaly::Changed { topic: BUFFERED.into(), partition, offset, expected: *identity, found })
            }
            None => anomalies.push(Anomaly::Lost { topic: BUFFERED.into(), partition, offset }),
        }
        true
    });
    // Commits.
    for group in [SYNC_GROUP, BUFFERED_GROUP] {
        let consumer = queue.consumer(ConsumerConfig::new(group).auto_commit(None))?;
        for partition in 0..PARTITIONS {
            let found = consumer.committed(&TopicPartition::new(SYNCED, partition))?;
            if let Some(found) = found.filter(|&f| f > promises.commit_ceiling) {
                anomalies.push(Anomaly::CommitInvented { group: group.into(), partition, found });
            }
            if group == SYNC_GROUP
                && let Some(&acknowledged) = promises.sync_commit.get(&partition)
                && found.is_none_or(|f| f < acknowledged)
            {
                anomalies.push(Anomaly::CommitLost { group: group.into(), partition, acknowledged, found });
            }
        }
    }
    // The queue keeps accepting sends, and they read back.
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    for topic in [SYNCED, BUFFERED, COMPACTED, RETAINED] {
        let meta = producer.send(topic, Record::new(b"after the cut").key(b"after").partition(0))?;
        let mut consumer = queue.consumer(ConsumerConfig::new("after").auto_commit(None))?;
        let tp = TopicPartition::new(topic, 0);
        consumer.assign(std::slice::from_ref(&tp))?;
        consumer.seek(&tp, meta.offset())?;
        let records = consumer.poll(Duration::from_secs(10))?;
        if records.iter().next().map(|r| (r.offset(), r.value())) != Some((meta.offset(), b"after the cut".as_slice())) {
            anomalies.push(Anomaly::Unusable(format!("the record sent to {topic} after the cut did not read back")));
        }
    }
    Ok(())
}

/// Reads every partition of `topic` from its start to its end, checking that each record is
/// whole and as sent (its value is `value_for` of the identity it names), that no identity
/// appears twice and that offsets are dense (except in the compacted topic). Returns
/// (partition, offset) -> identity. Records this checker sent after earlier cuts are skipped.
fn read_checked(
    queue: &Queue,
    topic: &str,
    partitions: u32,
    anomalies: &mut Vec<Anomaly>,
) -> streamlog::Result<BTreeMap<(u32, u64), (u32, u64)>> {
    let mut read = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let config =
        ConsumerConfig::new("checker").auto_commit(None).auto_offset_reset(OffsetReset::Earliest).max_poll_records(10_000);
    for partition in 0..partitions {
        let tp = TopicPartition::new(topic, partition);
        let (start, end) = queue.offsets(&tp)?;
        let mut consumer = queue.consumer(config.clone())?;
        consumer.assign(std::slice::from_ref(&tp))?;
        consumer.seek(&tp, start)?;
        let mut next = start;
        let give_up = Instant::now() + Duration::from_secs(60);
        while consumer.position(&tp)? < end {
            if Instant::now() > give_up {
                anomalies.push(Anomaly::Unusable(format!("{topic}/{partition} did not read to its end {end}")));
                break;
            }
            for record in consumer.poll(Duration::from_millis(200))?.iter() {
                let offset = record.offset();
                if offset != next && topic != COMPACTED {
                    anomalies.push(Anomaly::Hole { topic: topic.into(), partition, expected: next, found: offset });
                }
                next = offset + 1;
                if record.value() == b"after the cut" {
                    continue;
                }
                let Some(identity) = identity_of(record.value()) else {
                    anomalies.push(Anomaly::Garbage { topic: topic.into(), partition, offset });
                    continue;
                };
                if !seen.insert(identity) {
                    anomalies.push(Anomaly::Duplicated { topic: topic.into(), producer: identity.0, seq: identity.1 });
                }
                read.insert((partition, offset), identity);
            }
        }
    }
    Ok(read)
}

/// The (producer, seq) a value names, if the value is exactly what that producer sent.
fn identity_of(value: &[u8]) -> Option<(u32, u64)> {
    let text = std::str::from_utf8(&value[..value.len().min(40)]).ok()?;
    let rest = text.strip_prefix('p')?;
    let (producer, rest) = rest.split_once("-s")?;
    let (seq, _) = rest.split_once('-')?;
    let identity = (producer.parse().ok()?, seq.parse().ok()?);
    (value_for(identity.0, identity.1) == value).then_some(identity)
}

/// Child roles of the campaigns, dispatched from `child::entry`.
pub(crate) fn child(role: &str, args: &[String]) {
    match role {
        "powercut-maintain" => maintain(args),
        "powercut-admin" => admin(args),
        "powercut-commit" => commit(args),
        other => panic!("unknown child role {other}"),
    }
}

/// `powercut-maintain DIR PRODUCER`: Sync sends, alternately to the compacted topic (keys
/// `seq % KEYS`) and the retained one, running retention and compaction every 40 sends;
/// prints `c|r SEQ PARTITION OFFSET` after each send returned.
fn maintain(args: &[String]) {
    let [dir, producer_id] = args else { panic!("bad arguments {args:?}") };
    let producer_id: u32 = producer_id.parse().unwrap();
    let queue = Queue::open(Path::new(dir)).unwrap();
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    let mut out = std::io::stdout().lock();
    for seq in 0u64.. {
        let value = value_for(producer_id, seq);
        let (tag, topic) = if seq % 2 == 0 { ("c", COMPACTED) } else { ("r", RETAINED) };
        let key = (seq % KEYS).to_le_bytes();
        let meta =
            producer.send(topic, Record::new(&value).key(&key).partition((seq / 2 % u64::from(PARTITIONS)) as u32)).unwrap();
        writeln!(out, "{tag} {seq} {} {}", meta.partition(), meta.offset()).unwrap();
        out.flush().unwrap();
        if seq % 40 == 39 {
            queue.run_maintenance().unwrap();
        }
    }
}

/// `powercut-admin DIR ROUND`: creates topics `churn-ROUND-I` one after another, each with one
/// Sync record, and deletes each two creations later; prints `creating|created|deleting|deleted
/// NAME` around each call.
fn admin(args: &[String]) {
    let [dir, round] = args else { panic!("bad arguments {args:?}") };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    let mut out = std::io::stdout().lock();
    let name = |i: u64| format!("churn-{round}-{i}");
    for i in 0u64.. {
        writeln!(out, "creating {}", name(i)).unwrap();
        out.flush().unwrap();
        queue.create_topic_with(&name(i), TopicConfig::new(1).segment_bytes(1024)).unwrap();
        let value = value_for(u32::MAX, i);
        producer.send(&name(i), Record::new(&value)).unwrap();
        writeln!(out, "created {}", name(i)).unwrap();
        if i >= 2 {
            writeln!(out, "deleting {}", name(i - 2)).unwrap();
            out.flush().unwrap();
            queue.delete_topic(&name(i - 2)).unwrap();
            writeln!(out, "deleted {}", name(i - 2)).unwrap();
        }
        out.flush().unwrap();
    }
}

/// `powercut-commit DIR GROUP DURABILITY ROUND`: commits values from `commit_base(ROUND)` on,
/// one a call, to both partitions of the synced topic; prints each value once its commit
/// returned.
fn commit(args: &[String]) {
    let [dir, group, durability, round] = args else { panic!("bad arguments {args:?}") };
    let durability = if durability == "sync" { Durability::Sync } else { Durability::Buffered };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let mut consumer = queue.consumer(ConsumerConfig::new(group).auto_commit(None).commit_durability(durability)).unwrap();
    let mut out = std::io::stdout().lock();
    for value in commit_base(round.parse().unwrap()).. {
        let offsets: Vec<(TopicPartition, u64)> = (0..PARTITIONS).map(|p| (TopicPartition::new(SYNCED, p), value)).collect();
        consumer.commit_offsets(&offsets).unwrap();
        writeln!(out, "{value}").unwrap();
        out.flush().unwrap();
    }
}
