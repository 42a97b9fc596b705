//! kill -9 of a process committing redb transactions on a novafs image (`RedbBackend`): a
//! child commits numbered transactions on an image in /dev/shm and prints each one after
//! `commit()` returned; the parent kills it with SIGKILL at a random moment, mounts (novafs
//! recovery), opens the database (redb's own repair when it was not closed) and checks that
//! every acknowledged transaction is there, the one in flight wholly or not at all, and
//! nothing else.

mod cause;
use cause::cause;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use novafs::{EngineError as Error, FormatOptions, Fs, MountOptions, RedbBackend};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const CHILD_ENV: &str = "NOVAFS_REDB_KILL_CHILD_IMAGE";
const START_ENV: &str = "NOVAFS_REDB_KILL_CHILD_START";
const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");
/// Key holding the number of the last committed transaction.
const LAST: u64 = u64::MAX;
const DB: &str = "/kill.redb";
const ROUNDS: u32 = 100;
/// Transactions a child commits at most per round (the image must not fill up).
const PER_ROUND: u64 = 200;

fn value(n: u64) -> Vec<u8> {
    let len = 50 + (n * 37 % 400) as usize;
    (0..len).map(|i| (n as usize * 13 + i * 7) as u8).collect()
}

/// Open, retrying briefly on ImageInUse: between fork and exec a child of another test of
/// this binary may briefly share this process's descriptors (and an image's lock).
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

fn open_db(fs: &Fs) -> Database {
    Database::builder()
        .create_with_backend(RedbBackend::open(fs, DB).unwrap())
        .unwrap()
}

/// Transaction `n`: insert key `n` and set `LAST` to `n`, in one commit.
fn child(image: &str, start: u64) -> ! {
    let fs = open_retry(std::path::Path::new(image));
    let db = open_db(&fs);
    let mut out = std::io::stdout().lock();
    for n in start.. {
        if n >= start + PER_ROUND {
            std::thread::sleep(Duration::from_secs(3600));
        }
        writeln!(out, "begin {n}").unwrap();
        out.flush().unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(T).unwrap();
            t.insert(n, value(n).as_slice()).unwrap();
            t.insert(LAST, n.to_le_bytes().as_slice()).unwrap();
        }
        w.commit().unwrap();
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
    }
    unreachable!()
}

/// Checks the database against "transactions `0..=last` committed, nothing else"; returns
/// `last` (None: no transaction at all).
fn check_db(db: &Database, round: u32) -> Option<u64> {
    let r = db.begin_read().unwrap();
    let t = match r.open_table(T) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return None,
        Err(e) => panic!("round {round}: open table: {e}"),
    };
    let last = t
        .get(LAST)
        .unwrap()
        .map(|v| u64::from_le_bytes(v.value().try_into().unwrap()))?;
    let mut n = 0;
    for e in t.iter().unwrap() {
        let (k, v) = e.unwrap();
        let k = k.value();
        if k == LAST {
            continue;
        }
        assert_eq!(k, n, "round {round}: keys are not 0..={last}");
        assert_eq!(
            v.value(),
            value(k).as_slice(),
            "round {round}: value of {k}"
        );
        n += 1;
    }
    assert_eq!(n, last + 1, "round {round}: LAST is {last} but {n} keys");
    Some(last)
}

#[test]
fn redb_sigkill_keeps_acknowledged_transactions() {
    if let Ok(image) = std::env::var(CHILD_ENV) {
        let start = std::env::var(START_ENV).unwrap().parse().unwrap();
        child(&image, start);
    }
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("redb-kill.img");
    Fs::format(&img, 256 << 20, &FormatOptions::default())
        .unwrap()
        .unmount()
        .unwrap();
    let mut next = 0u64; // the next transaction number
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut recoveries = 0;
    let mut inflight_there = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "redb_sigkill_keeps_acknowledged_transactions",
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
        let wait_acks = 1 + seed % 30;
        // Then a random delay of up to ~1 ms: the kill lands anywhere in a commit.
        let delay = Duration::from_micros((seed >> 20) % 1000);
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
        // Acknowledgements printed before the kill count too.
        for line in lines.map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("ack ") {
                acked = Some(v.parse::<u64>().unwrap());
            }
        }
        let acked = acked.unwrap_or_else(|| panic!("round {round}: child acknowledged nothing"));
        assert!(
            acked >= next,
            "round {round}: ack {acked} before start {next}"
        );

        let fs = open_retry(&img);
        if !fs.mount_report().clean {
            recoveries += 1;
        }
        let db = open_db(&fs);
        let last = check_db(&db, round)
            .unwrap_or_else(|| panic!("round {round}: acknowledged {acked}, database empty"));
        // Every acknowledged transaction, and at most the one in flight beyond.
        assert!(
            last == acked || last == acked + 1,
            "round {round}: acknowledged {acked}, database has 0..={last}"
        );
        if last == acked + 1 {
            inflight_there += 1;
        }
        next = last + 1;
        drop(db);
        fs.unmount().unwrap();
        // Every tenth round: the image is consistent (fsck, read-only).
        if round % 10 == 0 {
            let report = novafs_recovery::fsck::check(&img, &Default::default()).unwrap();
            assert_eq!(report.errors_found, 0, "round {round}: fsck: {report:?}");
        }
    }
    eprintln!(
        "{ROUNDS} kills, {recoveries} novafs recoveries, {next} transactions, \
         {inflight_there} in-flight transactions found committed"
    );
    assert!(recoveries > ROUNDS / 2, "too few kills needed recovery");
    assert!(next > ROUNDS as u64, "the children did too little work");
}
