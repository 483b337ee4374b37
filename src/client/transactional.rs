//! Transactional producers: records sent to many partitions that become visible to readers of
//! committed records together, or not at all (the protocol is in `catalog/transactions.rs`).

use std::sync::Arc;

use crate::catalog::transactions::{Instance, Transaction};
use crate::client::consumer::ConsumerGroupMetadata;
use crate::client::producer::{Producer, RecordMetadata};
use crate::error::Result;
use crate::options::{Durability, validate_group_name, validate_topic_name};
use crate::record::Record;
use crate::topic::TopicPartition;

/// A producer whose records go out in transactions, as Kafka's transactional producer's do:
/// between [`begin_transaction`](Self::begin_transaction) and
/// [`commit_transaction`](Self::commit_transaction), records sent to any topics and
/// partitions are appended at once (they take offsets) but a consumer reading with
/// [`IsolationLevel::ReadCommitted`](crate::IsolationLevel::ReadCommitted) sees them only
/// once the transaction commits, all together, and never if it aborts.
///
/// Each transactional id has one current instance among all processes: making a new one
/// (`Queue::transactional_producer` with the same id) aborts what the previous instance left
/// open and fences it, so that its next call fails with [`Error::ProducerFenced`](crate::Error::ProducerFenced). A
/// transaction whose process dies is aborted by the keeper thread of any process using the
/// queue's transactions (within about a tenth of a second), or by the next process that opens
/// the queue alone. Dropping the producer aborts its open transaction. A commit or abort that
/// failed part-way (its decision stored) is finished that way by whoever finds it.
///
/// ```
/// # fn main() -> Result<(), streamlog::Error> {
/// # let dir = std::env::temp_dir().join(format!("streamlog-doc-transactional-{}", std::process::id()));
/// use streamlog::{ConsumerConfig, IsolationLevel, OffsetReset, Queue, Record, TopicPartition};
/// let queue = Queue::open(&dir)?;
/// queue.create_topic("payments", 2)?;
/// let producer = queue.transactional_producer("payments-writer")?;
/// producer.begin_transaction()?;
/// producer.send("payments", Record::new(b"debit 5").key(b"alice"))?;
/// producer.send("payments", Record::new(b"credit 5").key(b"bob"))?;
/// producer.commit_transaction()?;
/// producer.begin_transaction()?;
/// producer.send("payments", Record::new(b"debit 7").key(b"alice"))?;
/// producer.abort_transaction()?;
///
/// let config = ConsumerConfig::new("audit")
///     .isolation_level(IsolationLevel::ReadCommitted)
///     .auto_offset_reset(OffsetReset::Earliest);
/// let mut consumer = queue.consumer(config)?;
/// consumer.assign(&[TopicPartition::new("payments", 0), TopicPartition::new("payments", 1)])?;
/// let mut seen = Vec::new();
/// for record in &consumer.poll(std::time::Duration::from_millis(100))? {
///     seen.push(record.value().to_vec());
/// }
/// seen.sort();
/// assert_eq!(seen, [b"credit 5".to_vec(), b"debit 5".to_vec()]);
/// # drop((consumer, producer, queue)); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
pub struct TransactionalProducer {
    producer: Producer,
    transaction: Arc<Transaction>,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let instance = &self.transaction.instance;
        f.debug_struct("TransactionalProducer")
            .field("transactional_id", &instance.coordinator.transactional_id)
            .field("producer_id", &instance.producer_id)
            .field("epoch", &instance.epoch)
            .finish_non_exhaustive()
    }
}

impl TransactionalProducer {
    pub(crate) fn new(producer: impl FnOnce(Arc<Transaction>) -> Producer, instance: Instance) -> Self {
        let transaction = Arc::new(Transaction::new(instance));
        TransactionalProducer { producer: producer(Arc::clone(&transaction)), transaction }
    }

    /// Starts a transaction (Kafka's `beginTransaction`); nothing is written until the first
    /// send.
    ///
    /// # Errors
    /// [`Error::ProducerFenced`](crate::Error::ProducerFenced) once a newer instance of the transactional id exists;
    /// [`Error::IllegalState`](crate::Error::IllegalState) while a transaction is open.
    pub fn begin_transaction(&self) -> Result<()> {
        self.transaction.begin()
    }

    /// Sends one record inside the open transaction, as [`Producer::send`] does: it takes its
    /// offset at once, and readers of committed records see it once the transaction commits.
    ///
    /// # Errors
    /// Those of [`Producer::send`]; [`Error::IllegalState`](crate::Error::IllegalState) outside a transaction;
    /// [`Error::ProducerFenced`](crate::Error::ProducerFenced) once a newer instance of the transactional id exists (then
    /// nothing more of this instance is ever appended).
    pub fn send(&self, topic: &str, record: Record<'_>) -> Result<RecordMetadata> {
        self.producer.send(topic, record)
    }

    /// Sends records inside the open transaction, as [`Producer::send_batch`] does.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub fn send_batch<'a>(&self, topic: &str, records: impl IntoIterator<Item = Record<'a>>) -> Result<Vec<RecordMetadata>> {
        self.producer.send_batch(topic, records)
    }

    /// Sends consumer offsets to the open transaction (Kafka's `sendOffsetsToTransaction`):
    /// `offsets` (each the next offset to read, as [`Consumer::commit_offsets`] takes them)
    /// become the committed offsets of the consumer's group when the transaction commits, and
    /// never if it aborts. Until it ends, a reader of committed records that is given one of
    /// these partitions waits before it starts from the committed offset, so that it does not
    /// read again what this transaction consumed.
    ///
    /// `metadata` is [`Consumer::group_metadata`] of the consumer that read the records: a
    /// subscribed consumer's offsets are taken only while it is still a member of the
    /// generation it was in, so a member expelled since (a zombie whose partitions another
    /// member may be reading) cannot commit them. Call it again after each poll. With
    /// `Durability::Sync` the offsets are on stable storage when it returns.
    ///
    /// [`Consumer::commit_offsets`]: crate::Consumer::commit_offsets
    /// [`Consumer::group_metadata`]: crate::Consumer::group_metadata
    ///
    /// After any error here the transaction may only abort (`commit_transaction` fails with
    /// [`Error::IllegalState`](crate::Error::IllegalState)): its output must not commit
    /// without its input's offsets.
    ///
    /// # Errors
    /// - [`Error::CommitFailed`](crate::Error::CommitFailed): the consumer is no longer a member
    ///   of that generation; abort the transaction, poll, and process again.
    /// - [`Error::TooManyOpenTransactions`](crate::Error::TooManyOpenTransactions): more
    ///   transactions than the group's offset log keeps track of are sending it offsets at once.
    /// - [`Error::ProducerFenced`](crate::Error::ProducerFenced),
    ///   [`Error::IllegalState`](crate::Error::IllegalState) outside a transaction,
    ///   [`Error::InvalidTopicName`](crate::Error::InvalidTopicName),
    ///   [`Error::InvalidGroupName`](crate::Error::InvalidGroupName),
    ///   [`Error::CommitTooLarge`](crate::Error::CommitTooLarge), file errors of the group's
    ///   offset log.
    pub fn send_offsets_to_transaction(&self, offsets: &[(TopicPartition, u64)], metadata: &ConsumerGroupMetadata) -> Result<()> {
        validate_group_name(metadata.group_id())?;
        for (tp, _) in offsets {
            validate_topic_name(tp.topic())?;
        }
        let sync = self.producer.config().durability == Durability::Sync;
        self.transaction.send_offsets(self.producer.queue(), metadata.group_id(), metadata.read_by(), offsets, sync)
    }

    /// Commits the open transaction (Kafka's `commitTransaction`): a marker goes into every
    /// partition it wrote to, and readers of committed records see all of its records from
    /// then on. With `Durability::Sync` the decision and every marker are on stable storage
    /// when it returns. After an error the transaction is being committed: call this again
    /// (it finishes the markers), or drop the producer and let the next instance finish it.
    ///
    /// # Errors
    /// [`Error::ProducerFenced`](crate::Error::ProducerFenced) (a newer instance aborted or finished the transaction);
    /// [`Error::IllegalState`](crate::Error::IllegalState) without an open transaction; file errors.
    pub fn commit_transaction(&self) -> Result<()> {
        self.end(true)
    }

    /// Aborts the open transaction (Kafka's `abortTransaction`): its records stay in the log
    /// (offsets are never reused) but readers of committed records never see them.
    ///
    /// # Errors
    /// As [`commit_transaction`](Self::commit_transaction).
    pub fn abort_transaction(&self) -> Result<()> {
        self.end(false)
    }

    fn end(&self, commit: bool) -> Result<()> {
        let sync = self.producer.config().durability == Durability::Sync;
        self.producer.between_sends(|| self.transaction.end(self.producer.queue(), commit, sync))
    }
}

impl Drop for TransactionalProducer {
    fn drop(&mut self) {
        if self.transaction.is_open() {
            // What fails here is finished by whoever finds it: the next instance or a keeper.
            let _ = self.abort_transaction();
        }
    }
}
