//! Producer-to-consumer latency: from just before `send` to just after `poll` returns the
//! record, within one process and between two, with the consumer sleeping on the futex
//! (the default) or spinning (`busy_poll`).
//!
//! The sender puts a CLOCK_MONOTONIC reading in each record and sends one every 20 µs, so the
//! numbers are latency rather than queueing. For the two-process case this program re-runs
//! itself as the sender (`latency sender DIR TOPIC COUNT`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Percentiles, Report, ScratchDir, micros, monotonic_ns, spin_until};
use streamlog::{Consumer, ConsumerConfig, OffsetReset, Producer, Queue, Record, TopicPartition};

const SENDER_ROLE: &str = "sender";
const VALUE_BYTES: usize = 100;
/// The pause between two sends: long enough that each record finds the consumer idle.
const SEND_INTERVAL_NS: u64 = 20_000;
/// How long the consumer waits for the next record before declaring it lost.
const LOST_AFTER: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(SENDER_ROLE) {
        let [dir, topic, count] = &args[2..] else { panic!("usage: latency sender DIR TOPIC COUNT") };
        let queue = Queue::open(dir).expect("open the queue in the sender");
        send_paced(&queue.producer(), topic, count.parse().expect("a record count"));
        return;
    }

    let full = common::full_mode();
    if full {
        common::settle();
    }
    let count: u64 = if full { 200_000 } else { 500 };
    // The first records pay for page faults and cold caches; they are not what is measured.
    let warmup = count / 10;
    let dir = ScratchDir::new("latency");
    let queue = Queue::open(dir.path()).expect("open the queue");
    let mut report = Report::default();

    // What is measured, in two processes or one, spinning or not, and the targets for p50
    // and p99 in nanoseconds (issue 13's for one process).
    let cases = [
        ("1 process, futex wait (default)", false, false, (None, Some(50_000))),
        ("1 process, `busy_poll`", false, true, (Some(1_000), Some(10_000))),
        ("2 processes, futex wait (default)", true, false, (Some(50_000), None)),
        ("2 processes, `busy_poll`", true, true, (Some(5_000), Some(50_000))),
    ];
    for (i, (what, two_processes, busy_poll, targets_ns)) in cases.into_iter().enumerate() {
        let topic = format!("latency-{i}");
        queue.create_topic(&topic, 1).expect("create the topic");
        let config = ConsumerConfig::new("bench").auto_offset_reset(OffsetReset::Earliest).busy_poll(busy_poll);
        let mut consumer = queue.consumer(config).expect("consumer");
        consumer.assign(&[TopicPartition::new(&topic, 0)]).expect("assign");

        let latencies_ns = if two_processes {
            let mut sender = Command::new(std::env::current_exe().expect("this program's path"))
                .args([SENDER_ROLE, &dir.path().display().to_string(), &topic, &count.to_string()])
                .spawn()
                .expect("start the sender process");
            let latencies_ns = receive(&mut consumer, count);
            assert!(sender.wait().expect("wait for the sender").success(), "the sender process failed");
            latencies_ns
        } else {
            std::thread::scope(|scope| {
                let receiver = scope.spawn(|| receive(&mut consumer, count));
                send_paced(&queue.producer(), &topic, count);
                receiver.join().expect("the receiving thread panicked")
            })
        };

        let p = Percentiles::of(latencies_ns[warmup as usize..].to_vec());
        let measured = format!("{} / {} / {} / {}", micros(p.p50_ns), micros(p.p99_ns), micros(p.p999_ns), micros(p.max_ns));
        let (p50_target, p99_target) = targets_ns;
        let targets = [("p50", p50_target, p.p50_ns), ("p99", p99_target, p.p99_ns)];
        let target = targets.iter().filter_map(|(name, t, _)| Some(format!("{name} ≤ {}", micros((*t)?)))).collect::<Vec<_>>();
        let met = (!target.is_empty()).then(|| targets.iter().all(|(_, t, measured)| t.is_none_or(|t| *measured <= t)));
        let target = target.join(", ");
        report.add(&format!("latency p50 / p99 / p99.9 / max, {what}"), measured, &target, met);
    }
    drop(queue);
    report.print("Latency", full);
}

/// Sends `count` records to partition 0, one every `SEND_INTERVAL_NS`, each carrying its
/// sequence number and the CLOCK_MONOTONIC time just before its `send`.
fn send_paced(producer: &Producer, topic: &str, count: u64) {
    let mut value = [0u8; VALUE_BYTES];
    let mut next_send_ns = monotonic_ns();
    for seq in 0..count {
        spin_until(next_send_ns);
        let now_ns = monotonic_ns();
        value[..8].copy_from_slice(&seq.to_le_bytes());
        value[8..16].copy_from_slice(&now_ns.to_le_bytes());
        producer.send(topic, Record::new(&value).partition(0)).expect("send");
        // Counted from this send rather than the previous deadline, so a sender that fell
        // behind (say, descheduled) does not catch up in a burst that would measure queueing.
        next_send_ns = now_ns + SEND_INTERVAL_NS;
    }
}

/// Polls until `count` records arrived, checking they come in order, and returns each one's
/// latency in nanoseconds.
fn receive(consumer: &mut Consumer, count: u64) -> Vec<u64> {
    let mut latencies_ns = Vec::with_capacity(count as usize);
    while (latencies_ns.len() as u64) < count {
        let records = consumer.poll(LOST_AFTER).expect("poll");
        let received_ns = monotonic_ns();
        assert!(!records.is_empty(), "record {} did not arrive within {LOST_AFTER:?}", latencies_ns.len());
        for record in records.iter() {
            let value = record.value();
            let seq = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
            let sent_ns = u64::from_le_bytes(value[8..16].try_into().expect("8 bytes"));
            assert_eq!(seq, latencies_ns.len() as u64, "records out of order");
            latencies_ns.push(received_ns.saturating_sub(sent_ns));
        }
    }
    latencies_ns
}
