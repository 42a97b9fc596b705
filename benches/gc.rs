//! Log GC soak: one million 4 KiB overwrites of one file, one million create+unlink pairs in one
//! directory, 10,000 renames back and forth. For each: log pages of the inodes involved before,
//! at most during, and after; throughput of the first 10% of the operations against the last
//! 10% (medians of per-1% slices); GC runs and pause times; fsck at the end.
//!
//! `cargo bench --bench gc` (`-- --quick` for a tenth of the operations). The throughput ratio
//! is measured, not asserted: speed is checked here, never in timed tests.

use std::time::Instant;

use novafs::{FormatOptions, Fs, MountOptions};
use novafs_recovery::fsck::{self, FsckOptions};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn log_pages(fs: &Fs, p: &str) -> u64 {
    let ino = fs.resolve(p).expect("path");
    fs.engine().log_stats(ino).expect("inode").pages
}

struct Soak {
    name: &'static str,
    ops: u64,
    pages_before: u64,
    pages_max: u64,
    pages_after: u64,
    first_vs_last: f64,
    ops_per_sec: f64,
}

/// Run `n` operations in 100 slices; watch `watch`'s log pages after each operation.
fn soak(fs: &Fs, name: &'static str, n: u64, watch: &[&str], mut op: impl FnMut(u64)) -> Soak {
    let pages = |fs: &Fs| watch.iter().map(|p| log_pages(fs, p)).sum::<u64>();
    let pages_before = pages(fs);
    let mut pages_max = pages_before;
    let slice = (n / 100).max(1);
    let mut rates = Vec::new();
    let t_all = Instant::now();
    let mut i = 0;
    while i < n {
        let t = Instant::now();
        let end = (i + slice).min(n);
        for j in i..end {
            op(j);
            if j % 64 == 0 {
                pages_max = pages_max.max(pages(fs));
            }
        }
        rates.push((end - i) as f64 / t.elapsed().as_secs_f64());
        i = end;
    }
    let secs = t_all.elapsed().as_secs_f64();
    let tenth = (rates.len() / 10).max(1);
    let first = median(rates[..tenth].to_vec());
    let last = median(rates[rates.len() - tenth..].to_vec());
    Soak {
        name,
        ops: n,
        pages_before,
        pages_max,
        pages_after: pages(fs),
        first_vs_last: last / first,
        ops_per_sec: n as f64 / secs,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm");
    let img = dir.path().join("soak.img");
    let fs = Fs::format(&img, 1 << 30, &FormatOptions::default()).expect("format");
    let page = vec![0x5au8; 4096];
    let mut results = Vec::new();

    let f = fs.create("/f").expect("create");
    results.push(soak(
        &fs,
        "4 KiB overwrites of one file",
        1_000_000 / scale,
        &["/f"],
        |i| {
            f.write_at(&page, (i % 4) * 4096).expect("write");
        },
    ));
    drop(f);

    fs.create_dir("/d").expect("mkdir");
    fs.write("/d/keep", b"kept").expect("write");
    results.push(soak(
        &fs,
        "create+unlink pairs in one dir",
        1_000_000 / scale,
        &["/d"],
        |i| {
            let p = format!("/d/t{}", i % 1000);
            fs.create(&p).expect("create");
            fs.remove_file(&p).expect("unlink");
        },
    ));

    fs.create_dir("/a").expect("mkdir");
    fs.create_dir("/b").expect("mkdir");
    fs.write("/a/x", b"moving").expect("write");
    let watch = ["/a", "/b", "/a/x"];
    results.push(soak(
        &fs,
        "renames back and forth",
        10_000,
        &watch[..2],
        |i| {
            if i % 2 == 0 {
                fs.rename("/a/x", "/b/x").expect("rename");
            } else {
                fs.rename("/b/x", "/a/x").expect("rename");
            }
        },
    ));
    let moved = log_pages(&fs, "/a/x");

    // The pause of one big compaction: a 64 MiB file overwritten at random, so that every page
    // is its own extent (16,384 entries needed), compacted on demand.
    let big = fs.create("/big").expect("create");
    let pages = 16_384u64;
    for i in 0..3 * pages {
        big.write_at(&page, (i.wrapping_mul(7919) % pages) * 4096)
            .expect("write");
    }
    let ino = big.ino();
    let before = fs.engine().log_stats(ino).expect("stats");
    let t = Instant::now();
    let ran = fs.engine().gc_inode(ino).expect("gc");
    let big_pause = t.elapsed();
    let after = fs.engine().log_stats(ino).expect("stats");
    drop(big);

    let gc = fs.engine().gc_stats();
    fs.unmount().expect("unmount");
    let report = fsck::check(&img, &FsckOptions::default()).expect("fsck");
    let fs = Fs::open(&img, &MountOptions::default()).expect("mount");
    assert_eq!(fs.read("/a/x").expect("read"), b"moving");
    drop(fs);

    println!(
        "| soak | ops | log pages before | max during | after | ops/s | last 10% / first 10% |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} |",
            r.name,
            r.ops,
            r.pages_before,
            r.pages_max,
            r.pages_after,
            r.ops_per_sec,
            r.first_vs_last
        );
    }
    println!("(the renamed file's own log: {moved} page(s) at the end)");
    println!(
        "compaction of a 64 MiB file written at random: {} entries in {} pages -> {} entries in {} pages, {:.2} ms with the inode locked (ran: {ran})",
        before.entries,
        before.pages,
        after.entries,
        after.pages,
        big_pause.as_secs_f64() * 1000.0
    );
    let mean_pause = if gc.thorough_runs > 0 {
        gc.total_pause_ns as f64 / gc.thorough_runs as f64 / 1000.0
    } else {
        0.0
    };
    println!(
        "GC: fast {} runs freeing {} pages; compactions {} (freed {} pages, wrote {}), pause mean {:.1} µs, max {:.1} µs",
        gc.fast_runs,
        gc.fast_pages_freed,
        gc.thorough_runs,
        gc.thorough_pages_freed,
        gc.thorough_pages_written,
        mean_pause,
        gc.max_pause_ns as f64 / 1000.0
    );
    println!(
        "fsck after the soak: {} errors, {} blocks in use, {} inodes",
        report.errors_found, report.blocks_used, report.inodes_checked
    );
    assert_eq!(report.errors_found, 0, "{:?}", report.problems);
}
