//! libFuzzer target `log_trailer`: see `novafs_fuzz_targets::log_trailer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::log_trailer(data));
