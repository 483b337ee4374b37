//! One partition as this process sees it: opening it (recovering it first in a new epoch), the
//! shared state, its published offsets checked against its files, and the list of its segments,
//! each mapped on first use. Appending, rolling, sealing and the group-commit syncs are in
//! `partition/append.rs`; reading through cursors in `read.rs`, retention and compaction in
//! their own modules.

mod append;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::background::Background;
use crate::error::{Error, IoContext, Result};
use crate::log::dir::list_segments;
use crate::log::format::{self, BATCH_HEADER_BYTES, BatchHeader, FILE_HEADER_BYTES, LogId};
use crate::log::recovery;
use crate::log::segment::{Segment, Spare, UnusedSpace};
use crate::log::state::{SharedState, Tail};
use crate::sys::file::{self, Access};
use crate::sys::lock::DirLock;
use crate::topic::{TopicConfig, TopicPartition};

/// What this process's writers of one partition keep between appends.
struct Writer {
    /// The active segment as last seen.
    active: Option<Arc<Segment>>,
    buffers: Buffers,
    /// The topic's settings, which `Queue::alter_topic` may change; segment sizes apply from
    /// the next segment on.
    config: TopicConfig,
    /// The active segment for which this writer last asked for a spare, so that the sends past
    /// an eighth do not all look at the spare slot.
    spare_asked_for: Option<u64>,
    /// What the segment this writer last rolled away from holds past its data, until it is
    /// given back.
    unreleased: Option<Arc<UnusedSpace>>,
}

/// Where a writer encodes large batches before writing them.
#[derive(Default)]
struct Buffers {
    /// A large batch (or, for one large record, the bytes before its value).
    batch: Vec<u8>,
    /// The bytes after a large record's value.
    suffix: Vec<u8>,
}

/// This process's files for the partition's next roll (see `Partition::prepare_spare`).
#[derive(Default)]
struct SpareSlot {
    /// Made and synced, for the next roll to take.
    ready: Option<Spare>,
    /// Made and being synced in the background.
    syncing: bool,
}

pub(crate) struct Partition {
    pub(crate) id: TopicPartition,
    /// The id every segment header of this partition carries.
    pub(super) log_id: LogId,
    pub(crate) dir: PathBuf,
    pub(super) state: SharedState,
    /// Known segments by base offset, mapped on first use.
    pub(super) segments: RwLock<BTreeMap<u64, Option<Arc<Segment>>>>,
    /// This process's writers take turns here before taking the cross-process append lock.
    writer: Mutex<Writer>,
    /// Files for this process's next roll, made once an eighth of the active segment is full
    /// (or half its age is up), so that the roll only renames them.
    spare: Mutex<SpareSlot>,
    pub(super) users: Arc<DirLock>,
    pub(super) background: Arc<Background>,
    /// Set when this process appended since the last background sync.
    dirty: AtomicBool,
    /// The compaction count (see `SharedState::compactions`) this process's mappings are from.
    compactions_seen: AtomicU64,
}

impl Partition {
    /// Opens a partition, recovering it from its files if this is the first use in the queue's
    /// current epoch (that is, since a process opened the queue alone).
    pub(crate) fn open(
        id: TopicPartition,
        log_id: LogId,
        dir: PathBuf,
        config: TopicConfig,
        epoch: u64,
        users: Arc<DirLock>,
        background: Arc<Background>,
    ) -> Result<Self> {
        let state_path = dir.join(format::STATE_FILE);
        match file::require_directory(&dir) {
            Ok(()) => {}
            Err(error) if file::is_not_found(&error) => return Err(Error::UnknownTopic(id.topic().to_owned())),
            Err(error) => return Err(error),
        }
        let file = file::open_file(&state_path, Access::Create)?;
        file.lock().during("lock", &state_path)?;
        let result = (|| {
            if SharedState::stored_epoch(&file).during("read", &state_path)? == Some(epoch) {
                let state = SharedState::map(file.try_clone().during("reopen", &state_path)?, &state_path)?;
                let active_base = state.tail().active_base;
                let bases = list_segments(&dir)?.into_iter().filter(|&b| b <= active_base);
                return Ok((state, bases.map(|b| (b, None)).collect(), None));
            }
            let recovered = recovery::recover(&dir, &id, log_id, &config, &users)?;
            let state = SharedState::initialize(
                file.try_clone().during("reopen", &state_path)?,
                &state_path,
                epoch,
                recovered.tail,
                recovered.bases.first().copied().unwrap_or(recovered.tail.active_base),
                recovered.synced_offset,
            )?;
            let mut segments: BTreeMap<u64, Option<Arc<Segment>>> = recovered.bases.into_iter().map(|b| (b, None)).collect();
            let active = Arc::new(recovered.active);
            segments.insert(active.base_offset(), Some(Arc::clone(&active)));
            Ok((state, segments, Some(active)))
        })();
        file.unlock().during("unlock", &state_path)?;
        let (state, segments, active) = result?;
        if let Some(active) = &active {
            active.expect_appends();
        }
        Ok(Partition {
            id,
            log_id,
            dir,
            state,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer { active, buffers: Buffers::default(), config, spare_asked_for: None, unreleased: None }),
            spare: Mutex::new(SpareSlot::default()),
            users,
            background,
            dirty: AtomicBool::new(false),
            compactions_seen: AtomicU64::new(0),
        })
    }

    /// Fails with `UnknownTopic` if this partition's topic was deleted, so that nothing is
    /// created or removed in a directory that now belongs to a new topic of the same name.
    pub(super) fn still_current(&self) -> Result<()> {
        if self.state.is_at(&self.dir.join(format::STATE_FILE)) {
            Ok(())
        } else {
            Err(Error::UnknownTopic(self.id.topic().to_owned()))
        }
    }

    /// `error` as its caller should see it: a file error in a partition whose directory no
    /// longer holds the `state` file it mapped means that its topic was deleted, whether the
    /// directory is gone or a new topic of the same name was created meanwhile.
    pub(crate) fn explain(&self, error: Error) -> Error {
        match error {
            Error::Io { .. } | Error::Corrupt { .. } | Error::UnexpectedFileType { .. } if self.still_current().is_err() => {
                Error::UnknownTopic(self.id.topic().to_owned())
            }
            error => error,
        }
    }

    /// Applies changed topic settings (from `Queue::alter_topic`).
    pub(crate) fn set_config(&self, config: TopicConfig) {
        self.writer.lock().config = config;
    }

    /// The published tail of the log.
    pub(crate) fn tail(&self) -> Tail {
        self.state.tail()
    }

    /// How far a reader of committed records may read in the log whose published end is
    /// `tail` (read before this): to the first offset of the earliest open transaction, or
    /// to the end when none is open (see `SharedState::last_stable_offset`).
    pub(crate) fn last_stable_offset(&self, tail: &Tail) -> u64 {
        self.state.last_stable_offset(tail)
    }

    /// The log start and the published tail, checked against the segments they describe. The
    /// state file is shared memory that recovery rebuilds, but within an epoch nothing guards
    /// it against a stray write: a tail that does not fit its active segment is reported as
    /// damage to the state file rather than believed.
    pub(crate) fn checked_offsets(&self) -> Result<(u64, Tail)> {
        let tail = self.tail();
        let start = self.start_offset();
        let header_bytes = u64::from(FILE_HEADER_BYTES);
        let damaged = |reason: String| Err(self.state.damaged_tail(reason));
        if tail.end_offset < tail.active_base || start > tail.active_base {
            return damaged(format!(
                "log start {start}, active segment base {} and end offset {} are out of order",
                tail.active_base, tail.end_offset
            ));
        }
        let positions_in_order = header_bytes <= tail.last_indexed_position
            && tail.last_indexed_position <= tail.end_position
            && tail.end_position <= tail.log_reserved_bytes;
        if !positions_in_order {
            return damaged(format!(
                "positions out of order (last indexed {}, end {}, reserved {})",
                tail.last_indexed_position, tail.end_position, tail.log_reserved_bytes
            ));
        }
        let (records, data_bytes) = (tail.end_offset - tail.active_base, tail.end_position - header_bytes);
        if records > format::max_records_in(data_bytes) {
            return damaged(format!("{records} records cannot fit in {data_bytes} bytes of segment"));
        }
        if !list_segments(&self.dir)?.contains(&tail.active_base) {
            return damaged(format!("there is no segment with the active base offset {}", tail.active_base));
        }
        let segment = self.segment(tail.active_base)?;
        segment.note_reserved(tail.log_reserved_bytes, tail.index_reserved_bytes);
        if tail.log_reserved_bytes > segment.log_reserved_bytes() || tail.index_count > segment.index_capacity_entries() {
            return damaged(format!(
                "{} reserved bytes and {} index entries do not fit segment {} ({} bytes reserved, room for {} entries)",
                tail.log_reserved_bytes,
                tail.index_count,
                segment.path().display(),
                segment.log_reserved_bytes(),
                segment.index_capacity_entries()
            ));
        }
        Ok((start, tail))
    }

    /// `Error::Poisoned` if an fsync of this partition failed, in any process, since the
    /// queue was last opened alone.
    pub(crate) fn check_not_poisoned(&self) -> Result<()> {
        match self.state.is_poisoned() {
            true => Err(Error::Poisoned(self.id.clone())),
            false => Ok(()),
        }
    }

    /// The first offset still in the log.
    pub(crate) fn start_offset(&self) -> u64 {
        self.state.log_start()
    }

    /// The mapped segment with this base offset, which must be published.
    pub(crate) fn segment(&self, base: u64) -> Result<Arc<Segment>> {
        let compactions = self.state.compactions();
        if self.compactions_seen.load(Ordering::Acquire) != compactions {
            // Some sealed segment was replaced: map sealed segments afresh from now on (readers
            // in the middle of an old one keep their mapping, whose data is just as valid).
            let active_base = self.tail().active_base;
            for (&b, mapped) in self.segments.write().iter_mut() {
                if b < active_base {
                    *mapped = None;
                }
            }
            self.compactions_seen.store(compactions, Ordering::Release);
        }
        if let Some(Some(segment)) = self.segments.read().get(&base) {
            segment.note_published(&self.state.tail());
            return Ok(Arc::clone(segment));
        }
        if !self.segments.read().contains_key(&base) {
            // Keep the list free of gaps: a reader finds where a segment ends by the next one.
            self.refresh_segments(base)?;
        }
        let mut segments = self.segments.write();
        if let Some(Some(segment)) = segments.get(&base) {
            segment.note_published(&self.state.tail());
            return Ok(Arc::clone(segment));
        }
        let segment = Arc::new(Segment::open(&self.dir, base, self.id.clone(), self.log_id, Arc::clone(&self.users))?);
        segment.note_published(&self.state.tail());
        segments.insert(base, Some(Arc::clone(&segment)));
        Ok(segment)
    }

    /// Makes sure the list of segments reaches `active_base` (the published active segment).
    pub(super) fn list_through(&self, active_base: u64) -> Result<()> {
        if self.segments.read().keys().next_back() < Some(&active_base) {
            self.refresh_segments(active_base)?;
        }
        Ok(())
    }

    /// Rebuilds the list of segments from the directory: every segment up to `last_base` (a
    /// published base, so nothing up to it is a half-made roll), keeping existing mappings.
    pub(super) fn refresh_segments(&self, last_base: u64) -> Result<()> {
        self.set_segments(list_segments(&self.dir)?, last_base);
        Ok(())
    }

    /// `refresh_segments` from `bases`, a listing of the directory.
    pub(super) fn set_segments(&self, bases: Vec<u64>, last_base: u64) {
        let mut segments = self.segments.write();
        let mut fresh: BTreeMap<u64, Option<Arc<Segment>>> =
            bases.into_iter().filter(|&b| b <= last_base).map(|b| (b, segments.remove(&b).flatten())).collect();
        if let Some(mapped) = segments.remove(&last_base) {
            fresh.insert(last_base, mapped);
        }
        *segments = fresh;
    }

    pub(super) fn known_base_at_or_before(&self, offset: u64) -> Option<u64> {
        self.segments.read().range(..=offset).next_back().map(|(&b, _)| b)
    }

    pub(super) fn known_base_after(&self, base: u64) -> Option<u64> {
        self.segments.read().range(base + 1..).next().map(|(&b, _)| b)
    }

    pub(super) fn corrupt_at(&self, position: u64, reason: String) -> Error {
        Error::corrupt(&self.dir, position, reason)
    }

    /// Drops this process's cached mappings of sealed segments (readers keep the ones they
    /// hold): maintenance maps every segment it looks at, and keeping them all would pin files
    /// and descriptors.
    pub(super) fn forget_sealed_mappings(&self) {
        let active_base = self.tail().active_base;
        for (&base, mapped) in self.segments.write().iter_mut() {
            if base < active_base {
                *mapped = None;
            }
        }
    }

    /// The largest record timestamp in the sealed segment `base`, whose successor starts at
    /// `next`; see `sealed_extent`.
    pub(super) fn max_timestamp_ms(&self, base: u64, next: u64) -> Result<u64> {
        Ok(self.sealed_extent(base, next)?.0)
    }

    /// The largest record timestamp in the sealed segment `base`, whose successor starts at
    /// `next`, and the bytes of record batches it holds: from its last index entry and the few
    /// batches after it. The walk stops at the batch that reaches `next` (or at the end of a
    /// compacted file), so it never looks past the data.
    pub(super) fn sealed_extent(&self, base: u64, next: u64) -> Result<(u64, u64)> {
        let segment = self.segment(base)?;
        let last = segment.sealed_index().last().copied();
        let mut max = last.map_or(0, |e| e.max_timestamp_before_ms);
        let mut position = last.map_or(u64::from(FILE_HEADER_BYTES), |e| u64::from(e.position));
        let length = segment.log_length()?;
        while position + u64::from(BATCH_HEADER_BYTES) <= length {
            let header = BatchHeader::read(segment.read(position, u64::from(BATCH_HEADER_BYTES))?);
            if !header.is_plausible() {
                break;
            }
            max = max.max(header.max_timestamp_ms);
            position = (position + u64::from(header.batch_bytes)).min(length);
            if header.next_offset() >= next {
                break;
            }
        }
        Ok((max, position.saturating_sub(u64::from(FILE_HEADER_BYTES))))
    }

    /// The futex word consumers of this partition sleep on; see `SharedState::begin_wait`.
    pub(crate) fn begin_wait(&self) -> (&AtomicU32, u32) {
        self.state.begin_wait()
    }

    pub(crate) fn end_wait(&self) {
        self.state.end_wait()
    }
}
