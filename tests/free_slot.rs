//! A freed inode's slot (DESIGN.md §5.5): its kind word is cleared at free, not a commit, and
//! its flush waits for a batch or the clean unmount. Checked on the traced backend: an unlink
//! neither flushes that word nor fences for it, and a clean unmount has flushed every cleared
//! word before the fence that precedes its clean word (so a clean image's freed slots read
//! free after any crash that follows it).

use std::sync::Arc;

use novafs::{FormatOptions, Fs};
use novafs_engine::media::{Media, TraceEvent};

mod cause;
mod craft;
use craft::*;

/// The kind word of `path`'s slot.
fn kind_word(fs: &Fs, path: &str) -> u64 {
    layout(fs, path).slot_off + 16
}

fn flushes(events: &[TraceEvent], line: u64) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, TraceEvent::Flush { line: l, .. } if *l == line))
        .count()
}

#[test]
fn a_clean_unmount_flushes_the_freed_slots_before_its_clean_word() {
    let media = Arc::new(Media::traced(16 << 20));
    let engine = novafs::Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
    let fs = Fs::from_engine(engine, Default::default());
    fs.create_dir("/d").unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("/d/f{i}")).collect();
    for n in &names {
        fs.write(n, b"x").unwrap();
    }
    let words: Vec<u64> = names.iter().map(|n| kind_word(&fs, n)).collect();
    // The unlinks store each kind word (0) and flush none of them.
    let unlinks = events_of(&media, &fs, |fs| {
        for n in &names {
            fs.remove_file(n).unwrap();
        }
    });
    for &w in &words {
        let cleared = unlinks.iter().any(
            |e| matches!(e, TraceEvent::Store { off, data, .. } if *off == w && data == &[0; 8]),
        );
        assert!(cleared, "the kind word at {w} is cleared");
        assert_eq!(flushes(&unlinks, w / 64 * 64), 0, "no flush of {w} yet");
    }
    // The clean unmount flushes each one, then fences, before it stores the clean word.
    let unmount = events_of(&media, &fs, |fs| fs.engine().unmount().unwrap());
    drop(fs);
    // The clean word is the unmount's last store; the fence before it makes what precedes it
    // durable first.
    let clean_word = unmount
        .iter()
        .rposition(|e| matches!(e, TraceEvent::Store { .. }))
        .expect("the unmount stores its clean word");
    let fence = unmount[..clean_word]
        .iter()
        .rposition(|e| matches!(e, TraceEvent::Fence { .. }))
        .expect("a fence before the clean word");
    for &w in &words {
        assert_eq!(
            flushes(&unmount[..fence], w / 64 * 64),
            1,
            "the kind word at {w} is flushed before the clean word's fence"
        );
    }
    // fsck finds the image clean (a freed slot whose kind word were not cleared would be
    // an unreachable slot in use).
    let r = novafs_recovery::fsck::check_media(media, &Default::default()).unwrap();
    assert!(r.was_clean, "{r:?}");
    assert_eq!(r.errors_found, 0, "{r:?}");
}

#[test]
fn a_full_batch_of_freed_slots_is_flushed_at_once() {
    let media = Arc::new(Media::traced(32 << 20));
    let engine = novafs::Engine::format_media(media.clone(), &FormatOptions::default()).unwrap();
    let fs = Fs::from_engine(engine, Default::default());
    fs.create_dir("/d").unwrap();
    // More than one batch (512): the first batch's words are flushed by the unlink that
    // fills it, the rest wait for the unmount.
    let names: Vec<String> = (0..600).map(|i| format!("/d/f{i}")).collect();
    for n in &names {
        fs.create(n).unwrap();
    }
    let words: Vec<u64> = names.iter().map(|n| kind_word(&fs, n)).collect();
    let unlinks = events_of(&media, &fs, |fs| {
        for n in &names {
            fs.remove_file(n).unwrap();
        }
    });
    let flushed = words
        .iter()
        .filter(|&&w| flushes(&unlinks, w / 64 * 64) > 0)
        .count();
    assert_eq!(flushed, 512, "one full batch flushed during the unlinks");
    let unmount = events_of(&media, &fs, |fs| fs.engine().unmount().unwrap());
    drop(fs);
    let late = words
        .iter()
        .filter(|&&w| flushes(&unmount, w / 64 * 64) > 0)
        .count();
    assert!(late >= 600 - 512, "the rest flushed at unmount ({late})");
}
