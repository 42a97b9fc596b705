//! A write-ahead log with checkpoints, written against novafs's public API: a small durable
//! key-value store. `cargo run --example wal` runs a demo (puts, a checkpoint, more puts, a
//! simulated crash, recovery); `tests/wal.rs` runs the same code under engine crashes and
//! kill -9.
//!
//! # Layout (in one directory of the image)
//! - `log.N`: the log of generation N, a sequence of records `[len u32 LE][key len u32 LE]
//!   [key][value]`, one record per `put`.
//! - `checkpoint`: a snapshot of the whole map, `["WALCKPT1"][gen u64 LE][count u64 LE]` then
//!   `count` × `[key len u32][key][value len u32][value]`. It holds every record of the logs
//!   older than `gen`; recovery replays the logs `gen, gen+1, ...` on top of it.
//! - `checkpoint.tmp`: a snapshot being written (ignored and removed by recovery).
//!
//! # Durability story
//! Everything rests on two novafs guarantees: **every `write_at`/`append` is atomic and
//! durable when it returns** (one log commit: the new bytes and the new size become visible
//! together, by one 8-byte store, after the data was made durable), and **every namespace
//! operation (`create`, `rename`, `remove_file`) is atomic and durable when it returns**.
//! So there is no fsync anywhere below, and no checksum per record: a crash can never leave a
//! half-written record at the end of a log, only whole records (what a disk-file WAL protects
//! against with a CRC per record and an fsync per commit).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use novafs::{File, Fs};

const MAGIC: &[u8; 8] = b"WALCKPT1";

/// The store: the map in DRAM, the current log open for appending.
pub struct Wal {
    fs: Fs,
    dir: PathBuf,
    /// Generation of the log that `put` appends to.
    gen: u64,
    log: File,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads a `u32 LE` length and that many bytes at `*at` (bounds-checked: bad input is an
/// error, never a panic).
fn take<'a>(buf: &'a [u8], at: &mut usize, what: &str) -> io::Result<&'a [u8]> {
    let len_end = at
        .checked_add(4)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| corrupt(format!("{what}: truncated length at {at}")))?;
    let len = u32::from_le_bytes(buf[*at..len_end].try_into().expect("4 bytes")) as usize;
    let end = len_end
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| corrupt(format!("{what}: {len} bytes at {len_end} past the end")))?;
    *at = end;
    Ok(&buf[len_end..end])
}

fn put_len(out: &mut Vec<u8>, len: usize) -> io::Result<()> {
    let len = u32::try_from(len).map_err(|_| corrupt(format!("{len} bytes is too long")))?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Encodes one log record.
fn record(key: &[u8], value: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(4 + key.len() + value.len());
    put_len(&mut body, key.len())?;
    body.extend_from_slice(key);
    body.extend_from_slice(value);
    let mut out = Vec::with_capacity(4 + body.len());
    put_len(&mut out, body.len())?;
    out.extend_from_slice(&body);
    Ok(out)
}

impl Wal {
    fn log_path(&self, gen: u64) -> PathBuf {
        self.dir.join(format!("log.{gen}"))
    }

    /// Opens the store in `dir` (created if missing), recovering it: load the checkpoint,
    /// replay the logs it does not cover, remove what an interrupted checkpoint left.
    ///
    /// After a crash, this finds exactly the puts that returned before it (and the one in
    /// flight if its append's commit made it: wholly, never a prefix), in order.
    pub fn open(fs: &Fs, dir: impl AsRef<Path>) -> io::Result<Wal> {
        let dir = dir.as_ref().to_path_buf();
        // Each directory created is durable on return; a crash may leave only some of the
        // parents, which the next open creates.
        fs.create_dir_all(&dir)?;
        let mut map = BTreeMap::new();
        let mut base = 0;
        // The checkpoint is either absent or a complete snapshot: it only ever appears by a
        // rename of a file whose contents were durable before the rename (see `checkpoint`).
        match fs.read(dir.join("checkpoint")).map_err(io::Error::from) {
            Ok(buf) => {
                if buf.len() < 24 || &buf[..8] != MAGIC {
                    return Err(corrupt("checkpoint: bad header".into()));
                }
                base = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
                let count = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
                let mut at = 24;
                for _ in 0..count {
                    let k = take(&buf, &mut at, "checkpoint key")?.to_vec();
                    let v = take(&buf, &mut at, "checkpoint value")?.to_vec();
                    map.insert(k, v);
                }
                if at != buf.len() {
                    return Err(corrupt("checkpoint: trailing bytes".into()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // The logs: those older than the checkpoint's generation are covered by it (a crash
        // after the checkpoint's rename and before their removal left them): remove them.
        let mut gens = Vec::new();
        for ent in fs.read_dir(&dir)? {
            let ent = ent?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name == "checkpoint.tmp" {
                // An unfinished checkpoint: never renamed, so never part of the state.
                fs.remove_file(ent.path())?;
            } else if let Some(g) = name.strip_prefix("log.").and_then(|g| g.parse().ok()) {
                if g < base {
                    fs.remove_file(ent.path())?;
                } else {
                    gens.push(g);
                }
            }
        }
        gens.sort_unstable();
        for &g in &gens {
            // Each log holds whole records only: an append is one atomic commit.
            let buf = fs.read(dir.join(format!("log.{g}")))?;
            let mut at = 0;
            while at < buf.len() {
                let body = take(&buf, &mut at, "log record")?;
                let mut k_at = 0;
                let k = take(body, &mut k_at, "log record key")?;
                map.insert(k.to_vec(), body[k_at..].to_vec());
            }
        }
        let gen = gens.last().copied().unwrap_or(base);
        // The log to append to: created if missing (durable on return). Append mode: every
        // write lands at the end of the file in one atomic commit.
        let log = fs
            .open_options()
            .read(true)
            .append(true)
            .create(true)
            .open(dir.join(format!("log.{gen}")))?;
        let mut wal = Wal {
            fs: fs.clone(),
            dir,
            gen,
            log,
            map,
        };
        // More than one log: a checkpoint was interrupted after it started a new log. Fold
        // them now, so that logs never pile up over repeated crashes in that window.
        if gens.len() > 1 {
            wal.checkpoint()?;
        }
        Ok(wal)
    }

    /// Sets `key` to `value`. **Durable when it returns**: the record is one `append`, one
    /// atomic novafs commit (the record's bytes, then the file's new size and the log entry
    /// that maps them, by one 8-byte tail store). A crash before that store leaves the log as
    /// it was; after it, the whole record is there. No fsync, no per-record checksum.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let rec = record(key, value)?;
        self.log.append(&rec)?;
        self.map.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// The whole map.
    pub fn map(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.map
    }

    /// The generation of the log `put` appends to.
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// Writes a snapshot and drops the logs it covers. Each step is durable when it returns;
    /// what a crash after each step leaves, and what recovery makes of it:
    pub fn checkpoint(&mut self) -> io::Result<()> {
        let new_gen = self.gen + 1;
        // 1. A new, empty log: puts from now on go there. Crash after: the old checkpoint
        //    still names an older generation, recovery replays the old logs and this empty
        //    one; nothing is lost or doubled.
        let new_log = self
            .fs
            .open_options()
            .read(true)
            .append(true)
            .create_new(true)
            .open(self.log_path(new_gen))?;
        self.log = new_log;
        self.gen = new_gen;
        // 2. The snapshot of everything in the logs older than `new_gen`, into a temporary
        //    file: one `write_at`, so the file holds all of it once the call returns (on a disk
        //    file system this is where an fsync of the file would be needed). Crash after:
        //    recovery removes `checkpoint.tmp` and goes on as in 1.
        let mut snap = Vec::with_capacity(24 + self.map.len() * 32);
        snap.extend_from_slice(MAGIC);
        snap.extend_from_slice(&new_gen.to_le_bytes());
        snap.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        for (k, v) in &self.map {
            put_len(&mut snap, k.len())?;
            snap.extend_from_slice(k);
            put_len(&mut snap, v.len())?;
            snap.extend_from_slice(v);
        }
        let tmp = self.dir.join("checkpoint.tmp");
        let f = self.fs.create(&tmp)?;
        f.write_at(&snap, 0)?;
        drop(f);
        // 3. The commit point: the rename replaces the old checkpoint atomically and durably
        //    (no fsync of the directory needed). Crash before: the old checkpoint and all
        //    logs; after: the new one, which makes the old logs redundant.
        self.fs.rename(&tmp, self.dir.join("checkpoint"))?;
        // 4. Drop the logs the checkpoint covers. Crash in between: recovery removes those
        //    left over (their generation is below the checkpoint's).
        for ent in self.fs.read_dir(&self.dir)? {
            let ent = ent?;
            let name = ent.file_name();
            if let Some(g) = name
                .to_string_lossy()
                .strip_prefix("log.")
                .and_then(|g| g.parse::<u64>().ok())
            {
                if g < new_gen {
                    self.fs.remove_file(ent.path())?;
                }
            }
        }
        Ok(())
    }
}

/// The demo: `cargo run --example wal [IMAGE]` (default: a fresh image in /dev/shm, removed at
/// the end).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use novafs::{FormatOptions, MountOptions};
    let (image, keep) = match std::env::args_os().nth(1) {
        Some(p) => (PathBuf::from(p), true),
        None => {
            let dir = if Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            };
            let p = dir.join(format!("novafs-wal-example-{}.img", std::process::id()));
            let _ = std::fs::remove_file(&p);
            (p, false)
        }
    };
    let fs = if image.exists() {
        Fs::open(&image, &MountOptions::default())?
    } else {
        Fs::format(&image, 64 << 20, &FormatOptions::default())?
    };
    println!("image {} ({:?})", image.display(), fs.media_mode());
    let mut wal = Wal::open(&fs, "/kv")?;
    println!(
        "recovered {} keys, log generation {}",
        wal.map().len(),
        wal.generation()
    );
    for i in 0..1000u32 {
        wal.put(format!("key{}", i % 100).as_bytes(), &i.to_le_bytes())?;
        if i % 400 == 399 {
            wal.checkpoint()?;
        }
    }
    let expect = wal.map().clone();
    println!(
        "1000 puts, 2 checkpoints: {} keys, generation {}",
        expect.len(),
        wal.generation()
    );
    // Simulate a crash: no unmount, no close; the next mount runs recovery.
    drop(wal);
    fs.crash();
    let fs = Fs::open(&image, &MountOptions::default())?;
    let wal = Wal::open(&fs, "/kv")?;
    println!(
        "after a crash: mount clean = {}, {} keys, every put there: {}",
        fs.mount_report().clean,
        wal.map().len(),
        wal.map() == &expect
    );
    if wal.map() != &expect {
        return Err("recovery lost puts".into());
    }
    drop(wal);
    fs.unmount()?;
    if !keep {
        std::fs::remove_file(&image)?;
    }
    Ok(())
}
