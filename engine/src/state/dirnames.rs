//! Which loaded directory names each subdirectory: a directory hard link or a cycle is
//! `Corrupt` as soon as both names have been loaded (`admit.rs` uses it on every lazy load,
//! recovery notes every directory it loads).
#![forbid(unsafe_code)]

use std::collections::HashSet;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::inode::InodeState;
use crate::layout::entry::Entry;
use crate::layout::Kind;

/// For every subdirectory named by a loaded directory: the directory naming it.
#[derive(Default)]
pub(crate) struct DirNames {
    pub(crate) named_by: Mutex<crate::hash::U64Map<u64>>,
}

impl DirNames {
    /// Directory `dir` was loaded: record its subdirectories, refusing one that another loaded
    /// directory (or `dir` itself, under a second name) names already.
    pub(crate) fn note_loaded(&self, dir: u64, st: &InodeState) -> Result<()> {
        let mut subdirs = HashSet::new();
        let mut m = self.named_by.lock();
        for (name, e) in st.dir.iter().filter(|(_, e)| e.kind == Kind::Dir) {
            let elsewhere = m.get(&e.ino).is_some_and(|&d| d != dir);
            if !subdirs.insert(e.ino) || elsewhere {
                return Err(Error::corrupt(
                    "directory named twice (a cycle or a directory hard link)",
                    format!(
                        "inode {} (named {:?} in directory {dir})",
                        e.ino,
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
        }
        m.extend(subdirs.into_iter().map(|c| (c, dir)));
        Ok(())
    }

    /// Committed `entries` of directory `dir` were applied: removals first, so that a name
    /// moved inside one directory stays recorded.
    pub(crate) fn note_applied(&self, dir: u64, entries: &[Entry]) {
        // Only a removal (of a name of any kind) or a subdirectory's name concerns the map: a
        // file's create takes no lock shared by every directory.
        let concerns = |e: &Entry| {
            matches!(
                e,
                Entry::DirRemove { .. }
                    | Entry::DirAdd {
                        kind: Kind::Dir,
                        ..
                    }
            )
        };
        if !entries.iter().any(concerns) {
            return;
        }
        let mut m = self.named_by.lock();
        for e in entries {
            if let Entry::DirRemove { ino, .. } = e {
                if m.get(ino) == Some(&dir) {
                    m.remove(ino);
                }
            }
        }
        for e in entries {
            if let Entry::DirAdd {
                ino,
                kind: Kind::Dir,
                ..
            } = e
            {
                m.insert(*ino, dir);
            }
        }
    }
}
