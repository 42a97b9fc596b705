//! Msync mode (an image on an ordinary disk file): one durability call per fence, and every
//! range flushed before a fence is written back (clean in the host's page cache) when it
//! returns. Runs on `CARGO_TARGET_TMPDIR`; where that is a RAM file system the image is in
//! emulated mode and only that is checked.

use std::sync::Arc;

use novafs::{FormatOptions, Fs, MediaMode, MountOptions};
use novafs_engine::media::{MapOptions, Media};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Whether `media` is in msync mode; else it must be emulated (the directory is in RAM).
fn is_msync(mode: MediaMode) -> bool {
    if mode == MediaMode::Msync {
        return true;
    }
    assert_eq!(mode, MediaMode::Emulated);
    eprintln!("CARGO_TARGET_TMPDIR is on a RAM file system: msync mode not exercised");
    false
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn a_fence_syncs_every_flushed_range_with_one_call() {
    let d = dir();
    let len = 16u64 << 20;
    let m = Media::create(&d.path().join("m.img"), len, false, &MapOptions::default()).unwrap();
    if !is_msync(m.mode()) {
        return;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for round in 0..150 {
        let mut flushed = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let n = 1 + rng.below(10_000);
            let off = rng.below(len - n);
            let data: Vec<u8> = (0..n).map(|i| (i as u8) ^ (round as u8)).collect();
            if rng.below(3) == 0 {
                m.write_nt(off, &data).unwrap();
            } else {
                m.write(off, &data).unwrap();
                m.flush(off, n).unwrap();
            }
            flushed.push((off, n));
        }
        // A store that is not flushed: the fence owes it nothing (and may persist it).
        m.write(rng.below(len - 8), &[0xee; 8]).unwrap();
        let before = m.sync_calls();
        m.fence();
        assert_eq!(
            m.sync_calls(),
            before + 1,
            "round {round}: one call per fence"
        );
        for &(off, n) in &flushed {
            match m.unsynced_pages(off, n).unwrap() {
                Some(unsynced) => {
                    assert_eq!(unsynced, 0, "round {round}: [{off}, +{n}) not written back");
                    checked += 1;
                }
                None => eprintln!("no cachestat(2) on this kernel: write-back not checked"),
            }
        }
        // Nothing flushed since: no call.
        m.fence();
        assert_eq!(
            m.sync_calls(),
            before + 1,
            "round {round}: an empty fence made a call"
        );
    }
    eprintln!("{checked} flushed ranges seen clean after their fence");
}

#[test]
fn an_append_is_one_durability_call_and_leaves_nothing_unsynced() {
    let d = dir();
    let img = d.path().join("a.img");
    let fs = Fs::format(&img, 32 << 20, &FormatOptions::default()).unwrap();
    if !is_msync(fs.media_mode()) {
        return;
    }
    // Msync mode commits single-inode appends with one fence (DESIGN.md §5.1).
    assert!(fs.engine().one_fence_commits());
    let engine = fs.engine().clone();
    let f = fs
        .open_options()
        .append(true)
        .create(true)
        .open("/log")
        .unwrap();
    let mut total = 0;
    let mut ones = 0;
    let n = 300;
    for i in 0..n {
        let before = engine.durability_calls();
        f.append(&[i as u8; 100]).unwrap();
        let calls = engine.durability_calls() - before;
        // One fence: data, entry and tail made durable by one msync. Two when the append
        // starts a log page (or is the first in its page this session: the rest of the page
        // is zeroed first); more when log GC runs after the commit.
        assert!(calls >= 1, "append {i}: {calls} durability calls");
        ones += usize::from(calls == 1);
        total += calls;
        // Everything the append committed is written back. An append inside the file's
        // last page is a redo write (DESIGN.md §5.1.2): its bytes are in the durable log
        // entry, and their in-place store into the data page waits for the next fence, so
        // that one page may still be dirty, never more.
        if let Some(unsynced) = engine.unsynced_pages().unwrap() {
            assert!(
                unsynced <= 1,
                "append {i}: {unsynced} dirty pages after it returned"
            );
        }
    }
    // Two-fence commits made 2.0 per append (flushing at once, three or more).
    assert!(
        total as f64 / n as f64 <= 1.2,
        "{total} calls for {n} appends"
    );
    assert!(ones >= n * 9 / 10, "{ones} of {n} appends made one call");
    drop(f);
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let data = fs.read("/log").unwrap();
    assert_eq!(data.len(), 100 * n);
    assert!(data
        .chunks(100)
        .enumerate()
        .all(|(i, c)| c == [i as u8; 100]));
    fs.unmount().unwrap();
}

#[test]
fn concurrent_commits_in_msync_mode() {
    let d = dir();
    let img = d.path().join("c.img");
    let fs = Fs::format(&img, 64 << 20, &FormatOptions::default()).unwrap();
    let msync = is_msync(fs.media_mode());
    let fs = Arc::new(fs);
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                let f = fs
                    .open_options()
                    .append(true)
                    .create(true)
                    .open(format!("/t{t}"))
                    .unwrap();
                for i in 0..150u32 {
                    f.append(&[(t * 50 + i % 50) as u8; 64]).unwrap();
                    if i % 10 == 0 {
                        fs.create_dir(format!("/d{t}-{i}")).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let fs = Arc::into_inner(fs).unwrap();
    if msync {
        let engine = fs.engine().clone();
        // At most each file's last redo write's page (see above).
        if let Some(unsynced) = engine.unsynced_pages().unwrap() {
            assert!(
                unsynced <= 3,
                "{unsynced} dirty pages after every commit returned"
            );
        }
    }
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    for t in 0..3u32 {
        let data = fs.read(format!("/t{t}")).unwrap();
        assert_eq!(data.len(), 150 * 64);
        for (i, c) in data.chunks(64).enumerate() {
            assert_eq!(
                c,
                [(t * 50 + i as u32 % 50) as u8; 64],
                "thread {t} record {i}"
            );
        }
        assert_eq!(
            fs.read_dir("/")
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&format!("d{t}-")))
                .count(),
            15
        );
    }
    fs.unmount().unwrap();
}
