//! Crash-harness throughput: seq1 (or a part of it) on one thread, images per second.
//!
//! `cargo run --release -p novafs-crashtest --example seq1_rate [-- [--threads N] [--every K]
//! [--runs R] [NAME...]]`: NAMEs pick workloads of seq1 by name (all when none); `--every K`
//! keeps every K-th workload (a reduced set for callgrind); `--runs R` repeats the run and
//! prints the median. Prints the images per second per thread, and how many of the images
//! were distinct (recovered) and how many were duplicates of an image already checked at the
//! same crash point.

use novafs_crashtest::{check_all, workload, Config};

fn main() {
    let mut threads = 1usize;
    let mut every = 1usize;
    let mut runs = 1usize;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--threads" => threads = num("--threads").max(1),
            "--every" => every = num("--every").max(1),
            "--runs" => runs = num("--runs").max(1),
            _ => names.push(a),
        }
    }
    let ws: Vec<_> = workload::seq1()
        .into_iter()
        .filter(|w| names.is_empty() || names.contains(&w.name))
        .step_by(every)
        .collect();
    assert!(!ws.is_empty(), "no workload by those names");
    let cfg = Config::default();
    let mut rates = Vec::new();
    for run in 0..runs {
        let r = check_all(&ws, &cfg, threads);
        let images = r.images + r.eadr_images;
        let per_core = r.images_per_sec() / threads as f64;
        println!(
            "run {run}: {} workloads, {} crash points, {images} images ({} at crash points, {} eADR), \
             {} recoveries run, {} duplicates skipped, {} deep, {:.2} s on {threads} thread(s): \
             {:.0} images/s per thread, failures {}",
            r.workloads,
            r.crash_points,
            r.images,
            r.eadr_images,
            r.recoveries,
            r.images_deduplicated,
            r.deep_checks,
            r.seconds,
            per_core,
            r.failures.len()
        );
        for f in r.failures.iter().take(3) {
            println!("{f:#?}");
        }
        rates.push(per_core);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "median of {runs}: {:.0} images/s per thread",
        rates[rates.len() / 2]
    );
}
