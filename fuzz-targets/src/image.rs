//! Whole-image targets on a patched seed image (traced in-memory backend: no files, no fsync).
//!
//! Input format ([`patched`]): `seed u8` (bit 0: 0 = the seed after a clean unmount, 1 = the
//! same operations stopped by a crash, so mount runs recovery), then patches, each
//! `offset u32 LE (modulo the image size), flags u8, len u8, bytes[len]`. Patch flag bit 0:
//! after writing, recompute the checksum of the record holding `offset` (superblock, mount
//! state, journal slot, inode slot, log-page trailer or log entry), so that damage reaches the
//! checks behind the checksums.

use std::sync::{Arc, OnceLock};

use novafs::{Fs, MountOptions};
use novafs_engine::layout::inode::InodeSlot;
use novafs_engine::layout::journal::{JournalSlot, SLOT_BYTES};
use novafs_engine::layout::{checksum, Kind, BLOCK, INODE_SIZE, JOURNAL_BLOCK, STATE_BLOCK};
use novafs_engine::media::{Media, TraceEvent};
use novafs_engine::{Engine, FormatOptions, ROOT_INO};
use novafs_recovery::fsck::{check_media, FsckOptions};

use crate::decoders::{reseal_entry, reseal_superblock, reseal_trailer};

/// Size of the seed image (the smallest novafs formats).
pub const IMAGE_BYTES: u64 = novafs_engine::layout::MIN_IMAGE_BYTES;
/// Patches applied at most (the rest of the input is ignored).
const MAX_PATCHES: usize = 64;
/// Directory entries the walk visits at most.
const WALK_ENTRIES_MAX: usize = 256;
/// Bytes read per file at most.
const READ_BYTES_MAX: u64 = 64 * 1024;

struct Seed {
    image: Vec<u8>,
    /// Inode-table chunk blocks of the seed (for resealing inode slots).
    chunks: Vec<u64>,
}

/// The two seed images: cleanly unmounted, and crashed.
fn seeds() -> &'static [Seed; 2] {
    static SEEDS: OnceLock<[Seed; 2]> = OnceLock::new();
    SEEDS.get_or_init(|| [make_seed(false), make_seed(true)])
}

fn make_seed(crash: bool) -> Seed {
    let media = Arc::new(Media::traced(IMAGE_BYTES));
    let engine = Engine::format_media(media.clone(), &FormatOptions::default()).expect("format");
    let chunks = engine.chunk_blocks();
    let fs = Fs::from_engine(engine, Default::default());
    fs.create_dir("/d").expect("mkdir");
    fs.write("/a", b"hello, fuzz").expect("write /a");
    let big: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    fs.write("/d/b", &big).expect("write /d/b");
    fs.symlink("/a", "/d/s").expect("symlink");
    fs.hard_link("/a", "/d/h").expect("link");
    fs.create_dir("/d/e").expect("mkdir");
    fs.write("/d/e/long-name-of-more-than-twenty-four-bytes", b"x")
        .expect("write long name");
    fs.rename("/d/h", "/d/e/h2").expect("rename");
    if crash {
        fs.write("/c", b"after the last unmount").expect("write /c");
        fs.crash();
    } else {
        fs.unmount().expect("unmount");
    }
    Seed {
        image: media.snapshot().expect("traced media"),
        chunks,
    }
}

/// The seed image `seed` with raw `(offset, bytes)` patches (no resealing).
pub fn patched_raw(seed: usize, patches: &[(usize, &[u8])]) -> Vec<u8> {
    let mut img = seeds()[seed % 2].image.clone();
    for &(off, bytes) in patches {
        let end = (off + bytes.len()).min(img.len());
        if off < end {
            img[off..end].copy_from_slice(&bytes[..end - off]);
        }
    }
    img
}

/// The image an input describes (see the module documentation).
pub fn patched(data: &[u8]) -> Vec<u8> {
    let which = usize::from(data.first().copied().unwrap_or(0) & 1);
    let seed = &seeds()[which];
    let mut img = seed.image.clone();
    let mut rest = data.get(1..).unwrap_or(&[]);
    for _ in 0..MAX_PATCHES {
        if rest.len() < 6 {
            break;
        }
        let off = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize % img.len();
        let flags = rest[4];
        let len = usize::from(rest[5]).min(rest.len() - 6);
        let bytes = &rest[6..6 + len];
        rest = &rest[6 + len..];
        let end = (off + len).min(img.len());
        img[off..end].copy_from_slice(&bytes[..end - off]);
        if flags & 1 != 0 {
            reseal(&mut img, off, &seed.chunks);
        }
    }
    img
}

/// Recompute the checksum of the record holding byte `off`.
fn reseal(img: &mut [u8], off: usize, chunks: &[u64]) {
    let block_bytes = BLOCK as usize;
    let block = (off / block_bytes) as u64;
    let base = off - off % block_bytes;
    let in_block = off % block_bytes;
    let last = (img.len() / block_bytes - 1) as u64;
    if (block == 0 || block == last) && in_block < 256 {
        let mut sb = [0u8; 256];
        sb.copy_from_slice(&img[base..base + 256]);
        reseal_superblock(&mut sb);
        img[base..base + 256].copy_from_slice(&sb);
    } else if block == STATE_BLOCK && in_block < 64 {
        let c = checksum(&img[base + 8..base + 60]);
        img[base + 60..base + 64].copy_from_slice(&c.to_le_bytes());
    } else if block == JOURNAL_BLOCK {
        let s = base + in_block - in_block % SLOT_BYTES as usize;
        let raw = &mut img[s..s + SLOT_BYTES as usize];
        let mut slot: JournalSlot = bytemuck::pod_read_unaligned(raw);
        slot.csum = slot.compute_csum();
        raw.copy_from_slice(bytemuck::bytes_of(&slot));
    } else if chunks
        .iter()
        .any(|&c| block >= c && block < c + novafs_engine::layout::CHUNK_BLOCKS)
    {
        let s = off - off % INODE_SIZE as usize;
        let raw = &mut img[s..s + INODE_SIZE as usize];
        let slot: InodeSlot = bytemuck::pod_read_unaligned(raw);
        raw.copy_from_slice(bytemuck::bytes_of(&slot.seal()));
    } else if in_block >= 4032 {
        let mut t = [0u8; 64];
        t.copy_from_slice(&img[base + 4032..base + 4096]);
        reseal_trailer(&mut t);
        img[base + 4032..base + 4096].copy_from_slice(&t);
    } else {
        // A log page: entries start at line 0 and follow each other; find the one holding `off`.
        let mut line = 0;
        while line < 63 {
            let at = base + line * 64;
            let lines = usize::from(img[at + 1]);
            if !(1..=5).contains(&lines) || line + lines > 63 {
                break;
            }
            if off < at + lines * 64 {
                reseal_entry(&mut img[at..at + lines * 64]);
                break;
            }
            line += lines;
        }
    }
}

/// Mount `img` and run a bounded walk: every directory (at most [`WALK_ENTRIES_MAX`] entries
/// in all), the first [`READ_BYTES_MAX`] bytes of every file, every symlink, then a few
/// changes (create, write, rename, unlink, mkdir) and a clean unmount. A clean unmount after a
/// successful mount must leave an image that mounts again.
pub fn mount_walk(img: Vec<u8>) {
    let media = Arc::new(Media::traced_from(img));
    let opts = MountOptions {
        recovery_threads: 1,
        ..MountOptions::default()
    };
    let Ok((engine, report)) = novafs_recovery::open_media(media.clone(), &opts) else {
        return;
    };
    let fs = Fs::from_engine(engine, report);
    walk(&fs);
    let _ = fs.write("/fuzz-new", b"written by the fuzz walk");
    let _ = fs.create_dir("/fuzz-dir");
    let _ = fs.rename("/fuzz-new", "/fuzz-dir/moved");
    let _ = fs.write("/a", b"replaced");
    let _ = fs.rename("/d/b", "/b-moved");
    let _ = fs.remove_file("/d/s");
    if fs.unmount().is_err() {
        return;
    }
    let again = Media::traced_from(media.snapshot().expect("traced media"));
    if let Err(e) = novafs_recovery::open_media(Arc::new(again), &opts) {
        panic!("a cleanly unmounted image does not mount again: {e}");
    }
}

fn walk(fs: &Fs) {
    let engine = fs.engine();
    let mut stack = vec![(ROOT_INO, 0u32)];
    let mut budget = WALK_ENTRIES_MAX;
    let mut buf = vec![0u8; READ_BYTES_MAX as usize];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = engine.readdir(dir) else {
            continue;
        };
        for ent in entries {
            if budget == 0 {
                return;
            }
            budget -= 1;
            let Ok(attr) = engine.getattr(ent.ino) else {
                continue;
            };
            match attr.kind {
                Kind::Dir if depth < 16 => stack.push((ent.ino, depth + 1)),
                Kind::File => {
                    let _ = engine.read(ent.ino, 0, &mut buf);
                    if attr.size > READ_BYTES_MAX {
                        let _ = engine.read(ent.ino, attr.size - 1, &mut buf[..1]);
                    }
                }
                Kind::Symlink => {
                    let _ = engine.readlink(ent.ino);
                }
                _ => {}
            }
        }
    }
}

/// `image_walk`: mount the patched seed image, walk it, change it, unmount it.
pub fn image_walk(data: &[u8]) {
    mount_walk(patched(data));
}

/// `fsck`: `fsck -n`, `fsck -y`, `fsck -n` on the patched seed image. `-n` writes nothing;
/// after a `-y` that left no error, the second `-n` finds none and the image mounts.
pub fn fsck(data: &[u8]) {
    let media = Arc::new(Media::traced_from(patched(data)));
    let check = FsckOptions::default();
    // -n must not store: every store of the traced backend is recorded while the trace is on
    // (cheaper than comparing copies of the image, which was a fifth of this target's time).
    media.with_trace(|t| t.enabled = true);
    let first = check_media(media.clone(), &check);
    let stores = media
        .with_trace(|t| {
            t.enabled = false;
            t.take()
                .iter()
                .filter(|e| matches!(e, TraceEvent::Store { .. }))
                .count()
        })
        .expect("traced media");
    assert!(
        stores == 0,
        "fsck -n stored {stores} times (first check: {first:?})"
    );
    let repair = FsckOptions {
        repair: true,
        ..FsckOptions::default()
    };
    let Ok(fixed) = check_media(media.clone(), &repair) else {
        return;
    };
    if fixed.errors_left > 0 {
        return;
    }
    let second = check_media(media.clone(), &check);
    match &second {
        Ok(r) if r.is_clean() => {}
        other => {
            panic!("fsck -y left no error, but fsck -n then says {other:?}; -y said {fixed:?}")
        }
    }
    let opts = MountOptions {
        recovery_threads: 1,
        ..MountOptions::default()
    };
    // The checks hold no reference now: the bytes are taken back without a copy.
    let after = match Arc::try_unwrap(media) {
        Ok(m) => m.into_image().expect("traced media"),
        Err(m) => m.snapshot().expect("traced media"),
    };
    if let Err(e) = novafs_recovery::open_media(Arc::new(Media::traced_from(after)), &opts) {
        panic!("fsck -y left no error, but the image does not mount: {e}; -y said {fixed:?}");
    }
}
