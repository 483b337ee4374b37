//! Running producers and consumers against a store: the loops every workload shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::contender::{Res, Store};
use crate::measure::{latency_histogram, monotonic_ns};

/// One run: producers sending while a group of consumers reads.
#[derive(Debug, Clone)]
pub struct Run {
    pub producers: usize,
    /// Records per send call: 1 sends one at a time.
    pub batch: usize,
    /// Members of the consumer group; 0 only produces.
    pub consumers: usize,
    /// Records to send in all, unless `cap` runs out first.
    pub records: u64,
    pub value_bytes: usize,
    /// Producers stop at this much time, whatever they have sent.
    pub cap: Duration,
    /// Records per second in all producers together; `None` sends as fast as possible.
    pub pace: Option<f64>,
    /// Records already in the store, which the consumers read too.
    pub preloaded: u64,
    /// Whether to time each send and each record's trip from send to arrival. It costs about
    /// as much as a fast send, so throughput runs leave it off.
    pub timed: bool,
}

impl Run {
    /// One producer sending `records` of `value_bytes` as fast as it can, no consumers.
    pub fn produce(records: u64, batch: usize, value_bytes: usize, cap: Duration) -> Run {
        Run { producers: 1, batch, consumers: 0, records, value_bytes, cap, pace: None, preloaded: 0, timed: false }
    }

    /// A group of `members` reading `preloaded` records already there, nobody producing.
    pub fn consume(preloaded: u64, members: usize) -> Run {
        Run {
            producers: 0,
            batch: 1,
            consumers: members,
            records: 0,
            value_bytes: 0,
            cap: Duration::ZERO,
            pace: None,
            preloaded,
            timed: false,
        }
    }
}

pub struct Outcome {
    pub produced: u64,
    pub consumed: u64,
    /// From the start until the last producer finished.
    pub produce_time: Duration,
    /// From the start until the consumers had every record.
    pub total_time: Duration,
    /// How long each send call took to be acknowledged.
    pub send_latency: Histogram<u64>,
    /// From a record's send to its arrival at a consumer (when the value holds a timestamp).
    pub delivery_latency: Histogram<u64>,
}

/// Writes the time a record is sent (CLOCK_MONOTONIC nanoseconds) into its first 8 bytes.
fn stamp(value: &mut [u8], sent_ns: u64) {
    if value.len() >= 8 {
        value[..8].copy_from_slice(&sent_ns.to_le_bytes());
    }
}

/// Runs producers and consumers as `run` says and waits until every record sent is read.
pub fn run(store: &Arc<dyn Store>, run: &Run, group: &str) -> Res<Outcome> {
    let produced = Arc::new(AtomicU64::new(0));
    let producers_done = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    // Every producer and consumer is made before any thread starts, so that a failure here
    // leaves nothing running, and the clock starts once they are all ready.
    let consumers: Vec<_> = (0..run.consumers).map(|member| store.consumer(group, member, run.consumers)).collect::<Res<_>>()?;
    let producers: Vec<_> = (0..run.producers).map(|_| store.producer()).collect::<Res<_>>()?;
    let start = Instant::now();
    let deadline = start + run.cap;
    let last_arrival_ns = Arc::new(AtomicU64::new(0));
    let preloaded = run.preloaded;
    let consumer_threads: Vec<_> = consumers
        .into_iter()
        .map(|mut consumer| {
            let (produced, producers_done, consumed, failed, last_arrival_ns) =
                (produced.clone(), producers_done.clone(), consumed.clone(), failed.clone(), last_arrival_ns.clone());
            let stamped = run.timed && run.value_bytes >= 8;
            std::thread::spawn(move || -> Res<Histogram<u64>> {
                let mut latency = latency_histogram();
                let give_up = Instant::now() + Duration::from_secs(600);
                loop {
                    let done = producers_done.load(Ordering::Acquire);
                    let target = preloaded + produced.load(Ordering::Acquire);
                    if (done && consumed.load(Ordering::Acquire) >= target) || failed.load(Ordering::Relaxed) {
                        return Ok(latency);
                    }
                    if Instant::now() > give_up {
                        return Err(format!(
                            "consumers read {} of {target} records in 10 minutes",
                            consumed.load(Ordering::Relaxed)
                        )
                        .into());
                    }
                    let count = consumer.poll(Duration::from_millis(20), &mut |value| {
                        if stamped && value.len() >= 8 {
                            let sent = u64::from_le_bytes(value[..8].try_into().expect("8 bytes"));
                            let _ = latency.record(monotonic_ns().saturating_sub(sent).max(1));
                        }
                    });
                    let count = match count {
                        Ok(count) => count,
                        Err(error) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(error);
                        }
                    };
                    if count > 0 {
                        consumed.fetch_add(count as u64, Ordering::AcqRel);
                        last_arrival_ns.fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let per_producer = run.records.div_ceil(run.producers.max(1) as u64);
    let producer_threads: Vec<_> = producers
        .into_iter()
        .enumerate()
        .map(|(index, mut producer)| {
            let (produced, failed) = (produced.clone(), failed.clone());
            let run = run.clone();
            std::thread::spawn(move || -> Res<Histogram<u64>> {
                let mut latency = latency_histogram();
                let mut value = vec![0xa5u8; run.value_bytes];
                let interval_ns = run.pace.map(|rate| (1e9 / rate * run.producers as f64) as u64);
                let first_ns = monotonic_ns();
                let mut sent = 0u64;
                let mut key = index as u64 * per_producer;
                // The clock, the deadline and the shared counter cost as much as a fast send:
                // each is touched only as often as it is needed.
                let mut checked = 0;
                while sent < per_producer {
                    if sent >= checked {
                        if Instant::now() >= deadline || failed.load(Ordering::Relaxed) {
                            break;
                        }
                        checked = sent + 64;
                    }
                    if let Some(interval) = interval_ns {
                        // Records are 10 µs apart: too close to sleep between them.
                        let due = first_ns + sent * interval;
                        while monotonic_ns() < due {
                            std::hint::spin_loop();
                        }
                    }
                    let count = (run.batch as u64).min(per_producer - sent);
                    // A paced send is timed from when it was due, not from when a slow store let
                    // it go: otherwise the backlog would not count (coordinated omission).
                    let began = match interval_ns {
                        Some(interval) => first_ns + sent * interval,
                        None if run.timed => monotonic_ns(),
                        None => 0,
                    };
                    if run.timed {
                        stamp(&mut value, began);
                    }
                    let outcome = if count == 1 {
                        producer.send(key, &value)
                    } else {
                        let records: Vec<(u64, &[u8])> = (0..count).map(|i| (key + i, &value[..])).collect();
                        producer.send_batch(&records)
                    };
                    if let Err(error) = outcome {
                        failed.store(true, Ordering::Relaxed);
                        return Err(error);
                    }
                    if run.timed {
                        let _ = latency.record((monotonic_ns() - began).max(1));
                    }
                    sent += count;
                    key += count;
                }
                produced.fetch_add(sent, Ordering::AcqRel);
                Ok(latency)
            })
        })
        .collect();
    let mut send_latency = latency_histogram();
    let mut first_error = None;
    for thread in producer_threads {
        match thread.join().expect("producer thread") {
            Ok(histogram) => send_latency.add(histogram).expect("same bounds"),
            Err(error) => first_error = first_error.or(Some(error)),
        }
    }
    let produce_time = start.elapsed();
    producers_done.store(true, Ordering::Release);
    let mut delivery_latency = latency_histogram();
    for thread in consumer_threads {
        match thread.join().expect("consumer thread") {
            Ok(histogram) => delivery_latency.add(histogram).expect("same bounds"),
            Err(error) => first_error = first_error.or(Some(error)),
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    let (produced, consumed) = (produced.load(Ordering::Acquire), consumed.load(Ordering::Acquire));
    if run.consumers > 0 && consumed != preloaded + produced {
        return Err(format!("the consumers read {consumed} records of the {} there were", preloaded + produced).into());
    }
    let total_time = if run.consumers == 0 {
        produce_time
    } else {
        Duration::from_nanos(last_arrival_ns.load(Ordering::Relaxed)).max(produce_time)
    };
    Ok(Outcome { produced, consumed, produce_time, total_time, send_latency, delivery_latency })
}
