//! Recovery and mount times: crash recovery (1 and 2 threads) and clean mount for images of
//! 10,000, 100,000 and 1,000,000 files, and for one 1 GiB file; fsck time of the same images.
//!
//! `cargo bench --bench recovery` (add `-- --quick` to skip the million-file image).
//! Each figure is the median of 5 runs; images live in /dev/shm (emulated pmem), or in
//! `NOVAFS_BENCH_DIR`.

use std::time::{Duration, Instant};

use novafs::{FormatOptions, Fs, MountOptions};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Image {
    name: String,
    path: std::path::PathBuf,
    inodes: u64,
}

fn build_files(dir: &std::path::Path, files: u64, with_data: bool) -> Image {
    let path = dir.join(format!("files-{files}.img"));
    let per_dir = 1000u64;
    let dirs = files.div_ceil(per_dir);
    let size = (256u64 << 20) + files * if with_data { 12 << 10 } else { 1 << 10 };
    let size = size.div_ceil(4096) * 4096;
    let fs = Fs::format(&path, size, &FormatOptions::default()).expect("format");
    let e = fs.engine().clone();
    let payload = [0x5au8; 100];
    let mut made = 0;
    for d in 0..dirs {
        let dir = e
            .mkdir(novafs::ROOT_INO, format!("d{d}").as_bytes(), 0o755, 0, 0)
            .expect("mkdir");
        for f in 0..per_dir.min(files - made) {
            let a = e
                .create(dir.ino, format!("f{f}").as_bytes(), 0o644, 0, 0)
                .expect("create");
            if with_data {
                e.write(a.ino, Some(0), &payload).expect("write");
            }
            made += 1;
        }
    }
    drop(e);
    fs.unmount().expect("unmount");
    Image {
        name: format!(
            "{files} files{}",
            if with_data {
                " (100 B each)"
            } else {
                " (empty)"
            }
        ),
        path,
        inodes: files + dirs + 1,
    }
}

fn build_big(dir: &std::path::Path) -> Image {
    let path = dir.join("big.img");
    let fs = Fs::format(&path, 1280 << 20, &FormatOptions::default()).expect("format");
    let f = fs.create("/big").expect("create");
    let chunk = vec![0xa5u8; 8 << 20];
    for i in 0..128u64 {
        f.write_at(&chunk, i * (8 << 20)).expect("write");
    }
    drop(f);
    fs.unmount().expect("unmount");
    Image {
        name: "one 1 GiB file (128 writes of 8 MiB)".into(),
        path,
        inodes: 2,
    }
}

fn measure(img: &Image) {
    let runs = 5;
    let mut rows = Vec::new();
    for threads in [1usize, 2] {
        let opts = MountOptions {
            recovery_threads: threads,
            ..MountOptions::default()
        };
        let mut times = Vec::new();
        for _ in 0..runs {
            // Leave the image needing recovery, then time the mount that recovers it.
            let fs = Fs::open(&img.path, &MountOptions::default()).expect("open");
            fs.crash();
            let t = Instant::now();
            let fs = Fs::open(&img.path, &opts).expect("recover");
            times.push(t.elapsed());
            assert!(!fs.mount_report().clean);
            assert_eq!(fs.mount_report().inodes_scanned, img.inodes);
            fs.unmount().expect("unmount");
        }
        rows.push((
            format!("crash recovery, {threads} thread(s)"),
            median(times),
        ));
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let fs = Fs::open(&img.path, &MountOptions::default()).expect("open");
        times.push(t.elapsed());
        assert!(fs.mount_report().clean);
        fs.unmount().expect("unmount");
    }
    rows.push(("clean mount".into(), median(times)));
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = novafs_recovery::fsck::check(&img.path, &Default::default()).expect("fsck");
        times.push(t.elapsed());
        assert_eq!(r.errors_found, 0, "fsck found problems: {r:?}");
    }
    rows.push(("fsck -n (full check)".into(), median(times)));
    let size = std::fs::metadata(&img.path).map(|m| m.len()).unwrap_or(0);
    println!(
        "\n{} — {} inodes, image {} MiB",
        img.name,
        img.inodes,
        size >> 20
    );
    for (what, d) in &rows {
        let per_100k = ms(*d) * 100_000.0 / img.inodes as f64;
        println!(
            "  {what:<28} {:>9.2} ms   ({per_100k:.1} ms per 100,000 inodes)",
            ms(*d)
        );
    }
    let fsck = rows[3].1.as_secs_f64();
    println!(
        "  fsck throughput              {:>9.0} MB/s of image, {:.0} inodes/s",
        size as f64 / fsck / 1e6,
        img.inodes as f64 / fsck
    );
    if rows[0].1 > Duration::ZERO {
        println!(
            "  thread scaling (1 -> 2)      {:>9.2}x",
            rows[0].1.as_secs_f64() / rows[1].1.as_secs_f64()
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // NOVAFS_BENCH_DIR: another tmpfs, e.g. one mounted with huge=always (2 MiB pages, as
    // DAX pmem is mapped) to see what 4 KiB page faults cost recovery.
    let base = std::env::var("NOVAFS_BENCH_DIR").unwrap_or_else(|_| "/dev/shm".into());
    let dir = tempfile::tempdir_in(&base).expect("tempdir for the images");
    println!("recovery benchmark (median of 5; images in {base}, emulated pmem)");
    let mut sets: Vec<(u64, bool)> = vec![(10_000, true), (100_000, true)];
    if !quick {
        sets.push((1_000_000, false));
    }
    for (files, data) in sets {
        let t = Instant::now();
        let img = build_files(dir.path(), files, data);
        println!("(built {} in {:.1} s)", img.name, t.elapsed().as_secs_f64());
        measure(&img);
        let _ = std::fs::remove_file(&img.path);
    }
    let img = build_big(dir.path());
    measure(&img);
}
