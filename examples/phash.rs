//! A persistent open-addressing hash table living in one mapped novafs file (direct access,
//! DESIGN §5.4.1): loads and stores go straight to the image's pages through the mapping, and
//! every update is made durable by persisting the program's own stores and committed by one
//! failure-atomic 8-byte store.
//!
//! Layout: page 0 is the header (magic, bucket count); then 64-byte buckets, one cache line
//! each: `key` (0 = empty, `u64::MAX` = deleted), `ctl` (bit 63: which value slot is current,
//! bits 0..8: its length), two 24-byte value slots.
//!
//! - Insert: write the value into slot 0 and `ctl`, persist, then store `key` (the commit),
//!   persist. A crash before the commit leaves the bucket empty.
//! - Update: write the value into the slot that is *not* current, persist, then store the new
//!   `ctl` (the commit: flips the slot), persist. A crash leaves the old or the new value.
//! - Delete: store `key = u64::MAX` (the commit), persist.
//!
//! `cargo run --example phash -- /dev/shm/phash.img` (formats the image if needed).

use novafs::{EngineError, Fs, MapMode, Mapping, MountOptions, Result};

/// The table's magic word ("phash-v1").
const MAGIC: u64 = u64::from_le_bytes(*b"phash-v1");
const HEADER: u64 = 4096;
const BUCKET: u64 = 64;
/// The largest value a bucket holds.
pub const MAX_VALUE: usize = 24;
const EMPTY: u64 = 0;
const DELETED: u64 = u64::MAX;

/// A hash table in a mapped file.
pub struct Table {
    map: Mapping,
    buckets: u64,
}

fn hash(k: u64) -> u64 {
    // splitmix64 finaliser
    let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Table {
    /// Open the table in file `path` of `fs`, creating it with `buckets` buckets if absent.
    pub fn open(fs: &Fs, path: &str, buckets: u64) -> Result<Table> {
        let f = fs
            .open_options()
            .read(true)
            .write(true)
            .create(true)
            .open(path)?;
        let fresh = f.metadata()?.is_empty();
        if fresh {
            f.set_len(HEADER + buckets * BUCKET)?;
        }
        let len = f.metadata()?.len();
        let map = f.map(0, len, MapMode::Sync)?;
        // Write access to the whole table once: in MAP_SYNC mode the pages stay writable
        // (migration hands their blocks to the file in place).
        map.prepare_write(0, len)?;
        let s = map.as_slice();
        if fresh {
            s.store_u64(8, buckets)?;
            map.persist(8, 8)?;
            s.store_u64(0, MAGIC)?; // the header's commit
            map.persist(0, 8)?;
        }
        if s.load_u64(0)? != MAGIC {
            return Err(EngineError::InvalidArgument(format!("{path} is not a table")).into());
        }
        let buckets = s.load_u64(8)?;
        if buckets == 0 || HEADER + buckets * BUCKET > len {
            return Err(EngineError::InvalidArgument(format!("{path}: bad bucket count")).into());
        }
        Ok(Table { map, buckets })
    }

    fn at(&self, b: u64) -> usize {
        (HEADER + b * BUCKET) as usize
    }

    /// The bucket holding `key`, or the first free one on its probe sequence.
    fn find(&self, key: u64) -> Result<(Option<u64>, Option<u64>)> {
        let s = self.map.as_slice();
        let mut free = None;
        for i in 0..self.buckets {
            let b = (hash(key) + i) % self.buckets;
            let k = s.load_u64(self.at(b))?;
            if k == key {
                return Ok((Some(b), free));
            }
            if k == DELETED && free.is_none() {
                free = Some(b);
            }
            if k == EMPTY {
                return Ok((None, free.or(Some(b))));
            }
        }
        Ok((None, free))
    }

    /// The value of `key`.
    pub fn get(&self, key: u64) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        let (Some(b), _) = self.find(key)? else {
            return Ok(None);
        };
        let s = self.map.as_slice();
        let at = self.at(b);
        let ctl = s.load_u64(at + 8)?;
        let slot = (ctl >> 63) as usize;
        let len = (ctl & 0xff) as usize;
        let mut v = vec![0u8; len.min(MAX_VALUE)];
        s.read(at + 16 + slot * MAX_VALUE, &mut v)?;
        Ok(Some(v))
    }

    /// Insert or replace `key`'s value: durable and atomic on return.
    pub fn put(&self, key: u64, value: &[u8]) -> Result<()> {
        check_key(key)?;
        if value.len() > MAX_VALUE {
            return Err(EngineError::InvalidArgument(format!(
                "value of {} bytes (at most {MAX_VALUE})",
                value.len()
            ))
            .into());
        }
        let s = self.map.as_slice();
        let m = &self.map;
        match self.find(key)? {
            (Some(b), _) => {
                let at = self.at(b);
                let ctl = s.load_u64(at + 8)?;
                let other = 1 - (ctl >> 63);
                let slot = at + 16 + other as usize * MAX_VALUE;
                s.write(slot, value)?;
                m.persist(slot as u64, value.len() as u64)?;
                s.store_u64(at + 8, other << 63 | value.len() as u64)?; // the commit
                m.persist(at as u64 + 8, 8)
            }
            (None, Some(b)) => {
                let at = self.at(b);
                s.write(at + 16, value)?;
                s.store_u64(at + 8, value.len() as u64)?;
                m.persist(at as u64 + 8, 8 + value.len() as u64)?;
                s.store_u64(at, key)?; // the commit
                m.persist(at as u64, 8)
            }
            (None, None) => Err(EngineError::NoSpace.into()),
        }
    }

    /// Remove `key`; returns whether it was there. Durable on return.
    pub fn remove(&self, key: u64) -> Result<bool> {
        check_key(key)?;
        let (Some(b), _) = self.find(key)? else {
            return Ok(false);
        };
        let at = self.at(b);
        self.map.as_slice().store_u64(at, DELETED)?;
        self.map.persist(at as u64, 8)?;
        Ok(true)
    }
}

fn check_key(key: u64) -> Result<()> {
    if key == EMPTY || key == DELETED {
        return Err(EngineError::InvalidArgument("keys 0 and u64::MAX are reserved".into()).into());
    }
    Ok(())
}

#[allow(dead_code)] // (tests/phash.rs includes this file for `Table`)
fn main() -> Result<()> {
    let img = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/dev/shm/novafs-phash.img".into());
    let fs = Fs::open_or_format(&img, 64 << 20, &MountOptions::default())?;
    let t = Table::open(&fs, "/table", 4096)?;
    let runs = t.get(1)?.map_or(0, |v| {
        u64::from_le_bytes(v[..8].try_into().unwrap_or([0; 8]))
    });
    t.put(1, &(runs + 1).to_le_bytes())?;
    for k in 2..1000u64 {
        t.put(k, format!("value {k}").as_bytes())?;
    }
    t.remove(500)?;
    println!(
        "run {}: key 2 = {:?}, key 500 = {:?}",
        runs + 1,
        t.get(2)?.map(|v| String::from_utf8_lossy(&v).into_owned()),
        t.get(500)?
    );
    drop(t);
    fs.unmount()
}
