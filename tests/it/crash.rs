//! Real crashes: producer processes killed with SIGKILL at random moments, then the log is
//! checked: every acknowledged record is at its offset with its bytes, offsets are dense, and
//! nothing torn can be read.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use streamlog::{Queue, TopicConfig, TopicPartition};

use crate::Rng;
use crate::child::{self, value_for};
use crate::{TempDir, consumer_from_start};

const PARTITIONS: u32 = 2;

#[test]
fn acknowledged_records_survive_sigkill() {
    let seed = std::env::var("STREAMLOG_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    let rounds: u32 = std::env::var("STREAMLOG_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    println!("crash test seed {seed} (set STREAMLOG_CRASH_SEED to repeat), {rounds} rounds");
    let mut rng = Rng(seed);
    let dir = TempDir::new("crash");
    Queue::open(dir.path())
        .unwrap()
        .create_topic_with("crash", TopicConfig::new(PARTITIONS).segment_bytes(64 << 10).index_interval_bytes(512))
        .unwrap();
    let dir_arg = dir.path().display().to_string();
    // Which record each acknowledged (partition, offset) must hold.
    let mut acked: HashMap<(u32, u64), (u32, u64)> = HashMap::new();
    let mut checked_up_to = [0u64; PARTITIONS as usize];
    let mut next_producer = 0u32;
    let mut kills = 0;
    for round in 0..rounds {
        // Half the rounds keep a handle open in this process, so the survivors repair the lock a
        // dead writer held instead of a fresh open recovering the files.
        let watcher = (round % 2 == 0).then(|| Queue::open(dir.path()).unwrap());
        let durability = ["buffered", "buffered", "interval", "sync"][rng.below(4) as usize];
        let producers = 1 + rng.below(3) as u32;
        let mut children = Vec::new();
        let mut reaper = child::Reaper(Vec::new());
        for _ in 0..producers {
            let id = next_producer;
            next_producer += 1;
            let args = [dir_arg.clone(), "crash".into(), id.to_string(), "0".into(), PARTITIONS.to_string(), durability.into()];
            let mut process = child::spawn("produce", &args);
            let count = Arc::new(AtomicUsize::new(0));
            let acks = child::collect_acks_counting(&mut process, Arc::clone(&count));
            reaper.0.push(process.id());
            children.push((id, process, count, acks));
        }
        std::thread::sleep(Duration::from_millis(30 + rng.below(120)));
        // Kill one producer first; the others must keep going whatever it held when it died.
        children[0].1.kill().unwrap();
        children[0].1.wait().unwrap();
        kills += 1;
        let survivors_before: Vec<usize> = children[1..].iter().map(|c| c.2.load(Ordering::Relaxed)).collect();
        if !survivors_before.is_empty() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while children[1..].iter().zip(&survivors_before).any(|(c, &before)| c.2.load(Ordering::Relaxed) <= before) {
                assert!(Instant::now() < deadline, "round {round}: producers stalled after another was killed");
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(rng.below(30)));
        }
        for (_, process, _, _) in &mut children[1..] {
            process.kill().unwrap();
            process.wait().unwrap();
            kills += 1;
        }
        for (id, _, _, acks) in children {
            for (seq, partition, offset) in acks.join().unwrap() {
                let previous = acked.insert((partition, offset), (id, seq));
                assert!(previous.is_none(), "round {round}: offset {partition}/{offset} acknowledged twice");
            }
        }
        drop(watcher);
        let queue = Queue::open(dir.path()).unwrap();
        for partition in 0..PARTITIONS {
            checked_up_to[partition as usize] = verify(&queue, partition, checked_up_to[partition as usize], &acked, round);
        }
    }
    assert!(kills >= 50 || rounds < 50, "only {kills} kills");
    let queue = Queue::open(dir.path()).unwrap();
    for partition in 0..PARTITIONS {
        verify(&queue, partition, 0, &acked, rounds);
    }
    println!("{kills} producers killed, {} acknowledged records checked", acked.len());
}

/// Reads `partition` from `from` to its end and checks it against the acknowledgements;
/// returns the end offset.
pub(crate) fn verify(queue: &Queue, partition: u32, from: u64, acked: &HashMap<(u32, u64), (u32, u64)>, round: u32) -> u64 {
    let tp = TopicPartition::new("crash", partition);
    let (_, end) = queue.offsets(&tp).unwrap();
    let mut consumer = consumer_from_start(queue, "crash", PARTITIONS);
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, from).unwrap();
    let mut expected_offset = from;
    while expected_offset < end {
        let records = consumer.poll(Duration::from_secs(1)).unwrap();
        assert!(!records.is_empty(), "round {round}: partition {partition} stops at {expected_offset} of {end}");
        for r in records.iter() {
            assert_eq!(r.offset(), expected_offset, "round {round}: offsets must be dense");
            let text = String::from_utf8_lossy(r.value());
            let mut parts = text.split('-');
            let producer: u32 = parts.next().unwrap()[1..].parse().unwrap();
            let seq: u64 = parts.next().unwrap()[1..].parse().unwrap();
            assert_eq!(r.value(), value_for(producer, seq), "round {round}: record {partition}/{} was changed", r.offset());
            if let Some(&(acked_producer, acked_seq)) = acked.get(&(partition, r.offset())) {
                assert_eq!(
                    (producer, seq),
                    (acked_producer, acked_seq),
                    "round {round}: acknowledged record {partition}/{} replaced",
                    r.offset()
                );
            }
            expected_offset += 1;
        }
    }
    for (&(p, offset), _) in acked.iter().filter(|((p, o), _)| *p == partition && *o >= from) {
        assert!(offset < end, "round {round}: acknowledged record {p}/{offset} lost (log ends at {end})");
    }
    end
}
