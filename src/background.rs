//! Background threads: the sealer's, which make sealed segments durable, and the tickers that
//! run a piece of work every interval until they are stopped (the catalog's maintenance, keeper
//! and flusher).

use std::ops::ControlFlow;
#[cfg(test)]
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

/// The background threads that make sealed segments durable. Dropping the queue waits for
/// them, so that a clean shutdown leaves every sealed segment marked synced (otherwise the next
/// recovery scans it whole).
#[derive(Default)]
pub(crate) struct Sealer(
    Mutex<Vec<JoinHandle<()>>>,
    /// Set by tests to stand for background work that has not run yet.
    #[cfg(test)]
    AtomicBool,
);

impl Sealer {
    pub(crate) fn spawn(&self, work: impl FnOnce() + Send + 'static) {
        #[cfg(test)]
        if self.1.load(Ordering::Relaxed) {
            return;
        }
        let mut threads = self.0.lock();
        threads.retain(|thread| !thread.is_finished());
        // If no thread can be had the segment stays unsynced, which recovery copes with.
        if let Ok(thread) = std::thread::Builder::new().name("streamlog-seal".into()).spawn(work) {
            threads.push(thread);
        }
    }

    /// Makes later work stand for background work that has not run yet: it is dropped.
    #[cfg(test)]
    pub(crate) fn hold_back(&self) {
        self.1.store(true, Ordering::Relaxed);
    }

    pub(crate) fn wait(&self) {
        let threads = std::mem::take(&mut *self.0.lock());
        for thread in threads {
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
