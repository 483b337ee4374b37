//! A directory tree as bytes (the directory target's input): encoding, decoding, reading a
//! tree from disk and writing one.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use crate::log::format;

/// Files above this size are not made: a fuzzed length must not fill the disk (they are sparse,
/// but a test file system may not be).
const MAX_TREE_FILE_BYTES: u64 = 256 << 20;

/// One file of a directory tree: its path relative to the queue directory, its length, and the
/// parts of it that are not zeros (offset and bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// The path relative to the queue directory.
    pub path: String,
    /// The file's length; everything outside `extents` is zeros.
    pub len: u64,
    /// Non-zero parts: offset and bytes.
    pub extents: Vec<(u64, Vec<u8>)>,
}

/// Encodes a tree: per file `path_len u16, path, len u64, extent_count u16`, then per extent
/// `offset u64, bytes_len u32, bytes`.
pub fn encode_tree(files: &[TreeFile]) -> Vec<u8> {
    let mut out = Vec::new();
    for file in files {
        out.extend_from_slice(&(file.path.len() as u16).to_le_bytes());
        out.extend_from_slice(file.path.as_bytes());
        out.extend_from_slice(&file.len.to_le_bytes());
        out.extend_from_slice(&(file.extents.len() as u16).to_le_bytes());
        for (offset, bytes) in &file.extents {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
    out
}

/// Decodes what `encode_tree` wrote, as far as it is well formed (a fuzzed input may stop
/// anywhere).
pub fn decode_tree(mut data: &[u8]) -> Vec<TreeFile> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = data.split_at_checked(n)?;
        *data = rest;
        Some(head)
    }
    let mut files = Vec::new();
    let one = |data: &mut &[u8]| -> Option<TreeFile> {
        let path_len = usize::from(format::u16_at(take(data, 2)?, 0));
        let path = String::from_utf8(take(data, path_len)?.to_vec()).ok()?;
        let len = format::u64_at(take(data, 8)?, 0);
        let count = format::u16_at(take(data, 2)?, 0);
        let mut extents = Vec::new();
        for _ in 0..count {
            let offset = format::u64_at(take(data, 8)?, 0);
            let bytes_len = format::u32_at(take(data, 4)?, 0) as usize;
            extents.push((offset, take(data, bytes_len)?.to_vec()));
        }
        Some(TreeFile { path, len, extents })
    };
    while let Some(file) = one(&mut data) {
        files.push(file);
    }
    files
}

/// Reads the tree under `dir` (regular files only), keeping the non-zero 512-byte blocks.
pub fn read_tree(dir: &Path) -> io::Result<Vec<TreeFile>> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut entries: Vec<_> = fs::read_dir(dir.join(&relative))?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = relative.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = fs::read(entry.path())?;
            let mut extents: Vec<(u64, Vec<u8>)> = Vec::new();
            for (n, block) in bytes.chunks(512).enumerate() {
                if block.iter().all(|&b| b == 0) {
                    continue;
                }
                let offset = n as u64 * 512;
                match extents.last_mut() {
                    Some((start, run)) if *start + run.len() as u64 == offset => run.extend_from_slice(block),
                    _ => extents.push((offset, block.to_vec())),
                }
            }
            files.push(TreeFile { path: path.to_string_lossy().into_owned(), len: bytes.len() as u64, extents });
        }
    }
    Ok(files)
}

/// Writes `files` under `dir`, skipping any whose path leaves it or cannot be made.
pub(super) fn write_tree(dir: &Path, files: &[TreeFile]) {
    for file in files.iter().take(256) {
        let relative = Path::new(&file.path);
        if file.path.is_empty()
            || !relative.components().all(|c| matches!(c, Component::Normal(_)))
            || file.len > MAX_TREE_FILE_BYTES
        {
            continue;
        }
        let path = dir.join(relative);
        if path.parent().is_some_and(|parent| fs::create_dir_all(parent).is_err()) {
            continue;
        }
        let Ok(out) = fs::File::create(&path) else { continue };
        let _ = out.set_len(file.len);
        for (offset, bytes) in &file.extents {
            let end = offset.saturating_add(bytes.len() as u64);
            if end <= file.len {
                let _ = out.write_all_at(bytes, *offset);
            }
        }
    }
}
