//! `RENAME_EXCHANGE`: two names swap atomically, across directories, for any kinds; a
//! directory never lands inside itself; the swap survives remount and crash.

mod cause;
use cause::cause;
use novafs::{EngineError as Error, FormatOptions, Fs, MountOptions, RenameFlags};

const X: RenameFlags = RenameFlags {
    noreplace: false,
    exchange: true,
};

fn fresh() -> (tempfile::TempDir, std::path::PathBuf, Fs) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("x.img");
    let fs = Fs::format(&img, 16 << 20, &FormatOptions::default()).unwrap();
    (dir, img, fs)
}

#[test]
fn swaps_files_dirs_and_symlinks_across_directories() {
    let (_d, img, fs) = fresh();
    fs.create_dir_all("/A/C").unwrap();
    fs.write("/A/C/inner", b"inner").unwrap();
    fs.write("/foo", b"foo").unwrap();
    fs.write("/A/bar", b"bar").unwrap();
    fs.symlink("/foo", "/sym").unwrap();
    let a_links = fs.metadata("/A").unwrap().nlink();
    let root_links = fs.metadata("/").unwrap().nlink();

    fs.rename_with("/foo", "/A/bar", X).unwrap();
    assert_eq!(fs.read("/foo").unwrap(), b"bar");
    assert_eq!(fs.read("/A/bar").unwrap(), b"foo");

    fs.rename_with("/A/C", "/sym", X).unwrap();
    assert_eq!(fs.read("/sym/inner").unwrap(), b"inner");
    assert_eq!(fs.read_link("/A/C").unwrap(), b"/foo");
    // /A traded a directory for a symlink, / the other way round.
    assert_eq!(fs.metadata("/A").unwrap().nlink(), a_links - 1);
    assert_eq!(fs.metadata("/").unwrap().nlink(), root_links + 1);

    let want = |fs: &Fs| {
        assert_eq!(fs.read("/foo").unwrap(), b"bar");
        assert_eq!(fs.read("/A/bar").unwrap(), b"foo");
        assert_eq!(fs.read("/sym/inner").unwrap(), b"inner");
        assert_eq!(fs.read_link("/A/C").unwrap(), b"/foo");
        assert_eq!(fs.metadata("/A").unwrap().nlink(), a_links - 1);
    };
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    want(&fs);
    fs.unmount().unwrap();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    want(&fs);
}

#[test]
fn refuses_what_posix_refuses() {
    let (_d, _img, fs) = fresh();
    fs.create_dir_all("/a/b").unwrap();
    fs.write("/a/b/f", b"f").unwrap();
    fs.write("/g", b"g").unwrap();
    // Both names must exist.
    assert!(matches!(
        cause(fs.rename_with("/g", "/missing", X)),
        Err(Error::NotFound)
    ));
    // A directory cannot be swapped into its own subtree, either way round.
    assert!(matches!(
        cause(fs.rename_with("/a", "/a/b/f", X)),
        Err(Error::RenameIntoSelf)
    ));
    assert!(matches!(
        cause(fs.rename_with("/a/b/f", "/a", X)),
        Err(Error::RenameIntoSelf)
    ));
    // Exchange and noreplace together make no sense.
    let both = RenameFlags {
        noreplace: true,
        exchange: true,
    };
    assert!(matches!(
        cause(fs.rename_with("/g", "/a", both)),
        Err(Error::InvalidArgument(_))
    ));
    // Two names of one inode: nothing to do.
    fs.hard_link("/g", "/h").unwrap();
    fs.rename_with("/g", "/h", X).unwrap();
    assert_eq!(fs.read("/g").unwrap(), b"g");
    assert_eq!(fs.read("/a/b/f").unwrap(), b"f");
}

/// A rename changes the renamed inode's ctime (as ext4 and tmpfs do), for files, directories
/// and symlinks, within and across directories, also over a victim; and it stays after
/// remount and after a crash.
#[test]
fn rename_sets_the_renamed_inodes_ctime() {
    let (_d, img, fs) = fresh();
    fs.create_dir_all("/A/B").unwrap();
    fs.write("/f", b"f").unwrap();
    fs.write("/victim", b"v").unwrap();
    fs.symlink("/f", "/s").unwrap();
    let ctime = |fs: &Fs, p: &str| fs.symlink_metadata(p).unwrap().changed();
    let before = [ctime(&fs, "/f"), ctime(&fs, "/A/B"), ctime(&fs, "/s")];
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs.rename("/f", "/g").unwrap(); // same directory
    fs.rename("/A/B", "/B").unwrap(); // a directory, across directories
    fs.rename("/s", "/A/s").unwrap(); // a symlink, across directories
    fs.rename("/g", "/victim").unwrap(); // over a victim
    let after = [ctime(&fs, "/victim"), ctime(&fs, "/B"), ctime(&fs, "/A/s")];
    for (b, a) in before.iter().zip(&after) {
        assert!(a > b, "ctime {a:?} not after {b:?}");
    }
    fs.engine().crash();
    drop(fs);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let recovered = [ctime(&fs, "/victim"), ctime(&fs, "/B"), ctime(&fs, "/A/s")];
    assert_eq!(recovered, after);
    fs.unmount().unwrap();
}
