//! Extended attributes and POSIX ACLs through the library (format 3), and fallocate KEEP_SIZE
//! past the end: set/get/list/remove with ext4's errnos, values up to 64 KiB (inline and in
//! pieces), kept across remount and crash, bounded by GC (overwrites leave dead entries that
//! fast GC and compaction drop), ACL/mode consistency, a format-2 image upgraded by its first
//! read-write mount, fsck clean.

mod cause;
use cause::cause;
use novafs::{EngineError as Error, FormatOptions, Fs, MountOptions, XattrFlags};
use novafs_recovery::fsck::{self, FsckOptions};

fn fresh(bytes: u64) -> (tempfile::TempDir, std::path::PathBuf, Fs) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("x.img");
    let fs = Fs::format(&img, bytes, &FormatOptions::default()).unwrap();
    (dir, img, fs)
}

fn fsck_clean(img: &std::path::Path) {
    let r = fsck::check(img, &FsckOptions::default()).unwrap();
    assert_eq!(r.errors_found, 0, "fsck: {:?}", r.problems);
}

fn big(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn check_attrs(fs: &Fs) {
    assert_eq!(fs.get_xattr("/f", "user.small").unwrap(), b"hello");
    assert_eq!(fs.get_xattr("/f", "user.empty").unwrap(), b"");
    assert_eq!(fs.get_xattr("/f", "trusted.big").unwrap(), big(65536, 1));
    assert_eq!(fs.get_xattr("/d", "security.mid").unwrap(), big(5000, 2));
    let names = fs.list_xattr("/f").unwrap();
    assert_eq!(
        names,
        vec![
            b"trusted.big".to_vec(),
            b"user.empty".to_vec(),
            b"user.small".to_vec()
        ]
    );
    assert!(matches!(
        cause(fs.get_xattr("/f", "user.gone")),
        Err(Error::NoData)
    ));
}

#[test]
fn xattrs_are_set_read_listed_removed_and_kept() {
    let (_d, img, fs) = fresh(32 << 20);
    fs.write("/f", b"data").unwrap();
    fs.create_dir("/d").unwrap();
    fs.set_xattr("/f", "user.small", b"hello", XattrFlags::Any)
        .unwrap();
    fs.set_xattr("/f", "user.empty", b"", XattrFlags::Create)
        .unwrap();
    fs.set_xattr("/f", "trusted.big", &big(65536, 1), XattrFlags::Any)
        .unwrap();
    fs.set_xattr("/f", "user.gone", b"x", XattrFlags::Any)
        .unwrap();
    fs.remove_xattr("/f", "user.gone").unwrap();
    fs.set_xattr("/d", "security.mid", &big(5000, 9), XattrFlags::Any)
        .unwrap();
    fs.set_xattr("/d", "security.mid", &big(5000, 2), XattrFlags::Replace)
        .unwrap();
    check_attrs(&fs);
    // The data is untouched.
    assert_eq!(fs.read("/f").unwrap(), b"data");

    // Errors as on ext4, and nothing changed by them.
    let e = |r: novafs::Result<()>| cause(r).unwrap_err();
    assert!(matches!(
        e(fs.set_xattr("/f", "user.small", b"x", XattrFlags::Create)),
        Error::AlreadyExists
    ));
    assert!(matches!(
        e(fs.set_xattr("/f", "user.none", b"x", XattrFlags::Replace)),
        Error::NoData
    ));
    assert!(matches!(
        e(fs.remove_xattr("/f", "user.none")),
        Error::NoData
    ));
    let long = [&b"user."[..], &[b'n'; 251]].concat();
    let err = fs
        .set_xattr("/f", &long, b"x", XattrFlags::Any)
        .unwrap_err();
    assert_eq!(err.errno(), libc::ERANGE);
    assert!(err.to_string().contains("/f"), "{err}");
    assert_eq!(
        fs.set_xattr("/f", "", b"x", XattrFlags::Any)
            .unwrap_err()
            .errno(),
        libc::ERANGE
    );
    assert_eq!(
        fs.set_xattr("/f", "user.v", &vec![0; 65537], XattrFlags::Any)
            .unwrap_err()
            .errno(),
        libc::E2BIG
    );
    assert_eq!(
        fs.set_xattr("/f", "os2.x", b"x", XattrFlags::Any)
            .unwrap_err()
            .errno(),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        fs.get_xattr("/f", "user.none").unwrap_err().errno(),
        libc::ENODATA
    );
    assert_eq!(
        fs.set_xattr(
            "/f",
            "system.posix_acl_default",
            &acl(&[(1, 7, 0), (4, 5, 0), (0x20, 5, 0)]),
            XattrFlags::Any
        )
        .unwrap_err()
        .errno(),
        libc::EACCES
    );
    assert_eq!(
        fs.set_xattr("/f", "system.posix_acl_access", b"junk", XattrFlags::Any)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    // The longest name is fine.
    let longest = [&b"user."[..], &[b'n'; 250]].concat();
    fs.set_xattr("/d", &longest, b"v", XattrFlags::Any).unwrap();
    assert_eq!(fs.get_xattr("/d", &longest).unwrap(), b"v");
    fs.remove_xattr("/d", &longest).unwrap();
    check_attrs(&fs);

    fs.unmount().unwrap();
    fsck_clean(&img);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    check_attrs(&fs);
    // A crash right after a set: the set is there (durable on return).
    fs.set_xattr("/f", "user.late", b"after", XattrFlags::Any)
        .unwrap();
    fs.engine().crash();
    drop(fs);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    check_attrs_late(&fs);
    fs.unmount().unwrap();
    fsck_clean(&img);
}

fn check_attrs_late(fs: &Fs) {
    assert_eq!(fs.get_xattr("/f", "user.late").unwrap(), b"after");
    assert_eq!(fs.get_xattr("/f", "trusted.big").unwrap(), big(65536, 1));
    assert_eq!(fs.get_xattr("/d", "security.mid").unwrap(), big(5000, 2));
}

/// An ACL in Linux's xattr encoding from (tag, perm, id).
fn acl(es: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(t, p, id) in es {
        v.extend_from_slice(&t.to_le_bytes());
        v.extend_from_slice(&p.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn acls_follow_the_mode_and_are_inherited() {
    let (_d, img, fs) = fresh(16 << 20);
    fs.write("/f", b"x").unwrap();
    fs.set_permissions("/f", 0o644).unwrap();
    // user::rw- user:1000:r-- group::r-- mask::rwx other::---  => mode 0670 (mask in the group
    // bits), one commit.
    let a = acl(&[
        (1, 6, 0),
        (2, 4, 1000),
        (4, 4, 0),
        (0x10, 7, 0),
        (0x20, 0, 0),
    ]);
    fs.set_xattr("/f", "system.posix_acl_access", &a, XattrFlags::Any)
        .unwrap();
    assert_eq!(fs.metadata("/f").unwrap().mode() & 0o777, 0o670);
    assert_eq!(fs.get_xattr("/f", "system.posix_acl_access").unwrap(), a);
    // chmod rewrites owner, mask and other in the ACL (group_obj stays).
    fs.set_permissions("/f", 0o604).unwrap();
    let after = acl(&[
        (1, 6, 0),
        (2, 4, 1000),
        (4, 4, 0),
        (0x10, 0, 0),
        (0x20, 4, 0),
    ]);
    assert_eq!(
        fs.get_xattr("/f", "system.posix_acl_access").unwrap(),
        after
    );
    // An ACL the mode expresses is not stored: it only sets the mode.
    fs.set_xattr(
        "/f",
        "system.posix_acl_access",
        &acl(&[(1, 7, 0), (4, 5, 0), (0x20, 1, 0)]),
        XattrFlags::Any,
    )
    .unwrap();
    assert_eq!(fs.metadata("/f").unwrap().mode() & 0o777, 0o751);
    assert!(matches!(
        cause(fs.get_xattr("/f", "system.posix_acl_access")),
        Err(Error::NoData)
    ));
    // Default ACL inheritance: a new file gets the access ACL masked by its mode, a new
    // directory also the default ACL.
    fs.create_dir("/d").unwrap();
    let def = acl(&[
        (1, 7, 0),
        (2, 5, 1000),
        (4, 5, 0),
        (0x10, 7, 0),
        (0x20, 0, 0),
    ]);
    fs.set_xattr("/d", "system.posix_acl_default", &def, XattrFlags::Any)
        .unwrap();
    fs.write("/d/new", b"y").unwrap();
    let got = fs.get_xattr("/d/new", "system.posix_acl_access").unwrap();
    let m = fs.metadata("/d/new").unwrap().mode() & 0o777;
    // Created with 0o644: user::rw-, mask r-- (mask & group bits), other ---.
    assert_eq!(m, 0o640, "{m:o}");
    assert_eq!(
        got,
        acl(&[
            (1, 6, 0),
            (2, 5, 1000),
            (4, 5, 0),
            (0x10, 4, 0),
            (0x20, 0, 0)
        ])
    );
    fs.create_dir("/d/sub").unwrap();
    assert_eq!(
        fs.get_xattr("/d/sub", "system.posix_acl_default").unwrap(),
        def
    );
    fs.unmount().unwrap();
    fsck_clean(&img);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(
        fs.get_xattr("/d/sub", "system.posix_acl_default").unwrap(),
        def
    );
    assert_eq!(fs.metadata("/f").unwrap().mode() & 0o777, 0o751);
    fs.unmount().unwrap();
}

#[test]
fn overwritten_xattrs_are_collected() {
    let (_d, img, fs) = fresh(64 << 20);
    fs.write("/f", b"x").unwrap();
    let ino = fs.resolve("/f").unwrap();
    // 2,000 overwrites of a 20 KiB value (6 entries of ~5 pages' worth each time) and of a
    // small one: without GC the log would hold ~10,000 pages.
    for i in 0..2000u32 {
        fs.set_xattr("/f", "user.big", &big(20000, i as u8), XattrFlags::Any)
            .unwrap();
        fs.set_xattr("/f", "user.n", &i.to_le_bytes(), XattrFlags::Any)
            .unwrap();
    }
    // Bounded by compaction, triggered by the log's length in pages (a set of 20 KB takes 5
    // pages, ~6 entries): at most 8x what the state needs, and at least 64 pages.
    let pages = fs.engine().log_stats(ino).unwrap().pages;
    assert!(pages <= 80, "log of {pages} pages after 4,000 sets");
    assert!(fs.engine().gc_stats().thorough_runs >= 100);
    // A compaction keeps exactly the current values.
    fs.engine().gc_inode(ino).unwrap();
    let st = fs.engine().log_stats(ino).unwrap();
    assert!(st.entries <= st.needed, "{st:?}");
    assert_eq!(fs.get_xattr("/f", "user.big").unwrap(), big(20000, 207));
    assert_eq!(fs.get_xattr("/f", "user.n").unwrap(), 1999u32.to_le_bytes());
    // Removed ones leave nothing live.
    fs.remove_xattr("/f", "user.big").unwrap();
    for i in 0..200u32 {
        fs.set_xattr("/f", "user.n", &i.to_le_bytes(), XattrFlags::Any)
            .unwrap();
    }
    assert!(fs.engine().log_stats(ino).unwrap().pages <= 80);
    fs.engine().crash();
    drop(fs);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.list_xattr("/f").unwrap(), vec![b"user.n".to_vec()]);
    assert_eq!(fs.get_xattr("/f", "user.n").unwrap(), 199u32.to_le_bytes());
    fs.unmount().unwrap();
    fsck_clean(&img);
}

#[test]
fn a_full_image_refuses_a_set_with_enospc_and_keeps_the_old_value() {
    let (_d, img, fs) = fresh(2 << 20);
    fs.write("/f", b"x").unwrap();
    fs.set_xattr("/f", "user.v", b"old", XattrFlags::Any)
        .unwrap();
    // Fill the image.
    let mut i = 0;
    loop {
        match cause(fs.write(format!("/fill{i}"), &[7u8; 65536])) {
            Ok(()) => i += 1,
            Err(Error::NoSpace) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let mut failed = false;
    for n in 0..64 {
        match cause(fs.set_xattr("/f", format!("user.{n}"), &big(60000, 3), XattrFlags::Any)) {
            Ok(()) => {}
            Err(Error::NoSpace) => {
                failed = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(failed, "64 sets of 60 KB fit in a full 2 MiB image");
    assert_eq!(fs.get_xattr("/f", "user.v").unwrap(), b"old");
    // Removal works on a full image (it may use the reserve).
    fs.remove_xattr("/f", "user.v").unwrap();
    fs.unmount().unwrap();
    fsck_clean(&img);
}

#[test]
fn a_format_2_image_is_upgraded_and_then_takes_xattrs() {
    let (_d, img, fs) = fresh(16 << 20);
    fs.write("/old", b"format 2").unwrap();
    fs.unmount().unwrap();
    let set_version = |v: u32| {
        let mut data = std::fs::read(&img).unwrap();
        let last = data.len() - 4096;
        for at in [0, last] {
            data[at + 8..at + 12].copy_from_slice(&v.to_le_bytes());
            let csum = novafs_engine::layout::checksum(&data[at..at + 252]);
            data[at + 252..at + 256].copy_from_slice(&csum.to_le_bytes());
        }
        std::fs::write(&img, data).unwrap();
    };
    set_version(2);
    let ro = Fs::open(
        &img,
        &MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    )
    .unwrap();
    assert_eq!(ro.read("/old").unwrap(), b"format 2");
    assert_eq!(ro.list_xattr("/old").unwrap(), Vec::<Vec<u8>>::new());
    ro.unmount().unwrap();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.mount_report().format_upgraded_from, Some(2));
    fs.set_xattr("/old", "user.new", b"3", XattrFlags::Any)
        .unwrap();
    fs.unmount().unwrap();
    let data = std::fs::read(&img).unwrap();
    assert_eq!(
        u32::from_le_bytes(data[8..12].try_into().unwrap()),
        novafs_engine::layout::superblock::FORMAT_VERSION
    );
    fsck_clean(&img);
}

#[test]
fn fallocate_keep_size_past_the_end() {
    let (_d, img, fs) = fresh(16 << 20);
    fs.write("/f", &[5u8; 5000]).unwrap();
    let f = fs.open_options().read(true).write(true).open("/f").unwrap();
    // `blocks` counts 4 KiB pages.
    assert_eq!(fs.metadata("/f").unwrap().blocks(), 2);
    // 5 pages past the end (pages 2..7), one commit; the size stays.
    f.allocate_keep_size(6000, 5 * 4096 + 100).unwrap();
    let m = fs.metadata("/f").unwrap();
    assert_eq!(m.len(), 5000);
    assert_eq!(fs.read("/f").unwrap(), vec![5u8; 5000]);
    let keep = |fs: &Fs| {
        let m = fs.metadata("/f").unwrap();
        assert_eq!(m.len(), 5000);
        assert_eq!(m.blocks(), 7);
    };
    keep(&fs);
    drop(f);
    fs.unmount().unwrap();
    fsck_clean(&img);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    keep(&fs);
    fs.engine().crash();
    drop(fs);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    keep(&fs);
    // Growing over them: zeros. A write past them, then a truncate up over all.
    let f = fs.open_options().read(true).write(true).open("/f").unwrap();
    f.set_len(20000).unwrap();
    let mut want = vec![5u8; 5000];
    want.resize(20000, 0);
    assert_eq!(fs.read("/f").unwrap(), want);
    assert_eq!(fs.metadata("/f").unwrap().blocks(), 7, "kept by a grow");
    f.write_at(b"end", 30000).unwrap();
    want.resize(30000, 0);
    want.extend_from_slice(b"end");
    assert_eq!(fs.read("/f").unwrap(), want);
    // A shrink drops the pages beyond the new size.
    f.set_len(100).unwrap();
    assert_eq!(fs.metadata("/f").unwrap().blocks(), 1);
    f.allocate_keep_size(0, 40960).unwrap();
    assert_eq!(fs.metadata("/f").unwrap().len(), 100);
    f.set_len(40000).unwrap();
    let mut want = vec![5u8; 100];
    want.resize(40000, 0);
    assert_eq!(fs.read("/f").unwrap(), want);
    drop(f);
    fs.unmount().unwrap();
    fsck_clean(&img);
}
