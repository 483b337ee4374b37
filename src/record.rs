//! The record a producer sends: value, key, headers and timestamp, borrowed from the caller.

/// A record to send. It borrows its bytes; `send` copies them into the log.
///
/// ```
/// use streamlog::Record;
/// let record = Record::new(b"42 EUR").key(b"customer-7").header("trace", b"abc").partition(1);
/// ```
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: Vec<(&'a str, &'a [u8])>,
    pub(crate) partition: Option<u32>,
    pub(crate) timestamp_ms: Option<u64>,
}

impl<'a> Record<'a> {
    /// A record with this value, no key, and the send time as its timestamp.
    pub fn new(value: &'a [u8]) -> Self {
        Record { key: None, value: Some(value), headers: Vec::new(), partition: None, timestamp_ms: None }
    }

    /// A record with a key and no value: under compaction it deletes the key.
    pub fn tombstone(key: &'a [u8]) -> Self {
        Record { key: Some(key), value: None, headers: Vec::new(), partition: None, timestamp_ms: None }
    }

    /// Sets the key; keyed records go to the partition the key hashes to.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Adds a header. Names are UTF-8; a record may carry up to 65,535 headers.
    pub fn header(mut self, name: &'a str, value: &'a [u8]) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Sends to this partition instead of the one the key or the round-robin would choose.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp, in milliseconds since the Unix epoch.
    pub fn timestamp(mut self, timestamp_ms: u64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}
