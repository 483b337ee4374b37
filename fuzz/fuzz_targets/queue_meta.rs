#![no_main]
//! Fuzz target `queue_meta`: see `streamlog::fuzzing::queue_meta`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamlog::fuzzing::queue_meta(data));
