//! Crash recovery on several threads rebuilds exactly what one thread does. Helper threads
//! join a level of the tree only after the mounting thread has spent a while on it, so small
//! images are recovered on one thread; these images have levels wide enough for helpers, and
//! the mount report says how many threads loaded a level.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use novafs::{FormatOptions, Fs, MountOptions};
use novafs_recovery::fsck::{self, FsckOptions};

/// Everything reachable: path -> (kind, size, links, contents or link target).
type Tree = BTreeMap<String, (char, u64, u32, Vec<u8>)>;

fn tree(fs: &Fs) -> Tree {
    let mut out = Tree::new();
    let mut todo = vec![PathBuf::from("/")];
    while let Some(dir) = todo.pop() {
        for e in fs.read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = fs.symlink_metadata(&p).unwrap();
            let (kind, body) = if m.is_dir() {
                todo.push(p.clone());
                ('d', Vec::new())
            } else if m.is_symlink() {
                ('l', fs.read_link(&p).unwrap())
            } else {
                ('f', fs.read(&p).unwrap())
            };
            out.insert(p.display().to_string(), (kind, m.len(), m.nlink(), body));
        }
    }
    out
}

/// A crashed image with wide levels: 3 directories of 1,500 files each (data of varied
/// lengths, some rewritten), hard links across directories, symlinks, and a nested level.
fn crashed_image(dir: &Path) -> PathBuf {
    let path = dir.join("wide.img");
    let fs = Fs::format(&path, 256 << 20, &FormatOptions::default()).unwrap();
    for d in 0..3 {
        fs.create_dir(format!("/d{d}")).unwrap();
        for i in 0..1500u64 {
            let body: Vec<u8> = (0..(i % 97) * 41).map(|k| (k ^ i) as u8).collect();
            fs.write(format!("/d{d}/f{i}"), &body).unwrap();
        }
    }
    for i in 0..200 {
        fs.hard_link(format!("/d0/f{i}"), format!("/d1/link{i}"))
            .unwrap();
        fs.symlink(format!("/d2/f{i}"), format!("/d2/sym{i}"))
            .unwrap();
    }
    fs.create_dir("/d0/sub").unwrap();
    for i in 0..300 {
        fs.write(format!("/d0/sub/g{i}"), format!("g{i}").as_bytes())
            .unwrap();
    }
    for i in (0..1500).step_by(7) {
        fs.write(format!("/d1/f{i}"), b"rewritten").unwrap();
    }
    fs.crash();
    path
}

fn recover(image: &Path, name: &str, threads: usize) -> (Tree, Fs) {
    let copy = image.with_file_name(name);
    std::fs::copy(image, &copy).unwrap();
    let fs = Fs::open(
        &copy,
        &MountOptions {
            recovery_threads: threads,
            ..MountOptions::default()
        },
    )
    .unwrap();
    assert!(!fs.mount_report().clean);
    (tree(&fs), fs)
}

#[test]
fn recovery_on_two_threads_rebuilds_what_one_thread_does() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let image = crashed_image(dir.path());
    let (one, fs1) = recover(&image, "one.img", 1);
    let (two, fs2) = recover(&image, "two.img", 2);
    let (r1, r2) = (fs1.mount_report().clone(), fs2.mount_report().clone());
    assert_eq!(r1.recovery_threads_used, 1, "{r1:?}");
    assert_eq!(
        r2.recovery_threads_used, 2,
        "a level of 4,500 inodes takes longer than the helpers' delay: {r2:?}"
    );
    assert_eq!(r1.inodes_scanned, r2.inodes_scanned);
    assert_eq!(r1.inodes_scanned, 1 + 3 + 4500 + 200 + 1 + 300);
    // Every loaded inode was filed in the cache (4,096 or more are filed on two threads).
    for fs in [&fs1, &fs2] {
        let cached = fs.engine().cached_inodes();
        assert_eq!(cached.len() as u64, r1.inodes_scanned);
        let mut inos: Vec<u64> = cached.iter().map(|i| i.ino).collect();
        inos.sort_unstable();
        inos.dedup();
        assert_eq!(inos.len() as u64, r1.inodes_scanned);
    }
    assert_eq!(one.len(), two.len());
    assert!(one == two, "the trees differ");
    assert_eq!(one["/d1/link5"], one["/d0/f5"]);
    assert_eq!(one["/d0/f5"].2, 2);
    assert_eq!(one["/d1/f14"].3, b"rewritten");
    // Both recovered images are consistent and stay so after a clean unmount.
    for (fs, name) in [(fs1, "one.img"), (fs2, "two.img")] {
        fs.unmount().unwrap();
        let r = fsck::check(&dir.path().join(name), &FsckOptions::default()).unwrap();
        assert_eq!(r.exit_code(), 0, "{name}: {:?}", r.problems);
    }
}
