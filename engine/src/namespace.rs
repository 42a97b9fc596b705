//! Namespace operations: create, mknod, mkdir, symlink, link, unlink, rmdir, rename and
//! exchange. Each is one `Txn` (DESIGN §5.0): the entries of every inode it changes, committed by
//! one tail store or, across inodes, by the undo journal; then applied to the locked states.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::data::content_pages;
use crate::engine::{Engine, RenameFlags, MAX_FILE_PAGES, MAX_LINKS};
use crate::error::{Error, Result};
use crate::inode::{Attr, DirEnt, Inode, InodeState};
use crate::layout::entry::Entry;
use crate::layout::inode::{InodeSlot, NewInode};
use crate::layout::{now_ns, Kind, BLOCK, INODES_PER_CHUNK, NAME_MAX};
use crate::sync::RwLockWriteGuard;

/// Validate one name.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidPath("empty name".into()));
    }
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong(name.len()));
    }
    if name == b"." || name == b".." {
        return Err(Error::InvalidPath(
            "'.' and '..' cannot be created or removed".into(),
        ));
    }
    if name.iter().any(|&b| b == 0 || b == b'/') {
        return Err(Error::InvalidPath("names cannot contain '/' or NUL".into()));
    }
    Ok(())
}

/// Each inode's entries of one change (two to four inodes: inline).
type Plan = SmallVec<[(u64, Vec<Entry>); 4]>;

/// Locks on several inodes, taken in inode order.
struct Locked<'a> {
    /// Inline: an operation locks two to four inodes.
    guards: SmallVec<[(u64, RwLockWriteGuard<'a, InodeState>); 4]>,
}

/// The slot offset of inode `ino`, one of the locked `inodes`.
fn slot_of(inodes: &[Arc<Inode>], ino: u64) -> u64 {
    inodes
        .iter()
        .find(|i| i.ino == ino)
        .map(|i| i.slot_off)
        .expect("locked")
}

impl<'a> Locked<'a> {
    fn new(inodes: &'a [Arc<Inode>]) -> Locked<'a> {
        // Insertion in inode order, duplicates left out (two to four inodes: no sort).
        let mut refs: SmallVec<[&'a Inode; 4]> = SmallVec::new();
        for i in inodes {
            let at = refs.partition_point(|r| r.ino < i.ino);
            if refs.get(at).is_none_or(|r| r.ino != i.ino) {
                refs.insert(at, i);
            }
        }
        let mut guards = SmallVec::new();
        for i in refs {
            guards.push((i.ino, i.state.write()));
        }
        Locked { guards }
    }

    fn get(&mut self, ino: u64) -> &mut InodeState {
        let i = self
            .guards
            .iter()
            .position(|(n, _)| *n == ino)
            .expect("inode locked");
        &mut self.guards[i].1
    }
}

impl Engine {
    /// Create a regular file.
    pub fn create(&self, parent: u64, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.make_node(parent, name, (Kind::File, 0), mode, uid, gid, None, false)
            .map(|(_, a)| a)
    }

    /// Create a regular file and open a handle on it ([`Engine::open_inode`]; released with
    /// [`Engine::release_inode`]), in one step: the handle is counted before the parent's
    /// lock is let go, so no unlink can free the new inode in between.
    pub fn create_open(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(Arc<Inode>, Attr)> {
        let (inode, attr) =
            self.make_node(parent, name, (Kind::File, 0), mode, uid, gid, None, true)?;
        let Some(inode) = inode else {
            unreachable!("make_node returns the inode it opened");
        };
        Ok((inode, attr))
    }

    /// Create a FIFO, socket, or character or block device node (`rdev`: its device number,
    /// Linux `dev_t` encoding; 0 for FIFOs and sockets). Such an inode has attributes and no
    /// data. On a format-1 image mounted read-only: `ReadOnly`, as every change.
    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        kind: Kind,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
    ) -> Result<Attr> {
        if !kind.is_special() {
            return Err(Error::InvalidArgument(
                "mknod makes FIFOs, sockets and device nodes".into(),
            ));
        }
        if rdev != 0 && !kind.is_device() {
            return Err(Error::InvalidArgument(
                "only device nodes have a device number".into(),
            ));
        }
        if rdev > u64::from(u32::MAX) {
            return Err(Error::InvalidArgument(
                "device number beyond Linux's 32-bit encoding".into(),
            ));
        }
        self.make_node(parent, name, (kind, rdev), mode, uid, gid, None, false)
            .map(|(_, a)| a)
    }

    /// Create a regular file holding `data`, in one commit: after a crash the name is absent,
    /// or present with all of `data` (never empty or partly written). `AlreadyExists` if the
    /// name is taken.
    pub fn create_with(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        owner: (u32, u32),
        data: &[u8],
    ) -> Result<Attr> {
        if data.len() as u64 > MAX_FILE_PAGES * BLOCK {
            return Err(Error::FileTooLarge);
        }
        let (uid, gid) = owner;
        self.make_node(
            parent,
            name,
            (Kind::File, 0),
            mode,
            uid,
            gid,
            Some(data),
            false,
        )
        .map(|(_, a)| a)
    }

    /// Create a directory.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.make_node(parent, name, (Kind::Dir, 0), mode, uid, gid, None, false)
            .map(|(_, a)| a)
    }

    /// Create a symbolic link to `target`.
    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        if target.is_empty() || target.len() > BLOCK as usize || target.contains(&0) {
            return Err(Error::InvalidArgument(
                "symlink target must be 1..4096 bytes without NUL".into(),
            ));
        }
        self.make_node(
            parent,
            name,
            (Kind::Symlink, 0),
            0o777,
            uid,
            gid,
            Some(target),
            false,
        )
        .map(|(_, a)| a)
    }

    #[allow(clippy::too_many_arguments)]
    fn make_node(
        &self,
        parent: u64,
        name: &[u8],
        (kind, rdev): (Kind, u64),
        mode: u32,
        uid: u32,
        gid: u32,
        content: Option<&[u8]>,
        open: bool,
    ) -> Result<(Option<Arc<Inode>>, Attr)> {
        check_name(name)?;
        let _op = self.writable()?;
        let p = self.inode(parent)?;
        let mut ps = p.state.write();
        if ps.attr.kind != Kind::Dir {
            return Err(Error::NotADirectory);
        }
        if ps.removed {
            return Err(Error::NotFound);
        }
        if ps.dir.contains_key(name) {
            return Err(Error::AlreadyExists);
        }
        if kind == Kind::Dir && ps.attr.nlink >= MAX_LINKS {
            return Err(Error::TooManyLinks);
        }
        let mut txn = self.txn("create");
        let ino = self.alloc_ino()?;
        txn.alloc_ino(ino);
        let slot_off = self.slot_off(ino).ok_or(Error::NoInodes)?;
        // Only the old generation is needed (8 bytes, not the whole slot).
        let old_generation = self
            .media
            .load_u64(slot_off + crate::layout::inode::GENERATION_OFFSET)?;
        let now = now_ns();
        // A directory's default ACL is inherited (POSIX `posix_acl_create`), in this commit.
        let (inherit, mode) = crate::xattr::inherit_acl(ps.xattrs(), kind, mode);
        let mut slot = InodeSlot::fresh(NewInode {
            kind,
            generation: old_generation.wrapping_add(1),
            mode,
            uid,
            gid,
            parent,
            ctime_ns: now,
            rdev,
        });
        // The state is built where it will live (the new Arc), not moved there after.
        let mut inode = Arc::new(Inode::new(ino, slot_off, InodeState::new(ino, &slot, kind)));
        let Some(new) = Arc::get_mut(&mut inode) else {
            unreachable!("a new Arc has one owner");
        };
        if open {
            // Counted before the parent's lock is released (an unlink takes it first).
            *new.open.get_mut() = 1;
        }
        let child = new.state_mut();
        // The new inode's log is prepared before anything names it: the parent's commit
        // makes the inode and its contents (and inherited ACLs) visible together (one tail
        // store: the child's log is reached only through the parent's new entry).
        let mut entries = Vec::new();
        if let Some(data) = content.filter(|d| !d.is_empty()) {
            txn.write_pages(
                &child.map,
                &content_pages(data),
                data.len() as u64,
                now,
                &mut entries,
            )?;
        }
        for (n, v) in &inherit {
            entries.extend(crate::layout::entry::xattr_set_entries(n, v, now));
        }
        if !entries.is_empty() {
            (slot.log_head, slot.log_tail) = txn.new_log(ino, slot_off, child, entries)?;
        }
        // The whole slot, including head and tail for a prepared log.
        txn.init_slot(ino, slot_off, &slot)?;
        let pe = Entry::DirAdd {
            ino,
            kind,
            name: name.into(),
            mtime_ns: now,
        };
        txn.append(parent, p.slot_off, &ps, vec![pe])?;
        let mut done = txn.commit()?;
        self.apply(&mut done, parent, p.slot_off, &mut ps);
        let _ = done.apply(&self.blocks, ino, child);
        let attr = child.attr();
        let opened = open.then(|| inode.clone());
        self.cache_insert(inode);
        Ok((opened, attr))
    }

    /// Remove the name of a non-directory.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(parent, name, false)
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], dir: bool) -> Result<()> {
        check_name(name)?;
        let _op = self.writable()?;
        let p = self.inode(parent)?;
        loop {
            let ent = self.lookup_in(&p, name)?;
            match (dir, ent.kind == Kind::Dir) {
                (false, true) => return Err(Error::IsADirectory),
                (true, false) => return Err(Error::NotADirectory),
                _ => {}
            }
            let inodes = [p.clone(), self.inode(ent.ino)?];
            let mut l = Locked::new(&inodes);
            if l.get(parent).dir.get(name) != Some(&ent) {
                continue; // changed under us; retry
            }
            let now = now_ns();
            let cs = l.get(ent.ino);
            if cs.attr.kind != ent.kind {
                // The fast path trusts the logs: never free an inode of another kind than
                // the name says (a directory's children would be lost).
                return Err(Error::corrupt(
                    "directory entry kind differs from the inode's",
                    format!("inode {} (named in directory {parent})", ent.ino),
                ));
            }
            if dir && !cs.dir.is_empty() {
                return Err(Error::DirectoryNotEmpty);
            }
            if dir && cs.parent != parent {
                // A directory named by a second directory: freeing it would leave the name
                // its real parent holds pointing at a free inode.
                return Err(Error::corrupt(
                    "directory named outside its parent (a directory hard link)",
                    format!(
                        "inode {} (named in directory {parent}, parent {})",
                        ent.ino, cs.parent
                    ),
                ));
            }
            let child_entries = if !dir && cs.attr.nlink > 1 {
                vec![Entry::Link {
                    nlink: cs.attr.nlink - 1,
                    ctime_ns: now,
                    parent: 0,
                }]
            } else {
                vec![]
            };
            let pe = vec![Entry::DirRemove {
                ino: ent.ino,
                name: name.into(),
                mtime_ns: now,
            }];
            let last_link = dir || child_entries.is_empty();
            let child_appends = !child_entries.is_empty();
            // Removing frees space: it may use the reserve.
            let mut txn = self.txn("remove").frees_space(true);
            txn.append(parent, inodes[0].slot_off, l.get(parent), pe)?;
            txn.append(ent.ino, inodes[1].slot_off, l.get(ent.ino), child_entries)?;
            let mut done = txn.commit()?;
            self.apply(&mut done, parent, inodes[0].slot_off, l.get(parent));
            if child_appends {
                self.apply(&mut done, ent.ino, inodes[1].slot_off, l.get(ent.ino));
            }
            let cs = l.get(ent.ino);
            if last_link {
                cs.attr.nlink = 0;
                cs.removed = true;
                cs.attr.ctime_ns = now;
                if inodes[1].open.load(Ordering::Acquire) == 0 {
                    self.free_inode(&inodes[1], cs)?;
                }
            }
            return Ok(());
        }
    }

    /// Add a hard link `new_parent/new_name` to `ino`.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> Result<Attr> {
        check_name(new_name)?;
        let _op = self.writable()?;
        let inodes = [self.inode(new_parent)?, self.inode(ino)?];
        let mut l = Locked::new(&inodes);
        {
            let ps = l.get(new_parent);
            if ps.attr.kind != Kind::Dir {
                return Err(Error::NotADirectory);
            }
            if ps.removed {
                return Err(Error::NotFound);
            }
            if ps.dir.contains_key(new_name) {
                return Err(Error::AlreadyExists);
            }
        }
        let cs = l.get(ino);
        if cs.attr.kind == Kind::Dir {
            return Err(Error::NotPermitted("hard links to directories"));
        }
        if cs.removed || cs.freed {
            return Err(Error::NotFound);
        }
        if cs.attr.nlink >= MAX_LINKS {
            return Err(Error::TooManyLinks);
        }
        let now = now_ns();
        let kind = cs.attr.kind;
        let ce = vec![Entry::Link {
            nlink: cs.attr.nlink + 1,
            ctime_ns: now,
            parent: 0,
        }];
        let pe = vec![Entry::DirAdd {
            ino,
            kind,
            name: new_name.into(),
            mtime_ns: now,
        }];
        let mut txn = self.txn("link");
        txn.append(new_parent, inodes[0].slot_off, l.get(new_parent), pe)?;
        txn.append(ino, inodes[1].slot_off, l.get(ino), ce)?;
        let mut done = txn.commit()?;
        self.apply(&mut done, new_parent, inodes[0].slot_off, l.get(new_parent));
        self.apply(&mut done, ino, inodes[1].slot_off, l.get(ino));
        Ok(l.get(ino).attr())
    }

    /// Rename `src_parent/src_name` to `dst_parent/dst_name` (POSIX rules).
    pub fn rename(
        &self,
        src_parent: u64,
        src_name: &[u8],
        dst_parent: u64,
        dst_name: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        check_name(src_name)?;
        check_name(dst_name)?;
        if flags.exchange && flags.noreplace {
            return Err(Error::InvalidArgument(
                "exchange and noreplace together".into(),
            ));
        }
        let _op = self.writable()?;
        let _rename = self.rename_lock.lock();
        if flags.exchange {
            return self.exchange(src_parent, src_name, dst_parent, dst_name);
        }
        // Each parent looked up in the cache once (the lookups and the locks use them).
        let sp = self.inode(src_parent)?;
        let dp = if dst_parent == src_parent {
            sp.clone()
        } else {
            self.inode(dst_parent)?
        };
        loop {
            let src = self.lookup_in(&sp, src_name)?;
            let dst = match self.lookup_in(&dp, dst_name) {
                Ok(d) => Some(d),
                Err(Error::NotFound) => None,
                Err(e) => return Err(e),
            };
            if let Some(d) = dst {
                if d.ino == src.ino {
                    return Ok(()); // both names link the same inode: POSIX says do nothing
                }
                if flags.noreplace {
                    return Err(Error::AlreadyExists);
                }
                match (src.kind == Kind::Dir, d.kind == Kind::Dir) {
                    (true, false) => return Err(Error::NotADirectory),
                    (false, true) => return Err(Error::IsADirectory),
                    _ => {}
                }
            }
            // The destination must not be the moved directory or inside it.
            if src.kind == Kind::Dir
                && src_parent != dst_parent
                && self.within(dst_parent, src.ino)?
            {
                return Err(Error::RenameIntoSelf);
            }
            let mut inodes: SmallVec<[Arc<Inode>; 4]> =
                smallvec::smallvec![sp.clone(), self.inode(src.ino)?];
            if dst_parent != src_parent {
                inodes.push(dp.clone());
            }
            if let Some(d) = dst {
                inodes.push(self.inode(d.ino)?);
            }
            let mut l = Locked::new(&inodes);
            if l.get(src_parent).dir.get(src_name) != Some(&src)
                || l.get(dst_parent).dir.get(dst_name).copied() != dst
            {
                continue;
            }
            if l.get(dst_parent).removed {
                return Err(Error::NotFound);
            }
            if let Some(d) = dst {
                if d.kind == Kind::Dir && !l.get(d.ino).dir.is_empty() {
                    return Err(Error::DirectoryNotEmpty);
                }
            }
            let now = now_ns();
            let remove_src = Entry::DirRemove {
                ino: src.ino,
                name: src_name.into(),
                mtime_ns: now,
            };
            let add_dst = Entry::DirAdd {
                ino: src.ino,
                kind: src.kind,
                name: dst_name.into(),
                mtime_ns: now,
            };
            let remove_victim = dst.map(|d| Entry::DirRemove {
                ino: d.ino,
                name: dst_name.into(),
                mtime_ns: now,
            });
            // Each list made at its final size (no regrowth).
            let (src_entries, dst_entries) = if src_parent == dst_parent {
                let mut v = Vec::with_capacity(3);
                v.push(remove_src);
                v.extend(remove_victim);
                v.push(add_dst);
                (v, Vec::new())
            } else {
                let mut v = Vec::with_capacity(2);
                v.extend(remove_victim);
                v.push(add_dst);
                (vec![remove_src], v)
            };
            // The moved inode's ctime changes (as on ext4 and tmpfs); a directory that changes
            // parent records the new one.
            let moved_entries = vec![Entry::Link {
                nlink: l.get(src.ino).attr.nlink,
                ctime_ns: now,
                parent: if src.kind == Kind::Dir && src_parent != dst_parent {
                    dst_parent
                } else {
                    0
                },
            }];
            let victim_gone = match dst {
                Some(d) => d.kind == Kind::Dir || l.get(d.ino).attr.nlink <= 1,
                None => false,
            };
            let victim_entries = match dst {
                Some(d) if d.kind != Kind::Dir && l.get(d.ino).attr.nlink > 1 => {
                    vec![Entry::Link {
                        nlink: l.get(d.ino).attr.nlink - 1,
                        ctime_ns: now,
                        parent: 0,
                    }]
                }
                _ => vec![],
            };
            // Only a rename that frees its victim may dip into the reserve: a plain move on a
            // full image fails with NoSpace.
            if src_parent == dst_parent && victim_entries.is_empty() {
                // Within one directory, with no victim that keeps other links, the names
                // change in one append to the directory's log; the moved inode's new ctime is
                // an independent append beside it: one fence and no journal when both are
                // one-fence appends (DESIGN.md §5.2.1).
                let plan: Plan =
                    smallvec::smallvec![(src.ino, moved_entries), (src_parent, src_entries)];
                let txn = self.txn("rename").frees_space(victim_gone).independent();
                self.commit_plan(&mut l, &inodes, plan, txn)?;
            } else {
                let mut plan: Plan = smallvec::smallvec![(src_parent, src_entries)];
                if src_parent != dst_parent {
                    plan.push((dst_parent, dst_entries));
                }
                plan.push((src.ino, moved_entries));
                if let Some(d) = dst {
                    plan.push((d.ino, victim_entries));
                }
                self.commit_locked(&mut l, &inodes, plan, victim_gone, "rename")?;
            }
            if let Some(d) = dst {
                let vs = l.get(d.ino);
                if victim_gone {
                    vs.attr.nlink = 0;
                    vs.removed = true;
                    let victim = inodes.iter().find(|i| i.ino == d.ino).expect("locked");
                    if victim.open.load(Ordering::Acquire) == 0 {
                        self.free_inode(victim, vs)?;
                    }
                }
            }
            return Ok(());
        }
    }

    /// Whether directory `dir` is `ancestor` or lies inside it (the rename lock held).
    fn within(&self, dir: u64, ancestor: u64) -> Result<bool> {
        let mut cur = dir;
        let mut hops = 0u64;
        // A parent chain longer than the inode table holds inodes is a cycle.
        let max_hops = self.chunks.read().len() as u64 * INODES_PER_CHUNK;
        loop {
            if cur == ancestor {
                return Ok(true);
            }
            if cur == crate::layout::ROOT_INO {
                return Ok(false);
            }
            cur = self.parent_of(cur)?;
            hops += 1;
            if hops > max_hops {
                return Err(Error::corrupt("directory cycle", format!("inode {dir}")));
            }
        }
    }

    /// `RENAME_EXCHANGE`: swap what two names point at, in one journaled commit (the rename
    /// lock and the operation gate held).
    fn exchange(
        &self,
        src_parent: u64,
        src_name: &[u8],
        dst_parent: u64,
        dst_name: &[u8],
    ) -> Result<()> {
        loop {
            let src = self.lookup_ent(src_parent, src_name)?;
            let dst = self.lookup_ent(dst_parent, dst_name)?;
            if src.ino == dst.ino {
                return Ok(());
            }
            if src_parent != dst_parent
                && ((src.kind == Kind::Dir && self.within(dst_parent, src.ino)?)
                    || (dst.kind == Kind::Dir && self.within(src_parent, dst.ino)?))
            {
                return Err(Error::RenameIntoSelf);
            }
            let mut inodes = vec![
                self.inode(src_parent)?,
                self.inode(src.ino)?,
                self.inode(dst.ino)?,
            ];
            if dst_parent != src_parent {
                inodes.push(self.inode(dst_parent)?);
            }
            let mut l = Locked::new(&inodes);
            if l.get(src_parent).dir.get(src_name) != Some(&src)
                || l.get(dst_parent).dir.get(dst_name) != Some(&dst)
            {
                continue;
            }
            let cross = src_parent != dst_parent;
            // A parent that trades a non-directory for a directory gains a link.
            let gains_dir = |to: &DirEnt, from: &DirEnt| {
                cross && to.kind == Kind::Dir && from.kind != Kind::Dir
            };
            if (gains_dir(&dst, &src) && l.get(src_parent).attr.nlink >= MAX_LINKS)
                || (gains_dir(&src, &dst) && l.get(dst_parent).attr.nlink >= MAX_LINKS)
            {
                return Err(Error::TooManyLinks);
            }
            let now = now_ns();
            let remove = |e: &DirEnt, name: &[u8]| Entry::DirRemove {
                ino: e.ino,
                name: name.into(),
                mtime_ns: now,
            };
            let add = |e: &DirEnt, name: &[u8]| Entry::DirAdd {
                ino: e.ino,
                kind: e.kind,
                name: name.into(),
                mtime_ns: now,
            };
            let mut plan: Plan = if cross {
                smallvec::smallvec![
                    (
                        src_parent,
                        vec![remove(&src, src_name), add(&dst, src_name)],
                    ),
                    (
                        dst_parent,
                        vec![remove(&dst, dst_name), add(&src, dst_name)],
                    ),
                ]
            } else {
                smallvec::smallvec![(
                    src_parent,
                    vec![
                        remove(&src, src_name),
                        remove(&dst, dst_name),
                        add(&dst, src_name),
                        add(&src, dst_name),
                    ],
                )]
            };
            // Both inodes change ctime; a directory that changes parent records it.
            for (e, new_parent) in [(&src, dst_parent), (&dst, src_parent)] {
                let nlink = l.get(e.ino).attr.nlink;
                plan.push((
                    e.ino,
                    vec![Entry::Link {
                        nlink,
                        ctime_ns: now,
                        parent: if e.kind == Kind::Dir && cross {
                            new_parent
                        } else {
                            0
                        },
                    }],
                ));
            }
            if cross {
                return self.commit_locked(&mut l, &inodes, plan, false, "exchange");
            }
            // One directory: its names swap in one append; the two ctimes are independent of
            // it (DESIGN.md §5.2.1).
            let txn = self.txn("exchange").independent();
            return self.commit_plan(&mut l, &inodes, plan, txn);
        }
    }

    /// Prepare each locked inode's entries of `plan` (empty lists add nothing), commit them
    /// together (journaled when several) and apply them.
    fn commit_locked(
        &self,
        l: &mut Locked<'_>,
        inodes: &[Arc<Inode>],
        plan: Plan,
        frees_space: bool,
        mark: &'static str,
    ) -> Result<()> {
        self.commit_plan(l, inodes, plan, self.txn(mark).frees_space(frees_space))
    }

    /// Append each inode's entries of `plan` in `txn`, commit, apply. An independent `txn`
    /// ([`crate::txn::Txn::independent`]: one fence when each append is a one-fence append,
    /// else journaled) is for callers whose every subset of appends is a state POSIX allows
    /// (DESIGN.md §5.2.1).
    fn commit_plan(
        &self,
        l: &mut Locked<'_>,
        inodes: &[Arc<Inode>],
        plan: Plan,
        mut txn: crate::txn::Txn<'_>,
    ) -> Result<()> {
        let slot_of = |ino: u64| slot_of(inodes, ino);
        let mut touched: SmallVec<[u64; 4]> = SmallVec::with_capacity(plan.len());
        for (ino, entries) in plan {
            if entries.is_empty() {
                continue; // nothing to append, nothing to apply
            }
            txn.append(ino, slot_of(ino), l.get(ino), entries)?;
            touched.push(ino);
        }
        let mut done = txn.commit()?;
        for ino in touched {
            self.apply(&mut done, ino, slot_of(ino), l.get(ino));
        }
        Ok(())
    }
}
