//! The offset store: a group's committed offsets, kept as a log of small records (one per
//! partition committed, keyed by the partition) in the group's `offsets/` directory. A commit is
//! one batch append, so a commit of many partitions lands whole or not at all, and the log's
//! recovery (a torn tail is cut off at its checksum) makes a crash show the old value or the new
//! one, never a mix. Each process folds the log into a map, reading only what was appended since
//! it last looked.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::format::{self, BATCH_HEADER_BYTES};
use crate::partition::{Cursor, Partition};
use crate::producer::Durability;
use crate::record::{Record, Records};
use crate::sys;
use crate::topic::{CleanupPolicy, TopicConfig, TopicPartition};

/// How large each segment of an offset log grows before a new one starts.
const OFFSET_SEGMENT_BYTES: u64 = 16 << 20;
/// The most partitions one commit may name (one batch must stay well under its size limit).
pub(crate) const MAX_COMMIT_PARTITIONS: usize = 100_000;

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

pub(crate) struct OffsetStore {
    log: Arc<Partition>,
    view: Mutex<View>,
}

/// What this process has read of the log so far.
#[derive(Default)]
struct View {
    cursor: Option<Cursor>,
    /// The log offset up to which `committed` is folded in.
    read_to: u64,
    /// Per partition: the committed offset and the id of the topic it was committed for.
    committed: HashMap<TopicPartition, (u64, u64)>,
}

impl OffsetStore {
    pub(crate) fn new(log: Arc<Partition>) -> Self {
        OffsetStore { log, view: Mutex::new(View::default()) }
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
        if offsets.is_empty() {
            return Ok(self.log.tail().end_offset);
        }
        if offsets.len() > MAX_COMMIT_PARTITIONS {
            return Err(Error::InvalidConfig(format!(
                "a commit names {} partitions; at most {MAX_COMMIT_PARTITIONS} fit in one",
                offsets.len()
            )));
        }
        let keys: Vec<Vec<u8>> = offsets.iter().map(|(tp, _)| format::encode_commit_key(tp)).collect();
        let values: Vec<[u8; 32]> = offsets
            .iter()
            .map(|(tp, offset)| format::encode_commit_value(*offset, member_id, generation, topic_id(tp)))
            .collect();
        let records: Vec<Record<'_>> = keys.iter().zip(&values).map(|(key, value)| Record::new(value).key(key)).collect();
        let now_ms = sys::wall_clock_ms();
        let timestamps = vec![now_ms; records.len()];
        let batch_bytes = u64::from(BATCH_HEADER_BYTES) + records.iter().map(format::record_bytes).sum::<u64>();
        let first = self.log.append(&records, &timestamps, batch_bytes, now_ms)?;
        Ok(first + records.len() as u64)
    }

    /// The log itself, for tests that look at what it holds.
    #[cfg(test)]
    pub(crate) fn log(&self) -> &Arc<Partition> {
        &self.log
    }

    /// Waits until the log is durable through `end_offset`, per `durability`.
    pub(crate) fn make_durable(&self, end_offset: u64, durability: Durability) -> Result<()> {
        match durability {
            Durability::Sync => self.log.sync_through(end_offset),
            Durability::Buffered | Durability::Interval(_) => Ok(()),
        }
    }

    /// Compacts the log down to about the latest commit of each partition.
    pub(crate) fn compact(&self, now_ms: u64, stop: &dyn Fn() -> bool) -> Result<usize> {
        self.log.compact(&offset_log_config(), now_ms, stop)
    }

    /// Syncs the log if this process committed since the last sync (for `Durability::Interval`).
    pub(crate) fn sync_if_dirty(&self) -> Result<()> {
        self.log.sync_if_dirty()
    }

    /// The committed offset of `partition` and the id of the topic it was committed for,
    /// including every commit published so far by any thread or process.
    pub(crate) fn committed(&self, partition: &TopicPartition) -> Result<Option<(u64, u64)>> {
        let mut view = self.view.lock();
        self.catch_up(&mut view)?;
        Ok(view.committed.get(partition).copied())
    }

    /// Every committed offset.
    pub(crate) fn all(&self) -> Result<HashMap<TopicPartition, (u64, u64)>> {
        let mut view = self.view.lock();
        self.catch_up(&mut view)?;
        Ok(view.committed.clone())
    }

    /// Folds the records appended since the last look into the map.
    fn catch_up(&self, view: &mut View) -> Result<()> {
        let tail = self.log.tail();
        while view.read_to < tail.end_offset {
            let mut cursor = match view.cursor.take() {
                Some(cursor) if cursor.offset() == view.read_to => cursor,
                _ => self.log.cursor_at(view.read_to.max(self.log.start_offset()), &tail, true)?,
            };
            let mut records = Records::with_capacity(4096);
            self.log.advance(&mut cursor, &tail, u64::MAX, Some((&mut records, 4096)), true)?;
            for record in &records {
                let parsed = record.key().and_then(format::decode_commit_key).zip(format::decode_commit_value(record.value()));
                let Some((partition, offset)) = parsed else {
                    return Err(Error::corrupt(
                        &self.log.dir,
                        0,
                        format!("the offset record at offset {} does not parse", record.offset()),
                    ));
                };
                view.committed.insert(partition, offset);
            }
            view.read_to = cursor.offset();
            view.cursor = Some(cursor);
        }
        Ok(())
    }
}
