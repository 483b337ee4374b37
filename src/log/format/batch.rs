//! Record batches, as they lie in a segment one after another, and the records inside them:
//! encoding (`write_batch`, and `frame_single_record` for a large value written from the
//! caller's memory), the checksum, and the checks a reader makes before it hands a record out.
//!
//! A batch's fixed header is followed by its records, each framed with variable-length
//! integers (LEB128, as Kafka's records are), so that a record sent alone costs little framing.
//! The checksum leaves out the base offset: a batch can be encoded and checksummed before the
//! writer takes the append lock, which fills in the offset alone (a torn or wrong offset is
//! caught by the offset check every reader and recovery makes).

use super::codec::{self, COMPRESSED_PREFIX_BYTES};
use super::{u16_at, u32_at, u64_at};
use crate::record::Record;
use crate::topic::{Compression, MAX_RECORD_BYTES_LIMIT};

/// The fixed part of every batch, drawn at [`BatchHeader`].
pub(crate) const BATCH_HEADER_BYTES: u32 = 52;
/// The checksum covers the batch from this byte on: everything after the base offset...
const CHECKSUMMED_FROM: usize = 16;
/// ...or from here, the base offset included, in a batch with `OFFSET_CHECKSUMMED`.
const CHECKSUMMED_WITH_OFFSET_FROM: usize = 8;
/// The fewest bytes a record takes: no key, an empty value, no headers.
pub(crate) const MIN_RECORD_BYTES: u32 = 5;

/// The largest batch ever written: one record of the largest allowed size, or many small ones.
pub(crate) const MAX_BATCH_BYTES: u64 = MAX_RECORD_BYTES_LIMIT as u64 + BATCH_HEADER_BYTES as u64;
/// Batches `send_batch` builds are cut at this size unless one record alone is larger.
pub(crate) const TARGET_BATCH_BYTES: u64 = 1 << 20;

/// Record flag: the record has a key (a key may be empty).
pub(crate) const FLAG_HAS_KEY: u8 = 1;
/// Record flag: the record has no value (a tombstone).
pub(crate) const FLAG_TOMBSTONE: u8 = 2;

/// The attribute bits that name the compression codec.
const CODEC_MASK: u16 = 0b111;
/// Attribute bit: the checksum covers the base offset too. Set on the batches compaction
/// writes, whose offsets are known when they are encoded (an appended batch is encoded before
/// its offset is). A compacted segment's offsets may skip, so nothing but the checksum can
/// tell that a base offset was changed there: every batch of a compacted segment must have it.
const OFFSET_CHECKSUMMED: u16 = 1 << 7;
/// Attribute bit: a transactional producer wrote the batch; its records count only once the
/// producer's next marker in the partition commits them (Kafka's bit).
const TRANSACTIONAL: u16 = 1 << 4;
/// Attribute bit: the batch is a marker (a control batch, Kafka's bit): one record that ends its
/// producer's transaction in the partition, committing or aborting it. Readers never return it.
const CONTROL: u16 = 1 << 5;
/// A marker's one record has this key: which way the transaction ended.
const MARKER_ABORT: u8 = 0;
const MARKER_COMMIT: u8 = 1;

/// Who wrote a batch: an idempotent producer's id and epoch, and the sequence number of the
/// batch's first record among the records that producer sent the partition (each record
/// takes one, from 0), and whether the batch belongs to a transaction. All ones
/// ([`ProducerStamp::NONE`]) when no idempotent producer wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerStamp {
    pub(crate) id: u64,
    pub(crate) epoch: u16,
    pub(crate) base_sequence: u32,
    pub(crate) transactional: bool,
}

impl ProducerStamp {
    /// The producer fields of a batch no idempotent producer wrote.
    pub(crate) const NONE: ProducerStamp =
        ProducerStamp { id: u64::MAX, epoch: u16::MAX, base_sequence: u32::MAX, transactional: false };

    /// The attribute bits the stamp sets.
    fn attributes(&self) -> u16 {
        if self.transactional { TRANSACTIONAL } else { 0 }
    }
}

/// The fixed part of a record batch.
///
/// ```text
/// 0  batch_bytes u32 (whole batch, header included)   4  crc32 of bytes 16 (or 8)..batch_bytes
/// 8  base_offset u64   16 record_count u32   20 attributes u16   22 producer_epoch u16
/// 24 producer_id u64   32 base_sequence u32   36 first_timestamp_ms u64   44 max_timestamp_ms u64
/// 52 the records
/// ```
/// Attributes: bits 0 to 2 the compression codec (0 none; Kafka's numbers otherwise), bit 4
/// set in a transactional producer's batches, bit 5 in markers (which have bit 4 too, one
/// uncompressed record, and no sequence number), bit 7 set when the checksum covers the base
/// offset too (bytes 8 on; see `OFFSET_CHECKSUMMED`), all others 0. The producer fields are all
/// ones when no idempotent producer wrote the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) batch_bytes: u32,
    pub(crate) crc: u32,
    pub(crate) base_offset: u64,
    pub(crate) record_count: u32,
    pub(crate) attributes: u16,
    pub(crate) producer: ProducerStamp,
    pub(crate) first_timestamp_ms: u64,
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
            attributes: u16_at(bytes, 20),
            producer: ProducerStamp {
                id: u64_at(bytes, 24),
                epoch: u16_at(bytes, 22),
                base_sequence: u32_at(bytes, 32),
                transactional: u16_at(bytes, 20) & TRANSACTIONAL != 0,
            },
            first_timestamp_ms: u64_at(bytes, 36),
            max_timestamp_ms: u64_at(bytes, 44),
        }
    }

    /// Writes every field but the checksum (`seal_batch` computes it once the records are in).
    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.batch_bytes.to_le_bytes());
        out[8..16].copy_from_slice(&self.base_offset.to_le_bytes());
        out[16..20].copy_from_slice(&self.record_count.to_le_bytes());
        out[20..22].copy_from_slice(&self.attributes.to_le_bytes());
        out[22..24].copy_from_slice(&self.producer.epoch.to_le_bytes());
        out[24..32].copy_from_slice(&self.producer.id.to_le_bytes());
        out[32..36].copy_from_slice(&self.producer.base_sequence.to_le_bytes());
        out[36..44].copy_from_slice(&self.first_timestamp_ms.to_le_bytes());
        out[44..52].copy_from_slice(&self.max_timestamp_ms.to_le_bytes());
    }

    /// The offset after this batch's last record.
    pub(crate) fn next_offset(&self) -> u64 {
        // Saturating: the header may be garbage that has not been checked yet.
        self.base_offset.saturating_add(u64::from(self.record_count))
    }

    /// The codec the records are compressed with, or `None` for attributes no writer sets.
    pub(crate) fn compression(&self) -> Option<Compression> {
        if self.attributes & !(CODEC_MASK | OFFSET_CHECKSUMMED | TRANSACTIONAL | CONTROL) != 0 {
            return None;
        }
        Compression::from_code((self.attributes & CODEC_MASK) as u8)
    }

    /// Whether the checksum covers the base offset too (see `OFFSET_CHECKSUMMED`).
    pub(crate) fn offset_checksummed(&self) -> bool {
        self.attributes & OFFSET_CHECKSUMMED != 0
    }

    /// Whether the batch is a marker, which ends a transaction and holds no record to return.
    pub(crate) fn is_marker(&self) -> bool {
        self.attributes & CONTROL != 0
    }

    /// Whether the header's sizes and attributes are possible at all, before the checksum is
    /// looked at.
    pub(crate) fn is_plausible(&self) -> bool {
        if self.is_marker()
            && (self.record_count != 1 || !self.producer.transactional || self.compression() != Some(Compression::None))
        {
            return false;
        }
        let records_fit = match self.compression() {
            Some(Compression::None) => {
                u64::from(self.batch_bytes)
                    >= u64::from(BATCH_HEADER_BYTES) + u64::from(self.record_count) * u64::from(MIN_RECORD_BYTES)
            }
            Some(_) => {
                self.batch_bytes >= BATCH_HEADER_BYTES + COMPRESSED_PREFIX_BYTES && self.record_count <= MAX_RECORDS_PER_BATCH
            }
            None => false,
        };
        self.record_count > 0 && records_fit
    }
}

/// The most records `bytes` of batches can hold: as many batches as fit, compressed ones
/// holding the most.
pub(crate) fn max_records_in(bytes: u64) -> u64 {
    bytes / u64::from(BATCH_HEADER_BYTES + COMPRESSED_PREFIX_BYTES) * u64::from(MAX_RECORDS_PER_BATCH)
}

/// Most records one batch may hold, compressed or not: as many as the largest batch could
/// hold uncompressed.
const MAX_RECORDS_PER_BATCH: u32 = (MAX_BATCH_BYTES / MIN_RECORD_BYTES as u64) as u32;

/// Whether `batch` (exactly one whole batch) matches its checksum.
pub(crate) fn batch_checksum_ok(batch: &[u8]) -> bool {
    checksum(&batch[checksummed_from(batch)..]) == u32_at(batch, 4)
}

/// Where the checksum of `batch` starts, which its attributes say.
fn checksummed_from(batch: &[u8]) -> usize {
    if u16_at(batch, 20) & OFFSET_CHECKSUMMED != 0 { CHECKSUMMED_WITH_OFFSET_FROM } else { CHECKSUMMED_FROM }
}

/// Fills in the checksum of `batch` (exactly one whole batch, every other byte written).
pub(crate) fn seal_batch(batch: &mut [u8]) {
    let crc = checksum(&batch[checksummed_from(batch)..]);
    batch[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Makes the checksum of `batch` (one whole batch, its base offset final) cover its base
/// offset too, as compaction's batches must (see `OFFSET_CHECKSUMMED`).
pub(crate) fn checksum_base_offset(batch: &mut [u8]) {
    let attributes = u16_at(batch, 20) | OFFSET_CHECKSUMMED;
    batch[20..22].copy_from_slice(&attributes.to_le_bytes());
    seal_batch(batch);
}

/// Sets the base offset of a sealed batch, which the checksum leaves out.
pub(crate) fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[8..16].copy_from_slice(&base_offset.to_le_bytes());
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

/// Bytes `record`, stamped `timestamp_ms`, takes inside a batch whose first record is stamped
/// `first_timestamp_ms` (records store their timestamp as a difference from it).
pub(crate) fn record_bytes(record: &Record<'_>, timestamp_ms: u64, first_timestamp_ms: u64) -> u64 {
    let body = record_body_bytes(record, zigzag(timestamp_ms.wrapping_sub(first_timestamp_ms)));
    varint_bytes(body) + body
}

/// Bytes of a record after its length.
fn record_body_bytes(record: &Record<'_>, timestamp_delta: u64) -> u64 {
    let field = |bytes: &[u8]| varint_bytes(bytes.len() as u64) + bytes.len() as u64;
    let headers: u64 = record.headers.iter().map(|(name, value)| field(name.as_bytes()) + field(value)).sum();
    1 + varint_bytes(timestamp_delta)
        + record.key_bytes().map_or(0, field)
        + record.value.as_deref().map_or(0, field)
        + varint_bytes(record.headers.len() as u64)
        + headers
}

/// The body length of a record that takes exactly `bytes` with its length varint.
fn body_filling(bytes: usize) -> u64 {
    let bytes = bytes as u64;
    (1..=10).map(|length| bytes.saturating_sub(length)).find(|&body| varint_bytes(body) + body == bytes).unwrap_or(0)
}

/// Bytes a whole uncompressed batch of `records` takes.
pub(crate) fn batch_bytes(records: &[Record<'_>], timestamps_ms: &[u64]) -> u64 {
    let first = timestamps_ms.first().copied().unwrap_or(0);
    let records: u64 = records.iter().zip(timestamps_ms).map(|(record, &t)| record_bytes(record, t, first)).sum();
    u64::from(BATCH_HEADER_BYTES) + records
}

/// Encodes `records` one after another into `out`, which must be exactly their size (each
/// one's `record_bytes` against `first_timestamp_ms`). Returns their largest timestamp.
pub(crate) fn write_records(out: &mut [u8], first_timestamp_ms: u64, records: &[Record<'_>], timestamps_ms: &[u64]) -> u64 {
    let mut at = 0;
    let mut max_timestamp = 0;
    for (i, (record, &timestamp)) in records.iter().zip(timestamps_ms).enumerate() {
        max_timestamp = max_timestamp.max(timestamp);
        let delta = zigzag(timestamp.wrapping_sub(first_timestamp_ms));
        // The last record fills what is left, so its size need not be counted again (a record
        // sent alone is the only one).
        let body = if i + 1 == records.len() { body_filling(out.len() - at) } else { record_body_bytes(record, delta) };
        debug_assert_eq!(body, record_body_bytes(record, delta), "records' size was computed wrongly");
        put_varint(out, &mut at, body);
        out[at] = record_flags(record);
        at += 1;
        put_varint(out, &mut at, delta);
        if let Some(key) = record.key_bytes() {
            put_field(out, &mut at, key);
        }
        if let Some(value) = record.value.as_deref() {
            put_field(out, &mut at, value);
        }
        put_headers(out, &mut at, record);
    }
    debug_assert_eq!(at, out.len(), "records' size was computed wrongly");
    max_timestamp
}

/// Encodes `records` as one uncompressed batch into `out`, which must be exactly the batch's
/// size (`batch_bytes`), stamped with its `producer`. Returns the batch's max timestamp.
pub(crate) fn write_batch(
    out: &mut [u8],
    base_offset: u64,
    producer: ProducerStamp,
    records: &[Record<'_>],
    timestamps_ms: &[u64],
) -> u64 {
    let first_timestamp_ms = timestamps_ms.first().copied().unwrap_or(0);
    let max_timestamp_ms = write_records(&mut out[BATCH_HEADER_BYTES as usize..], first_timestamp_ms, records, timestamps_ms);
    let header = BatchHeader {
        batch_bytes: out.len() as u32,
        crc: 0,
        base_offset,
        record_count: records.len() as u32,
        attributes: u16::from(Compression::None.code()) | producer.attributes(),
        producer,
        first_timestamp_ms,
        max_timestamp_ms,
    };
    header.write(out);
    seal_batch(out);
    max_timestamp_ms
}

/// Encodes `records` as one batch compressed with `compression` into `out` (replacing what it held),
/// sealed, stamped with its `producer`, with base offset 0 (`set_base_offset` gives it its
/// own). `scratch` holds the records uncompressed meanwhile. Returns the batch's max timestamp.
pub(crate) fn write_compressed_batch(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    compression: Compression,
    producer: ProducerStamp,
    records: &[Record<'_>],
    timestamps_ms: &[u64],
) -> u64 {
    let first_timestamp_ms = timestamps_ms.first().copied().unwrap_or(0);
    scratch.clear();
    scratch.resize((batch_bytes(records, timestamps_ms) - u64::from(BATCH_HEADER_BYTES)) as usize, 0);
    let max_timestamp_ms = write_records(scratch, first_timestamp_ms, records, timestamps_ms);
    out.clear();
    out.resize((BATCH_HEADER_BYTES + COMPRESSED_PREFIX_BYTES) as usize, 0);
    out[BATCH_HEADER_BYTES as usize..].copy_from_slice(&(scratch.len() as u32).to_le_bytes());
    codec::compress(compression, scratch, out);
    let header = BatchHeader {
        batch_bytes: out.len() as u32,
        crc: 0,
        base_offset: 0,
        record_count: records.len() as u32,
        attributes: u16::from(compression.code()) | producer.attributes(),
        producer,
        first_timestamp_ms,
        max_timestamp_ms,
    };
    header.write(out);
    seal_batch(out);
    max_timestamp_ms
}

/// Encodes a one-record batch as the bytes before its value (`prefix`) and after it
/// (`suffix`), so that a large value can be written from the caller's memory without a copy:
/// `prefix`, the value and `suffix` together are exactly what `write_batch` would produce.
pub(crate) fn frame_single_record(
    prefix: &mut Vec<u8>,
    suffix: &mut Vec<u8>,
    base_offset: u64,
    producer: ProducerStamp,
    record: &Record<'_>,
    timestamp_ms: u64,
) {
    let value = record.value_bytes();
    let mut headers = vec![0u8; headers_bytes(record) as usize];
    put_headers(&mut headers, &mut 0, record);
    *suffix = headers;
    let body_bytes = record_body_bytes(record, 0);
    let batch_bytes = u64::from(BATCH_HEADER_BYTES) + varint_bytes(body_bytes) + body_bytes;
    let before_value = (batch_bytes - value.len() as u64 - suffix.len() as u64) as usize;
    prefix.clear();
    prefix.resize(before_value, 0);
    let header = BatchHeader {
        batch_bytes: batch_bytes as u32,
        crc: 0,
        base_offset,
        record_count: 1,
        attributes: u16::from(Compression::None.code()) | producer.attributes(),
        producer,
        first_timestamp_ms: timestamp_ms,
        max_timestamp_ms: timestamp_ms,
    };
    header.write(prefix);
    let mut at = BATCH_HEADER_BYTES as usize;
    put_varint(prefix, &mut at, body_bytes);
    prefix[at] = record_flags(record);
    at += 1;
    put_varint(prefix, &mut at, 0);
    if let Some(key) = record.key_bytes() {
        put_field(prefix, &mut at, key);
    }
    if record.value.is_some() {
        put_varint(prefix, &mut at, value.len() as u64);
    }
    debug_assert_eq!(at, prefix.len());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&prefix[CHECKSUMMED_FROM..]);
    crc.update(value);
    crc.update(suffix);
    prefix[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
}

/// Encodes the marker that ends `producer`'s transaction in a partition (committing it or
/// not), sealed, with base offset 0 (`set_base_offset` gives it its own): a control batch of
/// one record whose key says which way the transaction ended. It takes no sequence number.
pub(crate) fn write_marker(producer_id: u64, epoch: u16, commit: bool, timestamp_ms: u64) -> Vec<u8> {
    let key = [if commit { MARKER_COMMIT } else { MARKER_ABORT }];
    let record = Record::new(Vec::new()).key(key.to_vec());
    let timestamps = [timestamp_ms];
    let mut out = vec![0u8; batch_bytes(std::slice::from_ref(&record), &timestamps) as usize];
    let producer = ProducerStamp { id: producer_id, epoch, base_sequence: u32::MAX, transactional: true };
    write_batch(&mut out, 0, producer, std::slice::from_ref(&record), &timestamps);
    mark_as_marker(&mut out);
    out
}

/// Sets the marker bit of `batch` (one whole sealed batch) and seals it again.
pub(crate) fn mark_as_marker(batch: &mut [u8]) {
    let attributes = u16_at(batch, 20) | CONTROL;
    batch[20..22].copy_from_slice(&attributes.to_le_bytes());
    seal_batch(batch);
}

/// Which way the marker `batch` (one whole batch whose header says it is a marker, checksum
/// checked) ended its transaction: true for a commit; `None` when its record is not exactly
/// the one `write_marker` writes.
pub(crate) fn marker_commits(batch: &[u8]) -> Option<bool> {
    let header = BatchHeader::read(batch);
    let records = &batch[BATCH_HEADER_BYTES as usize..];
    [true, false].into_iter().find(|&commit| {
        let canonical = write_marker(header.producer.id, header.producer.epoch, commit, header.first_timestamp_ms);
        canonical[BATCH_HEADER_BYTES as usize..] == *records
    })
}

fn record_flags(record: &Record<'_>) -> u8 {
    (if record.key.is_some() { FLAG_HAS_KEY } else { 0 }) | if record.value.is_none() { FLAG_TOMBSTONE } else { 0 }
}

fn headers_bytes(record: &Record<'_>) -> u64 {
    let field = |bytes: &[u8]| varint_bytes(bytes.len() as u64) + bytes.len() as u64;
    varint_bytes(record.headers.len() as u64)
        + record.headers.iter().map(|(name, value)| field(name.as_bytes()) + field(value)).sum::<u64>()
}

fn put_headers(out: &mut [u8], at: &mut usize, record: &Record<'_>) {
    put_varint(out, at, record.headers.len() as u64);
    for (name, value) in &record.headers {
        put_field(out, at, name.as_bytes());
        put_field(out, at, value);
    }
}

/// A length, then the bytes.
fn put_field(out: &mut [u8], at: &mut usize, bytes: &[u8]) {
    put_varint(out, at, bytes.len() as u64);
    out[*at..*at + bytes.len()].copy_from_slice(bytes);
    *at += bytes.len();
}

/// Where one record's parts lie inside the bytes it was parsed from (relative to the record's
/// first byte), and what it says of itself. Its headers (their count first) follow its value:
/// they start at `value_at + value_bytes`, an empty value's place in a tombstone.
///
/// ```text
/// length varint (of what follows)   flags u8 (1 has key, 2 tombstone)
/// timestamp varint (zigzag of the difference from the batch's first timestamp)
/// key: length varint, bytes (only with the key flag)
/// value: length varint, bytes (not in a tombstone)
/// header count varint, then per header: name length varint, name (UTF-8), value length varint, value
/// ```
/// Varints are LEB128, seven bits a byte, least significant first, and never longer than
/// needed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordLayout {
    pub(crate) record_bytes: u32,
    pub(crate) flags: u8,
    pub(crate) timestamp_ms: u64,
    pub(crate) key_at: u32,
    pub(crate) key_bytes: u32,
    pub(crate) value_at: u32,
    pub(crate) value_bytes: u32,
}

impl RecordLayout {
    /// Parses the record starting at `bytes[0]`, in a batch whose first timestamp is
    /// `first_timestamp_ms`; `None` if its sizes do not fit in `bytes`, or if it is not laid
    /// out as `write_records` lays out a record: a checksum guards against damage, not against
    /// a deliberate change with the checksum recomputed (a fuzzer does it in one step), and
    /// what a reader returns and compaction copies must be what was written.
    #[inline(always)]
    pub(crate) fn parse(bytes: &[u8], first_timestamp_ms: u64) -> Option<Self> {
        let mut at = 0;
        let body_bytes = read_varint(bytes, &mut at)?;
        let end = (at as u64).checked_add(body_bytes).filter(|&end| end <= bytes.len() as u64 && end <= u64::from(u32::MAX))?;
        let record = &bytes[..end as usize];
        let flags = *record.get(at)?;
        at += 1;
        if flags & !(FLAG_HAS_KEY | FLAG_TOMBSTONE) != 0 {
            return None;
        }
        let timestamp_ms = first_timestamp_ms.wrapping_add(unzigzag(read_varint(record, &mut at)?));
        let (key_at, key_bytes) = if flags & FLAG_HAS_KEY != 0 { read_field(record, &mut at)? } else { (at, 0) };
        let (value_at, value_bytes) = if flags & FLAG_TOMBSTONE == 0 { read_field(record, &mut at)? } else { (at, 0) };
        // Most records have no headers: a count of zero that ends the record.
        let no_headers = at + 1 == record.len() && record[at] == 0;
        (no_headers || headers_are_whole(&record[at..])).then_some(RecordLayout {
            record_bytes: end as u32,
            flags,
            timestamp_ms,
            key_at: key_at as u32,
            key_bytes: key_bytes as u32,
            value_at: value_at as u32,
            value_bytes: value_bytes as u32,
        })
    }
}

/// Reads a length and skips the bytes it counts; returns where they start and how many.
#[inline(always)]
fn read_field(bytes: &[u8], at: &mut usize) -> Option<(usize, usize)> {
    let length = read_varint(bytes, at)?;
    let start = *at;
    let end = (start as u64).checked_add(length).filter(|&end| end <= bytes.len() as u64)? as usize;
    *at = end;
    Some((start, end - start))
}

/// Whether `bytes` are exactly a header count and that many headers, each whole, with a UTF-8
/// name.
fn headers_are_whole(bytes: &[u8]) -> bool {
    let mut at = 0;
    let Some(count) = read_varint(bytes, &mut at) else { return false };
    for _ in 0..count {
        let Some((name_at, name_bytes)) = read_field(bytes, &mut at) else { return false };
        if std::str::from_utf8(&bytes[name_at..name_at + name_bytes]).is_err() || read_field(bytes, &mut at).is_none() {
            return false;
        }
    }
    at == bytes.len()
}

/// Iterates over the `(name, value)` headers encoded in `bytes` (a header count, then the
/// headers), which `RecordLayout::parse` found whole.
pub(crate) fn parse_headers(bytes: &[u8]) -> impl Iterator<Item = (&str, &[u8])> {
    let mut at = 0;
    let mut left = read_varint(bytes, &mut at).unwrap_or(0);
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        left -= 1;
        let (name_at, name_bytes) = read_field(bytes, &mut at)?;
        let (value_at, value_bytes) = read_field(bytes, &mut at)?;
        // Names are checked to be UTF-8 when sent, and again when the record was parsed.
        let name = std::str::from_utf8(&bytes[name_at..name_at + name_bytes]).unwrap_or_default();
        Some((name, &bytes[value_at..value_at + value_bytes]))
    })
}

/// Bytes `value` takes as a varint.
fn varint_bytes(value: u64) -> u64 {
    u64::from((64 - (value | 1).leading_zeros()).div_ceil(7))
}

fn put_varint(out: &mut [u8], at: &mut usize, mut value: u64) {
    while value >= 0x80 {
        out[*at] = value as u8 | 0x80;
        value >>= 7;
        *at += 1;
    }
    out[*at] = value as u8;
    *at += 1;
}

/// Reads the varint at `bytes[*at]`; `None` if it runs past `bytes`, overflows 64 bits or is
/// longer than it needs to be (no writer writes such a one).
#[inline(always)]
fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let first = *bytes.get(*at)?;
    *at += 1;
    if first < 0x80 {
        return Some(u64::from(first));
    }
    read_long_varint(bytes, at, first)
}

/// The rest of a varint whose first byte, `first`, said more follow.
#[inline(never)]
fn read_long_varint(bytes: &[u8], at: &mut usize, first: u8) -> Option<u64> {
    let mut value = u64::from(first & 0x7f);
    let mut shift = 7;
    loop {
        let byte = *bytes.get(*at)?;
        *at += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            // A last byte of zero adds nothing: a shorter varint says the same.
            return (byte != 0).then_some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

fn zigzag(value: u64) -> u64 {
    let signed = value as i64;
    ((signed << 1) ^ (signed >> 63)) as u64
}

fn unzigzag(value: u64) -> u64 {
    (value >> 1) ^ (value & 1).wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: ProducerStamp = ProducerStamp { id: 1 << 32 | 5, epoch: 3, base_sequence: 41, transactional: false };

    fn encode(records: &[Record<'_>], timestamps: &[u64]) -> Vec<u8> {
        let mut batch = vec![0u8; batch_bytes(records, timestamps) as usize];
        write_batch(&mut batch, 77, STAMP, records, timestamps);
        batch
    }

    #[test]
    fn markers_say_which_way_their_transaction_ended_and_nothing_else_passes_for_one() {
        for commit in [true, false] {
            let marker = write_marker(9, 4, commit, 1_000);
            let header = BatchHeader::read(&marker);
            assert!(header.is_marker() && header.producer.transactional && header.is_plausible());
            assert_eq!((header.producer.id, header.producer.epoch, header.record_count), (9, 4, 1));
            assert!(batch_checksum_ok(&marker));
            assert_eq!(marker_commits(&marker), Some(commit));
        }
        let transactional = ProducerStamp { transactional: true, ..STAMP };
        let mut batch = vec![0u8; batch_bytes(&[Record::new(b"v")], &[1]) as usize];
        write_batch(&mut batch, 0, transactional, &[Record::new(b"v")], &[1]);
        let header = BatchHeader::read(&batch);
        assert!(header.producer.transactional && !header.is_marker() && header.is_plausible());
        // A marker bit on a batch of two records, or without the transactional bit, is damage.
        let mut two = encode(&[Record::new(b"a"), Record::new(b"b")], &[1, 1]);
        let attributes = u16_at(&two, 20) | CONTROL | TRANSACTIONAL;
        two[20..22].copy_from_slice(&attributes.to_le_bytes());
        assert!(!BatchHeader::read(&two).is_plausible());
        let mut bare = write_marker(9, 4, true, 1_000);
        let attributes = u16_at(&bare, 20) & !TRANSACTIONAL;
        bare[20..22].copy_from_slice(&attributes.to_le_bytes());
        assert!(!BatchHeader::read(&bare).is_plausible());
        // A record whose key is not a marker's says nothing.
        let mut other = vec![0u8; batch_bytes(&[Record::new(b"").key(b"x")], &[1]) as usize];
        write_batch(&mut other, 0, transactional, &[Record::new(b"").key(b"x")], &[1]);
        assert_eq!(marker_commits(&other), None);
    }

    #[test]
    fn a_batch_round_trips() {
        let records = [Record::new(b"first").key(b"k").header("trace", b"t1"), Record::tombstone(b"gone"), Record::new(b"")];
        let batch = encode(&records, &[5, 9, 3]);
        let header = BatchHeader::read(&batch);
        assert_eq!((header.base_offset, header.record_count, header.batch_bytes as usize), (77, 3, batch.len()));
        assert_eq!(header.producer, STAMP);
        assert_eq!((header.first_timestamp_ms, header.max_timestamp_ms, header.compression()), (5, 9, Some(Compression::None)));
        assert!(header.is_plausible() && batch_checksum_ok(&batch));

        let mut at = BATCH_HEADER_BYTES as usize;
        let first = RecordLayout::parse(&batch[at..], 5).unwrap();
        let bytes = |from: u32, len: u32| &batch[at + from as usize..at + (from + len) as usize];
        assert_eq!((first.flags, first.timestamp_ms), (FLAG_HAS_KEY, 5));
        assert_eq!((bytes(first.key_at, first.key_bytes), bytes(first.value_at, first.value_bytes)), (&b"k"[..], &b"first"[..]));
        let headers: Vec<_> =
            parse_headers(&batch[at + (first.value_at + first.value_bytes) as usize..at + first.record_bytes as usize]).collect();
        assert_eq!(headers, vec![("trace", &b"t1"[..])]);
        at += first.record_bytes as usize;
        let second = RecordLayout::parse(&batch[at..], 5).unwrap();
        assert_eq!((second.flags, second.timestamp_ms, second.value_bytes), (FLAG_HAS_KEY | FLAG_TOMBSTONE, 9, 0));
        at += second.record_bytes as usize;
        let third = RecordLayout::parse(&batch[at..], 5).unwrap();
        assert_eq!(
            (third.flags, third.timestamp_ms, third.key_bytes, third.value_bytes),
            (0, 3, 0, 0),
            "a timestamp below the first"
        );
        assert_eq!(at + third.record_bytes as usize, batch.len());

        let mut moved = batch.clone();
        set_base_offset(&mut moved, 1 << 40);
        assert!(batch_checksum_ok(&moved), "the base offset is not checksummed");
        let mut flipped = batch.clone();
        flipped[60] ^= 1;
        assert!(!batch_checksum_ok(&flipped), "a flipped bit must fail the checksum");

        // As compaction writes it: the checksum covers the base offset too, and says so.
        let mut compacted = batch.clone();
        checksum_base_offset(&mut compacted);
        let header = BatchHeader::read(&compacted);
        assert!(header.offset_checksummed() && header.is_plausible() && batch_checksum_ok(&compacted));
        assert_eq!(header.compression(), Some(Compression::None));
        assert!(!BatchHeader::read(&batch).offset_checksummed());
        set_base_offset(&mut compacted, 78);
        assert!(!batch_checksum_ok(&compacted), "a moved base offset must fail the checksum");
        compacted[20] &= !(OFFSET_CHECKSUMMED as u8);
        set_base_offset(&mut compacted, 77);
        assert!(!batch_checksum_ok(&compacted), "the flag itself is checksummed");
    }

    #[test]
    fn a_record_sent_alone_costs_little_framing() {
        let record = Record::new(&[7u8; 100][..]);
        // Its length, flags, timestamp, value length and header count: one byte each.
        assert_eq!(batch_bytes(std::slice::from_ref(&record), &[1_700_000_000_000]), u64::from(BATCH_HEADER_BYTES) + 5 + 100);
        let same_time = vec![Record::new(&[7u8; 100][..]); 10];
        assert_eq!(batch_bytes(&same_time, &[9; 10]), u64::from(BATCH_HEADER_BYTES) + 10 * 105);
    }

    #[test]
    fn a_record_that_its_writer_could_not_have_written_does_not_parse() {
        let record = Record::new(b"value").key(b"k").header("trace", b"12345678").header("", b"");
        let batch = encode(std::slice::from_ref(&record), &[1]);
        let at = BATCH_HEADER_BYTES as usize;
        assert!(RecordLayout::parse(&batch[at..], 1).is_some());
        // Each change below keeps the record's length right; found by the `batch` fuzz target,
        // which forges the batch checksum. The record: length, flags, timestamp, key length,
        // key, value length, value, header count, then the headers.
        let damaged = |change: &dyn Fn(&mut Vec<u8>)| {
            let mut copy = batch[at..].to_vec();
            change(&mut copy);
            RecordLayout::parse(&copy, 1).is_none()
        };
        let headers_at = 1 + 1 + 1 + 2 + 6;
        assert_eq!(batch[at + headers_at], 2, "the header count");
        assert!(damaged(&|r| r[headers_at] = 1), "a header count that disagrees with the headers");
        assert!(damaged(&|r| r[headers_at] = 3), "a header count past the headers");
        assert!(damaged(&|r| r[headers_at + 7] = 0x7f), "a header value that overruns the record");
        assert!(damaged(&|r| r[headers_at + 2] = 0xff), "a header name that is not UTF-8");
        assert!(damaged(&|r| r[1] |= 4), "an unknown flag");
        assert!(damaged(&|r| r[1] &= !FLAG_HAS_KEY), "key bytes without a key");
        assert!(damaged(&|r| r[1] |= FLAG_TOMBSTONE), "value bytes in a tombstone");
        assert!(damaged(&|r| r[0] += 1), "a length past the bytes");
        assert!(
            damaged(&|r| {
                // The timestamp 0 written in two bytes, the record one byte longer.
                r[2] = 0x80;
                r.insert(3, 0);
                r[0] += 1;
            }),
            "a varint longer than it needs to be"
        );
    }

    #[test]
    fn varints_and_zigzag_round_trip_at_every_width() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX >> 1, u64::MAX] {
            let mut bytes = [0u8; 10];
            let mut end = 0;
            put_varint(&mut bytes, &mut end, value);
            assert_eq!(end as u64, varint_bytes(value), "{value}");
            let mut at = 0;
            assert_eq!((read_varint(&bytes[..end], &mut at), at), (Some(value), end));
            assert_eq!(read_varint(&bytes[..end - 1], &mut 0), None, "a truncated varint of {value}");
        }
        assert_eq!(read_varint(&[0xff; 11], &mut 0), None, "more than 64 bits");
        for (time, first) in [(0, u64::MAX), (u64::MAX, 0), (5, 9), (1 << 63, 1)] {
            assert_eq!(first.wrapping_add(unzigzag(zigzag(time.wrapping_sub(first)))), time);
        }
        assert_eq!(zigzag(3u64.wrapping_sub(5)), 3, "a small step back stays small");
    }

    #[test]
    fn a_framed_single_record_equals_its_encoded_batch() {
        for record in
            [Record::new(b"value").key(b"k").header("h", b"v").header("", b""), Record::tombstone(b"gone"), Record::new(b"")]
        {
            let mut batch = encode(std::slice::from_ref(&record), &[42]);
            set_base_offset(&mut batch, 9);
            let (mut prefix, mut suffix) = (Vec::new(), Vec::new());
            frame_single_record(&mut prefix, &mut suffix, 9, STAMP, &record, 42);
            let framed = [prefix.as_slice(), record.value_bytes(), suffix.as_slice()].concat();
            assert_eq!(framed, batch);
        }
    }

    #[test]
    fn a_compressed_batch_expands_to_its_records() {
        let records: Vec<Record<'_>> =
            (0..100).map(|i| Record::new(format!("{{\"id\":{i},\"status\":\"shipped\"}}").into_bytes()).key(b"k")).collect();
        let timestamps: Vec<u64> = (0..100).map(|i| 1000 + i).collect();
        let (mut batch, mut scratch) = (Vec::new(), Vec::new());
        let max = write_compressed_batch(&mut batch, &mut scratch, Compression::Lz4, STAMP, &records, &timestamps);
        let header = BatchHeader::read(&batch);
        assert_eq!(header.producer, STAMP);
        assert_eq!((max, header.max_timestamp_ms, header.first_timestamp_ms, header.record_count), (1099, 1099, 1000, 100));
        assert_eq!((header.compression(), header.batch_bytes as usize), (Some(Compression::Lz4), batch.len()));
        assert!(header.is_plausible() && batch_checksum_ok(&batch));
        let plain = batch_bytes(&records, &timestamps) as usize;
        assert!(batch.len() < plain / 2, "{} bytes compressed from {plain}", batch.len());
        let expanded = codec::expand(Compression::Lz4, &batch[BATCH_HEADER_BYTES as usize..], MAX_BATCH_BYTES).unwrap();
        assert_eq!(expanded, scratch, "the records, as write_records lays them out");

        let mut damaged = batch.clone();
        damaged[BATCH_HEADER_BYTES as usize..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(codec::expand(Compression::Lz4, &damaged[BATCH_HEADER_BYTES as usize..], MAX_BATCH_BYTES).is_err());
    }

    #[test]
    fn garbage_batch_headers_do_not_overflow_or_pass() {
        let mut bytes = [0u8; BATCH_HEADER_BYTES as usize];
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        bytes[16..20].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(BatchHeader::read(&bytes).next_offset(), u64::MAX);
        bytes[0..4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(BatchHeader::read(&bytes).is_plausible());
        for attributes in [1u16, 2, 5, 1 << 5, 1 << 6, 1 << 15] {
            bytes[20..22].copy_from_slice(&attributes.to_le_bytes());
            assert!(!BatchHeader::read(&bytes).is_plausible(), "attributes {attributes:#x}");
        }
    }
}
