//! libFuzzer target `log_cursor`: see `novafs_fuzz_targets::log_cursor`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::log_cursor(data));
