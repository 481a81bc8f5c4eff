#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| levee::fuzzing::config(data));
