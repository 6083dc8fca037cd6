#![no_main]
// See rubix_sync::fuzzing::swarm_key for what this target checks.
libfuzzer_sys::fuzz_target!(|data: &[u8]| rubix_sync::fuzzing::swarm_key(data));
