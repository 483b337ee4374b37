//! What `Queue::describe_group` reports: a group's members and how far it is behind on each
//! partition, put together from the group's state and committed offsets.

use std::collections::HashMap;

use crate::error::Result;
use crate::group::offsets;
use crate::group::state::GroupState;
use crate::options::AssignmentStrategy;
use crate::topic::TopicPartition;

/// A consumer group as `Queue::describe_group` found it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GroupDescription {
    /// The group's name.
    pub group: String,
    /// Incremented by every rebalance.
    pub generation: u64,
    /// The assignment strategy of the current members; `None` when there are none.
    pub strategy: Option<AssignmentStrategy>,
    /// The live members, in the order they joined.
    pub members: Vec<MemberDescription>,
    /// Every partition of the subscribed topics and every partition with a committed offset.
    pub partitions: Vec<PartitionLag>,
}

/// One member of a consumer group.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemberDescription {
    /// Unique within the group, never reused.
    pub member_id: u64,
    /// The name the consumer was given with `ConsumerConfig::client_id`.
    pub client_id: String,
    /// The process the member lives in.
    pub pid: u32,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// What the current generation assigns it.
    pub assignment: Vec<TopicPartition>,
    /// What it reads now (it takes an assigned partition once the previous owner let go).
    pub owned: Vec<TopicPartition>,
}

/// How far a consumer group is behind on one partition.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// The member that reads it now.
    pub owner: Option<u64>,
    /// The group's committed offset (the next offset to read).
    pub committed: Option<u64>,
    /// The offset the next record sent will get.
    pub end_offset: u64,
    /// Records between the committed offset and the end; `None` without a commit.
    pub lag: Option<u64>,
}

/// Describes group `group` from its `state` and `committed` offsets (as the offset store keeps
/// them: offset and topic id): its members, and the lag on every partition of the topics the
/// assignment was made for and on every partition with a commit. `end_offset` gives a
/// partition's end, or `None` for one that no longer exists (it is left out); `topic_id` gives
/// a topic's current id, so that a commit made for an earlier topic of the same name counts as
/// none.
pub(crate) fn describe(
    group: &str,
    state: GroupState,
    committed: &HashMap<TopicPartition, (u64, u64)>,
    mut end_offset: impl FnMut(&TopicPartition) -> Result<Option<u64>>,
    topic_id: impl Fn(&str) -> u64,
) -> Result<GroupDescription> {
    let mut partitions: Vec<TopicPartition> = committed.keys().cloned().collect();
    for (topic, &count) in &state.topics {
        partitions.extend((0..count).map(|p| TopicPartition::new(topic, p)));
    }
    partitions.sort();
    partitions.dedup();
    let mut lags = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let Some(end_offset) = end_offset(&partition)? else {
            continue;
        };
        let committed = offsets::applicable(committed.get(&partition).copied(), topic_id(partition.topic()));
        lags.push(PartitionLag {
            owner: state.members.iter().find(|m| m.owned.contains(&partition)).map(|m| m.id),
            committed,
            end_offset,
            lag: committed.map(|c| end_offset.saturating_sub(c)),
            partition,
        });
    }
    Ok(GroupDescription {
        group: group.to_owned(),
        generation: state.generation,
        strategy: state.strategy,
        members: state
            .members
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.id,
                client_id: m.client_id,
                pid: m.pid,
                topics: m.subscription,
                assignment: m.assigned,
                owned: m.owned,
            })
            .collect(),
        partitions: lags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::state::MemberState;

    fn member(id: u64, owned: &[TopicPartition]) -> MemberState {
        MemberState {
            id,
            slot: 0,
            pid: 7,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 300_000,
            client_id: format!("c{id}"),
            subscription: vec!["orders".into()],
            assigned: owned.to_vec(),
            owned: owned.to_vec(),
        }
    }

    #[test]
    fn lag_is_reported_per_partition_with_its_owner_and_only_for_commits_of_the_current_topic() {
        let (p0, p1) = (TopicPartition::new("orders", 0), TopicPartition::new("orders", 1));
        let gone = TopicPartition::new("deleted", 0);
        let state = GroupState {
            generation: 4,
            next_member_id: 3,
            strategy: Some(AssignmentStrategy::Range),
            topics: [("orders".to_owned(), 2)].into(),
            members: vec![member(1, std::slice::from_ref(&p0)), member(2, &[])],
        };
        // p0's commit was made for this topic (id 9); p1's for an earlier "orders" (id 5).
        let committed: HashMap<_, _> = [(p0.clone(), (40, 9)), (p1.clone(), (3, 5)), (gone.clone(), (1, 1))].into();
        let ends = |tp: &TopicPartition| Ok(if tp.topic() == "orders" { Some(100) } else { None });
        let description = describe("billing", state, &committed, ends, |_| 9).unwrap();
        assert_eq!((description.group.as_str(), description.generation), ("billing", 4));
        assert_eq!(description.members.iter().map(|m| m.member_id).collect::<Vec<_>>(), vec![1, 2]);
        let lags: Vec<_> = description.partitions.iter().map(|l| (l.partition.clone(), l.owner, l.committed, l.lag)).collect();
        assert_eq!(lags, vec![(p0, Some(1), Some(40), Some(60)), (p1, None, None, None)], "the deleted topic is left out");
    }

    #[test]
    fn an_error_finding_a_partition_end_is_returned() {
        let committed: HashMap<_, _> = [(TopicPartition::new("orders", 0), (1, 0))].into();
        let failing = |_: &TopicPartition| Err(crate::error::Error::InvalidConfig("unreadable".into()));
        assert!(describe("g", GroupState::default(), &committed, failing, |_| 0).is_err());
    }
}
