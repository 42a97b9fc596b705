//! libFuzzer target `journal_slot`: see `novafs_fuzz_targets::journal_slot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| novafs_fuzz_targets::journal_slot(data));
