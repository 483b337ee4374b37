//! Consumer groups shared by threads and processes, with no coordinator: the group's state lives
//! in a file every member's process maps, and any member may change it under its lock.
//!
//! A group's directory `groups/<name>/` holds:
//! - `group`: a mapped head holding a robust process-shared mutex, a change counter that
//!   consumers sleep on, and one slot per member (its id and heartbeats, read without the
//!   lock); then the group state — members, subscriptions, the assignment and who owns what —
//!   in two copies read and written with pread/pwrite under the mutex: a writer fills the
//!   inactive copy and then flips, so one that dies mid-write leaves the old state in force.
//!   Like a partition's `state` file it is rebuilt in each new epoch; only the generation and
//!   the member-id counter carry over.
//! - `members.lock`: the member in slot `i` holds an exclusive lock on byte `i`. The kernel drops
//!   it when the member's process dies, so a dead member is seen at once, whatever killed it.
//! - `offsets/`: the offset store (`group/offsets.rs`).
//!
//! The protocol. Whoever changes membership (a join, a leave, an expulsion found by any
//! process's keeper thread, a change in the subscribed topics) recomputes the assignment with
//! the pure assignor and increments the generation. Each member then, from its own `poll`,
//! releases what it must give up (after its listener's `on_revoked`) and takes what it was
//! assigned once nobody owns it. The `owned` sets are disjoint and change only under the lock,
//! so no partition is ever owned by two members.

pub(crate) mod assignor;
pub(crate) mod describe;
pub(crate) mod file;
pub(crate) mod offsets;
pub(crate) mod state;
