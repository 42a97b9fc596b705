//! Instructions per engine operation, for `valgrind --tool=callgrind` (stable on noisy
//! machines, unlike time). Each operation kind runs `N` times inside its own function
//! (`op_write4k`, `op_read4k`, `op_write64`, `op_append` (100 B, a WAL record), `op_create`, `op_rename`, `op_unlink`, `op_setattr`,
//! `op_flip`: one file renamed back and forth in one directory, as the compare bench does), so that
//! callgrind's `--toggle-collect` counts exactly those calls:
//!
//! ```sh
//! cargo build --release -p novafs-tools --example opcount
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*op_write4k*' \
//!     target/release/examples/opcount /dev/shm/opcount.img 2000
//! ```
//! Instructions per operation = the collected total / N. One image per run (overwritten). The
//! paths are built before the counted loops (formatting them is not the engine's work).

use novafs::{FormatOptions, Fs};

#[inline(never)]
fn op_write4k(f: &novafs::File, n: u64, buf: &[u8]) {
    for i in 0..n {
        f.write_at(buf, (i % 64) * 4096).expect("write_at");
    }
}

#[inline(never)]
fn op_write64(f: &novafs::File, n: u64, buf: &[u8]) {
    for i in 0..n {
        f.write_at(&buf[..64], (i % 4096) * 64).expect("write_at");
    }
}

#[inline(never)]
fn op_append(f: &novafs::File, n: u64, rec: &[u8]) {
    for _ in 0..n {
        f.append(rec).expect("append");
    }
}

#[inline(never)]
fn op_read4k(f: &novafs::File, n: u64, buf: &mut [u8]) {
    for i in 0..n {
        f.read_at(buf, (i * 7 % 64) * 4096).expect("read_at");
    }
}

#[inline(never)]
fn op_create(fs: &Fs, names: &Names) {
    for f in &names.f {
        drop(fs.create(f).expect("create"));
    }
}

#[inline(never)]
fn op_rename(fs: &Fs, names: &Names) {
    for (f, g) in names.f.iter().zip(&names.g) {
        fs.rename(f, g).expect("rename");
    }
}

#[inline(never)]
fn op_flip(fs: &Fs, n: u64) {
    for i in 0..n {
        let (a, b) = if i % 2 == 0 {
            ("/d/x", "/d/y")
        } else {
            ("/d/y", "/d/x")
        };
        fs.rename(a, b).expect("rename");
    }
}

#[inline(never)]
fn op_unlink(fs: &Fs, names: &Names) {
    for f in &names.f {
        fs.remove_file(f).expect("unlink");
    }
}

/// The paths the namespace operations use, built before any is counted.
struct Names {
    f: Vec<String>,
    g: Vec<String>,
}

#[inline(never)]
fn op_setattr(f: &novafs::File, n: u64) {
    for i in 0..n {
        f.set_len(4096 * 64 + (i % 2)).expect("set_len");
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let img = args.next().unwrap_or_else(|| "/dev/shm/opcount.img".into());
    let n: u64 = args
        .next()
        .map_or(2000, |s| s.parse().expect("N: a number"));
    let opts = FormatOptions {
        overwrite: true,
        ..FormatOptions::default()
    };
    let fs = Fs::format(&img, 256 << 20, &opts).expect("format");
    fs.create_dir("/d").expect("mkdir");
    let f = fs.create("/file").expect("create");
    let buf = vec![7u8; 4096];
    f.set_len(4096 * 64).expect("set_len");
    op_write4k(&f, n, &buf);
    let mut back = vec![0u8; 4096];
    op_read4k(&fs.open_file("/file").expect("open"), n, &mut back);
    op_write64(&f, n, &buf);
    op_setattr(&f, n);
    let wal = fs
        .open_options()
        .append(true)
        .create(true)
        .open("/wal")
        .expect("create wal");
    op_append(&wal, n, &[0x77u8; 100]);
    drop(wal);
    let names = Names {
        f: (0..n).map(|i| format!("/d/f{i}")).collect(),
        g: (0..n).map(|i| format!("/d/g{i}")).collect(),
    };
    // As the compare bench: the files removed are fresh ones (nothing but the create in
    // their logs); the renamed ones are created again, not counted.
    op_create(&fs, &names);
    op_unlink(&fs, &names);
    for f in &names.f {
        drop(fs.create(f).expect("create"));
    }
    op_rename(&fs, &names);
    fs.write("/d/x", b"x").expect("write");
    fs.rename("/d/x", "/d/y").expect("rename");
    fs.rename("/d/y", "/d/x").expect("rename");
    op_flip(&fs, n);
    drop(f);
    fs.unmount().expect("unmount");
    println!("{n} of each: write4k read4k write64 setattr create rename unlink flip");
}
