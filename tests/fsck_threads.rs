//! fsck's parallel loads (`FsckOptions::threads`) find and repair exactly what the serial check
//! does. The children of a tree level with at least 64 of them are loaded ahead on worker
//! threads, read-only; a load whose inode shows anything to report, or made before a change
//! the check made since, is done again serially. Each damaged image below is checked with one
//! thread and with four: the same problems, the same repairs, the same counts.

mod cause;
use std::path::{Path, PathBuf};

use novafs::{FormatOptions, Fs};
use novafs_engine::layout::inode::{HEAD_OFFSET, TAIL_OFFSET};
use novafs_recovery::fsck::{self, FsckOptions, FsckReport};

mod craft;

use craft::*;

/// An image with levels wide enough to be loaded in parallel: /big with 300 files (data, a
/// hard link, a symlink) and three subdirectories of 80 files each.
fn build_wide(dir: &tempfile::TempDir) -> (PathBuf, Fs) {
    let path = dir.path().join("wide.img");
    let fs = Fs::format(&path, 64 << 20, &FormatOptions::default()).unwrap();
    fs.create_dir("/big").unwrap();
    for i in 0..300u64 {
        fs.write(format!("/big/file-{i:03}"), &data(i, 10 + i * 7))
            .unwrap();
    }
    fs.hard_link("/big/file-005", "/big/link-5").unwrap();
    fs.symlink("/big/file-001", "/big/sym").unwrap();
    for k in 0..3 {
        fs.create_dir(format!("/big/sub-{k}")).unwrap();
        for i in 0..80u64 {
            fs.write(format!("/big/sub-{k}/f-{i:02}"), &data(1000 + i, 100))
                .unwrap();
        }
    }
    (path, fs)
}

fn check(path: &Path, repair: bool, threads: usize) -> FsckReport {
    fsck::check(
        path,
        &FsckOptions {
            repair,
            threads,
            ..FsckOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("fsck (threads {threads}): {e}"))
}

/// The parts of a report that must not depend on the thread count.
fn essence(r: &FsckReport) -> String {
    format!(
        "exit {} found {} fixed {} left {} inodes {} entries {} blocks used {}\n{}",
        r.exit_code(),
        r.errors_found,
        r.errors_fixed,
        r.errors_left,
        r.inodes_checked,
        r.entries_checked,
        r.blocks_used,
        show(r)
    )
}

/// `-n` with 1 and 4 threads agree (and write nothing); `-y` on two copies agree; both
/// repaired images are then clean. Returns the serial `-n` report.
fn same_with_threads(path: &Path) -> FsckReport {
    let before = std::fs::read(path).unwrap();
    let serial = check(path, false, 1);
    let parallel = check(path, false, 4);
    assert_eq!(
        essence(&serial),
        essence(&parallel),
        "fsck -n, 1 vs 4 threads"
    );
    assert_eq!(serial.problems, parallel.problems);
    // A wide level was loaded ahead with four threads (a change the check makes, a repair
    // or a planned store, ends the use of the level's other loads), none with one.
    assert_eq!(serial.inodes_loaded_ahead, 0);
    assert!(
        parallel.inodes_loaded_ahead >= 200,
        "{} inodes loaded ahead",
        parallel.inodes_loaded_ahead
    );
    assert!(std::fs::read(path).unwrap() == before, "fsck -n wrote");
    let (a, b) = (copy(path, "y1.img"), copy(path, "y4.img"));
    let (ya, yb) = (check(&a, true, 1), check(&b, true, 4));
    assert_eq!(essence(&ya), essence(&yb), "fsck -y, 1 vs 4 threads");
    for c in [&a, &b] {
        let r = check(c, false, 4);
        assert_eq!(r.exit_code(), 0, "after -y:\n{}", show(&r));
    }
    serial
}

fn damaged(f: impl FnOnce(&Path, &Fs)) -> FsckReport {
    let dir = scratch();
    let (path, fs) = build_wide(&dir);
    f(&path, &fs);
    fs.unmount().unwrap();
    same_with_threads(&path)
}

#[test]
fn a_healthy_wide_image_is_clean_with_any_thread_count() {
    let r = damaged(|_, _| {});
    assert_eq!(r.exit_code(), 0, "{}", show(&r));
    assert!(r.inodes_checked > 540, "{}", r.inodes_checked);
}

#[test]
fn damage_in_a_parallel_level_is_found_and_repaired_as_serially() {
    // A flipped bit in a slot (restored), a slot of garbage (its name dangles), a flipped bit
    // in a log entry, a tail that is not an entry boundary: each in a level loaded ahead.
    let r = damaged(|p, fs| {
        let l = layout(fs, "/big/file-010");
        flip(p, l.slot_off + 36, 2);
    });
    assert_eq!(r.exit_code(), 4, "{}", show(&r));
    let r = damaged(|p, fs| {
        let l = layout(fs, "/big/sub-1/f-07");
        write_at(p, l.slot_off + 16, &[0xee; 16]);
    });
    assert_eq!(r.exit_code(), 4, "{}", show(&r));
    let r = damaged(|p, fs| {
        let l = layout(fs, "/big/file-030");
        let (off, _) = entries(p, &l)[0];
        flip(p, off + 9, 3);
    });
    assert_eq!(r.exit_code(), 4, "{}", show(&r));
    let r = damaged(|p, fs| {
        let l = layout(fs, "/big/file-040");
        write_at(p, l.slot_off + TAIL_OFFSET, &(l.tail + 8).to_le_bytes());
    });
    assert_eq!(r.exit_code(), 4, "{}", show(&r));
    // Non-zero bytes past the end of a file (360 bytes) in its last page: read ahead with
    // the load on the workers, reported and zeroed as serially.
    let r = damaged(|p, fs| {
        let l = layout(fs, "/big/file-050");
        write_at(p, l.map[&0] * 4096 + 4000, &[0x77; 3]);
    });
    assert_eq!(r.exit_code(), 4, "{}", show(&r));
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == fsck::ProblemKind::EofBytes),
        "{}",
        show(&r)
    );
}

#[test]
fn a_log_page_claimed_by_an_inode_loaded_earlier_in_the_level_is_found() {
    // Both loads walk cleanly ahead (neither page was owned when the level started); the
    // second one must still be refused once the first one's pages are claimed.
    let r = damaged(|p, fs| {
        let (a, b) = (layout(fs, "/big/file-050"), layout(fs, "/big/file-060"));
        write_at(
            p,
            b.slot_off + HEAD_OFFSET,
            &u64_at(p, a.slot_off + HEAD_OFFSET).to_le_bytes(),
        );
        write_at(p, b.slot_off + TAIL_OFFSET, &a.tail.to_le_bytes());
    });
    assert_eq!(r.exit_code(), 4, "{}", show(&r));
    assert!(
        r.problems.iter().any(|p| p.message.contains("also")),
        "{}",
        show(&r)
    );
}

#[test]
fn an_image_left_by_a_crash_is_checked_the_same_with_any_thread_count() {
    let dir = scratch();
    let (path, fs) = build_wide(&dir);
    fs.write("/big/file-007", &data(7, 3000)).unwrap();
    fs.crash();
    let r = same_with_threads(&path);
    assert!(r.errors_found == 0, "{}", show(&r));
}

#[test]
fn a_directory_entry_damaged_in_a_wide_directory_is_handled_as_serially() {
    let r = damaged(|p, fs| {
        let big = layout(fs, "/big");
        let off = dir_entry_offset(p, &big, b"file-123");
        flip(p, off + 70, 1);
    });
    assert_eq!(r.exit_code(), 4, "{}", show(&r));
}
