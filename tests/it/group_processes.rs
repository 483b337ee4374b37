//! Consumer groups across real processes: a member killed with SIGKILL and a member paused with
//! SIGSTOP past its session timeout. Each member journals every assignment change, record and
//! commit with the machine-wide monotonic clock, and the test checks the journals.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use streamlog::{Queue, Record, TopicPartition};

use crate::TempDir;
use crate::child::{self, Reaper, monotonic_ns};

/// One journal line: when, which event, and its arguments.
struct Event {
    ns: u64,
    kind: String,
    args: Vec<String>,
}

fn journal(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let ns = parts.next()?.parse().ok()?;
            let kind = parts.next()?.to_owned();
            Some(Event { ns, kind, args: parts.map(str::to_owned).collect() })
        })
        .collect()
}

fn partitions(event: &Event) -> Vec<u32> {
    event
        .args
        .first()
        .map(|list| list.split(',').filter(|s| !s.is_empty()).map(|p| p.parse().unwrap()).collect())
        .unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < give_up, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Member {
    log: PathBuf,
    process: Child,
}

fn spawn_member(dir: &Path, name: &str, session_ms: u64, pause_ms: u64, stop_after: usize) -> Member {
    let log = dir.join(format!("{name}.journal"));
    let args = [
        dir.display().to_string(),
        "workers".into(),
        "jobs".into(),
        log.display().to_string(),
        session_ms.to_string(),
        pause_ms.to_string(),
        stop_after.to_string(),
    ];
    Member { log, process: child::spawn("member", &args) }
}

fn produce(queue: &Queue, partitions: u32, per_partition: u64) {
    queue.create_topic("jobs", partitions).unwrap();
    let producer = queue.producer();
    for i in 0..per_partition {
        for p in 0..partitions {
            producer.send("jobs", Record::new(format!("job {p}/{i}").as_bytes()).partition(p)).unwrap();
        }
    }
}

fn group_caught_up(queue: &Queue) -> bool {
    queue.describe_group("workers").is_ok_and(|g| !g.partitions.is_empty() && g.partitions.iter().all(|p| p.lag == Some(0)))
}

/// Ownership intervals `[from, to)` per partition and member, from the journals. An interval
/// still open at the end of a journal ends at `ends[member]`.
fn ownership(journals: &[Vec<Event>], ends: &[u64]) -> BTreeMap<u32, Vec<(usize, u64, u64)>> {
    let mut intervals: BTreeMap<u32, Vec<(usize, u64, u64)>> = BTreeMap::new();
    for (member, events) in journals.iter().enumerate() {
        let mut open: BTreeMap<u32, u64> = BTreeMap::new();
        for event in events {
            match event.kind.as_str() {
                "assigned" => open.extend(partitions(event).into_iter().map(|p| (p, event.ns))),
                "revoked" | "lost" => {
                    for p in partitions(event) {
                        let from = open.remove(&p).expect("revoked or lost a partition it did not own");
                        intervals.entry(p).or_default().push((member, from, event.ns));
                    }
                }
                _ => {}
            }
        }
        for (p, from) in open {
            intervals.entry(p).or_default().push((member, from, ends[member].max(from)));
        }
    }
    intervals
}

fn assert_never_owned_twice(intervals: &BTreeMap<u32, Vec<(usize, u64, u64)>>) {
    for (p, list) in intervals {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                let overlap = a.0 != b.0 && a.1 < b.2 && b.1 < a.2;
                assert!(!overlap, "partition {p} owned by members {} and {} at once: {a:?} {b:?}", a.0, b.0);
            }
        }
    }
}

#[test]
fn a_killed_member_s_partitions_move_and_nothing_is_lost() {
    let dir = TempDir::new("group-kill");
    std::fs::create_dir_all(dir.path()).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    let (partition_count, per_partition) = (6u32, 400u64);
    produce(&queue, partition_count, per_partition);
    let mut members: Vec<Member> = (0..3).map(|i| spawn_member(dir.path(), &format!("m{i}"), 10_000, 20, 0)).collect();
    let _reaper = Reaper(members.iter().map(|m| m.process.id()).collect());
    // Kill member 0 once it is well into its share.
    wait_for("the victim to read", Duration::from_secs(60), || {
        journal(&members[0].log).iter().filter(|e| e.kind == "read").count() >= 100
    });
    members[0].process.kill().unwrap();
    let killed_at = monotonic_ns();
    members[0].process.wait().unwrap();
    wait_for("the group to consume everything", Duration::from_secs(120), || group_caught_up(&queue));
    std::fs::write(dir.path().join("stop"), b"").unwrap();
    for member in &mut members[1..] {
        assert!(member.process.wait().unwrap().success());
    }

    let journals: Vec<Vec<Event>> = members.iter().map(|m| journal(&m.log)).collect();
    let mut reads: BTreeMap<(u32, u64), Vec<usize>> = BTreeMap::new();
    for (member, events) in journals.iter().enumerate() {
        for e in events.iter().filter(|e| e.kind == "read") {
            reads.entry((e.args[0].parse().unwrap(), e.args[1].parse().unwrap())).or_default().push(member);
        }
    }
    for p in 0..partition_count {
        for offset in 0..per_partition {
            assert!(reads.contains_key(&(p, offset)), "record {p}/{offset} was never consumed");
        }
    }
    // Duplicates only where the victim read after its last commit of that partition.
    let mut victim_committed: BTreeMap<u32, u64> = BTreeMap::new();
    for e in journals[0].iter().filter(|e| e.kind == "committed") {
        victim_committed.insert(e.args[0].parse().unwrap(), e.args[1].parse().unwrap());
    }
    for ((p, offset), readers) in &reads {
        if readers.len() > 1 {
            assert!(readers.contains(&0), "{p}/{offset} read twice by survivors {readers:?}");
            let committed = victim_committed.get(p).copied().unwrap_or(0);
            assert!(*offset >= committed, "{p}/{offset} read again although the victim committed {committed}");
        }
    }
    // The survivors took the victim's partitions within the liveness bound.
    let intervals = ownership(&journals, &[killed_at, u64::MAX, u64::MAX]);
    let held_at_kill: BTreeSet<u32> =
        intervals.iter().filter(|(_, list)| list.iter().any(|&(m, _, to)| m == 0 && to == killed_at)).map(|(&p, _)| p).collect();
    assert!(!held_at_kill.is_empty());
    for p in &held_at_kill {
        let taken = intervals[p].iter().filter(|&&(m, from, _)| m != 0 && from >= killed_at).map(|&(_, from, _)| from).min();
        let taken = taken.unwrap_or_else(|| panic!("partition {p} was never taken over"));
        let delay = Duration::from_nanos(taken - killed_at);
        assert!(delay < Duration::from_secs(1), "partition {p} taken over only after {delay:?}");
    }
    assert_never_owned_twice(&intervals);
}

#[test]
fn a_paused_member_is_fenced_and_told_it_lost_its_partitions() {
    let dir = TempDir::new("group-stop");
    std::fs::create_dir_all(dir.path()).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    produce(&queue, 4, 500);
    let session = Duration::from_millis(1000);
    let mut steady = spawn_member(dir.path(), "steady", 10_000, 20, 0);
    let mut reaper = Reaper(vec![steady.process.id()]);
    wait_for("the first member to be assigned", Duration::from_secs(60), || {
        journal(&steady.log).iter().any(|e| e.kind == "assigned")
    });
    let mut paused = spawn_member(dir.path(), "paused", session.as_millis() as u64, 0, 20);
    reaper.0.push(paused.process.id());
    wait_for("the second member to stop itself", Duration::from_secs(60), || {
        journal(&paused.log).iter().any(|e| e.kind == "stopping")
    });
    let stopped_at = journal(&paused.log).iter().find(|e| e.kind == "stopping").unwrap().ns;
    // The steady member takes every partition once the session times out.
    wait_for("the paused member's partitions to move", Duration::from_secs(30), || {
        let intervals = ownership(&[journal(&steady.log)], &[u64::MAX]);
        intervals.len() == 4 && intervals.values().all(|list| list.last().unwrap().2 == u64::MAX)
    });
    let taken_at = journal(&steady.log).iter().rfind(|e| e.kind == "assigned").unwrap().ns;
    let delay = Duration::from_nanos(taken_at.saturating_sub(stopped_at));
    assert!(delay < session + Duration::from_secs(1), "took over after {delay:?}");
    // Not before the session timed out: until then the paused member still owned its share.
    assert!(delay + Duration::from_millis(150) >= session, "took over after only {delay:?}");

    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(paused.process.id() as libc::pid_t, libc::SIGCONT) }, 0);
    wait_for("the resumed member to rejoin", Duration::from_secs(30), || {
        let events = journal(&paused.log);
        let lost = events.iter().position(|e| e.kind == "lost");
        lost.is_some_and(|lost| events[lost..].iter().any(|e| e.kind == "assigned"))
    });
    wait_for("the group to consume everything", Duration::from_secs(120), || group_caught_up(&queue));
    std::fs::write(dir.path().join("stop"), b"").unwrap();
    assert!(steady.process.wait().unwrap().success());
    assert!(paused.process.wait().unwrap().success());

    let journals = [journal(&steady.log), journal(&paused.log)];
    let after_resume: Vec<&Event> = journals[1].iter().skip_while(|e| e.kind != "resumed").skip(1).collect();
    assert!(after_resume[0].kind == "commit-refused", "the zombie's commit went through: {}", after_resume[0].kind);
    let lost = after_resume.iter().position(|e| e.kind == "lost").expect("on_lost");
    assert!(after_resume[..lost].iter().all(|e| e.kind != "read"), "read records after being expelled, before on_lost");
    // Ownership: the paused member's hold ends when it stopped (it was not alive after that).
    let mut paused_events: Vec<Event> = Vec::new();
    for e in journal(&paused.log) {
        if e.kind == "lost" {
            paused_events.push(Event { ns: stopped_at, kind: e.kind, args: e.args });
        } else {
            paused_events.push(e);
        }
    }
    let intervals = ownership(&[journal(&steady.log), paused_events], &[u64::MAX, u64::MAX]);
    assert_never_owned_twice(&intervals);
    let committed: Vec<Option<u64>> = (0..4)
        .map(|p| {
            queue
                .describe_group("workers")
                .unwrap()
                .partitions
                .iter()
                .find(|l| l.partition == TopicPartition::new("jobs", p))
                .unwrap()
                .committed
        })
        .collect();
    assert_eq!(committed, vec![Some(500); 4]);
}

/// Counts `on_lost` calls.
struct LostCounter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl streamlog::RebalanceListener for LostCounter {
    fn on_lost(&mut self, _: &mut streamlog::Consumer, _: &[TopicPartition]) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn members_killed_or_stopped_at_random_moments_never_wedge_the_group() {
    let dir = TempDir::new("group-churn");
    std::fs::create_dir_all(dir.path()).unwrap();
    let queue = Queue::open(dir.path()).unwrap();
    produce(&queue, 4, 10);
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let config = streamlog::ConsumerConfig::new("workers").auto_commit(None).session_timeout(Duration::from_millis(1500));
    let mut steady = queue.consumer(config).unwrap();
    steady.subscribe_with(&["jobs"], LostCounter(std::sync::Arc::clone(&lost))).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    for round in 0..16 {
        let mut churn = child::spawn("churn", &[dir.path().display().to_string(), "700".into()]);
        let _reaper = Reaper(vec![churn.id()]);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(20 + rng % 80);
        let started = Instant::now();
        while started.elapsed() < run_for {
            steady.poll(Duration::from_millis(2)).unwrap();
        }
        if round % 2 == 1 {
            // Stopped, possibly holding the group lock, for longer than either session timeout:
            // the steady member must keep its heartbeat going meanwhile.
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(churn.id() as libc::pid_t, libc::SIGSTOP) };
            let stopped = Instant::now();
            while stopped.elapsed() < Duration::from_millis(2000) {
                steady.poll(Duration::from_millis(10)).unwrap();
            }
            // SAFETY: as above.
            unsafe { libc::kill(churn.id() as libc::pid_t, libc::SIGCONT) };
            std::thread::sleep(Duration::from_millis(50));
        }
        churn.kill().unwrap();
        churn.wait().unwrap();
        // The group recovers whatever the child held: the steady member gets every partition
        // back and can commit.
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            steady.poll(Duration::from_millis(10)).unwrap();
            if steady.assignment().len() == 4 && steady.commit().is_ok() {
                break;
            }
            assert!(Instant::now() < give_up, "round {round}: the group is wedged: {:?}", queue.describe_group("workers"));
        }
    }
    assert_eq!(lost.load(std::sync::atomic::Ordering::Relaxed), 0, "the steady member was expelled");
}
