//! One-fence commits (DESIGN.md §5.1.1): a single-inode append stores its entries and its
//! tail before one fence (in msync mode, or with `Engine::set_data_crcs`, its data too), so a crash may leave the tail durable and some of what it covers
//! not. Recovery finds such a torn last commit (entries that do not decode in a tail page kept
//! zero past the tail, or a data run whose checksum differs) and cuts the log back to the
//! commit before it; fsck expects it; a session that did not make one-fence commits never
//! gets the benefit of the doubt.

mod cause;
use std::path::{Path, PathBuf};

use novafs::{Fs, MountOptions};
use novafs_engine::layout::BLOCK;

mod craft;
use craft::*;

fn one_fence() -> MountOptions {
    MountOptions {
        one_fence: Some(true),
        ..MountOptions::default()
    }
}

/// A freshly formatted, cleanly unmounted 16 MiB image `t.img` in `dir`.
fn fresh(dir: &Path) -> PathBuf {
    let img = dir.join("t.img");
    Fs::format(&img, 16 << 20, &Default::default())
        .unwrap()
        .unmount()
        .unwrap();
    img
}

/// An image whose `/log` got a 100-byte and a 1000-byte append in a one-fence session with
/// msync mode's commits (checksummed data runs) that then crashed: the first append (the log's
/// tail page not yet known zero) has two fences and zeroes the page past its entries, the
/// second is one-fence and copies the page (too large for a redo write, §5.1.2). Returns the
/// image and `/log`'s layout before and after the second append.
fn crashed(dir: &Path) -> (PathBuf, L, L) {
    let img = fresh(dir);
    let fs = Fs::open(&img, &one_fence()).unwrap();
    assert!(fs.engine().one_fence_commits());
    fs.engine().set_data_crcs(true);
    let f = fs
        .open_options()
        .append(true)
        .create(true)
        .open("/log")
        .unwrap();
    f.append(&[1; 100]).unwrap();
    let before = layout(&fs, "/log");
    f.append(&[2; 1000]).unwrap();
    let after = layout(&fs, "/log");
    assert_eq!(after.tail, before.tail + 64, "one Write entry");
    assert_eq!(after.tail / BLOCK, before.tail / BLOCK, "same tail page");
    assert_ne!(after.map[&0], before.map[&0], "copy-on-write page");
    drop(f);
    fs.crash();
    (img, before, after)
}

fn whole() -> Vec<u8> {
    let mut v = vec![1; 100];
    v.extend([2; 1000]);
    v
}

#[test]
fn a_whole_last_commit_stays() {
    let d = scratch();
    let (img, _, _) = crashed(d.path());
    assert_clean(&img);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.mount_report().torn_commits_cut, 0);
    assert_eq!(fs.read("/log").unwrap(), whole());
    fs.unmount().unwrap();
}

#[test]
fn checksums_cover_every_kind_of_page_as_written() {
    // A last commit's data checksums are computed from the bytes each page is written from
    // (DESIGN.md §5.1.1): a patch of an old page, a whole page from the caller, a patch past
    // the end (zeros around it). A checksum that differed from what reached the image would
    // make recovery cut the whole commit.
    let d = scratch();
    let img = fresh(d.path());
    let fs = Fs::open(&img, &one_fence()).unwrap();
    fs.engine().set_data_crcs(true);
    let f = fs.create("/f").unwrap();
    f.write_at(&[3; 4100], 0).unwrap();
    f.write_at(&[4; 5000], 4000).unwrap();
    drop(f);
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.mount_report().torn_commits_cut, 0);
    let mut want = vec![3; 4000];
    want.extend([4; 5000]);
    assert_eq!(fs.read("/f").unwrap(), want);
    fs.unmount().unwrap();
}

#[test]
fn a_commit_whose_entry_was_lost_is_cut_off() {
    let d = scratch();
    let (img, before, after) = crashed(d.path());
    // The tail reached the media, the entry did not (the page was zero there).
    write_at(
        &img,
        before.tail,
        &vec![0; (after.tail - before.tail) as usize],
    );
    // fsck -n: a note, not damage.
    let r = run(&img, false);
    assert_eq!(r.exit_code(), 0, "{}", show(&r));
    assert!(r.notes.iter().any(|n| n.contains("torn")), "{}", show(&r));
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.mount_report().torn_commits_cut, 1);
    assert_eq!(fs.read("/log").unwrap(), vec![1; 100]);
    // The cut is durable and the file goes on normally.
    fs.open_options()
        .append(true)
        .open("/log")
        .unwrap()
        .append(&[3; 10])
        .unwrap();
    fs.unmount().unwrap();
    assert_clean(&img);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let mut want = vec![1; 100];
    want.extend([3; 10]);
    assert_eq!(fs.read("/log").unwrap(), want);
    fs.unmount().unwrap();
}

#[test]
fn a_commit_whose_data_was_lost_is_cut_off() {
    let d = scratch();
    let (img, _, after) = crashed(d.path());
    // The entry and the tail reached the media, the new data page did not.
    write_at(&img, after.map[&0] * BLOCK, &[0xee; 4096]);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.mount_report().torn_commits_cut, 1);
    assert_eq!(fs.read("/log").unwrap(), vec![1; 100]);
    fs.unmount().unwrap();
    assert_clean(&img);
}

#[test]
fn fsck_repair_cuts_a_torn_commit_like_recovery() {
    let d = scratch();
    let (img, before, after) = crashed(d.path());
    write_at(&img, before.tail + 8, &[0x5a; 8]); // half an entry: its checksum fails
    let r = run(&img, true);
    assert_eq!(r.exit_code(), 0, "{}", show(&r));
    assert_eq!(u64_at(&img, after.slot_off + 8), before.tail);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(fs.read("/log").unwrap(), vec![1; 100]);
    fs.unmount().unwrap();
}

#[test]
fn without_a_one_fence_session_the_same_damage_is_corruption() {
    let d = scratch();
    let (img, before, after) = crashed(d.path());
    write_at(
        &img,
        before.tail,
        &vec![0; (after.tail - before.tail) as usize],
    );
    // The mount state as a two-fence session leaves it (0 while mounted).
    write_at(&img, BLOCK, &0u64.to_le_bytes());
    assert!(is_corrupt(Fs::open(&img, &MountOptions::default())));
}

#[test]
fn a_two_fence_session_leaves_the_mount_state_at_zero() {
    let d = scratch();
    let img = fresh(d.path());
    let two_fence = MountOptions {
        one_fence: Some(false),
        ..MountOptions::default()
    };
    let fs = Fs::open(&img, &two_fence).unwrap();
    assert!(!fs.engine().one_fence_commits());
    assert!(!fs.engine().data_crcs());
    assert_eq!(u64_at(&img, BLOCK), 0);
    fs.crash();
    // The default: one-fence commits, data runs checksummed in msync mode only.
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert!(fs.engine().one_fence_commits());
    assert_eq!(
        fs.engine().data_crcs(),
        fs.media_mode() == novafs::MediaMode::Msync
    );
    assert_eq!(
        u64_at(&img, BLOCK),
        novafs_engine::layout::state::ONE_FENCE_MAGIC
    );
    fs.unmount().unwrap();
    assert_eq!(
        u64_at(&img, BLOCK),
        novafs_engine::layout::state::CLEAN_MAGIC
    );
}

#[test]
fn without_data_crcs_a_page_write_fences_its_data_first() {
    // On pmem (here: tmpfs, emulated) a one-fence session's write of whole pages keeps the
    // fence between its data and its tail: its `Write` entry carries no checksum, so a crash
    // image can never hold its tail without its data, and recovery has nothing to check.
    // With data checksums (msync mode's commits) the same damage is a torn commit, cut off.
    for crcs in [false, true] {
        let d = scratch();
        let img = fresh(d.path());
        let fs = Fs::open(&img, &MountOptions::default()).unwrap();
        fs.engine().set_data_crcs(crcs);
        let f = fs.create("/f").unwrap();
        f.set_len(10).unwrap(); // the log's tail page is now known zero past the tail
        f.write_at(&[4; 4096], 0).unwrap();
        let after = layout(&fs, "/f");
        drop(f);
        fs.crash();
        // The page's data lost under a durable tail.
        write_at(&img, after.map[&0] * BLOCK, &[0xee; 4096]);
        let fs = Fs::open(&img, &MountOptions::default()).unwrap();
        if crcs {
            assert_eq!(fs.mount_report().torn_commits_cut, 1);
            assert_eq!(fs.read("/f").unwrap(), vec![0; 10]);
        } else {
            assert_eq!(fs.mount_report().torn_commits_cut, 0);
            assert_eq!(fs.read("/f").unwrap(), vec![0xee; 4096]);
        }
        fs.unmount().unwrap();
    }
}

#[test]
fn torn_commit_checks_read_no_more_than_their_budget() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let d = scratch();
    let (img, _, after) = crashed(d.path());
    let media = novafs_engine::media::Media::open(&img, &Default::default()).unwrap();
    let sb: novafs_engine::layout::superblock::Superblock = media.read_pod(0).unwrap();
    let bounds = novafs_engine::inode::Bounds::of(&sb);
    let head = after.pages[0];
    let check = |budget: &AtomicU64| {
        let check = novafs_engine::inode::TornCheck {
            budget,
            chunks: &[],
        };
        novafs_engine::inode::torn_cut(&media, after.ino, head, after.tail, bounds, &check)
    };
    // The last commit names one checksummed page: a budget of one is enough, and used up.
    let one = AtomicU64::new(1);
    assert_eq!(check(&one).unwrap(), None);
    assert_eq!(one.load(Ordering::Relaxed), 0);
    // A budget already spent (other logs claimed those blocks): corrupt, nothing read.
    assert!(matches!(
        check(&one),
        Err(novafs_engine::Error::Corrupt { .. })
    ));
}
