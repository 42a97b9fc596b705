//! The media layer: the persistent region and its persistence primitives.
//!
//! Every byte the engine stores to the region goes through [`Media`]: `write` (a cached store,
//! durable only after `flush` + `fence`), `write_nt` (a non-temporal copy, durable after the
//! next `fence`), `store_u64` (an aligned, failure-atomic 8-byte store), `flush` and `fence`.
//! This is what lets the traced backend see every store and what lets the crash harness build
//! the images a crash may leave.
//!
//! Backends:
//! - [`MediaMode::Dax`]: the kernel granted `MAP_SHARED_VALIDATE | MAP_SYNC`; flush + fence.
//! - [`MediaMode::Emulated`]: a tmpfs/hugetlbfs file (or forced); flush + fence, no msync.
//! - [`MediaMode::Msync`]: any other file; a flush (and a non-temporal store) records the
//!   touched pages, and the next fence makes them all durable with one `msync` (see
//!   [`MsyncState`]).
//! - [`MediaMode::Traced`]: a `Vec<u8>` in DRAM, every store, flush and fence appended to a
//!   trace for the crash harness.
//!
//! All `unsafe` code of the workspace lives in `media::raw` and `media::map` (direct-access
//! mappings, DESIGN §5.4.1).

pub mod map;
mod raw;
pub mod trace;

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::sync::Mutex;

use crate::error::{Error, Result};
use map::{MapView, PageTarget, Reservation, Shadow, VolatileSlice};
pub use raw::sigbus::IMAGE_FAULT_EXIT;
pub use raw::FlushKind;
use raw::RawRegion;
pub use trace::{Trace, TraceEvent, TraceSite};

/// Cache-line size assumed by the persistence model.
pub const LINE: u64 = 64;

/// How persistence is achieved for this region (a capability query, like `STATX_ATTR_DAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaMode {
    /// Real persistent memory mapped with `MAP_SYNC`: flush + fence are the persist points.
    Dax,
    /// A DRAM-backed file (tmpfs/hugetlbfs) treated as persistent memory: flush + fence.
    Emulated,
    /// Any other file: each persist point also `msync`s the touched pages.
    Msync,
    /// The traced in-memory backend used by tests and the crash harness.
    Traced,
}

impl MediaMode {
    /// A short lower-case name (`dax`, `emulated`, `msync`, `traced`).
    pub fn name(self) -> &'static str {
        match self {
            MediaMode::Dax => "dax",
            MediaMode::Emulated => "emulated",
            MediaMode::Msync => "msync",
            MediaMode::Traced => "traced",
        }
    }
}

impl std::fmt::Display for MediaMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How to map an image.
#[derive(Clone, Debug, Default)]
pub struct MapOptions {
    /// Fail with [`Error::DaxUnavailable`] unless `MAP_SYNC` is granted.
    pub require_dax: bool,
    /// Treat the file as emulated pmem even if it is not on tmpfs (also `NOVAFS_FORCE_PMEM=1`).
    pub force_emulated: bool,
    /// Pre-fault the whole mapping (`MAP_POPULATE`).
    pub populate: bool,
    /// Address space to reserve for the mapping, so that the image can grow in place
    /// ([`Media::grow`]) up to this many bytes; 0 picks [`default_grow_limit`].
    pub grow_limit: u64,
}

/// The default address space reserved for an image of `len` bytes: room to grow to 16 times
/// its size and at least 1 GiB more, at most 64 TiB (reserved address space costs no memory:
/// `PROT_NONE`, no swap reserved; only the kernel's bookkeeping of one mapping).
pub fn default_grow_limit(len: u64) -> u64 {
    len.saturating_mul(16)
        .max(len.saturating_add(1 << 30))
        .min(64 << 40)
        .max(len)
}

enum Backend {
    Mapped(RawRegion),
    Traced(Mutex<trace::TracedRegion>),
}

/// The persistent region.
pub struct Media {
    backend: Backend,
    mode: MediaMode,
    /// Bytes of the region (grows with [`Media::grow`], never shrinks).
    len: AtomicU64,
    flush_kind: FlushKind,
    /// The image file, holding its lock until [`Media::release`] (unmount) or drop.
    file: Mutex<Option<File>>,
    /// Durability system calls made (msync, fdatasync): msync mode's cost, for tests and
    /// benches.
    sync_calls: AtomicU64,
    /// Msync mode: what the next fence must make durable.
    msync: MsyncState,
    /// Single-inode appends commit with one fence (DESIGN.md §5.1): set by the mount once
    /// the mount state says so, read by every commit.
    one_fence: AtomicBool,
    /// A one-fence commit's data runs carry checksums (DESIGN.md §5.1.1) instead of being
    /// fenced before the entries: on where a fence is a system call (msync mode), off where
    /// it is `sfence` (reading a run back for its checksum costs more than the fence).
    data_crcs: AtomicBool,
}

/// Msync mode's deferred durability.
///
/// In msync mode a store reaches the page cache at once and the kernel may write a dirty page
/// back at any moment, so, as on pmem, an unflushed store may or may not be durable at a
/// crash; what must hold is that everything flushed before a fence is durable when the fence
/// returns. A flush therefore only records its pages here, and the fence issues the
/// durability call for all of them: one `msync(MS_SYNC)` of the span from the lowest recorded
/// page to the highest (msync is the kernel's data sync of a file range, `vfs_fsync_range`:
/// the span costs the write-back of its dirty pages, i.e. what was flushed plus anything stored
/// there unflushed, which the model allows to persist, and one device cache flush; it is the
/// same operation as an `fdatasync` of the image restricted to the span, so one call over the
/// span is never dearer than one `fdatasync` and leaves dirty pages outside it alone). Each durability call ends with a device cache flush,
/// so the number of calls is what costs: a commit (data + entries, fence, tail, fence) makes
/// two where flushing at once made one per flushed range (three or more), and every persist
/// point keeps its meaning: nothing flushed before a fence is left out of that fence's call.
///
/// Threads: a fence holds `fence_lock` across its calls, so a fence that finds the ranges it
/// flushed already taken by another thread's fence waits until that fence's calls are done
/// (its ranges are then durable) instead of returning early.
///
/// Errors: `fence` cannot fail (it is the ordering primitive every commit calls), so a failed
/// call poisons the media: from then on every store and flush fails with the error before it
/// reaches the page cache. No commit word is stored after a fence whose data did not become
/// durable; the mount must be remounted (recovery sees the state of the last good fence).
#[derive(Default)]
struct MsyncState {
    /// The page-aligned span `[start, end)` of everything flushed (or stored non-temporally)
    /// since the last fence took it.
    pending: parking_lot::Mutex<Option<(u64, u64)>>,
    /// Held by a fence across its durability calls.
    fence_lock: parking_lot::Mutex<()>,
    /// The errno of a failed durability call (0: none): every later store fails.
    poisoned: std::sync::atomic::AtomicI32,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("mode", &self.mode)
            .field("len", &self.len())
            .field("flush_kind", &self.flush_kind)
            .finish()
    }
}

impl Media {
    /// Create the image file at `path` (or take an existing one), size it to `len` bytes and
    /// map it. An existing non-empty file is refused with `AlreadyExists` unless `overwrite`.
    pub fn create(path: &Path, len: u64, overwrite: bool, opts: &MapOptions) -> Result<Media> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        lock_file(&file)?;
        if !overwrite && file.metadata()?.len() > 0 {
            return Err(Error::AlreadyExists);
        }
        file.set_len(0)?;
        file.set_len(len)?;
        raw::preallocate(&file, len)?;
        Media::from_file(file, len, opts)
    }

    /// Map an existing image file.
    pub fn open(path: &Path, opts: &MapOptions) -> Result<Media> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        lock_file(&file)?;
        let len = file.metadata()?.len();
        Media::from_file(file, len, opts)
    }

    fn from_file(file: File, len: u64, opts: &MapOptions) -> Result<Media> {
        if len == 0 {
            return Err(Error::NotNovafs);
        }
        if usize::try_from(len).is_err() {
            return Err(Error::Corrupt {
                what: "image size".into(),
                location: format!("{len} bytes"),
            });
        }
        let forced = opts.force_emulated
            || std::env::var("NOVAFS_FORCE_PMEM").is_ok_and(|v| v == "1" || v == "true");
        let reserve = match opts.grow_limit {
            0 => default_grow_limit(len),
            n => n.max(len),
        };
        let (region, dax) = RawRegion::map(&file, len, reserve, opts.populate)?;
        let mode = if dax {
            MediaMode::Dax
        } else if opts.require_dax {
            return Err(Error::DaxUnavailable);
        } else if forced || raw::is_ram_backed(&file) {
            MediaMode::Emulated
        } else {
            MediaMode::Msync
        };
        Ok(Media {
            backend: Backend::Mapped(region),
            mode,
            len: AtomicU64::new(len),
            flush_kind: FlushKind::detect(),
            file: Mutex::new(Some(file)),
            sync_calls: AtomicU64::new(0),
            msync: MsyncState::default(),
            one_fence: AtomicBool::new(false),
            data_crcs: AtomicBool::new(mode == MediaMode::Msync),
        })
    }

    /// A traced in-memory region of `len` bytes, initially zero.
    pub fn traced(len: u64) -> Media {
        Media::traced_from(vec![0; usize::try_from(len).unwrap_or(0)])
    }

    /// A traced region whose durable contents are `image`.
    pub fn traced_from(image: Vec<u8>) -> Media {
        let len = image.len() as u64;
        Media {
            backend: Backend::Traced(Mutex::new(trace::TracedRegion::new(image))),
            mode: MediaMode::Traced,
            len: AtomicU64::new(len),
            flush_kind: FlushKind::None,
            file: Mutex::new(None),
            sync_calls: AtomicU64::new(0),
            msync: MsyncState::default(),
            one_fence: AtomicBool::new(false),
            data_crcs: AtomicBool::new(false),
        }
    }

    /// The persistence path in use.
    pub fn mode(&self) -> MediaMode {
        self.mode
    }

    /// Whether single-inode appends commit with one fence (DESIGN.md §5.1).
    #[inline]
    pub fn one_fence(&self) -> bool {
        self.one_fence.load(Ordering::Relaxed)
    }

    /// Switch one-fence commits on or off. The mount does this only after the mount state
    /// records it (`layout::state::ONE_FENCE_MAGIC`), and before any commit of the session.
    pub fn set_one_fence(&self, on: bool) {
        self.one_fence.store(on, Ordering::Relaxed);
    }

    /// Whether a one-fence commit writes its data runs' checksums into their `Write` entries
    /// and commits with one fence (on by default in msync mode only); otherwise a commit that
    /// writes data blocks keeps the fence between data and tail (DESIGN.md §5.1.1).
    pub fn data_crcs(&self) -> bool {
        self.one_fence() && self.data_crcs.load(Ordering::Relaxed)
    }

    /// Choose [`Media::data_crcs`] (the crash harness and tests exercise msync mode's commits
    /// on the traced backend). Either choice is safe at any time: recovery checks a run's
    /// checksum only where its entry carries one.
    pub fn set_data_crcs(&self, on: bool) {
        self.data_crcs.store(on, Ordering::Relaxed);
    }

    /// Pages of `[off, off + len)` that the host's page cache holds dirty or under write-back
    /// (`cachestat(2)`): in msync mode, what a crash of the machine could still lose. `None`
    /// for a traced region, after unmount, or on a kernel without `cachestat` (before 6.5).
    pub fn unsynced_pages(&self, off: u64, len: u64) -> Result<Option<u64>> {
        self.check(off, len as usize)?;
        let file = self.file.lock();
        match (&self.backend, file.as_ref()) {
            (Backend::Mapped(_), Some(f)) => {
                Ok(raw::cachestat(f, off, len)?.map(|(dirty, wb)| dirty + wb))
            }
            _ => Ok(None),
        }
    }

    /// Durability system calls (msync) made so far: 0 outside msync mode.
    pub fn sync_calls(&self) -> u64 {
        self.sync_calls.load(Ordering::Relaxed)
    }

    /// `msync` through the mapping, counted.
    fn msync(&self, r: &RawRegion, off: u64, len: u64) -> Result<()> {
        self.sync_calls.fetch_add(1, Ordering::Relaxed);
        r.msync(off, len)
    }

    /// Msync mode: fail if an earlier durability call failed (nothing may be stored after a
    /// fence that did not make its ranges durable).
    #[inline]
    fn check_poisoned(&self) -> Result<()> {
        if self.mode == MediaMode::Msync {
            let errno = self.msync.poisoned.load(Ordering::Acquire);
            if errno != 0 {
                return Err(Error::Io(std::io::Error::from_raw_os_error(errno)));
            }
        }
        Ok(())
    }

    fn poison(&self, e: &Error) {
        let errno = match e {
            Error::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        };
        self.msync.poisoned.store(errno, Ordering::Release);
    }

    /// Msync mode: record the pages of `[off, off + len)` for the next fence.
    fn note_dirty(&self, off: u64, len: u64) {
        const PAGE: u64 = 4096;
        let start = off & !(PAGE - 1);
        let end = (off + len).div_ceil(PAGE) * PAGE;
        let mut pending = self.msync.pending.lock();
        *pending = Some(match *pending {
            Some((s, e)) => (s.min(start), e.max(end)),
            None => (start, end),
        });
    }

    /// Msync mode's fence: make every range recorded before it durable (see [`MsyncState`]).
    fn fence_msync(&self, r: &RawRegion) {
        let _fence = self.msync.fence_lock.lock();
        let Some((start, end)) = self.msync.pending.lock().take() else {
            return;
        };
        if self.msync.poisoned.load(Ordering::Acquire) != 0 {
            return;
        }
        let result = self.msync(r, start, end - start);
        if let Err(e) = result {
            self.poison(&e);
        }
    }

    /// The flush instruction chosen at runtime.
    pub fn flush_kind(&self) -> FlushKind {
        self.flush_kind
    }

    /// Region length in bytes.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Whether the region is empty (never true for a valid image).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Grow the region to `new_len` bytes (no-op if it is that long already): the image file is
    /// extended (allocated, and its new size made durable with `fsync` before this returns:
    /// whatever is stored there next may be made durable and relied upon), then mapped in
    /// place; a traced region records a [`TraceEvent::Grow`]. The new bytes read as zero. Not
    /// possible for a device (devdax), an unmounted region, or beyond the address space
    /// reserved at mount ([`MapOptions::grow_limit`]).
    #[track_caller]
    pub fn grow(&self, new_len: u64) -> Result<()> {
        if new_len <= self.len() {
            return Ok(());
        }
        match &self.backend {
            Backend::Traced(t) => {
                let mut t = t.lock();
                t.grow(new_len, TraceSite::caller())?;
                self.len.store(new_len, Ordering::Release);
            }
            Backend::Mapped(r) => {
                self.check_poisoned()?;
                let file = self.file.lock();
                let Some(f) = file.as_ref() else {
                    return Err(Error::Unmounted);
                };
                if new_len > r.capacity() as u64 {
                    // Fails with the message that says how far this mount can grow.
                    return r.grow(f, new_len);
                }
                use std::os::unix::fs::FileTypeExt;
                let ft = f.metadata()?.file_type();
                if ft.is_char_device() || ft.is_block_device() {
                    return Err(Error::InvalidArgument(
                        "the image is a device: its size is the device's".into(),
                    ));
                }
                f.set_len(new_len)?;
                raw::preallocate(f, new_len)?;
                f.sync_all()?;
                r.grow(f, new_len)?;
                self.len.store(new_len, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Whether `[off, off + len)` is inside the region: the traced backend's check, and msync
    /// mode's before it records a range (the mapped region's accessors make the same one
    /// themselves, with the same error).
    fn check(&self, off: u64, len: usize) -> Result<()> {
        let region = self.len();
        match off.checked_add(len as u64) {
            Some(end) if end <= region => Ok(()),
            _ => Err(Error::Corrupt {
                what: "media access out of range".into(),
                location: format!("offset {off} length {len} (region {region} bytes)"),
            }),
        }
    }

    /// Copy `buf.len()` bytes at `off` into `buf`.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        match &self.backend {
            // The mapped region checks the range itself (the same error).
            Backend::Mapped(r) => r.read(off, buf)?,
            Backend::Traced(t) => {
                self.check(off, buf.len())?;
                t.lock().read(off, buf)
            }
        }
        Ok(())
    }

    /// Whether the `n` bytes at `off` are all zero: read in place on a mapped region (no
    /// copy), through the shadow on the traced backend.
    pub fn all_zero(&self, off: u64, n: usize) -> Result<bool> {
        match &self.backend {
            Backend::Mapped(r) => r.all_zero(off, n),
            Backend::Traced(t) => {
                self.check(off, n)?;
                let mut buf = vec![0u8; n];
                t.lock().read(off, &mut buf);
                Ok(buf.iter().all(|&b| b == 0))
            }
        }
    }

    /// Read a POD value at `off`.
    pub fn read_pod<T: bytemuck::Pod>(&self, off: u64) -> Result<T> {
        let mut v = T::zeroed();
        self.read(off, bytemuck::bytes_of_mut(&mut v))?;
        Ok(v)
    }

    /// Hint that the lines of `[off, off + len)` will be read soon (a rebuild asks for the
    /// next inode's log page while it loads this one); no effect on the traced backend or
    /// outside the region.
    pub fn prefetch(&self, off: u64, len: usize) {
        if let Backend::Mapped(r) = &self.backend {
            r.prefetch(off, len);
        }
    }

    /// An aligned 8-byte atomic load.
    #[inline]
    pub fn load_u64(&self, off: u64) -> Result<u64> {
        Ok(match &self.backend {
            // The mapped region checks range and alignment itself.
            Backend::Mapped(r) => r.load_u64(off)?,
            Backend::Traced(t) => {
                self.check(off, 8)?;
                check_aligned(off)?;
                t.lock().load_u64(off)
            }
        })
    }

    /// A cached store: durable only after [`Media::flush`] of its lines and a [`Media::fence`].
    #[track_caller]
    pub fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        match &self.backend {
            Backend::Mapped(r) => {
                self.check_poisoned()?;
                r.write(off, data)?
            }
            Backend::Traced(t) => {
                self.check(off, data.len())?;
                t.lock().store(off, data, false, TraceSite::caller())
            }
        }
        Ok(())
    }

    /// A non-temporal copy: bypasses the cache, durable after the next [`Media::fence`].
    #[track_caller]
    pub fn write_nt(&self, off: u64, data: &[u8]) -> Result<()> {
        match &self.backend {
            Backend::Mapped(r) => {
                self.check_poisoned()?;
                r.write_nt(off, data)?;
                if self.mode == MediaMode::Msync {
                    self.note_dirty(off, data.len() as u64);
                }
            }
            Backend::Traced(t) => {
                self.check(off, data.len())?;
                t.lock().store(off, data, true, TraceSite::caller())
            }
        }
        Ok(())
    }

    /// Non-temporal copy of `len` bytes of the region from `src` to `dst` (durable after the
    /// next fence), without a DRAM buffer: the copy of a page into a new cache block. Offsets
    /// and length multiples of 8, ranges disjoint.
    #[track_caller]
    pub fn copy_nt(&self, src: u64, dst: u64, len: u64) -> Result<()> {
        let n = usize::try_from(len).map_err(|_| Error::FileTooLarge)?;
        self.check(src, n)?;
        self.check(dst, n)?;
        self.check_poisoned()?;
        match &self.backend {
            Backend::Mapped(r) => {
                r.copy_nt(src, dst, len)?;
                if self.mode == MediaMode::Msync {
                    self.note_dirty(dst, len);
                }
            }
            Backend::Traced(t) => {
                let mut buf = vec![0u8; n];
                let mut t = t.lock();
                t.read(src, &mut buf);
                t.store(dst, &buf, true, TraceSite::caller());
            }
        }
        Ok(())
    }

    /// Zero a range with non-temporal stores (durable after the next fence).
    #[track_caller]
    pub fn zero_nt(&self, off: u64, len: u64) -> Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(4096);
            self.write_nt(off + done, &ZEROS[..n as usize])?;
            done += n;
        }
        Ok(())
    }

    /// An aligned, failure-atomic 8-byte store (the commit primitive). Durable after flush +
    /// fence.
    #[track_caller]
    #[inline]
    pub fn store_u64(&self, off: u64, v: u64) -> Result<()> {
        match &self.backend {
            // The mapped region checks range and alignment itself.
            Backend::Mapped(r) => {
                self.check_poisoned()?;
                r.store_u64(off, v)?
            }
            Backend::Traced(t) => {
                self.check(off, 8)?;
                check_aligned(off)?;
                t.lock()
                    .store(off, &v.to_le_bytes(), false, TraceSite::caller())
            }
        }
        Ok(())
    }

    /// Write back the cache lines covering `[off, off + len)`.
    #[track_caller]
    #[inline]
    pub fn flush(&self, off: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        match &self.backend {
            Backend::Mapped(r) => {
                self.check_poisoned()?;
                if self.mode == MediaMode::Msync {
                    self.check(off, len as usize)?;
                    self.note_dirty(off, len);
                } else {
                    // The mapped region checks the range itself.
                    r.flush(off, len, self.flush_kind)?;
                }
            }
            Backend::Traced(t) => {
                self.check(off, len as usize)?;
                t.lock().flush(off, len, TraceSite::caller())
            }
        }
        Ok(())
    }

    /// Order: every flush and non-temporal store before it is durable when it completes (in
    /// msync mode: after one durability call for all of them; a failed call poisons the media,
    /// see [`MsyncState`]).
    #[track_caller]
    #[inline]
    pub fn fence(&self) {
        match &self.backend {
            Backend::Mapped(r) => {
                raw::sfence();
                if self.mode == MediaMode::Msync {
                    self.fence_msync(r);
                }
            }
            Backend::Traced(t) => t.lock().fence(TraceSite::caller()),
        }
    }

    /// `write` + `flush` (no fence).
    #[track_caller]
    pub fn write_flush(&self, off: u64, data: &[u8]) -> Result<()> {
        self.write(off, data)?;
        self.flush(off, data.len() as u64)
    }

    /// `store_u64` + `flush` + `fence`: the commit of a pointer.
    #[track_caller]
    pub fn commit_u64(&self, off: u64, v: u64) -> Result<()> {
        self.store_u64(off, v)?;
        self.flush(off, 8)?;
        self.fence();
        Ok(())
    }

    /// Label the operation in flight (recorded in the trace; free otherwise).
    pub fn mark(&self, label: &str) {
        if let Backend::Traced(t) = &self.backend {
            t.lock().mark(label);
        }
    }

    /// Run `f` on the trace of a traced region (`None` for mapped regions).
    pub fn with_trace<R>(&self, f: impl FnOnce(&mut Trace) -> R) -> Option<R> {
        match &self.backend {
            Backend::Traced(t) => Some(f(&mut t.lock().trace)),
            Backend::Mapped(_) => None,
        }
    }

    /// The current contents of a traced region (what a reader sees, persisted or not).
    pub fn snapshot(&self) -> Option<Vec<u8>> {
        match &self.backend {
            Backend::Traced(t) => Some(t.lock().bytes().to_vec()),
            Backend::Mapped(_) => None,
        }
    }

    /// Take back the bytes of a traced region (`None` for mapped regions).
    pub fn into_image(self) -> Option<Vec<u8>> {
        match self.backend {
            Backend::Traced(t) => Some(t.into_inner().into_bytes()),
            Backend::Mapped(_) => None,
        }
    }

    /// A view of `pages` pages for a direct-access mapping (DESIGN §5.4.1): an address-space
    /// reservation for file-backed media, a shadow buffer for the traced backend. Every page
    /// must be pointed somewhere ([`Media::map_pages`]) before the view's memory is used.
    pub fn map_view(&self, pages: usize) -> Result<MapView> {
        match &self.backend {
            Backend::Mapped(_) => Ok(MapView::Real(Reservation::new(pages)?)),
            Backend::Traced(_) => Ok(MapView::Shadow(Shadow::new(pages)?)),
        }
    }

    /// Point `n` pages of `view` from `page` at `target` (a run of consecutive blocks, or the
    /// zero page). In `dax` mode blocks are mapped with `MAP_SYNC`. After
    /// [`Media::release`] (unmount) only the zero page can be mapped (`Unmounted` otherwise).
    pub fn map_pages(
        &self,
        view: &MapView,
        page: usize,
        n: usize,
        target: PageTarget,
    ) -> Result<()> {
        if let PageTarget::Block { block, .. } = target {
            let off = block.checked_mul(map::PAGE as u64);
            let len = (n * map::PAGE) as u64;
            match off.and_then(|o| o.checked_add(len)) {
                Some(end) if end <= self.len() => {}
                _ => {
                    return Err(Error::Corrupt {
                        what: "mapped block out of range".into(),
                        location: format!("block {block} (+{n})"),
                    })
                }
            }
        }
        match (view, target) {
            (MapView::Real(r), PageTarget::Zero) => r.map_zero(page, n),
            (MapView::Real(r), PageTarget::Block { block, writable }) => {
                use std::os::fd::AsFd;
                let file = self.file.lock();
                let f = file.as_ref().ok_or(Error::Unmounted)?;
                r.map_file(
                    page,
                    n,
                    f.as_fd(),
                    block * map::PAGE as u64,
                    writable,
                    self.mode == MediaMode::Dax,
                )
            }
            (MapView::Shadow(s), PageTarget::Zero) => {
                let zeros = vec![0u8; map::PAGE];
                (page..page + n).try_for_each(|p| s.fill(p, &zeros))
            }
            (MapView::Shadow(s), PageTarget::Block { block, .. }) => {
                let mut buf = vec![0u8; map::PAGE];
                for i in 0..n {
                    self.read((block + i as u64) * map::PAGE as u64, &mut buf)?;
                    s.fill(page + i, &buf)?;
                }
                Ok(())
            }
        }
    }

    /// Grant write access to `n` pages of `view` from `page`, already mapped read-only to
    /// their blocks (`mprotect`; in `dax` mode every file page is mapped `MAP_SYNC`, so it
    /// stays one).
    pub fn map_protect_write(&self, view: &MapView, page: usize, n: usize) -> Result<()> {
        match view {
            MapView::Real(r) => r.protect_write(page, n),
            MapView::Shadow(_) => Ok(()),
        }
    }

    /// Revoke write access to `n` pages of `view` from `page` (the blocks stay mapped).
    pub fn map_protect_read(&self, view: &MapView, page: usize, n: usize) -> Result<()> {
        match view {
            MapView::Real(r) => r.protect_read(page, n),
            // A shadow's read-only pages are simply never published.
            MapView::Shadow(_) => Ok(()),
        }
    }

    /// Traced backend: the words of shadow page `page` changed since last observed become
    /// traced (unflushed) stores into `block`. Nothing to do for real mappings (the stores
    /// are in the image already). Returns whether anything was published.
    #[track_caller]
    pub fn map_publish(&self, view: &MapView, page: usize, block: u64) -> Result<bool> {
        match view {
            MapView::Real(_) => Ok(false),
            MapView::Shadow(s) => {
                let base = block * map::PAGE as u64;
                let site = TraceSite::caller(); // (a closure does not pass #[track_caller] on)
                let mut any = false;
                s.diff(page, |off, bytes| {
                    any = true;
                    let at = base + off as u64;
                    self.check(at, bytes.len())?;
                    if let Backend::Traced(t) = &self.backend {
                        t.lock().store(at, bytes, false, site);
                    }
                    Ok(())
                })?;
                Ok(any)
            }
        }
    }

    /// Make the program's stores in `[off, off + len)` of a mapped slice durable: flush of its
    /// lines and one fence (`msync` of its pages in msync mode); no lock, no system call in the
    /// flush modes. The traced backend persists by block instead (publish, flush, fence).
    pub fn map_persist(&self, s: &VolatileSlice<'_>, off: usize, len: usize) -> Result<()> {
        match self.mode {
            MediaMode::Traced => Ok(()),
            MediaMode::Msync => s.msync(off, len),
            MediaMode::Dax | MediaMode::Emulated => {
                s.flush(off, len, self.flush_kind)?;
                raw::sfence();
                Ok(())
            }
        }
    }

    /// Release the image's lock and close the file (unmount: another mount may take the image
    /// at once). The mapping stays valid; the engine makes no store after this. The unlock is
    /// explicit: the mapping keeps the open file description, and with it a `flock`, alive
    /// after the descriptor is closed.
    pub fn release(&self) {
        if let Some(f) = self.file.lock().take() {
            let _ = f.unlock();
        }
    }

    /// Flush everything and, for file-backed regions, `msync` the whole file.
    pub fn sync_all(&self) -> Result<()> {
        if let Backend::Mapped(r) = &self.backend {
            if self.mode == MediaMode::Msync {
                self.check_poisoned()?;
                let _fence = self.msync.fence_lock.lock();
                // Everything recorded so far is inside the whole-region msync.
                self.msync.pending.lock().take();
                if let Err(e) = self.msync(r, 0, self.len()) {
                    self.poison(&e);
                    return Err(e);
                }
            }
        }
        self.fence();
        Ok(())
    }
}

/// Shared handle to the media.
pub type MediaRef = Arc<Media>;

/// An 8-byte word access must be aligned (single-copy atomic): the traced backend's check
/// (the mapped region makes it itself, with the same error).
fn check_aligned(off: u64) -> Result<()> {
    if off.is_multiple_of(8) {
        Ok(())
    } else {
        Err(Error::Corrupt {
            what: "unaligned 8-byte access".into(),
            location: format!("offset {off}"),
        })
    }
}

/// Take the image's exclusive lock: `flock(LOCK_EX | LOCK_NB)` on the open file description,
/// so a second open conflicts even within one process. On conflict, the holder's pid is looked
/// up in `/proc/locks` (the kernel records the pid of the process that took a `flock`): no
/// pid is written to the image, so nothing goes stale after a crash.
fn lock_file(file: &File) -> Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::ImageInUse {
            pid: lock_holder(file),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::Io(e)),
    }
}

/// The pid holding a `flock` write lock on `file`, from `/proc/locks`.
fn lock_holder(file: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    parse_lock_holder(&locks, &id)
}

/// In `/proc/locks` text, the pid of the `FLOCK WRITE` lock on `dev_ino` ("maj:min:ino", hex
/// device numbers). Lines of waiters (`-> ...`) are skipped.
fn parse_lock_holder(locks: &str, dev_ino: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [_, "FLOCK", _, "WRITE", pid, id, ..] if *id == dev_ino => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a failed durability call, nothing more is stored: every store and flush fails
    /// before it reaches the page cache (a commit word is never stored after a fence that did
    /// not make its data durable).
    #[test]
    fn a_failed_msync_poisons_every_later_store() {
        // A file on the disk that holds the sources (not tmpfs): msync mode.
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!(".poison-test-{}.img", std::process::id()));
        let m = Media::create(&path, 1 << 20, true, &MapOptions::default()).unwrap();
        let _ = std::fs::remove_file(&path);
        if m.mode() != MediaMode::Msync {
            // The source tree is on a RAM file system: the poison is msync mode's alone.
            assert_eq!(m.mode(), MediaMode::Emulated);
            return;
        }
        m.write(0, b"before").unwrap();
        m.flush(0, 6).unwrap();
        m.fence();
        m.poison(&Error::Io(std::io::Error::from_raw_os_error(libc::EIO)));
        let is_eio =
            |r: Result<()>| matches!(r, Err(Error::Io(e)) if e.raw_os_error() == Some(libc::EIO));
        assert!(is_eio(m.write(4096, b"x")));
        assert!(is_eio(m.write_nt(8192, &[1; 64])));
        assert!(is_eio(m.store_u64(64, 7)));
        assert!(is_eio(m.flush(0, 64)));
        assert!(is_eio(m.sync_all()));
        let mut buf = [0u8; 6];
        m.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"before");
        assert_eq!(
            m.load_u64(64).unwrap(),
            0,
            "the refused store did not happen"
        );
    }

    /// `all_zero` answers alike on both backends (the mapped region's loads in place, the
    /// traced one's shadow), and refuses a range past the end on both.
    #[test]
    fn all_zero_agrees_on_both_backends() {
        let path = std::path::PathBuf::from(format!(
            "/dev/shm/.novafs-all-zero-test-{}.img",
            std::process::id()
        ));
        let opts = MapOptions {
            force_emulated: true,
            ..MapOptions::default()
        };
        let mapped = Media::create(&path, 4 * 4096, true, &opts).unwrap();
        let _ = std::fs::remove_file(&path);
        let traced = Media::traced(4 * 4096);
        for m in [&mapped, &traced] {
            m.write(5000, &[7]).unwrap();
        }
        for (off, n) in [
            (0, 4096),
            (4096, 903),
            (4096, 904),
            (5001, 3000),
            (4999, 2),
            (0, 0),
        ] {
            let want = !(off..off + n as u64).contains(&5000);
            assert_eq!(mapped.all_zero(off, n).unwrap(), want, "{off} {n}");
            assert_eq!(traced.all_zero(off, n).unwrap(), want, "{off} {n}");
        }
        assert!(mapped.all_zero(4 * 4096 - 8, 9).is_err());
        assert!(traced.all_zero(4 * 4096 - 8, 9).is_err());
    }

    #[test]
    fn lock_holder_is_read_from_proc_locks() {
        let text = "1: POSIX  ADVISORY  WRITE 77 00:2d:99 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 4242 00:2d:1234 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 5151 00:2d:1234 0 EOF\n";
        assert_eq!(parse_lock_holder(text, "00:2d:1234"), Some(4242));
        assert_eq!(parse_lock_holder(text, "00:2d:99"), None);
        assert_eq!(parse_lock_holder(text, "00:2e:1234"), None);
    }
}
