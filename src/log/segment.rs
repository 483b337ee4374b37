//! One segment: a log file of record batches and its sparse index, both mapped.
//!
//! Soundness of the mappings (the argument ARCHITECTURE.md repeats):
//! - A file is never shortened while any process maps it. Only recovery truncates, and
//!   recovery runs only while no other handle on the queue exists in any process; every
//!   mapping holds the queue's shared lock on its directory (`DirLock`) until it is unmapped.
//! - Readers touch only bytes below a bound known to be inside the file: the published end of
//!   the active segment (written, and so allocated, before it was published), or the length of
//!   a sealed segment's file. Writers touch only bytes they reserved with `fallocate` first, so
//!   a full disk fails the reservation with an error instead of raising SIGBUS on a page fault.
//!   Prefaulting (`prefault`) maps only reserved bytes, and does it with `madvise`, which
//!   reports a page it cannot map as an error instead of a signal.
//! - Bytes below the published end never change again: the log is append-only, and writers
//!   hold the append lock (the write functions take its guard as proof) and write only past the
//!   published end, which they check.
//! - The one part of a log file that changes after it is published is the synced marker in its
//!   header, which every process touches only through atomics. No read starts inside the
//!   header, and an index entry pointing there counts as damaged (see `index_entry`).
//! - Once a segment is sealed, the space reserved past its data is given back by punching a
//!   hole (`release_unused`), which keeps the file's length: a read there would return zeros,
//!   not fault, and none happens, since readers of a sealed segment stop at its data's end.

#![expect(unsafe_code, reason = "maps segment files; why that is sound is argued in this module's comment")]

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::{Advice, MmapOptions, MmapRaw};

use crate::error::{Error, IoContext, Result};
use crate::failpoint::failpoint;
use crate::log::format::{
    self, BATCH_HEADER_BYTES, FILE_HEADER_BYTES, FileHeader, HOLE_ALIGN_BYTES, INDEX_ENTRY_BYTES, INDEX_MAGIC, IndexEntry, LogId,
    MAX_BATCH_BYTES, SEGMENT_MAGIC,
};
use crate::log::state::{AppendGuard, Tail};
use crate::sys::file::{self, Access};
use crate::sys::lock::DirLock;
use crate::topic::{MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, TopicPartition};

/// A file mapped for its whole capacity, of which only a prefix exists on disk.
struct MappedFile {
    map: MmapRaw,
    /// The open file, or `None` when it is reopened by path each time it is needed (see
    /// `close_file`).
    file: Option<File>,
    /// Device and inode of the mapped file, to check that a reopened path still names it.
    identity: (u64, u64),
    path: PathBuf,
    header: FileHeader,
    /// Bytes of the file known to exist (allocated); reads and writes stay below this.
    backed_bytes: AtomicU64,
}

impl MappedFile {
    fn create(path: &Path, header: FileHeader, reserve_bytes: u64) -> Result<Self> {
        let temporary = file::temp_path(path, false);
        let prepared = Self::prepare(&temporary, header, reserve_bytes).and_then(|file| {
            run_rename_hook(&temporary);
            fs::rename(&temporary, path).during("rename into place", path)?;
            Ok(file)
        });
        if prepared.is_err() {
            // Give back the space at once (a full disk is the usual reason to be here).
            let _ = fs::remove_file(&temporary);
        }
        Self::map(prepared?, path, header)
    }

    /// Creates file `temporary` with `reserve_bytes` of space and `header`, durably.
    fn prepare(temporary: &Path, header: FileHeader, reserve_bytes: u64) -> Result<File> {
        let file = Self::prepare_unsynced(temporary, header, reserve_bytes)?;
        file.sync_all().during("sync", temporary)?;
        Ok(file)
    }

    /// `prepare` without the sync.
    fn prepare_unsynced(temporary: &Path, header: FileHeader, reserve_bytes: u64) -> Result<File> {
        let file = file::open_file(temporary, Access::Replace)?;
        file::reserve(&file, reserve_bytes.max(u64::from(FILE_HEADER_BYTES))).during("reserve space for", temporary)?;
        file.write_all_at(&header.encode(), 0).during("write the header of", temporary)?;
        Ok(file)
    }

    /// Gives file `prepared` (made by `prepare`) its real `header` and renames it to `path`,
    /// neither of them synced.
    fn place(prepared: &Path, path: &Path, header: FileHeader) -> Result<Self> {
        let file = file::open_file(prepared, Access::ReadWrite)?;
        file.write_all_at(&header.encode(), 0).during("write the header of", prepared)?;
        run_rename_hook(prepared);
        fs::rename(prepared, path).during("rename into place", path)?;
        Self::map(file, path, header)
    }

    fn open(path: &Path, magic: [u8; 8]) -> Result<Self> {
        let file = file::open_file(path, Access::ReadWrite)?;
        let mut head = [0u8; FILE_HEADER_BYTES as usize];
        let length = file.metadata().during("stat", path)?.len();
        if length < u64::from(FILE_HEADER_BYTES) {
            return Err(Error::ForeignFile { path: path.to_path_buf(), reason: format!("only {length} bytes long") });
        }
        file.read_exact_at(&mut head, 0).during("read the header of", path)?;
        let header = FileHeader::decode(&head, magic, path)?;
        if u64::from(header.capacity_bytes) < u64::from(FILE_HEADER_BYTES) {
            return Err(Error::corrupt(path, 12, "capacity smaller than the header"));
        }
        Self::map(file, path, header)
    }

    fn map(file: File, path: &Path, header: FileHeader) -> Result<Self> {
        let metadata = file.metadata().during("stat", path)?;
        let map = MmapOptions::new().len(header.capacity_bytes as usize).map_raw(&file).during("map", path)?;
        Ok(MappedFile {
            map,
            file: Some(file),
            identity: file::file_identity(&metadata),
            path: path.to_path_buf(),
            header,
            backed_bytes: AtomicU64::new(metadata.len()),
        })
    }

    /// Closes the descriptor; the mapping stays valid, and the few operations that need the
    /// file (growing it, recovery) reopen it by path. An index is grown once per many
    /// megabytes of log, so this halves the descriptors each open partition holds.
    fn close_file(mut self) -> Self {
        self.file = None;
        self
    }

    /// Runs `operation` on the file, reopening it first if it was closed. A path that no longer
    /// names the mapped file is refused.
    fn with_file<T>(&self, operation: impl FnOnce(&File) -> Result<T>) -> Result<T> {
        if let Some(file) = &self.file {
            return operation(file);
        }
        let file = file::open_file(&self.path, Access::ReadWrite)?;
        let metadata = file.metadata().during("stat", &self.path)?;
        if file::file_identity(&metadata) != self.identity {
            return Err(Error::corrupt(&self.path, 0, "the file was replaced while mapped"));
        }
        operation(&file)
    }

    /// Makes sure `[0, bytes)` is allocated; `bytes` is clamped to the capacity.
    fn reserve(&self, bytes: u64) -> Result<()> {
        let bytes = bytes.min(u64::from(self.header.capacity_bytes));
        if bytes > self.backed_bytes.load(Ordering::Acquire) {
            self.with_file(|file| file::reserve(file, bytes).during("reserve space in", &self.path))?;
            self.backed_bytes.fetch_max(bytes, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Learns of growth made by another process; returns the new known length.
    fn refresh_length(&self) -> Result<u64> {
        let length = self.with_file(|file| file.metadata().during("stat", &self.path))?.len();
        Ok(self.backed_bytes.fetch_max(length, Ordering::AcqRel).max(length))
    }

    /// Bytes `[start, start + len)`, which the caller knows are published and so immutable.
    /// Never any of the header: other processes write its synced marker while this one reads.
    fn bytes(&self, start: u64, len: u64) -> Result<&[u8]> {
        if start < u64::from(FILE_HEADER_BYTES) {
            return Err(Error::corrupt(&self.path, start, "a read of data inside the file header"));
        }
        let end = start.checked_add(len).filter(|&end| end <= u64::from(self.header.capacity_bytes));
        let Some(end) = end else {
            return Err(Error::corrupt(&self.path, start, format!("{len} bytes here would pass the end of the segment")));
        };
        if end > self.backed_bytes.load(Ordering::Acquire) && end > self.refresh_length()? {
            return Err(Error::corrupt(&self.path, start, "the file ends before the data it should hold"));
        }
        // SAFETY: the range lies inside the mapping (checked against the capacity) and inside
        // the file (checked against its length), so touching it cannot fault. It starts past the
        // header, whose synced marker is the only part of a file written after publication, and
        // its bytes are published, so no process writes them any more (see the module comment).
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start as usize), len as usize) })
    }
}

/// Refuses a log file whose capacity this build would never have given it. A segment that takes
/// appends is made with room for `segment_bytes` of data plus one batch of the largest size
/// (see `dir::new_segment`); a smaller one (a damaged or forged header with a valid
/// checksum) would leave a writer no room for the next batch, and it cannot roll away from an
/// empty segment. A compacted segment's capacity is exactly its data, which readers bound.
fn check_log_capacity(log: &MappedFile) -> Result<()> {
    let capacity = u64::from(log.header.capacity_bytes);
    let overhead = u64::from(FILE_HEADER_BYTES) + MAX_BATCH_BYTES;
    let appendable = (overhead + MIN_SEGMENT_BYTES..=overhead + MAX_SEGMENT_BYTES).contains(&capacity);
    if log.header.flags & format::SEGMENT_COMPACTED == 0 && !appendable {
        return Err(Error::corrupt(
            &log.path,
            12,
            format!(
                "capacity of {capacity} bytes is outside {}..={}, the capacities of the segments streamlog makes",
                overhead + MIN_SEGMENT_BYTES,
                overhead + MAX_SEGMENT_BYTES
            ),
        ));
    }
    Ok(())
}

/// Runs once, just before a new segment file under this directory is renamed into place, so
/// that a test can change the directory at the worst moment.
#[cfg(test)]
pub(crate) static BEFORE_RENAME_UNDER: parking_lot::Mutex<Option<RenameHook>> = parking_lot::Mutex::new(None);

/// A directory and what to run there (see `BEFORE_RENAME_UNDER`).
#[cfg(test)]
pub(crate) type RenameHook = (PathBuf, Box<dyn FnOnce() + Send>);

fn run_rename_hook(_file: &Path) {
    #[cfg(test)]
    if let Some((_, hook)) = BEFORE_RENAME_UNDER.lock().take_if(|(dir, _)| _file.starts_with(dir)) {
        hook();
    }
}

/// Counts the fsyncs of segments under a directory: `(directory, count)`.
#[cfg(test)]
pub(crate) static SYNCS_UNDER: parking_lot::Mutex<Option<(PathBuf, u64)>> = parking_lot::Mutex::new(None);

/// A mapped segment and its index.
pub(crate) struct Segment {
    pub(crate) partition: TopicPartition,
    log: MappedFile,
    index: MappedFile,
    /// Bytes of the log below this are published, so no process writes them again: reads stay
    /// below it. Raised from the partition's shared state (`note_published`).
    published_bytes: AtomicU64,
    /// How far this process has asked for the log's pages to be mapped ahead of the tail
    /// (`claim_prefault`).
    prefaulted_bytes: AtomicU64,
    /// Opened by recovery, which knows that no other process maps the files (`open_alone`).
    alone: bool,
    /// Whether the files' names are known to be on stable storage. Only `create` syncs the
    /// directory; otherwise the first `sync` does, since the segment may come from a spare
    /// renamed into place without a sync (here or in another process).
    name_synced: AtomicBool,
    _users: Arc<DirLock>,
}

/// The files of a segment made ahead of the roll that will use them, so that a roll neither
/// creates nor syncs a file while it holds the append lock: under temporary names (recovery
/// deletes them), holding only a placeholder header (`format::SEGMENT_SPARE`), synced
/// before use. Made by `Segment::prepare_spare`, used by `Segment::place_spare`; dropped
/// unused, it deletes its files.
pub(crate) struct Spare {
    /// The log file and the index file, until they are placed.
    files: Option<(PathBuf, PathBuf)>,
    header: FileHeader,
    index_capacity_bytes: u32,
    /// Space reserved in the log file.
    pub(crate) reserve_bytes: u64,
}

impl Spare {
    /// Whether these files can become segment `header` with an index of `index_capacity_bytes`
    /// (the topic's settings may have changed since they were made).
    pub(crate) fn fits(&self, header: &FileHeader, index_capacity_bytes: u32) -> bool {
        let expected = FileHeader { base_offset: u64::MAX, created_ms: 0, flags: format::SEGMENT_SPARE, ..*header };
        self.header == expected && self.index_capacity_bytes == index_capacity_bytes
    }
}

impl Spare {
    /// Makes both files durable (not their names, which are temporary).
    pub(crate) fn sync(&self) -> Result<()> {
        let (log, index) = self.files.as_ref().expect("a spare is synced before it is placed");
        for path in [log, index] {
            file::open_file(path, Access::Read)?.sync_all().during("sync", path)?;
        }
        Ok(())
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        if let Some((log, index)) = self.files.take() {
            let _ = fs::remove_file(log);
            let _ = fs::remove_file(index);
        }
    }
}

/// The space a sealed segment's files hold past its data (see `Segment::release_unused`),
/// given back once, by whichever comes first: the segment's sealer, the writer's next roll
/// (so that a writer has at most one segment's reservation outstanding), a send of the
/// writer that finds the disk full, or the last holder's drop.
pub(crate) struct UnusedSpace {
    /// The segment until its space is given back; held no longer, so that retention deleting
    /// it gets its space back too.
    segment: parking_lot::Mutex<Option<Arc<Segment>>>,
    log_bytes: u64,
    index_entries: u64,
}

impl UnusedSpace {
    /// The space of `segment` past `log_bytes` of log and `index_entries` index entries.
    pub(crate) fn new(segment: Arc<Segment>, log_bytes: u64, index_entries: u64) -> Arc<Self> {
        Arc::new(UnusedSpace { segment: parking_lot::Mutex::new(Some(segment)), log_bytes, index_entries })
    }

    /// Gives the space back unless that was done; a caller that finds it being done waits until
    /// it is. A failure leaves the space allocated and the data as it was: nothing to report.
    pub(crate) fn release(&self) {
        let mut segment = self.segment.lock();
        if let Some(sealed) = segment.take() {
            let _ = sealed.release_unused(self.log_bytes, self.index_entries);
        }
    }
}

impl Drop for UnusedSpace {
    /// The last holder gives the space back if nobody did (a sealer that never ran).
    fn drop(&mut self) {
        self.release();
    }
}

impl Segment {
    /// Creates the files of a new, empty segment and makes them durable with their directory.
    pub(crate) fn create(
        dir: &Path,
        partition: TopicPartition,
        header: FileHeader,
        index_capacity_bytes: u32,
        reserve_bytes: u64,
        users: Arc<DirLock>,
    ) -> Result<Self> {
        let index_header = FileHeader { magic: INDEX_MAGIC, capacity_bytes: index_capacity_bytes, ..header };
        let index_path = dir.join(format::index_file_name(header.base_offset));
        let index = MappedFile::create(&index_path, index_header, 0)?.close_file();
        let log = MappedFile::create(&dir.join(format::segment_file_name(header.base_offset)), header, reserve_bytes)
            .inspect_err(|_| drop(fs::remove_file(&index_path)))?;
        file::fsync_dir(dir)?;
        Ok(Segment::new(partition, log, index, true, users))
    }

    fn new(partition: TopicPartition, log: MappedFile, index: MappedFile, name_synced: bool, users: Arc<DirLock>) -> Self {
        Segment {
            partition,
            log,
            index,
            published_bytes: AtomicU64::new(u64::from(FILE_HEADER_BYTES)),
            prefaulted_bytes: AtomicU64::new(0),
            alone: false,
            name_synced: AtomicBool::new(name_synced),
            _users: users,
        }
    }

    /// Makes the files of a segment for a later roll (see `Spare`), to be synced with
    /// `Spare::sync`: `header` is the segment's but for its base offset and creation time,
    /// which `place_spare` fills in.
    pub(crate) fn prepare_spare(dir: &Path, header: FileHeader, index_capacity_bytes: u32, reserve_bytes: u64) -> Result<Spare> {
        static PREPARED: AtomicU64 = AtomicU64::new(0);
        let number = PREPARED.fetch_add(1, Ordering::Relaxed);
        let name = |kind: &str| dir.join(format!("spare.{}.{number}.{kind}.tmp", std::process::id()));
        let header = FileHeader { base_offset: u64::MAX, created_ms: 0, flags: format::SEGMENT_SPARE, ..header };
        let spare = Spare { files: Some((name("log"), name("index"))), header, index_capacity_bytes, reserve_bytes };
        let (log, index) = spare.files.as_ref().expect("just made");
        let index_header = FileHeader { magic: INDEX_MAGIC, capacity_bytes: index_capacity_bytes, ..header };
        MappedFile::prepare_unsynced(index, index_header, 0)?;
        MappedFile::prepare_unsynced(log, header, reserve_bytes)?;
        Ok(spare)
    }

    /// Turns `spare` into segment `header` (which it must fit: `Spare::fits`): writes the real
    /// headers and renames the files into place, index first, as `create` does. Nothing is
    /// synced: the first `sync` of the segment syncs its directory (see `name_synced`), and a
    /// power cut that keeps a rename but not its header is repaired by recovery
    /// (`format::SEGMENT_SPARE`).
    pub(crate) fn place_spare(
        mut spare: Spare,
        dir: &Path,
        partition: TopicPartition,
        header: FileHeader,
        users: Arc<DirLock>,
    ) -> Result<Self> {
        debug_assert!(spare.fits(&header, spare.index_capacity_bytes));
        let (log_spare, index_spare) = spare.files.take().expect("a spare is placed once");
        let index_path = dir.join(format::index_file_name(header.base_offset));
        let index_header = FileHeader { magic: INDEX_MAGIC, capacity_bytes: spare.index_capacity_bytes, ..header };
        let placed = MappedFile::place(&index_spare, &index_path, index_header).and_then(|index| {
            failpoint!("spare-index-placed");
            let log = MappedFile::place(&log_spare, &dir.join(format::segment_file_name(header.base_offset)), header)
                .inspect_err(|_| drop(fs::remove_file(&index_path)))?;
            Ok((log, index.close_file()))
        });
        let (log, index) = placed.inspect_err(|_| {
            let _ = fs::remove_file(&log_spare);
            let _ = fs::remove_file(&index_spare);
        })?;
        Ok(Segment::new(partition, log, index, false, users))
    }

    /// Maps an existing segment of log `log`, checking both headers: their base offsets against
    /// the file name, their log ids against `log` (a file copied in from another partition,
    /// topic or queue is refused), and their capacities against what this build creates.
    pub(crate) fn open(dir: &Path, base_offset: u64, partition: TopicPartition, log: LogId, users: Arc<DirLock>) -> Result<Self> {
        let log_file = MappedFile::open(&dir.join(format::segment_file_name(base_offset)), SEGMENT_MAGIC)?;
        check_log_capacity(&log_file)?;
        let index = MappedFile::open(&dir.join(format::index_file_name(base_offset)), INDEX_MAGIC)?.close_file();
        if !(u64::from(index.header.capacity_bytes) - u64::from(FILE_HEADER_BYTES)).is_multiple_of(u64::from(INDEX_ENTRY_BYTES)) {
            return Err(Error::corrupt(&index.path, 12, "index capacity is not a whole number of entries"));
        }
        for file in [&log_file, &index] {
            if file.header.base_offset != base_offset {
                return Err(Error::corrupt(
                    &file.path,
                    16,
                    format!("header says base offset {}, name says {base_offset}", file.header.base_offset),
                ));
            }
            let found = file.header.log;
            if found != log {
                return Err(Error::corrupt(
                    &file.path,
                    format::LOG_ID_AT as u64,
                    format!(
                        "the file belongs to partition {} of the topic with id {:#x}, not to partition {} of the topic with id {:#x} \
                         (copied in from another partition, topic or queue?)",
                        found.partition, found.topic_id, log.partition, log.topic_id
                    ),
                ));
            }
        }
        if log_file.header.flags & format::SEGMENT_SPARE != 0 {
            return Err(Error::corrupt(&log_file.path, 10, "the header is a spare's placeholder, which only recovery repairs"));
        }
        Ok(Segment::new(partition, log_file, index, false, users))
    }

    /// Opens a segment as `open` does, for recovery: all of it may be read, and it may be
    /// truncated.
    ///
    /// # Safety
    ///
    /// No other process may map the segment's files, and none may start to until the segment
    /// is truncated (which ends what recovery may do alone) or dropped. Recovery runs only when
    /// a process uses a partition first in a new epoch, under the partition state file's
    /// exclusive lock, which every process holds to map the partition.
    pub(crate) unsafe fn open_alone(
        dir: &Path,
        base_offset: u64,
        partition: TopicPartition,
        log: LogId,
        users: Arc<DirLock>,
    ) -> Result<Self> {
        let segment = Self::open(dir, base_offset, partition, log, users)?;
        segment.published_bytes.store(u64::MAX, Ordering::Release);
        Ok(Segment { alone: true, ..segment })
    }

    pub(crate) fn base_offset(&self) -> u64 {
        self.log.header.base_offset
    }

    /// Whether compaction wrote this segment (see `format::SEGMENT_COMPACTED`).
    pub(crate) fn is_compacted(&self) -> bool {
        self.log.header.flags & format::SEGMENT_COMPACTED != 0
    }

    pub(crate) fn created_ms(&self) -> u64 {
        self.log.header.created_ms
    }

    pub(crate) fn capacity_bytes(&self) -> u64 {
        u64::from(self.log.header.capacity_bytes)
    }

    pub(crate) fn index_capacity_entries(&self) -> u64 {
        (u64::from(self.index.header.capacity_bytes) - u64::from(FILE_HEADER_BYTES)) / u64::from(INDEX_ENTRY_BYTES)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.log.path
    }

    /// Bytes of the log file that exist on disk right now.
    pub(crate) fn log_length(&self) -> Result<u64> {
        self.log.refresh_length()
    }

    /// Published bytes of the log; see `MappedFile::bytes`. A range past what this process
    /// knows to be published (`note_published`) is refused: another process may be writing it.
    pub(crate) fn read(&self, start: u64, len: u64) -> Result<&[u8]> {
        let published = self.published_bytes.load(Ordering::Acquire);
        if start.checked_add(len).is_none_or(|end| end > published) {
            return Err(Error::corrupt(&self.log.path, start, format!("{len} bytes here pass the published end, {published}")));
        }
        self.log.bytes(start, len)
    }

    /// Learns from a tail read from the partition's shared state how much of this segment is
    /// published: its published end while it is the active segment, all of it once a later
    /// one is.
    #[inline]
    pub(crate) fn note_published(&self, tail: &Tail) {
        let published = match tail.active_base.cmp(&self.base_offset()) {
            std::cmp::Ordering::Greater => u64::MAX,
            std::cmp::Ordering::Equal => tail.end_position,
            // Not published at all: the files of a roll that was never completed.
            std::cmp::Ordering::Less => return,
        };
        // A reader walking its batches calls this for each: only a larger end is written.
        if self.published_bytes.load(Ordering::Acquire) < published {
            self.published_bytes.fetch_max(published, Ordering::AcqRel);
        }
    }

    pub(crate) fn reserve_log(&self, bytes: u64) -> Result<()> {
        self.log.reserve(bytes)
    }

    pub(crate) fn reserve_index(&self, bytes: u64) -> Result<()> {
        self.index.reserve(bytes)
    }

    /// Runs `fill` on the unpublished log bytes `[start, start + len)` of this, the active
    /// segment. `guard` proves that the caller holds the append lock, which keeps every other
    /// writer out; the range must start at or past the published end and lie inside the
    /// reserved part of the file, or nothing is written and the error says why.
    pub(crate) fn write_unpublished(
        &self,
        guard: &AppendGuard<'_>,
        start: u64,
        len: u64,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        self.check_unpublished(guard, start, len)?;
        // SAFETY: the range is inside the mapping and the allocated file, and at or past the
        // published end of this active segment (all checked above), so no reader in any process
        // looks at it; the append lock `guard` proves keeps every other writer out, so this is
        // the only reference to these bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.log.map.as_mut_ptr().add(start as usize), len as usize) };
        fill(bytes);
        Ok(())
    }

    /// Writes `pieces` one after another at `start` with `pwritev`; the same rules as
    /// `write_unpublished` apply.
    pub(crate) fn pwrite_unpublished(&self, guard: &AppendGuard<'_>, start: u64, pieces: &[&[u8]]) -> Result<()> {
        let len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        self.check_unpublished(guard, start, len)?;
        self.log.with_file(|file| file::write_all_vectored_at(file, pieces, start).during("write", &self.log.path))
    }

    /// Checks that `[start, start + len)` may be written by the holder of `guard`: this is the
    /// published active segment, and the range lies past its published end and inside the part
    /// of the file that is reserved.
    fn check_unpublished(&self, guard: &AppendGuard<'_>, start: u64, len: u64) -> Result<()> {
        let published = guard.published_tail();
        if published.active_base != self.base_offset() || start < published.end_position {
            return Err(Error::corrupt(&self.log.path, start, "a write to published data"));
        }
        let end = start.checked_add(len).filter(|&end| end <= self.log_reserved_bytes());
        if end.is_none() {
            return Err(Error::corrupt(
                &self.log.path,
                start,
                format!("a write of {len} bytes past the reserved part of the file"),
            ));
        }
        Ok(())
    }

    /// Tells the kernel that this process appends to the segment: a fault on its mapping maps
    /// one page instead of reading around it. Read-around is what a reader of old data wants,
    /// but for a writer it fills the page cache with zeroed pages past the tail, up to the
    /// disk's read-ahead size (often megabytes) per segment, which with thousands of active
    /// partitions costs gigabytes and most of the time of a send.
    pub(crate) fn expect_appends(&self) {
        // Advice only changes how fast faults are; failing to give it changes nothing else.
        let _ = self.log.map.advise(Advice::Random);
    }

    /// Gives back the read-around `expect_appends` turned off, once the segment is sealed.
    pub(crate) fn expect_reads(&self) {
        let _ = self.log.map.advise(Advice::Normal);
    }

    /// The range of log bytes to map ahead of a tail at `end`, if the pages there are not
    /// mapped or asked for yet; `prefault` maps it. The window ahead grows with what the
    /// segment holds, from `PREFAULT_MIN_BYTES` to `PREFAULT_MAX_BYTES`, so that a partition
    /// written slowly holds little page cache past its data, and it is asked for again when
    /// the tail has used half of it. It stays inside the reserved part of the file.
    pub(crate) fn claim_prefault(&self, end: u64) -> Option<(u64, u64)> {
        let window = (end - u64::from(FILE_HEADER_BYTES)).clamp(format::PREFAULT_MIN_BYTES, format::PREFAULT_MAX_BYTES);
        if self.prefaulted_bytes.load(Ordering::Relaxed) >= end + window / 2 {
            return None;
        }
        let to = (end + window).min(self.log_reserved_bytes());
        let from = self.prefaulted_bytes.fetch_max(to, Ordering::Relaxed).max(end);
        (from < to).then_some((from, to))
    }

    /// Maps the log bytes `[from, to)` (from `claim_prefault`) writable in this process, so
    /// that the appends that reach them do not fault. It only maps pages: what they hold stays
    /// as it is (zeros past the tail), so it may run while writers and readers use the
    /// segment. A range the file does not back fails without touching it (the kernel reports
    /// the fault as an error, not a signal), which changes nothing but speed.
    pub(crate) fn prefault(&self, (from, to): (u64, u64)) {
        let _ = self.log.map.advise_range(Advice::PopulateWrite, from as usize, (to - from) as usize);
    }

    fn index_words(&self, entry: u64) -> Option<(&AtomicU64, &AtomicU64)> {
        let at = u64::from(FILE_HEADER_BYTES) + entry * u64::from(INDEX_ENTRY_BYTES);
        if at + u64::from(INDEX_ENTRY_BYTES)
            > self.index.backed_bytes.load(Ordering::Acquire).min(u64::from(self.index.header.capacity_bytes))
        {
            return None;
        }
        // SAFETY: entries are 16-byte aligned (the header is 64 bytes, the mapping page-aligned)
        // and inside both the mapping and the allocated file; all access is atomic.
        unsafe {
            let base = self.index.map.as_mut_ptr().add(at as usize);
            Some((&*(base as *const AtomicU64), &*(base.add(8) as *const AtomicU64)))
        }
    }

    /// Index entry `n`, or `None` past the allocated part of the index file or where the entry
    /// is damaged. An entry is either empty (all zero) or points at a batch header past the file
    /// header and inside the log's capacity; any other is damage, and ends the usable index as
    /// an empty entry would (entries are hints, checked against the log before use). So a
    /// damaged index never turns into a read of the file header.
    pub(crate) fn index_entry(&self, n: u64) -> Option<IndexEntry> {
        let (location, timestamp) = self.index_words(n)?;
        let entry = IndexEntry::from_words(location.load(Ordering::Acquire), timestamp.load(Ordering::Acquire));
        let position = u64::from(entry.position);
        let points_at_data = position >= u64::from(FILE_HEADER_BYTES)
            && position + u64::from(BATCH_HEADER_BYTES) <= u64::from(self.log.header.capacity_bytes);
        let empty = entry.position == 0 && entry.relative_offset == 0;
        (empty || points_at_data).then_some(entry)
    }

    /// Writes index entry `n`; the caller holds the append lock and reserved the entry.
    pub(crate) fn write_index_entry(&self, n: u64, entry: IndexEntry) {
        if let Some((location, timestamp)) = self.index_words(n) {
            timestamp.store(entry.max_timestamp_before_ms, Ordering::Release);
            location.store(entry.packed_location(), Ordering::Release);
        }
    }

    /// Index entries of a sealed segment: they end at the first empty or out-of-order entry.
    pub(crate) fn sealed_index(&self) -> Vec<IndexEntry> {
        let mut entries: Vec<IndexEntry> = Vec::new();
        let mut n = 0;
        while let Some(entry) = self.index_entry(n) {
            let in_order =
                entries.last().is_none_or(|last| entry.position > last.position && entry.relative_offset > last.relative_offset);
            if entry.position == 0 || !in_order {
                break;
            }
            entries.push(entry);
            n += 1;
        }
        entries
    }

    fn synced_marker_words(&self) -> (&AtomicU64, &AtomicU64) {
        // SAFETY: bytes 32..48 of the header are 8-aligned, inside the mapping and the file
        // (every segment file starts with its whole header), and every process touches them only
        // through these atomics, under the partition's sync lock for writes.
        unsafe {
            let at = self.log.map.as_mut_ptr().add(format::SYNCED_MARKER_AT);
            (&*(at as *const AtomicU64), &*(at.add(8) as *const AtomicU64))
        }
    }

    /// How many bytes of the log are known to be on stable storage (see `FileHeader`).
    pub(crate) fn synced_bytes(&self) -> u64 {
        let (value, complement) = self.synced_marker_words();
        format::synced_marker(value.load(Ordering::Acquire), complement.load(Ordering::Acquire))
    }

    /// Raises the synced-bytes marker after an fsync covering `bytes` has completed. Callers
    /// hold the partition's sync lock.
    pub(crate) fn record_synced(&self, bytes: u64) {
        if bytes > self.synced_bytes() {
            let (value, complement) = self.synced_marker_words();
            complement.store(!bytes, Ordering::Release);
            value.store(bytes, Ordering::Release);
        }
    }

    /// Flushes the log file to stable storage.
    pub(crate) fn sync(&self) -> Result<()> {
        #[cfg(test)]
        if let Some((_, count)) = SYNCS_UNDER.lock().as_mut().filter(|(dir, _)| self.log.path.starts_with(dir)) {
            *count += 1;
        }
        self.log.with_file(|file| file::sync_data(file).during("fsync", &self.log.path))?;
        if !self.name_synced.load(Ordering::Acquire) {
            file::fsync_dir(file::parent_of(&self.log.path))?;
            self.name_synced.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Cuts the log and index files to the given lengths, for recovery: the segment must have
    /// been opened by `open_alone`, so nobody else maps them. Afterwards only what lies below
    /// `log_bytes` counts as published, until the shared state says more is.
    pub(crate) fn truncate(&self, log_bytes: u64, index_entries: u64) -> Result<()> {
        assert!(self.alone, "only recovery truncates, on segments nobody else maps");
        self.published_bytes.store(log_bytes.min(self.published_bytes.load(Ordering::Acquire)), Ordering::Release);
        let index_bytes = u64::from(FILE_HEADER_BYTES) + index_entries * u64::from(INDEX_ENTRY_BYTES);
        for (mapped, bytes) in [(&self.log, log_bytes), (&self.index, index_bytes)] {
            mapped.with_file(|file| {
                file.set_len(bytes).during("truncate", &mapped.path)?;
                mapped.backed_bytes.store(bytes, Ordering::Release);
                file.sync_all().during("sync", &mapped.path)
            })?;
        }
        Ok(())
    }

    /// Gives back the disk space reserved past the data of a sealed segment, whose log holds
    /// `log_bytes` and whose index holds `index_entries` entries. The files keep their length
    /// (other processes map them whole); the ranges become holes. The page holding the first
    /// bytes past the data stays allocated, so that the one look past the end a reader takes
    /// (the empty entry that ends a sealed index, a batch header at the end of a damaged log)
    /// reads zeros from the disk rather than from a hole. Nothing ever writes there again.
    pub(crate) fn release_unused(&self, log_bytes: u64, index_entries: u64) -> Result<()> {
        let index_bytes = u64::from(FILE_HEADER_BYTES) + index_entries * u64::from(INDEX_ENTRY_BYTES);
        let kept = [
            (&self.log, log_bytes + u64::from(format::BATCH_HEADER_BYTES)),
            (&self.index, index_bytes + u64::from(INDEX_ENTRY_BYTES)),
        ];
        for (mapped, keep) in kept {
            mapped.with_file(|file| {
                let length = file.metadata().during("stat", &mapped.path)?.len();
                let start = keep.next_multiple_of(HOLE_ALIGN_BYTES);
                file::punch_hole(file, start, length).during("give back the space reserved in", &mapped.path)
            })?;
        }
        Ok(())
    }

    /// For recovery, of a sealed segment whose log holds `log_bytes` of data: gives back what
    /// its log file still has allocated past them (left by a writer that died before its
    /// releaser ran, see `UnusedSpace`), if it has any. Its index keeps its small reservation.
    pub(crate) fn release_unused_log(&self, log_bytes: u64) -> Result<()> {
        let allocated_bytes = self.log.with_file(|file| {
            Ok(std::os::unix::fs::MetadataExt::blocks(&file.metadata().during("stat", &self.log.path)?) * 512)
        })?;
        if allocated_bytes > log_bytes.next_multiple_of(HOLE_ALIGN_BYTES) + HOLE_ALIGN_BYTES {
            self.release_unused(log_bytes, self.index_capacity_entries())?;
        }
        Ok(())
    }

    /// Learns that a writer (perhaps in another process) allocated the log up to `log_bytes`
    /// and the index up to `index_bytes`. The claims come from the shared state, so they are
    /// believed only as far as the files' lengths bear them out: touching a mapped page past
    /// the end of its file raises SIGBUS. Writers reserve in large steps, so looking is rare.
    pub(crate) fn note_reserved(&self, log_bytes: u64, index_bytes: u64) {
        for (mapped, bytes) in [(&self.log, log_bytes), (&self.index, index_bytes)] {
            if bytes.min(u64::from(mapped.header.capacity_bytes)) > mapped.backed_bytes.load(Ordering::Acquire) {
                // If the file cannot be looked at, the known length stays: reads past it look
                // again and report why.
                let _ = mapped.refresh_length();
            }
        }
    }

    /// Bytes of the log file known to be allocated (and inside the mapping).
    pub(crate) fn log_reserved_bytes(&self) -> u64 {
        self.log.backed_bytes.load(Ordering::Acquire).min(self.capacity_bytes())
    }

    /// Bytes of the index file that exist on disk.
    pub(crate) fn index_length(&self) -> u64 {
        self.index.backed_bytes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty directory for test `name`, and the header of a segment of `capacity_bytes`.
    fn scratch(name: &str, capacity_bytes: u32) -> (PathBuf, FileHeader) {
        let dir = std::env::temp_dir().join(format!("streamlog-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let log = LogId { topic_id: 1, partition: 0 };
        (dir, FileHeader { magic: SEGMENT_MAGIC, capacity_bytes, base_offset: 0, created_ms: 0, flags: 0, log })
    }

    #[test]
    fn prefault_claims_follow_the_tail_without_overlap_and_stay_in_the_reserved_file() {
        let (dir, header) = scratch("prefault", 4 << 20);
        let users = Arc::new(DirLock::new(File::open(&dir).unwrap()));
        let reserved = 1 << 20;
        let segment = Segment::create(&dir, TopicPartition::new("t", 0), header, 4096, reserved, users).unwrap();
        let header_bytes = u64::from(FILE_HEADER_BYTES);
        let mut claimed = Vec::new();
        let mut end = header_bytes;
        while end < reserved {
            end += 164;
            if let Some(range) = segment.claim_prefault(end) {
                segment.prefault(range);
                claimed.push(range);
            }
        }
        assert_eq!(
            claimed[0],
            (header_bytes + 164, header_bytes + 164 + format::PREFAULT_MIN_BYTES),
            "the first window is the least"
        );
        for pair in claimed.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "each claim starts where the last ended: {claimed:?}");
        }
        let last = claimed.last().unwrap();
        assert_eq!(last.1, reserved, "claims stop at the reserved end");
        let widest = claimed.iter().map(|(from, to)| to - from).max().unwrap();
        assert!(widest <= format::PREFAULT_MAX_BYTES, "a claim of {widest} bytes");
        assert!(claimed.len() < 40, "{} claims for 1 MiB: the window did not grow", claimed.len());
        // Prefaulting mapped the pages without changing what they hold.
        segment.published_bytes.store(reserved, Ordering::Release);
        assert!(segment.read(header_bytes, reserved - header_bytes).unwrap().iter().all(|&b| b == 0));
        drop(segment);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_read_touches_the_file_header() {
        let (dir, header) = scratch("header-reads", 4096);
        let file = MappedFile::create(&dir.join(format::segment_file_name(0)), header, 4096).unwrap();
        for (start, len) in [(0, 8), (32, 16), (40, 40), (63, 1)] {
            assert!(matches!(file.bytes(start, len), Err(Error::Corrupt { .. })), "bytes {start}+{len} were handed out");
        }
        assert_eq!(file.bytes(64, 8).unwrap(), &[0u8; 8]);
        drop(file);
        fs::remove_dir_all(&dir).unwrap();
    }
}
