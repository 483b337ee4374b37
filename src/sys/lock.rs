//! Locks the kernel releases when their holder dies: flocks on the queue directory and on
//! `topics/`, and open-file-description locks on single bytes (a group's member slots).

#![expect(unsafe_code, reason = "the Linux locking calls")]

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::sys::file;

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

/// A shared flock on the queue directory itself, held by every open queue handle and every
/// mapping made through one: while it is held, no process recovers (truncates) files.
pub(crate) struct DirLock {
    file: File,
}

impl DirLock {
    /// The lock held through `file`, the queue directory opened by [`lock_queue_directory`].
    pub(crate) fn new(file: File) -> DirLock {
        DirLock { file }
    }

    /// Turns the exclusive lock of a handle that opened the queue alone into a shared one.
    /// Not atomic: another opener may find the queue alone in between.
    pub(crate) fn downgrade(&self) -> io::Result<()> {
        self.file.unlock()?;
        self.file.lock_shared()
    }
}

/// Opens the queue directory itself and flocks it: exclusively if no other handle on the queue
/// exists in any process (the flag says so), shared otherwise. The lock is on the directory's
/// own inode, which cannot be unlinked while the queue is in it. A lock file could be, by a
/// user or a cleaner removing "stale" locks, and the next opener would then think it is alone
/// and recover (shorten) files that live writers map.
pub(crate) fn lock_queue_directory(dir: &Path) -> Result<(File, bool)> {
    let directory = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(dir).during("open", dir)?;
    let alone = match directory.try_lock() {
        Ok(()) => true,
        Err(TryLockError::WouldBlock) => {
            directory.lock_shared().during("lock", dir)?;
            false
        }
        Err(TryLockError::Error(e)) => return Err(Error::io("lock", dir, e)),
    };
    // The lock protects what the path leads to only if the path still names the locked
    // directory (it could have been renamed away and another put in its place).
    let locked = file::file_identity(&directory.metadata().during("stat", dir)?);
    if file::file_identity(&fs::metadata(dir).during("stat", dir)?) != locked {
        return Err(Error::io("lock", dir, std::io::Error::other("the directory was replaced while it was being opened")));
    }
    Ok((directory, alone))
}

/// The lock on `topics/`, held for a topic change; released on drop.
pub(crate) struct AdminLock(File);

impl Drop for AdminLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Takes an exclusive flock on the directory at `path`, waiting for it; released on drop.
pub(crate) fn lock_directory(path: &Path) -> Result<AdminLock> {
    let directory = file::open_directory(path)?;
    directory.lock().during("lock", path)?;
    Ok(AdminLock(directory))
}
