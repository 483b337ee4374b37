#![no_main]
//! Fuzz target `log_start`: see `streamlog::fuzzing::log_start`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamlog::fuzzing::log_start(data));
