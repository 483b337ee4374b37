//! Every platform-specific call streamlog makes, in one place: process-shared robust mutexes,
//! futex waits and wakes, locks the kernel releases, shared mappings, clocks, and the file
//! operations (opens that refuse planted files, space reservation, data and directory syncs).
//! Linux only.

#[cfg(not(target_os = "linux"))]
compile_error!("streamlog uses Linux futexes and robust mutexes; other platforms are not supported");

pub(crate) mod clock;
pub(crate) mod file;
pub(crate) mod futex;
pub(crate) mod lock;
pub(crate) mod map;
pub(crate) mod mutex;
