//! libFuzzer target `inode_slot`: see `novafs_fuzz_targets::inode_slot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::inode_slot(data));
