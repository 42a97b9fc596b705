//! The fuzz targets of novafs as plain functions of `&[u8]`.
//!
//! `fuzz/` (cargo-fuzz, nightly, its own workspace) calls each function from a libFuzzer
//! target of the same name; `tests/corpus.rs` (stable, part of `cargo test --workspace`) replays
//! every saved input of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through the same
//! function. A target must never panic, hang or allocate without bound on any input: every
//! `assert!` here states a property of the code under test, not of the input.
//!
//! Decoder targets feed raw bytes to one decoder (optionally with the record's checksum
//! recomputed, so that the fuzzer gets past the checksum to the field checks). Image targets
//! start from a valid 1 MiB seed image (formatted on the traced in-memory backend, a few files,
//! directories, a symlink and a hard link) and apply the input as a list of patches, see
//! [`image::patched`].

pub mod decoders;
pub mod image;

pub use decoders::{
    inode_slot, itable_map, journal_slot, log_cursor, log_replay, log_trailer, mount_state,
    saved_state, superblock,
};
pub use image::{fsck, image_walk};

/// A fuzz target: one input, no result (a finding is a panic or a hang).
pub type Target = fn(&[u8]);

/// Every target by name (the names of the binaries in `fuzz/fuzz_targets/`), for the replay
/// test.
pub const TARGETS: &[(&str, Target)] = &[
    ("superblock", superblock),
    ("mount_state", mount_state),
    ("saved_state", saved_state),
    ("journal_slot", journal_slot),
    ("inode_slot", inode_slot),
    ("log_trailer", log_trailer),
    ("log_replay", log_replay),
    ("itable_map", itable_map),
    ("log_cursor", log_cursor),
    ("image_walk", image_walk),
    ("fsck", fsck),
];
