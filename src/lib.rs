//! streamlog puts Kafka's model inside an application: topics of partitioned, append-only
//! logs in a directory, produced to and consumed from by threads of one program and by separate
//! processes sharing the directory. No broker, no network hop; reads are zero-copy from the
//! mapped log.
//!
//! ```
//! # fn main() -> Result<(), streamlog::Error> {
//! # let dir = std::env::temp_dir().join(format!("streamlog-doc-lib-{}", std::process::id()));
//! use std::time::Duration;
//! use streamlog::{ConsumerConfig, OffsetReset, Queue, Record, TopicPartition};
//!
//! let queue = Queue::open(&dir)?;
//! queue.create_topic("orders", 4)?;
//! let producer = queue.producer();
//! let sent = producer.send("orders", Record::new(b"42 EUR").key(b"customer-7").header("trace", b"x"))?;
//!
//! let mut consumer = queue.consumer(ConsumerConfig::new("billing").auto_offset_reset(OffsetReset::Earliest))?;
//! consumer.assign(&[TopicPartition::new("orders", sent.partition())])?;
//! let records = consumer.poll(Duration::from_millis(100))?;
//! let record = records.iter().next().expect("the record just sent");
//! assert_eq!((record.key(), record.value(), record.offset()), (Some(&b"customer-7"[..]), &b"42 EUR"[..], sent.offset()));
//! # drop((consumer, producer, queue)); std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```
//!
//! See README.md for durability, limits and performance, and ARCHITECTURE.md for how it works.

#![deny(unsafe_code)]

mod background;
mod catalog;
mod client;
mod error;
mod failpoint;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod log;
mod options;
mod queue;
mod record;
mod sys;
mod topic;

pub use client::consumer::Consumer;
pub use client::listener::RebalanceListener;
pub use client::producer::{Producer, RecordMetadata, partition_for_key};
pub use error::{Error, Result};
pub use group::describe::{GroupDescription, MemberDescription, PartitionLag};
pub use group::file::MAX_GROUP_MEMBERS;
pub use log::records::{ConsumerRecord, Records, RecordsIntoIter, RecordsIter};
pub use options::{
    AssignmentStrategy, ConsumerConfig, Durability, MIN_SESSION_TIMEOUT, OffsetReset, ProducerConfig, QueueOptions,
};
pub use queue::Queue;
pub use record::{IntoBytes, Record};
pub use topic::{
    CleanupPolicy, MAX_PARTITIONS, MAX_RECORD_BYTES_LIMIT, MAX_SEGMENT_BYTES, MAX_TOPIC_NAME_BYTES, TopicConfig, TopicPartition,
};
