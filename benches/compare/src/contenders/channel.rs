//! crossbeam-channel: records passed in memory between threads, with no durability. The
//! ceiling to compare against, not a peer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::contender::{Ack, Consumer, Contender, Feature, Producer, Res, Spec, Store};

pub struct Channel;

impl Contender for Channel {
    fn name(&self) -> String {
        "crossbeam-channel".into()
    }

    fn supports(&self, spec: &Spec, feature: Feature) -> bool {
        spec.ack == Ack::Buffered && feature != Feature::Partitions
    }

    fn open(&self, _dir: &Path, _spec: &Spec) -> Res<Arc<dyn Store>> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        Ok(Arc::new(ChannelStore { sender, receiver }))
    }
}

struct ChannelStore {
    sender: Sender<Box<[u8]>>,
    receiver: Receiver<Box<[u8]>>,
}

impl Store for ChannelStore {
    fn producer(&self) -> Res<Box<dyn Producer>> {
        Ok(Box::new(ChannelProducer { sender: self.sender.clone() }))
    }

    /// A channel has one queue: the members of a group share it, and a second group would
    /// need its own channel, which the workloads never ask for.
    fn consumer(&self, _group: &str, _member: usize, _members: usize) -> Res<Box<dyn Consumer>> {
        Ok(Box::new(ChannelConsumer { receiver: self.receiver.clone() }))
    }
}

struct ChannelProducer {
    sender: Sender<Box<[u8]>>,
}

impl Producer for ChannelProducer {
    fn send(&mut self, _key: u64, value: &[u8]) -> Res<()> {
        self.sender.send(value.into())?;
        Ok(())
    }
}

struct ChannelConsumer {
    receiver: Receiver<Box<[u8]>>,
}

impl Consumer for ChannelConsumer {
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Res<usize> {
        let first = match self.receiver.recv_timeout(timeout) {
            Ok(value) => value,
            Err(RecvTimeoutError::Timeout) => return Ok(0),
            Err(error) => return Err(error.into()),
        };
        each(&first);
        let mut count = 1;
        while count < 8192 {
            let Ok(value) = self.receiver.try_recv() else { break };
            each(&value);
            count += 1;
        }
        Ok(count)
    }
}
