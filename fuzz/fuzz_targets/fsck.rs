//! libFuzzer target `fsck`: see `novafs_fuzz_targets::fsck`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::fsck(data));
