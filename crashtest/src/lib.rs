//! novafs-crashtest: fault-injection crash testing.
//!
//! A workload runs once on the traced backend (the crash-free reference run), which records
//! every store, flush and fence, and the file-system state after each operation. Then, at every
//! crash point (before every fence, and at the end of every operation) the images the
//! persistence model allows ([`images`]) are built, mounted (recovery runs), and checked:
//!
//! 1. recovery returns without panic or error;
//! 2. the tree (names, kinds, sizes, contents, link counts, modes, symlink targets) equals the
//!    reference state after the last completed operation, or, for a crash inside an
//!    operation, the state before or after it;
//! 3. the blocks in use equal those of the matching reference state (nothing leaked, nothing
//!    freed that is used);
//! 4. for a sample of images: fsck -n of the crash image before recovery finds nothing beyond
//!    "needs recovery", fsck finds nothing wrong after it, the file system stays usable (write,
//!    delete everything, remount: all space free again), and recovery survives a crash during
//!    itself (one level).
//!
//! The reference run is the engine itself; `tests/model.rs` checks that run's semantics against
//! an independent in-memory model.

pub mod images;
pub mod workload;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use novafs::{Engine, FileType, FormatOptions, Fs, MountOptions};
use novafs_engine::media::{Media, TraceEvent};

use images::{Pick, Replay};
pub use workload::{HandleOp, Op, Workload};

/// Harness settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Image size.
    pub image_bytes: u64,
    /// Enumerate a crash point exhaustively up to this many images; sample this many beyond.
    pub max_images: usize,
    /// Seed for sampling.
    pub seed: u64,
    /// Also run the eADR pass (prefixes of the global store order).
    pub eadr: bool,
    /// Check usability and crash-during-recovery on every n-th distinct image (0 = never).
    pub deep_every: usize,
    /// Log GC settings of the reference run. The default collects far earlier than a real
    /// mount does, so that short workloads cross both GC paths.
    pub gc: novafs::GcConfig,
    /// The reference run commits single-inode appends with one fence (the default of a
    /// mount, DESIGN.md §5.1.1), so crash images hold torn last commits for recovery to cut
    /// off; `false`: two fences per commit (`MountOptions::one_fence = Some(false)`).
    pub one_fence: bool,
    /// With `one_fence`, commits that write data blocks carry the runs' checksums and commit
    /// with one fence too (msync mode's default, `Media::set_data_crcs`).
    pub data_crcs: bool,
}

/// The harness's GC settings: fast GC on, compaction inline from 200 entries, no background.
pub fn harness_gc() -> novafs::GcConfig {
    novafs::GcConfig {
        fast: true,
        inline_min_entries: 200,
        background_min_entries: 0,
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            image_bytes: 4 << 20,
            max_images: 4096,
            seed: 1,
            eadr: true,
            deep_every: 97,
            gc: harness_gc(),
            one_fence: true,
            data_crcs: false,
        }
    }
}

/// One failed check.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Workload name.
    pub workload: String,
    /// Crash point index within the workload.
    pub crash_point: usize,
    /// Where: "inside op N (text)" or "after op N (text)".
    pub during: String,
    /// What went wrong.
    pub reason: String,
    /// The surviving pending units: offset and call site.
    pub persisted: Vec<String>,
    /// Which pick (for exact replay).
    pub pick: String,
    /// A command that replays the workload.
    pub replay: String,
}

/// Totals of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Workloads checked.
    pub workloads: usize,
    /// Crash points visited.
    pub crash_points: usize,
    /// Images checked (distinct per crash point).
    pub images: usize,
    /// Of which at exhaustively enumerated crash points.
    pub images_exhaustive: usize,
    /// Crash points enumerated exhaustively.
    pub points_exhaustive: usize,
    /// Crash points sampled.
    pub points_sampled: usize,
    /// Images built that were equal to one already checked (skipped).
    pub images_deduplicated: usize,
    /// eADR images checked.
    pub eadr_images: usize,
    /// Images that also got the deep checks.
    pub deep_checks: usize,
    /// Recoveries actually run (an image met before reuses its outcome).
    pub recoveries: usize,
    /// Of those, recoveries that cut off a torn one-fence commit (`MountReport::torn_commits_cut`).
    pub torn_cut: usize,
    /// Failures.
    pub failures: Vec<Failure>,
    /// Seconds spent.
    pub seconds: f64,
}

impl Report {
    /// Images per second.
    pub fn images_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            (self.images + self.eadr_images) as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Fold another report in.
    pub fn merge(&mut self, o: Report) {
        self.workloads += o.workloads;
        self.crash_points += o.crash_points;
        self.images += o.images;
        self.images_exhaustive += o.images_exhaustive;
        self.points_exhaustive += o.points_exhaustive;
        self.points_sampled += o.points_sampled;
        self.images_deduplicated += o.images_deduplicated;
        self.eadr_images += o.eadr_images;
        self.deep_checks += o.deep_checks;
        self.recoveries += o.recoveries;
        self.torn_cut += o.torn_cut;
        self.failures.extend(o.failures);
        self.seconds += o.seconds;
    }
}

thread_local! {
    /// Recoveries on this thread that cut off a torn commit (`check` runs on one thread).
    static TORN_CUTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The observable state of a mounted file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Path -> description (for files: without the contents).
    pub tree: BTreeMap<String, String>,
    /// File contents by path.
    pub contents: BTreeMap<String, Vec<u8>>,
    /// Inode number by path (files).
    pub inos: BTreeMap<String, u64>,
    /// Blocks in use by files and logs (excluding the fixed area and inode-table chunks).
    pub used_blocks: u64,
    /// Blocks in the image (it changes only by a grow, atomically).
    pub blocks_total: u64,
}

/// A 64-bit hash of an extended attribute's value (8 bytes a step).
fn value_hash(v: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ v.len() as u64;
    let mut words = v.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    for &b in words.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h ^= h >> 32;
    h.wrapping_mul(0xd6e8_feb8_6659_fd93)
}

/// Describe the tree and space use of `fs`.
///
/// The walk goes by inode: each directory's entries (`readdir`), then each entry's inode
/// (`getattr`, contents, link target, extended attributes). That is what resolving each path
/// from the root found (path resolution looks each name up in the same directory map the
/// listing comes from), without resolving every path again for every call.
pub fn state_of(fs: &Fs) -> Result<State, String> {
    let engine = fs.engine();
    let mut tree = BTreeMap::new();
    let mut contents = BTreeMap::new();
    let mut inos = BTreeMap::new();
    let root = fs.resolve("/").map_err(|e| format!("read_dir /: {e}"))?;
    let mut stack = vec![(String::new(), root)];
    let mut budget = 100_000usize;
    while let Some((dir, dino)) = stack.pop() {
        let d = if dir.is_empty() { "/" } else { &dir };
        let entries = engine
            .readdir(dino)
            .map_err(|e| format!("read_dir {d}: {e}"))?;
        for e in entries {
            budget = budget.checked_sub(1).ok_or("tree too large")?;
            let p = format!("{dir}/{}", String::from_utf8_lossy(&e.name));
            let kind = FileType::from(e.kind);
            let m = engine
                .getattr(e.ino)
                .map_err(|x| format!("stat {p}: {x}"))?;
            if FileType::from(m.kind) != kind {
                return Err(format!("{p}: entry kind differs from the inode's"));
            }
            let desc = match kind {
                FileType::File => {
                    let mut data = vec![0u8; m.size as usize];
                    let n = engine
                        .read(e.ino, 0, &mut data)
                        .map_err(|x| format!("read {p}: {x}"))?;
                    data.truncate(n);
                    let d = format!(
                        "file len={} nlink={} mode={:o} blocks={}",
                        data.len(),
                        m.nlink,
                        m.mode,
                        m.blocks
                    );
                    contents.insert(p.clone(), data);
                    inos.insert(p.clone(), e.ino);
                    d
                }
                FileType::Dir => {
                    stack.push((p.clone(), e.ino));
                    format!("dir nlink={} mode={:o}", m.nlink, m.mode)
                }
                FileType::Symlink => {
                    let t = engine
                        .readlink(e.ino)
                        .map_err(|x| format!("readlink {p}: {x}"))?;
                    format!(
                        "symlink -> {} nlink={}",
                        String::from_utf8_lossy(&t),
                        m.nlink
                    )
                }
                special => format!(
                    "{special:?} rdev={:#x} nlink={} mode={:o} len={}",
                    m.rdev, m.nlink, m.mode, m.size
                ),
            };
            // Extended attributes (not of symlinks: the calls follow them): names, lengths
            // and a hash of each value.
            let desc = if kind == FileType::Symlink {
                desc
            } else {
                let names = engine
                    .list_xattr(e.ino)
                    .map_err(|x| format!("listxattr {p}: {x}"))?;
                let mut d = desc;
                for n in names {
                    let v = engine
                        .get_xattr(e.ino, &n)
                        .map_err(|x| format!("getxattr {p}: {x}"))?;
                    d.push_str(&format!(
                        " xattr[{}]={}:{:016x}",
                        String::from_utf8_lossy(&n),
                        v.len(),
                        value_hash(&v)
                    ));
                }
                d
            };
            tree.insert(p, desc);
        }
    }
    let s = fs.statfs().map_err(|e| format!("statfs: {e}"))?;
    let sb = engine.superblock();
    let fixed = sb.first_free_block + 1 + engine.chunk_blocks().len() as u64 * 32;
    Ok(State {
        tree,
        contents,
        inos,
        used_blocks: s.blocks_total - s.blocks_free - fixed,
        blocks_total: s.blocks_total,
    })
}

/// A mapped store not yet persisted: after a crash each of its bytes may be old or new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpersisted {
    /// File path (at the time of the store).
    pub path: String,
    /// The file's inode (its other names see the same bytes).
    pub ino: u64,
    /// File offset.
    pub off: u64,
    /// The bytes before the store.
    pub old: Vec<u8>,
}

/// Whether `got` is `want`, up to unpersisted mapped stores: the same tree, blocks in use and
/// file contents, except that a byte of a file may hold its old value where a mapped store not
/// yet persisted to that inode covers it.
fn accepts(got: &State, want: &State, fuzz: &[Unpersisted]) -> bool {
    if got.tree != want.tree
        || got.used_blocks != want.used_blocks
        || got.blocks_total != want.blocks_total
    {
        return false;
    }
    for (path, w) in &want.contents {
        let Some(g) = got.contents.get(path) else {
            return false;
        };
        if g == w {
            continue;
        }
        if g.len() != w.len() {
            return false;
        }
        // The stores that may be missing from this file (looked up once, not per byte).
        let ino = want.inos.get(path);
        let mut mine: Vec<&Unpersisted> = fuzz.iter().filter(|f| Some(&f.ino) == ino).collect();
        if mine.is_empty() {
            return false;
        }
        // By offset, with the furthest end so far: the stores that may cover a word are found
        // from a cursor that only moves forward (the words are visited in order).
        mine.sort_by_key(|f| f.off);
        let reach: Vec<u64> = mine
            .iter()
            .scan(0u64, |r, f| {
                *r = (*r).max(f.off + f.old.len() as u64);
                Some(*r)
            })
            .collect();
        let mut first = 0;
        // A byte may differ only where one of those stores covers it and holds the old value
        // found. Eight bytes a step: a byte is unexplained when it differs from `w` and, for
        // every store covering part of the word, from `w` with the store's old bytes in place
        // (equal to `w` outside the store, so that explains nothing there).
        let word = |v: &[u8]| match <[u8; 8]>::try_from(v) {
            Ok(b) => u64::from_le_bytes(b),
            Err(_) => {
                // The file's last, partial word (zeros past the end on both sides).
                let mut b = [0u8; 8];
                b[..v.len()].copy_from_slice(v);
                u64::from_le_bytes(b)
            }
        };
        // High bit of each nonzero byte.
        let nonzero = |x: u64| {
            const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
            (((x & LOW7) + LOW7) | x) & !LOW7
        };
        // Equal 64-byte blocks are skipped whole, then equal words.
        for (blk, (gb, wb)) in g.chunks(64).zip(w.chunks(64)).enumerate() {
            if gb == wb {
                continue;
            }
            for (k, (gc, wc)) in gb.chunks(8).zip(wb.chunks(8)).enumerate() {
                let (gw, ww) = (word(gc), word(wc));
                if gw == ww {
                    continue;
                }
                let mut bad = nonzero(gw ^ ww);
                let at = (blk * 64 + k * 8) as u64;
                // Stores before `first` all end at or before this word (and every later one).
                while first < mine.len() && reach[first] <= at {
                    first += 1;
                }
                for f in mine[first..].iter().take_while(|f| f.off < at + 8) {
                    if bad == 0 {
                        break;
                    }
                    let end = f.off + f.old.len() as u64;
                    let alt = if f.off <= at && end >= at + 8 {
                        // The store covers the whole word.
                        let o = (at - f.off) as usize;
                        word(&f.old[o..o + 8])
                    } else {
                        let (lo, hi) = (f.off.max(at), end.min(at + 8));
                        if lo >= hi {
                            continue;
                        }
                        let mut alt = ww.to_le_bytes();
                        for j in lo..hi {
                            alt[(j - at) as usize] = f.old[(j - f.off) as usize];
                        }
                        u64::from_le_bytes(alt)
                    };
                    bad &= nonzero(gw ^ alt);
                }
                if bad != 0 {
                    return false;
                }
            }
        }
    }
    true
}

fn describe_diff(got: &State, want: &[&State]) -> String {
    let w = want[0];
    if got.blocks_total != w.blocks_total {
        return format!(
            "the image has {} blocks but the reference state has {}",
            got.blocks_total, w.blocks_total
        );
    }
    if got.tree == w.tree && got.contents == w.contents {
        return format!(
            "blocks in use {} but the reference state has {}",
            got.used_blocks, w.used_blocks
        );
    }
    for (k, v) in &got.tree {
        match w.tree.get(k) {
            None => return format!("{k} exists ({v}) but should not"),
            Some(x) if x != v => return format!("{k} is '{v}', expected '{x}'"),
            _ => {}
        }
    }
    for (k, v) in &w.tree {
        if !got.tree.contains_key(k) {
            return format!("{k} ({v}) is missing");
        }
    }
    for (k, v) in &w.contents {
        if let Some(g) = got.contents.get(k) {
            if let Some(j) = g.iter().zip(v).position(|(a, b)| a != b) {
                return format!(
                    "{k}: byte {j} is {:#04x}, expected {:#04x} (crc {:08x} vs {:08x})",
                    g[j],
                    v[j],
                    crc32fast::hash(g),
                    crc32fast::hash(v)
                );
            }
        }
    }
    "states differ".into()
}

/// Write the overlay's units into `buf`.
fn apply_overlay(buf: &mut [u8], overlay: &[(u64, [u8; 8])]) {
    for (u, v) in overlay {
        buf[*u as usize..*u as usize + 8].copy_from_slice(v);
    }
}

/// Undo every store of `events` in `buf`, and the overlay's units: `buf` equals `durable`
/// again where they touched it.
fn undo_stores(buf: &mut [u8], durable: &[u8], events: &[TraceEvent], overlay: &[(u64, [u8; 8])]) {
    for ev in events {
        if let TraceEvent::Store { off, data, .. } = ev {
            let r = *off as usize..*off as usize + data.len();
            buf[r.clone()].copy_from_slice(&durable[r]);
        }
    }
    for (u, _) in overlay {
        let r = *u as usize..*u as usize + 8;
        buf[r.clone()].copy_from_slice(&durable[r]);
    }
}

/// Run `f` on a traced region over `buf` (trace on); returns the buffer, the stores `f`
/// made, and its result.
fn traced<T>(
    buf: Vec<u8>,
    f: impl FnOnce(&Arc<Media>) -> T,
) -> (Option<Vec<u8>>, Vec<TraceEvent>, T) {
    let media = Arc::new(Media::traced_from(buf));
    media.with_trace(|t| t.enabled = true);
    let r = f(&media);
    let events = media
        .with_trace(|t| {
            t.enabled = false;
            t.take()
        })
        .unwrap_or_default();
    let buf = Arc::try_unwrap(media).ok().and_then(Media::into_image);
    (buf, events, r)
}

/// Recover `durable + overlay` in the reusable buffer `work` (which equals `durable` on entry
/// and on return), describe the result, and with `deep` also run fsck -n of the crash image,
/// the usability check, fsck of the recovered image and the crash-during-recovery check.
/// Every step runs on `work` itself (its stores are undone from the trace after it); only
/// the crash-during-recovery check needs a second buffer (`spare`, which like `work` equals
/// `durable` on entry and on return when it is `Some`; created on first use).
fn recover_in_place(
    work: &mut Option<Vec<u8>>,
    spare: &mut Option<Vec<u8>>,
    durable: &[u8],
    overlay: &[(u64, [u8; 8])],
    deep: bool,
    seed: u64,
) -> Result<State, String> {
    let mut buf = work.take().unwrap_or_else(|| durable.to_vec());
    apply_overlay(&mut buf, overlay);
    // fsck -n of the crash image as the crash left it reports nothing beyond "needs
    // recovery" (an active journal slot is not an error): every crash state is one recovery
    // handles, and fsck sees it as recovery will leave it. (Reported after recovery's own
    // verdict, as before; fsck -n must not write, which is checked too.)
    let mut fsck_before: Result<(), String> = Ok(());
    if deep {
        let (b, events, r) = traced(buf, |media| {
            checked(|| fsck_finds_nothing(media.clone(), "the crash image (before recovery)"))
        });
        buf = match b {
            Some(b) => b,
            None => {
                let mut b = durable.to_vec();
                apply_overlay(&mut b, overlay);
                b
            }
        };
        if events.iter().any(|e| matches!(e, TraceEvent::Store { .. })) {
            undo_stores(&mut buf, durable, &events, &[]);
            apply_overlay(&mut buf, overlay);
            fsck_before = fsck_before.and(Err("fsck -n wrote to the crash image".into()));
        }
        fsck_before = r.and(fsck_before);
    }
    let mut recovery_events: Vec<TraceEvent> = Vec::new();
    let (b, events, result) = traced(buf, |media| {
        checked(|| {
            let (engine, report) =
                novafs_recovery::open_media(media.clone(), &MountOptions::default())
                    .map_err(|e| format!("recovery failed: {e}"))?;
            if report.torn_commits_cut > 0 {
                TORN_CUTS.with(|c| c.set(c.get() + 1));
            }
            let fs = Fs::from_engine(engine, report);
            let st = state_of(&fs)?;
            if deep {
                recovery_events = media.with_trace(|t| t.events.clone()).unwrap_or_default();
                fsck_before.clone()?;
                // fsck finds nothing wrong with what recovery left.
                fs.crash();
                fsck_finds_nothing(media.clone(), "the recovered image")?;
                let (engine, r) =
                    novafs_recovery::open_media(media.clone(), &MountOptions::default())
                        .map_err(|e| format!("mount after fsck failed: {e}"))?;
                usable(Fs::from_engine(engine, r), media.clone())?;
            } else {
                fs.crash();
            }
            Ok(st)
        })
    });
    // Take the buffer back and undo every store recovery (and the checks) made.
    let mut buf = b.unwrap_or_else(|| durable.to_vec());
    undo_stores(&mut buf, durable, &events, overlay);
    let result = match result {
        Ok(st) if deep => {
            // Crash recovery itself, on the crash image rebuilt in `buf` (handed to the
            // replay and taken back), with `spare` as the replay's working copy.
            apply_overlay(&mut buf, overlay);
            let mut inner = Some(spare.take().unwrap_or_else(|| durable.to_vec()));
            if let Some(i) = inner.as_mut() {
                apply_overlay(i, overlay);
            }
            let mut replay = Replay::new(buf);
            let r = recovery_survives_crash(&mut replay, &mut inner, &recovery_events, &st, seed);
            // Both buffers differ from `durable` only where recovery stored (the replay made
            // some of those durable) and in the overlay.
            buf = std::mem::take(&mut replay.durable);
            undo_stores(&mut buf, durable, &recovery_events, overlay);
            if let Some(i) = inner.as_mut() {
                undo_stores(i, durable, &recovery_events, overlay);
            }
            *spare = inner;
            r.map(|_| st)
        }
        r => r,
    };
    *work = Some(buf);
    result
}

/// fsck -n of `media` finds no error.
fn fsck_finds_nothing(media: Arc<Media>, what: &str) -> Result<(), String> {
    let report = novafs_recovery::fsck::check_media(media, &Default::default())
        .map_err(|e| format!("fsck -n of {what} failed: {e}"))?;
    if report.errors_found > 0 {
        return Err(format!(
            "fsck -n of {what} found {} problem(s): {:?}",
            report.errors_found,
            report.problems.first()
        ));
    }
    Ok(())
}

/// Mount an image (recovery runs). Panics become errors.
fn recover(img: Vec<u8>, trace: bool) -> Result<(Fs, Option<Vec<TraceEvent>>), String> {
    let media = Arc::new(Media::traced_from(img));
    if trace {
        media.with_trace(|t| t.enabled = true);
    }
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
        novafs_recovery::open_media(media.clone(), &MountOptions::default())
    }));
    match r {
        Ok(Ok((engine, report))) => {
            let events = if trace {
                media.with_trace(|t| {
                    t.enabled = false;
                    t.take()
                })
            } else {
                None
            };
            Ok((Fs::from_engine(engine, report), events))
        }
        Ok(Err(e)) => Err(format!("recovery failed: {e}")),
        Err(p) => Err(format!("recovery panicked: {}", panic_text(&p))),
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "?".into())
}

fn checked<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(format!("panicked: {}", panic_text(&p))),
    }
}

/// The file system must stay usable: write, delete everything, remount, all space back.
fn usable(fs: Fs, media: Arc<Media>) -> Result<(), String> {
    let e = |what: &str, err: novafs::Error| format!("after recovery, {what} failed: {err}");
    fs.create_dir("/__probe").map_err(|x| e("mkdir", x))?;
    fs.write("/__probe/f", &[0x5a; 9000])
        .map_err(|x| e("write", x))?;
    fs.rename("/__probe/f", "/__probe/g")
        .map_err(|x| e("rename", x))?;
    // Delete everything.
    fn rm(fs: &Fs, dir: &str) -> Result<(), novafs::Error> {
        for ent in fs.read_dir(if dir.is_empty() { "/" } else { dir })? {
            let ent = ent?;
            let p = format!("{dir}/{}", ent.name_lossy());
            if ent.file_type()? == FileType::Dir {
                rm(fs, &p)?;
                fs.remove_dir(&p)?;
            } else {
                fs.remove_file(&p)?;
            }
        }
        Ok(())
    }
    rm(&fs, "").map_err(|x| e("delete everything", x))?;
    let engine = fs.engine().clone();
    drop(fs);
    engine.unmount().map_err(|x| e("unmount", x.into()))?;
    drop(engine);
    let (engine, _) = novafs_recovery::open_media(media, &MountOptions::default())
        .map_err(|x| e("remount", x.into()))?;
    let fs = Fs::from_engine(engine, Default::default());
    let st = state_of(&fs)?;
    if !st.tree.is_empty() {
        return Err("after deleting everything and remounting, files remain".into());
    }
    let root_log = fs
        .engine()
        .inode_layout(novafs::ROOT_INO)
        .map_err(|x| e("root", x.into()))?
        .log_pages
        .len() as u64;
    if st.used_blocks != root_log {
        return Err(format!(
            "after deleting everything, {} blocks are still in use (the root log holds {root_log})",
            st.used_blocks
        ));
    }
    Ok(())
}

/// Crash recovery itself at each of its fences (a few images each) and recover again: the
/// result must equal the first recovery's. `replay` starts at the crash image; `work` equals
/// its durable image on entry (and is kept equal to it).
fn recovery_survives_crash(
    replay: &mut Replay,
    work: &mut Option<Vec<u8>>,
    events: &[TraceEvent],
    want: &State,
    seed: u64,
) -> Result<usize, String> {
    let mut checked_n = 0;
    let mut overlay = Vec::new();
    let mut unused = None;
    for (i, ev) in events.iter().enumerate() {
        if matches!(ev, TraceEvent::Fence { .. }) {
            let c = replay.choices();
            if !c.is_empty() {
                match work.as_mut() {
                    Some(w) => replay.sync_copy(w),
                    None => drop(replay.drain_durable_units()),
                }
                for pick in c.sample(4, seed ^ i as u64) {
                    c.overlay_into(&replay.durable, &pick, &mut overlay);
                    let st =
                        recover_in_place(work, &mut unused, &replay.durable, &overlay, false, seed)
                            .map_err(|e| format!("second recovery: {e}"))?;
                    if &st != want {
                        return Err(format!(
                            "a crash during recovery changed the outcome: {}",
                            describe_diff(&st, &[want])
                        ));
                    }
                    checked_n += 1;
                }
            }
        }
        replay.step(i, ev);
    }
    Ok(checked_n)
}

#[derive(Default)]
struct Outcomes {
    states: Vec<State>,
    by_hash: HashMap<u64, Vec<usize>>,
}

impl Outcomes {
    fn intern(&mut self, s: State) -> usize {
        let mut h = crc32fast::Hasher::new();
        for (k, v) in &s.tree {
            h.update(k.as_bytes());
            h.update(&[0]);
            h.update(v.as_bytes());
            h.update(&[0]);
        }
        let mut c = crc32fast::Hasher::new_with_initial(0x9e37_79b9);
        for (k, v) in &s.contents {
            c.update(k.as_bytes());
            c.update(&(v.len() as u64).to_le_bytes());
            c.update(v);
        }
        for (k, v) in &s.inos {
            c.update(k.as_bytes());
            c.update(&v.to_le_bytes());
        }
        let key = (h.finalize() as u64) << 32 ^ c.finalize() as u64 ^ s.used_blocks;
        let same = self.by_hash.entry(key).or_default();
        if let Some(&i) = same.iter().find(|&&i| self.states[i] == s) {
            return i;
        }
        same.push(self.states.len());
        self.states.push(s);
        self.states.len() - 1
    }
}

#[derive(Clone, Copy, Debug)]
enum Ctx {
    Setup,
    Inside(usize),
    After(usize),
}

/// Check one workload; returns its report.
pub fn check(w: &Workload, cfg: &Config) -> Report {
    let start = Instant::now();
    let cuts_before = TORN_CUTS.with(|c| c.get());
    let mut report = Report {
        workloads: 1,
        ..Report::default()
    };
    let fail = |report: &mut Report, point: usize, during: String, reason: String| {
        report.failures.push(Failure {
            workload: w.name.clone(),
            crash_point: point,
            during,
            reason,
            persisted: vec![],
            pick: String::new(),
            replay: String::new(),
        });
    };
    // 1. The reference run.
    let Reference {
        events,
        states,
        unpersisted,
    } = match reference_run(w, cfg) {
        Ok(v) => v,
        Err(e) => {
            fail(&mut report, 0, "reference run".into(), e);
            report.seconds = start.elapsed().as_secs_f64();
            return report;
        }
    };
    // 2. Walk the trace.
    let mut replay = Replay::new(vec![0; cfg.image_bytes as usize]);
    let mut ctx = Ctx::Setup;
    let mut point = 0usize;
    // Images recovered so far (durable generation, overlay key) -> the outcome they gave:
    // an image met again at a later crash point reuses it.
    let mut seen: HashMap<(u64, u128), usize> = HashMap::new();
    // The distinct states recovery produced; each is compared with a crash point's allowed
    // states once, however many images recover to it.
    let mut outcomes = Outcomes::default();
    // Bumped whenever a unit became durable: images are keyed by (generation, overlay).
    let mut durable_gen = 0u64;
    let mut durable_len = cfg.image_bytes as usize;
    let mut distinct = 0usize;
    // eADR: the image (all stores so far) and a working copy recovered in place.
    let mut eadr_img: Option<Vec<u8>> = None;
    let mut eadr_work: Option<Vec<u8>> = None;
    let mut work: Option<Vec<u8>> = None;
    // The deep checks' second buffer (kept equal to the durable image, like `work`).
    let mut spare: Option<Vec<u8>> = None;
    // The states at each GC start inside an operation: a crash after the operation's commit
    // may leave its GC undone (more log pages in use).
    let gc_mid = match gc_states(&events, cfg.image_bytes) {
        Ok(v) => v,
        Err(e) => {
            fail(&mut report, 0, "GC states".into(), e);
            report.seconds = start.elapsed().as_secs_f64();
            return report;
        }
    };
    let no_gc: Vec<State> = Vec::new();
    let describe = |ctx: Ctx| match ctx {
        Ctx::Inside(i) => format!("inside op {i} ({})", w.ops[i]),
        Ctx::After(i) => format!("after op {i} ({})", w.ops[i]),
        Ctx::Setup => "setup".into(),
    };
    for (idx, ev) in events.iter().enumerate() {
        let crash_here = match ev {
            TraceEvent::Fence { .. } => !matches!(ctx, Ctx::Setup),
            TraceEvent::Mark(m) => m.starts_with("end "),
            _ => false,
        };
        if let TraceEvent::Mark(m) = ev {
            if let Some(i) = m.strip_prefix("end ") {
                ctx = Ctx::After(i.parse().unwrap_or(0));
            }
        }
        let gc_here = match ctx {
            Ctx::Inside(i) => gc_mid.get(&i).unwrap_or(&no_gc),
            _ => &no_gc,
        };
        if crash_here {
            let (mut allowed, fuzz) = allowed_at(ctx, &states, &unpersisted);
            allowed.extend(gc_here.iter());
            let c = replay.choices();
            let total = c.total();
            let (picks, exhaustive) = if total <= cfg.max_images as u128 {
                (c.all(), true)
            } else {
                (
                    c.sample(cfg.max_images, cfg.seed ^ (idx as u64) << 8),
                    false,
                )
            };
            report.crash_points += 1;
            if exhaustive {
                report.points_exhaustive += 1;
            } else {
                report.points_sampled += 1;
            }
            // Keep the working copies equal to the durable image (units made durable, a grown
            // length), and key later images by a new generation if it changed.
            let newly = replay.drain_durable_units();
            if !newly.is_empty() || replay.durable.len() != durable_len {
                durable_gen += 1;
                durable_len = replay.durable.len();
            }
            for w in [work.as_mut(), spare.as_mut()].into_iter().flatten() {
                if w.len() < durable_len {
                    w.resize(durable_len, 0);
                }
                for &u in &newly {
                    let r = u as usize..u as usize + 8;
                    w[r.clone()].copy_from_slice(&replay.durable[r]);
                }
            }
            let mut local: HashSet<u128> = HashSet::new();
            // Verdict per outcome at this crash point (the allowed states are the point's).
            let mut verdicts: HashMap<usize, Result<(), String>> = HashMap::new();
            let mut overlay = Vec::new();
            let prepared = c.prepare(&replay.durable);
            for pick in picks {
                let key = prepared.image(&pick, &mut overlay);
                if !local.insert(key) {
                    report.images_deduplicated += 1;
                    continue;
                }
                report.images += 1;
                if exhaustive {
                    report.images_exhaustive += 1;
                }
                let full_key = (durable_gen, key);
                let got = if let Some(&i) = seen.get(&full_key) {
                    Ok(i)
                } else {
                    distinct += 1;
                    report.recoveries += 1;
                    let deep = cfg.deep_every > 0 && distinct % cfg.deep_every == 1;
                    if deep {
                        report.deep_checks += 1;
                    }
                    let r = recover_in_place(
                        &mut work,
                        &mut spare,
                        &replay.durable,
                        &overlay,
                        deep,
                        cfg.seed,
                    )
                    .map(|s| outcomes.intern(s));
                    if let Ok(i) = r {
                        seen.insert(full_key, i);
                    }
                    r
                };
                let verdict = match got {
                    Err(e) => Err(e),
                    Ok(i) => verdicts
                        .entry(i)
                        .or_insert_with(|| {
                            let s = &outcomes.states[i];
                            if allowed.iter().any(|a| accepts(s, a, &fuzz)) {
                                Ok(())
                            } else {
                                Err(describe_diff(s, &allowed))
                            }
                        })
                        .clone(),
                };
                if let Err(reason) = verdict {
                    let (_, applied) = c.overlay(&replay.durable, &pick);
                    let persisted = applied
                        .iter()
                        .map(|u| format!("+{} (unit at {}) from {}", u.event, u.unit, u.site))
                        .collect();
                    report.failures.push(Failure {
                        workload: w.name.clone(),
                        crash_point: point,
                        during: describe(ctx),
                        reason,
                        persisted,
                        pick: pick_text(&pick),
                        replay: String::new(),
                    });
                    break; // one failure per crash point is enough
                }
            }
            point += 1;
        }
        if let TraceEvent::Mark(m) = ev {
            if let Some(i) = m.strip_prefix("begin ") {
                ctx = Ctx::Inside(i.parse().unwrap_or(0));
            }
        }
        replay.step(idx, ev);
        if let TraceEvent::Grow { len, .. } = ev {
            for img in [eadr_img.as_mut(), eadr_work.as_mut()]
                .into_iter()
                .flatten()
            {
                img.resize(img.len().max(*len as usize), 0);
            }
        }
        // eADR: every prefix of the store order is a crash state.
        if cfg.eadr && !matches!(ctx, Ctx::Setup) {
            if let TraceEvent::Store { off, data, .. } = ev {
                let img = eadr_img.get_or_insert_with(|| replay.current());
                let r = *off as usize..*off as usize + data.len();
                img[r.clone()].copy_from_slice(data);
                if let Some(w) = eadr_work.as_mut() {
                    w[r].copy_from_slice(data);
                }
                let (mut allowed, fuzz) = allowed_at(ctx, &states, &unpersisted);
                allowed.extend(gc_here.iter());
                report.eadr_images += 1;
                report.recoveries += 1;
                // Recovered in a working copy of the image (kept equal to it), not a clone.
                let r = recover_in_place(&mut eadr_work, &mut None, img, &[], false, cfg.seed);
                let verdict = match r {
                    Err(e) => Err(e),
                    Ok(s) if allowed.iter().any(|a| accepts(&s, a, &fuzz)) => Ok(()),
                    Ok(s) => Err(describe_diff(&s, &allowed)),
                };
                if let Err(reason) = verdict {
                    fail(
                        &mut report,
                        point,
                        format!("eADR, {}", describe(ctx)),
                        reason,
                    );
                }
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.torn_cut = TORN_CUTS.with(|c| c.get()) - cuts_before;
    report
}

/// For each operation that runs log GC: the state recovered from the complete image at each GC
/// start (the operation committed, its GC not begun).
fn gc_states(
    events: &[TraceEvent],
    image_bytes: u64,
) -> Result<HashMap<usize, Vec<State>>, String> {
    let mut out: HashMap<usize, Vec<State>> = HashMap::new();
    if !events
        .iter()
        .any(|e| matches!(e, TraceEvent::Mark(m) if m.starts_with("gc-")))
    {
        return Ok(out);
    }
    let mut replay = Replay::new(vec![0; image_bytes as usize]);
    let mut op: Option<usize> = None;
    for (idx, ev) in events.iter().enumerate() {
        if let TraceEvent::Mark(m) = ev {
            if let Some(i) = m.strip_prefix("begin ") {
                op = i.parse().ok();
            } else if m.starts_with("end ") {
                op = None;
            } else if let (true, Some(i)) = (m.starts_with("gc-"), op) {
                let img = replay.current();
                let st = checked(|| {
                    let (fs, _) = recover(img, false)?;
                    let st = state_of(&fs);
                    fs.crash();
                    st
                })
                .map_err(|e| format!("recovering the image at {m} in op {i}: {e}"))?;
                out.entry(i).or_default().push(st);
            }
        }
        replay.step(idx, ev);
    }
    Ok(out)
}

/// The states a crash in `ctx` may leave, and the mapped stores it may lose.
fn allowed_at<'a>(
    ctx: Ctx,
    states: &'a [State],
    unpersisted: &[Vec<Unpersisted>],
) -> (Vec<&'a State>, Vec<Unpersisted>) {
    match ctx {
        Ctx::Inside(i) => {
            let mut f = unpersisted[i].clone();
            f.extend(unpersisted[i + 1].iter().cloned());
            (vec![&states[i], &states[i + 1]], f)
        }
        Ctx::After(i) => (vec![&states[i + 1]], unpersisted[i + 1].clone()),
        Ctx::Setup => (vec![], vec![]),
    }
}

fn pick_text(p: &Pick) -> String {
    let pre: Vec<String> = p.prefixes.iter().map(|x| x.to_string()).collect();
    let nt: String = p.nt.iter().map(|&b| if b { '1' } else { '0' }).collect();
    format!("prefixes [{}] nt [{}]", pre.join(","), nt)
}

/// What the crash-free run recorded.
pub struct Reference {
    /// The persistence trace.
    pub events: Vec<TraceEvent>,
    /// The state after the setup (index 0) and after each operation.
    pub states: Vec<State>,
    /// The mapped stores not yet persisted at each of those points.
    pub unpersisted: Vec<Vec<Unpersisted>>,
}

/// The state recovery makes of the complete current image (all stores durable), which must
/// equal the live tree: it is the reference for crash images (write caches come back migrated).
fn recovered_state(media: &Media, live: &State, atomic: &[Unpersisted]) -> Result<State, String> {
    let img = media.snapshot().ok_or("not a traced region")?;
    let (fs, _) = recover(img, false)?;
    let st = state_of(&fs)?;
    fs.crash();
    // Recovery discards failure-atomic stores not yet synced: only those bytes may differ.
    let live_as_used = State {
        used_blocks: st.used_blocks,
        ..live.clone()
    };
    if !accepts(&st, &live_as_used, atomic) {
        return Err(format!(
            "recovering the complete image does not give the live state: {}",
            describe_diff(&st, &[live])
        ));
    }
    Ok(st)
}

/// Run the workload crash-free on the traced backend: the trace and the state after setup and
/// after each operation.
pub fn reference_run(w: &Workload, cfg: &Config) -> Result<Reference, String> {
    let media = Arc::new(Media::traced(cfg.image_bytes));
    media.set_data_crcs(cfg.data_crcs);
    media.with_trace(|t| t.enabled = true);
    let engine = Engine::format_media(media.clone(), &FormatOptions::default())
        .map_err(|e| format!("format: {e}"))?;
    engine.set_gc_config(&cfg.gc);
    engine
        .set_one_fence(cfg.one_fence)
        .map_err(|e| format!("commit mode of the session: {e}"))?;
    let mut fs = Fs::from_engine(engine, Default::default());
    let mut maps = workload::Held::new();
    for op in &w.setup {
        fs = run_op(fs, &mut maps, &media, op, cfg)?.0;
    }
    let quiet = |media: &Media, f: &mut dyn FnMut() -> Result<State, String>| {
        // Reading the state must not show up in the trace.
        media.with_trace(|t| t.enabled = false);
        let r = f();
        media.with_trace(|t| t.enabled = true);
        r
    };
    let mut live = quiet(&media, &mut || state_of(&fs))?;
    let mut t = Tracker::default();
    let mut states = vec![quiet(&media, &mut || {
        recovered_state(&media, &live, &t.atomic_pending)
    })?];
    let mut unpersisted = vec![t.pending.clone()];
    for (i, op) in w.ops.iter().enumerate() {
        media.mark(&format!("begin {i}"));
        let (next_fs, err) = run_op(fs, &mut maps, &media, op, cfg)?;
        fs = next_fs;
        media.mark(&format!("end {i}"));
        let before = live;
        live = quiet(&media, &mut || state_of(&fs))?;
        if err.is_none() {
            t.on_op(op, &before);
        }
        states.push(quiet(&media, &mut || {
            recovered_state(&media, &live, &t.atomic_pending)
        })?);
        unpersisted.push(t.pending.clone());
    }
    drop(maps);
    // Stop without unmounting: an unmount would add a migration (of failure-atomic caches too)
    // after the last operation, which is not part of the workload.
    fs.crash();
    let events = media
        .with_trace(|t| {
            t.enabled = false;
            t.take()
        })
        .unwrap_or_default();
    Ok(Reference {
        events,
        states,
        unpersisted,
    })
}

/// Follows the write caches of the reference run: which mapped stores a crash may still lose
/// (MAP_SYNC stores until persisted or migrated) and which recovery will discard
/// (failure-atomic stores until their file is synced).
#[derive(Default)]
struct Tracker {
    pending: Vec<Unpersisted>,
    atomic_pending: Vec<Unpersisted>,
    /// Per inode: the cached pages and whether the cache is failure-atomic.
    cached: HashMap<u64, (std::collections::BTreeSet<u64>, bool)>,
    atomic_maps: HashSet<String>,
    /// Open handles of the workload: name -> inode.
    handles: HashMap<String, u64>,
}

impl Tracker {
    /// The engine migrated (or committed) inode `ino`'s cache.
    fn migrate(&mut self, ino: u64) {
        self.cached.remove(&ino);
        self.pending.retain(|u| u.ino != ino);
        self.atomic_pending.retain(|u| u.ino != ino);
    }

    fn has_cache(&self, ino: u64) -> bool {
        self.cached.get(&ino).is_some_and(|c| !c.0.is_empty())
    }

    /// `write_at` (or an append at `off`) migrates the cache when it covers a cached page.
    fn on_write(&mut self, ino: u64, off: u64, len: u64) {
        if len > 0 && self.has_cache(ino) {
            let pages = off / 4096..=(off + len - 1) / 4096;
            if self.cached[&ino].0.range(pages).next().is_some() {
                self.migrate(ino);
            }
        }
    }

    /// `punch_hole` migrates the cache when it cuts anything of the file.
    fn on_punch(&mut self, ino: u64, size: u64, o: u64, l: u64) {
        if l > 0 && o < (o + l).min(size) {
            self.migrate(ino);
        }
    }

    /// Account for an operation that succeeded.
    fn on_op(&mut self, op: &Op, before: &State) {
        let ino_of = |p: &str| before.inos.get(p).copied();
        match op {
            Op::Map(p, _, _, atomic) => {
                if *atomic {
                    self.atomic_maps.insert(p.clone());
                } else {
                    self.atomic_maps.remove(p);
                }
            }
            Op::MWrite { path, off, len, .. } => {
                let Some(ino) = ino_of(path) else { return };
                let atomic = self.atomic_maps.contains(path);
                if self.has_cache(ino) && self.cached[&ino].1 != atomic {
                    self.migrate(ino); // one mode per cache generation
                }
                let c = self.cached.entry(ino).or_default();
                c.1 = atomic;
                if *len > 0 {
                    c.0.extend(*off / 4096..=(*off + *len - 1) / 4096);
                }
                let old = before
                    .contents
                    .get(path)
                    .map(|c| c[*off as usize..(*off + *len) as usize].to_vec())
                    .unwrap_or_default();
                let u = Unpersisted {
                    path: path.clone(),
                    ino,
                    off: *off,
                    old,
                };
                if atomic {
                    self.atomic_pending.push(u);
                } else {
                    self.pending.push(u);
                }
            }
            Op::Persist(p, o, l) => {
                let covers = |u: &Unpersisted| {
                    &u.path == p && u.off >= *o && u.off + u.old.len() as u64 <= o + l
                };
                self.pending.retain(|u| !covers(u));
            }
            Op::Msync(p) | Op::Fsync(p) => {
                if let Some(ino) = ino_of(p) {
                    self.migrate(ino);
                }
            }
            Op::Write { path, off, len, .. } => {
                if let Some(ino) = ino_of(path) {
                    self.on_write(ino, *off, *len);
                }
            }
            Op::Truncate(p, _)
            | Op::Falloc(p, _, _)
            | Op::FallocKeep(p, _, _)
            | Op::WriteFile { path: p, .. } => {
                if let Some(ino) = ino_of(p) {
                    self.migrate(ino);
                }
            }
            Op::Punch(p, o, l)
            | Op::Zero {
                path: p,
                off: o,
                len: l,
                keep: true,
            } => {
                let size = before.contents.get(p).map_or(0, |c| c.len() as u64);
                if let Some(ino) = ino_of(p) {
                    self.on_punch(ino, size, *o, *l);
                }
            }
            Op::Zero {
                path: p,
                len,
                keep: false,
                ..
            } => {
                // Zeroing that may grow the file migrates the cache unless empty.
                if let Some(ino) = ino_of(p).filter(|_| *len > 0) {
                    self.migrate(ino);
                }
            }
            Op::Open(p, h) => match ino_of(p) {
                Some(ino) => {
                    self.handles.insert(h.clone(), ino);
                }
                None => {
                    self.handles.remove(h);
                }
            },
            Op::Close(h) => {
                self.handles.remove(h);
            }
            Op::Via(h, hop) => {
                let Some(&ino) = self.handles.get(h) else {
                    return;
                };
                // The file's size before, through any of its names (none: unlinked, and no
                // crash image can show its contents).
                let size = before
                    .inos
                    .iter()
                    .find(|(_, &i)| i == ino)
                    .and_then(|(p, _)| before.contents.get(p))
                    .map(|c| c.len() as u64);
                match hop {
                    HandleOp::Write { off, len, .. } => self.on_write(ino, *off, *len),
                    HandleOp::Append { len, .. } => {
                        if let Some(size) = size {
                            self.on_write(ino, size, *len);
                        }
                    }
                    HandleOp::Punch(o, l) => {
                        if let Some(size) = size {
                            self.on_punch(ino, size, *o, *l);
                        }
                    }
                    HandleOp::Truncate(_) | HandleOp::Falloc(..) | HandleOp::Fsync => {
                        self.migrate(ino)
                    }
                }
            }
            Op::Remount | Op::Unmount => {
                self.handles.clear();
                self.cached.clear();
                self.pending.clear();
                self.atomic_pending.clear();
            }
            _ => {}
        }
    }
}

fn run_op(
    fs: Fs,
    maps: &mut workload::Held,
    media: &Arc<Media>,
    op: &Op,
    cfg: &Config,
) -> Result<(Fs, Option<novafs::Error>), String> {
    match op {
        Op::Remount | Op::Unmount => {
            maps.clear();
            let engine = fs.engine().clone();
            drop(fs);
            engine.unmount().map_err(|e| format!("unmount: {e}"))?;
            drop(engine);
            let opts = MountOptions {
                gc: cfg.gc.clone(),
                one_fence: Some(cfg.one_fence),
                ..MountOptions::default()
            };
            let (engine, report) = novafs_recovery::open_media(media.clone(), &opts)
                .map_err(|e| format!("mount: {e}"))?;
            Ok((Fs::from_engine(engine, report), None))
        }
        _ => {
            let r = workload::apply_with(&fs, maps, op).err();
            Ok((fs, r))
        }
    }
}

/// Crash-test a user's own sequence of novafs calls: `setup` prepares the tree (not checked),
/// then each step is one operation whose every crash point is explored. A crash inside a step
/// must leave the state before or after it, so make each step one atomic novafs call (a step
/// of several calls is reported when a crash between them shows).
///
/// ```
/// use novafs::Fs;
/// use novafs_crashtest::{check_calls, Config};
/// // The classic atomic-replace pattern: write a temporary file, then rename it over the old.
/// let report = check_calls(
///     |fs| fs.create_dir("/db").and_then(|_| fs.write("/db/k", b"v1")),
///     vec![
///         ("create tmp", Box::new(|fs: &Fs| fs.create("/db/k.tmp").map(|_| ()))),
///         ("write tmp", Box::new(|fs: &Fs| {
///             fs.open_options().write(true).open("/db/k.tmp")?.write_at(b"v2", 0).map(|_| ())
///         })),
///         ("rename over", Box::new(|fs: &Fs| fs.rename("/db/k.tmp", "/db/k"))),
///     ],
///     &Config { max_images: 64, ..Config::default() },
/// );
/// assert!(report.failures.is_empty(), "{:?}", report.failures.first());
/// assert!(report.images > 0);
/// ```
#[allow(clippy::type_complexity)]
pub fn check_calls(
    setup: impl Fn(&Fs) -> Result<(), novafs::Error> + Send + Sync + 'static,
    steps: Vec<(
        &str,
        Box<dyn Fn(&Fs) -> Result<(), novafs::Error> + Send + Sync>,
    )>,
    cfg: &Config,
) -> Report {
    let custom = |name: &str, run: Box<dyn Fn(&Fs) -> Result<(), novafs::Error> + Send + Sync>| {
        Op::Custom(Arc::new(workload::Custom {
            name: name.to_string(),
            run,
        }))
    };
    let w = Workload {
        name: "calls".into(),
        setup: vec![custom("setup", Box::new(setup))],
        ops: steps.into_iter().map(|(n, f)| custom(n, f)).collect(),
    };
    check(&w, cfg)
}

/// Check many workloads.
pub fn check_all(ws: &[Workload], cfg: &Config, threads: usize) -> Report {
    let threads = threads.max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    let mut total = Report::default();
    let parts: Vec<Report> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut r = Report::default();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(w) = ws.get(i) else { break };
                        r.merge(check(w, cfg));
                    }
                    r
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for p in parts {
        total.merge(p);
    }
    total.seconds = start.elapsed().as_secs_f64();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(data: &[u8]) -> State {
        State {
            tree: [("/f".to_string(), format!("file len={}", data.len()))].into(),
            contents: [("/f".to_string(), data.to_vec())].into(),
            inos: [("/f".to_string(), 5)].into(),
            used_blocks: 3,
            blocks_total: 1024,
        }
    }

    #[test]
    fn accepts_differences_only_where_a_store_may_be_missing() {
        let want: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let w = state(&want);
        // A mapped store of 10 bytes at 100 (crossing a 64-byte block), old bytes 0xee.
        let fuzz = vec![Unpersisted {
            path: "/f".into(),
            ino: 5,
            off: 100,
            old: vec![0xee; 10],
        }];
        assert!(accepts(&w, &w, &[]));
        let mut g = want.clone();
        g[100] = 0xee;
        g[109] = 0xee;
        assert!(accepts(&state(&g), &w, &fuzz), "old bytes under the store");
        assert!(!accepts(&state(&g), &w, &[]), "no store may be missing");
        let other = vec![Unpersisted {
            ino: 6,
            ..fuzz[0].clone()
        }];
        assert!(!accepts(&state(&g), &w, &other), "another inode's store");
        let mut g2 = g.clone();
        g2[110] = 0xee;
        assert!(!accepts(&state(&g2), &w, &fuzz), "a byte past the store");
        let mut g3 = g.clone();
        g3[105] = 0x01;
        assert!(
            !accepts(&state(&g3), &w, &fuzz),
            "neither the old nor the new value"
        );
        let mut g4 = g.clone();
        g4[299] ^= 1;
        assert!(!accepts(&state(&g4), &w, &fuzz), "the last, partial block");
        let mut s5 = state(&g);
        s5.used_blocks = 4;
        assert!(!accepts(&s5, &w, &fuzz), "blocks in use differ");
        // Overlapping stores (a long one, a short one inside it ending first, a later one):
        // a byte may hold the old value of any store covering it.
        let store = |off: u64, len: usize, old: u8| Unpersisted {
            path: "/f".into(),
            ino: 5,
            off,
            old: vec![old; len],
        };
        let three = vec![
            store(250, 3, 0x33),
            store(10, 100, 0x11),
            store(20, 5, 0x22),
        ];
        let mut g6 = want.clone();
        g6[10] = 0x11;
        g6[21] = 0x22;
        g6[30] = 0x11;
        g6[109] = 0x11;
        g6[251] = 0x33;
        assert!(accepts(&state(&g6), &w, &three));
        let mut g7 = g6.clone();
        g7[30] = 0x22; // the short store does not reach 30
        assert!(!accepts(&state(&g7), &w, &three));
        let mut g8 = g6.clone();
        g8[253] = 0x33; // past the last store
        assert!(!accepts(&state(&g8), &w, &three));
    }
}
