//! Targets of a consumer group's bytes: its state as the group file holds it, and the records
//! of its offset store.

use std::path::Path;

use super::{put_crc, split_mode};
use crate::log::format;

/// A consumer group's state blob, framed as in the group file (length, checksum, state), and
/// decoded by `decode_group_state`.
pub fn group_state(data: &[u8]) {
    let (fix, mut bytes) = split_mode(data);
    if bytes.len() < 8 {
        return;
    }
    if fix {
        let length = (bytes.len() - 8) as u32;
        let crc = crc32fast::hash(&bytes[8..]);
        bytes[0..4].copy_from_slice(&length.to_le_bytes());
        put_crc(&mut bytes, 4, crc);
    }
    let length = format::u32_at(&bytes, 0) as usize;
    let Some(blob) = bytes.get(8..8 + length) else {
        return;
    };
    if crc32fast::hash(blob) != format::u32_at(&bytes, 4) {
        return;
    }
    if let Ok(state) = crate::group::state::decode_group_state(blob, Path::new("fuzz")) {
        let encoded = crate::group::state::encode_group_state(&state);
        let again = crate::group::state::decode_group_state(&encoded, Path::new("fuzz")).expect("an encoded group state decodes");
        assert_eq!(crate::group::state::encode_group_state(&again), encoded, "group state encoding is not stable");
        // Topics are kept in a map, written in name order: a blob that names them out of
        // order (or one twice) decodes to the same state, so only its members must match.
        let (names, members_at) = topic_names(blob);
        if names.windows(2).all(|pair| pair[0] < pair[1]) {
            assert_eq!(encoded, blob, "a decoded group state re-encodes differently");
        } else {
            let (_, encoded_members_at) = topic_names(&encoded);
            assert_eq!(encoded[encoded_members_at..], blob[members_at..], "a decoded group state re-encodes differently");
        }
    }
}

/// The topic names of a group state blob that decodes, and where its members start.
fn topic_names(blob: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut at = 21;
    let names = (0..format::u32_at(blob, 17))
        .map(|_| {
            let length = usize::from(format::u16_at(blob, at));
            let name = &blob[at + 2..at + 2 + length];
            at += 2 + length + 4;
            name
        })
        .collect();
    (names, at)
}

/// The key and value of an offset-store record (`decode_commit_key`, `decode_commit_value`):
/// the first two bytes give the key's length, the rest is key then value.
pub fn commit(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let key_bytes = usize::from(format::u16_at(data, 0)).min(data.len() - 2);
    let (key, value) = data[2..].split_at(key_bytes);
    if let Some(partition) = crate::group::offsets::decode_commit_key(key) {
        assert_eq!(crate::group::offsets::encode_commit_key(&partition), key, "a decoded commit key re-encodes differently");
    }
    if let Some((offset, topic_id)) = crate::group::offsets::decode_commit_value(value) {
        let encoded =
            crate::group::offsets::encode_commit_value(offset, format::u64_at(value, 8), format::u64_at(value, 16), topic_id);
        assert_eq!(encoded[..], value[..], "a decoded commit value re-encodes differently");
    }
}
