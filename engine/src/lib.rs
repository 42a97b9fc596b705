//! novafs-engine: a NOVA-style log-structured file system on persistent memory.
//!
//! Layers, bottom up: [`media`] (mapping and persistence primitives; the only `unsafe`),
//! [`layout`] (on-media structs), [`alloc`], [`log`], [`journal`], [`inode`] (DRAM state rebuilt
//! from logs), [`engine`] (inode-level operations), [`mount`] (format, mount, unmount).

mod admit;
pub mod alloc;
pub mod bugs;
pub mod cache;
pub mod cursor;
mod data;
pub mod engine;
pub mod error;
pub mod gc;
mod grow;
pub mod hash;
pub mod inode;
pub mod journal;
pub mod layout;
pub mod log;
pub mod mapping;
pub mod media;
pub mod mount;
mod namespace;
mod state;
pub mod sync;
pub mod txn;
mod walk;
pub mod xattr;

pub use cache::{MapMode, WritebackConfig};
pub use engine::{DirEntry, Engine, RenameFlags, SetAttr, StatFs, MAX_FILE_PAGES, MAX_LINKS};
pub use error::{Error, Result};
pub use gc::{GcConfig, GcStats, LogStats};
pub use inode::{Attr, InodeLayout};
pub use layout::{Kind, BLOCK, NAME_MAX, ROOT_INO};
pub use media::{Media, MediaMode};
pub use mount::{FormatOptions, MountOptions, MountReport};
pub use namespace::check_name;
pub use xattr::{AclSgid, XattrFlags};
