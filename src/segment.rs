//! One segment: a log file of record batches and its sparse index, both mapped.
//!
//! Soundness of the mappings (the argument ARCHITECTURE.md repeats):
//! - A file is never shortened while any process maps it. Only recovery truncates, and
//!   recovery runs only while no other handle on the queue exists in any process; every
//!   mapping holds the queue's shared "users" lock (`DirLock`) until it is unmapped.
//! - Readers touch only bytes below a bound known to be inside the file: the published end of
//!   the active segment (written, and so allocated, before it was published), or the length of
//!   a sealed segment's file. Writers touch only bytes they reserved with `fallocate` first, so
//!   a full disk fails the reservation with an error instead of raising SIGBUS on a page fault.
//! - Bytes below the published end never change again: the log is append-only, and writers
//!   hold the append lock and write only past the published end.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, IoContext, Result};
use crate::format::{self, FILE_HEADER_BYTES, FileHeader, INDEX_ENTRY_BYTES, INDEX_MAGIC, IndexEntry, SEGMENT_MAGIC};
use crate::queue::DirLock;
use crate::sys;
use crate::topic::TopicPartition;

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
        let temporary = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)
            .during("create", &temporary)?;
        let prepared = (|| {
            sys::reserve(&file, reserve_bytes.max(u64::from(FILE_HEADER_BYTES))).during("reserve space for", &temporary)?;
            file.write_all_at(&header.encode(), 0).during("write the header of", &temporary)?;
            file.sync_all().during("sync", &temporary)?;
            fs::rename(&temporary, path).during("rename into place", path)
        })();
        if prepared.is_err() {
            // Give back the space at once (a full disk is the usual reason to be here).
            let _ = fs::remove_file(&temporary);
        }
        prepared?;
        Self::map(file, path, header)
    }

    fn open(path: &Path, magic: [u8; 8]) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path).during("open", path)?;
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
            identity: sys::file_identity(&metadata),
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
        let file = OpenOptions::new().read(true).write(true).open(&self.path).during("reopen", &self.path)?;
        let metadata = file.metadata().during("stat", &self.path)?;
        if sys::file_identity(&metadata) != self.identity {
            return Err(Error::corrupt(&self.path, 0, "the file was replaced while mapped"));
        }
        operation(&file)
    }

    /// Makes sure `[0, bytes)` is allocated; `bytes` is clamped to the capacity.
    fn reserve(&self, bytes: u64) -> Result<()> {
        let bytes = bytes.min(u64::from(self.header.capacity_bytes));
        if bytes > self.backed_bytes.load(Ordering::Acquire) {
            self.with_file(|file| sys::reserve(file, bytes).during("reserve space in", &self.path))?;
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
    fn bytes(&self, start: u64, len: u64) -> Result<&[u8]> {
        let end = start.checked_add(len).filter(|&end| end <= u64::from(self.header.capacity_bytes));
        let Some(end) = end else {
            return Err(Error::corrupt(&self.path, start, format!("{len} bytes here would pass the end of the segment")));
        };
        if end > self.backed_bytes.load(Ordering::Acquire) && end > self.refresh_length()? {
            return Err(Error::corrupt(&self.path, start, "the file ends before the data it should hold"));
        }
        // SAFETY: the range lies inside the mapping (checked against the capacity) and inside
        // the file (checked against its length), so touching it cannot fault. Its bytes are
        // published, so no process writes them any more (see the module comment).
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start as usize), len as usize) })
    }
}

/// Makes the next fsync of a segment under this directory fail with EIO, as a dying disk would.
#[cfg(test)]
pub(crate) static FAIL_NEXT_SYNC_UNDER: parking_lot::Mutex<Option<PathBuf>> = parking_lot::Mutex::new(None);

/// Counts the fsyncs of segments under a directory: `(directory, count)`.
#[cfg(test)]
pub(crate) static SYNCS_UNDER: parking_lot::Mutex<Option<(PathBuf, u64)>> = parking_lot::Mutex::new(None);

/// A mapped segment and its index.
pub(crate) struct Segment {
    pub(crate) partition: TopicPartition,
    log: MappedFile,
    index: MappedFile,
    _users: Arc<DirLock>,
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
        sys::sync_directory(dir).during("sync directory", dir)?;
        Ok(Segment { partition, log, index, _users: users })
    }

    /// Maps an existing segment, checking both headers.
    pub(crate) fn open(dir: &Path, base_offset: u64, partition: TopicPartition, users: Arc<DirLock>) -> Result<Self> {
        let log = MappedFile::open(&dir.join(format::segment_file_name(base_offset)), SEGMENT_MAGIC)?;
        let index = MappedFile::open(&dir.join(format::index_file_name(base_offset)), INDEX_MAGIC)?.close_file();
        for file in [&log, &index] {
            if file.header.base_offset != base_offset {
                return Err(Error::corrupt(
                    &file.path,
                    16,
                    format!("header says base offset {}, name says {base_offset}", file.header.base_offset),
                ));
            }
        }
        Ok(Segment { partition, log, index, _users: users })
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

    /// Published bytes of the log; see `MappedFile::bytes`.
    pub(crate) fn read(&self, start: u64, len: u64) -> Result<&[u8]> {
        self.log.bytes(start, len)
    }

    pub(crate) fn reserve_log(&self, bytes: u64) -> Result<()> {
        self.log.reserve(bytes)
    }

    pub(crate) fn reserve_index(&self, bytes: u64) -> Result<()> {
        self.index.reserve(bytes)
    }

    /// Runs `fill` on the unpublished log bytes `[start, start + len)`.
    ///
    /// The caller must hold the partition's append lock and have reserved the range.
    pub(crate) fn write_unpublished(&self, start: u64, len: u64, fill: impl FnOnce(&mut [u8])) {
        assert!(start + len <= self.log.backed_bytes.load(Ordering::Acquire), "writes stay inside the reserved file");
        // SAFETY: the range is inside the mapping and the allocated file (asserted above). It
        // lies past the published end, so no reader in any process looks at it, and the append
        // lock the caller holds keeps every other writer out, so this is the only reference.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.log.map.as_mut_ptr().add(start as usize), len as usize) };
        fill(bytes);
    }

    /// Writes `pieces` one after another at `start` with `pwritev`; the same rules as
    /// `write_unpublished` apply.
    pub(crate) fn pwrite_unpublished(&self, start: u64, pieces: &[&[u8]]) -> Result<()> {
        let len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        assert!(start + len <= self.log.backed_bytes.load(Ordering::Acquire), "writes stay inside the reserved file");
        self.log.with_file(|file| sys::write_all_vectored_at(file, pieces, start).during("write", &self.log.path))
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

    /// Index entry `n`, or `None` past the allocated part of the index file.
    pub(crate) fn index_entry(&self, n: u64) -> Option<IndexEntry> {
        let (location, timestamp) = self.index_words(n)?;
        Some(IndexEntry::from_words(location.load(Ordering::Acquire), timestamp.load(Ordering::Acquire)))
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
        if FAIL_NEXT_SYNC_UNDER.lock().take_if(|dir| self.log.path.starts_with(dir)).is_some() {
            return Err(Error::io("fsync", &self.log.path, std::io::Error::from_raw_os_error(libc::EIO)));
        }
        #[cfg(test)]
        if let Some((_, count)) = SYNCS_UNDER.lock().as_mut().filter(|(dir, _)| self.log.path.starts_with(dir)) {
            *count += 1;
        }
        self.log.with_file(|file| sys::sync_data(file).during("fsync", &self.log.path))
    }

    /// Cuts the log and index files to the given lengths. Recovery only: nobody else maps them.
    pub(crate) fn truncate(&self, log_bytes: u64, index_entries: u64) -> Result<()> {
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

    /// Records that a writer (perhaps in another process) allocated the log up to `bytes`.
    pub(crate) fn note_reserved(&self, log_bytes: u64, index_bytes: u64) {
        self.log.backed_bytes.fetch_max(log_bytes.min(self.capacity_bytes()), Ordering::AcqRel);
        self.index.backed_bytes.fetch_max(index_bytes.min(u64::from(self.index.header.capacity_bytes)), Ordering::AcqRel);
    }

    /// Bytes of the index file that exist on disk.
    pub(crate) fn index_length(&self) -> u64 {
        self.index.backed_bytes.load(Ordering::Acquire)
    }
}
