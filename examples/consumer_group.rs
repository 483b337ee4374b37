//! A work queue: three workers in consumer group "workers" share 6,000 jobs in the six partitions
//! of topic "jobs". Halfway through, one worker is killed; its partitions move to the two
//! survivors, which resume from its last commit. Every job is processed at least once, and the
//! only jobs processed twice are those the killed worker processed after its last commit.
//!
//! ```text
//! cargo run --release --example consumer_group               # workers are child processes; one gets SIGKILL
//! cargo run --release --example consumer_group -- --threads  # workers are threads; one stops without committing
//! ```
//!
//! Each worker reports which partitions it owns whenever that changes (a `RebalanceListener`),
//! the jobs of each batch it processed, and each commit: a process as lines on its stdout, a
//! thread as the same lines over a channel. A thread cannot be killed, so the "killed" thread
//! stops polling and drops its consumer without committing its last batch (dropping leaves the
//! group at once, where a killed process is noticed within about 100 ms). The parent waits until
//! the group has no lag on any partition, then stops the workers and prints what happened. A
//! worker process is started as `consumer_group worker DIR NAME` and stops when its stdin closes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use streamlog::{
    AssignmentStrategy, Consumer, ConsumerConfig, Error, OffsetReset, Queue, RebalanceListener, Record, TopicPartition,
};

const TOPIC: &str = "jobs";
const GROUP: &str = "workers";
const PARTITIONS: u32 = 6;
const JOBS: usize = 6000;
const WORKERS: usize = 3;
/// The worker killed halfway: w2.
const VICTIM: usize = 1;
/// How long each job "takes", so that the run lasts a few seconds.
const JOB_TIME: Duration = Duration::from_millis(1);

/// Where a worker's report lines go: its stdout, or the parent's channel.
type Report = Arc<dyn Fn(String) + Send + Sync>;

/// Reports every change of the owned partitions, and commits before partitions move on (a worker
/// processes each batch before it polls again, so its positions count as done).
struct Listener {
    owned: BTreeSet<u32>,
    report: Report,
    crashed: Arc<AtomicBool>,
}

impl RebalanceListener for Listener {
    fn on_assigned(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.owned.extend(partitions.iter().map(TopicPartition::partition));
        (self.report)(format!("owns {:?}", self.owned));
    }

    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        if !self.crashed.load(Relaxed) && consumer.commit().is_ok() {
            (self.report)("committed".into());
        }
        self.on_lost(consumer, partitions);
    }

    fn on_lost(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.owned.retain(|p| !partitions.iter().any(|tp| tp.partition() == *p));
        (self.report)(format!("owns {:?}", self.owned));
    }
}

/// One worker: polls a batch, processes it, reports it and commits it, until told to stop.
fn work(queue: Queue, name: &str, report: Report, stop: &AtomicBool, crash: Arc<AtomicBool>) -> Result<(), Error> {
    let config = ConsumerConfig::new(GROUP)
        .client_id(name)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .assignment_strategy(AssignmentStrategy::CooperativeSticky)
        .max_poll_records(20);
    let mut consumer = queue.consumer(config)?;
    consumer.subscribe_with(&[TOPIC], Listener { owned: BTreeSet::new(), report: report.clone(), crashed: crash.clone() })?;
    while !stop.load(Relaxed) {
        let records = consumer.poll(Duration::from_millis(100))?;
        let jobs: Vec<String> = records.iter().map(|r| String::from_utf8_lossy(r.value()).into_owned()).collect();
        if jobs.is_empty() {
            continue;
        }
        std::thread::sleep(JOB_TIME * jobs.len() as u32);
        report(format!("done {}", jobs.join(" ")));
        if crash.load(Relaxed) {
            return Ok(()); // "killed": no commit, and the listener stays silent while the drop leaves the group
        }
        match consumer.commit() {
            Ok(()) => report("committed".into()),
            // A rebalance has begun: the next poll catches up, and the next commit covers this batch too.
            Err(Error::CommitFailed { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    consumer.close()
}

/// A worker as the parent sees it.
enum Worker {
    Process(Child),
    Thread { stop: Arc<AtomicBool>, crash: Arc<AtomicBool>, thread: JoinHandle<Result<(), Error>> },
}

impl Worker {
    fn start(queue: &Queue, index: usize, threads: bool, lines: &mpsc::Sender<(usize, String)>) -> std::io::Result<Worker> {
        let (name, lines) = (format!("w{}", index + 1), lines.clone());
        if threads {
            let (stop, crash) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
            let (queue, flags) = (queue.clone(), (stop.clone(), crash.clone()));
            let report: Report = Arc::new(move |line| drop(lines.send((index, line))));
            let thread = std::thread::spawn(move || work(queue, &name, report, &flags.0, flags.1));
            return Ok(Worker::Thread { stop, crash, thread });
        }
        let mut child = Command::new(std::env::current_exe()?)
            .args(["worker", &queue.path().display().to_string(), &name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        std::thread::spawn(move || {
            let mut line = String::new();
            while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                // A line cut short by the kill has no newline and does not count.
                if let Some(whole) = line.strip_suffix('\n') {
                    let _ = lines.send((index, whole.to_owned()));
                }
                line.clear();
            }
        });
        Ok(Worker::Process(child))
    }

    /// Tells the worker to stop and waits for it; a worker that was killed may have failed.
    fn stop(self, killed: bool) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Worker::Process(mut child) => {
                drop(child.stdin.take());
                let status = child.wait()?;
                if status.success() || killed { Ok(()) } else { Err(format!("a worker process failed: {status}").into()) }
            }
            Worker::Thread { stop, thread, .. } => {
                stop.store(true, Relaxed);
                Ok(thread.join().map_err(|_| "a worker thread panicked")??)
            }
        }
    }
}

/// What the workers reported: each one's processed jobs, how many of those it has committed,
/// and whether it owns partitions now.
#[derive(Default)]
struct Tally {
    done: [Vec<usize>; WORKERS],
    committed: [usize; WORKERS],
    owns: [bool; WORKERS],
}

impl Tally {
    /// Counts one line from `worker`; returns it for the timeline if it says what the worker owns.
    fn add(&mut self, (worker, line): (usize, String)) -> Option<String> {
        let (kind, rest) = line.split_once(' ').unwrap_or((&line, ""));
        match kind {
            "owns" => {
                self.owns[worker] = rest != "{}";
                return Some(format!("w{} owns partitions {rest}", worker + 1));
            }
            "done" => self.done[worker].extend(rest.split(' ').map(|job| job.parse::<usize>().expect("a job number"))),
            "committed" => self.committed[worker] = self.done[worker].len(),
            _ => {}
        }
        None
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, dir, name] = &args[..]
        && role == "worker"
    {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_on_eof = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop_on_eof.store(true, Relaxed);
        });
        return Ok(work(Queue::open(dir)?, name, Arc::new(|line| println!("{line}")), &stop, Arc::default())?);
    }
    let threads = args.iter().any(|arg| arg == "--threads");
    let dir = std::env::temp_dir().join(format!("streamlog-consumer-group-{}", std::process::id()));
    let queue = Queue::open(&dir)?;
    let outcome = run(&queue, threads);
    drop(queue);
    std::fs::remove_dir_all(&dir)?;
    outcome
}

fn run(queue: &Queue, threads: bool) -> Result<(), Box<dyn std::error::Error>> {
    queue.create_topic(TOPIC, PARTITIONS)?;
    let jobs: Vec<String> = (0..JOBS).map(|job| job.to_string()).collect();
    queue.producer().send_batch(TOPIC, jobs.iter().map(|job| Record::new(job.as_bytes())))?;
    let kind = if threads { "threads" } else { "processes" };
    println!("{JOBS} jobs in {PARTITIONS} partitions of {TOPIC:?}; {WORKERS} worker {kind} in group {GROUP:?}\n");

    let (sender, lines) = mpsc::channel();
    let mut workers = (0..WORKERS).map(|i| Worker::start(queue, i, threads, &sender)).collect::<Result<Vec<_>, _>>()?;
    drop(sender);
    let started = Instant::now();
    let stamp = |what: String| println!("{:>7.3} s  {what}", started.elapsed().as_secs_f64());
    let (mut tally, mut killed) = (Tally::default(), false);
    loop {
        match lines.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => tally.add(line).map_or((), stamp),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("every worker stopped before the work was done".into()),
        }
        if !killed && tally.done.iter().map(Vec::len).sum::<usize>() >= JOBS / 2 && tally.owns[VICTIM] {
            match &mut workers[VICTIM] {
                Worker::Process(child) => child.kill()?,
                Worker::Thread { crash, .. } => crash.store(true, Relaxed),
            }
            killed = true;
            let how = if threads { "stops polling and drops its consumer, last batch not committed" } else { "SIGKILL" };
            stamp(format!("w{} killed ({how})", VICTIM + 1));
        }
        let group = queue.describe_group(GROUP)?;
        if killed && group.partitions.len() == PARTITIONS as usize && group.partitions.iter().all(|p| p.lag == Some(0)) {
            stamp("no lag on any partition: stopping the workers".into());
            break;
        }
    }
    for (i, worker) in workers.into_iter().enumerate() {
        worker.stop(i == VICTIM)?;
    }
    lines.iter().for_each(|line| drop(tally.add(line))); // lines still in the pipes

    let mut times_done = vec![0; JOBS];
    println!();
    for (worker, done) in tally.done.iter().enumerate() {
        println!("w{} processed {} jobs", worker + 1, done.len());
        done.iter().for_each(|&job| times_done[job] += 1);
    }
    let twice: BTreeSet<usize> = (0..JOBS).filter(|&job| times_done[job] > 1).collect();
    let after_last_commit: BTreeSet<usize> = tally.done[VICTIM][tally.committed[VICTIM]..].iter().copied().collect();
    let explained = twice.intersection(&after_last_commit).count();
    match (twice.len(), explained) {
        (0, _) => println!("no job was processed twice"),
        (n, e) if e == n => println!("{n} jobs were processed twice, all first by w{} after its last commit", VICTIM + 1),
        (n, e) => println!("{n} jobs were processed twice, only {e} of them first by w{} after its last commit", VICTIM + 1),
    }
    let missing = times_done.iter().filter(|&&times| times == 0).count();
    if missing > 0 {
        return Err(format!("{missing} of the {JOBS} jobs were never processed").into());
    }
    println!("every one of the {JOBS} jobs was processed at least once");
    Ok(())
}
