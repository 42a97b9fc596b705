//! The per-inode persistent write cache: MAP_SYNC semantics, failure-atomic mode, migration
//! on sync / writeback / unmount / recovery, and every coherence rule.

mod cause;
use cause::cause;
use std::time::{Duration, Instant};

use novafs::{EngineError as Error, FormatOptions, Fs, MapMode, MountOptions, WritebackConfig};

fn fresh(size: u64) -> (tempfile::TempDir, std::path::PathBuf, Fs) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("c.img");
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

fn cached_pages(fs: &Fs, p: &str) -> usize {
    let ino = fs.resolve(p).unwrap();
    fs.engine().inode_layout(ino).unwrap().cached.len()
}

#[test]
fn persisted_mapped_stores_survive_a_crash_without_fsync() {
    let (_d, img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/m");
    f.write_at(&vec![1u8; 3 * 4096], 0).unwrap();
    let m = f.map(0, 3 * 4096, MapMode::Sync).unwrap();
    m.write_at(b"hello", 4096 + 10).unwrap();
    m.write_at(&[9u8; 100], 8190).unwrap(); // across a page boundary
                                            // Reads through the mapping and the file see the stores at once.
    let mut b = [0u8; 5];
    m.read_at(&mut b, 4096 + 10).unwrap();
    assert_eq!(&b, b"hello");
    f.read_exact_at(&mut b, 4096 + 10).unwrap();
    assert_eq!(&b, b"hello");
    assert_eq!(cached_pages(&fs, "/m"), 2);
    m.persist(0, 3 * 4096).unwrap();
    drop((m, f));
    fs.crash();
    let fs = Fs::open(&img, &no_writeback()).unwrap();
    assert_eq!(fs.mount_report().caches_recovered, 1);
    let data = fs.read("/m").unwrap();
    assert_eq!(&data[4096 + 10..4096 + 15], b"hello");
    assert!(data[8190..8290].iter().all(|&x| x == 9));
    assert!(data[..4096 + 10].iter().all(|&x| x == 1));
    assert_eq!(data.len(), 3 * 4096);
    // Recovery migrated the cache into the file.
    assert_eq!(cached_pages(&fs, "/m"), 0);
    let s = fs.statfs().unwrap();
    fs.unmount().unwrap();
    let fs = Fs::open(&img, &no_writeback()).unwrap();
    assert_eq!(fs.statfs().unwrap(), s, "nothing leaked by the migration");
}

#[test]
fn failure_atomic_mode_recovers_to_the_last_sync() {
    let (_d, img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/a");
    f.write_at(&vec![b'o'; 8192], 0).unwrap();
    let m = f.map(0, 8192, MapMode::Atomic).unwrap();
    m.write_at(&vec![b'1'; 8192], 0).unwrap();
    m.persist(0, 8192).unwrap();
    m.sync().unwrap(); // commits generation 1 atomically
    m.write_at(&[b'2'; 100], 5000).unwrap();
    m.persist(0, 8192).unwrap(); // durable in the cache, but not synced
    assert_eq!(&fs.read("/a").unwrap()[5000..5100], &[b'2'; 100][..]);
    drop((m, f));
    let free_before_crash = fs.statfs().unwrap().blocks_free;
    fs.crash();
    let fs = Fs::open(&img, &no_writeback()).unwrap();
    let data = fs.read("/a").unwrap();
    assert!(
        data.iter().all(|&x| x == b'1'),
        "file is exactly as of the last sync"
    );
    assert_eq!(cached_pages(&fs, "/a"), 0);
    // The discarded cache page and cache log page are free again.
    assert_eq!(fs.statfs().unwrap().blocks_free, free_before_crash + 2);
}

#[test]
fn sync_migrates_atomically_and_frees_old_blocks() {
    let (_d, _img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/s");
    f.write_at(&vec![3u8; 16 * 4096], 0).unwrap();
    let before = fs.statfs().unwrap().blocks_free;
    let m = f.map(0, 16 * 4096, MapMode::Sync).unwrap();
    for p in 0..16u64 {
        m.write_at(&[p as u8; 64], p * 4096).unwrap();
    }
    assert_eq!(cached_pages(&fs, "/s"), 16);
    assert_eq!(fs.statfs().unwrap().blocks_free, before - 16 - 1); // 16 cache pages + a cache log page
    f.sync_all().unwrap();
    assert_eq!(cached_pages(&fs, "/s"), 0);
    // The old blocks and the cache log page were freed; one log entry may have needed no page.
    let after = fs.statfs().unwrap().blocks_free;
    assert!(
        after == before || after + 1 == before,
        "{before} -> {after}"
    );
    let data = fs.read("/s").unwrap();
    for p in 0..16usize {
        assert!(data[p * 4096..p * 4096 + 64].iter().all(|&x| x == p as u8));
        assert!(data[p * 4096 + 64..(p + 1) * 4096].iter().all(|&x| x == 3));
    }
}

#[test]
fn coherence_write_at_truncate_punch_and_two_mappings() {
    let (_d, img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/c");
    f.write_at(&vec![5u8; 4 * 4096], 0).unwrap();
    let m1 = f.map(0, 4 * 4096, MapMode::Sync).unwrap();
    let m2 = f.map(4096, 4096, MapMode::Sync).unwrap();
    m1.write_at(b"abc", 4096).unwrap();
    let mut b = [0u8; 3];
    m2.read_at(&mut b, 0).unwrap();
    assert_eq!(
        &b, b"abc",
        "two mappings of one file see each other's stores"
    );
    m2.write_at(b"xyz", 3).unwrap();
    m1.read_at(&mut b, 4096 + 3).unwrap();
    assert_eq!(&b, b"xyz");
    // write_at over cached pages: the cache is migrated first, then the write lands on top.
    f.write_at(b"W", 4096 + 1).unwrap();
    assert_eq!(cached_pages(&fs, "/c"), 0);
    let mut page = vec![0u8; 8];
    f.read_exact_at(&mut page, 4096).unwrap();
    assert_eq!(&page, b"aWcxyz\x05\x05");
    // Mapped stores after that go into fresh cache pages again.
    m1.write_at(b"Q", 3 * 4096).unwrap();
    m1.write_at(b"R", 2 * 4096).unwrap();
    // Truncation drops the cached pages past the cut (nothing leaks).
    f.set_len(2 * 4096 + 100).unwrap();
    assert_eq!(cached_pages(&fs, "/c"), 0);
    let data = fs.read("/c").unwrap();
    assert_eq!(data.len(), 2 * 4096 + 100);
    assert_eq!(data[2 * 4096], b'R');
    // A store beyond the new end is refused, not silently lost.
    assert!(matches!(
        cause(m1.write_at(b"Z", 3 * 4096)),
        Err(Error::InvalidArgument(_))
    ));
    // Punch over a cached page.
    m1.write_at(b"P", 10).unwrap();
    f.punch_hole(0, 4096).unwrap();
    let mut z = [1u8; 16];
    f.read_exact_at(&mut z, 0).unwrap();
    assert_eq!(z, [0u8; 16]);
    drop((m1, m2, f));
    let s = fs.statfs().unwrap();
    fs.unmount().unwrap();
    let fs = Fs::open(&img, &no_writeback()).unwrap();
    assert_eq!(fs.statfs().unwrap(), s);
}

#[test]
fn removing_a_file_with_cached_pages_leaks_nothing() {
    let (_d, img, fs) = fresh(16 << 20);
    let base = fs.statfs().unwrap();
    let f = rw(&fs, "/r");
    f.set_len(8 * 4096).unwrap();
    let m = f.map(0, 8 * 4096, MapMode::Sync).unwrap();
    for p in 0..8 {
        m.write_at(b"dirty", p * 4096).unwrap();
    }
    m.persist(0, 8 * 4096).unwrap();
    fs.remove_file("/r").unwrap();
    // Still readable through the open mapping.
    let mut b = [0u8; 5];
    m.read_at(&mut b, 4096).unwrap();
    assert_eq!(&b, b"dirty");
    drop((m, f));
    let root_log = fs
        .engine()
        .inode_layout(novafs::ROOT_INO)
        .unwrap()
        .log_pages
        .len() as u64;
    assert_eq!(
        fs.statfs().unwrap().blocks_free,
        base.blocks_free - root_log
    );
    assert_eq!(fs.statfs().unwrap().inodes_free, base.inodes_free);
    fs.unmount().unwrap();
    let fs = Fs::open(&img, &no_writeback()).unwrap();
    assert_eq!(
        fs.statfs().unwrap().blocks_free,
        base.blocks_free - root_log
    );
}

#[test]
fn clean_unmount_and_background_writeback_migrate() {
    let (_d, img, fs) = fresh(16 << 20);
    let f = rw(&fs, "/u");
    f.set_len(4096).unwrap();
    let m = f.map(0, 4096, MapMode::Sync).unwrap();
    m.write_at(b"unmount", 0).unwrap(); // not even persisted: a clean unmount keeps it
    drop((m, f));
    fs.unmount().unwrap();
    let fast = MountOptions {
        writeback: WritebackConfig {
            interval: Duration::from_millis(5),
            max_age: Duration::from_millis(20),
            max_dirty_pages: 1_000_000,
        },
        ..MountOptions::default()
    };
    let fs = Fs::open(&img, &fast).unwrap();
    assert!(fs.mount_report().clean);
    assert_eq!(&fs.read("/u").unwrap()[..7], b"unmount");
    assert_eq!(cached_pages(&fs, "/u"), 0);
    // Background writeback migrates an old cache on its own.
    let f = rw(&fs, "/u");
    let m = f.map(0, 4096, MapMode::Sync).unwrap();
    m.write_at(b"writeback", 100).unwrap();
    m.persist(100, 9).unwrap();
    assert_eq!(cached_pages(&fs, "/u"), 1);
    let t = Instant::now();
    while cached_pages(&fs, "/u") != 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "writeback never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    // A failure-atomic cache is left for its owner's sync.
    let a = f.map(0, 4096, MapMode::Atomic).unwrap();
    a.write_at(b"atomic", 200).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(cached_pages(&fs, "/u"), 1);
    a.sync().unwrap();
    assert_eq!(cached_pages(&fs, "/u"), 0);
    assert_eq!(&fs.read("/u").unwrap()[200..206], b"atomic");
}

#[test]
fn mapping_errors() {
    let (_d, _img, fs) = fresh(8 << 20);
    let f = rw(&fs, "/e");
    f.set_len(100).unwrap();
    assert!(matches!(
        cause(f.map(0, 0, MapMode::Sync)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cause(f.map(50, 100, MapMode::Sync)),
        Err(Error::InvalidArgument(_))
    ));
    let m = f.map(0, 100, MapMode::Sync).unwrap();
    assert!(matches!(
        cause(m.write_at(b"xx", 99)),
        Err(Error::InvalidArgument(_))
    ));
    drop(m);
    let r = fs.open_options().read(true).open("/e").unwrap();
    let m = r.map(0, 100, MapMode::Sync).unwrap();
    assert!(matches!(
        cause(m.write_at(b"x", 0)),
        Err(Error::BadHandle(_))
    ));
    let mut b = [1u8; 100];
    assert_eq!(m.read_at(&mut b, 0).unwrap(), 100);
    assert_eq!(b, [0u8; 100]);
}
