//! Redis Streams: a `redis-server` started for each store, one stream per partition, read by
//! consumer groups with XREADGROUP.

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Client, Connection};

use crate::contender::{Ack, Consumer, Contender, Feature, Producer, Res, Spec, Store};

/// How to get the server when it is missing.
pub const INSTALL_HINT: &str = "apt-get install redis-server";
const SERVER_PROGRAM: &str = "redis-server";
const SERVER_LOG_FILE: &str = "redis-server.log";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The most entries one XREADGROUP returns from each stream.
const MAX_POLL_RECORDS_PER_STREAM: usize = 8192;

/// Whether `redis-server` is on the PATH; without it the harness skips this contender.
pub fn redis_server_available() -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(SERVER_PROGRAM).is_file()))
}

pub struct Redis;

impl Contender for Redis {
    fn name(&self) -> String {
        "Redis Streams".into()
    }

    fn supports(&self, _spec: &Spec, _feature: Feature) -> bool {
        redis_server_available()
    }

    fn open(&self, dir: &Path, spec: &Spec) -> Res<Arc<dyn Store>> {
        let (server, client) = Server::start(dir, spec.ack)?;
        let streams = (0..spec.partitions).map(|p| format!("bench-{p}")).collect();
        Ok(Arc::new(RedisStore { client, streams, _server: server }))
    }
}

/// A `redis-server` process of our own, stopped on drop.
struct Server {
    process: Child,
}

impl Server {
    /// Starts a server on a free port with its files in `dir` and waits until it answers.
    /// With `Ack::Fsync` every write is in the append-only file, fsynced before the reply.
    fn start(dir: &Path, ack: Ack) -> Res<(Server, Client)> {
        if !redis_server_available() {
            return Err(format!("{SERVER_PROGRAM} is not on the PATH ({INSTALL_HINT})").into());
        }
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log_path = dir.join(SERVER_LOG_FILE);
        let mut command = Command::new(SERVER_PROGRAM);
        command.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--daemonize", "no"]);
        command.arg("--dir").arg(dir);
        match ack {
            Ack::Buffered => command.args(["--appendonly", "no"]),
            Ack::Fsync => command.args(["--appendonly", "yes", "--appendfsync", "always"]),
        };
        command.stdout(File::create(&log_path)?);
        let mut server = Server { process: command.spawn()? };
        let client = Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = server.process.try_wait()? {
                return Err(format!("{SERVER_PROGRAM} exited ({status}) before answering; see {}", log_path.display()).into());
            }
            match client.get_connection().and_then(|mut connection| redis::cmd("PING").exec(&mut connection)) {
                Ok(()) => return Ok((server, client)),
                Err(error) if Instant::now() >= deadline => {
                    return Err(format!(
                        "{SERVER_PROGRAM} on port {port} did not answer PING within {} s ({error}); see {}",
                        STARTUP_TIMEOUT.as_secs(),
                        log_path.display()
                    )
                    .into());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

struct RedisStore {
    client: Client,
    /// One stream per partition, `bench-0` to `bench-{partitions - 1}`.
    streams: Vec<String>,
    /// Stops the server when the store is dropped.
    _server: Server,
}

impl Store for RedisStore {
    fn producer(&self) -> Res<Box<dyn Producer>> {
        Ok(Box::new(RedisProducer { connection: self.client.get_connection()?, streams: self.streams.clone() }))
    }

    /// Creates the group on every stream if it is not there yet; Redis then splits the entries
    /// between the members that read with XREADGROUP, so `member` only names the consumer.
    fn consumer(&self, group: &str, member: usize, _members: usize) -> Res<Box<dyn Consumer>> {
        let mut connection = self.client.get_connection()?;
        for stream in &self.streams {
            match redis::cmd("XGROUP").arg("CREATE").arg(stream).arg(group).arg("0").arg("MKSTREAM").exec(&mut connection) {
                Err(error) if error.code() != Some("BUSYGROUP") => return Err(error.into()),
                _ => {}
            }
        }
        let name = format!("consumer-{member}");
        Ok(Box::new(RedisConsumer { connection, group: group.into(), name, streams: self.streams.clone() }))
    }
}

struct RedisProducer {
    connection: Connection,
    streams: Vec<String>,
}

impl RedisProducer {
    fn stream(&self, key: u64) -> &str {
        &self.streams[(key % self.streams.len() as u64) as usize]
    }
}

impl Producer for RedisProducer {
    fn send(&mut self, key: u64, value: &[u8]) -> Res<()> {
        redis::cmd("XADD").arg(self.stream(key)).arg("*").arg("v").arg(value).exec(&mut self.connection)?;
        Ok(())
    }

    /// One pipeline of XADDs: one round trip, and with `appendfsync always` one fsync.
    fn send_batch(&mut self, records: &[(u64, &[u8])]) -> Res<()> {
        let mut pipeline = redis::pipe();
        for &(key, value) in records {
            pipeline.cmd("XADD").arg(self.stream(key)).arg("*").arg("v").arg(value);
        }
        pipeline.exec(&mut self.connection)?;
        Ok(())
    }
}

/// An XREADGROUP reply: for each stream with new entries, its name and its entries, each an id
/// and the one field-value pair `v`, the record's value.
type StreamReply = Vec<(String, Vec<(String, (Vec<u8>, Vec<u8>))>)>;

struct RedisConsumer {
    connection: Connection,
    group: String,
    name: String,
    streams: Vec<String>,
}

impl Consumer for RedisConsumer {
    /// Reads new entries from all streams at once, then acknowledges them.
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Res<usize> {
        // BLOCK 0 would wait forever.
        let block_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(&self.group).arg(&self.name).arg("COUNT").arg(MAX_POLL_RECORDS_PER_STREAM);
        read.arg("BLOCK").arg(block_ms).arg("STREAMS").arg(&self.streams).arg(vec![">"; self.streams.len()]);
        let reply: StreamReply = read.query(&mut self.connection)?;
        let mut count = 0;
        let mut acks = redis::pipe();
        for (stream, entries) in &reply {
            let ack = acks.cmd("XACK").arg(stream).arg(&self.group);
            for (id, (_field, value)) in entries {
                each(value);
                ack.arg(id);
                count += 1;
            }
        }
        if count > 0 {
            acks.exec(&mut self.connection)?;
        }
        Ok(count)
    }
}
