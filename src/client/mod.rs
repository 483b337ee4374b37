//! The clients users hold: producers and consumers. They reach partitions, groups and offset
//! stores through the catalog, and hold a user handle so that the queue stays open while they
//! live.

pub(crate) mod consumer;
pub(crate) mod producer;
pub(crate) mod transactional;
