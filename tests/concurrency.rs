//! Threads on different files and directories, and readers of one file, run together.

use std::sync::Arc;

use novafs::{FormatOptions, Fs, MountOptions};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn fs_is_send_sync() {
    assert_send_sync::<Fs>();
    assert_send_sync::<novafs::File>();
}

#[test]
fn parallel_writers_and_readers() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("c.img");
    let fs = Arc::new(Fs::format(&img, 128 << 20, &FormatOptions::default()).unwrap());
    fs.write("/shared", &vec![5u8; 1 << 20]).unwrap();
    let mut handles = Vec::new();
    for t in 0..4u8 {
        let fs = fs.clone();
        handles.push(std::thread::spawn(move || {
            let d = format!("/t{t}");
            fs.create_dir(&d).unwrap();
            for i in 0..200u32 {
                let p = format!("{d}/f{i}");
                let f = fs.create(&p).unwrap();
                f.write_at(&[t; 5000], (i as u64) * 3).unwrap();
                if i % 3 == 0 {
                    fs.rename(&p, format!("{d}/r{i}")).unwrap();
                }
                if i % 5 == 0 {
                    let q = if i % 3 == 0 {
                        format!("{d}/r{i}")
                    } else {
                        p.clone()
                    };
                    fs.remove_file(q).unwrap();
                }
            }
        }));
    }
    for _ in 0..2 {
        let fs = fs.clone();
        handles.push(std::thread::spawn(move || {
            let f = fs.open_options().read(true).open("/shared").unwrap();
            let mut buf = vec![0u8; 65536];
            for i in 0..200u64 {
                f.read_exact_at(&mut buf, (i * 4096) % (1 << 19)).unwrap();
                assert!(buf.iter().all(|&b| b == 5));
            }
        }));
    }
    // Cross-directory renames racing with the writers.
    {
        let fs = fs.clone();
        handles.push(std::thread::spawn(move || {
            fs.create_dir("/m").unwrap();
            fs.create_dir("/n").unwrap();
            for i in 0..200 {
                let (a, b) = if i % 2 == 0 {
                    ("/m/x", "/n/x")
                } else {
                    ("/n/x", "/m/x")
                };
                if i == 0 {
                    fs.write(a, b"moving").unwrap();
                }
                fs.rename(a, b).unwrap();
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let count = |fs: &Fs| {
        (0..4)
            .map(|t| fs.read_dir(format!("/t{t}")).unwrap().len())
            .sum::<usize>()
    };
    let expected = 4 * (200 - 40);
    assert_eq!(count(&fs), expected);
    let fs = Arc::try_unwrap(fs).unwrap();
    let free = fs.statfs().unwrap();
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(count(&fs), expected);
    assert_eq!(fs.statfs().unwrap().blocks_free, free.blocks_free);
    assert_eq!(fs.read("/m/x").unwrap(), b"moving");
}

/// A file another thread removes the moment it is created: the create still returns a handle
/// (the handle is counted before the directory's lock is let go; before, the new inode could
/// be freed between the create and the open, and the create failed with NotFound), the handle
/// reads back what it writes, and closing it frees the inode (no inode or block leaked once
/// the directory, whose log grew meanwhile, is gone too).
#[test]
fn a_file_removed_as_it_is_created_stays_open_until_closed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("race.img");
    let fs = Arc::new(Fs::format(&img, 64 << 20, &FormatOptions::default()).unwrap());
    // The root's log gets its first page (kept for the later entries below).
    fs.create_dir("/warm").unwrap();
    fs.remove_dir("/warm").unwrap();
    let before = fs.statfs().unwrap();
    fs.create_dir("/d").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let remover = {
        let (fs, done) = (fs.clone(), done.clone());
        std::thread::spawn(move || {
            let mut removed = 0u64;
            while !done.load(Ordering::Relaxed) {
                if fs.remove_file("/d/x").is_ok() {
                    removed += 1;
                }
            }
            removed
        })
    };
    for i in 0..20_000u32 {
        let opened = fs
            .open_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open("/d/x");
        let f = match opened {
            Ok(f) => f,
            Err(e) => panic!("create {i}: {e}"),
        };
        f.write_at(&i.to_le_bytes(), 0).unwrap();
        let mut back = [0u8; 4];
        f.read_at(&mut back, 0).unwrap();
        assert_eq!(u32::from_le_bytes(back), i);
    }
    done.store(true, Ordering::Relaxed);
    let removed = remover.join().unwrap();
    assert!(removed > 0, "the remover never met the file");
    let _ = fs.remove_file("/d/x");
    fs.remove_dir("/d").unwrap();
    let after = fs.statfs().unwrap();
    assert_eq!(after.inodes_free, before.inodes_free);
    assert_eq!(after.blocks_free, before.blocks_free);
}
