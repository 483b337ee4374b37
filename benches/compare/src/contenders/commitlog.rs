//! commitlog: a Kafka-style log of segment and index files for one process. It has one
//! partition and no consumer groups, so keys and `spec.partitions` are ignored and every
//! consumer reads every record.
//!
//! An append writes the records to the segment file with one `write` (nothing is buffered in
//! memory) and their positions to the index, a shared memory map of the index file; either
//! way they reach the page cache, which is what `Ack::Buffered` asks for.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use commitlog::message::{HEADER_SIZE, MessageBuf, MessageSet};
use commitlog::{CommitLog, LogOptions, OffsetRange, ReadLimit};

use crate::contender::{Ack, Consumer, Contender, Feature, Producer, Res, Spec, Store};

/// About commitlog's default segment size. Its limit on "message" bytes applies to a whole
/// append, so it is raised to the segment size to let a batch fill a segment.
const SEGMENT_BYTES: usize = 1 << 30;
const READ_BYTES: usize = 1 << 20;
const FIRST_POLL_SLEEP: Duration = Duration::from_micros(100);
const MAX_POLL_SLEEP: Duration = Duration::from_millis(1);

pub struct Commitlog;

impl Contender for Commitlog {
    fn name(&self) -> String {
        "commitlog".into()
    }

    /// Producers share the log behind a lock, as a `CommitLog` needs `&mut` to append.
    fn supports(&self, _spec: &Spec, feature: Feature) -> bool {
        matches!(feature, Feature::Basic | Feature::ConcurrentProducers)
    }

    fn open(&self, dir: &Path, spec: &Spec) -> Res<Arc<dyn Store>> {
        let mut options = LogOptions::new(dir);
        options.segment_max_bytes(SEGMENT_BYTES).message_max_bytes(SEGMENT_BYTES);
        let log = Log {
            commitlog: CommitLog::new(options)?,
            active_files: match spec.ack {
                Ack::Buffered => None,
                Ack::Fsync => Some(ActiveFiles::open(dir, 0)?),
            },
            dir: dir.to_path_buf(),
        };
        // A read fails unless the limit exceeds the size of the first record it returns.
        let read_limit = ReadLimit::max_bytes(READ_BYTES.max(2 * (spec.max_value_bytes + HEADER_SIZE)));
        Ok(Arc::new(CommitlogStore { log: Arc::new(RwLock::new(log)), read_limit }))
    }
}

struct Log {
    commitlog: CommitLog,
    /// The files to fsync with `Ack::Fsync`, `None` with `Ack::Buffered`.
    active_files: Option<ActiveFiles>,
    dir: PathBuf,
}

impl Log {
    fn append(&mut self, records: &mut MessageBuf) -> Res<()> {
        let appended = self.commitlog.append(records)?;
        if let Some(files) = &mut self.active_files {
            files.sync(&self.dir, appended)?;
        }
        Ok(())
    }
}

/// The segment and index files that commitlog appends to, opened again to fsync them.
///
/// `CommitLog::flush` cannot do it: on the segment it calls `File::flush`, which does nothing
/// for a `File`, and on the index it msyncs only whole pages.
struct ActiveFiles {
    base_offset: u64,
    segment: File,
    index: File,
}

impl ActiveFiles {
    fn open(dir: &Path, base_offset: u64) -> Res<ActiveFiles> {
        let segment = File::open(dir.join(segment_file_name(base_offset)))?;
        let index = File::open(dir.join(format!("{base_offset:020}.index")))?;
        Ok(ActiveFiles { base_offset, segment, index })
    }

    /// Fsyncs what `appended` wrote, while the log is locked.
    fn sync(&mut self, dir: &Path, appended: OffsetRange) -> Res<()> {
        if appended.is_empty() {
            return Ok(());
        }
        // When an append does not fit, commitlog starts a new segment and index named after
        // the append's first offset; their names must reach the disk too.
        let first = appended.first();
        if first != self.base_offset && dir.join(segment_file_name(first)).exists() {
            *self = ActiveFiles::open(dir, first)?;
            File::open(dir)?.sync_all()?;
        }
        self.segment.sync_data()?;
        self.index.sync_data()?;
        Ok(())
    }
}

fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

struct CommitlogStore {
    /// Reading takes `&self`, so consumers read side by side; producers append one at a time.
    log: Arc<RwLock<Log>>,
    read_limit: ReadLimit,
}

impl Store for CommitlogStore {
    fn producer(&self) -> Res<Box<dyn Producer>> {
        Ok(Box::new(CommitlogProducer { log: self.log.clone() }))
    }

    fn consumer(&self, _group: &str, _member: usize, _members: usize) -> Res<Box<dyn Consumer>> {
        Ok(Box::new(CommitlogConsumer { log: self.log.clone(), next_offset: 0, read_limit: self.read_limit }))
    }
}

struct CommitlogProducer {
    log: Arc<RwLock<Log>>,
}

impl CommitlogProducer {
    fn append(&self, records: &mut MessageBuf) -> Res<()> {
        self.log.write().expect("a producer panicked while appending").append(records)
    }
}

impl Producer for CommitlogProducer {
    fn send(&mut self, _key: u64, value: &[u8]) -> Res<()> {
        let mut records = MessageBuf::default();
        push(&mut records, value)?;
        self.append(&mut records)
    }

    /// One `MessageBuf` with every record, appended at once.
    fn send_batch(&mut self, records: &[(u64, &[u8])]) -> Res<()> {
        let mut batch = MessageBuf::default();
        for &(_key, value) in records {
            push(&mut batch, value)?;
        }
        self.append(&mut batch)
    }
}

fn push(records: &mut MessageBuf, value: &[u8]) -> Res<()> {
    records.push(value).map_err(|error| format!("commitlog cannot take a record of {} bytes: {error:?}", value.len()).into())
}

struct CommitlogConsumer {
    log: Arc<RwLock<Log>>,
    next_offset: u64,
    read_limit: ReadLimit,
}

impl Consumer for CommitlogConsumer {
    /// commitlog cannot notify a reader of new records, so this polls: it reads, and when
    /// nothing is there it sleeps a little longer each time, up to `MAX_POLL_SLEEP`.
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Res<usize> {
        let deadline = Instant::now() + timeout;
        let mut sleep = FIRST_POLL_SLEEP;
        loop {
            let records = self
                .log
                .read()
                .expect("a producer panicked while appending")
                .commitlog
                .read(self.next_offset, self.read_limit)?;
            for record in records.iter() {
                each(record.payload());
                self.next_offset = record.offset() + 1;
            }
            let now = Instant::now();
            if !records.is_empty() || now >= deadline {
                return Ok(records.len());
            }
            std::thread::sleep(sleep.min(deadline - now));
            sleep = (sleep * 2).min(MAX_POLL_SLEEP);
        }
    }
}
