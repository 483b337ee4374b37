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
        fuzzing::directory(&[&[mode][..], &encoded].concat());
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
fn the_parser_targets_catch_bytes_that_do_not_re_encode() {
    let (_dir, tree) = seed_tree();
    let segment = tree.iter().find(|f| f.path == "topics/plain/0/00000000000000000000.log").unwrap();
    let data = &segment.extents[0].1;
    let first = 64 + u32::from_le_bytes(data[64..68].try_into().unwrap()) as usize;
    let mut batch = [&[0u8][..], &data[64..first]].concat();
    fuzzing::batch(&batch);
    // Sabotage: a reserved word set and the checksum forged. The reader does not look at it,
    // so only the re-encoding check can catch it.
    batch[1 + 20] = 1;
    fuzzing::forge_batch_checksum(&mut batch[1..]);
    assert!(catch_unwind(AssertUnwindSafe(|| fuzzing::batch(&batch))).is_err(), "the batch target missed a changed batch");
}

/// Writes the seed corpus into fuzz/corpus/ (merged with what is there). Run by hand after a
/// format change: `cargo test --release --test it fuzz_corpus::write_seed_corpus -- --ignored`,
/// then `cargo fuzz cmin` each target (fuzz/README.md).
#[test]
#[ignore = "writes into the repository's fuzz/corpus"]
fn write_seed_corpus() {
    fuzzing::write_seeds(&fuzz_dir().join("corpus")).unwrap();
}
