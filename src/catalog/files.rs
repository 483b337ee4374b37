//! The queue directory's own files: `streamlog.meta` (the epoch), `queue.state` (the shared
//! counter of topic changes), the topic listing, lock files and the staging area.

use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};
use crate::log::format::{
    self, FILE_HEADER_BYTES, OPEN_LOCK_FILE, QUEUE_META_FILE, QUEUE_STATE_FILE, QUEUE_STATE_MAGIC, TOPIC_META_FILE, TOPICS_DIR,
    USERS_LOCK_FILE,
};
use crate::options::validate_topic_name;
use crate::sys::file::{self, Access};
use crate::sys::map::SharedMap;

/// The names of all topics in the queue directory `dir`, sorted.
pub(crate) fn list_topics(dir: &Path) -> Result<Vec<String>> {
    let topics = dir.join(TOPICS_DIR);
    let mut names = Vec::new();
    for entry in fs::read_dir(&topics).during("list", &topics)? {
        let entry = entry.during("list", &topics)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if validate_topic_name(&name).is_ok() && entry.path().join(TOPIC_META_FILE).exists() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Where `queue.state` keeps its counter of topic changes.
pub(crate) const TOPICS_VERSION_AT: usize = 16;
pub(crate) const QUEUE_STATE_BYTES: usize = 4096;

/// A topic id no other topic gets: the clock, the process and a counter, mixed.
pub(crate) fn new_topic_id() -> u64 {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut id =
        now ^ (u64::from(std::process::id()) << 32) ^ COUNT.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // SplitMix64's finaliser, so that ids made close together differ in every bit.
    id = (id ^ (id >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    id = (id ^ (id >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (id ^ (id >> 31)).max(1)
}

/// Maps `queue.state`, creating it if it is missing. It is never rebuilt or shortened: its one
/// counter only grows. A new file is written whole and then linked into place, which fails if
/// another process got there first, so every process maps the same file.
pub(crate) fn open_queue_state(dir: &Path) -> Result<SharedMap> {
    let path = dir.join(QUEUE_STATE_FILE);
    if !path.exists() {
        let mut bytes = vec![0u8; QUEUE_STATE_BYTES];
        bytes[0..8].copy_from_slice(&QUEUE_STATE_MAGIC);
        bytes[8..10].copy_from_slice(&format::FORMAT_VERSION.to_le_bytes());
        // Whoever links it first made it; the others map that one.
        file::atomic_create(&path, &bytes)?;
    }
    let file = file::open_file(&path, Access::ReadWrite)?;
    let length = file.metadata().during("stat", &path)?.len();
    let mut head = [0u8; 64];
    if length != QUEUE_STATE_BYTES as u64 {
        return Err(Error::ForeignFile { path, reason: format!("{length} bytes long, not {QUEUE_STATE_BYTES}") });
    }
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).during("read", &path)?;
    format::check_magic_version(&head, QUEUE_STATE_MAGIC).map_err(|mismatch| mismatch.into_error(&path))?;
    let map = memmap2::MmapOptions::new().len(QUEUE_STATE_BYTES).map_raw(&file).during("map", &path)?;
    Ok(SharedMap(map))
}

pub(crate) fn lock_file(path: &Path) -> Result<File> {
    file::open_file(path, Access::Create)
}

pub(crate) fn read_epoch(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(QUEUE_META_FILE);
    match file::read_capped(&path, FILE_HEADER_BYTES as usize) {
        Ok(bytes) => format::decode_queue_meta(&bytes, &path).map(Some),
        Err(e) if file::is_not_found(&e) => {
            // A new queue, unless the directory already holds something else.
            let leftover = file::temp_path(Path::new(QUEUE_META_FILE), false);
            for entry in fs::read_dir(dir).during("list", dir)? {
                let name = entry.during("list", dir)?.file_name();
                if !(name == OPEN_LOCK_FILE || name == USERS_LOCK_FILE || name == leftover.as_os_str()) {
                    return Err(Error::ForeignFile {
                        path: dir.to_path_buf(),
                        reason: "a non-empty directory without streamlog.meta".into(),
                    });
                }
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn write_epoch(dir: &Path, epoch: u64) -> Result<()> {
    file::atomic_replace(&dir.join(QUEUE_META_FILE), &format::encode_queue_meta(epoch))
}

/// Removes what topic creations and deletions left in `staging/`. Nothing there is followed:
/// `staging` itself must be a directory (checked by `create_dir_durably`), a directory in it is
/// removed with everything inside (`remove_dir_all` does not follow symbolic links), and
/// anything else (a stray file, a link) is unlinked itself.
pub(crate) fn clear_staging(staging: &Path) -> Result<()> {
    for entry in fs::read_dir(staging).during("list", staging)? {
        let entry = entry.during("list", staging)?;
        let path = entry.path();
        if entry.file_type().during("stat", &path)?.is_dir() {
            fs::remove_dir_all(&path).during("remove leftover", &path)?;
        } else {
            fs::remove_file(&path).during("remove leftover", &path)?;
        }
    }
    Ok(())
}
