//! `novafs fsck` (also installed as `fsck.novafs`): check and repair an image, with
//! e2fsck-style exit codes.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use novafs_recovery::fsck::{self, FsckOptions, FsckReport, Problem, EXIT_OPERATIONAL};
use serde_json::{json, Value};

/// Exit code for a usage or syntax error (as e2fsck).
pub const EXIT_USAGE: i32 = 16;

/// Images at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_MIN_BYTES: u64 = 256 << 20;

/// What to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Repair (`-y`); otherwise read-only (`-n`).
    pub repair: bool,
    /// `-f` (the full check always runs).
    pub force: bool,
    /// Print one JSON object.
    pub json: bool,
    /// Threads that load inodes ahead (0: one per core).
    pub threads: usize,
}

fn progress_bar(image: &Path) -> Option<ProgressBar> {
    let big = std::fs::metadata(image).is_ok_and(|m| m.len() >= PROGRESS_MIN_BYTES);
    if !big || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    Some(pb)
}

fn problem_json(p: &Problem) -> Value {
    json!({
        "kind": p.kind.name(),
        "inode": p.inode,
        "block": p.block,
        "offset": p.offset,
        "message": p.message,
        "repair": p.repair,
        "fixed": p.fixed,
    })
}

fn report_json(image: &Path, o: &Options, r: &FsckReport) -> Value {
    json!({
        "image": image.display().to_string(),
        "repair": o.repair,
        "exit_code": r.exit_code(),
        "errors_found": r.errors_found,
        "errors_fixed": r.errors_fixed,
        "errors_left": r.errors_left,
        "inodes_checked": r.inodes_checked,
        "blocks_checked": r.blocks_checked,
        "blocks_used": r.blocks_used,
        "entries_checked": r.entries_checked,
        "inodes_loaded_ahead": r.inodes_loaded_ahead,
        "image_bytes": r.image_bytes,
        "was_clean": r.was_clean,
        "modified": r.modified,
        "passes": r.passes,
        "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0,
        "problems": r.problems.iter().map(problem_json).collect::<Vec<_>>(),
        "notes": r.notes,
        "recovery": r.recovery,
    })
}

fn human(image: &Path, o: &Options, r: &FsckReport) -> String {
    let name = image.display();
    let mut s = format!(
        "{name}: {} bytes, {} blocks, {}\n",
        r.image_bytes,
        r.blocks_checked,
        if r.was_clean {
            "cleanly unmounted"
        } else {
            "not cleanly unmounted"
        }
    );
    for p in &r.problems {
        s += &format!("  {p}\n");
        let what = p.repair.as_deref().unwrap_or("cannot be repaired");
        let state = match (o.repair, p.fixed, p.repair.is_some()) {
            (true, true, _) => "fixed",
            (true, false, _) => "NOT fixed",
            (false, _, true) => "-y would",
            (false, _, false) => "left",
        };
        s += &format!("      {state}: {what}\n");
    }
    for n in &r.recovery {
        s += &format!("  needs recovery: {n}\n");
    }
    for n in &r.notes {
        s += &format!("  note: {n}\n");
    }
    s += &format!(
        "{name}: {} inodes, {} log entries, {} blocks ({} in use) checked in {:.1} ms\n",
        r.inodes_checked,
        r.entries_checked,
        r.blocks_checked,
        r.blocks_used,
        r.elapsed.as_secs_f64() * 1000.0
    );
    s += &if r.errors_found == 0 {
        format!("{name}: clean\n")
    } else if o.repair {
        format!(
            "{name}: {} error{} found, {} fixed, {} left{}\n",
            r.errors_found,
            if r.errors_found == 1 { "" } else { "s" },
            r.errors_fixed,
            r.errors_left,
            if r.modified {
                "; the image was modified"
            } else {
                ""
            }
        )
    } else {
        format!(
            "{name}: {} error{} found, nothing changed (run with -y to repair)\n",
            r.errors_found,
            if r.errors_found == 1 { "" } else { "s" }
        )
    };
    s
}

/// Run fsck on `image`; returns the exit code.
pub fn run(image: &Path, o: &Options) -> i32 {
    let pb = progress_bar(image);
    let progress = pb.clone().map(|pb| -> fsck::ProgressFn {
        Arc::new(move |p: &fsck::Progress| {
            pb.set_message(p.phase);
            pb.set_length(p.total.max(p.done));
            pb.set_position(p.done);
        })
    });
    let opts = FsckOptions {
        repair: o.repair,
        force: o.force,
        progress,
        threads: o.threads,
        ..FsckOptions::default()
    };
    let result = fsck::check(image, &opts);
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let code = fsck::exit_code(&result);
    let text = match &result {
        Ok(r) if o.json => format!("{}\n", report_json(image, o, r)),
        Ok(r) => human(image, o, r),
        Err(e) if o.json => format!(
            "{}\n",
            json!({
                "image": image.display().to_string(),
                "repair": o.repair,
                "exit_code": EXIT_OPERATIONAL,
                "error": e.to_string(),
                "errors_found": 0,
                "errors_fixed": 0,
                "errors_left": 0,
                "inodes_checked": 0,
                "blocks_checked": 0,
                "problems": [],
            })
        ),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "fsck.novafs: {}: {e}", image.display());
            String::new()
        }
    };
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
        && code == 0
    {
        return EXIT_OPERATIONAL;
    }
    code
}
