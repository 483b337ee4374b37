//! The names of a partition directory's files, and what a file is judged by its name.

pub(crate) const STATE_FILE: &str = "state";
/// A partition's log start checkpoint (see `encode_log_start`).
pub(crate) const LOG_START_FILE: &str = "log_start";

/// What a file in a partition directory is, judged by its name.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PartitionFile {
    Segment(u64),
    Index(u64),
    State,
    LogStart,
    /// A half-made file left by a crash; safe to delete during recovery.
    Temporary,
    /// A compacted segment's log (or index) ready to replace the original: see `compaction.rs`.
    SwapLog(u64),
    SwapIndex(u64),
    Unknown,
}

pub(crate) fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

pub(crate) fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.index")
}

/// The name a compacted replacement of file `name` has before it takes its place.
pub(crate) fn swap_file_name(name: &str) -> String {
    format!("{name}.swap")
}

pub(crate) fn classify(name: &str) -> PartitionFile {
    if name == STATE_FILE {
        return PartitionFile::State;
    }
    if name == LOG_START_FILE {
        return PartitionFile::LogStart;
    }
    if name.ends_with(".tmp") {
        return PartitionFile::Temporary;
    }
    let parse =
        |stem: &str| (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse::<u64>().ok()).flatten();
    if let Some(base) = name.strip_suffix(".log.swap").and_then(parse) {
        return PartitionFile::SwapLog(base);
    }
    if let Some(base) = name.strip_suffix(".index.swap").and_then(parse) {
        return PartitionFile::SwapIndex(base);
    }
    if let Some(base) = name.strip_suffix(".log").and_then(parse) {
        return PartitionFile::Segment(base);
    }
    if let Some(base) = name.strip_suffix(".index").and_then(parse) {
        return PartitionFile::Index(base);
    }
    PartitionFile::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_classified() {
        assert_eq!(classify(&segment_file_name(42)), PartitionFile::Segment(42));
        assert_eq!(classify(&index_file_name(7)), PartitionFile::Index(7));
        assert_eq!(classify("state"), PartitionFile::State);
        assert_eq!(classify(LOG_START_FILE), PartitionFile::LogStart);
        assert_eq!(classify("00000000000000000042.log.tmp"), PartitionFile::Temporary);
        // Every temporary name the crate makes is one recovery deletes.
        for name in
            [segment_file_name(42), index_file_name(42), LOG_START_FILE.to_owned(), format!("{}.cleaning", segment_file_name(42))]
        {
            for per_process in [false, true] {
                let temporary = crate::sys::file::temp_path(&std::path::Path::new("/q/t/0").join(&name), per_process);
                assert_eq!(
                    classify(&temporary.file_name().unwrap().to_string_lossy()),
                    PartitionFile::Temporary,
                    "{temporary:?}"
                );
            }
        }
        assert_eq!(
            crate::sys::file::temp_path(std::path::Path::new("/q/t/0/log_start"), false),
            std::path::Path::new("/q/t/0/log_start.tmp")
        );
        assert_eq!(classify("42.log"), PartitionFile::Unknown);
        assert_eq!(classify("notes.txt"), PartitionFile::Unknown);
    }
}
