//! Bringing a partition back after a crash: runs once per partition when the queue is first
//! used after a process opened it alone. Only what can be torn is checked: what lies past each
//! segment's synced-bytes marker (see `FileHeader`), from the last index entry at or below it. A
//! bad batch past the marker is a torn write and is cut off, together with any later segments;
//! a bad batch below it, or a segment missing or cut short before one marked as holding synced
//! data, is damage to durable data and is reported as `Error::Corrupt`, never dropped silently.

#![expect(unsafe_code, reason = "recovery maps a segment while no other process can")]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use crate::log::dir::{finish_swaps, new_segment, read_log_start, remove_segment_files};
use crate::log::format::{
    self, BATCH_HEADER_BYTES, BatchHeader, FILE_HEADER_BYTES, FileHeader, INDEX_ENTRY_BYTES, IndexEntry, LogId, MAX_BATCH_BYTES,
    PartitionFile, index_capacity_bytes,
};
use crate::log::segment::Segment;
use crate::log::state::Tail;
use crate::sys::clock;
use crate::sys::file::{self, Access};
use crate::sys::lock::DirLock;
use crate::topic::{TopicConfig, TopicPartition};

pub(crate) struct Recovered {
    pub(crate) tail: Tail,
    pub(crate) bases: Vec<u64>,
    pub(crate) active: Segment,
    /// Everything below this offset is known to be on stable storage (from the segments'
    /// synced markers), so that the first sync after a reopen starts there, not at the log start.
    pub(crate) synced_offset: u64,
}

pub(crate) fn recover(
    dir: &Path,
    id: &TopicPartition,
    log: LogId,
    config: &TopicConfig,
    users: &Arc<DirLock>,
) -> Result<Recovered> {
    finish_swaps(dir)?;
    let log_start = read_log_start(dir)?;
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir).during("list", dir)? {
        let entry = entry.during("list", dir)?;
        let path = entry.path();
        match format::classify(&entry.file_name().to_string_lossy()) {
            PartitionFile::Segment(base) => bases.push(base),
            PartitionFile::Index(base) => indexes.push(base),
            PartitionFile::State | PartitionFile::LogStart | PartitionFile::SwapLog(_) | PartitionFile::SwapIndex(_) => {}
            PartitionFile::Temporary => fs::remove_file(&path).during("remove leftover", &path)?,
            PartitionFile::Unknown => {
                return Err(Error::ForeignFile { path, reason: "unexpected file in a partition directory".into() });
            }
        }
    }
    bases.sort_unstable();
    // Retention checkpoints the new log start before it unlinks segments, and a power cut can
    // undo unlinks that no directory sync followed: segments below the checkpoint are deleted
    // again, so that the log start never moves backwards.
    let deleted: Vec<u64> = bases.iter().copied().chain(indexes.iter().copied()).filter(|&b| b < log_start).collect();
    for &base in &deleted {
        remove_segment_files(dir, base)?;
    }
    if !deleted.is_empty() {
        file::fsync_dir(dir)?;
    }
    bases.retain(|&b| b >= log_start);
    indexes.retain(|&b| b >= log_start);
    // The log starts at the checkpoint (offset 0 if retention never ran): a first segment that
    // starts later, or none at all past it, means a segment file went missing.
    if bases.first().map_or(log_start > 0, |&first| first > log_start) {
        return Err(missing_segment(dir, log_start, bases.first().copied()));
    }
    let last_base = bases.last().copied();
    for base in indexes.into_iter().filter(|b| !bases.contains(b)) {
        // An index whose segment was never renamed into place: a roll that crashed half-way (a
        // roll creates the index, then the log, and publishes the segment only after both).
        // An index whose log went missing in the middle of the log is found by the checks below.
        let path = dir.join(format::index_file_name(base));
        if last_base.is_some_and(|last| base > last)
            && open_or_reindex(dir, last_base.expect("checked"), id, log, config, users)?.synced_bytes() == format::FULLY_SYNCED
        {
            // The last segment is marked fully synced only after its successor was published:
            // this index's log existed.
            return Err(missing_segment(dir, base, None));
        }
        fs::remove_file(&path).during("remove orphaned", &path)?;
    }
    // A roll publishes its new segment before writing to it, and a crash can also come between
    // creating the files and publishing them. Either way an empty last segment holds nothing:
    // drop it, and the segment before it is the active one again.
    while bases.len() > 1 {
        let last = *bases.last().expect("two or more");
        let previous = open_or_reindex(dir, bases[bases.len() - 2], id, log, config, users)?;
        // A compacted segment cannot take appends again, and one marked fully synced would
        // claim them synced: keep the (empty) one after it. Either is marked so only after
        // the segment after it was published.
        if previous.is_compacted() || previous.synced_bytes() == format::FULLY_SYNCED {
            break;
        }
        let segment = open_or_reindex(dir, last, id, log, config, users)?;
        let scanned = scan(&segment, segment_start(), u64::MAX, None)?;
        if scanned.end_offset != last {
            break;
        }
        if segment.synced_bytes() > u64::from(FILE_HEADER_BYTES) && segment.synced_bytes() != format::FULLY_SYNCED {
            return Err(Error::corrupt(segment.path(), scanned.end_position, "synced data is damaged: no whole first batch"));
        }
        drop(segment);
        remove_segment_files(dir, last)?;
        bases.pop();
    }
    if bases.is_empty() {
        let now_ms = clock::wall_clock_ms();
        let (active, tail) = new_segment(dir, id, log, config, 0, now_ms, users)?;
        return Ok(Recovered { tail, bases: vec![0], active, synced_offset: 0 });
    }
    // Sealed segments marked fully synced, in a row from the first: their records are durable.
    let mut synced_offset = bases[0];
    let mut synced_so_far = true;
    for i in 0..bases.len().saturating_sub(1) {
        let segment = open_or_reindex(dir, bases[i], id, log, config, users)?;
        match check_sealed(&segment, bases[i + 1])? {
            Sealed::Whole { end_position } => {
                if !segment.is_compacted() {
                    // Its writer may have died before its releaser gave back what it reserved
                    // past the data, even if a writer in another process synced and marked it
                    // since. A failure leaves the space allocated and the data as it was.
                    let _ = segment.release_unused_log(end_position);
                }
                synced_so_far &= segment.synced_bytes() == format::FULLY_SYNCED;
                if synced_so_far {
                    synced_offset = bases[i + 1];
                }
            }
            Sealed::Short { end_offset, end_position, clean } => {
                // A group commit syncs segments in order, and marks each after its fsync: if a
                // later segment is marked as holding synced data, this one was synced whole
                // and its end (or the segment after it) is lost, not torn.
                for &later in &bases[i + 1..] {
                    if open_or_reindex(dir, later, id, log, config, users)?.synced_bytes() > u64::from(FILE_HEADER_BYTES) {
                        return Err(if clean {
                            missing_segment(dir, end_offset, Some(bases[i + 1]))
                        } else {
                            Error::corrupt(
                                segment.path(),
                                end_position,
                                format!(
                                    "synced data is damaged: no whole batch holds offset {end_offset}, and later segments hold synced data"
                                ),
                            )
                        });
                    }
                }
                // Torn before it was synced (a power cut soon after a roll): everything after
                // the tear is lost, so later segments go and this one becomes the active
                // segment again.
                for &later in &bases[i + 1..] {
                    remove_segment_files(dir, later)?;
                }
                bases.truncate(i + 1);
                break;
            }
        }
    }
    let last = *bases.last().expect("at least one segment");
    let active = open_or_reindex(dir, last, id, log, config, users)?;
    if active.synced_bytes() == format::FULLY_SYNCED {
        // Marked so only after the segment after it was published, and recovery never lets such
        // a segment be the active one again (see above): that segment is missing.
        let start = scan_start(&active, true, format::FULLY_SYNCED)?.0;
        let end_offset = scan(&active, start, u64::MAX, None)?.end_offset;
        return Err(missing_segment(dir, end_offset, None));
    }
    let tail = recover_active(&active, config)?;
    if synced_so_far && active.synced_bytes() >= tail.end_position {
        synced_offset = tail.end_offset;
    }
    Ok(Recovered { tail, bases, active, synced_offset })
}

/// The error for a segment file that should hold `offset` (up to `next`, the next segment's
/// base, if there is one) but does not exist.
fn missing_segment(dir: &Path, offset: u64, next: Option<u64>) -> Error {
    let held = next.map_or(format!("offset {offset} on"), |next| format!("offsets {offset}..{next}"));
    Error::corrupt(
        &dir.join(format::segment_file_name(offset)),
        0,
        format!(
            "a segment file is missing: no file holds {held}, which were written and synced \
             (or the segment before it was cut short)"
        ),
    )
}

/// Opens a segment of log `log`, recreating its index file empty if it is missing, unreadable or
/// of another log (the index is rebuilt from the log afterwards).
fn open_or_reindex(
    dir: &Path,
    base: u64,
    id: &TopicPartition,
    log: LogId,
    config: &TopicConfig,
    users: &Arc<DirLock>,
) -> Result<Segment> {
    repair_spare_header(dir, base, log)?;
    let index_path = dir.join(format::index_file_name(base));
    let mut index_head = [0u8; FILE_HEADER_BYTES as usize];
    let readable = match file::open_file(&index_path, Access::Read) {
        Ok(index) => {
            std::os::unix::fs::FileExt::read_exact_at(&index, &mut index_head, 0).is_ok()
                && FileHeader::decode(&index_head, format::INDEX_MAGIC, &index_path)
                    .is_ok_and(|h| h.base_offset == base && h.log == log && h.flags & format::SEGMENT_SPARE == 0)
        }
        // Something that is no file of ours (a FIFO, a link) is refused, not replaced.
        Err(error @ Error::UnexpectedFileType { .. }) => return Err(error),
        Err(_) => false,
    };
    if !readable {
        let log_path = dir.join(format::segment_file_name(base));
        let mut head = [0u8; FILE_HEADER_BYTES as usize];
        let file = file::open_file(&log_path, Access::Read)?;
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).during("read the header of", &log_path)?;
        let header = FileHeader::decode(&head, format::SEGMENT_MAGIC, &log_path)?;
        let capacity = index_capacity_bytes(u64::from(header.capacity_bytes), config);
        let index_header = FileHeader { magic: format::INDEX_MAGIC, capacity_bytes: capacity as u32, ..header };
        file::atomic_replace(&index_path, &index_header.encode())?;
    }
    // SAFETY: recovery runs only for the first use of a partition in a new epoch (that is,
    // after a process opened the queue alone), under the exclusive lock of the partition's
    // state file, which every process takes before it maps any of the partition's files.
    unsafe { Segment::open_alone(dir, base, id.clone(), log, Arc::clone(users)) }
}

/// Writes the header of segment `base` of `log` again if it is still the placeholder of the
/// spare it was made from (see `format::SEGMENT_SPARE`): a roll renamed the spare into place and
/// a power cut lost the header it wrote first. Nothing in the segment was synced (a sync would
/// have made the header durable), so its records past the header are checked as torn ones are;
/// the base offset comes from the file's name and the creation time is now. A file of another
/// log is left for `Segment::open` to refuse.
fn repair_spare_header(dir: &Path, base: u64, log: LogId) -> Result<()> {
    let path = dir.join(format::segment_file_name(base));
    let file = file::open_file(&path, Access::ReadWrite)?;
    let mut head = [0u8; FILE_HEADER_BYTES as usize];
    if std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).is_err() {
        return Ok(());
    }
    match FileHeader::decode(&head, format::SEGMENT_MAGIC, &path) {
        Ok(header) if header.flags & format::SEGMENT_SPARE != 0 && header.log == log => {
            let repaired = FileHeader { base_offset: base, created_ms: clock::wall_clock_ms(), flags: 0, ..header };
            std::os::unix::fs::FileExt::write_all_at(&file, &repaired.encode(), 0).during("write the header of", &path)?;
            file::sync_data(&file).during("fsync", &path)
        }
        _ => Ok(()),
    }
}

/// What a forward scan over batches found.
struct Scan {
    end_position: u64,
    end_offset: u64,
    max_timestamp_ms: u64,
    /// Index entries due for the batches scanned.
    new_entries: Vec<IndexEntry>,
}

/// Walks whole, checksummed batches from `start`, stopping at the first that is not whole or
/// at offset `stop_at`. In a compacted segment a batch may start past the previous one's end
/// offset (records were removed in between).
fn scan(segment: &Segment, start: IndexEntry, interval: u64, stop_at: Option<u64>) -> Result<Scan> {
    let gaps = segment.is_compacted();
    let base = segment.base_offset();
    let file_len = segment.log_length()?.min(segment.capacity_bytes());
    let mut scan = Scan {
        end_position: u64::from(start.position),
        end_offset: base + u64::from(start.relative_offset),
        max_timestamp_ms: start.max_timestamp_before_ms,
        new_entries: Vec::new(),
    };
    let mut last_indexed = scan.end_position;
    loop {
        let position = scan.end_position;
        if stop_at == Some(scan.end_offset) || position + u64::from(BATCH_HEADER_BYTES) > file_len {
            return Ok(scan);
        }
        let header = BatchHeader::read(segment.read(position, u64::from(BATCH_HEADER_BYTES))?);
        if header.batch_bytes == 0 {
            return Ok(scan);
        }
        if !batch_is_whole(segment, position, &header, scan.end_offset, gaps, file_len)? {
            return Ok(scan);
        }
        if position - last_indexed >= interval && position > u64::from(FILE_HEADER_BYTES) {
            scan.new_entries.push(IndexEntry {
                relative_offset: (scan.end_offset - base) as u32,
                position: position as u32,
                max_timestamp_before_ms: scan.max_timestamp_ms,
            });
            last_indexed = position;
        }
        scan.max_timestamp_ms = scan.max_timestamp_ms.max(header.max_timestamp_ms);
        scan.end_position += u64::from(header.batch_bytes);
        scan.end_offset = header.next_offset();
    }
}

fn batch_is_whole(
    segment: &Segment,
    position: u64,
    header: &BatchHeader,
    expected_offset: u64,
    gaps: bool,
    file_len: u64,
) -> Result<bool> {
    // Where offsets may skip (a compacted segment), only a checksum over the base offset can
    // vouch for it.
    let in_order = if gaps {
        header.base_offset >= expected_offset && header.offset_checksummed()
    } else {
        header.base_offset == expected_offset
    };
    let fits = header.is_plausible()
        && u64::from(header.batch_bytes) <= MAX_BATCH_BYTES
        && position + u64::from(header.batch_bytes) <= file_len
        && in_order;
    Ok(fits && format::batch_checksum_ok(segment.read(position, u64::from(header.batch_bytes))?))
}

/// The entry to start scanning from: the last index entry at or below `synced` (the segment's
/// synced marker), if the entries up to it agree with the log. Below the marker nothing can be
/// torn; past it any batch may be, so the scan must see every batch from there on.
///
/// The active segment's entries up to the start are checked whole, since they are kept; a sealed
/// segment's only needs the start checked (`last_only`), since only the scan's starting point
/// comes from it. Returns the start, the number of entries up to it, and those entries.
fn scan_start(segment: &Segment, last_only: bool, synced: u64) -> Result<(IndexEntry, usize, Vec<IndexEntry>)> {
    let mut entries = segment.sealed_index();
    entries.truncate(entries.partition_point(|e| u64::from(e.position) <= synced));
    let file_len = segment.log_length()?;
    let agrees = |entry: &IndexEntry| {
        let position = u64::from(entry.position);
        position + u64::from(BATCH_HEADER_BYTES) <= file_len
            && segment
                .read(position, u64::from(BATCH_HEADER_BYTES))
                .is_ok_and(|h| BatchHeader::read(h).base_offset == segment.base_offset() + u64::from(entry.relative_offset))
    };
    let start_entry = segment_start();
    let checked = if last_only { &entries[entries.len().saturating_sub(1)..] } else { &entries[..] };
    if !checked.iter().all(agrees) {
        return Ok((start_entry, 0, Vec::new()));
    }
    match entries.last() {
        Some(&last) => Ok((last, entries.len(), entries)),
        None => Ok((start_entry, 0, entries)),
    }
}

/// What a sealed segment holds, judged by `check_sealed`.
enum Sealed {
    /// Whole batches up to the next segment's base, which end at `end_position`.
    Whole { end_position: u64 },
    /// Whole batches up to `end_offset` at `end_position`, past its synced marker, and then
    /// nothing (`clean`: the file's end or zeros) or a bad batch.
    Short { end_offset: u64, end_position: u64, clean: bool },
}

/// Checks that a sealed segment holds whole batches up to `next_base`. Damage below its synced
/// marker is an error; a shortfall past it may be a torn write, for the caller to judge.
fn check_sealed(segment: &Segment, next_base: u64) -> Result<Sealed> {
    let synced = segment.synced_bytes();
    let start = scan_start(segment, true, synced)?.0;
    let scan = scan(segment, start, u64::MAX, Some(next_base))?;
    if scan.end_offset == next_base {
        return Ok(Sealed::Whole { end_position: scan.end_position });
    }
    if segment.is_compacted() {
        // Written whole and synced before it took its place: it must end exactly at its file's
        // end, with nothing past the next segment's base.
        if scan.end_position == segment.log_length()? && scan.end_offset <= next_base {
            return Ok(Sealed::Whole { end_position: scan.end_position });
        }
        return Err(Error::corrupt(segment.path(), scan.end_position, "a compacted segment is damaged"));
    }
    let file_len = segment.log_length()?;
    let clean = scan.end_position + 4 > file_len || segment.read(scan.end_position, 4)?.iter().all(|&b| b == 0);
    if scan.end_position < synced {
        if clean {
            let dir = segment.path().parent().unwrap_or(Path::new("."));
            return Err(missing_segment(dir, scan.end_offset, Some(next_base)));
        }
        return Err(Error::corrupt(
            segment.path(),
            scan.end_position,
            format!(
                "synced data is damaged: the segment's data ends at offset {} but the next segment starts at {next_base}",
                scan.end_offset
            ),
        ));
    }
    Ok(Sealed::Short { end_offset: scan.end_offset, end_position: scan.end_position, clean })
}

fn segment_start() -> IndexEntry {
    IndexEntry { relative_offset: 0, position: FILE_HEADER_BYTES, max_timestamp_before_ms: 0 }
}

/// Recovers the active segment (never one marked fully synced): its index is checked and the
/// log scanned from the last index entry at or below its synced marker, and the file is cut at
/// the end of the last whole batch. A bad batch below the marker is damage to synced data.
fn recover_active(segment: &Segment, config: &TopicConfig) -> Result<Tail> {
    let synced = segment.synced_bytes();
    let (start, kept, mut entries) = scan_start(segment, false, synced)?;
    entries.truncate(kept);
    let scan = scan(segment, start, u64::from(config.index_interval_bytes), None)?;
    if scan.end_position < synced {
        return Err(Error::corrupt(
            segment.path(),
            scan.end_position,
            format!("synced data is damaged: no whole batch holds offset {}", scan.end_offset),
        ));
    }
    // An entry may point at the torn batch the scan stopped at; it must not outlive the cut.
    entries.retain(|e| u64::from(e.position) < scan.end_position);
    // Entries for the batch the scan started at were kept; only later ones are new.
    entries.extend(scan.new_entries.into_iter().filter(|e| e.position > start.position));
    entries.truncate(segment.index_capacity_entries() as usize);
    let index_bytes = u64::from(FILE_HEADER_BYTES) + entries.len() as u64 * u64::from(INDEX_ENTRY_BYTES);
    segment.reserve_index(index_bytes)?;
    for (n, entry) in entries.iter().enumerate() {
        segment.write_index_entry(n as u64, *entry);
    }
    segment.truncate(scan.end_position, entries.len() as u64)?;
    Ok(Tail {
        end_offset: scan.end_offset,
        active_base: segment.base_offset(),
        end_position: scan.end_position,
        index_count: entries.len() as u64,
        max_timestamp_ms: scan.max_timestamp_ms,
        log_reserved_bytes: scan.end_position,
        index_reserved_bytes: index_bytes,
        last_indexed_position: entries.last().map_or(u64::from(FILE_HEADER_BYTES), |e| u64::from(e.position)),
    })
}
