//! Format, the engine constructor a mount uses (`Engine::assemble`; the mount decision and recovery live in novafs-recovery), and clean unmount.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::atomic::Ordering;

use std::sync::Arc;

use crate::alloc::{BlockAlloc, InodeAlloc};
use crate::engine::{shard_of, Engine, ShardList, CACHE_SHARDS};
use crate::error::{Error, Result};
use crate::inode::Inode;
use crate::layout::inode::{InodeSlot, NewInode};
use crate::layout::itable_map::{self, MapWord};
use crate::layout::state::{MountState, CLEAN_MAGIC, ONE_FENCE_MAGIC};
use crate::layout::superblock::Superblock;
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
    /// How large the image may grow while this mount lasts ([`Engine::grow`]): the address
    /// space reserved for its mapping, in bytes; 0 (the default) is 16 times the image's size,
    /// at least 1 GiB more (`media::default_grow_limit`).
    pub grow_limit: u64,
    /// Threads for the recovery scan after a crash (0 = one per core).
    pub recovery_threads: usize,
    /// Background writeback of mapped pages (started by `novafs::Fs::open`).
    pub writeback: crate::cache::WritebackConfig,
    /// Log garbage collection.
    pub gc: crate::gc::GcConfig,
    /// Commit a single-inode append (a small `write`, an append, a `setattr`) with one fence
    /// instead of two. Recovery then finds a torn last commit by its checksums and cuts it
    /// off (DESIGN.md §5.1.1). `None` (the default) and `Some(true)`: on; in msync mode a
    /// write of whole pages then also commits with one fence (its data runs carry checksums,
    /// `Media::data_crcs`). `Some(false)`: every commit fences its entries before its tail.
    pub one_fence: Option<bool>,
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
    /// Torn last commits of a one-fence session that recovery cut off (each was a call that
    /// had not returned when the session stopped).
    pub torn_commits_cut: u64,
    /// The most threads that loaded one level of the tree in the recovery scan (helpers
    /// join a level only once it has taken the mounting thread a while; 0: no scan).
    pub recovery_threads_used: usize,
}

/// The image as a mount found it (clean) or recovery rebuilt it: what [`Engine::assemble`]
/// builds an engine from.
pub struct Recovered {
    /// The superblock.
    pub sb: Superblock,
    /// Inode-table chunk blocks (the map's prefix, `read_chunks`).
    pub chunks: Vec<u64>,
    /// The block allocator, with every free block freed into it.
    pub blocks: BlockAlloc,
    /// The inode allocator.
    pub inos: InodeAlloc,
    /// Inodes loaded by a rebuild (none after a clean mount: inodes load lazily), built and
    /// sorted for filing on the rebuild's threads.
    pub loaded: Loaded,
    /// Refuse all changes.
    pub read_only: bool,
}

pub use crate::sync::cores;

/// Inodes a rebuild loaded, made ready for [`Engine::assemble`] by the threads that loaded
/// them ([`Loaded::push`], while the state is in their cache): grouped by the engine's cache
/// shard with their numbers, every log page listed, the directories apart. Filing 100,000
/// inodes after the walk took 9-11 ms on one thread when assemble visited every state again.
#[derive(Default)]
pub struct Loaded {
    /// (inode number, inode), by cache shard (`CACHE_SHARDS` lists from the first push on).
    by_shard: Vec<ShardList>,
    /// The log pages of every loaded log and write-cache log, unsorted.
    log_pages: Vec<u64>,
    /// The loaded directories.
    dirs: Vec<Arc<Inode>>,
}

impl Loaded {
    /// Add a loaded inode (its state read once, here).
    pub fn push(&mut self, inode: Arc<Inode>) {
        {
            let st = inode.state.read();
            self.log_pages.extend_from_slice(&st.log.pages);
            self.log_pages.extend_from_slice(&st.cache().log.pages);
            if st.attr.kind == Kind::Dir {
                self.dirs.push(inode.clone());
            }
        }
        if self.by_shard.is_empty() {
            self.by_shard.resize_with(CACHE_SHARDS, Vec::new);
        }
        self.by_shard[shard_of(inode.ino)].push((inode.ino, inode));
    }

    /// Take in another thread's inodes.
    pub fn append(&mut self, mut other: Loaded) {
        if self.by_shard.is_empty() {
            self.by_shard = std::mem::take(&mut other.by_shard);
        }
        for (mine, theirs) in self.by_shard.iter_mut().zip(&mut other.by_shard) {
            mine.append(theirs);
        }
        self.log_pages.append(&mut other.log_pages);
        self.dirs.append(&mut other.dirs);
    }

    /// Inodes held.
    pub fn len(&self) -> usize {
        self.by_shard.iter().map(Vec::len).sum()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_shard.iter().all(Vec::is_empty)
    }
}

/// Below this many loaded inodes [`Engine::assemble`] files them on the mounting thread alone
/// (a thread costs tens of microseconds to start, filing one inode about 40 ns; the crash
/// harness mounts many small images). `tests/recovery_threads.rs` recovers 5,004 inodes.
const ASSEMBLE_PARALLEL_FROM: usize = 4_096;

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
        let blocks = BlockAlloc::new(sb.first_free_block, sb.replica_block, cores());
        blocks.free(
            chunk0 + CHUNK_BLOCKS,
            sb.replica_block - chunk0 - CHUNK_BLOCKS,
        );
        let inos = InodeAlloc::new(ROOT_INO + 1..INODES_PER_CHUNK);
        let engine = Engine::new_internal(media, sb, blocks, inos, vec![chunk0], false);
        engine.inode(ROOT_INO)?;
        // The session format starts commits as a mount's default would (DESIGN.md §5.1.1).
        engine.set_one_fence(true)?;
        Ok(Arc::new(engine))
    }

    /// The narrow constructor through which a mount (`novafs_recovery::open_media`) builds the
    /// engine: the image's superblock and inode table, both allocators as the clean-unmount
    /// state or the recovery scan left them, and the inode states the scan loaded (their
    /// directory names noted, so that lazy loads of other directories keep the one-name check).
    /// Then [`Engine::start_session`].
    pub fn assemble(media: Arc<Media>, r: Recovered) -> Result<Engine> {
        let engine = Engine::new_internal(media, r.sb, r.blocks, r.inos, r.chunks, r.read_only);
        let len = r.loaded.len();
        let Loaded {
            by_shard,
            mut log_pages,
            dirs,
        } = r.loaded;
        for inode in &dirs {
            engine
                .dir_names
                .note_loaded(inode.ino, &inode.state.read())?;
        }
        // Two jobs of about equal size on a large rebuild: the log pages (sorted: one shard
        // lock per run) with the odd cache shards, and the even cache shards.
        let (even, odd): (Vec<_>, Vec<_>) = by_shard
            .into_iter()
            .enumerate()
            .partition(|(k, _)| k % 2 == 0);
        let logs_and_odd = || {
            log_pages.sort_unstable();
            engine.blocks.mark_log(&log_pages);
            engine.cache_insert_shards(odd);
        };
        if len >= ASSEMBLE_PARALLEL_FROM && cores() > 1 {
            std::thread::scope(|s| {
                s.spawn(|| engine.cache_insert_shards(even));
                logs_and_odd();
            });
        } else {
            engine.cache_insert_shards(even);
            logs_and_odd();
        }
        Ok(engine)
    }

    /// The last step of a mount: invalidate the saved clean state before any change (a later
    /// crash must not reuse it), check that the root directory exists, and apply the GC
    /// configuration.
    /// `one_fence`: this session commits single-inode appends with one fence; the mount
    /// state records it (`ONE_FENCE_MAGIC`) before the first such commit.
    pub fn start_session(&self, gc: &crate::gc::GcConfig, one_fence: bool) -> Result<()> {
        if !self.read_only {
            self.set_one_fence(one_fence)?;
        }
        self.inode(ROOT_INO).map_err(|e| match e {
            Error::NotFound => Error::corrupt("root directory inode is free", "inode 1"),
            e => e,
        })?;
        self.set_gc_config(gc);
        Ok(())
    }

    /// After a rebuild ([`Engine::assemble`] with every reachable inode loaded): migrate every
    /// MAP_SYNC write cache into its file, reset every failure-atomic one (its pages were left
    /// free). `candidates`: the loaded inodes that may have a write cache (the rebuild lists
    /// them; each is checked again here). Idempotent. Returns the caches handled.
    pub fn recover_caches(&self, candidates: &[Arc<Inode>]) -> Result<usize> {
        let with_cache: Vec<_> = candidates
            .iter()
            .filter(|i| i.state.read().cache().log.tail_off != 0)
            .collect();
        // First reset every failure-atomic cache: its pages were left free, and a migration
        // below may allocate them; the reset must be durable before that.
        // One in-place transaction stores every reset tail word (one fence); the DRAM states
        // follow (the pages are free already, nothing to give back).
        let mut reset = crate::txn::Txn::in_place(&self.media, "cache-reset");
        for i in &with_cache {
            if i.state.read().cache().atomic {
                reset.store_word(crate::log::LogWords::cache(i.slot_off).tail, 0);
            }
        }
        reset.commit_in_place()?;
        for i in &with_cache {
            let mut st = i.state.write();
            if st.cache().atomic {
                st.drop_cache();
                // An inode without a write cache is never in the writeback set (`free_inode`
                // relies on it).
                self.writeback.dirty.lock().remove(&i.ino);
            }
        }
        for i in &with_cache {
            let mut st = i.state.write();
            if st.cache().log.tail_off != 0 {
                self.migrate_locked(i, &mut st)?;
            }
        }
        Ok(with_cache.len())
    }

    /// Store the mount state's word for a running session (0, or `ONE_FENCE_MAGIC` when it
    /// makes one-fence commits), then switch the media's commits to match.
    pub fn set_one_fence(&self, one_fence: bool) -> Result<()> {
        let word = if one_fence { ONE_FENCE_MAGIC } else { 0 };
        self.media
            .commit_u64(self.superblock().state_block * BLOCK, word)?;
        self.media.set_one_fence(one_fence);
        Ok(())
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
        // A clean mount reads no log: redo writes' in-place lines must be durable before the
        // image is declared clean (the fence below, before the clean word, makes them so).
        for i in self.cached_inodes() {
            crate::txn::flush_unflushed(&self.media, &mut i.state.write().unflushed)?;
        }
        // Slots freed since the last batch: their cleared kind words (§5.5).
        self.flush_freed_slots()?;
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
        let state_off = self.superblock().state_block * BLOCK;
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
