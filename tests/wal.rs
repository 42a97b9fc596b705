//! `examples/wal.rs` (a WAL + checkpoint-by-rename store on the public API) under engine
//! crashes, the states an interrupted checkpoint leaves, bad input, and kill -9.

#[path = "../examples/wal.rs"]
#[expect(dead_code, reason = "the example's main is not called here")]
mod wal;

mod cause;
use cause::cause;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use novafs::{EngineError as Error, FormatOptions, Fs, MountOptions};
use wal::Wal;

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

fn key(n: u64) -> Vec<u8> {
    format!("key{}", n % 50).into_bytes()
}

fn value(n: u64) -> Vec<u8> {
    let len = 1 + (n * 29 % 200) as usize;
    (0..len).map(|i| (n as usize * 11 + i) as u8).collect()
}

/// The map after puts `0..n`.
fn model(n: u64) -> Map {
    (0..n).map(|i| (key(i), value(i))).collect()
}

fn image(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let img = dir.path().join("wal.img");
    Fs::format(&img, 64 << 20, &FormatOptions::default())
        .unwrap()
        .unmount()
        .unwrap();
    img
}

fn log_count(fs: &Fs) -> usize {
    fs.read_dir("/wal")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("log.")
        })
        .count()
}

#[test]
fn puts_survive_engine_crashes_and_checkpoints() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = image(&dir);
    let mut fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let mut wal = Wal::open(&fs, "/wal").unwrap();
    let mut checkpoints = 0;
    for n in 0..400u64 {
        wal.put(&key(n), &value(n)).unwrap();
        if n % 37 == 36 {
            wal.checkpoint().unwrap();
            checkpoints += 1;
            // The checkpoint dropped the logs it covers.
            assert_eq!(log_count(&fs), 1);
        }
        if n % 50 == 49 {
            drop(wal);
            fs.crash();
            fs = Fs::open(&img, &MountOptions::default()).unwrap();
            assert!(!fs.mount_report().clean);
            wal = Wal::open(&fs, "/wal").unwrap();
            assert_eq!(wal.map(), &model(n + 1), "after crash at put {n}");
        }
    }
    assert_eq!(wal.generation(), checkpoints);
    drop(wal);
    fs.unmount().unwrap();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert_eq!(Wal::open(&fs, "/wal").unwrap().map(), &model(400));
}

/// The states a crash inside `checkpoint` can leave, built by hand, then a crash: recovery
/// gives the same map in each.
#[test]
fn interrupted_checkpoint_states_recover() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = image(&dir);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let mut wal = Wal::open(&fs, "/wal").unwrap();
    for n in 0..30 {
        wal.put(&key(n), &value(n)).unwrap();
    }
    wal.checkpoint().unwrap(); // checkpoint of generation 1
    for n in 30..60 {
        wal.put(&key(n), &value(n)).unwrap();
    }
    drop(wal);
    // After step 1 of the next checkpoint: a new empty log.
    fs.create("/wal/log.2").unwrap();
    // After step 2: a complete snapshot that was never renamed (claims generation 2 and a
    // wrong map: if recovery used it, the map would be wrong).
    let mut bogus = b"WALCKPT1".to_vec();
    bogus.extend_from_slice(&2u64.to_le_bytes());
    bogus.extend_from_slice(&0u64.to_le_bytes());
    fs.write("/wal/checkpoint.tmp", &bogus).unwrap();
    // After step 3 with step 4 not done: a log older than the checkpoint, with a record that
    // would change the map if it were replayed.
    let f = fs.create("/wal/log.0").unwrap();
    f.write_at(&[9, 0, 0, 0, 5, 0, 0, 0, b'k', b'e', b'y', b'0', b'0'], 0)
        .unwrap();
    drop(f);
    fs.crash();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let mut wal = Wal::open(&fs, "/wal").unwrap();
    assert_eq!(wal.map(), &model(60));
    // Two logs (1 and the interrupted checkpoint's 2): open folded them by a checkpoint of
    // its own, so that logs never pile up over repeated crashes in that window (the kill
    // test found three after two such crashes in a row).
    assert_eq!(wal.generation(), 3, "puts go to a fresh log after the fold");
    assert_eq!(log_count(&fs), 1);
    // Recovery removed what the interrupted checkpoint left.
    assert!(!fs.exists("/wal/checkpoint.tmp"));
    assert!(!fs.exists("/wal/log.0"));
    wal.put(&key(60), &value(60)).unwrap();
    wal.checkpoint().unwrap();
    assert_eq!(log_count(&fs), 1);
    drop(wal);
    fs.unmount().unwrap();
}

/// A damaged log or checkpoint is an `InvalidData` error, never a panic.
#[test]
fn damaged_files_are_errors() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = image(&dir);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    fs.create_dir("/bad").unwrap();
    // A record whose length runs past the end.
    fs.write("/bad/log.0", &[200, 0, 0, 0, 1, 0]).unwrap();
    let e = Wal::open(&fs, "/bad").err().expect("damaged log refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    // A length field cut short.
    fs.write("/bad/log.0", &[1, 0]).unwrap();
    assert!(Wal::open(&fs, "/bad").is_err());
    // A record whose key length is past the record.
    fs.write("/bad/log.0", &[4, 0, 0, 0, 255, 255, 255, 255])
        .unwrap();
    assert!(Wal::open(&fs, "/bad").is_err());
    fs.remove_file("/bad/log.0").unwrap();
    // A checkpoint with a bad header, then with a count beyond its entries.
    fs.write("/bad/checkpoint", b"nonsense").unwrap();
    assert!(Wal::open(&fs, "/bad").is_err());
    let mut c = b"WALCKPT1".to_vec();
    c.extend_from_slice(&0u64.to_le_bytes());
    c.extend_from_slice(&u64::MAX.to_le_bytes());
    fs.write("/bad/checkpoint", &c).unwrap();
    assert!(Wal::open(&fs, "/bad").is_err());
    fs.unmount().unwrap();
}

const CHILD_ENV: &str = "NOVAFS_WAL_KILL_CHILD_IMAGE";
const START_ENV: &str = "NOVAFS_WAL_KILL_CHILD_START";
const ROUNDS: u32 = 60;

fn open_retry(image: &std::path::Path) -> Fs {
    let t = Instant::now();
    loop {
        match cause(Fs::open(image, &MountOptions::default())) {
            Ok(fs) => return fs,
            Err(Error::ImageInUse { .. }) if t.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("mount: {e}"),
        }
    }
}

/// The child: recover, then puts from `start` on, a checkpoint every 16 puts; "ack N" after
/// put N returned.
fn child(image: &str, start: u64) -> ! {
    let fs = open_retry(std::path::Path::new(image));
    let mut wal = Wal::open(&fs, "/wal").unwrap();
    assert_eq!(wal.map(), &model(start), "child: recovered state");
    let mut out = std::io::stdout().lock();
    for n in start..start + 400 {
        wal.put(&key(n), &value(n)).unwrap();
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
        if n % 16 == 15 {
            wal.checkpoint().unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(3600));
    unreachable!()
}

#[test]
fn wal_sigkill_keeps_acknowledged_puts() {
    if let Ok(image) = std::env::var(CHILD_ENV) {
        let start = std::env::var(START_ENV).unwrap().parse().unwrap();
        child(&image, start);
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = image(&dir);
    let mut next = 0u64;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut inflight_there = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "wal_sigkill_keeps_acknowledged_puts",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &img)
            .env(START_ENV, next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait_acks = 1 + seed % 60;
        let delay = Duration::from_micros((seed >> 20) % 300);
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
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        for line in lines.map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("ack ") {
                acked = Some(v.parse::<u64>().unwrap());
            }
        }
        let acked = acked.unwrap_or_else(|| panic!("round {round}: child acknowledged nothing"));
        let fs = open_retry(&img);
        let wal = Wal::open(&fs, "/wal").unwrap();
        // Every acknowledged put; the one in flight wholly or not at all.
        if wal.map() == &model(acked + 1) {
            next = acked + 1;
        } else if wal.map() == &model(acked + 2) {
            next = acked + 2;
            inflight_there += 1;
        } else {
            panic!("round {round}: acknowledged {acked}, recovered map matches neither");
        }
        assert!(log_count(&fs) <= 2, "round {round}: old logs left behind");
        drop(wal);
        fs.unmount().unwrap();
    }
    eprintln!("{ROUNDS} kills, {next} puts, {inflight_there} in-flight puts found done");
    assert!(next > ROUNDS as u64, "the children did too little work");
}
