//! streamlog puts Kafka's model inside an application: topics of partitioned, append-only
//! logs in a directory, produced to and consumed from by threads of one program and by separate
//! processes sharing the directory. No broker, no network hop; reads are zero-copy from the
//! mapped log.
//!
//! This page is a tour in nine parts, each with an example that runs as a test:
//!
//! 1. [Hello, world!](#hello-world)
//! 2. [Topics and partitions](#topics-and-partitions)
//! 3. [Producing and durability](#producing-and-durability)
//! 4. [Consuming and seeking](#consuming-and-seeking)
//! 5. [Groups and commits](#groups-and-commits)
//! 6. [Retention and compaction](#retention-and-compaction)
//! 7. [Many processes](#many-processes)
//! 8. [Errors](#errors)
//! 9. [Limits](#limits)
//!
//! # Hello, world!
//!
//! [`Queue::open`] opens (or creates) a queue directory. A [`Producer`] appends [`Record`]s to a
//! topic and a [`Consumer`] reads them back with [`poll`](Consumer::poll), which waits up to its
//! timeout for records to arrive:
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-hello-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use std::time::Duration;
//! use streamlog::{ConsumerConfig, OffsetReset, Queue, Record, TopicPartition};
//!
//! let queue = Queue::open(&dir)?;
//! queue.create_topic("orders", 4)?;
//! let producer = queue.producer();
//! let sent = producer.send("orders", Record::new(b"42 EUR").key(b"customer-7").header("trace", b"x"))?;
//!
//! let config = ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest);
//! let mut consumer = queue.consumer(config)?;
//! consumer.assign(&[TopicPartition::new("orders", sent.partition())])?;
//! let records = consumer.poll(Duration::from_millis(100))?;
//! let record = records.iter().next().expect("the record just sent");
//! assert_eq!(record.offset(), sent.offset());
//! assert_eq!((record.key(), record.value()), (Some(&b"customer-7"[..]), &b"42 EUR"[..]));
//! # drop((records, consumer, producer, queue));
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! A [`Queue`] is cheap to clone, and so is a [`Producer`], which may be shared between
//! threads. A [`Consumer`] belongs to one thread at a time.
//!
//! # Topics and partitions
//!
//! A topic is a set of partitions, each an append-only log whose records are numbered from 0
//! by offset, densely; an offset is never reused or renumbered. [`Queue::create_topic`] takes
//! a partition count; [`Queue::create_topic_with`] takes a [`TopicConfig`] with the rest of the
//! settings, which are stored with the topic. A topic's name is also a directory name: 1 to
//! [`MAX_TOPIC_NAME_BYTES`] bytes of `[A-Za-z0-9._-]`.
//!
//! A producer chooses the partition of each record:
//!
//! - a record with a key goes to [`partition_for_key`], Kafka's default partitioner (murmur2 of
//!   the key modulo the partition count), so all records of one key stay in one partition, in
//!   order, and land where a Kafka producer would put them;
//! - a record without a key goes to the next partition in round-robin order;
//! - [`Record::partition`] chooses the partition outright.
//!
//! Order is kept within a partition, not across partitions.
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-topics-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use std::collections::BTreeSet;
//! use streamlog::{Queue, Record, TopicConfig, partition_for_key};
//!
//! let queue = Queue::open(&dir)?;
//! queue.create_topic_with("orders", TopicConfig::new(4).max_record_bytes(64 << 10))?;
//! let producer = queue.producer();
//!
//! let keyed = producer.send("orders", Record::new(b"42 EUR").key(b"customer-7"))?;
//! assert_eq!(keyed.partition(), partition_for_key(b"customer-7", 4)?);
//!
//! let mut spread = BTreeSet::new();
//! for _ in 0..4 {
//!     spread.insert(producer.send("orders", Record::new(b"no key"))?.partition());
//! }
//! assert_eq!(spread, BTreeSet::from([0, 1, 2, 3]));
//!
//! let pinned = producer.send("orders", Record::new(b"to 3").partition(3))?;
//! assert_eq!(pinned.partition(), 3);
//! # drop(producer); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! A topic can be changed while it is in use, from any process:
//!
//! - [`Queue::alter_topic`] changes its settings (all but the partition count);
//! - [`Queue::add_partitions`] grows it to a new partition count (partitions are never removed).
//!   A key then maps to another partition than before, as in Kafka, and consumer groups
//!   rebalance onto the new partitions;
//! - [`Queue::delete_topic`] deletes it with its records; producers and consumers using it get
//!   [`Error::UnknownTopic`] on their next call. A topic created again under the same name is a
//!   new log, and offsets committed for the old one do not apply to it.
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-admin-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use streamlog::{Queue, TopicConfig};
//!
//! let queue = Queue::open(&dir)?;
//! queue.create_topic("orders", 4)?;
//! queue.add_partitions("orders", 8)?;
//! assert_eq!(queue.partition_count("orders")?, 8);
//!
//! queue.alter_topic("orders", |config| config.retention_ms(3_600_000))?;
//! assert_eq!(queue.topic_config("orders")?.get_retention_ms(), 3_600_000);
//!
//! queue.delete_topic("orders")?;
//! assert!(queue.topics()?.is_empty());
//! # drop(queue); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! # Producing and durability
//!
//! [`Producer::send`] appends one record and returns its [`RecordMetadata`]: the partition, the
//! offset and the timestamp it got (the send time, unless [`Record::timestamp`] set one).
//! [`Producer::send_batch`] appends many records in one batch per partition (up to 1 MiB each),
//! which costs less per record than a `send` each; it returns the metadata in the order the
//! records were given. Records sent from one thread to one partition keep their order.
//!
//! When `send` returns, the record is in the log: every consumer, in any process, can read it.
//! Whether it is also on stable storage is the [`Durability`] set with [`ProducerConfig`]:
//!
//! - [`Durability::Buffered`] (the default): `send` returns once the record is in the shared
//!   file, in the page cache. It survives the crash of any process, even a `SIGKILL` in the
//!   middle of a send, but not a power cut or a kernel crash.
//! - [`Durability::Interval`]: as `Buffered`, and a background thread fsyncs at least this
//!   often, so a power cut loses at most about that much. [`Producer::flush`] syncs at once.
//! - [`Durability::Sync`]: `send` returns only after an fsync that covers the record, so the
//!   record survives a power cut. Concurrent senders, in any process, share fsyncs.
//!
//! A power cut can lose the records of a partition's tail that were not synced; the partition
//! is recovered when the queue is next opened, and what remains is whole, with dense offsets.
//! An fsync only helps if the disk keeps what it acknowledged. A failed fsync makes the
//! partition refuse later sends with [`Error::Poisoned`] rather than pretend; reopening the queue
//! in every process recovers it. README.md gives the details and how they are tested.
//!
//! [`ProducerConfig::idempotent`] makes a producer stamp its batches with a producer id, an
//! epoch and sequence numbers, as Kafka's idempotent producer does: a partition appends a
//! producer's batch only in its turn, and a repeat of its last batch gets the first one's
//! offsets instead of a second copy.
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-produce-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use streamlog::{Durability, ProducerConfig, Queue, Record};
//!
//! let queue = Queue::open(&dir)?;
//! queue.create_topic("payments", 1)?;
//! let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
//!
//! // On stable storage once `send` returns.
//! let sent = producer.send("payments", Record::new(b"7 EUR").timestamp(1_700_000_000_000))?;
//! assert_eq!((sent.partition(), sent.offset(), sent.timestamp()), (0, 0, 1_700_000_000_000));
//!
//! let values: [&[u8]; 3] = [b"1 EUR", b"2 EUR", b"3 EUR"];
//! let sent = producer.send_batch("payments", values.map(Record::new))?;
//! assert_eq!(sent.iter().map(|m| m.offset()).collect::<Vec<_>>(), [1, 2, 3]);
//! # drop((producer, queue)); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! # Consuming and seeking
//!
//! A [`Consumer`] is made from a [`ConsumerConfig`], which names its consumer group (the group
//! its offsets are committed for; see the next part) and how it reads. It reads either the
//! partitions given to it with [`Consumer::assign`], or those its group gives it after
//! [`Consumer::subscribe`].
//!
//! Each assigned partition has a position, the offset of the next record
//! [`poll`](Consumer::poll) returns ([`Consumer::position`]). A new assignment starts at the
//! group's committed offset. Without one, or if the position lies outside the log,
//! [`OffsetReset`] decides: [`Earliest`](OffsetReset::Earliest) starts at the first record still
//! in the log, [`Latest`](OffsetReset::Latest) (the default) at the end, and
//! [`None`](OffsetReset::None) fails with [`Error::NoOffset`] or [`Error::OffsetOutOfRange`]
//! until the application seeks. [`Consumer::seek`], [`Consumer::seek_to_beginning`] and
//! [`Consumer::seek_to_end`] move the position; [`Queue::offset_for_time`] finds the first
//! offset at or after a timestamp, and [`Queue::offsets`] the log's first and next offset.
//!
//! `poll` returns [`Records`], at most [`max_poll_records`](ConsumerConfig::max_poll_records) of
//! them. Each [`ConsumerRecord`] points into the mapped log instead of holding a copy. A record
//! taken out of its `Records` (by [`into_iter`](Records::into_iter) or `clone`) keeps its part
//! of the log mapped, so it may be stored or sent to another thread. When retention deleted
//! records before the consumer read them and the reset policy moved it past them,
//! [`Records::missed`] says how many it skipped
//! ([Retention and compaction](#retention-and-compaction) shows it).
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-consume-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use std::time::Duration;
//! use streamlog::{ConsumerConfig, ConsumerRecord, OffsetReset, Queue, Record, TopicPartition};
//!
//! let queue = Queue::open(&dir)?;
//! queue.create_topic("prices", 1)?;
//! let producer = queue.producer();
//! for (value, timestamp_ms) in [(b"1.00", 1_000), (b"1.01", 2_000), (b"0.99", 3_000)] {
//!     producer.send("prices", Record::new(value).header("currency", b"EUR").timestamp(timestamp_ms))?;
//! }
//!
//! let config = ConsumerConfig::new("charts").auto_offset_reset(OffsetReset::Earliest).auto_commit(None);
//! let mut consumer = queue.consumer(config)?;
//! let tp = TopicPartition::new("prices", 0);
//! consumer.assign(&[tp.clone()])?;
//! assert_eq!(consumer.position(&tp)?, 0);
//! let records = consumer.poll(Duration::from_millis(100))?;
//! assert_eq!(records.len(), 3);
//! let first = records.iter().next().expect("three records");
//! assert_eq!(first.header("currency"), Some(&b"EUR"[..]));
//! assert_eq!(first.headers().collect::<Vec<_>>(), [("currency", &b"EUR"[..])]);
//! assert_eq!(consumer.position(&tp)?, 3);
//!
//! // Read again from the first record at or after 2,000 ms.
//! let offset = queue.offset_for_time(&tp, 2_000)?.expect("a record that new");
//! consumer.seek(&tp, offset)?;
//! let records = consumer.poll(Duration::from_millis(100))?;
//! assert_eq!(records.iter().map(|r| r.offset()).collect::<Vec<_>>(), [1, 2]);
//!
//! // A record taken out keeps its part of the log mapped, in any thread.
//! let kept: ConsumerRecord = records.into_iter().next().expect("two records");
//! let value = std::thread::spawn(move || kept.value().to_vec()).join().unwrap();
//! assert_eq!(value, b"1.01");
//! # drop((consumer, producer, queue)); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! # Groups and commits
//!
//! Consumers that [`subscribe`](Consumer::subscribe) to topics with the same group name share
//! the topics' partitions, in whichever threads and processes they live: each partition has at
//! most one owner at a time, and each group reads every record independently of other groups.
//! There is no coordinator; the group's state is a shared file in the queue directory.
//! [`Consumer::subscribe_pattern`] subscribes to every topic whose name matches a regular
//! expression, including topics created later.
//!
//! The group rebalances whenever a member joins, leaves or dies, or a subscribed topic appears,
//! grows or goes; members take part inside `poll`. [`AssignmentStrategy`] chooses how
//! partitions are divided; with the default,
//! [`CooperativeSticky`](AssignmentStrategy::CooperativeSticky), only the partitions that move
//! are given up. A [`RebalanceListener`] given to [`Consumer::subscribe_with`] is told
//! of every change on the consumer's own thread: [`on_revoked`](RebalanceListener::on_revoked)
//! is the last chance to commit a partition before another member reads it.
//!
//! A commit stores, for the group, the next offset to read in a partition.
//! [`Consumer::commit`] commits every position (everything `poll` returned counts as
//! processed); [`Consumer::commit_offsets`] commits chosen offsets, all at once or not at all;
//! [`Consumer::committed`] reads them back. A member that was expelled, or has not yet caught up
//! with a rebalance, is refused with [`Error::CommitFailed`]: it polls, then commits again.
//! By default [`auto_commit`](ConsumerConfig::auto_commit) commits, every 5 s, what earlier polls
//! returned, and commits every position before partitions are revoked. With it,
//! [`Consumer::close`] commits every position before leaving the group; dropping the consumer
//! leaves too, but commits only what the polls before the last one returned, because a drop may
//! be an early return or a panic. Delivery is at least once: a member that dies between
//! processing records and committing them leaves them to be read again by the next owner.
//!
//! Commits are as durable as [`commit_durability`](ConsumerConfig::commit_durability) says,
//! `Buffered` by default. A commit that survives a power cut which the records it counts did
//! not is clamped to the end of the log when its partition is next assigned, and
//! [`on_offset_clamped`](RebalanceListener::on_offset_clamped) is told; if producers have
//! refilled those offsets by then, the new records there are skipped.
//!
//! A member whose process dies is expelled within about 100 ms; one whose process is alive but
//! stopped, after its [`session_timeout`](ConsumerConfig::session_timeout) (10 s by default); and
//! one that does not poll for its [`max_poll_interval`](ConsumerConfig::max_poll_interval) (5 min
//! by default) leaves the group. [`Queue::describe_group`] reports a group's members, what each owns, and per partition the
//! committed offset, the end of the log and the lag between them.
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-groups-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use std::time::Duration;
//! use streamlog::{Consumer, ConsumerConfig, OffsetReset, Queue, RebalanceListener, Record, TopicPartition};
//!
//! /// Commits what was processed before a partition moves to another member.
//! struct CommitOnRevoke;
//!
//! impl RebalanceListener for CommitOnRevoke {
//!     fn on_revoked(&mut self, consumer: &mut Consumer, _partitions: &[TopicPartition]) {
//!         if let Err(error) = consumer.commit() {
//!             eprintln!("the commit before a revoke failed: {error}");
//!         }
//!     }
//! }
//!
//! let queue = Queue::open(&dir)?;
//! queue.create_topic("orders", 2)?;
//! let producer = queue.producer();
//! for i in 0..10 {
//!     producer.send("orders", Record::new(b"an order").partition(i % 2))?;
//! }
//!
//! let config = ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest).auto_commit(None);
//! let mut a = queue.consumer(config.clone().client_id("a"))?;
//! let mut b = queue.consumer(config.client_id("b"))?;
//! a.subscribe_with(&["orders"], CommitOnRevoke)?;
//! b.subscribe(&["orders"])?;
//!
//! // Both members poll until the group has settled and every record is read.
//! let mut read = 0;
//! # let give_up = std::time::Instant::now() + Duration::from_secs(20);
//! while read < 10 || a.assignment().len() != 1 || b.assignment().len() != 1 {
//! #   assert!(std::time::Instant::now() < give_up, "the group did not settle");
//!     for member in [&mut a, &mut b] {
//!         read += member.poll(Duration::from_millis(10))?.len();
//!         member.commit()?;
//!     }
//! }
//!
//! let group = queue.describe_group("billing")?;
//! assert_eq!(group.members.len(), 2);
//! assert!(group.partitions.iter().all(|p| p.committed == Some(5) && p.lag == Some(0)));
//! a.close()?;
//! b.close()?;
//! # drop((producer, queue)); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! # Transactions
//!
//! A [`TransactionalProducer`] ([`Queue::transactional_producer`]) sends records to any topics
//! and partitions between `begin_transaction` and `commit_transaction`; a consumer with
//! [`IsolationLevel::ReadCommitted`] sees them all once the transaction commits, and never if it
//! aborts, is fenced by a newer instance of its transactional id ([`Error::ProducerFenced`]),
//! or dies with its process. A consume-transform-produce step is exactly once when the
//! transaction also carries the input's offsets
//! ([`send_offsets_to_transaction`](TransactionalProducer::send_offsets_to_transaction) with
//! [`Consumer::group_metadata`]): they become the group's committed offsets with the commit, and
//! a member expelled since cannot commit them. [`ProducerConfig::idempotent`] gives the id and
//! sequence numbers alone: a repeated batch is not appended twice. The example is on
//! [`TransactionalProducer`]; `examples/exactly_once.rs` runs a transform stage in three
//! processes and kills one.
//!
//! # Retention and compaction
//!
//! Each topic's [`CleanupPolicy`] says what happens to old records, as in Kafka. With
//! [`Delete`](CleanupPolicy::Delete), the default, whole segments are deleted once their newest
//! record is older than [`retention_ms`](TopicConfig::retention_ms) (7 days by default), and the
//! oldest segments for as long as the partition would still hold
//! [`retention_bytes`](TopicConfig::retention_bytes) of record batches without them (no limit by
//! default). With [`Compact`](CleanupPolicy::Compact), records whose key has a newer record are
//! removed; with [`DeleteAndCompact`](CleanupPolicy::DeleteAndCompact), both. Only sealed segments are ever
//! deleted or compacted, never the active one; a new segment starts once the active one holds
//! [`segment_bytes`](TopicConfig::segment_bytes) or is [`segment_ms`](TopicConfig::segment_ms)
//! old. Offsets never change: a read from an offset that compaction removed starts at the next
//! record left.
//!
//! A background thread in one of the processes that have the queue open applies retention and
//! compaction every 30 s ([`QueueOptions::maintenance_interval`]), and [`Queue::run_maintenance`]
//! does it at once. A consumer whose position falls below the new start of the log moves on
//! per its [`OffsetReset`], and the next poll reports the records it skipped in
//! [`Records::missed`].
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-retention-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use std::time::Duration;
//! use streamlog::{ConsumerConfig, OffsetReset, Queue, Record, TopicConfig, TopicPartition};
//!
//! let queue = Queue::open(&dir)?;
//! // Tiny segments, so that a few records fill several; keep records for an hour.
//! queue.create_topic_with("events", TopicConfig::new(1).segment_bytes(256).retention_ms(3_600_000))?;
//! let producer = queue.producer();
//! for _ in 0..10 {
//!     producer.send("events", Record::new(&[0; 64]).timestamp(1_000))?; // from 1970
//! }
//! producer.send("events", Record::new(b"now"))?;
//!
//! assert!(queue.run_maintenance()? > 0);
//! let tp = TopicPartition::new("events", 0);
//! let (start, end) = queue.offsets(&tp)?;
//! assert!(start > 0 && end == 11);
//!
//! let config = ConsumerConfig::new("late").auto_offset_reset(OffsetReset::Earliest).auto_commit(None);
//! let mut consumer = queue.consumer(config)?;
//! consumer.assign(&[tp.clone()])?;
//! consumer.seek(&tp, 0)?;
//! let records = consumer.poll(Duration::from_millis(100))?;
//! assert_eq!(records.missed(), [(tp.clone(), start)]);
//! assert_eq!(records.iter().next().map(|r| r.offset()), Some(start));
//! # drop((records, consumer, producer, queue)); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! Compaction keeps the newest record of every key. A tombstone, [`Record::tombstone`], is a
//! key without a value ([`ConsumerRecord::is_tombstone`]): it deletes its key, and is itself
//! removed once it is older than [`delete_retention_ms`](TopicConfig::delete_retention_ms) (a day
//! by default), so that consumers have time to see it. Records without a key are never
//! compacted away. [`min_compaction_lag_ms`](TopicConfig::min_compaction_lag_ms) protects recent
//! records, and [`min_cleanable_dirty_ratio`](TopicConfig::min_cleanable_dirty_ratio) says how
//! much of a log must be new since the last compaction before the next one starts.
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-compaction-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use std::time::Duration;
//! use streamlog::{CleanupPolicy, ConsumerConfig, OffsetReset, Queue, Record, TopicConfig, TopicPartition};
//!
//! let queue = Queue::open(&dir)?;
//! let config = TopicConfig::new(1).segment_bytes(256).cleanup_policy(CleanupPolicy::Compact).min_cleanable_dirty_ratio(0.0);
//! queue.create_topic_with("emails", config)?;
//! let producer = queue.producer();
//! producer.send("emails", Record::new(b"alice@old.example").key(b"alice"))?;
//! producer.send("emails", Record::new(b"bob@example.org").key(b"bob"))?;
//! producer.send("emails", Record::new(b"alice@new.example").key(b"alice"))?;
//! producer.send("emails", Record::tombstone(b"bob"))?;
//! // Unkeyed records, which stay, to seal the segments above: the active one is never compacted.
//! for _ in 0..4 {
//!     producer.send("emails", Record::new(&[0; 64]))?;
//! }
//! queue.run_maintenance()?;
//!
//! let config = ConsumerConfig::new("audit").auto_offset_reset(OffsetReset::Earliest).auto_commit(None);
//! let mut consumer = queue.consumer(config)?;
//! consumer.assign(&[TopicPartition::new("emails", 0)])?;
//! let records = consumer.poll(Duration::from_millis(100))?;
//! let keyed: Vec<_> = records.iter().filter_map(|r| Some((r.offset(), r.key()?, r.is_tombstone()))).collect();
//! assert_eq!(keyed, [(2, &b"alice"[..], false), (3, &b"bob"[..], true)]);
//! # drop((records, consumer, producer, queue)); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! # Many processes
//!
//! Any number of processes may open the same directory with [`Queue::open`] and use it at once,
//! as producers, consumers and administrators alike. No process is special, and everything they
//! share is in the directory: the logs, which each process maps; per partition, a shared state
//! file with the append lock and the published end of the log; per group, a shared group file
//! and the log of its committed offsets; and a counter of topic changes, through which a topic
//! created, altered or deleted in one process is seen by every other on its next call.
//!
//! - **A dead process is noticed by the kernel, not by a timeout or a process id.** The locks
//!   are ones the kernel releases when their holder dies: `flock` and open-file-description
//!   locks, and robust process-shared mutexes. A process killed at any instruction, even while
//!   it holds a partition's append lock, blocks nobody and leaves nothing half-written visible.
//!   A group member's process that dies releases its lock, and the group expels it within about
//!   100 ms. (A process stopped, not killed, while it holds a lock holds up the others until it
//!   runs again or dies.)
//! - **Wake-ups cross processes.** A consumer waiting in `poll` sleeps on a futex in the
//!   partition's shared state; a send in any process wakes it at once. A send with nobody
//!   waiting makes no system call for it.
//! - **Recovery happens once, alone.** When a process opens a queue that no other process has
//!   open, each partition is recovered on first use: a torn tail that was never synced is cut
//!   off by its checksums, and damage to synced records is reported as [`Error::Corrupt`].
//!
//! Each process runs its own background threads: a keeper for its group members once one
//! subscribes, a flusher for [`Durability::Interval`]. Retention and compaction run in one
//! process at a time, and another takes over when it exits.
//!
//! Each [`Queue::open`] has its own mappings and locks, so two handles on one directory in one
//! process stand in for two processes; the test suite starts real processes, and so do the
//! programs in `examples/` (`two_processes.rs`, `consumer_group.rs`).
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-processes-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use std::time::Duration;
//! use streamlog::{ConsumerConfig, OffsetReset, Queue, Record, TopicPartition};
//!
//! let writer = Queue::open(&dir)?; // as if in one process
//! let reader = Queue::open(&dir)?; // and in another
//! writer.create_topic("events", 1)?;
//! assert_eq!(reader.topics()?, ["events"]);
//!
//! let config = ConsumerConfig::new("audit").auto_offset_reset(OffsetReset::Earliest);
//! let mut consumer = reader.consumer(config)?;
//! consumer.assign(&[TopicPartition::new("events", 0)])?;
//! let producer = writer.producer();
//! let sender = std::thread::spawn(move || producer.send("events", Record::new(b"ping")));
//! // Returns as soon as the record is published, not after the timeout.
//! let records = consumer.poll(Duration::from_secs(5))?;
//! assert_eq!(records.iter().next().map(|r| r.value()), Some(&b"ping"[..]));
//! sender.join().expect("the sender thread")?;
//! # drop((records, consumer, reader, writer)); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! Every fallible call returns [`Error`], one `#[non_exhaustive]` enum, so that an application
//! can match on what it handles and pass the rest on. Its message is a sentence that names where
//! the problem is: the topic, the partition, the file and byte. Bad input gets an error, never a
//! panic. The variants an application meets most:
//!
//! - [`Error::UnknownTopic`], [`Error::TopicExists`]: the topic is missing (perhaps deleted by
//!   another process), or already there.
//! - [`Error::InvalidTopicName`], [`Error::InvalidGroupName`], [`Error::InvalidConfig`] (of a
//!   topic, consumer or queue setting), [`Error::InvalidPath`], [`Error::InvalidPattern`],
//!   [`Error::PartitionOutOfRange`]: an argument outside its limits.
//! - [`Error::RecordTooLarge`], [`Error::TooManyHeaders`], [`Error::HeaderNameTooLong`]: a
//!   record that cannot be sent; nothing was written.
//! - [`Error::GroupFull`], [`Error::StrategyMismatch`], [`Error::GroupStateTooLarge`]: a
//!   consumer that cannot join its group.
//! - [`Error::NoOffset`], [`Error::OffsetOutOfRange`]: with [`OffsetReset::None`], a consumer
//!   has nowhere to start; seek first.
//! - [`Error::CommitFailed`]: the group moved on without this member; poll, then commit again.
//! - [`Error::NotAssigned`], [`Error::IllegalState`]: a call that does not fit the consumer's
//!   partitions or state, such as [`Consumer::assign`] while subscribed.
//! - [`Error::DiskFull`]: nothing acknowledged was harmed; retry once there is space.
//! - The file errors: [`Error::Io`], [`Error::Corrupt`], [`Error::Poisoned`],
//!   [`Error::ForeignFile`], [`Error::UnexpectedFileType`], [`Error::IncompatibleVersion`]: a
//!   file operation failed, stored data is damaged (the message names the file and byte), an
//!   fsync failed earlier, the directory holds files streamlog did not write or a symbolic link
//!   or FIFO where a file belongs, or another format version wrote the queue. The `# Errors`
//!   section of each method lists what it returns; "the file errors" there means these and
//!   [`Error::DiskFull`].
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-errors-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use std::time::Duration;
//! use streamlog::{ConsumerConfig, Error, OffsetReset, Producer, Queue, Record, RecordMetadata, TopicPartition};
//!
//! /// Sends to `topic`, creating it first if it does not exist yet.
//! fn send_creating(
//!     queue: &Queue,
//!     producer: &Producer,
//!     topic: &str,
//!     record: Record<'_>,
//! ) -> streamlog::Result<RecordMetadata> {
//!     match producer.send(topic, record.clone()) {
//!         Err(Error::UnknownTopic(_)) => {
//!             match queue.create_topic(topic, 1) {
//!                 // Another thread or process may have created it meanwhile.
//!                 Ok(()) | Err(Error::TopicExists(_)) => producer.send(topic, record),
//!                 Err(error) => Err(error),
//!             }
//!         }
//!         sent => sent,
//!     }
//! }
//!
//! let queue = Queue::open(&dir)?;
//! let producer = queue.producer();
//! assert_eq!(send_creating(&queue, &producer, "audit", Record::new(b"one"))?.offset(), 0);
//! assert_eq!(send_creating(&queue, &producer, "audit", Record::new(b"two"))?.offset(), 1);
//!
//! let error = producer.send("audit", Record::new(b"x").partition(7)).unwrap_err();
//! assert!(matches!(error, Error::PartitionOutOfRange { partition: 7, count: 1, .. }));
//! assert_eq!(error.to_string(), r#"partition 7 is out of range for topic "audit", which has 1 partitions"#);
//!
//! let strict = ConsumerConfig::new("strict").auto_offset_reset(OffsetReset::None);
//! let mut consumer = queue.consumer(strict)?;
//! consumer.assign(&[TopicPartition::new("audit", 0)])?;
//! assert!(matches!(consumer.poll(Duration::from_millis(100)), Err(Error::NoOffset { .. })));
//! # drop((consumer, producer, queue)); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! # Limits
//!
//! A topic may compress its batches ([`TopicConfig::compression`], Kafka's codec names:
//! [`Compression::Lz4`], or [`Compression::Zstd`] with the crate's `zstd` feature). Each batch
//! `send_batch` writes is compressed before the partition's lock is taken; records sent one at
//! a time by `send` are stored as they are. Consumers decompress transparently, once per batch;
//! their records then point into that expanded batch, a copy, instead of into the mapped log.
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-compress-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use streamlog::{Compression, Queue, Record, TopicConfig};
//!
//! let queue = Queue::open(&dir)?;
//! queue.create_topic_with("clicks", TopicConfig::new(1).compression(Compression::Lz4))?;
//! let clicks = (0..1000).map(|i| Record::new(format!(r#"{{"user":{},"page":"/home"}}"#, i % 50).into_bytes()));
//! queue.producer().send_batch("clicks", clicks)?;
//! assert_eq!(queue.topic_config("clicks")?.get_compression().name(), "lz4");
//! # drop(queue); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! Every size and count has a limit, and a value beyond it is refused with an error where it is
//! passed in:
//!
//! | what | limit |
//! |---|---|
//! | partitions per topic | [`MAX_PARTITIONS`] (100,000) |
//! | topic and group names | [`MAX_TOPIC_NAME_BYTES`] (249) bytes of `[A-Za-z0-9._-]`, not `.` or `..` |
//! | one record, counting key, value, headers and their framing (5 bytes for a small record without key or headers) | the topic's [`max_record_bytes`](TopicConfig::max_record_bytes): 1 MiB by default, at most [`MAX_RECORD_BYTES_LIMIT`] (64 MiB) |
//! | headers per record | [`MAX_HEADERS_PER_RECORD`] (65,535), each name at most [`MAX_HEADER_NAME_BYTES`] (65,535) bytes of UTF-8 ([`Error::TooManyHeaders`], [`Error::HeaderNameTooLong`] beyond) |
//! | one segment | the topic's [`segment_bytes`](TopicConfig::segment_bytes): 256 B to [`MAX_SEGMENT_BYTES`] (1 GiB, the default) |
//! | members per group | [`MAX_GROUP_MEMBERS`] (1,024; [`Error::GroupFull`] beyond) |
//! | `session_timeout`, `max_poll_interval` | at least [`MIN_SESSION_TIMEOUT`] (500 ms) |
//! | one commit | 64 MiB: about 60 bytes plus the topic name per partition ([`Error::CommitTooLarge`] beyond) |
//!
//! A process also keeps one file open per partition it has used, so thousands of partitions
//! need a raised `ulimit -n`. streamlog runs on Linux only (futexes, robust mutexes,
//! `fallocate`), and is tested on x86-64.
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-limits-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! use streamlog::{ConsumerConfig, Error, Queue, TopicConfig};
//! use streamlog::{MAX_PARTITIONS, MAX_RECORD_BYTES_LIMIT, MAX_TOPIC_NAME_BYTES, MIN_SESSION_TIMEOUT};
//!
//! let queue = Queue::open(&dir)?;
//! let too_long = "x".repeat(MAX_TOPIC_NAME_BYTES + 1);
//! assert!(matches!(queue.create_topic(&too_long, 1), Err(Error::InvalidTopicName { .. })));
//! assert!(matches!(queue.create_topic("wide", MAX_PARTITIONS + 1), Err(Error::InvalidConfig(_))));
//! let huge = TopicConfig::new(1).max_record_bytes(MAX_RECORD_BYTES_LIMIT + 1);
//! assert!(matches!(queue.create_topic_with("huge", huge), Err(Error::InvalidConfig(_))));
//! let hasty = ConsumerConfig::new("hasty").session_timeout(MIN_SESSION_TIMEOUT / 2);
//! assert!(matches!(queue.consumer(hasty), Err(Error::InvalidConfig(_))));
//! assert!(queue.topics()?.is_empty());
//! # drop(queue); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! # Further reading
//!
//! README.md has the durability guarantees in full, how they are tested (power cuts, crashes,
//! fuzzing), and performance measurements, alone and against other queues and logs.
//! ARCHITECTURE.md has the codemap, the invariants, every byte on disk, and the append, wake-up
//! and recovery protocols.

// The file's length is the guided tour above; its code is the `mod` and `pub use` lines below.

#![deny(unsafe_code)]

mod background;
mod catalog;
mod client;
mod error;
mod failpoint;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod log;
mod options;
mod queue;
mod record;
mod sys;
mod topic;
mod transaction;

pub use client::consumer::{Consumer, ConsumerGroupMetadata, RebalanceListener};
pub use client::producer::{Producer, RecordMetadata, partition_for_key};
pub use client::transactional::TransactionalProducer;
pub use error::{Error, Result};
pub use group::describe::{GroupDescription, MemberDescription, PartitionLag};
pub use group::file::MAX_GROUP_MEMBERS;
pub use log::records::{ConsumerRecord, Records, RecordsIntoIter, RecordsIter};
pub use options::{
    AssignmentStrategy, ConsumerConfig, Durability, IsolationLevel, MIN_SESSION_TIMEOUT, OffsetReset, ProducerConfig,
    QueueOptions,
};
pub use queue::Queue;
pub use record::{IntoBytes, Record};
pub use topic::{
    CleanupPolicy, Compression, MAX_HEADER_NAME_BYTES, MAX_HEADERS_PER_RECORD, MAX_PARTITIONS, MAX_RECORD_BYTES_LIMIT,
    MAX_SEGMENT_BYTES, MAX_TOPIC_NAME_BYTES, TopicConfig, TopicPartition,
};
