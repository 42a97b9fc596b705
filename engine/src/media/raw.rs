//! Mapping and persistence primitives: the only `unsafe` code in novafs.
//!
//! A [`RawRegion`] is a shared, writable mapping of the image file. Its functions are safe for
//! any input and any interleaving of threads: each checks its range against the region (an
//! error, never an access outside it), and every access to the region's bytes is an aligned
//! 8-byte atomic (copies are made of them, `map::copy_in`/`copy_out`; non-temporal copies of
//! `movnti` quadword stores), so a copy that races with another thread's store or with a
//! program's store through a direct-access mapping of the same block is defined (each word old
//! or new), not a data race. What the engine's locks add is *meaning* (no torn page is ever
//! published), not memory safety. A mapped page whose file was truncated under us raises
//! SIGBUS: see [`sigbus`].
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// The cache-line write-back instruction in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushKind {
    /// `clwb`: write back, keep the line cached.
    Clwb,
    /// `clflushopt`: write back and invalidate, weakly ordered.
    ClflushOpt,
    /// `clflush`: write back and invalidate, strongly ordered.
    Clflush,
    /// No instruction (traced backend, or a non-x86 CPU where msync does the work).
    None,
}

impl FlushKind {
    /// Pick the best instruction the CPU has.
    pub fn detect() -> FlushKind {
        #[cfg(target_arch = "x86_64")]
        {
            // CPUID leaf 7, sub-leaf 0: EBX bit 24 = CLWB, bit 23 = CLFLUSHOPT.
            #[allow(unused_unsafe)]
            // SAFETY: CPUID is available on every x86_64 CPU; leaf 7 is valid when the max
            // leaf (checked first) allows it.
            let ebx = unsafe {
                if std::arch::x86_64::__cpuid(0).eax < 7 {
                    0
                } else {
                    std::arch::x86_64::__cpuid_count(7, 0).ebx
                }
            };
            if ebx & (1 << 24) != 0 {
                return FlushKind::Clwb;
            }
            if ebx & (1 << 23) != 0 {
                return FlushKind::ClflushOpt;
            }
            FlushKind::Clflush
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushKind::None
    }
}

/// A shared writable mapping of an image file, at the start of a larger reservation of
/// address space so that it can grow in place ([`RawRegion::grow`]): the base address never
/// changes, so a growing image never invalidates an address another thread is using.
/// (memmap2 maps at an address the kernel picks; placing the file inside our own `PROT_NONE`
/// reservation with `MAP_FIXED` is what growth in place needs, as direct access does in
/// `map::Reservation`.)
pub struct RawRegion {
    ptr: *mut u8,
    /// Bytes of the file mapped at `ptr` (grows, never shrinks).
    len: AtomicUsize,
    /// Bytes of address space reserved at `ptr` (`len` can grow up to it).
    reserved: usize,
    /// Mapped with `MAP_SHARED_VALIDATE | MAP_SYNC`.
    sync: bool,
    /// Whether growth pre-faults the new range (`MAP_POPULATE`).
    populate: bool,
    /// Serialises [`RawRegion::grow`].
    grow_lock: parking_lot::Mutex<()>,
    /// The flush instruction for the unaligned edges of non-temporal copies.
    kind: FlushKind,
    /// The region's entry in the SIGBUS table.
    fault: sigbus::Registration,
}

// SAFETY: the region is plain shared memory that stays mapped until drop; every access through
// it is bounds-checked and atomic (module docs), so sharing it between threads is like sharing
// `&[AtomicU64]`.
unsafe impl Send for RawRegion {}
// SAFETY: as above.
unsafe impl Sync for RawRegion {}

/// The error of an unaligned 8-byte access.
#[cold]
#[inline(never)]
fn unaligned(off: u64) -> Error {
    Error::Corrupt {
        what: "unaligned 8-byte access".into(),
        location: format!("offset {off}"),
    }
}

#[cold]
#[inline(never)]
fn out_of_range(off: u64, len: u64, region: usize) -> Error {
    Error::Corrupt {
        what: "media access out of range".into(),
        location: format!("offset {off} length {len} (region {region} bytes)"),
    }
}

const MAP_SYNC: libc::c_int = 0x80000;
const MAP_SHARED_VALIDATE: libc::c_int = 0x03;
const HOST_PAGE: usize = 4096;
/// The reservation's alignment: a huge page, which DAX file systems and devdax devices need to
/// map with huge pages (devdax refuses a misaligned `MAP_FIXED` address).
const HUGE_PAGE: usize = 2 << 20;

fn os_err() -> Error {
    Error::Io(std::io::Error::last_os_error())
}

impl RawRegion {
    /// Map `len` bytes of `file` at the start of a reservation of `reserve` bytes of address
    /// space (at least `len`; a reservation the kernel refuses shrinks to `len`, and the region
    /// then cannot grow), trying `MAP_SYNC` first. Returns the region and whether `MAP_SYNC`
    /// was granted.
    pub fn map(file: &File, len: u64, reserve: u64, populate: bool) -> Result<(RawRegion, bool)> {
        let too_large = || Error::InvalidArgument("image too large for the address space".into());
        let len = usize::try_from(len).map_err(|_| too_large())?;
        if len == 0 || len > isize::MAX as usize / 2 {
            return Err(too_large());
        }
        let round = |n: usize| n.div_ceil(HOST_PAGE).saturating_mul(HOST_PAGE);
        let want = round(usize::try_from(reserve).unwrap_or(usize::MAX).max(len))
            .min(isize::MAX as usize / 2);
        let mut reserved = want;
        let mut base = reserve_aligned(reserved);
        if base.is_none() && reserved > round(len) {
            reserved = round(len);
            base = reserve_aligned(reserved);
        }
        let ptr = base.ok_or_else(os_err)?;
        // Probe MAP_SYNC at an address the kernel picks (a failed MAP_FIXED call must never be
        // able to leave a hole in our reservation), over up to one huge page (a devdax device
        // maps only whole units of its alignment).
        let probe = round(len.min(HUGE_PAGE));
        // SAFETY: a fresh mapping of a file we hold open at a kernel-chosen address, unmapped
        // at once if it succeeded; no memory is accessed.
        let sync = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                probe,
                libc::PROT_READ | libc::PROT_WRITE,
                MAP_SHARED_VALIDATE | MAP_SYNC,
                file.as_raw_fd(),
                0,
            );
            if p == libc::MAP_FAILED {
                false
            } else {
                libc::munmap(p, probe);
                true
            }
        };
        let region = RawRegion {
            ptr,
            len: AtomicUsize::new(0),
            reserved,
            sync,
            populate,
            grow_lock: parking_lot::Mutex::new(()),
            kind: FlushKind::detect(),
            fault: sigbus::register(ptr as usize, 0, sigbus::RegionKind::Image),
        };
        // From here `region`'s drop releases the reservation on any error.
        region.map_range(file, 0, len)?;
        region.len.store(len, Ordering::Release);
        region.fault.set_len(len);
        Ok((region, sync))
    }

    /// Map the file's bytes `[from, to)` at the same offsets of the reservation (`MAP_FIXED`
    /// over reserved, still inaccessible address space).
    fn map_range(&self, file: &File, from: usize, to: usize) -> Result<()> {
        debug_assert!(from.is_multiple_of(HOST_PAGE) && from < to && to <= self.reserved);
        let mut flags = libc::MAP_FIXED
            | if self.sync {
                MAP_SHARED_VALIDATE | MAP_SYNC
            } else {
                libc::MAP_SHARED
            };
        if self.populate {
            flags |= libc::MAP_POPULATE;
        }
        let off = libc::off_t::try_from(from).map_err(|_| os_err())?;
        // SAFETY: `[ptr + from, ptr + to)` lies inside our reservation (checked by the callers:
        // `to <= reserved`) and is not yet part of the region (`from` is the region's current
        // length, nothing reads or writes there: every access is bounds-checked against
        // `len`, stored after this call); MAP_FIXED replaces our own PROT_NONE pages only.
        let p = unsafe {
            libc::mmap(
                self.ptr.add(from).cast(),
                to - from,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                file.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err());
        }
        Ok(())
    }

    /// Bytes mapped now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Bytes the region can grow to (its reservation).
    pub fn capacity(&self) -> usize {
        self.reserved
    }

    /// Map `file`'s bytes up to `new_len` (the file must already be that long): the region
    /// grows in place. The current length must be a multiple of the page size.
    pub fn grow(&self, file: &File, new_len: u64) -> Result<()> {
        let _g = self.grow_lock.lock();
        let old = self.len();
        let new = usize::try_from(new_len).unwrap_or(usize::MAX);
        if new <= old {
            return Ok(());
        }
        if new > self.reserved {
            return Err(Error::InvalidArgument(format!(
                "this mount can grow the image to {} bytes (the address space reserved when it \
                 was mounted; MountOptions::grow_limit); unmount and grow it offline \
                 (novafs resize) to go further",
                self.reserved
            )));
        }
        if !old.is_multiple_of(HOST_PAGE) {
            return Err(Error::InvalidArgument(format!(
                "an image of {old} bytes (not a multiple of the page size) cannot grow"
            )));
        }
        self.map_range(file, old, new)?;
        self.fault.set_len(new);
        self.len.store(new, Ordering::Release);
        Ok(())
    }

    /// The address of `[off, off + len)`, or an error if the range is not inside the region
    /// (every access checks its range here: the region's functions are safe for any input).
    #[inline(always)]
    fn at(&self, off: u64, len: usize) -> Result<*mut u8> {
        match off.checked_add(len as u64) {
            Some(end) if end <= self.len.load(Ordering::Acquire) as u64 => {
                // SAFETY: `off <= len` (checked), so the offset stays inside the mapping.
                Ok(unsafe { self.ptr.add(off as usize) })
            }
            _ => Err(out_of_range(off, len as u64, self.len())),
        }
    }

    /// The address of the aligned 8-byte word at `off`, checked.
    #[inline(always)]
    fn word(&self, off: u64) -> Result<&AtomicU64> {
        let p = self.at(off, 8)?;
        if !off.is_multiple_of(8) {
            return Err(unaligned(off));
        }
        // SAFETY: in bounds and 8-byte aligned (checked; the mapping is page aligned);
        // AtomicU64 has the layout of u64, and every access to the region is atomic.
        Ok(unsafe { AtomicU64::from_ptr(p.cast()) })
    }

    /// Copy out bytes (aligned 8-byte atomic loads: defined if another thread or a mapping
    /// stores to them meanwhile; see `map::copy_out`).
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let p = self.at(off, buf.len())?;
        // SAFETY: the range is inside the mapping (checked); `buf` is DRAM owned by the
        // caller, not part of the mapping.
        unsafe { super::map::copy_out(p, buf) };
        Ok(())
    }

    /// Whether the `n` bytes at `off` are all zero (read in place).
    pub fn all_zero(&self, off: u64, n: usize) -> Result<bool> {
        let p = self.at(off, n)?;
        // SAFETY: the range is inside the mapping (checked).
        Ok(unsafe { super::map::all_zero(p, n) })
    }

    /// Hint that the lines of `[off, off + len)` will be read soon (at most 4 lines; nothing
    /// for a range outside the mapping).
    pub fn prefetch(&self, off: u64, len: usize) {
        let Ok(p) = self.at(off, len) else {
            return;
        };
        #[cfg(target_arch = "x86_64")]
        for k in 0..len.div_ceil(64).min(4) {
            // SAFETY: `p + 64 k` lies inside the mapped range just checked (k < len / 64
            // rounded up, and the range is at least that long past its last line start);
            // `prefetcht0` is a hint that never faults and changes no memory.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    p.add(64 * k).cast::<i8>(),
                );
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = p;
    }

    /// Atomic aligned 8-byte load.
    #[inline]
    pub fn load_u64(&self, off: u64) -> Result<u64> {
        Ok(self.word(off)?.load(Ordering::Acquire))
    }

    /// Cached store of bytes (aligned 8-byte atomic stores; see `map::copy_in`).
    pub fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        let p = self.at(off, data.len())?;
        // SAFETY: the range is inside the writable mapping (checked); `data` is the caller's
        // DRAM. Racing accesses by other threads or mappings are atomic too (defined).
        unsafe { super::map::copy_in(p, data) };
        Ok(())
    }

    /// Atomic aligned 8-byte store.
    #[inline]
    pub fn store_u64(&self, off: u64, v: u64) -> Result<()> {
        self.word(off)?.store(v, Ordering::Release);
        Ok(())
    }

    /// Non-temporal copy: the aligned 8-byte words are stored with `movnti` (each an aligned
    /// quadword store, single-copy atomic on x86-64, modelled as a `Relaxed` atomic store);
    /// unaligned head and tail bytes are stored atomically (`write`) and flushed.
    pub fn write_nt(&self, off: u64, data: &[u8]) -> Result<()> {
        let base = self.at(off, data.len())?;
        #[cfg(target_arch = "x86_64")]
        {
            let start = base as usize;
            let end = start + data.len();
            let a_start = (start + 7) & !7;
            let a_end = end & !7;
            if a_start >= a_end {
                self.write(off, data)?;
                self.flush(off, data.len() as u64, self.kind)?;
                return Ok(());
            }
            if a_start > start {
                self.write(off, &data[..a_start - start])?;
                self.flush(off, (a_start - start) as u64, self.kind)?;
            }
            // The aligned middle, counted in words (no checked arithmetic in the loop).
            let words = (a_end - a_start) / 8;
            // SAFETY: `a_start - start < 8 <= data.len()`, so the source words `0 .. words`
            // lie inside `data` and the destination words inside the checked range, 8-aligned.
            unsafe {
                let sp = data.as_ptr().add(a_start - start);
                nt_words(a_start, words, SliceWords(sp));
            }
            if a_end < end {
                let t = off + (a_end - start) as u64;
                self.write(t, &data[a_end - start..])?;
                self.flush(t, (end - a_end) as u64, self.kind)?;
            }
            Ok(())
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = base;
            self.write(off, data)
        }
    }

    /// Non-temporal copy of `len` bytes inside the region, from `src` to `dst` (no DRAM
    /// buffer in between): aligned 8-byte atomic loads, `movnti` stores. Offsets and length
    /// must be multiples of 8 and the ranges disjoint (else an error, nothing copied).
    pub fn copy_nt(&self, src: u64, dst: u64, len: u64) -> Result<()> {
        let len_us = usize::try_from(len).map_err(|_| out_of_range(dst, len, self.len()))?;
        let s = self.at(src, len_us)? as usize;
        let d = self.at(dst, len_us)? as usize;
        if !(src | dst | len).is_multiple_of(8) || (s < d + len_us && d < s + len_us) {
            return Err(Error::InvalidArgument(format!(
                "copy of [{src}, +{len}) to {dst}: unaligned or overlapping"
            )));
        }
        let sp = s as *const u64;
        // SAFETY: words `0 .. len / 8` of both ranges lie inside the mapping (checked above),
        // 8-aligned and disjoint; each source word is loaded atomically (a mapping's user may
        // store to it meanwhile).
        unsafe { nt_words(d, len_us / 8, RegionWords(sp)) };
        Ok(())
    }

    /// Write back the lines covering `[off, off+len)`.
    #[inline]
    pub fn flush(&self, off: u64, len: u64, kind: FlushKind) -> Result<()> {
        let len_us = usize::try_from(len).map_err(|_| out_of_range(off, len, self.len()))?;
        let base = self.at(off, len_us)? as usize;
        #[cfg(target_arch = "x86_64")]
        {
            let end = base + len_us;
            let mut line = base & !63;
            while line < end {
                // SAFETY: `line` lies in a page of the checked range (the first line starts in
                // the page of `off`, the mapping being page aligned); the flush instructions
                // only write back the line and have no other memory effect.
                unsafe {
                    let p = line as *const u8;
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
            let _ = (base, kind);
        }
        Ok(())
    }

    /// `msync(MS_SYNC)` the pages covering the range.
    pub fn msync(&self, off: u64, len: u64) -> Result<()> {
        let len_us = usize::try_from(len).map_err(|_| out_of_range(off, len, self.len()))?;
        self.at(off, len_us)?;
        let page = 4096u64;
        let start = off & !(page - 1);
        let end = (off + len).div_ceil(page) * page;
        let end = end.min(self.len() as u64);
        // SAFETY: the range was checked to lie inside the mapping; it is widened to whole
        // pages of the mapping (page aligned start, end capped at its length); msync changes
        // no memory contents.
        let rc = unsafe {
            libc::msync(
                self.ptr.add(start as usize).cast(),
                (end - start) as usize,
                libc::MS_SYNC,
            )
        };
        if rc != 0 {
            return Err(Error::Io(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

/// Reserve `len` bytes of inaccessible address space starting at a [`HUGE_PAGE`] boundary:
/// reserve `HUGE_PAGE` more, then give back the unaligned head and the tail.
fn reserve_aligned(len: usize) -> Option<*mut u8> {
    let total = len.checked_add(HUGE_PAGE)?;
    let base = reserve_space(total)? as usize;
    let start = base.next_multiple_of(HUGE_PAGE);
    let head = start - base;
    let tail = total - head - len;
    // SAFETY: both ranges lie inside the anonymous reservation just made (`head + len + tail
    // == total`), which nothing else uses yet; unmapping them changes no memory we access.
    unsafe {
        if head > 0 {
            libc::munmap(base as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    Some(start as *mut u8)
}

/// Reserve `len` bytes of inaccessible address space (`PROT_NONE`, no swap reserved), at an
/// address the kernel picks (the image's region and direct-access mappings).
pub(super) fn reserve_space(len: usize) -> Option<*mut u8> {
    // SAFETY: a fresh anonymous mapping at an address the kernel picks; checked for
    // MAP_FAILED before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

impl Drop for RawRegion {
    fn drop(&mut self) {
        // Out of the SIGBUS table before the addresses can be reused.
        drop(std::mem::replace(
            &mut self.fault,
            sigbus::Registration::none(),
        ));
        // SAFETY: we created this reservation (and the file mappings inside it) with mmap and
        // nobody uses it after drop.
        unsafe {
            libc::munmap(self.ptr.cast(), self.reserved);
        }
    }
}

/// Where [`nt_words`] takes its words from.
trait Words {
    /// Word `k`.
    ///
    /// # Safety
    /// `k` is below the count the source was made for.
    unsafe fn word(&self, k: usize) -> u64;

    /// Words `k` and `k + 1` as one 16-byte value.
    ///
    /// # Safety
    /// `k + 1` is below the count the source was made for.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn pair(&self, k: usize) -> std::arch::x86_64::__m128i {
        // SAFETY: the caller's contract.
        unsafe { std::arch::x86_64::_mm_set_epi64x(self.word(k + 1) as i64, self.word(k) as i64) }
    }
}

/// Words of a byte slice (any alignment): a pair is one unaligned 16-byte load.
struct SliceWords(*const u8);

impl Words for SliceWords {
    // Safety contracts of both methods: as in the trait (the words asked for are inside the
    // slice the source was made from).
    #[inline(always)]
    unsafe fn word(&self, k: usize) -> u64 {
        // SAFETY: the caller's contract: bytes `8k .. 8k + 8` are inside the slice.
        unsafe { (self.0.add(8 * k) as *const u64).read_unaligned() }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn pair(&self, k: usize) -> std::arch::x86_64::__m128i {
        // SAFETY: the caller's contract: bytes `8k .. 8k + 16` are inside the slice.
        unsafe { std::arch::x86_64::_mm_loadu_si128(self.0.add(8 * k) as *const _) }
    }
}

/// Words of the region, each loaded atomically (a mapping's user may store to them).
struct RegionWords(*const u64);

impl Words for RegionWords {
    // Safety contract: as in the trait (the word is inside the mapping, 8-aligned).
    #[inline(always)]
    unsafe fn word(&self, k: usize) -> u64 {
        // SAFETY: the caller's contract: word `k` is inside the mapping, 8-aligned.
        unsafe { AtomicU64::from_ptr(self.0.add(k) as *mut u64).load(Ordering::Relaxed) }
    }
}

/// Non-temporal stores of `words` quadwords at `dst` from `src`: one `movnti` to reach
/// 16-byte alignment, then `movntdq` (16 bytes, SSE2) per two words, a last `movnti` if one
/// word is left. On a Xeon (Sapphire Rapids), 8-byte `movnti` stores followed by a tail
/// store, `clwb` and `sfence` took twice as long as the same lines in 16-byte stores (482-514
/// against 237-290 ns for a 128-byte log entry and its commit, DESIGN.md §2).
///
/// # Safety
/// `dst` must be 8-aligned, `dst .. dst + 8 * words` mapped writable, and `src` made for at
/// least `words` words.
#[inline(always)]
unsafe fn nt_words(dst: usize, words: usize, src: impl Words) {
    let dp = dst as *mut u64;
    let mut k = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if words > 0 && !dst.is_multiple_of(16) {
            // SAFETY: the caller's contract: word 0 is inside the range, 8-aligned.
            unsafe { nt1(dst, src.word(0)) };
            k = 1;
        }
        use std::arch::x86_64::_mm_stream_si128 as nt16;
        // A line per iteration (the loop's own instructions were 4 of every 7).
        while k + 8 <= words {
            // SAFETY: words `k .. k + 8` are inside both ranges (the caller's contract) and
            // `dst + 8k` is 16-aligned (`k` is odd exactly when `dst` was not); `movntdq`
            // stores 16 bytes each and has no other memory effect.
            unsafe {
                let (a, b, c, d) = (
                    src.pair(k),
                    src.pair(k + 2),
                    src.pair(k + 4),
                    src.pair(k + 6),
                );
                nt16(dp.add(k) as *mut _, a);
                nt16(dp.add(k + 2) as *mut _, b);
                nt16(dp.add(k + 4) as *mut _, c);
                nt16(dp.add(k + 6) as *mut _, d);
            }
            k += 8;
        }
        while k + 2 <= words {
            // SAFETY: as above, two words.
            unsafe { nt16(dp.add(k) as *mut _, src.pair(k)) };
            k += 2;
        }
    }
    while k < words {
        // SAFETY: the caller's contract, one word.
        unsafe { nt1(dp.add(k) as usize, src.word(k)) };
        k += 1;
    }
}

/// A non-temporal store of one quadword at `p`.
///
/// # Safety
/// `p` must be 8-aligned and `p .. p + 8` mapped writable.
#[inline(always)]
unsafe fn nt1(p: usize, w: u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract; `movnti` stores one aligned quadword.
    unsafe {
        std::arch::asm!(
            "movnti [{p}], {a}",
            p = in(reg) p,
            a = in(reg) w,
            options(nostack, preserves_flags)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's contract.
    unsafe {
        AtomicU64::from_ptr(p as *mut u64).store(w, Ordering::Relaxed);
    }
}

/// A store fence.
#[inline(always)]
pub fn sfence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence has no memory-safety preconditions.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(Ordering::SeqCst);
}

/// Whether the file lives in RAM (tmpfs or hugetlbfs): "emulated pmem".
pub fn is_ram_backed(file: &File) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
    // SAFETY: statfs is plain old data; fstatfs writes it fully on success.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out pointer.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    if rc != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let t = st.f_type as i64;
    t == TMPFS_MAGIC || t == HUGETLBFS_MAGIC
}

/// Reserve the file's space up front so that a full host file system fails at format time
/// with `NoSpace`, not at a later store (which would raise SIGBUS). File systems that cannot
/// preallocate are accepted as they are.
pub fn preallocate(file: &File, len: u64) -> Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| Error::InvalidArgument("image too large".into()))?;
    // SAFETY: a valid fd; posix_fallocate has no memory effects.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 | libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        libc::ENOSPC | libc::EFBIG => Err(Error::NoSpace),
        e => Err(Error::Io(std::io::Error::from_raw_os_error(e))),
    }
}

/// Page-cache state of a file range, from `cachestat(2)` (Linux 6.5+): `(dirty, writeback)`
/// page counts, or `None` when the kernel lacks the call.
pub fn cachestat(file: &File, off: u64, len: u64) -> Result<Option<(u64, u64)>> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    /// `__NR_cachestat` (the same number on every architecture).
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range { off, len };
    let mut st = Stat::default();
    // SAFETY: a valid fd, a valid range struct read by the kernel and a valid out struct it
    // fills; both are `repr(C)` with the kernel's layout (five and two `__u64`).
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut st as *mut Stat,
            0 as libc::c_uint,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) => Ok(None),
            _ => Err(Error::Io(e)),
        };
    }
    Ok(Some((st.nr_dirty, st.nr_writeback)))
}

/// A truncated image under a live mapping: SIGBUS recognised and reported.
///
/// When the image file shrinks while it is mounted (another process truncates it, or its
/// storage fails), a load or store to a page of the region past the new end of the file makes
/// the kernel raise SIGBUS: nothing in the access can return an error, and Rust code cannot
/// unwind out of a signal handler. What the media layer can do is say what happened: every
/// novafs region (the image mapping and each direct-access mapping's reservation) is
/// registered here, in a fixed table that a signal handler can read without locking or
/// allocating; a SIGBUS handler installed with the first region looks the fault address up
/// and, if it lies in a novafs region, writes one line to stderr naming the cause and the
/// offset, and exits the process with status [`IMAGE_FAULT_EXIT`] (`_exit`: no destructor
/// runs, nothing more is stored to the image; the next mount runs recovery). A SIGBUS
/// elsewhere goes to the handler that was installed before (Rust's stack-overflow handler,
/// say) or to the default action, as if novafs had installed nothing.
pub mod sigbus {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The exit status of a process killed by a fault in a novafs region (a truncated image).
    pub const IMAGE_FAULT_EXIT: i32 = 86;

    /// What a registered region is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum RegionKind {
        /// The image file's mapping.
        Image = 1,
        /// A direct-access mapping (`File::map`).
        Mapping = 2,
    }

    struct Slot {
        start: AtomicUsize,
        end: AtomicUsize,
        /// 0: free; else a `RegionKind`.
        kind: AtomicUsize,
    }

    const SLOTS: usize = 1024;
    static REGIONS: [Slot; SLOTS] = [const {
        Slot {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            kind: AtomicUsize::new(0),
        }
    }; SLOTS];

    /// A registration; unregisters on drop.
    #[derive(Debug)]
    pub struct Registration(Option<usize>);

    impl Registration {
        /// No registration.
        pub fn none() -> Registration {
            Registration(None)
        }

        /// The registered region is now `len` bytes long (it grew in place).
        pub fn set_len(&self, len: usize) {
            if let Some(i) = self.0 {
                let s = &REGIONS[i];
                let start = s.start.load(Ordering::Acquire);
                s.end.store(start.saturating_add(len), Ordering::Release);
            }
        }
    }

    impl Drop for Registration {
        fn drop(&mut self) {
            if let Some(i) = self.0 {
                let s = &REGIONS[i];
                s.start.store(0, Ordering::Release);
                s.end.store(0, Ordering::Release);
                s.kind.store(0, Ordering::Release);
            }
        }
    }

    /// Register `[start, start + len)` (and install the handler once). With every slot taken
    /// (more than 1,024 live regions) the region is not registered: a fault there is then an
    /// ordinary SIGBUS.
    pub fn register(start: usize, len: usize, kind: RegionKind) -> Registration {
        install();
        for (i, s) in REGIONS.iter().enumerate() {
            if s.kind
                .compare_exchange(0, kind as usize, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                s.end.store(start.saturating_add(len), Ordering::Release);
                s.start.store(start, Ordering::Release);
                return Registration(Some(i));
            }
        }
        Registration(None)
    }

    /// The previous SIGBUS action, for faults outside novafs regions.
    struct Old(libc::sigaction);
    // SAFETY: a plain C struct of integers and function addresses, written once before it is
    // published (OnceLock) and only read afterwards.
    unsafe impl Sync for Old {}
    // SAFETY: as above.
    unsafe impl Send for Old {}
    static OLD: std::sync::OnceLock<Old> = std::sync::OnceLock::new();

    fn install() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: sigaction is plain old data; zeroed is a valid empty value, then filled.
            let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            new.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `sa_mask` is a valid sigset_t owned by `new`.
            unsafe { libc::sigemptyset(&mut new.sa_mask) };
            // SAFETY: valid pointers to two sigaction structs; the handler is an
            // `extern "C" fn(c_int, *mut siginfo_t, *mut c_void)` as SA_SIGINFO requires.
            // The old action is published before the new one can run on a novafs fault
            // (no novafs region is registered until `install` returns).
            if unsafe { libc::sigaction(libc::SIGBUS, &new, &mut old) } == 0 {
                let _ = OLD.set(Old(old));
            }
        });
    }

    /// Async-signal-safe text building: a fixed buffer, no allocation.
    struct Line {
        buf: [u8; 640],
        n: usize,
    }

    impl Line {
        fn s(&mut self, t: &str) -> &mut Self {
            for &b in t.as_bytes() {
                if self.n < self.buf.len() {
                    self.buf[self.n] = b;
                    self.n += 1;
                }
            }
            self
        }

        fn num(&mut self, mut v: usize) -> &mut Self {
            let mut d = [0u8; 20];
            let mut k = d.len();
            loop {
                k -= 1;
                d[k] = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            for &b in &d[k..] {
                if self.n < self.buf.len() {
                    self.buf[self.n] = b;
                    self.n += 1;
                }
            }
            self
        }
    }

    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; `si_addr` is
        // the faulting address for SIGBUS.
        let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
        // Only a fault the kernel raised names an address (`si_code > 0`); a SIGBUS sent by
        // kill(2) or sigqueue(3) goes on as if novafs were not there.
        for s in REGIONS.iter().filter(|_| code > 0) {
            let start = s.start.load(Ordering::Acquire);
            let end = s.end.load(Ordering::Acquire);
            if start == 0 || addr < start || addr >= end {
                continue;
            }
            let mut l = Line {
                buf: [0; 640],
                n: 0,
            };
            l.s("novafs: fatal: bus error (SIGBUS) at ");
            if s.kind.load(Ordering::Acquire) == RegionKind::Image as usize {
                l.s("offset ")
                    .num(addr - start)
                    .s(" of the mapped image (")
                    .num(end - start)
                    .s(" bytes mapped)");
            } else {
                l.s("page ")
                    .num((addr - start) / 4096)
                    .s(" of a direct-access mapping of the image");
            }
            l.s(
                ": the image file was truncated or shrunk while mounted (or its storage \
                 failed), so that page no longer exists. novafs cannot continue: exiting with \
                 status ",
            )
            .num(IMAGE_FAULT_EXIT as usize)
            .s(
                ". Restore the image file's size and mount it again (recovery runs), or \
                    run fsck.\n",
            );
            // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is valid.
            unsafe {
                libc::write(2, l.buf.as_ptr().cast(), l.n);
                libc::_exit(IMAGE_FAULT_EXIT);
            }
        }
        // Not a novafs region: what would have happened without us.
        match OLD.get() {
            Some(Old(o)) if o.sa_sigaction != libc::SIG_DFL && o.sa_sigaction != libc::SIG_IGN => {
                if o.sa_flags & libc::SA_SIGINFO != 0 {
                    // SAFETY: an SA_SIGINFO handler installed before ours has this signature;
                    // it is called with the arguments the kernel gave us.
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        unsafe { std::mem::transmute(o.sa_sigaction) };
                    f(sig, info, ctx);
                } else {
                    // SAFETY: a plain handler installed before ours has this signature.
                    let f: extern "C" fn(libc::c_int) =
                        unsafe { std::mem::transmute(o.sa_sigaction) };
                    f(sig);
                }
            }
            _ => {
                // Default action: restore it and return; the access faults again and the
                // kernel applies it (core dump, termination by SIGBUS).
                // SAFETY: sigaction is plain old data (zeroed = SIG_DFL, empty mask).
                let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
                // SAFETY: sigaction(2) is async-signal-safe; valid pointer.
                unsafe { libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut()) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(len: u64) -> (std::path::PathBuf, RawRegion) {
        let (path, f) = image_file(len);
        let (r, _) = RawRegion::map(&f, len, len, false).unwrap();
        (path, r)
    }

    /// A scratch file of `len` bytes (in /dev/shm where there is one).
    fn image_file(len: u64) -> (std::path::PathBuf, File) {
        use std::sync::atomic::AtomicU64;
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!(
            "novafs-raw-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(len).unwrap();
        (path, f)
    }

    /// The region starts on a huge-page boundary (devdax refuses a misaligned MAP_FIXED) and
    /// grows in place: the base stays, the new bytes are mapped and read as zero, accesses past
    /// the reservation are refused.
    #[test]
    fn a_region_is_huge_page_aligned_and_grows_in_place() {
        let (path, f) = image_file(8192);
        let (r, _) = RawRegion::map(&f, 8192, 64 << 10, false).unwrap();
        assert_eq!(r.ptr as usize % HUGE_PAGE, 0);
        let base = r.ptr;
        r.store_u64(8184, 7).unwrap();
        assert!(r.load_u64(8192).is_err());
        f.set_len(32 << 10).unwrap();
        r.grow(&f, 32 << 10).unwrap();
        assert_eq!(r.ptr, base);
        assert_eq!(r.len(), 32 << 10);
        assert_eq!(r.load_u64(8184).unwrap(), 7);
        assert_eq!(r.load_u64((32 << 10) - 8).unwrap(), 0);
        f.set_len(128 << 10).unwrap();
        assert!(r.grow(&f, 128 << 10).is_err(), "past the reservation");
        assert_eq!(r.len(), 32 << 10);
        drop(r);
        let _ = std::fs::remove_file(&path);
    }

    /// Every function of the region checks its range itself: out-of-range or overflowing
    /// offsets and lengths are errors (they were only debug-asserted), unaligned words too.
    #[test]
    fn every_access_checks_its_bounds() {
        let (path, r) = region(8192);
        let _ = std::fs::remove_file(&path);
        let k = FlushKind::detect();
        let mut b = [0u8; 16];
        assert!(r.read(8192 - 8, &mut b).is_err());
        assert!(r.read(u64::MAX - 4, &mut b).is_err());
        assert!(r.write(8190, &[1, 2, 3]).is_err());
        assert!(r.write(u64::MAX, &[1]).is_err());
        assert!(r.write_nt(8000, &[7; 200]).is_err());
        assert!(r.write_nt(u64::MAX - 10, &[7; 20]).is_err());
        assert!(r.load_u64(8192).is_err());
        assert!(r.load_u64(4).is_err(), "unaligned");
        assert!(r.store_u64(8192, 1).is_err());
        assert!(r.store_u64(12, 1).is_err(), "unaligned");
        assert!(r.flush(8100, 100, k).is_err());
        assert!(r.flush(0, u64::MAX, k).is_err());
        assert!(r.msync(8000, 4096).is_err());
        // Nothing was stored by the refused calls; in-range calls work.
        r.read(8192 - 16, &mut b).unwrap();
        assert_eq!(b, [0; 16]);
        r.write_nt(3, &[9; 100]).unwrap();
        r.store_u64(8192 - 8, 5).unwrap();
        r.flush(0, 8192, k).unwrap();
        r.msync(0, 8192).unwrap();
        assert_eq!(r.load_u64(8192 - 8).unwrap(), 5);
        let mut c = [0u8; 104];
        r.read(1, &mut c).unwrap();
        assert_eq!(&c[..2], &[0, 0]);
        assert_eq!(&c[2..102], &[9; 100][..]);
        assert_eq!(&c[102..], &[0, 0]);
    }

    /// A SIGBUS in memory that is not a novafs region (with the handler installed and a novafs
    /// region registered) keeps the action it would have had without novafs: the process dies
    /// of SIGBUS, with no novafs message. (The novafs case: `tests/truncate.rs`.)
    #[test]
    fn a_foreign_sigbus_keeps_its_default_action() {
        use std::os::unix::process::ExitStatusExt;
        const ENV: &str = "NOVAFS_FOREIGN_SIGBUS_CHILD";
        if std::env::var(ENV).is_ok() {
            let (path, r) = region(8192);
            let _ = std::fs::remove_file(&path);
            let (path2, other) = region(8192);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path2)
                .unwrap();
            let _ = std::fs::remove_file(&path2);
            // A mapping of a second file, made without the media layer's registration.
            let mut other = other;
            drop(std::mem::replace(
                &mut other.fault,
                sigbus::Registration::none(),
            ));
            let p = other.ptr;
            f.set_len(0).unwrap();
            // SAFETY: the page is mapped (its file shrank: the load faults with SIGBUS, which is
            // what this child is for).
            let v = unsafe { p.add(4096).read_volatile() };
            println!("NOT REACHED {v} {}", r.len());
            std::process::exit(0);
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "media::raw::tests::a_foreign_sigbus_keeps_its_default_action",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "{stderr}");
        assert!(!stderr.contains("novafs: fatal"), "{stderr}");
    }

    /// Copies inside the region at 8-aligned offsets (equally and unequally aligned modulo 16)
    /// and lengths around the 64-byte steps store exactly their bytes; bad requests copy
    /// nothing.
    #[test]
    fn copy_nt_copies_exactly_its_bytes() {
        let (path, r) = region(4 * 4096);
        let _ = std::fs::remove_file(&path);
        let src: Vec<u8> = (0..4096).map(|i| (i * 13 % 251) as u8).collect();
        for s_off in [0u64, 8, 16, 24] {
            for d_off in [0u64, 8, 16, 40] {
                for len in [0u64, 8, 56, 64, 72, 120, 128, 136, 512, 1000, 2048] {
                    r.write(0, &src).unwrap();
                    r.write(8192, &[0xEE; 4096]).unwrap();
                    r.copy_nt(s_off, 8192 + d_off, len).unwrap();
                    let mut back = vec![0u8; 4096];
                    r.read(8192, &mut back).unwrap();
                    let (d, l) = (d_off as usize, len as usize);
                    assert!(
                        back[..d].iter().all(|&x| x == 0xEE),
                        "{s_off} {d_off} {len}"
                    );
                    assert_eq!(
                        &back[d..d + l],
                        &src[s_off as usize..s_off as usize + l],
                        "{s_off} {d_off} {len}"
                    );
                    assert!(
                        back[d + l..].iter().all(|&x| x == 0xEE),
                        "{s_off} {d_off} {len}"
                    );
                }
            }
        }
        assert!(r.copy_nt(4, 8192, 64).is_err());
        assert!(r.copy_nt(0, 32, 64).is_err(), "overlapping");
    }

    /// Non-temporal copies at every small offset and length, and at lengths around the 64-byte
    /// steps of the long copy, store exactly their bytes.
    #[test]
    fn write_nt_stores_exactly_its_bytes() {
        let (path, r) = region(4096);
        let _ = std::fs::remove_file(&path);
        for off in 0..24u64 {
            for len in (0..80usize).chain([127, 128, 129, 135, 136, 191, 192, 200, 231]) {
                r.write(0, &[0xEE; 256]).unwrap();
                let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5A).collect();
                r.write_nt(off, &data).unwrap();
                let mut back = [0u8; 256];
                r.read(0, &mut back).unwrap();
                assert!(back[..off as usize].iter().all(|&x| x == 0xEE));
                assert_eq!(&back[off as usize..off as usize + len], &data[..]);
                assert!(back[off as usize + len..].iter().all(|&x| x == 0xEE));
            }
        }
    }
}
