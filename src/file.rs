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
//! directory entry that leads to it does not, so every new directory's parent is synced.

use std::fs::{self, File, FileType, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path};

use crate::error::{Error, IoContext, Result};
use crate::sys;

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
            return Err(Error::InvalidConfig(format!("{} is not a plain path inside {}", dir.display(), root.display())));
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
        sys::sync_directory(&parent).during("sync", &parent)?;
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
        Ok(()) => sys::sync_directory(parent).during("sync", parent),
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
        let synced = sys::synced_directories();
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
        let synced = sys::synced_directories();
        for parent in [root.clone(), root.join("groups"), root.join("groups").join("g")] {
            assert!(synced.contains(&parent), "{} was not synced", parent.display());
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
