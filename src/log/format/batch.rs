//! Record batches, as they lie in a segment one after another, and the records inside them:
//! encoding (`write_batch`, and `frame_single_record` for a large value written from the
//! caller's memory), the checksum, and the checks a reader makes before it hands a record out.

use super::{u16_at, u32_at, u64_at};
use crate::record::Record;
use crate::topic::MAX_RECORD_BYTES_LIMIT;

pub(crate) const BATCH_HEADER_BYTES: u32 = 40;
pub(crate) const RECORD_HEADER_BYTES: u32 = 24;
const HEADER_ENTRY_OVERHEAD: u32 = 6;

/// The largest batch ever written: one record of the largest allowed size, or many small ones.
pub(crate) const MAX_BATCH_BYTES: u64 = MAX_RECORD_BYTES_LIMIT as u64 + BATCH_HEADER_BYTES as u64;
/// Batches `send_batch` builds are cut at this size unless one record alone is larger.
pub(crate) const TARGET_BATCH_BYTES: u64 = 1 << 20;

/// Record flag: the record has a key (a key may be empty).
pub(crate) const FLAG_HAS_KEY: u16 = 1;
/// Record flag: the record has no value (a tombstone).
pub(crate) const FLAG_TOMBSTONE: u16 = 2;

/// The fixed part of a record batch.
///
/// ```text
/// 0  batch_bytes u32 (whole batch, header included)   4  crc32 of bytes 8..batch_bytes
/// 8  base_offset u64   16 record_count u32   20 attributes u32 (0)
/// 24 first_timestamp_ms u64   32 max_timestamp_ms u64
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) batch_bytes: u32,
    pub(crate) crc: u32,
    pub(crate) base_offset: u64,
    pub(crate) record_count: u32,
    pub(crate) max_timestamp_ms: u64,
}

impl BatchHeader {
    /// Reads the header at the start of `bytes`, which must hold at least `BATCH_HEADER_BYTES`.
    pub(crate) fn read(bytes: &[u8]) -> Self {
        BatchHeader {
            batch_bytes: u32_at(bytes, 0),
            crc: u32_at(bytes, 4),
            base_offset: u64_at(bytes, 8),
            record_count: u32_at(bytes, 16),
            max_timestamp_ms: u64_at(bytes, 32),
        }
    }

    /// The offset after this batch's last record.
    pub(crate) fn next_offset(&self) -> u64 {
        // Saturating: the header may be garbage that has not been checked yet.
        self.base_offset.saturating_add(u64::from(self.record_count))
    }

    /// Whether the header's sizes are possible at all, before the checksum is looked at.
    pub(crate) fn is_plausible(&self) -> bool {
        self.batch_bytes >= BATCH_HEADER_BYTES + RECORD_HEADER_BYTES && self.record_count > 0
    }
}

/// Whether `batch` (exactly one whole batch) matches its checksum.
pub(crate) fn batch_checksum_ok(batch: &[u8]) -> bool {
    checksum(&batch[8..]) == u32_at(batch, 4)
}

/// CRC-32 of `bytes`, as `crc32fast::hash` computes it, without asking the CPU which
/// instructions it has on every call (that question costs as much as checksumming a small
/// record): the answer is kept in a hasher made once and copied.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    static PROTOTYPE: std::sync::LazyLock<crc32fast::Hasher> = std::sync::LazyLock::new(crc32fast::Hasher::new);
    let mut hasher = PROTOTYPE.clone();
    hasher.update(bytes);
    hasher.finalize()
}

/// Bytes one record takes inside a batch.
pub(crate) fn record_bytes(record: &Record<'_>) -> u64 {
    let headers: u64 = record
        .headers
        .iter()
        .map(|(name, value)| u64::from(HEADER_ENTRY_OVERHEAD) + name.len() as u64 + value.len() as u64)
        .sum();
    u64::from(RECORD_HEADER_BYTES)
        + record.key_bytes().map_or(0, |k| k.len() as u64)
        + record.value_bytes().len() as u64
        + headers
}

/// Encodes `records` as one batch into `out`, which must be exactly the batch's size
/// (`BATCH_HEADER_BYTES` plus each record's `record_bytes`). Returns the batch's max timestamp.
pub(crate) fn write_batch(out: &mut [u8], base_offset: u64, records: &[Record<'_>], timestamps_ms: &[u64]) -> u64 {
    let mut at = BATCH_HEADER_BYTES as usize;
    let mut max_timestamp = 0;
    for (record, &timestamp) in records.iter().zip(timestamps_ms) {
        max_timestamp = max_timestamp.max(timestamp);
        let start = at;
        let key = record.key_bytes().unwrap_or_default();
        let value = record.value_bytes();
        let flags = if record.key.is_some() { FLAG_HAS_KEY } else { 0 } | if record.value.is_none() { FLAG_TOMBSTONE } else { 0 };
        at += RECORD_HEADER_BYTES as usize;
        put(out, &mut at, key);
        put(out, &mut at, value);
        for (name, header_value) in &record.headers {
            put(out, &mut at, &(name.len() as u16).to_le_bytes());
            put(out, &mut at, &(header_value.len() as u32).to_le_bytes());
            put(out, &mut at, name.as_bytes());
            put(out, &mut at, header_value);
        }
        let header = &mut out[start..start + RECORD_HEADER_BYTES as usize];
        header[0..4].copy_from_slice(&((at - start) as u32).to_le_bytes());
        header[4..6].copy_from_slice(&flags.to_le_bytes());
        header[6..8].copy_from_slice(&(record.headers.len() as u16).to_le_bytes());
        header[8..16].copy_from_slice(&timestamp.to_le_bytes());
        header[16..20].copy_from_slice(&(key.len() as u32).to_le_bytes());
        header[20..24].copy_from_slice(&(value.len() as u32).to_le_bytes());
    }
    debug_assert_eq!(at, out.len(), "batch size was computed wrongly");
    let first_timestamp = timestamps_ms.first().copied().unwrap_or(0);
    let batch_bytes = out.len() as u32;
    out[0..4].copy_from_slice(&batch_bytes.to_le_bytes());
    out[8..16].copy_from_slice(&base_offset.to_le_bytes());
    out[16..20].copy_from_slice(&(records.len() as u32).to_le_bytes());
    out[20..24].copy_from_slice(&0u32.to_le_bytes());
    out[24..32].copy_from_slice(&first_timestamp.to_le_bytes());
    out[32..40].copy_from_slice(&max_timestamp.to_le_bytes());
    let crc = checksum(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    max_timestamp
}

/// Encodes a one-record batch as the bytes before its value (`prefix`) and after it
/// (`suffix`), so that a large value can be written from the caller's memory without a copy:
/// `prefix`, the value and `suffix` together are exactly what `write_batch` would produce.
pub(crate) fn frame_single_record(
    prefix: &mut Vec<u8>,
    suffix: &mut Vec<u8>,
    base_offset: u64,
    record: &Record<'_>,
    timestamp_ms: u64,
) {
    let key = record.key_bytes().unwrap_or_default();
    let value = record.value_bytes();
    suffix.clear();
    for (name, header_value) in &record.headers {
        suffix.extend_from_slice(&(name.len() as u16).to_le_bytes());
        suffix.extend_from_slice(&(header_value.len() as u32).to_le_bytes());
        suffix.extend_from_slice(name.as_bytes());
        suffix.extend_from_slice(header_value);
    }
    let record_bytes = RECORD_HEADER_BYTES as usize + key.len() + value.len() + suffix.len();
    let batch_bytes = BATCH_HEADER_BYTES as usize + record_bytes;
    let flags = if record.key.is_some() { FLAG_HAS_KEY } else { 0 } | if record.value.is_none() { FLAG_TOMBSTONE } else { 0 };
    prefix.clear();
    prefix.extend_from_slice(&(batch_bytes as u32).to_le_bytes());
    prefix.extend_from_slice(&[0; 4]);
    prefix.extend_from_slice(&base_offset.to_le_bytes());
    prefix.extend_from_slice(&1u32.to_le_bytes());
    prefix.extend_from_slice(&0u32.to_le_bytes());
    prefix.extend_from_slice(&timestamp_ms.to_le_bytes());
    prefix.extend_from_slice(&timestamp_ms.to_le_bytes());
    prefix.extend_from_slice(&(record_bytes as u32).to_le_bytes());
    prefix.extend_from_slice(&flags.to_le_bytes());
    prefix.extend_from_slice(&(record.headers.len() as u16).to_le_bytes());
    prefix.extend_from_slice(&timestamp_ms.to_le_bytes());
    prefix.extend_from_slice(&(key.len() as u32).to_le_bytes());
    prefix.extend_from_slice(&(value.len() as u32).to_le_bytes());
    prefix.extend_from_slice(key);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&prefix[8..]);
    crc.update(value);
    crc.update(suffix);
    prefix[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
}

fn put(out: &mut [u8], at: &mut usize, bytes: &[u8]) {
    out[*at..*at + bytes.len()].copy_from_slice(bytes);
    *at += bytes.len();
}

/// Where one record's parts lie inside a batch, relative to the batch's first byte.
///
/// ```text
/// 0 record_bytes u32   4 flags u16   6 header_count u16   8 timestamp_ms u64
/// 16 key_bytes u32   20 value_bytes u32   24 key, value, then per header:
///    name_bytes u16, value_bytes u32, name (UTF-8), value
/// ```
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordLayout {
    pub(crate) record_bytes: u32,
    pub(crate) flags: u16,
    pub(crate) timestamp_ms: u64,
    pub(crate) key_bytes: u32,
    pub(crate) value_bytes: u32,
}

impl RecordLayout {
    /// Parses the record starting at `bytes[0]`; `None` if its sizes do not fit in `bytes`, or
    /// if it is not laid out as `write_batch` lays out a record: a checksum guards against
    /// damage, not against a deliberate change with the checksum recomputed (a fuzzer does it
    /// in one step), and what a reader returns and compaction copies must be what was written.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < RECORD_HEADER_BYTES as usize {
            return None;
        }
        let layout = RecordLayout {
            record_bytes: u32_at(bytes, 0),
            flags: u16_at(bytes, 4),
            timestamp_ms: u64_at(bytes, 8),
            key_bytes: u32_at(bytes, 16),
            value_bytes: u32_at(bytes, 20),
        };
        let fixed = u64::from(RECORD_HEADER_BYTES) + u64::from(layout.key_bytes) + u64::from(layout.value_bytes);
        let fits = u64::from(layout.record_bytes) >= fixed && layout.record_bytes as usize <= bytes.len();
        if !fits {
            return None;
        }
        let known_flags = layout.flags & !(FLAG_HAS_KEY | FLAG_TOMBSTONE) == 0;
        let key_ok = layout.flags & FLAG_HAS_KEY != 0 || layout.key_bytes == 0;
        let value_ok = layout.flags & FLAG_TOMBSTONE == 0 || layout.value_bytes == 0;
        let headers = &bytes[fixed as usize..layout.record_bytes as usize];
        (known_flags && key_ok && value_ok && headers_are_whole(headers, u16_at(bytes, 6))).then_some(layout)
    }
}

/// Whether `bytes` are exactly `count` headers, each whole, with a UTF-8 name.
fn headers_are_whole(bytes: &[u8], count: u16) -> bool {
    let mut at = 0usize;
    for _ in 0..count {
        if at + HEADER_ENTRY_OVERHEAD as usize > bytes.len() {
            return false;
        }
        let name_start = at + HEADER_ENTRY_OVERHEAD as usize;
        let name_end = name_start + u16_at(bytes, at) as usize;
        let end = name_end.saturating_add(u32_at(bytes, at + 2) as usize);
        if end > bytes.len() || std::str::from_utf8(&bytes[name_start..name_end]).is_err() {
            return false;
        }
        at = end;
    }
    at == bytes.len()
}

/// Iterates over the `(name, value)` headers encoded in `bytes`.
pub(crate) fn parse_headers(bytes: &[u8]) -> impl Iterator<Item = (&str, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + HEADER_ENTRY_OVERHEAD as usize > bytes.len() {
            return None;
        }
        let name_len = u16_at(bytes, at) as usize;
        let value_len = u32_at(bytes, at + 2) as usize;
        let name_start = at + HEADER_ENTRY_OVERHEAD as usize;
        let value_start = name_start + name_len;
        let end = value_start.checked_add(value_len)?;
        if end > bytes.len() {
            return None;
        }
        at = end;
        // Names are checked to be UTF-8 when sent, and again when the record was parsed.
        let name = std::str::from_utf8(&bytes[name_start..value_start]).unwrap_or_default();
        Some((name, &bytes[value_start..end]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips() {
        let records = [Record::new(b"first").key(b"k").header("trace", b"t1"), Record::tombstone(b"gone"), Record::new(b"")];
        let size = BATCH_HEADER_BYTES as u64 + records.iter().map(record_bytes).sum::<u64>();
        let mut batch = vec![0u8; size as usize];
        let max = write_batch(&mut batch, 77, &records, &[5, 9, 7]);
        assert_eq!(max, 9);
        let header = BatchHeader::read(&batch);
        assert_eq!((header.base_offset, header.record_count, header.batch_bytes as usize), (77, 3, batch.len()));
        assert!(batch_checksum_ok(&batch));

        let first = RecordLayout::parse(&batch[40..]).unwrap();
        assert_eq!((first.flags, first.timestamp_ms, first.key_bytes, first.value_bytes), (FLAG_HAS_KEY, 5, 1, 5));
        let headers_at = 40 + 24 + 1 + 5;
        let headers: Vec<_> = parse_headers(&batch[headers_at..40 + first.record_bytes as usize]).collect();
        assert_eq!(headers, vec![("trace", &b"t1"[..])]);
        let second = RecordLayout::parse(&batch[40 + first.record_bytes as usize..]).unwrap();
        assert_eq!(second.flags, FLAG_HAS_KEY | FLAG_TOMBSTONE);

        batch[50] ^= 1;
        assert!(!batch_checksum_ok(&batch), "a flipped bit must fail the checksum");
    }

    #[test]
    fn a_record_that_its_writer_could_not_have_written_does_not_parse() {
        let record = Record::new(b"value").key(b"k").header("trace", b"12345678").header("", b"");
        let mut batch = vec![0u8; BATCH_HEADER_BYTES as usize + record_bytes(&record) as usize];
        write_batch(&mut batch, 0, std::slice::from_ref(&record), &[1]);
        let at = BATCH_HEADER_BYTES as usize;
        assert!(RecordLayout::parse(&batch[at..]).is_some());
        // Each change below keeps the sizes consistent; found by the `batch` fuzz target,
        // which forges the batch checksum.
        let damaged = |change: &dyn Fn(&mut [u8])| {
            let mut copy = batch.clone();
            change(&mut copy[at..]);
            RecordLayout::parse(&copy[at..]).is_none()
        };
        assert!(damaged(&|r| r[6] = 1), "a header count that disagrees with the headers");
        assert!(damaged(&|r| r[6] = 3), "a header count past the headers");
        assert!(damaged(&|r| r[24 + 1 + 5 + 2] = 9), "a header that overruns the record");
        assert!(damaged(&|r| r[24 + 1 + 5 + 6] = 0xff), "a header name that is not UTF-8");
        assert!(damaged(&|r| r[4] |= 4), "an unknown flag");
        assert!(damaged(&|r| r[4] &= !(FLAG_HAS_KEY as u8)), "key bytes without a key");
        assert!(damaged(&|r| r[4] |= FLAG_TOMBSTONE as u8), "value bytes in a tombstone");
    }

    #[test]
    fn a_framed_single_record_equals_its_encoded_batch() {
        for record in
            [Record::new(b"value").key(b"k").header("h", b"v").header("", b""), Record::tombstone(b"gone"), Record::new(b"")]
        {
            let size = BATCH_HEADER_BYTES as u64 + record_bytes(&record);
            let mut batch = vec![0u8; size as usize];
            write_batch(&mut batch, 9, std::slice::from_ref(&record), &[42]);
            let (mut prefix, mut suffix) = (Vec::new(), Vec::new());
            frame_single_record(&mut prefix, &mut suffix, 9, &record, 42);
            let framed = [prefix.as_slice(), record.value_bytes(), suffix.as_slice()].concat();
            assert_eq!(framed, batch);
        }
    }

    #[test]
    fn garbage_batch_headers_do_not_overflow() {
        let mut bytes = [0u8; 40];
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        bytes[16..20].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(BatchHeader::read(&bytes).next_offset(), u64::MAX);
    }
}
