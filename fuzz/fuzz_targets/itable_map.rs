//! libFuzzer target `itable_map`: see `novafs_fuzz_targets::itable_map`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::itable_map(data));
