//! A POSIX suite for the FUSE mount: permissions and ownership (as root and as `nobody`),
//! timestamps, rename-over rules, link counts, sparse files, O_APPEND, O_TRUNC, offsets past
//! 4 GiB, directory streams, error numbers. Each test ends with a clean unmount and fsck.

mod fuse_common;

use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuse_common::{fuse_available, run_in, sh_ok, Mounted};
use novafs::{Fs, MountOptions};

const NOBODY: u32 = 65534;

/// Run `cmd` with `sh -c` as uid/gid `nobody` (no supplementary groups).
fn as_nobody(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir("/")
        .output()
        .expect("run as nobody")
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or_else(|| panic!("no errno: {e}"))
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn mtime(p: &Path) -> SystemTime {
    fs::symlink_metadata(p).unwrap().modified().unwrap()
}

fn ctime(p: &Path) -> SystemTime {
    let m = fs::symlink_metadata(p).unwrap();
    UNIX_EPOCH + Duration::new(m.ctime() as u64, m.ctime_nsec() as u32)
}

fn atime(p: &Path) -> SystemTime {
    fs::symlink_metadata(p).unwrap().accessed().unwrap()
}

/// A time far in the past, with nanoseconds (to check they are kept).
fn old_time(k: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(1_000_000_000 + k, 123_456_789)
}

/// Set atime and mtime of `p` to old times.
fn age(p: &Path) {
    let f = File::open(p).unwrap();
    f.set_times(
        FileTimes::new()
            .set_accessed(old_time(1))
            .set_modified(old_time(2)),
    )
    .unwrap();
}

#[test]
fn permissions_and_ownership_as_root_and_nobody() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "allow_other");
    let mnt = m.mnt.display().to_string();
    // Root's tree.
    fs::set_permissions(&m.mnt, Permissions::from_mode(0o755)).unwrap();
    fs::write(m.p("secret"), b"top secret").unwrap();
    fs::set_permissions(m.p("secret"), Permissions::from_mode(0o600)).unwrap();
    fs::write(m.p("public"), b"hello").unwrap();
    fs::set_permissions(m.p("public"), Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(m.p("priv")).unwrap();
    fs::set_permissions(m.p("priv"), Permissions::from_mode(0o700)).unwrap();
    fs::create_dir(m.p("pub")).unwrap();
    fs::set_permissions(m.p("pub"), Permissions::from_mode(0o777)).unwrap();
    fs::create_dir(m.p("tmp")).unwrap();
    fs::set_permissions(m.p("tmp"), Permissions::from_mode(0o1777)).unwrap();
    fs::write(m.p("tmp/rootfile"), b"r").unwrap();
    fs::write(m.p("none"), b"no bits").unwrap();
    fs::set_permissions(m.p("none"), Permissions::from_mode(0o000)).unwrap();
    assert_eq!(mode(&m.p("tmp")), 0o1777);

    // Root bypasses permission bits (CAP_DAC_OVERRIDE; the kernel checks them).
    assert_eq!(fs::read(m.p("none")).unwrap(), b"no bits");

    // nobody: what the bits allow and nothing more.
    let denied = |cmd: &str| {
        let o = as_nobody(cmd);
        assert!(!o.status.success(), "nobody could `{cmd}`");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            err.contains("Permission denied") || err.contains("Operation not permitted"),
            "`{cmd}`: {err}"
        );
    };
    let allowed = |cmd: &str| -> String {
        let o = as_nobody(cmd);
        assert!(o.status.success(), "nobody could not `{cmd}`: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(allowed(&format!("cat {mnt}/public")), "hello");
    denied(&format!("cat {mnt}/secret"));
    denied(&format!("cat {mnt}/none"));
    denied(&format!("echo x >> {mnt}/public"));
    denied(&format!("ls {mnt}/priv"));
    denied(&format!("touch {mnt}/priv/x"));
    denied(&format!("touch {mnt}/newfile"));
    denied(&format!("rm {mnt}/public"));
    denied(&format!("rm {mnt}/tmp/rootfile")); // sticky directory
    denied(&format!("chmod 777 {mnt}/public"));
    denied(&format!("touch -d 2001-01-01 {mnt}/public")); // explicit times need ownership
    allowed(&format!("touch {mnt}/pub/mine && mkdir {mnt}/pub/mydir"));
    allowed(&format!("touch {mnt}/tmp/nobodys"));
    allowed(&format!("chmod 600 {mnt}/pub/mine"));
    allowed(&format!("touch -d 2001-01-01 {mnt}/pub/mine"));
    denied(&format!("chown root {mnt}/pub/mine"));
    allowed(&format!("rm {mnt}/tmp/nobodys")); // own file in a sticky directory
    let md = fs::metadata(m.p("pub/mine")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (NOBODY, NOBODY, 0o600)
    );
    assert_eq!(fs::metadata(m.p("pub/mydir")).unwrap().uid(), NOBODY);

    // chown by root; the new owner may now write.
    std::os::unix::fs::chown(m.p("public"), Some(NOBODY), Some(1234)).unwrap();
    let md = fs::metadata(m.p("public")).unwrap();
    assert_eq!((md.uid(), md.gid()), (NOBODY, 1234));
    allowed(&format!("echo more >> {mnt}/public"));
    assert_eq!(fs::read(m.p("public")).unwrap(), b"hellomore\n");

    // A set-group-ID directory: new entries take its group; subdirectories keep the bit.
    fs::create_dir(m.p("sgid")).unwrap();
    std::os::unix::fs::chown(m.p("sgid"), None, Some(4321)).unwrap();
    fs::set_permissions(m.p("sgid"), Permissions::from_mode(0o2777)).unwrap();
    allowed(&format!("touch {mnt}/sgid/f && mkdir {mnt}/sgid/d"));
    assert_eq!(fs::metadata(m.p("sgid/f")).unwrap().gid(), 4321);
    let d = fs::metadata(m.p("sgid/d")).unwrap();
    assert_eq!(d.gid(), 4321);
    assert_eq!(d.mode() & 0o2000, 0o2000);

    // umask applies to new files.
    sh_ok(&format!(
        "umask 027 && touch {mnt}/masked && mkdir {mnt}/maskeddir"
    ));
    assert_eq!(mode(&m.p("masked")), 0o640);
    assert_eq!(mode(&m.p("maskeddir")), 0o750);

    m.unmount();
    m.fsck_clean();
    // Owners and modes are stored in the image.
    let fs = Fs::open(&m.image, &MountOptions::default()).unwrap();
    let md = fs.metadata("/pub/mine").unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode()), (NOBODY, NOBODY, 0o600));
    assert_eq!(fs.metadata("/tmp").unwrap().mode(), 0o1777);
    assert_eq!(fs.metadata("/public").unwrap().gid(), 1234);
    fs.unmount().unwrap();
}

#[test]
fn timestamps_follow_the_calls_that_change_them() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let f = m.p("f");
    let d = m.p("d");
    fs::create_dir(&d).unwrap();
    fs::write(&f, b"0123456789").unwrap();

    // utimensat stores both times exactly (nanoseconds).
    age(&f);
    assert_eq!(atime(&f), old_time(1));
    assert_eq!(mtime(&f), old_time(2));

    // write: mtime and ctime move to now.
    let before = SystemTime::now();
    let c0 = ctime(&f);
    OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .write_all_at(b"x", 3)
        .unwrap();
    assert!(mtime(&f) >= before, "write did not update mtime");
    assert!(
        ctime(&f) > c0 && ctime(&f) >= before,
        "write did not update ctime"
    );

    // read: no change to mtime or ctime (atime: noatime semantics).
    age(&f);
    let (m0, c0) = (mtime(&f), ctime(&f));
    let mut buf = String::new();
    File::open(&f).unwrap().read_to_string(&mut buf).unwrap();
    assert_eq!(buf, "012x456789");
    assert_eq!((mtime(&f), ctime(&f)), (m0, c0));
    assert_eq!(atime(&f), old_time(1));

    // chmod, chown: ctime only.
    let before = SystemTime::now();
    fs::set_permissions(&f, Permissions::from_mode(0o640)).unwrap();
    assert_eq!(mtime(&f), old_time(2), "chmod changed mtime");
    assert!(ctime(&f) >= before, "chmod did not update ctime");
    let c1 = ctime(&f);
    std::os::unix::fs::chown(&f, Some(5), Some(6)).unwrap();
    assert!(ctime(&f) > c1, "chown did not update ctime");
    assert_eq!(mtime(&f), old_time(2));

    // truncate: mtime and ctime.
    let before = SystemTime::now();
    OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(4)
        .unwrap();
    assert!(mtime(&f) >= before && ctime(&f) >= before, "truncate");

    // create / unlink / mkdir / rmdir in a directory: its mtime and ctime.
    for (what, op) in [
        (
            "create",
            Box::new(|d: &Path| fs::write(d.join("n"), b"").unwrap()) as Box<dyn Fn(&Path)>,
        ),
        (
            "unlink",
            Box::new(|d: &Path| fs::remove_file(d.join("n")).unwrap()),
        ),
        (
            "mkdir",
            Box::new(|d: &Path| fs::create_dir(d.join("s")).unwrap()),
        ),
        (
            "rmdir",
            Box::new(|d: &Path| fs::remove_dir(d.join("s")).unwrap()),
        ),
        (
            "symlink",
            Box::new(|d: &Path| std::os::unix::fs::symlink("t", d.join("l")).unwrap()),
        ),
    ] {
        age(&d);
        let before = SystemTime::now();
        op(&d);
        assert!(
            mtime(&d) >= before,
            "{what} did not update the directory's mtime"
        );
        assert!(
            ctime(&d) >= before,
            "{what} did not update the directory's ctime"
        );
    }

    // link: the file's ctime and the directory's mtime; rename: both directories' mtimes.
    age(&f);
    age(&d);
    let before = SystemTime::now();
    fs::hard_link(&f, d.join("hl")).unwrap();
    assert!(ctime(&f) >= before, "link did not update the file's ctime");
    assert_eq!(mtime(&f), old_time(2), "link changed the file's mtime");
    assert!(mtime(&d) >= before);
    age(&d);
    age(&m.mnt);
    let before = SystemTime::now();
    fs::rename(d.join("hl"), m.p("moved")).unwrap();
    assert!(mtime(&d) >= before && mtime(&m.mnt) >= before, "rename");

    m.unmount();
    m.fsck_clean();
    let fs = Fs::open(&m.image, &MountOptions::default()).unwrap();
    assert_eq!(fs.metadata("/f").unwrap().accessed(), old_time(1));
    fs.unmount().unwrap();
}

/// renameat2(2) through perl's syscall (x86_64 number 316): returns 0 or the errno.
#[cfg(target_arch = "x86_64")]
fn renameat2(from: &Path, to: &Path, flags: u32) -> i32 {
    let o = Command::new("perl")
        .arg("-e")
        .arg(
            "my ($a, $b, $f) = ($ARGV[0], $ARGV[1], $ARGV[2] + 0); \
             my $r = syscall(316, -100, $a, -100, $b, $f); print(($r < 0) ? $! + 0 : 0)",
        )
        .arg(from)
        .arg(to)
        .arg(flags.to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .parse()
        .expect("perl output")
}

#[test]
fn rename_over_rules() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let p = |s: &str| m.p(s);
    fs::write(p("a"), b"A").unwrap();
    fs::write(p("b"), b"B").unwrap();
    fs::hard_link(p("b"), p("b2")).unwrap();
    fs::create_dir_all(p("d/sub")).unwrap();
    fs::create_dir(p("empty")).unwrap();
    fs::create_dir(p("full")).unwrap();
    fs::write(p("full/x"), b"").unwrap();

    // A file over a file with two links: the victim keeps its other name.
    fs::rename(p("a"), p("b")).unwrap();
    assert_eq!(fs::read(p("b")).unwrap(), b"A");
    assert!(!p("a").exists());
    assert_eq!(fs::read(p("b2")).unwrap(), b"B");
    assert_eq!(fs::metadata(p("b2")).unwrap().nlink(), 1);
    // Two names of one inode: nothing happens.
    fs::hard_link(p("b"), p("b3")).unwrap();
    fs::rename(p("b"), p("b3")).unwrap();
    assert!(p("b").exists() && p("b3").exists());

    // Directory rules.
    assert_eq!(
        errno(fs::rename(p("b2"), p("empty")).unwrap_err()),
        libc::EISDIR
    );
    assert_eq!(
        errno(fs::rename(p("empty"), p("b2")).unwrap_err()),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(fs::rename(p("d"), p("full")).unwrap_err()),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(fs::rename(p("d"), p("d/sub/in")).unwrap_err()),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs::rename(p("nothing"), p("x")).unwrap_err()),
        libc::ENOENT
    );
    let root_links = fs::metadata(&m.mnt).unwrap().nlink();
    fs::rename(p("d"), p("empty")).unwrap(); // over an empty directory
    assert!(p("empty/sub").is_dir() && !p("d").exists());
    assert_eq!(fs::metadata(&m.mnt).unwrap().nlink(), root_links - 1);
    // Across directories: link counts of both parents follow.
    let full_links = fs::metadata(p("full")).unwrap().nlink();
    fs::rename(p("empty/sub"), p("full/sub")).unwrap();
    assert_eq!(fs::metadata(p("full")).unwrap().nlink(), full_links + 1);
    assert_eq!(fs::metadata(p("empty")).unwrap().nlink(), 2);
    // `..` of the moved directory is its new parent.
    assert_eq!(
        fs::metadata(p("full/sub/..")).unwrap().ino(),
        fs::metadata(p("full")).unwrap().ino()
    );

    #[cfg(target_arch = "x86_64")]
    {
        const NOREPLACE: u32 = 1;
        const EXCHANGE: u32 = 2;
        fs::write(p("c"), b"C").unwrap();
        assert_eq!(renameat2(&p("c"), &p("b"), NOREPLACE), libc::EEXIST);
        assert_eq!(fs::read(p("b")).unwrap(), b"A");
        assert_eq!(renameat2(&p("c"), &p("c-new"), NOREPLACE), 0);
        assert_eq!(fs::read(p("c-new")).unwrap(), b"C");
        // An atomic swap of two files, then of a file and a directory across directories.
        assert_eq!(renameat2(&p("c-new"), &p("b"), EXCHANGE), 0);
        assert_eq!(fs::read(p("c-new")).unwrap(), b"A");
        assert_eq!(fs::read(p("b")).unwrap(), b"C");
        assert_eq!(
            renameat2(&p("c-new"), &p("missing"), EXCHANGE),
            libc::ENOENT
        );
        fs::create_dir(p("xd")).unwrap();
        fs::write(p("xd/inner"), b"I").unwrap();
        let full_links = fs::metadata(p("full")).unwrap().nlink();
        assert_eq!(renameat2(&p("xd"), &p("full/sub"), EXCHANGE), 0);
        assert_eq!(fs::read(p("full/sub/inner")).unwrap(), b"I");
        assert!(fs::metadata(p("xd")).unwrap().is_dir());
        assert_eq!(fs::metadata(p("full")).unwrap().nlink(), full_links);
        assert_eq!(
            fs::metadata(p("full/sub/..")).unwrap().ino(),
            fs::metadata(p("full")).unwrap().ino()
        );
        // A directory cannot be swapped into its own subtree.
        assert_eq!(
            renameat2(&p("full"), &p("full/sub/inner"), EXCHANGE),
            libc::EINVAL
        );
    }
    m.unmount();
    m.fsck_clean();
}

#[test]
fn link_counts() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let nl = |p: &Path| fs::symlink_metadata(p).unwrap().nlink();
    let f = m.p("f");
    fs::write(&f, b"x").unwrap();
    assert_eq!(nl(&f), 1);
    for i in 0..5 {
        fs::hard_link(&f, m.p(&format!("l{i}"))).unwrap();
    }
    assert_eq!(nl(&f), 6);
    assert_eq!(nl(&m.p("l3")), 6);
    assert_eq!(
        fs::metadata(m.p("l3")).unwrap().ino(),
        fs::metadata(&f).unwrap().ino()
    );
    fs::remove_file(m.p("l0")).unwrap();
    fs::remove_file(&f).unwrap();
    assert_eq!(nl(&m.p("l4")), 4);
    assert_eq!(fs::read(m.p("l4")).unwrap(), b"x");
    // Hard links to directories are refused.
    fs::create_dir(m.p("d")).unwrap();
    assert_eq!(
        errno(fs::hard_link(m.p("d"), m.p("dl")).unwrap_err()),
        libc::EPERM
    );
    assert_eq!(
        errno(fs::hard_link(m.p("l1"), m.p("l2")).unwrap_err()),
        libc::EEXIST
    );
    // Directories: 2 + subdirectories; files do not count.
    assert_eq!(nl(&m.p("d")), 2);
    fs::create_dir(m.p("d/a")).unwrap();
    fs::create_dir(m.p("d/b")).unwrap();
    fs::write(m.p("d/file"), b"").unwrap();
    assert_eq!(nl(&m.p("d")), 4);
    fs::remove_dir(m.p("d/a")).unwrap();
    assert_eq!(nl(&m.p("d")), 3);
    // A symlink is its own inode.
    std::os::unix::fs::symlink("l1", m.p("sym")).unwrap();
    assert_eq!(nl(&m.p("sym")), 1);
    assert_eq!(fs::read_link(m.p("sym")).unwrap(), Path::new("l1"));
    assert_eq!(fs::read(m.p("sym")).unwrap(), b"x");
    assert_eq!(nl(&m.p("l1")), 4);
    m.unmount();
    m.fsck_clean();
    let fs = Fs::open(&m.image, &MountOptions::default()).unwrap();
    assert_eq!(fs.metadata("/l1").unwrap().nlink(), 4);
    assert_eq!(fs.metadata("/d").unwrap().nlink(), 3);
    fs.unmount().unwrap();
}

#[test]
fn sparse_files_holes_and_fallocate() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let p = m.p("sparse");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all_at(b"end", 1 << 30).unwrap(); // 1 GiB on a 64 MiB image
    let md = f.metadata().unwrap();
    assert_eq!(md.len(), (1 << 30) + 3);
    assert_eq!(md.blocks(), 8, "one 4 KiB block in 512-byte units");
    let mut buf = vec![1u8; 8192];
    f.read_exact_at(&mut buf, 12345).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "a hole reads as zeros");
    f.read_exact_at(&mut buf[..3], 1 << 30).unwrap();
    assert_eq!(&buf[..3], b"end");

    // Extending with truncate makes a hole; shrinking frees blocks.
    let q = m.p("grown");
    fs::write(&q, vec![7u8; 20_000]).unwrap();
    assert_eq!(fs::metadata(&q).unwrap().blocks(), 5 * 8);
    sh_ok(&format!("truncate -s 10M '{}'", q.display()));
    assert_eq!(fs::metadata(&q).unwrap().len(), 10 << 20);
    assert_eq!(fs::metadata(&q).unwrap().blocks(), 5 * 8);
    sh_ok(&format!("truncate -s 5000 '{}'", q.display()));
    let md = fs::metadata(&q).unwrap();
    assert_eq!((md.len(), md.blocks()), (5000, 2 * 8));
    let data = fs::read(&q).unwrap();
    assert!(data.iter().all(|&b| b == 7));

    // fallocate: allocate (mode 0), punch a hole (PUNCH_HOLE|KEEP_SIZE), KEEP_SIZE past the
    // end (blocks kept, size unchanged).
    let r = m.p("falloc");
    fs::write(&r, vec![9u8; 3 * 4096]).unwrap();
    sh_ok(&format!("fallocate -o 0 -l 65536 '{}'", r.display()));
    let md = fs::metadata(&r).unwrap();
    assert_eq!((md.len(), md.blocks()), (65536, 16 * 8));
    sh_ok(&format!("fallocate -p -o 4096 -l 4096 '{}'", r.display()));
    let md = fs::metadata(&r).unwrap();
    assert_eq!((md.len(), md.blocks()), (65536, 15 * 8));
    let data = fs::read(&r).unwrap();
    assert!(data[..4096].iter().all(|&b| b == 9));
    assert!(data[4096..8192].iter().all(|&b| b == 0));
    assert!(data[8192..12288].iter().all(|&b| b == 9));
    assert!(data[12288..].iter().all(|&b| b == 0));
    sh_ok(&format!("fallocate -n -o 0 -l 1M '{}'", r.display()));
    let md = fs::metadata(&r).unwrap();
    // The hole at page 1 is filled too: 256 pages.
    assert_eq!((md.len(), md.blocks()), (65536, 256 * 8));
    assert_eq!(fs::metadata(&r).unwrap().len(), 65536);
    drop(f);
    m.unmount();
    m.fsck_clean();
}

#[test]
fn o_append_and_o_trunc() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let p = m.p("log");
    fs::write(&p, b"start:").unwrap();
    // O_APPEND: every write goes to the end, whatever the file offset.
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"1").unwrap();
    b.write_all(b"2").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"3").unwrap();
    b.write_all(b"4").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"start:1234");
    // A shell append.
    sh_ok(&format!("echo five >> '{}'", p.display()));
    assert_eq!(fs::read(&p).unwrap(), b"start:1234five\n");
    drop((a, b));

    // O_TRUNC: length 0, blocks freed, mtime updated; the new contents alone remain.
    fs::write(&p, vec![1u8; 50_000]).unwrap();
    age(&p);
    let before = SystemTime::now();
    let mut t = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    let md = t.metadata().unwrap();
    assert_eq!((md.len(), md.blocks()), (0, 0));
    assert!(mtime(&p) >= before, "O_TRUNC did not update mtime");
    t.write_all(b"new").unwrap();
    drop(t);
    assert_eq!(fs::read(&p).unwrap(), b"new");
    // O_TRUNC on an empty file, and shell truncation by redirection.
    sh_ok(&format!(
        "printf abc > '{}' && printf d > '{}'",
        p.display(),
        p.display()
    ));
    assert_eq!(fs::read(&p).unwrap(), b"d");
    // O_CREAT|O_EXCL on an existing name.
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap_err();
    assert_eq!(errno(e), libc::EEXIST);
    m.unmount();
    m.fsck_clean();
}

#[test]
fn offsets_past_4_gib() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let p = m.p("large");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    let four = 4u64 << 30;
    // Across the 4 GiB boundary, far past it, and near 2^40.
    f.write_all_at(b"ABCDEFGH", four - 4).unwrap();
    f.write_all_at(b"six", 6 << 30).unwrap();
    f.write_all_at(b"tera", (1 << 40) + 4093).unwrap(); // crosses a page boundary too
    let mut buf = [0u8; 8];
    f.read_exact_at(&mut buf, four - 4).unwrap();
    assert_eq!(&buf, b"ABCDEFGH");
    f.read_exact_at(&mut buf[..3], 6 << 30).unwrap();
    assert_eq!(&buf[..3], b"six");
    f.read_exact_at(&mut buf[..4], (1 << 40) + 4093).unwrap();
    assert_eq!(&buf[..4], b"tera");
    let md = f.metadata().unwrap();
    assert_eq!(md.len(), (1 << 40) + 4097);
    assert_eq!(md.blocks(), 5 * 8);
    // Seek to the end through the kernel; truncate back below 4 GiB.
    let mut g = File::open(&p).unwrap();
    assert_eq!(g.seek(SeekFrom::End(0)).unwrap(), (1 << 40) + 4097);
    f.set_len(four + 2).unwrap();
    let mut tail = Vec::new();
    g.seek(SeekFrom::Start(four - 4)).unwrap();
    g.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"ABCDEF");
    drop((f, g));
    m.unmount();
    m.fsck_clean();
    let fs = Fs::open(&m.image, &MountOptions::default()).unwrap();
    let md = fs.metadata("/large").unwrap();
    assert_eq!((md.len(), md.blocks()), (four + 2, 2));
    fs.unmount().unwrap();
}

#[test]
fn directory_streams_and_error_numbers() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let d = m.p("many");
    fs::create_dir(&d).unwrap();
    for i in 0..1500 {
        fs::write(d.join(format!("file-{i:05}")), b"").unwrap();
    }
    // ls and read_dir see every entry once (many readdir calls, offsets stable).
    let ls = sh_ok(&format!("ls -f '{}' | wc -l", d.display()));
    assert_eq!(ls.trim(), "1502"); // with . and ..
    let mut names: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 1500);
    // Deleting while iterating neither skips nor repeats entries.
    let mut seen = 0;
    for e in fs::read_dir(&d).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
        seen += 1;
    }
    assert_eq!(seen, 1500);
    assert_eq!(fs::read_dir(&d).unwrap().count(), 0);

    // Error numbers.
    let long = "x".repeat(256);
    assert_eq!(
        errno(fs::write(m.p(&long), b"").unwrap_err()),
        libc::ENAMETOOLONG
    );
    fs::write(m.p(&"y".repeat(255)), b"").unwrap();
    fs::write(d.join("f"), b"").unwrap();
    assert_eq!(errno(fs::remove_dir(&d).unwrap_err()), libc::ENOTEMPTY);
    assert_eq!(errno(fs::remove_file(&d).unwrap_err()), libc::EISDIR);
    assert_eq!(
        errno(fs::remove_dir(d.join("f")).unwrap_err()),
        libc::ENOTDIR
    );
    assert_eq!(errno(fs::create_dir(&d).unwrap_err()), libc::EEXIST);
    assert_eq!(
        errno(fs::write(d.join("f/x"), b"").unwrap_err()),
        libc::ENOTDIR
    );
    assert_eq!(errno(fs::read(m.p("missing")).unwrap_err()), libc::ENOENT);
    assert_eq!(
        errno(File::open(&d).unwrap().read(&mut [0u8; 4]).unwrap_err()),
        libc::EISDIR
    );
    // fsync and fdatasync succeed (writes are already durable).
    let f = OpenOptions::new().write(true).open(d.join("f")).unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    drop(f);
    m.unmount();
    m.fsck_clean();
}

/// fallocate ZERO_RANGE (with and without KEEP_SIZE), lseek SEEK_DATA/SEEK_HOLE from the file
/// map, and copy_file_range done by the server, each as on tmpfs.
#[test]
fn zero_range_seek_data_hole_and_copy_file_range() {
    if !fuse_available() {
        return;
    }
    use rustix::fs::{copy_file_range, seek, SeekFrom};
    let mut m = Mounted::new("64MiB", "");
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    // tmpfs has no ZERO_RANGE: the expected bytes are spelled out.
    {
        let p = m.p("z");
        fs::write(&p, vec![5u8; 4 * 4096]).unwrap();
        // Zero a range across a page boundary, then one past the end (the size grows), then
        // one past the end with KEEP_SIZE (the size stays).
        sh_ok(&format!("fallocate -z -o 4000 -l 5000 '{}'", p.display()));
        sh_ok(&format!("fallocate -z -o 16384 -l 8192 '{}'", p.display()));
        sh_ok(&format!(
            "fallocate -z -n -o 24576 -l 8192 '{}'",
            p.display()
        ));
        let data = fs::read(&p).unwrap();
        assert_eq!(data.len(), 24576);
        assert!(data[..4000].iter().all(|&b| b == 5));
        assert!(data[4000..9000].iter().all(|&b| b == 0));
        assert!(data[9000..16384].iter().all(|&b| b == 5));
        assert!(data[16384..].iter().all(|&b| b == 0));
        // Zeroed ranges are allocated: 6 pages (with KEEP_SIZE the range stops at the end:
        // novafs keeps no blocks past the end of a file).
        assert_eq!(fs::metadata(&p).unwrap().blocks(), 6 * 8);
    }
    for root in [m.mnt.clone(), tmp.path().to_path_buf()] {
        // A file with data at pages 0 and 3, holes at 1..3 and after 4 (up to 6 pages).
        let s = root.join("sparse");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&s)
            .unwrap();
        f.write_all_at(b"a", 0).unwrap();
        f.write_all_at(b"b", 3 * 4096 + 10).unwrap();
        f.set_len(6 * 4096).unwrap();
        let at = |w: SeekFrom| seek(&f, w).map_err(|e| e.raw_os_error());
        assert_eq!(at(SeekFrom::Data(0)), Ok(0), "{}", root.display());
        assert_eq!(at(SeekFrom::Hole(0)), Ok(4096));
        assert_eq!(at(SeekFrom::Data(4096)), Ok(3 * 4096));
        assert_eq!(at(SeekFrom::Data(3 * 4096 + 5)), Ok(3 * 4096 + 5));
        assert_eq!(at(SeekFrom::Hole(3 * 4096)), Ok(4 * 4096));
        assert_eq!(at(SeekFrom::Data(4 * 4096)), Err(libc::ENXIO));
        assert_eq!(at(SeekFrom::Hole(6 * 4096)), Err(libc::ENXIO));

        // copy_file_range: the source's bytes land at the destination's offset.
        let d = root.join("copy");
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&d)
            .unwrap();
        let mut off_in = 4000u64;
        let mut off_out = 100u64;
        let mut left = 9000usize;
        while left > 0 {
            let n = copy_file_range(&f, Some(&mut off_in), &out, Some(&mut off_out), left).unwrap();
            assert!(n > 0);
            left -= n;
        }
        let mut want = vec![0u8; 100];
        want.extend_from_slice(&fs::read(&s).unwrap()[4000..13000]);
        assert_eq!(fs::read(&d).unwrap(), want, "{}", root.display());
    }
    m.unmount();
    m.fsck_clean();
}

/// FIFOs, sockets and device nodes through the mount: mkfifo and mknod make them, ls and stat
/// show their kind and device number, a FIFO carries data between two processes (the kernel's
/// pipe), and they survive unmount with fsck clean; as on tmpfs.
#[test]
fn fifos_sockets_and_device_nodes() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    let script = r#"
        cd "$R" && mkfifo -m 640 fifo && mknod null c 1 3 && mknod sda b 8 0 &&
        python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.bind("sock")' 2>/dev/null ||
            true
        stat -c '%n %F %a %t:%T %h' fifo null sda
        ln fifo fifo2 && stat -c '%n %h' fifo
        (echo through-the-pipe > fifo &) ; cat fifo
        mv sda sdb && ls
    "#;
    let on_mount = run_in(&m.mnt, script);
    assert_eq!(on_mount, run_in(tmp.path(), script), "mount vs tmpfs");
    assert!(on_mount.1.contains("fifo fifo 640 0:0 1"), "{on_mount:?}");
    assert!(
        on_mount.1.contains("null character special file 644 1:3"),
        "{on_mount:?}"
    );
    assert!(on_mount.1.contains("through-the-pipe"), "{on_mount:?}");
    m.unmount();
    m.fsck_clean();
    let fs = Fs::open(&m.image, &MountOptions::default()).unwrap();
    assert_eq!(fs.symlink_metadata("/sdb").unwrap().rdev(), 8 << 8);
    assert_eq!(
        fs.symlink_metadata("/fifo2").unwrap().file_type(),
        novafs::FileType::Fifo
    );
    fs.unmount().unwrap();
}
