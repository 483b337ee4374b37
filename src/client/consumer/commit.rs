//! Committing: the group's offsets for what this consumer processed, by hand or automatically,
//! fenced by the group's generation when subscribed.

use std::time::Instant;

use super::{Consumer, Processed, Subscription};
use crate::error::{Error, Result};
use crate::group::offsets;
use crate::options::validate_topic_name;
use crate::topic::TopicPartition;

impl Consumer {
    /// Commits the position of every assigned partition: everything `poll` returned so far
    /// counts as processed. See `commit_offsets`.
    ///
    /// # Errors
    /// As [`commit_offsets`](Self::commit_offsets).
    pub fn commit(&mut self) -> Result<()> {
        let offsets: Vec<(TopicPartition, u64)> =
            self.assigned.iter().filter_map(|a| a.position.map(|p| (a.tp.clone(), p))).collect();
        self.commit_offsets(&offsets)
    }

    /// Commits `offsets` (each the next offset to read) for the group, all at once or not at
    /// all. A subscribed consumer may commit only partitions it owns, and only while it is a
    /// member of the group's current generation: otherwise it fails with
    /// `Error::CommitFailed` (poll, then retry) and commits nothing.
    ///
    /// # Errors
    /// - [`Error::CommitFailed`]: this member was expelled, or the group moved to a generation
    ///   it has not joined yet; poll and commit again.
    /// - [`Error::NotAssigned`]: a subscribed consumer named a partition it does not own.
    /// - [`Error::CommitTooLarge`]: more partitions than one commit holds; commit fewer at once.
    /// - [`Error::InvalidTopicName`], and the file errors of the group's offset log
    ///   ([`Error::Io`], [`Error::DiskFull`], [`Error::Corrupt`], [`Error::Poisoned`] when an
    ///   earlier fsync of it failed).
    pub fn commit_offsets(&mut self, offsets: &[(TopicPartition, u64)]) -> Result<()> {
        for (tp, _) in offsets {
            validate_topic_name(tp.topic())?;
        }
        if let Some((tp, _)) =
            offsets.iter().find(|(tp, _)| self.subscription.is_some() && !self.assigned.iter().any(|a| &a.tp == tp))
        {
            return Err(Error::NotAssigned(tp.clone()));
        }
        let store = &self.offsets;
        let end = match &self.subscription {
            None if offsets.is_empty() => return Ok(()),
            None => {
                // The first commit creates the group's directory and offset log.
                self.catalog.group(&self.config.group)?;
                store.commit(offsets, 0, 0, |tp| self.catalog.topic_id(tp.topic()))?
            }
            Some(Subscription { group, member: Some(member), generation, revoking, .. }) => {
                let partitions: Vec<TopicPartition> = offsets.iter().map(|(tp, _)| tp.clone()).collect();
                let revoking = revoking.then_some(partitions.as_slice());
                group.fenced(member.key(), *generation, revoking, || {
                    store.commit(offsets, member.id, *generation, |tp| self.catalog.topic_id(tp.topic()))
                })?
            }
            Some(Subscription { member: None, .. }) => {
                return Err(Error::CommitFailed {
                    group: self.config.group.clone(),
                    reason: "this consumer was removed from the group; poll to rejoin".into(),
                });
            }
        };
        store.make_durable(end, self.config.commit_durability)
    }

    /// The group's committed offset for `partition` (the next offset to read), from any
    /// thread or process; `None` if none was committed.
    ///
    /// # Errors
    /// [`Error::InvalidTopicName`], or the [file errors](crate#errors) of the group's offset
    /// log.
    pub fn committed(&self, partition: &TopicPartition) -> Result<Option<u64>> {
        validate_topic_name(partition.topic())?;
        let entry = self.offsets.committed(partition)?;
        Ok(offsets::applicable(entry, self.catalog.topic_id(partition.topic())))
    }

    /// The group's committed offsets of `partitions`, in their order, all as of one moment:
    /// a commit of several partitions is seen whole or not at all.
    ///
    /// ```
    /// # fn main() -> Result<(), streamlog::Error> {
    /// # let dir = std::env::temp_dir().join(format!("streamlog-doc-committed-{}", std::process::id()));
    /// use streamlog::{ConsumerConfig, Queue};
    /// let queue = Queue::open(&dir)?;
    /// queue.create_topic("orders", 3)?;
    /// let mut consumer = queue.consumer(ConsumerConfig::new("billing"))?;
    /// let partitions = queue.partitions("orders")?;
    /// consumer.assign(&partitions)?;
    /// consumer.commit_offsets(&[(partitions[0].clone(), 5), (partitions[2].clone(), 7)])?;
    /// let committed: Vec<Option<u64>> = consumer.committed_offsets(&partitions)?.into_iter().map(|(_, o)| o).collect();
    /// assert_eq!(committed, [Some(5), None, Some(7)]);
    /// # drop((consumer, queue)); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`committed`](Self::committed).
    pub fn committed_offsets(&self, partitions: &[TopicPartition]) -> Result<Vec<(TopicPartition, Option<u64>)>> {
        for partition in partitions {
            validate_topic_name(partition.topic())?;
        }
        let entries = self.offsets.committed_many(partitions)?;
        Ok(partitions
            .iter()
            .zip(entries)
            .map(|(partition, entry)| (partition.clone(), offsets::applicable(entry, self.catalog.topic_id(partition.topic()))))
            .collect())
    }

    /// The offsets an automatic commit of `partitions` stores.
    pub(super) fn auto_commit_offsets(&self, partitions: &[TopicPartition], processed: Processed) -> Vec<(TopicPartition, u64)> {
        self.assigned
            .iter()
            .filter(|a| partitions.contains(&a.tp))
            .filter_map(|a| {
                match processed {
                    Processed::AllReturned => a.position,
                    Processed::BeforeLastPoll => a.processed,
                }
                .map(|p| (a.tp.clone(), p))
            })
            .collect()
    }

    /// Commits the current positions, ignoring a refusal (the group moved on; the next owner
    /// starts from the last successful commit, so at worst records are delivered again).
    pub(super) fn auto_commit_now(&mut self) {
        if self.config.auto_commit.is_some() {
            self.last_auto_commit = Instant::now();
            let _ = self.commit();
        }
    }
}
