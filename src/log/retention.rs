//! Retention: deleting a partition's oldest sealed segments by time (`retention_ms`) and size
//! (`retention_bytes`), as Kafka's `cleanup.policy=delete` does. Which segments go is decided by
//! `delete_oldest`, a function of the segments' sizes and newest timestamps alone.

use crate::error::Result;
use crate::failpoint::failpoint;
use crate::log::dir::{self, list_segments, remove_segment_files};
use crate::log::format::FILE_HEADER_BYTES;
use crate::log::partition::Partition;
use crate::topic::TopicConfig;

impl Partition {
    /// Deletes the oldest sealed segments that `config`'s retention no longer covers: by time,
    /// those whose newest record is older than `retention_ms`; by size, those the log can do
    /// without and still hold `retention_bytes`. The log start moves past them before their
    /// files are unlinked (never shortened: readers that hold them keep reading). One thread in
    /// one process at a time does this for a partition; the others return at once. Returns how
    /// many segments went.
    pub(crate) fn apply_retention(&self, config: &TopicConfig, now_ms: u64) -> Result<usize> {
        if !config.cleanup_policy.deletes() || (config.retention_ms == u64::MAX && config.retention_bytes == u64::MAX) {
            return Ok(0);
        }
        let deleted = self.state.try_maintain(|| {
            self.still_current()?;
            let tail = self.tail();
            self.refresh_segments(tail.active_base)?;
            // Files below the log start are left by a pass that died between moving the start
            // and unlinking them.
            let start = self.start_offset();
            for base in list_segments(&self.dir)?.into_iter().filter(|&b| b < start) {
                self.segments.write().remove(&base);
                remove_segment_files(&self.dir, base)?;
            }
            let bases: Vec<u64> = self.segments.read().keys().copied().filter(|&b| b >= start).collect();
            // Sizes are the bytes of record batches, as in Kafka: not the files' lengths, which
            // include space reserved for data yet to come.
            let mut sizes = Vec::with_capacity(bases.len());
            if config.retention_bytes != u64::MAX {
                for (i, &base) in bases.iter().enumerate() {
                    let size = match bases.get(i + 1) {
                        Some(&next) if base != tail.active_base => self.sealed_extent(base, next)?.1,
                        _ => tail.end_position.saturating_sub(u64::from(FILE_HEADER_BYTES)),
                    };
                    sizes.push(size);
                }
            } else {
                sizes.resize(bases.len(), 0);
            }
            let newest_ms = |i: usize| self.max_timestamp_ms(bases[i], bases[i + 1]);
            let delete = |i: usize| {
                let (base, next) = (bases[i], bases[i + 1]);
                // Durably first: an unlink a power cut undoes must not bring the segment back.
                dir::write_log_start(&self.dir, next)?;
                self.state.advance_log_start(next);
                failpoint!("retention-before-unlink");
                self.segments.write().remove(&base);
                remove_segment_files(&self.dir, base)
            };
            let deleted = delete_oldest(config, &sizes, now_ms, newest_ms, delete)?;
            self.forget_sealed_mappings();
            Ok(deleted)
        })?;
        Ok(deleted.unwrap_or(0))
    }
}

/// Deletes, oldest first, the segments `config`'s retention no longer covers, and returns how
/// many went. `sizes` holds the bytes of record batches of each segment, the active one last
/// (it always stays). Segment `i` goes while its newest record (`newest_ms(i)`, asked only
/// under a time limit) is older than `retention_ms` at `now_ms`, or the segments after it
/// still hold `retention_bytes`; the first segment that stays ends the pass. `delete(i)` runs
/// before segment `i + 1` is judged, so an error leaves the older segments deleted.
fn delete_oldest(
    config: &TopicConfig,
    sizes: &[u64],
    now_ms: u64,
    mut newest_ms: impl FnMut(usize) -> Result<u64>,
    mut delete: impl FnMut(usize) -> Result<()>,
) -> Result<usize> {
    let mut total: u64 = sizes.iter().sum();
    let sealed = sizes.len().saturating_sub(1);
    for (i, &size) in sizes.iter().enumerate().take(sealed) {
        let expired = config.retention_ms != u64::MAX && newest_ms(i)?.saturating_add(config.retention_ms) < now_ms;
        let excess = config.retention_bytes != u64::MAX && total - size >= config.retention_bytes;
        if !(expired || excess) {
            return Ok(i);
        }
        delete(i)?;
        total -= size;
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::error::Error;

    /// Runs `delete_oldest` on segments of `sizes` whose newest records are `newest`, and
    /// returns how many went and which were deleted, in order.
    fn run(config: &TopicConfig, sizes: &[u64], newest: &[u64], now_ms: u64) -> (usize, Vec<usize>) {
        let deleted = RefCell::new(Vec::new());
        let count = delete_oldest(
            config,
            sizes,
            now_ms,
            |i| Ok(newest[i]),
            |i| {
                deleted.borrow_mut().push(i);
                Ok(())
            },
        )
        .unwrap();
        (count, deleted.into_inner())
    }

    #[test]
    fn segments_older_than_the_retention_time_go_up_to_the_first_young_one() {
        let config = TopicConfig::new(1).retention_ms(150);
        assert_eq!(run(&config, &[10, 10, 10, 10], &[100, 200, 300, 0], 400), (2, vec![0, 1]));
        // An old segment after a young one stays: segments go oldest first, without gaps.
        assert_eq!(run(&config, &[10, 10, 10], &[300, 100, 0], 400), (0, vec![]));
        // Exactly at the limit is not older than it.
        assert_eq!(run(&config, &[10, 10], &[250, 0], 400), (0, vec![]));
    }

    #[test]
    fn segments_go_while_the_rest_still_holds_the_retention_bytes() {
        let config = TopicConfig::new(1).retention_ms(u64::MAX).retention_bytes(35);
        let deleted = RefCell::new(Vec::new());
        let count = delete_oldest(
            &config,
            &[10, 20, 30, 5],
            0,
            |_| panic!("no time limit: no timestamps read"),
            |i| {
                deleted.borrow_mut().push(i);
                Ok(())
            },
        );
        assert_eq!((count.unwrap(), deleted.into_inner()), (2, vec![0, 1]));
    }

    #[test]
    fn the_active_segment_always_stays() {
        let config = TopicConfig::new(1).retention_ms(0).retention_bytes(0);
        assert_eq!(run(&config, &[10, 10, 10], &[0, 0, 0], 1_000), (2, vec![0, 1]));
        assert_eq!(run(&config, &[10], &[0], 1_000), (0, vec![]));
        assert_eq!(run(&config, &[], &[], 1_000), (0, vec![]));
    }

    #[test]
    fn without_limits_nothing_goes() {
        let config = TopicConfig::new(1).retention_ms(u64::MAX).retention_bytes(u64::MAX);
        assert_eq!(run(&config, &[10, 10, 10], &[0, 0, 0], u64::MAX), (0, vec![]));
    }

    #[test]
    fn a_failed_delete_keeps_what_went_before_it_and_stops() {
        let config = TopicConfig::new(1).retention_ms(1);
        let deleted = RefCell::new(Vec::new());
        let result = delete_oldest(
            &config,
            &[1, 1, 1, 1],
            100,
            |_| Ok(0),
            |i| {
                if i == 1 {
                    return Err(Error::InvalidConfig("disk gone".into()));
                }
                deleted.borrow_mut().push(i);
                Ok(())
            },
        );
        assert!(matches!(result, Err(Error::InvalidConfig(_))));
        assert_eq!(deleted.into_inner(), vec![0]);
    }
}
