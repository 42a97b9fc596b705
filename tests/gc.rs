//! Log garbage collection and space: logs stay bounded under churn, GC never changes what the
//! file system holds (through remount and crash recovery), `statfs` is exact, and a full image
//! fails every operation cleanly and gets its space back.

mod cause;
use cause::cause;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use novafs::{EngineError as Error, FormatOptions, Fs, GcConfig, MapMode, MountOptions};
use novafs_recovery::fsck::{self, FsckOptions};

fn fresh(size: u64) -> (tempfile::TempDir, PathBuf, Fs) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("gc.img");
    let fs = Fs::format(&img, size, &FormatOptions::default()).unwrap();
    (dir, img, fs)
}

fn open(img: &Path) -> Fs {
    Fs::open(img, &MountOptions::default()).unwrap()
}

/// fsck finds nothing; returns the blocks it found in use.
fn fsck_clean(img: &Path) -> u64 {
    let r = fsck::check(img, &FsckOptions::default()).unwrap();
    assert_eq!(r.errors_found, 0, "fsck: {:?}", r.problems);
    r.blocks_used
}

fn log_pages(fs: &Fs, p: &str) -> u64 {
    let ino = fs.resolve(p).unwrap();
    fs.engine().log_stats(ino).unwrap().pages
}

/// Every path with a description of what it is and holds.
fn tree(fs: &Fs) -> BTreeMap<String, String> {
    fn walk(fs: &Fs, dir: &str, out: &mut BTreeMap<String, String>) {
        for e in fs.read_dir(if dir.is_empty() { "/" } else { dir }).unwrap() {
            let e = e.unwrap();
            let p = format!("{dir}/{}", e.name_lossy());
            let m = fs.symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                walk(fs, &p, out);
                format!("dir mode={:o} nlink={}", m.mode(), m.nlink())
            } else if m.is_symlink() {
                format!("symlink {:?}", fs.read_link(&p).unwrap())
            } else {
                let data = fs.read(&p).unwrap();
                format!(
                    "file len={} nlink={} mode={:o} uid={} blocks={} crc={:08x}",
                    m.len(),
                    m.nlink(),
                    m.mode(),
                    m.uid(),
                    m.blocks(),
                    crc32fast::hash(&data)
                )
            };
            out.insert(p, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(fs, "", &mut out);
    out
}

fn page(seed: u64) -> Vec<u8> {
    (0..4096u64)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(0x9e37)) as u8)
        .collect()
}

#[test]
fn overwrites_keep_a_file_log_bounded() {
    let (_d, img, fs) = fresh(64 << 20);
    let f = fs.create("/f").unwrap();
    let mut max_pages = 0;
    for i in 0..20_000u64 {
        f.write_at(&page(i), (i % 3) * 4096).unwrap();
        max_pages = max_pages.max(log_pages(&fs, "/f"));
    }
    // Each write supersedes the one three back: the head page dies as soon as the tail
    // leaves it.
    assert!(max_pages <= 3, "the log grew to {max_pages} pages");
    let gc = fs.engine().gc_stats();
    assert!(gc.fast_runs > 300, "{gc:?}");
    drop(f);
    let want = tree(&fs);
    fs.crash();
    let fs = open(&img);
    assert_eq!(tree(&fs), want);
    // The last write to the second page was number 19,999.
    assert!(fs.read("/f").unwrap()[4096..8192] == page(19_999)[..]);
    assert!(log_pages(&fs, "/f") <= 3);
    fs.unmount().unwrap();
    fsck_clean(&img);
}

#[test]
fn small_overwrites_of_a_large_file_compact_rarely_and_stay_bounded() {
    // A 16 MiB file of one extent: its state needs three log pages, but a compaction walks,
    // replays and compares 4,096 mapped pages. Redo writes (two lines each, all dead but the
    // last) fill log pages; the page-count trigger used to compact every 64 pages (about
    // 2,000 writes), each time walking the whole map: 45% of a 64 B write's time. GC now
    // waits for one log page per 16 mapped pages (and twice the map's keys in entries), so
    // the walks cost O(1) per write, and the log stays under 1/16 of the file.
    let (_d, img, fs) = fresh(64 << 20);
    let f = fs.create("/f").unwrap();
    f.write_at(&vec![5u8; 16 << 20], 0).unwrap();
    let mut max_pages = 0;
    for i in 0..20_000u64 {
        let off = (i.wrapping_mul(7919) % 4096) * 4096 + (i % 64) * 64;
        f.write_at(&[i as u8; 64], off).unwrap();
        max_pages = max_pages.max(log_pages(&fs, "/f"));
    }
    let gc = fs.engine().gc_stats();
    // One compaction per 256 log pages (about 7,900 writes of two lines); every 64 pages
    // (about 2,000 writes: 17 compactions in all) before.
    assert!(
        gc.thorough_runs <= 4,
        "{} compactions of a 4,096-page map in 20,000 writes: {gc:?}",
        gc.thorough_runs
    );
    assert!(
        max_pages <= 4096 / 16 + 64,
        "the log grew to {max_pages} pages"
    );
    drop(f);
    let want = tree(&fs);
    fs.crash();
    let fs = open(&img);
    assert_eq!(tree(&fs), want);
    fs.unmount().unwrap();
    fsck_clean(&img);
}

#[test]
fn create_unlink_churn_keeps_a_directory_log_bounded() {
    let (_d, img, fs) = fresh(64 << 20);
    fs.create_dir("/d").unwrap();
    fs.write("/d/keep", b"pinned at the head of the log")
        .unwrap();
    let mut max_pages = 0;
    for i in 0..10_000 {
        let p = format!("/d/t{}", i % 7);
        fs.write(&p, b"x").unwrap();
        fs.remove_file(&p).unwrap();
        max_pages = max_pages.max(log_pages(&fs, "/d"));
    }
    // Compaction runs inline at 1,024 entries (16 pages) when at most a quarter is needed.
    assert!(
        max_pages <= 18,
        "the directory log grew to {max_pages} pages"
    );
    let gc = fs.engine().gc_stats();
    assert!(gc.thorough_runs >= 5, "{gc:?}");
    assert!(gc.max_pause_ns > 0);
    let want = tree(&fs);
    assert_eq!(want.len(), 2, "{want:?}");
    fs.crash();
    let fs = open(&img);
    assert_eq!(tree(&fs), want);
    fs.unmount().unwrap();
    fsck_clean(&img);
}

#[test]
fn renames_back_and_forth_keep_logs_bounded() {
    let (_d, img, fs) = fresh(64 << 20);
    fs.create_dir("/a").unwrap();
    fs.create_dir("/b").unwrap();
    fs.create_dir("/a/sub").unwrap();
    fs.write("/a/f", b"moving").unwrap();
    for i in 0..4_000 {
        let (from, to) = if i % 2 == 0 {
            ("/a/sub", "/b/sub")
        } else {
            ("/b/sub", "/a/sub")
        };
        fs.rename(from, to).unwrap();
        let (from, to) = if i % 2 == 0 {
            ("/a/f", "/b/f")
        } else {
            ("/b/f", "/a/f")
        };
        fs.rename(from, to).unwrap();
    }
    for p in ["/a", "/b", "/a/sub", "/a/f"] {
        let n = log_pages(&fs, p);
        assert!(n <= 18, "{p}: {n} log pages");
    }
    let want = tree(&fs);
    fs.crash();
    let fs = open(&img);
    assert_eq!(tree(&fs), want);
    assert_eq!(fs.read("/a/f").unwrap(), b"moving");
    fs.unmount().unwrap();
    fsck_clean(&img);
}

#[test]
fn compaction_keeps_every_kind_of_state() {
    let (_d, img, fs) = fresh(64 << 20);
    fs.create_dir("/d").unwrap();
    fs.create_dir("/d/sub").unwrap();
    fs.create_dir("/d/sub2").unwrap();
    fs.remove_dir("/d/sub2").unwrap();
    let f = fs.create("/d/f").unwrap();
    for i in 0..50u64 {
        f.write_at(&page(i), (i % 5) * 4096).unwrap();
    }
    f.write_at(b"tail", 40_000).unwrap(); // a hole between
    f.punch_hole(4096, 4096).unwrap();
    f.allocate(100_000, 8192).unwrap(); // past the end
    f.set_len(90_000).unwrap();
    f.set_len(120_000).unwrap();
    fs.set_permissions("/d/f", 0o600).unwrap();
    fs.set_owner("/d/f", Some(7), Some(8)).unwrap();
    fs.hard_link("/d/f", "/d/f2").unwrap();
    fs.symlink("/d/f", "/d/s").unwrap();
    fs.set_permissions("/d", 0o750).unwrap();
    drop(f);
    let before_tree = tree(&fs);
    let meta: Vec<_> = ["/d", "/d/f", "/d/sub", "/d/s"]
        .iter()
        .map(|p| fs.symlink_metadata(p).unwrap().attr().clone())
        .collect();
    for p in ["/d", "/d/f", "/", "/d/sub"] {
        let ino = fs.resolve(p).unwrap();
        let before = fs.engine().log_stats(ino).unwrap();
        let ran = fs.engine().gc_inode(ino).unwrap();
        let after = fs.engine().log_stats(ino).unwrap();
        if ran {
            assert_eq!(after.entries, before.needed, "{p}");
            assert!(after.entries < before.entries, "{p}");
        }
    }
    let meta_after: Vec<_> = ["/d", "/d/f", "/d/sub", "/d/s"]
        .iter()
        .map(|p| fs.symlink_metadata(p).unwrap().attr().clone())
        .collect();
    assert_eq!(meta_after, meta);
    assert_eq!(tree(&fs), before_tree);
    assert!(fs.engine().gc_stats().thorough_runs >= 2);
    // More changes after the compaction land in the new chain.
    fs.write("/d/new", b"after").unwrap();
    let want = tree(&fs);
    let meta: Vec<_> = ["/d", "/d/f", "/d/sub", "/d/s"]
        .iter()
        .map(|p| fs.symlink_metadata(p).unwrap().attr().clone())
        .collect();
    fs.crash();
    let fs = open(&img);
    assert_eq!(tree(&fs), want);
    let meta_rec: Vec<_> = ["/d", "/d/f", "/d/sub", "/d/s"]
        .iter()
        .map(|p| fs.symlink_metadata(p).unwrap().attr().clone())
        .collect();
    assert_eq!(meta_rec, meta);
    fs.unmount().unwrap();
    fsck_clean(&img);
}

#[test]
fn background_gc_compacts_what_inline_gc_leaves() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("bg.img");
    Fs::format(&img, 32 << 20, &FormatOptions::default())
        .unwrap()
        .unmount()
        .unwrap();
    let opts = MountOptions {
        gc: GcConfig {
            fast: true,
            inline_min_entries: 0,
            background_min_entries: 128,
        },
        writeback: novafs::WritebackConfig {
            interval: std::time::Duration::from_millis(10),
            ..Default::default()
        },
        ..MountOptions::default()
    };
    let fs = Fs::open(&img, &opts).unwrap();
    fs.create_dir("/d").unwrap();
    fs.write("/d/keep", b"k").unwrap();
    for i in 0..400 {
        fs.write(format!("/d/t{i}"), b"x").unwrap();
        fs.remove_file(format!("/d/t{i}")).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fs.engine().gc_stats().thorough_runs == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(fs.engine().gc_stats().thorough_runs >= 1);
    assert!(log_pages(&fs, "/d") <= 2);
    fs.unmount().unwrap();
    fsck_clean(&img);
}

#[test]
fn statfs_is_exact() {
    let (_d, img, fs) = fresh(32 << 20);
    let check = |fs: &Fs, img: &Path| {
        let s = fs.statfs().unwrap();
        // fsck counts every block reachable from the superblock (the fixed area, inode
        // tables, logs, file data, write caches).
        let copy = std::sync::Arc::new(novafs_engine::Media::traced_from(
            fs.engine().copy_image().unwrap(),
        ));
        let used = fsck::check_media(copy, &FsckOptions::default())
            .unwrap()
            .blocks_used;
        assert_eq!(
            s.blocks_total - s.blocks_free,
            used,
            "{s:?} ({})",
            img.display()
        );
    };
    check(&fs, &img);
    fs.create_dir("/d").unwrap();
    for i in 0..300u64 {
        fs.write(format!("/d/f{i}"), &page(i)[..(i as usize * 37) % 4096])
            .unwrap();
        if i % 3 == 0 {
            fs.remove_file(format!("/d/f{}", i / 2)).ok();
        }
    }
    check(&fs, &img);
    let f = fs.open_options().write(true).open("/d/f299").unwrap();
    for i in 0..200u64 {
        f.write_at(&page(i), (i % 4) * 4096).unwrap();
    }
    let m = f.map(0, 8192, MapMode::Sync).unwrap();
    m.write_at(b"cached", 100).unwrap();
    check(&fs, &img);
    m.sync().unwrap();
    drop(m);
    drop(f);
    let d = fs.resolve("/d").unwrap();
    fs.engine().gc_inode(d).unwrap();
    check(&fs, &img);
    fs.unmount().unwrap();
    let fs = open(&img);
    check(&fs, &img);
}

/// Fill the image completely: data first, then inodes and directory entries.
fn fill(fs: &Fs) {
    fs.create_dir("/fill").unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    let mut i = 0;
    loop {
        match cause(fs.write(format!("/fill/{i}"), &chunk)) {
            Ok(()) => i += 1,
            Err(Error::NoSpace) => break,
            Err(e) => panic!("{e}"),
        }
    }
    // A failed write leaves no file behind... unless its create succeeded: keep it (empty).
    let mut small = 0;
    loop {
        match cause(fs.write(format!("/fill/s{small}"), b"1")) {
            Ok(()) => small += 1,
            Err(Error::NoSpace) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let mut empty = 0;
    loop {
        match cause(fs.create(format!("/fill/e{empty}"))) {
            Ok(_) => empty += 1,
            Err(Error::NoSpace) | Err(Error::NoInodes) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_full_image_fails_cleanly_and_gets_its_space_back() {
    let (_d, img, fs) = fresh(8 << 20);
    fs.create_dir("/dir").unwrap();
    fs.write("/dir/a", &page(1)).unwrap();
    let f = fs.open_options().write(true).open("/dir/a").unwrap();
    fill(&fs);
    let full = tree(&fs);
    let s = fs.statfs().unwrap();
    assert!(s.blocks_avail == 0, "{s:?}");
    // Every operation that needs a block fails with NoSpace and changes nothing.
    let no_space = |what: &str, r: novafs::Result<()>| match cause(r) {
        Err(Error::NoSpace) | Err(Error::NoInodes) => {}
        other => panic!("{what}: {other:?}"),
    };
    no_space("write", f.write_at(&page(2), 8192).map(|_| ()));
    no_space("overwrite", f.write_at(&page(2), 0).map(|_| ()));
    no_space("append", f.append(&page(3)).map(|_| ()));
    no_space(
        "create",
        (0..64)
            .try_for_each(|i| fs.create(format!("/dir/new{i}")).map(|_| ()))
            .and(Ok(())),
    );
    no_space(
        "mkdir",
        (0..64).try_for_each(|i| fs.create_dir(format!("/dir/nd{i}"))),
    );
    no_space(
        "symlink",
        (0..64).try_for_each(|i| fs.symlink("/dir/a", format!("/dir/sl{i}"))),
    );
    no_space(
        "map-write",
        f.map(0, 4096, MapMode::Sync)
            .and_then(|m| m.write_at(b"mapped", 10)),
    );
    no_space("allocate", f.allocate(1 << 20, 4096));
    // Renames into another directory until its log needs a page that is not there: the one
    // that fails leaves both names as they were.
    let mut moved = 0;
    let err = loop {
        let from = format!("/fill/e{moved}");
        if !fs.exists(&from) {
            break None;
        }
        match fs.rename(&from, format!("/dir/moved-with-a-long-name-{moved:04}")) {
            Ok(()) => moved += 1,
            Err(e) => break Some((from, e)),
        }
    };
    let (from, e) = err.expect("renames ran out of files before space");
    assert!(matches!(cause(&e), Error::NoSpace), "{e:?}");
    assert!(fs.exists(&from));
    assert!(!fs.exists(format!("/dir/moved-with-a-long-name-{moved:04}")));
    // What did succeed before the space ran out (creates that found room in a log page, the
    // renames) is whole; nothing else changed.
    let now = tree(&fs);
    for (p, v) in &full {
        let p2 = p
            .strip_prefix("/fill/e")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n < moved)
            .map(|n| format!("/dir/moved-with-a-long-name-{n:04}"));
        assert_eq!(now.get(p2.as_ref().unwrap_or(p)), Some(v), "{p} changed");
    }
    for p in now.keys().filter(|p| !full.contains_key(*p)) {
        assert!(p.starts_with("/dir/"), "unexpected {p}");
    }
    assert_eq!(fs.read("/dir/a").unwrap(), page(1));
    drop(f);
    let before_free = tree(&fs);
    // Freeing operations work on a full image (they may use the reserve).
    fs.remove_file("/fill/0").unwrap();
    fs.remove_file("/fill/1").unwrap();
    fs.write("/dir/b", &page(5)).unwrap();
    assert_eq!(fs.read("/dir/b").unwrap(), page(5));
    let want = tree(&fs);
    assert_eq!(want.len(), before_free.len() - 1);
    // The same after a crash, and after a clean remount.
    fs.crash();
    let fs = open(&img);
    assert_eq!(tree(&fs), want);
    let used = fs.statfs().unwrap().blocks_total - fs.statfs().unwrap().blocks_free;
    fs.unmount().unwrap();
    assert_eq!(fsck_clean(&img), used);
    let fs = open(&img);
    assert_eq!(tree(&fs), want);
    // Deleting everything gives the space back: a file as big as the first fill fits again.
    for e in fs.read_dir("/fill").unwrap() {
        fs.remove_file(format!("/fill/{}", e.unwrap().name_lossy()))
            .unwrap();
    }
    let mut i = 0;
    let chunk = vec![1u8; 64 << 10];
    while fs.write(format!("/fill/again{i}"), &chunk).is_ok() {
        i += 1;
    }
    let filled_again = i;
    assert!(
        filled_again > 50,
        "only {filled_again} chunks fit after deleting everything"
    );
    fs.unmount().unwrap();
    fsck_clean(&img);
}

/// The full soak (`cargo test --test gc -- --ignored`): a million overwrites, a million
/// create+unlink pairs, 10,000 renames; log pages stay bounded and fsck is clean. Throughput
/// over time is measured by `cargo bench --bench gc`.
#[test]
#[ignore]
fn soak_one_million() {
    let (_d, img, fs) = fresh(1 << 30);
    let f = fs.create("/f").unwrap();
    let data = page(7);
    for i in 0..1_000_000u64 {
        f.write_at(&data, (i % 4) * 4096).unwrap();
        if i % 1000 == 0 {
            assert!(log_pages(&fs, "/f") <= 3);
        }
    }
    drop(f);
    fs.create_dir("/d").unwrap();
    fs.write("/d/keep", b"k").unwrap();
    for i in 0..1_000_000u64 {
        let p = format!("/d/t{}", i % 1000);
        fs.create(&p).unwrap();
        fs.remove_file(&p).unwrap();
        if i % 1000 == 0 {
            assert!(log_pages(&fs, "/d") <= 18);
        }
    }
    fs.create_dir("/a").unwrap();
    fs.create_dir("/b").unwrap();
    fs.write("/a/x", b"x").unwrap();
    for i in 0..10_000 {
        let (from, to) = if i % 2 == 0 {
            ("/a/x", "/b/x")
        } else {
            ("/b/x", "/a/x")
        };
        fs.rename(from, to).unwrap();
    }
    for p in ["/a", "/b", "/a/x", "/d", "/f"] {
        assert!(log_pages(&fs, p) <= 18, "{p}");
    }
    fs.unmount().unwrap();
    fsck_clean(&img);
}

/// A small xorshift generator (seeded, reproducible).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One random operation on a few names in three directories (errors are part of the game).
fn random_step(fs: &Fs, r: &mut Rng) {
    const DIRS: [&str; 3] = ["/a", "/b", "/a/c"];
    let pick = |r: &mut Rng| format!("{}/n{}", DIRS[r.below(3) as usize], r.below(4));
    let (p, q) = (pick(r), pick(r));
    let exchange = novafs::RenameFlags {
        exchange: true,
        ..Default::default()
    };
    let _ = match r.below(16) {
        0 | 1 => fs.create(&p).map(|_| ()),
        2 | 3 => fs.open_file(&p).and_then(|f| {
            let data = vec![r.below(256) as u8; 1 + r.below(6000) as usize];
            f.write_at(&data, r.below(6) * 4096 + r.below(4096))
                .map(|_| ())
        }),
        4 => fs.open_file(&p).and_then(|f| f.set_len(r.below(30_000))),
        5 => fs
            .open_file(&p)
            .and_then(|f| f.punch_hole(r.below(20_000), r.below(12_000))),
        6 => fs.remove_file(&p),
        7 => fs.rename(&p, &q),
        8 => fs.rename_with(&p, &q, exchange),
        9 => fs.hard_link(&p, &q),
        10 => fs.symlink("/x/y", &p),
        11 => fs.create_dir(&p),
        12 => fs.remove_dir(&p),
        13 => fs.set_permissions(&p, 0o600 + r.below(64) as u32),
        14 => fs.open_file(&p).and_then(|f| {
            let len = f.metadata()?.len();
            if len < 16 {
                return Ok(());
            }
            let m = f.map(0, len, MapMode::Sync)?;
            let off = r.below(len - 8);
            m.write_at(&r.below(u64::MAX).to_le_bytes(), off)?;
            m.persist(off, 8)?;
            if r.below(2) == 0 {
                m.sync()?;
            }
            Ok(())
        }),
        _ => {
            let ino = fs.resolve(DIRS[r.below(3) as usize]).unwrap();
            fs.engine()
                .gc_inode(ino)
                .map(|_| ())
                .map_err(novafs::Error::from)
        }
    };
}

/// Random operations under each GC mode (fast only, fast + eager compaction, compaction
/// only), each round ended by a crash or a clean unmount (then fsck): the tree after
/// remounting is the tree before. (A reviewer's stress test; `GC_STRESS_SEEDS` runs more.)
#[test]
fn random_operations_under_every_gc_mode_survive_crash_and_remount() {
    let seeds: u64 = std::env::var("GC_STRESS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for seed in 0..seeds {
        for (mode, fast, inline) in [(0, true, 0), (1, true, 8), (2, false, 8)] {
            let opts = MountOptions {
                gc: GcConfig {
                    fast,
                    inline_min_entries: inline,
                    background_min_entries: 0,
                },
                writeback: novafs::WritebackConfig {
                    interval: std::time::Duration::ZERO,
                    ..Default::default()
                },
                ..MountOptions::default()
            };
            let (_d, img, fs) = fresh(64 << 20);
            fs.unmount().unwrap();
            let mut fs = Fs::open(&img, &opts).unwrap();
            for d in ["/a", "/b", "/a/c"] {
                fs.create_dir(d).unwrap();
            }
            let mut r = Rng(seed * 2_654_435_761 + 1);
            for round in 0..8 {
                for _ in 0..r.below(1500) {
                    random_step(&fs, &mut r);
                }
                fs.sync().unwrap();
                let want = tree(&fs);
                let clean = r.below(4) == 0;
                if clean {
                    fs.unmount().unwrap();
                    fsck_clean(&img);
                } else {
                    fs.crash();
                }
                fs = Fs::open(&img, &opts).unwrap();
                assert!(
                    tree(&fs) == want,
                    "seed {seed} mode {mode} round {round}: the tree differs after {}",
                    if clean { "a clean remount" } else { "a crash" }
                );
            }
            fs.unmount().unwrap();
            fsck_clean(&img);
        }
    }
}
