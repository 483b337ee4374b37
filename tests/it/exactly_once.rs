//! Exactly once through crashes: a pipeline of worker processes (a consumer group reading `in`,
//! each record written to `out` in a transaction together with the group's offsets) whose
//! workers are SIGKILLed and SIGSTOPped at random moments while input keeps arriving. At the
//! end a reader of committed records finds every input record in `out` exactly once, in order
//! per key, and the group's committed offsets are the end of `in`.
//!
//! `STREAMLOG_EXACTLY_ONCE_FAULTS` sets the number of faults (at least 50 by default) and
//! `STREAMLOG_EXACTLY_ONCE_SEED` repeats a run.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use powercut::Cut;
use streamlog::{ConsumerConfig, Durability, Error, IsolationLevel, OffsetReset, ProducerConfig, Queue, Record, TopicPartition};

use crate::child::{self, Reaper};
use crate::testfs::Mounted;
use crate::{Rng, TempDir};

const INPUT_PARTITIONS: u32 = 4;
const OUTPUT_PARTITIONS: u32 = 3;
const WORKERS: usize = 3;
const KEYS: u64 = 24;

/// The consumer configuration of the pipeline's group: short timeouts, so that a stopped
/// worker is expelled while it is stopped.
fn worker_config() -> ConsumerConfig {
    ConsumerConfig::new("pipeline")
        .isolation_level(IsolationLevel::ReadCommitted)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .session_timeout(Duration::from_millis(600))
        .max_poll_interval(Duration::from_secs(2))
        .max_poll_records(50)
}

/// Child role `eo-worker DIR INDEX DURABILITY` (`sync` or `buffered`): the transform stage. Each poll's records go to `out` (same
/// key and value) in one transaction with the offsets after them; a step that fails is aborted
/// and its partitions read again from where it began. It dawdles at random inside each step
/// (before sending the offsets, before committing), so that the faults often land there. It
/// says `ready` once it has joined.
pub(crate) fn child(role: &str, args: &[String]) {
    assert_eq!(role, "eo-worker");
    let [dir, index, durability] = args else { panic!("bad arguments {args:?}") };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let durability = if durability == "sync" { Durability::Sync } else { Durability::Buffered };
    let producer =
        queue.transactional_producer_with(&format!("worker-{index}"), ProducerConfig::new().durability(durability)).unwrap();
    let mut consumer = queue.consumer(worker_config()).unwrap();
    consumer.subscribe(&["in"]).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut rng = Rng(crate::child::monotonic_ns() | 1);
    let mut dawdle = move || std::thread::sleep(Duration::from_millis(rng.below(4) * rng.below(15)));
    loop {
        let records = match consumer.poll(Duration::from_millis(50)) {
            Ok(records) => records,
            // A rebalance or an expulsion: the next poll rejoins.
            Err(_) => continue,
        };
        if records.is_empty() {
            continue;
        }
        let mut first: BTreeMap<TopicPartition, u64> = BTreeMap::new();
        let mut next: BTreeMap<TopicPartition, u64> = BTreeMap::new();
        for record in &records {
            let tp = TopicPartition::new(record.topic(), record.partition());
            first.entry(tp.clone()).or_insert(record.offset());
            next.insert(tp, record.offset() + 1);
        }
        let offsets: Vec<(TopicPartition, u64)> = next.into_iter().collect();
        let mut step = || -> Result<(), Error> {
            producer.begin_transaction()?;
            for record in &records {
                // The input, and who wrote it from which input offset (for the report of a failure).
                let value =
                    format!("{}@{index}.{}.{}", String::from_utf8_lossy(record.value()), std::process::id(), record.offset());
                producer.send("out", Record::new(value).key(record.key().expect("keyed input")))?;
            }
            dawdle();
            producer.send_offsets_to_transaction(&offsets, &consumer.group_metadata())
        };
        let stepped = step();
        dawdle();
        match stepped {
            Ok(()) => loop {
                // A commit that failed part-way has its decision stored: only finishing it
                // may follow (the next instance of this id would, if this one gave up).
                match producer.commit_transaction() {
                    Ok(()) => break,
                    Err(Error::ProducerFenced { .. }) => return,
                    Err(error) => {
                        eprintln!("worker {index}: commit failed, retrying: {error}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            },
            Err(Error::ProducerFenced { .. }) => return,
            Err(_) => {
                // Expelled, or the group moved on: nothing of this step counts.
                let _ = producer.abort_transaction();
                for (tp, offset) in first {
                    let _ = consumer.seek(&tp, offset);
                }
            }
        }
    }
}

/// A worker process, and until when it is stopped.
struct Worker {
    process: Child,
    stopped_until: Option<Instant>,
}

/// Starts worker `index`; with `wait`, returns once it has joined the group. (A replacement is
/// not waited for: a stopped worker may hold the group lock it needs, until it is resumed.)
fn spawn_worker(dir: &Path, index: usize, wait: bool) -> Worker {
    spawn_worker_with(dir, index, wait, "buffered")
}

fn spawn_worker_with(dir: &Path, index: usize, wait: bool, durability: &str) -> Worker {
    let mut process = child::spawn("eo-worker", &[dir.display().to_string(), index.to_string(), durability.to_owned()]);
    if wait {
        let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
        assert!(lines.any(|line| line.unwrap().trim() == "ready"), "worker {index} ended before it was ready");
    }
    Worker { process, stopped_until: None }
}

fn signal(worker: &Worker, signal: libc::c_int) {
    // SAFETY: kill has no memory preconditions; the child is not reaped yet, so its pid is its own.
    assert_eq!(unsafe { libc::kill(worker.process.id() as libc::pid_t, signal) }, 0);
}

/// The key and value of input record `seq` of key `key`.
fn input(key: u64, seq: u64) -> (Vec<u8>, Vec<u8>) {
    (format!("key-{key}").into_bytes(), format!("{key}:{seq}").into_bytes())
}

#[test]
fn a_pipeline_of_killed_and_stopped_workers_outputs_every_input_exactly_once() {
    let faults: usize = std::env::var("STREAMLOG_EXACTLY_ONCE_FAULTS").map_or(50, |v| v.parse().unwrap());
    let seed: u64 =
        std::env::var("STREAMLOG_EXACTLY_ONCE_SEED").map_or_else(|_| crate::child::monotonic_ns() | 1, |v| v.parse().unwrap());
    println!("exactly-once pipeline: {faults} faults, seed {seed}");
    let mut rng = Rng(seed);
    let dir = TempDir::new("exactly-once");
    let queue = Queue::open(dir.path()).unwrap();
    queue.create_topic("in", INPUT_PARTITIONS).unwrap();
    queue.create_topic("out", OUTPUT_PARTITIONS).unwrap();
    let mut workers: Vec<Worker> = (0..WORKERS).map(|i| spawn_worker(dir.path(), i, true)).collect();
    let mut reaper = Reaper(workers.iter().map(|w| w.process.id()).collect());
    let producer = queue.producer();
    let mut sent_per_key = vec![0u64; KEYS as usize];
    let mut send_some = |rng: &mut Rng| {
        for _ in 0..rng.below(40) + 10 {
            let key = rng.below(KEYS);
            let (k, v) = input(key, sent_per_key[key as usize]);
            sent_per_key[key as usize] += 1;
            producer.send("in", Record::new(v).key(k)).unwrap();
        }
    };
    let (mut kills, mut stops) = (0, 0);
    while kills + stops < faults {
        send_some(&mut rng);
        std::thread::sleep(Duration::from_millis(rng.below(80) + 10));
        for worker in workers.iter_mut().filter(|w| w.stopped_until.is_some_and(|until| until <= Instant::now())) {
            signal(worker, libc::SIGCONT);
            worker.stopped_until = None;
        }
        let index = rng.below(WORKERS as u64) as usize;
        if workers[index].stopped_until.is_some() {
            continue;
        }
        if rng.below(10) < 6 {
            signal(&workers[index], libc::SIGKILL);
            workers[index].process.wait().unwrap();
            workers[index] = spawn_worker(dir.path(), index, false);
            reaper.0.push(workers[index].process.id());
            kills += 1;
        } else {
            // Half the stops outlast the session timeout: the worker is expelled while its
            // transaction may be open, and resumes as a zombie.
            let pause = match rng.below(2) {
                0 => rng.below(300) + 20,
                _ => rng.below(800) + 700,
            };
            signal(&workers[index], libc::SIGSTOP);
            workers[index].stopped_until = Some(Instant::now() + Duration::from_millis(pause));
            stops += 1;
        }
    }
    for worker in workers.iter_mut().filter(|w| w.stopped_until.is_some()) {
        signal(worker, libc::SIGCONT);
        worker.stopped_until = None;
    }
    println!("{kills} kills, {stops} stops");

    finish_and_check(&queue, &mut workers, &sent_per_key, seed);
    drop((queue, reaper));
}

/// Waits until the group has committed the end of `in`, stops the workers, and checks that
/// `out` holds every input once, in order per key (`sent_per_key` says how many each key has).
fn finish_and_check(queue: &Queue, workers: &mut [Worker], sent_per_key: &[u64], seed: u64) {
    let inputs = queue.partitions("in").unwrap();
    let ends: Vec<u64> = inputs.iter().map(|tp| queue.offsets(tp).unwrap().1).collect();
    let mut observer = queue.consumer(ConsumerConfig::new("pipeline")).unwrap();
    observer.assign(&inputs).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let committed = loop {
        let committed: Vec<Option<u64>> = observer.committed_offsets(&inputs).unwrap().into_iter().map(|(_, o)| o).collect();
        if committed.iter().zip(&ends).all(|(c, e)| *c == Some(*e) || *e == 0) || Instant::now() > deadline {
            break committed;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for worker in workers.iter_mut() {
        let _ = worker.process.kill();
        worker.process.wait().unwrap();
    }
    let expected: Vec<Option<u64>> = ends.iter().map(|&e| (e > 0).then_some(e)).collect();
    assert_eq!(committed, expected, "the group's committed offsets against the end of `in` (seed {seed})");

    // Every input exactly once in `out`, in order per key.
    let config =
        ConsumerConfig::new("check").isolation_level(IsolationLevel::ReadCommitted).auto_offset_reset(OffsetReset::Earliest);
    let mut reader = queue.consumer(config).unwrap();
    let outputs = queue.partitions("out").unwrap();
    reader.assign(&outputs).unwrap();
    // Per key: the sequence numbers in `out`, each with where it is and who wrote it.
    let mut seen: HashMap<u64, Vec<(u64, String)>> = HashMap::new();
    // Until the reader reaches the end of every partition: the transactions the workers left
    // open when they were killed hold it back until this process's keeper aborts them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while outputs.iter().any(|tp| reader.position(tp).unwrap() < queue.offsets(tp).unwrap().1) {
        assert!(Instant::now() < deadline, "the reader of committed records never reached the end of out");
        let records = reader.poll(Duration::from_millis(50)).unwrap();
        for record in &records {
            let text = std::str::from_utf8(record.value()).unwrap();
            let (input, writer) = text.split_once('@').unwrap();
            let (key, seq) = input.split_once(':').unwrap();
            let place = format!("out-{}@{} by worker.pid.input-offset {writer}", record.partition(), record.offset());
            seen.entry(key.parse().unwrap()).or_default().push((seq.parse().unwrap(), place));
        }
    }
    for key in 0..KEYS {
        let got = seen.remove(&key).unwrap_or_default();
        let sequence: Vec<u64> = got.iter().map(|(seq, _)| *seq).collect();
        let want: Vec<u64> = (0..sent_per_key[key as usize]).collect();
        if sequence != want {
            let odd: Vec<&(u64, String)> =
                got.iter().filter(|(seq, _)| got.iter().filter(|(other, _)| other == seq).count() > 1).collect();
            panic!("key {key} (seed {seed}): out holds {sequence:?}, not 0..{}; repeated: {odd:#?}", want.len());
        }
    }
    assert!(seen.is_empty(), "records of unknown keys: {seen:?}");
}

/// The pipeline with `Durability::Sync` on the power-cut file system: the workers are killed
/// and the power cut (clean or torn) at random moments, several times; after each cut the
/// queue is opened alone (finishing what the cut interrupted) and the workers start again. At
/// the end every input is in `out` exactly once: a commit that returned is durable whole (its
/// records, its offsets and its markers), and one that did not is aborted whole.
#[test]
fn with_sync_durability_power_cuts_keep_every_input_exactly_once() {
    let seed: u64 =
        std::env::var("STREAMLOG_EXACTLY_ONCE_SEED").map_or_else(|_| crate::child::monotonic_ns() | 1, |v| v.parse().unwrap());
    let cuts: u32 = std::env::var("STREAMLOG_EXACTLY_ONCE_CUTS").map_or(4, |v| v.parse().unwrap());
    println!("exactly-once power cuts: {cuts} cuts, seed {seed}");
    let mut rng = Rng(seed);
    let mut mounted = Mounted::new("exactly-once-powercut");
    let dir = mounted.fs.path().join("queue");
    let mut sent_per_key = vec![0u64; KEYS as usize];
    let mut send_input = |count: usize, rng: &mut Rng| {
        // Durable before the workers start, so that every cut leaves it whole.
        let queue = Queue::open(&dir).unwrap();
        let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
        for _ in 0..count {
            let key = rng.below(KEYS);
            let (k, v) = input(key, sent_per_key[key as usize]);
            sent_per_key[key as usize] += 1;
            producer.send("in", Record::new(v).key(k)).unwrap();
        }
    };
    {
        let queue = Queue::open(&dir).unwrap();
        queue.create_topic("in", INPUT_PARTITIONS).unwrap();
        queue.create_topic("out", OUTPUT_PARTITIONS).unwrap();
    }
    let (mut torn, mut progress) = (0, Vec::new());
    for _ in 0..cuts {
        send_input(1500, &mut rng);
        let mut workers: Vec<Worker> = (0..WORKERS).map(|i| spawn_worker_with(&dir, i, true, "sync")).collect();
        let reaper = Reaper(workers.iter().map(|w| w.process.id()).collect());
        std::thread::sleep(Duration::from_millis(rng.below(400) + 50));
        for worker in &mut workers {
            signal(worker, libc::SIGKILL);
        }
        for worker in &mut workers {
            worker.process.wait().unwrap();
        }
        drop(reaper);
        let cut = if rng.below(2) == 0 { Cut::Clean } else { Cut::Torn { seed: rng.below(u64::MAX) } };
        torn += u32::from(matches!(cut, Cut::Torn { .. }));
        mounted.fs.cut(cut).unwrap();
        // Alone, the open finishes or aborts what each cut-off transaction left.
        let queue = crate::open_alone(&dir).unwrap();
        let mut observer = queue.consumer(ConsumerConfig::new("pipeline")).unwrap();
        let inputs = queue.partitions("in").unwrap();
        observer.assign(&inputs).unwrap();
        let done: u64 = observer.committed_offsets(&inputs).unwrap().into_iter().filter_map(|(_, o)| o).sum();
        progress.push(done);
    }
    println!("{torn} of the cuts torn; inputs committed after each cut: {progress:?}");
    let mut workers: Vec<Worker> = (0..WORKERS).map(|i| spawn_worker_with(&dir, i, true, "sync")).collect();
    let reaper = Reaper(workers.iter().map(|w| w.process.id()).collect());
    let queue = Queue::open(&dir).unwrap();
    finish_and_check(&queue, &mut workers, &sent_per_key, seed);
    drop((queue, reaper));
}
