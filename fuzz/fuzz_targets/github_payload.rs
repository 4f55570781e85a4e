#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| release_coordinator::fuzzing::github_payload(data));
