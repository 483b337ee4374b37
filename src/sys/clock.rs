//! Clocks: the wall clock records are stamped with, the monotonic clock heartbeats use, and
//! `timespec` arithmetic for the calls that take deadlines.

#![expect(unsafe_code, reason = "clock_gettime")]

use std::time::Duration;

/// The time on `clock` (`CLOCK_REALTIME`, `CLOCK_MONOTONIC`, ...).
pub(crate) fn now(clock: libc::clockid_t) -> libc::timespec {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the local timespec.
    unsafe { libc::clock_gettime(clock, &mut now) };
    now
}

/// Wall-clock milliseconds since the Unix epoch. This is the precise clock (a vDSO read, no
/// system call), not `CLOCK_REALTIME_COARSE`: the coarse clock lags by up to a scheduler tick,
/// so a record could be stamped earlier than a clock reading its sender took before sending,
/// and `offset_for_time` with that reading would skip it.
pub(crate) fn wall_clock_ms() -> u64 {
    let now = now(libc::CLOCK_REALTIME);
    (now.tv_sec as u64).saturating_mul(1000) + now.tv_nsec as u64 / 1_000_000
}

/// Nanoseconds of `CLOCK_MONOTONIC`: one clock for every process on the machine, never set back,
/// so heartbeats written by one process can be judged by another.
pub(crate) fn monotonic_now_ns() -> u64 {
    let now = now(libc::CLOCK_MONOTONIC);
    (now.tv_sec as u64).saturating_mul(1_000_000_000) + now.tv_nsec as u64
}

/// `duration` as a `timespec`, saturating.
pub(crate) fn timespec(duration: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: duration.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: duration.subsec_nanos() as libc::c_long,
    }
}

/// `start` plus `duration`.
pub(crate) fn add_timespec(start: libc::timespec, duration: Duration) -> libc::timespec {
    let extra = timespec(duration);
    let mut sum = libc::timespec { tv_sec: start.tv_sec.saturating_add(extra.tv_sec), tv_nsec: start.tv_nsec + extra.tv_nsec };
    if sum.tv_nsec >= 1_000_000_000 {
        sum.tv_sec += 1;
        sum.tv_nsec -= 1_000_000_000;
    }
    sum
}
