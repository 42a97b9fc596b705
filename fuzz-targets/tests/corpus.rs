//! Replays every saved fuzz input through the function its fuzz target calls: the minimised
//! corpus (`fuzz/corpus/<target>/`) and the inputs of crashes found and fixed
//! (`fuzz/regressions/<target>/`). On stable, in `cargo test --workspace`; no fuzzer needed.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Run every file of `dir` (if it exists) through `f`; returns how many ran.
fn replay(dir: &Path, f: fn(&[u8])) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<PathBuf> = rd.map(|e| e.expect("dir entry").path()).collect();
    files.sort();
    for p in &files {
        let data = std::fs::read(p).expect("read corpus file");
        // The file name is printed first, so a failure names its input.
        eprintln!("replaying {}", p.display());
        f(&data);
    }
    files.len()
}

#[test]
fn corpus_and_regressions_replay_without_panics() {
    let mut total = 0;
    for &(name, f) in novafs_fuzz_targets::TARGETS {
        let corpus = replay(&fuzz_dir().join("corpus").join(name), f);
        let regressions = replay(&fuzz_dir().join("regressions").join(name), f);
        assert!(corpus > 0, "no saved corpus for fuzz target {name}");
        total += corpus + regressions;
    }
    eprintln!("{total} inputs replayed");
}

#[test]
fn every_fuzz_target_is_listed() {
    // Each target in fuzz/fuzz_targets/ must be replayed here.
    let dir = fuzz_dir().join("fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("fuzz/fuzz_targets")
        .map(|e| {
            let p = e.expect("dir entry").path();
            p.file_stem()
                .expect("file name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = novafs_fuzz_targets::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn seeds_mount_and_fsck_clean() {
    // The empty input is the unpatched clean seed: the walk and all three fsck runs pass.
    novafs_fuzz_targets::image_walk(&[]);
    novafs_fuzz_targets::image_walk(&[1]);
    novafs_fuzz_targets::fsck(&[]);
    novafs_fuzz_targets::fsck(&[1]);
}
