//! Shared mappings of files that several processes touch only through atomics.

#![expect(unsafe_code, reason = "shared mappings reached through atomics")]

use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::MmapRaw;

/// A file mapping that several processes share and touch only through atomics (or, for bytes
/// a lock guards, through plain copies).
pub(crate) struct SharedMap(pub(crate) MmapRaw);

impl SharedMap {
    pub(crate) fn word64(&self, at: usize) -> &AtomicU64 {
        assert!(at.is_multiple_of(8) && at + 8 <= self.0.len(), "a 64-bit word outside the shared mapping");
        // SAFETY: `at` is 8-aligned and inside the mapping (checked above), which lives as long
        // as `self`; all processes touch these bytes only through atomics.
        unsafe { &*(self.0.as_mut_ptr().add(at) as *const AtomicU64) }
    }

    pub(crate) fn word32(&self, at: usize) -> &AtomicU32 {
        assert!(at.is_multiple_of(4) && at + 4 <= self.0.len(), "a 32-bit word outside the shared mapping");
        // SAFETY: as in `word64`, for a 4-aligned 32-bit word.
        unsafe { &*(self.0.as_mut_ptr().add(at) as *const AtomicU32) }
    }
}
