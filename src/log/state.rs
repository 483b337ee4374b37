//! The shared state of one partition: a small file that every process using the partition
//! maps. It holds the append lock, the published tail of the log, the wake-up word consumers
//! sleep on, and the group-commit bookkeeping. It is rebuilt from the log whenever a process
//! opens the queue alone (see `catalog.rs`), so nothing in it needs to survive a power cut.
//!
//! ```text
//! 0   magic [8]  8 version u16  10 reserved [6]  16 epoch u64  24 poisoned u32  28 waiters u32
//! 32  wake_seq u32 (futex word)  36 sync_seq u32 (futex word)  40 publish_seq u64  48 synced_offset u64
//! 56  log_start u64 (the first offset still in the log; only retention moves it, forward)
//! 64  tail slot 0 (8 × u64)   128 tail slot 1 (8 × u64)
//! 192 append mutex (pthread, robust, process-shared)   256 sync mutex   320 maintenance mutex
//! 384 compactions u64 (counts segments replaced by compaction)
//! 392 first_open u64 (the first offset of the earliest open transaction; all ones when none)   400.. reserved
//! 512 producer table: 89 slots of 40 bytes, one per idempotent producer (see `ProducerSlot`)
//! ```

#![expect(unsafe_code, reason = "the state file is shared memory, reached through atomics in its mapping")]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use memmap2::MmapOptions;

use crate::error::{Error, IoContext, Result};
use crate::log::format::{self, FORMAT_VERSION, ProducerStamp, STATE_MAGIC};
use crate::sys::map::SharedMap;
use crate::sys::mutex::{RobustGuard, RobustMutex};
use crate::sys::{file, futex, mutex};

pub(crate) const STATE_FILE_BYTES: u64 = 4096;
const EPOCH_AT: usize = 16;
const POISONED_AT: usize = 24;
const WAITERS_AT: usize = 28;
const WAKE_SEQ_AT: usize = 32;
const SYNC_SEQ_AT: usize = 36;
const PUBLISH_SEQ_AT: usize = 40;
const SYNCED_OFFSET_AT: usize = 48;
const LOG_START_AT: usize = 56;
const SLOTS_AT: usize = 64;
const SLOT_BYTES: usize = 64;
const APPEND_MUTEX_AT: usize = 192;
const SYNC_MUTEX_AT: usize = 256;
const MAINTENANCE_MUTEX_AT: usize = 320;
const COMPACTIONS_AT: usize = 384;
const FIRST_OPEN_AT: usize = 392;
const PRODUCERS_AT: usize = 512;
const PRODUCER_SLOT_BYTES: usize = 40;
/// A producer slot's `open_from`, and the `first_open` word, when no transaction is open.
const NO_OPEN_TRANSACTION: u64 = u64::MAX;
/// Idempotent producers the partition remembers in one epoch; past that, the one that
/// appended least recently is forgotten.
pub(crate) const PRODUCER_SLOTS: usize = (STATE_FILE_BYTES as usize - PRODUCERS_AT) / PRODUCER_SLOT_BYTES;
/// The longest a group-commit leader waits for the senders of the last round to publish again.
const GATHER_MAX: Duration = Duration::from_millis(1);
const _: () = assert!(mutex::MUTEX_BYTES <= 64, "a pthread mutex must fit its 64-byte slot");

/// The published end of a partition's log: everything a reader may look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tail {
    /// The offset the next record will get.
    pub(crate) end_offset: u64,
    /// Base offset of the segment being appended to.
    pub(crate) active_base: u64,
    /// Bytes of the active segment holding whole batches (header included).
    pub(crate) end_position: u64,
    /// Index entries of the active segment that are written.
    pub(crate) index_count: u64,
    /// Largest record timestamp in the active segment.
    pub(crate) max_timestamp_ms: u64,
    /// Bytes of the active segment file that are allocated on disk.
    pub(crate) log_reserved_bytes: u64,
    /// Bytes of the active index file that are allocated on disk.
    pub(crate) index_reserved_bytes: u64,
    /// Position of the batch the newest index entry points to.
    pub(crate) last_indexed_position: u64,
}

impl Tail {
    /// The tail of a new, empty active segment starting at `base`.
    pub(crate) fn empty_segment(base: u64, log_reserved_bytes: u64, index_reserved_bytes: u64) -> Self {
        let header_bytes = u64::from(crate::log::format::FILE_HEADER_BYTES);
        Tail {
            end_offset: base,
            active_base: base,
            end_position: header_bytes,
            index_count: 0,
            max_timestamp_ms: 0,
            log_reserved_bytes,
            index_reserved_bytes,
            last_indexed_position: header_bytes,
        }
    }

    fn to_words(self) -> [u64; 8] {
        [
            self.end_offset,
            self.active_base,
            self.end_position,
            self.index_count,
            self.max_timestamp_ms,
            self.log_reserved_bytes,
            self.index_reserved_bytes,
            self.last_indexed_position,
        ]
    }

    fn from_words(w: [u64; 8]) -> Self {
        Tail {
            end_offset: w[0],
            active_base: w[1],
            end_position: w[2],
            index_count: w[3],
            max_timestamp_ms: w[4],
            log_reserved_bytes: w[5],
            index_reserved_bytes: w[6],
            last_indexed_position: w[7],
        }
    }
}

/// A mapped partition state file.
pub(crate) struct SharedState {
    /// Records the last group commit led from this process covered, and how long its sync took.
    last_round_records: AtomicU64,
    last_round_nanos: AtomicU64,
    map: SharedMap,
    append_mutex: RobustMutex,
    sync_mutex: RobustMutex,
    maintenance_mutex: RobustMutex,
    path: PathBuf,
    /// Device and inode of the mapped file. The file itself is closed once mapped: a process
    /// using many partitions would otherwise spend a descriptor on each state file.
    identity: (u64, u64),
}

/// Proof that the caller holds the append lock; unlocks on drop.
pub(crate) struct AppendGuard<'a> {
    state: &'a SharedState,
    _held: RobustGuard<'a>,
}

impl AppendGuard<'_> {
    /// The published tail, which only the holder of this guard can move.
    pub(crate) fn published_tail(&self) -> Tail {
        self.state.tail()
    }

    /// What the producer table says of a batch of `record_count` records stamped `stamp` (an
    /// idempotent producer's): the next of its producer's, a repeat of its last batch, or out of
    /// turn. A producer the table does not know (new, or forgotten for others) may start at any
    /// sequence number; a new epoch of a known one starts at 0.
    pub(crate) fn check_producer(&self, stamp: ProducerStamp, record_count: u32) -> ProducerCheck {
        let Some(slot) = self.find_producer(stamp.id) else {
            return ProducerCheck::Next { slot: None };
        };
        let (epoch, expected) = (slot.epoch, slot.last_sequence.wrapping_add(slot.last_count));
        let next = ProducerCheck::Next { slot: Some(slot.index) };
        match stamp.epoch.cmp(&epoch) {
            std::cmp::Ordering::Less => ProducerCheck::Fenced { epoch },
            std::cmp::Ordering::Greater if stamp.base_sequence == 0 => next,
            std::cmp::Ordering::Greater => ProducerCheck::OutOfOrder { expected: 0 },
            std::cmp::Ordering::Equal if stamp.base_sequence == expected => next,
            std::cmp::Ordering::Equal if stamp.base_sequence == slot.last_sequence && record_count == slot.last_count => {
                ProducerCheck::Repeat { base_offset: slot.last_base_offset }
            }
            std::cmp::Ordering::Equal => ProducerCheck::OutOfOrder { expected },
        }
    }

    /// Notes in the producer table that the batch stamped `stamp` of `record_count` records
    /// was published at `base_offset`, in `slot` (see `producer_slot`).
    pub(crate) fn note_producer(&self, slot: usize, stamp: ProducerStamp, record_count: u32, base_offset: u64) {
        let known = self.state.read_producer(slot);
        let same_transaction = known.id == stamp.id && known.epoch == stamp.epoch;
        let open_from = match stamp.transactional {
            true if same_transaction && known.open_from != NO_OPEN_TRANSACTION => known.open_from,
            true => base_offset,
            false => NO_OPEN_TRANSACTION,
        };
        let written = ProducerSlot {
            index: slot,
            id: stamp.id,
            epoch: stamp.epoch,
            last_sequence: stamp.base_sequence,
            last_count: record_count,
            last_base_offset: base_offset,
            open_from,
        };
        self.state.write_producer(written);
    }

    /// What the producer table says of a marker stamped `stamp`: out of turn only when a newer
    /// epoch of its producer appended since (a marker takes no sequence number).
    pub(crate) fn check_marker(&self, stamp: ProducerStamp) -> ProducerCheck {
        match self.find_producer(stamp.id) {
            Some(slot) if stamp.epoch < slot.epoch => ProducerCheck::Fenced { epoch: slot.epoch },
            slot => ProducerCheck::Next { slot: slot.map(|slot| slot.index) },
        }
    }

    /// The slot a batch stamped `stamp` goes in: `found`, its producer's, or else a free one
    /// or the least recently used. A slot whose producer has a transaction open here is never
    /// taken from it (the partition would forget that the transaction holds back readers).
    pub(crate) fn producer_slot(&self, found: Option<usize>, partition: &crate::topic::TopicPartition) -> Result<usize> {
        if let Some(index) = found {
            return Ok(index);
        }
        let slots = (0..PRODUCER_SLOTS).map(|index| self.state.read_producer(index));
        slots
            .filter(|slot| slot.open_from == NO_OPEN_TRANSACTION || slot.id == 0)
            .min_by_key(|slot| if slot.id == 0 { None } else { Some(slot.last_base_offset) })
            .map(|slot| slot.index)
            .ok_or_else(|| Error::TooManyOpenTransactions { partition: partition.clone(), max: PRODUCER_SLOTS })
    }

    /// Before a transactional batch stamped `stamp` is published at `base_offset` (its
    /// producer's in `slot`): if it opens its producer's transaction here, readers of committed
    /// records must stop before it from the moment it is visible.
    pub(crate) fn hold_back_readers(&self, slot: usize, stamp: ProducerStamp, base_offset: u64) {
        let known = self.state.read_producer(slot);
        let open = known.id == stamp.id && known.epoch == stamp.epoch && known.open_from != NO_OPEN_TRANSACTION;
        if !open {
            self.state.word64(FIRST_OPEN_AT).fetch_min(base_offset, Ordering::Release);
        }
    }

    /// After a marker of producer `stamp` was published at `base_offset` in `slot`: its
    /// transaction here is over, and readers of committed records may go as far as the next
    /// open one (woken, since the marker's own publish woke them before this).
    pub(crate) fn note_marker(&self, slot: usize, stamp: ProducerStamp, base_offset: u64) {
        let known = self.state.read_producer(slot);
        let mut written = known;
        if known.id != stamp.id || known.epoch < stamp.epoch {
            // A new producer, or a new epoch of this one, whose next batch starts at 0.
            written = ProducerSlot { index: slot, id: stamp.id, epoch: stamp.epoch, last_sequence: 0, last_count: 0, ..known };
        }
        written.last_base_offset = base_offset;
        written.open_from = NO_OPEN_TRANSACTION;
        self.state.write_producer(written);
        self.state.release_readers();
    }

    /// The slot of producer `id`, looked for by its id word alone (one load a slot: this runs
    /// under the append lock at every idempotent send).
    fn find_producer(&self, id: u64) -> Option<ProducerSlot> {
        let at = |index: usize| PRODUCERS_AT + index * PRODUCER_SLOT_BYTES;
        let index = (0..PRODUCER_SLOTS).find(|&index| self.state.word64(at(index)).load(Ordering::Relaxed) == id)?;
        Some(self.state.read_producer(index))
    }
}

/// Where a transactional producer's coordinator keeps the producer's current epoch, which a
/// newer instance of it moves on (before it aborts what the older one left open). Checked
/// under each partition's append lock, it keeps every batch of the older instance out of
/// every partition from then on.
pub(crate) struct EpochFence<'a>(pub(crate) &'a AtomicU64);

impl EpochFence<'_> {
    /// The current epoch, if it is no longer `epoch`.
    pub(crate) fn moved_from(&self, epoch: u16) -> Option<u16> {
        let current = self.0.load(Ordering::Acquire) as u16;
        (current != epoch).then_some(current)
    }
}

/// What the producer table says of an idempotent producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProducerCheck {
    /// The batch comes next (or its producer is not known): append it, and note it in `slot`,
    /// its producer's (`None` when not known).
    Next { slot: Option<usize> },
    /// The batch repeats the producer's last one, which is at `base_offset`: do not append it again.
    Repeat { base_offset: u64 },
    /// A newer epoch of the producer appended since.
    Fenced { epoch: u16 },
    /// The batch skips or goes back: `expected` was the next sequence number.
    OutOfOrder { expected: u32 },
}

/// One slot of the producer table: the last batch an idempotent producer appended in this
/// epoch of the queue, and where its open transaction here began. Every field is read and
/// written under the append lock; an empty slot has id 0, which no producer gets.
///
/// ```text
/// 0 id u64   8 epoch u16   10 reserved u16   12 last_sequence u32   16 last_base_offset u64
/// 24 last_count u32   28 reserved u32   32 open_from u64 (all ones when no transaction is open)
/// ```
#[derive(Debug, Clone, Copy)]
struct ProducerSlot {
    index: usize,
    id: u64,
    epoch: u16,
    last_sequence: u32,
    last_count: u32,
    last_base_offset: u64,
    open_from: u64,
}

impl SharedState {
    /// Reads the epoch a state file was initialised in, or `None` if it is missing or was
    /// never completely initialised.
    pub(crate) fn stored_epoch(file: &File) -> io::Result<Option<u64>> {
        let mut head = [0u8; 24];
        if file.metadata()?.len() < STATE_FILE_BYTES || file.read_exact_at(&mut head, 0).is_err() {
            return Ok(None);
        }
        if format::check_magic_version(&head, STATE_MAGIC).is_err() {
            return Ok(None);
        }
        Ok(Some(u64::from_le_bytes(head[16..24].try_into().expect("eight bytes"))))
    }

    /// Rewrites the state file from scratch for `epoch` with `tail` published, the log starting
    /// at `log_start` and known durable below `synced_offset`. The caller holds the file's
    /// exclusive lock and knows that no process maps it (the previous epoch is over).
    pub(crate) fn initialize(
        file: File,
        path: &Path,
        epoch: u64,
        tail: Tail,
        log_start: u64,
        synced_offset: u64,
    ) -> Result<Self> {
        file.set_len(0).during("reset", path)?;
        file.set_len(STATE_FILE_BYTES).during("size", path)?;
        let state = Self::map(file, path)?;
        state.append_mutex.init().during("initialise the append lock in", path)?;
        state.sync_mutex.init().during("initialise the sync lock in", path)?;
        state.maintenance_mutex.init().during("initialise the maintenance lock in", path)?;
        state.word64(LOG_START_AT).store(log_start, Ordering::Release);
        state.word64(SYNCED_OFFSET_AT).store(synced_offset, Ordering::Release);
        state.word64(FIRST_OPEN_AT).store(NO_OPEN_TRANSACTION, Ordering::Release);
        // SAFETY: the header bytes are inside the mapping and nobody else maps the file yet.
        unsafe {
            std::ptr::copy_nonoverlapping(STATE_MAGIC.as_ptr(), state.map.0.as_mut_ptr(), 8);
            std::ptr::copy_nonoverlapping(FORMAT_VERSION.to_le_bytes().as_ptr(), state.map.0.as_mut_ptr().add(8), 2);
        }
        state.write_slot(0, tail);
        state.word64(PUBLISH_SEQ_AT).store(0, Ordering::Release);
        // The epoch goes last: a crash before this line leaves the file marked uninitialised.
        state.word64(EPOCH_AT).store(epoch, Ordering::Release);
        Ok(state)
    }

    /// Maps an initialised state file (and closes it: the mapping stays).
    pub(crate) fn map(file: File, path: &Path) -> Result<Self> {
        let identity = file::file_identity(&file.metadata().during("stat", path)?);
        let map = SharedMap(MmapOptions::new().len(STATE_FILE_BYTES as usize).map_raw(&file).during("map", path)?);
        // SAFETY: both mutex slots are 64-byte aligned offsets inside the page-aligned mapping,
        // which `SharedState` owns and drops after the mutex handles.
        let (append_mutex, sync_mutex, maintenance_mutex) = unsafe {
            (
                RobustMutex::at(map.0.as_mut_ptr().add(APPEND_MUTEX_AT)),
                RobustMutex::at(map.0.as_mut_ptr().add(SYNC_MUTEX_AT)),
                RobustMutex::at(map.0.as_mut_ptr().add(MAINTENANCE_MUTEX_AT)),
            )
        };
        Ok(SharedState {
            last_round_records: AtomicU64::new(0),
            last_round_nanos: AtomicU64::new(0),
            map,
            append_mutex,
            sync_mutex,
            maintenance_mutex,
            path: path.to_path_buf(),
            identity,
        })
    }

    fn word64(&self, at: usize) -> &AtomicU64 {
        self.map.word64(at)
    }

    fn word32(&self, at: usize) -> &AtomicU32 {
        self.map.word32(at)
    }

    fn read_producer(&self, index: usize) -> ProducerSlot {
        let at = PRODUCERS_AT + index * PRODUCER_SLOT_BYTES;
        let epoch_and_sequence = self.word64(at + 8).load(Ordering::Relaxed);
        ProducerSlot {
            index,
            id: self.word64(at).load(Ordering::Relaxed),
            epoch: epoch_and_sequence as u16,
            last_sequence: (epoch_and_sequence >> 32) as u32,
            last_base_offset: self.word64(at + 16).load(Ordering::Relaxed),
            last_count: self.word64(at + 24).load(Ordering::Relaxed) as u32,
            open_from: self.word64(at + 32).load(Ordering::Relaxed),
        }
    }

    /// Writes `slot`; its id goes last, so that a writer dying half-way leaves either the
    /// slot's old producer (whose facts are then mixed, which only that producer, in the dead
    /// process, could notice) or an empty slot when it took a new one.
    fn write_producer(&self, slot: ProducerSlot) {
        let at = PRODUCERS_AT + slot.index * PRODUCER_SLOT_BYTES;
        let id = self.word64(at);
        if id.load(Ordering::Relaxed) != slot.id {
            id.store(0, Ordering::Relaxed);
        }
        self.word64(at + 8).store(u64::from(slot.epoch) | u64::from(slot.last_sequence) << 32, Ordering::Relaxed);
        self.word64(at + 16).store(slot.last_base_offset, Ordering::Relaxed);
        self.word64(at + 24).store(u64::from(slot.last_count), Ordering::Relaxed);
        self.word64(at + 32).store(slot.open_from, Ordering::Relaxed);
        id.store(slot.id, Ordering::Relaxed);
    }

    /// Sets `first_open` from the producer table, after a transaction ended (or a writer died
    /// between lowering it and noting its transaction), and wakes the readers it holds back.
    /// Raised only after the marker's publish: a reader that sees it raised also sees the
    /// marker (see `last_stable_offset`).
    fn release_readers(&self) {
        let slots = (0..PRODUCER_SLOTS).map(|index| self.read_producer(index));
        let first_open = slots.filter(|slot| slot.id != 0).map(|slot| slot.open_from).min().unwrap_or(NO_OPEN_TRANSACTION);
        self.word64(FIRST_OPEN_AT).store(first_open, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.word32(WAITERS_AT).load(Ordering::Relaxed) > 0 {
            self.wake_consumers();
        }
    }

    /// The last stable offset of the log whose published end is `tail` (read before this):
    /// the first offset of its earliest open transaction, or the end when none is open. Every
    /// transactional batch below it belongs to a transaction that is over, and whose marker is
    /// published in any tail read after this (see `release_readers`); a batch that opens a
    /// transaction lowers it before its publish (`hold_back_readers`), so a reader whose
    /// `tail` holds that batch sees it lowered.
    pub(crate) fn last_stable_offset(&self, tail: &Tail) -> u64 {
        self.word64(FIRST_OPEN_AT).load(Ordering::Acquire).min(tail.end_offset)
    }

    fn write_slot(&self, slot: usize, tail: Tail) {
        for (i, word) in tail.to_words().into_iter().enumerate() {
            self.word64(SLOTS_AT + slot * SLOT_BYTES + i * 8).store(word, Ordering::Relaxed);
        }
    }

    fn read_slot(&self, slot: usize) -> Tail {
        let mut words = [0u64; 8];
        for (i, word) in words.iter_mut().enumerate() {
            *word = self.word64(SLOTS_AT + slot * SLOT_BYTES + i * 8).load(Ordering::Relaxed);
        }
        Tail::from_words(words)
    }

    /// The published tail. Lock-free: two slots alternate, and a sequence number says which
    /// one is current, so a writer that dies mid-publish leaves the previous tail in force.
    pub(crate) fn tail(&self) -> Tail {
        let seq = self.word64(PUBLISH_SEQ_AT);
        loop {
            let before = seq.load(Ordering::Acquire);
            let tail = self.read_slot((before & 1) as usize);
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return tail;
            }
            std::hint::spin_loop();
        }
    }

    /// An error naming this file and the published tail slot, for a tail that does not fit
    /// the log it describes.
    pub(crate) fn damaged_tail(&self, reason: String) -> Error {
        let slot = self.word64(PUBLISH_SEQ_AT).load(Ordering::Acquire) & 1;
        Error::corrupt(&self.path, (SLOTS_AT + slot as usize * SLOT_BYTES) as u64, format!("damaged shared state: {reason}"))
    }

    /// Wakes every consumer sleeping on this partition.
    fn wake_consumers(&self) {
        self.word32(WAKE_SEQ_AT).fetch_add(1, Ordering::Release);
        futex::futex_wake_all(self.word32(WAKE_SEQ_AT));
    }

    /// Makes `tail` the published tail. Everything written to the log before this call becomes
    /// visible to readers that see the new tail.
    pub(crate) fn publish(&self, _guard: &AppendGuard<'_>, tail: Tail) {
        let seq = self.word64(PUBLISH_SEQ_AT);
        let current = seq.load(Ordering::Relaxed);
        // Orders the previous publish before the slot writes below, so a reader that sees any
        // of them also sees the sequence number move on and retries.
        fence(Ordering::Release);
        self.write_slot(((current + 1) & 1) as usize, tail);
        seq.store(current + 1, Ordering::Release);
        // Pairs with the fence in `begin_wait`: either the waiter sees this tail, or this
        // thread sees the waiter and wakes it.
        fence(Ordering::SeqCst);
        if self.word32(WAITERS_AT).load(Ordering::Relaxed) > 0 {
            self.wake_consumers();
        }
    }

    /// Takes the append lock. When its previous holder died, `repair` runs first, still under
    /// the lock; it cannot fail, because the lock must be marked consistent whatever happens
    /// (an abandoned robust mutex otherwise becomes unusable for every process).
    pub(crate) fn lock_append(&self, repair: impl FnOnce()) -> Result<AppendGuard<'_>> {
        let held = self.append_mutex.lock().during("take the append lock in", &self.path)?;
        if held.owner_died() {
            repair();
            held.mark_consistent().during("recover the append lock in", &self.path)?;
            // The dead writer may have published without waking anyone, or held back readers
            // for a transaction it did not live to note.
            self.release_readers();
            self.wake_consumers();
        }
        Ok(AppendGuard { state: self, _held: held })
    }

    /// Registers a consumer about to sleep and returns the wake word and its current value.
    /// The caller must re-check the tail after this and call `end_wait` after sleeping.
    pub(crate) fn begin_wait(&self) -> (&AtomicU32, u32) {
        self.word32(WAITERS_AT).fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let word = self.word32(WAKE_SEQ_AT);
        (word, word.load(Ordering::SeqCst))
    }

    pub(crate) fn end_wait(&self) {
        self.word32(WAITERS_AT).fetch_sub(1, Ordering::SeqCst);
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.word32(POISONED_AT).load(Ordering::Acquire) != 0
    }

    pub(crate) fn poison(&self) {
        self.word32(POISONED_AT).store(1, Ordering::Release);
    }

    /// Whether `path` still names this state file: false once its topic was deleted (and
    /// perhaps created again, with a new file at the same path).
    pub(crate) fn is_at(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|there| file::file_identity(&there) == self.identity)
    }

    /// The first offset still in the log.
    pub(crate) fn log_start(&self) -> u64 {
        self.word64(LOG_START_AT).load(Ordering::Acquire)
    }

    /// Moves the log start forward to `offset` (never back).
    pub(crate) fn advance_log_start(&self, offset: u64) {
        self.word64(LOG_START_AT).fetch_max(offset, Ordering::AcqRel);
    }

    /// Runs `work` under the maintenance lock if no other thread or process holds it; `None`
    /// if one does (it is doing the same work). A holder that died leaves nothing to repair:
    /// maintenance changes the log only by steps each of which is whole on its own.
    pub(crate) fn try_maintain<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        let Some(held) = self.maintenance_mutex.try_lock().during("take the maintenance lock in", &self.path)? else {
            return Ok(None);
        };
        if held.owner_died() {
            held.mark_consistent().during("recover the maintenance lock in", &self.path)?;
        }
        work().map(Some)
    }

    /// Runs `work` under the sync lock, waiting for it: for work that must not race a group
    /// commit's fsyncs or marker writes (see `Partition::seal`).
    pub(crate) fn under_sync_lock<T>(&self, work: impl FnOnce() -> Result<T>) -> Result<T> {
        let held = self.sync_mutex.lock().during("take the sync lock in", &self.path)?;
        if held.owner_died() {
            held.mark_consistent().during("recover the sync lock in", &self.path)?;
        }
        work()
    }

    /// How many segments compaction has replaced: when it moves, mappings of sealed segments
    /// may be of files that were replaced since.
    pub(crate) fn compactions(&self) -> u64 {
        self.word64(COMPACTIONS_AT).load(Ordering::Acquire)
    }

    pub(crate) fn note_compaction(&self) {
        self.word64(COMPACTIONS_AT).fetch_add(1, Ordering::AcqRel);
    }

    /// The end offset up to which the log is known to be on stable storage.
    pub(crate) fn synced_offset(&self) -> u64 {
        self.word64(SYNCED_OFFSET_AT).load(Ordering::Acquire)
    }

    /// Before a group commit: when the last round covered several records, their senders were
    /// woken by its end and are about to publish again, while the senders who published during
    /// its sync are waiting already. Waits until both lots lie past `synced` (the leader's own
    /// record is in each), or for half as long as the last sync took (at most `GATHER_MAX`),
    /// giving the processor to them meanwhile. A fixed sleep (as before) waits its whole length
    /// when they are quick; waiting for the last round's lot alone settles the senders into two
    /// cohorts taking turns, each round covering half of them for the price of a whole fsync.
    fn gather(&self, synced: u64) {
        let last_round = self.last_round_records.load(Ordering::Relaxed);
        if last_round <= 1 {
            return;
        }
        let expected = last_round + self.tail().end_offset.saturating_sub(synced).saturating_sub(1);
        let patience = Duration::from_nanos(self.last_round_nanos.load(Ordering::Relaxed) / 2).min(GATHER_MAX);
        let deadline = Instant::now() + patience;
        while self.tail().end_offset.saturating_sub(synced) < expected && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }

    /// Makes sure everything below `end_offset` is durable. One caller at a time, in any
    /// process, runs `sync` (which returns the end offset it made durable) under the sync lock;
    /// the others sleep until that leader finishes and return at once if it covered them
    /// (group commit), or else one of them leads the next round.
    pub(crate) fn sync_through(&self, end_offset: u64, sync: impl Fn() -> Result<u64>) -> Result<()> {
        let round = self.word32(SYNC_SEQ_AT);
        loop {
            if self.synced_offset() >= end_offset {
                return Ok(());
            }
            let seen = round.load(Ordering::Acquire);
            // A dead leader leaves nothing to repair: `synced_offset` is only raised atomically.
            let Some(held) = self.sync_mutex.try_lock().during("take the sync lock in", &self.path)? else {
                // Not woken if the leader dies; the short sleep bounds the wait for a new one.
                futex::futex_wait_any(&[(round, seen)], Instant::now() + Duration::from_millis(10));
                continue;
            };
            if held.owner_died() {
                held.mark_consistent().during("recover the sync lock in", &self.path)?;
            }
            let result = if self.synced_offset() >= end_offset {
                Ok(())
            } else {
                let before = self.synced_offset();
                self.gather(before);
                let started = Instant::now();
                sync().map(|durable_end| {
                    self.word64(SYNCED_OFFSET_AT).fetch_max(durable_end, Ordering::AcqRel);
                    self.last_round_records.store(durable_end.saturating_sub(before), Ordering::Relaxed);
                    self.last_round_nanos.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                })
            };
            drop(held);
            round.fetch_add(1, Ordering::Release);
            futex::futex_wake_all(round);
            return result;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::{SharedState, Tail};

    fn state(name: &str) -> (SharedState, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("streamlog-state-{name}-{}", std::process::id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        (SharedState::initialize(file, &path, 1, Tail::empty_segment(0, 0, 0), 0, 0).unwrap(), path)
    }

    #[test]
    fn a_panic_in_maintenance_work_releases_the_lock() {
        let (state, path) = state("maintain-panic");
        let panicked = catch_unwind(AssertUnwindSafe(|| state.try_maintain(|| -> crate::Result<()> { panic!("in the work") })));
        assert!(panicked.is_err());
        assert_eq!(state.try_maintain(|| Ok(7)).unwrap(), Some(7), "the maintenance lock is free again");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_panic_in_a_group_commit_releases_the_lock() {
        let (state, path) = state("sync-panic");
        let panicked =
            catch_unwind(AssertUnwindSafe(|| state.sync_through(1, || -> crate::Result<u64> { panic!("in the sync") })));
        assert!(panicked.is_err());
        assert!(state.sync_mutex.try_lock().unwrap().is_some(), "the sync lock is free again");
        state.sync_through(1, || Ok(1)).unwrap();
        assert_eq!(state.synced_offset(), 1);
        let panicked = catch_unwind(AssertUnwindSafe(|| state.under_sync_lock(|| -> crate::Result<()> { panic!("sealing") })));
        assert!(panicked.is_err());
        assert!(state.sync_mutex.try_lock().unwrap().is_some(), "the sync lock is free again");
        std::fs::remove_file(path).unwrap();
    }
}
