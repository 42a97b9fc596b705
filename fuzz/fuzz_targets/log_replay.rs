//! libFuzzer target `log_replay`: see `novafs_fuzz_targets::log_replay`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::log_replay(data));
