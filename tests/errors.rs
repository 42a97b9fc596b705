//! One test per error kind: typed, mapped to errno, and nothing half-done.

mod cause;
use cause::cause;
use std::io::{Seek, SeekFrom, Write};

use novafs::{EngineError as Error, FormatOptions, Fs, MountOptions};

fn fresh(size: u64) -> (tempfile::TempDir, std::path::PathBuf, Fs) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("e.img");
    let fs = Fs::format(&img, size, &FormatOptions::default()).unwrap();
    (dir, img, fs)
}

fn errno(e: impl Into<novafs::Error>) -> i32 {
    e.into().errno()
}

#[test]
fn not_found_exists_not_dir_is_dir_not_empty() {
    let (_d, _img, fs) = fresh(8 << 20);
    assert!(matches!(cause(fs.metadata("/nope")), Err(Error::NotFound)));
    assert_eq!(errno(fs.remove_file("/nope").unwrap_err()), libc::ENOENT);
    fs.create_dir("/d").unwrap();
    assert!(matches!(
        cause(fs.create_dir("/d")),
        Err(Error::AlreadyExists)
    ));
    fs.write("/d/f", b"x").unwrap();
    assert!(matches!(
        cause(fs.create_dir("/d/f/g")),
        Err(Error::NotADirectory)
    ));
    assert!(matches!(
        cause(fs.remove_file("/d")),
        Err(Error::IsADirectory)
    ));
    assert!(matches!(
        cause(fs.remove_dir("/d")),
        Err(Error::DirectoryNotEmpty)
    ));
    assert!(matches!(
        cause(fs.remove_dir("/d/f")),
        Err(Error::NotADirectory)
    ));
    assert!(matches!(
        cause(fs.open_options().create_new(true).write(true).open("/d/f")),
        Err(Error::AlreadyExists)
    ));
    assert!(matches!(
        cause(fs.open_options().write(true).open("/d")),
        Err(Error::IsADirectory)
    ));
    let io: std::io::Error = Error::NotFound.into();
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    let io: std::io::Error = Error::AlreadyExists.into();
    assert_eq!(io.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(errno(Error::DirectoryNotEmpty), libc::ENOTEMPTY);
}

#[test]
fn names_and_paths() {
    let (_d, _img, fs) = fresh(8 << 20);
    let long = "x".repeat(256);
    assert!(matches!(
        cause(fs.create_dir(format!("/{long}"))),
        Err(Error::NameTooLong(256))
    ));
    let ok = "y".repeat(255);
    fs.create_dir(format!("/{ok}")).unwrap();
    assert!(fs.exists(format!("/{ok}")));
    assert!(matches!(
        cause(fs.create_dir("")),
        Err(Error::InvalidPath(_))
    ));
    assert!(matches!(
        cause(fs.create_dir("/")),
        Err(Error::InvalidPath(_))
    ));
    assert!(matches!(
        cause(fs.remove_dir("/..")),
        Err(Error::InvalidPath(_))
    ));
    assert_eq!(errno(fs.create_dir("/a\0b").unwrap_err()), libc::EINVAL);
    // A NUL anywhere is the error, even after a name that is too long (as before the
    // one-pass parser: the whole path is checked for NUL first).
    assert!(matches!(
        cause(fs.create_dir(format!("/{long}/a\0b"))),
        Err(Error::InvalidPath(_))
    ));
    // A too-long name is found past the first one, and empty names and `.` are skipped.
    assert!(matches!(
        cause(fs.create_dir(format!("/{ok}/{long}"))),
        Err(Error::NameTooLong(256))
    ));
    fs.create_dir(format!("//./{ok}/./sub/")).unwrap();
    assert!(fs.exists(format!("/{ok}/sub")));
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"/\xff\x01 \xc3\xa9\n");
    fs.write(odd, b"odd").unwrap();
    assert_eq!(fs.read(odd).unwrap(), b"odd");
    assert!(matches!(
        cause(fs.rename("/", "/z")),
        Err(Error::InvalidPath(_))
    ));
}

#[test]
fn rename_rules() {
    let (_d, _img, fs) = fresh(8 << 20);
    fs.create_dir_all("/a/b/c").unwrap();
    assert!(matches!(
        cause(fs.rename("/a", "/a/b/c/x")),
        Err(Error::RenameIntoSelf)
    ));
    assert_eq!(errno(Error::RenameIntoSelf), libc::EINVAL);
    fs.write("/f", b"1").unwrap();
    assert!(matches!(
        cause(fs.rename("/a", "/f")),
        Err(Error::NotADirectory)
    ));
    assert!(matches!(
        cause(fs.rename("/f", "/a")),
        Err(Error::IsADirectory)
    ));
    fs.create_dir("/e").unwrap();
    assert!(matches!(
        cause(fs.rename("/e", "/a")),
        Err(Error::DirectoryNotEmpty)
    ));
    fs.rename("/a/b", "/e").unwrap(); // over an empty directory
    assert!(fs.metadata("/e/c").unwrap().is_dir());
    assert!(matches!(
        cause(fs.rename_with(
            "/f",
            "/e",
            novafs::RenameFlags {
                noreplace: true,
                ..Default::default()
            }
        )),
        Err(Error::AlreadyExists)
    ));
    fs.write("/g", b"2").unwrap();
    fs.rename("/f", "/g").unwrap();
    assert_eq!(fs.read("/g").unwrap(), b"1");
    assert!(matches!(
        cause(fs.hard_link("/e", "/e2")),
        Err(Error::NotPermitted(_))
    ));
}

#[test]
fn no_space_is_clean_and_recoverable() {
    let (_d, img, fs) = fresh(4 << 20);
    let before = fs.statfs().unwrap();
    let chunk = vec![0xabu8; 64 << 10];
    let mut written = 0u64;
    let f = fs.create("/big").unwrap();
    let err = loop {
        match f.write_at(&chunk, written) {
            Ok(_) => written += chunk.len() as u64,
            Err(e) => break e,
        }
    };
    assert!(matches!(cause(&err), Error::NoSpace), "{err:?}");
    assert_eq!(errno(err), libc::ENOSPC);
    // Nothing half-done: the file holds exactly the successful writes.
    assert_eq!(f.metadata().unwrap().len(), written);
    // Every other operation fails cleanly too (or succeeds if it needs no new block).
    let mut created = 0;
    for i in 0..2000 {
        match cause(fs.create(format!("/n{i}"))) {
            Ok(_) => created += 1,
            Err(Error::NoSpace) | Err(Error::NoInodes) => break,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    let _ = created;
    assert!(matches!(
        cause(f.write_at(&chunk, written)),
        Err(Error::NoSpace)
    ));
    drop(f);
    // Deleting frees the space at once.
    fs.remove_file("/big").unwrap();
    for i in 0..2000 {
        let _ = fs.remove_file(format!("/n{i}"));
    }
    // Everything came back but the root directory's log pages and any inode-table chunk
    // added for the files.
    let after = fs.statfs().unwrap();
    let root_log = fs
        .engine()
        .inode_layout(novafs::ROOT_INO)
        .unwrap()
        .log_pages
        .len() as u64;
    let chunks = fs.engine().chunk_blocks().len() as u64 - 1;
    assert_eq!(
        after.blocks_free,
        before.blocks_free - root_log - 32 * chunks
    );
    fs.write("/again", &chunk).unwrap();
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.read("/again").unwrap(), chunk);
    let s = fs.statfs().unwrap();
    fs.unmount().unwrap();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.statfs().unwrap(), s);
}

#[test]
fn image_in_use() {
    let (_d, img, fs) = fresh(4 << 20);
    match cause(Fs::open(&img, &MountOptions::default())) {
        Err(e @ Error::ImageInUse { pid }) => {
            // The holder is this process (the lock is per open file, not per process).
            assert_eq!(pid, Some(std::process::id()), "{e}");
            assert!(
                e.to_string()
                    .contains(&format!("process {} has it open", std::process::id())),
                "{e}"
            );
        }
        other => panic!("expected ImageInUse, got {other:?}"),
    }
    assert_eq!(errno(Error::ImageInUse { pid: None }), libc::EBUSY);
    fs.unmount().unwrap();
    Fs::open(&img, &MountOptions::default()).unwrap();
}

#[test]
fn unmount_releases_the_lock_and_stale_handles_fail_every_call() {
    let (_d, img, fs) = fresh(8 << 20);
    fs.write("/f", b"hello").unwrap();
    fs.create_dir("/d").unwrap();
    let clone = fs.clone();
    let f = fs.open_file("/f").unwrap();
    let m = f.map(0, 5, novafs::MapMode::Sync).unwrap();
    fs.unmount().unwrap();
    // The image is free at once, although a clone, a handle and a mapping still exist.
    let again = Fs::open(&img, &MountOptions::default()).unwrap();
    assert!(again.mount_report().clean);
    assert_eq!(again.read("/f").unwrap(), b"hello");
    // Every call through what outlived the unmount fails with Unmounted, reads included.
    let unmounted = |r: novafs::Result<()>, what: &str| match cause(r) {
        Err(Error::Unmounted) => {}
        other => panic!("{what}: expected Unmounted, got {other:?}"),
    };
    let mut buf = [0u8; 5];
    unmounted(f.read_at(&mut buf, 0).map(drop), "read_at");
    unmounted(f.write_at(b"x", 0).map(drop), "write_at");
    unmounted(f.metadata().map(drop), "File::metadata");
    unmounted(f.set_len(1), "set_len");
    unmounted(f.sync_all(), "sync_all");
    unmounted(m.read_at(&mut buf, 0).map(drop), "Mapping::read_at");
    unmounted(m.write_at(b"x", 0), "Mapping::write_at");
    unmounted(m.persist(0, 1), "Mapping::persist");
    unmounted(clone.read("/f").map(drop), "Fs::read");
    unmounted(clone.metadata("/f").map(drop), "Fs::metadata");
    unmounted(clone.read_dir("/").map(drop), "Fs::read_dir");
    unmounted(clone.write("/g", b"x"), "Fs::write");
    unmounted(clone.create_dir("/e"), "Fs::create_dir");
    unmounted(clone.statfs().map(drop), "Fs::statfs");
    unmounted(clone.sync(), "Fs::sync");
    assert_eq!(errno(Error::Unmounted), libc::ENOTCONN);
    drop((m, f, clone));
    // Nothing the stale handles did reached the image.
    assert_eq!(again.read("/f").unwrap(), b"hello");
    assert!(!again.exists("/g") && !again.exists("/e"));
    again.unmount().unwrap();
}

#[test]
fn format_refuses_an_existing_file_unless_overwrite() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let other = dir.path().join("precious.txt");
    std::fs::write(&other, b"not an image").unwrap();
    let r = Fs::format(&other, 4 << 20, &FormatOptions::default());
    assert!(matches!(cause(&r), Err(Error::AlreadyExists)), "{r:?}");
    assert_eq!(std::fs::read(&other).unwrap(), b"not an image");
    // A foreign file is not a novafs image (not "corrupt"), and so is an empty one.
    for bytes in [&b"not an image"[..], &[], &[7u8; 8192][..]] {
        std::fs::write(&other, bytes).unwrap();
        let r = Fs::open(&other, &MountOptions::default());
        assert!(
            matches!(cause(&r), Err(Error::NotNovafs)),
            "{} bytes: {r:?}",
            bytes.len()
        );
    }
    // An empty file may be formatted; overwrite formats over anything.
    std::fs::write(&other, b"").unwrap();
    Fs::format(&other, 4 << 20, &FormatOptions::default())
        .unwrap()
        .unmount()
        .unwrap();
    let r = Fs::format(&other, 4 << 20, &FormatOptions::default());
    assert!(matches!(cause(&r), Err(Error::AlreadyExists)), "{r:?}");
    let opts = FormatOptions {
        overwrite: true,
        ..FormatOptions::default()
    };
    let fs = Fs::format(&other, 8 << 20, &opts).unwrap();
    assert_eq!(fs.statfs().unwrap().blocks_total, 2048);
    fs.unmount().unwrap();
}

#[test]
fn open_or_format() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("oof.img");
    let opts = MountOptions::default();
    // Missing: formatted.
    let fs = Fs::open_or_format(&img, 4 << 20, &opts).unwrap();
    fs.write("/kept", b"data").unwrap();
    fs.unmount().unwrap();
    // Existing image: mounted, contents and size kept.
    let fs = Fs::open_or_format(&img, 8 << 20, &opts).unwrap();
    assert_eq!(fs.read("/kept").unwrap(), b"data");
    assert_eq!(fs.statfs().unwrap().blocks_total, 1024);
    fs.unmount().unwrap();
    // Empty: formatted. Foreign: refused, untouched.
    std::fs::write(&img, b"").unwrap();
    Fs::open_or_format(&img, 4 << 20, &opts)
        .unwrap()
        .unmount()
        .unwrap();
    std::fs::write(&img, b"someone else's file").unwrap();
    let r = Fs::open_or_format(&img, 4 << 20, &opts);
    assert!(matches!(cause(&r), Err(Error::NotNovafs)), "{r:?}");
    assert_eq!(std::fs::read(&img).unwrap(), b"someone else's file");
}

fn patch(img: &std::path::Path, off: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn unsupported_version_and_bad_magic() {
    let (_d, img, fs) = fresh(4 << 20);
    fs.unmount().unwrap();
    // Version 99 with a valid checksum: its own error, not "corrupt".
    let raw = std::fs::read(&img).unwrap();
    let mut sb: novafs_engine::layout::superblock::Superblock =
        bytemuck::pod_read_unaligned(&raw[..256]);
    sb.version = 99;
    sb.csum = novafs_engine::layout::checksum(&bytemuck::bytes_of(&sb)[..252]);
    patch(&img, 0, bytemuck::bytes_of(&sb));
    match cause(Fs::open(&img, &MountOptions::default())) {
        Err(Error::UnsupportedVersion {
            found: 99,
            supported: novafs_engine::layout::superblock::FORMAT_VERSION,
        }) => {}
        other => panic!("{other:?}"),
    }
    let junk = tempfile::NamedTempFile::new_in("/dev/shm").unwrap();
    std::fs::write(junk.path(), vec![0x5a; 2 << 20]).unwrap();
    assert!(matches!(
        cause(Fs::open(junk.path(), &MountOptions::default())),
        Err(Error::NotNovafs)
    ));
    // Too short to be an image: foreign (NotNovafs), unless it starts like one (a truncated
    // image is Corrupt).
    std::fs::write(junk.path(), b"tiny").unwrap();
    assert!(matches!(
        cause(Fs::open(junk.path(), &MountOptions::default())),
        Err(Error::NotNovafs)
    ));
    let head = std::fs::read(&img).unwrap()[..8192].to_vec();
    std::fs::write(junk.path(), head).unwrap();
    assert!(matches!(
        cause(Fs::open(junk.path(), &MountOptions::default())),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn superblock_replica_repairs_primary_and_both_bad_is_an_error() {
    let (_d, img, fs) = fresh(4 << 20);
    fs.write("/keep", b"data").unwrap();
    fs.unmount().unwrap();
    patch(&img, 20, &[0xff]);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert!(fs.mount_report().superblock_repaired);
    assert_eq!(fs.read("/keep").unwrap(), b"data");
    fs.unmount().unwrap();
    let len = std::fs::metadata(&img).unwrap().len();
    patch(&img, 20, &[0xff]);
    patch(&img, len - 4096 + 20, &[0xff]);
    match cause(Fs::open(&img, &MountOptions::default())) {
        Err(Error::Corrupt { what, location }) => {
            assert!(what.contains("superblock"), "{what}");
            assert!(location.contains("block 0"), "{location}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn handles_check_access() {
    let (_d, _img, fs) = fresh(4 << 20);
    fs.write("/f", b"abc").unwrap();
    let r = fs.open_options().read(true).open("/f").unwrap();
    assert!(matches!(
        cause(r.write_at(b"x", 0)),
        Err(Error::BadHandle(_))
    ));
    let w = fs.open_options().write(true).open("/f").unwrap();
    let mut b = [0u8; 1];
    assert!(matches!(
        cause(w.read_at(&mut b, 0)),
        Err(Error::BadHandle(_))
    ));
    assert!(matches!(
        cause(fs.open_options().open("/f")),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cause(w.allocate(0, 0)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn read_only_mount_refuses_changes() {
    let (_d, img, fs) = fresh(4 << 20);
    fs.write("/f", b"abc").unwrap();
    fs.unmount().unwrap();
    let ro = MountOptions {
        read_only: true,
        ..MountOptions::default()
    };
    let fs = Fs::open(&img, &ro).unwrap();
    assert_eq!(fs.read("/f").unwrap(), b"abc");
    assert!(matches!(cause(fs.create_dir("/d")), Err(Error::ReadOnly)));
    assert_eq!(errno(Error::ReadOnly), libc::EROFS);
    // Opening with `create` finds an existing file (as without it); a new name is refused.
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .create(true)
        .open("/f")
        .unwrap();
    assert!(matches!(cause(f.write_at(b"x", 0)), Err(Error::ReadOnly)));
    drop(f);
    assert!(matches!(
        cause(fs.open_options().write(true).create(true).open("/new")),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(
        cause(fs.open_options().write(true).create_new(true).open("/f")),
        Err(Error::AlreadyExists)
    ));
    assert!(matches!(
        cause(fs.open_options().write(true).create_new(true).open("/new")),
        Err(Error::ReadOnly)
    ));
    drop(fs);
    // The read-only session left the image clean.
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert!(fs.mount_report().clean);
}

#[test]
fn loops_huge_files_and_strict_dax() {
    let (_d, img, fs) = fresh(4 << 20);
    fs.symlink("/l2", "/l1").unwrap();
    fs.symlink("/l1", "/l2").unwrap();
    assert!(matches!(cause(fs.metadata("/l1")), Err(Error::Loop)));
    assert_eq!(errno(Error::Loop), libc::ELOOP);
    assert!(fs.symlink_metadata("/l1").unwrap().is_symlink());
    let f = fs.create("/f").unwrap();
    assert!(matches!(
        cause(f.write_at(b"x", u64::MAX - 1)),
        Err(Error::FileTooLarge)
    ));
    assert!(matches!(
        cause(f.set_len(1 << 60)),
        Err(Error::FileTooLarge)
    ));
    assert_eq!(errno(Error::FileTooLarge), libc::EFBIG);
    drop(f);
    fs.unmount().unwrap();
    // /dev/shm is tmpfs: the kernel refuses MAP_SYNC, and require_dax says so instead of
    // falling back.
    let strict = MountOptions {
        require_dax: true,
        ..MountOptions::default()
    };
    assert!(matches!(
        cause(Fs::open(&img, &strict)),
        Err(Error::DaxUnavailable)
    ));
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.media_mode(), novafs::MediaMode::Emulated);
}

#[test]
fn msync_mode_on_a_disk_file() {
    // A file outside tmpfs: every persist point also msyncs. Same results, only slower.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = dir.path().join("disk.img");
    let fs = Fs::format(&img, 4 << 20, &FormatOptions::default()).unwrap();
    let expect = if is_tmpfs(dir.path()) {
        novafs::MediaMode::Emulated
    } else {
        novafs::MediaMode::Msync
    };
    assert_eq!(fs.media_mode(), expect);
    fs.write("/a", &vec![3u8; 10000]).unwrap();
    fs.rename("/a", "/b").unwrap();
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.read("/b").unwrap(), vec![3u8; 10000]);
}

/// Whether `p` is on tmpfs, from /proc/self/mountinfo (no child process: a fork would share
/// the image's lock with the child until it execs).
fn is_tmpfs(p: &std::path::Path) -> bool {
    let p = p.canonicalize().unwrap();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut best: (usize, bool) = (0, false);
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let mount_point = fields[4];
        let fstype = fields.get(sep + 1).copied().unwrap_or("");
        if p.starts_with(mount_point) && mount_point.len() >= best.0 {
            best = (mount_point.len(), fstype == "tmpfs");
        }
    }
    best.1
}

#[test]
fn recovery_checks_link_counts_and_absurd_superblocks_do_not_panic() {
    let (_d, img, fs) = fresh(4 << 20);
    fs.write("/f", b"x").unwrap();
    let ino = fs.resolve("/f").unwrap();
    // Append a Link entry claiming 5 links to its log on the image (entry at the tail, then
    // the tail word), as a stray or crafted commit would.
    let l = fs.engine().inode_layout(ino).unwrap();
    fs.crash();
    let entry = novafs_engine::layout::entry::Entry::Link {
        nlink: 5,
        ctime_ns: 1,
        parent: 0,
    };
    let mut buf = Vec::new();
    entry.encode(l.next_seq, &mut buf);
    assert!(l.log_tail % 4096 + buf.len() as u64 <= 4032);
    patch(&img, l.log_tail, &buf);
    let tail_word = l.slot_off + novafs_engine::layout::inode::TAIL_OFFSET;
    patch(
        &img,
        tail_word,
        &(l.log_tail + buf.len() as u64).to_le_bytes(),
    );
    match cause(Fs::open(&img, &MountOptions::default())) {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("link count"), "{what}"),
        other => panic!("a wrong link count mounted: {other:?}"),
    }
    // A superblock with a valid checksum but an absurd size: a typed error, no overflow panic.
    let raw = std::fs::read(&img).unwrap();
    let mut sb: novafs_engine::layout::superblock::Superblock =
        bytemuck::pod_read_unaligned(&raw[..256]);
    sb.blocks_total = u64::MAX / 2;
    sb.csum = novafs_engine::layout::checksum(&bytemuck::bytes_of(&sb)[..252]);
    patch(&img, 0, bytemuck::bytes_of(&sb));
    patch(
        &img,
        std::fs::metadata(&img).unwrap().len() - 4096,
        bytemuck::bytes_of(&sb),
    );
    assert!(matches!(
        cause(Fs::open(&img, &MountOptions::default())),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn read_exact_at_past_the_end_is_unexpected_eof() {
    let (_d, _img, fs) = fresh(4 << 20);
    fs.write("/f", b"abc").unwrap();
    let f = fs.open_options().read(true).open("/f").unwrap();
    let mut buf = [0u8; 4];
    let e = f.read_exact_at(&mut buf, 0).unwrap_err();
    assert!(matches!(cause(&e), Error::UnexpectedEof), "{e:?}");
    let io: std::io::Error = e.into();
    assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof);
    let mut buf = [0u8; 3];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"abc");
}

#[test]
fn open_options_are_validated_as_std_does() {
    let (_d, _img, fs) = fresh(4 << 20);
    fs.write("/f", b"abc").unwrap();
    let invalid = |o: &novafs::OpenOptions, what: &str| match o.open("/f") {
        Err(e) if matches!(cause(&e), Error::InvalidArgument(_)) => {
            assert_eq!(e.errno(), libc::EINVAL);
            let io: std::io::Error = e.into();
            assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput, "{what}");
        }
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    };
    invalid(&fs.open_options(), "no access");
    invalid(
        fs.open_options().read(true).truncate(true),
        "truncate without write",
    );
    invalid(
        fs.open_options().read(true).create(true),
        "create without write",
    );
    invalid(
        fs.open_options().read(true).create_new(true),
        "create_new without write",
    );
    invalid(
        fs.open_options().append(true).truncate(true),
        "append + truncate",
    );
    invalid(
        fs.open_options().write(true).append(true).truncate(true),
        "write + append + truncate",
    );
    // Nothing was truncated by the refused opens.
    assert_eq!(fs.read("/f").unwrap(), b"abc");
    // What std allows: append alone, append + create, create_new + append + truncate.
    fs.open_options().append(true).open("/f").unwrap();
    fs.open_options()
        .append(true)
        .create(true)
        .open("/g")
        .unwrap();
    fs.open_options()
        .append(true)
        .truncate(true)
        .create_new(true)
        .open("/h")
        .unwrap();
    assert!(matches!(
        cause(
            fs.open_options()
                .append(true)
                .truncate(true)
                .create_new(true)
                .open("/f")
        ),
        Err(Error::AlreadyExists)
    ));
    // Same answers as std on a real file (InvalidInput; std's messages carry no errno).
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("f");
    std::fs::write(&real, b"abc").unwrap();
    #[expect(
        clippy::nonsensical_open_options,
        reason = "the invalid combination is what is tested"
    )]
    let std_err = std::fs::OpenOptions::new()
        .append(true)
        .truncate(true)
        .open(&real)
        .unwrap_err();
    assert_eq!(std_err.kind(), std::io::ErrorKind::InvalidInput);
    let std_err = std::fs::OpenOptions::new()
        .read(true)
        .create(true)
        .truncate(false)
        .open(&real)
        .unwrap_err();
    assert_eq!(std_err.kind(), std::io::ErrorKind::InvalidInput);
}

/// Facade calls that take a path say which operation failed on which path; the kind, the
/// errno and the typed cause stay what the engine said.
#[test]
fn errors_name_the_operation_and_the_path() {
    use std::io::ErrorKind;
    let (_d, img, fs) = fresh(8 << 20);
    fs.create_dir("/d").unwrap();
    fs.write("/d/f", b"x").unwrap();
    /// (error, operation, path, second path, errno, kind)
    type Case<'a> = (
        novafs::Error,
        &'a str,
        &'a str,
        Option<&'a str>,
        i32,
        ErrorKind,
    );
    let cases: Vec<Case> = vec![
        (
            fs.set_xattr("/d/f", "user.a", b"v", novafs::XattrFlags::Replace)
                .unwrap_err(),
            "set extended attribute of",
            "/d/f",
            None,
            libc::ENODATA,
            std::io::Error::from_raw_os_error(libc::ENODATA).kind(),
        ),
        (
            fs.get_xattr("/d/f", "user.none").unwrap_err(),
            "get extended attribute of",
            "/d/f",
            None,
            libc::ENODATA,
            std::io::Error::from_raw_os_error(libc::ENODATA).kind(),
        ),
        (
            fs.list_xattr("/d/nope").unwrap_err(),
            "list extended attributes of",
            "/d/nope",
            None,
            libc::ENOENT,
            ErrorKind::NotFound,
        ),
        (
            fs.remove_xattr("/d", "user.none").unwrap_err(),
            "remove extended attribute of",
            "/d",
            None,
            libc::ENODATA,
            std::io::Error::from_raw_os_error(libc::ENODATA).kind(),
        ),
        (
            fs.metadata("/nope/x").unwrap_err(),
            "read metadata of",
            "/nope/x",
            None,
            libc::ENOENT,
            ErrorKind::NotFound,
        ),
        (
            fs.symlink_metadata("/nope").unwrap_err(),
            "read metadata of",
            "/nope",
            None,
            libc::ENOENT,
            ErrorKind::NotFound,
        ),
        (
            fs.open_file("/d/missing").unwrap_err(),
            "open file",
            "/d/missing",
            None,
            libc::ENOENT,
            ErrorKind::NotFound,
        ),
        (
            fs.create("/d").unwrap_err(),
            "create file",
            "/d",
            None,
            libc::EISDIR,
            ErrorKind::IsADirectory,
        ),
        (
            fs.create_dir("/d").unwrap_err(),
            "create directory",
            "/d",
            None,
            libc::EEXIST,
            ErrorKind::AlreadyExists,
        ),
        (
            fs.create_dir_all("/d/f/g").unwrap_err(),
            "create directory",
            "/d/f/g",
            None,
            libc::ENOTDIR,
            ErrorKind::NotADirectory,
        ),
        (
            fs.remove_file("/d").unwrap_err(),
            "remove file",
            "/d",
            None,
            libc::EISDIR,
            ErrorKind::IsADirectory,
        ),
        (
            fs.remove_dir("/d").unwrap_err(),
            "remove directory",
            "/d",
            None,
            libc::ENOTEMPTY,
            ErrorKind::DirectoryNotEmpty,
        ),
        (
            fs.rename("/d/nope", "/e").unwrap_err(),
            "rename",
            "/d/nope",
            Some("/e"),
            libc::ENOENT,
            ErrorKind::NotFound,
        ),
        (
            fs.hard_link("/d", "/d2").unwrap_err(),
            "hard link",
            "/d",
            Some("/d2"),
            libc::EPERM,
            ErrorKind::PermissionDenied,
        ),
        (
            fs.symlink("/t", "/d/f").unwrap_err(),
            "create symlink",
            "/d/f",
            Some("/t"),
            libc::EEXIST,
            ErrorKind::AlreadyExists,
        ),
        (
            fs.read_dir("/d/f").unwrap_err(),
            "read directory",
            "/d/f",
            None,
            libc::ENOTDIR,
            ErrorKind::NotADirectory,
        ),
        (
            fs.read("/d").unwrap_err(),
            "read file",
            "/d",
            None,
            libc::EISDIR,
            ErrorKind::IsADirectory,
        ),
        (
            fs.write("/nope/f", b"x").unwrap_err(),
            "write file",
            "/nope/f",
            None,
            libc::ENOENT,
            ErrorKind::NotFound,
        ),
        (
            fs.read_link("/d/f").unwrap_err(),
            "read link",
            "/d/f",
            None,
            libc::EINVAL,
            ErrorKind::InvalidInput,
        ),
        (
            fs.set_permissions("/nope", 0o600).unwrap_err(),
            "set permissions of",
            "/nope",
            None,
            libc::ENOENT,
            ErrorKind::NotFound,
        ),
        (
            fs.resolve("/d/f/x").unwrap_err(),
            "resolve",
            "/d/f/x",
            None,
            libc::ENOTDIR,
            ErrorKind::NotADirectory,
        ),
        (
            Fs::open(&img, &MountOptions::default()).unwrap_err(),
            "mount image",
            img.to_str().unwrap(),
            None,
            libc::EBUSY,
            ErrorKind::ResourceBusy,
        ),
        (
            Fs::format(&img, 8 << 20, &FormatOptions::default()).unwrap_err(),
            "format image",
            img.to_str().unwrap(),
            None,
            libc::EBUSY,
            ErrorKind::ResourceBusy,
        ),
    ];
    for (e, op, path, to, errno, kind) in cases {
        let msg = e.to_string();
        let expect = match to {
            None => format!("failed to {op} `{path}`: {}", e.engine_error()),
            Some(to) => format!("failed to {op} `{path}` to `{to}`: {}", e.engine_error()),
        };
        assert_eq!(msg, expect);
        assert_eq!(e.operation(), Some(op), "{msg}");
        assert_eq!(e.path(), Some(std::path::Path::new(path)), "{msg}");
        assert_eq!(e.second_path(), to.map(std::path::Path::new), "{msg}");
        assert_eq!(e.errno(), errno, "{msg}");
        assert_eq!(e.raw_os_error(), Some(errno), "{msg}");
        assert_eq!(e.kind(), kind, "{msg}");
        // The kind is the errno's, as before; into io::Error: the errno and the kind.
        assert_eq!(e.kind(), e.engine_error().io_kind(), "{msg}");
        let io: std::io::Error = e.into();
        assert_eq!(io.raw_os_error(), Some(errno), "{msg}");
        assert_eq!(io.kind(), kind, "{msg}");
    }
    // Handle calls name the operation and the path the handle was opened with (as fs-err's
    // File does), even after a rename; the kind and errno are the cause's.
    let f = fs.open_options().read(true).open("/d/f").unwrap();
    assert_eq!(f.path(), std::path::Path::new("/d/f"));
    fs.rename("/d/f", "/d/f2").unwrap();
    let cases: [(novafs::Error, &str); 6] = [
        (f.write_at(b"y", 0).unwrap_err(), "write"),
        (f.append(b"y").unwrap_err(), "append to"),
        (f.set_len(0).unwrap_err(), "set the length of"),
        (f.punch_hole(0, 1).unwrap_err(), "punch a hole in"),
        (
            fs.open_options()
                .write(true)
                .open("/d/f2")
                .unwrap()
                .read_at(&mut [0u8; 1], 0)
                .unwrap_err(),
            "read",
        ),
        (
            fs.open_file("/d/f2")
                .unwrap()
                .read_exact_at(&mut [0u8; 64], 0)
                .unwrap_err(),
            "read",
        ),
    ];
    for (e, op) in cases {
        assert_eq!(e.operation(), Some(op), "{e}");
        assert!(e.path().is_some(), "{e}");
        assert!(
            e.to_string().starts_with(&format!("failed to {op} `/d/f")),
            "{e}"
        );
        assert_eq!(e.raw_os_error(), Some(e.errno()));
    }
    let e = f.write_at(b"y", 0).unwrap_err();
    assert_eq!(e.path(), Some(std::path::Path::new("/d/f")));
    assert_eq!(
        e.to_string(),
        format!("failed to write `/d/f`: {}", e.engine_error())
    );
    assert_eq!(e.errno(), libc::EBADF);
    // A mapping's calls name the path of the handle that made it.
    let ro = fs.open_options().read(true).open("/d/f2").unwrap();
    let m = ro.map(0, 1, novafs::MapMode::Sync).unwrap();
    let e = m.prepare_write(0, 1).unwrap_err();
    assert_eq!(e.operation(), Some("prepare a mapped range of"), "{e}");
    assert_eq!(e.path(), Some(std::path::Path::new("/d/f2")));
    assert_eq!(e.errno(), libc::EBADF);
    let e = m.read_at(&mut [0u8; 2], 0).unwrap_err();
    assert_eq!(e.operation(), Some("read a mapping of"), "{e}");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    drop(m);
    let eof = fs
        .open_file("/d/f2")
        .unwrap()
        .read_exact_at(&mut [0u8; 64], 0)
        .unwrap_err();
    assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(eof.path(), Some(std::path::Path::new("/d/f2")));
    let io: std::io::Error = eof.into();
    assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof);
}

/// Every engine error converts into an `io::Error` whose `raw_os_error()` is its errno and
/// whose kind is unchanged; `UnexpectedEof` keeps its kind (no errno has it) and carries the
/// message; a host I/O error is passed through.
#[test]
fn io_error_conversion_gives_the_errno_for_every_kind() {
    let all = [
        Error::NotFound,
        Error::AlreadyExists,
        Error::NotADirectory,
        Error::IsADirectory,
        Error::DirectoryNotEmpty,
        Error::NameTooLong(300),
        Error::InvalidPath("p".into()),
        Error::InvalidArgument("a".into()),
        Error::NoSpace,
        Error::NoInodes,
        Error::ImageInUse { pid: Some(1) },
        Error::Unmounted,
        Error::UnexpectedEof,
        Error::UnsupportedVersion {
            found: 9,
            supported: 2,
        },
        Error::NotNovafs,
        Error::corrupt("w", "l"),
        Error::Loop,
        Error::RenameIntoSelf,
        Error::TooManyLinks,
        Error::BadHandle("h"),
        Error::DaxUnavailable,
        Error::NotSupported("s"),
        Error::PastEnd,
        Error::FileTooLarge,
        Error::NotPermitted("p"),
        Error::ReadOnly,
        Error::NoData,
        Error::OutOfRange("r"),
        Error::TooBig("b"),
        Error::PermissionDenied("d"),
        Error::Io(std::io::Error::from_raw_os_error(libc::EIO)),
    ];
    for v in all {
        // Exhaustive: a new variant must be added to the list above.
        match &v {
            Error::NotFound
            | Error::AlreadyExists
            | Error::NotADirectory
            | Error::IsADirectory
            | Error::DirectoryNotEmpty
            | Error::NameTooLong(_)
            | Error::InvalidPath(_)
            | Error::InvalidArgument(_)
            | Error::NoSpace
            | Error::NoInodes
            | Error::ImageInUse { .. }
            | Error::Unmounted
            | Error::UnexpectedEof
            | Error::UnsupportedVersion { .. }
            | Error::NotNovafs
            | Error::Corrupt { .. }
            | Error::Loop
            | Error::RenameIntoSelf
            | Error::TooManyLinks
            | Error::BadHandle(_)
            | Error::DaxUnavailable
            | Error::NotSupported(_)
            | Error::PastEnd
            | Error::FileTooLarge
            | Error::NotPermitted(_)
            | Error::ReadOnly
            | Error::NoData
            | Error::OutOfRange(_)
            | Error::TooBig(_)
            | Error::PermissionDenied(_)
            | Error::Io(_) => {}
        }
        let (errno, kind, msg) = (v.errno(), v.io_kind(), v.to_string());
        let eof = matches!(v, Error::UnexpectedEof);
        let e = novafs::Error::from(v);
        assert_eq!(e.raw_os_error(), Some(errno), "{msg}");
        assert_eq!(e.kind(), kind, "{msg}");
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), kind, "{msg}");
        if eof {
            assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof);
            assert_eq!(io.raw_os_error(), None);
            assert!(io.to_string().contains("unexpected end of file"), "{io}");
        } else {
            assert_eq!(io.raw_os_error(), Some(errno), "{msg}");
        }
    }
    // Through std::io on a file handle, the same.
    let (_d, _img, fs) = fresh(4 << 20);
    fs.write("/f", b"abc").unwrap();
    let mut f = fs.open_options().read(true).open("/f").unwrap();
    let e = f.write(b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBADF));
}
