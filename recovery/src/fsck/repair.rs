//! The fixes that append log entries: each inode's entries in one single-inode transaction
//! (`Txn::repair`, the engine's own commit path), with blocks from an allocator that holds
//! only the blocks the round found free.

use std::collections::BTreeMap;

use novafs_engine::alloc::BlockAlloc;
use novafs_engine::inode::InodeState;
use novafs_engine::layout::entry::{attr_mask, Entry, SetAttrEntry};
use novafs_engine::layout::inode::{InodeSlot, NewInode};
use novafs_engine::layout::{now_ns, Kind, ROOT_INO};
use novafs_engine::txn::Txn;
use novafs_engine::{Error, Result};

use super::scan::{own, Ctx, Deferred, Info, Model, ScanResult, O_DATA, O_LOG};

const LOST_FOUND: &[u8] = b"lost+found";

/// Apply the deferred fixes of a round. A fix that fails (no space, no free inode) is left;
/// the final check reports what remains.
pub(super) fn apply_deferred(ctx: &Ctx<'_>, result: &mut ScanResult) -> Result<()> {
    if result.deferred.is_empty() {
        return Ok(());
    }
    let Some(model) = result.model.as_mut() else {
        return Ok(());
    };
    ctx.before_change()?;
    let alloc = free_blocks(model);
    let mut groups: BTreeMap<u64, Vec<Deferred>> = BTreeMap::new();
    let mut relinks = Vec::new();
    for (_, d) in &result.deferred {
        match d {
            Deferred::RemoveName { dir, .. } => groups.entry(*dir).or_default().push(d.clone()),
            Deferred::SetNlink { ino, .. }
            | Deferred::SetParent { ino, .. }
            | Deferred::SetSize { ino, .. }
            | Deferred::RemoveXattr { ino, .. }
            | Deferred::Remap { ino, .. } => groups.entry(*ino).or_default().push(d.clone()),
            Deferred::Relink { ino, kind } => relinks.push((*ino, *kind)),
        }
    }
    let lost_found = if relinks.is_empty() {
        None
    } else {
        match lost_found(ctx, model, &alloc) {
            Ok(lf) => Some(lf),
            Err(_) => {
                relinks.clear();
                None
            }
        }
    };
    if let Some(lf) = lost_found {
        for &(ino, kind) in &relinks {
            if kind == Kind::Dir {
                groups
                    .entry(ino)
                    .or_default()
                    .push(Deferred::SetParent { ino, parent: lf });
            }
        }
    }
    let total = groups.len() as u64;
    for (n, (ino, ds)) in groups.into_iter().enumerate() {
        ctx.progress("repair", n as u64, total);
        // A failed group is left for the final check to report.
        let _ = apply_group(ctx, model, &alloc, ino, &ds);
    }
    if let Some(lf) = lost_found {
        let _ = link_lost(ctx, model, &alloc, lf, &relinks);
    }
    Ok(())
}

/// An allocator over the blocks no one owns.
fn free_blocks(model: &Model) -> BlockAlloc {
    let sb = &model.sb;
    let alloc = BlockAlloc::new(sb.first_free_block, sb.replica_block, 1);
    let mut b = sb.first_free_block;
    while b < sb.replica_block {
        if model.owner[b as usize] != 0 {
            b += 1;
            continue;
        }
        let s = b;
        while b < sb.replica_block && model.owner[b as usize] == 0 {
            b += 1;
        }
        alloc.free(s, b - s);
    }
    alloc
}

/// Append `entries` to inode `ino`'s log in `txn` (which may hold what they need: copies,
/// a new inode's slot), commit it and update the DRAM state.
fn append(
    ctx: &Ctx<'_>,
    model: &mut Model,
    alloc: &BlockAlloc,
    mut txn: Txn<'_>,
    ino: u64,
    entries: &[Entry],
) -> Result<()> {
    let info = model.infos.get_mut(&ino).ok_or(Error::NotFound)?;
    txn.append(ino, info.slot_off, &info.st, entries.to_vec())?;
    let mut done = txn.commit()?;
    ctx.mark_modified();
    // fsck keeps no GC bookkeeping (NO_OWNER pages are not tracked).
    let applied = done.apply(alloc, ino, &mut info.st);
    for p in applied.log_pages_added {
        model.owner[p as usize] = own(O_LOG, ino);
    }
    Ok(())
}

fn apply_group(
    ctx: &Ctx<'_>,
    model: &mut Model,
    alloc: &BlockAlloc,
    ino: u64,
    ds: &[Deferred],
) -> Result<()> {
    let now = now_ns();
    let bounds = model.bounds;
    let mut txn = Txn::repair(ctx.media, alloc, bounds);
    let mut entries = Vec::new();
    let mut copies: Vec<u64> = Vec::new();
    let (nlink, size, mtime) = {
        let st = &model.infos.get(&ino).ok_or(Error::NotFound)?.st;
        (st.attr.nlink, st.attr.size, st.attr.mtime_ns)
    };
    let mut size_after = size;
    let mut remapped = std::collections::HashSet::new();
    for d in ds {
        match d {
            Deferred::RemoveName { name, child, .. } => entries.push(Entry::DirRemove {
                ino: *child,
                name: name.clone().into(),
                mtime_ns: now,
            }),
            Deferred::SetNlink { nlink, .. } => entries.push(Entry::Link {
                nlink: *nlink,
                ctime_ns: now,
                parent: 0,
            }),
            Deferred::SetParent { parent, .. } => entries.push(Entry::Link {
                nlink,
                ctime_ns: now,
                parent: *parent,
            }),
            Deferred::RemoveXattr { name, .. } => entries.push(Entry::XattrRemove {
                name: name.clone(),
                ctime_ns: now,
            }),
            Deferred::SetSize { size, .. } => {
                let mut a: SetAttrEntry = bytemuck::Zeroable::zeroed();
                a.mask = attr_mask::SIZE;
                a.size = *size;
                size_after = *size;
                entries.push(Entry::SetAttr(a));
            }
            Deferred::Remap {
                pgoff,
                block,
                zero_from,
                ..
            } => {
                if !remapped.insert(*pgoff) {
                    continue;
                }
                let zero_from = ds
                    .iter()
                    .find_map(|x| match x {
                        Deferred::Remap {
                            pgoff: p,
                            zero_from: Some(z),
                            ..
                        } if p == pgoff => Some(*z),
                        _ => None,
                    })
                    .or(*zero_from);
                let new = match txn.copy_block(*block, zero_from) {
                    Ok(nb) => {
                        copies.push(nb);
                        nb
                    }
                    // No space: drop the mapping (the page reads as a hole).
                    Err(Error::NoSpace) => 0,
                    Err(e) => return Err(e),
                };
                entries.push(Entry::Write {
                    pgoff: *pgoff,
                    block: new,
                    num_pages: 1,
                    size: size_after,
                    mtime_ns: mtime,
                });
            }
            Deferred::Relink { .. } => {}
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    // On an error the transaction is dropped and gives the copies back.
    append(ctx, model, alloc, txn, ino, &entries)?;
    for b in copies {
        model.owner[b as usize] = own(O_DATA, ino);
    }
    Ok(())
}

/// Find `/lost+found`, or create it.
fn lost_found(ctx: &Ctx<'_>, model: &mut Model, alloc: &BlockAlloc) -> Result<u64> {
    let root = &model.infos.get(&ROOT_INO).ok_or(Error::NotFound)?.st;
    if let Some(e) = root.dir.get(LOST_FOUND) {
        if e.kind == Kind::Dir && model.infos.contains_key(&e.ino) {
            return Ok(e.ino);
        }
        return Err(Error::AlreadyExists);
    }
    let ino = *model.free_slots.first().ok_or(Error::NoInodes)?;
    let slot_off = novafs_engine::inode::slot_offset(&model.chunks, ino).ok_or(Error::NoInodes)?;
    let old: InodeSlot = ctx.media.read_pod(slot_off)?;
    let now = now_ns();
    let slot = InodeSlot::fresh(NewInode {
        kind: Kind::Dir,
        generation: old.generation.wrapping_add(1),
        mode: 0o700,
        uid: 0,
        gid: 0,
        parent: ROOT_INO,
        ctime_ns: now,
        rdev: 0,
    });
    // The slot is durable before the root's commit makes it reachable (that commit fences
    // first), as in create.
    let mut txn = Txn::repair(ctx.media, alloc, model.bounds);
    txn.init_slot(ino, slot_off, &slot)?;
    model.free_slots.remove(0);
    let add = Entry::DirAdd {
        ino,
        kind: Kind::Dir,
        name: LOST_FOUND.to_vec().into(),
        mtime_ns: now,
    };
    append(ctx, model, alloc, txn, ROOT_INO, std::slice::from_ref(&add))?;
    model.infos.insert(
        ino,
        Info {
            slot_off,
            kind: Kind::Dir,
            st: Box::new(InodeState::new(ino, &slot, Kind::Dir)),
            eof: None,
        },
    );
    Ok(ino)
}

/// Name each lost inode `#<ino>` in `/lost+found` (one commit).
fn link_lost(
    ctx: &Ctx<'_>,
    model: &mut Model,
    alloc: &BlockAlloc,
    lf: u64,
    relinks: &[(u64, Kind)],
) -> Result<()> {
    let now = now_ns();
    let taken = &model.infos.get(&lf).ok_or(Error::NotFound)?.st.dir;
    let mut entries = Vec::new();
    let mut names = std::collections::HashSet::new();
    for &(ino, kind) in relinks {
        let mut name = format!("#{ino}");
        let mut n = 1;
        while taken.contains_key(name.as_bytes()) || names.contains(&name) {
            name = format!("#{ino}.{n}");
            n += 1;
        }
        names.insert(name.clone());
        entries.push(Entry::DirAdd {
            ino,
            kind,
            name: name.into_bytes().into(),
            mtime_ns: now,
        });
    }
    let txn = Txn::repair(ctx.media, alloc, model.bounds);
    append(ctx, model, alloc, txn, lf, &entries)
}
