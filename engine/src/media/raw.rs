//! Mapping and persistence primitives: the only `unsafe` code in novafs.
//!
//! A [`RawRegion`] is a shared, writable mapping of the image file. The engine guarantees (by its
//! allocator and per-inode locks) that no two threads store to the same bytes concurrently and
//! that nobody reads bytes another thread is storing, except the 8-byte commit words, which are
//! accessed with atomic loads and stores.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapRaw;

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

enum Mapping {
    /// Mapped by us with `MAP_SHARED_VALIDATE | MAP_SYNC`.
    Sync { ptr: *mut u8, len: usize },
    /// An ordinary shared mapping.
    Plain { _map: MmapRaw },
}

/// A shared writable mapping of an image file.
pub struct RawRegion {
    map: Mapping,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the region is plain shared memory; the engine's locking discipline (see the module
// docs) keeps concurrent accesses to disjoint bytes, and the pointer stays valid until drop.
unsafe impl Send for RawRegion {}
// SAFETY: as above; all shared mutation goes through methods whose callers own the bytes.
unsafe impl Sync for RawRegion {}

const MAP_SYNC: libc::c_int = 0x80000;
const MAP_SHARED_VALIDATE: libc::c_int = 0x03;

impl RawRegion {
    /// Map `len` bytes of `file`, trying `MAP_SYNC` first. Returns the region and whether
    /// `MAP_SYNC` was granted.
    pub fn map(file: &File, len: u64, populate: bool) -> Result<(RawRegion, bool)> {
        let len =
            usize::try_from(len).map_err(|_| Error::InvalidArgument("image too large".into()))?;
        let mut flags = MAP_SHARED_VALIDATE | MAP_SYNC;
        if populate {
            flags |= libc::MAP_POPULATE;
        }
        // SAFETY: a fresh mapping of a file we hold open; the kernel picks the address; we
        // check for MAP_FAILED before using the pointer.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                file.as_raw_fd(),
                0,
            )
        };
        if p != libc::MAP_FAILED {
            let ptr = p.cast::<u8>();
            return Ok((
                RawRegion {
                    map: Mapping::Sync { ptr, len },
                    ptr,
                    len,
                },
                true,
            ));
        }
        let mut opts = memmap2::MmapOptions::new();
        opts.len(len);
        if populate {
            opts.populate();
        }
        let m = opts.map_raw(file)?;
        let ptr = m.as_mut_ptr();
        Ok((
            RawRegion {
                map: Mapping::Plain { _map: m },
                ptr,
                len,
            },
            false,
        ))
    }

    /// Copy out bytes. The caller checked bounds.
    pub fn read(&self, off: u64, buf: &mut [u8]) {
        debug_assert!(off as usize + buf.len() <= self.len);
        // SAFETY: bounds checked by the caller (Media::check); source and destination do not
        // overlap (buf is DRAM owned by the caller).
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.add(off as usize), buf.as_mut_ptr(), buf.len())
        }
    }

    /// Atomic aligned 8-byte load.
    pub fn load_u64(&self, off: u64) -> u64 {
        debug_assert!(off.is_multiple_of(8) && off as usize + 8 <= self.len);
        // SAFETY: in bounds and 8-byte aligned (checked by the caller; the mapping is page
        // aligned); AtomicU64 has the layout of u64.
        let a = unsafe { &*(self.ptr.add(off as usize) as *const AtomicU64) };
        a.load(Ordering::Acquire)
    }

    /// Cached store of bytes. The caller checked bounds.
    pub fn write(&self, off: u64, data: &[u8]) {
        debug_assert!(off as usize + data.len() <= self.len);
        // SAFETY: bounds checked by the caller; the engine owns these bytes exclusively while
        // it writes them (allocator / inode lock discipline).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off as usize), data.len())
        }
    }

    /// Atomic aligned 8-byte store.
    pub fn store_u64(&self, off: u64, v: u64) {
        debug_assert!(off.is_multiple_of(8) && off as usize + 8 <= self.len);
        // SAFETY: in bounds and aligned (checked by the caller); AtomicU64 has u64's layout.
        let a = unsafe { &*(self.ptr.add(off as usize) as *const AtomicU64) };
        a.store(v, Ordering::Release);
    }

    /// Non-temporal copy. Unaligned head and tail bytes are stored normally and flushed.
    pub fn write_nt(&self, off: u64, data: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
            let start = off as usize;
            let end = start + data.len();
            let a_start = (start + 15) & !15;
            let a_end = end & !15;
            if a_start >= a_end {
                self.write(off, data);
                self.flush(off, data.len() as u64, FlushKind::detect());
                return;
            }
            if a_start > start {
                self.write(off, &data[..a_start - start]);
                self.flush(off, (a_start - start) as u64, FlushKind::detect());
            }
            let mut i = a_start;
            // A cache line (four 16-byte stores) per iteration: a third of the instructions of
            // one store per iteration for a 4 KiB page (callgrind).
            while i + 64 <= a_end {
                // SAFETY: `i` is 16-aligned and `i + 64 <= a_end <= end <= len` (bounds checked
                // by the caller); the source indices `i - start .. +64` are within `data`.
                unsafe {
                    let src = data.as_ptr().add(i - start) as *const __m128i;
                    let dst = self.ptr.add(i) as *mut __m128i;
                    let (a, b) = (_mm_loadu_si128(src), _mm_loadu_si128(src.add(1)));
                    let (c, d) = (_mm_loadu_si128(src.add(2)), _mm_loadu_si128(src.add(3)));
                    _mm_stream_si128(dst, a);
                    _mm_stream_si128(dst.add(1), b);
                    _mm_stream_si128(dst.add(2), c);
                    _mm_stream_si128(dst.add(3), d);
                }
                i += 64;
            }
            while i < a_end {
                // SAFETY: `i` is 16-aligned and `i + 16 <= end <= len` (bounds checked by the
                // caller); the source slice index `i - start .. +16` is within `data`.
                unsafe {
                    let src = data.as_ptr().add(i - start) as *const __m128i;
                    let dst = self.ptr.add(i) as *mut __m128i;
                    _mm_stream_si128(dst, _mm_loadu_si128(src));
                }
                i += 16;
            }
            if a_end < end {
                self.write(a_end as u64, &data[a_end - start..]);
                self.flush(a_end as u64, (end - a_end) as u64, FlushKind::detect());
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.write(off, data);
        }
    }

    /// Write back the lines covering `[off, off+len)`.
    pub fn flush(&self, off: u64, len: u64, kind: FlushKind) {
        #[cfg(target_arch = "x86_64")]
        {
            let first = off & !63;
            let end = off + len;
            let mut line = first;
            while line < end {
                // SAFETY: `line` lies within the mapping (the caller checked `off+len`, and the
                // first line starts at or after offset 0); the flush instructions only write
                // back the line and have no other memory effect.
                unsafe {
                    let p = self.ptr.add(line as usize);
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
            let _ = (off, len, kind);
        }
    }

    /// `msync(MS_SYNC)` the pages covering the range.
    pub fn msync(&self, off: u64, len: u64) -> Result<()> {
        let page = 4096u64;
        let start = off & !(page - 1);
        let end = (off + len).div_ceil(page) * page;
        let end = end.min(self.len as u64);
        // SAFETY: the range is page aligned and inside our mapping.
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

impl Drop for RawRegion {
    fn drop(&mut self) {
        if let Mapping::Sync { ptr, len } = self.map {
            // SAFETY: we created this mapping with mmap and nobody uses it after drop.
            unsafe {
                libc::munmap(ptr.cast(), len);
            }
        }
    }
}

/// A store fence.
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
