//! `unsafe` stays in the media layer (DESIGN §1): the workspace forbids `unsafe_code`; the
//! engine crate, which cannot forbid it crate-wide (`media/raw.rs` and `media/map.rs` allow
//! it), denies it, and every other engine module forbids it itself, directly or through a
//! parent module that does. A new engine module without the attribute fails here.

use std::path::{Path, PathBuf};

const FORBID: &str = "#![forbid(unsafe_code)]";
/// Engine files allowed without `forbid`: the crate root (declarations), the media layer's
/// parent module (a `forbid` there would reach raw.rs and map.rs) and the two files that
/// hold the `unsafe` code.
const EXEMPT: [&str; 4] = ["lib.rs", "media/mod.rs", "media/raw.rs", "media/map.rs"];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn unsafe_code_is_forbidden_outside_the_media_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        ws.contains("[workspace.lints.rust]") && ws.contains("unsafe_code = \"forbid\""),
        "the workspace lint forbids unsafe_code"
    );
    let engine_toml = std::fs::read_to_string(root.join("engine/Cargo.toml")).unwrap();
    assert!(engine_toml.contains("unsafe_code = \"deny\""));
    for krate in ["recovery", "tools", "crashtest", "fuse", "fuzz-targets"] {
        let t = std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
        assert!(
            t.contains("[lints]\nworkspace = true"),
            "{krate} takes the workspace's lints (forbid)"
        );
    }
    let src = root.join("engine/src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut missing = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if EXEMPT.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        if text.contains(FORBID) {
            continue;
        }
        // A child of a module whose mod.rs forbids (layout/*.rs) inherits it.
        let inherited =
            f.ancestors().skip(1).take_while(|d| *d != src).any(|d| {
                std::fs::read_to_string(d.join("mod.rs")).is_ok_and(|m| m.contains(FORBID))
            });
        if !inherited {
            missing.push(rel);
        }
    }
    assert!(
        missing.is_empty(),
        "engine modules without {FORBID}: {missing:?}"
    );
    for f in ["media/raw.rs", "media/map.rs"] {
        let text = std::fs::read_to_string(src.join(f)).unwrap();
        assert!(text.contains("#![allow(unsafe_code)]"), "{f}");
    }
    // The exempt parent holds no unsafe block of its own.
    let media_mod = std::fs::read_to_string(src.join("media/mod.rs")).unwrap();
    assert!(!media_mod.contains("unsafe {") && !media_mod.contains("unsafe fn"));
}

/// Every change of the image goes through the engine's one commit path (DESIGN §5.0): outside
/// the files that implement it, and the few stores §5.0 names as outside `Txn` on purpose, no
/// code of the engine, recovery (mount, undo, fsck), the tools, the FUSE front end or the
/// facade stores to the image itself.
#[test]
fn only_the_commit_path_stores_to_the_image() {
    /// Media calls that change the image.
    const STORES: [&str; 6] = [
        ".store_u64(",
        ".commit_u64(",
        ".write_flush(",
        ".write_nt(",
        ".zero_nt(",
        ".copy_nt(",
    ];
    /// Files allowed to call them, and why.
    const ALLOWED: [(&str, &str); 6] = [
        ("engine/src/txn.rs", "the transaction"),
        ("engine/src/log.rs", "staging log entries, a txn's step"),
        ("engine/src/journal.rs", "the undo journal, a txn's step"),
        (
            "engine/src/mount.rs",
            "format, and the mount-state record of a session",
        ),
        (
            "engine/src/engine.rs",
            "the kind word of a freed slot (a tidy-up)",
        ),
        (
            "engine/src/grow.rs",
            "zeros in the new replica block before its rewrite",
        ),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["engine/src", "recovery/src", "tools/src", "fuse/src", "src"] {
        rs_files(&root.join(dir), &mut files);
    }
    let mut found = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("engine/src/media/") || ALLOWED.iter().any(|(a, _)| *a == rel) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests may craft images.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or("");
            if STORES.iter().any(|s| line.contains(s)) {
                found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "stores to the image outside the commit path (use a Txn, DESIGN §5.0):\n{}",
        found.join("\n")
    );
}
