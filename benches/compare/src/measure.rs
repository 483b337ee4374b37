//! Clocks, memory readings and latency histograms.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// The system allocator, counting the bytes currently allocated: the program's heap.
pub struct CountingAllocator;

static HEAP_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed straight to the system allocator; the counter only observes.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller keeps `alloc`'s contract, which `System` has too.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            HEAP_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from `alloc` above with this layout, as the caller promises.
        unsafe { System.dealloc(pointer, layout) };
        HEAP_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            HEAP_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc` and `dealloc`; on failure the old block stays allocated.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            HEAP_BYTES.fetch_add(new_size, Ordering::Relaxed);
            HEAP_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        moved
    }
}

/// Bytes this process has allocated and not freed.
pub fn heap_bytes() -> usize {
    HEAP_BYTES.load(Ordering::Relaxed)
}

/// Anonymous resident memory of this process (heap, stacks: what it holds on to, unlike the
/// pages of mapped files, which the kernel may drop at will).
pub fn resident_anonymous() -> u64 {
    // Earlier workloads leave freed memory with the allocator; hand it back first, so that
    // what is left is what is in use.
    // SAFETY: malloc_trim only releases free memory of the C allocator, which Rust uses.
    unsafe { libc::malloc_trim(0) };
    proc_bytes("/proc/self/status", "RssAnon:")
}

/// The machine's memory.
pub fn memory_bytes() -> u64 {
    proc_bytes("/proc/meminfo", "MemTotal:")
}

/// A field given in kB in a /proc file, in bytes (0 if it cannot be read).
fn proc_bytes(file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let kib = text
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.map_or(0, |kib| kib * 1024)
}

/// Nanoseconds on CLOCK_MONOTONIC: the same clock in every process on the machine.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives on this stack.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Events per second.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A histogram of latencies in nanoseconds, from 1 ns to 100 s at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

/// p50, p99, p99.9 and max of a histogram, in nanoseconds.
pub fn percentiles(histogram: &Histogram<u64>) -> [u64; 4] {
    [histogram.value_at_quantile(0.5), histogram.value_at_quantile(0.99), histogram.value_at_quantile(0.999), histogram.max()]
}

/// Drops a file's pages from the page cache (after writing them back), so that the next
/// read comes from the disk.
pub fn evict_from_page_cache(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    file.sync_all()?;
    // SAFETY: the descriptor is open for the whole call; fadvise only advises the kernel.
    let code = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if code == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(code)) }
}
