#![no_main]
//! Fuzz target `commit`: see `streamlog::fuzzing::commit`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamlog::fuzzing::commit(data));
