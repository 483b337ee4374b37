//! Process-shared robust mutexes in shared mappings, held only through an RAII guard: when a
//! holder dies, even by SIGKILL, the kernel releases the mutex and the next locker learns so.

#![expect(unsafe_code, reason = "process-shared robust pthread mutexes")]

use std::io;
use std::time::Duration;

use crate::sys::clock;

/// How long a waiter for a [`RobustMutex`] sleeps before it looks at the lock again.
const LOST_WAKE_UP_RETRY: Duration = Duration::from_millis(5);

/// How many times [`RobustMutex::lock`] tries a held lock again, a spin-loop hint apart,
/// before it sleeps: a few microseconds.
const SPINS_BEFORE_SLEEP: u32 = 100;

/// Bytes a process-shared mutex takes inside a shared mapping.
pub(crate) const MUTEX_BYTES: usize = std::mem::size_of::<libc::pthread_mutex_t>();

/// A held [`RobustMutex`]: the only way to hold one, so that it is released however the holder's
/// scope ends, a panic included (a cross-process mutex left locked would stop every process).
/// Not `Send`: a pthread mutex is unlocked by the thread that locked it.
pub(crate) struct RobustGuard<'a> {
    mutex: &'a RobustMutex,
    owner_died: bool,
    _thread_bound: std::marker::PhantomData<*const ()>,
}

impl RobustGuard<'_> {
    /// Whether the previous holder died while holding the mutex; the holder must then repair
    /// the shared state and call [`RobustGuard::mark_consistent`].
    pub(crate) fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// Marks shared state as repaired after the previous holder died.
    pub(crate) fn mark_consistent(&self) -> io::Result<()> {
        // SAFETY: called by the current holder (this guard exists), as pthread requires.
        check(unsafe { libc::pthread_mutex_consistent(self.mutex.0) })
    }
}

impl Drop for RobustGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this thread holds the mutex (it is not `Send`),
        // and it is dropped once, so every successful lock is paired with exactly one unlock.
        unsafe { libc::pthread_mutex_unlock(self.mutex.0) };
    }
}

/// A `pthread_mutex_t` that lives in a shared file mapping, set up as process-shared and robust:
/// when a holder dies (even by SIGKILL) the kernel releases it and the next locker learns so.
pub(crate) struct RobustMutex(*mut libc::pthread_mutex_t);

// SAFETY: the pointer targets a pthread mutex inside a MAP_SHARED mapping that outlives this
// handle (the owner keeps the mapping alive); pthread mutexes are designed to be used from any
// thread, and process-shared ones from any process.
unsafe impl Send for RobustMutex {}
// SAFETY: as above; all access goes through pthread calls that synchronise internally.
unsafe impl Sync for RobustMutex {}

impl RobustMutex {
    /// Wraps a mutex at `ptr`.
    ///
    /// # Safety
    /// `ptr` must point to `MUTEX_BYTES` suitably aligned bytes of a shared mapping that stays
    /// mapped for as long as the returned value exists.
    pub(crate) unsafe fn at(ptr: *mut u8) -> Self {
        Self(ptr.cast())
    }

    /// Initialises the mutex in place. Only call while no other thread or process can use it.
    pub(crate) fn init(&self) -> io::Result<()> {
        // SAFETY: `self.0` points to writable, aligned memory (see `at`); the attribute object
        // is a local that is initialised before use and destroyed after.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            check(libc::pthread_mutexattr_init(&mut attr))?;
            check(libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED))?;
            check(libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST))?;
            let result = check(libc::pthread_mutex_init(self.0, &attr));
            libc::pthread_mutexattr_destroy(&mut attr);
            result
        }
    }

    /// Blocks until the mutex is held by this thread.
    ///
    /// It never sleeps for long at a time: an unlock wakes one waiter, and if that waiter is
    /// killed before it takes the lock, the wake-up is lost (the kernel repairs locks whose
    /// owner dies, not waiters). Retrying every few milliseconds bounds what such a death costs.
    ///
    /// The locks it guards are held for a few hundred nanoseconds, so before it sleeps it tries
    /// again for a few microseconds (a holder on another core is done by then, and sleeping
    /// costs two context switches); an uncontended lock takes one `trylock`.
    pub(crate) fn lock(&self) -> io::Result<RobustGuard<'_>> {
        for _ in 0..SPINS_BEFORE_SLEEP {
            if let Some(guard) = self.try_lock()? {
                return Ok(guard);
            }
            std::hint::spin_loop();
        }
        loop {
            let deadline = clock::add_timespec(clock::now(libc::CLOCK_REALTIME), LOST_WAKE_UP_RETRY);
            // SAFETY: the mutex was initialised by `init` before any handle could reach it.
            match unsafe { libc::pthread_mutex_timedlock(self.0, &deadline) } {
                0 => return Ok(self.held(false)),
                libc::EOWNERDEAD => return Ok(self.held(true)),
                libc::ETIMEDOUT => continue,
                code => return Err(io::Error::from_raw_os_error(code)),
            }
        }
    }

    /// Takes the mutex if it is free; `None` if another thread holds it.
    pub(crate) fn try_lock(&self) -> io::Result<Option<RobustGuard<'_>>> {
        // SAFETY: the mutex was initialised by `init` before any handle could reach it.
        match unsafe { libc::pthread_mutex_trylock(self.0) } {
            0 => Ok(Some(self.held(false))),
            libc::EOWNERDEAD => Ok(Some(self.held(true))),
            libc::EBUSY => Ok(None),
            code => Err(io::Error::from_raw_os_error(code)),
        }
    }

    /// The guard of a lock this thread just took.
    fn held(&self, owner_died: bool) -> RobustGuard<'_> {
        RobustGuard { mutex: self, owner_died, _thread_bound: std::marker::PhantomData }
    }
}

fn check(code: libc::c_int) -> io::Result<()> {
    if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(code)) }
}
