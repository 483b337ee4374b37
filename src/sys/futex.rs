//! Futex waits and wakes on words in shared mappings: a word is keyed by the mapped file page,
//! so a wake in one process reaches waiters in every other.

#![expect(unsafe_code, reason = "the futex system calls")]

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use crate::sys::clock;

/// Wakes every thread, in any process, waiting on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only reads the address; a shared (non-private) futex is keyed by the
    // mapped file page, so waiters in other processes are found.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

#[repr(C)]
struct FutexWaitv {
    value: u64,
    address: u64,
    flags: u32,
    reserved: u32,
}

/// Most futexes one `futex_waitv` call accepts (a kernel limit).
pub(crate) const MAX_WAIT_WORDS: usize = 128;

/// Sleeps until one of `words` no longer holds its expected value, a wake arrives, or
/// `deadline` passes. Spurious returns are allowed; callers re-check their condition.
pub(crate) fn futex_wait_any(words: &[(&AtomicU32, u32)], deadline: Instant) {
    let now = Instant::now();
    if now >= deadline || words.is_empty() {
        return;
    }
    let mut remaining = deadline - now;
    if words.len() > MAX_WAIT_WORDS {
        // Only the first words can be watched: wake up often enough to notice the others.
        remaining = remaining.min(Duration::from_millis(1));
    }
    if let [(word, expected)] = words {
        let timeout = clock::timespec(remaining);
        // SAFETY: the word lives in a mapping the caller keeps alive for the call; the kernel
        // compares it atomically with `expected` before sleeping.
        unsafe {
            libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, *expected, &timeout as *const libc::timespec);
        }
        return;
    }
    let waits: Vec<FutexWaitv> = words
        .iter()
        .take(MAX_WAIT_WORDS)
        .map(|(word, expected)| FutexWaitv {
            value: u64::from(*expected),
            address: word.as_ptr() as u64,
            flags: libc::FUTEX2_SIZE_U32 as u32,
            reserved: 0,
        })
        .collect();
    // futex_waitv takes an absolute CLOCK_MONOTONIC deadline.
    let absolute = clock::add_timespec(clock::now(libc::CLOCK_MONOTONIC), remaining);
    let deadline = Instant::now() + remaining;
    // SAFETY: `waits` holds valid entries whose addresses stay mapped for the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waits.as_ptr(),
            waits.len() as libc::c_uint,
            0 as libc::c_uint,
            &absolute as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if result == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // Kernels older than 5.16: wait on the first word for a short while instead.
        let cap = Instant::now() + Duration::from_millis(1);
        futex_wait_any(&words[..1], deadline.min(cap));
    }
}
