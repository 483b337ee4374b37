//! Storage: partitioned, append-only logs of CRC-checked record batches in segment files.
//! Nothing here knows about consumers, groups or the queue directory around a partition.

pub(crate) mod compaction;
pub(crate) mod dir;
pub(crate) mod format;
pub(crate) mod partition;
pub(crate) mod read;
pub(crate) mod records;
pub(crate) mod recovery;
pub(crate) mod retention;
pub(crate) mod segment;
pub(crate) mod state;
