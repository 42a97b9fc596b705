//! FIFOs, sockets and device nodes (format 2): made with `Fs::mknod`, shown with their kind
//! and device number, linked, renamed and removed like files, without data; they survive
//! remount and crash; fsck accepts them; a format-1 image is upgraded by its first read-write
//! mount and stays readable read-only before that.

mod cause;
use cause::cause;
use novafs::{EngineError as Error, FileType, FormatOptions, Fs, MountOptions};
use novafs_engine::layout::superblock::FORMAT_VERSION;
use novafs_recovery::fsck::{self, FsckOptions};

fn fresh() -> (tempfile::TempDir, std::path::PathBuf, Fs) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("s.img");
    let fs = Fs::format(&img, 16 << 20, &FormatOptions::default()).unwrap();
    (dir, img, fs)
}

const NULL: u64 = 1 << 8 | 3; // 1:3
const SDA: u64 = 8 << 8; // 8:0

fn check_tree(fs: &Fs) {
    let m = fs.symlink_metadata("/d/fifo").unwrap();
    assert_eq!(
        (m.file_type(), m.rdev(), m.len(), m.mode()),
        (FileType::Fifo, 0, 0, 0o640)
    );
    assert_eq!(m.nlink(), 2, "linked as /fifo2");
    assert_eq!(
        fs.symlink_metadata("/sock").unwrap().file_type(),
        FileType::Socket
    );
    let n = fs.symlink_metadata("/null").unwrap();
    assert_eq!((n.file_type(), n.rdev()), (FileType::CharDevice, NULL));
    let b = fs.symlink_metadata("/d/disk").unwrap();
    assert_eq!((b.file_type(), b.rdev()), (FileType::BlockDevice, SDA));
    let kinds: Vec<_> = fs
        .read_dir("/d")
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.name_lossy(), e.file_type().unwrap()))
        .collect();
    assert!(
        kinds.contains(&("fifo".into(), FileType::Fifo)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("disk".into(), FileType::BlockDevice)),
        "{kinds:?}"
    );
}

#[test]
fn special_files_are_made_linked_renamed_and_kept() {
    let (_d, img, fs) = fresh();
    fs.create_dir("/d").unwrap();
    fs.mknod("/d/fifo", FileType::Fifo, 0o640, 0).unwrap();
    fs.mknod("/sock", FileType::Socket, 0o600, 0).unwrap();
    fs.mknod("/null", FileType::CharDevice, 0o666, NULL)
        .unwrap();
    fs.mknod("/disk", FileType::BlockDevice, 0o660, SDA)
        .unwrap();
    fs.hard_link("/d/fifo", "/fifo2").unwrap();
    fs.rename("/disk", "/d/disk").unwrap();
    check_tree(&fs);

    // No data: reads find nothing, writes and truncation are refused, nothing changes.
    assert_eq!(fs.read("/null").unwrap(), b"");
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .open("/null")
        .unwrap();
    assert!(matches!(
        cause(f.write_at(b"x", 0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cause(f.set_len(10)),
        Err(Error::InvalidArgument(_))
    ));
    drop(f);
    // Bad requests: a device number on a FIFO, a regular file through mknod, a taken name,
    // a device number past Linux's encoding.
    assert!(matches!(
        cause(fs.mknod("/x", FileType::Fifo, 0o644, 5)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cause(fs.mknod("/x", FileType::File, 0o644, 0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cause(fs.mknod("/sock", FileType::Socket, 0o644, 0)),
        Err(Error::AlreadyExists)
    ));
    assert!(matches!(
        cause(fs.mknod("/x", FileType::CharDevice, 0o644, 1 << 40)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(fs.symlink_metadata("/x").is_err());

    fs.unmount().unwrap();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    check_tree(&fs);
    fs.engine().crash();
    drop(fs);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    check_tree(&fs);
    fs.remove_file("/d/fifo").unwrap();
    assert_eq!(fs.symlink_metadata("/fifo2").unwrap().nlink(), 1);
    fs.remove_file("/fifo2").unwrap();
    fs.unmount().unwrap();
    let r = fsck::check(&img, &FsckOptions::default()).unwrap();
    assert_eq!(r.errors_found, 0, "fsck: {:?}", r.problems);
}

/// Rewrite both superblock copies of `img` with format version `v` (valid checksum).
fn set_version(img: &std::path::Path, v: u32) {
    let mut data = std::fs::read(img).unwrap();
    let last = data.len() - 4096;
    for at in [0, last] {
        data[at + 8..at + 12].copy_from_slice(&v.to_le_bytes());
        let csum = novafs_engine::layout::checksum(&data[at..at + 252]);
        data[at + 252..at + 256].copy_from_slice(&csum.to_le_bytes());
    }
    std::fs::write(img, data).unwrap();
}

fn version(img: &std::path::Path) -> (u32, u32) {
    let data = std::fs::read(img).unwrap();
    let last = data.len() - 4096;
    let v = |at: usize| u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap());
    (v(0), v(last))
}

/// Strip the format-3 seal from every inode-table map word (an older format's map).
fn unseal_map(img: &std::path::Path) {
    let mut data = std::fs::read(img).unwrap();
    let map = 3 * 4096;
    for i in 0.. {
        let at = map + i * 8;
        let w = u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
        if w == 0 {
            break;
        }
        data[at..at + 8].copy_from_slice(&(w & ((1 << 48) - 1)).to_le_bytes());
    }
    std::fs::write(img, data).unwrap();
}

fn map_word(img: &std::path::Path, i: usize) -> u64 {
    let data = std::fs::read(img).unwrap();
    let at = 3 * 4096 + i * 8;
    u64::from_le_bytes(data[at..at + 8].try_into().unwrap())
}

#[test]
fn older_format_images_are_upgraded_by_their_first_read_write_mount() {
    for old in 1..FORMAT_VERSION {
        let (_d, img, fs) = fresh();
        fs.write("/old", b"from an older format").unwrap();
        // Enough inodes for a second inode-table chunk.
        for i in 0..1100 {
            fs.write(format!("/f{i}"), b"x").unwrap();
        }
        fs.unmount().unwrap();
        set_version(&img, old);
        let sealed_w1 = map_word(&img, 1);
        if old < 3 {
            unseal_map(&img);
        }
        assert_eq!(version(&img), (old, old));
        let (w0, w1) = (map_word(&img, 0), map_word(&img, 1));
        if old < 3 {
            assert!(w0 >> 48 == 0 && w1 >> 48 == 0 && w1 != 0);
            // An unsealed map is damage from format 3 on.
            for v in 3..=FORMAT_VERSION {
                set_version(&img, v);
                assert!(matches!(
                    cause(Fs::open(&img, &MountOptions::default())),
                    Err(Error::Corrupt { .. })
                ));
            }
            set_version(&img, old);
        } else {
            assert_eq!(w1, sealed_w1);
        }
        // Read-only: readable, not upgraded.
        let ro = Fs::open(
            &img,
            &MountOptions {
                read_only: true,
                ..MountOptions::default()
            },
        )
        .unwrap();
        assert_eq!(ro.read("/old").unwrap(), b"from an older format");
        assert_eq!(ro.mount_report().format_upgraded_from, None);
        ro.unmount().unwrap();
        assert_eq!(version(&img), (old, old));
        assert_eq!(map_word(&img, 1), w1);
        // Read-write: the map sealed, both copies upgraded, then special files can be made.
        let fs = Fs::open(&img, &MountOptions::default()).unwrap();
        assert_eq!(fs.mount_report().format_upgraded_from, Some(old));
        assert_eq!(version(&img), (FORMAT_VERSION, FORMAT_VERSION));
        assert_eq!(map_word(&img, 1), sealed_w1, "map word 1 sealed");
        assert_eq!(fs.read("/f1099").unwrap(), b"x");
        fs.mknod("/fifo", FileType::Fifo, 0o644, 0).unwrap();
        fs.unmount().unwrap();
        let fs = Fs::open(&img, &MountOptions::default()).unwrap();
        assert_eq!(fs.read("/old").unwrap(), b"from an older format");
        fs.unmount().unwrap();
        let r = novafs_recovery::fsck::check(&img, &Default::default()).unwrap();
        assert_eq!(r.errors_found, 0, "fsck: {:?}", r.problems);
    }
}

#[test]
fn a_version_from_the_future_is_refused_by_name() {
    let (_d, img, fs) = fresh();
    fs.unmount().unwrap();
    // A version from the future is refused by name.
    set_version(&img, FORMAT_VERSION + 1);
    assert!(matches!(
        cause(Fs::open(&img, &MountOptions::default())),
        Err(Error::UnsupportedVersion {
            found,
            supported: FORMAT_VERSION
        }) if found == FORMAT_VERSION + 1
    ));
}
