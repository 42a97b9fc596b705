//! One target per on-media decoder. Most inputs start with a flags byte: bit 0 set means
//! "recompute the record's checksum before decoding", so the fuzzer reaches the field checks
//! behind the checksum.

use novafs_engine::inode::{Bounds, InodeState, PageLive};
use novafs_engine::layout::entry::Entry;
use novafs_engine::layout::inode::{InodeSlot, NewInode};
use novafs_engine::layout::journal::{JournalSlot, MAX_ENTRIES, SLOTS, SLOT_BYTES};
use novafs_engine::layout::logpage::{PageTrailer, ENTRY_BYTES};
use novafs_engine::layout::superblock::{Superblock, MAGIC};
use novafs_engine::layout::{checksum, Kind, BLOCK, JOURNAL_BLOCK};
use novafs_engine::media::Media;

/// Line size of log entries.
const LINE_BYTES: usize = 64;

/// `N` bytes from `data` at `at`, zero-padded.
fn take<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = data.get(at..) {
        let n = src.len().min(N);
        out[..n].copy_from_slice(&src[..n]);
    }
    out
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(take::<8>(data, at))
}

fn flags(data: &[u8]) -> u8 {
    data.first().copied().unwrap_or(0)
}

/// Recompute a log entry's checksum in place (crc32 of all its lines, csum field zeroed, salted).
pub fn reseal_entry(buf: &mut [u8]) {
    if buf.len() < 8 {
        return;
    }
    buf[4..8].fill(0);
    let c = checksum(buf);
    buf[4..8].copy_from_slice(&c.to_le_bytes());
}

/// Recompute a log-page trailer's checksum in place (the 64-byte trailer, csum zeroed).
pub fn reseal_trailer(buf: &mut [u8; 64]) {
    buf[16..20].fill(0);
    let c = checksum(&buf[..]);
    buf[16..20].copy_from_slice(&c.to_le_bytes());
}

/// Recompute a superblock's checksum in place.
pub fn reseal_superblock(buf: &mut [u8; 256]) {
    let c = checksum(&buf[..252]);
    buf[252..256].copy_from_slice(&c.to_le_bytes());
}

/// Superblock validation: `flags u8, image_len u64, superblock [256]`. Flag bit 1 forces the
/// magic. Whatever validates must describe a layout that fits the image.
pub fn superblock(data: &[u8]) {
    let f = flags(data);
    let image_len = u64_at(data, 1);
    let mut raw = take::<256>(data, 9);
    if f & 2 != 0 {
        raw[..8].copy_from_slice(&MAGIC);
    }
    if f & 1 != 0 {
        reseal_superblock(&mut raw);
    }
    let sb: Superblock = bytemuck::pod_read_unaligned(&raw);
    if sb.validate("fuzz", image_len).is_ok() {
        let end = sb.blocks_total.checked_mul(BLOCK);
        assert!(
            end.is_some_and(|e| e <= image_len),
            "image too short: {sb:?}"
        );
        assert!(sb.first_free_block < sb.replica_block, "layout: {sb:?}");
        assert_eq!(sb.replica_block, sb.blocks_total - 1);
        assert!(sb.itable_map_blocks.checked_mul(BLOCK).is_some());
        let _ = sb.max_chunks();
    }
}

/// The saved allocator state: `blocks_total u64 (of the seed superblock), chunks u8, state...`.
/// Whatever decodes must be sorted, disjoint extents inside the allocator space and inode
/// ranges inside the inode table.
pub fn saved_state(data: &[u8]) {
    let blocks_total = (u64_at(data, 0) % (1 << 20)).max(256);
    let chunks = u64::from(data.get(8).copied().unwrap_or(1)).max(1);
    let sb = Superblock::new(blocks_total, [0; 16], 0);
    let buf = data.get(9..).unwrap_or(&[]);
    let max_ino = chunks * novafs_engine::layout::INODES_PER_CHUNK;
    // The checksum is made to match, so the parser itself is what the input reaches.
    let ms = novafs_engine::layout::state::MountState {
        saved_csum: novafs_engine::layout::checksum(buf),
        ..bytemuck::Zeroable::zeroed()
    };
    if let Ok(saved) = novafs_engine::layout::saved::decode(&ms, buf, &sb, max_ino) {
        let (extents, inos) = (saved.free_blocks, saved.free_inos);
        let mut prev_end = sb.first_free_block;
        for &(s, l) in &extents {
            assert!(s >= prev_end && l > 0, "extents overlap: {extents:?}");
            prev_end = s + l;
            assert!(prev_end <= sb.replica_block);
        }
        for &(s, l) in &inos {
            assert!(
                s > novafs_engine::ROOT_INO && s + l <= max_ino,
                "inode range {s}+{l}"
            );
        }
    }
}

/// Journal recovery on a 4-block traced region whose journal block holds the input (after the
/// flags byte). Bit 0: reseal every slot's checksum; bit 1: make every slot's commit word
/// match its `n`. Undo addresses are accepted when they name a log tail or head word of the
/// inode-table chunk at block 4 (never the journal itself). After a successful recovery every slot is idle.
pub fn journal_slot(data: &[u8]) {
    let f = flags(data);
    let mut block = take::<{ BLOCK as usize }>(data, 1);
    for s in 0..SLOTS {
        let raw = &mut block[s * SLOT_BYTES as usize..(s + 1) * SLOT_BYTES as usize];
        let mut slot: JournalSlot = bytemuck::pod_read_unaligned(raw);
        if f & 2 != 0 && slot.commit != 0 {
            slot.n %= MAX_ENTRIES as u32 + 1;
            slot.commit = novafs_engine::layout::journal::JOURNAL_ACTIVE | u64::from(slot.n);
        }
        if f & 1 != 0 {
            slot.csum = slot.compute_csum();
        }
        raw.copy_from_slice(bytemuck::bytes_of(&slot));
    }
    // One inode-table chunk at block 4 (blocks 4..36): undo records may name its slots' log
    // tail and head words only.
    let media = Media::traced(40 * BLOCK);
    let off = JOURNAL_BLOCK * BLOCK;
    media.write(off, &block).expect("write inside the region");
    if let Ok(undone) = novafs_recovery::undo::undo_journal(&media, JOURNAL_BLOCK, &[4]) {
        assert!(undone <= SLOTS);
        for s in 0..SLOTS as u64 {
            let w = media
                .load_u64(off + s * SLOT_BYTES)
                .expect("inside the region");
            assert_eq!(w, 0, "slot {s} still active after recovery");
        }
    }
}

/// Inode slot validation: `flags u8, ino u64, slot [128]`.
pub fn inode_slot(data: &[u8]) {
    let f = flags(data);
    let ino = u64_at(data, 1);
    let mut slot: InodeSlot = bytemuck::pod_read_unaligned(&take::<128>(data, 9));
    if f & 1 != 0 {
        slot = slot.seal();
    }
    if let Ok(kind) = slot.validate(ino) {
        assert_eq!(Kind::from_u8(slot.kind), Some(kind));
        assert!(slot.rdev == 0 || kind.is_device());
        assert_eq!(slot.csum, slot.compute_csum());
    }
}

/// Log-page trailer validation: `flags u8, block u64, blocks_total u64, trailer [64]`.
pub fn log_trailer(data: &[u8]) {
    let f = flags(data);
    let block = u64_at(data, 1);
    let blocks_total = u64_at(data, 9);
    let mut raw = take::<64>(data, 17);
    if f & 1 != 0 {
        reseal_trailer(&mut raw);
    }
    let t: PageTrailer = bytemuck::pod_read_unaligned(&raw);
    if t.validate(7, block, blocks_total).is_ok() {
        assert!(t.next != 0 && t.next < blocks_total);
        assert!(u64::from(t.used) <= ENTRY_BYTES && t.used.is_multiple_of(64));
    }
}

/// Log entries of arbitrary lines, decoded in sequence as a log page is (`peek_lines`, then
/// `decode` of that many lines), and replayed into a fresh inode state the way mount does:
/// the file log with `InodeState::apply`, `CacheAttach` entries with `apply_cache` (the write-
/// cache log). Input: `flags u8, kind u8, lines...`. Every decoded entry must re-encode to an
/// entry that decodes to itself.
pub fn log_replay(data: &[u8]) {
    let f = flags(data);
    let kind = Kind::from_u8(1 + data.get(1).copied().unwrap_or(0) % 7).expect("kinds 1..=7");
    let ino = 5;
    let slot = InodeSlot::fresh(NewInode {
        kind,
        generation: 1,
        mode: 0o644,
        uid: 0,
        gid: 0,
        parent: 1,
        ctime_ns: 0,
        rdev: 0,
    });
    let mut st = InodeState::new(ino, &slot, kind);
    let bounds = Bounds { lo: 36, hi: 4095 };
    let mut buf = data.get(2..).unwrap_or(&[]).to_vec();
    let mut pos = 0;
    let mut freed = Vec::new();
    while pos + LINE_BYTES <= buf.len() {
        let Ok(lines) = Entry::peek_lines(&buf[pos..pos + LINE_BYTES], || "fuzz".into()) else {
            break;
        };
        let end = pos + lines * LINE_BYTES;
        if end > buf.len() {
            break;
        }
        if f & 1 != 0 {
            reseal_entry(&mut buf[pos..end]);
        }
        let Ok((entry, seq)) = Entry::decode(&buf[pos..end], || "fuzz".into()) else {
            break;
        };
        let mut again = Vec::new();
        entry.encode(seq, &mut again);
        let round = Entry::decode(&again, || "re-encoded".into());
        assert_eq!(
            round.ok(),
            Some((entry.clone(), seq)),
            "re-encoding changes the entry"
        );
        // Logical log page of this entry (63 lines per page), as the log walk numbers them.
        let at = (pos / ENTRY_BYTES as usize) as u64;
        if st.log.live.len() <= at as usize {
            st.log.live.resize(at as usize + 1, PageLive::default());
        }
        let r = if matches!(entry, Entry::CacheAttach { .. }) {
            st.apply_cache(&entry, bounds)
        } else {
            st.apply(&entry, ino, bounds, &mut freed, at)
        };
        if r.is_err() {
            break;
        }
        pos = end;
    }
    assert_eq!(st.attr().kind, kind, "replay changed the inode's kind");
}

/// The mount state (block 1) of the seed image (cleanly unmounted): `mount_state [64]` with
/// its checksum recomputed (over bytes 8..60), then a mount. The saved allocator state is used
/// only when the record points at it exactly; anything else must mount by rebuilding.
pub fn mount_state(data: &[u8]) {
    let mut raw = take::<64>(data, 0);
    let c = checksum(&raw[8..60]);
    raw[60..64].copy_from_slice(&c.to_le_bytes());
    let img = crate::image::patched_raw(0, &[(BLOCK as usize, &raw[..])]);
    crate::image::mount_walk(img);
}

/// Inode-table map words: `version u32, index u64, word u64`. Whatever decodes to a chunk must
/// re-encode (sealed) to a word that decodes to the same chunk at any version.
pub fn itable_map(data: &[u8]) {
    use novafs_engine::layout::itable_map::{decode, encode, MapWord, SEALED_VERSION};
    let version = u32::from_le_bytes(take::<4>(data, 0));
    let index = u64_at(data, 4);
    let word = u64_at(data, 12);
    if let Ok(MapWord::Chunk(b)) = decode(version, index, word) {
        assert!(b != 0 && b < 1 << 48);
        let sealed = encode(index, b);
        assert_eq!(decode(SEALED_VERSION, index, sealed), Ok(MapWord::Chunk(b)));
        assert_eq!(decode(version, index, sealed), Ok(MapWord::Chunk(b)));
    }
}

/// The log cursor over an arbitrary 16-block region: `head u8, tail u16 (in lines), then the
/// region's bytes` (flag-free; entries and trailers are resealed where the input asks: every
/// 64-byte line whose first byte is 0xA5 is resealed as a trailer). The walk must end (no
/// cycle hangs), yield at most one item per line, and stop at its first error.
pub fn log_cursor(data: &[u8]) {
    use novafs_engine::cursor::LogCursor;
    const BLOCKS: u64 = 16;
    let head = u64::from(data.first().copied().unwrap_or(0)) % BLOCKS;
    let tail =
        u64::from(u16::from_le_bytes(take::<2>(data, 1))) * LINE_BYTES as u64 % (BLOCKS * BLOCK);
    let mut region = vec![0u8; (BLOCKS * BLOCK) as usize];
    let src = data.get(3..).unwrap_or(&[]);
    for (i, chunk) in src.chunks(64).enumerate() {
        // Spread the input over the pages' starts and trailers.
        let page = (i as u64 / 2) % BLOCKS;
        let at = if i % 2 == 0 {
            page * BLOCK
        } else {
            page * BLOCK + BLOCK - 64
        } as usize;
        let mut line = [0u8; 64];
        line[..chunk.len()].copy_from_slice(chunk);
        if i % 2 == 1 && line[0] == 0xA5 {
            line[0] = 0;
            reseal_trailer(&mut line);
        } else if i % 2 == 0 && line[1] == 1 {
            reseal_entry(&mut line);
        }
        region[at..at + 64].copy_from_slice(&line);
    }
    let media = Media::traced_from(region);
    let bounds = Bounds { lo: 1, hi: BLOCKS };
    let mut items = 0u64;
    let mut errors = 0;
    let mut cursor = LogCursor::new(&media, 9, "log", head, tail, bounds);
    for item in cursor.by_ref() {
        match item {
            Ok(i) => {
                items += 1;
                assert!(i.len >= 64 && i.offset + i.len <= ENTRY_BYTES);
            }
            Err(_) => errors += 1,
        }
    }
    assert!(errors <= 1);
    assert!(items <= BLOCKS * BLOCK / 64);
    assert!(cursor.pages().len() as u64 <= BLOCKS);
}
