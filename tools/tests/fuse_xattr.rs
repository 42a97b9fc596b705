//! Extended attributes and POSIX ACLs through the FUSE mount: the system calls with their
//! errnos, `setfattr`/`getfattr`, `cp -a`, `tar --xattrs`, `rsync -aX` round trips,
//! `setfacl`/`getfacl` with the kernel enforcing the ACL against a non-root user, default
//! ACL inheritance, chmod keeping the mask; and fallocate KEEP_SIZE past the end compared
//! with tmpfs. Each test remounts, unmounts cleanly and runs fsck.

mod fuse_common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use fuse_common::{fuse_available, sh, sh_ok, Mounted};
use rustix::fs::XattrFlags;

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: {tool} is not installed (.ci/run installs attr, acl, rsync)");
    }
    ok
}

fn get(p: &Path, name: &str) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 70000];
    let n = rustix::fs::getxattr(p, name, &mut buf[..])?;
    buf.truncate(n);
    Ok(buf)
}

fn list(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::listxattr(p, &mut buf[..]).unwrap();
    let mut v: Vec<String> = buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    v.sort();
    v
}

fn big(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// `getfattr -d -m - -e hex` of `names` (relative to `dir`).
fn dump(dir: &Path, names: &str) -> String {
    sh_ok(&format!(
        "cd '{}' && getfattr -d -m - -e hex {names}",
        dir.display()
    ))
}

#[test]
fn xattr_system_calls_and_tools() {
    if !fuse_available() || !have("setfattr") {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let f = m.p("f");
    fs::write(&f, b"data").unwrap();
    fs::create_dir(m.p("d")).unwrap();
    rustix::fs::setxattr(&f, "user.small", b"hello", XattrFlags::CREATE).unwrap();
    rustix::fs::setxattr(&f, "user.big", &big(65536, 1), XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(&f, "trusted.t", b"", XattrFlags::empty()).unwrap();
    rustix::fs::setxattr(m.p("d"), "security.s", &big(5000, 2), XattrFlags::empty()).unwrap();
    assert_eq!(get(&f, "user.small").unwrap(), b"hello");
    assert_eq!(get(&f, "user.big").unwrap(), big(65536, 1));
    assert_eq!(get(&f, "trusted.t").unwrap(), b"");
    assert_eq!(list(&f), ["trusted.t", "user.big", "user.small"]);
    // Errnos as on ext4.
    use rustix::io::Errno;
    assert_eq!(get(&f, "user.none"), Err(Errno::NODATA));
    let mut small = [0u8; 3];
    assert_eq!(
        rustix::fs::getxattr(&f, "user.small", &mut small[..]),
        Err(Errno::RANGE)
    );
    let mut tiny = [0u8; 4];
    assert_eq!(rustix::fs::listxattr(&f, &mut tiny[..]), Err(Errno::RANGE));
    assert_eq!(
        rustix::fs::setxattr(&f, "user.small", b"x", XattrFlags::CREATE),
        Err(Errno::EXIST)
    );
    assert_eq!(
        rustix::fs::setxattr(&f, "user.none", b"x", XattrFlags::REPLACE),
        Err(Errno::NODATA)
    );
    assert_eq!(rustix::fs::removexattr(&f, "user.none"), Err(Errno::NODATA));
    assert_eq!(
        rustix::fs::setxattr(&f, "user.v", &vec![0u8; 65537], XattrFlags::empty()),
        Err(Errno::TOOBIG)
    );
    let long = format!("user.{}", "n".repeat(251));
    assert_eq!(
        rustix::fs::setxattr(&f, long.as_str(), b"x", XattrFlags::empty()),
        Err(Errno::RANGE)
    );
    assert_eq!(
        rustix::fs::setxattr(&f, "os2.x", b"x", XattrFlags::empty()),
        Err(Errno::NOTSUP)
    );
    rustix::fs::removexattr(&f, "trusted.t").unwrap();
    assert_eq!(list(&f), ["user.big", "user.small"]);
    // setfattr/getfattr.
    sh_ok(&format!(
        "setfattr -n user.tool -v 0x0102ff '{}'",
        f.display()
    ));
    let out = sh_ok(&format!(
        "getfattr -n user.tool -e hex --only-values '{}' | od -An -tx1",
        f.display()
    ));
    assert_eq!(out.trim(), "01 02 ff", "setfattr -v 0x.. stores the bytes");

    // cp -a preserves xattrs (inside the mount, and from the mount to tmpfs and back).
    sh_ok(&format!(
        "cp -a '{}' '{}'",
        f.display(),
        m.p("copy").display()
    ));
    assert_eq!(get(&m.p("copy"), "user.big").unwrap(), big(65536, 1));
    assert_eq!(list(&m.p("copy")), list(&f));
    let before = dump(&m.mnt, "f d copy");
    assert!(
        before.contains("user.small=0x68656c6c6f"),
        "getfattr -d lists them"
    );

    // tar --xattrs round trip: archive the tree, extract it into a fresh directory.
    let tar = m.dir.path().join("t.tar");
    sh_ok(&format!(
        "cd '{}' && tar --xattrs --xattrs-include='*' -cf '{}' f d copy",
        m.mnt.display(),
        tar.display()
    ));
    fs::create_dir(m.p("untar")).unwrap();
    sh_ok(&format!(
        "cd '{}' && tar --xattrs --xattrs-include='*' -xf '{}'",
        m.p("untar").display(),
        tar.display()
    ));
    assert_eq!(get(&m.p("untar/f"), "user.big").unwrap(), big(65536, 1));
    assert_eq!(get(&m.p("untar/d"), "security.s").unwrap(), big(5000, 2));
    assert_eq!(list(&m.p("untar/copy")), list(&f));

    // rsync -aX to tmpfs and back.
    if have("rsync") {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        sh_ok(&format!(
            "rsync -aX '{}/f' '{}/d' '{}/'",
            m.mnt.display(),
            m.mnt.display(),
            shm.path().display()
        ));
        // tmpfs keeps user.* and security.*, trusted.* as root.
        assert_eq!(
            get(&shm.path().join("f"), "user.big").unwrap(),
            big(65536, 1)
        );
        fs::create_dir(m.p("back")).unwrap();
        sh_ok(&format!(
            "rsync -aX '{}/f' '{}/d' '{}/'",
            shm.path().display(),
            shm.path().display(),
            m.p("back").display()
        ));
        assert_eq!(get(&m.p("back/f"), "user.small").unwrap(), b"hello");
        assert_eq!(get(&m.p("back/d"), "security.s").unwrap(), big(5000, 2));
        assert_eq!(list(&m.p("back/f")), list(&f));
    }

    // Kept across remount; fsck clean.
    m.unmount();
    m.fsck_clean();
    m.mount("");
    assert!(
        dump(&m.mnt, "f d copy") == before,
        "xattrs changed across remount"
    );
    assert!(
        dump(&m.mnt, "untar/f untar/d untar/copy").replace("untar/", "") == before,
        "tar --xattrs round trip differs"
    );
    assert_eq!(get(&f, "user.big").unwrap(), big(65536, 1));
    m.unmount();
    m.fsck_clean();
}

/// Run `cmd` as uid/gid 65534 with no supplementary groups.
fn as_nobody(cmd: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            cmd,
        ])
        .current_dir("/")
        .output()
        .expect("setpriv")
}

#[test]
fn acls_are_enforced_by_the_kernel() {
    if !fuse_available() || !have("setfacl") || !have("setpriv") {
        return;
    }
    let mut m = Mounted::new("64MiB", "allow_other");
    fs::set_permissions(&m.mnt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let open = m.p("open");
    let shut = m.p("shut");
    fs::write(&open, b"world-readable").unwrap();
    fs::write(&shut, b"owner-only").unwrap();
    sh_ok(&format!(
        "chmod 644 '{}'; chmod 600 '{}'",
        open.display(),
        shut.display()
    ));
    // Without ACLs: the mode decides.
    assert!(as_nobody(&format!("cat '{}'", open.display()))
        .status
        .success());
    assert!(!as_nobody(&format!("cat '{}'", shut.display()))
        .status
        .success());
    // An ACL entry for nobody denies what "other" allows, and grants what the mode does not.
    sh_ok(&format!("setfacl -m u:65534:--- '{}'", open.display()));
    sh_ok(&format!("setfacl -m u:65534:r-- '{}'", shut.display()));
    let o = as_nobody(&format!("cat '{}'", open.display()));
    assert!(!o.status.success(), "the ACL must deny nobody: {o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{o:?}"
    );
    let o = as_nobody(&format!("cat '{}'", shut.display()));
    assert!(o.status.success(), "the ACL must let nobody read: {o:?}");
    assert_eq!(o.stdout, b"owner-only");
    // Writing is still denied (r-- only).
    assert!(!as_nobody(&format!("echo x >> '{}'", shut.display()))
        .status
        .success());
    // getfacl round trip; the mode's group bits are the mask.
    let acl = sh_ok(&format!("getfacl -cpn '{}'", shut.display()));
    assert!(acl.contains("user:65534:r--"), "{acl}");
    assert!(acl.contains("mask::r--"), "{acl}");
    assert_eq!(fs::metadata(&shut).unwrap().mode() & 0o777, 0o640);
    // chmod changes the mask: g-r masks nobody's entry out (the kernel denies again).
    sh_ok(&format!("chmod 600 '{}'", shut.display()));
    let acl = sh_ok(&format!("getfacl -cpn '{}'", shut.display()));
    assert!(acl.contains("mask::---"), "{acl}");
    assert!(!as_nobody(&format!("cat '{}'", shut.display()))
        .status
        .success());
    sh_ok(&format!("chmod 640 '{}'", shut.display()));
    assert!(as_nobody(&format!("cat '{}'", shut.display()))
        .status
        .success());
    // setfacl --restore round trip onto another file.
    let saved = m.dir.path().join("acl.txt");
    sh_ok(&format!(
        "cd '{}' && getfacl -p shut > '{}'",
        m.mnt.display(),
        saved.display()
    ));
    fs::write(m.p("other"), b"x").unwrap();
    sh_ok(&format!(
        "cd '{}' && sed 's/^# file: shut/# file: other/' '{}' | setfacl --restore=-",
        m.mnt.display(),
        saved.display()
    ));
    assert_eq!(
        sh_ok(&format!("getfacl -cpn '{}'", m.p("other").display())),
        sh_ok(&format!("getfacl -cpn '{}'", shut.display()))
    );
    // Default ACL: inherited by new files and directories.
    let d = m.p("d");
    fs::create_dir(&d).unwrap();
    sh_ok(&format!("chmod 700 '{}'", d.display()));
    sh_ok(&format!(
        "setfacl -d -m u:65534:rwx -m u:65534:rwx '{}'",
        d.display()
    ));
    sh_ok(&format!("setfacl -m u:65534:rwx '{}'", d.display()));
    sh_ok(&format!(
        "umask 077; echo new > '{}/new'; mkdir '{}/sub'",
        d.display(),
        d.display()
    ));
    let acl = sh_ok(&format!("getfacl -cpn '{}/new'", d.display()));
    assert!(acl.contains("user:65534:rwx"), "{acl}");
    let o = as_nobody(&format!("cat '{}/new'", d.display()));
    assert!(
        o.status.success(),
        "inherited ACL (umask ignored under a default ACL): {o:?}\n{acl}"
    );
    let dacl = sh_ok(&format!("getfacl -cpn '{}/sub'", d.display()));
    assert!(dacl.contains("default:user:65534:rwx"), "{dacl}");
    // setfacl -b removes it all: the mode decides again.
    sh_ok(&format!("setfacl -b '{}'", shut.display()));
    assert!(!sh_ok(&format!("getfacl -cpn '{}'", shut.display())).contains("65534"));
    assert!(!as_nobody(&format!("cat '{}'", shut.display()))
        .status
        .success());

    // Kept across remount.
    m.unmount();
    m.fsck_clean();
    m.mount("allow_other");
    let o = as_nobody(&format!("cat '{}'", open.display()));
    assert!(
        !o.status.success(),
        "after remount the ACL must still deny: {o:?}"
    );
    assert!(as_nobody(&format!("cat '{}/new'", d.display()))
        .status
        .success());
    m.unmount();
    m.fsck_clean();
}

/// The mode of `f` after nobody (uid/gid 65534, no other groups) sets an access ACL on it;
/// `f` is nobody's file with group 0 and mode 02770 (setgid).
fn mode_after_nobody_sets_an_acl(f: &Path) -> u32 {
    fs::write(f, b"x").unwrap();
    sh_ok(&format!(
        "chown 65534:0 '{0}' && chmod 2770 '{0}'",
        f.display()
    ));
    assert_eq!(fs::metadata(f).unwrap().mode() & 0o7777, 0o2770);
    let o = as_nobody(&format!("setfacl -m u:0:rwx '{}'", f.display()));
    assert!(o.status.success(), "setfacl as the owner: {o:?}");
    fs::metadata(f).unwrap().mode() & 0o7777
}

/// Setting an access ACL clears the setgid bit when the caller is not in the file's group and
/// lacks CAP_FSETID, as Linux's `posix_acl_update_mode` does on tmpfs and ext4 (the FUSE
/// kernel's "kill SGID" hint, which the server works out itself); root keeps it.
#[test]
fn an_acl_set_by_a_non_member_clears_setgid_as_on_tmpfs() {
    if !fuse_available() || !have("setfacl") || !have("setpriv") {
        return;
    }
    let mut m = Mounted::new("64MiB", "allow_other");
    fs::set_permissions(&m.mnt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix("novafs-sgid-")
        .tempdir_in("/dev/shm")
        .unwrap();
    fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let on_tmpfs = mode_after_nobody_sets_an_acl(&tmp.path().join("f"));
    assert_eq!(on_tmpfs & 0o2000, 0, "tmpfs clears setgid: {on_tmpfs:o}");
    let on_mount = mode_after_nobody_sets_an_acl(&m.p("f"));
    assert_eq!(
        on_mount, on_tmpfs,
        "mode after the ACL: novafs {on_mount:o}, tmpfs {on_tmpfs:o}"
    );
    // Root (CAP_FSETID) keeps it, on both.
    for f in [tmp.path().join("g"), m.p("g")] {
        fs::write(&f, b"x").unwrap();
        sh_ok(&format!(
            "chown 65534:0 '{0}' && chmod 2770 '{0}'",
            f.display()
        ));
        sh_ok(&format!("setfacl -m u:65534:rwx '{}'", f.display()));
        assert_eq!(
            fs::metadata(&f).unwrap().mode() & 0o7777,
            0o2770,
            "{}",
            f.display()
        );
    }
    // Durable with the ACL: the same after remount.
    m.unmount();
    m.fsck_clean();
    m.mount("allow_other");
    assert_eq!(fs::metadata(m.p("f")).unwrap().mode() & 0o7777, on_tmpfs);
    assert!(sh_ok(&format!("getfacl -cpn '{}'", m.p("f").display())).contains("user:0:rwx"));
    m.unmount();
    m.fsck_clean();
}

/// size, st_blocks and contents of `p`.
fn shape(p: &Path) -> (u64, u64, Vec<u8>) {
    let md = fs::metadata(p).unwrap();
    (md.len(), md.blocks(), fs::read(p).unwrap())
}

#[test]
fn fallocate_keep_size_past_the_end_as_on_tmpfs() {
    if !fuse_available() {
        return;
    }
    let mut m = Mounted::new("64MiB", "");
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let steps = [
        "printf 'abcdefgh%.0s' $(seq 700) > f", // 5,600 bytes: 2 pages
        "fallocate -n -o 8192 -l 40960 f",      // 10 pages past the end, size kept
        "fallocate -n -o 0 -l 4096 f",          // inside: nothing new
        "truncate -s 20000 f",                  // grow over some: zeros
        "printf end | dd of=f bs=1 seek=30000 conv=notrunc 2>/dev/null", // write past them
        "truncate -s 10000 f",                  // shrink: pages past the size go
        "fallocate -n -o 100000 -l 8192 f",     // far past the end
        "truncate -s 120000 f",
    ];
    for (i, step) in steps.iter().enumerate() {
        let a = fuse_common::run_in(&m.mnt, &format!("cd \"$R\" && {step}"));
        let b = fuse_common::run_in(shm.path(), &format!("cd \"$R\" && {step}"));
        assert_eq!(a, b, "step {i} `{step}`: exit/output differ from tmpfs");
        let (x, y) = (shape(&m.p("f")), shape(&shm.path().join("f")));
        assert_eq!(x.0, y.0, "step {i} `{step}`: size");
        assert_eq!(x.1, y.1, "step {i} `{step}`: st_blocks");
        assert!(x.2 == y.2, "step {i} `{step}`: contents differ");
    }
    let want = shape(&m.p("f"));
    m.unmount();
    m.fsck_clean();
    m.mount("");
    assert_eq!(shape(&m.p("f")), want);
    // A crash (kill -9 of the server) right after a KEEP_SIZE allocation keeps it.
    sh_ok(&format!(
        "fallocate -n -o 200000 -l 8192 '{}'",
        m.p("f").display()
    ));
    let blocks = fs::metadata(m.p("f")).unwrap().blocks();
    m.signal("KILL");
    m.reap_killed();
    m.mount("");
    assert_eq!(fs::metadata(m.p("f")).unwrap().blocks(), blocks);
    assert_eq!(fs::metadata(m.p("f")).unwrap().len(), 120000);
    m.unmount();
    m.fsck_clean();
    // fallocate -n through the tool works (was refused before).
    assert!(sh(&format!("cd '{}' && true", shm.path().display()))
        .status
        .success());
}

#[test]
fn noacl_mounts_store_acls_without_enforcing_them() {
    if !fuse_available() || !have("setfacl") || !have("setpriv") {
        return;
    }
    let mut m = Mounted::new("64MiB", "noacl,allow_other");
    fs::set_permissions(&m.mnt, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let f = m.p("f");
    fs::write(&f, b"x").unwrap();
    sh_ok(&format!("chmod 644 '{}'", f.display()));
    // Without FUSE_POSIX_ACL the kernel passes the ACL names through as plain attributes
    // (stored, the mode follows) but checks only the mode.
    sh_ok(&format!("setfacl -m u:65534:--- '{}'", f.display()));
    assert!(sh_ok(&format!("getfacl -cpn '{}'", f.display())).contains("user:65534:---"));
    let o = as_nobody(&format!("cat '{}'", f.display()));
    assert!(o.status.success(), "noacl: only the mode is checked: {o:?}");
    rustix::fs::setxattr(&f, "user.k", b"v", XattrFlags::empty()).unwrap();
    assert_eq!(get(&f, "user.k").unwrap(), b"v");
    m.unmount();
    m.fsck_clean();
}
