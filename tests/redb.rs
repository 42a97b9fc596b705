//! redb on a novafs file (`RedbBackend`, feature `redb`): transactions survive unmount, an
//! engine crash with the database open, and remount after remount.

use std::collections::BTreeMap;

use novafs::{FormatOptions, Fs, MountOptions, RedbBackend};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");
const DB: &str = "/db/main.redb";

fn value(tx: u64, k: u64) -> Vec<u8> {
    let len = 1 + ((tx * 31 + k * 17) % 300) as usize;
    (0..len)
        .map(|i| (tx as usize * 7 + k as usize + i) as u8)
        .collect()
}

/// Transaction `tx` inserts keys `tx*10 .. tx*10+4` and removes key `(tx-3)*10` (written by
/// an earlier transaction): updates and deletes, not only inserts.
fn commit(db: &Database, model: &mut BTreeMap<u64, Vec<u8>>, tx: u64) {
    let w = db.begin_write().unwrap();
    {
        let mut t = w.open_table(T).unwrap();
        for k in 0..5 {
            let key = tx * 10 + k;
            t.insert(key, value(tx, k).as_slice()).unwrap();
            model.insert(key, value(tx, k));
        }
        if tx >= 3 {
            t.remove((tx - 3) * 10).unwrap();
            model.remove(&((tx - 3) * 10));
        }
    }
    w.commit().unwrap();
}

fn check(db: &Database, model: &BTreeMap<u64, Vec<u8>>) {
    let r = db.begin_read().unwrap();
    let t = r.open_table(T).unwrap();
    assert_eq!(t.len().unwrap(), model.len() as u64);
    let got: BTreeMap<u64, Vec<u8>> = t
        .iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect();
    assert_eq!(&got, model);
}

fn open_db(fs: &Fs) -> Database {
    Database::builder()
        .create_with_backend(RedbBackend::open(fs, DB).unwrap())
        .unwrap()
}

#[test]
fn transactions_survive_unmount_and_engine_crash() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("redb.img");
    let fs = Fs::format(&img, 256 << 20, &FormatOptions::default()).unwrap();
    fs.create_dir("/db").unwrap();
    let mut model = BTreeMap::new();
    let db = open_db(&fs);
    for tx in 0..40 {
        commit(&db, &mut model, tx);
    }
    check(&db, &model);
    drop(db);
    fs.unmount().unwrap();

    // Clean remount: every transaction, and redb opens without repair.
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert!(fs.mount_report().clean);
    let db = open_db(&fs);
    check(&db, &model);
    for tx in 40..80 {
        commit(&db, &mut model, tx);
    }
    // An uncommitted transaction in flight when the engine stops: never seen.
    let w = db.begin_write().unwrap();
    w.open_table(T)
        .unwrap()
        .insert(u64::MAX, b"never".as_slice())
        .unwrap();
    // Crash with the database open: redb never closed it, novafs never unmounted.
    fs.crash();
    drop(w);
    // The database's own shutdown writes now fail (Unmounted) and reach nothing.
    drop(db);

    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    assert!(!fs.mount_report().clean, "the crash left an unclean image");
    let db = open_db(&fs);
    check(&db, &model);
    for tx in 80..100 {
        commit(&db, &mut model, tx);
    }
    check(&db, &model);
    // Crash again right after commits, then mount twice (recovery, then a clean cycle).
    fs.crash();
    drop(db);
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let db = open_db(&fs);
    check(&db, &model);
    drop(db);
    fs.unmount().unwrap();
    let fs = Fs::open(&img, &MountOptions::default()).unwrap();
    let db = open_db(&fs);
    check(&db, &model);
    drop(db);
    fs.unmount().unwrap();
}

#[test]
fn backend_contract() {
    use redb::StorageBackend;
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let img = dir.path().join("contract.img");
    let fs = Fs::format(&img, 16 << 20, &FormatOptions::default()).unwrap();
    let b = RedbBackend::open(&fs, "/f").unwrap();
    assert_eq!(b.len().unwrap(), 0);
    b.set_len(10_000).unwrap();
    assert_eq!(b.len().unwrap(), 10_000);
    // New positions read as zeros.
    let mut buf = vec![1u8; 100];
    b.read(9_900, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    b.write(5, b"hello").unwrap();
    let mut buf = [0u8; 5];
    b.read(5, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    // A read past the end is an error, as redb requires.
    let mut buf = [0u8; 10];
    let e = b.read(9_995, &mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    b.sync_data().unwrap();
    // Unmounted: every call fails, sync_data included (no acknowledgement after unmount).
    fs.unmount().unwrap();
    assert!(b.sync_data().is_err());
    assert!(b.write(0, b"x").is_err());
    assert!(b.len().is_err());
}
