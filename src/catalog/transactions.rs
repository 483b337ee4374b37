//! The transaction protocol, run under each transactional id's coordinator lock (the file is
//! described in `transaction.rs`):
//!
//! - An instance starts (`init_transactions`) by moving the epoch on, which fences the one
//!   before: every partition checks each transactional batch against the epoch under its append
//!   lock. What the older instance left is finished first: an open transaction is aborted
//!   (its markers carry the newer epoch), one being committed or aborted is finished the way it
//!   was going.
//! - Before its first batch to a partition, the instance adds the partition to its
//!   transaction (`add_to_transaction`), so that whoever ends the transaction knows where
//!   markers must go. Offsets sent to the transaction go the same way into the group's offset
//!   log, as a transactional batch, under the group lock and only while the consumer that read
//!   them is still a member of the generation it read them in (`send_offsets`).
//! - Ending a transaction (`end_transaction`) stores the decision (`PrepareCommit` or
//!   `PrepareAbort`) and then writes a marker into each of its partitions: once the decision is
//!   stored, whoever finds the transaction finishes it the same way, so a transaction commits
//!   in all its partitions or in none.
//! - A transaction whose instance died (its liveness lock released by the kernel) is aborted by
//!   the keeper thread of any process that runs one (`finish_abandoned_transactions`), within a
//!   keeper tick, and by the next process that opens the queue alone, before anyone reads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::catalog::{Catalog, Topic};
use crate::error::{Error, Result};
use crate::group::file::MemberKey;
use crate::log::format::{self, ProducerStamp};
use crate::log::state::EpochFence;
use crate::options::{Durability, validate_transactional_id};
use crate::sys::{clock, file};
use crate::topic::TopicPartition;
use crate::transaction::{Coordinator, CoordinatorGuard, Liveness, Participant, Phase, TRANSACTIONS_DIR, TransactionState};

/// The current instance of a transactional id: its producer id and epoch, and its claim to
/// be alive.
pub(crate) struct Instance {
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) producer_id: u64,
    pub(crate) epoch: u16,
    _liveness: Liveness,
}

impl Instance {
    /// `Error::ProducerFenced` unless `state` is still this instance's.
    fn check_current(&self, state: &TransactionState) -> Result<()> {
        if state.producer_id == self.producer_id && state.epoch == self.epoch {
            return Ok(());
        }
        Err(Error::ProducerFenced {
            partition: None,
            producer_id: self.producer_id,
            epoch: self.epoch,
            current_epoch: state.epoch,
        })
    }
}

/// A transactional producer's instance and what this process knows of its transaction.
pub(crate) struct Transaction {
    pub(crate) instance: Instance,
    local: Mutex<Local>,
}

/// Where the instance's transaction is, as the producer sees it.
#[derive(Default)]
struct Local {
    /// Between `begin_transaction` and the end of the commit or abort.
    open: bool,
    /// A commit (true) or abort (false) failed part-way: only that, again, may follow.
    ending: Option<bool>,
    /// Offsets could not be sent to the transaction (a fenced member, a file error): it may
    /// only abort, or its output would commit without the input's offsets.
    abort_only: bool,
    /// Where the transaction wrote.
    participants: HashSet<Participant>,
    /// Per group: the sequence number of this instance's next batch of offsets to its log.
    offset_sequences: HashMap<String, u32>,
}

impl Local {
    /// Forgets the transaction that ended.
    fn ended(&mut self) {
        self.open = false;
        self.ending = None;
        self.abort_only = false;
        self.participants.clear();
    }

    /// `IllegalState` unless a transaction is open here and not being ended.
    fn check_sending(&self) -> Result<()> {
        if !self.open {
            return Err(Error::IllegalState("a transactional producer sends only inside a transaction: begin one first"));
        }
        if self.ending.is_some() {
            return Err(Error::IllegalState("the transaction is being ended: finish the commit or abort first"));
        }
        Ok(())
    }
}

/// The consumer that read the offsets sent to a transaction, as its group knew it then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadBy {
    /// A consumer of assigned partitions: there is no membership to fence.
    Assignment,
    /// A member of the group, in `generation`.
    Member { member: MemberKey, generation: u64 },
    /// A subscribed consumer that had been removed from the group.
    Expelled,
}

impl Transaction {
    pub(crate) fn new(instance: Instance) -> Self {
        Transaction { instance, local: Mutex::default() }
    }

    /// Starts a transaction here; nothing is written until the first batch.
    pub(crate) fn begin(&self) -> Result<()> {
        let mut local = self.local.lock();
        self.check_not_fenced()?;
        if local.open {
            return Err(Error::IllegalState("a transaction is open already"));
        }
        local.open = true;
        Ok(())
    }

    /// Whether a transaction is open here (and not ended).
    pub(crate) fn is_open(&self) -> bool {
        self.local.lock().open
    }

    /// Commits or aborts the open transaction (see `Catalog::end_transaction`). The caller
    /// makes sure that no batch of the transaction is being appended meanwhile.
    pub(crate) fn end(&self, queue: &Catalog, commit: bool, sync: bool) -> Result<()> {
        let mut local = self.local.lock();
        self.check_not_fenced()?;
        if !local.open {
            return Err(Error::IllegalState("no transaction is open"));
        }
        if commit && local.abort_only && local.ending.is_none() {
            return Err(Error::IllegalState("sending offsets to the transaction failed: abort it"));
        }
        if local.ending.is_some_and(|ending| ending != commit) {
            return Err(match commit {
                true => Error::IllegalState("the transaction is being aborted: abort it again"),
                false => Error::IllegalState("the transaction is being committed: commit it again"),
            });
        }
        local.ending = Some(commit);
        queue.end_transaction(&self.instance, commit, sync)?;
        local.ended();
        Ok(())
    }

    /// Makes sure partition `number` of `topic` is in the open transaction, before a batch is
    /// sent there; returns the fence that batch is checked against.
    pub(crate) fn join(&self, queue: &Catalog, topic: &Topic, number: u32) -> Result<EpochFence<'_>> {
        let mut local = self.local.lock();
        self.check_not_fenced()?;
        local.check_sending()?;
        let participant = Participant::Partition { topic: topic.name.clone(), topic_id: topic.id, partition: number };
        self.add(queue, &mut local, participant)?;
        Ok(self.instance.coordinator.fence())
    }

    fn add(&self, queue: &Catalog, local: &mut Local, participant: Participant) -> Result<()> {
        if !local.participants.contains(&participant) {
            queue.add_to_transaction(&self.instance, participant.clone())?;
            local.participants.insert(participant);
        }
        Ok(())
    }

    /// Sends `offsets` (each the next offset to read) to the open transaction as consumer
    /// group `group`'s: they become its committed offsets when the transaction commits. Read
    /// by a member, only while it is still in the group's generation it read them in:
    /// otherwise `Error::CommitFailed`, and the transaction must abort (another member may be
    /// reading the same records now). After any failure the transaction may only abort.
    /// With `sync`, the offsets are durable when it returns, before any decision is stored.
    pub(crate) fn send_offsets(
        &self,
        queue: &Catalog,
        group: &str,
        read_by: ReadBy,
        offsets: &[(TopicPartition, u64)],
        sync: bool,
    ) -> Result<()> {
        let mut local = self.local.lock();
        self.check_not_fenced()?;
        local.check_sending()?;
        if offsets.is_empty() {
            return Ok(());
        }
        let sent = self.append_offsets(queue, &mut local, group, read_by, offsets, sync);
        // Whatever failed, the transaction may hold this group's offset log by now (or the
        // caller may think it does): committing it could commit output without the offsets.
        local.abort_only |= sent.is_err();
        sent
    }

    fn append_offsets(
        &self,
        queue: &Catalog,
        local: &mut Local,
        group: &str,
        read_by: ReadBy,
        offsets: &[(TopicPartition, u64)],
        sync: bool,
    ) -> Result<()> {
        let group_handle = queue.group(group)?;
        let store = queue.offset_store(group)?;
        self.add(queue, local, Participant::GroupOffsets { group: group.to_owned() })?;
        let instance = &self.instance;
        let sequence = local.offset_sequences.get(group).copied().unwrap_or(0);
        let stamp =
            ProducerStamp { id: instance.producer_id, epoch: instance.epoch, base_sequence: sequence, transactional: true };
        let fence = instance.coordinator.fence();
        let topic_id = |tp: &TopicPartition| queue.topic_id(tp.topic());
        let end = match read_by {
            ReadBy::Member { member, generation } => group_handle.fenced(member, generation, None, || {
                store.send_to_transaction(offsets, (member.id, generation), topic_id, (stamp, &fence))
            })?,
            ReadBy::Assignment => store.send_to_transaction(offsets, (0, 0), topic_id, (stamp, &fence))?,
            ReadBy::Expelled => {
                return Err(Error::CommitFailed {
                    group: group.to_owned(),
                    reason: "the consumer was removed from the group: abort the transaction, then poll to rejoin".into(),
                });
            }
        };
        local.offset_sequences.insert(group.to_owned(), sequence.wrapping_add(offsets.len() as u32));
        // Durable before the commit's decision is: a commit must never find its offsets gone.
        store.make_durable(end, if sync { Durability::Sync } else { Durability::Buffered })
    }

    fn check_not_fenced(&self) -> Result<()> {
        let instance = &self.instance;
        match instance.coordinator.fence().moved_from(instance.epoch) {
            Some(current_epoch) => Err(Error::ProducerFenced {
                partition: None,
                producer_id: instance.producer_id,
                epoch: instance.epoch,
                current_epoch,
            }),
            None => Ok(()),
        }
    }
}

impl Catalog {
    /// The coordinator of `transactional_id`, opened (and created) on first use.
    pub(crate) fn coordinator(&self, transactional_id: &str) -> Result<Arc<Coordinator>> {
        validate_transactional_id(transactional_id)?;
        if let Some(coordinator) = self.coordinators.lock().get(transactional_id) {
            return Ok(Arc::clone(coordinator));
        }
        let dir = self.dir.join(TRANSACTIONS_DIR);
        file::create_dir_durably(&self.dir, &dir)?;
        let coordinator = Arc::new(Coordinator::open(transactional_id, &dir.join(transactional_id), self.epoch)?);
        // Another thread may have opened it meanwhile: everyone uses the first.
        Ok(Arc::clone(self.coordinators.lock().entry(transactional_id.to_owned()).or_insert(coordinator)))
    }

    /// Makes the caller the current instance of `transactional_id` (Kafka's
    /// `initTransactions`): finishes what the previous instance left, moves the epoch on
    /// (fencing that instance everywhere) and claims the new epoch's liveness lock. A
    /// producer id that has used up its epochs is replaced by a new one.
    pub(crate) fn init_transactions(&self, transactional_id: &str, sync: bool) -> Result<Instance> {
        let coordinator = self.coordinator(transactional_id)?;
        let guard = coordinator.lock()?;
        let mut state = guard.state()?;
        if state.phase == Phase::Ongoing {
            // The newer epoch fences the older instance first, then aborts what it left open
            // (an id at its last epoch is replaced below, which fences it too).
            state.epoch = state.epoch.saturating_add(1);
            state.phase = Phase::PrepareAbort;
            guard.store(&state, sync)?;
        }
        self.finish(&guard, &mut state, sync)?;
        if state.producer_id == 0 || state.epoch >= u16::MAX - 1 {
            state.producer_id = self.new_producer_id();
            state.epoch = 0;
        } else {
            state.epoch += 1;
        }
        // Durable whatever the mode: an epoch given out twice (the first lost to a power cut)
        // would let the second instance's commit marker commit the first one's orphans.
        guard.store(&state, true)?;
        let liveness = guard.claim_liveness(state.epoch)?;
        drop(guard);
        Ok(Instance { coordinator, producer_id: state.producer_id, epoch: state.epoch, _liveness: liveness })
    }

    /// Adds `partition` to the open transaction of `instance` (opening one if none is), before
    /// the instance's first batch there.
    pub(crate) fn add_to_transaction(&self, instance: &Instance, participant: Participant) -> Result<()> {
        let guard = instance.coordinator.lock()?;
        let mut state = guard.state()?;
        instance.check_current(&state)?;
        if matches!(state.phase, Phase::PrepareCommit | Phase::PrepareAbort) {
            return Err(Error::IllegalState("the transaction is being ended: finish the commit or abort first"));
        }
        if state.phase == Phase::Ongoing && state.participants.contains(&participant) {
            return Ok(());
        }
        state.phase = Phase::Ongoing;
        state.participants.push(participant);
        guard.store(&state, false)
    }

    /// Ends the transaction of `instance`: stores the decision, then writes the markers (and
    /// with `sync`, makes each durable before the next step). A transaction already being
    /// ended the same way (a retry after an error) is finished; one being ended the other way
    /// is an error.
    pub(crate) fn end_transaction(&self, instance: &Instance, commit: bool, sync: bool) -> Result<()> {
        let guard = instance.coordinator.lock()?;
        let mut state = guard.state()?;
        instance.check_current(&state)?;
        let decided = if commit { Phase::PrepareCommit } else { Phase::PrepareAbort };
        match state.phase {
            Phase::Empty => return Ok(()),
            Phase::Ongoing => {
                state.phase = decided;
                guard.store(&state, sync)?;
            }
            phase if phase == decided => {}
            Phase::PrepareCommit => return Err(Error::IllegalState("the transaction is being committed: commit it again")),
            Phase::PrepareAbort => return Err(Error::IllegalState("the transaction is being aborted: abort it again")),
        }
        self.finish(&guard, &mut state, sync)
    }

    /// Writes the markers of a transaction whose decision is stored, then stores it ended. A
    /// partition that fails does not keep the others from their markers; the transaction stays
    /// undecided-in-part (its decision stored) and the first error is returned, for a retry.
    /// A marker written twice (by a retry) ends nothing the second time: each transactional
    /// batch is decided by its producer's first marker after it.
    fn finish(&self, guard: &CoordinatorGuard<'_>, state: &mut TransactionState, sync: bool) -> Result<()> {
        let commit = match state.phase {
            Phase::Empty | Phase::Ongoing => return Ok(()),
            Phase::PrepareCommit => true,
            Phase::PrepareAbort => false,
        };
        let now_ms = clock::wall_clock_ms();
        let mut first_error = None;
        for written in &state.participants {
            if let Err(error) = self.write_marker(written, state, commit, sync, now_ms) {
                first_error.get_or_insert(error);
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        state.phase = Phase::Empty;
        state.participants.clear();
        guard.store(state, sync)
    }

    /// Appends the marker of `state`'s transaction where it wrote: to a topic's partition
    /// (nothing if its topic was deleted, perhaps created again: nothing of the transaction is
    /// left there), or to a group's offset log.
    fn write_marker(&self, written: &Participant, state: &TransactionState, commit: bool, sync: bool, now_ms: u64) -> Result<()> {
        let mut marker = format::write_marker(state.producer_id, state.epoch, commit, now_ms);
        let (topic, topic_id, number) = match written {
            Participant::Partition { topic, topic_id, partition } => (topic, *topic_id, *partition),
            Participant::GroupOffsets { group } => return self.offset_store(group)?.append_marker(&mut marker, sync, now_ms),
        };
        let topic = match self.topic(topic) {
            Ok(topic) if topic.id == topic_id => topic,
            Ok(_) | Err(Error::UnknownTopic(_)) => return Ok(()),
            Err(error) => return Err(error),
        };
        let partition = topic.partition(number, self)?;
        let appended = partition.append_encoded(&mut marker, None, now_ms).and_then(|offset| match sync {
            true => partition.sync_through(offset + 1),
            false => Ok(()),
        });
        match appended.map_err(|error| partition.explain(error)) {
            Ok(()) | Err(Error::UnknownTopic(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Finishes every transaction whose instance is dead: aborts it, or completes the commit
    /// or abort it was in. Coordinators whose lock is held are left for the next call.
    pub(crate) fn finish_abandoned_transactions(&self) -> Result<()> {
        let dir = self.dir.join(TRANSACTIONS_DIR);
        let names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => return Ok(()),
        };
        let mut first_error = None;
        for name in names.iter().filter(|name| validate_transactional_id(name).is_ok()) {
            if let Err(error) = self.finish_if_abandoned(name) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn finish_if_abandoned(&self, transactional_id: &str) -> Result<()> {
        let coordinator = self.coordinator(transactional_id)?;
        if !coordinator.may_be_open() {
            return Ok(());
        }
        let Some(guard) = coordinator.try_lock()? else { return Ok(()) };
        let mut state = guard.state()?;
        if state.phase == Phase::Empty || guard.instance_alive(state.epoch)? {
            return Ok(());
        }
        if state.phase == Phase::Ongoing {
            state.phase = Phase::PrepareAbort;
            guard.store(&state, true)?;
        }
        // A dead instance's transaction is finished with the durability the stronger
        // promise needs: its producer's mode is not known here.
        self.finish(&guard, &mut state, true)
    }
}
