//! libFuzzer target `saved_state`: see `novafs_fuzz_targets::saved_state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::saved_state(data));
