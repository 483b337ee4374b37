//! The rebalance listener: what a subscribed consumer tells the application when the partitions
//! it owns change.

use crate::client::consumer::Consumer;
use crate::topic::TopicPartition;

/// Told by a subscribed consumer when its partitions change. Every method is called from inside
/// `poll` (or `close`), on the consumer's own thread, with the consumer itself so that the
/// listener can commit or seek.
pub trait RebalanceListener: Send {
    /// The consumer now owns `partitions`; it reads them from their committed offsets.
    fn on_assigned(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// The consumer is about to give up `partitions`, which another member will read next:
    /// the last chance to commit what was processed.
    fn on_revoked(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// `partitions` were taken away without a revoke (this member was expelled): another
    /// member may already be reading them, so do not commit; a commit would be refused.
    fn on_lost(&mut self, consumer: &mut Consumer, partitions: &[TopicPartition]) {
        let _ = (consumer, partitions);
    }

    /// The committed offset of `partition` lies beyond the end of its log (the log lost its
    /// unsynced tail in a crash that the commit survived), so reading starts at `end` instead.
    fn on_offset_clamped(&mut self, consumer: &mut Consumer, partition: &TopicPartition, committed: u64, end: u64) {
        let _ = (consumer, partition, committed, end);
    }
}
