//! Appending to a partition under the cross-process lock: writing a batch past the published
//! tail, indexing and publishing it, rolling to a new segment, sealing the old one in the
//! background, and the group-commit syncs that make appends durable. The steps are drawn in
//! ARCHITECTURE.md ("The append protocol").

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Buffers, Partition};
use crate::error::{Error, Result};
use crate::failpoint::failpoint;
use crate::log::dir::{self, list_segments, remove_segment_files};
use crate::log::format::{
    self, BatchHeader, FILE_HEADER_BYTES, INDEX_ENTRY_BYTES, INDEX_RESERVE_STEP_BYTES, IndexEntry, LOG_RESERVE_STEP_BYTES,
    MAX_BATCH_BYTES, PREFAULT_MAX_BYTES, PWRITE_MIN_BATCH_BYTES, ProducerStamp,
};
use crate::log::segment::{Segment, UnusedSpace};
use crate::log::state::{AppendGuard, EpochFence, ProducerCheck, Tail};
use crate::record::Record;
use crate::sys::file;
use crate::topic::TopicConfig;

impl Partition {
    /// Appends `records` (already checked against the size limits) as one uncompressed batch
    /// stamped `producer` (checked against `fence`, see `append_with`), and returns the offset
    /// of the first. `batch_bytes` is the encoded size of the batch. Small batches are encoded
    /// straight into the mapping, under the lock.
    pub(crate) fn append(
        self: &Arc<Self>,
        records: &[Record<'_>],
        timestamps_ms: &[u64],
        batch_bytes: u64,
        (producer, fence): (ProducerStamp, Option<&EpochFence>),
        now_ms: u64,
    ) -> Result<u64> {
        debug_assert!(!records.is_empty());
        let count = records.len() as u64;
        let stamp = (producer, fence);
        self.append_with(batch_bytes, count, stamp, false, now_ms, |buffers, segment, guard, position, base_offset| {
            if let ([record], [timestamp_ms]) = (records, timestamps_ms)
                && batch_bytes >= PWRITE_MIN_BATCH_BYTES
            {
                // One large record: write its value straight from the caller's memory.
                let Buffers { batch, suffix } = buffers;
                format::frame_single_record(batch, suffix, base_offset, producer, record, *timestamp_ms);
                segment.pwrite_unpublished(guard, position, &[batch.as_slice(), record.value_bytes(), suffix.as_slice()])?;
                Ok(*timestamp_ms)
            } else if batch_bytes >= PWRITE_MIN_BATCH_BYTES {
                // The buffer only grows: `write_batch` sets every byte of what it is given, so
                // zeroing it again for each batch would be wasted work.
                let buffer = &mut buffers.batch;
                if buffer.len() < batch_bytes as usize {
                    buffer.resize(batch_bytes as usize, 0);
                }
                let out = &mut buffer[..batch_bytes as usize];
                let max_timestamp_ms = format::write_batch(out, base_offset, producer, records, timestamps_ms);
                segment.pwrite_unpublished(guard, position, &[out])?;
                Ok(max_timestamp_ms)
            } else {
                let mut max_timestamp_ms = 0;
                segment.write_unpublished(guard, position, batch_bytes, |out| {
                    max_timestamp_ms = format::write_batch(out, base_offset, producer, records, timestamps_ms);
                })?;
                Ok(max_timestamp_ms)
            }
        })
    }

    /// Appends `batch`, encoded and sealed before the lock was taken (a compressed one, or a
    /// marker), and returns the offset of its first record. Only its base offset is filled in
    /// under the lock: the checksum leaves it out.
    pub(crate) fn append_encoded(self: &Arc<Self>, batch: &mut [u8], fence: Option<&EpochFence>, now_ms: u64) -> Result<u64> {
        let header = BatchHeader::read(batch);
        let batch_bytes = batch.len() as u64;
        let count = u64::from(header.record_count);
        let stamp = (header.producer, fence);
        let write = |_: &mut Buffers, segment: &Segment, guard: &AppendGuard<'_>, position, base_offset| {
            format::set_base_offset(batch, base_offset);
            if batch_bytes >= PWRITE_MIN_BATCH_BYTES {
                segment.pwrite_unpublished(guard, position, &[batch])?;
            } else {
                segment.write_unpublished(guard, position, batch_bytes, |out| out.copy_from_slice(batch))?;
            }
            Ok(header.max_timestamp_ms)
        };
        self.append_with(batch_bytes, count, stamp, header.is_marker(), now_ms, write)
    }

    /// The append protocol around one batch of `batch_bytes` holding `record_count` records
    /// stamped `producer` (a `marker` when it ends a transaction): lock, check the producer's
    /// sequence (and, for a transactional producer's batch, its `fence`: the epoch its
    /// coordinator has now, which must still be the batch's), roll if due, reserve, `write`
    /// the batch (given the writer's buffers, the segment, the lock, the position and the base
    /// offset; it returns the batch's max timestamp), index, publish, unlock, prefault.
    /// Returns the base offset (the first one's, for a repeat of a producer's last batch).
    fn append_with(
        self: &Arc<Self>,
        batch_bytes: u64,
        record_count: u64,
        (producer, fence): (ProducerStamp, Option<&EpochFence>),
        marker: bool,
        now_ms: u64,
        write: impl FnOnce(&mut Buffers, &Segment, &AppendGuard<'_>, u64, u64) -> Result<u64>,
    ) -> Result<u64> {
        debug_assert!(batch_bytes <= MAX_BATCH_BYTES && record_count > 0);
        let mut locked = self.writer.lock();
        let writer = &mut *locked;
        let guard = self.state.lock_append(|| self.repair())?;
        self.check_not_poisoned()?;
        let fenced = |current_epoch| {
            let (partition, producer_id) = (Some(self.id.clone()), producer.id);
            Error::ProducerFenced { partition, producer_id, epoch: producer.epoch, current_epoch }
        };
        if let Some(fence) = fence
            && let Some(current_epoch) = fence.moved_from(producer.epoch)
        {
            return Err(fenced(current_epoch));
        }
        let mut producer_slot = None;
        if producer != ProducerStamp::NONE {
            let check = if marker { guard.check_marker(producer) } else { guard.check_producer(producer, record_count as u32) };
            match check {
                // A marker of a producer the table does not know ends nothing open here.
                ProducerCheck::Next { slot: None } if marker => {}
                ProducerCheck::Next { slot } => producer_slot = Some(guard.producer_slot(slot, &self.id)?),
                ProducerCheck::Repeat { base_offset } => return Ok(base_offset),
                ProducerCheck::Fenced { epoch } => return Err(fenced(epoch)),
                ProducerCheck::OutOfOrder { expected } => {
                    let (partition, producer_id, found) = (self.id.clone(), producer.id, producer.base_sequence);
                    return Err(Error::OutOfOrderSequence { partition, producer_id, expected, found });
                }
            }
        }
        let mut tail = self.state.tail();
        // Borrowed from the writer, not counted: a reference count shared by the threads of a
        // process would be a cache line they pass around at every send.
        let mut segment = self.writer_segment(&mut writer.active, tail.active_base)?;
        // Writers in other processes may have reserved more of the file than this one knows,
        // and a damaged state file may claim more than any did: the files have the last word.
        segment.note_reserved(tail.log_reserved_bytes, tail.index_reserved_bytes);
        tail.log_reserved_bytes = tail.log_reserved_bytes.min(segment.log_reserved_bytes());
        tail.index_reserved_bytes = tail.index_reserved_bytes.min(segment.index_length());
        let header_bytes = u64::from(FILE_HEADER_BYTES);
        let empty = tail.end_position == header_bytes;
        // A segment made before `segment_bytes` grew is bounded by its own capacity.
        let segment_bytes =
            writer.config.segment_bytes.min(segment.capacity_bytes().saturating_sub(header_bytes + MAX_BATCH_BYTES));
        let too_big = tail.end_position + batch_bytes > header_bytes + segment_bytes;
        let too_old = now_ms.saturating_sub(segment.created_ms()) >= writer.config.segment_ms;
        if !empty && (too_big || too_old) {
            // The segment to seal, with where its data ends (its log bytes and index entries).
            let (log_bytes, index_entries) = (tail.end_position, tail.index_count);
            let sealed = writer.active.take().expect("the writer's segment was just set");
            // The space the segment sealed at this writer's last roll reserved past its data
            // goes back before this roll asks for more, if the background has not given it
            // back yet: so a producer rolling faster than those threads run cannot fill the
            // disk with reservations nothing uses.
            if let Some(previous) = writer.unreleased.take() {
                previous.release();
            }
            self.roll(&guard, &mut tail, &mut writer.active, &writer.config, now_ms)?;
            failpoint!("roll-before-release");
            // The roll is published: the old segment is sealed whether or not this batch then
            // fits. What it reserved past its data goes back in the background (a hole punched
            // in each file takes a few hundred microseconds), by the next roll at the latest
            // (above), or sooner if this writer finds the disk full (see `or_release`).
            let unused = UnusedSpace::new(Arc::clone(&sealed), log_bytes, index_entries);
            writer.unreleased = Some(Arc::clone(&unused));
            sealed.expect_reads();
            self.seal_in_background(sealed.base_offset(), unused);
            segment = writer.active.as_deref().expect("the roll set the writer's segment");
        }
        // The next roll's files are made once an eighth of this segment is full or half its
        // time is up: early enough for their sync (a journal commit, which may wait for the
        // writeback of the pages being filled) to be done by the roll even when small segments
        // roll every few milliseconds, and not by the roll's own send. Asked for at half, one
        // roll in seven of 1 MiB segments at 140,000 sends a second found none ready.
        let eighth_full = tail.end_position + batch_bytes - header_bytes >= segment_bytes / 8;
        let half_age = now_ms.saturating_sub(segment.created_ms()) >= writer.config.segment_ms / 2;
        let spare_due = (eighth_full || half_age) && writer.spare_asked_for != Some(segment.base_offset());

        let end = tail.end_position + batch_bytes;
        // Reserve ahead of the tail by as much as is prefaulted, so that the prefaulter never
        // waits for this path. Only what this batch needs must succeed: on a full disk the
        // sends go on until the reserved space runs out.
        if end + PREFAULT_MAX_BYTES > tail.log_reserved_bytes && tail.log_reserved_bytes < segment.capacity_bytes() {
            let wanted = (end + PREFAULT_MAX_BYTES).next_multiple_of(LOG_RESERVE_STEP_BYTES).min(segment.capacity_bytes());
            match or_release(&mut writer.unreleased, || segment.reserve_log(wanted)) {
                Ok(()) => tail.log_reserved_bytes = wanted,
                Err(_) if end <= tail.log_reserved_bytes => {}
                Err(error) => return Err(error),
            }
        }
        let base_offset = tail.end_offset;
        let max_timestamp_ms = write(&mut writer.buffers, segment, &guard, tail.end_position, base_offset)?;
        self.index_batch(segment, &mut tail, base_offset, writer.config.index_interval_bytes, &mut writer.unreleased)?;
        tail.end_offset += record_count;
        tail.end_position = end;
        tail.max_timestamp_ms = tail.max_timestamp_ms.max(max_timestamp_ms);
        if let Some(slot) = producer_slot
            && producer.transactional
            && !marker
        {
            guard.hold_back_readers(slot, producer, base_offset);
        }
        failpoint!("append-before-publish");
        self.state.publish(&guard, tail);
        match producer_slot {
            Some(slot) if marker => guard.note_marker(slot, producer, base_offset),
            Some(slot) => guard.note_producer(slot, producer, record_count as u32, base_offset),
            None => {}
        }
        drop(guard);
        // Only writes through the mapping fault; large batches go through `pwrite`, which a
        // prefaulter running beside it would only slow down (both fill the same pages).
        let prefault = (batch_bytes < PWRITE_MIN_BATCH_BYTES).then(|| segment.claim_prefault(end)).flatten();
        let segment_base = segment.base_offset();
        let prefault = prefault.map(|range| (range, Arc::clone(writer.active.as_ref().expect("the writer's segment"))));
        if spare_due {
            writer.spare_asked_for = Some(segment_base);
            self.prepare_spare(&writer.config);
        }
        drop(locked);
        if let Some((range, segment)) = prefault {
            let partition = Arc::clone(self);
            // A segment rolled meanwhile (here or in another process) has its space past its data
            // given back, now or soon: mapping pages there would allocate it again. A roll
            // between this look and the mapping can still do that, for at most one window per
            // segment.
            self.background.prefault(range.1 - range.0, move || {
                if partition.tail().active_base == segment.base_offset() {
                    segment.prefault(range);
                }
            });
        }
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
        Ok(base_offset)
    }

    /// Makes the files of this process's next roll (see `Spare`), unless it has them or is
    /// syncing them: created here, so that what they take of a full disk is taken in the
    /// order of the sends (a failure only leaves the roll to create its files itself), and
    /// synced in the background, which takes as long as the file system's journal commit (on
    /// ext4, up to writing back every dirty page of the segment being filled). A roll uses
    /// them only once they are synced.
    fn prepare_spare(self: &Arc<Self>, config: &TopicConfig) {
        let mut slot = self.spare.lock();
        if slot.ready.is_some() || slot.syncing || self.still_current().is_err() {
            return;
        }
        let Ok(spare) = dir::prepare_spare(&self.dir, self.log_id, config) else { return };
        failpoint!("spare-prepared");
        slot.syncing = true;
        drop(slot);
        let partition = Arc::clone(self);
        let started = self.background.prepare_spare(move || {
            let synced = spare.sync().is_ok();
            failpoint!("spare-synced");
            let mut slot = partition.spare.lock();
            slot.syncing = false;
            if synced {
                slot.ready = Some(spare);
            }
        });
        if !started {
            self.spare.lock().syncing = false;
        }
    }

    /// Gives back `unused` and then makes sealed segment `base` durable, off the append path: a
    /// 1 GiB fsync takes seconds, and nothing waits for it except `Durability::Sync` senders,
    /// whose `sync_through` covers every segment since the last sync anyway. Recovery treats a
    /// segment not marked fully synced as possibly torn, and gives back the unused space of a
    /// writer that died before its releaser ran.
    fn seal_in_background(self: &Arc<Self>, base: u64, unused: Arc<UnusedSpace>) {
        let partition = Arc::clone(self);
        let sealed_end = self.tail().active_base.max(base + 1);
        // The sealer holds no mapping of the segment while it waits: retention may delete it
        // meanwhile, and a mapping held would keep its space from coming back (the releaser
        // lets go of it once the space is given back). A failure poisons the partition, which
        // the next send reports.
        self.background.seal(
            move || unused.release(),
            move || {
                let _ = partition.seal(base, sealed_end);
            },
        );
    }

    /// Makes sealed segment `base`, which ends at `sealed_end`, durable and marks it fully
    /// synced, durably. The records go through the group commit, so that this fsync and a
    /// sender's never race on one file (Linux reports a writeback error to one fsync only). That
    /// returns at once when a `Sync` sender's round already covered them while the segment was
    /// active, which marked only the bytes it had then; and a marker becomes durable only with
    /// the file's next fsync. So the segment is marked whole and synced once more here (one
    /// page), under the sync lock like every fsync and marker write of the partition: recovery
    /// relies on the marker to tell a lost segment from a torn one.
    fn seal(&self, base: u64, sealed_end: u64) -> Result<()> {
        self.sync_through(sealed_end)?;
        self.state.under_sync_lock(|| {
            self.check_not_poisoned()?;
            if self.start_offset() >= sealed_end {
                // Retention deleted it meanwhile: nothing to mark.
                return Ok(());
            }
            // The segment after it may have been placed from a spare, with no directory sync:
            // its name must be durable before this one is marked whole (see `recovery.rs`).
            file::fsync_dir(&self.dir).inspect_err(|_| self.poison_unless_deleted())?;
            let sealed = self.segment(base)?;
            failpoint!("seal-before-marker");
            sealed.record_synced(format::FULLY_SYNCED);
            self.sync_or_poison(&sealed)
        })
    }

    /// Adds an index entry for the batch about to be published at the tail, if one is due.
    fn index_batch(
        &self,
        segment: &Segment,
        tail: &mut Tail,
        base_offset: u64,
        interval_bytes: u32,
        unreleased: &mut Option<Arc<UnusedSpace>>,
    ) -> Result<()> {
        let due = tail.end_position - tail.last_indexed_position >= u64::from(interval_bytes);
        if !due || tail.index_count >= segment.index_capacity_entries() {
            return Ok(());
        }
        let needed = u64::from(FILE_HEADER_BYTES) + (tail.index_count + 1) * u64::from(INDEX_ENTRY_BYTES);
        if needed > tail.index_reserved_bytes {
            let wanted = needed.next_multiple_of(INDEX_RESERVE_STEP_BYTES);
            or_release(unreleased, || segment.reserve_index(wanted))?;
            tail.index_reserved_bytes = wanted;
        }
        let entry = IndexEntry {
            relative_offset: (base_offset - segment.base_offset()) as u32,
            position: tail.end_position as u32,
            max_timestamp_before_ms: tail.max_timestamp_ms,
        };
        segment.write_index_entry(tail.index_count, entry);
        tail.index_count += 1;
        tail.last_indexed_position = tail.end_position;
        Ok(())
    }

    /// The writer's segment at `base`, mapped and remembered if the writer knew another.
    fn writer_segment<'w>(&self, active: &'w mut Option<Arc<Segment>>, base: u64) -> Result<&'w Segment> {
        if active.as_ref().is_none_or(|segment| segment.base_offset() != base) {
            let segment = self.segment(base)?;
            segment.expect_appends();
            *active = Some(segment);
        }
        Ok(active.as_deref().expect("just set"))
    }

    /// Starts a new segment at the tail and makes it the writer's `active` one; the caller
    /// makes the old one durable.
    fn roll(
        &self,
        guard: &AppendGuard<'_>,
        tail: &mut Tail,
        active: &mut Option<Arc<Segment>>,
        config: &TopicConfig,
        now_ms: u64,
    ) -> Result<()> {
        self.still_current()?;
        // One look at the directory serves two ends. Segments past the published tail are what
        // a writer that died (or failed) half-way through a roll left behind: they must go
        // before a later segment is published, or readers listing the directory would take
        // them for part of the log. And the segments other processes deleted (retention) are
        // let go of, so that their space returns before this roll asks for more.
        let bases = list_segments(&self.dir)?;
        for &base in bases.iter().filter(|&&base| base > tail.active_base) {
            remove_segment_files(&self.dir, base)?;
        }
        self.set_segments(bases, tail.active_base);
        let spare = self.spare.lock().ready.take();
        let (segment, new_tail) =
            dir::roll_segment(&self.dir, &self.id, self.log_id, config, tail.end_offset, now_ms, &self.users, spare)?;
        let segment = Arc::new(segment);
        *tail = new_tail;
        failpoint!("roll-before-publish");
        self.state.publish(guard, *tail);
        // The list is whole up to the old tail's segment, which this one follows.
        self.segments.write().insert(tail.active_base, Some(Arc::clone(&segment)));
        segment.expect_appends();
        *active = Some(segment);
        Ok(())
    }

    /// Runs after a writer died holding the append lock. The published tail is whole (it is
    /// switched atomically), bytes past it are overwritten by the next append, and the only
    /// other thing a dead writer can leave is one index entry past the published count. Zeroing
    /// it is tidiness, not correctness (readers check entries against the log), so a failure
    /// to map the segment is ignored.
    fn repair(&self) {
        let tail = self.state.tail();
        if let Ok(segment) = self.segment(tail.active_base) {
            segment.note_reserved(tail.log_reserved_bytes, tail.index_reserved_bytes);
            let empty = IndexEntry { relative_offset: 0, position: 0, max_timestamp_before_ms: 0 };
            segment.write_index_entry(tail.index_count, empty);
        }
    }

    fn sync_or_poison(&self, segment: &Segment) -> Result<()> {
        segment.sync().inspect_err(|_| self.poison_unless_deleted())
    }

    /// Poisons the partition after a failed sync, unless its topic was deleted (its directory
    /// is gone, so the sync of the directory failed): that is `UnknownTopic`, not lost data.
    fn poison_unless_deleted(&self) {
        if self.still_current().is_ok() {
            self.state.poison();
        }
    }

    /// Makes everything below `end_offset` durable, sharing fsyncs among concurrent callers in
    /// every process (group commit).
    pub(crate) fn sync_through(&self, end_offset: u64) -> Result<()> {
        self.state.sync_through(end_offset, || {
            // The failed fsync may have dropped pages that a later fsync would not report.
            self.check_not_poisoned()?;
            let tail = self.state.tail();
            // Every segment that may hold unsynced records: from the one holding the first
            // unsynced offset to the active one (sealed segments are synced in the background,
            // which may not have happened yet).
            let from = self.state.synced_offset().max(self.start_offset()).min(tail.active_base);
            if self.known_base_at_or_before(from).is_none_or(|b| b < self.start_offset()) {
                // The list may hold segments retention deleted since, or miss newer ones.
                self.refresh_segments(tail.active_base)?;
            } else {
                self.list_through(tail.active_base)?;
            }
            let first = self.known_base_at_or_before(from).unwrap_or(tail.active_base);
            let bases: Vec<u64> = self.segments.read().range(first..=tail.active_base).map(|(&b, _)| b).collect();
            let mut synced = Vec::with_capacity(bases.len());
            for base in bases {
                let segment = match self.segment(base) {
                    Ok(segment) => segment,
                    // Retention (in any process: it takes the maintenance lock, not this one)
                    // raises the log start before it unlinks a segment, so a segment gone since
                    // the list was made lies below it: its records left the log, nothing to sync.
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound && base < self.start_offset() =>
                    {
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                self.sync_or_poison(&segment)?;
                synced.push(segment);
            }
            // Marked only once all are synced: a segment placed from a spare has its name made
            // durable by its own first sync (see `Segment::sync`), and the segment before it
            // must not be marked whole while its successor's name could still be lost (a
            // marker may reach the disk before the next fsync of its file).
            for segment in synced {
                let base = segment.base_offset();
                segment.record_synced(if base == tail.active_base { tail.end_position } else { format::FULLY_SYNCED });
            }
            // Another fsync of these files failed meanwhile; this one may not have seen it.
            self.check_not_poisoned()?;
            Ok(tail.end_offset)
        })
    }

    /// Syncs if this process appended since the last call; for the background flusher.
    pub(crate) fn sync_if_dirty(&self) -> Result<()> {
        if self.dirty.swap(false, Ordering::Relaxed) {
            let synced = self.sync_through(self.tail().end_offset);
            if synced.is_err() {
                // Still not synced: the next flush must fail too (poisoned), not report success.
                self.dirty.store(true, Ordering::Relaxed);
            }
            return synced;
        }
        Ok(())
    }
}

/// Runs `reserve`, and if it finds the disk full, gives back what the writer's last sealed
/// segment holds past its data (unless its releaser has) and runs it once more: a send
/// that rolled gets the space its roll gave back, not whatever a background thread has
/// managed to give back by then.
fn or_release(unreleased: &mut Option<Arc<UnusedSpace>>, mut reserve: impl FnMut() -> Result<()>) -> Result<()> {
    let reserved = reserve();
    if matches!(reserved, Err(Error::DiskFull { .. }))
        && let Some(unused) = unreleased.take()
    {
        unused.release();
        return reserve();
    }
    reserved
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::log::format::{self, FILE_HEADER_BYTES};
    use crate::{Durability, Error, ProducerConfig, Queue, Record, TopicConfig, TopicPartition};

    /// Held by the tests that set `BEFORE_RENAME_UNDER`: it has one slot, and a test setting
    /// it while another's hook waits for its roll would replace that hook.
    static RENAME_HOOK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

    fn queue(name: &str) -> (Queue, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("streamlog-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Queue::open(&dir).unwrap(), dir)
    }

    #[test]
    fn a_half_made_roll_is_never_taken_for_part_of_the_log() {
        // A writer that died after creating a segment's files but before publishing it leaves
        // them behind. Another handle opening the partition must not list them, and the next
        // real roll removes them.
        let (queue, dir) = queue("half-roll");
        queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(1024)).unwrap();
        let producer = queue.producer();
        producer.send("t", Record::new(&[1u8; 300])).unwrap();
        let partition = queue.inner.partition(&TopicPartition::new("t", 0)).unwrap();
        let partition_dir = dir.join("topics/t/0");
        let leftover_base = partition.tail().end_offset;
        let config = queue.topic_config("t").unwrap();
        drop(
            crate::log::dir::new_segment(
                &partition_dir,
                &partition.id,
                partition.log_id,
                &config,
                leftover_base,
                0,
                &partition.users,
            )
            .unwrap(),
        );
        let other = Queue::open(&dir).unwrap();
        for _ in 0..10 {
            producer.send("t", Record::new(&[2u8; 300])).unwrap();
        }
        assert!(
            !partition_dir.join(crate::log::format::segment_file_name(leftover_base)).exists()
                || partition.tail().active_base == leftover_base
        );
        let mut consumer =
            other.consumer(crate::ConsumerConfig::new("g").auto_offset_reset(crate::OffsetReset::Earliest)).unwrap();
        consumer.assign(&[TopicPartition::new("t", 0)]).unwrap();
        let records = consumer.poll(Duration::from_millis(100)).unwrap();
        assert_eq!(records.len(), 11);
        drop((consumer, other, producer, partition, queue));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sync_and_interval_modes_make_sends_durable() {
        let (queue, dir) = queue("durable");
        queue.create_topic("t", 1).unwrap();
        let partition = queue.inner.partition(&TopicPartition::new("t", 0)).unwrap();
        queue.producer().send("t", Record::new(b"buffered")).unwrap();
        assert_eq!(partition.state.synced_offset(), 0, "buffered sends do not fsync");
        let sync = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
        sync.send("t", Record::new(b"sync")).unwrap();
        assert_eq!(partition.state.synced_offset(), 2);
        let interval = queue.producer_with(ProducerConfig::new().durability(Durability::Interval(Duration::from_millis(20))));
        interval.send("t", Record::new(b"interval")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while partition.state.synced_offset() < 3 {
            assert!(std::time::Instant::now() < deadline, "the flusher never synced");
            std::thread::sleep(Duration::from_millis(5));
        }
        interval.send("t", Record::new(b"flushed")).unwrap();
        interval.flush().unwrap();
        assert_eq!(partition.state.synced_offset(), 4);
        drop((sync, interval, partition, queue));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_topic_deleted_and_created_again_during_a_roll_is_an_unknown_topic() {
        // Another handle (as another process would) deletes the topic and creates it again
        // while this one is half-way through a roll: the new file cannot be renamed into the
        // directory that moved away, and the directory of the same name exists again.
        let _hook = RENAME_HOOK.lock();
        let (queue, dir) = queue("roll-delete");
        queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(1024)).unwrap();
        let producer = queue.producer();
        for _ in 0..2 {
            producer.send("t", Record::new(&[1u8; 300])).unwrap();
        }
        let other = Queue::open(&dir).unwrap();
        let recreate = move || {
            other.delete_topic("t").unwrap();
            other.create_topic("t", 1).unwrap();
        };
        *crate::log::segment::BEFORE_RENAME_UNDER.lock() = Some((dir.join("topics/t/0"), Box::new(recreate)));
        let sent = producer.send("t", Record::new(&[2u8; 300]));
        assert!(crate::log::segment::BEFORE_RENAME_UNDER.lock().is_none(), "the send rolled");
        assert!(matches!(&sent, Err(Error::UnknownTopic(t)) if t == "t"), "{sent:?}");
        // The next send goes to the new topic.
        assert_eq!(producer.send("t", Record::new(b"new")).unwrap().offset(), 0);
        drop((producer, queue));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_first_sync_after_a_reopen_syncs_only_what_is_not_known_durable() {
        // Buffered sends over many segments: each sealed one is synced and marked in the
        // background. After a reopen, a sync must not fsync them all again.
        let (queue, dir) = queue("reopen-sync");
        queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
        let producer = queue.producer();
        for _ in 0..300 {
            producer.send("t", Record::new(&[7u8; 100])).unwrap();
        }
        drop((producer, queue));
        let segments = crate::log::dir::list_segments(&dir.join("topics/t/0")).unwrap().len();
        assert!(segments > 10, "{segments} segments");
        let queue = Queue::open(&dir).unwrap();
        let sync = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
        *crate::log::segment::SYNCS_UNDER.lock() = Some((dir.clone(), 0));
        sync.send("t", Record::new(b"one more")).unwrap();
        let (_, fsyncs) = crate::log::segment::SYNCS_UNDER.lock().take().unwrap();
        assert_eq!(fsyncs, 1, "only the active segment needed an fsync, of {segments}");
        drop((sync, queue));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The values of partition 0 of topic `t`, from its start to its end.
    fn read_all(queue: &Queue) -> Vec<Vec<u8>> {
        let partition = TopicPartition::new("t", 0);
        let (start, end) = queue.offsets(&partition).unwrap();
        let mut consumer = queue.consumer(crate::ConsumerConfig::new("reader")).unwrap();
        consumer.assign(std::slice::from_ref(&partition)).unwrap();
        consumer.seek(&partition, start).unwrap();
        let mut values = Vec::new();
        while consumer.position(&partition).unwrap() < end {
            values.extend(consumer.poll(Duration::ZERO).unwrap().iter().map(|r| r.value().to_vec()));
        }
        values
    }

    /// The spare files of the partition's directory, by name, with their inode numbers.
    fn spare_files(dir: &std::path::Path) -> Vec<(String, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("spare."))
            .map(|entry| (entry.file_name().to_string_lossy().into_owned(), entry.metadata().unwrap().ino()))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_roll_renames_the_files_made_ahead_into_place() {
        let (queue, dir) = queue("spare");
        queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
        let producer = queue.producer();
        let partition = queue.inner.partition(&TopicPartition::new("t", 0)).unwrap();
        let partition_dir = dir.join("topics/t/0");
        // Once a send takes the segment past an eighth of its 4,096 bytes, the spare is asked for;
        // waiting for the background threads makes sure it is there before the roll.
        let mut sent = 0u64;
        while partition.tail().end_position < 2400 {
            producer.send("t", Record::new(&[sent as u8; 100])).unwrap();
            sent += 1;
        }
        partition.background.wait();
        let spares = spare_files(&partition_dir);
        assert_eq!(spares.len(), 2, "{spares:?}");
        let (log_spare, index_spare) = (spares.iter().find(|(n, _)| n.ends_with(".log.tmp")).unwrap().1, spares[0].1);
        while partition.tail().active_base == 0 {
            producer.send("t", Record::new(&[sent as u8; 100])).unwrap();
            sent += 1;
        }
        let base = partition.tail().active_base;
        use std::os::unix::fs::MetadataExt;
        let inode = |name: String| std::fs::metadata(partition_dir.join(name)).unwrap().ino();
        assert_eq!(inode(format::segment_file_name(base)), log_spare, "the new log is the spare's file");
        assert_eq!(inode(format::index_file_name(base)), index_spare, "the new index is the spare's file");
        assert!(spare_files(&partition_dir).is_empty(), "both spare files were used");
        for _ in 0..5 {
            producer.send("t", Record::new(&[sent as u8; 100])).unwrap();
            sent += 1;
        }
        drop((producer, partition, queue));
        // What the reopened queue reads back, from both segments (the new one's header names it).
        let queue = Queue::open(&dir).unwrap();
        let read = read_all(&queue);
        assert_eq!(read.len() as u64, sent);
        assert!(read.iter().enumerate().all(|(i, value)| value == &vec![i as u8; 100]));
        drop(queue);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recovery_writes_again_a_header_a_power_cut_left_as_the_spare_placeholder() {
        // A power cut that kept the rename of a spare but not the header the roll wrote into it
        // leaves a segment named for its base offset whose header is still the placeholder.
        let (queue, dir) = queue("spare-cut");
        queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
        let producer = queue.producer();
        let partition = queue.inner.partition(&TopicPartition::new("t", 0)).unwrap();
        let mut sent = 0u64;
        while partition.tail().active_base == 0 {
            producer.send("t", Record::new(&[sent as u8; 100])).unwrap();
            sent += 1;
            if partition.tail().end_position > 2400 {
                partition.background.wait();
            }
        }
        producer.send("t", Record::new(&[sent as u8; 100])).unwrap();
        sent += 1;
        let base = partition.tail().active_base;
        drop((producer, partition, queue));
        let partition_dir = dir.join("topics/t/0");
        for (name, magic) in
            [(format::segment_file_name(base), format::SEGMENT_MAGIC), (format::index_file_name(base), format::INDEX_MAGIC)]
        {
            let path = partition_dir.join(name);
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
            let mut head = [0u8; FILE_HEADER_BYTES as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).unwrap();
            let header = format::FileHeader::decode(&head, magic, &path).unwrap();
            let placeholder = format::FileHeader { base_offset: u64::MAX, created_ms: 0, flags: format::SEGMENT_SPARE, ..header };
            std::os::unix::fs::FileExt::write_all_at(&file, &placeholder.encode(), 0).unwrap();
        }
        let queue = Queue::open(&dir).unwrap();
        let read = read_all(&queue);
        assert_eq!(read.len() as u64, sent, "every record, the ones past the placeholder too");
        assert!(read.iter().enumerate().all(|(i, value)| value == &vec![i as u8; 100]));
        assert_eq!(queue.producer().send("t", Record::new(b"next")).unwrap().offset(), sent);
        drop(queue);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_sealed_segments_reservation_is_given_back_by_the_writers_next_roll_at_the_latest() {
        // With the background held back, only the writer gives reservations back: each roll
        // the one of the segment sealed by the roll before, before it asks for space of its
        // own, and not the one it seals (a hole punched would cost the rolling send a few
        // hundred microseconds; the releaser does it).
        let _hook = RENAME_HOOK.lock();
        let (queue, dir) = queue("release");
        queue.create_topic_with("t", TopicConfig::new(1).segment_bytes(4096)).unwrap();
        let producer = queue.producer();
        let partition = queue.inner.partition(&TopicPartition::new("t", 0)).unwrap();
        partition.background.hold_back();
        let partition_dir = dir.join("topics/t/0");
        let allocated = move |dir: &std::path::Path, base: u64| {
            let path = dir.join(format::segment_file_name(base));
            std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512
        };
        let mut bases = vec![0];
        let seen_at_roll = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        while bases.len() < 4 {
            // When the next roll puts its files in place, what the one before it sealed.
            let older = bases.len().checked_sub(2).map(|i| bases[i]);
            let (seen, dir) = (std::sync::Arc::clone(&seen_at_roll), partition_dir.clone());
            let look = move || seen.lock().push(older.map(|base| allocated(&dir, base)));
            *crate::log::segment::BEFORE_RENAME_UNDER.lock() = Some((partition_dir.clone(), Box::new(look)));
            while partition.tail().active_base == *bases.last().unwrap() {
                producer.send("t", Record::new(&[1u8; 100])).unwrap();
            }
            bases.push(partition.tail().active_base);
        }
        let seen_at_roll = seen_at_roll.lock();
        assert_eq!(seen_at_roll.len(), 3, "every roll put files in place");
        for (roll, bytes) in seen_at_roll.iter().enumerate().skip(1) {
            let bytes = bytes.expect("a segment sealed two rolls before");
            assert!(bytes <= 64 << 10, "roll {}: the segment sealed the roll before still held {bytes} bytes", roll + 1);
        }
        for &base in &bases[..2] {
            assert!(allocated(&partition_dir, base) <= 64 << 10, "segment {base} still holds its reservation");
        }
        assert!(allocated(&partition_dir, bases[2]) >= 256 << 10, "the last sealed segment's space went back at its roll");
        // Dropped with the writer, the last one's goes back too.
        drop((producer, partition, queue));
        let bytes = allocated(&partition_dir, bases[2]);
        assert!(bytes <= 64 << 10, "the last sealed segment still holds {bytes} bytes");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_roll_by_age() {
        let (queue, dir) = queue("age");
        queue.create_topic_with("t", TopicConfig::new(1).segment_ms(30)).unwrap();
        let producer = queue.producer();
        producer.send("t", Record::new(b"first")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        producer.send("t", Record::new(b"second")).unwrap();
        let partition = queue.inner.partition(&TopicPartition::new("t", 0)).unwrap();
        assert_eq!(partition.tail().active_base, 1, "the old segment rolled before the second send");
        drop((producer, partition, queue));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A step of an idempotent producer, as `the_producer_table_takes_each_batch_once_and_in_turn`
    /// plays them.
    #[derive(Debug, Clone)]
    enum Step {
        /// The next batch of `count` records.
        Next { producer: usize, count: u32 },
        /// The producer's last batch again.
        Repeat { producer: usize },
        /// A batch that skips `by` sequence numbers past the next one.
        Skip { producer: usize, by: u32 },
        /// A batch starting `by` sequence numbers before the next one.
        Back { producer: usize, by: u32 },
        /// A new epoch of the producer, which starts again at 0.
        NewEpoch { producer: usize },
        /// A batch from the epoch before the producer's current one.
        OldEpoch { producer: usize },
        /// Every handle closed and the queue opened alone: a new epoch of the queue.
        Reopen,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let producer = 0..3usize;
        prop_oneof![
            4 => (producer.clone(), 1..4u32).prop_map(|(producer, count)| Step::Next { producer, count }),
            2 => producer.clone().prop_map(|producer| Step::Repeat { producer }),
            1 => (producer.clone(), 1..3u32).prop_map(|(producer, by)| Step::Skip { producer, by }),
            1 => (producer.clone(), 1..4u32).prop_map(|(producer, by)| Step::Back { producer, by }),
            1 => producer.clone().prop_map(|producer| Step::NewEpoch { producer }),
            1 => producer.prop_map(|producer| Step::OldEpoch { producer }),
            1 => Just(Step::Reopen),
        ]
    }

    /// What the model knows of one producer: its epoch, and the sequence number, size and
    /// offset of its last batch in the partition's table (none once forgotten by a reopen).
    #[derive(Debug, Clone, Copy, Default)]
    struct Known {
        epoch: u16,
        last: Option<(u32, u32, u64)>,
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        #[test]
        fn the_producer_table_takes_each_batch_once_and_in_turn(steps in proptest::collection::vec(step(), 1..40)) {
            use crate::log::format::ProducerStamp;
            let (mut queue, dir) = queue("producers");
            queue.create_topic("t", 1).unwrap();
            let tp = TopicPartition::new("t", 0);
            let ids = [5u64 << 32 | 1, 5 << 32 | 2, 6 << 32 | 1];
            let mut known = [Known::default(); 3];
            // The model's log: each record's value names its producer and sequence number.
            let mut log: Vec<Vec<u8>> = Vec::new();
            let mut tag = 0u32;
            for step in steps {
                let producer = match step {
                    Step::Reopen => {
                        drop(queue);
                        queue = Queue::open(&dir).unwrap();
                        known.iter_mut().for_each(|k| k.last = None);
                        continue;
                    }
                    Step::Next { producer, .. } | Step::Repeat { producer } | Step::Skip { producer, .. }
                    | Step::Back { producer, .. } | Step::NewEpoch { producer } | Step::OldEpoch { producer } => producer,
                };
                let k = known[producer];
                let next = k.last.map_or(0, |(sequence, count, _)| sequence.wrapping_add(count));
                let (epoch, sequence, count) = match step {
                    Step::Next { count, .. } => (k.epoch, next, count),
                    Step::Repeat { .. } => match k.last {
                        Some((sequence, count, _)) => (k.epoch, sequence, count),
                        None => (k.epoch, next, 1),
                    },
                    Step::Skip { by, .. } => (k.epoch, next + by, 1),
                    Step::Back { by, .. } => (k.epoch, next.wrapping_sub(by), 1),
                    Step::NewEpoch { .. } => (k.epoch + 1, 0, 1),
                    Step::OldEpoch { .. } => match k.epoch.checked_sub(1) {
                        Some(epoch) => (epoch, 0, 1),
                        None => continue,
                    },
                    Step::Reopen => unreachable!(),
                };
                // Kafka's rules: an older epoch is fenced; a newer one starts at 0; within an
                // epoch the next batch is appended, a repeat of the last one is answered with
                // its offsets, and anything else is out of turn. A producer the table does not
                // know starts anywhere.
                let expected: Result<Option<u64>, &str> = match k.last {
                    None => Ok(None),
                    Some(_) if epoch < k.epoch => Err("fenced"),
                    Some(_) if epoch > k.epoch => if sequence == 0 { Ok(None) } else { Err("out of order") },
                    Some(_) if sequence == next => Ok(None),
                    Some((last_sequence, last_count, base)) if sequence == last_sequence && count == last_count => Ok(Some(base)),
                    Some(_) => Err("out of order"),
                };
                let values: Vec<Vec<u8>> = (0..count).map(|_| { tag += 1; tag.to_le_bytes().to_vec() }).collect();
                let records: Vec<Record<'_>> = values.iter().map(|v| Record::new(v.as_slice())).collect();
                let timestamps = vec![1_000; records.len()];
                let batch_bytes = format::batch_bytes(&records, &timestamps);
                let stamp = ProducerStamp { id: ids[producer], epoch, base_sequence: sequence, transactional: false };
                let partition = queue.inner.partition(&tp).unwrap();
                let got = partition.append(&records, &timestamps, batch_bytes, (stamp, None), 1_000);
                match (expected, got) {
                    (Ok(None), Ok(base)) => {
                        proptest::prop_assert_eq!(base, log.len() as u64, "{:?}: appended at the end", step);
                        log.extend(values);
                        known[producer] = Known { epoch, last: Some((sequence, count, base)) };
                    }
                    (Ok(Some(first)), Ok(base)) => proptest::prop_assert_eq!(base, first, "{:?}: the repeat's offsets", step),
                    (Err("fenced"), Err(Error::ProducerFenced { current_epoch, .. })) => {
                        proptest::prop_assert_eq!(current_epoch, k.epoch)
                    }
                    (Err("out of order"), Err(Error::OutOfOrderSequence { expected, found, .. })) => {
                        proptest::prop_assert_eq!((found, expected), (sequence, if epoch > k.epoch { 0 } else { next }))
                    }
                    (expected, got) => proptest::prop_assert!(false, "{:?}: expected {:?}, got {:?}", step, expected, got),
                }
            }
            proptest::prop_assert_eq!(read_all(&queue), log);
            drop(queue);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn the_producer_table_forgets_the_producer_that_appended_least_recently_when_full() {
        use crate::log::format::ProducerStamp;
        use crate::log::state::PRODUCER_SLOTS;
        let (queue, dir) = queue("producers-full");
        queue.create_topic("t", 1).unwrap();
        let partition = queue.inner.partition(&TopicPartition::new("t", 0)).unwrap();
        let append = |id: u64, base_sequence: u32| {
            let records = [Record::new(b"v")];
            let stamp = ProducerStamp { id, epoch: 0, base_sequence, transactional: false };
            partition.append(&records, &[1_000], format::batch_bytes(&records, &[1_000]), (stamp, None), 1_000)
        };
        for id in 1..=PRODUCER_SLOTS as u64 {
            append(id, 0).unwrap();
        }
        // Every producer is known: a skip is refused, a repeat answered.
        assert!(matches!(append(1, 5), Err(Error::OutOfOrderSequence { expected: 1, found: 5, .. })));
        assert_eq!(append(1, 0).unwrap(), 0, "a repeat gets the first batch's offset");
        // One more producer takes the slot of the one that appended least recently: producer 1.
        append(PRODUCER_SLOTS as u64 + 1, 0).unwrap();
        assert_eq!(append(1, 5).unwrap(), PRODUCER_SLOTS as u64 + 1, "a forgotten producer starts anywhere");
        // It took the slot of producer 2, the least recent then; the others are still known.
        let last = PRODUCER_SLOTS as u64;
        assert!(matches!(append(last, 3), Err(Error::OutOfOrderSequence { expected: 1, .. })), "producer {last} is known");
        assert!(matches!(append(3, 3), Err(Error::OutOfOrderSequence { expected: 1, .. })), "producer 3 is known");
        drop((partition, queue));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn producer_ids_differ_between_handles_and_epochs() {
        let (queue, dir) = queue("producer-ids");
        let other = Queue::open(&dir).unwrap();
        let ids = [queue.inner.new_producer_id(), other.inner.new_producer_id(), queue.inner.new_producer_id()];
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:x?}");
        drop((queue, other));
        let reopened = Queue::open(&dir).unwrap();
        let later = reopened.inner.new_producer_id();
        assert!(later >> 32 > ids[0] >> 32 && later != 0, "a new epoch of the queue: {later:x} after {ids:x?}");
        drop(reopened);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_idempotent_producer_stamps_each_batch_with_its_id_and_next_sequence_number() {
        use crate::log::format::{BATCH_HEADER_BYTES, BatchHeader, ProducerStamp};
        let (queue, dir) = queue("stamps");
        queue.create_topic_with("t", TopicConfig::new(1).compression(crate::Compression::Lz4)).unwrap();
        queue.create_topic("plain", 1).unwrap();
        let producer = queue.producer_with(ProducerConfig::new().idempotent(true));
        let clone = producer.clone();
        producer.send("t", Record::new(b"a")).unwrap();
        producer.send_batch("t", [Record::new(b"b"), Record::new(b"c"), Record::new(b"d")]).unwrap();
        clone.send("t", Record::new(b"e")).unwrap();
        producer.send("t", Record::new(b"f")).unwrap();
        producer.send("plain", Record::new(b"g")).unwrap();
        queue.producer().send("t", Record::new(b"h")).unwrap();
        let stamps = |topic: &str| {
            let segment = queue.inner.partition(&TopicPartition::new(topic, 0)).unwrap().segment(0).unwrap();
            let mut at = u64::from(FILE_HEADER_BYTES);
            let mut stamps = Vec::new();
            while let Ok(bytes) = segment.read(at, u64::from(BATCH_HEADER_BYTES)) {
                let header = BatchHeader::read(bytes);
                if header.batch_bytes == 0 {
                    break;
                }
                stamps.push((header.producer, header.record_count));
                at += u64::from(header.batch_bytes);
            }
            stamps
        };
        let stamps_t = stamps("t");
        let (id, other) = (stamps_t[0].0.id, stamps_t[2].0.id);
        assert!(id != other && id != ProducerStamp::NONE.id && other != ProducerStamp::NONE.id, "{stamps_t:?}");
        let stamp = |id, base_sequence| ProducerStamp { id, epoch: 0, base_sequence, transactional: false };
        assert_eq!(
            stamps_t,
            vec![(stamp(id, 0), 1), (stamp(id, 1), 3), (stamp(other, 0), 1), (stamp(id, 4), 1), (ProducerStamp::NONE, 1)]
        );
        assert_eq!(stamps("plain"), vec![(stamp(id, 0), 1)], "each partition numbers its own records");
        drop((producer, clone, queue));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn threads_sharing_an_idempotent_producer_hand_their_sequence_numbers_over_in_order() {
        // The producer's lock is held across each append: without it, two threads could take
        // numbers in one order and append in the other, and the partition would refuse one.
        let (queue, dir) = queue("shared-idempotent");
        queue.create_topic("t", 2).unwrap();
        let producer = queue.producer_with(ProducerConfig::new().idempotent(true));
        std::thread::scope(|scope| {
            for thread in 0..4u8 {
                let producer = &producer;
                scope.spawn(move || {
                    for i in 0..500u32 {
                        let record = Record::new(vec![thread; 8]).partition(i % 2);
                        if i % 50 == 0 {
                            producer.send_batch("t", [record, Record::new(vec![thread; 8]).partition(1)]).unwrap();
                        } else {
                            producer.send("t", record).unwrap();
                        }
                    }
                });
            }
        });
        let sent: u64 = (0..2).map(|p| queue.offsets(&TopicPartition::new("t", p)).unwrap().1).sum();
        assert_eq!(sent, 4 * (500 + 10));
        drop((producer, queue));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
