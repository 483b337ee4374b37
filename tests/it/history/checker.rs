//! The history checker: a pure function of the events the workload's processes reported and
//! of the final read, returning every anomaly it finds, by name. It knows nothing of processes
//! or files, so it is tested here on hand-written histories.
//!
//! What it holds the queue to, beyond the log's own promises (acknowledged records present
//! once, at their offsets, with their bytes, offsets dense): the group's fencing promises that
//! a partition changes owner only through the group, so a member acts on a partition (returns
//! its records from `poll`, or commits it) only while the group counts it as the owner. A
//! member's *ownership window* of a partition runs from its `on_assigned` (called after the
//! group handed the partition over) to its `on_revoked` (called before it hands it back), its
//! `on_lost` or its death. An expelled member learns of it late: its window, as observed, may
//! extend past the moment the group gave the partition to another. That is not a violation as
//! long as it does nothing with the partition meanwhile; so the checker flags an act of member
//! A in window W only if the act began (its `poll` or commit was invoked) after another member
//! B's window of the same partition began later than W did. Such a B got the partition after A
//! and before A's act, so the group had already taken it from A.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What a process of the workload reported, or the nemesis did to it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum What {
    /// A producer is about to send record `seq` to `partition`.
    Invoke { producer: u32, seq: u64, partition: u32 },
    /// The send of `seq` returned this offset.
    Ok { producer: u32, seq: u64, partition: u32, offset: u64 },
    /// The send of `seq` returned an error: the record may or may not be in the log.
    Fail { producer: u32, seq: u64 },
    /// `on_assigned`, with the position each partition starts at.
    Assigned(Vec<(u32, u64)>),
    /// `on_revoked`.
    Revoked(Vec<u32>),
    /// `on_lost`.
    Lost(Vec<u32>),
    /// The member is about to call `poll`; the deliveries up to its next `Poll` came from it.
    Poll,
    /// `poll` returned the record at `offset` of `partition`, whose bytes have this CRC-32.
    Deliver { partition: u32, offset: u64, crc: u32 },
    /// The member is about to commit; the `CommitOk`s up to its next `CommitInvoke` are its result.
    CommitInvoke,
    /// The commit returned success for `offset` of `partition`.
    CommitOk { partition: u32, offset: u64 },
    /// The commit was refused.
    CommitFail,
    /// The nemesis killed the process (SIGKILL) here.
    Died,
}

/// One event: when (CLOCK_MONOTONIC, nanoseconds), which process incarnation, what.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub(crate) ns: u64,
    pub(crate) process: u32,
    pub(crate) what: What,
}

/// What the workload observed: the events, and the final read of every partition from its start.
pub(crate) struct History {
    pub(crate) events: Vec<Event>,
    /// Per partition: `(offset, value)` in the order the final read returned them.
    pub(crate) final_log: BTreeMap<u32, Vec<(u64, Vec<u8>)>>,
    /// The group's committed offsets after the run.
    pub(crate) committed: BTreeMap<u32, u64>,
}

/// The anomalies of the taxonomy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// An acknowledged send is absent from the final read (or a delivered record is).
    Lost,
    /// One (producer, seq) at two offsets.
    Duplicated,
    /// A record in the log that no producer ever tried to send.
    Phantom,
    /// Bytes not as sent: a bad checksum in the log, or a delivery whose bytes differ from the log's.
    Garbage,
    /// An acknowledged offset where the final read finds something else, or a committed offset
    /// nobody committed.
    InconsistentOffsets,
    /// The final read skips an offset.
    Hole,
    /// A producer's acknowledged offsets on one partition go backwards.
    NonMonotonicSend,
    /// A member's deliveries of a partition within one ownership window go backwards.
    NonMonotonicPoll,
    /// A member's deliveries within one window skip an offset present in the log.
    PollSkip,
    /// A commit beyond the end of the partition's log.
    CommitBeyondEnd,
    /// A commit beyond what the committer delivered in its window (and beyond where it started).
    CommitUndelivered,
    /// A member acted on a partition after the group gave it to another member.
    TwoLiveOwners,
}

/// One anomaly found, with what it is about.
#[derive(Clone, Debug)]
pub(crate) struct Anomaly {
    pub(crate) kind: Kind,
    pub(crate) detail: String,
}

/// The record value producer `producer` sends as its `seq`: `h`, producer u32, seq u64, padding
/// length u16, padding (a function of producer and seq), CRC-32 of everything before it.
pub(crate) fn encode(producer: u32, seq: u64) -> Vec<u8> {
    let pad = ((seq * 31 + u64::from(producer) * 7) % 200) as u16;
    let mut value = Vec::with_capacity(19 + usize::from(pad));
    value.push(b'h');
    value.extend_from_slice(&producer.to_le_bytes());
    value.extend_from_slice(&seq.to_le_bytes());
    value.extend_from_slice(&pad.to_le_bytes());
    value.extend((0..u64::from(pad)).map(|i| (seq.wrapping_add(i) ^ u64::from(producer)) as u8));
    value.extend_from_slice(&crc32fast::hash(&value).to_le_bytes());
    value
}

/// `(producer, seq)` of a value `encode` made; `None` for anything else.
pub(crate) fn decode(value: &[u8]) -> Option<(u32, u64)> {
    if value.len() < 19 || value[0] != b'h' {
        return None;
    }
    let producer = u32::from_le_bytes(value[1..5].try_into().unwrap());
    let seq = u64::from_le_bytes(value[5..13].try_into().unwrap());
    (encode(producer, seq) == value).then_some((producer, seq))
}

/// Every anomaly in `history`, in a stable order.
pub(crate) fn check(history: &History) -> Vec<Anomaly> {
    let mut found = Vec::new();
    let mut report = |kind: Kind, detail: String| found.push(Anomaly { kind, detail });
    let mut events = history.events.clone();
    events.sort_by_key(|e| e.ns);

    // The log itself: dense, decodable, every record sent by someone, once.
    let mut invoked: HashMap<(u32, u64), u32> = HashMap::new();
    for event in &events {
        if let What::Invoke { producer, seq, partition } = event.what {
            invoked.insert((producer, seq), partition);
        }
    }
    let mut at: HashMap<(u32, u64), Vec<(u32, u64)>> = HashMap::new();
    let mut crc_at: HashMap<(u32, u64), u32> = HashMap::new();
    let mut end: BTreeMap<u32, u64> = BTreeMap::new();
    for (&partition, records) in &history.final_log {
        let mut expected = records.first().map_or(0, |r| r.0);
        for (offset, value) in records {
            if *offset != expected {
                report(Kind::Hole, format!("partition {partition}: offset {offset} follows {}", expected.wrapping_sub(1)));
            }
            expected = offset + 1;
            crc_at.insert((partition, *offset), crc32fast::hash(value));
            let Some(id) = decode(value) else {
                report(Kind::Garbage, format!("{partition}/{offset}: {} bytes that no producer writes", value.len()));
                continue;
            };
            match invoked.get(&id) {
                None => report(Kind::Phantom, format!("{partition}/{offset}: producer {} seq {} never sent", id.0, id.1)),
                Some(&p) if p != partition => {
                    report(Kind::InconsistentOffsets, format!("{partition}/{offset}: {id:?} was sent to partition {p}"))
                }
                Some(_) => {}
            }
            at.entry(id).or_default().push((partition, *offset));
        }
        end.insert(partition, expected);
    }
    let mut duplicated: Vec<_> = at.iter().filter(|(_, places)| places.len() > 1).collect();
    duplicated.sort();
    for (id, places) in duplicated {
        report(Kind::Duplicated, format!("producer {} seq {} at {places:?}", id.0, id.1));
    }

    // Acknowledged sends: present where acknowledged, and in order per producer and partition.
    let mut last_ack: HashMap<(u32, u32), (u64, u64)> = HashMap::new();
    let mut acks: Vec<(u32, u64, u32, u64)> = events
        .iter()
        .filter_map(|e| match e.what {
            What::Ok { producer, seq, partition, offset } => Some((producer, seq, partition, offset)),
            _ => None,
        })
        .collect();
    acks.sort();
    for (producer, seq, partition, offset) in acks {
        match at.get(&(producer, seq)) {
            None => report(Kind::Lost, format!("producer {producer} seq {seq}, acknowledged at {partition}/{offset}")),
            Some(places) if !places.contains(&(partition, offset)) => report(
                Kind::InconsistentOffsets,
                format!("producer {producer} seq {seq} acknowledged at {partition}/{offset}, found at {places:?}"),
            ),
            Some(_) => {
                if let Some(&(previous_seq, previous)) = last_ack.get(&(producer, partition))
                    && offset <= previous
                {
                    report(
                        Kind::NonMonotonicSend,
                        format!("producer {producer}: seq {seq} at {partition}/{offset} after seq {previous_seq} at {previous}"),
                    );
                }
                last_ack.insert((producer, partition), (seq, offset));
            }
        }
    }

    // Ownership windows: (member, start ns, end ns) per partition.
    let mut windows: BTreeMap<u32, Vec<(u32, u64, u64)>> = BTreeMap::new();
    let mut open: HashMap<(u32, u32), u64> = HashMap::new();
    for event in &events {
        let mut close = |partition: u32, open: &mut HashMap<(u32, u32), u64>| {
            if let Some(start) = open.remove(&(event.process, partition)) {
                windows.entry(partition).or_default().push((event.process, start, event.ns));
            }
        };
        match &event.what {
            What::Assigned(partitions) => {
                for &(partition, _) in partitions {
                    close(partition, &mut open);
                    open.insert((event.process, partition), event.ns);
                }
            }
            What::Revoked(partitions) | What::Lost(partitions) => partitions.iter().for_each(|&p| close(p, &mut open)),
            What::Died => {
                let mine: Vec<u32> = open.keys().filter(|(m, _)| *m == event.process).map(|&(_, p)| p).collect();
                mine.into_iter().for_each(|p| close(p, &mut open));
            }
            _ => {}
        }
    }
    for ((member, partition), start) in open {
        windows.entry(partition).or_default().push((member, start, u64::MAX));
    }
    // Whether another member's window of `partition` began after `start` and before `act_ns`.
    let taken_over = |member: u32, partition: u32, start: u64, act_ns: u64| {
        windows.get(&partition).and_then(|list| list.iter().find(|&&(m, s, _)| m != member && s > start && s < act_ns)).copied()
    };

    // Members: deliveries and commits within their windows.
    struct Window {
        start_ns: u64,
        start_position: u64,
        last_delivered: Option<u64>,
    }
    let mut state: HashMap<(u32, u32), Window> = HashMap::new();
    let mut invoked_at: HashMap<u32, u64> = HashMap::new();
    let mut attempted_commits: HashMap<u32, BTreeSet<u64>> = HashMap::new();
    for event in &events {
        let member = event.process;
        match event.what {
            What::Assigned(ref partitions) => {
                for &(partition, position) in partitions {
                    state.insert(
                        (member, partition),
                        Window { start_ns: event.ns, start_position: position, last_delivered: None },
                    );
                }
            }
            What::Revoked(ref partitions) | What::Lost(ref partitions) => {
                for p in partitions {
                    state.remove(&(member, *p));
                }
            }
            What::Died => state.retain(|&(m, _), _| m != member),
            What::Poll | What::CommitInvoke => {
                invoked_at.insert(member, event.ns);
            }
            What::Deliver { partition, offset, crc } => {
                let act_ns = invoked_at.get(&member).copied().unwrap_or(event.ns);
                match crc_at.get(&(partition, offset)) {
                    None => report(Kind::Lost, format!("member {member} was given {partition}/{offset}, absent from the log")),
                    Some(&in_log) if in_log != crc => {
                        report(Kind::Garbage, format!("member {member} was given {partition}/{offset} with other bytes"))
                    }
                    Some(_) => {}
                }
                let Some(window) = state.get_mut(&(member, partition)) else {
                    report(Kind::TwoLiveOwners, format!("member {member} was given {partition}/{offset} without owning it"));
                    continue;
                };
                if let Some(other) = taken_over(member, partition, window.start_ns, act_ns) {
                    report(
                        Kind::TwoLiveOwners,
                        format!("member {member} was given {partition}/{offset} after member {} took the partition", other.0),
                    );
                }
                let expected = window.last_delivered.map_or(window.start_position, |last| last + 1);
                match window.last_delivered {
                    Some(last) if offset <= last => {
                        report(Kind::NonMonotonicPoll, format!("member {member}: {partition}/{offset} after {last}"))
                    }
                    _ if offset > expected && (expected..offset).any(|o| crc_at.contains_key(&(partition, o))) => report(
                        Kind::PollSkip,
                        format!(
                            "member {member}: {partition}/{offset} where {expected} was next (window from {})",
                            window.start_ns
                        ),
                    ),
                    _ => {}
                }
                window.last_delivered = Some(window.last_delivered.map_or(offset, |last| last.max(offset)));
            }
            What::CommitOk { partition, offset } => {
                attempted_commits.entry(partition).or_default().insert(offset);
                let act_ns = invoked_at.get(&member).copied().unwrap_or(event.ns);
                let log_end = end.get(&partition).copied().unwrap_or(0);
                if offset > log_end {
                    report(
                        Kind::CommitBeyondEnd,
                        format!("member {member} committed {partition}/{offset}, the log ends at {log_end}"),
                    );
                    continue;
                }
                let Some(window) = state.get(&(member, partition)) else {
                    report(Kind::TwoLiveOwners, format!("member {member} committed {partition}/{offset} without owning it"));
                    continue;
                };
                if let Some(other) = taken_over(member, partition, window.start_ns, act_ns) {
                    report(
                        Kind::TwoLiveOwners,
                        format!("member {member} committed {partition}/{offset} after member {} took the partition", other.0),
                    );
                }
                let covered = window.last_delivered.map_or(window.start_position, |last| (last + 1).max(window.start_position));
                if offset > covered {
                    report(
                        Kind::CommitUndelivered,
                        format!("member {member} committed {partition}/{offset}, delivered up to {covered}"),
                    );
                }
            }
            _ => {}
        }
    }
    // Commits a process made but was killed before reporting are possible too: a final
    // committed offset must be one some member reported, or between the offsets some member
    // was given (a commit in flight when the nemesis struck commits a delivered position).
    for (&partition, &offset) in &history.committed {
        let log_end = end.get(&partition).copied().unwrap_or(0);
        if offset > log_end {
            report(
                Kind::CommitBeyondEnd,
                format!("the group's committed offset of {partition} is {offset}, the log ends at {log_end}"),
            );
        }
        let reported = attempted_commits.get(&partition).is_some_and(|set| set.contains(&offset));
        let delivered = events.iter().any(|e| {
            matches!(e.what, What::Deliver { partition: p, offset: o, .. } if p == partition && o + 1 == offset)
                || matches!(&e.what, What::Assigned(list) if list.contains(&(partition, offset)))
        });
        if !reported && !delivered {
            report(
                Kind::InconsistentOffsets,
                format!("the group's committed offset of {partition} is {offset}, which nobody committed"),
            );
        }
    }
    found
}

/// The first few anomalies, one a line, for a failure message.
pub(crate) fn describe(anomalies: &[Anomaly]) -> String {
    let lines: Vec<String> = anomalies.iter().take(20).map(|a| format!("{:?}: {}", a.kind, a.detail)).collect();
    format!("{} anomalies:\n{}", anomalies.len(), lines.join("\n"))
}

/// The kinds in `anomalies`, each once.
pub(crate) fn kinds(anomalies: &[Anomaly]) -> BTreeSet<Kind> {
    anomalies.iter().map(|a| a.kind).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ns: u64, process: u32, what: What) -> Event {
        Event { ns, process, what }
    }

    /// Producer 1 sends seqs 0..3 to partition 0 (offsets 0..3); member 10 owns partition 0
    /// from position 0, is given all three and commits 3.
    fn honest() -> History {
        let mut events = Vec::new();
        for seq in 0..3 {
            events.push(ev(10 * seq + 1, 1, What::Invoke { producer: 1, seq, partition: 0 }));
            events.push(ev(10 * seq + 2, 1, What::Ok { producer: 1, seq, partition: 0, offset: seq }));
        }
        events.push(ev(100, 10, What::Assigned(vec![(0, 0)])));
        events.push(ev(101, 10, What::Poll));
        for offset in 0..3 {
            events.push(ev(102 + offset, 10, What::Deliver { partition: 0, offset, crc: crc32fast::hash(&encode(1, offset)) }));
        }
        events.push(ev(110, 10, What::CommitInvoke));
        events.push(ev(111, 10, What::CommitOk { partition: 0, offset: 3 }));
        events.push(ev(120, 10, What::Revoked(vec![0])));
        let final_log = BTreeMap::from([(0, (0..3).map(|o| (o, encode(1, o))).collect())]);
        History { events, final_log, committed: BTreeMap::from([(0, 3)]) }
    }

    fn only(history: &History, kind: Kind) {
        let found = check(history);
        assert_eq!(kinds(&found), BTreeSet::from([kind]), "{}", describe(&found));
    }

    #[test]
    fn an_honest_history_has_no_anomaly() {
        let found = check(&honest());
        assert!(found.is_empty(), "{}", describe(&found));
    }

    #[test]
    fn values_decode_only_as_encoded() {
        assert_eq!(decode(&encode(7, 1234)), Some((7, 1234)));
        let mut value = encode(7, 1234);
        let last = value.len() - 5;
        value[last] ^= 1;
        assert_eq!(decode(&value), None);
        assert_eq!(decode(b"h"), None);
    }

    #[test]
    fn each_anomaly_is_named() {
        let mut h = honest();
        h.final_log.get_mut(&0).unwrap().remove(2);
        h.events.retain(|e| !matches!(e.what, What::Deliver { offset: 2, .. }));
        h.events.iter_mut().for_each(|e| {
            if let What::CommitOk { offset, .. } = &mut e.what {
                *offset = 2;
            }
        });
        h.committed.insert(0, 2);
        only(&h, Kind::Lost);

        let mut h = honest();
        h.final_log.get_mut(&0).unwrap().push((3, encode(1, 1)));
        only(&h, Kind::Duplicated);

        let mut h = honest();
        h.final_log.get_mut(&0).unwrap().push((3, encode(2, 0)));
        only(&h, Kind::Phantom);

        let mut h = honest();
        h.final_log.get_mut(&0).unwrap().push((3, b"torn".to_vec()));
        only(&h, Kind::Garbage);

        let mut h = honest();
        h.events.iter_mut().for_each(|e| {
            if let What::Deliver { offset: 1, crc, .. } = &mut e.what {
                *crc ^= 1;
            }
        });
        only(&h, Kind::Garbage);

        let mut h = honest();
        h.events[3].what = What::Ok { producer: 1, seq: 1, partition: 0, offset: 2 };
        only(&h, Kind::InconsistentOffsets);

        let mut h = honest();
        h.committed.insert(1, 0);
        only(&h, Kind::InconsistentOffsets);

        let mut h = honest();
        let log = h.final_log.get_mut(&0).unwrap();
        log.push((4, encode(1, 3)));
        h.events.push(ev(35, 1, What::Invoke { producer: 1, seq: 3, partition: 0 }));
        only(&h, Kind::Hole);

        let mut h = honest();
        h.final_log.insert(0, vec![(0, encode(1, 0)), (1, encode(1, 2)), (2, encode(1, 1))]);
        h.events.iter_mut().for_each(|e| match &mut e.what {
            What::Ok { seq: 1, offset, .. } => *offset = 2,
            What::Ok { seq: 2, offset, .. } => *offset = 1,
            What::Deliver { offset, crc, .. } => {
                *crc = crc32fast::hash(&[encode(1, 0), encode(1, 2), encode(1, 1)][*offset as usize])
            }
            _ => {}
        });
        only(&h, Kind::NonMonotonicSend);

        let mut h = honest();
        h.events.insert(10, ev(105, 10, What::Deliver { partition: 0, offset: 1, crc: crc32fast::hash(&encode(1, 1)) }));
        only(&h, Kind::NonMonotonicPoll);

        let mut h = honest();
        h.events.retain(|e| !matches!(e.what, What::Deliver { offset: 1, .. }));
        only(&h, Kind::PollSkip);

        let mut h = honest();
        h.events.push(ev(112, 10, What::CommitOk { partition: 0, offset: 9 }));
        only(&h, Kind::CommitBeyondEnd);

        let mut h = honest();
        h.events.retain(|e| !matches!(e.what, What::Deliver { offset: 2, .. }));
        only(&h, Kind::CommitUndelivered);

        // Member 11 takes partition 0 while member 10 still reports it owns it (it was
        // expelled without knowing): 10 then commits, which the fencing forbids.
        let mut h = honest();
        h.events.push(ev(105, 11, What::Assigned(vec![(0, 0)])));
        only(&h, Kind::TwoLiveOwners);

        // Or is given a record after the takeover.
        let mut h = honest();
        h.events.retain(|e| !matches!(e.what, What::CommitOk { .. }));
        h.committed.clear();
        h.events.iter_mut().filter(|e| matches!(e.what, What::Assigned(_))).for_each(|e| e.ns = 99);
        h.events.push(ev(100, 11, What::Assigned(vec![(0, 0)])));
        let found = check(&h);
        assert!(kinds(&found) == BTreeSet::from([Kind::TwoLiveOwners]) && found.len() == 3, "{}", describe(&found));
    }

    #[test]
    fn an_expelled_member_that_does_nothing_after_the_takeover_is_no_second_owner() {
        // Member 10 is stopped after its commit; member 11 takes over at 115, member 10 hears
        // it was lost at 130, having done nothing with the partition after 115.
        let mut h = honest();
        h.events.retain(|e| !matches!(e.what, What::Revoked(_)));
        h.events.push(ev(115, 11, What::Assigned(vec![(0, 3)])));
        h.events.push(ev(130, 10, What::Lost(vec![0])));
        let found = check(&h);
        assert!(found.is_empty(), "{}", describe(&found));
    }
}
