//! How a rename commits (DESIGN.md §5.2.1): within one directory, with no victim that keeps
//! other links, it is two independent single-inode appends (the moved inode's new ctime, the
//! directory's names in one append) under one fence, and never touches the undo journal;
//! across directories,
//! or over a multiply-linked victim, it is one journaled transaction. Checked on the traced
//! backend, which sees every store and fence.

mod cause;
mod craft;

use std::sync::Arc;

use novafs::{FormatOptions, Fs};
use novafs_engine::layout::BLOCK;
use novafs_engine::media::{Media, TraceEvent};

/// A traced image with `/d/a`, `/d/b`, `/d/shared` (+ `/d/shared2`, two links), `/e`.
fn traced() -> (Arc<Media>, Fs) {
    let media = Arc::new(Media::traced(16 << 20));
    let engine = novafs::Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
    let fs = Fs::from_engine(engine, Default::default());
    fs.create_dir("/d").unwrap();
    fs.create_dir("/e").unwrap();
    for n in ["/d/a", "/d/b", "/d/shared"] {
        fs.write(n, n.as_bytes()).unwrap();
    }
    fs.hard_link("/d/shared", "/d/shared2").unwrap();
    // Every log involved has had an append this session (the first append to a log that was
    // just loaded zeroes its tail page and fences twice).
    fs.rename("/d/a", "/d/a1").unwrap();
    fs.rename("/d/a1", "/d/a").unwrap();
    (media, fs)
}

/// (fences, stores into the journal's block) of `op`.
fn commit_of(media: &Media, fs: &Fs, op: impl FnOnce(&Fs)) -> (usize, usize) {
    let start = fs.engine().superblock().journal_block * BLOCK;
    let journal = start..start + BLOCK;
    let events = craft::events_of(media, fs, op);
    let fences = events
        .iter()
        .filter(|e| matches!(e, TraceEvent::Fence { .. }))
        .count();
    let journaled = events
        .iter()
        .filter(|e| matches!(e, TraceEvent::Store { off, .. } if journal.contains(off)))
        .count();
    (fences, journaled)
}

#[test]
fn a_rename_within_one_directory_is_one_fence_without_the_journal() {
    let (media, fs) = traced();
    let before = fs.metadata("/d/a").unwrap().changed();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let (fences, journaled) = commit_of(&media, &fs, |fs| fs.rename("/d/a", "/d/c").unwrap());
    assert_eq!(journaled, 0, "no journal slot is written");
    assert_eq!(
        fences, 1,
        "the moved inode's ctime and the directory's names, under one fence"
    );
    assert!(fs.metadata("/d/c").unwrap().changed() > before, "ctime");
    assert!(fs.metadata("/d/a").is_err());
    // Over a victim with one link (it goes with the directory's append).
    let (fences, journaled) = commit_of(&media, &fs, |fs| fs.rename("/d/c", "/d/b").unwrap());
    assert_eq!((fences, journaled), (1, 0));
    assert_eq!(fs.read("/d/b").unwrap(), b"/d/a");
    // RENAME_EXCHANGE within one directory: the names swap in one append, both ctimes
    // beside it, under one fence.
    let x = novafs::RenameFlags {
        noreplace: false,
        exchange: true,
    };
    fs.write("/d/c", b"c").unwrap();
    fs.rename("/d/c", "/d/c2").unwrap(); // a first append to /d/c's log
    let (fences, journaled) = commit_of(&media, &fs, |fs| {
        fs.rename_with("/d/b", "/d/c2", x).unwrap()
    });
    assert_eq!((fences, journaled), (1, 0));
    assert_eq!(fs.read("/d/c2").unwrap(), b"/d/a");
    fs.rename_with("/d/b", "/d/c2", x).unwrap();
    fs.remove_file("/d/c2").unwrap();
    // And survives a crash + recovery, the victim's blocks free again (fsck-clean counts).
    let image = fs.engine().copy_image().unwrap();
    let (engine, _) =
        novafs_recovery::open_media(Arc::new(Media::traced_from(image)), &Default::default())
            .unwrap();
    let back = Fs::from_engine(engine, Default::default());
    assert_eq!(back.read("/d/b").unwrap(), b"/d/a");
    assert!(back.metadata("/d/c").is_err());
    let names: Vec<_> = back
        .read_dir("/d")
        .unwrap()
        .map(|e| e.unwrap().name_lossy())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn renames_across_directories_or_over_a_linked_victim_are_journaled() {
    let (media, fs) = traced();
    let (_, journaled) = commit_of(&media, &fs, |fs| fs.rename("/d/a", "/e/a").unwrap());
    assert!(journaled > 0, "two directories: one journaled transaction");
    let (_, journaled) = commit_of(&media, &fs, |fs| fs.rename("/d/b", "/d/shared").unwrap());
    assert!(
        journaled > 0,
        "the victim keeps a link: its Link entry is journaled"
    );
    assert_eq!(fs.read("/d/shared").unwrap(), b"/d/b");
    assert_eq!(fs.read("/d/shared2").unwrap(), b"/d/shared");
    assert_eq!(fs.metadata("/d/shared2").unwrap().nlink(), 1);
}
