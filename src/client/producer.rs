//! Sending records: choosing partitions, checking limits, and waiting for durability.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

use crate::catalog::transactions::Transaction;
use crate::catalog::{Catalog, LastTopic, Topic, UserHandle};
use crate::error::{Error, Result};
use crate::log::format::{self, BATCH_HEADER_BYTES, ProducerStamp, TARGET_BATCH_BYTES};
use crate::log::partition::Partition;
use crate::log::state::EpochFence;
use crate::options::{Durability, ProducerConfig};
use crate::record::Record;
use crate::sys::clock;
use crate::topic::{Compression, MAX_HEADER_NAME_BYTES, MAX_HEADERS_PER_RECORD};

/// Where a sent record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    partition: u32,
    offset: u64,
    timestamp_ms: u64,
}

impl RecordMetadata {
    /// The partition the record went to.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The record's offset in that partition.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The record's timestamp, in milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> u64 {
        self.timestamp_ms
    }
}

/// Sends records to topics. Clone it freely and share it between threads; sends from one
/// thread to one partition keep their order.
///
/// ```
/// # fn main() -> Result<(), streamlog::Error> {
/// # let dir = std::env::temp_dir().join(format!("streamlog-doc-producer-{}", std::process::id()));
/// use streamlog::{Queue, Record};
/// let queue = Queue::open(&dir)?;
/// queue.create_topic("orders", 4)?;
/// let producer = queue.producer();
/// let sent = producer.send("orders", Record::new(b"42 EUR").key(b"customer-7"))?;
/// let again = producer.send("orders", Record::new(b"13 EUR").key(b"customer-7"))?;
/// assert_eq!((again.partition(), again.offset()), (sent.partition(), sent.offset() + 1));
/// # drop(queue); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
pub struct Producer {
    /// First, so that it drops before `queue` (see `Queue`'s field of the same kind).
    _handle: Arc<UserHandle>,
    queue: Arc<Catalog>,
    config: ProducerConfig,
    /// Where the next unkeyed record goes; each clone has its own, so threads do not contend.
    round_robin: AtomicU32,
    /// The topic `send` found last (see `Catalog::cached_topic`); each clone has its own.
    /// Threads sharing one producer look the topic up in the catalog when another holds it.
    last_topic: Arc<LastTopic>,
    /// An idempotent producer's id and sequence numbers; each clone has its own.
    idempotence: Option<Idempotence>,
}

/// An idempotent producer's id and epoch, and the sequence number of the next record it sends
/// to each partition (by topic id, so that a topic deleted and created again starts over). The
/// lock is held while a batch is appended, so that the numbers go to the partition in order
/// (and, for a transactional producer, so that no batch is being appended while the
/// transaction ends). The epoch is 0 but for a transactional producer, whose later instances
/// have later ones.
struct Idempotence {
    id: u64,
    epoch: u16,
    next_sequences: Mutex<HashMap<(u64, u32), u32, BuildHasherDefault<PartitionHasher>>>,
    transaction: Option<Arc<Transaction>>,
}

impl Idempotence {
    fn new(queue: &Catalog) -> Self {
        Idempotence { id: queue.new_producer_id(), epoch: 0, next_sequences: Mutex::default(), transaction: None }
    }
}

/// Hashes a (topic id, partition) key in two multiplications: topic ids are random already,
/// so SipHash's defence against chosen keys buys nothing here.
#[derive(Default)]
struct PartitionHasher(u64);

impl Hasher for PartitionHasher {
    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&byte| self.write_u64(u64::from(byte)));
    }

    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("queue", &self.queue.dir()).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Clone for Producer {
    fn clone(&self) -> Self {
        let start = self.round_robin.load(Ordering::Relaxed).wrapping_add(0x9e37_79b9);
        Producer {
            queue: Arc::clone(&self.queue),
            config: self.config.clone(),
            round_robin: AtomicU32::new(start),
            last_topic: self.queue.last_topic(),
            idempotence: self.idempotence.as_ref().map(|_| Idempotence::new(&self.queue)),
            _handle: Arc::clone(&self._handle),
        }
    }
}

impl Producer {
    pub(crate) fn new(queue: Arc<Catalog>, handle: Arc<UserHandle>, config: ProducerConfig) -> Self {
        let start = std::process::id().wrapping_mul(0x9e37_79b9);
        let last_topic = queue.last_topic();
        let idempotence = config.idempotent.then(|| Idempotence::new(&queue));
        Producer { queue, config, round_robin: AtomicU32::new(start), last_topic, idempotence, _handle: handle }
    }

    /// The producer of a transactional producer: stamped with its instance's producer id and
    /// epoch, and sending only inside its transactions.
    pub(crate) fn transactional(
        queue: Arc<Catalog>,
        handle: Arc<UserHandle>,
        config: ProducerConfig,
        transaction: Arc<Transaction>,
    ) -> Self {
        let mut producer = Producer::new(queue, handle, config);
        let (id, epoch) = (transaction.instance.producer_id, transaction.instance.epoch);
        producer.idempotence = Some(Idempotence { id, epoch, next_sequences: Mutex::default(), transaction: Some(transaction) });
        producer
    }

    /// Runs `work` while no batch of this producer is being appended (and none can start).
    pub(crate) fn between_sends<T>(&self, work: impl FnOnce() -> T) -> T {
        let _sends = self.idempotence.as_ref().map(|idempotence| idempotence.next_sequences.lock());
        work()
    }

    pub(crate) fn config(&self) -> &ProducerConfig {
        &self.config
    }

    pub(crate) fn queue(&self) -> &Catalog {
        &self.queue
    }

    /// Appends one record and returns where it landed. With `Durability::Sync` it returns
    /// only once the record is on stable storage.
    ///
    /// # Errors
    /// - [`Error::InvalidTopicName`], [`Error::UnknownTopic`], [`Error::PartitionOutOfRange`]
    ///   (an explicit partition the topic does not have).
    /// - [`Error::RecordTooLarge`], [`Error::TooManyHeaders`], [`Error::HeaderNameTooLong`]:
    ///   nothing was written.
    /// - [`Error::Poisoned`]: an earlier fsync of the partition failed; reopen the queue.
    /// - [`Error::DiskFull`] (nothing acknowledged was harmed; retry once space is freed) and
    ///   the other the [file errors](crate#errors).
    pub fn send(&self, topic: &str, record: Record<'_>) -> Result<RecordMetadata> {
        let (mut cache, looked_up);
        let topic = match self.last_topic.try_lock() {
            Some(guard) => {
                cache = guard;
                self.queue.cached_topic(topic, &mut cache)?
            }
            None => {
                looked_up = self.queue.topic(topic)?;
                &looked_up
            }
        };
        let partition_number = match fixed_partition(topic, &record)? {
            Some(partition) => partition,
            None if topic.config.partitions == 1 => 0,
            None => self.next_round_robin(1) % topic.config.partitions,
        };
        let size = check_size(topic, &record)?;
        let now_ms = clock::wall_clock_ms();
        let timestamp_ms = record.timestamp_ms.unwrap_or(now_ms);
        let partition = topic.partition(partition_number, &self.queue)?;
        let batch_bytes = u64::from(BATCH_HEADER_BYTES) + size;
        let offset = self
            .stamped(topic, partition, 1, |producer| {
                partition.append(std::slice::from_ref(&record), &[timestamp_ms], batch_bytes, producer, now_ms)
            })
            .map_err(|e| partition.explain(e))?;
        if self.config.durability == Durability::Sync {
            partition.sync_through(offset + 1).map_err(|e| partition.explain(e))?;
        }
        Ok(RecordMetadata { partition: partition_number, offset, timestamp_ms })
    }

    /// Appends many records, grouped into one batch per partition (cut at 1 MiB): one lock
    /// and one write per batch. Returns each record's metadata in the order given. Records to
    /// one partition keep their order; if an error occurs, batches already written stay.
    ///
    /// # Errors
    /// As [`send`](Self::send); every record is checked before the first batch is written, so
    /// a record too large or with bad headers fails the call with nothing written.
    pub fn send_batch<'a>(&self, topic: &str, records: impl IntoIterator<Item = Record<'a>>) -> Result<Vec<RecordMetadata>> {
        let topic = self.queue.topic(topic)?;
        let now_ms = clock::wall_clock_ms();
        let mut records: Vec<Record<'a>> = records.into_iter().collect();
        let count = records.len();
        let mut next_round_robin = self.next_round_robin(count as u32);
        let mut partitions = Vec::with_capacity(count);
        for record in &records {
            partitions.push(fixed_partition(&topic, record)?.unwrap_or_else(|| {
                next_round_robin = next_round_robin.wrapping_add(1);
                next_round_robin.wrapping_sub(1) % topic.config.partitions
            }));
            check_size(&topic, record)?;
        }
        // Group the records by partition (keeping their order within each) so that every batch
        // is a contiguous slice; `order[i]` is where the i-th record of the grouping was given.
        let mut order: Vec<usize> = (0..count).collect();
        if partitions.windows(2).any(|w| w[0] != w[1]) {
            order.sort_by_key(|&i| partitions[i]);
            let mut slots: Vec<Option<Record<'a>>> = records.into_iter().map(Some).collect();
            records = order.iter().map(|&i| slots[i].take().expect("each record once")).collect();
            partitions = order.iter().map(|&i| partitions[i]).collect();
        }
        let timestamps: Vec<u64> = records.iter().map(|r| r.timestamp_ms.unwrap_or(now_ms)).collect();
        let mut metadata = vec![RecordMetadata { partition: 0, offset: 0, timestamp_ms: 0 }; count];
        let (mut encoded, mut scratch) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < count {
            let partition_number = partitions[start];
            let end = partitions[start..].iter().position(|&p| p != partition_number).map_or(count, |n| start + n);
            let partition = topic.partition(partition_number, &self.queue)?;
            let mut at = start;
            while at < end {
                // A record's size depends on its timestamp's distance from the batch's first.
                let size = |i: usize| format::record_bytes(&records[i], timestamps[i], timestamps[at]);
                let mut batch_bytes = u64::from(BATCH_HEADER_BYTES) + size(at);
                let mut batch_end = at + 1;
                while batch_end < end && batch_bytes + size(batch_end) <= TARGET_BATCH_BYTES {
                    batch_bytes += size(batch_end);
                    batch_end += 1;
                }
                let (batch, batch_timestamps) = (&records[at..batch_end], &timestamps[at..batch_end]);
                let base = self
                    .stamped(&topic, partition, batch.len() as u32, |producer| match topic.config.compression {
                        Compression::None => partition.append(batch, batch_timestamps, batch_bytes, producer, now_ms),
                        compression => {
                            // Compressed here, before the partition's lock is taken.
                            format::write_compressed_batch(
                                &mut encoded,
                                &mut scratch,
                                compression,
                                producer.0,
                                batch,
                                batch_timestamps,
                            );
                            partition.append_encoded(&mut encoded, producer.1, now_ms)
                        }
                    })
                    .map_err(|e| partition.explain(e))?;
                for i in at..batch_end {
                    let offset = base + (i - at) as u64;
                    metadata[order[i]] = RecordMetadata { partition: partition_number, offset, timestamp_ms: timestamps[i] };
                }
                at = batch_end;
            }
            if self.config.durability == Durability::Sync {
                partition.sync_through(metadata[order[end - 1]].offset + 1).map_err(|e| partition.explain(e))?;
            }
            start = end;
        }
        Ok(metadata)
    }

    /// Runs `append` for a batch of `count` records to `partition` with this producer's stamp:
    /// for an idempotent producer its id, epoch and next sequence number there, which move on
    /// by `count` once the batch is appended (the lock held meanwhile keeps the numbers in the
    /// order of the appends). A transactional producer's batch goes into its open transaction
    /// (the partition added to it first), checked against its coordinator's epoch.
    fn stamped(
        &self,
        topic: &Topic,
        partition: &Partition,
        count: u32,
        append: impl FnOnce((ProducerStamp, Option<&EpochFence>)) -> Result<u64>,
    ) -> Result<u64> {
        let Some(idempotence) = &self.idempotence else {
            return append((ProducerStamp::NONE, None));
        };
        let mut sequences = idempotence.next_sequences.lock();
        let fence = match &idempotence.transaction {
            Some(transaction) => Some(transaction.join(&self.queue, topic, partition.id.partition())?),
            None => None,
        };
        let next = sequences.entry((topic.id, partition.id.partition())).or_insert(0);
        let stamp =
            ProducerStamp { id: idempotence.id, epoch: idempotence.epoch, base_sequence: *next, transactional: fence.is_some() };
        let base_offset = append((stamp, fence.as_ref()))?;
        *next = next.wrapping_add(count);
        Ok(base_offset)
    }

    /// Takes `count` round-robin turns and returns the first. A load and a store, not an
    /// atomic add: each clone has its own counter, and threads sharing one that take a turn
    /// twice only send two records to one partition.
    fn next_round_robin(&self, count: u32) -> u32 {
        let next = self.round_robin.load(Ordering::Relaxed);
        self.round_robin.store(next.wrapping_add(count), Ordering::Relaxed);
        next
    }

    /// Makes everything this process sent so far durable as the durability mode promises:
    /// with `Interval` it syncs now instead of waiting; `Buffered` and `Sync` need nothing.
    ///
    /// # Errors
    /// The first failed fsync ([`Error::Io`], or [`Error::Poisoned`] for a partition whose
    /// earlier fsync failed); the failed partitions refuse writes from then on.
    pub fn flush(&self) -> Result<()> {
        match self.config.durability {
            Durability::Interval(_) => self.queue.sync_dirty(),
            Durability::Buffered | Durability::Sync => Ok(()),
        }
    }
}

/// The partition an explicit number or a key sends a record to; `None` for round-robin.
fn fixed_partition(topic: &Topic, record: &Record<'_>) -> Result<Option<u32>> {
    let count = topic.config.partitions;
    match (record.partition, record.key_bytes()) {
        (Some(partition), _) if partition >= count => {
            Err(Error::PartitionOutOfRange { topic: topic.name.clone(), partition, count })
        }
        (Some(partition), _) => Ok(Some(partition)),
        // Any hash modulo 1 is 0: skip hashing the key.
        (None, Some(_)) if count == 1 => Ok(Some(0)),
        (None, Some(key)) => Ok(Some(key_partition(key, count))),
        (None, None) => Ok(None),
    }
}

/// Checks a record against the topic's limits and returns its encoded size, as it takes it
/// alone in a batch (in a batch of others it may take up to 9 bytes more, for a timestamp far
/// from the batch's first).
fn check_size(topic: &Topic, record: &Record<'_>) -> Result<u64> {
    let size_bytes = format::record_bytes(record, 0, 0);
    let max_bytes = u64::from(topic.config.max_record_bytes);
    if size_bytes > max_bytes {
        return Err(Error::RecordTooLarge { topic: topic.name.clone(), size_bytes, max_bytes });
    }
    if record.headers.len() > MAX_HEADERS_PER_RECORD {
        let (headers, max_headers) = (record.headers.len(), MAX_HEADERS_PER_RECORD);
        return Err(Error::TooManyHeaders { topic: topic.name.clone(), headers, max_headers });
    }
    if let Some((name, _)) = record.headers.iter().find(|(name, _)| name.len() > MAX_HEADER_NAME_BYTES) {
        let (name_bytes, max_bytes) = (name.len() as u64, MAX_HEADER_NAME_BYTES as u64);
        return Err(Error::HeaderNameTooLong { topic: topic.name.clone(), name_bytes, max_bytes });
    }
    Ok(size_bytes)
}

/// The partition a key goes to: Kafka's default partitioner (murmur2 of the key, sign bit
/// cleared, modulo the partition count), so keys land where a Kafka producer would put them.
/// It never changes between releases; it does change when partitions are added.
///
/// ```
/// # fn main() -> Result<(), streamlog::Error> {
/// let partition = streamlog::partition_for_key(b"customer-7", 4)?;
/// assert!(partition < 4);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::InvalidConfig`] when `partitions` is 0: no topic has zero partitions.
pub fn partition_for_key(key: &[u8], partitions: u32) -> Result<u32> {
    if partitions == 0 {
        return Err(Error::InvalidConfig("partition_for_key needs a partition count of at least 1".into()));
    }
    Ok(key_partition(key, partitions))
}

/// `partition_for_key` for a count known to be at least 1.
fn key_partition(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Kafka's 32-bit murmur2 variant (seed 0x9747b28c).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("four bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, &byte) in rest.iter().enumerate().rev() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Expected values from Kafka's own test of Utils.murmur2, as signed 32-bit integers.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key) as i32, expected, "{:?}", std::str::from_utf8(key));
        }
    }

    #[test]
    fn keys_spread_and_stay_put() {
        let mut counts = [0u32; 8];
        for i in 0..8000u32 {
            let key = i.to_le_bytes();
            let partition = partition_for_key(&key, 8).unwrap();
            assert_eq!(partition, partition_for_key(&key, 8).unwrap());
            counts[partition as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn no_partition_for_zero_partitions() {
        assert!(matches!(partition_for_key(b"k", 0), Err(Error::InvalidConfig(_))));
        assert_eq!(partition_for_key(b"k", 1).unwrap(), 0);
    }
}
