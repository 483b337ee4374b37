//! The consumer-group assignor: given the members of a group, the topics each subscribes to, the
//! partitions each held before and the partition count of every topic, it decides which member
//! consumes which partition. It is a pure, deterministic function (no I/O, clock or randomness), so
//! every process that runs it on the same inputs computes the same assignment. Range and RoundRobin
//! reproduce Kafka's eager assignors exactly; CooperativeSticky balances the group while moving as
//! few partitions as possible, so a rebalance only revokes what actually moves.

use std::collections::{BTreeMap, BTreeSet};

use crate::options::AssignmentStrategy;
use crate::topic::TopicPartition;

/// One member of the group as the assignor sees it.
#[derive(Debug, Clone)]
pub(crate) struct MemberInput<'a> {
    /// Unique within the group; the order of ids is the order Kafka's assignors sort members by.
    pub(crate) id: u64,
    /// Topics the member subscribes to (sorted, no duplicates).
    pub(crate) topics: &'a [String],
    /// Partitions the member holds from the previous assignment (for stickiness). May contain partitions
    /// that no longer exist, topics it no longer subscribes to, or partitions another member also claims
    /// (after a crash); the assignor must cope.
    pub(crate) owned: &'a [TopicPartition],
}

impl MemberInput<'_> {
    /// Whether the member subscribes to `topic`, which need not exist.
    fn subscribes(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
    }
}

/// The new assignment: one sorted list per member, index-aligned with `members`. `partitions` maps each
/// existing topic to its partition count; subscribed topics missing from it are ignored.
pub(crate) fn assign(
    strategy: AssignmentStrategy,
    members: &[MemberInput<'_>],
    partitions: &BTreeMap<String, u32>,
) -> Vec<Vec<TopicPartition>> {
    // Every strategy works on the members in id order, which stands in for Kafka's sorted member ids;
    // the results are put back in the caller's order at the end.
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| members[i].id);
    let sorted: Vec<&MemberInput<'_>> = order.iter().map(|&i| &members[i]).collect();
    let by_rank = match strategy {
        AssignmentStrategy::Range => range(&sorted, partitions),
        AssignmentStrategy::RoundRobin => round_robin(&sorted, partitions),
        AssignmentStrategy::CooperativeSticky => cooperative_sticky(&sorted, partitions),
    };
    let mut result = vec![Vec::new(); members.len()];
    for (mut assigned, index) in by_rank.into_iter().zip(order) {
        assigned.sort();
        result[index] = assigned;
    }
    result
}

/// Kafka's RangeAssignor over members in id order.
fn range(members: &[&MemberInput<'_>], partitions: &BTreeMap<String, u32>) -> Vec<Vec<TopicPartition>> {
    let mut out = vec![Vec::new(); members.len()];
    for (topic, &count) in partitions {
        let subscribers: Vec<usize> = (0..members.len()).filter(|&m| members[m].subscribes(topic)).collect();
        if subscribers.is_empty() {
            continue;
        }
        let (per_member, with_extra) = (count / subscribers.len() as u32, count % subscribers.len() as u32);
        let mut next = 0;
        for (rank, &m) in (0u32..).zip(&subscribers) {
            let len = per_member + u32::from(rank < with_extra);
            out[m].extend((next..next + len).map(|p| TopicPartition::new(topic, p)));
            next += len;
        }
    }
    out
}

/// Kafka's RoundRobinAssignor over members in id order.
fn round_robin(members: &[&MemberInput<'_>], partitions: &BTreeMap<String, u32>) -> Vec<Vec<TopicPartition>> {
    let mut out = vec![Vec::new(); members.len()];
    // Kafka keeps one circular iterator over the members for all topics, so the position carries over.
    let mut next = 0;
    for (topic, &count) in partitions {
        let subscribed: Vec<bool> = members.iter().map(|m| m.subscribes(topic)).collect();
        // The skipping loop below only ends if some member subscribes to the topic.
        if !subscribed.contains(&true) {
            continue;
        }
        for p in 0..count {
            while !subscribed[next] {
                next = (next + 1) % members.len();
            }
            out[next].push(TopicPartition::new(topic, p));
            next = (next + 1) % members.len();
        }
    }
    out
}

/// The sticky assignment over members in id order.
fn cooperative_sticky(members: &[&MemberInput<'_>], partitions: &BTreeMap<String, u32>) -> Vec<Vec<TopicPartition>> {
    if members.is_empty() {
        return Vec::new();
    }
    // Only topics that exist count, so a member subscribing to a deleted topic still counts as having
    // the same subscription as the others.
    let subscriptions: Vec<Vec<&str>> =
        members.iter().map(|m| partitions.keys().map(String::as_str).filter(|t| m.subscribes(t)).collect()).collect();

    // What each member may keep: partitions that still exist in topics it still subscribes to. After a
    // crash two members may claim one partition; only the lower id may keep it, so it cannot end up with both.
    let mut claimed = BTreeSet::new();
    let mut owned = Vec::with_capacity(members.len());
    for (member, topics) in members.iter().zip(&subscriptions) {
        let mut mine: Vec<TopicPartition> = member.owned.to_vec();
        // Sorting first makes the choice of what to keep independent of the order the caller listed it in.
        mine.sort();
        mine.retain(|tp| topics.contains(&tp.topic()) && tp.partition() < partitions[tp.topic()] && claimed.insert(tp.clone()));
        owned.push(mine);
    }

    let all: Vec<TopicPartition> = partitions
        .iter()
        .filter(|(topic, _)| subscriptions.iter().any(|s| s.contains(&topic.as_str())))
        .flat_map(|(topic, &count)| (0..count).map(move |p| TopicPartition::new(topic, p)))
        .collect();
    if subscriptions.windows(2).all(|pair| pair[0] == pair[1]) {
        fill_quotas(owned, &all)
    } else {
        let mut eligible: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (m, topics) in subscriptions.iter().enumerate() {
            for &topic in topics {
                eligible.entry(topic).or_default().push(m);
            }
        }
        greedy_then_balance(&eligible, owned, &all)
    }
}

/// The partitions of `all` that no member holds in `held`, in order.
fn unassigned(all: &[TopicPartition], held: &[Vec<TopicPartition>]) -> Vec<TopicPartition> {
    let taken: BTreeSet<&TopicPartition> = held.iter().flatten().collect();
    all.iter().filter(|tp| !taken.contains(tp)).cloned().collect()
}

/// The sticky assignment when every member subscribes to the same topics: with P partitions and M members
/// everyone gets P / M, and P % M members get one more. Members keep what they own up to that quota and
/// only the rest is dealt out, which moves the fewest partitions possible.
fn fill_quotas(mut owned: Vec<Vec<TopicPartition>>, all: &[TopicPartition]) -> Vec<Vec<TopicPartition>> {
    let min = all.len() / owned.len();
    let mut extra = all.len() % owned.len();
    for mine in &mut owned {
        // A member that owns more than the minimum saves one move by keeping one more, whichever member
        // it is, so the extra slots go to such members in id order while they last.
        let quota = if mine.len() > min && extra > 0 {
            extra -= 1;
            min + 1
        } else {
            min
        };
        mine.truncate(quota);
    }
    let mut pool = unassigned(all, &owned).into_iter();
    for mine in &mut owned {
        let missing = min.saturating_sub(mine.len());
        mine.extend(pool.by_ref().take(missing));
    }
    // What is left is exactly one partition for each extra slot not taken while keeping.
    for mine in owned.iter_mut().filter(|mine| mine.len() == min) {
        mine.extend(pool.next());
    }
    owned
}

/// The sticky assignment when subscriptions differ. Members keep everything they validly own, each
/// unowned partition goes to the eligible member with the fewest partitions, and then partitions move
/// one at a time from a member to an eligible member with at least two fewer until none can.
fn greedy_then_balance(
    eligible: &BTreeMap<&str, Vec<usize>>,
    owned: Vec<Vec<TopicPartition>>,
    all: &[TopicPartition],
) -> Vec<Vec<TopicPartition>> {
    let pool = unassigned(all, &owned);
    let mut held: Vec<Held> =
        owned.into_iter().map(|mine| Held { owned: mine.into_iter().collect(), fresh: BTreeSet::new() }).collect();
    for tp in pool {
        let to = lightest(&eligible[tp.topic()], &held);
        held[to].fresh.insert(tp);
    }
    // Every move lowers the sum of the squared counts, so this ends.
    while let Some((from, tp, to)) = find_move(eligible, &held) {
        if !held[from].fresh.remove(&tp) {
            held[from].owned.remove(&tp);
        }
        // Whoever owned a partition before still holds it, so a moved partition is new to its receiver.
        held[to].fresh.insert(tp);
    }
    held.into_iter().map(|mine| mine.owned.into_iter().chain(mine.fresh).collect()).collect()
}

/// A member's partitions while balancing, split by whether it owned them before: moving one it did not
/// own revokes nothing beyond the move that brought it there.
struct Held {
    owned: BTreeSet<TopicPartition>,
    fresh: BTreeSet<TopicPartition>,
}

impl Held {
    fn len(&self) -> usize {
        self.owned.len() + self.fresh.len()
    }
}

/// The candidate with the fewest partitions, the lowest id among equals.
fn lightest(candidates: &[usize], held: &[Held]) -> usize {
    candidates.iter().copied().min_by_key(|&m| held[m].len()).expect("topics enter `eligible` with a subscriber")
}

/// A partition that can go from its member to an eligible member with at least two fewer, as
/// (from, partition, to), or None when the assignment is balanced.
fn find_move(eligible: &BTreeMap<&str, Vec<usize>>, held: &[Held]) -> Option<(usize, TopicPartition, usize)> {
    let targets: Vec<(&str, usize)> = eligible.iter().map(|(&topic, members)| (topic, lightest(members, held))).collect();
    // Taking from the fullest members first evens the group out in fewer moves.
    let mut donors: Vec<usize> = (0..held.len()).collect();
    donors.sort_by_key(|&m| std::cmp::Reverse(held[m].len()));
    for move_owned in [false, true] {
        for &from in &donors {
            let partitions = if move_owned { &held[from].owned } else { &held[from].fresh };
            for &(topic, to) in &targets {
                if held[to].len() + 2 > held[from].len() {
                    continue;
                }
                // Partitions sort by topic first, so the topic's first partition is the next one from its start.
                let first = partitions.range(TopicPartition::new(topic, 0)..).next().filter(|tp| tp.topic() == topic);
                if let Some(tp) = first {
                    return Some((from, tp.clone(), to));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use AssignmentStrategy::{CooperativeSticky, Range, RoundRobin};

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    fn counts(topics: &[(&str, u32)]) -> BTreeMap<String, u32> {
        topics.iter().map(|&(topic, count)| (topic.to_string(), count)).collect()
    }

    /// Runs the assignor for members given as (id, topics, owned).
    fn run(
        strategy: AssignmentStrategy,
        members: &[(u64, Vec<String>, Vec<TopicPartition>)],
        partitions: &BTreeMap<String, u32>,
    ) -> Vec<Vec<TopicPartition>> {
        let inputs: Vec<MemberInput<'_>> =
            members.iter().map(|(id, topics, owned)| MemberInput { id: *id, topics, owned }).collect();
        assign(strategy, &inputs, partitions)
    }

    #[test]
    fn codes_round_trip_and_only_the_sticky_strategy_is_cooperative() {
        for strategy in [Range, RoundRobin, CooperativeSticky] {
            assert_eq!(AssignmentStrategy::from_code(strategy.code()), Some(strategy));
            assert_eq!(strategy.is_cooperative(), strategy == CooperativeSticky);
        }
        assert_eq!(AssignmentStrategy::default(), CooperativeSticky);
        assert_eq!(AssignmentStrategy::from_code(0), None);
        assert_eq!(AssignmentStrategy::from_code(4), None);
    }

    #[test]
    fn range_matches_kafkas_javadoc_example() {
        let both = strings(&["t0", "t1"]);
        let members = [(0, both.clone(), vec![]), (1, both, vec![])];
        let out = run(Range, &members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(out, [vec![tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)], vec![tp("t0", 2), tp("t1", 2)]]);
    }

    #[test]
    fn range_gives_the_first_members_the_extra_partitions_and_ignores_missing_topics() {
        let topics = strings(&["gone", "t0"]);
        // Listed out of id order: the output follows the input order, the ranges follow the ids.
        let members = [(7, topics.clone(), vec![]), (3, topics.clone(), vec![]), (5, topics, vec![])];
        let out = run(Range, &members, &counts(&[("t0", 8)]));
        let range = |from, to| (from..to).map(|p| tp("t0", p)).collect::<Vec<_>>();
        assert_eq!(out, [range(6, 8), range(0, 3), range(3, 6)]);
    }

    #[test]
    fn round_robin_matches_kafkas_javadoc_examples() {
        let both = strings(&["t0", "t1"]);
        let members = [(0, both.clone(), vec![]), (1, both, vec![])];
        let out = run(RoundRobin, &members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(out, [vec![tp("t0", 0), tp("t0", 2), tp("t1", 1)], vec![tp("t0", 1), tp("t1", 0), tp("t1", 2)]]);

        // The unequal subscriptions example: C0 takes t0, C1 t0 and t1, C2 all three.
        let members =
            [(0, strings(&["t0"]), vec![]), (1, strings(&["t0", "t1"]), vec![]), (2, strings(&["t0", "t1", "t2"]), vec![])];
        let out = run(RoundRobin, &members, &counts(&[("t0", 1), ("t1", 2), ("t2", 3)]));
        assert_eq!(out, [vec![tp("t0", 0)], vec![tp("t1", 0)], vec![tp("t1", 1), tp("t2", 0), tp("t2", 1), tp("t2", 2)]]);
    }

    #[test]
    fn sticky_join_moves_only_the_new_members_share() {
        let t0 = strings(&["t0"]);
        let before =
            [(1, t0.clone(), (0..3).map(|p| tp("t0", p)).collect()), (2, t0.clone(), (3..6).map(|p| tp("t0", p)).collect())];
        let partitions = counts(&[("t0", 6)]);
        assert_eq!(run(CooperativeSticky, &before, &partitions), [before[0].2.clone(), before[1].2.clone()], "nothing changed");

        let mut after = before.to_vec();
        after.push((0, t0, vec![]));
        let out = run(CooperativeSticky, &after, &partitions);
        assert_eq!(out, [vec![tp("t0", 0), tp("t0", 1)], vec![tp("t0", 3), tp("t0", 4)], vec![tp("t0", 2), tp("t0", 5)]]);
    }

    #[test]
    fn sticky_leave_moves_only_the_leavers_partitions() {
        let t0 = strings(&["t0"]);
        let owned = |ps: &[u32]| ps.iter().map(|&p| tp("t0", p)).collect::<Vec<_>>();
        let members = [(1, t0.clone(), owned(&[0, 3])), (3, t0, owned(&[2, 5]))];
        // Member 2 held 1 and 4 and left.
        let out = run(CooperativeSticky, &members, &counts(&[("t0", 6)]));
        assert_eq!(out, [owned(&[0, 1, 3]), owned(&[2, 4, 5])]);
    }

    #[test]
    fn sticky_double_claims_go_to_one_member() {
        let t0 = strings(&["t0"]);
        let members = [(2, t0.clone(), vec![tp("t0", 1), tp("t0", 2)]), (1, t0, vec![tp("t0", 1), tp("t0", 0)])];
        let out = run(CooperativeSticky, &members, &counts(&[("t0", 4)]));
        // The lower id keeps the disputed partition; the other keeps its undisputed one and gets the free one.
        assert_eq!(out, [vec![tp("t0", 2), tp("t0", 3)], vec![tp("t0", 0), tp("t0", 1)]]);
    }

    #[test]
    fn sticky_drops_deleted_topics_missing_partitions_and_unsubscribed_topics() {
        let members = [
            (1, strings(&["a", "b", "c"]), vec![tp("a", 0), tp("b", 0), tp("a", 9)]),
            (2, strings(&["a", "b"]), vec![tp("a", 1), tp("b", 1), tp("c", 0)]),
        ];
        // Topic b was deleted, a has two partitions only, and member 2 no longer subscribes to c.
        let out = run(CooperativeSticky, &members, &counts(&[("a", 2), ("c", 1)]));
        assert_eq!(out, [vec![tp("a", 0), tp("c", 0)], vec![tp("a", 1)]]);
    }

    #[test]
    fn sticky_moves_more_than_the_leavers_partitions_only_when_balance_requires_it() {
        let owned = [vec![tp("t1", 0), tp("t2", 0)], vec![tp("t1", 1)], vec![tp("t2", 1)]];
        let partitions = counts(&[("t1", 2), ("t2", 2)]);
        let mut members = vec![
            (1, strings(&["t1", "t2"]), owned[0].clone()),
            (2, strings(&["t1"]), owned[1].clone()),
            (3, strings(&["t2"]), owned[2].clone()),
        ];
        assert_eq!(run(CooperativeSticky, &members, &partitions), owned, "nothing changed");
        // Without member 3 only member 1 can take t2-1, and then it holds two more than member 2, so one
        // of its t1 partitions has to move as well.
        members.pop();
        let out = run(CooperativeSticky, &members, &partitions);
        assert_eq!(out, [vec![tp("t2", 0), tp("t2", 1)], vec![tp("t1", 0), tp("t1", 1)]]);
    }

    #[test]
    fn sticky_balances_with_newly_assigned_partitions_before_revoking_owned_ones() {
        let a_and_b = strings(&["a", "b"]);
        let members = [
            (1, a_and_b, vec![tp("a", 3)]),
            (2, strings(&["a"]), vec![tp("a", 0)]),
            (3, strings(&["b"]), (0..5).map(|p| tp("b", p)).collect()),
        ];
        let out = run(CooperativeSticky, &members, &counts(&[("a", 4), ("b", 7)]));
        // Dealing out a1, a2, b5 and b6 leaves member 1 with four and member 2 with two. Member 1 hands
        // over a1, which it never consumed, and keeps a3; balance then costs member 3 one partition.
        let b = |ps: &[u32]| ps.iter().map(|&p| tp("b", p)).collect::<Vec<_>>();
        assert_eq!(out, [[vec![tp("a", 3)], b(&[0, 5, 6])].concat(), vec![tp("a", 0), tp("a", 1), tp("a", 2)], b(&[1, 2, 3, 4])]);
    }

    #[test]
    fn sticky_balances_by_taking_from_the_fullest_member_first() {
        let a = |ps: std::ops::Range<u32>| ps.map(|p| tp("a", p)).collect::<Vec<_>>();
        let members = [
            (1, strings(&["a"]), a(0..4)),
            (2, strings(&["a"]), a(4..9)),
            (3, strings(&["a"]), a(9..11)),
            (4, strings(&["b"]), vec![]),
        ];
        let out = run(CooperativeSticky, &members, &counts(&[("a", 11), ("b", 1)]));
        // One move from member 2 balances the group; starting with member 1 would have taken two.
        assert_eq!(out, [a(0..4), a(5..9), [vec![tp("a", 4)], a(9..11)].concat(), vec![tp("b", 0)]]);
    }

    /// A random group: partition counts, members in no particular id order, subscriptions (possibly to
    /// topics that do not exist) and previous ownership with stale and duplicate claims.
    #[derive(Debug, Clone)]
    struct Group {
        partitions: BTreeMap<String, u32>,
        members: Vec<(u64, Vec<String>, Vec<TopicPartition>)>,
    }

    impl Group {
        fn with_owned(&self, owned: &[Vec<TopicPartition>]) -> Group {
            let members = self.members.iter().zip(owned).map(|((id, topics, _), owned)| (*id, topics.clone(), owned.clone()));
            Group { partitions: self.partitions.clone(), members: members.collect() }
        }

        fn assign(&self, strategy: AssignmentStrategy) -> Vec<Vec<TopicPartition>> {
            run(strategy, &self.members, &self.partitions)
        }

        /// Each member's subscription restricted to topics that exist.
        fn subscriptions(&self) -> Vec<Vec<&str>> {
            let exists = |topic: &&String| self.partitions.contains_key(topic.as_str());
            self.members.iter().map(|(_, topics, _)| topics.iter().filter(exists).map(String::as_str).collect()).collect()
        }
    }

    /// Topic names by index: those past the group's topic count do not exist.
    fn topic_name(index: usize) -> String {
        if index == 5 { "gone".to_string() } else { format!("t{index}") }
    }

    fn group(always_same_subscriptions: bool) -> impl Strategy<Value = Group> {
        let counts = prop::collection::vec(1u32..20, 1..5);
        let ids = prop::collection::btree_set(0u64..1000, 1..10);
        let masks = prop::collection::vec(0u8..64, 10);
        let claims = prop::collection::vec((0usize..10, 0usize..6, 0u32..24), 0..60);
        (counts, ids, masks, claims, any::<bool>(), any::<usize>()).prop_map(move |(counts, ids, masks, claims, same, rotate)| {
            let partitions = counts.iter().enumerate().map(|(t, &count)| (topic_name(t), count)).collect();
            let mut ids: Vec<u64> = ids.into_iter().collect();
            let n = ids.len();
            ids.rotate_left(rotate % n);
            let members = ids
                .iter()
                .enumerate()
                .map(|(m, &id)| {
                    let mask = if same || always_same_subscriptions { masks[0] } else { masks[m] };
                    let mut topics: Vec<String> = (0..6).filter(|bit| mask & (1 << bit) != 0).map(topic_name).collect();
                    topics.sort();
                    let owned = claims.iter().filter(|c| c.0 % n == m).map(|&(_, t, p)| tp(&topic_name(t), p)).collect();
                    (id, topics, owned)
                })
                .collect();
            Group { partitions, members }
        })
    }

    /// Every partition of a subscribed topic goes to exactly one subscriber, and each list is sorted.
    fn check_valid(group: &Group, out: &[Vec<TopicPartition>]) -> Result<(), TestCaseError> {
        prop_assert_eq!(out.len(), group.members.len());
        let subscriptions = group.subscriptions();
        let mut seen = BTreeSet::new();
        for (mine, topics) in out.iter().zip(&subscriptions) {
            prop_assert!(mine.is_sorted());
            for tp in mine {
                prop_assert!(topics.contains(&tp.topic()), "{tp} went to a member not subscribed to it");
                prop_assert!(tp.partition() < group.partitions[tp.topic()]);
                prop_assert!(seen.insert(tp.clone()), "{tp} assigned twice");
            }
        }
        for (topic, &count) in &group.partitions {
            if subscriptions.iter().any(|s| s.contains(&topic.as_str())) {
                prop_assert!((0..count).all(|p| seen.contains(&tp(topic, p))), "a partition of {topic} is unassigned");
            }
        }
        Ok(())
    }

    fn spread(out: &[Vec<TopicPartition>]) -> usize {
        let sizes = out.iter().map(Vec::len);
        sizes.clone().max().unwrap_or(0) - sizes.min().unwrap_or(0)
    }

    /// Who holds each partition.
    fn owners(group: &Group, out: &[Vec<TopicPartition>]) -> BTreeMap<TopicPartition, u64> {
        group.members.iter().zip(out).flat_map(|((id, _, _), mine)| mine.iter().map(|tp| (tp.clone(), *id))).collect()
    }

    proptest! {
        #[test]
        fn every_strategy_assigns_each_subscribed_partition_once_to_a_subscriber(group in group(false)) {
            for strategy in [Range, RoundRobin, CooperativeSticky] {
                check_valid(&group, &group.assign(strategy))?;
            }
        }

        #[test]
        fn round_robin_and_sticky_balance_equal_subscriptions(group in group(true)) {
            prop_assert!(spread(&group.assign(RoundRobin)) <= 1);
            prop_assert!(spread(&group.assign(CooperativeSticky)) <= 1);
        }

        #[test]
        fn sticky_leaves_no_partition_that_could_go_to_a_member_with_two_fewer(group in group(false)) {
            let out = group.assign(CooperativeSticky);
            let subscriptions = group.subscriptions();
            for mine in &out {
                for tp in mine {
                    for (theirs, topics) in out.iter().zip(&subscriptions) {
                        prop_assert!(!topics.contains(&tp.topic()) || theirs.len() + 2 > mine.len(), "{tp} could move");
                    }
                }
            }
        }

        #[test]
        fn sticky_is_idempotent(group in group(false)) {
            let out = group.assign(CooperativeSticky);
            prop_assert_eq!(group.with_owned(&out).assign(CooperativeSticky), out);
        }

        #[test]
        fn sticky_moves_only_the_leavers_partitions(group in group(true), leaver in any::<usize>()) {
            let out = group.assign(CooperativeSticky);
            let before = owners(&group, &out);
            let mut rest = group.with_owned(&out);
            let (left, _, _) = rest.members.remove(leaver % rest.members.len());
            let out = rest.assign(CooperativeSticky);
            check_valid(&rest, &out)?;
            let after = owners(&rest, &out);
            for (tp, owner) in &before {
                if *owner != left {
                    prop_assert_eq!(after.get(tp), Some(owner), "{} moved", tp);
                }
            }
        }

        #[test]
        fn sticky_join_moves_the_fair_share_to_the_new_member_only(group in group(true), new_id in 0u64..1001) {
            prop_assume!(group.members.iter().all(|(id, _, _)| *id != new_id));
            let out = group.assign(CooperativeSticky);
            let before = owners(&group, &out);
            let mut joined = group.with_owned(&out);
            joined.members.push((new_id, group.members[0].1.clone(), vec![]));
            let out = joined.assign(CooperativeSticky);
            check_valid(&joined, &out)?;
            let after = owners(&joined, &out);
            let moved: Vec<_> = before.iter().filter(|(tp, owner)| after[*tp] != **owner).collect();
            prop_assert_eq!(moved.len(), before.len() / joined.members.len());
            prop_assert!(moved.iter().all(|(tp, _)| after[*tp] == new_id));
        }
    }
}
