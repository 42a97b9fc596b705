//! Multi-threaded throughput: 1, 2, ... threads (up to the machine's parallelism, at least 2)
//! running the same operation on one image, in three sharing patterns:
//!
//! - **disjoint files**: each thread overwrites 4 KiB pages of its own file;
//! - **one shared file**: each thread overwrites its own pages of one file (one inode lock);
//! - **one shared directory**: each thread creates and removes its own names in one directory
//!   (one directory lock, one directory log);
//! - **raw limit**: each thread makes a 4 KiB non-temporal copy + fence into its own pages of a
//!   raw region through novafs's persistence layer (`Media`), no engine: how far the machine's
//!   memory system lets the data copies of the first pattern scale.
//!
//! Each configuration runs as rounds of a fixed number of operations per thread; the rounds of
//! all thread counts are interleaved (so drift of the machine hits all alike) and the table
//! shows the median throughput and the scaling against one thread measured in the same run.
//!
//! `cargo bench --bench threads [-- --quick]`.

use std::sync::Barrier;
use std::time::Instant;

use novafs::{FormatOptions, Fs, MediaMode};
use novafs_engine::media::{MapOptions, Media};

const PAGE: u64 = 4096;
/// Pages each thread overwrites in rotation.
const PAGES_PER_THREAD: u64 = 256;

#[derive(Clone, Copy, Debug)]
enum Pattern {
    DisjointFiles,
    SharedFile,
    SharedDir,
    Raw,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::DisjointFiles => "4 KiB write_at, disjoint files",
            Pattern::SharedFile => "4 KiB write_at, one shared file (own pages)",
            Pattern::SharedDir => "create + remove, one shared directory",
            Pattern::Raw => "raw limit: 4 KiB write_nt + fence, own pages",
        }
    }
}

/// One round: `threads` threads, `ops` operations each; returns operations per second.
fn round(fs: &Fs, raw: &Media, pattern: Pattern, threads: usize, ops: u64, round_no: u64) -> f64 {
    let barrier = Barrier::new(threads);
    let buf = vec![0x5au8; PAGE as usize];
    // Each thread times its own work, from the common start: a coordinating thread that
    // timed it would be descheduled while the workers hold every core, and start its clock
    // late (the raw row reported 100x scaling on 2 cores).
    let elapsed = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (fs, barrier, buf) = (fs, &barrier, &buf);
                s.spawn(move || {
                    let file = match pattern {
                        Pattern::DisjointFiles => Some(
                            fs.open_options()
                                .write(true)
                                .open(format!("/own{t}"))
                                .expect("open own file"),
                        ),
                        Pattern::SharedFile => Some(
                            fs.open_options()
                                .write(true)
                                .open("/shared")
                                .expect("open shared file"),
                        ),
                        Pattern::SharedDir | Pattern::Raw => None,
                    };
                    let base = match pattern {
                        Pattern::SharedFile => t as u64 * PAGES_PER_THREAD,
                        _ => 0,
                    };
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..ops {
                        match &file {
                            None if matches!(pattern, Pattern::Raw) => {
                                let pg = t as u64 * PAGES_PER_THREAD + i % PAGES_PER_THREAD;
                                raw.write_nt(pg * PAGE, buf).expect("write_nt");
                                raw.fence();
                            }
                            Some(f) => {
                                let pg = base + i % PAGES_PER_THREAD;
                                f.write_at(buf, pg * PAGE).expect("write_at");
                            }
                            None => {
                                let p = format!("/d/t{t}-{round_no}-{i}");
                                drop(fs.create(&p).expect("create"));
                                fs.remove_file(&p).expect("remove");
                            }
                        }
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        let spans: Vec<(Instant, Instant)> =
            hs.into_iter().map(|h| h.join().expect("worker")).collect();
        let first = spans.iter().map(|s| s.0).min().expect("a thread");
        let last = spans.iter().map(|s| s.1).max().expect("a thread");
        last - first
    });
    (threads as u64 * ops) as f64 / elapsed.as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 5 } else { 15 };
    let max_threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let counts: Vec<usize> = (1..=max_threads).collect();
    let dir = tempfile::tempdir_in("/dev/shm").expect("scratch directory in /dev/shm");
    let img = dir.path().join("threads.img");
    let fs = Fs::format(&img, 1 << 30, &FormatOptions::default()).expect("format");
    fs.create_dir("/d").expect("mkdir");
    let zero = vec![0u8; (PAGES_PER_THREAD * PAGE) as usize];
    for t in 0..max_threads {
        fs.write(format!("/own{t}"), &zero).expect("own file");
    }
    fs.write("/shared", &vec![0u8; zero.len() * max_threads])
        .expect("shared file");
    let raw = Media::create(
        &dir.path().join("raw"),
        PAGES_PER_THREAD * PAGE * max_threads as u64,
        true,
        &MapOptions::default(),
    )
    .expect("raw region");
    assert_eq!(
        raw.mode(),
        MediaMode::Emulated,
        "the raw region: emulated pmem"
    );
    raw.zero_nt(0, PAGES_PER_THREAD * PAGE * max_threads as u64)
        .expect("fill the raw region");
    raw.fence();
    println!(
        "novafs {:?} mode, {max_threads} hardware threads, {rounds} interleaved rounds; \
         median operations per second (scaling = n threads / 1 thread, same run)",
        fs.media_mode()
    );
    println!();
    print!("| pattern |");
    for n in &counts {
        print!(" {n} thread{} |", if *n == 1 { "" } else { "s" });
    }
    for n in counts.iter().skip(1) {
        print!(" scaling {n}/1 |");
    }
    println!();
    print!("|---|");
    for _ in 0..(2 * counts.len() - 1) {
        print!("---:|");
    }
    println!();
    for pattern in [
        Pattern::DisjointFiles,
        Pattern::SharedFile,
        Pattern::SharedDir,
        Pattern::Raw,
    ] {
        let ops = match pattern {
            Pattern::SharedDir => 2_000,
            _ => 10_000,
        };
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
        // Warm-up round of each count (first-touch of pages, inode cache).
        for &n in &counts {
            round(&fs, &raw, pattern, n, ops / 10, u64::MAX - n as u64);
        }
        for r in 0..rounds as u64 {
            for (k, &n) in counts.iter().enumerate() {
                results[k].push(round(&fs, &raw, pattern, n, ops, r * 100 + n as u64));
            }
        }
        let medians: Vec<f64> = results.iter_mut().map(|v| median(v)).collect();
        print!("| {} |", pattern.name());
        for m in &medians {
            print!(" {:.0} |", m);
        }
        for m in medians.iter().skip(1) {
            print!(" {:.2}x |", m / medians[0]);
        }
        println!();
    }
    fs.unmount().expect("unmount");
}
