//! A work queue: three workers in consumer group "workers" share the 6,000 jobs in the six
//! partitions of topic "jobs". Halfway through, one worker is killed; its partitions move to the
//! two survivors, which resume from its last commit. So every job is processed at least once,
//! and the only jobs processed twice are those the killed worker processed after its last commit.
//!
//! ```text
//! cargo run --release --example consumer_group               # workers are child processes; one gets SIGKILL
//! cargo run --release --example consumer_group -- --threads  # workers are threads; one stops without committing
//! ```
//!
//! Each worker reports which partitions it owns whenever that changes (a `RebalanceListener`),
//! the jobs of each batch it processed, and each commit: on stdout, which the parent reads, or
//! over a channel for a thread. A thread cannot be killed, so the "killed" thread stops polling
//! and drops its consumer without committing its last batch (dropping leaves the group at once;
//! a killed process is noticed within about 100 ms). The parent waits until the group has no
//! lag on any partition, then stops the workers and prints the timeline and the counts. A worker
//! process is started as `consumer_group worker DIR NAME` and stops when its stdin closes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
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
/// The worker killed halfway (w2).
const VICTIM: usize = 1;
/// How long each job "takes", so that the run lasts a few seconds.
const JOB_TIME: Duration = Duration::from_millis(1);

/// What a worker reports: the partitions it owns now, the jobs it just processed, a commit.
enum Event {
    Owns(Vec<u32>),
    Done(Vec<usize>),
    Committed,
}

impl Event {
    fn to_line(&self) -> String {
        let join = |items: Vec<String>| items.join(" ");
        match self {
            Event::Owns(partitions) => format!("owns {}", join(partitions.iter().map(u32::to_string).collect())),
            Event::Done(jobs) => format!("done {}", join(jobs.iter().map(usize::to_string).collect())),
            Event::Committed => "committed".into(),
        }
    }

    fn parse(line: &str) -> Option<Event> {
        let mut words = line.split_whitespace();
        match words.next()? {
            "owns" => Some(Event::Owns(words.map(|w| w.parse().ok()).collect::<Option<_>>()?)),
            "done" => Some(Event::Done(words.map(|w| w.parse().ok()).collect::<Option<_>>()?)),
            "committed" => Some(Event::Committed),
            _ => None,
        }
    }
}

/// Where a worker reports: its stdout (a process) or the parent's channel (a thread).
#[derive(Clone)]
enum Reporter {
    Stdout,
    Channel(usize, Sender<(usize, Event)>),
}

impl Reporter {
    fn report(&self, event: Event) {
        match self {
            Reporter::Stdout => println!("{}", event.to_line()),
            Reporter::Channel(worker, sender) => {
                let _ = sender.send((*worker, event));
            }
        }
    }
}

/// Reports every change of the owned partitions, and commits before a partition moves on
/// (a worker processes each batch before it polls again, so its positions are all done).
struct Listener {
    owned: BTreeSet<u32>,
    reporter: Reporter,
    crashed: Arc<AtomicBool>,
}

impl RebalanceListener for Listener {
    fn on_assigned(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.owned.extend(partitions.iter().map(TopicPartition::partition));
        self.reporter.report(Event::Owns(self.owned.iter().copied().collect()));
    }

    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        if self.crashed.load(Relaxed) {
            return; // the simulated crash: a dead worker neither commits nor reports
        }
        if consumer.commit().is_ok() {
            self.reporter.report(Event::Committed);
        }
        self.on_lost(consumer, partitions);
    }

    fn on_lost(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.owned.remove(&tp.partition());
        }
        self.reporter.report(Event::Owns(self.owned.iter().copied().collect()));
    }
}

/// One worker: polls a batch, processes it, reports it, commits, until told to stop.
fn work(queue: Queue, name: &str, reporter: Reporter, stop: &AtomicBool, crash: Arc<AtomicBool>) -> Result<(), Error> {
    let config = ConsumerConfig::new(GROUP)
        .client_id(name)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .assignment_strategy(AssignmentStrategy::CooperativeSticky)
        .max_poll_records(20);
    let mut consumer = queue.consumer(config)?;
    let listener = Listener { owned: BTreeSet::new(), reporter: reporter.clone(), crashed: Arc::clone(&crash) };
    consumer.subscribe_with(&[TOPIC], listener)?;
    while !stop.load(Relaxed) {
        let records = consumer.poll(Duration::from_millis(100))?;
        let jobs: Vec<usize> =
            records.iter().map(|r| String::from_utf8_lossy(r.value()).parse().expect("a job number")).collect();
        if jobs.is_empty() {
            continue;
        }
        std::thread::sleep(JOB_TIME * jobs.len() as u32);
        reporter.report(Event::Done(jobs));
        if crash.load(Relaxed) {
            return Ok(()); // "killed": the last batch stays uncommitted; dropping the consumer leaves the group
        }
        match consumer.commit() {
            Ok(()) => reporter.report(Event::Committed),
            // A rebalance has begun: the next poll catches up, and the next commit covers this batch.
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
    fn start(queue: &Queue, index: usize, threads: bool, events: &Sender<(usize, Event)>) -> std::io::Result<Worker> {
        let name = format!("w{}", index + 1);
        if threads {
            let (stop, crash) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
            let (queue, reporter, flags) =
                (queue.clone(), Reporter::Channel(index, events.clone()), (stop.clone(), crash.clone()));
            let thread = std::thread::spawn(move || work(queue, &name, reporter, &flags.0, flags.1));
            return Ok(Worker::Thread { stop, crash, thread });
        }
        let mut child = Command::new(std::env::current_exe()?)
            .args(["worker", &queue.path().display().to_string(), &name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (mut stdout, events) = (BufReader::new(child.stdout.take().expect("piped")), events.clone());
        std::thread::spawn(move || {
            let mut line = String::new();
            // A line cut short by the kill has no newline and does not count.
            while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(event) = line.strip_suffix('\n').and_then(Event::parse) {
                    let _ = events.send((index, event));
                }
                line.clear();
            }
        });
        Ok(Worker::Process(child))
    }

    fn kill(&mut self) -> std::io::Result<()> {
        match self {
            Worker::Process(child) => child.kill(),
            Worker::Thread { crash, .. } => {
                crash.store(true, Relaxed);
                Ok(())
            }
        }
    }

    /// Tells the worker to stop and waits for it; `killed` workers are expected to have failed.
    fn stop(self, killed: bool) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Worker::Process(mut child) => {
                drop(child.stdin.take()); // the worker stops when its stdin closes
                let status = child.wait()?;
                if !status.success() && !killed { Err(format!("a worker process failed: {status}").into()) } else { Ok(()) }
            }
            Worker::Thread { stop, thread, .. } => {
                stop.store(true, Relaxed);
                Ok(thread.join().map_err(|_| "a worker thread panicked")??)
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, dir, name] = &args[..]
        && role == "worker"
    {
        let stop = Arc::new(AtomicBool::new(false));
        let stdin_closed = Arc::clone(&stop);
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stdin_closed.store(true, Relaxed);
        });
        return Ok(work(Queue::open(dir)?, name, Reporter::Stdout, &stop, Arc::default())?);
    }
    let threads = args.iter().any(|arg| arg == "--threads");
    let dir = std::env::temp_dir().join(format!("streamlog-consumer-group-{}", std::process::id()));
    let outcome = run(&dir, threads);
    std::fs::remove_dir_all(&dir)?;
    outcome
}

fn run(dir: &Path, threads: bool) -> Result<(), Box<dyn std::error::Error>> {
    let queue = Queue::open(dir)?;
    queue.create_topic(TOPIC, PARTITIONS)?;
    let producer = queue.producer();
    producer
        .send_batch(TOPIC, (0..JOBS).map(|job| job.to_string()).collect::<Vec<_>>().iter().map(|v| Record::new(v.as_bytes())))?;
    let kind = if threads { "threads" } else { "processes" };
    println!("{JOBS} jobs in {PARTITIONS} partitions of {TOPIC:?}; {WORKERS} worker {kind} in group {GROUP:?}\n");

    let (sender, events) = mpsc::channel();
    let mut workers = (0..WORKERS).map(|i| Worker::start(&queue, i, threads, &sender)).collect::<Result<Vec<_>, _>>()?;
    drop(sender);
    let started = Instant::now();
    let stamp = |what: String| println!("{:>7.3} s  {what}", started.elapsed().as_secs_f64());
    let mut tally = Tally::default();
    let mut killed = false;
    loop {
        match events.recv_timeout(Duration::from_millis(20)) {
            Ok(event) => tally.add(event).map_or((), stamp),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Err("every worker stopped before the work was done".into()),
        }
        if !killed && tally.per_worker.iter().sum::<usize>() >= JOBS / 2 && !tally.owns[VICTIM].is_empty() {
            workers[VICTIM].kill()?;
            killed = true;
            let how = if threads { "stops polling, drops its consumer, last batch not committed" } else { "SIGKILL" };
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
    // Lines still in a pipe: after the stop, only the processed jobs matter.
    for event in events {
        tally.add(event);
    }
    tally.summarize()
}

/// What the workers reported so far.
struct Tally {
    times_done: Vec<u32>,
    per_worker: [usize; WORKERS],
    owns: [Vec<u32>; WORKERS],
    /// Each worker's jobs processed since its last commit.
    uncommitted: [BTreeSet<usize>; WORKERS],
}

impl Default for Tally {
    fn default() -> Self {
        Tally { times_done: vec![0; JOBS], per_worker: [0; WORKERS], owns: Default::default(), uncommitted: Default::default() }
    }
}

impl Tally {
    /// Counts an event; returns a line for the timeline if ownership changed.
    fn add(&mut self, (worker, event): (usize, Event)) -> Option<String> {
        match event {
            Event::Owns(partitions) => {
                let line = format!("w{} owns partitions {partitions:?}", worker + 1);
                self.owns[worker] = partitions;
                return Some(line);
            }
            Event::Done(jobs) => {
                for job in jobs {
                    self.times_done[job] += 1;
                    self.per_worker[worker] += 1;
                    self.uncommitted[worker].insert(job);
                }
            }
            Event::Committed => self.uncommitted[worker].clear(),
        }
        None
    }

    fn summarize(&self) -> Result<(), Box<dyn std::error::Error>> {
        println!();
        for (worker, count) in self.per_worker.iter().enumerate() {
            println!("w{} processed {count} jobs", worker + 1);
        }
        let twice: BTreeSet<usize> = (0..JOBS).filter(|&job| self.times_done[job] > 1).collect();
        let unexplained = twice.difference(&self.uncommitted[VICTIM]).count();
        let killed = format!("w{}, processed after its last commit", VICTIM + 1);
        match (twice.len(), unexplained) {
            (0, _) => println!("no job was processed twice"),
            (n, 0) => println!("{n} jobs were processed twice, all of them first by {killed}"),
            (n, u) => println!("{n} jobs were processed twice: {} first by {killed}, {u} for other reasons", n - u),
        }
        let missing = self.times_done.iter().filter(|&&times| times == 0).count();
        if missing > 0 {
            return Err(format!("{missing} of the {JOBS} jobs were never processed").into());
        }
        println!("every one of the {JOBS} jobs was processed at least once");
        Ok(())
    }
}
