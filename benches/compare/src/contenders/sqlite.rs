//! SQLite as the do-it-yourself queue: one table in one database file in WAL mode, written with
//! INSERTs and read by polling with SELECTs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};

use crate::contender::{Ack, Consumer, Contender, Feature, Producer, Res, Spec, Store};

const DATABASE_FILE: &str = "queue.sqlite";
const INSERT: &str = "INSERT INTO records (partition, key, value) VALUES (?1, ?2, ?3)";
const SELECT: &str = "SELECT id, value FROM records WHERE partition = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
/// How long a connection waits for another one's write lock before it fails with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_POLL_RECORDS: usize = 8192;
const FIRST_POLL_SLEEP: Duration = Duration::from_micros(100);
const MAX_POLL_SLEEP: Duration = Duration::from_millis(1);

pub struct Sqlite;

impl Contender for Sqlite {
    fn name(&self) -> String {
        "SQLite (WAL)".into()
    }

    fn supports(&self, _spec: &Spec, _feature: Feature) -> bool {
        true
    }

    fn open(&self, dir: &Path, spec: &Spec) -> Res<Arc<dyn Store>> {
        let path = dir.join(DATABASE_FILE);
        let connection = Connection::open(&path)?;
        // WAL mode is stored in the database file, so every later connection uses it too.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.execute_batch(
            "CREATE TABLE records (id INTEGER PRIMARY KEY, partition INTEGER NOT NULL, key INTEGER, value BLOB NOT NULL);
             CREATE INDEX records_by_partition ON records (partition, id);",
        )?;
        Ok(Arc::new(SqliteStore { path, partitions: spec.partitions, ack: spec.ack }))
    }
}

struct SqliteStore {
    path: PathBuf,
    partitions: u32,
    ack: Ack,
}

impl SqliteStore {
    /// A connection of its own for one producer or consumer, as SQLite connections are not
    /// meant to be shared between threads.
    fn connect(&self) -> Res<Connection> {
        let connection = Connection::open(&self.path)?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        // In WAL mode NORMAL syncs only at checkpoints (a power loss may undo the last commits),
        // and FULL syncs the WAL at every commit.
        let synchronous = match self.ack {
            Ack::Buffered => "NORMAL",
            Ack::Fsync => "FULL",
        };
        connection.pragma_update(None, "synchronous", synchronous)?;
        Ok(connection)
    }
}

impl Store for SqliteStore {
    fn producer(&self) -> Res<Box<dyn Producer>> {
        Ok(Box::new(SqliteProducer { connection: self.connect()?, partitions: self.partitions }))
    }

    /// The member reads the partitions `p` with `p % members == member`. It remembers the
    /// last id read per partition in memory only: the workloads never resume a group.
    fn consumer(&self, _group: &str, member: usize, members: usize) -> Res<Box<dyn Consumer>> {
        let last_ids = (0..self.partitions).filter(|p| *p as usize % members == member).map(|p| (p, 0)).collect();
        Ok(Box::new(SqliteConsumer { connection: self.connect()?, last_ids }))
    }
}

struct SqliteProducer {
    connection: Connection,
    partitions: u32,
}

fn partition(key: u64, partitions: u32) -> u32 {
    (key % u64::from(partitions)) as u32
}

/// SQLite integers are signed 64-bit, so the key is stored as the same bits in an `i64`.
fn stored_key(key: u64) -> i64 {
    key as i64
}

impl Producer for SqliteProducer {
    /// One INSERT in autocommit mode: a transaction of its own.
    fn send(&mut self, key: u64, value: &[u8]) -> Res<()> {
        let partition = partition(key, self.partitions);
        self.connection.prepare_cached(INSERT)?.execute(params![partition, stored_key(key), value])?;
        Ok(())
    }

    /// One transaction for the whole batch, taking the write lock up front so that it waits
    /// for other writers at BEGIN rather than failing halfway.
    fn send_batch(&mut self, records: &[(u64, &[u8])]) -> Res<()> {
        let transaction = self.connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = transaction.prepare_cached(INSERT)?;
            for &(key, value) in records {
                insert.execute(params![partition(key, self.partitions), stored_key(key), value])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }
}

struct SqliteConsumer {
    connection: Connection,
    /// Each partition this member reads, with the id of the last record it read there.
    last_ids: Vec<(u32, i64)>,
}

impl SqliteConsumer {
    /// Reads what is new in this member's partitions, at most `MAX_POLL_RECORDS` records.
    fn read_new(&mut self, each: &mut dyn FnMut(&[u8])) -> Res<usize> {
        let mut select = self.connection.prepare_cached(SELECT)?;
        let mut count = 0;
        for (partition, last_id) in &mut self.last_ids {
            let mut rows = select.query(params![*partition, *last_id, (MAX_POLL_RECORDS - count) as i64])?;
            while let Some(row) = rows.next()? {
                *last_id = row.get(0)?;
                each(row.get_ref(1)?.as_blob()?);
                count += 1;
            }
        }
        Ok(count)
    }
}

impl Consumer for SqliteConsumer {
    /// SQLite cannot notify a reader of new rows, so this polls the way do-it-yourself queues
    /// do: it queries, and when nothing is there it sleeps a little longer each time, up to
    /// `MAX_POLL_SLEEP`, until the timeout.
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Res<usize> {
        let deadline = Instant::now() + timeout;
        let mut sleep = FIRST_POLL_SLEEP;
        loop {
            let count = self.read_new(each)?;
            let now = Instant::now();
            if count > 0 || now >= deadline {
                return Ok(count);
            }
            std::thread::sleep(sleep.min(deadline - now));
            sleep = (sleep * 2).min(MAX_POLL_SLEEP);
        }
    }
}
