//! A child process runs operations on an image in /dev/shm and reports each one over a pipe
//! after it returned; the parent kills it with SIGKILL at random moments, mounts (recovery),
//! and checks that every acknowledged operation is there and the one in flight is all or
//! nothing.

mod cause;
use cause::cause;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use novafs::{EngineError as Error, FormatOptions, Fs, MountOptions};

const CHILD_ENV: &str = "NOVAFS_KILL_CHILD_IMAGE";

/// Open, retrying briefly on ImageInUse: the tests of this file run in parallel and spawn
/// children; between fork and exec a child briefly shares every open descriptor of this
/// process, including another test's image and its lock.
fn open_retry(image: impl AsRef<std::path::Path>, opts: &MountOptions) -> Fs {
    let t = std::time::Instant::now();
    loop {
        match cause(Fs::open(image.as_ref(), opts)) {
            Ok(fs) => return fs,
            Err(Error::ImageInUse { .. }) if t.elapsed() < std::time::Duration::from_secs(5) => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            Err(e) => panic!("mount: {e}"),
        }
    }
}
const KILLS: u32 = 200;

fn payload(n: u64) -> Vec<u8> {
    (0..8192u64)
        .map(|i| (n.wrapping_mul(131).wrapping_add(i * 7) % 251) as u8 + 1)
        .collect()
}

/// Operation `n`, in a cycle of three: mkdir /dN, write 8 KiB at a slot of /data, rename
/// /d(N-2) to /r(N-2).
fn do_op(fs: &Fs, n: u64) -> novafs::Result<()> {
    match n % 3 {
        0 => fs.create_dir(format!("/d{n}")),
        1 => {
            let f = fs.open_options().write(true).open("/data")?;
            f.write_at(&payload(n), (n % 64) * 8192).map(|_| ())
        }
        _ => fs.rename(format!("/d{}", n - 2), format!("/r{}", n - 2)),
    }
}

/// Whether op `n` is visible in `fs` (given everything before it is).
fn visible(fs: &Fs, n: u64, later_done: bool) -> bool {
    match n % 3 {
        0 => fs.exists(format!("/d{n}")) || fs.exists(format!("/r{n}")),
        1 => {
            if later_done {
                return true; // may be overwritten by a later op on the same slot
            }
            let f = fs.open_options().read(true).open("/data").unwrap();
            let mut buf = vec![0u8; 8192];
            f.read_exact_at(&mut buf, (n % 64) * 8192).unwrap();
            buf == payload(n)
        }
        _ => fs.exists(format!("/r{}", n - 2)) && !fs.exists(format!("/d{}", n - 2)),
    }
}

fn child(image: &str, start: u64) -> ! {
    let fs = open_retry(image, &MountOptions::default());
    let mut out = std::io::stdout().lock();
    let mut n = start;
    loop {
        // At most 64 operations a round (the parent kills after at most 40 acknowledgements):
        // a parent slowed by a loaded machine must not let the child fill the image.
        if n >= start + 64 {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        writeln!(out, "begin {n}").unwrap();
        out.flush().unwrap();
        do_op(&fs, n).expect("child op");
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
        n += 1;
    }
}

#[test]
fn sigkill_after_return() {
    if let Ok(image) = std::env::var(CHILD_ENV) {
        let start: u64 = std::env::var("NOVAFS_KILL_CHILD_START")
            .unwrap()
            .parse()
            .unwrap();
        child(&image, start);
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("kill.img");
    let fs = Fs::format(&img, 64 << 20, &FormatOptions::default()).unwrap();
    fs.create("/data").unwrap().set_len(64 * 8192).unwrap();
    fs.unmount().unwrap();
    let mut next = 0u64; // first op not yet known to be done
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut recoveries = 0;
    for round in 0..KILLS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "sigkill_after_return",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &img)
            .env("NOVAFS_KILL_CHILD_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait_acks = 1 + seed % 40;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = None;
        let mut begun = None;
        let mut seen = 0;
        while let Some(Ok(line)) = lines.next() {
            if let Some(v) = line.strip_prefix("ack ") {
                acked = Some(v.parse::<u64>().unwrap());
                seen += 1;
                if seen >= wait_acks {
                    break;
                }
            } else if let Some(v) = line.strip_prefix("begin ") {
                begun = Some(v.parse::<u64>().unwrap());
            }
        }
        // Kill right after an acknowledgement, possibly mid-way through the next operation.
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines.map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("ack ") {
                acked = Some(v.parse::<u64>().unwrap());
            } else if let Some(v) = line.strip_prefix("begin ") {
                begun = Some(v.parse::<u64>().unwrap());
            }
        }
        let acked = acked.unwrap_or_else(|| panic!("round {round}: child acknowledged nothing"));
        let fs = open_retry(&img, &MountOptions::default());
        if !fs.mount_report().clean {
            recoveries += 1;
        }
        for n in next..=acked {
            // A later write to the same slot (64 slots, every third op) may have replaced it:
            // an acknowledged one, or the one in flight if it made it.
            let overwritten =
                n + 64 * 3 <= acked || (n + 64 * 3 == acked + 1 && begun == Some(acked + 1));
            if !(visible(&fs, n, false) || overwritten) {
                let f = fs.open_options().read(true).open("/data").unwrap();
                let mut buf = vec![0u8; 8192];
                f.read_exact_at(&mut buf, (n % 64) * 8192).unwrap();
                let which: Vec<u64> = (0..=acked + 1)
                    .filter(|&k| k % 3 == 1 && payload(k) == buf)
                    .collect();
                let zero = buf.iter().all(|&b| b == 0);
                let first_diff = buf.iter().zip(payload(n)).position(|(a, b)| *a != b);
                panic!(
                    "round {round}: acknowledged op {n} lost (next {next}, acked {acked}, begun {begun:?}); slot holds payload of {which:?}, zero={zero}, first diff at {first_diff:?}; mount {:?}",
                    fs.mount_report()
                );
            }
        }
        // The op in flight (begun, not acknowledged) is wholly there or wholly absent.
        next = acked + 1;
        if begun == Some(acked + 1) {
            let inflight = acked + 1;
            let there = visible(&fs, inflight, false);
            if inflight % 3 == 0 {
                assert_eq!(fs.exists(format!("/d{inflight}")), there);
            }
            if there {
                next = inflight + 1;
            } else if inflight % 3 == 1 {
                // A torn write would show neither the old nor the new bytes.
                let f = fs.open_options().read(true).open("/data").unwrap();
                let mut buf = vec![0u8; 8192];
                f.read_exact_at(&mut buf, (inflight % 64) * 8192).unwrap();
                let old_ok = buf.iter().all(|&b| b == 0)
                    || (0..inflight)
                        .rev()
                        .filter(|k| k % 3 == 1 && k % 64 == inflight % 64)
                        .take(1)
                        .any(|k| buf == payload(k));
                assert!(old_ok, "round {round}: torn write of op {inflight}");
            }
        }
        // The recovered image is consistent: fsck (read-only) finds nothing.
        let fs = if round % 10 == 0 {
            fs.unmount().unwrap();
            let t = std::time::Instant::now();
            let report = loop {
                match novafs_recovery::fsck::check(&img, &Default::default()) {
                    Err(Error::ImageInUse { .. }) if t.elapsed().as_secs() < 5 => {
                        std::thread::sleep(std::time::Duration::from_millis(2))
                    }
                    r => break r.expect("fsck runs"),
                }
            };
            assert_eq!(
                report.errors_found, 0,
                "round {round}: fsck found {report:?}"
            );
            open_retry(&img, &MountOptions::default())
        } else {
            fs
        };
        // Directory ops must not be replayed twice when the next child starts.
        if next % 3 == 2 && !fs.exists(format!("/d{}", next - 2)) {
            next += 1;
        }
        fs.unmount().unwrap();
    }
    eprintln!("{KILLS} kills, {recoveries} recoveries, {next} operations acknowledged in all");
    assert!(
        recoveries > KILLS / 2,
        "too few kills left the image needing recovery"
    );
    assert!(next > KILLS as u64, "the children did too little work");
}

const MAP_CHILD_ENV: &str = "NOVAFS_KILL_MAP_CHILD";
const MAP_PAGES: u64 = 16;

fn map_value(n: u64) -> [u8; 8] {
    (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1).to_le_bytes()
}

/// The child stores 8-byte values through a mapping, one slot per store (slot n % (pages*512)),
/// persists each, and acknowledges it; in atomic mode it syncs after every 10th store and
/// acknowledges the sync.
fn map_child(image: &str, atomic: bool, start: u64) -> ! {
    let opts = MountOptions {
        writeback: novafs::WritebackConfig {
            interval: std::time::Duration::from_millis(1),
            max_age: std::time::Duration::from_millis(2),
            max_dirty_pages: 4,
        },
        ..MountOptions::default()
    };
    let fs = open_retry(image, &opts);
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .open("/mapped")
        .expect("open");
    let mode = if atomic {
        novafs::MapMode::Atomic
    } else {
        novafs::MapMode::Sync
    };
    let m = f.map(0, MAP_PAGES * 4096, mode).expect("map");
    let mut out = std::io::stdout().lock();
    let mut n = start;
    loop {
        let slot = n % (MAP_PAGES * 512);
        m.write_at(&map_value(n), slot * 8).expect("store");
        m.persist(slot * 8, 8).expect("persist");
        if atomic {
            if n % 10 == 9 {
                m.sync().expect("sync");
                writeln!(out, "ack {n}").unwrap();
            }
        } else {
            writeln!(out, "ack {n}").unwrap();
        }
        out.flush().unwrap();
        n += 1;
    }
}

fn map_kills(atomic: bool) {
    if let Ok(image) = std::env::var(MAP_CHILD_ENV) {
        let start: u64 = std::env::var("NOVAFS_KILL_CHILD_START")
            .unwrap()
            .parse()
            .unwrap();
        map_child(&image, std::env::var("NOVAFS_KILL_ATOMIC").is_ok(), start);
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("map.img");
    let fs = Fs::format(&img, 32 << 20, &FormatOptions::default()).unwrap();
    fs.create("/mapped")
        .unwrap()
        .set_len(MAP_PAGES * 4096)
        .unwrap();
    fs.unmount().unwrap();
    let test = if atomic {
        "sigkill_mapped_atomic"
    } else {
        "sigkill_mapped_sync"
    };
    // The expected content of every slot, as of the last acknowledged store (or sync).
    let mut expect: Vec<Option<u64>> = vec![None; (MAP_PAGES * 512) as usize];
    let mut next = 0u64;
    let mut seed = 0x1234_5678_9abc_def1u64 ^ atomic as u64;
    let mut caches_recovered = 0;
    for round in 0..40 {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(MAP_CHILD_ENV, &img)
            .env("NOVAFS_KILL_CHILD_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if atomic {
            cmd.env("NOVAFS_KILL_ATOMIC", "1");
        }
        let mut child = cmd.spawn().unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait_acks = 1 + seed % 60;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = None;
        let mut seen = 0;
        while let Some(Ok(line)) = lines.next() {
            if let Some(v) = line.strip_prefix("ack ") {
                acked = Some(v.parse::<u64>().unwrap());
                seen += 1;
                if seen >= wait_acks {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines.map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("ack ") {
                acked = Some(v.parse::<u64>().unwrap());
            }
        }
        let acked = acked.unwrap_or_else(|| panic!("round {round}: nothing acknowledged"));
        for n in next..=acked {
            expect[(n % (MAP_PAGES * 512)) as usize] = Some(n);
        }
        let fs = open_retry(&img, &MountOptions::default());
        caches_recovered += fs.mount_report().caches_recovered;
        let data = fs.read("/mapped").unwrap();
        assert_eq!(data.len() as u64, MAP_PAGES * 4096);
        let slots = MAP_PAGES * 512;
        let bytes = |e: &[Option<u64>]| -> Vec<u8> {
            e.iter()
                .flat_map(|w| w.map_or([0u8; 8], map_value))
                .collect()
        };
        if atomic {
            // Exactly as of the last acknowledged sync, or of the sync in flight if it made it.
            if data == bytes(&expect) {
                next = acked + 1;
            } else {
                let mut after = expect.clone();
                for n in acked + 1..=acked + 10 {
                    after[(n % slots) as usize] = Some(n);
                }
                assert!(
                    data == bytes(&after),
                    "round {round}: the file is neither as of sync {acked} nor of the next one"
                );
                expect = after;
                next = acked + 11;
            }
        } else {
            // Every acknowledged (persisted) store is there; a store persisted but not yet
            // acknowledged may show too. Nothing else.
            let mut redo = acked + 1;
            for slot in 0..slots as usize {
                let got: [u8; 8] = data[slot * 8..slot * 8 + 8].try_into().unwrap();
                let want_bytes = expect[slot].map_or([0u8; 8], map_value);
                if got == want_bytes {
                    continue;
                }
                let later = (acked + 1..acked + 1 + slots)
                    .find(|&k| k % slots == slot as u64 && map_value(k) == got);
                let Some(k) = later else {
                    panic!("round {round}: slot {slot} holds {got:?}, expected {want_bytes:?} (acked {acked})");
                };
                redo = redo.max(k + 1);
                expect[slot] = Some(k);
            }
            // Each store was persisted before the next one began: if a later store shows, so
            // do all before it.
            for n in acked + 1..redo {
                assert_eq!(
                    expect[(n % slots) as usize],
                    Some(n),
                    "round {round}: store {n} missing although a later store persisted"
                );
            }
            next = redo;
        }
        fs.unmount().unwrap();
    }
    assert!(
        caches_recovered > 0,
        "no kill left a write cache to recover"
    );
}

#[test]
fn sigkill_mapped_sync() {
    map_kills(false);
}

#[test]
fn sigkill_mapped_atomic() {
    map_kills(true);
}

const WHOLE_CHILD_ENV: &str = "NOVAFS_KILL_WHOLE_CHILD";

/// Run this test binary's `test` alone as a child, with `env` set to the image path; its
/// stdout is piped.
fn spawn_child(test: &str, env: &str, img: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, img)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The two versions `Fs::write` alternates: 4 MiB and 2 MiB, different bytes.
fn version(v: u64) -> Vec<u8> {
    let len: usize = if v == 0 { 4 << 20 } else { 2 << 20 };
    (0..len)
        .map(|i| ((i / 4096) as u64 * 31 + v * 97 + (i % 251) as u64) as u8)
        .collect()
}

/// The child replaces `/f` with the two versions in turn, and recreates `/g` (remove, then
/// `Fs::write` of a new file) each round, acknowledging every call.
fn whole_child(image: &str) -> ! {
    let fs = open_retry(image, &MountOptions::default());
    let versions = [version(0), version(1)];
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        fs.write("/f", &versions[(n % 2) as usize])
            .expect("write /f");
        match cause(fs.remove_file("/g")) {
            Ok(()) | Err(Error::NotFound) => {}
            Err(e) => panic!("remove /g: {e}"),
        }
        fs.write("/g", &versions[(n % 2) as usize])
            .expect("write /g");
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
    }
    unreachable!()
}

/// `Fs::write` is an atomic replace: a kill at any moment leaves `/f` exactly one whole
/// version (never torn, never empty) and `/g` absent or one whole version (never empty).
#[test]
fn sigkill_whole_file_writes() {
    if let Ok(image) = std::env::var(WHOLE_CHILD_ENV) {
        whole_child(&image);
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("whole.img");
    let versions = [version(0), version(1)];
    let fs = Fs::format(&img, 64 << 20, &FormatOptions::default()).unwrap();
    fs.write("/f", &versions[1]).unwrap();
    fs.unmount().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let (mut torn, mut g_absent) = (Vec::new(), 0);
    const ROUNDS: u32 = 60;
    for round in 0..ROUNDS {
        let mut child = spawn_child("sigkill_whole_file_writes", WHOLE_CHILD_ENV, &img);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acks = 0;
        while acks < 1 + seed % 3 {
            let line = lines.next().expect("child acknowledges").unwrap();
            acks += u64::from(line.starts_with("ack "));
        }
        // Then a random moment inside the next rounds of writes.
        std::thread::sleep(std::time::Duration::from_micros((seed >> 8) % 3000));
        child.kill().unwrap();
        child.wait().unwrap();
        let fs = open_retry(&img, &MountOptions::default());
        let f = fs.read("/f").unwrap();
        if !versions.contains(&f) {
            torn.push(format!("round {round}: /f has {} bytes", f.len()));
        }
        match cause(fs.read("/g")) {
            Ok(g) if versions.contains(&g) => {}
            Ok(g) => torn.push(format!("round {round}: /g has {} bytes", g.len())),
            Err(Error::NotFound) => g_absent += 1,
            Err(e) => panic!("read /g: {e}"),
        }
        fs.unmount().unwrap();
    }
    eprintln!("{ROUNDS} kills, /g absent after {g_absent}");
    assert!(
        torn.is_empty(),
        "{} of {ROUNDS} kills left a torn or empty file: {torn:?}",
        torn.len()
    );
}

const HOLD_CHILD_ENV: &str = "NOVAFS_HOLD_CHILD_IMAGE";

/// A second process that opens a mounted image gets `ImageInUse` naming the holder's pid;
/// once the holder is gone (killed), the image opens.
#[test]
fn image_in_use_names_the_holding_process() {
    if let Ok(image) = std::env::var(HOLD_CHILD_ENV) {
        let _fs = open_retry(&image, &MountOptions::default());
        println!("mounted");
        std::io::stdout().flush().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
        std::process::exit(0);
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("hold.img");
    Fs::format(&img, 4 << 20, &FormatOptions::default())
        .unwrap()
        .unmount()
        .unwrap();
    let mut child = spawn_child(
        "image_in_use_names_the_holding_process",
        HOLD_CHILD_ENV,
        &img,
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !lines
        .next()
        .expect("child mounts")
        .unwrap()
        .ends_with("mounted")
    {}
    let r = Fs::open(&img, &MountOptions::default());
    let holder = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    match cause(r) {
        Err(e @ Error::ImageInUse { pid }) => {
            assert_eq!(pid, Some(holder), "{e}");
            assert!(e.to_string().contains(&format!("process {holder}")), "{e}");
        }
        other => panic!("expected ImageInUse, got {other:?}"),
    }
    open_retry(&img, &MountOptions::default())
        .unmount()
        .unwrap();
}
