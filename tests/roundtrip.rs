//! Byte-exact round trips of edge sizes, big and sparse files, across remount and crash.

mod cause;
use cause::cause;
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
        .inode_layout(novafs::ROOT_INO)
        .unwrap()
        .log_pages
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
    let dir_log = fs.engine().inode_layout(d).unwrap().log_pages.len() as u64;
    assert!(dir_log <= 1);
    assert_eq!(after.inodes_free, baseline.inodes_free);
    assert_eq!(after.blocks_free, baseline.blocks_free);
    assert_eq!(fs.read("/d/keep").unwrap(), b"keep");
    assert_eq!(fs.read_dir("/d").unwrap().len(), 1);
}

// ----- std::io on File, ReadDir -----

fn io_fs() -> (tempfile::TempDir, Fs) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let fs = Fs::format(
        dir.path().join("io.img"),
        32 << 20,
        &FormatOptions::default(),
    )
    .unwrap();
    (dir, fs)
}

#[test]
fn bufwriter_and_bufreader_lines() {
    use std::io::{BufRead, BufReader, BufWriter, Write};
    let (_d, fs) = io_fs();
    {
        let mut w = BufWriter::with_capacity(100, fs.create("/log").unwrap());
        for i in 0..1000 {
            writeln!(w, "line {i}").unwrap();
        }
        w.flush().unwrap();
    }
    let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(fs.read("/log").unwrap(), want.as_bytes());
    let r = BufReader::new(fs.open_options().read(true).open("/log").unwrap());
    let lines: Vec<String> = r.lines().map(Result::unwrap).collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!(lines[0], "line 0");
    assert_eq!(lines[999], "line 999");
}

#[test]
fn io_copy_in_and_out_and_between_files() {
    let (_d, fs) = io_fs();
    let data = pattern(300_000, 7);
    let mut dst = fs.create("/a").unwrap();
    let n = std::io::copy(&mut &data[..], &mut dst).unwrap();
    assert_eq!(n, data.len() as u64);
    // File to file, both cursors moving; then out to a Vec.
    let mut src = fs.open_options().read(true).open("/a").unwrap();
    let mut b = fs.create("/b").unwrap();
    assert_eq!(std::io::copy(&mut src, &mut b).unwrap(), data.len() as u64);
    let mut out = Vec::new();
    std::io::copy(
        &mut fs.open_options().read(true).open("/b").unwrap(),
        &mut out,
    )
    .unwrap();
    assert_eq!(out, data);
    // read_to_end through &File.
    let f = fs.open_options().read(true).open("/b").unwrap();
    let mut again = Vec::new();
    std::io::Read::read_to_end(&mut &f, &mut again).unwrap();
    assert_eq!(again, data);
}

#[test]
fn seek_from_start_current_and_end() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let (_d, fs) = io_fs();
    let mut f = fs
        .open_options()
        .read(true)
        .write(true)
        .create(true)
        .open("/s")
        .unwrap();
    f.write_all(b"0123456789").unwrap();
    assert_eq!(f.stream_position().unwrap(), 10);
    assert_eq!(f.seek(SeekFrom::End(-3)).unwrap(), 7);
    let mut b = [0u8; 3];
    f.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"789");
    assert_eq!(f.read(&mut b).unwrap(), 0, "at end of file");
    assert_eq!(f.seek(SeekFrom::Start(2)).unwrap(), 2);
    assert_eq!(f.seek(SeekFrom::Current(2)).unwrap(), 4);
    f.write_all(b"ab").unwrap();
    assert_eq!(fs.read("/s").unwrap(), b"0123ab6789");
    // Past the end: a write there leaves a hole of zeros.
    assert_eq!(f.seek(SeekFrom::End(2)).unwrap(), 12);
    f.write_all(b"z").unwrap();
    assert_eq!(fs.read("/s").unwrap(), b"0123ab6789\0\0z");
    // Before the start: InvalidInput, and the cursor stays.
    let e = f.seek(SeekFrom::Current(-100)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(f.stream_position().unwrap(), 13);
    // Positional calls ignore the cursor.
    f.write_at(b"X", 0).unwrap();
    assert_eq!(f.stream_position().unwrap(), 13);
}

#[test]
fn append_through_two_handles() {
    use std::io::{Read, Write};
    let (_d, fs) = io_fs();
    fs.write("/a", b"start.").unwrap();
    let open = || {
        fs.open_options()
            .append(true)
            .read(true)
            .open("/a")
            .unwrap()
    };
    let (mut h1, mut h2) = (open(), open());
    h1.write_all(b"one.").unwrap();
    h2.write_all(b"two.").unwrap(); // at the end as of now, not at h2's cursor
    h1.write_all(b"three.").unwrap();
    // write_at in append mode goes to the end too.
    h2.write_at(b"four.", 0).unwrap();
    assert_eq!(fs.read("/a").unwrap(), b"start.one.two.three.four.");
    // Each write moved its handle's cursor past what it wrote: a read there sees the rest.
    let mut rest = String::new();
    h1.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "four.");
    // Concurrent appenders never overwrite each other.
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let mut h = open();
            s.spawn(move || {
                for _ in 0..50 {
                    h.write_all(&[b'a' + t; 10]).unwrap();
                }
            });
        }
    });
    let all = fs.read("/a").unwrap();
    assert_eq!(all.len(), 25 + 4 * 50 * 10);
    for t in 0..4u8 {
        assert_eq!(all[25..].iter().filter(|&&b| b == b'a' + t).count(), 500);
    }
    for rec in all[25..].chunks(10) {
        assert!(rec.iter().all(|&b| b == rec[0]), "a torn append: {rec:?}");
    }
}

#[test]
fn read_dir_entries_like_std() {
    use std::ffi::OsString;
    let (_d, fs) = io_fs();
    fs.create_dir_all("/d/sub").unwrap();
    fs.write("/d/f", b"12345").unwrap();
    fs.symlink("/d/f", "/d/l").unwrap();
    let rd = fs.read_dir("/d").unwrap();
    assert_eq!(rd.len(), 3);
    let mut ents: Vec<_> = rd.map(Result::unwrap).collect();
    ents.sort_by_key(|e| e.file_name());
    let names: Vec<OsString> = ents.iter().map(|e| e.file_name()).collect();
    assert_eq!(names, ["f", "l", "sub"].map(OsString::from));
    assert_eq!(ents[0].path(), std::path::Path::new("/d/f"));
    let kinds: Vec<_> = ents.iter().map(|e| e.file_type().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            novafs::FileType::File,
            novafs::FileType::Symlink,
            novafs::FileType::Dir
        ]
    );
    // metadata() is the entry's own (a symlink is not followed).
    assert_eq!(ents[0].metadata().unwrap().len(), 5);
    assert!(ents[1].metadata().unwrap().is_symlink());
    assert_eq!(ents[0].ino(), fs.metadata("/d/f").unwrap().ino());
    assert!(fs.read_dir("/d/f").is_err());
}

#[test]
fn whole_file_write_shrinks_grows_and_frees() {
    let (_d, fs) = io_fs();
    let big = pattern(3 * 4096 + 100, 1);
    fs.write("/f", &big).unwrap();
    assert_eq!(fs.metadata("/f").unwrap().blocks(), 4);
    let free = fs.statfs().unwrap().blocks_free;
    // Shorter: the pages past the new end are gone (their blocks free), and an extension
    // afterwards reads zeros there, not the old bytes.
    let small = pattern(5000, 2);
    fs.write("/f", &small).unwrap();
    assert_eq!(fs.read("/f").unwrap(), small);
    assert_eq!(fs.metadata("/f").unwrap().blocks(), 2);
    assert!(fs.statfs().unwrap().blocks_free >= free + 2);
    fs.open_file("/f")
        .unwrap()
        .set_len(big.len() as u64)
        .unwrap();
    let got = fs.read("/f").unwrap();
    assert_eq!(&got[..5000], &small[..]);
    assert!(got[5000..].iter().all(|&b| b == 0), "old bytes came back");
    // Empty, then longer again; through a symlink; survives remount.
    fs.write("/f", b"").unwrap();
    assert_eq!(fs.metadata("/f").unwrap().len(), 0);
    fs.symlink("/f", "/l").unwrap();
    fs.write("/l", &big).unwrap();
    assert_eq!(fs.read("/f").unwrap(), big);
    // A dangling symlink names no file to write: NotFound, as for open.
    fs.symlink("/nowhere/x", "/dangling").unwrap();
    assert!(matches!(
        cause(fs.write("/dangling", b"x")),
        Err(novafs::EngineError::NotFound)
    ));
    assert!(matches!(
        cause(fs.write("/", b"x")),
        Err(novafs::EngineError::IsADirectory)
    ));
}
