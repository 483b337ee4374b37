#![no_main]
//! Fuzz target `group_state`: see `streamlog::fuzzing::group_state`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamlog::fuzzing::group_state(data));
