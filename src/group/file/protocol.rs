//! The group protocol, run under the group file's lock: joining, leaving, resubscribing,
//! expelling dead or silent members, taking and releasing partitions, and fencing commits; and
//! the keeper's tick, which heartbeats this process's members and expels dead ones in any
//! process. `group/mod.rs` describes the protocol as a whole.

use std::collections::BTreeSet;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{
    Group, MAX_GROUP_MEMBERS, MEMBER_COUNT_AT, SLOT_BYTES, SLOT_HEARTBEAT_NS, SLOT_MAX_POLL_INTERVAL_MS, SLOT_MEMBER_ID,
    SLOT_POLLED_NS, SLOT_SESSION_TIMEOUT_MS, SLOTS_AT, open_members_lock,
};
use crate::error::{Error, IoContext, Result};
use crate::group::state::{GroupState, MemberState, PartitionCounts, current_counts, rebalance};
use crate::options::AssignmentStrategy;
use crate::sys::{clock, lock};
use crate::topic::TopicPartition;

/// How long leaving waits for the group lock before it leaves by letting go of its liveness lock.
const LEAVE_WAIT: Duration = Duration::from_millis(200);

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

impl Membership {
    /// What names this member to the group, for a commit made on its behalf.
    pub(crate) fn key(&self) -> MemberKey {
        MemberKey { id: self.id, slot: self.slot }
    }
}

/// A member's id and slot: enough for the group to tell whether it is still that member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemberKey {
    pub(crate) id: u64,
    slot: u32,
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

impl Group {
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
                    group_strategy: strategy.kafka_name(),
                    requested: request.strategy.kafka_name(),
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
        member: MemberKey,
        generation: u64,
        revoking: Option<&[TopicPartition]>,
        commit: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let guard = self.lock()?;
        let fail = |reason: String| Err(Error::CommitFailed { group: self.name.clone(), reason });
        let still_member = self.slot_word(member.slot, SLOT_MEMBER_ID).load(Ordering::Acquire) == member.id;
        if !still_member || !self.heartbeat_fresh(member.slot, clock::monotonic_now_ns()) {
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
}
