//! The record a producer sends: value, key, headers and timestamp, borrowed from the caller or
//! owned.

use std::borrow::Cow;

/// A record to send. It holds its bytes borrowed (`&[u8]`, `&str`) or owned (`Vec<u8>`,
/// `String`); `send` copies them into the log either way, so a transform loop can map owned
/// values straight into a `Vec<Record<'static>>` for `send_batch`.
///
/// ```
/// use streamlog::Record;
/// let record = Record::new(b"42 EUR").key("customer-7").header("trace", b"abc").partition(1);
/// let owned: Vec<Record<'static>> = vec![String::from("a"), String::from("b")]
///     .into_iter()
///     .map(|value| Record::new(value).key(vec![7u8]))
///     .collect();
/// assert_eq!(owned.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub(crate) key: Option<Cow<'a, [u8]>>,
    pub(crate) value: Option<Cow<'a, [u8]>>,
    pub(crate) headers: Vec<(Cow<'a, str>, Cow<'a, [u8]>)>,
    pub(crate) partition: Option<u32>,
    pub(crate) timestamp_ms: Option<u64>,
}

/// Bytes a [`Record`] can hold: borrowed (a reference to anything that is `AsRef<[u8]>`:
/// `&[u8]`, `&[u8; N]`, `&str`, `&Vec<u8>`, `&String`) or owned (`Vec<u8>`, `String`,
/// `Box<[u8]>`, `Cow<[u8]>`). Arrays are taken by reference only: an array by value would
/// have to be copied to the heap, and lints that see it accepted would suggest dropping the `&`.
pub trait IntoBytes<'a> {
    /// The bytes, borrowed where they were borrowed.
    fn into_bytes(self) -> Cow<'a, [u8]>;
}

impl<'a, T: AsRef<[u8]> + ?Sized> IntoBytes<'a> for &'a T {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_ref())
    }
}

impl<'a> IntoBytes<'a> for Vec<u8> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self)
    }
}

impl<'a> IntoBytes<'a> for String {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self.into_bytes())
    }
}

impl<'a> IntoBytes<'a> for Box<[u8]> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self.into_vec())
    }
}

impl<'a> IntoBytes<'a> for Cow<'a, [u8]> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        self
    }
}

impl<'a> Record<'a> {
    /// A record with this value, no key, and the send time as its timestamp.
    pub fn new(value: impl IntoBytes<'a>) -> Self {
        Record { key: None, value: Some(value.into_bytes()), headers: Vec::new(), partition: None, timestamp_ms: None }
    }

    /// A record with a key and no value: under compaction it deletes the key.
    pub fn tombstone(key: impl IntoBytes<'a>) -> Self {
        Record { key: Some(key.into_bytes()), value: None, headers: Vec::new(), partition: None, timestamp_ms: None }
    }

    /// Sets the key; keyed records go to the partition the key hashes to.
    pub fn key(mut self, key: impl IntoBytes<'a>) -> Self {
        self.key = Some(key.into_bytes());
        self
    }

    /// Adds a header. Names are UTF-8 of at most [`MAX_HEADER_NAME_BYTES`](crate::MAX_HEADER_NAME_BYTES)
    /// bytes; a record may carry up to [`MAX_HEADERS_PER_RECORD`](crate::MAX_HEADERS_PER_RECORD)
    /// headers, and several may share a name.
    pub fn header(mut self, name: impl Into<Cow<'a, str>>, value: impl IntoBytes<'a>) -> Self {
        self.headers.push((name.into(), value.into_bytes()));
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

    /// The key, if the record has one.
    pub(crate) fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The value; empty for a tombstone.
    pub(crate) fn value_bytes(&self) -> &[u8] {
        self.value.as_deref().unwrap_or_default()
    }
}
