//! The fuzz corpus (fuzz/corpus/<target>/) and every crash or timeout input the fuzzers ever
//! found (fuzz/artifacts/<target>/), replayed through the same entry points the fuzz targets
//! call (`streamlog::fuzzing`, enabled for the tests by the self dev-dependency in Cargo.toml).
//! No libFuzzer is needed: this runs on stable in the default suite. fuzz/README.md tells how
//! the corpus is made and run.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use streamlog::fuzzing::{self, TARGETS, TreeFile};

use crate::TempDir;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly inside `dir`, sorted; none if it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn every_corpus_input_and_every_artifact_replays_cleanly() {
    for (target, run) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(target));
        assert!(!corpus.is_empty(), "target {target} has no corpus in fuzz/corpus/{target}");
        for input in corpus.iter().chain(&inputs(&fuzz_dir().join("artifacts").join(target))) {
            let bytes = fs::read(input).unwrap();
            if catch_unwind(AssertUnwindSafe(|| run(&bytes))).is_err() {
                panic!("target {target} fails on {}", input.display());
            }
        }
    }
}

/// The seed queue's tree, from a real queue written now.
fn seed_tree() -> (TempDir, Vec<TreeFile>) {
    let dir = TempDir::new("fuzz-seed");
    let tree = fuzzing::write_seed_queue(dir.path()).unwrap();
    (dir, tree)
}

#[test]
fn the_directory_target_reads_a_real_queue_and_catches_a_record_never_written() {
    let (_dir, tree) = seed_tree();
    let encoded = fuzzing::encode_tree(&tree);
    assert_eq!(fuzzing::decode_tree(&encoded), tree);
    for mode in [0u8, 1] {
        // Both rounds read every record of the seed queue (each time the plain topic's 60 at
        // least), and the group member polls some more.
        let checked = fuzzing::directory(&[&[mode][..], &encoded].concat());
        assert!(checked >= 120, "the directory target checked only {checked} records in mode {mode}");
    }

    // Sabotage: one record's value changed in place and its batch's checksum forged, as a
    // writer that lied would leave it. The checker must refuse the record.
    let mut lying = tree.clone();
    let segment = lying.iter_mut().find(|f| f.path == "topics/plain/0/00000000000000000000.log").expect("the first segment");
    let bytes = &mut segment.extents[0].1;
    let at = bytes.windows(6).position(|w| w == b"p0 o1 ").expect("the value of offset 1");
    bytes[at + 4] = b'2';
    let batch_at = 64 + u32::from_le_bytes(bytes[64..68].try_into().unwrap()) as usize;
    let batch_bytes = u32::from_le_bytes(bytes[batch_at..batch_at + 4].try_into().unwrap()) as usize;
    assert!(batch_at < at && at < batch_at + batch_bytes, "offset 1 is the second batch");
    fuzzing::forge_batch_checksum(&mut bytes[batch_at..batch_at + batch_bytes]);
    for mode in [0u8, 1] {
        let input = [&[mode][..], &fuzzing::encode_tree(&lying)].concat();
        let caught = catch_unwind(AssertUnwindSafe(|| fuzzing::directory(&input)));
        assert!(caught.is_err(), "a record that was never written was accepted (mode {mode})");
    }
}

#[test]
fn the_batch_target_accepts_real_batches_and_refuses_the_forged_one_it_found() {
    let (_dir, tree) = seed_tree();
    let segment = tree.iter().find(|f| f.path == "topics/plain/0/00000000000000000000.log").unwrap();
    let data = &segment.extents[0].1;
    let first = 64 + u32::from_le_bytes(data[64..68].try_into().unwrap()) as usize;
    let second = first + u32::from_le_bytes(data[first..first + 4].try_into().unwrap()) as usize;
    assert_eq!(fuzzing::batch(&[&[0u8][..], &data[64..second]].concat()), 2, "two real one-record batches");
    // The input libFuzzer found: a real batch whose header bytes it changed, with the checksum
    // forged. Its record no longer parses as written, so none is accepted (the target used to
    // fail on it: the reader returned the record with a header dropped).
    let found = fs::read(fuzz_dir().join("artifacts/batch/crash-d9fbb5ffa050159397a929bc16b2ce8fe360bcfb")).unwrap();
    assert_eq!(fuzzing::batch(&found), 0);
}

/// Writes the seed corpus into fuzz/corpus/ (merged with what is there). Run by hand after a
/// format change: `cargo test --release --test it fuzz_corpus::write_seed_corpus -- --ignored`,
/// then `cargo fuzz cmin` each target (fuzz/README.md).
#[test]
#[ignore = "writes into the repository's fuzz/corpus"]
fn write_seed_corpus() {
    fuzzing::write_seeds(&fuzz_dir().join("corpus")).unwrap();
}

/// Found by the `batch` target (fuzz/artifacts/batch/crash-d9fbb5ff...): libFuzzer forged the
/// batch checksum of a record whose header bytes it had changed, and the reader returned the
/// record with one header silently dropped instead of reporting the damage. A checksum is no
/// proof against a deliberate change, so a record must also parse exactly as its writer lays
/// it out.
#[test]
fn a_record_whose_headers_do_not_parse_is_reported_not_returned_short() {
    let dir = TempDir::new("fuzz-headers");
    {
        let queue = crate::open_alone(dir.path()).unwrap();
        queue.create_topic("t", 1).unwrap();
        let record = streamlog::Record::new(b"value").key(b"k").header("trace", b"12345678").header("", b"");
        queue.producer().send("t", record).unwrap();
    }
    let path = dir.path().join("topics/t/0/00000000000000000000.log");
    let mut bytes = fs::read(&path).unwrap();
    let batch_bytes = u32::from_le_bytes(bytes[64..68].try_into().unwrap()) as usize;
    // The second header's name length now runs past the record.
    // The record: length, flags, timestamp, key length, key, value length, value, header
    // count, then the first header (name length, name, value length, value).
    let second_header = 64 + 52 + 1 + 1 + 1 + 1 + 1 + 1 + 5 + 1 + 1 + 5 + 1 + 8;
    bytes[second_header] = 200;
    fuzzing::forge_batch_checksum(&mut bytes[64..64 + batch_bytes]);
    fs::write(&path, &bytes).unwrap();

    let queue = crate::open_alone(dir.path()).unwrap();
    let mut consumer = crate::consumer_from_start(&queue, "t", 1);
    match consumer.poll(std::time::Duration::from_millis(100)) {
        Err(streamlog::Error::Corrupt { .. }) => {}
        Ok(records) => {
            panic!("returned {:?} with headers {:?}", records, records.iter().map(|r| r.headers().count()).collect::<Vec<_>>())
        }
        Err(other) => panic!("expected Error::Corrupt, got {other}"),
    }
}

/// Found by the `directory` target (fuzz/artifacts/directory/crash-385c21f4...): the base
/// offset of a batch in a compacted segment, moved forward past a gap compaction left, and the
/// reader returned the batch's record under the new offset. Offsets there may skip, so the
/// checksum of every batch compaction writes now covers its base offset.
#[test]
fn a_moved_base_offset_in_a_compacted_segment_is_caught_not_returned() {
    let (_dir, tree) = seed_tree();
    let mut moved = tree.clone();
    let mut changed = false;
    for file in moved.iter_mut().filter(|f| f.path.starts_with("topics/compacted/") && f.path.ends_with(".log")) {
        let segment_base: u64 = file.path.rsplit('/').next().unwrap().trim_end_matches(".log").parse().unwrap();
        let bytes = &mut file.extents[0].1;
        if bytes.len() < 64 + 52 {
            continue;
        }
        let first = 64;
        let batch_base = u64::from_le_bytes(bytes[first + 8..first + 16].try_into().unwrap());
        let batch_end = first + u32::from_le_bytes(bytes[first..first + 4].try_into().unwrap()) as usize;
        let next_base = (bytes.len() >= batch_end + 52)
            .then(|| u64::from_le_bytes(bytes[batch_end + 8..batch_end + 16].try_into().unwrap()))
            .filter(|&base| base != 0);
        let count = u64::from(u32::from_le_bytes(bytes[first + 16..first + 20].try_into().unwrap()));
        // A batch after a gap, with room to move it one further without meeting the next.
        if batch_base > segment_base && next_base.is_none_or(|next| batch_base + count < next) {
            bytes[first + 8..first + 16].copy_from_slice(&(batch_base + 1).to_le_bytes());
            changed = true;
            break;
        }
    }
    assert!(changed, "the seed queue has a compacted segment that starts after a gap");
    for mode in [0u8, 1] {
        let input = [&[mode][..], &fuzzing::encode_tree(&moved)].concat();
        let read = catch_unwind(AssertUnwindSafe(|| fuzzing::directory(&input)));
        assert!(read.is_ok(), "a record was returned under an offset it was never written at (mode {mode})");
    }
}
