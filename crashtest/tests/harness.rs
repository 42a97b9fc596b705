//! The harness finds no failure on the real engine, and its numbers add up.

use novafs_crashtest::{check, check_all, workload, Config, Op, Workload};
use proptest::prelude::*;

fn summary(name: &str, r: &novafs_crashtest::Report) {
    eprintln!(
        "{name}: {} workloads, {} crash points ({} exhaustive), {} images ({} exhaustive, {} deduplicated), {} eADR, {} deep, {:.1}s, {:.0} images/s",
        r.workloads,
        r.crash_points,
        r.points_exhaustive,
        r.images,
        r.images_exhaustive,
        r.images_deduplicated,
        r.eadr_images,
        r.deep_checks,
        r.seconds,
        r.images_per_sec()
    );
    for f in r.failures.iter().take(3) {
        eprintln!("{f:#?}");
    }
}

#[test]
fn seq1_real_engine_has_no_failures() {
    let ws = workload::seq1();
    let r = check_all(&ws, &Config::default(), 2);
    summary("seq1", &r);
    assert!(r.failures.is_empty(), "{} failures", r.failures.len());
    assert_eq!(r.workloads, ws.len());
    assert!(r.crash_points > ws.len() * 2, "{r:?}");
    assert!(r.images >= r.crash_points);
    assert!(r.deep_checks > 0);
    assert!(r.eadr_images > 0);
    // One-fence commits by default: some crash images hold a torn last commit.
    assert!(r.torn_cut > 0, "no crash image had a torn commit: {r:?}");
}

#[test]
fn seq1_msync_commits_recover() {
    // msync mode's commits (DESIGN.md §5.1.1): a write of whole pages also stores its data,
    // entries and tail before one fence, its data runs checksummed. Crash images then hold
    // tails whose data is not durable, which recovery must cut off: the same checks, no
    // failures. Every other workload here (the whole of seq1 runs in about 5 minutes on 2
    // cores with no failures).
    let ws: Vec<Workload> = workload::seq1().into_iter().step_by(2).collect();
    let cfg = Config {
        data_crcs: true,
        ..Config::default()
    };
    let r = check_all(&ws, &cfg, 2);
    summary("seq1 msync commits", &r);
    assert!(r.failures.is_empty(), "{} failures", r.failures.len());
    assert_eq!(r.workloads, ws.len());
    eprintln!("recoveries that cut a torn commit: {}", r.torn_cut);
    assert!(r.torn_cut > 0, "no crash image had a torn commit: {r:?}");
}

#[test]
fn seq1_two_fence_commits_recover() {
    // `MountOptions::one_fence = Some(false)`: every commit fences its entries before its
    // tail, so no crash image holds a torn commit and recovery never cuts one. Every fourth
    // workload here, for CI's time (the whole of seq1 passed before one-fence commits became
    // the default).
    let ws: Vec<Workload> = workload::seq1().into_iter().skip(1).step_by(4).collect();
    let cfg = Config {
        one_fence: false,
        ..Config::default()
    };
    let r = check_all(&ws, &cfg, 2);
    summary("seq1 two-fence", &r);
    assert!(r.failures.is_empty(), "{} failures", r.failures.len());
    assert_eq!(r.workloads, ws.len());
    assert_eq!(
        r.torn_cut, 0,
        "a two-fence session left a torn commit: {r:?}"
    );
}

#[test]
fn handle_workloads_run_every_operation() {
    // The several-handles workloads exercise what they say: every operation succeeds in the
    // crash-free run (a typo'd handle or path would make them fail quietly), and a file
    // unlinked while open keeps its contents for its handles until the last close.
    use novafs_engine::{Engine, FormatOptions, Media};
    let run = |ops: &mut dyn Iterator<Item = &Op>, name: &str| {
        let media = std::sync::Arc::new(Media::traced(4 << 20));
        let e = Engine::format_media(media, &FormatOptions::default()).unwrap();
        let fs = novafs::Fs::from_engine(e, Default::default());
        let mut held = workload::Held::new();
        for op in ops {
            if let Err(e) = workload::apply_with(&fs, &mut held, op) {
                panic!("{name}: '{op}' failed: {e}");
            }
        }
        let free = fs.statfs().unwrap().blocks_free;
        (fs, held, free)
    };
    let ws = workload::handles();
    assert!(ws.len() >= 8);
    for w in &ws {
        let (fs, held, free) = run(&mut w.setup.iter().chain(&w.ops), &w.name);
        if w.name == "handles-unlink-while-open" {
            // The last close freed the orphan: the same space as unlinking it unopened.
            let unlink = Op::Unlink("/A/bar".into());
            let (_, _, free_plain) = run(&mut w.setup.iter().chain([&unlink]), "plain unlink");
            assert!(held.files.is_empty());
            assert_eq!(
                free, free_plain,
                "the orphan's blocks were not freed at close"
            );
        }
        if w.name == "handles-write-both" {
            // Both handles' writes landed in the one file.
            let d = fs.read("/foo").unwrap();
            assert_eq!(&d[..100], &workload::data(40, 4096)[..100]);
            assert_eq!(&d[100..140], &workload::data(41, 40)[..]);
            assert_eq!(held.files.len(), 2);
        }
    }
}

#[test]
fn seq2_sample_real_engine_has_no_failures() {
    // A seeded sample of the 40 x 40 pairs (the whole set runs from the CLI).
    let all = workload::seq2();
    let ws: Vec<Workload> = all.iter().step_by(9).cloned().collect();
    let cfg = Config {
        max_images: 1024,
        ..Config::default()
    };
    let r = check_all(&ws, &cfg, 2);
    summary("seq2 sample", &r);
    assert!(r.failures.is_empty(), "{} failures", r.failures.len());
    assert_eq!(r.workloads, ws.len());
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let p = || {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=2)
            .prop_map(|v| format!("/{}", v.join("/")))
    };
    prop_oneof![
        p().prop_map(Op::Mkdir),
        p().prop_map(Op::Create),
        (p(), 0u64..12_000, 1u64..6_000, 0u64..100).prop_map(|(path, off, len, seed)| Op::Write {
            path,
            off,
            len,
            seed
        }),
        (p(), 0u64..12_000, 0u64..100).prop_map(|(path, len, seed)| Op::WriteFile {
            path,
            len,
            seed
        }),
        (p(), 0u64..12_000).prop_map(|(a, l)| Op::Truncate(a, l)),
        p().prop_map(Op::Unlink),
        p().prop_map(Op::Rmdir),
        (p(), p()).prop_map(|(a, b)| Op::Rename(a, b)),
        (p(), p()).prop_map(|(a, b)| Op::Link(a, b)),
        (p(), 0u64..12_000, 1u64..8_000).prop_map(|(a, o, l)| Op::Punch(a, o, l)),
        Just(Op::Remount),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("CRASH_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12),
        ..ProptestConfig::default()
    })]

    /// Random sequences; a failure shrinks to a minimal workload.
    #[test]
    fn random_sequences_recover(ops in prop::collection::vec(op_strategy(), 1..8)) {
        let w = Workload { name: "random".into(), setup: vec![], ops };
        let r = check(&w, &Config { max_images: 256, deep_every: 31, ..Config::default() });
        prop_assert!(r.failures.is_empty(), "{}\n{:#?}", w.to_text(), r.failures.first());
    }
}

#[test]
fn a_step_of_several_calls_is_reported_when_a_crash_splits_it() {
    let r = novafs_crashtest::check_calls(
        |fs| fs.create_dir("/d"),
        vec![(
            "two creates",
            Box::new(|fs: &novafs::Fs| {
                fs.create("/d/a")?;
                fs.create("/d/b").map(|_| ())
            }),
        )],
        &Config {
            max_images: 64,
            ..Config::default()
        },
    );
    assert!(
        !r.failures.is_empty(),
        "a crash between the two creates must show"
    );
    assert!(r.failures[0].reason.contains("/d/"), "{:?}", r.failures[0]);
}

#[test]
fn writefile_is_one_atomic_step() {
    // The workload language reads and prints `writefile`, and a crash at any point of a
    // whole-file replace (shorter, longer, new file) shows the old or the new file.
    let text = "@setup\ncreate /f\nwrite /f 0 9000 1\n@ops\nwritefile /f 5000 2\nwritefile /f 13000 3\nwritefile /g 6000 4\nwritefile /g 0 5\n";
    let w = workload::parse("wf", text).unwrap();
    assert_eq!(w.ops.len(), 4);
    assert_eq!(w.ops[0].to_string(), "writefile /f 5000 2");
    assert_eq!(workload::parse("wf", &w.to_text()).unwrap(), w);
    let r = check(&w, &Config::default());
    assert!(r.failures.is_empty(), "{:#?}", r.failures.first());
    assert!(r.crash_points >= 4, "{r:?}");

    // The same replace done as two commits (what `Fs::write` was: set_len, then write_at)
    // is split by a crash, and the harness says so.
    let old = |fs: &novafs::Fs| -> Result<(), novafs::Error> {
        let f = fs.open_options().write(true).open("/f")?;
        f.set_len(5000)?;
        f.write_at(&workload::data(2, 5000), 0).map(|_| ())
    };
    let r = novafs_crashtest::check_calls(
        |fs| fs.write("/f", &workload::data(1, 9000)),
        vec![("two-commit replace", Box::new(old))],
        &Config {
            max_images: 64,
            ..Config::default()
        },
    );
    assert!(
        !r.failures.is_empty(),
        "a crash between the two commits must show"
    );
}

#[test]
fn mapped_workloads_run_through_the_direct_path() {
    // Mapped stores reach the trace from the direct-access path (a traced mapping's shadow
    // published by `mapping.rs`); then every mapped workload recovers at every crash point.
    use novafs_engine::media::TraceEvent;
    use novafs_engine::{Engine, FormatOptions, Media};
    let ws = workload::mapped();
    for w in &ws {
        let media = std::sync::Arc::new(Media::traced(4 << 20));
        let e = Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
        let fs = novafs::Fs::from_engine(e, Default::default());
        let mut held = workload::Held::new();
        for op in &w.setup {
            workload::apply_with(&fs, &mut held, op).unwrap();
        }
        media.with_trace(|t| t.enabled = true);
        for op in &w.ops {
            if matches!(op, Op::Remount) {
                break;
            }
            workload::apply_with(&fs, &mut held, op)
                .unwrap_or_else(|e| panic!("{}: '{op}' failed: {e}", w.name));
        }
        let evs = media.with_trace(|t| t.take()).unwrap();
        let direct = evs.iter().any(
            |e| matches!(e, TraceEvent::Store { site, .. } if site.file.ends_with("mapping.rs")),
        );
        assert!(direct, "{}: no store from the direct path", w.name);
    }
    let r = check_all(&ws, &Config::default(), 2);
    summary("mapped", &r);
    assert!(r.failures.is_empty(), "{} failures", r.failures.len());
    assert_eq!(r.workloads, ws.len());
}

#[test]
fn xattr_workloads_do_what_they_say() {
    // The chmod workload's ops all succeed (the ACL is there to be rewritten), and the GC
    // workload's ops include a compaction (the log crosses 64 pages), so the crash points of
    // seq1 cover a compaction of xattr values.
    let ws = workload::xattrs();
    for w in &ws {
        assert_eq!(workload::parse(&w.name, &w.to_text()).unwrap(), *w);
    }
    for w in &ws {
        let media = std::sync::Arc::new(novafs_engine::Media::traced(16 << 20));
        let engine =
            novafs::Engine::format_media(media, &novafs::FormatOptions::default()).unwrap();
        engine.set_gc_config(&novafs_crashtest::harness_gc());
        let fs = novafs::Fs::from_engine(engine, Default::default());
        for op in &w.setup {
            workload::apply(&fs, op).unwrap();
        }
        let before = fs.engine().gc_stats().thorough_runs;
        for op in &w.ops {
            workload::apply(&fs, op).unwrap_or_else(|e| panic!("{}: {op}: {e}", w.name));
        }
        if w.name == "xattr-gc-compact" {
            assert!(
                fs.engine().gc_stats().thorough_runs > before,
                "no compaction during the ops"
            );
        } else {
            assert_eq!(fs.metadata("/A/bar").unwrap().mode() & 0o777, 0o644);
        }
        fs.unmount().unwrap();
    }
}

#[test]
fn grow_is_one_atomic_step() {
    // The workload language reads and prints `grow`; a crash at any point of a grow shows
    // the old size or the new one (the state includes the image's size), recovery and fsck of
    // every crash image agree, and the new blocks carry a file larger than the old image.
    let w = workload::grow_fill();
    assert_eq!(w.ops[0].to_string(), "grow 8388608");
    assert_eq!(workload::parse(&w.name, &w.to_text()).unwrap(), w);
    let r = check(&w, &Config::default());
    summary("grow-fill", &r);
    assert!(r.failures.is_empty(), "{:#?}", r.failures.first());
    assert!(r.crash_points >= 6, "{r:?}");
    assert!(r.deep_checks > 0, "{r:?}");
}

/// A clean unmount leaves every redo write's in-place bytes durable: a clean mount reads no
/// log, so nothing would restore them. The image is the one a power loss right after the
/// unmount leaves (every store never flushed and fenced is dropped). Without the unmount's
/// flush of the inodes' unflushed lines (DESIGN.md §5.1.2) the appends are lost.
#[test]
fn a_clean_unmount_leaves_redo_writes_durable() {
    use novafs::Fs;
    use novafs_crashtest::images::Replay;
    use novafs_engine::media::Media;
    use std::sync::Arc;
    const LEN: u64 = 8 << 20;
    let media = Arc::new(Media::traced(LEN));
    media.with_trace(|t| t.enabled = true);
    let engine = novafs_engine::Engine::format_media(media.clone(), &Default::default()).unwrap();
    let fs = Fs::from_engine(engine, Default::default());
    let f = fs
        .open_options()
        .append(true)
        .create(true)
        .open("/log")
        .unwrap();
    let mut want = Vec::new();
    for i in 0..20u8 {
        // 100 B records: after the first, each is a redo write of partial lines.
        f.append(&[i; 100]).unwrap();
        want.extend_from_slice(&[i; 100]);
    }
    drop(f);
    fs.unmount().unwrap();
    let events = media.with_trace(|t| t.take()).unwrap();
    let mut replay = Replay::new(vec![0; LEN as usize]);
    for (i, e) in events.iter().enumerate() {
        replay.step(i, e);
    }
    let (engine, report) = novafs_recovery::open_media(
        Arc::new(Media::traced_from(replay.durable)),
        &Default::default(),
    )
    .unwrap();
    assert!(report.clean, "the unmount was clean: no log replay");
    let fs = Fs::from_engine(engine, report);
    let got = fs.read("/log").unwrap();
    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert!(
        got.len() == want.len() && differ == 0,
        "{} bytes read, {} expected, {differ} differ",
        got.len(),
        want.len()
    );
}

/// A block freed while it holds an unflushed redo write, then reused by another file's
/// non-temporal data, never shows the stale bytes: the flush before frees (DESIGN.md §5.1.2)
/// makes them durable before the new data, so no crash image after the new write's commit
/// has them over it. Without that flush the crash model (a cached store may be written back
/// at any moment until flushed and fenced) lets them land after the new data. The block is
/// freed by an unlink (`free_inode`) and by a copy-on-write overwrite of its page
/// (`Engine::appended`).
#[test]
fn a_freed_block_never_shows_a_stale_redo_write() {
    use novafs::Fs;
    use novafs_crashtest::images::Replay;
    use novafs_engine::media::Media;
    use std::sync::Arc;
    const LEN: u64 = 8 << 20;
    for unlink in [true, false] {
        let media = Arc::new(Media::traced(LEN));
        media.with_trace(|t| t.enabled = true);
        let engine =
            novafs_engine::Engine::format_media(media.clone(), &Default::default()).unwrap();
        let fs = Fs::from_engine(engine, Default::default());
        let a = fs.create("/a").unwrap();
        a.write_at(&[1; 4096], 0).unwrap();
        a.write_at(&[0xee; 100], 10).unwrap(); // a redo write: partial lines, not flushed
        if unlink {
            drop(a);
            fs.remove_file("/a").unwrap(); // its block goes back to the allocator
        } else {
            a.write_at(&[2; 4096], 0).unwrap(); // copy-on-write: the old block is freed
        }
        let new = [7u8; 4096];
        for i in 0..4 {
            // The freed block is reused by one of these (LIFO reuse of recent frees).
            fs.write(format!("/b{i}"), &new).unwrap();
        }
        let events = media.with_trace(|t| t.take()).unwrap();
        let mut replay = Replay::new(vec![0; LEN as usize]);
        for (i, e) in events.iter().enumerate() {
            replay.step(i, e);
        }
        let choices = replay.choices();
        for pick in choices.sample(8, 1) {
            let (img, _) = choices.build(&replay.durable, &pick);
            let (engine, report) =
                novafs_recovery::open_media(Arc::new(Media::traced_from(img)), &Default::default())
                    .unwrap_or_else(|e| panic!("unlink {unlink}: recovery failed: {e}"));
            let fs = Fs::from_engine(engine, report);
            for i in 0..4 {
                let got = fs.read(format!("/b{i}")).unwrap();
                assert!(got == new, "unlink {unlink}: /b{i} holds stale bytes");
            }
        }
    }
}
