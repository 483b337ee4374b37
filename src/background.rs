//! Background threads: the releaser and the sealer, which give back what sealed segments
//! reserved past their data and make them durable, the makers of spare segments for the next
//! roll, the prefaulter, which maps pages ahead of the appends, and the tickers that run a
//! piece of work every interval until they are stopped (the catalog's maintenance, keeper and
//! flusher).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::sys::clock;

/// How long the rate at which this process's writers reach new pages is measured over before
/// the prefaulter is turned on or off.
const FILL_RATE_PERIOD_NS: u64 = 10_000_000;

/// Below this rate (bytes a second of new log written through mappings, all partitions of
/// the queue together) writers fault their pages in themselves: at 64 MiB/s that is 16,000
/// faults a second, a few percent of one writer's time, while each wake-up of the prefaulter
/// takes a processor for up to a few hundred microseconds from whatever runs there (on a
/// busy 2-core machine, a spinning sender or consumer, which sets their latency's p99).
const PREFAULT_MIN_BYTES_PER_SECOND: u64 = 64 << 20;

/// The background threads partitions hand work to: the releaser, which gives back what
/// sealed segments reserved past their data, and the sealer, which then makes them durable
/// (one thread each, started on first use, working in the order of the rolls); the makers of
/// spare segments (one short-lived thread per roll); and the prefaulter, which maps the pages
/// just past each active tail before appends reach them (one thread, started on first use,
/// used while writers fill pages fast). Dropping the queue waits for them all, so that a clean
/// shutdown leaves every sealed segment marked synced (otherwise the next recovery scans it
/// whole) and no mapping outlives it.
#[derive(Default)]
pub(crate) struct Background {
    /// The makers of spare segments (one short-lived thread each).
    threads: Mutex<Vec<JoinHandle<()>>>,
    releaser: Worker,
    sealer: Worker,
    prefaulter: Worker,
    fill_rate: FillRate,
    /// Set by tests to stand for sealing that has not run yet.
    #[cfg(test)]
    held_back: AtomicBool,
}

type Job = Box<dyn FnOnce() + Send>;

impl Background {
    /// Runs `release`, which gives back what a sealed segment reserved past its data, on the
    /// releaser thread, and then `seal`, which makes it durable, on the sealer thread: each
    /// after the work handed to it before. Starting a thread for each roll would cost the
    /// rolling send as much again as a hole punched, and releases do not wait behind the
    /// sealer's fsyncs (a few per segment). If no thread can be had the segment stays unsynced,
    /// which recovery copes with.
    pub(crate) fn seal(self: &Arc<Self>, release: impl FnOnce() + Send + 'static, seal: impl FnOnce() + Send + 'static) {
        #[cfg(test)]
        if self.held_back.load(Ordering::Relaxed) {
            return;
        }
        let background = Arc::clone(self);
        self.releaser.run(
            "streamlog-release",
            Box::new(move || {
                release();
                background.sealer.run("streamlog-seal", Box::new(seal));
            }),
        );
    }

    /// Runs `work`, which syncs the files of a partition's next segment, on a thread of its
    /// own, so that it does not wait behind the sealer's fsyncs. Returns whether a thread could
    /// be had (if not, `work` is dropped).
    pub(crate) fn prepare_spare(&self, work: impl FnOnce() + Send + 'static) -> bool {
        let mut threads = self.threads.lock();
        threads.retain(|thread| !thread.is_finished());
        match std::thread::Builder::new().name("streamlog-spare".into()).spawn(work) {
            Ok(thread) => {
                threads.push(thread);
                true
            }
            Err(_) => false,
        }
    }

    /// Runs `work`, which maps the next `bytes` of a segment, on the prefaulter thread, after
    /// the work handed to it before, if this process's writers fill pages fast enough for
    /// that to pay (see `PREFAULT_MIN_BYTES_PER_SECOND`). Work that is not run (too slow, or
    /// no thread could be started) is dropped: prefaulting only saves time.
    pub(crate) fn prefault(&self, bytes: u64, work: impl FnOnce() + Send + 'static) {
        if self.fill_rate.fast_after(bytes, clock::monotonic_now_ns()) {
            self.prefaulter.run("streamlog-prefault", Box::new(work));
        }
    }

    /// Makes later sealing stand for background work that has not run yet: it is dropped.
    #[cfg(test)]
    pub(crate) fn hold_back(&self) {
        self.held_back.store(true, Ordering::Relaxed);
    }

    /// Waits for the makers of spares, and for the releaser, the sealer and the prefaulter to
    /// finish what they were given (later work starts them again).
    pub(crate) fn wait(&self) {
        let threads = std::mem::take(&mut *self.threads.lock());
        for thread in threads {
            let _ = thread.join();
        }
        // The releaser first: it hands each segment on to the sealer.
        self.releaser.wait();
        self.sealer.wait();
        self.prefaulter.wait();
    }
}

/// A thread, started on first use, that runs the jobs handed to it in order.
#[derive(Default)]
struct Worker {
    thread: Mutex<Option<(Sender<Job>, JoinHandle<()>)>>,
}

impl Worker {
    /// Hands `job` to the thread, starting it as `name` if it is not running; a job is dropped
    /// if no thread can be started.
    fn run(&self, name: &str, job: Job) {
        let mut thread = self.thread.lock();
        if thread.is_none() {
            let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
            let started = std::thread::Builder::new().name(name.into()).spawn(move || {
                for job in receiver {
                    job();
                }
            });
            *thread = started.ok().map(|started| (sender, started));
        }
        if let Some((sender, _)) = &*thread {
            let _ = sender.send(job);
        }
    }

    /// Waits until the thread has run every job handed to it, and ends it.
    fn wait(&self) {
        let thread = self.thread.lock().take();
        if let Some((sender, thread)) = thread {
            drop(sender);
            let _ = thread.join();
        }
    }
}

/// The rate at which writers reach new pages, measured over periods of at least
/// `FILL_RATE_PERIOD_NS`, each ended by the first window claimed after it (so a period that
/// follows an idle spell is long, and its rate low).
#[derive(Default)]
struct FillRate {
    /// When the current period started (monotonic nanoseconds; 0 before the first).
    since_ns: AtomicU64,
    /// Bytes reached in the current period.
    bytes: AtomicU64,
    /// Whether the last whole period was below `PREFAULT_MIN_BYTES_PER_SECOND`.
    slow: AtomicBool,
}

impl FillRate {
    /// Counts `bytes` reached at `now_ns` and says whether the prefaulter is worth using: the
    /// rate of the last whole period (fast until one was measured). Writers on several threads
    /// may end a period at once; one of them measures it.
    fn fast_after(&self, bytes: u64, now_ns: u64) -> bool {
        let since_ns = self.since_ns.load(Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let elapsed_ns = now_ns.saturating_sub(since_ns);
        if since_ns == 0 {
            self.since_ns.store(now_ns, Ordering::Relaxed);
        } else if elapsed_ns >= FILL_RATE_PERIOD_NS
            && self.since_ns.compare_exchange(since_ns, now_ns, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            // Bytes other writers add meanwhile count in this period or the next, never twice.
            let total = self.bytes.swap(0, Ordering::Relaxed);
            let per_second = u128::from(total) * 1_000_000_000 / u128::from(elapsed_ns);
            self.slow.store(per_second < u128::from(PREFAULT_MIN_BYTES_PER_SECOND), Ordering::Relaxed);
        }
        !self.slow.load(Ordering::Relaxed)
    }
}

/// A thread that runs its work every interval until it is stopped or the work breaks.
pub(crate) struct Ticker {
    /// Sends a shorter interval; dropping it stops the thread.
    sender: Sender<Duration>,
    thread: JoinHandle<()>,
}

impl Ticker {
    /// Starts thread `name`, which calls `tick` every `interval` until `tick` breaks or the
    /// ticker is stopped; with `tick_on_stop`, stopping runs `tick` once more first.
    pub(crate) fn spawn(
        name: &str,
        interval: Duration,
        tick_on_stop: bool,
        mut tick: impl FnMut() -> ControlFlow<()> + Send + 'static,
    ) -> Ticker {
        let (sender, receiver) = crossbeam_channel::unbounded::<Duration>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut interval = interval;
                loop {
                    let stopping = match receiver.recv_timeout(interval) {
                        Ok(shorter) => {
                            interval = interval.min(shorter);
                            continue;
                        }
                        Err(RecvTimeoutError::Timeout) => false,
                        Err(RecvTimeoutError::Disconnected) => true,
                    };
                    if stopping && !tick_on_stop {
                        return;
                    }
                    if tick().is_break() || stopping {
                        return;
                    }
                }
            })
            .unwrap_or_else(|error| panic!("spawning the {name} thread: {error}"));
        Ticker { sender, thread }
    }

    /// Makes the interval `interval` from now on if that is shorter.
    pub(crate) fn shorten(&self, interval: Duration) {
        let _ = self.sender.send(interval);
    }

    /// Stops the thread (after a last tick if it was started so) and returns it to wait for.
    pub(crate) fn stop(self) -> JoinHandle<()> {
        drop(self.sender);
        self.thread
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefaulter_is_used_only_while_writers_fill_pages_fast() {
        let rate = FillRate::default();
        let period = FILL_RATE_PERIOD_NS;
        // Fast until a whole period was measured.
        assert!(rate.fast_after(4096, 1_000));
        assert!(rate.fast_after(4096, 1_000 + period / 2));
        // 8 KiB in a period of 10 ms is 0.8 MB/s: writers fault their own pages.
        assert!(!rate.fast_after(0, 1_000 + period));
        assert!(!rate.fast_after(1 << 20, 1_000 + period + 1));
        // 2 MiB more within the next period (200 MiB/s): the prefaulter again.
        assert!(!rate.fast_after(1 << 20, 1_000 + period + period / 2));
        assert!(rate.fast_after(0, 1_000 + 2 * period));
        // The threshold counts as fast; a byte less in the period as slow.
        let at_threshold = (PREFAULT_MIN_BYTES_PER_SECOND * period).div_ceil(1_000_000_000);
        assert!(rate.fast_after(at_threshold, 1_000 + 3 * period));
        assert!(!rate.fast_after(at_threshold - 1, 1_000 + 4 * period));
    }
}
