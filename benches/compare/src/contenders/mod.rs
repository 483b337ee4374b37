//! The contenders, one module each.

mod channel;
mod commitlog;
pub mod redis;
mod sqlite;
mod streamlog;

use std::time::Duration;

use crate::contender::Contender;

pub use self::channel::Channel;
pub use self::commitlog::Commitlog;
pub use self::redis::Redis;
pub use self::sqlite::Sqlite;
pub use self::streamlog::Streamlog;

/// Every contender, streamlog first.
pub fn all() -> Vec<Box<dyn Contender>> {
    use ::streamlog::Durability;
    vec![
        Box::new(Streamlog { durability: Durability::Buffered }),
        Box::new(Streamlog { durability: Durability::Interval(Duration::from_millis(100)) }),
        Box::new(Streamlog { durability: Durability::Sync }),
        Box::new(Channel),
        Box::new(Commitlog),
        Box::new(Sqlite),
        Box::new(Redis),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use crate::contender::{Ack, Contender, Feature, Spec, Store};

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("streamlog-compare-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Reads until `expected` values arrived or 10 s passed; returns how often each was seen.
    fn drain(store: &dyn Store, group: &str, members: usize, expected: usize) -> BTreeMap<String, usize> {
        let mut consumers: Vec<_> = (0..members).map(|m| store.consumer(group, m, members).unwrap()).collect();
        let mut seen = BTreeMap::new();
        let mut total = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while total < expected && Instant::now() < deadline {
            for consumer in &mut consumers {
                total += consumer
                    .poll(Duration::from_millis(10), &mut |value| {
                        *seen.entry(String::from_utf8_lossy(value).into_owned()).or_insert(0) += 1
                    })
                    .unwrap();
            }
        }
        seen
    }

    /// The contract every contender keeps: what is sent is read once per group, by one of
    /// its members, whether sent one by one or in batches.
    pub fn check_contract(contender: &dyn Contender) {
        for ack in [Ack::Buffered, Ack::Fsync] {
            let spec = Spec { partitions: 4, ack, max_value_bytes: 100 };
            if !contender.supports(&spec, Feature::Basic) {
                continue;
            }
            for members in [1, 2] {
                if members > 1 && !contender.supports(&spec, Feature::Groups) {
                    continue;
                }
                let dir = scratch(&contender.name().replace(|c: char| !c.is_alphanumeric(), "_"));
                let store = contender.open(&dir, &spec).unwrap();
                let mut producer = store.producer().unwrap();
                let values: Vec<String> = (0..300u32).map(|i| format!("value-{i:05}")).collect();
                for (i, value) in values[..100].iter().enumerate() {
                    producer.send(i as u64, value.as_bytes()).unwrap();
                }
                let batch: Vec<(u64, &[u8])> = values[100..].iter().enumerate().map(|(i, v)| (i as u64, v.as_bytes())).collect();
                producer.send_batch(&batch).unwrap();
                let expected: BTreeMap<String, usize> = values.iter().map(|v| (v.clone(), 1)).collect();
                let seen = drain(&*store, "group", members, values.len());
                assert_eq!(seen, expected, "{}, {ack:?}, {members} member(s)", contender.name());
                drop((producer, store));
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    #[test]
    fn every_contender_keeps_the_contract() {
        for contender in super::all() {
            check_contract(&*contender);
        }
    }
}
