//! Every platform-specific call streamlog makes, in one place: process-shared robust mutexes,
//! futex waits and wakes, space reservation and data syncs. Linux only.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

#[cfg(not(target_os = "linux"))]
compile_error!("streamlog uses Linux futexes and robust mutexes; other platforms are not supported");

/// How long a waiter for a [`RobustMutex`] sleeps before it looks at the lock again.
const LOST_WAKE_UP_RETRY: Duration = Duration::from_millis(5);

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
    pub(crate) fn lock(&self) -> io::Result<RobustGuard<'_>> {
        loop {
            let mut deadline = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime writes into the local timespec.
            unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut deadline) };
            let deadline = add_timespec(deadline, LOST_WAKE_UP_RETRY);
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

/// Wakes every thread, in any process, waiting on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only reads the address; a shared (non-private) futex is keyed by the
    // mapped file page, so waiters in other processes are found.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

#[repr(C)]
struct FutexWaitv {
    value: u64,
    address: u64,
    flags: u32,
    reserved: u32,
}

/// Most futexes one `futex_waitv` call accepts (a kernel limit).
pub(crate) const MAX_WAIT_WORDS: usize = 128;

/// Sleeps until one of `words` no longer holds its expected value, a wake arrives, or
/// `deadline` passes. Spurious returns are allowed; callers re-check their condition.
pub(crate) fn futex_wait_any(words: &[(&AtomicU32, u32)], deadline: Instant) {
    let now = Instant::now();
    if now >= deadline || words.is_empty() {
        return;
    }
    let mut remaining = deadline - now;
    if words.len() > MAX_WAIT_WORDS {
        // Only the first words can be watched: wake up often enough to notice the others.
        remaining = remaining.min(Duration::from_millis(1));
    }
    if let [(word, expected)] = words {
        let timeout = timespec(remaining);
        // SAFETY: the word lives in a mapping the caller keeps alive for the call; the kernel
        // compares it atomically with `expected` before sleeping.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, *expected, &timeout as *const libc::timespec);
        }
        return;
    }
    let waits: Vec<FutexWaitv> = words
        .iter()
        .take(MAX_WAIT_WORDS)
        .map(|(word, expected)| FutexWaitv {
            value: u64::from(*expected),
            address: word.as_ptr() as u64,
            flags: libc::FUTEX2_SIZE_U32 as u32,
            reserved: 0,
        })
        .collect();
    // futex_waitv takes an absolute CLOCK_MONOTONIC deadline.
    let mut start = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut start) };
    let absolute = add_timespec(start, remaining);
    let deadline = Instant::now() + remaining;
    // SAFETY: `waits` holds valid entries whose addresses stay mapped for the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waits.as_ptr(),
            waits.len() as libc::c_uint,
            0 as libc::c_uint,
            &absolute as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if result == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // Kernels older than 5.16: wait on the first word for a short while instead.
        let cap = Instant::now() + Duration::from_millis(1);
        futex_wait_any(&words[..1], deadline.min(cap));
    }
}

fn timespec(duration: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: duration.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: duration.subsec_nanos() as libc::c_long,
    }
}

fn add_timespec(start: libc::timespec, duration: Duration) -> libc::timespec {
    let extra = timespec(duration);
    let mut sum = libc::timespec { tv_sec: start.tv_sec.saturating_add(extra.tv_sec), tv_nsec: start.tv_nsec + extra.tv_nsec };
    if sum.tv_nsec >= 1_000_000_000 {
        sum.tv_sec += 1;
        sum.tv_nsec -= 1_000_000_000;
    }
    sum
}

/// Reserves disk blocks for `[0, length)` of `file`, growing it if needed, so that later writes
/// through a shared mapping cannot fail for lack of space (which would raise SIGBUS).
pub(crate) fn reserve(file: &File, length: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an owned descriptor.
    let code = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length as libc::off_t) };
    if code == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // File systems without fallocate: writing zeros allocates the blocks just the same.
        return write_zeros_to(file, length);
    }
    Err(error)
}

/// Gives the disk blocks of `[start, end)` of `file` back without changing its length: the range
/// becomes a hole that reads as zeros, so a mapping of the file stays valid (shortening it would
/// make touching the range raise SIGBUS). On a file system that cannot punch holes the blocks
/// just stay allocated, which is not an error.
pub(crate) fn punch_hole(file: &File, start: u64, end: u64) -> io::Result<()> {
    if start >= end {
        return Ok(());
    }
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: plain syscall on an owned descriptor.
    let code = unsafe { libc::fallocate(file.as_raw_fd(), mode, start as libc::off_t, (end - start) as libc::off_t) };
    if code == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return Ok(());
    }
    Err(error)
}

/// Device and inode: what a file is, whatever path names it.
pub(crate) fn file_identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

fn write_zeros_to(file: &File, length: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let current = file.metadata()?.len();
    let zeros = vec![0u8; 64 * 1024];
    let mut at = current;
    while at < length {
        let n = (length - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Flushes a file's data (and the metadata needed to read it back) to stable storage.
pub(crate) fn sync_data(file: &File) -> io::Result<()> {
    file.sync_data()
}

/// Makes a directory's entries (new, renamed or removed files) durable.
pub(crate) fn sync_directory(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    #[cfg(test)]
    SYNCED_DIRECTORIES.lock().push(path.to_path_buf());
    // O_DIRECTORY: whatever the path names now, nothing but a directory is opened (and never
    // a FIFO, which would block).
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path)?.sync_all()
}

/// Every directory `sync_directory` was asked to sync, for tests of what a power cut keeps.
#[cfg(test)]
static SYNCED_DIRECTORIES: parking_lot::Mutex<Vec<std::path::PathBuf>> = parking_lot::Mutex::new(Vec::new());

/// The directories synced so far by any thread of this test process.
#[cfg(test)]
pub(crate) fn synced_directories() -> Vec<std::path::PathBuf> {
    SYNCED_DIRECTORIES.lock().clone()
}

/// Wall-clock milliseconds since the Unix epoch. This is the precise clock (a vDSO read, no
/// system call), not `CLOCK_REALTIME_COARSE`: the coarse clock lags by up to a scheduler tick,
/// so a record could be stamped earlier than a clock reading its sender took before sending,
/// and `offset_for_time` with that reading would skip it.
pub(crate) fn wall_clock_ms() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    (now.tv_sec as u64).saturating_mul(1000) + now.tv_nsec as u64 / 1_000_000
}

/// Writes `pieces` one after another at `offset` of `file` (`pwritev`), retrying short writes.
pub(crate) fn write_all_vectored_at(file: &File, pieces: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut pieces: Vec<&[u8]> = pieces.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut first = 0;
    while first < pieces.len() {
        let vectors: Vec<libc::iovec> =
            pieces[first..].iter().map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() }).collect();
        // SAFETY: every iovec points at a live slice for the duration of the call; the kernel
        // only reads from them.
        let written =
            unsafe { libc::pwritev(file.as_raw_fd(), vectors.as_ptr(), vectors.len() as libc::c_int, offset as libc::off_t) };
        if written < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        let mut written = written as usize;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        offset += written as u64;
        while first < pieces.len() && written >= pieces[first].len() {
            written -= pieces[first].len();
            first += 1;
        }
        if first < pieces.len() {
            pieces[first] = &pieces[first][written..];
        }
    }
    Ok(())
}

/// Nanoseconds of `CLOCK_MONOTONIC`: one clock for every process on the machine, never set back,
/// so heartbeats written by one process can be judged by another.
pub(crate) fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64).saturating_mul(1_000_000_000) + now.tv_nsec as u64
}

fn byte_lock_request(kind: libc::c_int, byte: u64) -> libc::flock {
    // SAFETY: `flock` is plain data; all-zero is a valid value, then filled in.
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = kind as libc::c_short;
    request.l_whence = libc::SEEK_SET as libc::c_short;
    request.l_start = byte as libc::off_t;
    request.l_len = 1;
    request
}

/// Takes an exclusive open-file-description lock on one byte of `file`, without waiting; false
/// if another description holds it. The kernel drops the lock when the last descriptor of this
/// open file is closed, which includes the death of the process.
pub(crate) fn try_lock_byte(file: &File, byte: u64) -> io::Result<bool> {
    let request = byte_lock_request(libc::F_WRLCK, byte);
    // SAFETY: fcntl reads the local request; the descriptor is owned by `file`.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &request) } == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Ok(false),
        _ => Err(error),
    }
}

/// Whether an open file description other than `file`'s holds a lock on `byte`.
pub(crate) fn byte_locked_elsewhere(file: &File, byte: u64) -> io::Result<bool> {
    let mut request = byte_lock_request(libc::F_WRLCK, byte);
    // SAFETY: fcntl writes the answer into the local request.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut request) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(request.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn a_punched_hole_gives_space_back_and_reads_as_zeros_through_a_mapping() {
        let path = std::env::temp_dir().join(format!("streamlog-unit-punch-{}", std::process::id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        super::reserve(&file, 1 << 20).unwrap();
        file.write_all_at(&[0xAB; 5000], 0).unwrap();
        // SAFETY: the file is this test's own; nothing shortens it while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let before = file.metadata().unwrap().blocks() * 512;
        super::punch_hole(&file, 8192, 1 << 20).unwrap();
        let metadata = file.metadata().unwrap();
        assert_eq!(metadata.len(), 1 << 20, "the length stays");
        assert!(metadata.blocks() * 512 <= 8192 && before >= 1 << 20, "{before} then {} bytes", metadata.blocks() * 512);
        assert!(map[..5000].iter().all(|&b| b == 0xAB), "data before the hole changed");
        // Touching the hole through the mapping faults in zeros; it does not raise SIGBUS.
        assert!(map[8192..].iter().all(|&b| b == 0));
        drop(map);
        std::fs::remove_file(&path).unwrap();
    }
}
