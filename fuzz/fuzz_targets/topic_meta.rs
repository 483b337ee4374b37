#![no_main]
//! Fuzz target `topic_meta`: see `streamlog::fuzzing::topic_meta`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamlog::fuzzing::topic_meta(data));
