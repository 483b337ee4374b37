#![no_main]
//! Fuzz target `file_header`: see `streamlog::fuzzing::file_header`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| streamlog::fuzzing::file_header(data));
