//! Transaction coordinators, with no coordinator process: each transactional id has a file,
//! `transactions/<id>`, that every process using the id maps, and whichever instance of the
//! id is current changes it under its lock (the protocol itself, which writes markers into
//! partitions, is in `catalog/transactions.rs`).
//!
//! ```text
//! 0  magic [8]  8 version u16  16 epoch u64 (the queue's)  24 active_half u64
//! 32 producer_epoch u64 (the fence: the current instance's epoch)  40 open u64 (mirror: 1 while a transaction is open)
//! 64 mutex (pthread, robust, process-shared)
//! 4096 state copy 0; 4096 + STATE_BYTES state copy 1: length u32, crc32 u32, the encoded `TransactionState`
//! ```
//! The state is written with pwrite into the inactive copy, which then becomes the active
//! one: a writer that dies half-way leaves the previous state in force. The instance of epoch
//! `e` holds an open-file-description lock on byte `LIVE_AT + e` while it lives, which the
//! kernel releases when its process dies: a transaction left open by an instance whose byte is
//! free is abandoned. Like the group file, the file is rebuilt in each new queue epoch (its
//! mutex initialised again), keeping the state.

#![expect(unsafe_code, reason = "the coordinator mutex and atomics live in the shared coordinator file")]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use memmap2::MmapOptions;

use crate::error::{Error, IoContext, Result};
use crate::log::format::{self, FORMAT_VERSION};
use crate::log::state::EpochFence;
use crate::sys::file::{self, Access};
use crate::sys::lock;
use crate::sys::map::SharedMap;
use crate::sys::mutex::{RobustGuard, RobustMutex};

pub(crate) const TRANSACTION_MAGIC: [u8; 8] = *b"SLOGTXN\0";
/// The directory of the coordinators' files, in the queue directory.
pub(crate) const TRANSACTIONS_DIR: &str = "transactions";

const EPOCH_AT: usize = 16;
const ACTIVE_HALF_AT: usize = 24;
const PRODUCER_EPOCH_AT: usize = 32;
const OPEN_AT: usize = 40;
const MUTEX_AT: usize = 64;
const HEAD_BYTES: usize = 4096;
/// Room for one copy of the state, length and checksum included (the file is sparse).
const STATE_BYTES: usize = 16 << 20;
/// The instance of epoch `e` locks byte `LIVE_AT + e`.
const LIVE_AT: u64 = 1 << 40;

/// Where a transaction is: none open, open (partitions added), or being ended (markers being
/// written; a transaction found here is finished the same way by whoever finds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
}

/// Where a transaction wrote, and so where its markers go: a partition of a topic (the topic's
/// name and id: a topic created again under the name is another one, which gets no marker),
/// or a consumer group's offset log (offsets sent to the transaction).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Participant {
    Partition { topic: String, topic_id: u64, partition: u32 },
    GroupOffsets { group: String },
}

/// What the coordinator keeps of a transactional id: its producer id and current epoch, and
/// where the transaction open now wrote (nowhere when `Empty`). Producer id 0 means none
/// was given out yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TransactionState {
    pub(crate) producer_id: u64,
    pub(crate) epoch: u16,
    pub(crate) phase: Phase,
    pub(crate) participants: Vec<Participant>,
}

impl TransactionState {
    fn empty() -> Self {
        TransactionState { producer_id: 0, epoch: 0, phase: Phase::Empty, participants: Vec::new() }
    }
}

/// One transactional id's coordinator as this process sees it.
pub(crate) struct Coordinator {
    pub(crate) transactional_id: String,
    // Declared before `map`, so that it is dropped first.
    mutex: RobustMutex,
    map: SharedMap,
    path: PathBuf,
    file: File,
}

/// The coordinator's lock, held.
pub(crate) struct CoordinatorGuard<'a> {
    coordinator: &'a Coordinator,
    _held: RobustGuard<'a>,
}

/// An instance's claim to be alive: its lock on its epoch's byte, released when dropped or
/// when its process dies.
pub(crate) struct Liveness(#[expect(dead_code, reason = "held for its lock")] File);

impl Coordinator {
    /// Opens (creating if needed) the coordinator file at `path`, rebuilding it in a new queue
    /// `epoch`.
    pub(crate) fn open(transactional_id: &str, path: &Path, epoch: u64) -> Result<Self> {
        let file = file::open_file(path, Access::Create)?;
        file.lock().during("lock", path)?;
        let prepared = prepare(&file, path, epoch);
        file.unlock().during("unlock", path)?;
        prepared?;
        let map = MmapOptions::new().len(HEAD_BYTES).map_raw(&file).during("map", path)?;
        // SAFETY: the mutex lies at a 64-byte aligned offset inside the page-aligned mapping,
        // which `Coordinator` owns and keeps until after the mutex handle is gone.
        let mutex = unsafe { RobustMutex::at(map.as_mut_ptr().add(MUTEX_AT)) };
        Ok(Coordinator {
            transactional_id: transactional_id.to_owned(),
            mutex,
            map: SharedMap(map),
            path: path.to_path_buf(),
            file,
        })
    }

    pub(crate) fn lock(&self) -> Result<CoordinatorGuard<'_>> {
        let held = self.mutex.lock().during("take the transaction lock in", &self.path)?;
        self.locked(held)
    }

    /// The lock if it is free now: the keeper never waits for it.
    pub(crate) fn try_lock(&self) -> Result<Option<CoordinatorGuard<'_>>> {
        match self.mutex.try_lock().during("take the transaction lock in", &self.path)? {
            Some(held) => self.locked(held).map(Some),
            None => Ok(None),
        }
    }

    fn locked<'a>(&'a self, held: RobustGuard<'a>) -> Result<CoordinatorGuard<'a>> {
        let owner_died = held.owner_died();
        if owner_died {
            held.mark_consistent().during("recover the transaction lock in", &self.path)?;
        }
        let guard = CoordinatorGuard { coordinator: self, _held: held };
        if owner_died {
            // The stored state is whole; the mirrors may lag behind it.
            let state = guard.state()?;
            guard.mirror(&state);
        }
        Ok(guard)
    }

    /// The word the current instance's epoch is kept in, which the partitions check every
    /// batch of the transaction against.
    pub(crate) fn fence(&self) -> EpochFence<'_> {
        EpochFence(self.map.word64(PRODUCER_EPOCH_AT))
    }

    /// Whether a transaction may be open, read without the lock.
    pub(crate) fn may_be_open(&self) -> bool {
        self.map.word64(OPEN_AT).load(Ordering::Acquire) != 0
    }
}

impl CoordinatorGuard<'_> {
    /// Reads the current state: the active copy, or the other one when the active one does
    /// not check out (a power cut between a copy's write and its sync, in a mode that does not
    /// sync it first).
    pub(crate) fn state(&self) -> Result<TransactionState> {
        let coordinator = self.coordinator;
        let active = coordinator.map.word64(ACTIVE_HALF_AT).load(Ordering::Acquire);
        read_state(&coordinator.file, &coordinator.path, active)
            .or_else(|error| read_state(&coordinator.file, &coordinator.path, active + 1).map_err(|_| error))
    }

    /// Replaces the state: writes the inactive copy, then makes it the active one. With
    /// `durable`, the copy is synced before the switch and the switch after it, so that a power
    /// cut leaves either state, whole.
    pub(crate) fn store(&self, state: &TransactionState, durable: bool) -> Result<()> {
        let coordinator = self.coordinator;
        let blob = encode_blob(state);
        if blob.len() > STATE_BYTES {
            return Err(Error::TransactionTooLarge {
                transactional_id: coordinator.transactional_id.clone(),
                size_bytes: blob.len() as u64,
                max_bytes: STATE_BYTES as u64,
            });
        }
        let active = coordinator.map.word64(ACTIVE_HALF_AT);
        let next = (active.load(Ordering::Relaxed) + 1) & 1;
        coordinator.file.write_all_at(&blob, state_at(next)).during("write the transaction state to", &coordinator.path)?;
        if durable {
            file::sync_data(&coordinator.file).during("sync", &coordinator.path)?;
        }
        active.store(next, Ordering::Release);
        self.mirror(state);
        if durable {
            let head = &coordinator.map.0;
            // SAFETY: the range is exactly the head mapping this coordinator owns.
            let flushed = unsafe { libc::msync(head.as_mut_ptr().cast(), HEAD_BYTES, libc::MS_SYNC) };
            if flushed != 0 {
                return Err(Error::io("sync", &coordinator.path, std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    fn mirror(&self, state: &TransactionState) {
        let map = &self.coordinator.map;
        map.word64(PRODUCER_EPOCH_AT).store(u64::from(state.epoch), Ordering::Release);
        map.word64(OPEN_AT).store(u64::from(state.phase != Phase::Empty), Ordering::Release);
    }

    /// Whether the instance of `epoch` is alive: whether any open file description holds its
    /// byte.
    pub(crate) fn instance_alive(&self, epoch: u16) -> Result<bool> {
        let coordinator = self.coordinator;
        lock::byte_locked_elsewhere(&coordinator.file, LIVE_AT + u64::from(epoch)).during("probe a lock in", &coordinator.path)
    }

    /// Claims to be the live instance of `epoch` (under the lock, so that the keeper never
    /// finds an instance's transaction between its epoch's store and this claim).
    pub(crate) fn claim_liveness(&self, epoch: u16) -> Result<Liveness> {
        let coordinator = self.coordinator;
        let own = file::open_file(&coordinator.path, Access::ReadWrite)?;
        match lock::try_lock_byte(&own, LIVE_AT + u64::from(epoch)).during("lock", &coordinator.path)? {
            true => Ok(Liveness(own)),
            false => Err(Error::corrupt(&coordinator.path, 0, format!("the instance of epoch {epoch} is locked already"))),
        }
    }
}

/// Where copy `half` (0 or 1) of the state starts.
fn state_at(half: u64) -> u64 {
    (HEAD_BYTES + (half & 1) as usize * STATE_BYTES) as u64
}

/// Length, checksum, then the encoded state.
fn encode_blob(state: &TransactionState) -> Vec<u8> {
    file::checksummed(&encode_state(state))
}

/// ```text
/// producer_id u64   epoch u16   phase u8 (0 empty, 1 ongoing, 2 prepare commit, 3 prepare abort)
/// participant count u32, then per participant a kind u8 and a name length u8 and name (UTF-8):
///   kind 0, a topic's partition: the topic's name, then topic_id u64, partition u32
///   kind 1, a group's offset log: the group's name
/// ```
fn encode_state(state: &TransactionState) -> Vec<u8> {
    let mut out = Vec::with_capacity(15 + state.participants.len() * 32);
    out.extend_from_slice(&state.producer_id.to_le_bytes());
    out.extend_from_slice(&state.epoch.to_le_bytes());
    out.push(match state.phase {
        Phase::Empty => 0,
        Phase::Ongoing => 1,
        Phase::PrepareCommit => 2,
        Phase::PrepareAbort => 3,
    });
    out.extend_from_slice(&(state.participants.len() as u32).to_le_bytes());
    // Topic and group names are at most 249 bytes (`validate_topic_name`, `validate_group_name`).
    let name = |out: &mut Vec<u8>, kind: u8, name: &str| {
        out.push(kind);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    };
    for participant in &state.participants {
        match participant {
            Participant::Partition { topic, topic_id, partition } => {
                name(&mut out, 0, topic);
                out.extend_from_slice(&topic_id.to_le_bytes());
                out.extend_from_slice(&partition.to_le_bytes());
            }
            Participant::GroupOffsets { group } => name(&mut out, 1, group),
        }
    }
    out
}

fn decode_state(bytes: &[u8], path: &Path, at: u64) -> Result<TransactionState> {
    let damaged = || Error::corrupt(path, at, "transaction state does not decode");
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8]> {
        let (taken, after) = rest.split_at_checked(n).ok_or_else(damaged)?;
        rest = after;
        Ok(taken)
    };
    let producer_id = format::u64_at(take(8)?, 0);
    let epoch = format::u16_at(take(2)?, 0);
    let phase = match take(1)?[0] {
        0 => Phase::Empty,
        1 => Phase::Ongoing,
        2 => Phase::PrepareCommit,
        3 => Phase::PrepareAbort,
        _ => return Err(damaged()),
    };
    let count = format::u32_at(take(4)?, 0);
    let mut participants = Vec::new();
    for _ in 0..count {
        let kind = take(1)?[0];
        let length = take(1)?[0];
        let name = String::from_utf8(take(usize::from(length))?.to_vec()).map_err(|_| damaged())?;
        crate::options::validate_topic_name(&name).map_err(|_| damaged())?;
        participants.push(match kind {
            0 => {
                let topic_id = format::u64_at(take(8)?, 0);
                let partition = format::u32_at(take(4)?, 0);
                Participant::Partition { topic: name, topic_id, partition }
            }
            1 => Participant::GroupOffsets { group: name },
            _ => return Err(damaged()),
        });
    }
    if !rest.is_empty() {
        return Err(damaged());
    }
    Ok(TransactionState { producer_id, epoch, phase, participants })
}

fn read_state(file: &File, path: &Path, half: u64) -> Result<TransactionState> {
    let at = state_at(half);
    decode_state(&file::read_checksummed(file, path, at, STATE_BYTES, "transaction state")?, path, at)
}

/// Makes the coordinator file ready for the queue's `epoch`: if it was last set up in another
/// epoch, every process that used it is gone, and its head is written again (the mutex
/// initialised), keeping the state. The caller holds the file's exclusive flock.
fn prepare(file: &File, path: &Path, epoch: u64) -> Result<()> {
    let length = file.metadata().during("stat", path)?.len();
    let mut state = TransactionState::empty();
    // The state is written again into the copy that is not the active one, which stays whole
    // meanwhile.
    let mut half = 0;
    if length > 0 {
        let mut head = [0u8; 48];
        file.read_exact_at(&mut head, 0)
            .map_err(|_| Error::ForeignFile { path: path.to_path_buf(), reason: format!("only {length} bytes long") })?;
        if head.iter().any(|&b| b != 0) {
            format::check_magic_version(&head, TRANSACTION_MAGIC).map_err(|mismatch| mismatch.into_error(path))?;
            if length >= HEAD_BYTES as u64 && format::u64_at(&head, EPOCH_AT) == epoch {
                return Ok(());
            }
            let active = format::u64_at(&head, ACTIVE_HALF_AT);
            state = read_state(file, path, active).or_else(|error| read_state(file, path, active + 1).map_err(|_| error))?;
            half = (active + 1) & 1;
        }
    }
    // Only the mapped head is allocated up front; the state copies are written with pwrite.
    file::reserve(file, HEAD_BYTES as u64).during("reserve space for", path)?;
    file.write_all_at(&encode_blob(&state), state_at(half)).during("write", path)?;
    file::sync_data(file).during("sync", path)?;
    let mut head = [0u8; 48];
    head[0..8].copy_from_slice(&TRANSACTION_MAGIC);
    head[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    head[ACTIVE_HALF_AT..ACTIVE_HALF_AT + 8].copy_from_slice(&half.to_le_bytes());
    head[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 8].copy_from_slice(&u64::from(state.epoch).to_le_bytes());
    head[OPEN_AT..OPEN_AT + 8].copy_from_slice(&u64::from(state.phase != Phase::Empty).to_le_bytes());
    file.write_all_at(&head, 0).during("write", path)?;
    let map = MmapOptions::new().len(HEAD_BYTES).map_raw(file).during("map", path)?;
    // SAFETY: the mutex lies at a 64-byte aligned offset inside the mapping, which outlives
    // this handle; no other process maps the file while it is being rebuilt (new epoch, and
    // the caller holds the file's lock).
    let mutex = unsafe { RobustMutex::at(map.as_mut_ptr().add(MUTEX_AT)) };
    mutex.init().during("initialise the transaction lock in", path)?;
    // The epoch goes last: a crash before it leaves the file to be rebuilt again.
    file.write_all_at(&epoch.to_le_bytes(), EPOCH_AT as u64).during("write", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_damage_is_refused() {
        let state = TransactionState {
            producer_id: 7 << 32 | 3,
            epoch: 4,
            phase: Phase::PrepareCommit,
            participants: vec![
                Participant::Partition { topic: "orders".into(), topic_id: 11, partition: 2 },
                Participant::GroupOffsets { group: "enrichers".into() },
                Participant::Partition { topic: "x".into(), topic_id: 12, partition: 0 },
            ],
        };
        let path = Path::new("state");
        assert_eq!(decode_state(&encode_state(&state), path, 0).unwrap(), state);
        let bytes = encode_state(&state);
        for cut in 0..bytes.len() {
            assert!(decode_state(&bytes[..cut], path, 0).is_err(), "cut at {cut}");
        }
        let mut bad_phase = bytes.clone();
        bad_phase[10] = 9;
        assert!(decode_state(&bad_phase, path, 0).is_err());
        let mut bad_kind = bytes.clone();
        bad_kind[15] = 2;
        assert!(decode_state(&bad_kind, path, 0).is_err());
    }
}
