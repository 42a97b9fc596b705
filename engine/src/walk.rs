//! Bounded walks of the directory tree. On the clean-mount fast path inodes load lazily and
//! their logs are trusted as they are read, so nothing has checked the tree's shape: a crafted
//! image can hold a cycle (a directory naming its ancestor) or a directory named twice. A walk
//! that recursed or descended blindly would overflow its stack or grow without bound there, and
//! `rm -r` would free a directory another name still points at. [`Engine::walk_dirs`] visits
//! each directory once, iteratively, and refuses such a tree with `Corrupt`.
#![forbid(unsafe_code)]

use std::collections::HashSet;

use crate::engine::{DirEntry, Engine};
use crate::error::{Error, Result};
use crate::layout::{Kind, ROOT_INO};

impl Engine {
    /// Visit directory `top` and every directory below it down to depth `depth_max`, once each
    /// (depth first, without recursion), calling `f(dir, depth, entries)` (`top` has depth 0;
    /// the subdirectories of a directory at `depth_max` are not checked). A directory named a
    /// second time (a cycle, or a hard link to a directory), or one whose stored parent is not
    /// the directory naming it, is `Corrupt`, found before `f` sees the directory naming it.
    /// Memory is bounded by the directories below `top`.
    pub fn walk_dirs(
        &self,
        top: u64,
        depth_max: usize,
        mut f: impl FnMut(u64, usize, &[DirEntry]) -> Result<()>,
    ) -> Result<()> {
        let mut seen = HashSet::from([top]);
        let mut stack = vec![(top, 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let entries = self.readdir(dir)?;
            let below = if depth < depth_max { &entries[..] } else { &[] };
            for e in below.iter().filter(|e| e.kind == Kind::Dir) {
                let loc = || {
                    format!(
                        "inode {} (named {:?} in directory {dir})",
                        e.ino,
                        String::from_utf8_lossy(&e.name)
                    )
                };
                if e.ino == ROOT_INO || !seen.insert(e.ino) {
                    return Err(Error::corrupt(
                        "directory reachable twice (a cycle or a directory hard link)",
                        loc(),
                    ));
                }
                let attr = self.getattr(e.ino)?;
                if attr.kind != Kind::Dir {
                    return Err(Error::corrupt(
                        "directory entry kind differs from the inode's",
                        loc(),
                    ));
                }
                let parent = self.parent_of(e.ino)?;
                if parent != dir {
                    return Err(Error::corrupt(
                        format!("directory parent (stored {parent})"),
                        loc(),
                    ));
                }
                stack.push((e.ino, depth + 1));
            }
            f(dir, depth, &entries)?;
        }
        Ok(())
    }
}
