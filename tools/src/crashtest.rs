//! `novafs crashtest`: run the fault-injection crash harness.

use std::path::PathBuf;

use novafs_crashtest::{check_all, workload, Config, Report, Workload};

use crate::error::{CliError, CliResult, Context};

/// What to run.
pub struct Options {
    pub workload: Option<PathBuf>,
    pub builtin: String,
    pub only: Option<String>,
    pub seed: u64,
    pub count: usize,
    pub length: usize,
    pub max_images: usize,
    pub threads: usize,
    pub image_bytes: u64,
    pub no_eadr: bool,
    pub two_fence: bool,
    pub data_crcs: bool,
    pub json: bool,
}

fn workloads(o: &Options) -> CliResult<(Vec<Workload>, String)> {
    if let Some(path) = &o.workload {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let name = path.display().to_string();
        let w = workload::parse(&name, &text).map_err(|e| CliError::new(name.clone(), e))?;
        let replay = format!("novafs crashtest --workload {name}");
        return Ok((vec![w], replay));
    }
    let all = match o.builtin.as_str() {
        "seq1" => workload::seq1(),
        "seq2" => workload::seq2(),
        "random" => workload::random(o.seed, o.count, o.length),
        other => {
            return Err(CliError::new(
                "crashtest",
                format!("unknown built-in set '{other}' (seq1, seq2, random)"),
            ))
        }
    };
    let mut replay = format!("novafs crashtest --builtin {}", o.builtin);
    if o.builtin == "random" {
        replay.push_str(&format!(" --count {} --length {}", o.count, o.length));
    }
    let picked: Vec<Workload> = match &o.only {
        Some(n) => all.into_iter().filter(|w| &w.name == n).collect(),
        None => all,
    };
    if picked.is_empty() {
        return Err(CliError::new("crashtest", "no workload by that name"));
    }
    Ok((picked, replay))
}

/// Run and report; fails (exit 1) when any check failed.
pub fn run(o: &Options) -> CliResult<()> {
    let (ws, replay_base) = workloads(o)?;
    let cfg = Config {
        image_bytes: o.image_bytes,
        max_images: o.max_images.max(2),
        seed: o.seed,
        eadr: !o.no_eadr,
        one_fence: !o.two_fence,
        data_crcs: o.data_crcs,
        ..Config::default()
    };
    if o.image_bytes < 1 << 20 || !o.image_bytes.is_multiple_of(4096) {
        return Err(CliError::new(
            "crashtest",
            "--image-size must be at least 1 MiB and a multiple of 4 KiB",
        ));
    }
    let threads = if o.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        o.threads
    };
    let report = check_all(&ws, &cfg, threads);
    let replay = |w: &str| {
        let only = if o.workload.is_some() {
            String::new()
        } else {
            format!(" --only {w}")
        };
        format!(
            "{replay_base}{only} --seed {} --max-images {} --image-size {}{}",
            o.seed,
            cfg.max_images,
            o.image_bytes,
            match (o.two_fence, o.data_crcs) {
                (true, _) => " --two-fence",
                (false, true) => " --data-crcs",
                (false, false) => "",
            }
        )
    };
    if o.json {
        print_json(&report, &replay);
    } else {
        print_human(&report, &replay, threads);
    }
    if report.failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(
            "crashtest",
            format!("{} failures", report.failures.len()),
        ))
    }
}

fn print_human(r: &Report, replay: &dyn Fn(&str) -> String, threads: usize) {
    let pct = |a: usize, b: usize| {
        if b == 0 {
            100.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    println!("workloads            {}", r.workloads);
    println!(
        "crash points         {} ({} enumerated exhaustively, {} sampled)",
        r.crash_points, r.points_exhaustive, r.points_sampled
    );
    println!(
        "images checked       {} ({:.1}% from exhaustive points), {} duplicates skipped",
        r.images,
        pct(r.images_exhaustive, r.images),
        r.images_deduplicated
    );
    println!("eADR images          {}", r.eadr_images);
    println!(
        "recoveries run       {} (an image met before reuses its outcome)",
        r.recoveries
    );
    println!(
        "torn commits cut     {} recoveries (one-fence sessions)",
        r.torn_cut
    );
    println!(
        "deep checks          {} (usability + crash during recovery)",
        r.deep_checks
    );
    println!(
        "time                 {:.2} s on {threads} threads, {:.0} images/s",
        r.seconds,
        r.images_per_sec()
    );
    println!("failures             {}", r.failures.len());
    for f in &r.failures {
        println!();
        println!(
            "FAIL {} crash point {} ({})",
            f.workload, f.crash_point, f.during
        );
        println!("  {}", f.reason);
        if !f.pick.is_empty() {
            println!("  image: {}", f.pick);
        }
        for p in f.persisted.iter().take(12) {
            println!("  persisted {p}");
        }
        if f.persisted.len() > 12 {
            println!("  ... {} more persisted units", f.persisted.len() - 12);
        }
        println!("  replay: {}", replay(&f.workload));
    }
}

fn print_json(r: &Report, replay: &dyn Fn(&str) -> String) {
    let failures: Vec<serde_json::Value> = r
        .failures
        .iter()
        .map(|f| {
            serde_json::json!({
                "workload": f.workload,
                "crash_point": f.crash_point,
                "during": f.during,
                "reason": f.reason,
                "image": f.pick,
                "persisted": f.persisted,
                "replay": replay(&f.workload),
            })
        })
        .collect();
    let v = serde_json::json!({
        "workloads": r.workloads,
        "crash_points": r.crash_points,
        "crash_points_exhaustive": r.points_exhaustive,
        "crash_points_sampled": r.points_sampled,
        "images": r.images,
        "images_exhaustive": r.images_exhaustive,
        "images_deduplicated": r.images_deduplicated,
        "eadr_images": r.eadr_images,
        "deep_checks": r.deep_checks,
        "recoveries": r.recoveries,
        "torn_cut": r.torn_cut,
        "seconds": r.seconds,
        "images_per_sec": r.images_per_sec(),
        "failures": r.failures.len(),
        "failure_list": failures,
    });
    println!("{v}");
}
