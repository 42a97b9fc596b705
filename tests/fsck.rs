//! fsck: healthy images are clean; every kind of corruption is found (-n), fixed or reported
//! unfixable (-y), and mounting the damaged image gives a typed error rather than a panic or
//! silently damaged data (or, where the clean-mount fast path reads no log, the damage shows as
//! a typed error on access, or only fsck sees it, as noted per test).

mod cause;
use cause::cause;
use novafs::{EngineError as Error, FormatOptions, Fs, MountOptions};
use novafs_crashtest::workload;
use novafs_engine::layout::entry::Entry;
use novafs_engine::layout::logpage::{PageTrailer, TRAILER_OFFSET};
use novafs_engine::layout::state::MountState;
use novafs_engine::layout::{checksum, Kind, BLOCK};
use novafs_recovery::fsck::{self, FsckOptions, ProblemKind};

mod craft;

use craft::*;

// ---------------------------------------------------------------------------------------------
// Healthy images.

#[test]
fn healthy_images_are_clean() {
    for crash in [false, true] {
        let dir = scratch();
        let (path, _) = build(&dir, crash);
        assert_clean(&path);
        let r = run(&path, true);
        assert_eq!(r.exit_code(), 0, "{}", show(&r));
        assert!(!r.modified, "fsck -y on a clean image wrote");
        Fs::open(&path, &MountOptions::default())
            .unwrap()
            .unmount()
            .unwrap();
        assert_clean(&path);
    }
}

#[test]
fn fresh_image_and_empty_files_are_clean() {
    let dir = scratch();
    let path = dir.path().join("e.img");
    Fs::format(&path, 1 << 20, &FormatOptions::default())
        .unwrap()
        .unmount()
        .unwrap();
    assert_clean(&path);
    let fs = Fs::open(&path, &MountOptions::default()).unwrap();
    fs.create("/empty").unwrap();
    fs.create_dir("/d").unwrap();
    let f = fs.create("/sparse").unwrap();
    f.set_len(1 << 20).unwrap();
    drop(f);
    fs.crash();
    assert_clean(&path);
}

#[test]
fn random_workloads_leave_clean_images() {
    for (n, w) in workload::random(11, 24, 40).into_iter().enumerate() {
        for crash in [false, true] {
            let dir = scratch();
            let path = dir.path().join("w.img");
            let fs = Fs::format(&path, 8 << 20, &FormatOptions::default()).unwrap();
            for op in &w.ops {
                let _ = workload::apply(&fs, op);
            }
            if crash {
                fs.crash();
            } else {
                fs.unmount().unwrap();
            }
            let r = run(&path, false);
            assert_eq!(
                r.exit_code(),
                0,
                "workload {n} ({}) crash={crash}:\n{}\n{}",
                w.name,
                w.to_text(),
                show(&r)
            );
        }
    }
}

#[test]
fn seq1_and_mapped_workloads_leave_clean_images() {
    let ws: Vec<_> = workload::seq1()
        .into_iter()
        .chain(workload::mapped())
        .collect();
    assert!(ws.len() > 30);
    for w in ws {
        for crash in [false, true] {
            let dir = scratch();
            let path = dir.path().join("w.img");
            let fs = Fs::format(&path, 8 << 20, &FormatOptions::default()).unwrap();
            let mut maps = workload::Held::new();
            for op in w.setup.iter().chain(&w.ops) {
                let _ = workload::apply_with(&fs, &mut maps, op);
            }
            if crash {
                // Write caches (mapped pages) are left in place, as a crash leaves them.
                fs.crash();
                drop(maps);
            } else {
                drop(maps);
                fs.unmount().unwrap();
            }
            let r = run(&path, false);
            assert_eq!(
                r.exit_code(),
                0,
                "{} crash={crash}:\n{}\n{}",
                w.name,
                w.to_text(),
                show(&r)
            );
            Fs::open(&path, &MountOptions::default())
                .unwrap()
                .unmount()
                .unwrap();
            assert_clean(&path);
        }
    }
}

#[test]
fn open_handles_at_crash_leave_unreferenced_slots_that_are_not_errors() {
    let dir = scratch();
    let path = dir.path().join("o.img");
    let fs = Fs::format(&path, 4 << 20, &FormatOptions::default()).unwrap();
    fs.write("/gone", &data(5, 9000)).unwrap();
    let f = fs.open_file("/gone").unwrap();
    fs.remove_file("/gone").unwrap();
    fs.crash();
    // After a crash, closing the handle writes nothing: the slot stays as the crash left it.
    drop(f);
    let r = run(&path, false);
    assert_eq!(r.exit_code(), 0, "{}", show(&r));
    assert!(
        r.notes.iter().any(|n| n.contains("not named")),
        "{}",
        show(&r)
    );
}

#[test]
fn mounted_image_is_refused() {
    let dir = scratch();
    let (path, _) = build(&dir, false);
    let fs = Fs::open(&path, &MountOptions::default()).unwrap();
    let r = fsck::check(&path, &FsckOptions::default());
    assert!(matches!(r, Err(Error::ImageInUse { .. })), "{r:?}");
    assert_eq!(fsck::exit_code(&r), 8);
    fs.unmount().unwrap();
}

#[test]
fn traced_backend() {
    use novafs_engine::Media;
    use std::sync::Arc;
    let media = Arc::new(Media::traced(4 << 20));
    let engine = novafs::Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
    let fs = Fs::from_engine(engine, Default::default());
    fs.create_dir("/d").unwrap();
    fs.write("/d/x", &data(9, 7000)).unwrap();
    fs.crash();
    let r = fsck::check_media(media.clone(), &FsckOptions::default()).unwrap();
    assert_eq!(r.exit_code(), 0, "{}", show(&r));
    // Damage an entry of /d/x (a fresh traced region holding the damaged image), repair it on
    // the traced backend: every store of the repair is in the trace, followed by a fence.
    let ino = {
        let (engine, _) = novafs_recovery::open_media(
            Arc::new(Media::traced_from(media.snapshot().unwrap())),
            &MountOptions::default(),
        )
        .unwrap();
        let d = engine.lookup(1, b"d").unwrap().ino;
        let x = engine.lookup(d, b"x").unwrap().ino;
        let page = engine.inode_layout(x).unwrap().log_pages[0];
        engine.crash();
        (x, page)
    };
    let mut image = media.snapshot().unwrap();
    let at = (ino.1 * BLOCK) as usize;
    image[at + 16..at + 40].fill(0xa5);
    let damaged = Arc::new(Media::traced_from(image));
    let r = fsck::check_media(damaged.clone(), &FsckOptions::default()).unwrap();
    assert_eq!(r.exit_code(), 4, "{}", show(&r));
    assert!(r
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::LogEntry && p.inode == Some(ino.0)));
    damaged.with_trace(|t| t.enabled = true);
    let y = fsck::check_media(
        damaged.clone(),
        &FsckOptions {
            repair: true,
            ..FsckOptions::default()
        },
    )
    .unwrap();
    assert_eq!(y.exit_code(), 1, "{}", show(&y));
    let events = damaged.with_trace(|t| t.take()).unwrap();
    use novafs_engine::media::TraceEvent;
    let stores = events
        .iter()
        .filter(|e| matches!(e, TraceEvent::Store { .. }))
        .count();
    assert!(stores > 0);
    assert!(
        matches!(events.last(), Some(TraceEvent::Fence { .. })),
        "the last event is a fence"
    );
    let r = fsck::check_media(damaged.clone(), &FsckOptions::default()).unwrap();
    assert_eq!(r.exit_code(), 0, "{}", show(&r));
    let (engine, _) = novafs_recovery::open_media(damaged, &MountOptions::default()).unwrap();
    engine.lookup(1, b"d").unwrap();
    engine.crash();
}

// The corruption table.

#[test]
fn superblock_primary_bit_flip_is_repaired_from_the_replica() {
    let dir = scratch();
    let (path, _) = build(&dir, false);
    flip(&path, 20, 3); // blocks_total
    let r = assert_found(&path, ProblemKind::SuperblockPrimary, None, Some(0));
    assert_eq!(r.problems[0].offset, Some(0));
    // Mount repairs the primary from the replica too (documented), on a copy.
    let c = copy(&path, "copy.img");
    let fs = Fs::open(&c, &MountOptions::default()).unwrap();
    assert!(fs.mount_report().superblock_repaired);
    fs.unmount().unwrap();
    let fs = assert_fixed(&path);
    assert!(
        fs.mount_report().clean,
        "a superblock repair keeps the saved state"
    );
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    fs.unmount().unwrap();
}

#[test]
fn superblock_replica_damage_is_repaired_from_the_primary() {
    let dir = scratch();
    let (path, _) = build(&dir, false);
    let last = std::fs::metadata(&path).unwrap().len() - BLOCK;
    flip(&path, last + 70, 0);
    assert_found(
        &path,
        ProblemKind::SuperblockReplica,
        None,
        Some(last / BLOCK),
    );
    assert_fixed(&path).unmount().unwrap();
}

#[test]
fn both_superblocks_damaged_is_a_clear_unfixable_error() {
    let dir = scratch();
    let (path, _) = build(&dir, false);
    let last = std::fs::metadata(&path).unwrap().len() - BLOCK;
    flip(&path, 20, 3);
    flip(&path, last + 20, 5);
    let r = assert_found(&path, ProblemKind::Superblock, None, Some(0));
    assert!(
        r.problems[0].message.contains("both superblocks"),
        "{}",
        show(&r)
    );
    let y = run(&path, true);
    assert_eq!(y.exit_code(), 4, "{}", show(&y));
    assert!(!y.modified);
    assert!(is_corrupt(Fs::open(&path, &MountOptions::default())));
}

#[test]
fn inode_slot_bit_flip_is_restored() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let f2 = &l["/a/f2"];
    flip(&path, f2.slot_off + 36, 2); // uid
    let r = assert_found(
        &path,
        ProblemKind::InodeSlot,
        Some(f2.ino),
        Some(f2.slot_off / BLOCK),
    );
    assert!(r
        .problems
        .iter()
        .any(|p| p.offset == Some(f2.slot_off + 32)));
    // The clean mount reads no slot; the damage shows as a typed error on access.
    let c = copy(&path, "copy.img");
    let fs = Fs::open(&c, &MountOptions::default()).unwrap();
    assert!(is_corrupt(fs.metadata("/a/f2")));
    fs.unmount().unwrap();
    assert!(is_corrupt(Fs::open(
        unclean_copy(&path, "u.img"),
        &MountOptions::default()
    )));
    let fs = assert_fixed(&path);
    assert_eq!(fs.read("/a/f2").unwrap(), data(2, 100));
    assert_eq!(fs.metadata("/a/f2").unwrap().uid(), 0);
    fs.unmount().unwrap();
}

#[test]
fn inode_slot_garbage_makes_its_names_dangling() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let f3 = &l["/a/b/f3"];
    write_at(&path, f3.slot_off + 16, &[0xee; 16]);
    let r = assert_found(&path, ProblemKind::DanglingEntry, Some(l["/a/b"].ino), None);
    assert!(r
        .problems
        .iter()
        .any(|p| p.message.contains(&format!("inode {}", f3.ino))));
    // Its blocks are no longer owned: leaked against the saved state.
    assert!(r
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::BlockLeaked));
    let c = copy(&path, "copy.img");
    let fs = Fs::open(&c, &MountOptions::default()).unwrap();
    assert!(is_corrupt(fs.metadata("/a/b/f3")));
    fs.unmount().unwrap();
    let fs = assert_fixed(&path);
    assert!(!fs.exists("/a/b/f3"));
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    fs.unmount().unwrap();
}

#[test]
fn log_entry_bit_flip_is_restored() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let f1 = &l["/f1"];
    let at = f1.pages[0] * BLOCK;
    flip(&path, at + 25, 4); // the Write entry's block number
    let r = assert_found(
        &path,
        ProblemKind::LogEntry,
        Some(f1.ino),
        Some(f1.pages[0]),
    );
    assert!(r.problems.iter().any(|p| p.offset == Some(at)));
    let c = copy(&path, "copy.img");
    let fs = Fs::open(&c, &MountOptions::default()).unwrap();
    assert!(is_corrupt(fs.read("/f1")));
    fs.unmount().unwrap();
    assert!(is_corrupt(Fs::open(
        unclean_copy(&path, "u.img"),
        &MountOptions::default()
    )));
    let fs = assert_fixed(&path);
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    assert!(
        fs.mount_report().clean,
        "a restored bit keeps the saved state valid"
    );
    fs.unmount().unwrap();
}

#[test]
fn damaged_log_entry_cuts_the_log_back() {
    let dir = scratch();
    let (path, l) = build(&dir, true);
    let f1 = &l["/f1"];
    // /f1's log: the Write entry, then the Link entry of the hard link. Damage the first.
    let es = entries(&path, f1);
    assert!(
        matches!(es[0].1, Entry::Write { .. })
            && matches!(es.last().unwrap().1, Entry::Link { .. })
    );
    write_at(&path, es[0].0 + 16, &[0xa5; 24]);
    let r = assert_found(
        &path,
        ProblemKind::LogEntry,
        Some(f1.ino),
        Some(f1.pages[0]),
    );
    assert!(r.problems.iter().any(|p| p.offset == Some(es[0].0)));
    // Cut back to nothing: the file is empty, its link count the initial 1 for two names.
    assert!(r
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::LinkCount && p.inode == Some(f1.ino)));
    assert!(is_corrupt(Fs::open(
        copy(&path, "c.img"),
        &MountOptions::default()
    )));
    let fs = assert_fixed(&path);
    assert_eq!(fs.read("/f1").unwrap().len(), 0);
    assert_eq!(nlink(&fs, "/f1"), 2);
    assert_eq!(fs.read("/a/b/f3").unwrap(), data(3, 5000));
    fs.unmount().unwrap();
}

#[test]
fn directory_entry_bit_flip_is_restored() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let a = &l["/a"];
    let off = dir_entry_offset(&path, a, b"f2");
    flip(&path, off + 41, 1); // a name byte
    assert_found(&path, ProblemKind::LogEntry, Some(a.ino), Some(off / BLOCK));
    let fs = assert_fixed(&path);
    assert_eq!(fs.read("/a/f2").unwrap(), data(2, 100));
    fs.unmount().unwrap();
}

#[test]
fn damaged_directory_entry_loses_names_into_lost_and_found() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let a = &l["/a"];
    let f2 = &l["/a/f2"];
    let off = dir_entry_offset(&path, a, b"f2");
    write_at(&path, off + 8, &[0x5a; 40]);
    let r = assert_found(&path, ProblemKind::LogEntry, Some(a.ino), Some(off / BLOCK));
    // The names at and after the damaged entry are gone: f2 is lost, /f1 lost its second name.
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == ProblemKind::Orphan && p.inode == Some(f2.ino)),
        "{}",
        show(&r)
    );
    assert!(r
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::LinkCount && p.inode == Some(l["/f1"].ino)));
    let c = copy(&path, "copy.img");
    let fs = Fs::open(&c, &MountOptions::default()).unwrap();
    assert!(is_corrupt(fs.read_dir("/a")));
    fs.unmount().unwrap();
    let fs = assert_fixed(&path);
    let lost = format!("/lost+found/#{}", f2.ino);
    assert_eq!(fs.read(&lost).unwrap(), data(2, 100));
    assert_eq!(nlink(&fs, "/f1"), 1);
    assert!(fs.exists("/a/b/f3"));
    fs.unmount().unwrap();
}

#[test]
fn bad_trailer_before_the_tail_page_is_relinked() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let big = &l["/big"];
    assert_eq!(
        big.pages.len(),
        3,
        "the test needs a three-page directory log"
    );
    let p1 = big.pages[1];
    write_at(&path, p1 * BLOCK + TRAILER_OFFSET + 12, &[0; 4]); // magic
    let r = assert_found(&path, ProblemKind::LogTrailer, Some(big.ino), Some(p1));
    assert!(r
        .problems
        .iter()
        .any(|p| p.offset == Some(p1 * BLOCK + TRAILER_OFFSET)));
    let c = copy(&path, "copy.img");
    let fs = Fs::open(&c, &MountOptions::default()).unwrap();
    assert!(is_corrupt(fs.read_dir("/big")));
    fs.unmount().unwrap();
    let fs = assert_fixed(&path);
    assert_eq!(fs.read_dir("/big").unwrap().len(), 150);
    fs.unmount().unwrap();
}

#[test]
fn broken_log_chain_is_cut_and_lost_names_relinked() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let big = &l["/big"];
    let p0 = big.pages[0];
    write_at(&path, p0 * BLOCK + TRAILER_OFFSET, &[0xff; 16]);
    let r = assert_found(&path, ProblemKind::LogTrailer, Some(big.ino), Some(p0));
    let orphans = r
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Orphan)
        .count();
    assert_eq!(orphans, 150 - 63, "{}", show(&r));
    assert!(is_corrupt(Fs::open(
        unclean_copy(&path, "u.img"),
        &MountOptions::default()
    )));
    let fs = assert_fixed(&path);
    assert_eq!(fs.read_dir("/big").unwrap().len(), 63);
    let lost = fs.read_dir("/lost+found").unwrap();
    assert_eq!(lost.len(), 150 - 63);
    // Every lost file kept its contents.
    for e in lost {
        let name = format!("/lost+found/{}", e.unwrap().name_lossy());
        assert_eq!(fs.read(&name).unwrap().len(), 10);
    }
    fs.unmount().unwrap();
}

#[test]
fn tail_past_its_page_is_recovered() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let big = &l["/big"];
    let tp = big.tail / BLOCK;
    write_at(
        &path,
        big.slot_off + 8,
        &(tp * BLOCK + TRAILER_OFFSET + 8).to_le_bytes(),
    );
    let r = assert_found(&path, ProblemKind::LogTail, Some(big.ino), Some(tp));
    assert!(
        r.problems[0]
            .repair
            .as_deref()
            .unwrap()
            .contains(&big.tail.to_string()),
        "{}",
        show(&r)
    );
    let c = copy(&path, "copy.img");
    let fs = Fs::open(&c, &MountOptions::default()).unwrap();
    assert!(is_corrupt(fs.read_dir("/big")));
    fs.unmount().unwrap();
    let fs = assert_fixed(&path);
    assert_eq!(fs.read_dir("/big").unwrap().len(), 150);
    fs.unmount().unwrap();
    assert_eq!(u64_at(&path, big.slot_off + 8), big.tail);
}

#[test]
fn log_cycle_is_relinked() {
    let dir = scratch();
    let (path, l) = build(&dir, true);
    let big = &l["/big"];
    let (p0, p1) = (big.pages[0], big.pages[1]);
    let t = PageTrailer::new(p0, used_of(&path, p1));
    write_at(&path, p1 * BLOCK + TRAILER_OFFSET, bytemuck::bytes_of(&t));
    assert_found(&path, ProblemKind::LogCycle, Some(big.ino), Some(p1));
    assert!(is_corrupt(Fs::open(
        copy(&path, "c.img"),
        &MountOptions::default()
    )));
    let fs = assert_fixed(&path);
    assert_eq!(fs.read_dir("/big").unwrap().len(), 150);
    fs.unmount().unwrap();
}

#[test]
fn block_owned_by_two_files_gets_a_private_copy() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let (f1, f2) = (&l["/f1"], &l["/a/f2"]);
    let b = f1.map[&0];
    append_raw(
        &path,
        f2,
        &Entry::Write {
            pgoff: 0,
            block: b,
            num_pages: 1,
            size: 100,
            mtime_ns: 1,
        },
    );
    let r = assert_found(&path, ProblemKind::BlockShared, Some(f2.ino), Some(b));
    // f2's own block is now referenced by nothing: leaked against the saved state.
    assert!(r
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::BlockLeaked && p.block == Some(f2.map[&0])));
    // The clean mount reads no log and cannot see it; the rebuild after a crash refuses it.
    assert!(is_corrupt(Fs::open(
        unclean_copy(&path, "u.img"),
        &MountOptions::default()
    )));
    let fs = assert_fixed(&path);
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    assert_eq!(fs.read("/a/f2").unwrap(), data(1, 10000)[..100].to_vec());
    // Writing one file no longer changes the other.
    fs.write("/a/f2", b"changed").unwrap();
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    fs.unmount().unwrap();
    assert_clean(&path);
}

#[test]
fn leaked_block_clears_the_clean_flag() {
    let dir = scratch();
    let (path, _) = build(&dir, false);
    let ms: MountState = bytemuck::pod_read_unaligned(&read_at(&path, BLOCK, 64));
    let mut saved = read_at(&path, ms.saved_block * BLOCK, ms.saved_len as usize);
    let n = u64::from_le_bytes(saved[..8].try_into().unwrap()) as usize;
    let last = 8 + (n - 1) * 16;
    let len = u64::from_le_bytes(saved[last + 8..last + 16].try_into().unwrap());
    let start = u64::from_le_bytes(saved[last..last + 8].try_into().unwrap());
    assert!(len > 1);
    saved[last + 8..last + 16].copy_from_slice(&(len - 1).to_le_bytes());
    write_at(&path, ms.saved_block * BLOCK, &saved);
    let mut ms2 = ms;
    ms2.saved_csum = checksum(&saved);
    ms2.csum = ms2.compute_csum();
    write_at(&path, BLOCK, bytemuck::bytes_of(&ms2));
    let leaked = start + len - 1;
    assert_found(&path, ProblemKind::BlockLeaked, None, Some(leaked));
    // Mount uses the saved state (a leak only loses space): only fsck sees it.
    Fs::open(copy(&path, "c.img"), &MountOptions::default())
        .unwrap()
        .unmount()
        .unwrap();
    let fs = assert_fixed(&path);
    assert!(
        !fs.mount_report().clean,
        "the next mount rebuilds the allocators"
    );
    fs.unmount().unwrap();
    assert_clean(&path);
}

#[test]
fn wrong_link_count_is_corrected() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let f3 = &l["/a/b/f3"];
    append_raw(
        &path,
        f3,
        &Entry::Link {
            nlink: 5,
            ctime_ns: 1,
            parent: 0,
        },
    );
    assert_found(&path, ProblemKind::LinkCount, Some(f3.ino), None);
    // The clean mount reads no log: the wrong count shows as metadata; only fsck sees it.
    let fs = Fs::open(copy(&path, "c.img"), &MountOptions::default()).unwrap();
    assert_eq!(nlink(&fs, "/a/b/f3"), 5);
    fs.unmount().unwrap();
    // The rebuild should refuse it; see the report (engine/src/mount.rs drops the counts).
    match cause(Fs::open(
        unclean_copy(&path, "u.img"),
        &MountOptions::default(),
    )) {
        Err(Error::Corrupt { .. }) => {}
        Ok(fs) => {
            assert_eq!(nlink(&fs, "/a/b/f3"), 5);
            fs.unmount().unwrap();
        }
        Err(e) => panic!("{e}"),
    }
    let fs = assert_fixed(&path);
    assert_eq!(nlink(&fs, "/a/b/f3"), 1);
    fs.unmount().unwrap();
}

#[test]
fn dangling_directory_entry_is_removed() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let (a, f2) = (&l["/a"], &l["/a/f2"]);
    write_at(&path, f2.slot_off + 16, &0u64.to_le_bytes()); // the kind word, as a free does
    let r = assert_found(&path, ProblemKind::DanglingEntry, Some(a.ino), None);
    assert!(r.problems.iter().any(|p| p.message.contains("free")));
    let fs = Fs::open(copy(&path, "c.img"), &MountOptions::default()).unwrap();
    assert!(matches!(cause(fs.metadata("/a/f2")), Err(Error::NotFound)));
    fs.unmount().unwrap();
    assert!(is_corrupt(Fs::open(
        unclean_copy(&path, "u.img"),
        &MountOptions::default()
    )));
    let fs = assert_fixed(&path);
    assert!(!fs.exists("/a/f2"));
    fs.create("/a/f2").unwrap();
    fs.unmount().unwrap();
    assert_clean(&path);
}

#[test]
fn directory_cycle_is_broken() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let (a, b) = (&l["/a"], &l["/a/b"]);
    append_raw(
        &path,
        b,
        &Entry::DirAdd {
            ino: a.ino,
            kind: Kind::Dir,
            name: b"loop".to_vec().into(),
            mtime_ns: 1,
        },
    );
    assert_found(&path, ProblemKind::DirReachableTwice, Some(b.ino), None);
    assert!(is_corrupt(Fs::open(
        unclean_copy(&path, "u.img"),
        &MountOptions::default()
    )));
    let fs = assert_fixed(&path);
    assert!(!fs.exists("/a/b/loop"));
    assert_eq!(nlink(&fs, "/a/b"), 2);
    fs.remove_dir("/a/b").unwrap_err();
    fs.unmount().unwrap();
}

#[test]
fn file_size_short_of_its_extents_is_restored() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let f1 = &l["/f1"];
    let (off, _) = entries(&path, f1)
        .into_iter()
        .find(|(_, e)| matches!(e, Entry::Write { .. }))
        .unwrap();
    reseal_entry(&path, off, |b| {
        b[40..48].copy_from_slice(&100u64.to_le_bytes())
    });
    assert_found(&path, ProblemKind::FileSize, Some(f1.ino), None);
    // The engine replays such an entry without complaint: only fsck sees it.
    let fs = Fs::open(copy(&path, "c.img"), &MountOptions::default()).unwrap();
    assert_eq!(fs.read("/f1").unwrap().len(), 100);
    fs.unmount().unwrap();
    let fs = assert_fixed(&path);
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    fs.unmount().unwrap();
}

#[test]
fn file_size_beyond_the_largest_file_is_cut_to_its_extents() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let f3 = &l["/a/b/f3"];
    let (off, _) = entries(&path, f3)
        .into_iter()
        .find(|(_, e)| matches!(e, Entry::Write { .. }))
        .unwrap();
    reseal_entry(&path, off, |b| {
        b[40..48].copy_from_slice(&(u64::MAX / 2).to_le_bytes())
    });
    assert_found(&path, ProblemKind::FileSize, Some(f3.ino), None);
    let fs = assert_fixed(&path);
    let got = fs.read("/a/b/f3").unwrap();
    assert_eq!(got.len(), 8192);
    assert_eq!(got[..5000], data(3, 5000)[..]);
    fs.unmount().unwrap();
}

#[test]
fn bytes_past_the_end_of_file_are_zeroed() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let f2 = &l["/a/f2"];
    let b = f2.map[&0];
    write_at(&path, b * BLOCK + 200, b"garbage");
    assert_found(&path, ProblemKind::EofBytes, Some(f2.ino), Some(b));
    let fs = assert_fixed(&path);
    assert_eq!(fs.read("/a/f2").unwrap(), data(2, 100));
    let f = fs.open_options().write(true).open("/a/f2").unwrap();
    f.set_len(300).unwrap();
    drop(f);
    assert!(fs.read("/a/f2").unwrap()[100..].iter().all(|&x| x == 0));
    fs.unmount().unwrap();
}

#[test]
fn truncated_image_file_is_reported_unfixable() {
    let dir = scratch();
    let (path, _) = build(&dir, false);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(8 << 20).unwrap();
    drop(f);
    let r = assert_found(&path, ProblemKind::ImageTruncated, None, None);
    assert!(r.problems[0].offset.is_some());
    let y = run(&path, true);
    assert_eq!(y.exit_code(), 4);
    assert!(!y.modified);
    assert!(is_corrupt(Fs::open(&path, &MountOptions::default())));
}

#[test]
fn random_garbage_image_is_not_novafs() {
    let dir = scratch();
    let path = dir.path().join("g.img");
    std::fs::write(&path, data(77, 4 << 20)).unwrap();
    let r = fsck::check(&path, &FsckOptions::default());
    assert!(matches!(r, Err(Error::NotNovafs)), "{r:?}");
    assert_eq!(fsck::exit_code(&r), 8);
    let y = fsck::check(
        &path,
        &FsckOptions {
            repair: true,
            ..FsckOptions::default()
        },
    );
    assert!(matches!(y, Err(Error::NotNovafs)));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        data(77, 4 << 20),
        "nothing written"
    );
    assert!(matches!(
        cause(Fs::open(&path, &MountOptions::default())),
        Err(Error::NotNovafs)
    ));
}

/// Every name of the root can be listed, stat'ed, and a symlink's target read (what `ls -l /`
/// does).
fn root_lists(fs: &Fs) {
    for e in fs.read_dir("/").unwrap() {
        let p = format!("/{}", e.unwrap().name_lossy());
        let m = fs.symlink_metadata(&p).unwrap();
        if m.is_symlink() {
            let t = fs.read_link(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert!(!t.is_empty(), "{p}: empty target");
        }
    }
}

#[test]
fn symlink_with_an_empty_log_is_removed_not_kept() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let sym = &l["/sym"];
    // The tail word is covered by no checksum: an empty log.
    write_at(&path, sym.slot_off + 8, &0u64.to_le_bytes());
    let r = assert_found(&path, ProblemKind::DanglingEntry, Some(l["/"].ino), None);
    assert!(
        r.problems.iter().any(|p| p.message.contains("symlink")),
        "{}",
        show(&r)
    );
    let fs = assert_fixed(&path);
    assert!(fs.symlink_metadata("/sym").is_err());
    root_lists(&fs);
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    fs.unmount().unwrap();
}

#[test]
fn symlink_whose_log_is_cut_back_to_nothing_is_removed_not_created_empty() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let sym = &l["/sym"];
    let es = entries(&path, sym);
    write_at(&path, es[0].0 + 16, &[0xa5; 24]); // garble the first entry (not one bit)
    assert_found(&path, ProblemKind::LogEntry, Some(sym.ino), None);
    let fs = assert_fixed(&path);
    assert!(fs.symlink_metadata("/sym").is_err());
    root_lists(&fs);
    fs.unmount().unwrap();
}

#[test]
fn destroyed_first_inode_table_block_rebuilds_an_empty_root() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    // The block holding inodes 0..31: the root, /a, /a/b, /f1, ..., /big and its first files.
    let table = l["/"].slot_off / BLOCK;
    write_at(&path, table * BLOCK, &[0u8; BLOCK as usize]);
    assert!(is_corrupt(Fs::open(
        copy(&path, "c.img"),
        &MountOptions::default()
    )));
    assert_found(&path, ProblemKind::InodeSlot, Some(1), Some(table));
    let fs = assert_fixed(&path);
    root_lists(&fs);
    // The files of /big whose slots survived (inode 32 on) are in /lost+found.
    let big0 = l["/big"].ino + 1; // /big/file-000
    let mut found = 0;
    for i in 0..150u64 {
        let ino = big0 + i;
        if ino >= 32 {
            assert_eq!(
                fs.read(format!("/lost+found/#{ino}")).unwrap(),
                data(100 + i, 10)
            );
            found += 1;
        }
    }
    assert!(found > 100, "{found}");
    fs.unmount().unwrap();
}

/// A crash after a rename's new tails were durable but before its journal slot retired: the
/// image needs recovery, which is not an error (as e2fsck treats a journal needing replay).
#[test]
fn interrupted_rename_needs_recovery_and_is_not_an_error() {
    use novafs_engine::layout::journal::{JournalEntry, JournalSlot, JOURNAL_ACTIVE};
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let (root, a) = (&l["/"], &l["/a"]);
    let fs = Fs::open(&path, &MountOptions::default()).unwrap();
    fs.rename("/a/f2", "/moved").unwrap();
    fs.crash();
    let mut js = JournalSlot {
        commit: JOURNAL_ACTIVE | 2,
        csum: 0,
        n: 2,
        entries: [JournalEntry { addr: 0, old: 0 }; 15],
    };
    js.entries[0] = JournalEntry {
        addr: root.slot_off + 8,
        old: root.tail,
    };
    js.entries[1] = JournalEntry {
        addr: a.slot_off + 8,
        old: a.tail,
    };
    js.csum = js.compute_csum();
    write_at(&path, 2 * BLOCK + 3 * 256, bytemuck::bytes_of(&js));
    let before = std::fs::read(&path).unwrap();
    let n = run(&path, false);
    assert_eq!(n.exit_code(), 0, "{}", show(&n));
    assert_eq!(n.errors_found, 0);
    assert_eq!(n.recovery.len(), 1, "{}", show(&n));
    assert!(
        n.recovery[0].contains("recovery will undo"),
        "{:?}",
        n.recovery
    );
    assert!(std::fs::read(&path).unwrap() == before, "fsck -n wrote");
    // Mount recovers it the same way.
    let fs = Fs::open(copy(&path, "c.img"), &MountOptions::default()).unwrap();
    assert_eq!(fs.mount_report().journal_undone, 1);
    assert_eq!(fs.read("/a/f2").unwrap(), data(2, 100));
    fs.unmount().unwrap();
    // -y applies the undo: nothing was an error, the image was modified.
    let y = run(&path, true);
    assert_eq!(y.exit_code(), 0, "{}", show(&y));
    assert!(
        y.modified && y.recovery[0].contains("undone"),
        "{}",
        show(&y)
    );
    let again = run(&path, false);
    assert_eq!(again.exit_code(), 0, "{}", show(&again));
    assert!(again.recovery.is_empty());
    let fs = Fs::open(&path, &MountOptions::default()).unwrap();
    assert_eq!(fs.read("/a/f2").unwrap(), data(2, 100));
    assert!(!fs.exists("/moved"));
    fs.unmount().unwrap();
}

/// Random damage to metadata (slots, log pages, trailers, tails, the map, the journal, the
/// mount state): fsck never panics nor fails operationally, -n writes nothing, -y leaves an
/// image that the next fsck -n finds clean (or that -y declared it could not fix), and mount
/// never panics.
#[test]
fn random_metadata_damage_never_panics_and_repairs_converge() {
    let dir = scratch();
    let (pristine, l) = build(&dir, false);
    let (crashed_dir, _) = (scratch(), ());
    let (crashed, _) = build(&crashed_dir, true);
    let mut targets: Vec<u64> = Vec::new();
    for x in l.values() {
        targets.push(x.slot_off);
        targets.extend(x.pages.iter().map(|p| p * BLOCK));
        targets.extend(x.pages.iter().map(|p| p * BLOCK + TRAILER_OFFSET));
    }
    targets.extend([BLOCK, 2 * BLOCK, 3 * BLOCK]);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut fixed = 0;
    let mut left = 0;
    let mut harmless = 0;
    for round in 0..120 {
        let src = if round % 3 == 2 { &crashed } else { &pristine };
        let path = copy(src, "r.img");
        let damages = 1 + rnd(3);
        for _ in 0..damages {
            let base = targets[rnd(targets.len() as u64) as usize];
            let off = base + rnd(if base.is_multiple_of(BLOCK) { 256 } else { 64 });
            match rnd(3) {
                0 => flip(&path, off, rnd(8) as u8),
                1 => write_at(&path, off, &[rnd(256) as u8]),
                _ => write_at(&path, off & !7, &rnd(u64::MAX).to_le_bytes()),
            }
        }
        let before = std::fs::read(&path).unwrap();
        let n = fsck::check(&path, &FsckOptions::default());
        assert!(
            std::fs::read(&path).unwrap() == before,
            "round {round}: -n wrote"
        );
        let n = match n {
            Ok(n) => n,
            Err(e) => panic!("round {round}: fsck -n failed operationally: {e}"),
        };
        let _ = Fs::open(copy(&path, "m.img"), &MountOptions::default()).map(|fs| fs.crash());
        let y = fsck::check(
            &path,
            &FsckOptions {
                repair: true,
                ..FsckOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("round {round}: -y failed: {e}\n{}", show(&n)));
        let after = run(&path, false);
        if y.errors_left == 0 {
            assert_eq!(
                after.exit_code(),
                0,
                "round {round}: -y said fixed:\n{}\nbut:\n{}",
                show(&y),
                show(&after)
            );
            Fs::open(&path, &MountOptions::default())
                .unwrap_or_else(|e| panic!("round {round}: mount after -y: {e}\n{}", show(&y)))
                .unmount()
                .unwrap();
            fixed += (y.errors_found > 0) as u32;
            harmless += (y.errors_found == 0) as u32;
        } else {
            assert_eq!(y.exit_code(), 4);
            left += 1;
        }
    }
    eprintln!("random damage: {fixed} rounds repaired, {left} left unfixable, {harmless} harmless");
    assert!(fixed > 60, "{fixed} repaired, {left} left");
}

#[test]
fn damaged_root_slot_is_rebuilt_and_sane_slots_resealed() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let root = &l["/"];
    write_at(&path, root.slot_off + 16, &[0x99; 8]); // kind + reserved bytes
    let f2 = &l["/a/f2"];
    write_at(&path, f2.slot_off + 36, &[0x34, 0x12]); // uid: two bytes, not a single bit
    let r = assert_found(&path, ProblemKind::InodeSlot, Some(1), None);
    assert!(r
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::InodeSlot && p.inode == Some(f2.ino)));
    assert!(is_corrupt(Fs::open(
        copy(&path, "c.img"),
        &MountOptions::default()
    )));
    let fs = assert_fixed(&path);
    assert_eq!(fs.read_dir("/big").unwrap().len(), 150);
    assert_eq!(fs.read("/a/f2").unwrap(), data(2, 100));
    assert_eq!(fs.metadata("/a/f2").unwrap().uid(), 0x1234);
    fs.unmount().unwrap();
}

#[test]
fn crafted_superblock_block_count_does_not_panic_fsck() {
    use novafs_engine::layout::superblock::Superblock;
    let dir = scratch();
    let (path, _) = build(&dir, false);
    // A superblock whose checksum holds but whose block count overflows a byte count.
    let sb = Superblock::new(1 << 62, [1; 16], 1);
    write_at(&path, 0, bytemuck::bytes_of(&sb));
    assert_found(&path, ProblemKind::SuperblockPrimary, None, Some(0));
    let fs = assert_fixed(&path);
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    fs.unmount().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Extended attributes and blocks past the end (format 3).

#[test]
fn healthy_xattrs_and_kept_blocks_past_the_end_are_clean() {
    let dir = scratch();
    let (path, _) = build(&dir, false);
    let fs = Fs::open(&path, &MountOptions::default()).unwrap();
    fs.set_xattr("/f1", "user.a", b"1", novafs::XattrFlags::Any)
        .unwrap();
    fs.set_xattr(
        "/a",
        "trusted.big",
        &data(9, 30000),
        novafs::XattrFlags::Any,
    )
    .unwrap();
    let f = fs.open_options().write(true).open("/a/f2").unwrap();
    f.allocate_keep_size(0, 40960).unwrap();
    drop(f);
    fs.unmount().unwrap();
    assert_clean(&path);
}

#[test]
fn malformed_acl_is_removed() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let f1 = &l["/f1"];
    append_raw(
        &path,
        f1,
        &Entry::XattrSet {
            name: b"system.posix_acl_access".to_vec(),
            value_len: 5,
            inline: b"junk!".to_vec(),
            ctime_ns: 1,
        },
    );
    let r = assert_found(&path, ProblemKind::Xattr, Some(f1.ino), None);
    assert!(show(&r).contains("POSIX ACL"), "{}", show(&r));
    let fs = assert_fixed(&path);
    assert!(fs.list_xattr("/f1").unwrap().is_empty());
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    fs.unmount().unwrap();
}

#[test]
fn xattr_pieces_without_their_set_entry_are_cut_off() {
    let dir = scratch();
    let (path, l) = build(&dir, false);
    let f1 = &l["/f1"];
    append_raw(
        &path,
        f1,
        &Entry::XattrChunk {
            offset: 0,
            data: vec![7; 100],
        },
    );
    let r = assert_found(&path, ProblemKind::Xattr, Some(f1.ino), None);
    assert!(
        show(&r).contains("1 xattr value piece entry"),
        "{}",
        show(&r)
    );
    // The engine refuses the inode's log as corrupt (typed error, no panic).
    let fs = Fs::open(unclean_copy(&path, "u.img"), &MountOptions::default());
    match fs {
        Err(e) => assert!(matches!(e.engine_error(), Error::Corrupt { .. }), "{e}"),
        Ok(fs) => {
            assert!(is_corrupt(fs.read("/f1")));
            fs.crash();
        }
    }
    // fsck -y cuts the log back to before the pieces: the file is as it was.
    let fs = assert_fixed(&path);
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    assert!(fs.list_xattr("/f1").unwrap().is_empty());
    fs.unmount().unwrap();
}

#[test]
fn data_past_the_size_in_kept_blocks_grows_the_size() {
    let dir = scratch();
    let (path, _) = build(&dir, false);
    let fs = Fs::open(&path, &MountOptions::default()).unwrap();
    let f = fs.open_options().write(true).open("/a/f2").unwrap();
    f.allocate_keep_size(0, 3 * 4096).unwrap();
    drop(f);
    let l = layout(&fs, "/a/f2");
    fs.unmount().unwrap();
    // Non-zero bytes in a page allocated past the end: not a kept (zero) block.
    let b = l.map[&2];
    write_at(&path, b * BLOCK + 10, b"x");
    assert_found(&path, ProblemKind::FileSize, Some(l.ino), None);
    let fs = assert_fixed(&path);
    assert_eq!(fs.metadata("/a/f2").unwrap().len(), 2 * 4096 + 11);
    fs.unmount().unwrap();
}

#[test]
fn a_large_xattr_whose_set_entry_is_lost_is_cut_off_whole() {
    // A 9,000-byte value is several piece entries and a set entry in one append; with the tail
    // rewound to before the set entry, every piece is left over and fsck -y drops them all.
    let dir = scratch();
    let (path, _) = build(&dir, false);
    let fs = Fs::open(&path, &MountOptions::default()).unwrap();
    fs.set_xattr("/f1", "user.small", b"kept", novafs::XattrFlags::Any)
        .unwrap();
    fs.set_xattr("/f1", "user.big", &data(3, 9000), novafs::XattrFlags::Any)
        .unwrap();
    let l = layout(&fs, "/f1");
    fs.unmount().unwrap();
    // The set entry of "user.big" holds no value bytes: one line, the last of the log.
    assert!(
        l.tail % 4096 >= 64,
        "the set entry shares its page with the pieces"
    );
    let tail_word = l.slot_off + novafs_engine::layout::inode::TAIL_OFFSET;
    write_at(&path, tail_word, &(l.tail - 64).to_le_bytes());
    let r = assert_found(&path, ProblemKind::Xattr, Some(l.ino), None);
    assert!(
        show(&r).contains("xattr value piece entries"),
        "{}",
        show(&r)
    );
    let fs = assert_fixed(&path);
    assert_eq!(fs.get_xattr("/f1", "user.small").unwrap(), b"kept");
    assert!(fs.get_xattr("/f1", "user.big").is_err());
    assert_eq!(fs.read("/f1").unwrap(), data(1, 10000));
    fs.unmount().unwrap();
}
