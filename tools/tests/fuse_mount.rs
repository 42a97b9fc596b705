//! The FUSE mount end to end: mount an image with `novafs mount`, drive it with std::fs and
//! shell tools (cp -r, tar, diff -r, ls -l, df), unmount, then check the image with fsck and
//! read it back through the library.

mod fuse_common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use fuse_common::{fuse_available, is_mounted, run_in, sh_ok, Mounted, BIN};
use novafs::{Fs, MountOptions};

/// The workspace root (a tree of real source files to copy around).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Pseudo-random bytes (xorshift), reproducible.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every regular file under `root`, relative, sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn shell_tools_round_trip_then_fsck_and_library() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("256MiB", "");
    let src = workspace().join("engine");
    let mnt = m.mnt.display().to_string();
    let src_s = src.display().to_string();

    // cp -r, tar, diff -r, ls -l.
    sh_ok(&format!("cp -r '{src_s}' '{mnt}/cp'"));
    sh_ok(&format!("diff -r '{src_s}' '{mnt}/cp'"));
    sh_ok(&format!(
        "mkdir '{mnt}/tar' && tar -C '{src_s}' -cf - . | tar -C '{mnt}/tar' -xf -"
    ));
    sh_ok(&format!("diff -r '{src_s}' '{mnt}/tar'"));
    sh_ok(&format!("tar -C '{mnt}' -cf '{mnt}/all.tar' cp"));
    let listing = sh_ok(&format!("tar -tf '{mnt}/all.tar'"));
    assert!(listing.contains("cp/src/engine.rs"), "{listing}");
    let ls = sh_ok(&format!("ls -l '{mnt}/cp/src'"));
    assert!(ls.contains("engine.rs") && ls.contains("-rw-"), "{ls}");
    let ls_root = sh_ok(&format!("ls -la '{mnt}'"));
    for name in [" .\n", " ..\n", " cp\n", " tar\n", " all.tar\n"] {
        assert!(ls_root.contains(name), "ls -la lacks {name:?}:\n{ls_root}");
    }

    // A larger file through std::fs, in pieces, and read back.
    let big = bytes(7, 3 << 20);
    {
        let mut f = std::fs::File::create(m.p("big.bin")).unwrap();
        for chunk in big.chunks(100_000) {
            f.write_all(chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    let mut back = Vec::new();
    std::fs::File::open(m.p("big.bin"))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == big, "big.bin differs");
    std::fs::rename(m.p("big.bin"), m.p("cp/big.renamed")).unwrap();
    std::fs::remove_dir_all(m.p("tar")).unwrap();
    assert!(!m.p("tar").exists());

    // df and stat -f see the image's geometry.
    let statf = sh_ok(&format!("stat -f -c '%S %b' '{mnt}'"));
    assert_eq!(statf.trim(), format!("4096 {}", 256 * 256), "stat -f");
    let df = sh_ok(&format!("df -P '{mnt}'"));
    assert!(df.contains(&mnt), "{df}");

    m.unmount();
    assert!(!is_mounted(&m.mnt));
    let report = m.fsck_clean();
    assert!(
        report["inodes_checked"].as_u64().unwrap() > 20,
        "{report:#}"
    );

    // The library sees exactly what the shell tools wrote, and the unmount was clean.
    let fs = Fs::open(&m.image, &MountOptions::default()).unwrap();
    assert!(
        fs.mount_report().clean,
        "unmount through FUSE was not clean"
    );
    let files = files_under(&src);
    assert!(files.len() > 10);
    for rel in &files {
        let host = std::fs::read(src.join(rel)).unwrap();
        let inside = Path::new("/cp").join(rel);
        assert_eq!(fs.read(&inside).unwrap(), host, "{}", inside.display());
        let md = fs.metadata(&inside).unwrap();
        assert_eq!(
            md.mode() & 0o777,
            std::fs::metadata(src.join(rel)).unwrap().mode() & 0o777
        );
    }
    assert_eq!(fs.read("/cp/big.renamed").unwrap(), big);
    assert!(fs.metadata("/tar").is_err());
    assert!(fs.metadata("/all.tar").unwrap().len() > 10_000);
    fs.unmount().unwrap();
}

#[test]
fn read_only_mount_refuses_changes() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    std::fs::write(m.p("kept"), b"data").unwrap();
    m.unmount();
    m.mount("ro");
    assert_eq!(std::fs::read(m.p("kept")).unwrap(), b"data");
    let erofs = Some(libc::EROFS);
    assert_eq!(
        std::fs::write(m.p("new"), b"x").unwrap_err().raw_os_error(),
        erofs
    );
    assert_eq!(
        std::fs::write(m.p("kept"), b"x")
            .unwrap_err()
            .raw_os_error(),
        erofs
    );
    assert_eq!(
        std::fs::create_dir(m.p("d")).unwrap_err().raw_os_error(),
        erofs
    );
    assert_eq!(
        std::fs::remove_file(m.p("kept"))
            .unwrap_err()
            .raw_os_error(),
        erofs
    );
    m.unmount();
    m.fsck_clean();
    assert_eq!(m.info()["clean"], true);
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    std::fs::write(m.p("a"), b"before the signal").unwrap();
    m.stop_with_signal("TERM");
    assert_eq!(
        m.info()["clean"],
        true,
        "SIGTERM did not unmount the engine cleanly"
    );
    m.fsck_clean();

    m.mount("");
    assert_eq!(std::fs::read(m.p("a")).unwrap(), b"before the signal");
    std::fs::write(m.p("b"), b"x").unwrap();
    // Busy (an open directory): the signal still unmounts (lazily) and the server exits once
    // the last user lets go.
    let dir = std::fs::File::open(m.p("")).unwrap();
    m.signal("INT");
    m.signal("INT"); // a repeated signal is harmless
    drop(dir);
    m.wait_exit_ok("INT");
    assert_eq!(m.info()["clean"], true);
    m.fsck_clean();
    let fs = Fs::open(&m.image, &MountOptions::default()).unwrap();
    assert_eq!(fs.read("/b").unwrap(), b"x");
    fs.unmount().unwrap();
}

#[test]
fn detached_mount_through_the_mount_helper_name() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    m.unmount();
    // mount.novafs (argv[0]) without -f: returns once mounted, a detached process serves.
    let helper = m.dir.path().join("mount.novafs");
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let o = Command::new(&helper)
        .arg(&m.image)
        .arg(&m.mnt)
        .args(["-o", "rw,noatime,threads=3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "mount.novafs: {o:?}");
    let msg = String::from_utf8_lossy(&o.stdout);
    assert!(msg.contains("mounted on"), "{msg}");
    assert!(is_mounted(&m.mnt));
    std::fs::write(m.p("via-helper"), b"ok").unwrap();
    assert_eq!(std::fs::read(m.p("via-helper")).unwrap(), b"ok");
    sh_ok(&format!("fusermount3 -u '{}'", m.mnt.display()));
    // The detached server exits after the unmount; the image lock is then free.
    let start = std::time::Instant::now();
    let fs = loop {
        match Fs::open(&m.image, &MountOptions::default()) {
            Ok(fs) => break fs,
            Err(e)
                if matches!(e.engine_error(), novafs::EngineError::ImageInUse { .. })
                    && start.elapsed().as_secs() < 120 =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(fs.mount_report().clean);
    assert_eq!(fs.read("/via-helper").unwrap(), b"ok");
    fs.unmount().unwrap();
    m.fsck_clean();

    // Bad usage fails clearly, without mounting.
    let o = Command::new(&helper)
        .arg(&m.image)
        .arg(&m.mnt)
        .args(["-o", "frobnicate"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown mount option 'frobnicate'"));
    let o = Command::new(BIN)
        .args(["mount", "-f"])
        .arg(m.dir.path().join("missing.img"))
        .arg(&m.mnt)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot open the image"),
        "{o:?}"
    );
    assert!(!is_mounted(&m.mnt));
}

#[test]
fn concurrent_writers_through_the_mount() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("256MiB", "threads=4");
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let dir = m.p(&format!("t{t}"));
            std::thread::spawn(move || {
                std::fs::create_dir(&dir).unwrap();
                let data = bytes(t + 1, 1 << 20);
                let mut f = std::fs::File::create(dir.join("data")).unwrap();
                for c in data.chunks(64 << 10) {
                    f.write_all(c).unwrap();
                }
                for i in 0..200 {
                    let p = dir.join(format!("f{i}"));
                    std::fs::write(&p, i.to_string()).unwrap();
                    if i % 2 == 0 {
                        std::fs::remove_file(&p).unwrap();
                    }
                }
                data
            })
        })
        .collect();
    let datas: Vec<Vec<u8>> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    for (t, d) in datas.iter().enumerate() {
        assert!(std::fs::read(m.p(&format!("t{t}/data"))).unwrap() == *d);
        assert_eq!(
            std::fs::read_dir(m.p(&format!("t{t}"))).unwrap().count(),
            101
        );
    }
    m.unmount();
    m.fsck_clean();
}

#[test]
fn unsupported_xattr_namespaces_are_refused_clearly() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let f = m.p("file");
    std::fs::write(&f, b"x").unwrap();
    #[cfg(target_arch = "x86_64")]
    {
        // setxattr(2) = 188, getxattr(2) = 191 on x86_64: a namespace novafs does not store
        // (xattrs themselves are tested in fuse_xattr.rs).
        for call in [
            "syscall(188, $p, $n, $v, 1, 0)",
            "syscall(191, $p, $n, $b, 64)",
        ] {
            let script = format!(
                "my ($p, $n, $v, $b) = ($ARGV[0], \"os2.a\", \"v\", \"\\0\" x 64); \
                 my $r = {call}; print(($r < 0) ? $! + 0 : 0)"
            );
            let o = Command::new("perl")
                .arg("-e")
                .arg(&script)
                .arg(&f)
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                libc::EOPNOTSUPP.to_string(),
                "{call}"
            );
        }
    }
    m.unmount();
    m.fsck_clean();
}

#[test]
fn unlinked_open_file_lives_until_closed() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let p = m.p("tmpfile");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(&bytes(3, 1 << 20)).unwrap();
    std::fs::remove_file(&p).unwrap();
    assert!(!p.exists());
    let md = f.metadata().unwrap();
    assert_eq!(md.nlink(), 0);
    assert_eq!(md.len(), 1 << 20);
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"still here", 10).unwrap();
    let mut buf = [0u8; 10];
    f.read_exact_at(&mut buf, 10).unwrap();
    assert_eq!(&buf, b"still here");
    drop(f);
    m.unmount();
    let v = m.fsck_clean();
    assert_eq!(v["errors_found"], 0);
    let fs = Fs::open(&m.image, &MountOptions::default()).unwrap();
    assert_eq!(fs.read_dir("/").unwrap().len(), 0);
    // Its blocks came back: only the root's log and the inode table are in use.
    let st = fs.statfs().unwrap();
    assert!(st.blocks_total - st.blocks_free < 100, "{st:?}");
    fs.unmount().unwrap();
}

/// A node id the kernel still holds never names another inode: a shell whose working
/// directory was removed, after a new file took the directory's inode number, lists its
/// working directory as on tmpfs (empty, ENOENT) instead of an EIO (the new file's node
/// answered for the directory). The same for an unlinked file whose inode the kernel still
/// knows through an open descriptor elsewhere.
#[test]
fn node_ids_are_not_reused_while_the_kernel_holds_them() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap();
    let script = r#"
        mkdir "$R/D" && cd "$R/D" && rmdir "$R/D" &&
        echo hi > "$R/newfile" && echo there > "$R/other" &&
        ls -a . ; echo "ls: $?"
        cat "$R/newfile" "$R/other"
        mkdir "$R/E"; cd "$R/E" && rm -r "$R/E" && mkdir "$R/F" && touch "$R/F/x" && ls . ; echo "ls2: $?"
        ls "$R"
    "#;
    let on_mount = run_in(&m.mnt, script);
    let on_tmpfs = run_in(tmp.path(), script);
    assert!(!on_mount.2.contains("Input/output error"), "{on_mount:?}");
    assert_eq!(on_mount, on_tmpfs, "mount vs tmpfs");
    // The orphaned directories' inodes were freed at the kernel's forget (or unmount).
    m.unmount();
    m.fsck_clean();
}

/// Handles that can write do direct I/O (one write(2) = one engine commit); read-only handles
/// keep the kernel's page cache. A read-only handle that cached a page sees a later write
/// through a writing handle, and a shared writable mapping of a writing handle still works.
#[test]
fn direct_io_writers_and_cached_readers_stay_coherent() {
    if !fuse_available() {
        return;
    }
    use std::os::unix::fs::FileExt;
    let mut m = Mounted::new("64MiB", "");
    let p = m.p("coherent");
    std::fs::write(&p, vec![b'a'; 3 * 4096]).unwrap();
    let reader = std::fs::File::open(&p).unwrap();
    let mut buf = vec![0u8; 3 * 4096];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == b'a'));
    let writer = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    // Unaligned, across a page boundary.
    writer.write_all_at(&[b'b'; 5000], 4000).unwrap();
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..4000].iter().all(|&b| b == b'a'));
    assert!(buf[4000..9000].iter().all(|&b| b == b'b'));
    assert!(buf[9000..].iter().all(|&b| b == b'a'));
    // Growth through the writer is seen by the reader's size.
    writer.write_all_at(b"tail", 5 * 4096).unwrap();
    assert_eq!(reader.metadata().unwrap().len(), 5 * 4096 + 4);
    drop(writer);
    // A shared writable mapping of a read-write handle (python's mmap: no unsafe here).
    if Path::new("/usr/bin/python3").exists() {
        let script = format!(
            "import mmap,os\n\
             fd=os.open('{}',os.O_RDWR)\n\
             m=mmap.mmap(fd,4096,mmap.MAP_SHARED,mmap.PROT_READ|mmap.PROT_WRITE)\n\
             m[0:6]=b'mapped'\n\
             m.flush()\n\
             print(m[3999:4002].decode())\n",
            p.display()
        );
        let out = sh_ok(&format!("python3 -c \"{script}\""));
        assert_eq!(out.trim(), "abb");
        reader.read_exact_at(&mut buf[..6], 0).unwrap();
        assert_eq!(&buf[..6], b"mapped");
    }
    drop(reader);
    m.unmount();
    m.fsck_clean();
    let fs = Fs::open(&m.image, &MountOptions::default()).unwrap();
    let d = fs.read("/coherent").unwrap();
    assert_eq!(&d[..6], b"mapped");
    assert_eq!(&d[4000..4003], b"bbb");
    assert_eq!(&d[5 * 4096..], b"tail");
    fs.unmount().unwrap();
}
