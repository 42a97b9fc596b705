//! Byte-exact round trips of edge sizes, big and sparse files, across remount and crash.

use novafs::{FormatOptions, Fs, MountOptions};

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn edge_sizes_survive_remount_and_crash() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("rt.img");
    let fs = Fs::format(&img, 64 << 20, &FormatOptions::default()).unwrap();
    let sizes = [
        0usize,
        1,
        63,
        64,
        65,
        4095,
        4096,
        4097,
        8191,
        8192,
        8193,
        1 << 20,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        fs.write(format!("/f{n}"), &pattern(n, i as u64)).unwrap();
    }
    let check = |fs: &Fs| {
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(
                fs.read(format!("/f{n}")).unwrap(),
                pattern(n, i as u64),
                "size {n}"
            );
            assert_eq!(fs.metadata(format!("/f{n}")).unwrap().len(), n as u64);
        }
    };
    check(&fs);
    fs.unmount().unwrap();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    // The clean path loads the saved allocator state and reads no log: only the root is
    // loaded until something is looked up.
    assert!(fs.mount_report().clean);
    assert_eq!(fs.mount_report().inodes_scanned, 0);
    assert_eq!(fs.engine().cached_inodes().len(), 1);
    check(&fs);
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert!(!fs.mount_report().clean);
    assert_eq!(fs.mount_report().inodes_scanned, sizes.len() as u64 + 1);
    check(&fs);
}

#[test]
fn hundred_mib_file() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("big.img");
    let fs = Fs::format(&img, 256 << 20, &FormatOptions::default()).unwrap();
    let data = pattern(100 << 20, 7);
    let f = fs.create("/big").unwrap();
    f.write_at(&data, 0).unwrap();
    drop(f);
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let back = fs.read("/big").unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "100 MiB file differs after crash recovery");
}

#[test]
fn sparse_files_and_holes() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("sparse.img");
    let fs = Fs::format(&img, 16 << 20, &FormatOptions::default()).unwrap();
    let rw = || {
        fs.open_options()
            .read(true)
            .write(true)
            .create(true)
            .clone()
    };
    let f = rw().open("/s").unwrap();
    // Far beyond any real space: only two blocks get allocated.
    let far = 1u64 << 40;
    f.write_at(b"head", 0).unwrap();
    f.write_at(b"tail", far).unwrap();
    let m = f.metadata().unwrap();
    assert_eq!(m.len(), far + 4);
    assert_eq!(m.blocks(), 2);
    let mut buf = vec![1u8; 8192];
    assert_eq!(f.read_at(&mut buf, 1 << 30).unwrap(), 8192);
    assert!(buf.iter().all(|&b| b == 0));
    // Shrink into the middle of a page, grow again: the cut bytes read as zeros.
    let g = rw().open("/g").unwrap();
    g.write_at(&[9u8; 10000], 0).unwrap();
    g.set_len(5000).unwrap();
    g.set_len(12000).unwrap();
    let mut all = vec![0u8; 12000];
    g.read_exact_at(&mut all, 0).unwrap();
    assert!(all[..5000].iter().all(|&b| b == 9));
    assert!(all[5000..].iter().all(|&b| b == 0));
    // Punch a hole across pages; allocate fills holes with zeros and extends.
    g.punch_hole(100, 9000).unwrap();
    g.read_exact_at(&mut all, 0).unwrap();
    assert!(all[..100].iter().all(|&b| b == 9));
    assert!(all[100..].iter().all(|&b| b == 0));
    assert_eq!(g.metadata().unwrap().len(), 12000);
    g.allocate(0, 40000).unwrap();
    assert_eq!(g.metadata().unwrap().len(), 40000);
    assert_eq!(g.metadata().unwrap().blocks(), 10);
    drop((f, g));
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let s = fs.read("/g").unwrap();
    assert_eq!(s.len(), 40000);
    assert!(s[..100].iter().all(|&b| b == 9) && s[100..].iter().all(|&b| b == 0));
    let f = fs.open_file("/s").unwrap();
    let mut t = [0u8; 4];
    f.read_exact_at(&mut t, far).unwrap();
    assert_eq!(&t, b"tail");
}

#[test]
fn append_mode_and_unlinked_open_file() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("app.img");
    let fs = Fs::format(&img, 16 << 20, &FormatOptions::default()).unwrap();
    let free0 = fs.statfs().unwrap().blocks_free;
    let a = fs
        .open_options()
        .append(true)
        .create(true)
        .read(true)
        .open("/log")
        .unwrap();
    for i in 0..10u8 {
        a.write_at(&[i; 1000], 0).unwrap(); // offset ignored in append mode
    }
    assert_eq!(a.metadata().unwrap().len(), 10_000);
    // Unlink while open: data stays readable through the handle, freed at close.
    fs.remove_file("/log").unwrap();
    assert!(!fs.exists("/log"));
    let mut b = [0u8; 1000];
    a.read_exact_at(&mut b, 9000).unwrap();
    assert_eq!(b, [9u8; 1000]);
    drop(a);
    let root_log = fs
        .engine()
        .inode(novafs::ROOT_INO)
        .unwrap()
        .state
        .read()
        .log
        .pages
        .len() as u64;
    assert_eq!(fs.statfs().unwrap().blocks_free, free0 - root_log);
}

#[test]
fn crash_reclaims_orphans_and_uncommitted_space() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("orphan.img");
    let fs = Fs::format(&img, 16 << 20, &FormatOptions::default()).unwrap();
    fs.create_dir("/d").unwrap();
    fs.write("/d/keep", b"keep").unwrap();
    let baseline = fs.statfs().unwrap();
    // An orphan: unlinked while open, then grown through the handle, then the process dies.
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .create(true)
        .open("/d/orphan")
        .unwrap();
    f.write_at(&vec![7u8; 100_000], 0).unwrap();
    fs.remove_file("/d/orphan").unwrap();
    f.write_at(&vec![8u8; 50_000], 100_000).unwrap();
    assert!(fs.statfs().unwrap().blocks_free < baseline.blocks_free - 30);
    // The process "dies" with the handle open: after the crash, closing it writes nothing.
    fs.crash();
    drop(f);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let after = fs.statfs().unwrap();
    // Everything the orphan held is free again; only the directory's log grew.
    let d = fs.resolve("/d").unwrap();
    let dir_log = fs.engine().inode(d).unwrap().state.read().log.pages.len() as u64;
    assert!(dir_log <= 1);
    assert_eq!(after.inodes_free, baseline.inodes_free);
    assert_eq!(after.blocks_free, baseline.blocks_free);
    assert_eq!(fs.read("/d/keep").unwrap(), b"keep");
    assert_eq!(fs.read_dir("/d").unwrap().len(), 1);
}
