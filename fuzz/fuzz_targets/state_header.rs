#![no_main]
//! Fuzz target `state_header`: see `streamlog::fuzzing::state_header`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamlog::fuzzing::state_header(data));
