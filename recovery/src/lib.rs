//! novafs-recovery: mounting, with recovery when the last session did not unmount cleanly
//! (the mount decision, journal undo, the parallel rebuild; [`open`], [`open_media`]), and
//! fsck. The engine is built from what mount found through its narrow constructor
//! (`Engine::assemble`).

pub mod fsck;
pub mod mount;
pub mod rebuild;
pub mod undo;

pub use mount::{open, open_media, read_superblock};
