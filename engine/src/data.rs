//! Data operations: read, seek, write, copy, replace, set attributes (size included), punch,
//! zero, allocate, readlink. Every change is one copy-on-write `Txn` on the file's log
//! (DESIGN §5.0, §5.1).
#![forbid(unsafe_code)]

use crate::engine::{Engine, SetAttr, MAX_FILE_PAGES};
use crate::error::{Error, Result};
use crate::inode::{Attr, Inode, InodeState};
use crate::layout::entry::{attr_mask, Entry, RedoRef, SetAttrEntry, REDO_WRITE_MAX};
use crate::layout::{now_ns, Kind, BLOCK};
use crate::txn::Page;

/// What [`Engine::clear_range`] leaves in whole pages of its range.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clear {
    /// Holes (`punch_hole`; the range stops at the end of the file).
    Punch,
    /// Zero-filled blocks (`zero_range`).
    Zero {
        /// The range stops at the end of the file, which keeps its size.
        keep_size: bool,
    },
}

/// `data` as whole pages from page 0: full pages borrowed, the last partial one padded with
/// zeros (bytes past the end of file are always zero).
pub(crate) fn content_pages(data: &[u8]) -> Vec<(u64, Page<'_>)> {
    data.chunks(BLOCK as usize)
        .enumerate()
        .map(|(pg, c)| {
            let page = if c.len() == BLOCK as usize {
                Page::Borrowed(c)
            } else {
                let mut buf = vec![0u8; BLOCK as usize];
                buf[..c.len()].copy_from_slice(c);
                Page::Owned(buf)
            };
            (pg as u64, page)
        })
        .collect()
}

impl SetAttrEntry {
    /// An empty attribute entry.
    pub fn zeroed_entry() -> SetAttrEntry {
        bytemuck::Zeroable::zeroed()
    }
}

impl Engine {
    /// Read up to `buf.len()` bytes at `off`; returns the bytes read (0 at end of file).
    pub fn read(&self, ino: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
        let i = self.inode(ino)?;
        let st = i.state.read();
        self.read_locked(&st, off, buf)
    }

    /// Read from an inode whose state the caller has locked.
    pub(crate) fn read_locked(&self, st: &InodeState, off: u64, buf: &mut [u8]) -> Result<usize> {
        self.check_mounted()?;
        if st.attr.kind == Kind::Dir {
            return Err(Error::IsADirectory);
        }
        if off >= st.attr.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(st.attr.size - off) as usize;
        let mut done = 0usize;
        while done < n {
            let pos = off + done as u64;
            let pg = pos / BLOCK;
            let in_pg = (pos % BLOCK) as usize;
            let chunk = (BLOCK as usize - in_pg).min(n - done);
            let dst = &mut buf[done..done + chunk];
            // The write cache holds the newest copy of a page written through a mapping.
            match st.cache().map.get(&pg).or_else(|| st.map.get(&pg)) {
                Some(&b) => self.media.read(b * BLOCK + in_pg as u64, dst)?,
                None => dst.fill(0),
            }
            done += chunk;
        }
        Ok(n)
    }

    /// `lseek(SEEK_DATA)` (`data`) or `lseek(SEEK_HOLE)` from the file map: the first offset
    /// at or after `off` in a page that holds data (a mapped or cached page) or in a hole (a
    /// page with no block, or the end of the file). `PastEnd` (ENXIO) when `off` is at or past
    /// the end, or no data follows.
    pub fn seek(&self, ino: u64, off: u64, data: bool) -> Result<u64> {
        let i = self.inode(ino)?;
        let st = i.state.read();
        if st.freed {
            return Err(Error::NotFound);
        }
        if st.attr.kind == Kind::Dir {
            return Err(Error::IsADirectory);
        }
        let size = st.attr.size;
        if off >= size {
            return Err(Error::PastEnd);
        }
        let first = off / BLOCK;
        let held = |pg: u64| st.map.contains_key(&pg) || st.cache().map.get(&pg).is_some();
        let at = |pg: u64| (pg * BLOCK).max(off);
        if data {
            let in_map = st.map.range(first..).next().map(|(pg, _)| pg);
            let in_cache = st.cache().map.keys().filter(|&pg| pg >= first).min();
            return match in_map.into_iter().chain(in_cache).min() {
                Some(pg) if at(pg) < size => Ok(at(pg)),
                _ => Err(Error::PastEnd),
            };
        }
        let mut pg = first;
        while pg * BLOCK < size && held(pg) {
            pg += 1;
        }
        Ok(at(pg).min(size))
    }

    /// `copy_file_range`: copy up to `len` bytes at `src_off` of `src` (stopping at its end)
    /// to `dst_off` of `dst`, without the data leaving the engine. Each piece of up to 1 MiB
    /// is one atomic, durable write; returns the bytes copied. Overlapping ranges of one file
    /// are refused (`InvalidArgument`), as Linux does.
    pub fn copy_range(
        &self,
        src: &Inode,
        src_off: u64,
        dst: &Inode,
        dst_off: u64,
        len: u64,
    ) -> Result<u64> {
        const PIECE: u64 = 1 << 20;
        if src.ino == dst.ino
            && src_off < dst_off.saturating_add(len)
            && dst_off < src_off.saturating_add(len)
        {
            return Err(Error::InvalidArgument(
                "copy_file_range within one file with overlapping ranges".into(),
            ));
        }
        let mut buf = vec![0u8; PIECE.min(len) as usize];
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(PIECE) as usize;
            let n = self.read_locked(&src.state.read(), src_off + done, &mut buf[..want])?;
            if n == 0 {
                break;
            }
            self.write_inode(dst, Some(dst_off + done), &buf[..n])?;
            done += n as u64;
        }
        Ok(done)
    }

    /// Write `data` at `off` (or at the end of file if `off` is `None`): copy-on-write, atomic
    /// and durable on return. Returns the offset written at.
    pub fn write(&self, ino: u64, off: Option<u64>, data: &[u8]) -> Result<u64> {
        let i = self.inode(ino)?;
        self.write_inode(&i, off, data)
    }

    /// [`Engine::write`] through an inode the caller holds (an open handle).
    pub fn write_inode(&self, i: &Inode, off: Option<u64>, data: &[u8]) -> Result<u64> {
        let _op = self.writable()?;
        let mut st = i.state.write();
        if st.attr.kind != Kind::File {
            return Err(if st.attr.kind == Kind::Dir {
                Error::IsADirectory
            } else {
                Error::InvalidArgument("write to a symlink, FIFO, socket or device node".into())
            });
        }
        if st.freed {
            return Err(Error::NotFound);
        }
        let off = off.unwrap_or(st.attr.size);
        if data.is_empty() {
            return Ok(off);
        }
        let end = off
            .checked_add(data.len() as u64)
            .ok_or(Error::FileTooLarge)?;
        if end.div_ceil(BLOCK) > MAX_FILE_PAGES {
            return Err(Error::FileTooLarge);
        }
        let first = off / BLOCK;
        let last = (end - 1) / BLOCK;
        // A small write inside one mapped page (no write cache) is a redo write (§5.1.2).
        if first == last
            && data.len() <= REDO_WRITE_MAX
            && st.cache().map.is_empty()
            && !crate::bugs::active(crate::bugs::Bug::FreeBeforeCommit)
        {
            if let Some(&block) = st.map.get(&first) {
                self.write_redo(i, &mut st, first, block, off, data)?;
                return Ok(off);
            }
        }
        // Mapped stores and write_at are ordered: if pages of the range sit in the write
        // cache, it is migrated first (for a failure-atomic mapping this commits its pending
        // pages, like a sync).
        // A failure-atomic cache's migration commits together with this write (one tail
        // store): see `migrate_or_fold`.
        let overlaps = !st.cache().map.is_empty() && {
            if st.cache().map.len() as u64 <= last - first {
                st.cache().map.keys().any(|p| (first..=last).contains(&p))
            } else {
                (first..=last).any(|p| st.cache().map.contains_key(&p))
            }
        };
        let (pre, migrating) = if overlaps {
            self.migrate_or_fold(i, &mut st)?
        } else {
            (Vec::new(), false)
        };
        // Inline for a write of one or two pages (no allocation).
        let mut pages: smallvec::SmallVec<[(u64, Page<'_>); 2]> =
            smallvec::SmallVec::with_capacity((last - first + 1) as usize);
        for pg in first..=last {
            let pg_start = pg * BLOCK;
            let lo = off.max(pg_start);
            let hi = end.min(pg_start + BLOCK);
            let src = &data[(lo - off) as usize..(hi - off) as usize];
            if hi - lo == BLOCK {
                pages.push((pg, Page::Borrowed(src)));
            } else {
                let base = st.cache().map.get(&pg).or_else(|| st.map.get(&pg)).copied();
                let at = (lo - pg_start) as usize;
                pages.push((
                    pg,
                    Page::Patch {
                        base,
                        at,
                        data: src,
                    },
                ));
            }
        }
        let size = st.attr.size.max(end);
        self.commit_pages(i, &mut st, &pages, size, pre, false, "write")?;
        if migrating {
            self.finish_migration(i, &mut st)?;
        }
        Ok(off)
    }

    /// A redo write (DESIGN.md §5.1.2): `data` at `off`, inside file page `pg`, which maps
    /// to `block`. The bytes go into the log entry (committed like any append: atomic and
    /// durable on return), then are stored in place into the block and flushed; the next
    /// fence of any commit makes them durable, and until then, after a crash, recovery stores
    /// them again from the entry. No block is allocated, no page copied.
    fn write_redo(
        &self,
        i: &Inode,
        st: &mut InodeState,
        pg: u64,
        block: u64,
        off: u64,
        data: &[u8],
    ) -> Result<()> {
        let size = st.attr.size.max(off + data.len() as u64);
        let r = RedoRef {
            pgoff: pg,
            block,
            at: (off - pg * BLOCK) as u16,
            data,
            size,
            mtime_ns: now_ns(),
        };
        let in_place = block * BLOCK + off % BLOCK;
        let old_size = st.attr.size;
        if crate::txn::commit_redo_one(&self.media, "write-redo", i.slot_off, st, &r)? {
            // As below: in place before GC looks at the log.
            let stored = crate::txn::redo_in_place(&self.media, in_place, data, &mut st.unflushed);
            self.appended(i.ino, i.slot_off, st, &[], old_size, &[]);
            return stored;
        }
        let e = Entry::WriteRedo {
            pgoff: r.pgoff,
            block,
            at: r.at,
            data: data.to_vec(),
            size,
            mtime_ns: r.mtime_ns,
        };
        let mut txn = self.txn("write-redo");
        txn.append(i.ino, i.slot_off, st, vec![e])?;
        let mut done = txn.commit()?;
        // In place before `apply`, which may run log GC: a GC that drops this entry flushes
        // the inode's unflushed lines and fences first, and must find these among them. The
        // inode's lock is held: readers see the bytes only once they are all stored.
        let stored = crate::txn::redo_in_place(&self.media, in_place, data, &mut st.unflushed);
        let freed = self.apply(&mut done, i.ino, i.slot_off, st);
        debug_assert!(freed.is_empty());
        stored
    }

    /// Copy-on-write commit of whole pages (plus `pre` entries, applied first) to file
    /// `inode` (its state `st` locked), in one transaction labelled `mark`.
    #[allow(clippy::too_many_arguments)]
    fn commit_pages(
        &self,
        inode: &Inode,
        st: &mut InodeState,
        pages: &[(u64, Page<'_>)],
        size: u64,
        pre: Vec<Entry>,
        frees_space: bool,
        mark: &'static str,
    ) -> Result<()> {
        let mut txn = self.txn(mark).frees_space(frees_space);
        let mut entries = pre;
        let in_place = txn.write_pages(&st.map, pages, size, now_ns(), &mut entries)?;
        txn.append(inode.ino, inode.slot_off, st, entries)?;
        let mut done = txn.commit()?;
        for b in self.apply(&mut done, inode.ino, inode.slot_off, st) {
            if !in_place.contains(&b) {
                self.blocks.free(b, 1);
            }
        }
        Ok(())
    }

    /// Replace the whole contents of file `i` with `data` (its new length), in one commit:
    /// the new pages are written copy-on-write, then one log append (a size change that drops
    /// the old pages past the new end, and the new pages' `Write` entries) is committed by
    /// one tail store. After a crash the file holds the old contents or all of `data`.
    pub fn replace_inode(&self, i: &Inode, data: &[u8]) -> Result<()> {
        let _op = self.writable()?;
        let len = data.len() as u64;
        if len.div_ceil(BLOCK) > MAX_FILE_PAGES {
            return Err(Error::FileTooLarge);
        }
        let mut st = i.state.write();
        match st.attr.kind {
            Kind::File if st.freed => return Err(Error::NotFound),
            Kind::File => {}
            Kind::Dir => return Err(Error::IsADirectory),
            _ => {
                return Err(Error::InvalidArgument(
                    "write to a symlink, FIFO, socket or device node".into(),
                ))
            }
        }
        // Cached pages are migrated first (or with this, for a failure-atomic cache).
        let (mut pre, migrating) = self.migrate_or_fold(i, &mut st)?;
        let now = now_ns();
        let mut a = SetAttrEntry::zeroed_entry();
        a.mask = attr_mask::SIZE | attr_mask::MTIME | attr_mask::CTIME;
        a.size = len;
        a.mtime_ns = now;
        a.ctime_ns = now;
        pre.push(Entry::SetAttr(a));
        self.commit_pages(i, &mut st, &content_pages(data), len, pre, false, "replace")?;
        if migrating {
            self.finish_migration(i, &mut st)?;
        }
        Ok(())
    }

    /// Change attributes; a size change truncates or extends (holes read as zeros).
    pub fn setattr(&self, ino: u64, req: &SetAttr) -> Result<Attr> {
        let _op = self.writable()?;
        let i = self.inode(ino)?;
        let mut st = i.state.write();
        if st.freed {
            return Err(Error::NotFound);
        }
        let now = now_ns();
        let mut a = SetAttrEntry::zeroed_entry();
        a.mask = attr_mask::CTIME;
        a.ctime_ns = now;
        if let Some(m) = req.mode {
            a.mask |= attr_mask::MODE;
            a.mode = m & 0o7777;
        }
        if let Some(u) = req.uid {
            a.mask |= attr_mask::UID;
            a.uid = u;
        }
        if let Some(g) = req.gid {
            a.mask |= attr_mask::GID;
            a.gid = g;
        }
        if let Some(t) = req.atime_ns {
            a.mask |= attr_mask::ATIME;
            a.atime_ns = t;
        }
        if let Some(t) = req.mtime_ns {
            a.mask |= attr_mask::MTIME;
            a.mtime_ns = t;
        }
        let mut pages = Vec::new();
        let mut size = st.attr.size;
        let mut migrate_pre: Vec<Entry> = Vec::new();
        let mut folded = false;
        if let Some(new) = req.size {
            match st.attr.kind {
                Kind::Dir => return Err(Error::IsADirectory),
                Kind::Symlink => {
                    return Err(Error::InvalidArgument("truncate of a symlink".into()))
                }
                k if k.is_special() => {
                    return Err(Error::InvalidArgument(
                        "truncate of a FIFO, socket or device node".into(),
                    ))
                }
                _ => {}
            }
            if new.div_ceil(BLOCK) > MAX_FILE_PAGES {
                return Err(Error::FileTooLarge);
            }
            if !st.cache().map.is_empty() {
                // A size change migrates the cached pages first, or with it for a
                // failure-atomic cache (pages past a cut are then freed).
                (migrate_pre, folded) = self.migrate_or_fold(&i, &mut st)?;
            }
            a.mask |= attr_mask::SIZE;
            a.size = new;
            if req.mtime_ns.is_none() {
                a.mask |= attr_mask::MTIME;
                a.mtime_ns = now;
            }
            // Keep the invariant that bytes past EOF in the last page are zero.
            if new < st.attr.size && new % BLOCK != 0 {
                let pg = new / BLOCK;
                if let Some(&b) = st.cache().map.get(&pg).or_else(|| st.map.get(&pg)) {
                    let mut buf = vec![0u8; BLOCK as usize];
                    self.media
                        .read(b * BLOCK, &mut buf[..(new % BLOCK) as usize])?;
                    pages.push((pg, Page::Owned(buf)));
                }
            }
            size = new;
        }
        // Shrinking frees space: it may use the reserve.
        let shrinks = req.size.is_some_and(|n| n < st.attr.size);
        migrate_pre.push(Entry::SetAttr(a));
        if req.mode.is_some() {
            // An access ACL follows the new mode (owner, mask or group, other), in this commit.
            migrate_pre.extend(crate::xattr::chmod_acl_entry(st.xattrs(), a.mode, now));
        }
        self.commit_pages(&i, &mut st, &pages, size, migrate_pre, shrinks, "setattr")?;
        if folded {
            self.finish_migration(&i, &mut st)?;
        }
        Ok(st.attr())
    }

    /// Deallocate `[off, off+len)`: it reads as zeros afterwards; the size does not change.
    pub fn punch_hole(&self, ino: u64, off: u64, len: u64) -> Result<()> {
        self.clear_range(ino, off, len, Clear::Punch)
    }

    /// `fallocate(FALLOC_FL_ZERO_RANGE)`: `[off, off+len)` reads as zeros and is backed by
    /// zero-filled blocks (partial pages copied with zeros), in one atomic commit; the size
    /// grows to cover the range unless `keep_size` (then the range stops at the end).
    pub fn zero_range(&self, ino: u64, off: u64, len: u64, keep_size: bool) -> Result<()> {
        self.clear_range(ino, off, len, Clear::Zero { keep_size })
    }

    /// Punch or zero `[off, off+len)` in one commit (see [`Clear`]).
    fn clear_range(&self, ino: u64, off: u64, len: u64, how: Clear) -> Result<()> {
        let _op = self.writable()?;
        let i = self.inode(ino)?;
        let mut st = i.state.write();
        if st.attr.kind != Kind::File {
            return Err(Error::InvalidArgument(
                "punch_hole and zero_range need a regular file".into(),
            ));
        }
        if st.freed {
            return Err(Error::NotFound);
        }
        let end = match how {
            Clear::Zero { keep_size: false } => {
                let end = off.checked_add(len).ok_or(Error::FileTooLarge)?;
                if end.div_ceil(BLOCK) > MAX_FILE_PAGES {
                    return Err(Error::FileTooLarge);
                }
                end
            }
            _ => off.saturating_add(len).min(st.attr.size),
        };
        if len == 0 || off >= end {
            return Ok(());
        }
        // Cached pages are migrated first (or with the hole, for a failure-atomic cache).
        let (pre, migrating) = self.migrate_or_fold(&i, &mut st)?;
        let mut pages = Vec::new();
        let first = off / BLOCK;
        let last = (end - 1) / BLOCK;
        for pg in first..=last {
            let ps = pg * BLOCK;
            let lo = off.max(ps);
            let hi = end.min(ps + BLOCK);
            let zero = matches!(how, Clear::Zero { .. });
            let Some(&b) = st.cache().map.get(&pg).or_else(|| st.map.get(&pg)) else {
                // A hole reads as zeros already; zeroing backs it with a zeroed block.
                if zero {
                    pages.push((pg, Page::Zero));
                }
                continue;
            };
            if hi - lo == BLOCK {
                pages.push((pg, if zero { Page::Zero } else { Page::Hole }));
            } else {
                let mut buf = vec![0u8; BLOCK as usize];
                self.media.read(b * BLOCK, &mut buf)?;
                buf[(lo - ps) as usize..(hi - ps) as usize].fill(0);
                pages.push((pg, Page::Owned(buf)));
            }
        }
        // Zeroing past the end grows the file: its range is never empty, so the new pages'
        // entries carry the size.
        let size = st.attr.size.max(end);
        // Punching frees space, so it may dip into the reserve; zeroing allocates.
        let mark = match how {
            Clear::Punch => "punch",
            Clear::Zero { .. } => "zero-range",
        };
        self.commit_pages(&i, &mut st, &pages, size, pre, how == Clear::Punch, mark)?;
        if migrating {
            self.finish_migration(&i, &mut st)?;
        }
        Ok(())
    }

    /// Allocate blocks for `[off, off+len)` (zero-filled) and extend the size to cover it.
    pub fn allocate(&self, ino: u64, off: u64, len: u64) -> Result<()> {
        self.allocate_with(ino, off, len, false)
    }

    /// `fallocate`: allocate zero-filled blocks for the unmapped pages of `[off, off+len)`,
    /// in one commit. The size grows to cover the range unless `keep_size`
    /// (`FALLOC_FL_KEEP_SIZE`): then pages past the end are allocated and the size stays;
    /// they are counted in `blocks`, read as nothing (reads stop at the size), and read as
    /// zeros once the size grows over them (a write past the end or a truncate up; a size
    /// change drops the pages beyond the new size, as `truncate(2)` does on ext4).
    pub fn allocate_with(&self, ino: u64, off: u64, len: u64, keep_size: bool) -> Result<()> {
        let _op = self.writable()?;
        if len == 0 {
            return Err(Error::InvalidArgument("allocate of zero bytes".into()));
        }
        let i = self.inode(ino)?;
        let mut st = i.state.write();
        if st.freed {
            return Err(Error::NotFound);
        }
        if st.attr.kind != Kind::File {
            return Err(Error::InvalidArgument(
                "allocate needs a regular file".into(),
            ));
        }
        let end = off.checked_add(len).ok_or(Error::FileTooLarge)?;
        if end.div_ceil(BLOCK) > MAX_FILE_PAGES {
            return Err(Error::FileTooLarge);
        }
        // Cached pages are migrated first (or with this, for a failure-atomic cache).
        let (mut pre, migrating) = self.migrate_or_fold(&i, &mut st)?;
        let pages: Vec<(u64, Page<'_>)> = (off / BLOCK..end.div_ceil(BLOCK))
            .filter(|pg| !st.map.contains_key(pg) && !st.cache().map.contains_key(pg))
            .map(|pg| (pg, Page::Zero))
            .collect();
        let size = if keep_size {
            st.attr.size
        } else {
            st.attr.size.max(end)
        };
        if pages.is_empty() && size != st.attr.size {
            let mut a = SetAttrEntry::zeroed_entry();
            a.mask = attr_mask::SIZE;
            a.size = size;
            pre.push(Entry::SetAttr(a));
        }
        self.commit_pages(&i, &mut st, &pages, size, pre, false, "allocate")?;
        if migrating {
            self.finish_migration(&i, &mut st)?;
        }
        Ok(())
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        let st = i.state.read();
        if st.attr.kind != Kind::Symlink {
            return Err(Error::InvalidArgument("not a symbolic link".into()));
        }
        if st.attr.size == 0 || st.attr.size > BLOCK || !st.map.contains_key(&0) {
            return Err(Error::corrupt("symlink length", format!("inode {ino}")));
        }
        let mut buf = vec![0u8; st.attr.size as usize];
        let n = self.read_locked(&st, 0, &mut buf)?;
        buf.truncate(n);
        if buf.contains(&0) {
            return Err(Error::corrupt("symlink target", format!("inode {ino}")));
        }
        Ok(buf)
    }
}
