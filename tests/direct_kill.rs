//! kill -9 of a process storing through a mapping's addresses (DESIGN §5.4.1). A child maps a
//! file, stores 64-byte records with CPU stores into the mapped pages (`VolatileSlice`, no
//! call into the engine per store) and persists them (clwb + sfence of its own addresses),
//! printing each acknowledged record; the parent SIGKILLs it at random moments, recovers and
//! checks: MAP_SYNC mode keeps every acknowledged (persisted) record, and the record in flight
//! is per 8-byte word old or new; failure-atomic mode shows the file exactly as of an
//! acknowledged `sync` (the last one, or the one in flight). A transparent mapping (userfaultfd
//! write-protect, where available) takes the stores without `prepare_write`. A third child stores to a page it
//! did not prepare: it dies of SIGSEGV and the image is untouched.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

mod cause;
use cause::cause;
use novafs::{EngineError as Error, FormatOptions, Fs, MapMode, MountOptions};

const CHILD_ENV: &str = "NOVAFS_DIRECT_KILL_IMAGE";
const SLOTS: u64 = 256;
const REC: u64 = 64;
const ROUNDS: u32 = 40;

fn open_retry(image: impl AsRef<std::path::Path>) -> Fs {
    let t = std::time::Instant::now();
    loop {
        match cause(Fs::open(image.as_ref(), &MountOptions::default())) {
            Ok(fs) => return fs,
            Err(Error::ImageInUse { .. }) if t.elapsed() < std::time::Duration::from_secs(5) => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            Err(e) => panic!("mount: {e}"),
        }
    }
}

fn fsck(img: &std::path::Path) -> novafs_recovery::fsck::FsckReport {
    let t = std::time::Instant::now();
    loop {
        match novafs_recovery::fsck::check(img, &Default::default()) {
            Err(Error::ImageInUse { .. }) if t.elapsed().as_secs() < 5 => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            r => break r.expect("fsck runs"),
        }
    }
}

/// Record `n`: 64 bytes, every 8-byte word distinct per record and never zero.
fn record(n: u64) -> [u8; 64] {
    let mut r = [0u8; 64];
    for (w, c) in r.chunks_mut(8).enumerate() {
        c.copy_from_slice(&((n + 1) << 8 | w as u64).to_le_bytes());
    }
    r
}

fn slot(n: u64) -> u64 {
    (n % SLOTS) * REC
}

/// What slot `s` held before record `n` (the previous record there, or zeros).
fn before(n: u64) -> [u8; 64] {
    if n >= SLOTS {
        record(n - SLOTS)
    } else {
        [0; 64]
    }
}

fn child(image: &str, mode: &str, start: u64) -> ! {
    let fs = open_retry(image);
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .open("/data")
        .unwrap();
    let atomic = mode == "atomic";
    let transparent = mode == "transparent";
    let m = if transparent {
        f.map_transparent(0, SLOTS * REC, MapMode::Sync).unwrap()
    } else {
        f.map(
            0,
            SLOTS * REC,
            if atomic {
                MapMode::Atomic
            } else {
                MapMode::Sync
            },
        )
        .unwrap()
    };
    let s = m.as_slice();
    let mut out = std::io::stdout().lock();
    let mut n = start;
    loop {
        if n >= start + 400 {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        writeln!(out, "begin {n}").unwrap();
        out.flush().unwrap();
        if mode == "unprepared" {
            // A page never prepared: read-only memory, the store faults (SIGSEGV).
            s.write(slot(n) as usize, &record(n)).unwrap();
            unreachable!("a store to an unprepared page returned");
        }
        if !transparent {
            m.prepare_write(slot(n), REC).unwrap();
        } // (transparent: the first store to a clean page faults it in)
        s.write(slot(n) as usize, &record(n)).unwrap(); // CPU stores into the mapping
        m.persist(slot(n), REC).unwrap(); // clwb + sfence of these addresses
        if atomic {
            m.sync().unwrap();
        }
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
        n += 1;
    }
}

fn spawn(test: &str, img: &std::path::Path, mode: &str, start: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, img)
        .env("NOVAFS_DIRECT_KILL_MODE", mode)
        .env("NOVAFS_DIRECT_KILL_START", start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn maybe_child() {
    if let Ok(image) = std::env::var(CHILD_ENV) {
        let mode = std::env::var("NOVAFS_DIRECT_KILL_MODE").unwrap();
        let start: u64 = std::env::var("NOVAFS_DIRECT_KILL_START")
            .unwrap()
            .parse()
            .unwrap();
        child(&image, &mode, start);
    }
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("dk.img");
    let fs = Fs::format(&img, 32 << 20, &FormatOptions::default()).unwrap();
    fs.create("/data").unwrap().set_len(SLOTS * REC).unwrap();
    fs.unmount().unwrap();
    (dir, img)
}

fn slot_of(data: &[u8], n: u64) -> [u8; 64] {
    let mut r = [0u8; 64];
    r.copy_from_slice(&data[slot(n) as usize..(slot(n) + REC) as usize]);
    r
}

fn run(test: &str, mode: &str) {
    let (_dir, img) = setup();
    let atomic = mode == "atomic";
    let mut next = 0u64; // first record not known to be there
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut recoveries = 0;
    for round in 0..ROUNDS {
        let mut c = spawn(test, &img, mode, next);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = 1 + seed % 300;
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        let (mut acked, mut begun, mut seen) = (None, None, 0);
        while let Some(Ok(l)) = lines.next() {
            if let Some(v) = l.strip_prefix("ack ") {
                acked = Some(v.parse::<u64>().unwrap());
                seen += 1;
                if seen >= wait {
                    break;
                }
            } else if let Some(v) = l.strip_prefix("begin ") {
                begun = Some(v.parse::<u64>().unwrap());
            }
        }
        c.kill().unwrap();
        c.wait().unwrap();
        for l in lines.map_while(Result::ok) {
            if let Some(v) = l.strip_prefix("ack ") {
                acked = Some(v.parse::<u64>().unwrap());
            } else if let Some(v) = l.strip_prefix("begin ") {
                begun = Some(v.parse::<u64>().unwrap());
            }
        }
        let acked = acked.unwrap_or_else(|| panic!("round {round}: nothing acknowledged"));
        let fs = open_retry(&img);
        if !fs.mount_report().clean {
            recoveries += 1;
        }
        let data = fs.read("/data").unwrap();
        // Every acknowledged record not overwritten by a later one (acknowledged or in
        // flight) is there.
        for n in (acked + 2).saturating_sub(SLOTS)..=acked {
            assert_eq!(
                slot_of(&data, n),
                record(n),
                "round {round} ({mode}): acknowledged record {n} lost (acked {acked})"
            );
        }
        let inflight = acked + 1;
        let there = slot_of(&data, inflight);
        if begun == Some(inflight) {
            if atomic {
                // Exactly as of a sync: the in-flight record wholly there or wholly absent.
                assert!(
                    there == record(inflight) || there == before(inflight),
                    "round {round}: atomic mode shows a partial record {inflight}"
                );
            } else {
                for (w, (a, (old, new))) in there
                    .chunks(8)
                    .zip(before(inflight).chunks(8).zip(record(inflight).chunks(8)))
                    .enumerate()
                {
                    assert!(
                        a == old || a == new,
                        "round {round}: word {w} of record {inflight} is neither old nor new"
                    );
                }
            }
        } else {
            assert_eq!(there, before(inflight), "round {round}: record never begun");
        }
        next = if there == record(inflight) {
            inflight + 1
        } else {
            inflight
        };
        // Unpersisted in-flight words that made it are rewritten by the next child anyway.
        if round % 10 == 0 {
            fs.unmount().unwrap();
            let rep = fsck(&img);
            assert_eq!(rep.errors_found, 0, "round {round}: fsck found {rep:?}");
        } else {
            drop(fs);
        }
    }
    assert!(recoveries > ROUNDS / 2, "kills should leave unclean images");
}

#[test]
fn sigkill_while_storing_through_addresses_sync_mode() {
    maybe_child();
    run("sigkill_while_storing_through_addresses_sync_mode", "sync");
}

#[test]
fn sigkill_while_storing_through_addresses_atomic_mode() {
    maybe_child();
    run(
        "sigkill_while_storing_through_addresses_atomic_mode",
        "atomic",
    );
}

#[test]
fn sigkill_while_storing_through_addresses_transparent_mode() {
    maybe_child();
    // Only where userfaultfd write-protect is available (checked by mapping once).
    let (_dir, img) = setup();
    let fs = open_retry(&img);
    let f = fs.open_options().write(true).open("/data").unwrap();
    match cause(f.map_transparent(0, REC, MapMode::Sync)) {
        Err(Error::NotSupported(why)) => {
            eprintln!("skipped: {why}");
            return;
        }
        r => drop(r.unwrap()),
    }
    drop(f);
    fs.unmount().unwrap();
    run(
        "sigkill_while_storing_through_addresses_transparent_mode",
        "transparent",
    );
}

#[test]
fn a_store_to_an_unprepared_page_faults_and_leaves_the_image_alone() {
    maybe_child();
    let test = "a_store_to_an_unprepared_page_faults_and_leaves_the_image_alone";
    let (_dir, img) = setup();
    {
        let fs = open_retry(&img);
        let f = fs.open_options().write(true).open("/data").unwrap();
        f.write_at(&[0x5A; 64], 0).unwrap();
        fs.unmount().unwrap();
    }
    let mut c = spawn(test, &img, "unprepared", 0);
    let status = c.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
    let fs = open_retry(&img);
    let data = fs.read("/data").unwrap();
    assert_eq!(&data[..64], &[0x5A; 64]);
    assert!(data[64..].iter().all(|&b| b == 0));
    fs.unmount().unwrap();
    let rep = fsck(&img);
    assert_eq!(rep.errors_found, 0, "fsck found {rep:?}");
}
