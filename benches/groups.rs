//! Consumer groups across processes: how fast a group settles after a member joins or leaves,
//! how fast a killed member's partitions are read elsewhere, and how many commits one consumer
//! makes per second.
//!
//! - Join and leave: member processes (8, on a topic of 64 partitions) poll in a loop; one at a
//!   time leaves with `close()` and joins again with `subscribe`. Measured from the call, in the
//!   member, until `describe_group`, polled by this process, first shows the group stable: every
//!   partition owned, and every member owning exactly its assignment.
//! - Failover: a member that owns partitions is killed with SIGKILL, and a record is then sent to
//!   each of its partitions. Measured from the kill until survivors have returned a record from
//!   every one of them. Members report on stdout with CLOCK_MONOTONIC times, which every process
//!   shares. A new member then takes the killed one's place.
//! - Commits: one subscribed consumer commits the offset of its one partition over and over.
//!
//! This program re-runs itself as each member (`groups member DIR NAME`); a member obeys `join`
//! and `leave` lines on its stdin and exits when its stdin closes.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use common::{Report, ScratchDir, monotonic_ns, per_second};
use streamlog::{Consumer, ConsumerConfig, Durability, Error, OffsetReset, Queue, Record, TopicPartition};

const MEMBER_ROLE: &str = "member";
const TOPIC: &str = "work";
const GROUP: &str = "bench";
/// How long members wait in `poll`; they wake at once when the group changes anyway.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long anything may take before the benchmark gives up on it.
const GIVE_UP: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(MEMBER_ROLE) {
        let [dir, name] = &args[2..] else { panic!("usage: groups member DIR NAME") };
        return member(Path::new(dir), name);
    }
    let full = common::full_mode();
    if full {
        common::settle();
    }
    // Members, partitions, leave-and-join rounds, failovers, buffered commits, synced commits.
    let (members, partitions, rounds, failovers, commits, synced_commits) =
        if full { (8, 64, 40, 20, 2_000_000, 2_000) } else { (3, 6, 1, 1, 1_000, 10) };
    let mut report = Report::default();

    let dir = ScratchDir::new("groups");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic(TOPIC, partitions).expect("create the topic");
    let mut group = Group::new(&queue, partitions);
    for _ in 0..members {
        let who = group.spawn();
        group.join(who);
    }

    let (mut leave_ns, mut join_ns) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let who = group.live()[round % members];
        leave_ns.push(group.leave(who));
        join_ns.push(group.join(who));
    }
    let what = format!("{members} member processes, {partitions} partitions");
    report_times(&mut report, &format!("`close()` until the group is stable ({what})"), leave_ns, 50);
    report_times(&mut report, &format!("`subscribe` until the group is stable ({what})"), join_ns, 50);

    let mut failover_ns = Vec::new();
    for round in 0..failovers {
        failover_ns.push(group.failover(round));
        let who = group.spawn();
        group.join(who);
    }
    report_times(&mut report, "SIGKILL of a member until its partitions are read elsewhere", failover_ns, 1_000);
    group.stop();
    drop(queue);

    let rate = commit_rate(Durability::Buffered, commits);
    let what = "`commit_offsets` of 1 partition by a subscribed consumer, 1 thread";
    report.add(what, common::millions_per_second(rate), "≥ 0.2 M/s", Some(rate >= 200_000.0));
    if full {
        common::settle(); // the buffered commits' writeback would otherwise share the fsyncs below
    }
    let rate = commit_rate(Durability::Sync, synced_commits);
    report.add(&format!("{what}, `Durability::Sync`"), format!("{:.1} k/s", rate / 1e3), "", None);

    report.print("Consumer groups", full);
}

/// Adds a row with the median and the largest of `samples_ns`; the target is met if even the
/// largest is within `target_ms`.
fn report_times(report: &mut Report, what: &str, mut samples_ns: Vec<u64>, target_ms: u64) {
    samples_ns.sort_unstable();
    let (median, max) = (samples_ns[samples_ns.len() / 2], samples_ns[samples_ns.len() - 1]);
    let ms = |ns: u64| format!("{:.1} ms", ns as f64 / 1e6);
    let measured = format!("{} / {} ({} runs)", ms(median), ms(max), samples_ns.len());
    report.add(&format!("{what}, median / max"), measured, &format!("≤ {target_ms} ms"), Some(max <= target_ms * 1_000_000));
}

/// A member process: joins and leaves the group when told to on stdin, and while it is in the
/// group polls in a loop, reporting each record and committing. Every report line on stdout
/// carries a CLOCK_MONOTONIC time.
fn member(dir: &Path, name: &str) {
    let queue = Queue::open(dir).expect("open the queue in a member");
    let (sender, commands) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let config = ConsumerConfig::new(GROUP).client_id(name).auto_offset_reset(OffsetReset::Earliest).auto_commit(None);
    let mut consumer: Option<Consumer> = None;
    loop {
        let command = match &mut consumer {
            None => commands.recv_timeout(POLL_TIMEOUT),
            Some(consumer) => {
                let records = consumer.poll(POLL_TIMEOUT).expect("poll");
                let polled_ns = monotonic_ns();
                for record in &records {
                    println!("got {} {polled_ns} {}", record.partition(), String::from_utf8_lossy(record.value()));
                }
                if !records.is_empty() {
                    // Refused just after a rebalance; the record may then be read again, which
                    // the parent ignores.
                    let _ = consumer.commit();
                }
                commands.recv_timeout(Duration::ZERO)
            }
        };
        match command.as_deref() {
            Ok("join") => {
                let mut joining = queue.consumer(config.clone()).expect("a consumer");
                let started_ns = monotonic_ns();
                joining.subscribe(&[TOPIC]).expect("subscribe");
                println!("joined {started_ns}");
                consumer = Some(joining);
            }
            Ok("leave") => {
                let leaving = consumer.take().expect("leave only after join");
                let started_ns = monotonic_ns();
                leaving.close().expect("close");
                println!("left {started_ns}");
            }
            Ok(other) => panic!("unknown command {other:?}"),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// The member processes, as this process drives and watches them.
struct Group<'a> {
    queue: &'a Queue,
    partitions: u32,
    /// Every member process started, by index; `None` once it is gone.
    members: Vec<Option<(Child, ChildStdin)>>,
    /// The members that should be in the group now.
    joined: BTreeSet<usize>,
    sender: Sender<(usize, String)>,
    lines: Receiver<(usize, String)>,
}

impl<'a> Group<'a> {
    fn new(queue: &'a Queue, partitions: u32) -> Self {
        let (sender, lines) = mpsc::channel();
        Group { queue, partitions, members: Vec::new(), joined: BTreeSet::new(), sender, lines }
    }

    fn name(who: usize) -> String {
        format!("m{who}")
    }

    /// Starts a member process, not yet in the group; returns its index.
    fn spawn(&mut self) -> usize {
        let who = self.members.len();
        let mut child = Command::new(std::env::current_exe().expect("this program's path"))
            .args([MEMBER_ROLE, &self.queue.path().display().to_string(), &Group::name(who)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a member process");
        let (stdin, stdout) = (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"));
        let sender = self.sender.clone();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            // A line cut short by SIGKILL has no newline and does not count.
            while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(whole) = line.strip_suffix('\n') {
                    let _ = sender.send((who, whole.to_owned()));
                }
                line.clear();
            }
        });
        self.members.push(Some((child, stdin)));
        who
    }

    /// The members in the group, in the order they were started.
    fn live(&self) -> Vec<usize> {
        self.joined.iter().copied().collect()
    }

    fn command(&mut self, who: usize, command: &str) {
        let (_, stdin) = self.members[who].as_mut().expect("a live member");
        writeln!(stdin, "{command}").expect("write to a member");
    }

    /// The time in the next line from `who` that starts with `prefix`, skipping other lines.
    fn reported_ns(&self, who: usize, prefix: &str) -> u64 {
        let give_up = Instant::now() + GIVE_UP;
        loop {
            let (from, line) = self.next_line(give_up);
            if let Some(ns) = line.strip_prefix(prefix).filter(|_| from == who) {
                return ns.trim().parse().expect("a time");
            }
        }
    }

    fn next_line(&self, give_up: Instant) -> (usize, String) {
        self.lines.recv_timeout(give_up.saturating_duration_since(Instant::now())).expect("a line from a member in time")
    }

    /// Has `who` join, and returns how long from its `subscribe` until the group was stable.
    fn join(&mut self, who: usize) -> u64 {
        self.command(who, "join");
        self.joined.insert(who);
        let stable_ns = self.wait_until_stable();
        stable_ns.saturating_sub(self.reported_ns(who, "joined "))
    }

    /// Has `who` leave, and returns how long from its `close` until the group was stable.
    fn leave(&mut self, who: usize) -> u64 {
        self.command(who, "leave");
        self.joined.remove(&who);
        let stable_ns = self.wait_until_stable();
        stable_ns.saturating_sub(self.reported_ns(who, "left "))
    }

    /// Polls `describe_group` until exactly the joined members are in the group and it is stable;
    /// returns the CLOCK_MONOTONIC time just after the call that first saw it so.
    fn wait_until_stable(&self) -> u64 {
        let names: BTreeSet<String> = self.joined.iter().map(|&who| Group::name(who)).collect();
        let give_up = Instant::now() + GIVE_UP;
        loop {
            let group = match self.queue.describe_group(GROUP) {
                Err(Error::UnknownGroup(_)) => None, // before the first member got to it
                described => Some(described.expect("describe the group")),
            };
            let seen_ns = monotonic_ns();
            let stable = group.as_ref().is_some_and(|group| {
                let sorted = |partitions: &[TopicPartition]| partitions.iter().cloned().collect::<BTreeSet<_>>();
                group.members.iter().map(|m| m.client_id.clone()).collect::<BTreeSet<_>>() == names
                    && group.partitions.len() == self.partitions as usize
                    && group.partitions.iter().all(|p| p.owner.is_some())
                    && group.members.iter().all(|m| sorted(&m.owned) == sorted(&m.assignment))
            });
            if stable {
                return seen_ns;
            }
            assert!(Instant::now() < give_up, "the group did not become stable within {GIVE_UP:?}: {group:#?}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Kills a member that owns partitions, sends a record to each of them, and returns how long
    /// from the kill until other members had returned them all.
    fn failover(&mut self, round: usize) -> u64 {
        let live = self.live();
        let victim = live[round % live.len()];
        let group = self.queue.describe_group(GROUP).expect("describe the group");
        let owned: BTreeSet<u32> = group
            .members
            .iter()
            .find(|m| m.client_id == Group::name(victim))
            .map(|m| m.owned.iter().map(TopicPartition::partition).collect())
            .expect("the victim is a member");
        assert!(!owned.is_empty(), "the victim owns partitions");
        let (mut child, _stdin) = self.members[victim].take().expect("a live member");
        self.joined.remove(&victim);
        let killed_ns = monotonic_ns();
        child.kill().expect("SIGKILL a member");
        let producer = self.queue.producer();
        let marker = format!("failover-{round}");
        for &partition in &owned {
            producer.send(TOPIC, Record::new(marker.as_bytes()).partition(partition)).expect("send");
        }
        let (mut waiting, mut last_ns) = (owned, 0u64);
        let give_up = Instant::now() + GIVE_UP;
        while !waiting.is_empty() {
            let (from, line) = self.next_line(give_up);
            let mut words = line.split(' ');
            if from != victim
                && words.next() == Some("got")
                && let (Some(partition), Some(ns), Some(value)) = (words.next(), words.next(), words.next())
                && value == marker
                && waiting.remove(&partition.parse().expect("a partition"))
            {
                last_ns = last_ns.max(ns.parse().expect("a time"));
            }
        }
        child.wait().expect("reap the killed member");
        last_ns.saturating_sub(killed_ns)
    }

    /// Closes every member's stdin, so that it leaves the group and exits, and waits for them.
    fn stop(&mut self) {
        for (mut child, stdin) in self.members.drain(..).flatten() {
            drop(stdin);
            assert!(child.wait().expect("wait for a member").success(), "a member process failed");
        }
    }
}

/// Commits per second of one subscribed consumer committing its one partition `count` times.
fn commit_rate(durability: Durability, count: u64) -> f64 {
    let dir = ScratchDir::new("groups-commits");
    let queue = Queue::open(dir.path()).expect("open the queue");
    queue.create_topic("commits", 1).expect("create the topic");
    let config = ConsumerConfig::new("committer").auto_commit(None).commit_durability(durability);
    let mut consumer = queue.consumer(config).expect("a consumer");
    consumer.subscribe(&["commits"]).expect("subscribe");
    let give_up = Instant::now() + GIVE_UP;
    while consumer.assignment().is_empty() {
        assert!(Instant::now() < give_up, "the consumer was not assigned its partition");
        consumer.poll(Duration::from_millis(10)).expect("poll");
    }
    let mut offsets = [(TopicPartition::new("commits", 0), 0)];
    let started = Instant::now();
    for offset in 1..=count {
        offsets[0].1 = offset;
        consumer.commit_offsets(&offsets).expect("commit");
    }
    let elapsed = started.elapsed();
    assert_eq!(consumer.committed(&offsets[0].0).expect("read the commit"), Some(count));
    consumer.close().expect("close");
    per_second(count, elapsed)
}
