//! The target of record batches, read as a consumer reads them, and the checksum forging that
//! the checksum mode and the tests use.

use std::borrow::Cow;

use super::{put_crc, split_mode};
use crate::Record;
use crate::log::format::{self, BATCH_HEADER_BYTES, BatchHeader, RECORD_HEADER_BYTES, RecordLayout};

/// A run of record batches as they lie in a segment, read the way a consumer reads them
/// (`BatchHeader`, its checks, `RecordLayout::parse` for each record, `parse_headers`). Every
/// batch that is accepted must re-encode (`write_batch`) to exactly its bytes, but for the
/// words the reader does not use for records. Returns how many records were accepted.
pub fn batch(data: &[u8]) -> usize {
    let (fix, mut bytes) = split_mode(data);
    let mut at = 0usize;
    let mut expected_offset = None;
    let mut accepted = 0;
    while at + BATCH_HEADER_BYTES as usize <= bytes.len() {
        let header = BatchHeader::read(&bytes[at..]);
        let end = at as u64 + u64::from(header.batch_bytes);
        if !header.is_plausible() || end > bytes.len() as u64 {
            return accepted;
        }
        let end = end as usize;
        if fix {
            forge_batch_checksum(&mut bytes[at..end]);
        }
        let batch = &bytes[at..end];
        if expected_offset.is_some_and(|offset| offset != header.base_offset) || !format::batch_checksum_ok(batch) {
            return accepted;
        }
        let Some(records) = decode_batch(batch, &header) else {
            return accepted;
        };
        let rebuilt: Vec<Record<'_>> = records
            .iter()
            .map(|r| {
                let mut record = match r.value {
                    Some(value) => Record::new(value),
                    None => Record { value: None, ..Record::new(b"") },
                };
                record.key = r.key.map(Cow::Borrowed);
                record.headers = r.headers.iter().map(|&(name, value)| (Cow::Borrowed(name), Cow::Borrowed(value))).collect();
                record
            })
            .collect();
        let timestamps: Vec<u64> = records.iter().map(|r| r.timestamp_ms).collect();
        let size = u64::from(BATCH_HEADER_BYTES) + rebuilt.iter().map(format::record_bytes).sum::<u64>();
        assert_eq!(size, batch.len() as u64, "an accepted batch holds bytes that are no part of its records");
        let mut encoded = vec![0u8; batch.len()];
        format::write_batch(&mut encoded, header.base_offset, &rebuilt, &timestamps);
        // Its size, base offset, count and records must be as written. The words the reader
        // does not use for records (the checksum, which a forged one makes right anyway, the
        // attributes and the timestamps of the batch) are left out.
        for range in [0..4, 8..20, BATCH_HEADER_BYTES as usize..batch.len()] {
            assert_eq!(encoded[range.clone()], batch[range], "an accepted batch does not re-encode to its bytes");
        }
        accepted += records.len();
        expected_offset = Some(header.next_offset());
        at = end;
    }
    accepted
}

/// Recomputes the checksum of `batch` (one whole batch), as a writer would have: for the
/// targets' checksum mode and for tests that must show a checker catching a record that was
/// never written.
pub fn forge_batch_checksum(batch: &mut [u8]) {
    let crc = format::batch::checksum(&batch[8..]);
    put_crc(batch, 4, crc);
}

/// One record as the consumer's view of it would show it.
struct DecodedRecord<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a str, &'a [u8])>,
    timestamp_ms: u64,
}

/// Decodes the records of a whole batch as `Partition::advance` does; `None` where the reader
/// reports corruption.
fn decode_batch<'a>(batch: &'a [u8], header: &BatchHeader) -> Option<Vec<DecodedRecord<'a>>> {
    let mut at = BATCH_HEADER_BYTES as usize;
    let mut records = Vec::new();
    for _ in 0..header.record_count {
        let layout = RecordLayout::parse(&batch[at..])?;
        let body = &batch[at + RECORD_HEADER_BYTES as usize..at + layout.record_bytes as usize];
        let key_end = layout.key_bytes as usize;
        let value_end = key_end + layout.value_bytes as usize;
        records.push(DecodedRecord {
            key: (layout.flags & format::FLAG_HAS_KEY != 0).then(|| &body[..key_end]),
            value: (layout.flags & format::FLAG_TOMBSTONE == 0).then(|| &body[key_end..value_end]),
            headers: format::parse_headers(&body[value_end..]).collect(),
            timestamp_ms: layout.timestamp_ms,
        });
        at += layout.record_bytes as usize;
        if at == batch.len() && records.len() < header.record_count as usize {
            return None;
        }
    }
    (at == batch.len()).then_some(records)
}
