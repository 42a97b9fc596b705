//! Crash images from a persistence trace.
//!
//! The model (x86 with ADR, `../shared/design-brief.md` §4): a store to a cache line is durable
//! once the line was flushed after it and a fence followed; until then the line may still be
//! written back at any moment (even unflushed), so what survives of a line is a **prefix**, in
//! program order, of its pending 8-byte units. Non-temporal stores bypass the cache: each of
//! their pending units survives or not independently until the next fence. An aligned 8-byte
//! store is one unit, hence atomic.
//!
//! [`Replay`] walks the trace keeping the durable image and the pending units; at a crash point
//! [`Replay::choices`] describes the images allowed, which are enumerated exhaustively or
//! sampled.

use std::collections::BTreeMap;

use novafs_engine::media::{TraceEvent, TraceSite};

/// One pending 8-byte unit write.
#[derive(Clone, Debug)]
pub struct UnitWrite {
    /// Region offset of the unit (8-aligned).
    pub unit: u64,
    /// Which bytes of the unit this store wrote.
    pub mask: u8,
    /// The bytes (only those in `mask` matter).
    pub bytes: [u8; 8],
    /// Where it was issued.
    pub site: TraceSite,
    /// Index of the store event in the trace.
    pub event: usize,
}

impl UnitWrite {
    fn apply(&self, img: &mut [u8]) {
        let base = self.unit as usize;
        for i in 0..8 {
            if self.mask & (1 << i) != 0 {
                img[base + i] = self.bytes[i];
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Line {
    writes: Vec<UnitWrite>,
    /// Writes `[..flushed]` were flushed (durable at the next fence).
    flushed: usize,
}

/// The allowed images at a crash point: for each line a prefix length, for each pending
/// non-temporal unit in or out.
#[derive(Clone, Debug)]
pub struct Choices {
    /// Pending writes per line (program order).
    pub lines: Vec<Vec<UnitWrite>>,
    /// Pending non-temporal unit writes.
    pub nt: Vec<UnitWrite>,
    /// Every pending write as (line index, or `u32::MAX` for [`Choices::nt`]; position),
    /// sorted by (unit, event): computed once per crash point, so that a pick's image is a
    /// walk over it, not a sort per image.
    order: Vec<(u32, u32)>,
}

/// A choice: prefix length per line, and a bit per NT unit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pick {
    /// Prefix length for each line of [`Choices::lines`].
    pub prefixes: Vec<usize>,
    /// Whether each NT unit of [`Choices::nt`] survived.
    pub nt: Vec<bool>,
}

impl Choices {
    /// The number of distinct picks (saturating).
    pub fn total(&self) -> u128 {
        let mut t: u128 = 1;
        for l in &self.lines {
            t = t.saturating_mul(l.len() as u128 + 1);
        }
        for _ in &self.nt {
            t = t.saturating_mul(2);
        }
        t
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.nt.is_empty()
    }

    /// Every pick, in mixed-radix order (call only when `total()` is small).
    pub fn all(&self) -> Vec<Pick> {
        let total = self.total() as usize;
        let mut out = Vec::with_capacity(total);
        let mut pick = Pick {
            prefixes: vec![0; self.lines.len()],
            nt: vec![false; self.nt.len()],
        };
        for _ in 0..total {
            out.push(pick.clone());
            // increment
            let mut carry = true;
            for (i, l) in self.lines.iter().enumerate() {
                if !carry {
                    break;
                }
                pick.prefixes[i] += 1;
                if pick.prefixes[i] > l.len() {
                    pick.prefixes[i] = 0;
                } else {
                    carry = false;
                }
            }
            for b in pick.nt.iter_mut() {
                if !carry {
                    break;
                }
                *b = !*b;
                carry = !*b;
            }
        }
        out
    }

    /// `n` seeded samples, always including "nothing" and "everything"; biased to keep the
    /// units of one store together (all, none or a random subset) so that sampling reaches the
    /// interesting metadata orders.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<Pick> {
        let mut x = seed | 1;
        let mut rnd = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if m == 0 {
                0
            } else {
                x % m
            }
        };
        let none = Pick {
            prefixes: vec![0; self.lines.len()],
            nt: vec![false; self.nt.len()],
        };
        let every = Pick {
            prefixes: self.lines.iter().map(Vec::len).collect(),
            nt: vec![true; self.nt.len()],
        };
        let mut out = vec![none, every];
        while out.len() < n.max(2) {
            let prefixes = self
                .lines
                .iter()
                .map(|l| match rnd(3) {
                    0 => 0,
                    1 => l.len(),
                    _ => rnd(l.len() as u64 + 1) as usize,
                })
                .collect();
            let mut nt = vec![false; self.nt.len()];
            let mut i = 0;
            while i < self.nt.len() {
                let ev = self.nt[i].event;
                let mode = rnd(3);
                while i < self.nt.len() && self.nt[i].event == ev {
                    nt[i] = match mode {
                        0 => false,
                        1 => true,
                        _ => rnd(2) == 1,
                    };
                    i += 1;
                }
            }
            out.push(Pick { prefixes, nt });
        }
        out
    }

    /// The final value of every unit a pick touches (sorted by unit), and the writes that
    /// survived — without copying the image.
    pub fn overlay<'a>(
        &'a self,
        durable: &[u8],
        pick: &Pick,
    ) -> (Vec<(u64, [u8; 8])>, Vec<&'a UnitWrite>) {
        let mut applied: Vec<&UnitWrite> = Vec::new();
        for (l, &k) in self.lines.iter().zip(&pick.prefixes) {
            applied.extend(&l[..k]);
        }
        for (w, &on) in self.nt.iter().zip(&pick.nt) {
            if on {
                applied.push(w);
            }
        }
        // Program order decides between a non-temporal and a cached store to the same bytes.
        applied.sort_by_key(|w| w.event);
        let mut units: BTreeMap<u64, [u8; 8]> = BTreeMap::new();
        for w in &applied {
            let v = units.entry(w.unit).or_insert_with(|| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&durable[w.unit as usize..w.unit as usize + 8]);
                b
            });
            for (i, (dst, src)) in v.iter_mut().zip(w.bytes).enumerate() {
                if w.mask & (1 << i) != 0 {
                    *dst = src;
                }
            }
        }
        (units.into_iter().collect(), applied)
    }

    fn new(lines: Vec<Vec<UnitWrite>>, nt: Vec<UnitWrite>) -> Choices {
        let mut keyed: Vec<(u64, usize, u32, u32)> = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            for (k, w) in l.iter().enumerate() {
                keyed.push((w.unit, w.event, i as u32, k as u32));
            }
        }
        for (k, w) in nt.iter().enumerate() {
            keyed.push((w.unit, w.event, u32::MAX, k as u32));
        }
        keyed.sort_unstable();
        Choices {
            lines,
            nt,
            order: keyed.into_iter().map(|(_, _, i, k)| (i, k)).collect(),
        }
    }

    /// The units a pick leaves different from `durable`, with their final values, sorted by
    /// unit: the image `durable + out` is the one [`Choices::overlay`] describes (units whose
    /// final value equals the durable one are left out). Per unit, the surviving writes apply
    /// in program order (a non-temporal and a cached store to the same bytes are ordered by
    /// their events, as in `overlay`).
    pub fn overlay_into(&self, durable: &[u8], pick: &Pick, out: &mut Vec<(u64, [u8; 8])>) {
        out.clear();
        let load = |unit: u64| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&durable[unit as usize..unit as usize + 8]);
            u64::from_le_bytes(b)
        };
        // The unit being built: (unit, durable value, value).
        let mut cur: Option<(u64, u64, u64)> = None;
        for &(i, k) in &self.order {
            let w = if i == u32::MAX {
                if !pick.nt[k as usize] {
                    continue;
                }
                &self.nt[k as usize]
            } else {
                if k as usize >= pick.prefixes[i as usize] {
                    continue;
                }
                &self.lines[i as usize][k as usize]
            };
            let m = BYTE_MASKS[w.mask as usize];
            let bytes = u64::from_le_bytes(w.bytes) & m;
            match &mut cur {
                Some((u, _, v)) if *u == w.unit => *v = (*v & !m) | bytes,
                _ => {
                    if let Some((u, d, v)) = cur {
                        if v != d {
                            out.push((u, v.to_le_bytes()));
                        }
                    }
                    let d = load(w.unit);
                    cur = Some((w.unit, d, (d & !m) | bytes));
                }
            }
        }
        if let Some((u, d, v)) = cur {
            if v != d {
                out.push((u, v.to_le_bytes()));
            }
        }
    }

    /// Precompute, for this crash point's durable image, what every pick's image needs, so
    /// that [`Prepared::image`] builds a pick's image and key without touching `durable`:
    /// - a line whose units no other pending write touches (the common case): for each prefix
    ///   length, how many of its changed units it keeps and their key share (a prefix of a
    ///   list);
    /// - a non-temporal store whose units no other pending write touches: its changed units
    ///   and their key shares (all, none, or unit by unit);
    /// - every other unit: its pending writes in program order, merged per pick.
    pub fn prepare<'a>(&'a self, durable: &'a [u8]) -> Prepared<'a> {
        // How many pending writes each unit has (`order` is sorted by unit).
        let mut writes_of: std::collections::HashMap<u64, u32> = Default::default();
        for &at in &self.order {
            *writes_of.entry(self.write(at).unit).or_default() += 1;
        }
        let alone = |w: &UnitWrite| writes_of[&w.unit] == 1;
        let change = |w: &UnitWrite| {
            let d = load_unit(durable, w.unit);
            let m = BYTE_MASKS[w.mask as usize];
            let v = (d & !m) | (u64::from_le_bytes(w.bytes) & m);
            (v != d).then(|| Changed {
                unit: w.unit,
                value: v,
                key: unit_key(w.unit, v),
            })
        };
        let mut covered: std::collections::HashSet<u64> = Default::default();
        let mut lines = Vec::new();
        for (i, l) in self.lines.iter().enumerate() {
            if !l.iter().all(alone) {
                continue;
            }
            let mut seg = LineSeg {
                line: i,
                changed: Vec::new(),
                upto: vec![(0, 0, 0)],
            };
            for w in l {
                covered.insert(w.unit);
                let (mut n, mut ka, mut kb) = *seg.upto.last().unwrap_or(&(0, 0, 0));
                if let Some(ch) = change(w) {
                    seg.changed.push(ch);
                    n += 1;
                    ka = ka.wrapping_add(ch.key.0);
                    kb = kb.wrapping_add(ch.key.1);
                }
                seg.upto.push((n, ka, kb));
            }
            lines.push(seg);
        }
        let mut nts = Vec::new();
        let mut s = 0;
        while s < self.nt.len() {
            let ev = self.nt[s].event;
            let mut e = s + 1;
            while e < self.nt.len() && self.nt[e].event == ev {
                e += 1;
            }
            let ws = &self.nt[s..e];
            if ws.iter().all(alone) {
                let units: Vec<Option<Changed>> = ws.iter().map(change).collect();
                let (mut ka, mut kb, mut c) = (0u64, 0u64, 0u64);
                for ch in units.iter().flatten() {
                    ka = ka.wrapping_add(ch.key.0);
                    kb = kb.wrapping_add(ch.key.1);
                    c += 1;
                }
                covered.extend(ws.iter().map(|w| w.unit));
                nts.push(NtSeg {
                    start: s,
                    all: units
                        .iter()
                        .flatten()
                        .map(|ch| (ch.unit, ch.value))
                        .collect(),
                    all_key: (ka, kb, c),
                    units,
                });
            }
            s = e;
        }
        // The rest, unit by unit.
        let mut groups = Vec::new();
        let mut s = 0;
        while s < self.order.len() {
            let unit = self.write(self.order[s]).unit;
            let mut e = s + 1;
            while e < self.order.len() && self.write(self.order[e]).unit == unit {
                e += 1;
            }
            if !covered.contains(&unit) {
                groups.push(Group {
                    unit,
                    start: s as u32,
                    end: e as u32,
                    durable: load_unit(durable, unit),
                });
            }
            s = e;
        }
        Prepared {
            c: self,
            lines,
            nts,
            groups,
        }
    }

    fn write(&self, (i, k): (u32, u32)) -> &UnitWrite {
        if i == u32::MAX {
            &self.nt[k as usize]
        } else {
            &self.lines[i as usize][k as usize]
        }
    }

    /// Apply a pick to a copy of `durable`; returns the image and the unit writes that
    /// survived.
    pub fn build<'a>(&'a self, durable: &[u8], pick: &Pick) -> (Vec<u8>, Vec<&'a UnitWrite>) {
        let (units, applied) = self.overlay(durable, pick);
        let mut img = durable.to_vec();
        for (u, v) in units {
            img[u as usize..u as usize + 8].copy_from_slice(&v);
        }
        (img, applied)
    }
}

fn load_unit(durable: &[u8], unit: u64) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&durable[unit as usize..unit as usize + 8]);
    u64::from_le_bytes(b)
}

/// A unit a write changes: its final value and key share.
#[derive(Clone, Copy)]
struct Changed {
    unit: u64,
    value: u64,
    key: (u64, u64),
}

/// A line none of whose units another pending write touches.
struct LineSeg {
    line: usize,
    /// The units its writes change, in program order.
    changed: Vec<Changed>,
    /// Per prefix length k: how many entries of `changed` the first k writes make, and
    /// their key sums.
    upto: Vec<(usize, u64, u64)>,
}

/// A non-temporal store none of whose units another pending write touches.
struct NtSeg {
    /// Its first unit write in [`Choices::nt`].
    start: usize,
    /// Per unit write: the change it makes, if any.
    units: Vec<Option<Changed>>,
    /// Every change (all units kept) and its key sums and count.
    all: Vec<(u64, u64)>,
    all_key: (u64, u64, u64),
}

/// The other pending writes of one unit: `order[start..end]`.
struct Group {
    unit: u64,
    start: u32,
    end: u32,
    /// The unit's durable value.
    durable: u64,
}

/// A crash point's choices prepared for building many picks' images ([`Choices::prepare`]).
pub struct Prepared<'a> {
    c: &'a Choices,
    lines: Vec<LineSeg>,
    nts: Vec<NtSeg>,
    groups: Vec<Group>,
}

impl Prepared<'_> {
    /// The units `pick` leaves different from the durable image, with their final values
    /// (each unit once, in no particular order), and the image's key (as [`image_key`]).
    pub fn image(&self, pick: &Pick, out: &mut Vec<(u64, [u8; 8])>) -> u128 {
        out.clear();
        let c = self.c;
        let (mut a, mut b, mut n) = (0u64, 0u64, 0u64);
        let mut add = |ka: u64, kb: u64, k: u64| {
            a = a.wrapping_add(ka);
            b = b.wrapping_add(kb);
            n += k;
        };
        for seg in &self.lines {
            let (cnt, ka, kb) = seg.upto[pick.prefixes[seg.line]];
            out.extend(
                seg.changed[..cnt]
                    .iter()
                    .map(|ch| (ch.unit, ch.value.to_le_bytes())),
            );
            add(ka, kb, cnt as u64);
        }
        for seg in &self.nts {
            let bits = &pick.nt[seg.start..seg.start + seg.units.len()];
            if bits.iter().all(|&x| x) {
                out.extend(seg.all.iter().map(|&(u, v)| (u, v.to_le_bytes())));
                add(seg.all_key.0, seg.all_key.1, seg.all_key.2);
            } else {
                for (ch, _) in seg.units.iter().zip(bits).filter(|(_, &on)| on) {
                    if let Some(ch) = ch {
                        out.push((ch.unit, ch.value.to_le_bytes()));
                        add(ch.key.0, ch.key.1, 1);
                    }
                }
            }
        }
        let included = |(i, k): (u32, u32)| {
            if i == u32::MAX {
                pick.nt[k as usize]
            } else {
                (k as usize) < pick.prefixes[i as usize]
            }
        };
        for g in &self.groups {
            let mut v = g.durable;
            for &at in &c.order[g.start as usize..g.end as usize] {
                if included(at) {
                    let w = c.write(at);
                    let m = BYTE_MASKS[w.mask as usize];
                    v = (v & !m) | (u64::from_le_bytes(w.bytes) & m);
                }
            }
            if v != g.durable {
                out.push((g.unit, v.to_le_bytes()));
                let (ka, kb) = unit_key(g.unit, v);
                add(ka, kb, 1);
            }
        }
        finish_key(a, b, n)
    }
}

/// For each 8-bit byte mask, the 64-bit mask of those bytes.
const BYTE_MASKS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut m = 0;
    while m < 256 {
        let mut b = 0;
        while b < 8 {
            if m & (1 << b) != 0 {
                t[m] |= 0xff << (8 * b);
            }
            b += 1;
        }
        m += 1;
    }
    t
};

/// Walks a trace.
pub struct Replay {
    /// The durable image so far.
    pub durable: Vec<u8>,
    lines: BTreeMap<u64, Line>,
    nt: Vec<UnitWrite>,
    /// Units made durable since the last [`Replay::drain_durable_units`].
    newly_durable: Vec<u64>,
}

fn units(off: u64, data: &[u8], site: TraceSite, event: usize, mut f: impl FnMut(UnitWrite)) {
    let mut pos = off;
    let end = off + data.len() as u64;
    while pos < end {
        let unit = pos & !7;
        let mut w = UnitWrite {
            unit,
            mask: 0,
            bytes: [0; 8],
            site,
            event,
        };
        let stop = end.min(unit + 8);
        while pos < stop {
            let i = (pos - unit) as usize;
            w.mask |= 1 << i;
            w.bytes[i] = data[(pos - off) as usize];
            pos += 1;
        }
        f(w);
    }
}

impl Replay {
    /// Start from a durable image.
    pub fn new(durable: Vec<u8>) -> Replay {
        Replay {
            durable,
            lines: BTreeMap::new(),
            nt: Vec::new(),
            newly_durable: Vec::new(),
        }
    }

    /// Feed one event (`Mark`s are ignored here).
    pub fn step(&mut self, index: usize, ev: &TraceEvent) {
        match ev {
            TraceEvent::Store {
                off,
                data,
                nt,
                site,
            } => {
                if *nt {
                    let nts = &mut self.nt;
                    units(*off, data, *site, index, |w| nts.push(w));
                } else {
                    let lines = &mut self.lines;
                    units(*off, data, *site, index, |w| {
                        lines.entry(w.unit & !63).or_default().writes.push(w)
                    });
                }
            }
            TraceEvent::Flush { line, .. } => {
                if let Some(l) = self.lines.get_mut(line) {
                    l.flushed = l.writes.len();
                }
            }
            TraceEvent::Fence { .. } => {
                let mut done: Vec<UnitWrite> = self.nt.drain(..).collect();
                self.lines.retain(|_, l| {
                    done.extend(l.writes.drain(..l.flushed));
                    l.flushed = 0;
                    !l.writes.is_empty()
                });
                done.sort_by_key(|w| w.event);
                for w in &done {
                    w.apply(&mut self.durable);
                    self.newly_durable.push(w.unit);
                }
            }
            // The file's new size is durable before the event (Media::grow): every image from
            // here on is that long, the new bytes zero.
            TraceEvent::Grow { len, .. } => {
                let len = *len as usize;
                if len > self.durable.len() {
                    self.durable.resize(len, 0);
                }
            }
            TraceEvent::Mark(_) => {}
        }
    }

    /// Bring a copy of the durable image up to date: the units made durable since the last
    /// call, and the length if the image grew.
    pub fn sync_copy(&mut self, copy: &mut Vec<u8>) {
        if copy.len() < self.durable.len() {
            copy.resize(self.durable.len(), 0);
        }
        for u in self.drain_durable_units() {
            let r = u as usize..u as usize + 8;
            copy[r.clone()].copy_from_slice(&self.durable[r]);
        }
    }

    /// The units that became durable since the last call (to keep a copy of `durable` in
    /// sync without copying it whole).
    pub fn drain_durable_units(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.newly_durable)
    }

    /// What may survive a crash now.
    pub fn choices(&self) -> Choices {
        Choices::new(
            self.lines.values().map(|l| l.writes.clone()).collect(),
            self.nt.clone(),
        )
    }

    /// The image if everything pending survived (what a reader sees now).
    pub fn current(&self) -> Vec<u8> {
        let c = self.choices();
        let every = Pick {
            prefixes: c.lines.iter().map(Vec::len).collect(),
            nt: vec![true; c.nt.len()],
        };
        c.build(&self.durable, &every).0
    }
}

/// 64-bit finalizer (murmur3's fmix64).
fn fmix(mut z: u64) -> u64 {
    z ^= z >> 33;
    z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^= z >> 33;
    z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

/// One changed unit's contribution to an image key: two independently mixed lanes.
fn unit_key(unit: u64, v: u64) -> (u64, u64) {
    (
        fmix(fmix(v ^ 0x243f_6a88_85a3_08d3) ^ unit),
        fmix(fmix(unit ^ 0x1319_8a2e_0370_7344).wrapping_add(v.rotate_left(32))),
    )
}

fn finish_key(a: u64, b: u64, n: u64) -> u128 {
    (fmix(a ^ n) as u128) << 64 | fmix(b.wrapping_add(n)) as u128
}

/// 128-bit hash of an image given as `durable` plus an overlay (units distinct): only the
/// units whose final value differs from `durable` count, so equal images hash equal. The
/// sum of each changed unit's two-lane mix (order does not matter), so that
/// [`Prepared::image`] can precompute a unit's share.
pub fn image_key(durable: &[u8], overlay: &[(u64, [u8; 8])]) -> u128 {
    let (mut a, mut b, mut n) = (0u64, 0u64, 0u64);
    for (u, v) in overlay {
        let v = u64::from_le_bytes(*v);
        if v != load_unit(durable, *u) {
            let (ka, kb) = unit_key(*u, v);
            a = a.wrapping_add(ka);
            b = b.wrapping_add(kb);
            n += 1;
        }
    }
    finish_key(a, b, n)
}

/// A 64-bit key of a whole image. Not a CRC: a CRC is linear, and the CRC of a record that
/// ends with its own CRC32 (a superblock, an inode slot, a log entry) is the same constant
/// whatever the record holds, so the CRC of an image does not change when such a record does
/// (found when a grow's new primary superblock left the image's CRC32 as it was, and the
/// harness reused the state recovered from the image before it).
pub fn image_hash(bytes: &[u8]) -> u64 {
    let mut h = Mix::default();
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h.word(u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    h.word(u64::from_le_bytes(tail));
    h.word(bytes.len() as u64);
    h.finish()
}

/// Two lanes of multiply-xor-rotate over 8-byte words: not linear over GF(2) (the
/// multiplications carry), several GB/s.
struct Mix {
    a: u64,
    b: u64,
    n: u64,
}

impl Default for Mix {
    fn default() -> Mix {
        Mix {
            a: 0x243f_6a88_85a3_08d3,
            b: 0x1319_8a2e_0370_7344,
            n: 0,
        }
    }
}

impl Mix {
    #[inline(always)]
    fn word(&mut self, w: u64) {
        if self.n & 1 == 0 {
            self.a = (self.a ^ w)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        } else {
            self.b = (self.b ^ w)
                .wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
                .rotate_left(31);
        }
        self.n += 1;
    }

    fn finish(&self) -> u64 {
        let mut x = self.a ^ self.b.rotate_left(32) ^ self.n;
        x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod litmus {
    //! Small traces with hand-derived allowed and forbidden images.
    use super::*;

    fn site() -> TraceSite {
        TraceSite {
            file: "litmus",
            line: 0,
        }
    }
    fn st(off: u64, data: &[u8]) -> TraceEvent {
        TraceEvent::Store {
            off,
            data: data.to_vec(),
            nt: false,
            site: site(),
        }
    }
    fn nt(off: u64, data: &[u8]) -> TraceEvent {
        TraceEvent::Store {
            off,
            data: data.to_vec(),
            nt: true,
            site: site(),
        }
    }
    fn fl(line: u64) -> TraceEvent {
        TraceEvent::Flush { line, site: site() }
    }
    fn fe() -> TraceEvent {
        TraceEvent::Fence { site: site() }
    }

    fn images(events: &[TraceEvent]) -> Vec<Vec<u8>> {
        let mut r = Replay::new(vec![0; 256]);
        for (i, e) in events.iter().enumerate() {
            r.step(i, e);
        }
        let c = r.choices();
        let mut v: Vec<Vec<u8>> = c.all().iter().map(|p| c.build(&r.durable, p).0).collect();
        v.sort();
        v.dedup();
        v
    }

    fn img(pairs: &[(usize, u8)]) -> Vec<u8> {
        let mut v = vec![0; 256];
        for &(i, b) in pairs {
            v[i] = b;
        }
        v
    }

    #[test]
    fn same_line_stores_persist_as_a_prefix() {
        // A then B in one line, unflushed: {}, {A}, {A,B}; never {B} alone.
        let imgs = images(&[st(0, &[1]), st(8, &[2])]);
        assert_eq!(imgs.len(), 3);
        assert!(imgs.contains(&img(&[])));
        assert!(imgs.contains(&img(&[(0, 1)])));
        assert!(imgs.contains(&img(&[(0, 1), (8, 2)])));
        assert!(!imgs.contains(&img(&[(8, 2)])));
    }

    #[test]
    fn different_lines_are_independent() {
        let imgs = images(&[st(0, &[1]), st(64, &[2])]);
        assert_eq!(imgs.len(), 4);
        assert!(imgs.contains(&img(&[(64, 2)])));
    }

    #[test]
    fn flushed_and_fenced_is_durable_store_after_flush_is_not() {
        let imgs = images(&[st(0, &[1]), fl(0), fe(), st(8, &[2])]);
        assert_eq!(imgs, vec![img(&[(0, 1)]), img(&[(0, 1), (8, 2)])]);
        // Flushed but not fenced: still optional.
        let imgs = images(&[st(0, &[1]), fl(0)]);
        assert_eq!(imgs.len(), 2);
        // Store after the flush, then a fence: the later store stays pending.
        let imgs = images(&[st(0, &[1]), fl(0), st(8, &[2]), fe()]);
        assert_eq!(imgs, vec![img(&[(0, 1)]), img(&[(0, 1), (8, 2)])]);
    }

    #[test]
    fn eight_byte_units_do_not_tear_but_wider_stores_do() {
        let v = [7u8; 8];
        let imgs = images(&[st(8, &v)]);
        assert_eq!(imgs.len(), 2, "an aligned 8-byte store is atomic");
        let w = [9u8; 16];
        let imgs = images(&[st(8, &w)]);
        assert_eq!(
            imgs.len(),
            3,
            "a 16-byte store is two units: none, first, both"
        );
        let unaligned = [5u8; 8];
        let imgs = images(&[st(4, &unaligned)]);
        assert_eq!(imgs.len(), 3, "an unaligned 8-byte store spans two units");
    }

    #[test]
    fn non_temporal_units_are_any_subset_until_a_fence() {
        let imgs = images(&[nt(0, &[1; 16]), nt(64, &[2; 8])]);
        assert_eq!(imgs.len(), 8);
        assert!(imgs.contains(&{
            let mut v = img(&[]);
            v[8..16].fill(1);
            v
        }));
        let imgs = images(&[nt(0, &[1; 16]), fe()]);
        assert_eq!(imgs.len(), 1);
    }

    #[test]
    fn eadr_prefixes_of_the_global_order() {
        // Under eADR a crash keeps a prefix of all stores: after A(line 0), B(line 1) there are
        // exactly 3 images, and {B} alone is impossible (it is possible under ADR).
        let evs = [st(0, &[1]), st(64, &[2])];
        let mut r = Replay::new(vec![0; 256]);
        let mut eadr = vec![r.current()];
        for (i, e) in evs.iter().enumerate() {
            r.step(i, e);
            eadr.push(r.current());
        }
        assert_eq!(eadr.len(), 3);
        assert!(!eadr.contains(&img(&[(64, 2)])));
        assert!(images(&evs).contains(&img(&[(64, 2)])));
    }

    #[test]
    fn keys_identify_equal_images() {
        let mut r = Replay::new(vec![0; 256]);
        r.step(0, &st(0, &[1]));
        r.step(1, &st(0, &[0])); // back to the durable value
        let c = r.choices();
        let picks = c.all();
        let keys: Vec<u128> = picks
            .iter()
            .map(|p| image_key(&r.durable, &c.overlay(&r.durable, p).0))
            .collect();
        assert_eq!(
            keys[0], keys[2],
            "durable and 'both stores' are the same image"
        );
        assert_ne!(keys[0], keys[1]);
    }

    #[test]
    fn overlay_into_and_prepared_build_the_same_images_as_build() {
        // Cached and non-temporal stores to the same units in both orders, a rewrite back to
        // the durable value, stores across units and lines: every pick's `overlay_into` image
        // is `build`'s, and the keys of equal images agree (and differ otherwise).
        let evs = [
            st(0, &[1; 12]),
            nt(8, &[2; 8]),
            st(8, &[3; 4]),
            st(64, &[4; 8]),
            fl(64),
            fe(),
            nt(64, &[5; 8]),
            st(64, &[6; 8]),
            st(72, &[0; 8]),
            st(130, &[7; 20]),
            nt(200, &[8; 16]),
            st(224, &[0; 8]),
            st(232, &[9; 8]),
        ];
        let mut r = Replay::new(vec![0; 256]);
        for (i, e) in evs.iter().enumerate() {
            r.step(i, e);
        }
        let c = r.choices();
        let picks = c.all();
        assert!(picks.len() > 100, "{}", picks.len());
        let mut out = Vec::new();
        let prepared = c.prepare(&r.durable);
        let mut by_image: std::collections::HashMap<Vec<u8>, u128> = Default::default();
        let mut keys = std::collections::HashSet::new();
        for p in &picks {
            let (want, _) = c.build(&r.durable, p);
            c.overlay_into(&r.durable, p, &mut out);
            let mut got = r.durable.clone();
            for (u, v) in &out {
                assert_ne!(
                    &r.durable[*u as usize..*u as usize + 8],
                    v,
                    "an unchanged unit"
                );
                got[*u as usize..*u as usize + 8].copy_from_slice(v);
            }
            assert_eq!(got, want, "{p:?}");
            let key = image_key(&r.durable, &out);
            assert_eq!(key, image_key(&r.durable, &c.overlay(&r.durable, p).0));
            let mut fast = Vec::new();
            assert_eq!(prepared.image(p, &mut fast), key, "{p:?}");
            fast.sort_by_key(|&(u, _)| u);
            assert_eq!(fast, out, "{p:?}");
            assert_eq!(*by_image.entry(want).or_insert(key), key);
            keys.insert(key);
        }
        assert_eq!(keys.len(), by_image.len(), "distinct images, distinct keys");
    }
}

#[cfg(test)]
mod keys {
    use super::*;

    #[test]
    fn an_image_hash_sees_a_record_that_carries_its_own_crc() {
        // Two images that differ only in a 256-byte record ending with its CRC32: equal
        // CRC32s (the harness's old key), different hashes.
        let record = |fill: u8| {
            let mut r = vec![fill; 256];
            let c = crc32fast::hash(&r[..252]);
            r[252..].copy_from_slice(&c.to_le_bytes());
            r
        };
        let mut a = vec![0u8; 8192];
        let mut b = a.clone();
        a[..256].copy_from_slice(&record(1));
        b[..256].copy_from_slice(&record(2));
        assert_eq!(crc32fast::hash(&a), crc32fast::hash(&b));
        assert_ne!(image_hash(&a), image_hash(&b));
        assert_ne!(image_hash(&a), image_hash(&a[..4096]));
        let ov = |v: u8| vec![(0u64, [v; 8])];
        assert_ne!(image_key(&a, &ov(7)), image_key(&a, &ov(8)));
        assert_eq!(
            image_key(&a, &ov(1)),
            image_key(&a, &[]),
            "units equal to durable"
        );
    }
}
