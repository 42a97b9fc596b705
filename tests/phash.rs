//! The `examples/phash.rs` hash table under kill -9: a child puts and removes keys (each
//! durable and atomic on return: an 8-byte commit store through the mapping + persist) and
//! acknowledges each; the parent SIGKILLs it at random, recovers, and checks the table equals
//! the model after the acknowledged operations, with the one in flight wholly applied or not.

#[allow(dead_code)]
#[path = "../examples/phash.rs"]
mod phash;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use novafs::{EngineError, FormatOptions, Fs, MountOptions};
use phash::Table;

const CHILD_ENV: &str = "NOVAFS_PHASH_CHILD_IMAGE";
const KEYS: u64 = 300;
const ROUNDS: u32 = 40;

fn open_retry(image: impl AsRef<std::path::Path>) -> Fs {
    let t = std::time::Instant::now();
    loop {
        match Fs::open(image.as_ref(), &MountOptions::default())
            .map_err(novafs::Error::into_engine_error)
        {
            Ok(fs) => return fs,
            Err(EngineError::ImageInUse { .. })
                if t.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            Err(e) => panic!("mount: {e}"),
        }
    }
}

fn key(n: u64) -> u64 {
    n.wrapping_mul(7919) % KEYS + 1
}

fn value(n: u64) -> Vec<u8> {
    let len = 1 + (n % phash::MAX_VALUE as u64) as usize;
    (0..len).map(|i| (n as usize * 31 + i) as u8).collect()
}

/// Op `n`: every 5th removes its key, the others put `value(n)`.
fn apply(model: &mut HashMap<u64, Vec<u8>>, n: u64) {
    if n % 5 == 4 {
        model.remove(&key(n));
    } else {
        model.insert(key(n), value(n));
    }
}

fn child(image: &str, start: u64) -> ! {
    let fs = open_retry(image);
    let t = Table::open(&fs, "/table", 1024).unwrap();
    let mut out = std::io::stdout().lock();
    for n in start.. {
        if n >= start + 500 {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        writeln!(out, "begin {n}").unwrap();
        out.flush().unwrap();
        if n % 5 == 4 {
            t.remove(key(n)).unwrap();
        } else {
            t.put(key(n), &value(n)).unwrap();
        }
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
    }
    unreachable!()
}

fn table_state(fs: &Fs) -> HashMap<u64, Vec<u8>> {
    let t = Table::open(fs, "/table", 1024).unwrap();
    (1..=KEYS)
        .filter_map(|k| t.get(k).unwrap().map(|v| (k, v)))
        .collect()
}

#[test]
fn hash_table_survives_sigkill() {
    if let Ok(image) = std::env::var(CHILD_ENV) {
        let start = std::env::var("NOVAFS_PHASH_START")
            .unwrap()
            .parse()
            .unwrap();
        child(&image, start);
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("phash.img");
    let fs = Fs::format(&img, 32 << 20, &FormatOptions::default()).unwrap();
    drop(Table::open(&fs, "/table", 1024).unwrap());
    fs.unmount().unwrap();
    let mut model = HashMap::new();
    let mut next = 0u64;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut inflight_applied = 0;
    for round in 0..ROUNDS {
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args([
                "hash_table_survives_sigkill",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &img)
            .env("NOVAFS_PHASH_START", next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = 1 + seed % 400;
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        let (mut acked, mut seen) = (None, 0);
        while let Some(Ok(l)) = lines.next() {
            if let Some(v) = l.strip_prefix("ack ") {
                acked = Some(v.parse::<u64>().unwrap());
                seen += 1;
                if seen >= wait {
                    break;
                }
            }
        }
        c.kill().unwrap();
        c.wait().unwrap();
        for l in lines.map_while(Result::ok) {
            if let Some(v) = l.strip_prefix("ack ") {
                acked = Some(v.parse::<u64>().unwrap());
            }
        }
        let acked = acked.unwrap_or_else(|| panic!("round {round}: nothing acknowledged"));
        for n in next..=acked {
            apply(&mut model, n);
        }
        let fs = open_retry(&img);
        let got = table_state(&fs);
        let mut with_inflight = model.clone();
        apply(&mut with_inflight, acked + 1);
        if got == with_inflight && got != model {
            inflight_applied += 1;
            model = with_inflight;
            next = acked + 2;
        } else {
            assert!(
                got == model,
                "round {round}: table differs from the acknowledged state (acked {acked}): {} keys vs {}",
                got.len(),
                model.len()
            );
            next = acked + 1;
        }
        drop(fs);
    }
    assert!(!model.is_empty());
    eprintln!("{ROUNDS} kills, in-flight op found applied {inflight_applied} times");
}
