//! What every contender offers the workloads: a store with producers and group consumers.
//!
//! Values are opaque bytes; the workloads put a send timestamp in the first 8 bytes when they
//! measure latency. Each contender is used the way its own documentation recommends.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Every error a contender can report; the harness only prints them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = Result<T, BoxError>;

/// When a send counts as acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// As soon as the store has the record (page cache, or memory for a channel).
    Buffered,
    /// Only after an fsync covering the record.
    Fsync,
}

/// How a store is set up for one measurement.
#[derive(Debug, Clone)]
pub struct Spec {
    pub partitions: u32,
    pub ack: Ack,
    /// The largest value the workload will send.
    pub max_value_bytes: usize,
}

/// A way to store and pass records: streamlog in one mode, a channel, a database, a broker.
pub trait Contender: Send + Sync {
    /// Short name for tables and plots, such as `streamlog` or `SQLite (WAL)`.
    fn name(&self) -> String;
    /// Whether it can run with this spec (a contender may lack groups, fsync or partitions).
    fn supports(&self, spec: &Spec, feature: Feature) -> bool;
    /// A fresh, empty store under `dir` (an empty directory the harness removes afterwards).
    fn open(&self, dir: &Path, spec: &Spec) -> Res<Arc<dyn Store>>;
}

/// What a workload needs beyond one producer and one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// One producer and one consumer.
    Basic,
    /// Several producer threads at once.
    ConcurrentProducers,
    /// A group of consumers splitting the partitions.
    Groups,
    /// Records kept apart by partition (a channel has one queue, commitlog one log).
    Partitions,
}

/// One opened store. Producers and consumers may be used from different threads.
pub trait Store: Send + Sync {
    fn producer(&self) -> Res<Box<dyn Producer>>;
    /// Member `member` of `members` in consumer group `group`, reading from the beginning.
    /// Members of one group split the records between them; every group sees all of them.
    fn consumer(&self, group: &str, member: usize, members: usize) -> Res<Box<dyn Consumer>>;
}

pub trait Producer: Send {
    /// Sends one record and returns once it is acknowledged as the spec's `Ack` says.
    fn send(&mut self, key: u64, value: &[u8]) -> Res<()>;
    /// Sends many records at once (a batch, a transaction, a pipeline) and returns once all
    /// are acknowledged.
    fn send_batch(&mut self, records: &[(u64, &[u8])]) -> Res<()> {
        for &(key, value) in records {
            self.send(key, value)?;
        }
        Ok(())
    }
}

pub trait Consumer: Send {
    /// Waits up to `timeout` for records, hands each value to `each`, and returns how many.
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Res<usize>;
}
