//! The CLI on crafted images whose checksums are valid: a directory cycle or a directory named
//! twice on the clean-mount fast path. `novafs tree` used to overflow its stack (abort, image
//! left unclean) and `novafs rm -r` to loop while growing to gigabytes, or to free a directory
//! another name still pointed at; now each exits with a "corrupt" error, frees nothing, and the
//! image unmounts cleanly.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use novafs::{FormatOptions, Fs, MountOptions};
use novafs_engine::layout::entry::Entry;
use novafs_engine::layout::Kind;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_novafs");

/// These tests mount images in-process and spawn the binary: a child forked by one test while
/// another has an image open briefly holds that image's lock (flock is per open file
/// description, inherited until exec). Run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The binary with a 1 GiB address-space limit, killed after 30 s.
fn novafs(args: &[&str]) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 1048576; exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn novafs");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().expect("kill");
            let o = child.wait_with_output().expect("wait");
            panic!(
                "novafs {args:?} hung; stderr: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn scratch() -> TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("novafs-untrusted-");
    if Path::new("/dev/shm").is_dir() {
        b.tempdir_in("/dev/shm").unwrap()
    } else {
        b.tempdir().unwrap()
    }
}

/// /a/b/f, /a/g, /e/h; then `dir` gets a second name for directory `child` (a valid entry with
/// a valid checksum, appended as the engine would).
fn image(dir: &TempDir, in_dir: &str, child: &str) -> PathBuf {
    let img = dir.path().join("fs.img");
    let fs = Fs::format(&img, 8 << 20, &FormatOptions::default()).unwrap();
    fs.create_dir_all("/a/b").unwrap();
    fs.create_dir("/e").unwrap();
    fs.write("/a/b/f", b"kept").unwrap();
    fs.write("/a/g", b"kept too").unwrap();
    fs.write("/e/h", b"").unwrap(); // every directory has a log to append to
    let child = fs.resolve(child).unwrap();
    let l = fs
        .engine()
        .inode_layout(fs.resolve(in_dir).unwrap())
        .unwrap();
    let (slot_off, tail, seq) = (l.slot_off, l.log_tail, l.next_seq);
    fs.unmount().unwrap();
    let mut buf = Vec::new();
    Entry::DirAdd {
        ino: child,
        kind: Kind::Dir,
        name: b"again".to_vec().into(),
        mtime_ns: 1,
    }
    .encode(seq, &mut buf);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&buf, tail).unwrap();
    f.write_all_at(&(tail + buf.len() as u64).to_le_bytes(), slot_off + 8)
        .unwrap();
    img
}

/// The command failed with a "corrupt" error and `kept` (files outside the damage) are intact.
fn assert_corrupt_and_nothing_freed(o: &Output, img: &Path, kept: &[(&str, &[u8])]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("corrupt"), "stderr: {err}");
    let fs = Fs::open(img, &MountOptions::default()).unwrap();
    assert!(fs.mount_report().clean, "the image was left unclean");
    for (p, data) in kept {
        assert_eq!(fs.read(p).unwrap(), *data, "{p}");
    }
    fs.unmount().unwrap();
}

#[test]
fn tree_and_rm_r_on_a_directory_cycle_fail_cleanly() {
    let _serial = serial();
    let dir = scratch();
    let img = image(&dir, "/a/b", "/a");
    let s = img.to_str().unwrap();
    let kept: &[(&str, &[u8])] = &[("/a/g", b"kept too"), ("/e/h", b"")];
    let o = novafs(&["tree", s, "/"]);
    assert_corrupt_and_nothing_freed(&o, &img, kept);
    let o = novafs(&["tree", s, "/a", "--json"]);
    assert_corrupt_and_nothing_freed(&o, &img, kept);
    let o = novafs(&["rm", "-r", s, "/a"]);
    assert_corrupt_and_nothing_freed(&o, &img, kept);
}

#[test]
fn rm_r_of_a_directory_named_twice_frees_nothing() {
    let _serial = serial();
    let dir = scratch();
    // /a/b also named /e/again: removing /a (the real parent) must not leave /e/again
    // pointing at a freed inode, nor must removing /e.
    let img = image(&dir, "/e", "/a/b");
    let s = img.to_str().unwrap();
    for victim in ["/a", "/e"] {
        let o = novafs(&["rm", "-r", s, victim]);
        assert_corrupt_and_nothing_freed(&o, &img, &[("/a/g", b"kept too"), ("/a/b/f", b"kept")]);
    }
}
