//! The offset store: a group's committed offsets, kept as a log of small records (one per
//! partition committed, keyed by the partition) in the group's `offsets/` directory. A commit is
//! one batch append, so a commit of many partitions lands whole or not at all, and the log's
//! recovery (a torn tail is cut off at its checksum) makes a crash show the old value or the new
//! one, never a mix. Each process folds the log into a map, reading only what was appended since
//! it last looked.
//!
//! Offsets sent to a transaction (`send_offsets_to_transaction`) are a transactional batch in
//! the same log, stamped with the transaction's producer. The fold keeps them pending until the
//! producer's marker: a commit applies them (unless a later commit of the partition came
//! first), an abort drops them. A partition with pending offsets is unstable: a reader of
//! committed records waits before it starts from the committed offset, as Kafka's consumers do
//! (`require_stable`), or it would read again what the transaction consumed.
//!
//! The log's files are created by the group's first commit, not before: a consumer that only
//! reads (assigned partitions, no commits) needs no disk space, so it works on a full disk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::log::format::{self, LogId, MAX_BATCH_BYTES, ProducerStamp};
use crate::log::partition::Partition;
use crate::log::read::{Cursor, ScannedBatch};
use crate::log::state::EpochFence;
use crate::options::Durability;
use crate::record::Record;
use crate::sys::clock;
use crate::topic::{CleanupPolicy, TopicConfig, TopicPartition};

/// How large each segment of an offset log grows before a new one starts.
const OFFSET_SEGMENT_BYTES: u64 = 16 << 20;

/// The log id of consumer group `group`'s offset log: FNV-1a (64 bits) of `"group:"` and the
/// name. It depends on the name only, so every process and every build computes the same one;
/// topic ids are random, so a clash with one is as unlikely as two topics' ids clashing.
pub(crate) fn group_log_id(group: &str) -> LogId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in b"group:".iter().chain(group.as_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    LogId { topic_id: hash.max(1), partition: 0 }
}

/// The key of a committed-offset record: the partition's number, then the topic's name.
pub(crate) fn encode_commit_key(partition: &TopicPartition) -> Vec<u8> {
    let mut key = partition.partition().to_le_bytes().to_vec();
    key.extend_from_slice(partition.topic().as_bytes());
    key
}

pub(crate) fn decode_commit_key(key: &[u8]) -> Option<TopicPartition> {
    let topic = std::str::from_utf8(key.get(4..)?).ok()?;
    Some(TopicPartition::new(topic, format::u32_at(key, 0)))
}

/// The value of a committed-offset record: the offset, who committed it, and the id of the
/// topic it was committed for (0 if the topic did not exist), so that a commit for a deleted
/// topic does not apply to a new topic of the same name.
///
/// ```text
/// 0 offset u64   8 member_id u64   16 generation u64   24 topic_id u64
/// ```
pub(crate) fn encode_commit_value(offset: u64, member_id: u64, generation: u64, topic_id: u64) -> [u8; 32] {
    let mut value = [0u8; 32];
    value[0..8].copy_from_slice(&offset.to_le_bytes());
    value[8..16].copy_from_slice(&member_id.to_le_bytes());
    value[16..24].copy_from_slice(&generation.to_le_bytes());
    value[24..32].copy_from_slice(&topic_id.to_le_bytes());
    value
}

/// The offset and topic id of a committed-offset record.
pub(crate) fn decode_commit_value(value: &[u8]) -> Option<(u64, u64)> {
    (value.len() == 32).then(|| (format::u64_at(value, 0), format::u64_at(value, 24)))
}

/// The offset of a committed entry `(offset, topic_id)` if it applies to the topic whose id is
/// now `topic_id`: not if it was committed for an earlier topic of the same name. An id of 0
/// (the topic did not exist at the commit, or does not now) matches any.
pub(crate) fn applicable(entry: Option<(u64, u64)>, topic_id: u64) -> Option<u64> {
    entry.filter(|&(_, committed_for)| committed_for == 0 || topic_id == 0 || committed_for == topic_id).map(|(offset, _)| offset)
}

/// The settings of an offset log.
pub(crate) fn offset_log_config() -> TopicConfig {
    TopicConfig::new(1).segment_bytes(OFFSET_SEGMENT_BYTES).cleanup_policy(CleanupPolicy::Compact)
}

/// Opens a group's offset log, creating its files if there are none.
pub(crate) type OpenLog = Box<dyn Fn() -> Result<Partition> + Send + Sync>;

pub(crate) struct OffsetStore {
    /// The log's directory, `groups/<name>/offsets/`.
    dir: PathBuf,
    open: OpenLog,
    /// The log, once this process committed or found one to read.
    log: Mutex<Option<Arc<Partition>>>,
    view: Mutex<View>,
}

/// What this process has read of the log so far.
#[derive(Default)]
struct View {
    cursor: Option<Cursor>,
    /// The log offset up to which `committed` is folded in.
    read_to: u64,
    /// Per partition: the committed offset and the id of the topic it was committed for.
    committed: HashMap<TopicPartition, Committed>,
    /// Per producer id: offsets sent to its open transaction, not decided yet.
    pending: HashMap<u64, Pending>,
}

/// A committed offset, the id of the topic it was committed for, and where in the log its
/// record lies (a transaction's offsets apply at its commit only over older ones).
#[derive(Clone, Copy)]
struct Committed {
    offset: u64,
    topic_id: u64,
    at: u64,
}

/// The offsets a producer sent to its open transaction: its epoch, where its first batch of
/// them lies, and the offsets.
struct Pending {
    epoch: u16,
    first_at: u64,
    offsets: Vec<(TopicPartition, Committed)>,
}

impl View {
    fn get(&self, partition: &TopicPartition) -> Option<(u64, u64)> {
        self.committed.get(partition).map(|c| (c.offset, c.topic_id))
    }

    /// Applies what a marker of `producer` decides of its pending offsets.
    fn decide(&mut self, producer: ProducerStamp, commit: bool) {
        let Some(pending) = self.pending.remove(&producer.id) else { return };
        if !commit || pending.epoch != producer.epoch {
            return;
        }
        for (partition, entry) in pending.offsets {
            match self.committed.get(&partition) {
                Some(newer) if newer.at > entry.at => {}
                _ => {
                    self.committed.insert(partition, entry);
                }
            }
        }
    }
}

impl OffsetStore {
    /// The store of the log in `dir`, which `open` opens; nothing is created before it is needed.
    pub(crate) fn new(dir: PathBuf, open: OpenLog) -> Self {
        OffsetStore { dir, open, log: Mutex::new(None), view: Mutex::new(View::default()) }
    }

    /// The log, opened (and created, if nobody committed yet) on first use. The caller makes
    /// sure that the log's directory exists.
    fn open_log(&self) -> Result<Arc<Partition>> {
        let mut log = self.log.lock();
        if let Some(log) = &*log {
            return Ok(Arc::clone(log));
        }
        Ok(Arc::clone(log.insert(Arc::new((self.open)()?))))
    }

    /// The log if it exists: `None` while no process has committed to the group, and then
    /// nothing is created. A log is created with its `state` file first, so that file is what
    /// tells.
    fn existing_log(&self) -> Result<Option<Arc<Partition>>> {
        if self.log.lock().is_none()
            && let Err(error) = self.dir.join(format::STATE_FILE).symlink_metadata()
            && error.kind() == std::io::ErrorKind::NotFound
        {
            return Ok(None);
        }
        self.open_log().map(Some)
    }

    /// Appends one commit of `offsets` as a single batch. `topic_id` gives each partition's
    /// topic id. Returns the log's end offset after the commit (see `make_durable`).
    pub(crate) fn commit(
        &self,
        offsets: &[(TopicPartition, u64)],
        member_id: u64,
        generation: u64,
        topic_id: impl Fn(&TopicPartition) -> u64,
    ) -> Result<u64> {
        self.append(offsets, member_id, generation, topic_id, (ProducerStamp::NONE, None))
    }

    /// Appends `offsets`, sent to a transaction, as one batch stamped `producer` (a
    /// transactional producer's, checked against `fence`): they count once its transaction
    /// commits. Returns the log's end offset after them.
    pub(crate) fn send_to_transaction(
        &self,
        offsets: &[(TopicPartition, u64)],
        (member_id, generation): (u64, u64),
        topic_id: impl Fn(&TopicPartition) -> u64,
        (producer, fence): (ProducerStamp, &EpochFence<'_>),
    ) -> Result<u64> {
        debug_assert!(producer.transactional && !offsets.is_empty());
        self.append(offsets, member_id, generation, topic_id, (producer, Some(fence)))
    }

    fn append(
        &self,
        offsets: &[(TopicPartition, u64)],
        member_id: u64,
        generation: u64,
        topic_id: impl Fn(&TopicPartition) -> u64,
        stamp: (ProducerStamp, Option<&EpochFence<'_>>),
    ) -> Result<u64> {
        if offsets.is_empty() {
            return Ok(self.existing_log()?.map_or(0, |log| log.tail().end_offset));
        }
        let keys: Vec<Vec<u8>> = offsets.iter().map(|(tp, _)| encode_commit_key(tp)).collect();
        let values: Vec<[u8; 32]> =
            offsets.iter().map(|(tp, offset)| encode_commit_value(*offset, member_id, generation, topic_id(tp))).collect();
        let records: Vec<Record<'_>> = keys.iter().zip(&values).map(|(key, value)| Record::new(value).key(key)).collect();
        let now_ms = clock::wall_clock_ms();
        let timestamps = vec![now_ms; records.len()];
        let batch_bytes = format::batch_bytes(&records, &timestamps);
        if batch_bytes > MAX_BATCH_BYTES {
            return Err(Error::CommitTooLarge { partitions: offsets.len(), size_bytes: batch_bytes, max_bytes: MAX_BATCH_BYTES });
        }
        let first = self.open_log()?.append(&records, &timestamps, batch_bytes, stamp, now_ms)?;
        Ok(first + records.len() as u64)
    }

    /// The log itself, for tests that look at what it holds.
    #[cfg(test)]
    pub(crate) fn log(&self) -> Arc<Partition> {
        self.open_log().expect("the offset log opens")
    }

    /// Appends a transaction's `marker` (encoded) to the log, if the log exists (a transaction
    /// that sent offsets created it; a group deleted since has nothing left to decide), and
    /// with `sync` makes it durable.
    pub(crate) fn append_marker(&self, marker: &mut [u8], sync: bool, now_ms: u64) -> Result<()> {
        let Some(log) = self.existing_log()? else { return Ok(()) };
        let offset = log.append_encoded(marker, None, now_ms).map_err(|error| log.explain(error))?;
        match sync {
            true => log.sync_through(offset + 1),
            false => Ok(()),
        }
    }

    /// Waits until the log is durable through `end_offset`, per `durability`.
    pub(crate) fn make_durable(&self, end_offset: u64, durability: Durability) -> Result<()> {
        match (durability, self.existing_log()?) {
            (Durability::Sync, Some(log)) => log.sync_through(end_offset),
            // Without a log nothing was ever committed, so there is nothing to make durable.
            (Durability::Sync, None) | (Durability::Buffered | Durability::Interval(_), _) => Ok(()),
        }
    }

    /// Compacts the log down to about the latest commit of each partition.
    pub(crate) fn compact(&self, now_ms: u64, stop: &dyn Fn() -> bool) -> Result<usize> {
        match self.existing_log()? {
            Some(log) => log.compact(&offset_log_config(), now_ms, stop),
            None => Ok(0),
        }
    }

    /// Syncs the log if this process committed since the last sync (for `Durability::Interval`).
    pub(crate) fn sync_if_dirty(&self) -> Result<()> {
        // A process that committed has the log open.
        match self.log.lock().clone() {
            Some(log) => log.sync_if_dirty(),
            None => Ok(()),
        }
    }

    /// The offset log, if this process has opened it.
    pub(crate) fn opened_log(&self) -> Option<Arc<Partition>> {
        self.log.lock().clone()
    }

    /// The committed offset of `partition` and the id of the topic it was committed for,
    /// including every commit published so far by any thread or process.
    pub(crate) fn committed(&self, partition: &TopicPartition) -> Result<Option<(u64, u64)>> {
        let mut view = self.view.lock();
        self.catch_up(&mut view)?;
        Ok(view.get(partition))
    }

    /// The committed offsets of `partitions`, as `committed` gives them, all as of one moment:
    /// a commit of several partitions is seen whole or not at all.
    pub(crate) fn committed_many(&self, partitions: &[TopicPartition]) -> Result<Vec<Option<(u64, u64)>>> {
        let mut view = self.view.lock();
        self.catch_up(&mut view)?;
        Ok(partitions.iter().map(|partition| view.get(partition)).collect())
    }

    /// Whether offsets of any of `partitions` were sent to a transaction still open: their
    /// committed offset may yet move.
    pub(crate) fn unstable(&self, partitions: &[TopicPartition]) -> Result<bool> {
        let mut view = self.view.lock();
        self.catch_up(&mut view)?;
        Ok(view.pending.values().any(|pending| pending.offsets.iter().any(|(tp, _)| partitions.contains(tp))))
    }

    /// Every committed offset.
    pub(crate) fn all(&self) -> Result<HashMap<TopicPartition, (u64, u64)>> {
        let mut view = self.view.lock();
        self.catch_up(&mut view)?;
        Ok(view.committed.iter().map(|(partition, c)| (partition.clone(), (c.offset, c.topic_id))).collect())
    }

    /// Folds the records appended since the last look into the map, and the markers into the
    /// pending offsets they decide.
    fn catch_up(&self, view: &mut View) -> Result<()> {
        let Some(log) = self.existing_log()? else {
            return Ok(());
        };
        // Read before the tail: a transaction not open at this moment has its marker below the
        // tail read next.
        let stable = log.last_stable_offset(&log.tail());
        let tail = log.tail();
        if view.read_to < tail.end_offset {
            let mut cursor = match view.cursor.take() {
                Some(cursor) if cursor.offset() == view.read_to => cursor,
                _ => log.cursor_at(view.read_to.max(log.start_offset()), &tail, true)?,
            };
            log.scan_batches(&mut cursor, &tail, tail.end_offset, |batch| {
                match batch {
                    ScannedBatch::Marker { producer, commit, .. } => view.decide(producer, commit),
                    ScannedBatch::Records { producer, records } => {
                        for record in &records {
                            let parsed = record.key().and_then(decode_commit_key).zip(decode_commit_value(record.value()));
                            let Some((partition, (offset, topic_id))) = parsed else {
                                return Err(Error::corrupt(
                                    &log.dir,
                                    0,
                                    format!("the offset record at offset {} does not parse", record.offset()),
                                ));
                            };
                            let entry = Committed { offset, topic_id, at: record.offset() };
                            match producer.transactional {
                                false => {
                                    view.committed.insert(partition, entry);
                                }
                                true => {
                                    let pending = view.pending.entry(producer.id).or_insert(Pending {
                                        epoch: producer.epoch,
                                        first_at: entry.at,
                                        offsets: Vec::new(),
                                    });
                                    if pending.epoch != producer.epoch {
                                        // The older epoch's transaction ended without a marker
                                        // here (lost to a power cut), which aborted it.
                                        *pending = Pending { epoch: producer.epoch, first_at: entry.at, offsets: Vec::new() };
                                    }
                                    pending.offsets.push((partition, entry));
                                }
                            }
                        }
                    }
                }
                Ok(())
            })?;
            view.read_to = cursor.offset();
            view.cursor = Some(cursor);
        }
        // Below the last stable offset no transaction is open: one with no marker after its
        // offsets never ended (its coordinator's state was lost to a power cut), which aborted it.
        view.pending.retain(|_, pending| pending.first_at >= stable);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_log_ids_are_fixed_by_the_name() {
        // Written in every offset log's headers: a change here would refuse every existing one.
        assert_eq!(group_log_id("billing"), LogId { topic_id: 0xef48_e4ee_1193_818d, partition: 0 });
        assert_ne!(group_log_id("billing"), group_log_id("billing2"));
    }
}
