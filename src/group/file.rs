//! The shared group file (the group directory's files are described in `group/mod.rs`): its
//! layout, a mapped head (the robust group mutex, the change counter consumers sleep on, mirrors
//! of the generation and member count, one slot per member with its id and heartbeats) and then
//! two copies of the group state written with pwrite; rebuilding it in a new epoch; and the
//! group lock, under which the state is read and replaced. The protocol run under that lock is
//! in `file/protocol.rs`.

#![expect(unsafe_code, reason = "the group mutex and atomics live in the shared group file")]

mod protocol;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::MmapOptions;
use parking_lot::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::failpoint::failpoint;
use crate::group::offsets::OffsetStore;
use crate::group::state::{GroupState, decode_group_state, encode_group_state};
use crate::log::format::{self, FORMAT_VERSION};
use crate::sys::file::{self, Access};
use crate::sys::futex;
use crate::sys::map::SharedMap;
use crate::sys::mutex::{RobustGuard, RobustMutex};

pub(crate) use protocol::{JoinRequest, MemberKey, Membership, View};

pub(crate) const GROUP_MAGIC: [u8; 8] = *b"SLOGGRP\0";
/// The group's shared file, in its directory under `groups/`.
pub(crate) const GROUP_FILE: &str = "group";
/// Member `i` holds an exclusive lock on byte `i` of this file while its process lives.
pub(crate) const MEMBERS_LOCK_FILE: &str = "members.lock";

/// The most members one group can have.
pub const MAX_GROUP_MEMBERS: usize = 1024;

const EPOCH_AT: usize = 16;
const CHANGE_SEQ_AT: usize = 24;
const ACTIVE_HALF_AT: usize = 32;
const GENERATION_AT: usize = 40;
const MEMBER_COUNT_AT: usize = 48;
const MUTEX_AT: usize = 64;
const SLOTS_AT: usize = 128;
const SLOT_BYTES: usize = 32;
const BLOBS_AT: usize = (SLOTS_AT + MAX_GROUP_MEMBERS * SLOT_BYTES).next_multiple_of(4096);

/// Room for one copy of the group state, length and checksum included. The file is sparse:
/// only what a state needs is ever written.
const BLOB_BYTES: usize = 64 << 20;

// Fields of a member slot.
const SLOT_MEMBER_ID: usize = 0;
const SLOT_HEARTBEAT_NS: usize = 8;
const SLOT_POLLED_NS: usize = 16;
const SLOT_SESSION_TIMEOUT_MS: usize = 24;
const SLOT_MAX_POLL_INTERVAL_MS: usize = 28;

/// One group as this process sees it; shared by every consumer of the group in the process.
pub(crate) struct Group {
    pub(crate) name: String,
    // Declared before `map`, so that it is dropped first.
    mutex: RobustMutex,
    map: SharedMap,
    path: PathBuf,
    members_lock: PathBuf,
    /// An open `members.lock` holding no lock, for asking whether a member's byte is locked.
    probe: File,
    pub(crate) offsets: Arc<OffsetStore>,
    /// The members this process hosts, as (slot, member id): the keeper heartbeats them.
    local: Mutex<Vec<(u32, u64)>>,
    /// What the keeper last read: the generation, the subscribed topics and their counts then.
    seen: Mutex<(u64, BTreeSet<String>, BTreeMap<String, u32>)>,
    file: File,
}

/// The group lock, held; stores made through it wake the group's consumers when it is released.
struct GroupGuard<'a> {
    group: &'a Group,
    changed: bool,
    /// The mutex, released in `drop` before the wake-up (`None` only once released).
    held: Option<RobustGuard<'a>>,
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        let word = self.group.map.word32(CHANGE_SEQ_AT);
        if self.changed {
            word.fetch_add(1, Ordering::Release);
        }
        drop(self.held.take());
        if self.changed {
            futex::futex_wake_all(word);
        }
    }
}

impl Group {
    /// Opens (creating if needed) the group in `dir`, rebuilding its file in a new `epoch`.
    pub(crate) fn open(name: &str, dir: &Path, epoch: u64, offsets: Arc<OffsetStore>) -> Result<Self> {
        let path = dir.join(GROUP_FILE);
        let file = file::open_file(&path, Access::Create)?;
        file.lock().during("lock", &path)?;
        let prepared = prepare_group_file(&file, &path, epoch);
        file.unlock().during("unlock", &path)?;
        prepared?;
        let map = MmapOptions::new().len(BLOBS_AT).map_raw(&file).during("map", &path)?;
        // SAFETY: the mutex lies at a 64-byte aligned offset inside the page-aligned mapping,
        // which `Group` owns and keeps until after the mutex handle is gone.
        let mutex = unsafe { RobustMutex::at(map.as_mut_ptr().add(MUTEX_AT)) };
        let members_lock = dir.join(MEMBERS_LOCK_FILE);
        let probe = open_members_lock(&members_lock)?;
        Ok(Group {
            name: name.to_owned(),
            mutex,
            map: SharedMap(map),
            path,
            members_lock,
            probe,
            offsets,
            local: Mutex::new(Vec::new()),
            seen: Mutex::new((u64::MAX, BTreeSet::new(), BTreeMap::new())),
            file,
        })
    }

    fn lock(&self) -> Result<GroupGuard<'_>> {
        let held = self.mutex.lock().during("take the group lock in", &self.path)?;
        self.locked(held)
    }

    /// The lock if it is free now; the keeper never waits for it, so that a holder that is
    /// stopped (SIGSTOP) cannot stop this process's heartbeats.
    fn try_lock(&self) -> Result<Option<GroupGuard<'_>>> {
        match self.mutex.try_lock().during("take the group lock in", &self.path)? {
            Some(held) => self.locked(held).map(Some),
            None => Ok(None),
        }
    }

    fn locked<'a>(&'a self, held: RobustGuard<'a>) -> Result<GroupGuard<'a>> {
        let owner_died = held.owner_died();
        let mut guard = GroupGuard { group: self, changed: false, held: Some(held) };
        if owner_died {
            guard.held.as_ref().expect("held until dropped").mark_consistent().during("recover the group lock in", &self.path)?;
            // The stored state is whole (a dying writer never flipped to a half-written copy).
            // What it may have left undone: the mirrors of the state in the head, a slot claimed
            // by a joiner that never stored itself, or a slot cleared for a member still in the
            // state (the keeper notices the member count and expels such a ghost). Waking
            // everyone lets sleepers look again.
            guard.changed = true;
            let state = guard.state()?;
            self.map.word64(GENERATION_AT).store(state.generation, Ordering::Release);
            self.map.word64(MEMBER_COUNT_AT).store(state.members.len() as u64, Ordering::Release);
            for slot in 0..MAX_GROUP_MEMBERS as u32 {
                let id = self.slot_word(slot, SLOT_MEMBER_ID);
                let claimed = id.load(Ordering::Acquire);
                if claimed != 0 && !state.members.iter().any(|m| m.id == claimed && m.slot == slot) {
                    id.store(0, Ordering::Release);
                }
            }
        }
        Ok(guard)
    }

    /// Clears the slots of members removed from the stored state. Only after the store: a
    /// cleared slot whose member is still in the state would hide it from the keeper.
    fn clear_slots(&self, removed: &[(u32, u64)]) {
        for &(slot, id) in removed {
            let _ = self.slot_word(slot, SLOT_MEMBER_ID).compare_exchange(id, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn slot_word(&self, slot: u32, field: usize) -> &AtomicU64 {
        self.map.word64(SLOTS_AT + slot as usize * SLOT_BYTES + field)
    }

    fn slot_limit_ms(&self, slot: u32, field: usize) -> u64 {
        self.map.word32(SLOTS_AT + slot as usize * SLOT_BYTES + field).load(Ordering::Relaxed).into()
    }

    /// The counter every change of the group state increments, and its current value: sleep on
    /// it to wake when the group changes.
    pub(crate) fn change_word(&self) -> (&AtomicU32, u32) {
        let word = self.map.word32(CHANGE_SEQ_AT);
        (word, word.load(Ordering::Acquire))
    }

    /// The current generation, read without the lock.
    pub(crate) fn generation(&self) -> u64 {
        self.map.word64(GENERATION_AT).load(Ordering::Acquire)
    }

    /// The whole state, for `describe_group`.
    pub(crate) fn snapshot(&self) -> Result<GroupState> {
        self.lock()?.state()
    }
}

impl GroupGuard<'_> {
    /// Reads the current state.
    fn state(&self) -> Result<GroupState> {
        let group = self.group;
        read_state(&group.file, &group.path, group.map.word64(ACTIVE_HALF_AT).load(Ordering::Acquire))
    }

    /// Replaces the state: writes the inactive half, then makes it the active one. The halves
    /// are written with `pwrite`, not through the mapping, so that a full disk is an error
    /// rather than a SIGBUS.
    fn store(&mut self, state: &GroupState) -> Result<()> {
        let group = self.group;
        let bytes = encode_group_state(state);
        if bytes.len() > BLOB_BYTES - 8 {
            return Err(Error::GroupStateTooLarge {
                group: group.name.clone(),
                size_bytes: bytes.len() as u64,
                max_bytes: (BLOB_BYTES - 8) as u64,
            });
        }
        let active = group.map.word64(ACTIVE_HALF_AT);
        let next = (active.load(Ordering::Relaxed) + 1) & 1;
        let blob = file::checksummed(&bytes);
        group.file.write_all_at(&blob, blob_at(next)).during("write the group state to", &group.path)?;
        failpoint!("group-store-before-switch");
        active.store(next, Ordering::Release);
        failpoint!("group-store-after-switch");
        group.map.word64(GENERATION_AT).store(state.generation, Ordering::Release);
        group.map.word64(MEMBER_COUNT_AT).store(state.members.len() as u64, Ordering::Release);
        self.changed = true;
        Ok(())
    }
}

/// Where copy `half` (0 or 1) of the group state starts in the group file.
pub(crate) fn blob_at(half: u64) -> u64 {
    (BLOBS_AT + (half & 1) as usize * BLOB_BYTES) as u64
}

/// Reads copy `half` of the group state: length, checksum, then the encoded state.
fn read_state(file: &File, path: &Path, half: u64) -> Result<GroupState> {
    decode_group_state(&file::read_checksummed(file, path, blob_at(half), BLOB_BYTES, "group state")?, path)
}

fn open_members_lock(path: &Path) -> Result<File> {
    file::open_file(path, Access::Create)
}

/// Makes the group file ready for `epoch`: if it was last set up in another epoch, every
/// process that used it is gone, so it is rebuilt empty, keeping the generation and member-id
/// counter. The caller holds the file's exclusive lock.
fn prepare_group_file(file: &File, path: &Path, epoch: u64) -> Result<()> {
    let length = file.metadata().during("stat", path)?.len();
    let mut carried = GroupState { next_member_id: 1, ..GroupState::default() };
    if length > 0 {
        let mut head = [0u8; 48];
        file.read_exact_at(&mut head, 0)
            .map_err(|_| Error::ForeignFile { path: path.to_path_buf(), reason: format!("only {length} bytes long") })?;
        if head.iter().all(|&b| b == 0) {
            // A file whose rebuild never wrote its header (a crash mid-way): build it again.
            return initialize_group_file(file, path, epoch, &carried);
        }
        format::check_magic_version(&head, GROUP_MAGIC).map_err(|mismatch| mismatch.into_error(path))?;
        if length >= BLOBS_AT as u64 && format::u64_at(&head, EPOCH_AT) == epoch {
            return Ok(());
        }
        if let Ok(previous) = read_state(file, path, format::u64_at(&head, ACTIVE_HALF_AT)) {
            carried.generation = previous.generation;
            carried.next_member_id = previous.next_member_id.max(1);
        }
    }
    initialize_group_file(file, path, epoch, &carried)
}

/// Writes an empty group file for `epoch` that carries `carried`'s counters.
fn initialize_group_file(file: &File, path: &Path, epoch: u64, carried: &GroupState) -> Result<()> {
    file.set_len(0).during("reset", path)?;
    // Only the mapped part is allocated up front; the state copies are written with pwrite.
    file::reserve(file, BLOBS_AT as u64).during("reserve space for", path)?;
    let bytes = encode_group_state(carried);
    let mut head = [0u8; 64];
    head[0..8].copy_from_slice(&GROUP_MAGIC);
    head[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    head[GENERATION_AT..GENERATION_AT + 8].copy_from_slice(&carried.generation.to_le_bytes());
    file.write_all_at(&file::checksummed(&bytes), blob_at(0)).during("write", path)?;
    file.write_all_at(&head, 0).during("write", path)?;
    let map = MmapOptions::new().len(BLOBS_AT).map_raw(file).during("map", path)?;
    // SAFETY: the mutex lies at a 64-byte aligned offset inside the mapping, which outlives
    // this handle; no other process maps the file while it is being rebuilt (new epoch, and
    // the caller holds the file's lock).
    let mutex = unsafe { RobustMutex::at(map.as_mut_ptr().add(MUTEX_AT)) };
    mutex.init().during("initialise the group lock in", path)?;
    // The epoch goes last: a crash before it leaves the file to be rebuilt again.
    file.write_all_at(&epoch.to_le_bytes(), EPOCH_AT as u64).during("write", path)
}
