//! End-to-end tests of the `novafs` binary.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_novafs");

/// A scratch directory on tmpfs when there is one (the images are then emulated pmem).
fn scratch() -> TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("novafs-cli-");
    if Path::new("/dev/shm").is_dir() {
        b.tempdir_in("/dev/shm").expect("tempdir in /dev/shm")
    } else {
        b.tempdir().expect("tempdir")
    }
}

fn run_with(bin: &Path, args: &[&OsStr], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawn novafs");
    if let Some(data) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        w.write_all(data).expect("write stdin");
    }
    child.wait_with_output().expect("wait for novafs")
}

fn os<'a>(args: &'a [&'a str]) -> Vec<&'a OsStr> {
    args.iter().map(OsStr::new).collect()
}

fn run(args: &[&str]) -> Output {
    run_with(Path::new(BIN), &os(args), None)
}

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "novafs {args:?}: status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run and require success; returns stdout.
fn ok(args: &[&str]) -> Vec<u8> {
    let o = run(args);
    assert!(
        o.status.success(),
        "expected success: {}",
        describe(args, &o)
    );
    o.stdout
}

fn ok_str(args: &[&str]) -> String {
    String::from_utf8(ok(args)).expect("UTF-8 output")
}

/// Require exit status 1 with a `novafs: ...` message and no panic; returns stderr.
fn fails(args: &[&str]) -> String {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected status 1: {}",
        describe(args, &o)
    );
    assert!(
        err.starts_with("novafs: "),
        "message: {}",
        describe(args, &o)
    );
    assert!(!err.contains("panicked"), "panic: {}", describe(args, &o));
    assert_eq!(err.lines().count(), 1, "one line: {}", describe(args, &o));
    err
}

fn json(args: &[&str]) -> Value {
    let out = ok(args);
    serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", describe(args, &run(args))))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// A fresh 32 MiB image in `dir`.
fn image(dir: &TempDir) -> PathBuf {
    let img = dir.path().join("fs.img");
    ok(&["mkfs", s(&img), "--size", "32MiB"]);
    img
}

fn assert_clean(img: &Path) {
    let v = json(&["info", s(img), "--json"]);
    assert_eq!(v["clean"], Value::Bool(true), "{v}");
}

/// SplitMix64 bytes.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn ls(img: &Path, path: &str) -> Vec<String> {
    ok_str(&["ls", s(img), path])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn mkfs_then_info_json() {
    let dir = scratch();
    let img = dir.path().join("a.img");
    let line = ok_str(&["mkfs", s(&img), "--size", "64MiB"]);
    assert_eq!(line.lines().count(), 1, "one-line summary: {line}");
    assert!(line.contains("formatted"), "{line}");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);

    let v = json(&["info", s(&img), "--json"]);
    let n = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("key {k} missing or not a number in {v}"))
    };
    assert_eq!(n("block_size"), 4096);
    assert_eq!(n("blocks_total"), (64 << 20) / 4096);
    assert!(
        n("blocks_free") > 0 && n("blocks_free") < n("blocks_total"),
        "{v}"
    );
    assert!(n("inodes_total") > 0, "{v}");
    assert!(
        n("inodes_free") > 0 && n("inodes_free") <= n("inodes_total"),
        "{v}"
    );
    let mode = v["media_mode"].as_str().expect("media_mode string");
    assert!(["dax", "emulated", "msync"].contains(&mode), "{mode}");
    assert_eq!(v["clean"], Value::Bool(true));

    // Text form mentions the same figures.
    let text = ok_str(&["info", s(&img)]);
    for key in [
        "block_size",
        "blocks_total",
        "blocks_free",
        "inodes_total",
        "inodes_free",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    assert!(text.contains(mode) && text.contains("clean"), "{text}");
}

#[test]
fn mkfs_sizes() {
    let dir = scratch();
    let img = dir.path().join("b.img");
    for (arg, bytes) in [
        ("8M", 8u64 << 20),
        ("4MiB", 4 << 20),
        ("2097152", 2 << 20),
        ("4096000B", 4_096_000),
        ("1.5MiB", 3 << 19),
    ] {
        ok(&["mkfs", s(&img), "--size", arg, "--force"]);
        assert_eq!(std::fs::metadata(&img).unwrap().len(), bytes, "{arg}");
        let v = json(&["info", s(&img), "--json"]);
        assert_eq!(v["blocks_total"].as_u64(), Some(bytes / 4096), "{arg}");
    }
    // Suffix errors are usage errors; a size the engine refuses is a runtime error.
    assert_eq!(
        run(&["mkfs", s(&img), "--size", "12XB"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["mkfs", s(&img), "--size", ""]).status.code(), Some(2));
    fails(&["mkfs", s(&img), "--size", "100K", "--force"]);
    fails(&["mkfs", s(&img), "--size", "1000001KB", "--force"]);
    // An existing non-empty file needs --force, and is left alone without it.
    let before = std::fs::read(&img).unwrap();
    let out = run(&["mkfs", s(&img), "--size", "4MiB"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

#[test]
fn put_get_round_trip() {
    let dir = scratch();
    let img = image(&dir);
    let sizes = [0usize, 1, 4095, 4096, 4097, 3 << 20];
    for (i, &len) in sizes.iter().enumerate() {
        let data = pseudo_random(len, i as u64 + 1);
        let host_in = dir.path().join(format!("in-{len}"));
        let host_out = dir.path().join(format!("out-{len}"));
        std::fs::write(&host_in, &data).unwrap();
        let inner = format!("/f-{len}");
        ok(&["put", s(&img), s(&host_in), &inner]);
        ok(&["get", s(&img), &inner, s(&host_out)]);
        let back = std::fs::read(&host_out).unwrap();
        assert!(back == data, "round trip of {len} bytes differs");
        assert!(
            ok(&["cat", s(&img), &inner]) == data,
            "cat of {len} bytes differs"
        );
        let st = json(&["stat", s(&img), &inner, "--json"]);
        assert_eq!(st["size"].as_u64(), Some(len as u64));
        assert_eq!(st["kind"], "file");
    }
    // Re-put a shorter file over a longer one: the target is truncated.
    let short = dir.path().join("short");
    std::fs::write(&short, b"xyz").unwrap();
    let big = format!("/f-{}", 3 << 20);
    ok(&["put", s(&img), s(&short), &big]);
    assert_eq!(ok(&["cat", s(&img), &big]), b"xyz");
    assert_clean(&img);
}

#[test]
fn put_get_directories_and_stdio() {
    let dir = scratch();
    let img = image(&dir);
    let host = dir.path().join("notes.txt");
    std::fs::write(&host, b"remember the milk\n").unwrap();
    ok(&["mkdir", s(&img), "/docs"]);
    // Into a directory: keeps the host name.
    ok(&["put", s(&img), s(&host), "/docs"]);
    assert_eq!(ls(&img, "/docs"), ["notes.txt"]);
    // Out to a host directory: keeps the image name.
    let outdir = dir.path().join("outdir");
    std::fs::create_dir(&outdir).unwrap();
    ok(&["get", s(&img), "/docs/notes.txt", s(&outdir)]);
    assert_eq!(
        std::fs::read(outdir.join("notes.txt")).unwrap(),
        b"remember the milk\n"
    );
    // '-' is stdin / stdout.
    let data = pseudo_random(100_000, 42);
    let o = run_with(
        Path::new(BIN),
        &os(&["put", s(&img), "-", "/stdin.bin"]),
        Some(&data),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ok(&["get", s(&img), "/stdin.bin", "-"]) == data);
}

#[test]
fn ls_sorted_and_long() {
    let dir = scratch();
    let img = image(&dir);
    let host = dir.path().join("h");
    std::fs::write(&host, vec![7u8; 5000]).unwrap();
    for name in ["zeta", "alpha", "Mid", "beta"] {
        ok(&["put", s(&img), s(&host), &format!("/{name}")]);
    }
    ok(&["mkdir", s(&img), "/dir"]);
    ok(&["ln", "-s", s(&img), "/alpha", "/link"]);
    assert_eq!(
        ls(&img, "/"),
        ["Mid", "alpha", "beta", "dir", "link", "zeta"]
    );
    assert_eq!(ok_str(&["ls", s(&img)]), ok_str(&["ls", s(&img), "/"]));

    let long = ok_str(&["ls", "-l", s(&img), "/"]);
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 6, "{long}");
    let alpha: Vec<&str> = lines[1].split_whitespace().collect();
    let st = json(&["stat", s(&img), "/alpha", "--json"]);
    assert_eq!(alpha[0], "file", "{long}");
    assert_eq!(alpha[1], "0644", "{long}");
    assert_eq!(alpha[2], "1", "{long}");
    assert_eq!(alpha[3], "5000", "{long}");
    assert_eq!(alpha[4], st["ino"].as_u64().unwrap().to_string(), "{long}");
    assert_eq!(alpha[5], "alpha", "{long}");
    let d: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!((d[0], d[1], d[5]), ("dir", "0755", "dir"), "{long}");
    assert!(
        lines[4].starts_with("symlink") && lines[4].ends_with("link -> /alpha"),
        "{long}"
    );

    // A file path lists just that file.
    assert_eq!(ls(&img, "/beta"), ["/beta"]);
    assert!(ls(&img, "/dir").is_empty());
}

#[test]
fn stat_text_and_json() {
    let dir = scratch();
    let img = image(&dir);
    ok(&["mkdir", s(&img), "/d"]);
    ok(&["ln", "-s", s(&img), "/d", "/ld"]);
    let v = json(&["stat", s(&img), "/d", "--json"]);
    assert_eq!(v["kind"], "dir");
    assert_eq!(v["nlink"], 2);
    assert_eq!(v["mode_octal"], "0755");
    let root = json(&["stat", s(&img), "/", "--json"]);
    assert_eq!(root["kind"], "dir");
    assert_eq!(root["nlink"], 3);
    // Symlinks are not followed.
    let l = json(&["stat", s(&img), "/ld", "--json"]);
    assert_eq!(l["kind"], "symlink");
    assert_eq!(l["target"], "/d");
    assert_eq!(l["size"], 2);
    let text = ok_str(&["stat", s(&img), "/ld"]);
    assert!(text.contains("symlink") && text.contains("/d"), "{text}");
    assert!(text.contains("UTC"), "{text}");
}

#[test]
fn mkdir_parents() {
    let dir = scratch();
    let img = image(&dir);
    fails(&["mkdir", s(&img), "/a/b/c"]);
    ok(&["mkdir", "-p", s(&img), "/a/b/c"]);
    ok(&["mkdir", "-p", s(&img), "/a/b/c"]); // existing: fine with -p
    let e = fails(&["mkdir", s(&img), "/a/b"]); // existing: error without -p
    assert!(e.contains("exists"), "{e}");
    assert_eq!(ls(&img, "/a"), ["b"]);
    assert_eq!(ls(&img, "/a/b"), ["c"]);
    assert_eq!(json(&["stat", s(&img), "/a/b/c", "--json"])["kind"], "dir");
    assert_clean(&img);
}

#[test]
fn mv_renames_and_moves() {
    let dir = scratch();
    let img = image(&dir);
    let host = dir.path().join("h");
    std::fs::write(&host, b"payload").unwrap();
    ok(&["put", s(&img), s(&host), "/f"]);
    ok(&["mkdir", s(&img), "/d"]);
    ok(&["mv", s(&img), "/f", "/g"]);
    assert_eq!(ls(&img, "/"), ["d", "g"]);
    // Into an existing directory.
    ok(&["mv", s(&img), "/g", "/d"]);
    assert_eq!(ls(&img, "/"), ["d"]);
    assert_eq!(ok(&["cat", s(&img), "/d/g"]), b"payload");
    // Directory rename keeps the contents.
    ok(&["mv", s(&img), "/d", "/e"]);
    assert_eq!(ok(&["cat", s(&img), "/e/g"]), b"payload");
    // Replacing an existing file.
    std::fs::write(&host, b"other").unwrap();
    ok(&["put", s(&img), s(&host), "/e/h"]);
    ok(&["mv", s(&img), "/e/h", "/e/g"]);
    assert_eq!(ls(&img, "/e"), ["g"]);
    assert_eq!(ok(&["cat", s(&img), "/e/g"]), b"other");
    // -T renames over an empty directory instead of moving into it.
    ok(&["mkdir", s(&img), "/x"]);
    ok(&["mkdir", s(&img), "/y"]);
    ok(&["mv", "-T", s(&img), "/x", "/y"]);
    assert_eq!(ls(&img, "/"), ["e", "y"]);
    fails(&["mv", s(&img), "/nope", "/zz"]);
    fails(&["mv", s(&img), "/e", "/e/sub"]);
    assert_clean(&img);
}

#[test]
fn ln_hard_and_symbolic() {
    let dir = scratch();
    let img = image(&dir);
    let host = dir.path().join("h");
    std::fs::write(&host, b"shared bytes").unwrap();
    ok(&["put", s(&img), s(&host), "/orig"]);
    ok(&["ln", s(&img), "/orig", "/hard"]);
    let a = json(&["stat", s(&img), "/orig", "--json"]);
    let b = json(&["stat", s(&img), "/hard", "--json"]);
    assert_eq!(a["ino"], b["ino"]);
    assert_eq!(a["nlink"], 2);
    ok(&["ln", "-s", s(&img), "/orig", "/soft"]);
    assert_eq!(ok(&["cat", s(&img), "/soft"]), b"shared bytes");
    let l = json(&["stat", s(&img), "/soft", "--json"]);
    assert_eq!(l["kind"], "symlink");
    assert_ne!(l["ino"], a["ino"]);
    // Removing the original keeps the hard link; the symlink dangles.
    ok(&["rm", s(&img), "/orig"]);
    assert_eq!(ok(&["cat", s(&img), "/hard"]), b"shared bytes");
    assert_eq!(json(&["stat", s(&img), "/hard", "--json"])["nlink"], 1);
    fails(&["cat", s(&img), "/soft"]);
    // A dangling symlink can still be listed and removed.
    assert_eq!(ls(&img, "/soft"), ["/soft"]);
    ok(&["rm", s(&img), "/soft"]);
    ok(&["mkdir", s(&img), "/dir"]);
    fails(&["ln", s(&img), "/dir", "/dirlink"]);
    fails(&["ln", s(&img), "/hard", "/hard"]);
    assert_eq!(ls(&img, "/"), ["dir", "hard"]);
    assert_clean(&img);
}

#[test]
fn rm_and_rm_recursive() {
    let dir = scratch();
    let img = image(&dir);
    let host = dir.path().join("h");
    std::fs::write(&host, pseudo_random(10_000, 9)).unwrap();
    ok(&["put", s(&img), s(&host), "/f"]);
    ok(&["rm", s(&img), "/f"]);
    assert!(ls(&img, "/").is_empty());
    fails(&["rm", s(&img), "/f"]);

    // A tree: wide and deep, with files, symlinks and hard links.
    ok(&["mkdir", "-p", s(&img), "/t/a/b/c/d/e/f/g"]);
    for i in 0..20 {
        ok(&["put", s(&img), s(&host), &format!("/t/a/file{i}")]);
    }
    ok(&["put", s(&img), s(&host), "/t/a/b/c/d/e/f/g/deep"]);
    ok(&["ln", "-s", s(&img), "/t/a", "/t/a/b/loop"]);
    ok(&["ln", s(&img), "/t/a/file0", "/keep"]);
    let free_before = json(&["info", s(&img), "--json"])["blocks_free"]
        .as_u64()
        .unwrap();

    let e = fails(&["rm", s(&img), "/t"]);
    assert!(e.contains("-r"), "{e}");
    ok(&["mkdir", s(&img), "/empty"]);
    fails(&["rm", s(&img), "/empty"]);
    ok(&["rm", "-r", s(&img), "/empty"]);
    fails(&["rm", "-r", s(&img), "/"]);

    ok(&["rm", "-r", s(&img), "/t"]);
    assert_eq!(ls(&img, "/"), ["keep"]);
    assert_eq!(json(&["stat", s(&img), "/keep", "--json"])["nlink"], 1);
    let free_after = json(&["info", s(&img), "--json"])["blocks_free"]
        .as_u64()
        .unwrap();
    assert!(free_after > free_before, "{free_before} -> {free_after}");
    assert_clean(&img);
}

#[test]
fn errors_exit_1_without_panic() {
    let dir = scratch();
    let img = image(&dir);
    let missing = dir.path().join("missing.img");
    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"hello\n").unwrap();
    let noise = dir.path().join("noise.bin");
    std::fs::write(&noise, pseudo_random(2 << 20, 5)).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();

    for bad in [&missing, &small, &noise, &empty] {
        let e = fails(&["info", s(bad)]);
        assert!(e.contains(s(bad)), "{e}");
        fails(&["ls", s(bad)]);
        fails(&["cat", s(bad), "/x"]);
    }
    let e = fails(&["info", s(&noise)]);
    assert!(e.contains("not a novafs image"), "{e}");
    // The non-images are left alone.
    assert_eq!(std::fs::read(&small).unwrap(), b"hello\n");
    assert!(!missing.exists());

    let e = fails(&["cat", s(&img), "/nope"]);
    assert!(e.contains("/nope") && e.contains("not found"), "{e}");
    fails(&["stat", s(&img), "/nope"]);
    fails(&["ls", s(&img), "/nope"]);
    fails(&["get", s(&img), "/nope", s(&dir.path().join("x"))]);
    assert!(!dir.path().join("x").exists());
    fails(&["put", s(&img), s(&missing), "/x"]);
    fails(&["put", s(&img), s(&small), "/no/such/dir/x"]);
    fails(&["rm", s(&img), "/nope"]);
    fails(&["ln", s(&img), "/nope", "/x"]);
    assert_eq!(run(&["stat", s(&img), ""]).status.code(), Some(2)); // clap: empty value
    fails(&["cat", s(&img), &format!("/{}", "n".repeat(300))]);

    ok(&["mkdir", "-p", s(&img), "/full/sub"]);
    let e = fails(&["rm", s(&img), "/full"]);
    assert!(e.contains("directory"), "{e}");
    fails(&["cat", s(&img), "/full"]);
    fails(&["get", s(&img), "/full", s(&dir.path().join("y"))]);
    ok(&["put", s(&img), s(&small), "/file"]);
    fails(&["mkdir", s(&img), "/file/sub"]);
    fails(&["ls", s(&img), "/file/sub"]);
    // Still intact and cleanly unmounted after all of that.
    assert_eq!(ls(&img, "/"), ["file", "full"]);
    assert_clean(&img);
}

#[test]
fn image_in_use_is_an_error() {
    // Mount the image in this process; the binary must refuse it rather than share it.
    let dir = scratch();
    let img = image(&dir);
    let fs = novafs::Fs::open(&img, &novafs::MountOptions::default()).unwrap();
    let e = fails(&["info", s(&img)]);
    assert!(e.contains("in use"), "{e}");
    fails(&["put", s(&img), s(&img), "/x"]);
    fs.unmount().unwrap();
    assert_clean(&img);
}

#[test]
fn info_reports_recovery_after_a_crash() {
    let dir = scratch();
    let img = image(&dir);
    let fs = novafs::Fs::open(&img, &novafs::MountOptions::default()).unwrap();
    fs.create_dir("/d").unwrap();
    fs.write("/d/f", b"survives").unwrap();
    fs.crash();
    let v = json(&["info", s(&img), "--json"]);
    assert_eq!(v["clean"], Value::Bool(false), "{v}");
    assert_eq!(v["recovered"], Value::Bool(true), "{v}");
    // The command unmounted cleanly after recovering.
    let text = ok_str(&["info", s(&img)]);
    assert!(text.contains("clean"), "{text}");
    assert_eq!(ok(&["cat", s(&img), "/d/f"]), b"survives");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["ls"][..],
        &["mkfs"][..],
        &["mkfs", "x.img", "--size", "lots"][..],
        &["rm", "img", "/a", "--bogus"][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{}", describe(args, &o));
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
}

#[test]
fn help_has_examples() {
    let top = ok_str(&["--help"]);
    assert!(top.contains("Examples:"), "{top}");
    for sub in [
        "mkfs", "info", "ls", "stat", "cat", "put", "get", "mkdir", "rm", "mv", "ln", "demo",
        "fsck",
    ] {
        let h = ok_str(&[sub, "--help"]);
        assert!(h.contains("Examples:"), "{sub}: {h}");
        assert!(h.contains(&format!("novafs {sub}")), "{sub}: {h}");
    }
    assert!(ok_str(&["--help"]).contains("fsck"));
}

#[test]
fn demo_succeeds_and_prints_media_mode() {
    let dir = scratch();
    let img = dir.path().join("demo.img");
    let out = ok_str(&["demo", "--image", s(&img)]);
    let v = json(&["info", s(&img), "--json"]);
    let mode = v["media_mode"].as_str().unwrap().to_owned();
    assert!(out.contains("media mode") && out.contains(&mode), "{out}");
    for step in ["format", "verify", "remount", "unmount", "total"] {
        assert!(out.contains(step), "{step} missing:\n{out}");
    }
    assert!(out.contains(s(&img)), "{out}");
    assert_eq!(v["clean"], Value::Bool(true));
    // The demo tree is there to look at.
    assert!(ls(&img, "/").contains(&"README.txt".to_string()));
    // Too small an image fails cleanly.
    fails(&["demo", "--image", s(&img), "--size", "2MiB"]);
}

#[test]
fn invoked_as_mkfs_novafs() {
    let dir = scratch();
    let link = dir.path().join("mkfs.novafs");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let copy_dir = dir.path().join("bin");
    std::fs::create_dir(&copy_dir).unwrap();
    let copy = copy_dir.join("mkfs.novafs");
    std::fs::copy(BIN, &copy).unwrap();
    for (i, exe) in [&link, &copy].into_iter().enumerate() {
        let img = dir.path().join(format!("m{i}.img"));
        let o = run_with(exe, &os(&[s(&img), "--size", "16MiB"]), None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("formatted"));
        let v = json(&["info", s(&img), "--json"]);
        assert_eq!(v["blocks_total"].as_u64(), Some(4096));
        // Usage errors behave as for `novafs mkfs`.
        let o = run_with(exe, &os(&[]), None);
        assert_eq!(o.status.code(), Some(2));
        let o = run_with(exe, &os(&["--help"]), None);
        assert!(String::from_utf8_lossy(&o.stdout).contains("mkfs.novafs"));
    }
}

#[test]
fn force_pmem_variable_selects_emulated_mode_off_tmpfs() {
    // An image on the disk file system (the target directory) is msync mode by default;
    // NOVAFS_FORCE_PMEM=1 treats it as emulated pmem.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let img = dir.path().join("disk.img");
    ok(&["mkfs", s(&img), "--size", "4MiB"]);
    let default_mode = json(&["info", s(&img), "--json"])["media_mode"].clone();
    let o = Command::new(env!("CARGO_BIN_EXE_novafs"))
        .args(["info", s(&img), "--json"])
        .env("NOVAFS_FORCE_PMEM", "1")
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["media_mode"], "emulated");
    // Unless the target directory itself is on tmpfs, the default is msync.
    assert!(
        default_mode == "msync" || default_mode == "emulated",
        "{default_mode}"
    );
}

#[test]
fn resize_grows_an_image_offline() {
    let dir = scratch();
    let img = image(&dir);
    let data = dir.path().join("data");
    std::fs::write(&data, pseudo_random(1 << 20, 5)).unwrap();
    ok(&["put", s(&img), s(&data), "/kept"]);
    let out = ok_str(&["resize", s(&img), "64MiB"]);
    assert!(
        out.contains("grew") && out.contains("8192 blocks added"),
        "{out}"
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);
    let v = json(&["df", s(&img), "--json"]);
    assert_eq!(v["size_bytes"], Value::from(64u64 << 20), "{v}");
    // Relative sizes, and a no-op.
    ok(&["resize", s(&img), "+16MiB"]);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 80 << 20);
    let out = ok_str(&["resize", s(&img), "80MiB"]);
    assert!(out.contains("already"), "{out}");
    // Shrinking and bad sizes are refused with one line, nothing changed.
    let err = fails(&["resize", s(&img), "16MiB"]);
    assert!(err.contains("shrinking"), "{err}");
    let err = fails(&["resize", s(&img), "lots"]);
    assert!(err.contains("size"), "{err}");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 80 << 20);
    assert_eq!(
        ok(&["cat", s(&img), "/kept"]),
        pseudo_random(1 << 20, 5),
        "data survives growth"
    );
    assert_clean(&img);
    let out = ok_str(&["fsck", s(&img)]);
    assert!(!out.contains("error"), "{out}");
}
