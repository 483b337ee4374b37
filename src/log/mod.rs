//! Storage: partitioned, append-only logs of CRC-checked record batches in segment files.
//! Nothing here knows about consumers, groups or the queue directory around a partition.

pub(crate) mod format;
