//! Workload 2 for streamlog across processes: four producer processes and a group of four
//! consumer processes, all on one directory. The harness runs copies of itself as children.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamlog::{ConsumerConfig, OffsetReset, Queue, Record, TopicConfig};

use crate::contender::Res;
use crate::workloads::VALUE_BYTES;

const TOPIC: &str = "bench";
const GROUP: &str = "w2";

/// Kills a child when dropped, so that a failed run leaves no process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Res<Reaped> {
    let child = Command::new(std::env::current_exe()?).arg("child").args(args).stdout(Stdio::piped()).spawn()?;
    Ok(Reaped(child))
}

/// Waits for a child's first line of output: it says it is ready.
fn await_ready(child: &mut Reaped) -> Res<()> {
    let mut line = String::new();
    BufReader::new(child.0.stdout.as_mut().expect("piped")).read_line(&mut line)?;
    if line.trim() == "ready" { Ok(()) } else { Err(format!("a child process failed to start: {line:?}").into()) }
}

/// Runs the whole workload and returns how many records were sent and the time from the
/// producers' start until the group had committed every one of them.
pub fn fan_in_fan_out(dir: &Path, records: u64) -> Res<(u64, Duration)> {
    let queue = Queue::open(dir)?;
    queue.create_topic_with(TOPIC, TopicConfig::new(8))?;
    let dir_arg = dir.to_str().ok_or("scratch path is not UTF-8")?;
    let mut consumers: Vec<Reaped> = (0..4).map(|_| spawn(&["consume", dir_arg])).collect::<Res<_>>()?;
    for consumer in &mut consumers {
        await_ready(consumer)?;
    }
    wait_until(Duration::from_secs(30), || {
        let group = queue.describe_group(GROUP)?;
        Ok(group.members.len() == 4 && group.partitions.iter().all(|p| p.owner.is_some()))
    })?;
    let started = Instant::now();
    let per_producer = records / 4;
    let mut producers: Vec<Reaped> = (0..4)
        .map(|i| spawn(&["produce", dir_arg, &per_producer.to_string(), &(i * per_producer).to_string()]))
        .collect::<Res<_>>()?;
    wait_until(Duration::from_secs(600), || {
        for producer in &mut producers {
            if let Some(status) = producer.0.try_wait()?
                && !status.success()
            {
                return Err(format!("a producer process failed: {status}").into());
            }
        }
        let group = queue.describe_group(GROUP)?;
        Ok(group.partitions.iter().map(|p| p.committed.unwrap_or(0)).sum::<u64>() >= per_producer * 4)
    })?;
    let elapsed = started.elapsed();
    drop((producers, consumers));
    Ok((per_producer * 4, elapsed))
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> Res<bool>) -> Res<()> {
    let deadline = Instant::now() + limit;
    while !done()? {
        if Instant::now() > deadline {
            return Err("workload 2 (processes) did not finish in time".into());
        }
        // Often enough to time a run of seconds; rarely enough not to disturb the group.
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The child side: `produce <dir> <count> <first key>` or `consume <dir>`.
pub fn child(args: &[String]) -> Res<()> {
    // A child must not outlive a harness that was killed.
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let [role, dir, rest @ ..] = args else { return Err("child: missing role and directory".into()) };
    let queue = Queue::open(dir)?;
    match (role.as_str(), rest) {
        ("produce", [count, first_key]) => {
            let (count, first_key): (u64, u64) = (count.parse()?, first_key.parse()?);
            let producer = queue.producer();
            let value = [0x5au8; VALUE_BYTES];
            for key in first_key..first_key + count {
                producer.send(TOPIC, Record::new(&value).key(&key.to_le_bytes()))?;
            }
            Ok(())
        }
        ("consume", []) => {
            let config =
                ConsumerConfig::new(GROUP).auto_offset_reset(OffsetReset::Earliest).max_poll_records(8192).auto_commit(None);
            let mut consumer = queue.consumer(config)?;
            consumer.subscribe(&[TOPIC])?;
            println!("ready");
            loop {
                let records = consumer.poll(Duration::from_millis(100))?;
                if !records.is_empty() {
                    consumer.commit()?;
                }
            }
        }
        _ => Err(format!("child: unknown role {role:?}").into()),
    }
}
