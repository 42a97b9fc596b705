//! `novafs inspect`: decode the on-media structures of an image.
//!
//! It reads the image file directly (positioned reads, no mapping, no lock, nothing written):
//! it works on an image another process has mounted (a FUSE mount, say), showing what is
//! durable at the moment of each read; on a live image the views of different structures
//! may be from slightly different moments.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::fs::FileExt;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use novafs::{Kind, BLOCK, ROOT_INO};
use novafs_engine::cursor::{ImageRead, LogCursor};
use novafs_engine::layout::entry::{attr_mask, Entry};
use novafs_engine::layout::inode::InodeSlot;
use novafs_engine::layout::itable_map::{self, MapWord};
use novafs_engine::layout::logpage::{PageTrailer, TRAILER_OFFSET};
use novafs_engine::layout::state::MountState;
use novafs_engine::layout::superblock::Superblock;
use novafs_engine::layout::Bounds;
use novafs_engine::layout::{INODES_PER_CHUNK, INODE_SIZE};
use serde_json::{json, Value};

use crate::error::{CliError, CliResult, Context};
use crate::units::utc_timestamp;

/// What to show.
pub enum Target {
    /// The superblock, mount state and inode table.
    Superblock,
    /// One inode: slot, attributes, log entries.
    Inode(u64),
    /// One block: what it is and who owns it.
    Block(u64),
    /// The inode a path names (symlinks not followed).
    Path(std::path::PathBuf),
}

/// A decoded log: (page, offset in page, seq, entry) in order, the pages of the chain, and
/// where the walk stopped on damage.
type Walk = (Vec<(u64, u64, u64, Entry)>, Vec<u64>, Option<String>);

/// Positioned reads of the image file.
struct Raw {
    file: File,
    len: u64,
    sb: Superblock,
    chunks: Vec<u64>,
}

impl Raw {
    fn open(image: &Path) -> CliResult<Raw> {
        let file = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
        let len = file.metadata().context("stat")?.len();
        let mut raw = Raw {
            file,
            len,
            sb: bytemuck::Zeroable::zeroed(),
            chunks: Vec::new(),
        };
        raw.sb = raw.pod(0)?;
        if raw.sb.magic != novafs_engine::layout::superblock::MAGIC {
            return Err(CliError::new(
                image.display().to_string(),
                "not a novafs image (bad magic)",
            ));
        }
        let map_bytes = raw.sb.itable_map_blocks.saturating_mul(BLOCK);
        let mut map = vec![0u8; usize::try_from(map_bytes.min(64 << 20)).unwrap_or(0)];
        raw.read(raw.sb.itable_map_start.saturating_mul(BLOCK), &mut map)?;
        // The map's decoder (sealed words); the walk stops at its end or its first bad word.
        let version = raw.sb.version;
        raw.chunks = map
            .chunks_exact(8)
            .enumerate()
            .map(|(i, c)| {
                let word = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                itable_map::decode(version, i as u64, word)
            })
            .map_while(|w| match w {
                Ok(MapWord::Chunk(b)) => Some(b),
                Ok(MapWord::End) | Err(_) => None,
            })
            .collect();
        Ok(raw)
    }

    fn read(&self, off: u64, buf: &mut [u8]) -> CliResult<()> {
        if off.saturating_add(buf.len() as u64) > self.len {
            return Err(CliError::new(
                format!("offset {off}"),
                "past the end of the image file",
            ));
        }
        self.file
            .read_exact_at(buf, off)
            .with_context(|| format!("reading offset {off}"))
    }

    fn pod<T: bytemuck::Pod>(&self, off: u64) -> CliResult<T> {
        let mut buf = vec![0u8; size_of::<T>()];
        self.read(off, &mut buf)?;
        Ok(bytemuck::pod_read_unaligned(&buf))
    }

    fn slot_off(&self, ino: u64) -> Option<u64> {
        let chunk = *self
            .chunks
            .get(usize::try_from(ino / INODES_PER_CHUNK).ok()?)?;
        chunk
            .checked_mul(BLOCK)?
            .checked_add((ino % INODES_PER_CHUNK) * INODE_SIZE)
    }

    fn slot(&self, ino: u64) -> CliResult<InodeSlot> {
        let off = self
            .slot_off(ino)
            .ok_or_else(|| CliError::new(format!("inode {ino}"), "beyond the inode table"))?;
        self.pod(off)
    }

    /// Walk a log from `head` to `tail` with the engine's log cursor: (page, offset in page,
    /// seq, entry) in order, plus the pages. Stops at the first damaged spot, reporting it.
    fn walk(&self, ino: u64, which: &'static str, head: u64, tail: u64) -> Walk {
        // The file's length bounds the walk (the superblock's block count is untrusted).
        let bounds = Bounds {
            lo: 1,
            hi: (self.len / BLOCK).max(2),
        };
        let mut cursor = LogCursor::new(self, ino, which, head, tail, bounds);
        let mut entries = Vec::new();
        let mut damage = None;
        for item in cursor.by_ref() {
            match item {
                Ok(i) => entries.push((i.page, i.offset, i.seq, i.entry)),
                Err(e) => {
                    damage = Some(e.to_string());
                    break;
                }
            }
        }
        (entries, cursor.into_pages().into_vec(), damage)
    }
}

impl ImageRead for Raw {
    fn read_at(&self, off: u64, buf: &mut [u8]) -> novafs_engine::Result<()> {
        self.read(off, buf)
            .map_err(|e| novafs::EngineError::corrupt(e.to_string(), format!("offset {off}")))
    }
}

fn kind_name(k: u8) -> &'static str {
    match Kind::from_u8(k) {
        Some(kind) => kind.name(),
        None if k == 0 => "free",
        None => "invalid",
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One log entry as JSON.
fn entry_json(page: u64, pos: u64, seq: u64, e: &Entry) -> Value {
    let mut v = match e {
        Entry::Write {
            pgoff,
            block,
            num_pages,
            size,
            mtime_ns,
        } => json!({"type": "write", "pgoff": pgoff, "block": block, "num_pages": num_pages,
                    "hole": *block == 0, "size": size, "mtime_ns": mtime_ns}),
        Entry::WriteRedo {
            pgoff,
            block,
            at,
            data,
            size,
            mtime_ns,
        } => json!({"type": "write_redo", "pgoff": pgoff, "block": block, "at": at,
                    "len": data.len(), "size": size, "mtime_ns": mtime_ns}),
        Entry::SetAttr(a) => {
            let mut o = json!({"type": "setattr", "mask": a.mask});
            let m = o.as_object_mut().expect("object");
            let fields: [(u32, &str, Value); 7] = [
                (attr_mask::MODE, "mode", format!("{:04o}", a.mode).into()),
                (attr_mask::UID, "uid", a.uid.into()),
                (attr_mask::GID, "gid", a.gid.into()),
                (attr_mask::SIZE, "size", a.size.into()),
                (attr_mask::ATIME, "atime_ns", a.atime_ns.into()),
                (attr_mask::MTIME, "mtime_ns", a.mtime_ns.into()),
                (attr_mask::CTIME, "ctime_ns", a.ctime_ns.into()),
            ];
            for (bit, name, val) in fields {
                if a.mask & bit != 0 {
                    m.insert(name.into(), val);
                }
            }
            o
        }
        Entry::Link {
            nlink,
            ctime_ns,
            parent,
        } => json!({"type": "link", "nlink": nlink, "ctime_ns": ctime_ns, "parent": parent}),
        Entry::DirAdd {
            ino,
            kind,
            name,
            mtime_ns,
        } => json!({"type": "dir_add", "ino": ino, "kind": kind_name(*kind as u8),
                    "name": lossy(name), "mtime_ns": mtime_ns}),
        Entry::DirRemove {
            ino,
            name,
            mtime_ns,
        } => json!({"type": "dir_remove", "ino": ino, "name": lossy(name), "mtime_ns": mtime_ns}),
        Entry::CacheAttach {
            pgoff,
            block,
            atomic,
        } => json!({"type": "cache_attach", "pgoff": pgoff, "block": block, "atomic": atomic}),
        Entry::XattrSet {
            name,
            value_len,
            inline,
            ctime_ns,
        } => json!({"type": "xattr_set", "name": lossy(name), "value_len": value_len,
                    "inline_len": inline.len(), "ctime_ns": ctime_ns}),
        Entry::XattrChunk { offset, data } => {
            json!({"type": "xattr_chunk", "offset": offset, "len": data.len()})
        }
        Entry::XattrRemove { name, ctime_ns } => {
            json!({"type": "xattr_remove", "name": lossy(name), "ctime_ns": ctime_ns})
        }
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("seq".into(), seq.into());
        o.insert("page".into(), page.into());
        o.insert("offset".into(), pos.into());
    }
    v
}

/// One log entry as a line of text.
fn entry_text(v: &Value) -> String {
    let o = v.as_object().expect("object");
    let mut s = format!(
        "  #{:<5} {:>8}+{:<4} {:<12}",
        o["seq"],
        o["page"],
        o["offset"],
        o["type"].as_str().unwrap_or("?")
    );
    for (k, val) in o {
        if !["seq", "page", "offset", "type"].contains(&k.as_str()) {
            let shown = match val {
                Value::String(x) => x.clone(),
                other => other.to_string(),
            };
            s.push_str(&format!(" {k}={shown}"));
        }
    }
    s
}

fn superblock_json(raw: &Raw) -> CliResult<Value> {
    let sb = &raw.sb;
    let st: MountState = raw.pod(sb.state_block.saturating_mul(BLOCK))?;
    let replica: Option<Superblock> = raw.pod(sb.replica_block.saturating_mul(BLOCK)).ok();
    Ok(json!({
        "superblock": {
            "magic": lossy(&sb.magic[..6]),
            "version": sb.version,
            "block_size": sb.block_size,
            "blocks_total": sb.blocks_total,
            "uuid": hex(&sb.uuid),
            "format_time_ns": sb.format_time_ns,
            "format_time": utc_timestamp(sb.format_time_ns),
            "itable_map_start": sb.itable_map_start,
            "itable_map_blocks": sb.itable_map_blocks,
            "chunk_blocks": sb.chunk_blocks,
            "inodes_per_chunk": sb.inodes_per_chunk,
            "journal_block": sb.journal_block,
            "state_block": sb.state_block,
            "first_free_block": sb.first_free_block,
            "replica_block": sb.replica_block,
            "csum": format!("{:08x}", sb.csum),
            "replica_matches": replica.is_some_and(|r| r == *sb),
        },
        "mount_state": {
            "clean": st.clean != 0,
            "saved_block": st.saved_block,
            "saved_blocks": st.saved_blocks,
            "saved_len": st.saved_len,
            "mount_count": st.mount_count,
            "csum": format!("{:08x}", st.csum),
        },
        "inode_table_chunks": raw.chunks,
        "inode_slots": raw.chunks.len() as u64 * INODES_PER_CHUNK,
    }))
}

fn inode_json(raw: &Raw, ino: u64) -> CliResult<Value> {
    let slot = raw.slot(ino)?;
    let off = raw.slot_off(ino).expect("checked by slot");
    let (entries, pages, damage) = raw.walk(ino, "log", slot.log_head, slot.log_tail);
    let (centries, cpages, cdamage) = raw.walk(ino, "cache log", slot.cache_head, slot.cache_tail);
    Ok(json!({
        "ino": ino,
        "slot_offset": off,
        "kind": kind_name(slot.kind),
        "generation": slot.generation,
        "mode": format!("{:04o}", slot.mode),
        "uid": slot.uid,
        "gid": slot.gid,
        "parent_at_creation": slot.parent,
        "created": utc_timestamp(slot.ctime_ns),
        "csum": format!("{:08x}", slot.csum),
        "log_head": slot.log_head,
        "log_tail": slot.log_tail,
        "log_pages": pages,
        "log_entries": entries.iter().map(|(p, o, s, e)| entry_json(*p, *o, *s, e)).collect::<Vec<_>>(),
        "log_damage": damage,
        "cache_head": slot.cache_head,
        "cache_tail": slot.cache_tail,
        "cache_pages": cpages,
        "cache_entries": centries.iter().map(|(p, o, s, e)| entry_json(*p, *o, *s, e)).collect::<Vec<_>>(),
        "cache_damage": cdamage,
    }))
}

/// Resolve a path by walking directory logs (symlinks not followed).
fn resolve(raw: &Raw, path: &Path) -> CliResult<u64> {
    let mut cur = ROOT_INO;
    for comp in path.iter() {
        let name = comp.as_encoded_bytes();
        if name == b"/" || name == b"." {
            continue;
        }
        let slot = raw.slot(cur)?;
        let (entries, _, _) = raw.walk(cur, "log", slot.log_head, slot.log_tail);
        let mut dir: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for (_, _, _, e) in entries {
            match e {
                Entry::DirAdd { ino, name, .. } => {
                    dir.insert(name.to_vec(), ino);
                }
                Entry::DirRemove { name, .. } => {
                    dir.remove(&name[..]);
                }
                _ => {}
            }
        }
        cur = if name == b".." {
            slot.parent
        } else {
            *dir.get(name)
                .ok_or_else(|| CliError::new(path.display().to_string(), "not found"))?
        };
    }
    Ok(cur)
}

fn block_json(raw: &Raw, block: u64) -> CliResult<Value> {
    let sb = &raw.sb;
    if block >= sb.blocks_total.min(raw.len / BLOCK) {
        return Err(CliError::new(
            format!("block {block}"),
            format!("beyond the image ({} blocks)", sb.blocks_total),
        ));
    }
    let fixed = match block {
        0 => Some("superblock (primary)".to_string()),
        b if b == sb.state_block => Some("mount state".into()),
        b if b == sb.journal_block => Some("journal".into()),
        b if b >= sb.itable_map_start
            && b < sb.itable_map_start.saturating_add(sb.itable_map_blocks) =>
        {
            Some("inode-table map".into())
        }
        b if b == sb.replica_block => Some("superblock (replica)".into()),
        _ => None,
    };
    let mut first = vec![0u8; 64];
    raw.read(block * BLOCK, &mut first)?;
    let mut v = json!({"block": block, "first_bytes": hex(&first)});
    let o = v.as_object_mut().expect("object");
    if let Some(f) = fixed {
        o.insert("owner".into(), f.into());
        return Ok(v);
    }
    for (i, &c) in raw.chunks.iter().enumerate() {
        if block >= c && block < c.saturating_add(u64::from(sb.chunk_blocks)) {
            let first_ino = i as u64 * INODES_PER_CHUNK + (block - c) * BLOCK / INODE_SIZE;
            o.insert(
                "owner".into(),
                format!(
                    "inode-table chunk {i} (inodes {first_ino}..{})",
                    first_ino + BLOCK / INODE_SIZE - 1
                )
                .into(),
            );
            return Ok(v);
        }
    }
    // Search every inode's logs and file map (a progress bar on a terminal).
    let slots = raw.chunks.len() as u64 * INODES_PER_CHUNK;
    let pb = (std::io::stderr().is_terminal() && slots > 4096).then(|| {
        let pb = ProgressBar::new(slots);
        pb.set_style(
            ProgressStyle::with_template("scanning inodes [{bar:40}] {pos}/{len} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    });
    let mut owners = Vec::new();
    for ino in 1..slots {
        if let Some(pb) = &pb {
            if ino % 1024 == 0 {
                pb.set_position(ino);
            }
        }
        let Ok(slot) = raw.slot(ino) else { continue };
        if slot.kind == 0 {
            continue;
        }
        let (entries, pages, _) = raw.walk(ino, "log", slot.log_head, slot.log_tail);
        if pages.contains(&block) {
            owners.push(json!({"ino": ino, "as": "log page"}));
        }
        let (centries, cpages, _) = raw.walk(ino, "cache log", slot.cache_head, slot.cache_tail);
        if cpages.contains(&block) {
            owners.push(json!({"ino": ino, "as": "write-cache log page"}));
        }
        for (_, _, _, e) in &centries {
            if let Entry::CacheAttach {
                pgoff, block: b, ..
            } = e
            {
                if *b == block {
                    owners.push(json!({"ino": ino, "as": "write-cache page", "pgoff": pgoff}));
                }
            }
        }
        // The live file map: replay Write and size entries.
        let mut map: BTreeMap<u64, u64> = BTreeMap::new();
        for (_, _, _, e) in &entries {
            match e {
                Entry::Write {
                    pgoff,
                    block: b,
                    num_pages,
                    ..
                } => {
                    for i in 0..u64::from(*num_pages) {
                        if *b == 0 {
                            map.remove(&(pgoff + i));
                        } else {
                            map.insert(pgoff + i, b + i);
                        }
                    }
                }
                Entry::SetAttr(a) if a.mask & attr_mask::SIZE != 0 => {
                    let keep = a.size.div_ceil(BLOCK);
                    map.retain(|&p, _| p < keep);
                }
                _ => {}
            }
        }
        if let Some((pg, _)) = map.iter().find(|(_, &b)| b == block) {
            owners.push(json!({"ino": ino, "as": "file data", "pgoff": pg}));
        }
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if raw
        .pod::<PageTrailer>(block * BLOCK + TRAILER_OFFSET)
        .is_ok_and(|t| t.magic == novafs_engine::layout::logpage::TRAILER_MAGIC)
    {
        o.insert("log_page_trailer".into(), true.into());
    }
    let free = owners.is_empty();
    o.insert("owners".into(), owners.into());
    o.insert(
        "owner".into(),
        if free {
            "none (free, or saved allocator state)".into()
        } else {
            "see owners".into()
        },
    );
    Ok(v)
}

/// `novafs inspect`.
pub fn run(image: &Path, target: Target, as_json: bool) -> CliResult<()> {
    let raw = Raw::open(image)?;
    let v = match &target {
        Target::Superblock => superblock_json(&raw)?,
        Target::Inode(ino) => inode_json(&raw, *ino)?,
        Target::Path(p) => inode_json(&raw, resolve(&raw, p)?)?,
        Target::Block(b) => block_json(&raw, *b)?,
    };
    let mut out = crate::commands::Out::new();
    if as_json {
        out.line(serde_json::to_string_pretty(&v).context("encoding JSON")?)?;
        return out.finish();
    }
    // Text: "key  value" lines; log entries one per line.
    fn flat(out: &mut crate::commands::Out, prefix: &str, v: &Value) -> CliResult<()> {
        let Some(o) = v.as_object() else {
            return Ok(());
        };
        for (k, val) in o {
            match val {
                Value::Object(_) => {
                    out.line(format!("{prefix}{k}:"))?;
                    flat(out, &format!("{prefix}  "), val)?;
                }
                Value::Array(items) if items.first().is_some_and(Value::is_object) => {
                    out.line(format!("{prefix}{k}: {}", items.len()))?;
                    for it in items {
                        if it.get("seq").is_some() {
                            out.line(format!("{prefix}{}", entry_text(it)))?;
                        } else {
                            out.line(format!("{prefix}  {it}"))?;
                        }
                    }
                }
                Value::Null => {}
                Value::String(s) => out.line(format!("{prefix}{k:<20} {s}"))?,
                other => out.line(format!("{prefix}{k:<20} {other}"))?,
            }
        }
        Ok(())
    }
    flat(&mut out, "", &v)?;
    out.finish()
}
