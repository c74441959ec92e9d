#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzz_targets::licence_answer(data));
