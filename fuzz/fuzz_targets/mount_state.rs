//! libFuzzer target `mount_state`: see `novafs_fuzz_targets::mount_state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::mount_state(data));
