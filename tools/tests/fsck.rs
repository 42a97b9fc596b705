//! `novafs fsck` / `fsck.novafs` end to end: exit codes (0, 1, 4, 8, 16), `--json`, argv[0].

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use novafs::{FormatOptions, Fs, MountOptions};
use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_novafs");

/// These tests mount images in-process and spawn the binary: a child forked by one test while
/// another test has an image open briefly holds that image's lock (flock is per open file
/// description, inherited until exec). Run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn scratch() -> TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("novafs-fsck-cli-");
    if Path::new("/dev/shm").is_dir() {
        b.tempdir_in("/dev/shm").unwrap()
    } else {
        b.tempdir().unwrap()
    }
}

fn run(bin: &Path, args: &[&OsStr]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

fn fsck(args: &[&str], img: &Path) -> Output {
    let mut a: Vec<&OsStr> = vec![OsStr::new("fsck")];
    a.extend(args.iter().map(OsStr::new));
    a.push(img.as_os_str());
    run(Path::new(BIN), &a)
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exit code")
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(o: &Output) -> Value {
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        text.trim().lines().count(),
        1,
        "one JSON object: {}",
        describe(o)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {}", describe(o)))
}

/// A small image and the inode number and first log page of `/d/file`.
fn image(dir: &TempDir) -> (PathBuf, u64, u64) {
    let img = dir.path().join("fs.img");
    let fs = Fs::format(&img, 8 << 20, &FormatOptions::default()).unwrap();
    fs.create_dir("/d").unwrap();
    fs.write("/d/file", &[7u8; 9000]).unwrap();
    fs.write("/other", b"hello").unwrap();
    let ino = fs.resolve("/d/file").unwrap();
    let page = fs.engine().inode_layout(ino).unwrap().log_pages[0];
    fs.unmount().unwrap();
    (img, ino, page)
}

fn damage(img: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

#[test]
fn clean_image_exits_0_with_json_counts() {
    let _serial = serial();
    let dir = scratch();
    let (img, _, _) = image(&dir);
    let o = fsck(&["-n", "--json"], &img);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    let v = json(&o);
    assert_eq!(v["errors_found"], 0);
    assert_eq!(v["errors_fixed"], 0);
    assert_eq!(v["errors_left"], 0);
    assert!(v["inodes_checked"].as_u64().unwrap() >= 4);
    assert_eq!(v["blocks_checked"].as_u64(), Some(2048));
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["was_clean"], true);
    // Human output; -f and the default (-n) behave the same.
    for args in [&[][..], &["-f"][..]] {
        let o = fsck(args, &img);
        assert_eq!(code(&o), 0, "{}", describe(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains(": clean"));
    }
}

#[test]
fn damaged_image_exits_4_then_1_then_0() {
    let _serial = serial();
    let dir = scratch();
    let (img, ino, page) = image(&dir);
    // Garble the file's first log entry (not a single bit: the log is cut back).
    damage(&img, page * 4096 + 16, &[0xa5; 32]);
    let o = fsck(&["-n", "--json"], &img);
    assert_eq!(code(&o), 4, "{}", describe(&o));
    let v = json(&o);
    assert!(v["errors_found"].as_u64().unwrap() >= 1);
    assert_eq!(v["errors_left"], v["errors_found"]);
    assert_eq!(v["errors_fixed"], 0);
    let p = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "log_entry")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(p["inode"].as_u64(), Some(ino));
    assert_eq!(p["block"].as_u64(), Some(page));
    assert_eq!(p["offset"].as_u64(), Some(page * 4096));
    assert_eq!(p["fixed"], false);
    assert!(p["message"].as_str().unwrap().contains("checksum"));
    // Human output names the problem and what -y would do.
    let o = fsck(&[], &img);
    assert_eq!(code(&o), 4);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("log_entry") && text.contains("-y would"),
        "{text}"
    );
    // Repair.
    let o = fsck(&["-y", "--json"], &img);
    assert_eq!(code(&o), 1, "{}", describe(&o));
    let v = json(&o);
    assert_eq!(v["errors_left"], 0);
    assert_eq!(v["errors_fixed"], v["errors_found"]);
    assert_eq!(v["modified"], true);
    assert!(v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["fixed"] == true));
    let o = fsck(&["-n"], &img);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.read("/other").unwrap(), b"hello");
    fs.unmount().unwrap();
}

#[test]
fn unfixable_damage_exits_4_even_with_y() {
    let _serial = serial();
    let dir = scratch();
    let (img, _, _) = image(&dir);
    damage(&img, 20, &[0xff]);
    damage(&img, (8 << 20) - 4096 + 20, &[0xff]);
    let o = fsck(&["-y", "--json"], &img);
    assert_eq!(code(&o), 4, "{}", describe(&o));
    let v = json(&o);
    assert_eq!(v["problems"][0]["kind"], "superblock");
    assert_eq!(v["problems"][0]["repair"], Value::Null);
    assert_eq!(v["modified"], false);
}

#[test]
fn operational_errors_exit_8() {
    let _serial = serial();
    let dir = scratch();
    // Missing image.
    let o = fsck(&[], &dir.path().join("missing.img"));
    assert_eq!(code(&o), 8, "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fsck.novafs:"));
    // Not novafs, with --json: one object with the error.
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0x42u8; 2 << 20]).unwrap();
    let o = fsck(&["--json"], &junk);
    assert_eq!(code(&o), 8, "{}", describe(&o));
    let v = json(&o);
    assert_eq!(v["exit_code"], 8);
    assert!(v["error"].as_str().unwrap().contains("not a novafs image"));
    // Mounted elsewhere: the exclusive lock refuses it.
    let (img, _, _) = image(&dir);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let o = fsck(&["-y"], &img);
    assert_eq!(code(&o), 8, "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("in use"));
    fs.unmount().unwrap();
}

#[test]
fn usage_errors_exit_16() {
    let _serial = serial();
    let dir = scratch();
    let (img, _, _) = image(&dir);
    let o = fsck(&["-n", "-y"], &img);
    assert_eq!(code(&o), 16, "{}", describe(&o));
    let o = run(Path::new(BIN), &[OsStr::new("fsck")]);
    assert_eq!(code(&o), 16, "{}", describe(&o));
    let o = run(Path::new(BIN), &[OsStr::new("fsck"), OsStr::new("--help")]);
    assert_eq!(code(&o), 0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Exit status"));
}

#[test]
fn invoked_as_fsck_novafs() {
    let _serial = serial();
    let dir = scratch();
    let (img, _, page) = image(&dir);
    let link = dir.path().join("fsck.novafs");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let o = run(&link, &[img.as_os_str()]);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    damage(&img, page * 4096 + 30, &[0x77; 8]);
    let o = run(&link, &[OsStr::new("-n"), img.as_os_str()]);
    assert_eq!(code(&o), 4, "{}", describe(&o));
    let o = run(
        &link,
        &[OsStr::new("-y"), OsStr::new("--json"), img.as_os_str()],
    );
    assert_eq!(code(&o), 1, "{}", describe(&o));
    assert_eq!(json(&o)["errors_left"], 0);
    let o = run(&link, &[img.as_os_str()]);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    let o = run(&link, &[OsStr::new("--bogus"), img.as_os_str()]);
    assert_eq!(code(&o), 16);
    let o = run(&link, &[OsStr::new("--help")]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("fsck.novafs"));
}
