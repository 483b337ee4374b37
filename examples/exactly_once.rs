//! Exactly once: three worker processes in consumer group "enrich" read 20,000 payments from
//! topic "payments", and write each one, enriched, to topic "ledger" in a transaction that also
//! commits the group's offsets. Halfway through, one worker is killed (SIGKILL) in the middle
//! of its work; its open transaction is aborted, its partitions move to the survivors, and they
//! resume from the offsets its last committed transaction stored. A reader of committed records
//! then finds every payment in the ledger exactly once, in order per account.
//!
//! ```text
//! cargo run --release --example exactly_once
//! ```
//!
//! A worker is started as `exactly_once worker DIR NAME` and runs until it is killed. Its loop
//! is the consume-transform-produce step Kafka users write: poll, begin, send, send the offsets
//! with the consumer's group metadata, commit; after a failed step it aborts and reads the same
//! records again.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamlog::{ConsumerConfig, Error, IsolationLevel, OffsetReset, Queue, Record, TopicPartition};

const INPUT: &str = "payments";
const OUTPUT: &str = "ledger";
const GROUP: &str = "enrich";
const PARTITIONS: u32 = 6;
const PAYMENTS: u64 = 20_000;
const ACCOUNTS: u64 = 500;
const WORKERS: usize = 3;
/// The worker killed halfway: w2.
const VICTIM: usize = 1;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, dir, name] = args.as_slice()
        && role == "worker"
    {
        return Ok(worker(Path::new(dir), name)?);
    }
    let dir = std::env::temp_dir().join(format!("streamlog-exactly-once-{}", std::process::id()));
    let outcome = run(&dir);
    std::fs::remove_dir_all(&dir)?;
    let problems = outcome?;
    if problems.is_empty() {
        println!("check: all {PAYMENTS} payments are in the ledger exactly once, each account's in order");
        Ok(())
    } else {
        for problem in problems.iter().take(10) {
            eprintln!("check failed: {problem}");
        }
        std::process::exit(1);
    }
}

/// The transform stage: each poll's payments go to the ledger with the offsets after them, in
/// one transaction. The transactional id is the worker's name, so a restarted worker fences a
/// stuck predecessor (Kafka's classic pattern).
fn worker(dir: &Path, name: &str) -> Result<(), Error> {
    let queue = Queue::open(dir)?;
    let producer = queue.transactional_producer(name)?;
    let config = ConsumerConfig::new(GROUP)
        .isolation_level(IsolationLevel::ReadCommitted)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .client_id(name)
        .max_poll_records(200);
    let mut consumer = queue.consumer(config)?;
    consumer.subscribe(&[INPUT])?;
    println!("ready");
    loop {
        let records = match consumer.poll(Duration::from_millis(100)) {
            Ok(records) if !records.is_empty() => records,
            // Nothing yet, or the group is rebalancing: poll again.
            Ok(_) | Err(Error::CommitFailed { .. }) => continue,
            Err(error) => return Err(error),
        };
        let mut next: BTreeMap<TopicPartition, u64> = BTreeMap::new();
        let mut first: BTreeMap<TopicPartition, u64> = BTreeMap::new();
        for record in &records {
            let tp = TopicPartition::new(record.topic(), record.partition());
            first.entry(tp.clone()).or_insert(record.offset());
            next.insert(tp, record.offset() + 1);
        }
        let offsets: Vec<(TopicPartition, u64)> = next.into_iter().collect();
        let step = || -> Result<(), Error> {
            producer.begin_transaction()?;
            for record in &records {
                let enriched = format!("{} checked-by={name}", String::from_utf8_lossy(record.value()));
                producer.send(OUTPUT, Record::new(enriched).key(record.key().unwrap_or_default()))?;
                // Some work per payment, so that the kill lands in the middle of a transaction.
                std::thread::sleep(Duration::from_micros(200));
            }
            producer.send_offsets_to_transaction(&offsets, &consumer.group_metadata())?;
            producer.commit_transaction()
        };
        match step() {
            Ok(()) => {}
            // A newer instance of this worker exists: this one is a zombie and stops.
            Err(error @ Error::ProducerFenced { .. }) => return Err(error),
            Err(_) => {
                // The group moved on (a rebalance): nothing of this step counts. Read the same
                // records again, if the partitions are still ours.
                let _ = producer.abort_transaction();
                for (tp, offset) in first {
                    let _ = consumer.seek(&tp, offset);
                }
            }
        }
    }
}

fn spawn_worker(dir: &Path, name: &str) -> Result<Child, Box<dyn std::error::Error>> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["worker", &dir.display().to_string(), name])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    if !lines.any(|line| line.is_ok_and(|l| l == "ready")) {
        return Err(format!("worker {name} ended before it was ready").into());
    }
    Ok(child)
}

/// Produces the payments, runs the workers (killing one halfway), and checks the ledger.
fn run(dir: &Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let queue = Queue::open(dir)?;
    queue.create_topic(INPUT, PARTITIONS)?;
    queue.create_topic(OUTPUT, PARTITIONS)?;
    let producer = queue.producer();
    let mut per_account = vec![0u64; ACCOUNTS as usize];
    for n in 0..PAYMENTS {
        let account = n * 7919 % ACCOUNTS;
        let seq = per_account[account as usize];
        per_account[account as usize] += 1;
        producer.send(INPUT, Record::new(format!("account={account} seq={seq} cents={}", n % 9000)).key(account.to_string()))?;
    }
    println!("{PAYMENTS} payments for {ACCOUNTS} accounts in {PARTITIONS} partitions of {INPUT:?}");

    let started = Instant::now();
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        workers.push(spawn_worker(dir, &format!("w{}", i + 1))?);
    }
    let inputs = queue.partitions(INPUT)?;
    let mut observer = queue.consumer(ConsumerConfig::new(GROUP))?;
    observer.assign(&inputs)?;
    let committed = |observer: &streamlog::Consumer| -> Result<u64, Error> {
        Ok(observer.committed_offsets(&inputs)?.into_iter().filter_map(|(_, o)| o).sum())
    };
    while committed(&observer)? < PAYMENTS / 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    workers[VICTIM].kill()?;
    workers[VICTIM].wait()?;
    println!("killed w{} with {} payments committed", VICTIM + 1, committed(&observer)?);
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&observer)? < PAYMENTS {
        if Instant::now() > deadline {
            return Err("the survivors did not finish within two minutes".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("the group committed every offset of {INPUT:?} after {:.1?}", started.elapsed());
    for worker in &mut workers {
        let _ = worker.kill();
        worker.wait()?;
    }

    // The check: every payment exactly once, in order per account, among committed records.
    let config =
        ConsumerConfig::new("audit").isolation_level(IsolationLevel::ReadCommitted).auto_offset_reset(OffsetReset::Earliest);
    let mut reader = queue.consumer(config)?;
    reader.assign(&queue.partitions(OUTPUT)?)?;
    let (mut seen, mut by_worker): (HashMap<u64, Vec<u64>>, BTreeMap<String, u64>) = Default::default();
    let outputs = queue.partitions(OUTPUT)?;
    let at_end = |reader: &mut streamlog::Consumer| -> Result<bool, Error> {
        for tp in &outputs {
            if reader.position(tp)? < queue.offsets(tp)?.1 {
                return Ok(false);
            }
        }
        Ok(true)
    };
    // Until the end of every partition: a transaction a killed worker left open holds readers
    // of committed records back until it is aborted (within about a tenth of a second).
    while !at_end(&mut reader)? {
        let records = reader.poll(Duration::from_millis(100))?;
        for record in &records {
            let text = String::from_utf8_lossy(record.value());
            let field = |name: &str| text.split(' ').find_map(|f| f.strip_prefix(name)).map(str::to_owned);
            let (Some(account), Some(seq), Some(checker)) = (field("account="), field("seq="), field("checked-by=")) else {
                return Ok(vec![format!("a ledger record does not parse: {text}")]);
            };
            seen.entry(account.parse()?).or_default().push(seq.parse()?);
            *by_worker.entry(checker).or_default() += 1;
        }
    }
    println!("ledger entries by worker: {by_worker:?}");
    let mut everything = queue.consumer(ConsumerConfig::new("everything").auto_offset_reset(OffsetReset::Earliest))?;
    everything.assign(&outputs)?;
    let mut written = 0;
    while !at_end(&mut everything)? {
        written += everything.poll(Duration::from_millis(100))?.len();
    }
    let aborted = written - by_worker.values().sum::<u64>() as usize;
    println!(
        "{written} records were written to the ledger; {aborted} of them in aborted transactions, which read_committed never returns"
    );
    let mut problems = Vec::new();
    for account in 0..ACCOUNTS {
        let got = seen.remove(&account).unwrap_or_default();
        let want: Vec<u64> = (0..per_account[account as usize]).collect();
        if got != want {
            problems.push(format!("account {account}: the ledger holds payments {got:?}, not 0..{}", want.len()));
        }
    }
    Ok(problems)
}
