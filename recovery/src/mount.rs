//! Mounting: the decision between the clean fast path and recovery (DESIGN.md §5.8).
//!
//! | the image says | mount does |
//! |---|---|
//! | a valid primary superblock | use it |
//! | a bad primary, a valid replica at the file's last block | use the replica (and repair the primary, read-write) |
//! | an older format, read-write | upgrade it (seal the inode-table map, then both superblocks) |
//! | a clean mount state whose saved allocator state validates | the clean fast path: allocators from the saved state, inodes loaded lazily |
//! | anything else | recovery: journal undo ([`crate::undo`]), the parallel rebuild ([`crate::rebuild`]), write-cache migration, optional fast GC |
//!
//! Then the engine is built through its narrow constructor (`Engine::assemble`) and starts its
//! session (the saved state is invalidated before any change).

use std::path::Path;
use std::sync::Arc;

use novafs_engine::alloc::{BlockAlloc, InodeAlloc};
use novafs_engine::layout::itable_map;
use novafs_engine::layout::saved;
use novafs_engine::layout::state::MountState;
use novafs_engine::layout::superblock::{Superblock, FORMAT_VERSION, MAGIC};
use novafs_engine::layout::{BLOCK, INODES_PER_CHUNK, MIN_IMAGE_BYTES};
use novafs_engine::media::{MapOptions, Media};
use novafs_engine::mount::{cores, read_chunks, Recovered};
use novafs_engine::txn::Txn;
use novafs_engine::{Engine, Error, MountOptions, MountReport, Result};

/// Mount the image at `path`, recovering it if needed.
pub fn open(path: &Path, opts: &MountOptions) -> Result<(Arc<Engine>, MountReport)> {
    let media = Media::open(
        path,
        &MapOptions {
            require_dax: opts.require_dax,
            force_emulated: opts.force_emulated,
            populate: opts.populate,
            grow_limit: opts.grow_limit,
        },
    )?;
    open_media(Arc::new(media), opts)
}

/// Mount an already mapped region (also the traced backend), recovering it if needed.
pub fn open_media(media: Arc<Media>, opts: &MountOptions) -> Result<(Arc<Engine>, MountReport)> {
    let (mut sb, repaired) = read_superblock(&media, !opts.read_only)?;
    let mut report = MountReport {
        superblock_repaired: repaired,
        ..MountReport::default()
    };
    let chunks = read_chunks(&media, &sb)?;
    if !opts.read_only && sb.version < FORMAT_VERSION {
        upgrade(&media, &sb, &chunks)?;
        report.format_upgraded_from = Some(sb.version);
        sb = sb.upgraded();
    }
    let ms: MountState = media.read_pod(sb.state_block * BLOCK)?;
    let engine = match load_saved(&media, &sb, &ms, &chunks)? {
        Some((blocks, inos)) => {
            report.clean = true;
            let r = Recovered {
                sb,
                chunks,
                blocks,
                inos,
                loaded: Default::default(),
                read_only: opts.read_only,
            };
            Engine::assemble(media.clone(), r)?
        }
        None => {
            if opts.read_only {
                return Err(Error::ReadOnly);
            }
            report.journal_undone = crate::undo::undo_journal(&media, sb.journal_block, &chunks)?;
            let rebuilt = crate::rebuild::rebuild(
                &media,
                &sb,
                &chunks,
                opts.recovery_threads,
                ms.torn_commits(),
            )?;
            report.inodes_scanned = rebuilt.scanned;
            report.torn_commits_cut = rebuilt.torn_cut;
            report.recovery_threads_used = rebuilt.threads_used;
            let r = Recovered {
                sb,
                chunks,
                blocks: rebuilt.blocks,
                inos: rebuilt.inos,
                loaded: rebuilt.loaded,
                read_only: false,
            };
            let engine = Engine::assemble(media.clone(), r)?;
            report.caches_recovered = engine.recover_caches(&rebuilt.with_cache)?;
            if opts.gc.fast {
                engine.gc_dead_prefixes(&rebuilt.dead_prefix)?;
            }
            engine
        }
    };
    engine.start_session(&opts.gc, opts.one_fence.unwrap_or(true))?;
    Ok((Arc::new(engine), report))
}

/// Read and validate the superblock, falling back to the replica at the file's last block
/// (and repairing the primary from it when `repair`). Returns it and whether the replica was
/// used.
pub fn read_superblock(media: &Media, repair: bool) -> Result<(Superblock, bool)> {
    let len = media.len();
    // A file too short for an image is foreign unless it starts with the magic.
    if len < MIN_IMAGE_BYTES && (len < 8 || media.read_pod::<[u8; 8]>(0)? != MAGIC) {
        return Err(Error::NotNovafs);
    }
    if len < MIN_IMAGE_BYTES {
        return Err(Error::corrupt(
            "image too small (truncated image file?)",
            format!("{len} bytes"),
        ));
    }
    let primary: Superblock = media.read_pod(0)?;
    match primary.validate("primary superblock (block 0)", len) {
        Ok(()) => Ok((primary, false)),
        Err(Error::UnsupportedVersion { found, supported }) => {
            Err(Error::UnsupportedVersion { found, supported })
        }
        Err(first) => {
            let replica_block = len / BLOCK - 1;
            let replica: Superblock = media.read_pod(replica_block * BLOCK)?;
            if replica.validate("superblock replica", len).is_err()
                || replica.replica_block != replica_block
            {
                return Err(first);
            }
            if repair {
                let mut txn = Txn::in_place(media, "superblock-repair");
                txn.rewrite(0, bytemuck::bytes_of(&replica));
                txn.commit_in_place()?;
            }
            Ok((replica, true))
        }
    }
}

/// Upgrade an older format before anything newer can be written to the image: seal the
/// inode-table map's words (each its own 8-byte store; a crash leaves an older-version map that
/// decodes the same), fence, then the primary superblock, then the replica, each fenced. A
/// torn primary is repaired from the (old) replica at the next mount, which upgrades again
/// (DESIGN.md §5.8).
fn upgrade(media: &Media, sb: &Superblock, chunks: &[u64]) -> Result<()> {
    let mut seal = Txn::in_place(media, "upgrade");
    for (i, &b) in chunks.iter().enumerate() {
        let off = sb.itable_map_start * BLOCK + i as u64 * 8;
        if itable_map::needs_seal(i as u64, media.load_u64(off)?) {
            seal.store_word(off, itable_map::encode(i as u64, b));
        }
    }
    seal.commit_in_place()?;
    let up = sb.upgraded();
    for off in [0, up.replica_block * BLOCK] {
        let mut txn = Txn::in_place(media, "upgrade");
        txn.rewrite(off, bytemuck::bytes_of(&up));
        txn.commit_in_place()?;
    }
    Ok(())
}

/// The saved allocator state, if the last unmount was clean and it validates.
fn load_saved(
    media: &Media,
    sb: &Superblock,
    ms: &MountState,
    chunks: &[u64],
) -> Result<Option<(BlockAlloc, InodeAlloc)>> {
    if ms.decode() != Ok(true) {
        return Ok(None);
    }
    let Ok((off, len)) = saved::location(ms, sb) else {
        return Ok(None);
    };
    let mut buf = vec![0u8; len];
    media.read(off, &mut buf)?;
    let max_ino = chunks.len() as u64 * INODES_PER_CHUNK;
    let Ok(state) = saved::decode(ms, &buf, sb, max_ino) else {
        return Ok(None);
    };
    let blocks = BlockAlloc::new(sb.first_free_block, sb.replica_block, cores());
    for &(start, len) in &state.free_blocks {
        blocks.free(start, len);
    }
    let ia = InodeAlloc::new(state.free_inos.iter().flat_map(|&(s, l)| s..s + l));
    Ok(Some((blocks, ia)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use novafs_engine::layout::state::CLEAN_MAGIC;
    use novafs_engine::FormatOptions;

    /// Found by the `image_walk` fuzz target (fuzz/regressions/image_walk/): a map entry near
    /// `u64::MAX` overflowed `b + CHUNK_BLOCKS` (a panic with overflow checks, a pass without).
    #[test]
    fn chunk_pointer_near_u64_max_is_corrupt() {
        let media = Arc::new(Media::traced(MIN_IMAGE_BYTES));
        let engine = Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
        let sb = engine.superblock();
        engine.unmount().unwrap();
        assert_eq!(read_chunks(&media, &sb).unwrap().len(), 1);
        let entry1 = sb.itable_map_start * BLOCK + 8;
        // A sealed word (it passes its check) whose chunk would end past 2^48 blocks.
        let near_max = (1 << itable_map::BLOCK_BITS) - 3;
        media
            .store_u64(entry1, itable_map::encode(1, near_max))
            .unwrap();
        let err = read_chunks(&media, &sb).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { what, .. } if what == "inode-table chunk pointer"),
            "{err:?}"
        );
        let image = media.snapshot().unwrap();
        let again = Arc::new(Media::traced_from(image));
        assert!(open_media(again, &MountOptions::default()).is_err());
    }

    /// Found by the `image_walk` fuzz target (fuzz/regressions/image_walk/): a mount count of
    /// `u64::MAX` on the media overflowed at the next clean unmount (a panic there).
    #[test]
    fn mount_count_at_u64_max_wraps_at_unmount() {
        let media = Arc::new(Media::traced(MIN_IMAGE_BYTES));
        let engine = Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
        let state_off = engine.superblock().state_block * BLOCK;
        engine.unmount().unwrap();
        let mut ms: MountState = media.read_pod(state_off).unwrap();
        ms.mount_count = u64::MAX;
        ms.csum = ms.compute_csum();
        media.write(state_off, bytemuck::bytes_of(&ms)).unwrap();
        let image = media.snapshot().unwrap();
        let again = Arc::new(Media::traced_from(image));
        let (engine, report) = open_media(again.clone(), &MountOptions::default()).unwrap();
        assert!(report.clean);
        engine.unmount().unwrap();
        let ms: MountState = again.read_pod(state_off).unwrap();
        assert_eq!(ms.mount_count, 0);
        assert_eq!(ms.clean, CLEAN_MAGIC);
    }
}
