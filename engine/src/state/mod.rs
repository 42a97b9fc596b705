//! The engine's DRAM state besides inodes: the fields of `Engine` whose types are not the
//! engine's own. They live below `engine.rs` so that the module graph has no circle: the
//! operation files (`admit.rs`, `cache.rs`, `gc.rs`, `mapping.rs`) import `engine` and these,
//! and `engine.rs` imports only these.
#![forbid(unsafe_code)]

pub mod dirnames;
pub mod gate;
pub mod gc;
pub mod maptable;
pub mod writeback;
