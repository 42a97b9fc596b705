//! Direct access (DESIGN §5.4.1): mappings whose pages are the image's blocks. Loads and
//! stores through addresses (a `VolatileSlice`), prepare_write over the write cache, persist
//! without fsync, coherence with write_at/set_len/punch_hole/allocate, remount and crash,
//! the traced backend's shadow, and bad input.

use std::sync::Arc;
use std::time::Duration;

use novafs_engine::media::Media;
mod cause;
use cause::cause;
use novafs::{EngineError as Error, FormatOptions, Fs, MapMode, MountOptions, WritebackConfig};

const PG: u64 = 4096;

fn fresh(size: u64) -> (tempfile::TempDir, std::path::PathBuf, Fs) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("d.img");
    let fs = Fs::format(&img, size, &FormatOptions::default()).unwrap();
    (dir, img, fs)
}

fn no_writeback() -> MountOptions {
    MountOptions {
        writeback: WritebackConfig {
            interval: Duration::ZERO,
            ..WritebackConfig::default()
        },
        ..MountOptions::default()
    }
}

fn rw(fs: &Fs, p: &str) -> novafs::File {
    fs.open_options()
        .read(true)
        .write(true)
        .create(true)
        .open(p)
        .unwrap()
}

fn writable_pages(fs: &Fs, p: &str) -> usize {
    let ino = fs.resolve(p).unwrap();
    fs.engine().maps_writable_pages(ino)
}

#[test]
fn stores_through_addresses_are_read_back_by_read_at_and_survive_remount() {
    let (_d, img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/a");
    f.write_at(&vec![7u8; 3 * PG as usize], 0).unwrap();
    let m = f.map(0, 3 * PG, MapMode::Sync).unwrap();
    let s = m.as_slice();
    assert_eq!(s.len(), 3 * PG as usize);
    // Loads before any write access: the file's bytes.
    let mut b = [0u8; 4];
    s.read(PG as usize + 5, &mut b).unwrap();
    assert_eq!(b, [7; 4]);
    assert_eq!(writable_pages(&fs, "/a"), 0);
    // Write access to two pages, then stores through the addresses.
    let w = m.prepare_write(PG - 8, 16).unwrap();
    assert_eq!(w.len(), 16);
    assert_eq!(writable_pages(&fs, "/a"), 2);
    w.write(0, b"across-a-page!!!").unwrap();
    s.store_u64(2 * PG as usize - 64, 0x1122_3344_5566_7788)
        .unwrap_or_else(|e| panic!("{e}"));
    m.persist(PG - 8, 16).unwrap();
    m.persist(2 * PG - 64, 8).unwrap();
    let mut back = [0u8; 16];
    f.read_exact_at(&mut back, PG - 8).unwrap();
    assert_eq!(&back, b"across-a-page!!!", "read_at sees the mapped stores");
    let mut word = [0u8; 8];
    f.read_exact_at(&mut word, 2 * PG - 64).unwrap();
    assert_eq!(u64::from_le_bytes(word), 0x1122_3344_5566_7788);
    assert_eq!(m.read_at(&mut back, PG - 8).unwrap(), 16);
    assert_eq!(&back, b"across-a-page!!!");
    drop((m, f));
    fs.unmount().unwrap();
    let fs = Fs::open(&img, &no_writeback()).unwrap();
    let data = fs.read("/a").unwrap();
    assert_eq!(&data[PG as usize - 8..PG as usize + 8], b"across-a-page!!!");
    assert_eq!(data[0], 7);
}

#[test]
fn persisted_stores_survive_a_crash_and_atomic_mode_keeps_the_last_sync() {
    let (_d, img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/s");
    f.set_len(2 * PG).unwrap();
    let g = rw(&fs, "/t");
    g.write_at(&[1u8; PG as usize], 0).unwrap();
    let m = f.map(0, 2 * PG, MapMode::Sync).unwrap();
    m.prepare_write(0, 2 * PG).unwrap();
    m.as_slice().write(100, b"durable").unwrap();
    m.persist(100, 7).unwrap();
    let a = g.map(0, PG, MapMode::Atomic).unwrap();
    a.prepare_write(0, 64).unwrap().write(0, b"synced").unwrap();
    a.sync().unwrap();
    assert_eq!(writable_pages(&fs, "/t"), 0, "atomic mode: revoked by sync");
    a.prepare_write(0, 64)
        .unwrap()
        .write(0, b"LOSTLOST")
        .unwrap();
    a.persist(0, 8).unwrap(); // persisted, but not synced: atomic mode discards it
    drop((m, a, f, g));
    fs.crash();
    let fs = Fs::open(&img, &no_writeback()).unwrap();
    assert_eq!(&fs.read("/s").unwrap()[100..107], b"durable");
    let t = fs.read("/t").unwrap();
    assert_eq!(&t[..6], b"synced");
    assert_eq!(t[6], 1);
}

#[test]
fn crash_with_the_mapping_alive_revokes_it() {
    let (_d, img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/c");
    f.set_len(PG).unwrap();
    let m = f.map(0, PG, MapMode::Sync).unwrap();
    m.prepare_write(0, PG).unwrap();
    m.as_slice().write(0, b"kept").unwrap();
    m.persist(0, 4).unwrap();
    m.as_slice().write(8, b"maybe").unwrap(); // not persisted: may or may not survive
    let engine = fs.engine().clone();
    fs.crash();
    // The pages are the zero page now: loads see zeros, a store would fault.
    let mut b = [0u8; 4];
    m.as_slice().read(0, &mut b).unwrap();
    assert_eq!(b, [0; 4]);
    assert!(matches!(cause(m.persist(0, 4)), Err(Error::Unmounted)));
    assert!(matches!(
        cause(m.prepare_write(0, 4)),
        Err(Error::Unmounted)
    ));
    assert!(matches!(cause(m.read_at(&mut b, 0)), Err(Error::Unmounted)));
    drop((m, f, engine));
    let fs = Fs::open(&img, &no_writeback()).unwrap();
    assert_eq!(&fs.read("/c").unwrap()[..4], b"kept");
}

#[test]
fn sync_mode_pages_stay_writable_across_migration() {
    let (_d, _img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/w");
    f.set_len(PG).unwrap();
    let m = f.map(0, PG, MapMode::Sync).unwrap();
    m.prepare_write(0, PG).unwrap();
    m.as_slice().write(0, b"one").unwrap();
    m.sync().unwrap();
    let ino = fs.resolve("/w").unwrap();
    assert_eq!(fs.engine().inode_layout(ino).unwrap().cached.len(), 0);
    assert_eq!(
        writable_pages(&fs, "/w"),
        1,
        "the block became the file's in place"
    );
    // Storing again needs no new attachment.
    m.as_slice().write(3, b"two").unwrap();
    m.persist(0, 6).unwrap();
    assert_eq!(&fs.read("/w").unwrap()[..6], b"onetwo");
    assert_eq!(fs.engine().inode_layout(ino).unwrap().cached.len(), 0);
}

#[test]
fn coherence_with_write_at_set_len_punch_and_allocate() {
    let (_d, _img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/k");
    f.write_at(&[5u8; 4 * PG as usize], 0).unwrap();
    let m = f.map(0, 4 * PG, MapMode::Sync).unwrap();
    let s = m.as_slice();
    m.prepare_write(0, 2 * PG).unwrap();
    s.write(10, b"mapped").unwrap();
    // write_at through another handle over the mapped, writable page.
    let other = rw(&fs, "/k");
    other.write_at(b"HANDLE", 12).unwrap();
    let mut b = [0u8; 10];
    s.read(10, &mut b).unwrap();
    assert_eq!(
        &b, b"maHANDLE\x05\x05",
        "the mapping shows write_at's new block"
    );
    assert_eq!(
        writable_pages(&fs, "/k"),
        1,
        "the replaced page is read-only again; the other stays writable"
    );
    // Punch a mapped page: it reads as zeros (the zero page).
    other.punch_hole(2 * PG, PG).unwrap();
    s.read(2 * PG as usize, &mut b).unwrap();
    assert_eq!(b, [0; 10]);
    // Allocate over the hole: zeros still, now a block.
    other.allocate(2 * PG, PG).unwrap();
    s.read(2 * PG as usize + 100, &mut b).unwrap();
    assert_eq!(b, [0; 10]);
    // Shrink below the mapping: pages past the end read as zeros.
    other.set_len(PG).unwrap();
    s.read(3 * PG as usize, &mut b).unwrap();
    assert_eq!(b, [0; 10]);
    assert!(matches!(
        cause(m.prepare_write(3 * PG, 8)),
        Err(Error::InvalidArgument(_))
    ));
    // The page still inside stays usable: prepare again and store.
    m.prepare_write(0, 16).unwrap();
    s.write(0, b"again").unwrap();
    assert_eq!(&fs.read("/k").unwrap()[..5], b"again");
    // A second mapping of the same page sees the first one's stores (same physical page).
    let m2 = f.map(0, PG, MapMode::Sync).unwrap();
    let mut c = [0u8; 5];
    m2.as_slice().read(0, &mut c).unwrap();
    assert_eq!(&c, b"again");
}

#[test]
fn holes_map_the_zero_page() {
    let (_d, _img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/h");
    f.set_len(3 * PG).unwrap(); // all holes
    f.write_at(b"x", PG).unwrap();
    let m = f.map(0, 3 * PG, MapMode::Sync).unwrap();
    let s = m.as_slice();
    let mut b = vec![0xFFu8; 3 * PG as usize];
    s.read(0, &mut b).unwrap();
    assert_eq!(b[PG as usize], b'x');
    assert_eq!(b.iter().filter(|&&x| x != 0).count(), 1);
    // Write access to a hole: attached (a zero page copy), then writable.
    m.prepare_write(2 * PG, 8)
        .unwrap()
        .store_u64(0, 42)
        .unwrap();
    assert_eq!(s.load_u64(2 * PG as usize).unwrap(), 42);
    m.persist(2 * PG, 8).unwrap();
    assert_eq!(fs.read("/h").unwrap()[2 * PG as usize], 42);
}

#[test]
fn unaligned_mapping_offsets_and_atomics() {
    let (_d, _img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/u");
    f.write_at(&[3u8; 2 * PG as usize], 0).unwrap();
    let m = f.map(100, 5000, MapMode::Sync).unwrap();
    assert_eq!(m.offset(), 100);
    assert_eq!(m.len(), 5000);
    assert_eq!(m.as_ptr() as usize % PG as usize, 100);
    m.prepare_write(0, 5000).unwrap();
    let s = m.as_slice();
    // Mapping offset 4 is file offset 104: 8-aligned in the address space.
    assert_eq!(
        s.compare_exchange_u64(4, 0x0303_0303_0303_0303, 9).unwrap(),
        Ok(0x0303_0303_0303_0303)
    );
    assert_eq!(s.fetch_add_u64(4, 1).unwrap(), 9);
    assert!(matches!(
        cause(s.load_u64(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(s.read(4999, &mut [0u8; 2]).is_err());
    m.persist(4, 8).unwrap();
    assert_eq!(&fs.read("/u").unwrap()[104..112], &10u64.to_le_bytes());
    assert!(m.persist(4999, 2).is_err());
    assert!(m.prepare_write(5000, 1).is_err());
}

#[test]
fn bad_input_gets_typed_errors() {
    let (_d, _img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/b");
    f.set_len(PG).unwrap();
    assert!(matches!(
        cause(f.map(0, PG + 1, MapMode::Sync)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cause(f.map(PG, 1, MapMode::Sync)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cause(f.map(0, 0, MapMode::Sync)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cause(f.map(u64::MAX, 2, MapMode::Sync)),
        Err(Error::FileTooLarge)
    ));
    fs.create_dir("/dir").unwrap();
    let d = fs.open_options().read(true).open("/dir").unwrap();
    assert!(matches!(
        cause(d.map(0, 1, MapMode::Sync)),
        Err(Error::IsADirectory)
    ));
    let ro = fs.open_options().read(true).open("/b").unwrap();
    let m = ro.map(0, PG, MapMode::Sync).unwrap();
    assert!(matches!(
        cause(m.prepare_write(0, 8)),
        Err(Error::BadHandle(_))
    ));
    assert!(matches!(
        cause(m.write_at(b"x", 0)),
        Err(Error::BadHandle(_))
    ));
    let mut b = [1u8; 8];
    m.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [0; 8], "a read-only mapping still loads");
    let engine = fs.engine().clone();
    let keep = rw(&fs, "/b");
    fs.unmount().unwrap();
    assert!(matches!(
        cause(keep.map(0, PG, MapMode::Sync)),
        Err(Error::Unmounted)
    ));
    assert!(matches!(cause(m.persist(0, 8)), Err(Error::Unmounted)));
    drop((m, keep, engine));
}

/// The traced backend (crash harness): a mapping is a shadow buffer whose changed words become
/// traced stores at persist/sync, so mapped stores are in the trace.
#[test]
fn traced_mappings_publish_their_stores_into_the_trace() {
    use novafs_engine::media::TraceEvent;
    let media = Arc::new(Media::traced(8 << 20));
    let engine = novafs::Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
    let fs = Fs::from_engine(engine, Default::default());
    let f = rw(&fs, "/t");
    f.write_at(&[2u8; 2 * PG as usize], 0).unwrap();
    let m = f.map(0, 2 * PG, MapMode::Sync).unwrap();
    let w = m.prepare_write(PG, 64).unwrap();
    media.with_trace(|t| t.enabled = true);
    w.write(8, b"shadowed").unwrap(); // a store into the shadow
    let stores = |media: &Media| {
        media
            .with_trace(|t| {
                t.events
                    .iter()
                    .filter(|e| matches!(e, TraceEvent::Store { data, .. } if data == b"shadowed"))
                    .count()
            })
            .unwrap()
    };
    assert_eq!(stores(&media), 0, "not yet published");
    m.persist(PG + 8, 8).unwrap();
    assert_eq!(stores(&media), 1, "published as a traced store at persist");
    let evs = media.with_trace(|t| t.take()).unwrap();
    assert!(matches!(evs.last(), Some(TraceEvent::Fence { .. })));
    assert!(evs.iter().any(|e| matches!(e, TraceEvent::Flush { .. })));
    assert_eq!(
        &fs.read("/t").unwrap()[PG as usize + 8..PG as usize + 16],
        b"shadowed"
    );
    // Mapping::write_at publishes at once (unflushed), like a CPU store.
    m.write_at(b"direct!!", 16).unwrap();
    assert_eq!(&fs.read("/t").unwrap()[16..24], b"direct!!");
    // Another handle's write_at over the page refreshes the shadow.
    f.write_at(b"WA", 17).unwrap();
    let mut b = [0u8; 8];
    m.as_slice().read(16, &mut b).unwrap();
    assert_eq!(&b, b"dWAect!!");
}

#[test]
fn zero_range_and_a_mapping_of_the_other_mode_remap_writable_pages() {
    let (_d, _img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/z");
    f.write_at(&[9u8; 2 * PG as usize], 0).unwrap();
    let m = f.map(0, 2 * PG, MapMode::Sync).unwrap();
    let s = m.as_slice();
    m.prepare_write(0, 2 * PG).unwrap();
    s.write(0, b"sync-store").unwrap();
    assert_eq!(writable_pages(&fs, "/z"), 2);
    // zero_range over page 1: read-only zeros there, page 0 untouched and still writable.
    f.zero_range(PG, PG, true).unwrap();
    let mut b = [1u8; 8];
    s.read(PG as usize + 8, &mut b).unwrap();
    assert_eq!(b, [0; 8]);
    assert_eq!(writable_pages(&fs, "/z"), 1);
    // A failure-atomic mapping prepares page 0: the Sync cache is migrated, the page gets a new
    // (atomic) cache block, and the Sync mapping's page follows it, read-only.
    let a = f.map(0, PG, MapMode::Atomic).unwrap();
    a.prepare_write(0, 8).unwrap().write(0, b"ATOMIC").unwrap();
    assert_eq!(
        writable_pages(&fs, "/z"),
        1,
        "only the atomic mapping's page"
    );
    let mut c = [0u8; 10];
    s.read(0, &mut c).unwrap();
    assert_eq!(
        &c, b"ATOMICtore",
        "the Sync mapping sees the atomic cache block"
    );
    assert_eq!(&fs.read("/z").unwrap()[..10], b"ATOMICtore");
    // The Sync mapping prepares again: the atomic cache is migrated (synced) first.
    m.prepare_write(0, 8).unwrap();
    s.write(0, b"S").unwrap();
    let mut d = [0u8; 6];
    a.as_slice().read(0, &mut d).unwrap();
    assert_eq!(&d, b"STOMIC");
}

#[test]
fn remap_grows_a_mapping_with_its_file() {
    let (_d, _img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/g");
    f.write_at(b"head", 0).unwrap();
    let mut m = f.map(0, 4, MapMode::Sync).unwrap();
    m.prepare_write(0, 4).unwrap().write(0, b"HEAD").unwrap();
    assert!(matches!(
        cause(m.remap(PG + 10)),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(m.len(), 4, "a failed remap keeps the old mapping");
    f.set_len(2 * PG).unwrap();
    m.remap(2 * PG).unwrap();
    assert_eq!(m.len(), 2 * PG);
    let s = m.as_slice();
    let mut b = [0u8; 4];
    s.read(0, &mut b).unwrap();
    assert_eq!(&b, b"HEAD");
    m.prepare_write(PG, 8).unwrap().store_u64(0, 77).unwrap();
    m.persist(PG, 8).unwrap();
    assert_eq!(fs.read("/g").unwrap()[PG as usize], 77);
}

#[test]
fn transparent_mappings_take_stores_without_prepare_write() {
    let (_d, img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/x");
    f.write_at(&[4u8; 3 * PG as usize], 0).unwrap();
    let m = match cause(f.map_transparent(0, 3 * PG, MapMode::Sync)) {
        Err(Error::NotSupported(why)) => {
            eprintln!("skipped: {why}");
            return;
        }
        r => r.unwrap(),
    };
    let s = m.as_slice();
    assert_eq!(writable_pages(&fs, "/x"), 0);
    // A plain store to a clean page: it faults, the handler attaches the page, the store
    // lands in the cache block.
    s.write(PG as usize + 3, b"fault-in").unwrap();
    assert_eq!(writable_pages(&fs, "/x"), 1);
    let ino = fs.resolve("/x").unwrap();
    assert_eq!(fs.engine().inode_layout(ino).unwrap().cached.len(), 1);
    s.store_u64(2 * PG as usize, 99).unwrap();
    m.persist(PG + 3, 8).unwrap();
    m.persist(2 * PG, 8).unwrap();
    let data = fs.read("/x").unwrap();
    assert_eq!(&data[PG as usize + 3..PG as usize + 11], b"fault-in");
    assert_eq!(data[2 * PG as usize], 99);
    assert_eq!(data[0], 4);
    // Another handle's write_at over a page: remapped read-only and armed again; the next
    // store faults in again.
    f.write_at(b"W", PG).unwrap();
    s.write(PG as usize + 1, b"again").unwrap();
    assert_eq!(
        &fs.read("/x").unwrap()[PG as usize..PG as usize + 6],
        b"Wagain"
    );
    m.persist(PG, 8).unwrap();
    // A read-only handle cannot map transparently.
    let ro = fs.open_options().read(true).open("/x").unwrap();
    assert!(matches!(
        cause(ro.map_transparent(0, PG, MapMode::Sync)),
        Err(Error::BadHandle(_))
    ));
    drop((m, f, ro));
    fs.crash();
    let fs = Fs::open(&img, &no_writeback()).unwrap();
    let data = fs.read("/x").unwrap();
    assert_eq!(&data[PG as usize..PG as usize + 6], b"Wagain");
    assert_eq!(data[2 * PG as usize], 99);
}

#[test]
fn transparent_atomic_mapping_faults_again_after_sync() {
    let (_d, img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/y");
    f.set_len(PG).unwrap();
    let m = match cause(f.map_transparent(0, PG, MapMode::Atomic)) {
        Err(Error::NotSupported(_)) => return,
        r => r.unwrap(),
    };
    let s = m.as_slice();
    s.write(0, b"first").unwrap();
    m.sync().unwrap();
    assert_eq!(
        writable_pages(&fs, "/y"),
        0,
        "atomic: write-protected by sync"
    );
    s.write(0, b"SECOND").unwrap(); // faults in a fresh attachment
    assert_eq!(writable_pages(&fs, "/y"), 1);
    m.persist(0, 6).unwrap(); // persisted but not synced: discarded by recovery
    drop((m, f));
    fs.crash();
    let fs = Fs::open(&img, &no_writeback()).unwrap();
    assert_eq!(&fs.read("/y").unwrap()[..6], b"first\0");
}

/// A program storing through a mapping while another thread reads the same page with
/// `read_at` (DESIGN §2, "Soundness"): every copy is made of aligned 8-byte atomic accesses,
/// so each aligned word the reader sees is one the writer stored, never a mix of two stores,
/// even where the writer's 8-byte stores straddle two words (offset 4: the edges are stored by
/// compare-exchange of the whole word, not byte by byte). Byte-wise edge stores (the previous
/// volatile copy) or a byte-wise reader could show `[k, k, k+1, k+1]` in one half-word.
#[test]
fn read_at_racing_mapped_stores_sees_whole_words() {
    let (_d, _img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/race");
    f.write_at(&vec![0u8; PG as usize], 0).unwrap();
    let m = f.map(0, PG, MapMode::Sync).unwrap();
    let s = m.prepare_write(0, PG).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mixed = std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut k = 0u8;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                k = k.wrapping_add(1);
                // Bytes 4..12: the upper half of word 0 and the lower half of word 1.
                s.write(4, &[k; 8]).unwrap();
                s.write(64 + 4, &[k; 8]).unwrap();
            }
        });
        let mut mixed = 0;
        let mut buf = [0u8; 128];
        for _ in 0..200_000 {
            f.read_at(&mut buf, 0).unwrap();
            for base in [0usize, 64] {
                let hi = &buf[base + 4..base + 8];
                let lo = &buf[base + 8..base + 12];
                if hi.iter().any(|&b| b != hi[0]) || lo.iter().any(|&b| b != lo[0]) {
                    mixed += 1;
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        mixed
    });
    assert_eq!(mixed, 0, "a read saw a half-word mixing two stores");
    let mut back = [0u8; 12];
    f.read_at(&mut back, 0).unwrap();
    assert!(back[4..].iter().all(|&b| b == back[4]), "{back:?}");
}
