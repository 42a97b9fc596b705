//! The harness bites: each injected protocol bug is caught, one at a time.
//! Runs with `cargo test -p novafs-crashtest --features inject-bugs --test bugs`.
#![cfg(feature = "inject-bugs")]

use novafs_crashtest::{check_all, workload, Config};
use novafs_engine::bugs::{self, Bug};

#[test]
fn every_injected_bug_is_caught() {
    let ws = workload::seq1();
    let cfg = Config {
        max_images: 512,
        deep_every: 0,
        ..Config::default()
    };
    let mut missed = Vec::new();
    // `NOVAFS_BUG=name` runs one bug (while working on it); CI runs them all.
    let only = std::env::var("NOVAFS_BUG").ok();
    for bug in Bug::ALL {
        if only.as_deref().is_some_and(|n| n != bug.name()) {
            continue;
        }
        bugs::set(Some(bug));
        let r = check_all(&ws, &cfg, 2);
        bugs::set(None);
        let first = r
            .failures
            .first()
            .map(|f| format!("{} {}: {}", f.workload, f.during, f.reason));
        eprintln!(
            "{:<24} {:>5} failures in {:>3} workloads; first: {}",
            bug.name(),
            r.failures.len(),
            r.failures
                .iter()
                .map(|f| &f.workload)
                .collect::<std::collections::HashSet<_>>()
                .len(),
            first.as_deref().unwrap_or("-")
        );
        if r.failures.is_empty() {
            missed.push(bug.name());
        }
    }
    assert!(missed.is_empty(), "bugs not caught: {missed:?}");
    // And with no bug active, the same run is clean.
    let r = check_all(&ws, &cfg, 2);
    assert!(r.failures.is_empty(), "{:?}", r.failures.first());
}
