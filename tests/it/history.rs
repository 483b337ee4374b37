//! A Jepsen-style queue workload: producer processes (Buffered and Sync) and consumer-group
//! member processes report every operation as timestamped events on their stdout, a seeded
//! nemesis kills and stops them (and restarts the dead), and after a final full read the
//! checker (`checker.rs`) looks for every anomaly of its taxonomy. Sabotage modes make one child
//! lie in one way; each has a test showing the checker names exactly that anomaly.
//!
//! `STREAMLOG_HISTORY_SEED` repeats a run's nemesis; `STREAMLOG_HISTORY_OPS` sets how many
//! nemesis operations the run has (default 10); `STREAMLOG_HISTORY_ROUNDS` repeats the whole
//! workload (default 1), each round on a fresh queue with the next seed.

mod checker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use checker::{Event, History, Kind, What};
use streamlog::{
    Consumer, ConsumerConfig, Durability, OffsetReset, ProducerConfig, Queue, RebalanceListener, Record, TopicConfig,
    TopicPartition,
};

use crate::Rng;
use crate::TempDir;
use crate::child::{self, monotonic_ns};

const TOPIC: &str = "h";
const GROUP: &str = "hg";
const PARTITIONS: u32 = 4;
/// The members' session timeout; the nemesis stops them for less and for more than this.
const SESSION_MS: u64 = 600;

/// How a child lies, to prove the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sabotage {
    Honest,
    /// A producer reports an acknowledgement for a send it never made.
    AckUnsent,
    /// A producer sends a record twice and reports it once.
    SendTwice,
    /// A producer sends a record in another producer's name, unreported.
    SendForeign,
    /// A producer sends a record with a broken checksum, unreported.
    SendCorrupt,
    /// A producer reports an offset one past the real one.
    WrongOffset,
    /// A producer sends two records in the reverse order and reports them in order.
    Reorder,
    /// A member leaves one delivered record out of its report.
    DropDelivery,
    /// A member seeks one record forward.
    SeekSkip,
    /// A member seeks back to records it was given.
    Rewind,
    /// A member reports a record with other bytes.
    AlterDelivery,
    /// A member commits up to three records it was not given.
    CommitAhead,
    /// A member reports a commit far beyond the end of the log.
    CommitBeyondEnd,
    /// A member hides its revocations and keeps reading the partitions it gave up.
    Zombie,
}

const SABOTAGES: [Sabotage; 14] = [
    Sabotage::Honest,
    Sabotage::AckUnsent,
    Sabotage::SendTwice,
    Sabotage::SendForeign,
    Sabotage::SendCorrupt,
    Sabotage::WrongOffset,
    Sabotage::Reorder,
    Sabotage::DropDelivery,
    Sabotage::SeekSkip,
    Sabotage::Rewind,
    Sabotage::AlterDelivery,
    Sabotage::CommitAhead,
    Sabotage::CommitBeyondEnd,
    Sabotage::Zombie,
];

impl Sabotage {
    fn name(self) -> String {
        format!("{self:?}")
    }

    fn parse(name: &str) -> Sabotage {
        *SABOTAGES.iter().find(|s| s.name() == name).unwrap_or_else(|| panic!("unknown sabotage {name}"))
    }
}

/// What a run consists of.
struct Workload {
    /// One producer per entry: its durability (`sync` or `buffered`) and sabotage.
    producers: Vec<(&'static str, Sabotage)>,
    /// One member per entry, with its sabotage.
    members: Vec<Sabotage>,
    /// Nemesis operations; with none, the run lasts until `quiet_until` holds.
    nemesis_ops: u32,
    seed: u64,
}

/// The figures of a run.
#[derive(Default, Debug)]
struct Stats {
    events: usize,
    sends_acknowledged: usize,
    sends_failed: usize,
    deliveries: usize,
    commits: usize,
    commits_refused: usize,
    kills: usize,
    short_stops: usize,
    long_stops: usize,
    kill_alls: usize,
    records_in_log: usize,
}

impl Stats {
    fn of(history: &History) -> Stats {
        let mut stats = Stats { events: history.events.len(), ..Stats::default() };
        for event in &history.events {
            match event.what {
                What::Ok { .. } => stats.sends_acknowledged += 1,
                What::Fail { .. } => stats.sends_failed += 1,
                What::Deliver { .. } => stats.deliveries += 1,
                What::CommitOk { .. } => stats.commits += 1,
                What::CommitFail => stats.commits_refused += 1,
                _ => {}
            }
        }
        stats.records_in_log = history.final_log.values().map(Vec::len).sum();
        stats
    }
}

enum Role {
    Producer(usize),
    Member(usize),
}

/// One incarnation of a child; a restarted child is a new one, with a new id.
struct Incarnation {
    role: Role,
    id: u32,
    process: Child,
    reader: JoinHandle<()>,
}

struct Run<'a> {
    workload: &'a Workload,
    dir: PathBuf,
    events: Arc<Mutex<Vec<Event>>>,
    next_id: u32,
    children: Vec<Incarnation>,
    kills: usize,
    short_stops: usize,
    long_stops: usize,
    kill_alls: usize,
}

impl Run<'_> {
    fn spawn(&mut self, role: Role) {
        self.next_id += 1;
        let id = self.next_id;
        let dir = self.dir.display().to_string();
        let (name, args) = match role {
            Role::Producer(i) => {
                let (durability, sabotage) = self.workload.producers[i];
                ("hist-producer", vec![dir, id.to_string(), durability.into(), sabotage.name()])
            }
            Role::Member(i) => ("hist-member", vec![dir, id.to_string(), self.workload.members[i].name()]),
        };
        let mut process = child::spawn(name, &args);
        let stdout = process.stdout.take().unwrap();
        let events = Arc::clone(&self.events);
        let reader = std::thread::spawn(move || {
            // A line cut short by a kill is not a report; read_line keeps it without '\n'.
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(event) = line.strip_suffix('\n').and_then(|l| parse_event(id, l)) {
                    events.lock().unwrap().push(event);
                }
                line.clear();
            }
        });
        self.children.push(Incarnation { role, id, process, reader });
    }

    fn count(&self, process: u32, matches: impl Fn(&What) -> bool) -> usize {
        self.events.lock().unwrap().iter().filter(|e| e.process == process && matches(&e.what)).count()
    }

    fn signal(&self, index: usize, signal: libc::c_int) {
        // SAFETY: kill has no memory preconditions; the child is not reaped yet, so its pid
        // is still its own.
        unsafe { libc::kill(self.children[index].process.id() as libc::pid_t, signal) };
    }

    /// Kills child `index` and starts its replacement.
    fn kill_and_restart(&mut self, index: usize) {
        self.kills += 1;
        let mut dead = self.children.remove(index);
        dead.process.kill().unwrap();
        self.bury(dead);
    }

    /// Kills every child at once (as a machine crash would, short of the power cut), then
    /// starts them all again.
    fn kill_all_and_restart(&mut self) {
        self.kill_alls += 1;
        for child in &mut self.children {
            child.process.kill().unwrap();
        }
        for dead in std::mem::take(&mut self.children) {
            self.bury(dead);
        }
    }

    /// Reaps a child killed, notes its death and starts its replacement.
    fn bury(&mut self, mut dead: Incarnation) {
        dead.process.wait().unwrap();
        // Reaped: nothing it printed can be later than this.
        self.events.lock().unwrap().push(Event { ns: monotonic_ns(), process: dead.id, what: What::Died });
        dead.reader.join().unwrap();
        self.spawn(dead.role);
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.process.id()).collect()
    }
}

/// `NS KIND ARGS...` as a child prints it; `None` for anything else (the test harness's lines).
fn parse_event(process: u32, line: &str) -> Option<Event> {
    let mut parts = line.split(' ');
    let ns: u64 = parts.next()?.parse().ok()?;
    let kind = parts.next()?;
    let args: Vec<&str> = parts.collect();
    let number = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok());
    let list = || -> Option<Vec<u32>> {
        args.first().map_or(Some(Vec::new()), |l| l.split(',').filter(|s| !s.is_empty()).map(|p| p.parse().ok()).collect())
    };
    let what = match kind {
        "invoke" => What::Invoke { producer: number(0)? as u32, seq: number(1)?, partition: number(2)? as u32 },
        "ok" => What::Ok { producer: number(0)? as u32, seq: number(1)?, partition: number(2)? as u32, offset: number(3)? },
        "fail" => What::Fail { producer: number(0)? as u32, seq: number(1)? },
        "assigned" => What::Assigned(
            args.first()?
                .split(',')
                .map(|pair| {
                    let (p, position) = pair.split_once(':')?;
                    Some((p.parse().ok()?, position.parse().ok()?))
                })
                .collect::<Option<_>>()?,
        ),
        "revoked" => What::Revoked(list()?),
        "lost" => What::Lost(list()?),
        "poll" => What::Poll,
        "deliver" => What::Deliver { partition: number(0)? as u32, offset: number(1)?, crc: number(2)? as u32 },
        "commit" => What::CommitInvoke,
        "commit-ok" => What::CommitOk { partition: number(0)? as u32, offset: number(1)? },
        "commit-fail" => What::CommitFail,
        _ => return None,
    };
    Some(Event { ns, process, what })
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `workload` on a fresh queue and returns what it observed, and its figures.
fn run(workload: &Workload) -> (History, Stats) {
    let dir = TempDir::new("history");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic_with(TOPIC, TopicConfig::new(PARTITIONS).segment_bytes(16 << 10).index_interval_bytes(1024)).unwrap();
    let mut run = Run {
        workload,
        dir: dir.path().to_owned(),
        events: Arc::default(),
        next_id: 0,
        children: Vec::new(),
        kills: 0,
        short_stops: 0,
        long_stops: 0,
        kill_alls: 0,
    };
    let mut reaper = child::Reaper(Vec::new());
    for i in 0..workload.producers.len() {
        run.spawn(Role::Producer(i));
    }
    // Members join one after another, so the first ones have partitions revoked.
    for i in 0..workload.members.len() {
        run.spawn(Role::Member(i));
        reaper.0 = run.pids();
        let id = run.children.last().unwrap().id;
        wait_for("a member's first assignment", Duration::from_secs(30), || {
            run.count(id, |w| matches!(w, What::Assigned(_))) > 0
        });
    }
    let mut rng = Rng(workload.seed);
    for _ in 0..workload.nemesis_ops {
        // Pacing between faults, not synchronisation: the checker holds whatever interleaving.
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        let victim = rng.below(run.children.len() as u64) as usize;
        match rng.below(8) {
            0..=2 => run.kill_and_restart(victim),
            3 | 4 => {
                run.short_stops += 1;
                run.signal(victim, libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(SESSION_MS / 4));
                run.signal(victim, libc::SIGCONT);
            }
            5 | 6 => {
                run.long_stops += 1;
                run.signal(victim, libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(SESSION_MS * 2));
                run.signal(victim, libc::SIGCONT);
            }
            _ => run.kill_all_and_restart(),
        }
        reaper.0 = run.pids();
    }
    // Without a nemesis, run until every child has done enough for its sabotage to show.
    wait_for("the workload to make progress", Duration::from_secs(60), || {
        let events = run.events.lock().unwrap();
        let count = |f: &dyn Fn(&What) -> bool| events.iter().filter(|e| f(&e.what)).count();
        count(&|w| matches!(w, What::Ok { .. })) >= 300 * workload.producers.len()
            && count(&|w| matches!(w, What::CommitOk { .. })) >= 60
            && run.children.iter().all(|c| events.iter().filter(|e| e.process == c.id).count() >= 50)
    });
    std::fs::write(dir.path().join("stop"), b"").unwrap();
    let give_up = Instant::now() + Duration::from_secs(60);
    for child in std::mem::take(&mut run.children) {
        let mut process = child.process;
        let status = loop {
            if let Some(status) = process.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < give_up, "child {} did not stop", child.id);
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success(), "child {} failed: {status}", child.id);
        child.reader.join().unwrap();
    }
    let events = std::mem::take(&mut *run.events.lock().unwrap());
    let history = final_read(&queue, events);
    let stats = Stats {
        kills: run.kills,
        short_stops: run.short_stops,
        long_stops: run.long_stops,
        kill_alls: run.kill_alls,
        ..Stats::of(&history)
    };
    (history, stats)
}

/// Reads every partition from its start to its end, and the group's committed offsets.
fn final_read(queue: &Queue, events: Vec<Event>) -> History {
    let mut consumer = crate::consumer_from_start(queue, TOPIC, PARTITIONS);
    let mut final_log: BTreeMap<u32, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let tp = TopicPartition::new(TOPIC, partition);
        let end = queue.offsets(&tp).unwrap().1;
        consumer.assign(std::slice::from_ref(&tp)).unwrap();
        let log = final_log.entry(partition).or_default();
        while consumer.position(&tp).unwrap() < end {
            for r in consumer.poll(Duration::from_secs(1)).unwrap().iter() {
                log.push((r.offset(), r.value().to_vec()));
            }
        }
    }
    let committed = queue
        .describe_group(GROUP)
        .unwrap()
        .partitions
        .into_iter()
        .filter_map(|lag| Some((lag.partition.partition(), lag.committed?)))
        .collect();
    History { events, final_log, committed }
}

fn seed() -> u64 {
    std::env::var("STREAMLOG_HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1)
}

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

#[test]
fn producers_and_members_under_a_nemesis_show_no_anomaly() {
    let first_seed = seed();
    let rounds = env_number("STREAMLOG_HISTORY_ROUNDS", 1);
    let ops = env_number("STREAMLOG_HISTORY_OPS", 10);
    let mut total = Stats::default();
    for round in 0..rounds {
        // Seeds stay odd (xorshift needs a non-zero state) and distinct.
        let seed = first_seed.wrapping_add(2 * u64::from(round)) | 1;
        println!("history round {round}: seed {seed} (STREAMLOG_HISTORY_SEED repeats it), {ops} nemesis operations");
        let workload = Workload {
            producers: vec![("buffered", Sabotage::Honest), ("sync", Sabotage::Honest)],
            members: vec![Sabotage::Honest; 3],
            nemesis_ops: ops,
            seed,
        };
        let (history, stats) = run(&workload);
        let anomalies = checker::check(&history);
        assert!(anomalies.is_empty(), "seed {seed}: {}", checker::describe(&anomalies));
        assert!(
            stats.sends_acknowledged > 0 && stats.deliveries > 0 && stats.commits > 0,
            "seed {seed}: nothing happened: {stats:?}"
        );
        total.events += stats.events;
        total.sends_acknowledged += stats.sends_acknowledged;
        total.sends_failed += stats.sends_failed;
        total.deliveries += stats.deliveries;
        total.commits += stats.commits;
        total.commits_refused += stats.commits_refused;
        total.records_in_log += stats.records_in_log;
        total.kills += stats.kills;
        total.short_stops += stats.short_stops;
        total.long_stops += stats.long_stops;
        total.kill_alls += stats.kill_alls;
    }
    println!("history: {rounds} rounds of {ops} nemesis operations, no anomaly: {total:?}");
}

/// Runs a nemesis-free workload with one lying child and checks the checker names exactly
/// `expected`.
fn sabotaged(producer: Sabotage, member: Sabotage, expected: Kind) {
    let workload =
        Workload { producers: vec![("buffered", producer)], members: vec![member, Sabotage::Honest], nemesis_ops: 0, seed: 1 };
    let (history, _) = run(&workload);
    let anomalies = checker::check(&history);
    assert_eq!(
        checker::kinds(&anomalies),
        BTreeSet::from([expected]),
        "{producer:?}/{member:?}: {}",
        checker::describe(&anomalies)
    );
}

#[test]
fn the_checker_catches_an_acknowledgement_for_a_send_never_made_as_lost() {
    sabotaged(Sabotage::AckUnsent, Sabotage::Honest, Kind::Lost);
}

#[test]
fn the_checker_catches_a_record_sent_twice_as_duplicated() {
    sabotaged(Sabotage::SendTwice, Sabotage::Honest, Kind::Duplicated);
}

#[test]
fn the_checker_catches_a_record_nobody_sent_as_phantom() {
    sabotaged(Sabotage::SendForeign, Sabotage::Honest, Kind::Phantom);
}

#[test]
fn the_checker_catches_a_corrupt_record_as_garbage() {
    sabotaged(Sabotage::SendCorrupt, Sabotage::Honest, Kind::Garbage);
}

#[test]
fn the_checker_catches_a_wrong_acknowledged_offset() {
    sabotaged(Sabotage::WrongOffset, Sabotage::Honest, Kind::InconsistentOffsets);
}

#[test]
fn the_checker_catches_sends_acknowledged_out_of_order() {
    sabotaged(Sabotage::Reorder, Sabotage::Honest, Kind::NonMonotonicSend);
}

#[test]
fn the_checker_catches_a_delivery_left_out_as_a_poll_skip() {
    sabotaged(Sabotage::Honest, Sabotage::DropDelivery, Kind::PollSkip);
}

#[test]
fn the_checker_catches_a_skipped_offset_as_a_poll_skip() {
    sabotaged(Sabotage::Honest, Sabotage::SeekSkip, Kind::PollSkip);
}

#[test]
fn the_checker_catches_a_member_going_back_as_a_non_monotonic_poll() {
    sabotaged(Sabotage::Honest, Sabotage::Rewind, Kind::NonMonotonicPoll);
}

#[test]
fn the_checker_catches_a_delivery_with_other_bytes_as_garbage() {
    sabotaged(Sabotage::Honest, Sabotage::AlterDelivery, Kind::Garbage);
}

#[test]
fn the_checker_catches_a_commit_of_records_never_delivered() {
    sabotaged(Sabotage::Honest, Sabotage::CommitAhead, Kind::CommitUndelivered);
}

#[test]
fn the_checker_catches_a_commit_beyond_the_end() {
    sabotaged(Sabotage::Honest, Sabotage::CommitBeyondEnd, Kind::CommitBeyondEnd);
}

#[test]
fn the_checker_catches_a_member_reading_after_revocation_as_two_live_owners() {
    sabotaged(Sabotage::Honest, Sabotage::Zombie, Kind::TwoLiveOwners);
}

/// The roles of this module's child processes.
pub(crate) fn child(role: &str, args: &[String]) {
    match role {
        "hist-producer" => producer(args),
        "hist-member" => member(args),
        other => panic!("unknown child role {other}"),
    }
}

/// Prints one event line with the monotonic clock.
fn emit(text: std::fmt::Arguments<'_>) {
    println!("{} {text}", monotonic_ns());
}

fn stopped(dir: &Path) -> bool {
    dir.join("stop").exists()
}

/// `hist-producer DIR ID DURABILITY SABOTAGE`: sends `checker::encode(ID, seq)` for seq 0, 1, ...
/// to random partitions, reporting each send before (`invoke`) and after (`ok`, `fail`), until
/// DIR/stop appears. Every 40th send is where SABOTAGE lies.
fn producer(args: &[String]) {
    let [dir, id, durability, sabotage] = args else { panic!("bad arguments {args:?}") };
    let dir = Path::new(dir);
    let id: u32 = id.parse().unwrap();
    let sabotage = Sabotage::parse(sabotage);
    let durability = if durability == "sync" { Durability::Sync } else { Durability::Buffered };
    let queue = Queue::open(dir).unwrap();
    let producer = queue.producer_with(ProducerConfig::new().durability(durability));
    let send = |value: &[u8], partition: u32| producer.send(TOPIC, Record::new(value).partition(partition));
    let mut rng = Rng((u64::from(id) * 0x9e37_79b9_7f4a_7c15) | 1);
    let mut seq = 0u64;
    while !stopped(dir) {
        let partition = rng.below(u64::from(PARTITIONS)) as u32;
        let lie = seq % 40 == 39;
        match sabotage {
            Sabotage::AckUnsent if lie => {
                emit(format_args!("invoke {id} {seq} {partition}"));
                emit(format_args!("ok {id} {seq} {partition} 0"));
                seq += 1;
                continue;
            }
            Sabotage::SendForeign if lie => drop(send(&checker::encode(id + 1_000_000, seq), partition).unwrap()),
            Sabotage::SendCorrupt if lie => {
                let mut value = checker::encode(id, seq);
                value[3] ^= 0x40;
                send(&value, partition).unwrap();
            }
            Sabotage::Reorder if lie => {
                emit(format_args!("invoke {id} {seq} {partition}"));
                emit(format_args!("invoke {id} {} {partition}", seq + 1));
                let second = send(&checker::encode(id, seq + 1), partition).unwrap();
                let first = send(&checker::encode(id, seq), partition).unwrap();
                emit(format_args!("ok {id} {seq} {partition} {}", first.offset()));
                emit(format_args!("ok {id} {} {partition} {}", seq + 1, second.offset()));
                seq += 2;
                continue;
            }
            _ => {}
        }
        let value = checker::encode(id, seq);
        emit(format_args!("invoke {id} {seq} {partition}"));
        match send(&value, partition) {
            Ok(meta) => {
                if sabotage == Sabotage::SendTwice && lie {
                    send(&value, partition).unwrap();
                }
                let offset = meta.offset() + u64::from(sabotage == Sabotage::WrongOffset && lie);
                emit(format_args!("ok {id} {seq} {} {offset}", meta.partition()));
            }
            Err(e) => emit(format_args!("fail {id} {seq} {e}")),
        }
        seq += 1;
        // A steady rate rather than flat out: the history stays small enough to check.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Where a member's partitions stand, shared with its rebalance listener.
#[derive(Default)]
struct Positions {
    /// The next offset this member expects of each partition it owns (or, as a zombie, owned).
    next: HashMap<u32, u64>,
    /// Partitions a zombie gave up but keeps reading.
    zombie: BTreeSet<u32>,
}

/// Reports assignment changes; a zombie hides revocations and losses.
struct Listener {
    positions: Arc<Mutex<Positions>>,
    zombie: bool,
}

fn partition_list(partitions: &[TopicPartition]) -> String {
    partitions.iter().map(|p| p.partition().to_string()).collect::<Vec<_>>().join(",")
}

impl Listener {
    fn gone(&mut self, kind: &str, partitions: &[TopicPartition]) {
        if self.zombie {
            self.positions.lock().unwrap().zombie.extend(partitions.iter().map(TopicPartition::partition));
        } else {
            emit(format_args!("{kind} {}", partition_list(partitions)));
        }
    }
}

impl RebalanceListener for Listener {
    fn on_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let mut positions = self.positions.lock().unwrap();
        let mut list = Vec::new();
        for tp in partitions {
            let position = consumer.position(tp).unwrap();
            positions.next.insert(tp.partition(), position);
            positions.zombie.remove(&tp.partition());
            list.push(format!("{}:{position}", tp.partition()));
        }
        emit(format_args!("assigned {}", list.join(",")));
    }

    fn on_revoked(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.gone("revoked", partitions);
    }

    fn on_lost(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.gone("lost", partitions);
    }
}

/// `hist-member DIR ID SABOTAGE`: a member of group `hg` on topic `h` that reports every poll,
/// every record it is given (`deliver P OFFSET CRC`), and every commit (Sync) of the partitions
/// a poll gave records of, until DIR/stop appears; then it closes.
fn member(args: &[String]) {
    let [dir, id, sabotage] = args else { panic!("bad arguments {args:?}") };
    let dir = Path::new(dir);
    let sabotage = Sabotage::parse(sabotage);
    let queue = Queue::open(dir).unwrap();
    let config = ConsumerConfig::new(GROUP)
        .client_id(id)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .max_poll_records(50)
        .commit_durability(Durability::Sync)
        .session_timeout(Duration::from_millis(SESSION_MS));
    let mut consumer = queue.consumer(config).unwrap();
    let positions = Arc::new(Mutex::new(Positions::default()));
    let listener = Listener { positions: Arc::clone(&positions), zombie: sabotage == Sabotage::Zombie };
    consumer.subscribe_with(&[TOPIC], listener).unwrap();
    // A zombie reads the partitions it gave up with a second consumer, outside the group.
    let mut side = queue.consumer(ConsumerConfig::new("zombie-side").auto_commit(None).max_poll_records(1)).unwrap();
    let (mut polls, mut delivered, mut commits, mut lies) = (0u64, 0u64, 0u64, 0u64);
    let processing = Duration::from_millis(if sabotage == Sabotage::Honest { 5 } else { 30 });
    while !stopped(dir) {
        emit(format_args!("poll"));
        let records = consumer.poll(Duration::from_millis(50)).unwrap();
        polls += 1;
        let mut given: Vec<(u32, u64, u32)> =
            records.iter().map(|r| (r.partition(), r.offset(), crc32fast::hash(r.value()))).collect();
        // The first record of a partition the poll gave more of: the next one shows the gap.
        if sabotage == Sabotage::DropDelivery
            && lies < polls / 5
            && let Some(first) = (0..given.len()).find(|&i| given.iter().filter(|g| g.0 == given[i].0).count() >= 2)
        {
            lies += 1;
            given.remove(first);
        }
        for (partition, offset, mut crc) in given {
            delivered += 1;
            if sabotage == Sabotage::AlterDelivery && delivered % 20 == 0 {
                crc ^= 1;
            }
            emit(format_args!("deliver {partition} {offset} {crc}"));
        }
        let mut by_partition: BTreeMap<u32, u64> = BTreeMap::new();
        for r in records.iter() {
            by_partition.insert(r.partition(), r.offset() + 1);
        }
        positions.lock().unwrap().next.extend(by_partition.iter().map(|(&p, &o)| (p, o)));
        let zombie: Vec<u32> = positions.lock().unwrap().zombie.iter().copied().collect();
        for partition in zombie {
            let next = positions.lock().unwrap().next[&partition];
            let tp = TopicPartition::new(TOPIC, partition);
            side.assign(std::slice::from_ref(&tp)).unwrap();
            side.seek(&tp, next).unwrap();
            emit(format_args!("poll"));
            if let Some(r) = side.poll(Duration::from_millis(5)).unwrap().iter().next() {
                emit(format_args!("deliver {partition} {} {}", r.offset(), crc32fast::hash(r.value())));
                positions.lock().unwrap().next.insert(partition, r.offset() + 1);
            }
        }
        if by_partition.is_empty() {
            continue;
        }
        // Processing takes a while, so that records pile up: polls then return several of a
        // partition, and commits lag the end (a liar needs both).
        std::thread::sleep(processing);
        let mut offsets: Vec<(TopicPartition, u64)> = by_partition
            .iter()
            .map(|(&p, _)| TopicPartition::new(TOPIC, p))
            .map(|tp| (tp.clone(), consumer.position(&tp).unwrap()))
            .collect();
        commits += 1;
        let lie = commits % 5 == 0;
        // Only up to the end: beyond it is another anomaly.
        let end = queue.offsets(&offsets[0].0).unwrap().1;
        if sabotage == Sabotage::CommitAhead && lies < commits / 5 && end > offsets[0].1 {
            lies += 1;
            offsets[0].1 = (offsets[0].1 + 3).min(end);
        }
        emit(format_args!("commit"));
        match consumer.commit_offsets(&offsets) {
            Ok(()) => {
                for (tp, offset) in &offsets {
                    emit(format_args!("commit-ok {} {offset}", tp.partition()));
                }
            }
            Err(e) => emit(format_args!("commit-fail {e}")),
        }
        if sabotage == Sabotage::CommitBeyondEnd && lie {
            emit(format_args!("commit-ok {} {}", offsets[0].0.partition(), end + 1000));
        }
        let (tp, position) = offsets[0].clone();
        // Past a record that is there: a seek past the end would reset to the earliest offset.
        if sabotage == Sabotage::SeekSkip && lies < polls / 5 && queue.offsets(&tp).unwrap().1 > position + 1 {
            lies += 1;
            consumer.seek(&tp, position + 1).unwrap();
        }
        if sabotage == Sabotage::Rewind && polls % 5 == 0 && position >= 2 {
            consumer.seek(&tp, position - 2).unwrap();
        }
    }
    consumer.close().unwrap();
}
