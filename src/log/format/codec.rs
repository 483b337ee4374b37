//! Compressing a batch's records and expanding them again. A compressed batch holds, after its
//! header, the records' uncompressed size (u32) and then the codec's block of them.

use crate::topic::Compression;

/// Bytes before the codec's block: the records' uncompressed size.
pub(crate) const COMPRESSED_PREFIX_BYTES: u32 = 4;

/// Why a compressed batch's records could not be expanded.
#[derive(Debug)]
pub(crate) enum ExpandError {
    /// The build lacks the codec (a `zstd` batch without the `zstd` feature).
    #[cfg_attr(feature = "zstd", expect(dead_code, reason = "every codec is built in"))]
    Unavailable(&'static str),
    /// The block is not what the codec writes, or expands to another size than it says.
    Damaged(String),
}

/// Appends `records` compressed with `compression` (not `None`) to `out`.
pub(crate) fn compress(compression: Compression, records: &[u8], out: &mut Vec<u8>) {
    match compression {
        Compression::None => out.extend_from_slice(records),
        Compression::Lz4 => {
            let start = out.len();
            out.resize(start + lz4_flex::block::get_maximum_output_size(records.len()), 0);
            let written = lz4_flex::block::compress_into(records, &mut out[start..]).expect("the output has the bound's size");
            out.truncate(start + written);
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            let block = zstd::bulk::compress(records, 3).expect("zstd compresses any input into memory");
            out.extend_from_slice(&block);
        }
        #[cfg(not(feature = "zstd"))]
        Compression::Zstd => unreachable!("a topic cannot be set to zstd without the feature"),
    }
}

/// Expands the records of a compressed batch: `payload` is what follows the batch header.
/// `max_bytes` bounds what the prefix may claim, so a damaged size never allocates much.
pub(crate) fn expand(compression: Compression, payload: &[u8], max_bytes: u64) -> Result<Vec<u8>, ExpandError> {
    let prefix = COMPRESSED_PREFIX_BYTES as usize;
    if payload.len() < prefix {
        return Err(ExpandError::Damaged("shorter than its size prefix".into()));
    }
    let size = super::u32_at(payload, 0) as usize;
    if size as u64 > max_bytes {
        return Err(ExpandError::Damaged(format!("claims {size} bytes of records, more than a batch holds")));
    }
    let block = &payload[prefix..];
    let mut records = vec![0u8; size];
    let written = match compression {
        Compression::None => return Err(ExpandError::Damaged("not compressed".into())),
        Compression::Lz4 => {
            lz4_flex::block::decompress_into(block, &mut records).map_err(|e| ExpandError::Damaged(e.to_string()))?
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            zstd::bulk::decompress_to_buffer(block, &mut records).map_err(|e| ExpandError::Damaged(e.to_string()))?
        }
        #[cfg(not(feature = "zstd"))]
        Compression::Zstd => return Err(ExpandError::Unavailable("zstd")),
    };
    if written != size {
        return Err(ExpandError::Damaged(format!("expands to {written} bytes, not the {size} it claims")));
    }
    Ok(records)
}
