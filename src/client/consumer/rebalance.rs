//! The consumer's side of a rebalance: catching up with the group after a change (rejoining
//! when expelled, giving back what moved, starting what it was given), with the listener told
//! of each step.

use std::sync::Arc;
use std::time::Instant;

use super::{Consumer, Processed, Subscription};
use crate::error::{Error, Result};
use crate::group::file::{Membership, View};
use crate::topic::TopicPartition;

impl Consumer {
    /// Catches up with the group: rejoins if expelled, gives up revoked partitions and takes
    /// newly assigned ones that are free, calling the listener for each change.
    pub(super) fn sync_group(&mut self) -> Result<()> {
        let Some(subscription) = &self.subscription else {
            return Ok(());
        };
        if let Some(member) = &subscription.member {
            subscription.group.note_poll(member);
        }
        let (_, change) = subscription.group.change_word();
        if subscription.member.is_some() && change == subscription.seen_change && subscription.complete {
            return Ok(());
        }
        loop {
            let View::Member { generation, assigned, owned } = self.look_at_group()? else {
                self.rejoin()?;
                continue;
            };
            self.revoke_moved(generation, &assigned, owned)?;
            let subscription = self.joined();
            let Some((owned, complete)) = subscription.group.acquire(subscription.member(), generation)? else {
                continue;
            };
            return self.start_owned(owned, complete);
        }
    }

    /// The subscription; only called while there is one (`sync_group` checks first, and no
    /// listener may unsubscribe).
    fn joined(&mut self) -> &mut Subscription {
        self.subscription.as_mut().expect("sync_group runs only while subscribed")
    }

    /// Notes the group's change counter and reads what the group says of this member: its
    /// generation, assignment and owned partitions, or that it is no member (expelled).
    fn look_at_group(&mut self) -> Result<View> {
        let subscription = self.joined();
        subscription.seen_change = subscription.group.change_word().1;
        // Until this pass completes, the next poll must look again even if nothing changes.
        subscription.complete = false;
        match &subscription.member {
            Some(member) => subscription.group.view(member),
            None => Ok(View::Expelled),
        }
    }

    /// Joins the group again after losing membership (and every partition with it).
    fn rejoin(&mut self) -> Result<()> {
        self.lose_membership()?;
        let subscription = self.joined();
        let (group, topics) = (Arc::clone(&subscription.group), subscription.topics.clone());
        let member = self.join(&group, &topics)?;
        let subscription = self.joined();
        subscription.member = Some(member);
        subscription.generation = 0;
        Ok(())
    }

    /// Catches up with `generation`: gives back the `owned` partitions it no longer assigns (all
    /// of them in a new generation of an eager strategy), after `on_revoked`.
    fn revoke_moved(&mut self, generation: u64, assigned: &[TopicPartition], owned: Vec<TopicPartition>) -> Result<()> {
        let eager = !self.config.assignment_strategy.is_cooperative();
        let subscription = self.joined();
        let revoked = to_revoke(eager && generation != subscription.generation, owned, assigned);
        subscription.generation = generation;
        if revoked.is_empty() {
            return Ok(());
        }
        self.before_revoke(&revoked, Processed::AllReturned);
        let subscription = self.joined();
        subscription.group.release(subscription.member(), &revoked)?;
        self.assigned.retain(|a| !revoked.contains(&a.tp));
        Ok(())
    }

    /// Starts reading the `owned` partitions not read yet: what was just taken, and anything an
    /// earlier poll took but failed to start (it is retried until it starts). `complete` says
    /// whether the group gave this member everything it assigns.
    fn start_owned(&mut self, owned: Vec<TopicPartition>, complete: bool) -> Result<()> {
        let reading: Vec<TopicPartition> = self.assigned.iter().map(|a| a.tp.clone()).collect();
        let taken = to_start(owned, &reading);
        self.joined().complete = false;
        let mut clamped = Vec::new();
        let mut started = Vec::with_capacity(taken.len());
        let mut all_started = true;
        let mut failure = None;
        for tp in taken {
            let (assignment, clamp) = match self.start(&tp) {
                Ok(started) => started,
                // Its topic was just deleted (the group is about to take it away), or it
                // cannot be opened now: `complete` stays false, so it is tried again, and
                // the partitions that did start are read and announced meanwhile.
                Err(Error::UnknownTopic(_) | Error::PartitionOutOfRange { .. }) => {
                    all_started = false;
                    continue;
                }
                Err(error) => {
                    all_started = false;
                    failure.get_or_insert(error);
                    continue;
                }
            };
            self.assigned.push(assignment);
            clamped.extend(clamp.map(|(committed, end)| (tp.clone(), committed, end)));
            started.push(tp);
        }
        self.joined().complete = complete && all_started;
        self.next_first = 0;
        if !started.is_empty() {
            self.notify(&started, |listener, consumer, partitions| listener.on_assigned(consumer, partitions));
        }
        for (tp, committed, end) in clamped {
            self.notify(&[tp], |listener, consumer, partitions| {
                listener.on_offset_clamped(consumer, &partitions[0], committed, end)
            });
        }
        failure.map_or(Ok(()), Err)
    }

    /// Commits (with auto-commit, the positions `processed` names) and calls `on_revoked` for
    /// partitions about to be given up.
    pub(super) fn before_revoke(&mut self, partitions: &[TopicPartition], processed: Processed) {
        self.subscription.as_mut().expect("subscribed").revoking = true;
        if self.config.auto_commit.is_some() {
            self.last_auto_commit = Instant::now();
            let _ = self.commit_offsets(&self.auto_commit_offsets(partitions, processed));
        }
        self.notify(partitions, |listener, consumer, partitions| listener.on_revoked(consumer, partitions));
        if let Some(subscription) = &mut self.subscription {
            subscription.revoking = false;
        }
    }

    /// Drops every partition after an expulsion and tells the listener they were lost.
    pub(super) fn lose_membership(&mut self) -> Result<()> {
        let lost = self.assignment();
        self.assigned.clear();
        if let Some(subscription) = self.subscription.as_mut()
            && let Some(member) = subscription.member.take()
        {
            subscription.group.leave(member, &self.catalog.partition_counts())?;
        }
        if !lost.is_empty() {
            self.notify(&lost, |listener, consumer, partitions| listener.on_lost(consumer, partitions));
        }
        Ok(())
    }
}

impl Subscription {
    /// The membership; only asked for after the group was seen to count this consumer as a
    /// member.
    fn member(&self) -> &Membership {
        self.member.as_ref().expect("a member: the group's view said so")
    }
}

/// The owned partitions a member gives back when it catches up: all of them when `revoke_all`
/// (a new generation of an eager strategy), else those no longer `assigned` to it.
fn to_revoke(revoke_all: bool, owned: Vec<TopicPartition>, assigned: &[TopicPartition]) -> Vec<TopicPartition> {
    if revoke_all { owned } else { owned.into_iter().filter(|tp| !assigned.contains(tp)).collect() }
}

/// The owned partitions a member does not read yet.
fn to_start(owned: Vec<TopicPartition>, reading: &[TopicPartition]) -> Vec<TopicPartition> {
    owned.into_iter().filter(|tp| !reading.contains(tp)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tps(partitions: &[u32]) -> Vec<TopicPartition> {
        partitions.iter().map(|&p| TopicPartition::new("t", p)).collect()
    }

    #[test]
    fn only_what_moved_is_revoked_unless_everything_is() {
        assert_eq!(to_revoke(false, tps(&[0, 1, 2]), &tps(&[1, 3])), tps(&[0, 2]));
        assert_eq!(to_revoke(true, tps(&[0, 1, 2]), &tps(&[1, 3])), tps(&[0, 1, 2]));
        assert_eq!(to_revoke(false, tps(&[1]), &tps(&[1])), tps(&[]));
    }

    #[test]
    fn only_owned_partitions_not_read_yet_are_started() {
        assert_eq!(to_start(tps(&[0, 1, 2]), &tps(&[1])), tps(&[0, 2]));
        assert_eq!(to_start(tps(&[]), &tps(&[1])), tps(&[]));
    }
}
