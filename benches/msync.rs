//! Durable 100 B appends on a disk file: novafs in msync mode (an image on an ordinary disk
//! file system, one-fence commits: its default) against `pwrite` + `fdatasync` on a plain file
//! in the same directory, in one process, batches interleaved; and the same appends on a
//! second image mounted with two-fence commits (`MountOptions::one_fence: Some(false)`, what
//! msync mode did before). Two more rows measure the persistence layer alone on another
//! file there: one persist point (a 100 B store + flush + fence: one msync) and two on two
//! pages, the shape of a commit (data and entries, fence, tail, fence), which bounds what any
//! two-point commit can reach. The table also counts durability calls (msync) per append.
//!
//! `cargo bench --bench msync [-- --quick] [--dir DIR]`: the directory defaults to /var/tmp
//! (else the target dir, else /tmp), which must not be a RAM file system.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use novafs::{FormatOptions, Fs, MediaMode};
use novafs_engine::media::{MapOptions, Media};

const RECORD: [u8; 100] = [0x42; 100];

/// The file-system type of `p` (from `/proc/self/mountinfo`, longest matching mount point).
fn fs_type(p: &Path) -> String {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|&x| x == "-") else {
            continue;
        };
        let (Some(mnt), Some(ty)) = (f.get(4), f.get(sep + 1)) else {
            continue;
        };
        let mnt = mnt.replace("\\040", " ");
        if p.starts_with(&mnt) && best.as_ref().is_none_or(|(l, _)| mnt.len() >= *l) {
            best = Some((mnt.len(), (*ty).to_string()));
        }
    }
    best.map_or_else(|| "unknown".into(), |(_, t)| t)
}

fn disk_dir() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--dir" {
            return args.next().map(PathBuf::from);
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    [PathBuf::from("/var/tmp"), target, PathBuf::from("/tmp")]
        .into_iter()
        .find(|p| {
            p.is_dir()
                && !matches!(
                    fs_type(p).as_str(),
                    "tmpfs" | "ramfs" | "hugetlbfs" | "devtmpfs" | "unknown"
                )
        })
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (batches, per_batch) = if quick { (9, 20) } else { (25, 40) };
    let Some(parent) = disk_dir() else {
        println!("no directory outside a RAM file system: skipped");
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix("novafs-msync-bench-")
        .tempdir_in(&parent)
        .unwrap();
    println!(
        "{} CPUs, load average {}; directory {} ({})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        dir.path().display(),
        fs_type(dir.path())
    );
    let fs = Fs::format(
        dir.path().join("msync.img"),
        256 << 20,
        &FormatOptions::default(),
    )
    .unwrap();
    assert_eq!(
        fs.media_mode(),
        MediaMode::Msync,
        "the image must be in msync mode"
    );
    assert!(fs.engine().one_fence_commits());
    let log = fs
        .open_options()
        .append(true)
        .create(true)
        .open("/log")
        .unwrap();
    let two_img = dir.path().join("two.img");
    Fs::format(&two_img, 256 << 20, &FormatOptions::default())
        .unwrap()
        .unmount()
        .unwrap();
    let fs2 = Fs::open(
        &two_img,
        &novafs::MountOptions {
            one_fence: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!fs2.engine().one_fence_commits());
    let log2 = fs2
        .open_options()
        .append(true)
        .create(true)
        .open("/log")
        .unwrap();
    let mut two_fence_batch = Vec::new();
    let plain = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("plain.log"))
        .unwrap();
    let mut plain_len = 0u64;
    let engine = fs.engine().clone();
    // The persistence layer alone, on another file of the same directory: one persist point
    // is a 100 B store + flush + fence (one durability call in msync mode); a commit has two
    // (data and entries, fence, then the tail word on another page, fence).
    let raw = Media::create(
        &dir.path().join("raw.img"),
        16 << 20,
        false,
        &MapOptions::default(),
    )
    .unwrap();
    assert_eq!(raw.mode(), MediaMode::Msync);
    let mut raw_i = 0u64;
    let mut persist = |page: u64| {
        let off = page * 4096 + (raw_i % 40) * 100;
        raw_i += 1;
        raw.write(off, &RECORD).unwrap();
        raw.flush(off, RECORD.len() as u64).unwrap();
        raw.fence();
    };
    for i in 0..per_batch {
        persist(i % 64);
    }
    // Warm-up: a few of each (first-touch block conversions, journal warm-up).
    for _ in 0..per_batch {
        log.append(&RECORD).unwrap();
        log2.append(&RECORD).unwrap();
        plain.write_all_at(&RECORD, plain_len).unwrap();
        plain_len += RECORD.len() as u64;
        plain.sync_data().unwrap();
    }
    let mut nova_ns = Vec::new();
    let mut plain_ns = Vec::new();
    let mut nova_batch = Vec::new();
    let mut plain_batch = Vec::new();
    let mut one_batch = Vec::new();
    let mut over_batch = Vec::new();
    // A 4 KiB overwrite of an already-written page + fdatasync (no metadata to journal): the
    // floor of one durability call on this disk.
    let over = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("over.dat"))
        .unwrap();
    over.write_all_at(&[1u8; 64 * 4096], 0).unwrap();
    over.sync_all().unwrap();
    let mut over_i = 0u64;
    let mut two_batch = Vec::new();
    let calls_before = engine.durability_calls();
    let mut appends = 0u64;
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..per_batch {
            let s = Instant::now();
            log.append(&RECORD).unwrap();
            nova_ns.push(s.elapsed().as_nanos() as f64);
            appends += 1;
        }
        nova_batch.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
        let t = Instant::now();
        for _ in 0..per_batch {
            log2.append(&RECORD).unwrap();
        }
        two_fence_batch.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
        let t = Instant::now();
        for _ in 0..per_batch {
            let s = Instant::now();
            plain.write_all_at(&RECORD, plain_len).unwrap();
            plain_len += RECORD.len() as u64;
            plain.sync_data().unwrap();
            plain_ns.push(s.elapsed().as_nanos() as f64);
        }
        plain_batch.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
        let t = Instant::now();
        for i in 0..per_batch {
            persist(i % 64);
        }
        one_batch.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
        let t = Instant::now();
        for _ in 0..per_batch {
            over.write_all_at(&[over_i as u8; 4096], (over_i % 64) * 4096)
                .unwrap();
            over_i += 1;
            over.sync_data().unwrap();
        }
        over_batch.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
        let t = Instant::now();
        for i in 0..per_batch {
            persist(i % 64);
            persist(1000);
        }
        two_batch.push(t.elapsed().as_nanos() as f64 / per_batch as f64);
    }
    let calls = (engine.durability_calls() - calls_before) as f64 / appends as f64;
    let nova = percentile(&mut nova_batch, 0.5);
    let plain_med = percentile(&mut plain_batch, 0.5);
    println!();
    println!(
        "100 B durable appends, {batches} interleaved batches of {per_batch}: per-append median of \
         the batch means, p50/p99 of single appends (µs)"
    );
    println!();
    println!("| | median µs | appends/s | p50 µs | p99 µs | durability calls per append |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| novafs msync mode (`File::append`) | {:.0} | {:.0} | {:.0} | {:.0} | {calls:.2} |",
        nova / 1e3,
        1e9 / nova,
        percentile(&mut nova_ns, 0.5) / 1e3,
        percentile(&mut nova_ns, 0.99) / 1e3
    );
    let two_fence = percentile(&mut two_fence_batch, 0.5);
    println!(
        "| novafs msync mode, two-fence commits (`one_fence: Some(false)`) | {:.0} | {:.0} | | | |",
        two_fence / 1e3,
        1e9 / two_fence
    );
    println!(
        "| pwrite + fdatasync | {:.0} | {:.0} | {:.0} | {:.0} | 1 |",
        plain_med / 1e3,
        1e9 / plain_med,
        percentile(&mut plain_ns, 0.5) / 1e3,
        percentile(&mut plain_ns, 0.99) / 1e3
    );
    let one = percentile(&mut one_batch, 0.5);
    let two = percentile(&mut two_batch, 0.5);
    let overwrite = percentile(&mut over_batch, 0.5);
    println!(
        "| media layer, msync mode: one persist point (100 B store + flush + fence) | {:.0} | {:.0} | | | 1 |",
        one / 1e3,
        1e9 / one
    );
    println!(
        "| media layer, msync mode: two persist points on two pages (a commit's shape) | {:.0} | {:.0} | | | 2 |",
        two / 1e3,
        1e9 / two
    );
    println!(
        "| 4 KiB pwrite overwrite + fdatasync (no metadata): one durability call's floor | {:.0} | {:.0} | | | 1 |",
        overwrite / 1e3,
        1e9 / overwrite
    );
    println!();
    println!(
        "novafs / pwrite+fdatasync throughput: {:.2}x (goal >= 0.9x); two-fence commits: \
         {:.2}x; bound of a two-point commit: {:.2}x; of a one-point commit: {:.2}x",
        plain_med / nova,
        plain_med / two_fence,
        plain_med / two,
        plain_med / one
    );
    drop(log);
    fs.unmount().unwrap();
    drop(log2);
    fs2.unmount().unwrap();
}
