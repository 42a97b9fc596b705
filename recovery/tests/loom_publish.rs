//! loom model checks of the engine's concurrent paths that publish persistent state, run on
//! the real engine (no copy of the protocol): a small image on the traced media backend, whose
//! lock is loom's under `--cfg loom` (`engine/src/sync.rs`), so that every store, flush and
//! fence is a scheduling point and loom interleaves other threads between the individual steps
//! of a commit. The per-inode `RwLock<InodeState>` and the allocators' locks are loom's too.
//!
//! 1. `tail_publication_against_readers`: a writer appends (copy-on-write `write_at` that also
//!    extends the file: stage entries, fence, store the tail, apply) while a reader loads the
//!    inode (lazily, from the log up to the persistent tail, without the inode lock) and looks at
//!    it under the shared lock. The reader must see the persistent tail equal to the DRAM tail,
//!    the DRAM state equal to a replay of the log up to that tail, and the old or the new
//!    contents, never a mix; at the end the live state equals the replay and the durable image
//!    recovers to the new contents.
//! 2. `cache_attach_against_writeback`: mapped stores (the first attaches a cache page, the
//!    second may take the shared-lock fast path), each persisted, race the writeback thread's
//!    pass (`migrate_locked`: flush, commit the pages to the file, empty the cache). Every
//!    persisted store is in the live file and in the recovery of the durable image (nothing
//!    after the last fence), the state equals the replay of the logs, and no block is both free
//!    and in use (nor leaked).
//!
//! Shown to bite (temporarily breaking the engine; see DESIGN.md §10):
//! - 1 fails when `Engine::inode` publishes a lazily loaded state with `insert` instead of
//!   `or_insert_with` (a stale state replaces the writer's: "DRAM state differs from the log"),
//!   and when `log::stage_in` stores the new tail before writing the entries (the lazy loader
//!   reads a tail whose entries are not written yet: "lazy load failed: ... Corrupt").
//! - 2 fails when the fast path of `Engine::cache_write` drops the shared lock before its
//!   stores (migration moves the page in between; `cache_persist` then finds the cache empty
//!   and flushes nothing: "a persisted mapped store was lost").
//!
//! `LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" cargo test -p novafs-recovery --test loom_publish --release`
//! (in novafs-recovery: it mounts through `novafs_recovery::open_media`)
#![cfg(loom)]
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use loom::thread;
use novafs_engine::inode::{self, Bounds, InodeState};
use novafs_engine::layout::inode::TAIL_OFFSET;
use novafs_engine::media::TraceEvent;
use novafs_engine::{
    Engine, FormatOptions, MapMode, Media, MountOptions, WritebackConfig, BLOCK, ROOT_INO,
};

const LINE: u64 = 64;
const CHUNK_BLOCKS: u64 = 32;

/// The prepared image: formatted, root + file `f` of one page of `a`, cleanly unmounted.
static IMAGE: std::sync::Mutex<Option<(Vec<u8>, u64)>> = std::sync::Mutex::new(None);

fn image() -> (Vec<u8>, u64) {
    if let Some(v) = IMAGE.lock().unwrap().clone() {
        return v;
    }
    // loom objects exist only inside a model: build the image in a one-thread model.
    loom::model(|| {
        let media = std::sync::Arc::new(Media::traced(1 << 20));
        let e = Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
        let ino = e.create(ROOT_INO, b"f", 0o644, 0, 0).unwrap().ino;
        e.write(ino, Some(0), &[b'a'; BLOCK as usize]).unwrap();
        e.unmount().unwrap();
        *IMAGE.lock().unwrap() = Some((media.snapshot().unwrap(), ino));
    });
    IMAGE.lock().unwrap().clone().unwrap()
}

/// Mount the prepared image (clean fast path; nothing loaded but the root) with tracing on.
fn mount() -> (std::sync::Arc<Engine>, u64) {
    let (img, ino) = image();
    let media = std::sync::Arc::new(Media::traced_from(img));
    let (e, report) = novafs_recovery::open_media(media, &MountOptions::default()).unwrap();
    assert!(report.clean);
    // Everything mount stored was fenced: the bytes now are the durable base of the trace.
    e.loom_media().with_trace(|t| t.enabled = true);
    (e, ino)
}

/// The image a crash right now leaves when nothing reaches the media but what the persistence
/// model guarantees: stores whose line was flushed after them and then fenced, non-temporal
/// stores followed by a fence.
fn durable_image(e: &Engine, base: &[u8]) -> Vec<u8> {
    let events = e.loom_media().with_trace(|t| t.take()).unwrap();
    let mut img = base.to_vec();
    // Pending pieces (each inside one line): (seq, off, bytes, flushed).
    let mut pending: Vec<(usize, u64, Vec<u8>, bool)> = Vec::new();
    let mut newest: HashMap<u64, usize> = HashMap::new();
    for (seq, ev) in events.into_iter().enumerate() {
        match ev {
            TraceEvent::Store { off, data, nt, .. } => {
                let mut pos = 0usize;
                while pos < data.len() {
                    let o = off + pos as u64;
                    let n = ((LINE - o % LINE) as usize).min(data.len() - pos);
                    pending.push((seq, o, data[pos..pos + n].to_vec(), nt));
                    pos += n;
                }
            }
            TraceEvent::Flush { line, .. } => {
                for p in pending.iter_mut() {
                    if p.1 / LINE * LINE == line {
                        p.3 = true;
                    }
                }
            }
            TraceEvent::Fence { .. } => {
                let (done, rest): (Vec<_>, Vec<_>) = pending.drain(..).partition(|p| p.3);
                pending = rest;
                for (s, o, d, _) in done {
                    for (k, &b) in d.iter().enumerate() {
                        let at = o + k as u64;
                        // Program order decides between two stores to the same byte.
                        if newest.get(&at).is_none_or(|&s0| s0 < s) {
                            newest.insert(at, s);
                            img[at as usize] = b;
                        }
                    }
                }
            }
            // The models never grow the image.
            TraceEvent::Mark(_) | TraceEvent::Grow { .. } => {}
        }
    }
    img
}

/// Crash now (durable bytes only), recover on one thread, return file `f`'s bytes.
fn recover_durable(e: &Engine, base: &[u8]) -> Vec<u8> {
    let img = durable_image(e, base);
    let media = std::sync::Arc::new(Media::traced_from(img));
    let opts = MountOptions {
        recovery_threads: 1,
        ..MountOptions::default()
    };
    let (r, _) = novafs_recovery::open_media(media, &opts).expect("recovery");
    let ino = r.lookup(ROOT_INO, b"f").unwrap().ino;
    let mut buf = vec![0u8; 4 * BLOCK as usize];
    let n = r.read(ino, 0, &mut buf).unwrap();
    buf.truncate(n);
    r.crash();
    buf
}

/// The state of `ino` replayed from its persistent logs (what a lazy load or recovery builds).
fn replay(e: &Engine, ino: u64, slot_off: u64) -> InodeState {
    inode::load(e.loom_media(), slot_off, ino, Bounds::of(&e.superblock())).expect("replay")
}

/// The DRAM state equals the replay of the logs up to their persistent tails.
fn assert_matches_log(e: &Engine, ino: u64, slot_off: u64, st: &InodeState) {
    let tail = e.loom_media().load_u64(slot_off + TAIL_OFFSET).unwrap();
    assert_eq!(
        tail, st.log.tail_off,
        "persistent tail differs from the DRAM tail"
    );
    let r = replay(e, ino, slot_off);
    assert!(
        r.map == st.map && r.attr.size == st.attr.size && r.cache().map == st.cache().map,
        "DRAM state differs from the log: dram size {} map {:?} cache {:?}, log size {} map {:?} cache {:?}",
        st.attr.size, st.map, st.cache().map, r.attr.size, r.map, r.cache().map
    );
}

/// No block is both free and in use, none is used twice, none is lost.
fn assert_blocks_accounted(e: &Engine, inos: &[u64]) {
    let sb = e.superblock();
    let mut used: HashMap<u64, String> = HashMap::new();
    let mut mark = |b: u64, what: String| {
        if let Some(prev) = used.insert(b, what.clone()) {
            panic!("block {b} is both {prev} and {what}");
        }
    };
    for c in e.chunk_blocks() {
        for b in c..c + CHUNK_BLOCKS {
            mark(b, "inode table".into());
        }
    }
    for &ino in inos {
        let i = e.inode(ino).unwrap();
        let st = i.loom_state().read();
        for (pg, b) in st.map.iter() {
            if b != 0 {
                mark(b, format!("page {pg} of {ino}"));
            }
        }
        for (pg, b) in st.cache().map.iter() {
            mark(b, format!("cache page {pg} of {ino}"));
        }
        for &p in &st.log.pages {
            mark(p, format!("log page of {ino}"));
        }
        for &p in &st.cache().log.pages {
            mark(p, format!("cache log page of {ino}"));
        }
    }
    for x in e.loom_block_alloc().extents() {
        for b in x.start..x.start + x.len {
            mark(b, "free".into());
        }
    }
    assert_eq!(
        used.len() as u64,
        sb.replica_block - sb.first_free_block,
        "blocks leaked"
    );
}

fn model(f: impl Fn() + Sync + Send + 'static) -> usize {
    image();
    // Counted per call (the tests run in parallel).
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let t = std::time::Instant::now();
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.max_branches = 100_000;
    b.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f()
    });
    let n = runs.load(Ordering::Relaxed);
    eprintln!(
        "{n} interleavings explored in {:.1} s (preemption bound {:?})",
        t.elapsed().as_secs_f64(),
        b.preemption_bound
    );
    n
}

#[test]
fn tail_publication_against_readers() {
    let runs = model(|| {
        let (e, ino) = mount();
        let base = e.loom_media().snapshot().unwrap();
        let old = vec![b'a'; BLOCK as usize];
        let mut new = vec![b'a'; 2048];
        new.extend_from_slice(&[b'b'; BLOCK as usize]);
        let e1 = e.clone();
        let writer = thread::spawn(move || {
            // Both pages copied on write, size 4096 -> 6144, one tail store.
            e1.write(ino, Some(2048), &[b'b'; BLOCK as usize]).unwrap();
        });
        // The reader: lazy load (from the persistent log, without the inode lock) racing the
        // writer's own load, stage and commit; then a look under the shared lock.
        let i = e
            .inode(ino)
            .unwrap_or_else(|err| panic!("lazy load failed: {err:?}"));
        {
            let st = i.loom_state().read();
            assert_matches_log(&e, ino, i.slot_off, &st);
            let mut buf = vec![0u8; 2 * BLOCK as usize];
            let n = e.loom_read_locked(&st, 0, &mut buf).unwrap();
            buf.truncate(n);
            assert!(buf == old || buf == new, "torn read: {n} bytes");
        }
        writer.join().unwrap();
        let i = e.inode(ino).unwrap();
        let st = i.loom_state().read();
        assert_matches_log(&e, ino, i.slot_off, &st);
        assert_eq!(st.attr.size, new.len() as u64, "the write was lost");
        drop(st);
        assert_blocks_accounted(&e, &[ROOT_INO, ino]);
        assert_eq!(
            recover_durable(&e, &base),
            new,
            "a committed write was lost"
        );
        e.crash();
    });
    assert!(runs > 3, "loom explored no interleavings");
}

#[test]
fn cache_attach_against_writeback() {
    let runs = model(|| {
        let (e, ino) = mount();
        let base = e.loom_media().snapshot().unwrap();
        let inode = e.inode(ino).unwrap();
        let (e1, i1) = (e.clone(), inode.clone());
        let mapper = thread::spawn(move || {
            // First store: attach (copy the page, commit the attachment); second: the
            // shared-lock fast path unless writeback migrated the page in between.
            e1.cache_write(&i1, 100, b"XYZW", MapMode::Sync).unwrap();
            e1.cache_persist(&i1, 100, 4).unwrap();
            e1.cache_write(&i1, 200, b"QRST", MapMode::Sync).unwrap();
            e1.cache_persist(&i1, 200, 4).unwrap();
        });
        // The writeback thread's pass (forced: every MAP_SYNC cache is migrated).
        e.writeback_pass(&WritebackConfig::default(), true).unwrap();
        mapper.join().unwrap();
        let mut want = vec![b'a'; BLOCK as usize];
        want[100..104].copy_from_slice(b"XYZW");
        want[200..204].copy_from_slice(b"QRST");
        {
            let st = inode.loom_state().read();
            assert_matches_log(&e, ino, inode.slot_off, &st);
            let mut buf = vec![0u8; BLOCK as usize];
            e.loom_read_locked(&st, 0, &mut buf).unwrap();
            assert!(buf == want, "a mapped store is missing from the file");
        }
        assert_blocks_accounted(&e, &[ROOT_INO, ino]);
        assert!(
            recover_durable(&e, &base) == want,
            "a persisted mapped store was lost"
        );
        e.crash();
    });
    assert!(runs > 3, "loom explored no interleavings");
}
