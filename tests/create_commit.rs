//! How a create commits (DESIGN.md §5.3): in a one-fence session a new inode with an empty
//! log (create, mkdir, mknod) is one fence: its slot is stored and flushed, the directory's
//! `DirAdd` carries the slot's checksum (`SLOT_CRC`), the tail follows, and one fence covers
//! them all. A crash may leave the name durable and the slot not; recovery (and fsck) then
//! cuts the directory's last commit. A new inode with a prepared log (contents, a symlink
//! target) keeps the fence between its slot and the name. Fence counts are checked on the
//! traced backend, the cuts on crafted crash images.

mod cause;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use novafs::{FileType, FormatOptions, Fs, MountOptions};
use novafs_engine::layout::BLOCK;
use novafs_engine::media::{Media, TraceEvent};

mod craft;
use craft::*;

/// Fences made by `op`.
fn fences_of(media: &Media, fs: &Fs, op: impl FnOnce(&Fs)) -> usize {
    events_of(media, fs, op)
        .iter()
        .filter(|e| matches!(e, TraceEvent::Fence { .. }))
        .count()
}

#[test]
fn a_create_with_an_empty_log_is_one_fence() {
    let media = Arc::new(Media::traced(16 << 20));
    let engine = novafs::Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
    let fs = Fs::from_engine(engine, Default::default());
    assert!(fs.engine().one_fence_commits());
    fs.create_dir("/d").unwrap();
    // The directory's first append this session zeroes its tail page (two fences).
    fs.create("/d/first").unwrap();
    let one = |fs: &Fs| {
        fs.create("/d/f").unwrap();
    };
    assert_eq!(fences_of(&media, &fs, one), 1, "create");
    assert_eq!(
        fences_of(&media, &fs, |fs| fs.create_dir("/d/sub").unwrap()),
        1,
        "mkdir"
    );
    assert_eq!(
        fences_of(&media, &fs, |fs| fs
            .mknod("/d/fifo", FileType::Fifo, 0o644, 0)
            .unwrap()),
        1,
        "mknod"
    );
    // A prepared log (contents, a symlink target) must be durable before the name: its
    // entries are not checked through the directory's commit.
    assert_eq!(
        fences_of(&media, &fs, |fs| fs.write("/d/w", b"contents").unwrap()),
        2,
        "create with contents"
    );
    assert_eq!(
        fences_of(&media, &fs, |fs| fs.symlink("/d/f", "/d/s").unwrap()),
        2,
        "symlink"
    );
    // A two-fence session: every create keeps both fences.
    fs.engine().set_one_fence(false).unwrap();
    assert_eq!(
        fences_of(&media, &fs, |fs| {
            fs.create("/d/g").unwrap();
        }),
        2,
        "two-fence create"
    );
}

fn one_fence() -> MountOptions {
    MountOptions {
        one_fence: Some(true),
        ..MountOptions::default()
    }
}

/// A fresh image `t.img` in `dir`, mounted in a one-fence session that made `/d` and
/// `/d/a` ("kept").
fn session(dir: &Path) -> (PathBuf, Fs) {
    let img = dir.join("t.img");
    Fs::format(&img, 16 << 20, &Default::default())
        .unwrap()
        .unmount()
        .unwrap();
    let fs = Fs::open(&img, &one_fence()).unwrap();
    fs.create_dir("/d").unwrap();
    fs.write("/d/a", b"kept").unwrap();
    (img, fs)
}

/// A one-fence session ([`session`]) that then made `/d/new` (a one-fence create) and
/// crashed. Returns the image and `/d/new`'s layout.
fn crashed(dir: &Path, mkdir: bool) -> (PathBuf, L) {
    let (img, fs) = session(dir);
    if mkdir {
        fs.create_dir("/d/new").unwrap();
    } else {
        fs.create("/d/new").unwrap();
    }
    let new = layout(&fs, "/d/new");
    assert_eq!(new.tail, 0, "an empty log");
    fs.crash();
    (img, new)
}

/// After the cut: `/d/new` gone, the rest kept, the name free to use, fsck clean.
fn check_cut(img: &Path) {
    let fs = Fs::open(img, &MountOptions::default()).unwrap();
    assert_eq!(fs.mount_report().torn_commits_cut, 1);
    assert!(fs.metadata("/d/new").is_err(), "the torn create is cut off");
    assert_eq!(fs.read("/d/a").unwrap(), b"kept");
    assert_eq!(fs.read_dir("/d").unwrap().count(), 1);
    fs.create("/d/new").unwrap();
    fs.unmount().unwrap();
    assert_clean(img);
}

#[test]
fn a_whole_create_stays() {
    for mkdir in [false, true] {
        let d = scratch();
        let (img, _) = crashed(d.path(), mkdir);
        assert_clean(&img);
        let fs = Fs::open(&img, &MountOptions::default()).unwrap();
        assert_eq!(fs.mount_report().torn_commits_cut, 0);
        assert_eq!(fs.metadata("/d/new").unwrap().is_dir(), mkdir);
        fs.unmount().unwrap();
        assert_clean(&img);
    }
}

#[test]
fn a_create_whose_slot_was_lost_is_cut_off() {
    for mkdir in [false, true] {
        let d = scratch();
        let (img, new) = crashed(d.path(), mkdir);
        // The name and the tail reached the media, the new slot did not (it was free).
        write_at(&img, new.slot_off, &[0; 128]);
        // fsck -n: a note, not damage.
        let r = run(&img, false);
        assert_eq!(r.exit_code(), 0, "{}", show(&r));
        assert!(r.notes.iter().any(|n| n.contains("torn")), "{}", show(&r));
        check_cut(&img);
    }
}

#[test]
fn fsck_repair_cuts_a_torn_create_like_recovery() {
    let d = scratch();
    let (img, new) = crashed(d.path(), false);
    write_at(&img, new.slot_off, &[0; 128]);
    let r = run(&img, true);
    assert_eq!(r.exit_code(), 0, "{}", show(&r));
    assert!(r.notes.iter().any(|n| n.contains("torn")), "{}", show(&r));
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert!(
        fs.metadata("/d/new").is_err(),
        "the cut is stored by the repair"
    );
    assert_eq!(fs.read("/d/a").unwrap(), b"kept");
    fs.unmount().unwrap();
    assert_clean(&img);
}

#[test]
fn a_create_whose_slot_persisted_in_part_is_cut_off() {
    // Either line of the 128-byte slot alone: the first without the second leaves the old
    // checksum (a freed slot's, here zero); the second without the first leaves a slot whose
    // checksum does not match its fields.
    for line in [0u64, 64] {
        let d = scratch();
        let (img, new) = crashed(d.path(), false);
        write_at(&img, new.slot_off + line, &[0; 64]);
        check_cut(&img);
    }
}

#[test]
fn a_reused_slot_that_kept_its_old_contents_is_cut_off() {
    // The slot of an unlinked inode keeps its contents (only the kind word is cleared, and
    // that store need not persist): a create that reuses it and crashes before the new slot
    // persisted leaves the old, valid slot under the new name. The `DirAdd`'s slot checksum
    // (the generation differs) tells them apart.
    let d = scratch();
    let (img, fs) = session(d.path());
    fs.write("/old", b"old file").unwrap();
    let old = layout(&fs, "/old");
    let old_slot = read_at(&img, old.slot_off, 128);
    fs.remove_file("/old").unwrap();
    fs.create("/d/new").unwrap();
    let new = layout(&fs, "/d/new");
    assert_eq!(new.ino, old.ino, "the freed number is reused");
    fs.crash();
    write_at(&img, new.slot_off, &old_slot);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.mount_report().torn_commits_cut, 1);
    assert!(fs.metadata("/d/new").is_err());
    assert!(fs.metadata("/old").is_err());
    assert_eq!(fs.read("/d/a").unwrap(), b"kept");
    fs.unmount().unwrap();
    assert_clean(&img);
}

#[test]
fn without_a_one_fence_session_a_lost_slot_is_corruption() {
    let d = scratch();
    let (img, new) = crashed(d.path(), false);
    write_at(&img, new.slot_off, &[0; 128]);
    // The mount state as a two-fence session leaves it (0 while mounted).
    write_at(&img, BLOCK, &0u64.to_le_bytes());
    assert!(is_corrupt(Fs::open(&img, &MountOptions::default())));
}
