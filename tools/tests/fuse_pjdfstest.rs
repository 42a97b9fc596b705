//! A public POSIX suite through the mount: pjdfstest (the Rust rewrite, crates.io
//! `pjdfstest` 0.2.2) runs once on tmpfs and once through `novafs mount`, with the same
//! configuration (opt-in features `rename_ctime`, `posix_fallocate`, `utimensat`, `utime_now`;
//! a second file system for the EXDEV cases). The mount must fail nothing, and every case that
//! passes on tmpfs must pass on the mount. Then unmount and fsck.
//!
//! Needs root (the suite switches to the users `nobody` and `tests`), the `pjdfstest` binary and
//! a `tests` user; `.ci/run` installs both and sets `NOVAFS_REQUIRE_POSIX_SUITE=1`, which turns
//! a missing prerequisite into a failure instead of a printed skip.

mod fuse_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fuse_common::{fuse_available, sh, Mounted};

/// The suite's configuration (naptime above the kernel's coarse clock tick, so that "the
/// timestamp changed" cases see a change on any file system).
const CONFIG: &str = r#"
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.02
allow_remount = false

[dummy_auth]
entries = [
   ["nobody", "NOGROUP"],
   ["tests", "tests"],
]
"#;

/// The `pjdfstest` binary, or why the suite cannot run here.
fn prerequisites() -> Result<PathBuf, String> {
    if !fuse_available() {
        return Err("/dev/fuse is absent".into());
    }
    if String::from_utf8_lossy(&sh("id -u").stdout).trim() != "0" {
        return Err("not root (the suite switches users)".into());
    }
    if !sh("getent passwd tests && getent group tests")
        .status
        .success()
    {
        return Err("no `tests` user and group (useradd -M tests)".into());
    }
    let on_path = sh("command -v pjdfstest");
    if on_path.status.success() {
        return Ok(PathBuf::from(
            String::from_utf8_lossy(&on_path.stdout).trim().to_string(),
        ));
    }
    let home = std::env::var("HOME").unwrap_or_default();
    [
        PathBuf::from(&home).join(".cargo/bin/pjdfstest"),
        PathBuf::from("/usr/local/bin/pjdfstest"),
    ]
    .into_iter()
    .find(|p| p.exists())
    .ok_or_else(|| "pjdfstest is not installed (cargo install pjdfstest --locked)".into())
}

/// The suite's output (stdout, then stderr) for one run in `dir` (a fresh directory), with
/// `second` as the other file system; `case` narrows it to the cases whose names contain it.
fn suite_output(
    bin: &Path,
    config: &Path,
    dir: &Path,
    second: &Path,
    case: Option<&str>,
) -> String {
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config)
        .arg("-p")
        .arg(dir)
        .arg("-s")
        .arg(second);
    cmd.args(case).current_dir(dir);
    let o = cmd.output().expect("run pjdfstest");
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// Run the suite in `dir`; returns each case's result ("ok", "FAILED", "skipped") and the
/// summary line.
fn run_suite(
    bin: &Path,
    config: &Path,
    dir: &Path,
    second: &Path,
) -> (BTreeMap<String, String>, String) {
    let out = suite_output(bin, config, dir, second, None);
    let mut cases = BTreeMap::new();
    let mut summary = String::new();
    for line in out.lines() {
        if line.starts_with("Summary:") {
            summary = line.to_string();
        }
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let mut words = line.split_whitespace();
        if let (Some(name), Some(result), None) = (words.next(), words.next(), words.next()) {
            if name.contains("::") && matches!(result, "ok" | "FAILED" | "skipped") {
                cases.insert(name.to_string(), result.to_string());
            }
        }
    }
    assert!(!summary.is_empty(), "pjdfstest printed no summary:\n{out}");
    (cases, summary)
}

/// Why a case failed, from a rerun of that case alone (its message, without the backtrace).
fn why(bin: &Path, config: &Path, dir: &Path, second: &Path, case: &str) -> String {
    suite_output(bin, config, dir, second, Some(case))
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && !l.contains(" at ")
        })
        .take(8)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn pjdfstest_through_the_mount_fails_nothing_that_tmpfs_passes() {
    let bin = match prerequisites() {
        Ok(b) => b,
        Err(why) if !fuse_available() => {
            eprintln!("SKIPPED: {why}");
            return;
        }
        Err(why) => {
            assert!(
                std::env::var_os("NOVAFS_REQUIRE_POSIX_SUITE").is_none(),
                "the POSIX suite cannot run: {why}"
            );
            eprintln!("SKIPPED: the POSIX suite cannot run: {why}");
            return;
        }
    };
    let nogroup = if sh("getent group nogroup").status.success() {
        "nogroup"
    } else {
        "nobody"
    };
    // The mount's directory and the tmpfs reference are both under /dev/shm/<tempdir>/, so the
    // two runs see paths of the same length (the suite's PATH_MAX cases build paths from it).
    let mut m = Mounted::new("512MiB", "allow_other");
    let config = m.dir.path().join("pjdfstest.toml");
    std::fs::write(&config, CONFIG.replace("NOGROUP", nogroup)).unwrap();
    let reference = m.dir.path().join("tmp");
    // The second file system of the EXDEV cases: the mount for the tmpfs run, tmpfs for the
    // mount's run.
    let second_of_tmpfs = m.p("2nd");
    let second_of_mount = m.dir.path().join("2nd");
    for d in [&reference, &second_of_tmpfs, &second_of_mount] {
        std::fs::create_dir(d).unwrap();
    }
    assert_eq!(
        reference.as_os_str().len(),
        m.mnt.as_os_str().len(),
        "same path length on both sides"
    );

    let (on_tmpfs, tmpfs_summary) = run_suite(&bin, &config, &reference, &second_of_tmpfs);
    let (on_mount, mount_summary) = run_suite(&bin, &config, &m.mnt, &second_of_mount);
    eprintln!("tmpfs:  {tmpfs_summary}\nnovafs: {mount_summary}");

    // The suite really ran: hundreds of cases, most of them passing on tmpfs.
    let passed_on_tmpfs = on_tmpfs.values().filter(|r| *r == "ok").count();
    assert!(
        passed_on_tmpfs >= 350,
        "tmpfs passed only {passed_on_tmpfs} cases: {tmpfs_summary}"
    );
    assert_eq!(
        on_tmpfs.keys().collect::<Vec<_>>(),
        on_mount.keys().collect::<Vec<_>>(),
        "the same cases ran on both"
    );
    for (case, result) in &on_tmpfs {
        if result == "FAILED" {
            eprintln!("note: {case} fails on tmpfs");
        }
    }
    let mut worse = Vec::new();
    for (case, result) in &on_mount {
        let reference = &on_tmpfs[case];
        if result == "FAILED" || (reference == "ok" && result != "ok") {
            worse.push(format!(
                "{case}: tmpfs {reference}, novafs {result}\n{}",
                why(&bin, &config, &m.mnt, &second_of_mount, case)
            ));
        }
    }
    assert!(
        worse.is_empty(),
        "{} case(s) worse through the mount than on tmpfs ({mount_summary}):\n{}",
        worse.len(),
        worse.join("\n")
    );
    m.unmount();
    m.fsck_clean();
}
