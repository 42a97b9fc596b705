//! The harness finds no failure on the real engine, and its numbers add up.

use novafs_crashtest::{check_all, workload, Config};

#[test]
fn seq1_real_engine_has_no_failures() {
    let ws = workload::seq1();
    let cfg = Config::default();
    let r = check_all(&ws, &cfg, 2);
    for f in r.failures.iter().take(5) {
        eprintln!("{f:#?}");
    }
    assert!(r.failures.is_empty(), "{} failures", r.failures.len());
    assert_eq!(r.workloads, ws.len());
    assert!(r.crash_points > ws.len() * 2, "{r:?}");
    assert!(r.images >= r.crash_points);
    assert!(r.deep_checks > 0);
    eprintln!(
        "seq1: {} workloads, {} crash points ({} exhaustive), {} images ({} exhaustive), {} eADR, {:.1}s, {:.0} images/s",
        r.workloads, r.crash_points, r.points_exhaustive, r.images, r.images_exhaustive, r.eadr_images, r.seconds, r.images_per_sec()
    );
}
