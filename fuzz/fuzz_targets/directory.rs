#![no_main]
//! Fuzz target `directory`: see `streamlog::fuzzing::directory`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    streamlog::fuzzing::directory(data);
});
