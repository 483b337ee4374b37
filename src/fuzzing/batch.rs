//! The target of record batches, read as a consumer reads them, and the checksum forging that
//! the checksum mode and the tests use.

use std::borrow::Cow;

use super::split_mode;
use crate::Record;
use crate::log::format::codec;
use crate::log::format::{self, BATCH_HEADER_BYTES, BatchHeader, MAX_BATCH_BYTES, RecordLayout};
use crate::topic::Compression;

/// A run of record batches as they lie in a segment, read the way a consumer reads them
/// (`BatchHeader`, its checks, the records expanded if the batch is compressed,
/// `RecordLayout::parse` for each record, `parse_headers`). The records of every batch that is
/// accepted must re-encode (`write_records`) to exactly their bytes (expanded, for a compressed
/// batch), and an uncompressed batch's header to its own but for the words the reader does not
/// use for records. Returns how many records were accepted.
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
        let compression = header.compression().expect("a plausible header names a codec");
        let expanded;
        let records_bytes = if compression == Compression::None {
            &batch[BATCH_HEADER_BYTES as usize..]
        } else {
            let Ok(records) = codec::expand(compression, &batch[BATCH_HEADER_BYTES as usize..], MAX_BATCH_BYTES) else {
                return accepted;
            };
            expanded = records;
            &expanded[..]
        };
        let Some(records) = decode_records(records_bytes, &header) else {
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
        let first = header.first_timestamp_ms;
        let size: u64 = rebuilt.iter().zip(&timestamps).map(|(record, &t)| format::record_bytes(record, t, first)).sum();
        assert_eq!(size, records_bytes.len() as u64, "an accepted batch holds bytes that are no part of its records");
        let mut encoded = vec![0u8; records_bytes.len()];
        format::batch::write_records(&mut encoded, first, &rebuilt, &timestamps);
        assert_eq!(encoded, records_bytes, "an accepted batch's records do not re-encode to their bytes");
        if compression == Compression::None {
            // Its size, base offset, count and attributes must be as written. The words the
            // reader does not use for records (the checksum, which a forged one makes right
            // anyway, the producer fields and the batch's max timestamp) are left out.
            let mut whole = vec![0u8; batch.len()];
            format::write_batch(&mut whole, header.base_offset, header.producer, &rebuilt, &timestamps);
            if header.is_marker() {
                format::batch::mark_as_marker(&mut whole);
            }
            if header.offset_checksummed() {
                format::checksum_base_offset(&mut whole);
            }
            for range in [0..4, 8..22] {
                assert_eq!(whole[range.clone()], batch[range], "an accepted batch's header does not re-encode to its bytes");
            }
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
    format::batch::seal_batch(batch);
}

/// One record as the consumer's view of it would show it.
struct DecodedRecord<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a str, &'a [u8])>,
    timestamp_ms: u64,
}

/// Decodes the records of a whole batch (`records`, expanded if it was compressed) as
/// `Partition::advance` does; `None` where the reader reports corruption.
fn decode_records<'a>(records: &'a [u8], header: &BatchHeader) -> Option<Vec<DecodedRecord<'a>>> {
    let mut at = 0;
    let mut decoded = Vec::new();
    for _ in 0..header.record_count {
        let layout = RecordLayout::parse(&records[at..], header.first_timestamp_ms)?;
        let record = &records[at..at + layout.record_bytes as usize];
        let part = |from: u32, len: u32| &record[from as usize..(from + len) as usize];
        decoded.push(DecodedRecord {
            key: (layout.flags & format::FLAG_HAS_KEY != 0).then(|| part(layout.key_at, layout.key_bytes)),
            value: (layout.flags & format::FLAG_TOMBSTONE == 0).then(|| part(layout.value_at, layout.value_bytes)),
            headers: format::parse_headers(&record[(layout.value_at + layout.value_bytes) as usize..]).collect(),
            timestamp_ms: layout.timestamp_ms,
        });
        at += layout.record_bytes as usize;
        if at == records.len() && decoded.len() < header.record_count as usize {
            return None;
        }
    }
    (at == records.len()).then_some(decoded)
}
