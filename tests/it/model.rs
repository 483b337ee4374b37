//! The log against a simple in-memory model: random sends, batches, reads from random offsets
//! and reopens (which run recovery), with segments small enough to roll often, and the topic's
//! compression switched on and off (so that segments mix compressed and plain batches).

use std::time::Duration;

use proptest::prelude::*;
use streamlog::{Compression, ConsumerConfig, OffsetReset, Queue, Record, TopicConfig, TopicPartition};

use crate::TempDir;

const PARTITIONS: u32 = 2;

#[derive(Debug, Clone, PartialEq)]
struct Modeled {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
    timestamp_ms: u64,
}

#[derive(Debug, Clone)]
enum Op {
    Send { partition: u32, record: Modeled },
    SendBatch { partition: u32, records: Vec<Modeled> },
    Read { partition: u32, from_per_mille: u32, max_poll_records: usize },
    Reopen,
    Compress(Compression),
}

/// The codecs this build can write.
fn codecs() -> Vec<Compression> {
    let mut codecs = vec![Compression::None, Compression::Lz4];
    if cfg!(feature = "zstd") {
        codecs.push(Compression::Zstd);
    }
    codecs
}

fn modeled() -> impl Strategy<Value = Modeled> {
    (
        prop::option::of(prop::collection::vec(any::<u8>(), 0..12)),
        prop::option::weighted(0.9, prop::collection::vec(any::<u8>(), 0..400)),
        prop::collection::vec(("[a-z]{0,6}", prop::collection::vec(any::<u8>(), 0..8)), 0..3),
        0u64..1 << 40,
    )
        .prop_map(|(key, value, headers, timestamp_ms)| {
            // A record without a value is a tombstone, which needs a key.
            let key = if value.is_none() { Some(key.unwrap_or_default()) } else { key };
            Modeled { key, value, headers, timestamp_ms }
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PARTITIONS, modeled()).prop_map(|(partition, record)| Op::Send { partition, record }),
        2 => (0..PARTITIONS, prop::collection::vec(modeled(), 1..30)).prop_map(|(partition, records)| Op::SendBatch { partition, records }),
        2 => (0..PARTITIONS, 0u32..=1000, 1usize..50).prop_map(|(partition, from_per_mille, max_poll_records)| Op::Read { partition, from_per_mille, max_poll_records }),
        1 => Just(Op::Reopen),
        1 => prop::sample::select(codecs()).prop_map(Op::Compress),
    ]
}

fn to_record(m: &Modeled, partition: u32) -> Record<'_> {
    let mut record = match &m.value {
        Some(value) => Record::new(value),
        None => Record::tombstone(m.key.as_deref().unwrap()),
    };
    if let Some(key) = &m.key {
        record = record.key(key);
    }
    for (name, value) in &m.headers {
        record = record.header(name, value);
    }
    record.partition(partition).timestamp(m.timestamp_ms)
}

fn check_read(queue: &Queue, partition: u32, from: u64, max_poll_records: usize, model: &[Modeled]) {
    let tp = TopicPartition::new("model", partition);
    let config = ConsumerConfig::new("model").auto_offset_reset(OffsetReset::None).max_poll_records(max_poll_records);
    let mut consumer = queue.consumer(config).unwrap();
    consumer.assign(std::slice::from_ref(&tp)).unwrap();
    consumer.seek(&tp, from).unwrap();
    let mut expected = from;
    loop {
        let records = consumer.poll(Duration::ZERO).unwrap();
        if records.is_empty() {
            break;
        }
        assert!(records.len() <= max_poll_records);
        for r in records.iter() {
            assert_eq!(r.offset(), expected);
            let m = &model[expected as usize];
            let headers: Vec<(String, Vec<u8>)> = r.headers().map(|(n, v)| (n.to_owned(), v.to_vec())).collect();
            let value = (!r.is_tombstone()).then(|| r.value().to_vec());
            assert_eq!(
                (r.key().map(<[u8]>::to_vec), value, headers, r.timestamp()),
                (m.key.clone(), m.value.clone(), m.headers.clone(), m.timestamp_ms)
            );
            expected += 1;
        }
    }
    assert_eq!(expected, model.len() as u64, "a read from {from} must reach the end");
    assert_eq!(consumer.position(&tp).unwrap(), model.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_behaves_like_a_vector_per_partition(ops in prop::collection::vec(op(), 1..60)) {
        let dir = TempDir::new("model");
        let config = TopicConfig::new(PARTITIONS).segment_bytes(2048).index_interval_bytes(128);
        let mut queue = Queue::open(dir.path()).unwrap();
        queue.create_topic_with("model", config).unwrap();
        let mut model: Vec<Vec<Modeled>> = vec![Vec::new(); PARTITIONS as usize];
        for op in ops {
            match op {
                Op::Send { partition, record } => {
                    let meta = queue.producer().send("model", to_record(&record, partition)).unwrap();
                    prop_assert_eq!((meta.partition(), meta.offset()), (partition, model[partition as usize].len() as u64));
                    model[partition as usize].push(record);
                }
                Op::SendBatch { partition, records } => {
                    let metas = queue.producer().send_batch("model", records.iter().map(|r| to_record(r, partition))).unwrap();
                    let start = model[partition as usize].len() as u64;
                    prop_assert!(metas.iter().enumerate().all(|(i, m)| m.offset() == start + i as u64));
                    model[partition as usize].extend(records);
                }
                Op::Read { partition, from_per_mille, max_poll_records } => {
                    let len = model[partition as usize].len() as u64;
                    check_read(&queue, partition, len * u64::from(from_per_mille) / 1000, max_poll_records, &model[partition as usize]);
                }
                Op::Reopen => {
                    drop(queue);
                    queue = Queue::open(dir.path()).unwrap();
                }
                Op::Compress(compression) => queue.alter_topic("model", |c| c.compression(compression)).unwrap(),
            }
        }
        for partition in 0..PARTITIONS {
            let len = model[partition as usize].len() as u64;
            prop_assert_eq!(queue.offsets(&TopicPartition::new("model", partition)).unwrap(), (0, len));
            check_read(&queue, partition, 0, 1000, &model[partition as usize]);
        }
    }
}
