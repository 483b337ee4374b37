//! Child processes: tests start this same test binary again with `STREAMLOG_CHILD` naming a
//! role, and the ignored test `child::entry` runs that role.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use streamlog::{
    Consumer, ConsumerConfig, Durability, OffsetReset, ProducerConfig, Queue, RebalanceListener, Record, TopicPartition,
};

/// Starts this test binary as a child process running `role` with `args`.
pub(crate) fn spawn(role: &str, args: &[String]) -> Child {
    spawn_with_env(role, args, &[])
}

/// As `spawn`, with extra environment variables (a failpoint to die at, for one).
pub(crate) fn spawn_with_env(role: &str, args: &[String], env: &[(&str, &str)]) -> Child {
    // See `crate::open_alone`: no test reopens a queue while a child is between fork and exec.
    let _spawning = crate::SPAWNING.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    Command::new(std::env::current_exe().unwrap())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .args(["--exact", "child::entry", "--include-ignored", "--nocapture", "--test-threads=1", "-q"])
        .env("STREAMLOG_CHILD", role)
        .env("STREAMLOG_CHILD_ARGS", args.join("\u{1f}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The value child `producer` sends as its record number `seq`: recognisable and of varying size.
pub(crate) fn value_for(producer: u32, seq: u64) -> Vec<u8> {
    let mut value = format!("p{producer}-s{seq}-").into_bytes();
    value.resize(value.len() + (seq as usize * 37 + producer as usize) % 300, b'a' + (seq % 26) as u8);
    value
}

/// Reads a child's acknowledgement lines on a thread (so its pipe never fills) until it exits.
pub(crate) fn collect_acks(child: &mut Child) -> std::thread::JoinHandle<Vec<(u64, u32, u64)>> {
    collect_acks_counting(child, Default::default())
}

/// As `collect_acks`, also counting acknowledgements in `count` as they arrive.
pub(crate) fn collect_acks_counting(
    child: &mut Child,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<Vec<(u64, u32, u64)>> {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader};
        // A line cut short by a kill is not an acknowledgement; read_line keeps it without '\n'.
        let mut reader = BufReader::new(stdout);
        let mut acks = Vec::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(ack) = line.strip_suffix('\n').and_then(parse_ack) {
                acks.push(ack);
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            line.clear();
        }
        acks
    })
}

/// Acknowledgement lines a child prints after each send returns: `seq partition offset`.
pub(crate) fn parse_ack(line: &str) -> Option<(u64, u32, u64)> {
    let mut parts = line.split(' ');
    let ack = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    parts.next().is_none().then_some(ack)
}

#[test]
#[ignore = "entry point of child processes, started by other tests through child::spawn"]
fn entry() {
    let role = std::env::var("STREAMLOG_CHILD").expect("run only as a child process");
    let args: Vec<String> = std::env::var("STREAMLOG_CHILD_ARGS").unwrap().split('\u{1f}').map(str::to_owned).collect();
    match role.as_str() {
        "produce" => produce(&args),
        "send-after" => send_after(&args),
        "member" => member(&args),
        "commit" => commit(&args),
        "churn" => churn(&args),
        "hold" => hold(&args),
        "until-gone" => until_gone(&args),
        "compact" => compact(&args),
        "open-files" => open_files(&args),
        testfs if testfs.starts_with("testfs-") => crate::testfs::child(testfs, &args),
        "powercut-daemon" => powercut::serve(),
        role if role.starts_with("powercut-") => crate::powercut::child(role, &args),
        history if history.starts_with("hist-") => crate::history::child(history, &args),
        failpoint if failpoint.starts_with("fp-") => crate::failpoints::child(failpoint, &args),
        transaction if transaction.starts_with("txn-") => crate::transactions::child(transaction, &args),
        pipeline if pipeline.starts_with("eo-") => crate::exactly_once::child(pipeline, &args),
        other => panic!("unknown child role {other}"),
    }
}

/// `produce DIR TOPIC PRODUCER COUNT PARTITIONS DURABILITY`: sends COUNT records (COUNT 0: until
/// killed) round the given partitions, alternating single sends and small batches, and prints an
/// acknowledgement line after each returns.
fn produce(args: &[String]) {
    let [dir, topic, producer_id, count, partitions, durability] = args else { panic!("bad arguments {args:?}") };
    let producer_id: u32 = producer_id.parse().unwrap();
    let count: u64 = count.parse().unwrap();
    let partitions: u32 = partitions.parse().unwrap();
    let durability = match durability.as_str() {
        "sync" => Durability::Sync,
        "interval" => Durability::Interval(Duration::from_millis(5)),
        _ => Durability::Buffered,
    };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let producer = queue.producer_with(ProducerConfig::new().durability(durability));
    let mut out = std::io::stdout().lock();
    let mut seq = 0u64;
    while count == 0 || seq < count {
        let partition = (seq % u64::from(partitions)) as u32;
        let batch = if count == 0 { 3 } else { (count - seq).min(3) };
        if seq % 5 == 4 {
            let values: Vec<Vec<u8>> = (seq..seq + batch).map(|s| value_for(producer_id, s)).collect();
            let metas = producer.send_batch(topic, values.iter().map(|v| Record::new(v).partition(partition))).unwrap();
            for (i, meta) in metas.iter().enumerate() {
                writeln!(out, "{} {} {}", seq + i as u64, meta.partition(), meta.offset()).unwrap();
            }
            seq += batch;
        } else {
            let value = value_for(producer_id, seq);
            let meta = producer.send(topic, Record::new(&value).partition(partition).key(&producer_id.to_le_bytes())).unwrap();
            writeln!(out, "{seq} {} {}", meta.partition(), meta.offset()).unwrap();
            seq += 1;
        }
        out.flush().unwrap();
    }
}

/// `send-after DIR TOPIC DELAY_MS`: sleeps, then sends one record to partition 0.
fn send_after(args: &[String]) {
    let [dir, topic, delay_ms] = args else { panic!("bad arguments {args:?}") };
    let queue = Queue::open(Path::new(dir)).unwrap();
    std::thread::sleep(Duration::from_millis(delay_ms.parse().unwrap()));
    queue.producer().send(topic, Record::new(b"wake up").partition(0)).unwrap();
}

/// Kills the listed child processes if the test panics, so none outlives a failed test.
pub(crate) struct Reaper(pub(crate) Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for &pid in &self.0 {
            // SAFETY: kill has no memory preconditions; a pid already reaped just fails.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Nanoseconds of the machine-wide monotonic clock, comparable between processes.
pub(crate) fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Appends timestamped lines to a group member's journal: `NS EVENT ARGS...`.
#[derive(Clone)]
struct Journal(std::sync::Arc<std::sync::Mutex<std::fs::File>>);

impl Journal {
    fn line(&self, text: std::fmt::Arguments<'_>) {
        let mut file = self.0.lock().unwrap();
        writeln!(file, "{} {text}", monotonic_ns()).unwrap();
    }
}

fn partition_list(partitions: &[TopicPartition]) -> String {
    partitions.iter().map(|p| p.partition().to_string()).collect::<Vec<_>>().join(",")
}

impl RebalanceListener for Journal {
    fn on_assigned(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.line(format_args!("assigned {}", partition_list(partitions)));
    }

    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        match consumer.commit() {
            Ok(()) => self.line(format_args!("revoke-commit ok")),
            Err(e) => self.line(format_args!("revoke-commit refused {e}")),
        }
        self.line(format_args!("revoked {}", partition_list(partitions)));
    }

    fn on_lost(&mut self, _: &mut Consumer, partitions: &[TopicPartition]) {
        self.line(format_args!("lost {}", partition_list(partitions)));
    }
}

/// `member DIR GROUP TOPIC LOG SESSION_MS PAUSE_MS STOP_AFTER`: a consumer-group member that
/// journals to LOG every assignment change, every record read (`read P OFFSET`) and every
/// commit (`committed P OFFSET`, or `commit-refused`). It sleeps PAUSE_MS after each poll that
/// returned records, before committing. With STOP_AFTER > 0 it stops itself (SIGSTOP) once,
/// between reading its STOP_AFTER-th record and committing. It closes when the file DIR/stop
/// appears.
fn member(args: &[String]) {
    let [dir, group, topic, log, session_ms, pause_ms, stop_after] = args else { panic!("bad arguments {args:?}") };
    let journal = Journal(std::sync::Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap(),
    )));
    let pause = Duration::from_millis(pause_ms.parse().unwrap());
    let mut stop_after: usize = stop_after.parse().unwrap();
    let queue = Queue::open(Path::new(dir)).unwrap();
    let config = ConsumerConfig::new(group)
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .max_poll_records(20)
        .session_timeout(Duration::from_millis(session_ms.parse().unwrap()));
    let mut consumer = queue.consumer(config).unwrap();
    consumer.subscribe_with(&[topic.as_str()], journal.clone()).unwrap();
    let mut read = 0usize;
    while !Path::new(dir).join("stop").exists() {
        let records = consumer.poll(Duration::from_millis(50)).unwrap();
        for record in records.iter() {
            journal.line(format_args!("read {} {}", record.partition(), record.offset()));
        }
        if records.is_empty() {
            continue;
        }
        read += records.len();
        std::thread::sleep(pause);
        if stop_after > 0 && read >= stop_after {
            stop_after = 0;
            journal.line(format_args!("stopping"));
            // SAFETY: raise has no memory preconditions.
            unsafe { libc::raise(libc::SIGSTOP) };
            journal.line(format_args!("resumed"));
        }
        let positions: Vec<(TopicPartition, u64)> =
            consumer.assignment().into_iter().map(|tp| (tp.clone(), consumer.position(&tp).unwrap())).collect();
        match consumer.commit_offsets(&positions) {
            Ok(()) => {
                for (tp, offset) in positions {
                    journal.line(format_args!("committed {} {offset}", tp.partition()));
                }
            }
            Err(e) => journal.line(format_args!("commit-refused {e}")),
        }
    }
    consumer.close().unwrap();
    journal.line(format_args!("closed"));
}

/// `commit DIR START DURABILITY`: commits offsets START, START+1, ... for partitions 0 to 2 of
/// topic `t` in group `ledger`, all three in one commit, printing each value once it returned.
fn commit(args: &[String]) {
    let [dir, start, durability] = args else { panic!("bad arguments {args:?}") };
    let durability = if durability == "sync" { Durability::Sync } else { Durability::Buffered };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let config = ConsumerConfig::new("ledger").auto_commit(None).commit_durability(durability);
    let mut consumer = queue.consumer(config).unwrap();
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
    let mut out = std::io::stdout().lock();
    for value in start.parse::<u64>().unwrap().. {
        let offsets: Vec<(TopicPartition, u64)> = tps.iter().map(|tp| (tp.clone(), value)).collect();
        consumer.commit_offsets(&offsets).unwrap();
        writeln!(out, "{value}").unwrap();
        out.flush().unwrap();
    }
}

/// `churn DIR SESSION_MS`: forever joins group `workers` on topic `jobs`, polls, commits and
/// closes, as fast as it can, so that a kill or a stop often lands while it holds the group lock.
fn churn(args: &[String]) {
    let [dir, session_ms] = args else { panic!("bad arguments {args:?}") };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let config = ConsumerConfig::new("workers")
        .auto_offset_reset(OffsetReset::Earliest)
        .auto_commit(None)
        .session_timeout(Duration::from_millis(session_ms.parse().unwrap()));
    loop {
        let mut consumer = queue.consumer(config.clone()).unwrap();
        consumer.subscribe(&["jobs"]).unwrap();
        for _ in 0..5 {
            consumer.poll(Duration::from_millis(1)).unwrap();
            let _ = consumer.commit();
        }
        consumer.close().unwrap();
    }
}

/// `hold DIR COUNT`: reads the first COUNT records of `t`/0 and keeps them, says `held`, waits
/// for a line on stdin (meanwhile the test deletes their segments), then checks every one
/// and says `intact`.
fn hold(args: &[String]) {
    let [dir, count] = args else { panic!("bad arguments {args:?}") };
    let count: usize = count.parse().unwrap();
    let queue = Queue::open(Path::new(dir)).unwrap();
    let config = ConsumerConfig::new("holder").auto_commit(None).auto_offset_reset(OffsetReset::Earliest).max_poll_records(count);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
    let mut held = Vec::new();
    while held.iter().map(streamlog::Records::len).sum::<usize>() < count {
        held.push(consumer.poll(Duration::from_secs(1)).unwrap());
    }
    println!("held");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    for record in held.iter().flat_map(|r| r.iter()) {
        assert_eq!(record.value(), (record.offset() as u32).to_le_bytes().repeat(50).as_slice(), "record {}", record.offset());
    }
    println!("intact");
}

/// `until-gone DIR TOPIC ROLE`: produces to (ROLE `send`) or consumes from (ROLE `poll`) TOPIC
/// until a call fails, then prints `gone: ` and the error, and exits normally.
fn until_gone(args: &[String]) {
    let [dir, topic, role] = args else { panic!("bad arguments {args:?}") };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let producer = queue.producer();
    let config = ConsumerConfig::new("gone").auto_commit(None).auto_offset_reset(OffsetReset::Earliest);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.assign(&[TopicPartition::new(topic, 0)]).unwrap();
    let mut count = 0u64;
    let error = loop {
        let result = match role.as_str() {
            "send" => producer.send(topic, Record::new(&count.to_le_bytes())).map(drop),
            _ => consumer.poll(Duration::from_millis(1)).map(|records| {
                // Touch every byte: a mapping cut short would kill this process here.
                let sum: u64 = records.iter().map(|r| r.value().iter().map(|&b| u64::from(b)).sum::<u64>()).sum();
                std::hint::black_box(sum);
            }),
        };
        match result {
            Ok(()) => count += 1,
            Err(error) => break error,
        }
        if count == 100 {
            println!("running");
        }
    };
    println!("gone: {error:?}");
}

/// `compact DIR START`: sends records with keys `seq % 16` and values starting with `seq`
/// (from START on) to topic `t`, compacting after every 200, until killed.
fn compact(args: &[String]) {
    let [dir, start] = args else { panic!("bad arguments {args:?}") };
    let queue = Queue::open(Path::new(dir)).unwrap();
    let producer = queue.producer();
    for seq in start.parse::<u64>().unwrap().. {
        let mut value = seq.to_le_bytes().to_vec();
        value.resize(40, b'v');
        producer.send("t", Record::new(&value).key(&(seq % 16).to_le_bytes())).unwrap();
        if seq % 200 == 199 {
            queue.run_maintenance().unwrap();
        }
    }
}

/// `open-files DIR PARTITIONS`: sends one record to each of PARTITIONS partitions and reads them
/// back, then prints how many more descriptors the process has open than before.
fn open_files(args: &[String]) {
    let [dir, partitions] = args else { panic!("bad arguments {args:?}") };
    let partitions: u32 = partitions.parse().unwrap();
    let open_descriptors = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let queue = Queue::open(Path::new(dir)).unwrap();
    queue.create_topic("many", partitions).unwrap();
    let before = open_descriptors();
    let producer = queue.producer();
    for partition in 0..partitions {
        producer.send("many", Record::new(b"x").partition(partition)).unwrap();
    }
    let mut consumer = queue.consumer(ConsumerConfig::new("reader").auto_offset_reset(OffsetReset::Earliest)).unwrap();
    let all: Vec<TopicPartition> = (0..partitions).map(|p| TopicPartition::new("many", p)).collect();
    consumer.assign(&all).unwrap();
    let mut read = 0;
    while read < partitions as usize {
        read += consumer.poll(Duration::from_secs(5)).unwrap().len();
    }
    println!("descriptors {}", open_descriptors() - before);
}
