//! Redo writes (DESIGN.md §5.1.2): a small write inside one mapped page is carried in its log
//! entry and then stored in place; it allocates no block and copies no page, and recovery
//! stores it again when the in-place store did not reach the media.

mod cause;
use novafs::{Fs, MountOptions};
use novafs_engine::layout::entry::Entry;
use novafs_engine::layout::BLOCK;

mod craft;
use craft::*;

fn page(seed: u8) -> Vec<u8> {
    (0..BLOCK as usize)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed)
        .collect()
}

#[test]
fn a_small_write_is_one_log_entry_and_no_new_block() {
    let d = scratch();
    let img = d.path().join("r.img");
    let fs = Fs::format(&img, 16 << 20, &Default::default()).unwrap();
    fs.write("/f", &page(1)).unwrap();
    let free = fs.statfs().unwrap().blocks_free;
    let before = layout(&fs, "/f");
    let f = fs.open_options().write(true).open("/f").unwrap();
    f.write_at(&[0xab; 64], 100).unwrap();
    let after = layout(&fs, "/f");
    // Same block, nothing allocated, one two-line entry.
    assert_eq!(after.map, before.map);
    assert_eq!(fs.statfs().unwrap().blocks_free, free);
    assert_eq!(after.tail, before.tail + 128);
    drop(f);
    let mut want = page(1);
    want[100..164].fill(0xab);
    assert_eq!(fs.read("/f").unwrap(), want);
    fs.unmount().unwrap();
    let es = entries(&img, &after);
    assert!(matches!(
        es.last(),
        Some((_, Entry::WriteRedo { pgoff: 0, at: 100, data, .. })) if data == &[0xab; 64]
    ));
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.read("/f").unwrap(), want);
    fs.unmount().unwrap();
    assert_clean(&img);
}

#[test]
fn recovery_stores_a_redo_write_whose_in_place_store_was_lost() {
    let d = scratch();
    let img = d.path().join("r.img");
    let fs = Fs::format(&img, 16 << 20, &Default::default()).unwrap();
    fs.write("/f", &page(2)).unwrap();
    let f = fs.open_options().write(true).open("/f").unwrap();
    f.write_at(b"hello, redo", 4000).unwrap();
    // Grows the file inside its last mapped page: also a redo write.
    fs.write("/g", &[5u8; 1000]).unwrap();
    let g = fs.open_options().append(true).open("/g").unwrap();
    g.append(&[6u8; 100]).unwrap();
    let lf = layout(&fs, "/f");
    let lg = layout(&fs, "/g");
    drop((f, g));
    fs.crash();
    // The in-place stores did not reach the media (the entries did).
    write_at(&img, lf.map[&0] * BLOCK + 4000, b"XXXXXXXXXXX");
    write_at(&img, lg.map[&0] * BLOCK + 1000, &[0u8; 100]);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let mut want = page(2);
    want[4000..4011].copy_from_slice(b"hello, redo");
    assert_eq!(fs.read("/f").unwrap(), want);
    let mut wg = vec![5u8; 1000];
    wg.extend([6u8; 100]);
    assert_eq!(fs.read("/g").unwrap(), wg);
    fs.unmount().unwrap();
    assert_clean(&img);
}

#[test]
fn a_superseded_redo_write_is_not_stored_again() {
    // A redo write, then a whole-page write of the same page (its block is freed and may be
    // reused by another file), then a crash: recovery must not store the old redo bytes into
    // whatever the block holds now.
    let d = scratch();
    let img = d.path().join("r.img");
    let fs = Fs::format(&img, 16 << 20, &Default::default()).unwrap();
    fs.write("/f", &page(3)).unwrap();
    let f = fs.open_options().write(true).open("/f").unwrap();
    f.write_at(&[0xee; 32], 0).unwrap();
    f.write_at(&page(4), 0).unwrap();
    for k in 0..8u8 {
        fs.write(format!("/o{k}"), &page(10 + k)).unwrap();
    }
    drop(f);
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.read("/f").unwrap(), page(4));
    for k in 0..8u8 {
        assert_eq!(fs.read(format!("/o{k}")).unwrap(), page(10 + k), "/o{k}");
    }
    fs.unmount().unwrap();
    assert_clean(&img);
}

#[test]
fn writes_that_are_not_redo_writes_copy_on_write() {
    let d = scratch();
    let img = d.path().join("r.img");
    let fs = Fs::format(&img, 16 << 20, &Default::default()).unwrap();
    fs.write("/f", &page(5)).unwrap();
    let f = fs.open_options().write(true).open("/f").unwrap();
    let b0 = layout(&fs, "/f").map[&0];
    // Larger than the redo limit, across a page boundary, into a hole: a new block each.
    f.write_at(&[1; 1024], 0).unwrap();
    let b1 = layout(&fs, "/f").map[&0];
    assert_ne!(b0, b1);
    f.write_at(&[2; 8], BLOCK - 4).unwrap();
    let l = layout(&fs, "/f");
    assert_ne!(l.map[&0], b1);
    assert!(l.map.contains_key(&1));
    f.write_at(&[3; 8], 5 * BLOCK).unwrap();
    assert!(layout(&fs, "/f").map.contains_key(&5));
    drop(f);
    fs.unmount().unwrap();
    assert_clean(&img);
}

#[test]
fn redo_writes_whose_mapping_gc_collected_replay_after_a_crash() {
    // 300 appends of 100 B: mostly redo writes into the file's last page, a page copy each
    // time an append crosses a page. Fast GC then drops the log page holding a page's first
    // mapping while redo writes to that block stay in the next log page: replay must take
    // them as superseded (found by tests/msync.rs: recovery called the image corrupt).
    let d = scratch();
    let img = d.path().join("r.img");
    let fs = Fs::format(&img, 32 << 20, &Default::default()).unwrap();
    let f = fs
        .open_options()
        .append(true)
        .create(true)
        .open("/log")
        .unwrap();
    for i in 0..300u32 {
        f.append(&[i as u8; 100]).unwrap();
    }
    drop(f);
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let data = fs.read("/log").unwrap();
    assert_eq!(data.len(), 30_000);
    assert!(data
        .chunks(100)
        .enumerate()
        .all(|(i, c)| c == [i as u8; 100]));
    fs.unmount().unwrap();
    assert_clean(&img);
}
