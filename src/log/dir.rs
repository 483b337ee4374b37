//! The files of one partition directory: creating and removing a segment's files, listing the
//! segments, the log start checkpoint, and finishing the swaps compaction left half-done.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::log::format::{
    self, FILE_HEADER_BYTES, FileHeader, LOG_RESERVE_STEP_BYTES, LogId, MAX_BATCH_BYTES, PartitionFile, SEGMENT_MAGIC,
};
use crate::log::segment::{Segment, Spare};
use crate::log::state::Tail;
use crate::sys::file::{self, Access};
use crate::sys::lock::DirLock;
use crate::topic::{TopicConfig, TopicPartition};

/// Creates the files of an empty segment starting at `base` and returns it with its tail.
pub(crate) fn new_segment(
    dir: &Path,
    id: &TopicPartition,
    log: LogId,
    config: &TopicConfig,
    base: u64,
    now_ms: u64,
    users: &Arc<DirLock>,
) -> Result<(Segment, Tail)> {
    let (header, index_capacity, reserve) = segment_layout(log, config, base, now_ms);
    let segment = Segment::create(dir, id.clone(), header, index_capacity, reserve, Arc::clone(users))?;
    let tail = Tail::empty_segment(base, reserve, segment.index_length());
    Ok((segment, tail))
}

/// Makes the files of the partition's next segment ahead of its roll (see `Spare`). They hold
/// only their headers: the appends after the roll reserve the log's space as they go, so that
/// a spare costs a partition two small files, and a full disk is met where it would be without.
pub(crate) fn prepare_spare(dir: &Path, log: LogId, config: &TopicConfig) -> Result<Spare> {
    let (header, index_capacity, _) = segment_layout(log, config, 0, 0);
    Segment::prepare_spare(dir, header, index_capacity, u64::from(FILE_HEADER_BYTES))
}

/// `new_segment` for a roll: from `spare` if it fits the topic's settings, with no file
/// created or synced, or else by creating the files.
#[expect(clippy::too_many_arguments, reason = "new_segment's arguments and the spare")]
pub(crate) fn roll_segment(
    dir: &Path,
    id: &TopicPartition,
    log: LogId,
    config: &TopicConfig,
    base: u64,
    now_ms: u64,
    users: &Arc<DirLock>,
    spare: Option<Spare>,
) -> Result<(Segment, Tail)> {
    let (header, index_capacity, _) = segment_layout(log, config, base, now_ms);
    if let Some(spare) = spare.filter(|spare| spare.fits(&header, index_capacity)) {
        let reserve = spare.reserve_bytes;
        // A spare that cannot be placed (its files were removed) leaves the roll to create them.
        if let Ok(segment) = Segment::place_spare(spare, dir, id.clone(), header, Arc::clone(users)) {
            let tail = Tail::empty_segment(base, reserve, segment.index_length());
            return Ok((segment, tail));
        }
    }
    new_segment(dir, id, log, config, base, now_ms, users)
}

/// The header of a new segment of `log` at `base`, its index's capacity and the log space it
/// starts with.
fn segment_layout(log: LogId, config: &TopicConfig, base: u64, now_ms: u64) -> (FileHeader, u32, u64) {
    let capacity = u64::from(FILE_HEADER_BYTES) + config.segment_bytes + MAX_BATCH_BYTES;
    let header = FileHeader {
        magic: SEGMENT_MAGIC,
        capacity_bytes: capacity as u32,
        base_offset: base,
        created_ms: now_ms,
        flags: 0,
        log,
    };
    let index_capacity = format::index_capacity_bytes(capacity, config);
    (header, index_capacity as u32, LOG_RESERVE_STEP_BYTES.min(capacity))
}

/// Deletes a segment's log and index files.
pub(crate) fn remove_segment_files(dir: &Path, base: u64) -> Result<()> {
    let (log, index) = (format::segment_file_name(base), format::index_file_name(base));
    let swaps = [dir.join(format::swap_file_name(&log)), dir.join(format::swap_file_name(&index))];
    for path in [dir.join(&log), dir.join(&index), swaps[0].clone(), swaps[1].clone()] {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io("remove", &path, e)),
            _ => {}
        }
    }
    Ok(())
}

/// Base offsets of the segments in a partition directory, in order.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).during("list", dir)? {
        let entry = entry.during("list", dir)?;
        if let PartitionFile::Segment(base) = format::classify(&entry.file_name().to_string_lossy()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// The log start retention checkpointed (see `format::encode_log_start`), with the slots of
/// the checkpoint file. A partition without one gets it now, starting at 0 (offsets start
/// there), so that retention later only overwrites it in place.
pub(crate) fn read_log_start(dir: &Path) -> Result<u64> {
    match read_log_start_slots(dir)? {
        Some(slots) => Ok(slots.into_iter().flatten().max().expect("decoding leaves a valid slot")),
        None => {
            let path = dir.join(format::LOG_START_FILE);
            file::atomic_replace(&path, &[format::encode_log_start(0), format::encode_log_start(0)].concat())?;
            Ok(0)
        }
    }
}

/// The two slots of the log start checkpoint (`None` for one that does not decode), or `None`
/// if there is no checkpoint file. A file with no valid slot is an error.
fn read_log_start_slots(dir: &Path) -> Result<Option<[Option<u64>; 2]>> {
    let path = dir.join(format::LOG_START_FILE);
    let bytes = match file::read_capped(&path, format::LOG_START_FILE_BYTES) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    log_start_slots(&bytes, &path).map(Some)
}

/// The two slots of a log start checkpoint file's bytes (`None` for one that does not decode);
/// a file with no valid slot is an error.
pub(crate) fn log_start_slots(bytes: &[u8], path: &Path) -> Result<[Option<u64>; 2]> {
    if bytes.len() != format::LOG_START_FILE_BYTES {
        return Err(Error::corrupt(path, 0, format!("a log start checkpoint of {} bytes", bytes.len())));
    }
    let slot = |n: usize| format::decode_log_start(&bytes[n * 64..(n + 1) * 64], path);
    match (slot(0), slot(1)) {
        (Err(error), Err(_)) => Err(error),
        (first, second) => Ok([first.ok(), second.ok()]),
    }
}

/// Makes `log_start` the partition's durable log start, overwriting in place the checkpoint
/// slot that holds the smaller (or no valid) value and syncing it: no disk space is needed.
/// Retention calls it before it unlinks the segments below `log_start`.
pub(crate) fn write_log_start(dir: &Path, log_start: u64) -> Result<()> {
    let path = dir.join(format::LOG_START_FILE);
    let Some(slots) = read_log_start_slots(dir)? else {
        return Err(Error::corrupt(&path, 0, "the log start checkpoint is missing"));
    };
    let older = usize::from(slots[1].is_none_or(|second| slots[0].is_some_and(|first| second < first)));
    let checkpoint = file::open_file(&path, Access::ReadWrite)?;
    std::os::unix::fs::FileExt::write_all_at(&checkpoint, &format::encode_log_start(log_start), older as u64 * 64)
        .during("write", &path)?;
    file::sync_data(&checkpoint).during("fsync", &path)
}

/// Completes what compaction left half-done (see `log/compaction.rs`): a `.log.swap` file is a
/// whole, synced cleaned segment that was about to replace the original, so it does, with its
/// `.index.swap` if that is still there. An `.index.swap` without its log was not committed yet.
/// Returns whether there was anything to do. Also removes temporary files of a cleaning that
/// never got as far as a swap.
pub(crate) fn finish_swaps(dir: &Path) -> Result<bool> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir).during("list", dir)? {
        match format::classify(&entry.during("list", dir)?.file_name().to_string_lossy()) {
            PartitionFile::SwapLog(base) => logs.push(base),
            PartitionFile::SwapIndex(base) => indexes.push(base),
            _ => {}
        }
    }
    if logs.is_empty() && indexes.is_empty() {
        return Ok(false);
    }
    // A swap whose original is gone (retention deleted the segment since) is dropped, or it
    // would bring back records below the log start.
    let originals: Vec<u64> = logs.iter().copied().filter(|&b| dir.join(format::segment_file_name(b)).exists()).collect();
    for &base in &indexes {
        let swap = dir.join(format::swap_file_name(&format::index_file_name(base)));
        if originals.contains(&base) {
            let index = dir.join(format::index_file_name(base));
            fs::rename(&swap, &index).during("rename into place", &index)?;
        } else {
            fs::remove_file(&swap).during("remove leftover", &swap)?;
        }
    }
    for base in logs {
        let swap = dir.join(format::swap_file_name(&format::segment_file_name(base)));
        let log = dir.join(format::segment_file_name(base));
        if originals.contains(&base) {
            fs::rename(&swap, &log).during("rename into place", &log)?;
        } else {
            fs::remove_file(&swap).during("remove leftover", &swap)?;
        }
    }
    file::fsync_dir(dir)?;
    Ok(true)
}
