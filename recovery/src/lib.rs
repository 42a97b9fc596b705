//! novafs-recovery: mounting with recovery. `open` mounts an image; when the last session did
//! not unmount cleanly, the engine's recovery pass (journal undo, then a rebuild of every index
//! and both free lists from the logs) runs first.

pub mod fsck;

use std::path::Path;
use std::sync::Arc;

use novafs_engine::{Engine, MountOptions, MountReport, Result};

/// Mount the image at `path`, recovering it if needed.
pub fn open(path: &Path, opts: &MountOptions) -> Result<(Arc<Engine>, MountReport)> {
    Engine::open(path, opts)
}
