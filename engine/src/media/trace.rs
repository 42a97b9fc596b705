//! The traced backend: a DRAM region whose every store, flush and fence is recorded.
#![forbid(unsafe_code)]

use std::panic::Location;

/// Where in the engine a persistence event was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceSite {
    /// Source file.
    pub file: &'static str,
    /// Source line.
    pub line: u32,
}

impl TraceSite {
    /// The caller of the `#[track_caller]` media method.
    #[track_caller]
    pub fn caller() -> TraceSite {
        let l = Location::caller();
        TraceSite {
            file: l.file(),
            line: l.line(),
        }
    }
}

impl std::fmt::Display for TraceSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One persistence event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// A store of `data` at `off`; `nt` for non-temporal.
    Store {
        /// Region offset.
        off: u64,
        /// Bytes stored.
        data: Vec<u8>,
        /// Non-temporal store.
        nt: bool,
        /// Call site.
        site: TraceSite,
    },
    /// Write-back of the cache line starting at `line`.
    Flush {
        /// Line-aligned offset.
        line: u64,
        /// Call site.
        site: TraceSite,
    },
    /// A store fence.
    Fence {
        /// Call site.
        site: TraceSite,
    },
    /// A label: the operation now in flight.
    Mark(String),
    /// The region grew to `len` bytes (the image file was extended and its size made durable:
    /// every crash image from here on has the new length, the new bytes zero).
    Grow {
        /// New length in bytes.
        len: u64,
        /// Call site.
        site: TraceSite,
    },
}

/// The recorded events, enabled on demand.
#[derive(Debug, Default)]
pub struct Trace {
    /// Whether events are being recorded.
    pub enabled: bool,
    /// The events since recording was enabled (or last taken).
    pub events: Vec<TraceEvent>,
}

impl Trace {
    /// Take the events recorded so far.
    pub fn take(&mut self) -> Vec<TraceEvent> {
        std::mem::take(&mut self.events)
    }
}

pub(crate) struct TracedRegion {
    bytes: Vec<u8>,
    pub(crate) trace: Trace,
}

impl TracedRegion {
    pub(crate) fn new(bytes: Vec<u8>) -> TracedRegion {
        TracedRegion {
            bytes,
            trace: Trace::default(),
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn read(&self, off: u64, buf: &mut [u8]) {
        let o = off as usize;
        buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
    }

    pub(crate) fn load_u64(&self, off: u64) -> u64 {
        let o = off as usize;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[o..o + 8]);
        u64::from_le_bytes(b)
    }

    pub(crate) fn store(&mut self, off: u64, data: &[u8], nt: bool, site: TraceSite) {
        let o = off as usize;
        self.bytes[o..o + data.len()].copy_from_slice(data);
        if self.trace.enabled {
            self.trace.events.push(TraceEvent::Store {
                off,
                data: data.to_vec(),
                nt,
                site,
            });
        }
    }

    pub(crate) fn flush(&mut self, off: u64, len: u64, site: TraceSite) {
        if !self.trace.enabled {
            return;
        }
        let mut line = off & !63;
        while line < off + len {
            self.trace.events.push(TraceEvent::Flush { line, site });
            line += 64;
        }
    }

    pub(crate) fn fence(&mut self, site: TraceSite) {
        if self.trace.enabled {
            self.trace.events.push(TraceEvent::Fence { site });
        }
    }

    pub(crate) fn grow(&mut self, len: u64, site: TraceSite) -> crate::error::Result<()> {
        let len = usize::try_from(len)
            .map_err(|_| crate::error::Error::InvalidArgument("image too large".into()))?;
        if len > self.bytes.len() {
            self.bytes.resize(len, 0);
            if self.trace.enabled {
                self.trace.events.push(TraceEvent::Grow {
                    len: len as u64,
                    site,
                });
            }
        }
        Ok(())
    }

    pub(crate) fn mark(&mut self, label: &str) {
        if self.trace.enabled {
            self.trace.events.push(TraceEvent::Mark(label.to_string()));
        }
    }
}
