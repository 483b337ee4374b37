//! Joining and leaving the group: subscribing (to topics or a pattern), unsubscribing and
//! closing, with the automatic commit and the listener's calls that go with giving partitions up.

use super::{Consumer, Processed, RebalanceListener, Subscription};
use crate::error::{Error, Result};
use crate::group::file::{Group, JoinRequest, Membership};
use crate::options::validate_topic_name;

impl Consumer {
    /// Joins the consumer group and reads the partitions of `topics` that the group gives this
    /// member. Topics may be created later; the group rebalances when they appear. Calling it
    /// again replaces the subscription.
    ///
    /// # Errors
    /// - [`Error::IllegalState`]: partitions were assigned by hand, or this is a rebalance
    ///   listener.
    /// - [`Error::InvalidTopicName`].
    /// - [`Error::GroupFull`]: the group has [`MAX_GROUP_MEMBERS`](crate::MAX_GROUP_MEMBERS)
    ///   live members.
    /// - [`Error::StrategyMismatch`]: the group's members use another assignment strategy.
    /// - [`Error::GroupStateTooLarge`], and the [file errors](crate#errors) of the group's files.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        self.not_in_listener()?;
        self.subscribe_to(topics, None)
    }

    /// As `subscribe`, to every topic whose whole name matches the regular expression
    /// `pattern`, now or later: topics created (or deleted) afterwards join (or leave) the
    /// subscription, in this process and every other.
    ///
    /// ```
    /// # fn main() -> Result<(), streamlog::Error> {
    /// # let dir = std::env::temp_dir().join(format!("streamlog-doc-pattern-{}", std::process::id()));
    /// use std::time::Duration;
    /// use streamlog::{ConsumerConfig, OffsetReset, Queue, Record};
    /// let queue = Queue::open(&dir)?;
    /// let mut consumer = queue.consumer(ConsumerConfig::new("audit").auto_offset_reset(OffsetReset::Earliest))?;
    /// consumer.subscribe_pattern("orders-.*")?;
    /// queue.create_topic("orders-eu", 1)?;
    /// queue.create_topic("payments", 1)?;
    /// queue.producer().send("orders-eu", Record::new(b"one"))?;
    /// queue.producer().send("payments", Record::new(b"two"))?;
    /// let records = consumer.poll(Duration::from_secs(5))?;
    /// assert_eq!(records.iter().map(|r| r.topic()).collect::<Vec<_>>(), ["orders-eu"]);
    /// # drop((consumer, queue)); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidPattern`] when `pattern` is not a regular expression, and as
    /// [`subscribe`](Self::subscribe).
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        self.not_in_listener()?;
        let invalid = |e: regex::Error| Error::InvalidPattern { pattern: pattern.to_owned(), reason: e.to_string() };
        // Checked alone first: `a)|(b` is no pattern, but would be one inside the anchors.
        regex::Regex::new(pattern).map_err(invalid)?;
        let anchored = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(invalid)?;
        let topics = self.catalog.topic_names()?;
        let matching: Vec<&str> = topics.iter().map(String::as_str).filter(|t| anchored.is_match(t)).collect();
        self.subscribe_to(&matching, Some(anchored))
    }

    pub(super) fn subscribe_to(&mut self, topics: &[&str], pattern: Option<regex::Regex>) -> Result<()> {
        if self.subscription.is_none() && !self.assigned.is_empty() {
            return Err(Error::IllegalState("subscribe cannot be used after assign; assign an empty list first"));
        }
        let mut topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        for topic in &topics {
            validate_topic_name(topic)?;
        }
        self.catalog.start_keeper();
        let counts = self.catalog.partition_counts();
        if let Some(subscription) = &mut self.subscription {
            if let Some(member) = &subscription.member {
                // An expelled member learns so in `poll` and rejoins with the new topics.
                subscription.group.resubscribe(member, &topics, &counts)?;
            }
            subscription.topics = topics;
            subscription.pattern = pattern;
            return Ok(());
        }
        let group = self.catalog.group(&self.config.group)?;
        let member = self.join(&group, &topics)?;
        let (_, seen_change) = group.change_word();
        self.subscription = Some(Subscription {
            group,
            topics,
            pattern,
            member: Some(member),
            generation: 0,
            seen_change: seen_change.wrapping_sub(1),
            complete: false,
            revoking: false,
            listener: None,
        });
        Ok(())
    }

    /// As `subscribe`, with a listener told of every change of the partitions this consumer owns.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub fn subscribe_with(&mut self, topics: &[&str], listener: impl RebalanceListener + 'static) -> Result<()> {
        self.subscribe(topics)?;
        if let Some(subscription) = &mut self.subscription {
            subscription.listener = Some(Box::new(listener));
        }
        Ok(())
    }

    /// Leaves the group (revoking every partition, after an automatic commit of every position
    /// if enabled); the consumer can then `assign` or `subscribe` again.
    ///
    /// # Errors
    /// [`Error::IllegalState`] inside a rebalance listener, and the [file errors](crate#errors) of the group file.
    pub fn unsubscribe(&mut self) -> Result<()> {
        self.not_in_listener()?;
        self.leave_group(Processed::AllReturned)
    }

    /// A subscribed consumer, with auto-commit, commits every position (everything `poll`
    /// returned counts as processed, as with Kafka's `close`), then leaves the group at once,
    /// so its partitions move to the other members without waiting for a timeout.
    ///
    /// Dropping the consumer without `close` leaves too, but commits less, since a drop may be
    /// an early return (`?`) or a panic with the last poll's records unprocessed: with
    /// auto-commit it commits what the next poll would have, the positions at which the last
    /// poll began (everything every earlier poll returned), and while the thread is panicking
    /// it commits nothing and calls no rebalance listener. A consumer of assigned partitions
    /// commits only in `poll` (and when told to), never when it is closed or dropped.
    ///
    /// # Errors
    /// the [file errors](crate#errors) of the group file, from leaving the group. A refused automatic commit is not an
    /// error (the next owner reads those records again).
    pub fn close(mut self) -> Result<()> {
        self.leave_group(Processed::AllReturned)
    }

    pub(super) fn join(&self, group: &Group, topics: &[String]) -> Result<Membership> {
        let request = JoinRequest {
            client_id: &self.config.client_id,
            topics,
            strategy: self.config.assignment_strategy,
            session_timeout: self.config.session_timeout,
            max_poll_interval: self.config.max_poll_interval,
        };
        group.join(&request, &self.catalog.partition_counts())
    }

    /// Gives up every partition; a subscribed consumer leaves its group, committing first with
    /// auto-commit the positions `processed` names. A panicking thread commits nothing.
    pub(super) fn leave_group(&mut self, processed: Processed) -> Result<()> {
        let owned = self.assignment();
        if std::thread::panicking() {
            // A panic leaves the application's state unknown (it may have come from processing
            // any record this consumer returned), so nothing counts as processed; and a listener
            // that panicked in turn would abort the process. The next owner starts from the
            // last commit: records are read again, never skipped.
        } else if let Some(subscription) = &self.subscription {
            let valid = subscription.member.as_ref().is_some_and(|m| subscription.group.is_member(m));
            if valid && !owned.is_empty() {
                self.before_revoke(&owned, processed);
            } else if !owned.is_empty() {
                self.notify(&owned, |listener, consumer, partitions| listener.on_lost(consumer, partitions));
            }
        }
        self.assigned.clear();
        let Some(mut subscription) = self.subscription.take() else {
            return Ok(());
        };
        match subscription.member.take() {
            Some(member) => subscription.group.leave(member, &self.catalog.partition_counts()),
            None => Ok(()),
        }
    }
}
