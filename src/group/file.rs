//! The group file and the protocol run under its lock: joining, leaving, expelling, taking and
//! releasing partitions, and fencing commits (the files are described in `group/mod.rs`).

#![expect(unsafe_code, reason = "the group mutex and atomics live in the shared group file")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use memmap2::MmapOptions;
use parking_lot::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::failpoint::failpoint;
use crate::group::offsets::OffsetStore;
use crate::group::state::{
    GroupState, MemberState, PartitionCounts, current_counts, decode_group_state, encode_group_state, rebalance,
};
use crate::log::format::{self, FORMAT_VERSION};
use crate::options::AssignmentStrategy;
use crate::sys::file::{self, Access};
use crate::sys::map::SharedMap;
use crate::sys::mutex::{RobustGuard, RobustMutex};
use crate::sys::{clock, futex, lock};
use crate::topic::TopicPartition;

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
/// How long leaving waits for the group lock before it leaves by letting go of its liveness lock.
const LEAVE_WAIT: Duration = Duration::from_millis(200);

/// Room for one copy of the group state, length and checksum included. The file is sparse:
/// only what a state needs is ever written.
const BLOB_BYTES: usize = 64 << 20;

// Fields of a member slot.
const SLOT_MEMBER_ID: usize = 0;
const SLOT_HEARTBEAT_NS: usize = 8;
const SLOT_POLLED_NS: usize = 16;
const SLOT_SESSION_TIMEOUT_MS: usize = 24;
const SLOT_MAX_POLL_INTERVAL_MS: usize = 28;

/// What a consumer asks for when it joins.
pub(crate) struct JoinRequest<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) topics: &'a [String],
    pub(crate) strategy: AssignmentStrategy,
    pub(crate) session_timeout: Duration,
    pub(crate) max_poll_interval: Duration,
}

/// A consumer's place in a group: its member id, its slot, and the lock that proves it alive.
pub(crate) struct Membership {
    pub(crate) id: u64,
    slot: u32,
    _alive: File,
}

/// What a member sees when it looks at the group.
pub(crate) enum View {
    /// It is no longer a member: it was expelled (or never joined).
    Expelled,
    Member {
        generation: u64,
        assigned: Vec<TopicPartition>,
        owned: Vec<TopicPartition>,
    },
}

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

    /// Whether `member` is still in the group, read without the lock.
    pub(crate) fn is_member(&self, member: &Membership) -> bool {
        self.slot_word(member.slot, SLOT_MEMBER_ID).load(Ordering::Acquire) == member.id
    }

    /// Records that `member` called `poll` (for `max_poll_interval`).
    pub(crate) fn note_poll(&self, member: &Membership) {
        if self.is_member(member) {
            self.slot_word(member.slot, SLOT_POLLED_NS).store(clock::monotonic_now_ns(), Ordering::Relaxed);
        }
    }

    /// Adds a member and rebalances.
    pub(crate) fn join(&self, request: &JoinRequest<'_>, counts: PartitionCounts<'_>) -> Result<Membership> {
        let alive = open_members_lock(&self.members_lock)?;
        let mut guard = self.lock()?;
        let mut state = guard.state()?;
        let now = clock::monotonic_now_ns();
        let expelled = self.expel_dead(&mut state, now);
        if !expelled.is_empty() {
            rebalance(&mut state, counts)?;
            guard.store(&state)?;
            self.clear_slots(&expelled);
        }
        match state.strategy {
            Some(strategy) if !state.members.is_empty() && strategy != request.strategy => {
                return Err(Error::StrategyMismatch {
                    group: self.name.clone(),
                    group_strategy: strategy,
                    requested: request.strategy,
                });
            }
            _ => state.strategy = Some(request.strategy),
        }
        let mut slot = None;
        for candidate in 0..MAX_GROUP_MEMBERS as u32 {
            if self.slot_word(candidate, SLOT_MEMBER_ID).load(Ordering::Acquire) == 0
                && lock::try_lock_byte(&alive, u64::from(candidate)).during("lock a member slot in", &self.members_lock)?
            {
                slot = Some(candidate);
                break;
            }
        }
        let slot = slot.ok_or_else(|| Error::GroupFull { group: self.name.clone(), max_members: MAX_GROUP_MEMBERS })?;
        let id = state.next_member_id.max(1);
        state.next_member_id = id + 1;
        let limit_ms = |d: Duration| d.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
        let base = SLOTS_AT + slot as usize * SLOT_BYTES;
        self.map.word32(base + SLOT_SESSION_TIMEOUT_MS).store(limit_ms(request.session_timeout), Ordering::Relaxed);
        self.map.word32(base + SLOT_MAX_POLL_INTERVAL_MS).store(limit_ms(request.max_poll_interval), Ordering::Relaxed);
        self.slot_word(slot, SLOT_HEARTBEAT_NS).store(now, Ordering::Relaxed);
        self.slot_word(slot, SLOT_POLLED_NS).store(now, Ordering::Relaxed);
        self.slot_word(slot, SLOT_MEMBER_ID).store(id, Ordering::Release);
        state.members.push(MemberState {
            id,
            slot,
            pid: std::process::id(),
            session_timeout_ms: limit_ms(request.session_timeout),
            max_poll_interval_ms: limit_ms(request.max_poll_interval),
            client_id: request.client_id.to_owned(),
            subscription: request.topics.to_vec(),
            assigned: Vec::new(),
            owned: Vec::new(),
        });
        let stored = rebalance(&mut state, counts).and_then(|()| guard.store(&state));
        if let Err(error) = stored {
            self.slot_word(slot, SLOT_MEMBER_ID).store(0, Ordering::Release);
            return Err(error);
        }
        self.local.lock().push((slot, id));
        Ok(Membership { id, slot, _alive: alive })
    }

    /// Removes a member (if it is still one) and rebalances; its partitions move at once. If
    /// the group lock stays taken (its holder is stopped), the member just lets go of its
    /// liveness lock instead: to the others it then looks dead, and is expelled as soon as one
    /// of them gets the lock.
    pub(crate) fn leave(&self, member: Membership, counts: PartitionCounts<'_>) -> Result<()> {
        self.local.lock().retain(|&(_, id)| id != member.id);
        let give_up = std::time::Instant::now() + LEAVE_WAIT;
        let mut guard = loop {
            if let Some(guard) = self.try_lock()? {
                break guard;
            }
            if std::time::Instant::now() >= give_up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let mut state = guard.state()?;
        let before = state.members.len();
        state.members.retain(|m| m.id != member.id);
        if state.members.len() != before {
            rebalance(&mut state, counts)?;
            guard.store(&state)?;
            self.clear_slots(&[(member.slot, member.id)]);
        }
        // Dropping `member` closes its lock file only now, after its slot was cleared.
        drop(guard);
        drop(member);
        Ok(())
    }

    /// Changes what a member subscribes to, and rebalances.
    pub(crate) fn resubscribe(&self, member: &Membership, topics: &[String], counts: PartitionCounts<'_>) -> Result<()> {
        let mut guard = self.lock()?;
        let mut state = guard.state()?;
        if let Some(me) = state.members.iter_mut().find(|m| m.id == member.id)
            && me.subscription != topics
        {
            me.subscription = topics.to_vec();
            rebalance(&mut state, counts)?;
            guard.store(&state)?;
        }
        Ok(())
    }

    /// The member's view of the current generation.
    pub(crate) fn view(&self, member: &Membership) -> Result<View> {
        let guard = self.lock()?;
        let state = guard.state()?;
        Ok(match state.members.into_iter().find(|m| m.id == member.id) {
            Some(me) if self.is_member(member) => {
                View::Member { generation: state.generation, assigned: me.assigned, owned: me.owned }
            }
            _ => View::Expelled,
        })
    }

    /// Gives up ownership of `partitions`, so their new owners may start.
    pub(crate) fn release(&self, member: &Membership, partitions: &[TopicPartition]) -> Result<()> {
        let mut guard = self.lock()?;
        let mut state = guard.state()?;
        if let Some(me) = state.members.iter_mut().find(|m| m.id == member.id) {
            me.owned.retain(|tp| !partitions.contains(tp));
            guard.store(&state)?;
        }
        Ok(())
    }

    /// Takes ownership of every partition assigned to the member in `generation` that nobody
    /// owns. Returns everything the member owns now and whether that is its whole assignment,
    /// or `None` if the generation moved on (look at the group again) or the member was expelled.
    pub(crate) fn acquire(&self, member: &Membership, generation: u64) -> Result<Option<(Vec<TopicPartition>, bool)>> {
        let mut guard = self.lock()?;
        let mut state = guard.state()?;
        if state.generation != generation || !self.is_member(member) {
            return Ok(None);
        }
        let taken: BTreeSet<TopicPartition> = state.members.iter().flat_map(|m| m.owned.iter().cloned()).collect();
        let Some(me) = state.members.iter_mut().find(|m| m.id == member.id) else {
            return Ok(None);
        };
        let free: Vec<TopicPartition> = me.assigned.iter().filter(|tp| !taken.contains(tp)).cloned().collect();
        let took = !free.is_empty();
        me.owned.extend(free);
        me.owned.sort();
        let complete = me.assigned.iter().all(|tp| me.owned.contains(tp));
        let owned = me.owned.clone();
        if took {
            guard.store(&state)?;
        }
        Ok(Some((owned, complete)))
    }

    /// Runs `commit` of `partitions` under the group lock if `member` is still in the group
    /// and either `generation` is current or, with `revoking`, the member still owns every one
    /// of `partitions` (zombie fencing); otherwise fails with `Error::CommitFailed`.
    ///
    /// The exception is for commits made while revoking: the partitions have not moved yet, so
    /// the commit is safe, and refusing it because yet another rebalance began meanwhile would
    /// make their next owner read again what this member already processed.
    pub(crate) fn fenced<T>(
        &self,
        member: &Membership,
        generation: u64,
        revoking: Option<&[TopicPartition]>,
        commit: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let guard = self.lock()?;
        let fail = |reason: String| Err(Error::CommitFailed { group: self.name.clone(), reason });
        if !self.is_member(member) || !self.heartbeat_fresh(member.slot, clock::monotonic_now_ns()) {
            return fail(format!(
                "member {} was removed from the group (it left, its session timed out, or it did not poll within \
                 max_poll_interval); poll to rejoin",
                member.id
            ));
        }
        let current = self.generation();
        if current != generation {
            let still_owned = match revoking {
                Some(partitions) => {
                    let state = guard.state()?;
                    let me = state.members.iter().find(|m| m.id == member.id);
                    me.is_some_and(|me| partitions.iter().all(|tp| me.owned.contains(tp)))
                }
                None => false,
            };
            if !still_owned {
                return fail(format!("the group rebalanced (generation {generation} is now {current}); poll, then commit again"));
            }
        }
        let result = commit();
        drop(guard);
        result
    }

    /// The keeper's periodic work: heartbeats for this process's members, expulsion of dead or
    /// silent members in any process, and a rebalance when subscribed topics change. It never
    /// waits for the group lock: when another holds it, the rest waits for the next tick.
    pub(crate) fn tick(&self, counts: PartitionCounts<'_>) -> Result<()> {
        let now = clock::monotonic_now_ns();
        for &(slot, id) in self.local.lock().iter() {
            // A member whose own heartbeat is already too old (this whole process was stopped)
            // must not revive itself: it is dead to the group and is expelled below.
            if self.slot_word(slot, SLOT_MEMBER_ID).load(Ordering::Acquire) == id && self.heartbeat_fresh(slot, now) {
                self.slot_word(slot, SLOT_HEARTBEAT_NS).store(now, Ordering::Relaxed);
            }
        }
        let mut claimed = 0;
        let mut needs_work = false;
        for slot in 0..MAX_GROUP_MEMBERS as u32 {
            let id = self.slot_word(slot, SLOT_MEMBER_ID).load(Ordering::Acquire);
            if id != 0 {
                claimed += 1;
                needs_work |= !self.slot_alive(slot, id, now);
            }
        }
        // A member in the state without its slot (its remover died half-way) is a ghost.
        needs_work |= claimed != self.map.word64(MEMBER_COUNT_AT).load(Ordering::Acquire);
        // Taking the lock also repairs it if its last holder died.
        let Some(mut guard) = self.try_lock()? else {
            return Ok(());
        };
        let generation = self.generation();
        if self.seen.lock().0 != generation {
            let state = guard.state()?;
            let subscribed: BTreeSet<String> = state.members.iter().flat_map(|m| m.subscription.iter().cloned()).collect();
            *self.seen.lock() = (state.generation, subscribed, state.topics);
        }
        {
            let seen = self.seen.lock();
            needs_work |= current_counts(seen.1.iter(), counts, &seen.2) != seen.2;
        }
        if needs_work {
            let mut state = guard.state()?;
            let expelled = self.expel_dead(&mut state, now);
            let current = current_counts(state.members.iter().flat_map(|m| &m.subscription), counts, &state.topics);
            if !expelled.is_empty() || current != state.topics {
                rebalance(&mut state, counts)?;
                guard.store(&state)?;
                self.clear_slots(&expelled);
            }
        }
        Ok(())
    }

    /// Whether the member in `slot` heartbeated within its session timeout.
    fn heartbeat_fresh(&self, slot: u32, now: u64) -> bool {
        let age_ms = now.saturating_sub(self.slot_word(slot, SLOT_HEARTBEAT_NS).load(Ordering::Relaxed)) / 1_000_000;
        age_ms <= self.slot_limit_ms(slot, SLOT_SESSION_TIMEOUT_MS)
    }

    /// Whether the member in `slot` with `id` is alive: its process holds its lock, and it
    /// heartbeated within its session timeout and polled within its max poll interval.
    fn slot_alive(&self, slot: u32, id: u64, now: u64) -> bool {
        if self.slot_word(slot, SLOT_MEMBER_ID).load(Ordering::Acquire) != id || !self.heartbeat_fresh(slot, now) {
            return false;
        }
        let polled_ms = now.saturating_sub(self.slot_word(slot, SLOT_POLLED_NS).load(Ordering::Relaxed)) / 1_000_000;
        if polled_ms > self.slot_limit_ms(slot, SLOT_MAX_POLL_INTERVAL_MS) {
            return false;
        }
        // An error asking the kernel counts as alive: expelling a live member is the worse mistake.
        lock::byte_locked_elsewhere(&self.probe, u64::from(slot)).unwrap_or(true)
    }

    /// Removes members that are not alive (see `slot_alive`), freeing their partitions, and
    /// returns their (slot, id) for `clear_slots` once the state is stored. The caller holds
    /// the lock.
    fn expel_dead(&self, state: &mut GroupState, now: u64) -> Vec<(u32, u64)> {
        let mut expelled = Vec::new();
        state.members.retain(|m| {
            let alive = self.slot_alive(m.slot, m.id, now);
            if !alive {
                expelled.push((m.slot, m.id));
            }
            alive
        });
        expelled
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
                size_bytes: bytes.len(),
                max_bytes: BLOB_BYTES - 8,
            });
        }
        let active = group.map.word64(ACTIVE_HALF_AT);
        let next = (active.load(Ordering::Relaxed) + 1) & 1;
        let mut blob = Vec::with_capacity(bytes.len() + 8);
        blob.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        blob.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        blob.extend_from_slice(&bytes);
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
    let at = blob_at(half);
    let mut prefix = [0u8; 8];
    file.read_exact_at(&mut prefix, at).during("read the group state from", path)?;
    let length = format::u32_at(&prefix, 0) as usize;
    if length > BLOB_BYTES - 8 {
        return Err(Error::corrupt(path, at, "group state longer than its room"));
    }
    let mut bytes = vec![0u8; length];
    file.read_exact_at(&mut bytes, at + 8).during("read the group state from", path)?;
    if crc32fast::hash(&bytes) != format::u32_at(&prefix, 4) {
        return Err(Error::corrupt(path, at, "group state checksum mismatch"));
    }
    decode_group_state(&bytes, path)
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
    let mut blob = (bytes.len() as u32).to_le_bytes().to_vec();
    blob.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    blob.extend_from_slice(&bytes);
    file.write_all_at(&blob, blob_at(0)).during("write", path)?;
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
