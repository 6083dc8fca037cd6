#![no_main]
// See rubix_sync::fuzzing::token for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rubix_sync::fuzzing::token(data));
