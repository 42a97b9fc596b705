//! Metadata operations per second in a directory, timed without a tool's own overhead: `N`
//! files are created (open `O_CREAT|O_EXCL` + close), stat-ed, renamed and unlinked, each phase
//! timed on its own. `benches/fio.sh` runs it on the novafs mount, on bindfs over tmpfs (the
//! FUSE baseline) and on tmpfs.
//!
//! Usage: `cargo run --release -p novafs-tools --example metaops -- DIR [N]` (default 5000).
//! Prints `create stat rename unlink` in operations per second, on one line.

use std::fs::OpenOptions;
use std::path::Path;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: metaops DIR [N]");
    let n: usize = args
        .next()
        .map_or(5000, |s| s.parse().expect("N: a number"));
    let dir = Path::new(&dir);
    let names: Vec<_> = (0..n).map(|i| dir.join(format!("f{i:06}"))).collect();
    let moved: Vec<_> = (0..n).map(|i| dir.join(format!("g{i:06}"))).collect();
    let rate = |t: Instant| n as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for p in &names {
        drop(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p)
                .expect("create"),
        );
    }
    let create = rate(t);
    let t = Instant::now();
    for p in &names {
        std::fs::metadata(p).expect("stat");
    }
    let stat = rate(t);
    let t = Instant::now();
    for (p, q) in names.iter().zip(&moved) {
        std::fs::rename(p, q).expect("rename");
    }
    let rename = rate(t);
    let t = Instant::now();
    for q in &moved {
        std::fs::remove_file(q).expect("unlink");
    }
    let unlink = rate(t);
    println!("{create:.0} {stat:.0} {rename:.0} {unlink:.0}");
}
