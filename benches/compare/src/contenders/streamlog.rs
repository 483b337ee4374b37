//! streamlog itself, in one durability mode.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use streamlog::{ConsumerConfig, Durability, OffsetReset, ProducerConfig, Queue, Record, TopicConfig};

use crate::contender::{Ack, Consumer, Contender, Feature, Producer, Res, Spec, Store};

const TOPIC: &str = "bench";

pub struct Streamlog {
    pub durability: Durability,
}

impl Contender for Streamlog {
    fn name(&self) -> String {
        match self.durability {
            Durability::Buffered => "streamlog".into(),
            Durability::Interval(every) => format!("streamlog (fsync every {} ms)", every.as_millis()),
            Durability::Sync => "streamlog (fsync)".into(),
            other => format!("streamlog ({other:?})"),
        }
    }

    fn supports(&self, spec: &Spec, _feature: Feature) -> bool {
        (spec.ack == Ack::Fsync) == (self.durability == Durability::Sync)
    }

    fn open(&self, dir: &Path, spec: &Spec) -> Res<Arc<dyn Store>> {
        let queue = Queue::open(dir)?;
        let max_record_bytes = (spec.max_value_bytes + 1024).max(1 << 20) as u32;
        queue.create_topic_with(TOPIC, TopicConfig::new(spec.partitions).max_record_bytes(max_record_bytes))?;
        Ok(Arc::new(StreamlogStore { queue, durability: self.durability }))
    }
}

pub struct StreamlogStore {
    queue: Queue,
    durability: Durability,
}

impl Store for StreamlogStore {
    fn producer(&self) -> Res<Box<dyn Producer>> {
        let producer = self.queue.producer_with(ProducerConfig::new().durability(self.durability));
        Ok(Box::new(StreamlogProducer { producer }))
    }

    fn consumer(&self, group: &str, _member: usize, _members: usize) -> Res<Box<dyn Consumer>> {
        let config = ConsumerConfig::new(group).auto_offset_reset(OffsetReset::Earliest).max_poll_records(8192);
        let mut consumer = self.queue.consumer(config)?;
        consumer.subscribe(&[TOPIC])?;
        Ok(Box::new(StreamlogConsumer { consumer: Some(consumer) }))
    }
}

struct StreamlogProducer {
    producer: streamlog::Producer,
}

impl Producer for StreamlogProducer {
    fn send(&mut self, key: u64, value: &[u8]) -> Res<()> {
        self.producer.send(TOPIC, Record::new(value).key(&key.to_le_bytes()))?;
        Ok(())
    }

    fn send_batch(&mut self, records: &[(u64, &[u8])]) -> Res<()> {
        let keys: Vec<[u8; 8]> = records.iter().map(|(key, _)| key.to_le_bytes()).collect();
        let batch = records.iter().zip(&keys).map(|((_, value), key)| Record::new(value).key(key));
        self.producer.send_batch(TOPIC, batch)?;
        Ok(())
    }
}

/// A group member; `None` only once it was closed.
struct StreamlogConsumer {
    consumer: Option<streamlog::Consumer>,
}

impl Consumer for StreamlogConsumer {
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Res<usize> {
        let records = self.consumer.as_mut().expect("not closed").poll(timeout)?;
        for record in records.iter() {
            each(record.value());
        }
        Ok(records.len())
    }
}

impl Drop for StreamlogConsumer {
    /// Every record `poll` returned was handled inside it, so leaving commits all of them
    /// (`close`); a plain drop would leave the last poll's records to be read again.
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            let _ = consumer.close();
        }
    }
}
