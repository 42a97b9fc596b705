//! libFuzzer target `superblock`: see `novafs_fuzz_targets::superblock`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::superblock(data));
