//! Shared helpers of the FUSE tests: format an image, mount it with the real `novafs mount -f`
//! binary, unmount it with `fusermount3 -u`, check it with `novafs fsck`.
//!
//! The tests skip (with a printed reason) only when `/dev/fuse` is absent. They run one at a
//! time: each mounts its own image, and a child forked by one test while another has an image
//! open in-process would briefly hold that image's lock.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_novafs");

/// How long a mount or unmount may take before the test gives up (a hang guard, not a
/// performance assertion).
const PATIENCE: Duration = Duration::from_secs(120);

static SERIAL: Mutex<()> = Mutex::new(());

/// Whether FUSE tests can run here; prints why not.
pub fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        true
    } else {
        eprintln!("SKIPPED: /dev/fuse is absent (no fuse kernel module): FUSE tests not run");
        false
    }
}

/// Run a command, returning its output.
pub fn sh(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

/// Run a shell command that must succeed; returns stdout.
pub fn sh_ok(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run `script` (with `$R` set to `root`) in `sh`; its status, stdout and stderr with the
/// root's path replaced by `$R`.
pub fn run_in(root: &Path, script: &str) -> (Option<i32>, String, String) {
    let o = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("R", root)
        .output()
        .unwrap();
    let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(root.to_str().unwrap(), "$R");
    (o.status.code(), clean(&o.stdout), clean(&o.stderr))
}

/// A mounted image.
pub struct Mounted {
    pub dir: TempDir,
    pub image: PathBuf,
    pub mnt: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

impl Mounted {
    /// Format a fresh image of `size` (e.g. "256MiB") and mount it with `options` (`-o`).
    pub fn new(size: &str, options: &str) -> Mounted {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = tempfile::Builder::new();
        b.prefix("novafs-fuse-");
        let dir = if Path::new("/dev/shm").is_dir() {
            b.tempdir_in("/dev/shm").expect("tempdir")
        } else {
            b.tempdir().expect("tempdir")
        };
        // Other users (the permission tests) must reach the mount point.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let image = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let o = Command::new(BIN)
            .args(["mkfs", "--size", size])
            .arg(&image)
            .output()
            .unwrap();
        assert!(o.status.success(), "mkfs: {o:?}");
        let log = dir.path().join("mount.log");
        let mut m = Mounted {
            dir,
            image,
            mnt,
            child: None,
            log,
            _serial: serial,
        };
        m.mount(options);
        m
    }

    /// Path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The serving process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mounted").id()
    }

    /// Mount (again) with `options`; returns once the kernel mount is up.
    pub fn mount(&mut self, options: &str) {
        assert!(self.child.is_none(), "already mounted");
        let mut cmd = Command::new(BIN);
        cmd.arg("mount").arg("-f");
        if !options.is_empty() {
            cmd.arg("-o").arg(options);
        }
        let log = File::create(&self.log).unwrap();
        let mut child = cmd
            .arg(&self.image)
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn novafs mount");
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        let n = BufReader::new(out).read_line(&mut line).unwrap_or(0);
        if n == 0 || !line.contains("mounted on") {
            let status = child.wait();
            panic!(
                "novafs mount did not mount ({status:?}): {line}\n{}",
                self.log_text()
            );
        }
        self.child = Some(child);
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Wait (bounded) for the serving process to exit.
    fn wait_child(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("mounted");
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if start.elapsed() > PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "novafs mount did not exit after unmount\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `fusermount3 -u` (retried while busy), then the serving process must exit with 0.
    pub fn unmount(&mut self) {
        let start = Instant::now();
        loop {
            let o = unmount_cmd(&self.mnt).output().expect("run fusermount3");
            if o.status.success() {
                break;
            }
            if start.elapsed() > PATIENCE {
                panic!("unmount failed: {o:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let st = self.wait_child();
        assert!(
            st.success(),
            "novafs mount exited with {st:?}\n{}",
            self.log_text()
        );
    }

    /// Send `signal` (e.g. "TERM") to the serving process.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let o = Command::new("kill")
            .args(["-s", signal, &pid])
            .output()
            .unwrap();
        assert!(o.status.success(), "kill: {o:?}");
    }

    /// After the serving process was killed (-9): reap it and detach its dead mount, so that
    /// the image can be mounted again (recovery runs then).
    pub fn reap_killed(&mut self) {
        let mut child = self.child.take().expect("mounted");
        let _ = child.wait();
        let start = Instant::now();
        while is_mounted(&self.mnt) {
            let _ = unmount_cmd(&self.mnt).output();
            if start.elapsed() > PATIENCE {
                panic!("the dead mount stays mounted");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send `signal` (e.g. "TERM") to the serving process; it must unmount and exit with 0.
    pub fn stop_with_signal(&mut self, signal: &str) {
        self.signal(signal);
        self.wait_exit_ok(signal);
    }

    /// Wait for the serving process to exit after `signal`; it must exit with 0, unmounted.
    pub fn wait_exit_ok(&mut self, signal: &str) {
        let st = self.wait_child();
        assert!(
            st.success(),
            "novafs mount exited with {st:?} after SIG{signal}\n{}",
            self.log_text()
        );
        assert!(!is_mounted(&self.mnt), "still mounted after SIG{signal}");
    }

    /// `novafs fsck --json` of the (unmounted) image: must exit 0 and find nothing.
    pub fn fsck_clean(&self) -> Value {
        let o = Command::new(BIN)
            .args(["fsck", "--json"])
            .arg(&self.image)
            .output()
            .unwrap();
        let v: Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("fsck --json: {e}: {o:?}"));
        assert_eq!(o.status.code(), Some(0), "fsck: {v:#}");
        assert_eq!(v["errors_found"], 0, "fsck: {v:#}");
        v
    }

    /// `novafs info --json` of the (unmounted) image.
    pub fn info(&self) -> Value {
        let o = Command::new(BIN)
            .args(["info", "--json"])
            .arg(&self.image)
            .output()
            .unwrap();
        assert!(o.status.success(), "info: {o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

fn unmount_cmd(mnt: &Path) -> Command {
    let mut c = if Path::new("/usr/bin/fusermount3").exists() || which("fusermount3") {
        let mut c = Command::new("fusermount3");
        c.arg("-u");
        c
    } else {
        Command::new("umount")
    };
    c.arg(mnt);
    c
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
}

/// Whether `mnt` is a mount point (listed in /proc/self/mountinfo).
pub fn is_mounted(mnt: &Path) -> bool {
    let mnt = mnt.canonicalize().unwrap_or_else(|_| mnt.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == mnt)
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A failed test: detach the mount and stop the server.
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mnt)
                .output();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
