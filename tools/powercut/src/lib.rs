//! A FUSE file system for tests that loses exactly what a power cut may lose.
//!
//! Every file has a live image (what reads see) and a durable image (what survives a cut); a
//! file's fsync or fdatasync (which `msync(MS_SYNC)` also reaches) makes its data and size
//! durable. Every directory has live and durable entries; only an fsync of the directory makes
//! its entries durable (a file's own fsync does not: the strict POSIX model). A cut unmounts and
//! mounts again holding only what is reachable from the root through durable entries, each file
//! with its durable image; a torn cut also keeps a random part of what was not synced.
//!
//! The daemon runs as threads of the process that mounts; other processes use the mount as any
//! file system. Locks (flock, fcntl and OFD locks) are the kernel's own, and shared writable
//! mappings go through the kernel's page cache, so robust mutexes and futexes in mapped files
//! work across processes. Mounting needs `/dev/fuse` and root (or `fusermount3`).

mod fuse;
mod model;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use model::{Cut, CutReport};

/// Counts of what reached the file system since it was first mounted (cuts do not reset them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// WRITE requests: write(2), pwrite(2), and writeback of pages written through a mapping.
    pub writes: u64,
    /// Bytes those requests carried.
    pub bytes_written: u64,
    /// Size changes (truncate, ftruncate, O_TRUNC).
    pub truncates: u64,
    /// fallocate calls of every mode.
    pub fallocates: u64,
    /// Renames.
    pub renames: u64,
    /// fsync and fdatasync of files (msync reaches them too), failed and lying ones included.
    pub fsyncs: u64,
    /// fsync of directories.
    pub dir_fsyncs: u64,
    /// fsyncs failed with EIO by [`PowerCutFs::fail_fsync`].
    pub failed_fsyncs: u64,
    /// fsyncs answered success without making anything durable ([`PowerCutFs::set_fsync_lies`]).
    pub lied_fsyncs: u64,
    /// Power cuts.
    pub cuts: u64,
    /// Requests refused with EIO because they reached a session a cut (or unmount) had ended.
    pub refused: u64,
}

/// Everything the sessions and the handle share.
pub(crate) struct State {
    pub(crate) tree: model::Tree,
    /// The session that may answer; a cut or unmount moves it on, so older sessions refuse.
    pub(crate) generation: u64,
    pub(crate) lies: bool,
    /// Pending fsync failures: a root-relative path ("" = every file) and how many remain.
    pub(crate) failures: Vec<(PathBuf, u32)>,
    pub(crate) stats: Stats,
}

pub(crate) struct Shared(Mutex<State>);

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a bug here) must not wedge the mount: the state is
        // still consistent enough to answer and to unmount.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A mounted, in-memory file system that loses what a power cut may lose; unmounts on drop.
pub struct PowerCutFs {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl PowerCutFs {
    /// Mounts an empty file system at `mountpoint` (created if missing).
    pub fn mount(mountpoint: impl AsRef<Path>) -> io::Result<PowerCutFs> {
        let path = mountpoint.as_ref();
        std::fs::create_dir_all(path).or_else(|error| {
            // A mount left behind by a test process that was killed answers ENOTCONN: take it away.
            if error.raw_os_error() == Some(libc::ENOTCONN) { unmount(path) } else { Err(error) }
        })?;
        let path = path.canonicalize()?;
        let state = State { tree: model::Tree::new(), generation: 0, lies: false, failures: Vec::new(), stats: Stats::default() };
        let fs = PowerCutFs { shared: Arc::new(Shared(Mutex::new(state))), path };
        fs.start_session(0)?;
        Ok(fs)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A power cut. Every process using the mount must be dead and reaped and the caller must
    /// have dropped everything open under it. Drops all that is not durable, unmounts (so the
    /// kernel's page cache of the old mount is gone) and mounts again at the same path holding
    /// only what survived. Operations that reach the old session after the cut began are
    /// refused (EIO).
    pub fn cut(&mut self, mode: Cut) -> io::Result<CutReport> {
        let (generation, report) = {
            let mut state = self.shared.lock();
            state.generation += 1;
            let (tree, report) = state.tree.cut(mode);
            state.tree = tree;
            state.stats.cuts += 1;
            (state.generation, report)
        };
        // The old session refuses everything from here on, so the writeback the kernel does
        // while the old mount goes away changes nothing, and nothing can wait on it for long.
        unmount(&self.path)?;
        self.start_session(generation)?;
        Ok(report)
    }

    /// The next `times` fsync/fdatasync/msync of files at or under `relative` (a path relative
    /// to the mount; "" = everything) fail with EIO and make nothing durable. Directory fsyncs
    /// are not affected.
    pub fn fail_fsync(&self, relative: impl AsRef<Path>, times: u32) {
        if times > 0 {
            self.shared.lock().failures.push((model::relative(relative.as_ref()), times));
        }
    }

    /// While set, fsync and directory fsync answer success but make nothing durable (a lying
    /// disk): the campaigns' checkers must catch it.
    pub fn set_fsync_lies(&self, lie: bool) {
        self.shared.lock().lies = lie;
    }

    /// What reached the file system so far.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats
    }

    /// `syncfs(2)` on the mount: the kernel writes every dirty page (including pages written
    /// through shared mappings) back to the file system as WRITE requests. This FUSE file
    /// system is not told to sync (the kernel sends no fsync for syncfs), so nothing becomes
    /// durable: it forces "writeback happened, fsync did not".
    pub fn writeback(&self) -> io::Result<()> {
        let directory = std::fs::File::open(&self.path)?;
        // SAFETY: syncfs only takes a descriptor, which `directory` owns for the call.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&directory)) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Mounts a session answering for `generation`, its daemon on threads of this process.
    fn start_session(&self, generation: u64) -> io::Result<()> {
        let mut config = fuser::Config::default();
        config.mount_options =
            vec![fuser::MountOption::FSName("powercut".into()), fuser::MountOption::DefaultPermissions];
        // Two threads, so one slow request (a large read) does not hold every process up.
        config.n_threads = Some(2);
        let session = fuse::Session { shared: Arc::clone(&self.shared), generation };
        let session = fuser::Session::new(session, &self.path, &config)?;
        // The session ends (and its thread with it) when the kernel drops the connection, which
        // happens once the unmounted file system's last user is gone. Its own unmount attempt
        // then finds the connection dead and leaves the newer mount at the same path alone.
        std::thread::Builder::new().name("powercut".into()).spawn(move || session.run())?;
        Ok(())
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        self.shared.lock().generation += 1;
        if let Err(error) = unmount(&self.path) {
            eprintln!("powercut: could not unmount {}: {error}", self.path.display());
        }
    }
}

/// Detaches the mount at `path` now (lazily: users left behind keep the old session, which
/// refuses them, instead of making the unmount fail or wait).
fn unmount(path: &Path) -> io::Result<()> {
    let c_path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))?;
    // SAFETY: umount2 reads the NUL-terminated path.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EPERM) {
        return Err(error);
    }
    // Not root: the setuid helper that mounted it unmounts it too.
    let status = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(path).status()?;
    if status.success() { Ok(()) } else { Err(io::Error::other(format!("fusermount3 -u -z {} failed: {status}", path.display()))) }
}
