//! Background threads: the sealers, which make sealed segments durable, the makers of spare
//! segments for the next roll, the prefaulter, which maps pages ahead of the appends, and the
//! tickers that run a piece of work every interval until they are stopped (the catalog's
//! maintenance, keeper and flusher).

use std::ops::ControlFlow;
#[cfg(test)]
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

/// The background threads partitions hand work to: the sealers, which make sealed segments
/// durable (one short-lived thread per segment), the makers of spare segments (one per roll),
/// and the prefaulter, which maps the pages just past each active tail before appends reach
/// them (one thread, started on first use). Dropping the queue waits for them all, so that a clean shutdown leaves every sealed segment
/// marked synced (otherwise the next recovery scans it whole) and no mapping outlives it.
#[derive(Default)]
pub(crate) struct Background {
    /// The sealers and the makers of spare segments (one short-lived thread each).
    threads: Mutex<Vec<JoinHandle<()>>>,
    prefaulter: Mutex<Option<(Sender<Job>, JoinHandle<()>)>>,
    /// Set by tests to stand for sealing that has not run yet.
    #[cfg(test)]
    held_back: AtomicBool,
}

type Job = Box<dyn FnOnce() + Send>;

impl Background {
    pub(crate) fn seal(&self, work: impl FnOnce() + Send + 'static) {
        #[cfg(test)]
        if self.held_back.load(Ordering::Relaxed) {
            return;
        }
        // If no thread can be had the segment stays unsynced, which recovery copes with.
        let _ = self.detach("streamlog-seal", work);
    }

    /// Runs `work`, which syncs the files of a partition's next segment, on a thread of its
    /// own. Returns whether a thread could be had (if not, `work` is dropped).
    pub(crate) fn prepare_spare(&self, work: impl FnOnce() + Send + 'static) -> bool {
        self.detach("streamlog-spare", work)
    }

    /// Runs `work` on a new thread that `wait` joins; returns whether one could be started.
    fn detach(&self, name: &str, work: impl FnOnce() + Send + 'static) -> bool {
        let mut threads = self.threads.lock();
        threads.retain(|thread| !thread.is_finished());
        match std::thread::Builder::new().name(name.into()).spawn(work) {
            Ok(thread) => {
                threads.push(thread);
                true
            }
            Err(_) => false,
        }
    }

    /// Runs `work` on the prefaulter thread, after the work handed to it before. Work that
    /// cannot be run (no thread could be started) is dropped: prefaulting only saves time.
    pub(crate) fn prefault(&self, work: impl FnOnce() + Send + 'static) {
        let mut prefaulter = self.prefaulter.lock();
        if prefaulter.is_none() {
            let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
            let thread = std::thread::Builder::new().name("streamlog-prefault".into()).spawn(move || {
                for job in receiver {
                    job();
                }
            });
            *prefaulter = thread.ok().map(|thread| (sender, thread));
        }
        if let Some((sender, _)) = &*prefaulter {
            let _ = sender.send(Box::new(work));
        }
    }

    /// Makes later sealing stand for background work that has not run yet: it is dropped.
    #[cfg(test)]
    pub(crate) fn hold_back(&self) {
        self.held_back.store(true, Ordering::Relaxed);
    }

    /// Waits for the sealers, the makers of spares and for the prefaulter to finish what it was given (a later
    /// `prefault` starts it again).
    pub(crate) fn wait(&self) {
        let threads = std::mem::take(&mut *self.threads.lock());
        for thread in threads {
            let _ = thread.join();
        }
        let prefaulter = self.prefaulter.lock().take();
        if let Some((sender, thread)) = prefaulter {
            drop(sender);
            let _ = thread.join();
        }
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
