//! Instructions of direct access's fast paths, for `valgrind --tool=callgrind` (the timing of
//! `benches/direct.rs` swings by 2x either way on this shared 2-core VM, instruction counts do
//! not). Each path runs `N` times inside its own function, so `--toggle-collect` counts
//! exactly those calls:
//! - `op_persist`: a 64 B store through a mapping's addresses (`VolatileSlice::write`) +
//!   `Mapping::persist(off, 64)` into a prepared page;
//! - `op_raw`: the raw equivalent on a plain region: `Media::write` of 64 B + `Media::flush` +
//!   `Media::fence`;
//! - `op_first1` / `op_first64` / `op_first512`: `prepare_write` of 1, 64 or 512 clean pages
//!   and a 64 B store into each (user-space instructions only: the system calls' kernel work
//!   is not counted, which is what the bench's syscall row measures);
//! - `op_nt4k`: the raw 4 KiB non-temporal copy + fence.
//!
//! ```sh
//! cargo build --release -p novafs-tools --example directcount
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*op_persist*' \
//!     target/release/examples/directcount /dev/shm/dc 1000
//! ```
//! Instructions per operation = the collected total / N (first-store ops: / pages).

use std::hint::black_box;

use novafs::{FormatOptions, Fs, MapMode, Mapping};
use novafs_engine::media::{MapOptions, Media};

const PAGE: u64 = 4096;

#[inline(never)]
fn op_persist(m: &Mapping, n: u64) {
    let s = m.as_slice();
    let line = [0xa5u8; 64];
    for i in 0..n {
        let off = (i % 64) * PAGE + (i % 61) * 64;
        s.write(off as usize, black_box(&line)).expect("store");
        m.persist(off, 64).expect("persist");
    }
}

#[inline(never)]
fn op_raw(raw: &Media, n: u64) {
    let line = [0xa5u8; 64];
    for i in 0..n {
        let off = (i % 64) * PAGE + (i % 61) * 64;
        raw.write(off, black_box(&line)).expect("write");
        raw.flush(off, 64).expect("flush");
        raw.fence();
    }
}

#[inline(never)]
fn op_nt4k(raw: &Media, n: u64) {
    let page = vec![0x5au8; PAGE as usize];
    for i in 0..n {
        raw.write_nt((i % 64) * PAGE, black_box(&page)).expect("nt");
        raw.fence();
    }
}

fn first(m: &Mapping, base: u64, per: u64, total: u64) {
    let s = m.as_slice();
    let line = [0xa5u8; 64];
    for r in 0..total / per {
        let off = (base + r * per) * PAGE;
        m.prepare_write(off, per * PAGE).expect("prepare");
        for p in 0..per {
            s.write((off + p * PAGE) as usize, black_box(&line))
                .expect("store");
        }
    }
}

#[inline(never)]
fn op_first1(m: &Mapping, base: u64, total: u64) {
    first(m, base, 1, total)
}

#[inline(never)]
fn op_first64(m: &Mapping, base: u64, total: u64) {
    first(m, base, 64, total)
}

#[inline(never)]
fn op_first512(m: &Mapping, base: u64, total: u64) {
    first(m, base, 512, total)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "/dev/shm/dc".into()));
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    std::fs::create_dir_all(&dir).expect("dir");
    let raw =
        Media::create(&dir.join("raw.img"), 64 << 20, true, &MapOptions::default()).expect("raw");
    let img = dir.join("dc.img");
    let fs = Fs::format(&img, 256 << 20, &FormatOptions::default()).expect("format");
    let f = fs
        .open_options()
        .read(true)
        .write(true)
        .create(true)
        .open("/f")
        .expect("open");
    let pages = 64 + 3 * 1024;
    f.set_len(pages * PAGE).expect("set_len");
    f.write_at(&vec![1u8; (pages * PAGE) as usize], 0)
        .expect("fill");
    let m = f.map(0, pages * PAGE, MapMode::Sync).expect("map");
    m.prepare_write(0, 64 * PAGE).expect("prepare");
    op_persist(&m, n);
    op_raw(&raw, n);
    op_nt4k(&raw, n);
    op_first1(&m, 64, 512);
    op_first64(&m, 64 + 1024, 1024);
    op_first512(&m, 64 + 2048, 1024);
    drop(m);
    drop(f);
    fs.unmount().expect("unmount");
    let _ = std::fs::remove_dir_all(&dir);
}
