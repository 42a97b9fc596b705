//! Format, mount (clean fast path or full rebuild) and clean unmount.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::sync::Arc;

use crate::alloc::{BlockAlloc, InodeAlloc};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::inode::{self, InodeState};
use crate::layout::inode::{InodeSlot, NewInode};
use crate::layout::itable_map::{self, MapWord};
use crate::layout::saved;
use crate::layout::state::{MountState, CLEAN_MAGIC};
use crate::layout::superblock::{Superblock, FORMAT_VERSION, MAGIC};
use crate::layout::{
    checksum, now_ns, Kind, BLOCK, CHUNK_BLOCKS, INODES_PER_CHUNK, INODE_SIZE, MIN_IMAGE_BYTES,
    ROOT_INO,
};
use crate::media::{MapOptions, Media};

/// How to format an image.
#[derive(Clone, Debug)]
pub struct FormatOptions {
    /// Treat the file as emulated pmem even off tmpfs.
    pub force_emulated: bool,
    /// Root directory permission bits.
    pub root_mode: u32,
    /// Root owner.
    pub root_uid: u32,
    /// Root group.
    pub root_gid: u32,
    /// Format over an existing non-empty file (default false: such a file is refused with
    /// `AlreadyExists`, so that a typo cannot wipe an image or any other file).
    pub overwrite: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            force_emulated: false,
            root_mode: 0o755,
            root_uid: 0,
            root_gid: 0,
            overwrite: false,
        }
    }
}

/// How to mount an image.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Refuse all changes. An image that needs recovery cannot be mounted read-only.
    pub read_only: bool,
    /// Fail unless the kernel grants `MAP_SYNC`.
    pub require_dax: bool,
    /// Treat the file as emulated pmem even off tmpfs.
    pub force_emulated: bool,
    /// Pre-fault the whole mapping.
    pub populate: bool,
    /// Threads for the recovery scan after a crash (0 = one per core).
    pub recovery_threads: usize,
    /// Background writeback of mapped pages (started by `novafs::Fs::open`).
    pub writeback: crate::cache::WritebackConfig,
    /// Log garbage collection.
    pub gc: crate::gc::GcConfig,
}

/// What mount found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountReport {
    /// The last session unmounted cleanly and its saved state was used.
    pub clean: bool,
    /// Journal slots undone.
    pub journal_undone: usize,
    /// Inodes rebuilt by the recovery scan.
    pub inodes_scanned: u64,
    /// The primary superblock was repaired from the replica.
    pub superblock_repaired: bool,
    /// Write caches migrated (MAP_SYNC) or discarded (failure-atomic) by recovery.
    pub caches_recovered: usize,
    /// The image was of this older format version and was upgraded by this (read-write) mount.
    pub format_upgraded_from: Option<u32>,
}

/// One per core, asked once per process: `available_parallelism` reads the cgroup files on
/// every call (several system calls), which dominated a small image's mount (crash harness).
fn shards() -> usize {
    static SHARDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SHARDS.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

impl Engine {
    /// Format the file at `path` as a novafs image of `size_bytes` and mount it.
    pub fn format(path: &Path, size_bytes: u64, opts: &FormatOptions) -> Result<Arc<Engine>> {
        check_size(size_bytes)?;
        let media = Media::create(
            path,
            size_bytes,
            opts.overwrite,
            &MapOptions {
                force_emulated: opts.force_emulated,
                ..MapOptions::default()
            },
        )?;
        Engine::format_media(Arc::new(media), opts)
    }

    /// Format an already mapped region (also the traced backend).
    pub fn format_media(media: Arc<Media>, opts: &FormatOptions) -> Result<Arc<Engine>> {
        check_size(media.len())?;
        let blocks_total = media.len() / BLOCK;
        let now = now_ns();
        let uuid = random_uuid(now);
        let sb = Superblock::new(blocks_total, uuid, now);
        // Clear the metadata area (the file may hold an old image).
        media.zero_nt(0, sb.first_free_block * BLOCK)?;
        let chunk0 = sb.first_free_block;
        media.zero_nt(chunk0 * BLOCK, CHUNK_BLOCKS * BLOCK)?;
        let root = InodeSlot::fresh(NewInode {
            kind: Kind::Dir,
            generation: 1,
            mode: opts.root_mode,
            uid: opts.root_uid,
            gid: opts.root_gid,
            parent: ROOT_INO,
            ctime_ns: now,
            rdev: 0,
        });
        media.write_flush(
            chunk0 * BLOCK + ROOT_INO * INODE_SIZE,
            bytemuck::bytes_of(&root),
        )?;
        media.write_flush(
            sb.itable_map_start * BLOCK,
            &itable_map::encode(0, chunk0).to_le_bytes(),
        )?;
        media.zero_nt(sb.replica_block * BLOCK, BLOCK)?;
        media.write_flush(sb.replica_block * BLOCK, bytemuck::bytes_of(&sb))?;
        media.fence();
        // The primary superblock last: until it is durable the image is not novafs.
        media.write_flush(0, bytemuck::bytes_of(&sb))?;
        media.fence();
        let blocks = BlockAlloc::new(sb.first_free_block, sb.replica_block, shards());
        blocks.free(
            chunk0 + CHUNK_BLOCKS,
            sb.replica_block - chunk0 - CHUNK_BLOCKS,
        );
        let inos = InodeAlloc::new(ROOT_INO + 1..INODES_PER_CHUNK);
        let engine = Engine::new_internal(media, sb, blocks, inos, vec![chunk0], false);
        engine.inode(ROOT_INO)?;
        Ok(Arc::new(engine))
    }

    /// Mount the image at `path`.
    pub fn open(path: &Path, opts: &MountOptions) -> Result<(Arc<Engine>, MountReport)> {
        let media = Media::open(
            path,
            &MapOptions {
                require_dax: opts.require_dax,
                force_emulated: opts.force_emulated,
                populate: opts.populate,
            },
        )?;
        Engine::open_media(Arc::new(media), opts)
    }

    /// Read and validate the superblock (repairing the primary from the replica).
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
                    media.write_flush(0, bytemuck::bytes_of(&replica))?;
                    media.fence();
                }
                Ok((replica, true))
            }
        }
    }

    /// Mount an already mapped region.
    pub fn open_media(
        media: Arc<Media>,
        opts: &MountOptions,
    ) -> Result<(Arc<Engine>, MountReport)> {
        let (mut sb, repaired) = Engine::read_superblock(&media, !opts.read_only)?;
        let mut report = MountReport {
            superblock_repaired: repaired,
            ..MountReport::default()
        };
        let chunks = read_chunks(&media, &sb)?;
        if !opts.read_only && sb.version < FORMAT_VERSION {
            // Upgrade an older format before anything newer can be written to the image: seal
            // the inode-table map's words (each its own 8-byte store; a crash leaves an
            // older-version map that decodes the same), fence, then the primary superblock,
            // then the replica, each fenced. A torn primary is repaired from the (old) replica
            // at the next mount, which upgrades again (DESIGN.md §5.8).
            for (i, &b) in chunks.iter().enumerate() {
                let off = sb.itable_map_start * BLOCK + i as u64 * 8;
                if itable_map::needs_seal(i as u64, media.load_u64(off)?) {
                    media.store_u64(off, itable_map::encode(i as u64, b))?;
                    media.flush(off, 8)?;
                }
            }
            media.fence();
            let up = sb.upgraded();
            media.write_flush(0, bytemuck::bytes_of(&up))?;
            media.fence();
            media.write_flush(up.replica_block * BLOCK, bytemuck::bytes_of(&up))?;
            media.fence();
            report.format_upgraded_from = Some(sb.version);
            sb = up;
        }
        let state_off = sb.state_block * BLOCK;
        let ms: MountState = media.read_pod(state_off)?;
        let engine = match load_saved(&media, &sb, &ms)? {
            Some((blocks, inos)) => {
                report.clean = true;
                Engine::new_internal(media.clone(), sb, blocks, inos, chunks, opts.read_only)
            }
            None => {
                if opts.read_only {
                    return Err(Error::ReadOnly);
                }
                let engine = Engine::new_internal(
                    media.clone(),
                    sb,
                    BlockAlloc::new(sb.first_free_block, sb.replica_block, shards()),
                    InodeAlloc::new([]),
                    chunks,
                    false,
                );
                let chunk_list = engine.chunk_blocks();
                report.journal_undone = engine.journal.recover(&media, &chunk_list)?;
                report.inodes_scanned = engine.rebuild_with(opts.recovery_threads)?;
                report.caches_recovered = engine.recover_caches()?;
                if opts.gc.fast {
                    engine.gc_dead_prefixes()?;
                }
                engine
            }
        };
        if !opts.read_only {
            // Invalidate the saved state before any change: a later crash must not reuse it.
            media.commit_u64(state_off, 0)?;
        }
        engine.inode(ROOT_INO).map_err(|e| match e {
            Error::NotFound => Error::corrupt("root directory inode is free", "inode 1"),
            e => e,
        })?;
        engine.set_gc_config(&opts.gc);
        Ok((Arc::new(engine), report))
    }

    /// Rebuild allocators and inode states by walking the tree from the root. Returns the
    /// number of inodes scanned.
    pub fn rebuild(&self) -> Result<u64> {
        self.rebuild_with(0)
    }

    /// [`Engine::rebuild`] on `threads` threads (0 = one per core): a level-by-level walk of
    /// the tree; each level's inodes are loaded (their logs read and checked) in parallel.
    pub fn rebuild_with(&self, threads: usize) -> Result<u64> {
        let threads = if threads == 0 { shards() } else { threads };
        let sb = self.sb;
        let total = sb.blocks_total;
        let used = AtomicBits::new(total);
        for b in 0..sb.first_free_block {
            used.set(b);
        }
        used.set(sb.replica_block);
        let chunks = self.chunk_blocks();
        for &c in &chunks {
            for b in c..c + CHUNK_BLOCKS {
                if used.set(b) {
                    return Err(Error::corrupt(
                        "inode-table chunk overlaps",
                        format!("block {b}"),
                    ));
                }
            }
        }
        let max_ino = chunks.len() as u64 * INODES_PER_CHUNK;
        let seen = AtomicBits::new(max_ino);
        let refs: Vec<AtomicU32> = (0..max_ino).map(|_| AtomicU32::new(0)).collect();
        seen.set(ROOT_INO);
        let bounds = inode::Bounds::of(&sb);
        let scanned = AtomicU64::new(0);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let stored_nlink: Vec<AtomicU32> = (0..max_ino).map(|_| AtomicU32::new(0)).collect();
        let is_file = AtomicBits::new(max_ino);
        let mut frontier: Vec<(u64, Kind, u64)> = vec![(ROOT_INO, Kind::Dir, ROOT_INO)];
        while !frontier.is_empty() && failure.lock().is_none() {
            let next: Mutex<Vec<(u64, Kind, u64)>> = Mutex::new(Vec::new());
            let cursor = AtomicUsize::new(0);
            let work = |frontier: &[(u64, Kind, u64)]| -> Result<()> {
                let mut local_next = Vec::new();
                loop {
                    let start = cursor.fetch_add(64, Ordering::Relaxed);
                    if start >= frontier.len() || failure.lock().is_some() {
                        break;
                    }
                    for &item in &frontier[start..(start + 64).min(frontier.len())] {
                        let (nlink, file) = self.rebuild_one(
                            item,
                            bounds,
                            &used,
                            &seen,
                            &refs,
                            max_ino,
                            &mut local_next,
                        )?;
                        stored_nlink[item.0 as usize].store(nlink, Ordering::Relaxed);
                        if file {
                            is_file.set(item.0);
                        }
                        scanned.fetch_add(1, Ordering::Relaxed);
                    }
                }
                next.lock().extend(local_next);
                Ok(())
            };
            std::thread::scope(|s| {
                let hs: Vec<_> = (1..threads.min(frontier.len().div_ceil(64)).max(1))
                    .map(|_| s.spawn(|| work(&frontier)))
                    .collect();
                let mut results = vec![work(&frontier)];
                results.extend(hs.into_iter().map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::corrupt("recovery worker panicked", "rebuild"))
                    })
                }));
                for r in results {
                    if let Err(e) = r {
                        failure.lock().get_or_insert(e);
                    }
                }
            });
            frontier = next.into_inner();
        }
        if let Some(e) = failure.into_inner() {
            return Err(e);
        }
        // Link counts of non-directories against the names found.
        for ino in ROOT_INO + 1..max_ino {
            if is_file.get(ino) {
                let names = refs[ino as usize].load(Ordering::Relaxed);
                let stored = stored_nlink[ino as usize].load(Ordering::Relaxed);
                if stored != names {
                    return Err(Error::corrupt(
                        "link count",
                        format!("inode {ino}: {stored} stored, {names} names"),
                    ));
                }
            }
        }
        // Everything not reached is free.
        let mut b = sb.first_free_block;
        while b < sb.replica_block {
            if used.get(b) {
                b += 1;
                continue;
            }
            let start = b;
            while b < sb.replica_block && !used.get(b) {
                b += 1;
            }
            self.blocks.free(start, b - start);
        }
        // Every number above the root's not reached is free (a word at a time).
        let free: Vec<u64> = (0..max_ino.div_ceil(64))
            .map(|w| {
                let base = w * 64;
                let from = (ROOT_INO + 1).saturating_sub(base).min(64);
                let to = max_ino.saturating_sub(base).min(64);
                let in_range = if to > from {
                    (u64::MAX >> (64 - (to - from))) << from
                } else {
                    0
                };
                !seen.word(w as usize) & in_range
            })
            .collect();
        self.inos.add_free_words(&free);
        Ok(scanned.into_inner())
    }

    /// After the rebuild: migrate every MAP_SYNC write cache into its file, reset every
    /// failure-atomic one (its pages were left free). Idempotent.
    fn recover_caches(&self) -> Result<usize> {
        let with_cache: Vec<_> = self
            .cached_inodes()
            .into_iter()
            .filter(|i| i.state.read().cache_log.tail_off != 0)
            .collect();
        // First reset every failure-atomic cache: its pages were left free, and a migration
        // below may allocate them; the reset must be durable before that.
        let mut resets = 0;
        for i in &with_cache {
            let mut st = i.state.write();
            if st.cache_atomic {
                let tail = crate::log::LogWords::cache(i.slot_off).tail;
                self.media.store_u64(tail, 0)?;
                self.media.flush(tail, 8)?;
                st.cache.clear();
                st.cache_log = crate::inode::LogState {
                    next_seq: 1,
                    ..Default::default()
                };
                st.cache_since = None;
                resets += 1;
            }
        }
        if resets > 0 {
            self.media.fence();
        }
        for i in &with_cache {
            let mut st = i.state.write();
            if st.cache_log.tail_off != 0 {
                self.migrate_locked(i, &mut st)?;
            }
        }
        Ok(with_cache.len())
    }

    /// Load one reachable inode during rebuild: mark its blocks, queue its unseen children.
    #[allow(clippy::too_many_arguments)]
    /// Returns the stored link count and whether it is a non-directory.
    fn rebuild_one(
        &self,
        (ino, kind, parent): (u64, Kind, u64),
        bounds: inode::Bounds,
        used: &AtomicBits,
        seen: &AtomicBits,
        refs: &[AtomicU32],
        max_ino: u64,
        next: &mut Vec<(u64, Kind, u64)>,
    ) -> Result<(u32, bool)> {
        let off = self.slot_off(ino).ok_or_else(|| {
            Error::corrupt("inode number outside the table", format!("inode {ino}"))
        })?;
        let st: InodeState = inode::load(&self.media, off, ino, bounds).map_err(|e| match e {
            Error::NotFound => {
                Error::corrupt("directory entry to a free inode", format!("inode {ino}"))
            }
            e => e,
        })?;
        if st.attr.kind != kind {
            return Err(Error::corrupt(
                "directory entry kind differs from the inode's",
                format!("inode {ino} (named in directory {parent})"),
            ));
        }
        if kind == Kind::Dir && st.parent != parent {
            return Err(Error::corrupt(
                "directory parent",
                format!("inode {ino}: stored {}, named in {parent}", st.parent),
            ));
        }
        let mark = |b: u64, what: &str| -> Result<()> {
            if used.set(b) {
                return Err(Error::corrupt(
                    format!("{what} block used twice"),
                    format!("inode {ino} block {b}"),
                ));
            }
            Ok(())
        };
        for &p in &st.log.pages {
            mark(p, "log page")?;
        }
        for &b in st.map.values() {
            mark(b, "data")?;
        }
        let mut st = st;
        if st.cache_log.tail_off != 0 {
            if st.cache_atomic {
                // Failure-atomic: discard what was not synced (nothing is marked, so the cache
                // blocks and cache log pages come back free; the tail is reset after the walk).
                st.cache.clear();
            } else {
                // A crash between a migration's two commits leaves entries whose block the
                // file map already holds: those pages are migrated already.
                let map = &st.map;
                let pages = st.attr.size.div_ceil(BLOCK);
                // Entries the file map already holds were migrated; entries past the end of
                // file cannot be (a corrupt image): both are dropped, their blocks left free.
                st.cache
                    .retain(|pg, b| map.get(&pg) != Some(&b) && pg < pages);
                for &p in &st.cache_log.pages {
                    mark(p, "cache log page")?;
                }
                for b in st.cache.values() {
                    mark(b, "cache")?;
                }
            }
        }
        if st.attr.kind == Kind::Dir {
            for (name, ent) in &st.dir {
                let loc = || format!("inode {ino} entry {:?}", String::from_utf8_lossy(name));
                if ent.ino >= max_ino || ent.ino <= ROOT_INO {
                    return Err(Error::corrupt("directory entry inode number", loc()));
                }
                refs[ent.ino as usize].fetch_add(1, Ordering::Relaxed);
                let was_seen = seen.set(ent.ino);
                if was_seen && ent.kind == Kind::Dir {
                    return Err(Error::corrupt("directory reachable twice (cycle)", loc()));
                }
                if !was_seen {
                    next.push((ent.ino, ent.kind, ino));
                }
            }
        }
        let result = (st.attr.nlink, st.attr.kind != Kind::Dir);
        if st.attr.kind == Kind::Dir {
            self.dir_names.note_loaded(ino, &st)?;
        }
        self.cache_insert(ino, st)?;
        Ok(result)
    }

    /// Clean unmount: free orphans, save the allocator state, set the clean flag.
    pub fn unmount(&self) -> Result<()> {
        if !self.mounted.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.stop_writeback();
        if self.read_only {
            drop(self.gate.write()); // readers in flight finish first
            self.maps_revoke_all();
            self.media.release();
            return Ok(());
        }
        let _gate = self.gate.write(); // operations in flight finish first
        let saved = self.save_clean();
        self.maps_revoke_all(); // mappings never outlive the mount (§5.4.1)
                                // The lock goes with the unmount, not with the last handle: the image can be mounted
                                // again at once (handles and clones that outlive this fail with `Unmounted`).
        self.media.release();
        saved
    }

    /// Clean unmount's stores (the gate held exclusively, `mounted` cleared).
    fn save_clean(&self) -> Result<()> {
        self.free_orphans()?;
        self.migrate_all(true)?;
        let free = self.blocks.extents();
        let inos = self.inos.snapshot();
        let mut buf = Vec::new();
        buf.extend_from_slice(&(free.len() as u64).to_le_bytes());
        for e in &free {
            buf.extend_from_slice(&e.start.to_le_bytes());
            buf.extend_from_slice(&e.len.to_le_bytes());
        }
        let ranges = to_ranges(&inos);
        buf.extend_from_slice(&(ranges.len() as u64).to_le_bytes());
        for (s, l) in &ranges {
            buf.extend_from_slice(&s.to_le_bytes());
            buf.extend_from_slice(&l.to_le_bytes());
        }
        let need = (buf.len() as u64).div_ceil(BLOCK);
        let Some(home) = free.iter().find(|e| e.len >= need) else {
            // No room to save the state: the next mount rebuilds from the logs.
            self.media.sync_all()?;
            return Ok(());
        };
        let state_off = self.sb.state_block * BLOCK;
        self.media.write_nt(home.start * BLOCK, &buf)?;
        let mut ms: MountState = self.media.read_pod(state_off)?;
        ms.clean = 0;
        ms.saved_block = home.start;
        ms.saved_blocks = need;
        ms.saved_len = buf.len() as u64;
        ms.saved_csum = checksum(&buf);
        // Read from the media (untrusted): a counter, wrapping is harmless.
        ms.mount_count = ms.mount_count.wrapping_add(1);
        ms.reserved0 = 0;
        ms.reserved1 = [0; 12];
        ms.csum = ms.compute_csum();
        self.media
            .write_flush(state_off + 8, &bytemuck::bytes_of(&ms)[8..])?;
        self.media.fence();
        self.media.commit_u64(state_off, CLEAN_MAGIC)?;
        self.media.sync_all()
    }
}

fn to_ranges(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &i in sorted {
        match out.last_mut() {
            Some((s, l)) if *s + *l == i => *l += 1,
            _ => out.push((i, 1)),
        }
    }
    out
}

fn check_size(size: u64) -> Result<()> {
    if size < MIN_IMAGE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "image size {size} bytes is below the minimum of {MIN_IMAGE_BYTES}"
        )));
    }
    if !size.is_multiple_of(BLOCK) {
        return Err(Error::InvalidArgument(format!(
            "image size {size} is not a multiple of {BLOCK}"
        )));
    }
    Ok(())
}

/// The inode-table chunks listed in the map (a prefix of non-zero entries).
pub fn read_chunks(media: &Media, sb: &Superblock) -> Result<Vec<u64>> {
    let mut chunks = Vec::new();
    for i in 0..sb.max_chunks() {
        let word = media.load_u64(sb.itable_map_start * BLOCK + i * 8)?;
        let b = match itable_map::decode(sb.version, i, word) {
            Ok(MapWord::End) => break,
            Ok(MapWord::Chunk(b)) => b,
            Err(what) => return Err(Error::corrupt(what, format!("map entry {i}"))),
        };
        // Sealed or not, the word is untrusted: the chunk must lie inside the image.
        if !sb.chunk_in_range(b) {
            return Err(Error::corrupt(
                "inode-table chunk pointer",
                format!("map entry {i} -> block {b}"),
            ));
        }
        chunks.push(b);
    }
    if chunks.is_empty() {
        return Err(Error::corrupt("inode-table map is empty", "block 3"));
    }
    let mut sorted = chunks.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[1] - w[0] < CHUNK_BLOCKS) {
        return Err(Error::corrupt(
            "inode-table chunks overlap",
            format!("chunks at blocks {} and {}", w[0], w[1]),
        ));
    }
    Ok(chunks)
}

/// The saved allocator state, if the last unmount was clean and it validates.
fn load_saved(
    media: &Media,
    sb: &Superblock,
    ms: &MountState,
) -> Result<Option<(BlockAlloc, InodeAlloc)>> {
    if ms.decode() != Ok(true) {
        return Ok(None);
    }
    let Ok((off, len)) = saved::location(ms, sb) else {
        return Ok(None);
    };
    let mut buf = vec![0u8; len];
    media.read(off, &mut buf)?;
    let max_ino = read_chunks(media, sb)?.len() as u64 * INODES_PER_CHUNK;
    let Ok(state) = saved::decode(ms, &buf, sb, max_ino) else {
        return Ok(None);
    };
    let blocks = BlockAlloc::new(sb.first_free_block, sb.replica_block, shards());
    for &(start, len) in &state.free_blocks {
        blocks.free(start, len);
    }
    let ia = InodeAlloc::new(state.free_inos.iter().flat_map(|&(s, l)| s..s + l));
    Ok(Some((blocks, ia)))
}

/// A bitmap whose bits are set atomically (for the parallel rebuild).
struct AtomicBits {
    words: Vec<AtomicU64>,
}

impl AtomicBits {
    fn new(bits: u64) -> AtomicBits {
        AtomicBits {
            words: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Set bit `i`; returns whether it was already set.
    fn set(&self, i: u64) -> bool {
        let bit = 1u64 << (i % 64);
        self.words[(i / 64) as usize].fetch_or(bit, Ordering::AcqRel) & bit != 0
    }

    fn get(&self, i: u64) -> bool {
        self.words[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// Bits `64 * w ..` as one word.
    fn word(&self, w: usize) -> u64 {
        self.words[w].load(Ordering::Acquire)
    }
}

/// A random version-4 UUID from the kernel's random source (time and pid mixed in only if
/// `/dev/urandom` cannot be read, e.g. in a sandbox without it).
fn random_uuid(now: u64) -> [u8; 16] {
    use std::io::Read;
    let mut uuid = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut uuid));
    if read.is_err() {
        uuid[..8].copy_from_slice(&now.to_le_bytes());
        uuid[8..]
            .copy_from_slice(&(std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15).to_le_bytes());
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4
    uuid[8] = (uuid[8] & 0x3f) | 0x80; // RFC 4122 variant
    uuid
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `image_walk` fuzz target (fuzz/regressions/image_walk/): a map entry near
    /// `u64::MAX` overflowed `b + CHUNK_BLOCKS` (a panic with overflow checks, a pass without).
    #[test]
    fn chunk_pointer_near_u64_max_is_corrupt() {
        let media = Arc::new(Media::traced(MIN_IMAGE_BYTES));
        let engine = Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
        let sb = *engine.superblock();
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
        assert!(Engine::open_media(again, &MountOptions::default()).is_err());
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
        let (engine, report) = Engine::open_media(again.clone(), &MountOptions::default()).unwrap();
        assert!(report.clean);
        engine.unmount().unwrap();
        let ms: MountState = again.read_pod(state_off).unwrap();
        assert_eq!(ms.mount_count, 0);
        assert_eq!(ms.clean, CLEAN_MAGIC);
    }
}
