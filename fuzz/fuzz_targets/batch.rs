#![no_main]
//! Fuzz target `batch`: see `streamlog::fuzzing::batch`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    streamlog::fuzzing::batch(data);
});
