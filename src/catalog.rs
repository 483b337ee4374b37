//! The catalog of an open queue directory in one process: the epoch, the topics and their
//! partitions, the consumer groups and offset stores in use, topic administration (in
//! `admin.rs`), and the background threads (maintenance, the keeper of group members, the flusher for
//! `Durability::Interval`). `Queue` is its public face.

mod admin;
pub(crate) mod files;
pub(crate) mod transactions;

use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::background::{Background, Ticker};
use crate::catalog::files::{
    GROUPS_DIR, MAINTENANCE_LOCK_FILE, OFFSETS_DIR, PRODUCER_IDS_AT, QUEUE_META_FILE, STAGING_DIR, TOPIC_META_BYTES,
    TOPIC_META_FILE, TOPICS_DIR, TOPICS_VERSION_AT, clear_staging, list_topics, lock_file, open_queue_state, read_epoch,
    write_epoch,
};
use crate::error::{Error, IoContext, Result};
use crate::group::file::Group;
use crate::group::offsets::{self, OffsetStore};
use crate::log::format;
use crate::log::partition::Partition;
use crate::options::{validate_group_name, validate_topic_name};
use crate::sys::clock;
use crate::sys::file;
use crate::sys::lock::{DirLock, lock_queue_directory};
use crate::sys::map::SharedMap;
use crate::topic::{TopicConfig, TopicPartition};
use crate::transaction::Coordinator;

/// How often each process's keeper thread heartbeats its group members, looks for dead
/// members and new topics, and finishes the transactions of dead producers.
const KEEPER_TICK: Duration = Duration::from_millis(100);

/// Held by every handle a user holds (each `Queue`, `Producer` and `Consumer`). Background threads hold the queue for a moment at each tick, so the user's last
/// drop may not be the queue's last: when the last user handle goes, the background threads
/// are stopped and waited for, so that the queue is closed, and its users lock released, before
/// that drop returns. The next `Queue::open` is then alone and recovers.
pub(crate) struct UserHandle(Weak<Catalog>);

impl UserHandle {
    pub(crate) fn new(catalog: &Arc<Catalog>) -> Self {
        UserHandle(Arc::downgrade(catalog))
    }
}

impl Drop for UserHandle {
    fn drop(&mut self) {
        if let Some(queue) = self.0.upgrade() {
            queue.stop_background();
        }
    }
}

/// What one process knows of an open queue directory, shared by every handle on it: the epoch,
/// the topics and their partitions (opened on first use), the groups and offset stores it
/// used, and its background threads.
pub(crate) struct Catalog {
    dir: PathBuf,
    epoch: u64,
    /// The shared `queue.state` mapping: its counter of topic changes (creations, deletions,
    /// new settings, added partitions) tells every process when to reload what it cached.
    shared: SharedMap,
    /// The topic-change counter this process last reloaded its topics for.
    topics_version: AtomicU64,
    users: Arc<DirLock>,
    background: Arc<Background>,
    topics: RwLock<HashMap<String, Arc<Topic>, BuildHasherDefault<NameHasher>>>,
    /// Every producer's last topic (see `cached_topic`), so that a topic deleted or replaced
    /// is let go of (its mappings and files closed) without waiting for each producer's next send.
    last_topics: Mutex<Vec<Weak<LastTopic>>>,
    /// Started by the first producer or consumer with `Durability::Interval`.
    flusher: Mutex<Option<Ticker>>,
    /// Consumer groups this process has used, opened on first use.
    groups: Mutex<HashMap<String, Arc<Group>>>,
    /// The offset stores of the groups this process has used, subscribed or not; each group's
    /// `Group` shares its store from here.
    offset_stores: Mutex<HashMap<String, Arc<OffsetStore>>>,
    /// Started by the first subscribing consumer, transactional producer or reader of
    /// committed records.
    keeper: Mutex<Option<Ticker>>,
    /// Dropping the queue waits for it.
    maintenance: Mutex<Option<Ticker>>,
    /// The transaction coordinators this process has used, opened on first use.
    coordinators: Mutex<HashMap<String, Arc<Coordinator>>>,
    /// Set when the last user handle went: maintenance passes give up.
    closing: AtomicBool,
}

/// The topic a producer sent to last, with the topics version it was found at (see
/// `Catalog::cached_topic`); made by `Catalog::last_topic`, which lets the catalog empty it
/// once it is stale.
pub(crate) type LastTopic = Mutex<Option<(u64, Arc<Topic>)>>;

/// A topic as this process knows it; partitions are opened on first use.
pub(crate) struct Topic {
    pub(crate) name: String,
    pub(crate) config: TopicConfig,
    /// Unique per creation: a topic deleted and created again under its name gets a new one.
    pub(crate) id: u64,
    dir: PathBuf,
    partitions: Vec<OnceLock<Arc<Partition>>>,
}

impl Catalog {
    /// Opens the queue directory `dir` (see `Queue::open`): if no other handle exists anywhere,
    /// a new epoch starts, so that every partition is recovered on first use.
    pub(crate) fn open(dir: &Path) -> Result<Arc<Catalog>> {
        let dir = dir.to_path_buf();
        if dir.as_os_str().is_empty() {
            return Err(Error::InvalidPath { path: dir, reason: "it is empty" });
        }
        file::create_dir_durably(&dir, &dir)?;
        let (users, alone) = lock_queue_directory(&dir)?;
        let users = Arc::new(DirLock::new(users));
        if alone {
            // No other handle exists anywhere: start a new epoch, so every partition is
            // recovered from its files on first use before anyone maps it. `read_epoch`
            // refuses a foreign directory before anything is created in it.
            let epoch = read_epoch(&dir)?.unwrap_or(0) + 1;
            write_epoch(&dir, epoch)?;
            for sub in [TOPICS_DIR, STAGING_DIR] {
                file::create_dir_durably(&dir, &dir.join(sub))?;
            }
            clear_staging(&dir.join(STAGING_DIR))?;
            // Every transactional producer is gone: what they left open is finished before
            // anyone else can read. The partitions' states were rebuilt without the open
            // transactions, so an open cannot succeed before that: its error (a full disk, a
            // damaged partition) is the open's.
            Catalog::new(dir.clone(), epoch, Arc::clone(&users))?.finish_abandoned_transactions()?;
            users.downgrade().during("lock", &dir)?;
        }
        // Read under the shared lock, which stops anyone from starting another epoch. The
        // downgrade above is not atomic: another opener may have found the queue alone in
        // between and started a newer epoch, which is then the one this handle lives in.
        let epoch =
            read_epoch(&dir)?.ok_or_else(|| Error::ForeignFile { path: dir.join(QUEUE_META_FILE), reason: "missing".into() })?;
        Catalog::new(dir, epoch, users).map(Arc::new)
    }

    fn new(dir: PathBuf, epoch: u64, users: Arc<DirLock>) -> Result<Catalog> {
        for sub in [TOPICS_DIR, STAGING_DIR] {
            file::require_directory(&dir.join(sub))?;
        }
        let shared = open_queue_state(&dir)?;
        let topics_version = AtomicU64::new(shared.word64(TOPICS_VERSION_AT).load(Ordering::Acquire));
        Ok(Catalog {
            dir,
            epoch,
            shared,
            topics_version,
            users,
            background: Arc::default(),
            topics: RwLock::new(HashMap::default()),
            last_topics: Mutex::new(Vec::new()),
            flusher: Mutex::new(None),
            groups: Mutex::new(HashMap::new()),
            offset_stores: Mutex::new(HashMap::new()),
            keeper: Mutex::new(None),
            maintenance: Mutex::new(None),
            coordinators: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
        })
    }

    /// The queue directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.dir.join(TOPICS_DIR).join(name)
    }

    /// The named topic, loaded from disk on first use, and again after any process changed
    /// topics.
    pub(crate) fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        let version = self.shared.word64(TOPICS_VERSION_AT).load(Ordering::Acquire);
        if self.topics_version.load(Ordering::Acquire) != version {
            self.reload_topics(version)?;
        }
        if let Some(topic) = self.topics.read().get(name) {
            return Ok(Arc::clone(topic));
        }
        let (config, id) = self.read_topic_meta(name)?;
        let partitions = (0..config.partitions).map(|_| OnceLock::new()).collect();
        let topic = Arc::new(Topic { name: name.to_owned(), config, id, dir: self.topic_dir(name), partitions });
        Ok(Arc::clone(self.topics.write().entry(name.to_owned()).or_insert(topic)))
    }

    /// `topic` through `cache`, the last topic a caller looked up and the topics version it
    /// was looked up in: while no topic changed anywhere, finding it again takes no shared
    /// lock and no shared reference count (which the threads of a process would pass between
    /// their processors at every send).
    pub(crate) fn cached_topic<'c>(&self, name: &str, cache: &'c mut Option<(u64, Arc<Topic>)>) -> Result<&'c Topic> {
        // Read before the lookup: a change in between leaves the entry stale, so looked up again.
        let version = self.shared.word64(TOPICS_VERSION_AT).load(Ordering::Acquire);
        if !matches!(cache, Some((cached, topic)) if *cached == version && topic.name == name) {
            *cache = Some((version, self.topic(name)?));
        }
        Ok(&cache.as_ref().expect("just filled").1)
    }

    /// A new, empty slot for `cached_topic`, which the catalog empties once a topic changes.
    pub(crate) fn last_topic(&self) -> Arc<LastTopic> {
        let slot = Arc::new(Mutex::new(None));
        let mut slots = self.last_topics.lock();
        if slots.len() == slots.capacity() {
            // Only before the list would grow: the slots of dropped producers go, at a cost
            // spread over as many producers as there are slots.
            slots.retain(|slot| slot.strong_count() > 0);
        }
        slots.push(Arc::downgrade(&slot));
        slot
    }

    /// Lets go of topics that were deleted or changed since this process last looked: reloads
    /// the catalog's topics and empties every producer's stale last topic, so that an idle
    /// producer does not keep a deleted topic's files (and their disk space) alive. A slot
    /// in use by a send is left to that send (which finds it stale at its next call) or to
    /// the next call of this (the maintenance thread calls it every tick).
    pub(crate) fn forget_stale_topics(&self) {
        let version = self.topics_version();
        if self.topics_version.load(Ordering::Acquire) != version {
            // A topic that cannot be looked at now is looked at again at the next call.
            let _ = self.reload_topics(version);
        }
        // Looked at without holding the list, so that closing a topic's files (dropping the
        // last reference) does not hold up producers being made.
        let slots: Vec<Arc<LastTopic>> = self.last_topics.lock().iter().filter_map(Weak::upgrade).collect();
        for slot in &slots {
            let stale = slot.try_lock().and_then(|mut last| match &*last {
                Some((cached, _)) if *cached != version => last.take(),
                _ => None,
            });
            drop(stale);
        }
    }

    /// Brings the cached topics up to date after a change by any process: deleted ones are
    /// forgotten, changed ones get their new settings and partitions (keeping the partitions
    /// already open).
    fn reload_topics(&self, version: u64) -> Result<()> {
        let mut topics = self.topics.write();
        let names: Vec<String> = topics.keys().cloned().collect();
        let mut complete = true;
        for name in names {
            let cached = Arc::clone(&topics[&name]);
            match self.read_topic_meta(&name) {
                Ok((config, id)) if id == cached.id && config == cached.config => {}
                Ok((config, id)) if id == cached.id => {
                    let partitions = (0..config.partitions as usize)
                        .map(|p| {
                            let open = cached.partitions.get(p).and_then(OnceLock::get).cloned();
                            if let Some(partition) = &open {
                                partition.set_config(config.clone());
                            }
                            open.map_or_else(OnceLock::new, OnceLock::from)
                        })
                        .collect();
                    let topic = Topic { name: name.clone(), config, id, dir: cached.dir.clone(), partitions };
                    topics.insert(name, Arc::new(topic));
                }
                Ok(_) | Err(Error::UnknownTopic(_)) => {
                    topics.remove(&name);
                }
                // Unreadable just now: keep what is cached, and look again at the next lookup
                // (the version stays behind), so that a deleted topic is not kept for good.
                Err(_) => complete = false,
            }
        }
        if complete {
            self.topics_version.store(version, Ordering::Release);
        }
        Ok(())
    }

    /// The names of all topics, sorted.
    pub(crate) fn topic_names(&self) -> Result<Vec<String>> {
        list_topics(&self.dir)
    }

    /// The id of a topic, or 0 if it does not exist.
    pub(crate) fn topic_id(&self, name: &str) -> u64 {
        self.topic(name).map_or(0, |topic| topic.id)
    }

    /// Retention and compaction for every partition of every topic, and compaction of every
    /// group's offset log. A partition that fails (a damaged file) does not stop the others;
    /// the first error is returned after all were tried. Returns how many segments were
    /// deleted or rewritten.
    pub(crate) fn run_maintenance(&self, stop: &dyn Fn() -> bool) -> Result<usize> {
        let now_ms = clock::wall_clock_ms();
        let mut changed = 0;
        let mut first_error = None;
        for name in list_topics(&self.dir)? {
            let topic = match self.topic(&name) {
                Ok(topic) => topic,
                Err(Error::UnknownTopic(_)) => continue,
                Err(error) => {
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            let policy = topic.config.cleanup_policy;
            for number in 0..topic.config.partitions {
                if stop() {
                    return first_error.map_or(Ok(changed), Err);
                }
                let work = topic.partition(number, self).and_then(|p| {
                    let deleted = if policy.deletes() { p.apply_retention(&topic.config, now_ms)? } else { 0 };
                    let compacted = if policy.compacts() { p.compact(&topic.config, now_ms, stop)? } else { 0 };
                    Ok(deleted + compacted)
                });
                match work {
                    Ok(n) => changed += n,
                    // Deleted by another process since it was listed: its files vanish under
                    // the pass, which has nothing left to do there.
                    Err(Error::UnknownTopic(_)) => break,
                    Err(_) if self.deleted_meanwhile(&topic) => break,
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        // Each group's offset log keeps only the latest commit of each partition.
        let groups = self.dir.join(GROUPS_DIR);
        let names: Vec<String> = match fs::read_dir(&groups) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        };
        for name in names.iter().filter(|n| validate_group_name(n).is_ok()) {
            if stop() {
                break;
            }
            match self.offset_store(name).and_then(|store| store.compact(now_ms, stop)) {
                Ok(n) => changed += n,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(changed), Err)
    }

    /// Whether `topic` is gone, or its name now belongs to a newer topic.
    fn deleted_meanwhile(&self, topic: &Topic) -> bool {
        !matches!(self.read_topic_meta(&topic.name), Ok((_, id)) if id == topic.id)
    }

    /// Starts the background maintenance thread. Every tick, the process that holds
    /// `maintenance.lock` (whichever took it first; the kernel releases it when that process
    /// dies) runs retention and compaction; the others only try for the lock.
    pub(crate) fn start_maintenance(self: &Arc<Self>, interval: Duration) {
        let queue: Weak<Catalog> = Arc::downgrade(self);
        let path = self.dir.join(MAINTENANCE_LOCK_FILE);
        let mut lock: Option<File> = None;
        let ticker = Ticker::spawn("streamlog-maintenance", interval, false, move || {
            let Some(queue) = queue.upgrade() else { return ControlFlow::Break(()) };
            queue.forget_stale_topics();
            if lock.is_none() {
                lock = lock_file(&path).ok().filter(|file| file.try_lock().is_ok());
            }
            if lock.is_some() {
                // Failures surface to producers and consumers through their own calls. A pass
                // gives up as soon as this thread holds the last reference: the user let go
                // of the queue, and it must not outlive them.
                let _ = queue.run_maintenance(&|| queue.closing.load(Ordering::Relaxed) || Arc::strong_count(&queue) == 1);
            }
            ControlFlow::Continue(())
        });
        *self.maintenance.lock() = Some(ticker);
    }

    /// The counter of topic changes; when it moves, cached topic facts may be stale.
    pub(crate) fn topics_version(&self) -> u64 {
        self.shared.word64(TOPICS_VERSION_AT).load(Ordering::Acquire)
    }

    /// An id for a new idempotent producer that no other producer of this queue ever gets:
    /// the queue's epoch (which every open alone moves on, durably) above a count of the
    /// producers made in it, which every process counts in the one `queue.state`. Never 0,
    /// which marks an empty slot in a partition's producer table, since epochs start at 1.
    pub(crate) fn new_producer_id(&self) -> u64 {
        let count = self.shared.word64(PRODUCER_IDS_AT).fetch_add(1, Ordering::Relaxed);
        self.epoch << 32 | (count & 0xffff_ffff)
    }

    fn read_topic_meta(&self, name: &str) -> Result<(TopicConfig, u64)> {
        validate_topic_name(name)?;
        let dir = self.topic_dir(name);
        let meta = dir.join(TOPIC_META_FILE);
        match file::require_directory(&dir).and_then(|()| file::read_capped(&meta, TOPIC_META_BYTES)) {
            Ok(bytes) => files::decode_topic_meta(&bytes, &meta),
            Err(e) if file::is_not_found(&e) => Err(Error::UnknownTopic(name.to_owned())),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn partition(&self, tp: &TopicPartition) -> Result<Arc<Partition>> {
        self.topic(tp.topic())?.partition(tp.partition(), self).cloned()
    }

    /// How many partitions each topic has, for the group assignor; `None` for a missing topic.
    pub(crate) fn partition_counts(&self) -> impl Fn(&str) -> Result<Option<u32>> + '_ {
        |topic| match self.topic(topic) {
            Ok(topic) => Ok(Some(topic.config.partitions)),
            Err(Error::UnknownTopic(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Whether any consumer ever subscribed to or committed for the group named `name`.
    pub(crate) fn has_group(&self, name: &str) -> bool {
        self.dir.join(GROUPS_DIR).join(name).is_dir()
    }

    /// The named consumer group, opened (and created) on first use.
    pub(crate) fn group(&self, name: &str) -> Result<Arc<Group>> {
        validate_group_name(name)?;
        if let Some(group) = self.groups.lock().get(name) {
            return Ok(Arc::clone(group));
        }
        // Opened without holding the map, which the keeper reads every tick: opening may wait
        // for file locks (and recover the offset log).
        let dir = self.dir.join(GROUPS_DIR).join(name);
        let log_dir = dir.join(OFFSETS_DIR);
        // Every directory above the offset log's files is synced too: a `Sync` commit must
        // survive a power cut, and so must the path that leads to it.
        file::create_dir_durably(&self.dir, &log_dir)?;
        let group = Arc::new(Group::open(name, &dir, self.epoch, self.offset_store(name)?)?);
        // Another thread may have opened it meanwhile: everyone uses the first.
        Ok(Arc::clone(self.groups.lock().entry(name.to_owned()).or_insert(group)))
    }

    /// The named group's offset store. Getting it creates nothing on disk; its log is created
    /// by the first commit, in the directory `group` creates.
    pub(crate) fn offset_store(&self, name: &str) -> Result<Arc<OffsetStore>> {
        validate_group_name(name)?;
        let mut stores = self.offset_stores.lock();
        if let Some(store) = stores.get(name) {
            return Ok(Arc::clone(store));
        }
        let log_dir = self.dir.join(GROUPS_DIR).join(name).join(OFFSETS_DIR);
        let id = TopicPartition::new(&format!("{name}.offsets"), 0);
        let log_id = offsets::group_log_id(name);
        let (dir, epoch, users, background) =
            (log_dir.clone(), self.epoch, Arc::clone(&self.users), Arc::clone(&self.background));
        let open = Box::new(move || {
            let config = offsets::offset_log_config();
            Partition::open(id.clone(), log_id, dir.clone(), config, epoch, Arc::clone(&users), Arc::clone(&background))
        });
        Ok(Arc::clone(stores.entry(name.to_owned()).or_insert_with(|| Arc::new(OffsetStore::new(log_dir, open)))))
    }

    /// Starts this process's keeper thread, if it is not running: it heartbeats every group
    /// member in the process, expels dead or silent members of any process, and finishes the
    /// transactions of dead transactional producers of any process.
    pub(crate) fn start_keeper(self: &Arc<Self>) {
        let mut keeper = self.keeper.lock();
        if keeper.is_some() {
            return;
        }
        let queue: Weak<Catalog> = Arc::downgrade(self);
        *keeper = Some(Ticker::spawn("streamlog-keeper", KEEPER_TICK, false, move || {
            let Some(queue) = queue.upgrade() else { return ControlFlow::Break(()) };
            let groups: Vec<Arc<Group>> = queue.groups.lock().values().cloned().collect();
            let counts = queue.partition_counts();
            for group in groups {
                // A failure here (a damaged group file) reaches the consumers through their
                // own calls; the keeper just tries again next tick.
                let _ = group.tick(&counts);
            }
            // Likewise: a transaction that cannot be finished now is tried again next tick.
            let _ = queue.finish_abandoned_transactions();
            ControlFlow::Continue(())
        }));
    }

    /// Starts this process's flusher thread, which syncs what this process appended at least
    /// every `interval` (the shortest any producer or consumer asked for), and once more when
    /// it stops.
    pub(crate) fn start_flusher(self: &Arc<Self>, interval: Duration) {
        let mut flusher = self.flusher.lock();
        if let Some(ticker) = flusher.as_ref() {
            ticker.shorten(interval);
            return;
        }
        let queue: Weak<Catalog> = Arc::downgrade(self);
        *flusher = Some(Ticker::spawn("streamlog-flusher", interval, true, move || {
            if let Some(queue) = queue.upgrade() {
                // A failed sync poisons its partition, so the next send reports it.
                let _ = queue.sync_dirty();
            }
            ControlFlow::Continue(())
        }));
    }

    /// What `Queue::close` reports: it waits for the segments being sealed, makes every record
    /// of every partition and offset log this process opened durable (waiting for a sync under
    /// way in any thread or process, so that its outcome counts too), and returns the first
    /// failure, which includes every earlier one: a failed fsync poisons its partition.
    pub(crate) fn final_sync(&self) -> Result<()> {
        self.background.wait();
        let mut first_error = None;
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        let stores: Vec<Arc<OffsetStore>> = self.offset_stores.lock().values().cloned().collect();
        let partitions = topics.iter().flat_map(|topic| topic.partitions.iter().filter_map(OnceLock::get).cloned());
        for partition in partitions.chain(stores.iter().filter_map(|store| store.opened_log())) {
            let synced = partition.sync_through(partition.tail().end_offset).and_then(|()| partition.check_not_poisoned());
            if let Err(error) = synced {
                first_error.get_or_insert(partition.explain(error));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Syncs every partition this process appended to since its last sync.
    pub(crate) fn sync_dirty(&self) -> Result<()> {
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        let mut first_error = None;
        for topic in topics {
            for partition in topic.partitions.iter().filter_map(OnceLock::get) {
                if let Err(e) = partition.sync_if_dirty() {
                    first_error.get_or_insert(e);
                }
            }
        }
        let stores: Vec<Arc<OffsetStore>> = self.offset_stores.lock().values().cloned().collect();
        for store in stores {
            if let Err(e) = store.sync_if_dirty() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Catalog {
    /// Stops the background threads and waits for them (see `UserHandle`). The flusher syncs
    /// what it would have synced last before it ends.
    fn stop_background(&self) {
        self.closing.store(true, Ordering::Relaxed);
        let tickers = [self.flusher.lock().take(), self.keeper.lock().take(), self.maintenance.lock().take()];
        let threads: Vec<_> = tickers.into_iter().flatten().map(Ticker::stop).collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Catalog {
    fn drop(&mut self) {
        // The flusher cannot reach this queue any more (its handle is gone): sync here what it
        // would have synced last. Dropping the senders stops it and the keeper.
        if let Some(flusher) = self.flusher.lock().take() {
            drop(flusher.stop());
            let _ = self.sync_dirty();
        }
        if let Some(keeper) = self.keeper.lock().take() {
            drop(keeper.stop());
        }
        // Wait for a maintenance pass under way, so that no file of the queue changes after
        // its last handle is gone (unless this is that thread, dropping the last handle).
        if let Some(maintenance) = self.maintenance.lock().take() {
            let thread = maintenance.stop();
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        self.background.wait();
    }
}

impl Topic {
    pub(crate) fn partition(&self, number: u32, queue: &Catalog) -> Result<&Arc<Partition>> {
        let cell = self.partitions.get(number as usize).ok_or_else(|| Error::PartitionOutOfRange {
            topic: self.name.clone(),
            partition: number,
            count: self.config.partitions,
        })?;
        if let Some(partition) = cell.get() {
            return Ok(partition);
        }
        let id = TopicPartition::new(&self.name, number);
        let partition = Partition::open(
            id,
            format::LogId { topic_id: self.id, partition: number },
            self.dir.join(number.to_string()),
            self.config.clone(),
            queue.epoch,
            Arc::clone(&queue.users),
            Arc::clone(&queue.background),
        )?;
        Ok(cell.get_or_init(|| Arc::new(partition)))
    }
}

/// FNV-1a, for the map of topic names: names are short and not attacker-chosen, and every send
/// looks one up, so a fast hash matters more than flood resistance here.
#[derive(Default)]
struct NameHasher(u64);

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
