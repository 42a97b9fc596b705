//! `novafs mount` / `mount.novafs`: serve an image through FUSE.
//!
//! Without `-f` the command starts itself again in the foreground as a detached child (its
//! own process group, stdin closed), waits until the child reports the kernel mount is up,
//! and exits: `mount` returns once the file system is usable, as mount(8) expects of a
//! helper. The child's "ready" line travels over its stdout pipe; if the child exits first,
//! its stderr is shown.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Args;
use novafs_fuse::MountConfig;

use crate::error::{CliError, CliResult};

/// Set in the detached child: print [`READY`] on stdout once mounted.
const NOTIFY_ENV: &str = "NOVAFS_MOUNT_NOTIFY";
const READY: &str = "novafs-mount-ready";

pub const MOUNT_EXAMPLES: &str = "\
Options (-o, comma-separated, repeatable):
  ro / rw               read-only (the engine refuses every change) / read-write (default)
  allow_other           let every user in (permissions are still checked by the kernel
                        against the stored mode, uid and gid: default_permissions is always on)
  allow_root            let root in besides the owner
  auto_unmount          unmount when the novafs process dies
  threads=N             request-handling threads (default: one per core, 2..8)
  fsname=NAME           source name shown in the mount table (default: the image path)
  attr_timeout=SECONDS  how long the kernel caches attributes and names (default 1)
  force_emulated        treat the image as emulated pmem even off tmpfs
  acl / noacl           POSIX ACLs enforced by the kernel (default) / only the mode is checked
  dev nodev suid nosuid exec noexec atime noatime sync async dirsync   kernel mount flags
  defaults auto noauto user users nofail _netdev x-* comment=*         accepted, ignored

Unmount with `fusermount3 -u MOUNTPOINT` or `umount MOUNTPOINT`, or send SIGINT/SIGTERM to a
foreground novafs: each unmounts the image cleanly (allocator state saved). Extended
attributes: user., trusted., security. and the POSIX ACLs (others: EOPNOTSUPP). Not supported:
RENAME_WHITEOUT (EINVAL).

Examples:
  novafs mount /dev/shm/pm.img /mnt/pm                # detaches once mounted
  novafs mount -f /dev/shm/pm.img /mnt/pm -o allow_other,threads=4
  mount.novafs /dev/shm/pm.img /mnt/pm -o ro
  mount -t novafs /dev/shm/pm.img /mnt/pm             # with mount.novafs in /sbin
  fusermount3 -u /mnt/pm";

/// Arguments of `novafs mount` and `mount.novafs`.
#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// Image file
    pub image: PathBuf,
    /// Directory to mount the image on
    pub mountpoint: PathBuf,
    /// Mount options, comma-separated (see below); may be repeated
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Stay in the foreground until unmounted (default: detach once mounted)
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Request-handling threads (same as -o threads=N)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Accepted for mount(8) compatibility (no mtab is written anyway)
    #[arg(short = 'n', hide = true)]
    pub no_mtab: bool,
    /// Accepted for mount(8) compatibility (sloppy options)
    #[arg(short = 's', hide = true)]
    pub sloppy: bool,
    /// Accepted for mount(8) compatibility
    #[arg(short = 'v', hide = true)]
    pub verbose: bool,
    /// Accepted for mount(8) compatibility (file system type)
    #[arg(short = 't', hide = true)]
    pub fstype: Option<String>,
}

impl MountArgs {
    fn config(&self) -> CliResult<MountConfig> {
        let mut c = MountConfig::default();
        for o in &self.options {
            c.apply_options(o)
                .map_err(|e| CliError::new("bad mount options", e))?;
        }
        if let Some(t) = self.threads {
            c.apply_option(&format!("threads={t}"))
                .map_err(|e| CliError::new("bad --threads", e))?;
        }
        Ok(c)
    }
}

/// `novafs mount`.
pub fn run(a: &MountArgs) -> CliResult<()> {
    let config = a.config()?;
    if !a.mountpoint.is_dir() {
        return Err(CliError::new(
            a.mountpoint.display().to_string(),
            "the mount point must be an existing directory",
        ));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(CliError::new(
            "cannot mount",
            "/dev/fuse is missing (load the fuse module; install fuse3)",
        ));
    }
    if a.foreground {
        foreground(a, &config)
    } else {
        detach(a)
    }
}

fn foreground(a: &MountArgs, config: &MountConfig) -> CliResult<()> {
    let notify = std::env::var_os(NOTIFY_ENV).is_some();
    let image = a.image.display().to_string();
    novafs_fuse::mount(&a.image, &a.mountpoint, config, |r| {
        let mut out = std::io::stdout();
        // Write errors are ignored: a detached child's stdout closes when the parent exits.
        let _ = if notify {
            writeln!(out, "{READY} {} {}", r.clean, r.media_mode)
        } else {
            writeln!(
                out,
                "novafs: {image} mounted on {} (media mode {}, {}{}); \
                 unmount with: fusermount3 -u {}",
                r.mountpoint.display(),
                r.media_mode,
                if r.clean { "clean" } else { "recovered" },
                if config.read_only { ", read-only" } else { "" },
                r.mountpoint.display()
            )
        };
        let _ = out.flush();
    })
    .map_err(|e| CliError::new(format!("mounting {image}"), e))
}

fn detach(a: &MountArgs) -> CliResult<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| CliError::new("finding own binary", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount").arg("-f");
    for o in &a.options {
        cmd.arg("-o").arg(o);
    }
    if let Some(t) = a.threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    cmd.arg("--")
        .arg(&a.image)
        .arg(&a.mountpoint)
        .env(NOTIFY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C at the terminal that started it does not reach it.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| CliError::new("starting the mount process", e))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.strip_prefix(READY) {
            let mut it = rest.split_whitespace();
            let clean = it.next() == Some("true");
            let mode = it.next().unwrap_or("?");
            println!(
                "novafs: {} mounted on {} (media mode {mode}, {}; pid {}); \
                 unmount with: fusermount3 -u {}",
                a.image.display(),
                a.mountpoint.display(),
                if clean { "clean" } else { "recovered" },
                child.id(),
                a.mountpoint.display()
            );
            return Ok(());
        }
    }
    // The child ended without mounting: show why.
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().ok();
    let err = err.trim();
    let err = err.strip_prefix("novafs: ").unwrap_or(err);
    Err(CliError::new(
        "",
        if err.is_empty() {
            format!("the mount process exited ({status:?}) without mounting")
        } else {
            err.to_string()
        },
    ))
}
