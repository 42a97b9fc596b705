//! Online growth (`Fs::grow`, `novafs resize`): the new space is usable at once, survives
//! remount and crash, fsck agrees, and bad requests get clear errors.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use novafs::{FormatOptions, Fs, MountOptions};
use novafs_engine::layout::BLOCK;
use novafs_engine::media::Media;
use novafs_engine::{Engine, FormatOptions as EngineFormat};
use novafs_recovery::fsck::{self, FsckOptions};

const MIB: u64 = 1 << 20;

fn scratch() -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("novafs-grow-");
    if Path::new("/dev/shm").is_dir() {
        b.tempdir_in("/dev/shm").unwrap()
    } else {
        b.tempdir().unwrap()
    }
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn fsck_clean(path: &Path) {
    let r = fsck::check(path, &FsckOptions::default()).unwrap();
    assert_eq!(r.errors_found, 0, "{:#?}", r.problems);
}

#[test]
fn a_mounted_image_grows_and_the_new_space_holds_data() {
    let dir = scratch();
    let path = dir.path().join("g.img");
    let fs = Fs::format(&path, 4 * MIB, &FormatOptions::default()).unwrap();
    fs.write("/small", b"before").unwrap();
    let before = fs.statfs().unwrap();
    // The old image cannot hold 6 MiB.
    let big = data((6 * MIB) as usize, 3);
    assert_eq!(
        fs.write("/big", &big).unwrap_err().kind(),
        ErrorKind::StorageFull
    );
    assert_eq!(fs.grow(16 * MIB).unwrap(), 12 * MIB);
    let after = fs.statfs().unwrap();
    assert_eq!(after.blocks_total, 16 * MIB / BLOCK);
    assert_eq!(
        after.blocks_free - before.blocks_free,
        after.blocks_total - before.blocks_total,
        "every new block (and the old replica's) is free"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 * MIB);
    fs.write("/big", &big).unwrap();
    // Growing to the size it has is a no-op.
    assert_eq!(fs.grow(16 * MIB).unwrap(), 0);
    fs.unmount().unwrap();
    fsck_clean(&path);

    // Clean remount: the saved allocator state covers the new range.
    let fs = Fs::open(&path, &MountOptions::default()).unwrap();
    assert!(fs.mount_report().clean);
    assert_eq!(fs.statfs().unwrap(), after_with_big(&fs));
    assert_eq!(fs.read("/big").unwrap(), big);
    assert_eq!(fs.read("/small").unwrap(), b"before");
    fs.remove_file("/big").unwrap();
    fs.write("/big2", &data((10 * MIB) as usize, 4)).unwrap();
    fs.crash();

    // Crash recovery rebuilds the allocators over the grown image.
    let fs = Fs::open(&path, &MountOptions::default()).unwrap();
    assert!(!fs.mount_report().clean);
    assert_eq!(fs.statfs().unwrap().blocks_total, 16 * MIB / BLOCK);
    assert_eq!(fs.read("/big2").unwrap(), data((10 * MIB) as usize, 4));
    fs.unmount().unwrap();
    fsck_clean(&path);
}

fn after_with_big(fs: &Fs) -> novafs::StatFs {
    // (the statfs of the mounted image, read twice: the comparison checks it is stable)
    fs.statfs().unwrap()
}

#[test]
fn bad_grow_requests_are_refused_with_clear_errors() {
    let dir = scratch();
    let path = dir.path().join("g.img");
    let fs = Fs::format(&path, 4 * MIB, &FormatOptions::default()).unwrap();
    let e = fs.grow(2 * MIB).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("shrinking"), "{e}");
    let e = fs.grow(4 * MIB + 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("multiple of 4096"), "{e}");
    // Beyond what this mount reserved: a message that says how to go further.
    let e = fs.grow(1 << 50).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("novafs resize"), "{e}");
    // Nothing changed.
    assert_eq!(fs.statfs().unwrap().blocks_total, 4 * MIB / BLOCK);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 * MIB);
    fs.unmount().unwrap();
    // Read-only mounts and unmounted handles refuse.
    let fs = Fs::open(
        &path,
        &MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        fs.grow(8 * MIB).unwrap_err().kind(),
        ErrorKind::ReadOnlyFilesystem
    );
    fs.unmount().unwrap();
    fsck_clean(&path);
}

#[test]
fn grow_limit_bounds_one_mount_and_a_remount_goes_further() {
    let dir = scratch();
    let path = dir.path().join("g.img");
    Fs::format(&path, 4 * MIB, &FormatOptions::default())
        .unwrap()
        .unmount()
        .unwrap();
    let opts = MountOptions {
        grow_limit: 8 * MIB,
        ..MountOptions::default()
    };
    let fs = Fs::open(&path, &opts).unwrap();
    fs.grow(8 * MIB).unwrap();
    assert!(fs.grow(12 * MIB).is_err());
    fs.unmount().unwrap();
    let fs = Fs::open(
        &path,
        &MountOptions {
            grow_limit: 64 * MIB,
            ..MountOptions::default()
        },
    )
    .unwrap();
    fs.grow(64 * MIB).unwrap();
    // The inode table still grows into the new space: many files.
    for i in 0..3000 {
        fs.write(format!("/f{i}"), b"x").unwrap();
    }
    fs.unmount().unwrap();
    fsck_clean(&path);
}

#[test]
fn an_interrupted_grow_leaves_a_longer_file_that_mounts_at_the_old_size() {
    // A crash after the file was extended but before the superblock commit: the file is
    // longer than the superblock says. Mount and fsck use the superblock; growing again
    // completes the job.
    let dir = scratch();
    let path = dir.path().join("g.img");
    let fs = Fs::format(&path, 4 * MIB, &FormatOptions::default()).unwrap();
    fs.write("/a", b"kept").unwrap();
    fs.unmount().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    fsck_clean(&path);
    let fs = Fs::open(&path, &MountOptions::default()).unwrap();
    assert_eq!(fs.statfs().unwrap().blocks_total, 4 * MIB / BLOCK);
    assert_eq!(fs.read("/a").unwrap(), b"kept");
    assert_eq!(fs.grow(8 * MIB).unwrap(), 4 * MIB);
    fs.unmount().unwrap();
    fsck_clean(&path);
}

#[test]
fn a_torn_primary_after_grow_is_repaired_from_the_new_replica() {
    // The traced backend: grow, then destroy the primary superblock as a torn commit would.
    let media = Arc::new(Media::traced(4 * MIB));
    let engine = Engine::format_media(media.clone(), &EngineFormat::default()).unwrap();
    let fs = Fs::from_engine(engine, Default::default());
    fs.grow(8 * MIB).unwrap();
    fs.write("/a", &data(5 * MIB as usize, 9)).unwrap();
    fs.crash();
    let mut img = media.snapshot().unwrap();
    assert_eq!(img.len() as u64, 8 * MIB);
    img[100] ^= 0xff;
    let (engine, report) =
        novafs_recovery::open_media(Arc::new(Media::traced_from(img)), &Default::default())
            .unwrap();
    assert!(report.superblock_repaired);
    let fs = Fs::from_engine(engine, report);
    assert_eq!(fs.statfs().unwrap().blocks_total, 8 * MIB / BLOCK);
    assert_eq!(fs.read("/a").unwrap(), data(5 * MIB as usize, 9));
}

#[test]
fn fsck_sees_a_torn_primary_of_a_crashed_grow_as_recovery_does() {
    // A crash inside a grow's commit (the primary half rewritten) is a state mount handles:
    // fsck -n of the crash image notes it and reports no error (the crash harness's deep check
    // found the old fsck calling it damage). The same bad primary on a cleanly unmounted image
    // is damage.
    let check = |img: Vec<u8>| {
        fsck::check_media(Arc::new(Media::traced_from(img)), &FsckOptions::default()).unwrap()
    };
    let media = Arc::new(Media::traced(4 * MIB));
    let engine = Engine::format_media(media.clone(), &EngineFormat::default()).unwrap();
    let fs = Fs::from_engine(engine, Default::default());
    fs.grow(8 * MIB).unwrap();
    fs.write("/a", &data(MIB as usize, 3)).unwrap();
    fs.crash();
    let mut img = media.snapshot().unwrap();
    img[100] ^= 0xff;
    let r = check(img.clone());
    assert_eq!(r.errors_found, 0, "{:#?}", r.problems);
    assert!(
        r.notes.iter().any(|n| n.contains("grow was interrupted")),
        "{:?}",
        r.notes
    );
    // Mounted and cleanly unmounted: the clean word is set, and a bad primary is damage.
    let media = Arc::new(Media::traced_from(img));
    let (engine, report) = novafs_recovery::open_media(media.clone(), &Default::default()).unwrap();
    assert!(report.superblock_repaired);
    Fs::from_engine(engine, report).unmount().unwrap();
    let mut img = media.snapshot().unwrap();
    assert_eq!(check(img.clone()).errors_found, 0);
    img[100] ^= 0xff;
    let r = check(img);
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == fsck::ProblemKind::SuperblockPrimary),
        "{:#?}",
        r.problems
    );
}

#[test]
fn a_grown_image_is_format_4_or_later_and_an_older_image_upgrades_when_it_grows() {
    let dir = scratch();
    let path = dir.path().join("g.img");
    let fs = Fs::format(&path, 4 * MIB, &FormatOptions::default()).unwrap();
    assert_eq!(
        fs.engine().superblock().version,
        novafs_engine::layout::superblock::FORMAT_VERSION
    );
    const { assert!(novafs_engine::layout::superblock::FORMAT_VERSION >= 4) };
    fs.grow(32 * MIB).unwrap();
    let sb = fs.engine().superblock();
    assert_eq!(sb.blocks_total, 32 * MIB / BLOCK);
    assert_eq!(sb.replica_block, 32 * MIB / BLOCK - 1);
    // The inode-table map keeps its format-time size.
    assert_eq!(sb.first_free_block, 4);
    fs.unmount().unwrap();
}
