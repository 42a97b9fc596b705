//! libFuzzer target `image_walk`: see `novafs_fuzz_targets::image_walk`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::image_walk(data));
