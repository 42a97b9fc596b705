//! Direct-access mapping primitives (DESIGN §5.4.1): address-space reservations whose pages map
//! image blocks, the traced backend's shadow buffers, and [`VolatileSlice`], the only way safe
//! code touches mapped memory.
//!
//! Mapped memory is shared with the engine, with other mappings of the same blocks and with
//! other threads, so no `&[u8]` or `&mut [u8]` into it is ever created: every access is an
//! aligned 8-byte atomic access ([`copy_in`]/[`copy_out`] and the word atomics), the one kind
//! of access whose races the Rust memory model defines. The image region (`raw.rs`) copies
//! with the same primitives.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::FlushKind;
use crate::error::{Error, Result};

/// The page size of a mapping (the block size; checked against the host's at reservation).
pub const PAGE: usize = 4096;

const MAP_SYNC: libc::c_int = 0x80000;
const MAP_SHARED_VALIDATE: libc::c_int = 0x03;

fn os_err() -> Error {
    Error::Io(std::io::Error::last_os_error())
}

/// A view of mapped memory: bounds-checked copies made of aligned 8-byte atomic accesses
/// (defined when they race with other threads' stores: each word is old or new), atomics on
/// aligned 8-byte words, and the raw address for callers that take the rules below on
/// themselves. (The name is historical: the copies were volatile before they were atomic.)
///
/// Rules for raw use of [`VolatileSlice::as_ptr`] (dereferencing it is `unsafe` in the
/// caller): stay within `[as_ptr(), as_ptr() + len())`; store only into pages made writable
/// (`prepare_write`), else the store faults (SIGSEGV) like any store to read-only memory; never
/// create references (`&T`/`&mut T`) to the memory, only raw, volatile or atomic accesses
/// (another mapping, thread or the engine may change it at any time); an access that may race
/// with another (the engine's `read_at` of the page, another thread or mapping) must be an
/// aligned 8-byte atomic (`AtomicU64::from_ptr`), as this type's copies are, else the race is
/// undefined behaviour in Rust's memory model (in practice: a torn value); synchronise with
/// other writers yourself; stop before the mapping is dropped (the addresses are unmapped then).
#[derive(Clone, Copy)]
pub struct VolatileSlice<'a> {
    ptr: *mut u8,
    len: usize,
    _life: PhantomData<&'a [AtomicU64]>,
}

impl std::fmt::Debug for VolatileSlice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolatileSlice")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: a VolatileSlice only performs aligned 8-byte atomic accesses to memory that lives as
// long as `'a`; sharing it between threads is like sharing `&[AtomicU64]`.
unsafe impl Send for VolatileSlice<'_> {}
// SAFETY: as above.
unsafe impl Sync for VolatileSlice<'_> {}

fn range_err(off: usize, n: usize, len: usize) -> Error {
    Error::InvalidArgument(format!(
        "access [{off}, {}) outside the mapped {len} bytes",
        off.saturating_add(n)
    ))
}

impl<'a> VolatileSlice<'a> {
    /// # Safety
    /// `ptr..ptr+len` must stay mapped and readable for `'a`, and only ever be accessed
    /// through atomic operations (or raw accesses under the type's rules).
    unsafe fn new(ptr: *mut u8, len: usize) -> VolatileSlice<'a> {
        VolatileSlice {
            ptr,
            len,
            _life: PhantomData,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first byte's address (see the type's docs for the rules of raw use).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn check(&self, off: usize, n: usize) -> Result<()> {
        match off.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(range_err(off, n, self.len)),
        }
    }

    /// The sub-slice `[off, off + len)`.
    pub fn subslice(&self, off: usize, len: usize) -> Result<VolatileSlice<'a>> {
        self.check(off, len)?;
        // SAFETY: in bounds (checked), so the sub-range has the same validity as `self`.
        Ok(unsafe { VolatileSlice::new(self.ptr.add(off), len) })
    }

    /// Copy `buf.len()` bytes at `off` out (aligned 8-byte atomic loads; unaligned edges
    /// from the words containing them).
    pub fn read(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        self.check(off, buf.len())?;
        // SAFETY: `off + len <= self.len` (checked); the source is valid for reads for 'a
        // (type invariant); `buf` is a distinct DRAM buffer owned by the caller.
        unsafe { copy_out(self.ptr.add(off), buf) };
        Ok(())
    }

    /// Copy `data` in at `off` (aligned 8-byte atomic stores; unaligned edges by
    /// compare-exchange of the words containing them, keeping their other bytes). The pages
    /// must be writable (prepared), else the store faults.
    pub fn write(&self, off: usize, data: &[u8]) -> Result<()> {
        self.check(off, data.len())?;
        // SAFETY: `off + len <= self.len` (checked); writability of the pages is the
        // documented precondition of the safe API (a store to a read-only page faults with
        // SIGSEGV, it never corrupts memory); atomic stores never create `&mut`.
        unsafe { copy_in(self.ptr.add(off), data) };
        Ok(())
    }

    fn word(&self, off: usize) -> Result<&'a AtomicU64> {
        self.check(off, 8)?;
        if !(self.ptr as usize + off).is_multiple_of(8) {
            return Err(Error::InvalidArgument(format!(
                "8-byte atomic at unaligned offset {off}"
            )));
        }
        // SAFETY: in bounds and 8-byte aligned (checked); AtomicU64 has the layout of u64 and
        // all accesses to this memory are atomic (type invariant), so a shared
        // atomic reference is sound for 'a.
        Ok(unsafe { &*(self.ptr.add(off) as *const AtomicU64) })
    }

    /// An aligned, failure-atomic 8-byte load (Acquire).
    pub fn load_u64(&self, off: usize) -> Result<u64> {
        Ok(self.word(off)?.load(Ordering::Acquire))
    }

    /// An aligned, failure-atomic 8-byte store (Release): the commit primitive (durable after
    /// persist).
    pub fn store_u64(&self, off: usize, v: u64) -> Result<()> {
        self.word(off)?.store(v, Ordering::Release);
        Ok(())
    }

    /// Compare-and-exchange of an aligned word (AcqRel); `Err(current)` if it was not `old`.
    pub fn compare_exchange_u64(&self, off: usize, old: u64, new: u64) -> Result<Result<u64, u64>> {
        Ok(self
            .word(off)?
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire))
    }

    /// Atomic add to an aligned word (AcqRel); returns the previous value.
    pub fn fetch_add_u64(&self, off: usize, v: u64) -> Result<u64> {
        Ok(self.word(off)?.fetch_add(v, Ordering::AcqRel))
    }

    /// Write back the cache lines of `[off, off + len)` (no fence).
    pub fn flush(&self, off: usize, len: usize, kind: FlushKind) -> Result<()> {
        self.check(off, len)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: `off + len <= self.len` (checked): the range lies in the slice's mapped
        // pages (type invariant).
        unsafe { flush_lines(self.ptr as usize + off, len, kind) };
        Ok(())
    }

    /// `msync(MS_SYNC)` of the pages covering `[off, off + len)` (msync mode).
    pub fn msync(&self, off: usize, len: usize) -> Result<()> {
        self.check(off, len)?;
        if len == 0 {
            return Ok(());
        }
        let start = (self.ptr as usize + off) & !(PAGE - 1);
        let end = (self.ptr as usize + off + len).div_ceil(PAGE) * PAGE;
        // SAFETY: the pages covering a valid slice are mapped (reservations are whole pages);
        // msync has no effect on memory contents.
        let rc = unsafe { libc::msync(start as *mut libc::c_void, end - start, libc::MS_SYNC) };
        if rc != 0 {
            return Err(os_err());
        }
        Ok(())
    }
}

// ----- Copies defined under concurrency -----
//
// Every byte copy to or from memory that another thread, mapping or process may access at
// the same time (the image region, a direct-access mapping, a shadow) is made of aligned
// 8-byte atomic accesses (`Relaxed`), the one access size the program's own commit words
// (`store_u64`, `compare_exchange_u64`) use too: a copy racing with a store is then defined by
// the Rust memory model (each word is old or new, never torn), not a data race. Unaligned
// edges use the 8-byte word that contains them: a load of the whole word (the bytes wanted
// are extracted), a compare-exchange loop for a store (the neighbouring bytes, which may be
// another writer's, are kept). The containing word lies in the same page as the bytes
// (pages are 8-aligned), so it is mapped whenever they are. Ordering across copies comes from
// the callers' locks, or from flush + fence for persistence; a copy is not a synchronisation
// point. The middle compiles to plain 8-byte moves (`Relaxed` atomics on x86-64 are `mov`).

/// The aligned word containing the address `a`.
///
/// # Safety
/// The 8 bytes at `a & !7` must be mapped for as long as the reference is used (they are
/// whenever the byte at `a` is: same page), and accessed only atomically while it lives.
#[inline(always)]
unsafe fn word_at<'x>(a: usize) -> &'x AtomicU64 {
    // SAFETY: aligned (masked), mapped (caller); AtomicU64 has the layout of u64.
    unsafe { AtomicU64::from_ptr((a & !7) as *mut u64) }
}

/// Mask of the bytes `[lo, hi)` (0 <= lo < hi <= 8) of a little-endian word.
#[inline(always)]
fn byte_mask(lo: usize, hi: usize) -> u64 {
    let ones = if hi - lo == 8 {
        u64::MAX
    } else {
        (1u64 << ((hi - lo) * 8)) - 1
    };
    ones << (lo * 8)
}

/// Whether aligned 16-byte `movdqa` loads are single atomic accesses: Intel and AMD promise it
/// on every CPU with AVX (Intel SDM vol. 3 §9.1.1); older CPUs make no promise, so copies there
/// stay word by word.
#[cfg(target_arch = "x86_64")]
fn wide_loads_are_atomic() -> bool {
    static AVX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX.get_or_init(|| std::arch::is_x86_feature_detected!("avx"))
}

/// Copy `dst.len()` bytes of shared memory at `src` out (aligned 8-byte atomic loads; see
/// the section comment). On x86-64 CPUs with AVX the aligned middle is read 128 bytes a step
/// with aligned 16-byte loads, which those CPUs perform atomically and which Rust cannot emit
/// for atomics: about 0.9x memcpy instead of 0.75x with 8-byte loads (`cargo bench --bench
/// direct`, sequential load).
///
/// # Safety
/// The pages covering `src..src + dst.len()` must be mapped and readable for the call, and
/// `dst` must not overlap them.
pub(super) unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    let a = src as usize;
    let mut i = 0;
    let head = (8 - (a & 7)) & 7;
    if head != 0 {
        // SAFETY: the word containing `a` is in the page of `a` (caller: mapped).
        let w = unsafe { word_at(a) }.load(Ordering::Relaxed).to_le_bytes();
        let k = head.min(n);
        dst[..k].copy_from_slice(&w[a & 7..(a & 7) + k]);
        i = k;
    }
    // The aligned middle: `words` whole words from `a + i` (8-aligned), counted in words so
    // that the loop does no checked arithmetic (overflow checks are on in release builds).
    let words = (n - i) / 8;
    // SAFETY: `i <= n`: the offsets stay inside `dst` and the mapped source range.
    let (sp, dp) = unsafe { ((a + i) as *const u64, dst.as_mut_ptr().add(i) as *mut u64) };
    let mut k = 0;
    #[cfg(target_arch = "x86_64")]
    if wide_loads_are_atomic() {
        if (sp as usize) & 15 != 0 && words > 0 {
            // One word first, so that the 16-byte loads are 16-byte aligned.
            // SAFETY: word 0 of the aligned middle (caller: mapped; `dst` owned).
            unsafe {
                let w = AtomicU64::from_ptr(sp as *mut u64).load(Ordering::Relaxed);
                dp.write_unaligned(w);
            }
            k = 1;
        }
        let blocks = (words - k) / 16;
        if blocks > 0 {
            // SAFETY: `blocks * 128` bytes from `sp + k` (16-byte aligned) lie in the aligned
            // middle of the mapped source (caller) and from `dp + k` inside `dst`. Each
            // `movdqa` is an aligned 16-byte load, which CPUs with AVX (checked above)
            // promise to carry out atomically: at least as strong as the two relaxed
            // `AtomicU64` loads below it replaces (the compiler cannot widen atomic loads
            // itself). Stores go to `dst`, which the caller owns (unaligned `movdqu`). The
            // prefetches are hints (they never fault, even past the mapping). The asm touches
            // only these bytes, its three registers, xmm0..xmm7 and the flags.
            unsafe {
                std::arch::asm!(
                    "2:",
                    "prefetcht0 [{s} + 2048]",
                    "prefetcht0 [{s} + 2112]",
                    "movdqa xmm0, [{s}]",
                    "movdqa xmm1, [{s} + 16]",
                    "movdqa xmm2, [{s} + 32]",
                    "movdqa xmm3, [{s} + 48]",
                    "movdqa xmm4, [{s} + 64]",
                    "movdqa xmm5, [{s} + 80]",
                    "movdqa xmm6, [{s} + 96]",
                    "movdqa xmm7, [{s} + 112]",
                    "movdqu [{d}], xmm0",
                    "movdqu [{d} + 16], xmm1",
                    "movdqu [{d} + 32], xmm2",
                    "movdqu [{d} + 48], xmm3",
                    "movdqu [{d} + 64], xmm4",
                    "movdqu [{d} + 80], xmm5",
                    "movdqu [{d} + 96], xmm6",
                    "movdqu [{d} + 112], xmm7",
                    "add {s}, 128",
                    "add {d}, 128",
                    "dec {n}",
                    "jnz 2b",
                    s = inout(reg) sp.add(k) => _,
                    d = inout(reg) dp.add(k) => _,
                    n = inout(reg) blocks => _,
                    out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
                    out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
                    options(nostack),
                );
            }
            k += blocks * 16;
        }
    }
    while k + 8 <= words {
        // SAFETY: words `k .. k + 8` lie in the aligned middle of the mapped source (caller)
        // and of `dst` (unaligned stores into DRAM the caller owns). The prefetch is a hint
        // (no access, never faults, even past the mapping).
        unsafe {
            #[cfg(target_arch = "x86_64")]
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                sp.wrapping_add(k + 64) as *const i8,
            );
            let w =
                |j: usize| AtomicU64::from_ptr(sp.add(k + j) as *mut u64).load(Ordering::Relaxed);
            let (w0, w1, w2, w3) = (w(0), w(1), w(2), w(3));
            let (w4, w5, w6, w7) = (w(4), w(5), w(6), w(7));
            dp.add(k).write_unaligned(w0);
            dp.add(k + 1).write_unaligned(w1);
            dp.add(k + 2).write_unaligned(w2);
            dp.add(k + 3).write_unaligned(w3);
            dp.add(k + 4).write_unaligned(w4);
            dp.add(k + 5).write_unaligned(w5);
            dp.add(k + 6).write_unaligned(w6);
            dp.add(k + 7).write_unaligned(w7);
        }
        k += 8;
    }
    while k < words {
        // SAFETY: as above, one word.
        unsafe {
            let w = AtomicU64::from_ptr(sp.add(k) as *mut u64).load(Ordering::Relaxed);
            dp.add(k).write_unaligned(w);
        }
        k += 1;
    }
    i += words * 8;
    if i < n {
        // SAFETY: the word at `a + i` (aligned) holds the last bytes: same page, mapped.
        let w = unsafe { word_at(a + i) }
            .load(Ordering::Relaxed)
            .to_le_bytes();
        dst[i..].copy_from_slice(&w[..n - i]);
    }
}

/// Whether the `n` bytes of shared memory at `src` are all zero: the loads of
/// [`copy_out`] (aligned 8-byte atomic words; an unaligned edge is the masked word containing
/// it) OR-folded in registers, nothing stored, a test every 512 bytes. Half the memory
/// traffic of a copy out and a scan of the copy (fsck reads every file's bytes past its end).
///
/// # Safety
/// The pages covering `src..src + n` must be mapped and readable for the call.
pub(super) unsafe fn all_zero(src: *const u8, n: usize) -> bool {
    if n == 0 {
        return true;
    }
    let (a, end) = (src as usize, src as usize + n);
    let (first, last) = (a & !7, (end - 1) & !7);
    // The words holding the first and last bytes, masked to the range (they may be one word).
    // SAFETY: each word lies in the page of a byte of the range (caller: mapped).
    let (w0, w1) = unsafe { (word_at(first), word_at(last)) };
    let hi0 = if first == last { end - first } else { 8 };
    if w0.load(Ordering::Relaxed) & byte_mask(a - first, hi0) != 0 {
        return false;
    }
    if first == last {
        return true;
    }
    if w1.load(Ordering::Relaxed) & byte_mask(0, end - last) != 0 {
        return false;
    }
    // The whole words between them.
    let sp = (first + 8) as *const u64;
    let words = (last - first) / 8 - 1;
    let mut k = 0;
    #[cfg(target_arch = "x86_64")]
    if wide_loads_are_atomic() {
        if (sp as usize) & 15 != 0 && words > 0 {
            // One word first, so that the 16-byte loads are 16-byte aligned.
            // SAFETY: word 0 of the middle (caller: mapped).
            if unsafe { AtomicU64::from_ptr(sp as *mut u64) }.load(Ordering::Relaxed) != 0 {
                return false;
            }
            k = 1;
        }
        let blocks = (words - k) / 16;
        if blocks > 0 {
            let nonzero: u64;
            // SAFETY: `blocks * 128` bytes from `sp + k` (16-byte aligned) lie in the middle
            // of the mapped range (caller). Aligned 16-byte loads, atomic on CPUs with AVX
            // (checked above), as in `copy_out`; the prefetches are hints that never fault.
            // The asm stores nothing; it touches its two registers, xmm0, xmm1 and the flags.
            unsafe {
                std::arch::asm!(
                    "2:",
                    "prefetcht0 [{s} + 2048]",
                    "prefetcht0 [{s} + 2112]",
                    "movdqa xmm0, [{s}]",
                    "movdqa xmm1, [{s} + 16]",
                    "por xmm0, [{s} + 32]",
                    "por xmm1, [{s} + 48]",
                    "por xmm0, [{s} + 64]",
                    "por xmm1, [{s} + 80]",
                    "por xmm0, [{s} + 96]",
                    "por xmm1, [{s} + 112]",
                    "por xmm0, xmm1",
                    "ptest xmm0, xmm0",
                    "jnz 3f",
                    "add {s}, 128",
                    "dec {n}",
                    "jnz 2b",
                    "3:",
                    s = inout(reg) sp.add(k) => _,
                    n = inout(reg) blocks => nonzero,
                    out("xmm0") _, out("xmm1") _,
                    options(nostack, readonly),
                );
            }
            // The loop ran to the end (`n` = 0) unless a block held a non-zero byte.
            if nonzero != 0 {
                return false;
            }
            k += blocks * 16;
        }
    }
    while k < words {
        let step = (words - k).min(64);
        let mut acc = 0u64;
        for j in 0..step {
            // SAFETY: word `k + j < words` lies strictly between the two edge words, inside
            // the mapped range (caller); aligned (from an 8-aligned base).
            acc |=
                unsafe { AtomicU64::from_ptr(sp.add(k + j) as *mut u64) }.load(Ordering::Relaxed);
        }
        if acc != 0 {
            return false;
        }
        k += step;
    }
    true
}

/// Store the bytes `[lo, hi)` of the word at `a` (aligned) from `v`, keeping the others: a
/// compare-exchange loop (the other bytes may be another writer's).
///
/// # Safety
/// The word at `a` must be mapped writable.
#[inline]
unsafe fn store_partial(a: usize, lo: usize, hi: usize, v: u64) {
    let mask = byte_mask(lo, hi);
    // SAFETY: aligned, mapped (caller).
    let w = unsafe { word_at(a) };
    let mut cur = w.load(Ordering::Relaxed);
    loop {
        let new = (cur & !mask) | (v & mask);
        match w.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(c) => cur = c,
        }
    }
}

/// Copy `data` into shared memory at `dst` (aligned 8-byte atomic stores; see the section
/// comment).
///
/// # Safety
/// The pages covering `dst..dst + data.len()` must be mapped (a store to a read-only page
/// faults with SIGSEGV) and `data` must not overlap them.
pub(super) unsafe fn copy_in(dst: *mut u8, data: &[u8]) {
    let n = data.len();
    if n == 0 {
        return;
    }
    let a = dst as usize;
    let mut i = 0;
    let head = (8 - (a & 7)) & 7;
    if head != 0 {
        let k = head.min(n);
        let mut b = [0u8; 8];
        b[a & 7..(a & 7) + k].copy_from_slice(&data[..k]);
        // SAFETY: the word containing `a` is in the page of `a` (caller: mapped).
        unsafe { store_partial(a & !7, a & 7, (a & 7) + k, u64::from_le_bytes(b)) };
        i = k;
    }
    // The aligned middle, counted in words (no checked arithmetic in the loop).
    let words = (n - i) / 8;
    // SAFETY: `i <= n`: the offsets stay inside `data` and the mapped destination range.
    let (sp, dp) = unsafe { (data.as_ptr().add(i) as *const u64, (a + i) as *mut u64) };
    let mut k = 0;
    while k + 4 <= words {
        // SAFETY: words `k .. k + 4` lie in the aligned middle of the mapped destination
        // (caller) and in `data`.
        unsafe {
            let w0 = sp.add(k).read_unaligned();
            let w1 = sp.add(k + 1).read_unaligned();
            let w2 = sp.add(k + 2).read_unaligned();
            let w3 = sp.add(k + 3).read_unaligned();
            AtomicU64::from_ptr(dp.add(k)).store(w0, Ordering::Relaxed);
            AtomicU64::from_ptr(dp.add(k + 1)).store(w1, Ordering::Relaxed);
            AtomicU64::from_ptr(dp.add(k + 2)).store(w2, Ordering::Relaxed);
            AtomicU64::from_ptr(dp.add(k + 3)).store(w3, Ordering::Relaxed);
        }
        k += 4;
    }
    while k < words {
        // SAFETY: as above, one word.
        unsafe {
            AtomicU64::from_ptr(dp.add(k)).store(sp.add(k).read_unaligned(), Ordering::Relaxed)
        };
        k += 1;
    }
    i += words * 8;
    if i < n {
        let mut b = [0u8; 8];
        b[..n - i].copy_from_slice(&data[i..]);
        // SAFETY: the word at `a + i` (aligned) holds the last bytes: same page, mapped.
        unsafe { store_partial(a + i, 0, n - i, u64::from_le_bytes(b)) };
    }
}

/// Flush every line of `[addr, addr + len)`.
///
/// # Safety
/// The pages covering `[addr, addr + len)` must be mapped (a flush of an unmapped address
/// faults).
#[inline(always)]
unsafe fn flush_lines(addr: usize, len: usize, kind: FlushKind) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut line = addr & !63;
        while line < addr + len {
            let p = line as *const u8;
            // SAFETY: the line belongs to a mapped page (the caller's contract); the flush
            // instructions have no other memory effect.
            unsafe {
                match kind {
                    FlushKind::Clwb => {
                        std::arch::asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags))
                    }
                    FlushKind::ClflushOpt => {
                        std::arch::asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags))
                    }
                    FlushKind::Clflush => std::arch::x86_64::_mm_clflush(p),
                    FlushKind::None => {}
                }
            }
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (addr, len, kind);
    }
}

/// A range of the address space whose pages are mapped one run at a time (MAP_FIXED).
pub struct Reservation {
    ptr: *mut u8,
    pages: usize,
    /// The reservation's entry in the SIGBUS table (`raw::sigbus`).
    fault: super::raw::sigbus::Registration,
}

// SAFETY: the reservation is plain address space; mapping calls replace pages atomically
// (MAP_FIXED) and all accesses to the memory are atomic.
unsafe impl Send for Reservation {}
// SAFETY: as above.
unsafe impl Sync for Reservation {}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("ptr", &self.ptr)
            .field("pages", &self.pages)
            .finish()
    }
}

impl Reservation {
    /// Reserve `pages` pages of address space, inaccessible (`PROT_NONE`).
    pub fn new(pages: usize) -> Result<Reservation> {
        // SAFETY: sysconf has no memory effects.
        let host = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if host != PAGE as libc::c_long {
            return Err(Error::InvalidArgument(format!(
                "direct access needs 4 KiB host pages (this host: {host})"
            )));
        }
        let len = pages
            .checked_mul(PAGE)
            .filter(|&l| pages > 0 && l <= isize::MAX as usize)
            .ok_or_else(|| Error::InvalidArgument(format!("reservation of {pages} pages")))?;
        let p = super::raw::reserve_space(len).ok_or_else(os_err)?;
        Ok(Reservation {
            ptr: p,
            pages,
            fault: super::raw::sigbus::register(
                p as usize,
                len,
                super::raw::sigbus::RegionKind::Mapping,
            ),
        })
    }

    /// Pages reserved.
    pub fn pages(&self) -> usize {
        self.pages
    }

    fn span(&self, page: usize, n: usize) -> Result<(*mut libc::c_void, usize)> {
        match page.checked_add(n) {
            Some(end) if end <= self.pages && n > 0 => {
                // SAFETY: `page < pages`, so the offset is inside the reservation.
                Ok((unsafe { self.ptr.add(page * PAGE) }.cast(), n * PAGE))
            }
            _ => Err(Error::InvalidArgument(format!(
                "pages [{page}, +{n}) outside a reservation of {}",
                self.pages
            ))),
        }
    }

    /// Map `n` pages from `page` to the file's bytes at `file_off` (MAP_SHARED, MAP_FIXED),
    /// read-only or read-write; `sync` adds `MAP_SHARED_VALIDATE | MAP_SYNC` (dax). Writable
    /// runs (write access: the program is about to store there) and short runs (at most 16
    /// pages: coherence remaps) are pre-faulted (`MAP_POPULATE`), so the next access takes no
    /// fault; a long read-only run (a new mapping) faults its pages in as they are loaded.
    pub fn map_file(
        &self,
        page: usize,
        n: usize,
        fd: BorrowedFd<'_>,
        file_off: u64,
        writable: bool,
        sync: bool,
    ) -> Result<()> {
        let (addr, len) = self.span(page, n)?;
        let off = libc::off_t::try_from(file_off)
            .map_err(|_| Error::InvalidArgument("file offset too large".into()))?;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let flags = libc::MAP_FIXED
            | if sync {
                MAP_SHARED_VALIDATE | MAP_SYNC
            } else {
                libc::MAP_SHARED
            }
            | if writable || n <= 16 {
                libc::MAP_POPULATE
            } else {
                0
            };
        // SAFETY: `addr..addr+len` lies inside our own reservation (checked), so MAP_FIXED
        // replaces only pages we own; nobody holds references into them (atomic access only).
        let p = unsafe { libc::mmap(addr, len, prot, flags, fd.as_raw_fd(), off) };
        if p == libc::MAP_FAILED {
            return Err(os_err());
        }
        Ok(())
    }

    /// Map `n` pages from `page` to the shared zero page (anonymous, read-only).
    pub fn map_zero(&self, page: usize, n: usize) -> Result<()> {
        let (addr, len) = self.span(page, n)?;
        // SAFETY: inside our reservation (checked); replaces only pages we own.
        let p = unsafe {
            libc::mmap(
                addr,
                len,
                libc::PROT_READ,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err());
        }
        Ok(())
    }

    /// Make `n` pages from `page`, mapped to a file, read-write (write access granted in place:
    /// the block stays mapped; a `MAP_SYNC` mapping stays one).
    pub fn protect_write(&self, page: usize, n: usize) -> Result<()> {
        let (addr, len) = self.span(page, n)?;
        // SAFETY: inside our reservation; mprotect changes no contents. The caller grants
        // write access only to pages it mapped from the file (never the zero page).
        if unsafe { libc::mprotect(addr, len, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
            return Err(os_err());
        }
        Ok(())
    }

    /// Make `n` pages from `page` read-only (write access revoked; the block stays mapped).
    pub fn protect_read(&self, page: usize, n: usize) -> Result<()> {
        let (addr, len) = self.span(page, n)?;
        // SAFETY: inside our reservation; mprotect changes no contents.
        if unsafe { libc::mprotect(addr, len, libc::PROT_READ) } != 0 {
            return Err(os_err());
        }
        Ok(())
    }

    /// The bytes `[off, off + len)` of the reservation. Pages still `PROT_NONE` fault when
    /// touched: callers map every page before handing the slice out.
    pub fn slice(&self, off: usize, len: usize) -> Result<VolatileSlice<'_>> {
        match off.checked_add(len) {
            Some(end) if end <= self.pages * PAGE => {
                // SAFETY: in bounds of the reservation, which lives as long as the borrow;
                // all access goes through the slice's atomic methods.
                Ok(unsafe { VolatileSlice::new(self.ptr.add(off), len) })
            }
            _ => Err(range_err(off, len, self.pages * PAGE)),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        drop(std::mem::replace(
            &mut self.fault,
            super::raw::sigbus::Registration::none(),
        ));
        // SAFETY: we created this range; slices borrow the reservation, so none outlives it.
        unsafe {
            libc::munmap(self.ptr.cast(), self.pages * PAGE);
        }
    }
}

/// A userfaultfd with write-protect support: transparent write access to mappings (a store
/// to a clean page faults to a handler thread, which prepares the page and wakes the store).
pub struct Uffd {
    fd: std::os::fd::OwnedFd,
}

impl std::fmt::Debug for Uffd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uffd").field("fd", &self.fd).finish()
    }
}

const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_WAKE: libc::c_ulong = 0x8010_AA02;
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xC018_AA06;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;
const IOCTL_WRITEPROTECT_BIT: u64 = 1 << 6;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdMsg {
    event: u8,
    _r1: u8,
    _r2: u16,
    _r3: u32,
    flags: u64,
    address: u64,
    _feat: u64,
}

fn unsupported(_: Error) -> Error {
    Error::NotSupported("userfaultfd write-protect is not available (kernel or permission)")
}

impl Uffd {
    /// Open a userfaultfd with write-protect on shared memory and on unpopulated pages;
    /// `NotSupported` where the kernel (or `vm.unprivileged_userfaultfd`) refuses.
    pub fn new() -> Result<Uffd> {
        use std::os::fd::FromRawFd;
        // SAFETY: the userfaultfd syscall takes flags only and returns a new descriptor.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            return Err(unsupported(os_err()));
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes one `uffdio_api` (24 bytes, this layout).
        if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api) } != 0 {
            return Err(unsupported(os_err()));
        }
        Ok(Uffd { fd })
    }

    /// Arm `n` pages of `r` from `page`, already mapped read-only: register them for
    /// write-protect faults, write-protect them, then make the VMA writable (in that order: a
    /// store never finds a writable, unprotected page).
    pub fn arm(&self, r: &Reservation, page: usize, n: usize) -> Result<()> {
        let (addr, len) = r.span(page, n)?;
        let range = UffdioRange {
            start: addr as u64,
            len: len as u64,
        };
        let mut reg = UffdioRegister {
            range: UffdioRange { ..range },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads/writes one `uffdio_register` (32 bytes); the range is
        // inside our reservation.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) } != 0 {
            return Err(os_err());
        }
        if reg.ioctls & IOCTL_WRITEPROTECT_BIT == 0 {
            return Err(Error::NotSupported("write-protect on this mapping"));
        }
        let mut wp = UffdioWriteprotect {
            range,
            mode: UFFDIO_WRITEPROTECT_MODE_WP,
        };
        // SAFETY: UFFDIO_WRITEPROTECT reads one `uffdio_writeprotect` (24 bytes).
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_WRITEPROTECT, &mut wp) } != 0 {
            return Err(os_err());
        }
        r.protect_write(page, n)
    }

    /// Wake the threads faulting in `n` pages of `r` from `page` (they retry their access).
    pub fn wake(&self, r: &Reservation, page: usize, n: usize) {
        if let Ok((addr, len)) = r.span(page, n) {
            let mut range = UffdioRange {
                start: addr as u64,
                len: len as u64,
            };
            // SAFETY: UFFDIO_WAKE reads one `uffdio_range`; no memory effect.
            unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_WAKE, &mut range) };
        }
    }

    /// Wait up to `timeout_ms` for a write-protect fault; its address.
    pub fn next_fault(&self, timeout_ms: i32) -> Result<Option<usize>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc <= 0 {
            return Ok(None);
        }
        let mut msg = UffdMsg::default();
        // SAFETY: reads at most one 32-byte `uffd_msg` into `msg` (this layout, 32 bytes).
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut msg as *mut UffdMsg).cast(),
                std::mem::size_of::<UffdMsg>(),
            )
        };
        if n != std::mem::size_of::<UffdMsg>() as isize {
            return Ok(None);
        }
        if msg.event == UFFD_EVENT_PAGEFAULT && msg.flags & UFFD_PAGEFAULT_FLAG_WP != 0 {
            return Ok(Some(msg.address as usize));
        }
        Ok(None)
    }
}

impl Reservation {
    /// The reserved addresses `[start, end)`.
    pub fn addr_range(&self) -> (usize, usize) {
        (self.ptr as usize, self.ptr as usize + self.pages * PAGE)
    }
}

/// The traced backend's mapping: a page-aligned DRAM buffer plus the contents last observed
/// (filled from or published to the media), so that changed words can become traced stores.
pub struct Shadow {
    ptr: *mut u8,
    pages: usize,
    observed: Mutex<Vec<u8>>,
}

// SAFETY: the buffer is accessed only through atomic copies (slices, fill, diff).
unsafe impl Send for Shadow {}
// SAFETY: as above.
unsafe impl Sync for Shadow {}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("pages", &self.pages)
            .finish()
    }
}

impl Shadow {
    fn layout(pages: usize) -> Result<std::alloc::Layout> {
        pages
            .checked_mul(PAGE)
            .filter(|_| pages > 0)
            .and_then(|l| std::alloc::Layout::from_size_align(l, PAGE).ok())
            .ok_or_else(|| Error::InvalidArgument(format!("shadow of {pages} pages")))
    }

    /// A zeroed shadow of `pages` pages.
    pub fn new(pages: usize) -> Result<Shadow> {
        let layout = Shadow::layout(pages)?;
        // SAFETY: the layout has a non-zero size (checked).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::NoSpace);
        }
        Ok(Shadow {
            ptr,
            pages,
            observed: Mutex::new(vec![0; pages * PAGE]),
        })
    }

    /// Pages in the shadow.
    pub fn pages(&self) -> usize {
        self.pages
    }

    fn whole(&self) -> VolatileSlice<'_> {
        // SAFETY: the allocation is `pages * PAGE` bytes and lives as long as `self`.
        unsafe { VolatileSlice::new(self.ptr, self.pages * PAGE) }
    }

    /// The bytes `[off, off + len)` of the shadow.
    pub fn slice(&self, off: usize, len: usize) -> Result<VolatileSlice<'_>> {
        self.whole().subslice(off, len)
    }

    /// Set page `page` (shadow and observed) to `data` (one page).
    pub fn fill(&self, page: usize, data: &[u8]) -> Result<()> {
        if data.len() != PAGE || page >= self.pages {
            return Err(range_err(page * PAGE, data.len(), self.pages * PAGE));
        }
        self.whole().write(page * PAGE, data)?;
        self.observed.lock()[page * PAGE..(page + 1) * PAGE].copy_from_slice(data);
        Ok(())
    }

    /// Call `f(offset in page, bytes)` for every run of 8-byte words of page `page` that
    /// differ from the observed contents, and observe them.
    pub fn diff(&self, page: usize, mut f: impl FnMut(usize, &[u8]) -> Result<()>) -> Result<()> {
        if page >= self.pages {
            return Err(range_err(page * PAGE, PAGE, self.pages * PAGE));
        }
        let mut cur = vec![0u8; PAGE];
        self.whole().read(page * PAGE, &mut cur)?;
        let mut obs = self.observed.lock();
        let old = &mut obs[page * PAGE..(page + 1) * PAGE];
        let mut w = 0;
        while w < PAGE {
            if cur[w..w + 8] == old[w..w + 8] {
                w += 8;
                continue;
            }
            let start = w;
            while w < PAGE && cur[w..w + 8] != old[w..w + 8] {
                w += 8;
            }
            f(start, &cur[start..w])?;
            old[start..w].copy_from_slice(&cur[start..w]);
        }
        Ok(())
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        if let Ok(layout) = Shadow::layout(self.pages) {
            // SAFETY: allocated in `new` with this same layout; slices borrow `self`.
            unsafe { std::alloc::dealloc(self.ptr, layout) }
        }
    }
}

/// A mapping's memory: real pages of the image, or a traced shadow.
#[derive(Debug)]
pub enum MapView {
    /// Pages of the image file mapped into a reservation.
    Real(Reservation),
    /// The traced backend's shadow buffer.
    Shadow(Shadow),
}

impl MapView {
    /// Pages of the view.
    pub fn pages(&self) -> usize {
        match self {
            MapView::Real(r) => r.pages(),
            MapView::Shadow(s) => s.pages(),
        }
    }

    /// The bytes `[off, off + len)` of the view.
    pub fn slice(&self, off: usize, len: usize) -> Result<VolatileSlice<'_>> {
        match self {
            MapView::Real(r) => r.slice(off, len),
            MapView::Shadow(s) => s.slice(off, len),
        }
    }

    /// Persist `[off, off + len)` of a real view: write back its lines with `kind`, then one
    /// `sfence` (the lean path of `Mapping::persist`: one bounds check, no lock, no system
    /// call). A shadow has nothing to flush (the traced backend persists by block).
    #[inline]
    pub fn flush_fence(&self, off: usize, len: usize, kind: FlushKind) -> Result<()> {
        if let MapView::Real(r) = self {
            match off.checked_add(len) {
                Some(end) if end <= r.pages * PAGE => {}
                _ => return Err(range_err(off, len, r.pages * PAGE)),
            }
            if len > 0 {
                // SAFETY: `off + len` is inside the reservation (checked), whose pages are
                // all mapped (a block, the zero page, or PROT_NONE only before `map` returns).
                unsafe { flush_lines(r.ptr as usize + off, len, kind) };
            }
            super::raw::sfence();
        }
        Ok(())
    }
}

/// Where a run of a view's pages should point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageTarget {
    /// The region's block `block` (and the following ones for a run), writable or not.
    Block {
        /// First block of the run.
        block: u64,
        /// Map read-write.
        writable: bool,
    },
    /// The zero page (a hole, or a revoked mapping).
    Zero,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_slice_copies_words_and_edges() {
        let s = Shadow::new(2).unwrap();
        let v = s.slice(3, 2 * PAGE - 3).unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        v.write(5, &data).unwrap();
        let mut back = vec![0u8; 100];
        v.read(5, &mut back).unwrap();
        assert_eq!(back, data);
        let mut one = [0u8; 1];
        v.read(4, &mut one).unwrap();
        assert_eq!(one, [0]);
        assert!(v.read(v.len() - 1, &mut [0u8; 2]).is_err());
        assert!(v.write(usize::MAX, &[1]).is_err());
    }

    /// The word-atomic copies at every small offset and length: exactly the bytes asked for
    /// are loaded or stored, the neighbours of the edges are kept.
    #[test]
    fn word_copies_store_and_load_exactly_their_bytes() {
        let s = Shadow::new(1).unwrap();
        let v = s.slice(0, PAGE).unwrap();
        for off in 0..24usize {
            for len in 0..72usize {
                v.write(0, &[0xEE; 128]).unwrap();
                let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) | 1).collect();
                v.write(off, &data).unwrap();
                let mut all = [0u8; 128];
                v.read(0, &mut all).unwrap();
                assert!(all[..off].iter().all(|&x| x == 0xEE), "{off} {len}");
                assert_eq!(&all[off..off + len], &data[..], "{off} {len}");
                assert!(all[off + len..].iter().all(|&x| x == 0xEE), "{off} {len}");
                let mut back = vec![0u8; len];
                v.read(off, &mut back).unwrap();
                assert_eq!(back, data, "{off} {len}");
            }
        }
    }

    /// The long copy out (16-byte loads, 128 bytes a step) at every head offset and at lengths
    /// around its block and word boundaries: exactly the bytes asked for, in order.
    #[test]
    fn long_copies_out_are_exact_at_every_alignment() {
        let s = Shadow::new(2).unwrap();
        let v = s.slice(0, 2 * PAGE).unwrap();
        let pattern: Vec<u8> = (0..2 * PAGE).map(|i| (i * 31 % 251) as u8).collect();
        v.write(0, &pattern).unwrap();
        for off in 0..24usize {
            for len in [
                127,
                128,
                129,
                135,
                136,
                255,
                256,
                257,
                1000,
                4096,
                4096 + 77,
            ] {
                let mut back = vec![0u8; len + 2];
                v.read(off, &mut back[1..=len]).unwrap();
                assert_eq!(back[0], 0, "{off} {len}");
                assert_eq!(back[len + 1], 0, "{off} {len}");
                assert_eq!(&back[1..=len], &pattern[off..off + len], "{off} {len}");
            }
        }
    }

    /// The in-place zero check at every head offset and at lengths around its word and block
    /// boundaries: one non-zero byte anywhere inside the range is seen, one just outside is
    /// not.
    #[test]
    fn all_zero_sees_exactly_its_bytes() {
        let s = Shadow::new(2).unwrap();
        let v = s.slice(0, 2 * PAGE).unwrap();
        v.write(0, &vec![0u8; 2 * PAGE]).unwrap();
        // SAFETY: every range below lies inside the two mapped pages of `v`.
        let zero = |off: usize, len: usize| unsafe { all_zero(v.as_ptr().add(off), len) };
        for off in 1..40usize {
            for len in [
                0, 1, 2, 7, 8, 9, 15, 16, 17, 127, 128, 129, 136, 255, 256, 257, 1000, 4000,
            ] {
                assert!(zero(off, len), "{off} {len}");
                let mut at: Vec<usize> = (0..len).step_by(13).collect();
                at.extend([len.saturating_sub(1), len.saturating_sub(9)]);
                for i in at.into_iter().filter(|&i| i < len) {
                    v.write(off + i, &[0x80]).unwrap();
                    assert!(!zero(off, len), "{off} {len} {i}");
                    v.write(off + i, &[0]).unwrap();
                }
                for outside in [off - 1, off + len] {
                    v.write(outside, &[0xff]).unwrap();
                    assert!(zero(off, len), "{off} {len} outside {outside}");
                    v.write(outside, &[0]).unwrap();
                }
            }
        }
    }

    /// Two threads storing interleaved byte ranges that share words (3 bytes and 5 bytes of
    /// every word): the edge stores keep each other's bytes (a compare-exchange, not a
    /// read-modify-write of the whole word, which loses the other thread's bytes when the two
    /// interleave inside its few-instruction window: on this loaded 2-core VM that is rare,
    /// so this is a smoke test of the concurrent path; the test above is the exact check).
    #[test]
    fn racing_edge_stores_keep_their_neighbours() {
        let s = Shadow::new(1).unwrap();
        let v = s.slice(0, PAGE).unwrap();
        let go = std::sync::Barrier::new(2);
        let lost = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for t in 0..2u8 {
                let (go, lost) = (&go, &lost);
                sc.spawn(move || {
                    go.wait();
                    for round in 1..=20_000u32 {
                        let val = (round % 101) as u8 + 1 + t * 120;
                        for w in 0..64usize {
                            let (o, n) = if t == 0 { (w * 8, 3) } else { (w * 8 + 3, 5) };
                            v.write(o, &[val; 5][..n]).unwrap();
                            // Nobody else stores these bytes: they must read back.
                            let mut b = [0u8; 5];
                            v.read(o, &mut b[..n]).unwrap();
                            if b[..n] != [val; 5][..n] {
                                lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(
            lost.into_inner(),
            0,
            "an edge store overwrote another's bytes"
        );
        let last = |t: u8| (20_000u32 % 101) as u8 + 1 + t * 120;
        let mut all = [0u8; 512];
        v.read(0, &mut all).unwrap();
        for w in 0..64 {
            assert_eq!(&all[w * 8..w * 8 + 3], &[last(0); 3], "word {w}");
            assert_eq!(&all[w * 8 + 3..w * 8 + 8], &[last(1); 5], "word {w}");
        }
    }

    #[test]
    fn atomics_need_alignment_and_bounds() {
        let s = Shadow::new(1).unwrap();
        let v = s.slice(0, PAGE).unwrap();
        v.store_u64(8, 7).unwrap();
        assert_eq!(v.load_u64(8).unwrap(), 7);
        assert_eq!(v.compare_exchange_u64(8, 7, 9).unwrap(), Ok(7));
        assert_eq!(v.compare_exchange_u64(8, 7, 10).unwrap(), Err(9));
        assert_eq!(v.fetch_add_u64(8, 1).unwrap(), 9);
        assert_eq!(v.load_u64(8).unwrap(), 10);
        assert!(v.load_u64(4).is_err());
        assert!(v.store_u64(PAGE - 8 + 8, 1).is_err());
        let sub = v.subslice(4, 16).unwrap();
        assert!(sub.load_u64(4).is_ok());
        assert!(sub.load_u64(0).is_err());
    }

    #[test]
    fn shadow_diff_reports_changed_word_runs() {
        let s = Shadow::new(1).unwrap();
        s.fill(0, &[1u8; PAGE]).unwrap();
        let v = s.slice(0, PAGE).unwrap();
        v.write(10, &[9, 9]).unwrap();
        v.write(64, &[5; 20]).unwrap();
        let mut runs = Vec::new();
        s.diff(0, |o, b| {
            runs.push((o, b.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].0, 8);
        assert_eq!(runs[0].1.len(), 8);
        assert_eq!(runs[1].0, 64);
        assert_eq!(runs[1].1.len(), 24);
        let mut again = 0;
        s.diff(0, |_, _| {
            again += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(again, 0, "observed after the first diff");
    }

    fn shm_file(pages: usize) -> (tempfile_lite::Tmp, std::fs::File) {
        let t = tempfile_lite::Tmp::new();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&t.0)
            .unwrap();
        f.set_len((pages * PAGE) as u64).unwrap();
        (t, f)
    }

    mod tempfile_lite {
        pub struct Tmp(pub std::path::PathBuf);
        impl Tmp {
            pub fn new() -> Tmp {
                use std::sync::atomic::{AtomicU64, Ordering};
                static N: AtomicU64 = AtomicU64::new(0);
                let dir = if std::path::Path::new("/dev/shm").is_dir() {
                    std::path::PathBuf::from("/dev/shm")
                } else {
                    std::env::temp_dir()
                };
                Tmp(dir.join(format!(
                    "novafs-map-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                )))
            }
        }
        impl Drop for Tmp {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn reservation_maps_file_pages_and_zero_pages() {
        use std::os::fd::AsFd;
        use std::os::unix::fs::FileExt;
        let (_t, f) = shm_file(4);
        f.write_all_at(&[0xAB; PAGE], 2 * PAGE as u64).unwrap();
        let r = Reservation::new(3).unwrap();
        // Page 0 -> file page 2 (read-only), page 1 -> zero, page 2 -> file page 3 (writable).
        r.map_file(0, 1, f.as_fd(), 2 * PAGE as u64, false, false)
            .unwrap();
        r.map_zero(1, 1).unwrap();
        r.map_file(2, 1, f.as_fd(), 3 * PAGE as u64, true, false)
            .unwrap();
        let v = r.slice(0, 3 * PAGE).unwrap();
        let mut b = [0u8; 4];
        v.read(10, &mut b).unwrap();
        assert_eq!(b, [0xAB; 4]);
        v.read(PAGE + 10, &mut b).unwrap();
        assert_eq!(b, [0; 4]);
        v.write(2 * PAGE + 100, b"direct").unwrap();
        v.flush(2 * PAGE + 100, 6, FlushKind::detect()).unwrap();
        v.msync(2 * PAGE, PAGE).unwrap();
        let mut back = [0u8; 6];
        f.read_exact_at(&mut back, 3 * PAGE as u64 + 100).unwrap();
        assert_eq!(
            &back, b"direct",
            "a store through the address reaches the file"
        );
        // Revoke, then remap page 2 read-only to file page 2: the contents follow the block.
        r.protect_read(2, 1).unwrap();
        r.map_file(2, 1, f.as_fd(), 2 * PAGE as u64, false, false)
            .unwrap();
        v.read(2 * PAGE + 100, &mut b).unwrap();
        assert_eq!(b, [0xAB; 4]);
        assert!(r.map_zero(3, 1).is_err(), "outside the reservation");
        assert!(r.slice(PAGE, 3 * PAGE).is_err());
        assert!(Reservation::new(0).is_err());
    }
}
