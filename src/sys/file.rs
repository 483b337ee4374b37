//! Every open of a file or directory inside the queue directory goes through here, so that
//! planted files cannot make streamlog hang, exhaust memory or act outside its directory:
//!
//! - A path inside the queue is never followed through a symbolic link: files are opened with
//!   `O_NOFOLLOW`, and directories are checked with `lstat` before they are used.
//! - Opening never blocks (`O_NONBLOCK`, which a FIFO would otherwise wait on), and nothing is
//!   read from or written to a descriptor before `fstat` said it is a regular file.
//! - Reads of whole files are capped at the size their format allows.
//!
//! It also creates directories durably: a file that survives a power cut is useless if the
//! directory entry that leads to it does not, so every new directory's parent is synced. And it
//! holds the calls on open files: space reservation (`fallocate`), hole punching, vectored
//! writes, and data and directory syncs.

#![expect(unsafe_code, reason = "the Linux file calls (fallocate, hole punching, pwritev, syncs)")]

use std::fs::{self, File, FileType, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// What a caller does with a file it opens.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    /// Read an existing file.
    Read,
    /// Read and write an existing file.
    ReadWrite,
    /// Read and write, creating the file if it is missing and keeping its contents otherwise.
    Create,
    /// Read and write a file that starts empty: created if missing, truncated otherwise.
    Replace,
}

/// Opens the regular file at `path`, refusing anything else (a symbolic link, a FIFO, a device,
/// a directory) with `Error::UnexpectedFileType`.
pub(crate) fn open_file(path: &Path, access: Access) -> Result<File> {
    // Look before opening, so that a device or FIFO is never opened at all; the `fstat` below
    // catches a file swapped in between.
    if let Some(error) = unexpected_type(path, FileType::is_file, "a regular file") {
        return Err(error);
    }
    let mut options = OpenOptions::new();
    // O_NONBLOCK has no effect on regular files, which is all this descriptor is used for.
    options.read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    match access {
        Access::Read => {}
        Access::ReadWrite => {
            options.write(true);
        }
        Access::Create => {
            options.write(true).create(true);
        }
        Access::Replace => {
            options.write(true).create(true).truncate(true);
        }
    }
    let operation = if matches!(access, Access::Create | Access::Replace) { "create" } else { "open" };
    let file = options.open(path).map_err(|error| {
        unexpected_type(path, FileType::is_file, "a regular file").unwrap_or_else(|| Error::io(operation, path, error))
    })?;
    let file_type = file.metadata().during("stat", path)?.file_type();
    if !file_type.is_file() {
        return Err(Error::UnexpectedFileType {
            path: path.to_path_buf(),
            expected: "a regular file",
            found: describe(file_type),
        });
    }
    Ok(file)
}

/// Reads the whole regular file at `path`, which its format says is at most `max_bytes` long.
pub(crate) fn read_capped(path: &Path, max_bytes: usize) -> Result<Vec<u8>> {
    let file = open_file(path, Access::Read)?;
    let mut bytes = Vec::with_capacity(max_bytes);
    file.take(max_bytes as u64 + 1).read_to_end(&mut bytes).during("read", path)?;
    if bytes.len() > max_bytes {
        return Err(Error::ForeignFile { path: path.to_path_buf(), reason: format!("longer than {max_bytes} bytes") });
    }
    Ok(bytes)
}

/// Writes `bytes` as the whole content of the regular file at `path` (created or truncated) and
/// syncs it; the caller renames it into place and syncs the directory.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = open_file(path, Access::Replace)?;
    file.write_all(bytes).during("write", path)?;
    file.sync_all().during("sync", path)
}

/// The one rule for temporary files: `<name>.tmp` beside `target`, or `<name>.<pid>.tmp` for a
/// file several processes may prepare at once without a lock. Recovery deletes what a crash
/// leaves of them (every name ending in `.tmp`).
pub(crate) fn temp_path(target: &Path, per_process: bool) -> PathBuf {
    let mut name = target.file_name().expect("a file name").to_os_string();
    if per_process {
        name.push(format!(".{}", std::process::id()));
    }
    name.push(".tmp");
    target.with_file_name(name)
}

/// Makes `bytes` the content of `target` atomically and durably: a crash leaves the old file
/// or the new one, never a mix. The bytes are written and synced under [`temp_path`], renamed
/// over `target`, and the directory is synced.
pub(crate) fn atomic_replace(target: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = temp_path(target, false);
    write_synced(&temporary, bytes)?;
    fs::rename(&temporary, target).during("rename into place", target)?;
    fsync_dir(parent_of(target))
}

/// As [`atomic_replace`], but never replaces: the synced file is linked into place, and
/// `Ok(false)` says another process got there first. Several processes may race to create the
/// same file, so each prepares its own temporary one, removed either way.
pub(crate) fn atomic_create(target: &Path, bytes: &[u8]) -> Result<bool> {
    let temporary = temp_path(target, true);
    write_synced(&temporary, bytes)?;
    let linked = fs::hard_link(&temporary, target);
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => fsync_dir(parent_of(target)).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("link into place", target, e)),
    }
}

/// Makes the entries of the directory at `dir` (files created, renamed or removed) durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    sync_directory(dir).during("sync directory", dir)
}

pub(crate) fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Opens the directory at `path` (for a lock or a sync), refusing a symbolic link or anything
/// else that is not a directory.
pub(crate) fn open_directory(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|error| unexpected_type(path, FileType::is_dir, "a directory").unwrap_or_else(|| Error::io("open", path, error)))
}

/// Checks that `path` is a directory itself, not a symbolic link to one (or anything else).
pub(crate) fn require_directory(path: &Path) -> Result<()> {
    let file_type = fs::symlink_metadata(path).during("open", path)?.file_type();
    if file_type.is_dir() {
        Ok(())
    } else {
        Err(Error::UnexpectedFileType { path: path.to_path_buf(), expected: "a directory", found: describe(file_type) })
    }
}

/// Whether `error` says that a file or directory does not exist.
pub(crate) fn is_not_found(error: &Error) -> bool {
    matches!(error, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

/// Creates the directory `dir` and every missing directory above it, syncing the parent of each
/// one created, so that the path survives a power cut once its files are synced. `dir` lies
/// inside `root`: `root` and its ancestors are the caller's to choose (and may be reached
/// through symbolic links), but below `root` every component must be a directory itself.
pub(crate) fn create_dir_durably(root: &Path, dir: &Path) -> Result<()> {
    create_root_durably(root)?;
    let relative = dir.strip_prefix(root).expect("the directory lies inside the root");
    let mut path = root.to_path_buf();
    for component in relative.components() {
        let Component::Normal(name) = component else {
            return Err(Error::InvalidPath {
                path: dir.to_path_buf(),
                reason: "it is not a plain path inside the queue directory",
            });
        };
        let parent = path.clone();
        path.push(name);
        // A directory that exists already may have been made by another process that has not
        // synced its parent yet (or died before it could), and what this caller goes on to
        // make durable depends on the entry: its parent is synced either way. Syncing a
        // directory with nothing new in it costs next to nothing.
        match require_directory(&path) {
            Ok(()) => {}
            Err(error) if is_not_found(&error) => match fs::create_dir(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => require_directory(&path)?,
                Err(error) => return Err(Error::io("create", &path, error)),
            },
            Err(error) => return Err(error),
        }
        fsync_dir(&parent)?;
    }
    Ok(())
}

/// Creates `root` (following symbolic links, as the caller's own path may) and its missing
/// ancestors, syncing the parent of each directory created.
fn create_root_durably(root: &Path) -> Result<()> {
    match fs::metadata(root) {
        Ok(metadata) if metadata.is_dir() => return Ok(()),
        Ok(metadata) => {
            return Err(Error::UnexpectedFileType {
                path: root.to_path_buf(),
                expected: "a directory",
                found: describe(metadata.file_type()),
            });
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::io("open", root, error)),
    }
    let parent = match root.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    create_root_durably(parent)?;
    match fs::create_dir(root) {
        Ok(()) => fsync_dir(parent),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && root.is_dir() => Ok(()),
        Err(error) => Err(Error::io("create", root, error)),
    }
}

/// The error for `path` if it exists but is not of the kind `wanted` accepts.
fn unexpected_type(path: &Path, wanted: fn(&FileType) -> bool, expected: &'static str) -> Option<Error> {
    let file_type = fs::symlink_metadata(path).ok()?.file_type();
    (!wanted(&file_type)).then(|| Error::UnexpectedFileType { path: path.to_path_buf(), expected, found: describe(file_type) })
}

fn describe(file_type: FileType) -> &'static str {
    if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "a file of unknown type"
    }
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
fn sync_directory(path: &std::path::Path) -> io::Result<()> {
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

/// `bytes` after their length (u32) and CRC-32: a record `read_checksummed` tells whole from torn.
pub(crate) fn checksummed(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The bytes `checksummed` wrote at `at` in `file` (at `path`), `room` bytes at most with the
/// prefix; `Error::Corrupt`, naming `what` they are, when longer or not matching their checksum.
pub(crate) fn read_checksummed(file: &File, path: &Path, at: u64, room: usize, what: &str) -> Result<Vec<u8>> {
    let mut prefix = [0u8; 8];
    file.read_exact_at(&mut prefix, at).during("read", path)?;
    let length = u32::from_le_bytes(prefix[0..4].try_into().expect("four bytes")) as usize;
    if length > room.saturating_sub(8) {
        return Err(Error::corrupt(path, at, format!("{what} longer than its room")));
    }
    let mut bytes = vec![0u8; length];
    file.read_exact_at(&mut bytes, at + 8).during("read", path)?;
    if crc32fast::hash(&bytes) != u32::from_le_bytes(prefix[4..8].try_into().expect("four bytes")) {
        return Err(Error::corrupt(path, at, format!("{what} checksum mismatch")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("streamlog-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = temp_dir("fifo");
        let path = dir.join("f");
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        for access in [Access::Read, Access::ReadWrite, Access::Create, Access::Replace] {
            let error = open_file(&path, access).unwrap_err();
            assert!(matches!(error, Error::UnexpectedFileType { found: "a FIFO", .. }), "{error}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symbolic_link_is_never_followed() {
        let dir = temp_dir("symlink");
        let target = dir.join("target");
        fs::write(&target, b"outside").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = write_synced(&link, b"overwritten").unwrap_err();
        assert!(matches!(error, Error::UnexpectedFileType { found: "a symbolic link", .. }), "{error}");
        assert!(matches!(read_capped(&link, 64), Err(Error::UnexpectedFileType { .. })));
        assert!(matches!(require_directory(&link), Err(Error::UnexpectedFileType { .. })));
        assert_eq!(fs::read(&target).unwrap(), b"outside");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_stop_at_the_cap() {
        let dir = temp_dir("cap");
        let path = dir.join("big");
        fs::write(&path, vec![7u8; 65]).unwrap();
        assert!(matches!(read_capped(&path, 64), Err(Error::ForeignFile { .. })));
        assert_eq!(read_capped(&path, 65).unwrap().len(), 65);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_new_directory_has_its_parent_synced() {
        let dir = temp_dir("durable");
        let root = dir.join("queue");
        let deep = root.join("groups").join("g").join("offsets");
        create_dir_durably(&root, &deep).unwrap();
        assert!(deep.is_dir());
        let synced = super::synced_directories();
        for parent in [dir.clone(), root.clone(), root.join("groups"), root.join("groups").join("g")] {
            assert!(synced.contains(&parent), "{} was not synced", parent.display());
        }
        // Below the root, a symbolic link is refused, not followed.
        std::os::unix::fs::symlink(&dir, root.join("topics")).unwrap();
        assert!(matches!(
            create_dir_durably(&root, &root.join("topics").join("t")),
            Err(Error::UnexpectedFileType { found: "a symbolic link", .. })
        ));
        assert!(!dir.join("t").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_another_process_made_has_its_parent_synced_too() {
        // Another process made the path and has not synced it yet (or died first): a caller
        // about to make something durable under it must not rely on that process's sync.
        let dir = temp_dir("durable-existing");
        let root = dir.join("queue");
        let deep = root.join("groups").join("g").join("offsets");
        fs::create_dir_all(&deep).unwrap();
        create_dir_durably(&root, &deep).unwrap();
        let synced = super::synced_directories();
        for parent in [root.clone(), root.join("groups"), root.join("groups").join("g")] {
            assert!(synced.contains(&parent), "{} was not synced", parent.display());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

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
