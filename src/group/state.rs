//! A group's state (members, subscriptions, the assignment, who owns what), the rebalance that
//! recomputes it with the assignor, and its encoding as the blob the group file keeps.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::group::assignor::{self, MemberInput};
use crate::log::format;
use crate::options::AssignmentStrategy;
use crate::topic::TopicPartition;

/// The state of a group, as stored in its file.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupState {
    /// Incremented by every rebalance; commits must carry the current one.
    pub(crate) generation: u64,
    pub(crate) next_member_id: u64,
    /// The strategy every member uses; `None` while the group is empty.
    pub(crate) strategy: Option<AssignmentStrategy>,
    /// The partition counts the current assignment was computed for.
    pub(crate) topics: BTreeMap<String, u32>,
    pub(crate) members: Vec<MemberState>,
}

/// One member of a group.
#[derive(Debug, Clone)]
pub(crate) struct MemberState {
    pub(crate) id: u64,
    pub(crate) slot: u32,
    pub(crate) pid: u32,
    pub(crate) session_timeout_ms: u32,
    pub(crate) max_poll_interval_ms: u32,
    pub(crate) client_id: String,
    pub(crate) subscription: Vec<String>,
    /// What the assignor gave it in the current generation.
    pub(crate) assigned: Vec<TopicPartition>,
    /// What it consumes now: a subset of `assigned` once it has caught up.
    pub(crate) owned: Vec<TopicPartition>,
}

/// Looks up how many partitions a topic has; `None` if it does not exist.
pub(crate) type PartitionCounts<'a> = &'a dyn Fn(&str) -> Result<Option<u32>>;

/// Recomputes the assignment for the current members and topics, and starts a new generation.
pub(crate) fn rebalance(state: &mut GroupState, counts: PartitionCounts<'_>) -> Result<()> {
    let topics = current_counts(state.members.iter().flat_map(|m| &m.subscription), counts, &state.topics);
    if state.members.is_empty() {
        state.strategy = None;
    }
    let strategy = state.strategy.unwrap_or_default();
    let inputs: Vec<MemberInput<'_>> =
        state.members.iter().map(|m| MemberInput { id: m.id, topics: &m.subscription, owned: &m.assigned }).collect();
    let assignment = assignor::assign(strategy, &inputs, &topics);
    for (member, assigned) in state.members.iter_mut().zip(assignment) {
        member.assigned = assigned;
    }
    state.topics = topics;
    state.generation += 1;
    Ok(())
}

/// The partition counts of the existing ones among `topics`. A topic whose lookup fails (a
/// file error, not a missing topic) keeps the count it had in `known`, so that one unreadable
/// topic neither stops the group nor takes its partitions away.
pub(crate) fn current_counts<'a>(
    topics: impl Iterator<Item = &'a String>,
    counts: PartitionCounts<'_>,
    known: &BTreeMap<String, u32>,
) -> BTreeMap<String, u32> {
    let mut current = BTreeMap::new();
    for topic in topics {
        if current.contains_key(topic) {
            continue;
        }
        match counts(topic) {
            Ok(Some(count)) => {
                current.insert(topic.clone(), count);
            }
            Ok(None) => {}
            Err(_) => {
                if let Some(&count) = known.get(topic) {
                    current.insert(topic.clone(), count);
                }
            }
        }
    }
    current
}

/// A consumer group's state, as one blob (kept in the group file).
///
/// ```text
/// generation u64   next_member_id u64   strategy u8 (0: no members)
/// topics u32, then per topic: name, partitions u32          (what the assignment was made for)
/// members u32, then per member: id u64  slot u32  pid u32  session_timeout_ms u32
///   max_poll_interval_ms u32  client_id  subscription (u32 count, names)
///   assigned (u32 count, then name and partition u32 each)  owned (the same)
/// ```
/// A name is a u16 length and UTF-8 bytes.
pub(crate) fn encode_group_state(state: &GroupState) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let name = |out: &mut Vec<u8>, name: &str| {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    };
    let partitions = |out: &mut Vec<u8>, list: &[TopicPartition]| {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for tp in list {
            name(out, tp.topic());
            out.extend_from_slice(&tp.partition().to_le_bytes());
        }
    };
    out.extend_from_slice(&state.generation.to_le_bytes());
    out.extend_from_slice(&state.next_member_id.to_le_bytes());
    out.push(state.strategy.map_or(0, AssignmentStrategy::code));
    out.extend_from_slice(&(state.topics.len() as u32).to_le_bytes());
    for (topic, count) in &state.topics {
        name(&mut out, topic);
        out.extend_from_slice(&count.to_le_bytes());
    }
    out.extend_from_slice(&(state.members.len() as u32).to_le_bytes());
    for member in &state.members {
        out.extend_from_slice(&member.id.to_le_bytes());
        for word in [member.slot, member.pid, member.session_timeout_ms, member.max_poll_interval_ms] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        name(&mut out, &member.client_id);
        out.extend_from_slice(&(member.subscription.len() as u32).to_le_bytes());
        for topic in &member.subscription {
            name(&mut out, topic);
        }
        partitions(&mut out, &member.assigned);
        partitions(&mut out, &member.owned);
    }
    out
}

/// Decodes a blob written by `encode_group_state`; any inconsistency is reported as corruption.
pub(crate) fn decode_group_state(bytes: &[u8], path: &Path) -> Result<GroupState> {
    let mut reader = Reader { bytes, at: 0, path };
    let generation = reader.u64()?;
    let next_member_id = reader.u64()?;
    let code = reader.take(1)?[0];
    let strategy = match code {
        0 => None,
        code => Some(AssignmentStrategy::from_code(code).ok_or_else(|| reader.corrupt("unknown assignment strategy"))?),
    };
    let mut topics = BTreeMap::new();
    for _ in 0..reader.count()? {
        let topic = reader.name()?;
        topics.insert(topic, reader.u32()?);
    }
    let mut members = Vec::new();
    for _ in 0..reader.count()? {
        let id = reader.u64()?;
        let (slot, pid, session_timeout_ms, max_poll_interval_ms) = (reader.u32()?, reader.u32()?, reader.u32()?, reader.u32()?);
        let client_id = reader.name()?;
        let subscription = (0..reader.count()?).map(|_| reader.name()).collect::<Result<_>>()?;
        let assigned = reader.partitions()?;
        let owned = reader.partitions()?;
        members.push(MemberState {
            id,
            slot,
            pid,
            session_timeout_ms,
            max_poll_interval_ms,
            client_id,
            subscription,
            assigned,
            owned,
        });
    }
    if reader.at != bytes.len() {
        return Err(reader.corrupt("trailing bytes after the group state"));
    }
    Ok(GroupState { generation, next_member_id, strategy, topics, members })
}

/// Bounds-checked little-endian reading of a blob, for `decode_group_state`.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn corrupt(&self, reason: &str) -> Error {
        Error::corrupt(self.path, self.at as u64, reason)
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end =
            self.at.checked_add(n).filter(|&end| end <= self.bytes.len()).ok_or_else(|| self.corrupt("truncated group state"))?;
        let bytes = &self.bytes[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(format::u32_at(self.take(4)?, 0))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(format::u64_at(self.take(8)?, 0))
    }

    /// A count of following items, each at least two bytes long, so a bad count cannot make
    /// the caller allocate more than the blob could hold.
    fn count(&mut self) -> Result<usize> {
        let count = self.u32()? as usize;
        if count > (self.bytes.len() - self.at) / 2 {
            return Err(self.corrupt("a count larger than the group state"));
        }
        Ok(count)
    }

    fn name(&mut self) -> Result<String> {
        let length = usize::from(format::u16_at(self.take(2)?, 0));
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("a name that is not UTF-8"))
    }

    fn partitions(&mut self) -> Result<Vec<TopicPartition>> {
        (0..self.count()?).map(|_| Ok(TopicPartition::new(&self.name()?, self.u32()?))).collect()
    }
}
