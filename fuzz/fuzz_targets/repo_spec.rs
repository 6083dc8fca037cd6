#![no_main]
// See rubix_sync::fuzzing::repo_spec for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rubix_sync::fuzzing::repo_spec(data));
