//! Named failpoints: with the cargo feature `failpoints`, a process kills itself (SIGKILL) at a
//! chosen instruction, so that a test can crash it exactly where a random kill rarely lands.
//! Without the feature `failpoint!` expands to nothing: production code pays nothing.
//!
//! The environment variable `STREAMLOG_FAILPOINT` names the point, optionally with the hit to
//! die at: `append-before-publish` dies at the first pass, `append-before-publish@20` at the
//! twentieth. It is read once, at the first pass through any failpoint.
//!
//! | name | where |
//! |---|---|
//! | `append-before-publish` | `log/partition/append.rs`: a batch is written, its tail not yet published |
//! | `spare-prepared` | `log/partition/append.rs`: a spare's two files are created under temporary names, not yet synced |
//! | `spare-synced` | `log/partition/append.rs`, on the spare's background thread: the spare is synced, not yet handed to the next roll |
//! | `spare-index-placed` | `log/segment.rs`, at a roll holding the append lock: the spare's index is renamed into place, its log not yet |
//! | `roll-before-publish` | `log/partition/append.rs`: the new segment's files are in place, the tail naming it not yet published |
//! | `roll-before-release` | `log/partition/append.rs`: the new segment is published, the old one not yet handed to the releaser and the sealer (its reservation is given back by recovery) |
//! | `seal-before-marker` | `log/partition/append.rs`, on the sealer thread: the sealed segment and the directory are synced, the segment not yet marked fully synced |
//! | `group-store-before-switch` | `group/file.rs`, holding the group lock: the new state is written to the inactive half, not yet made active |
//! | `group-store-after-switch` | `group/file.rs`, holding the group lock: the new state is active, its mirrors in the head not yet updated |
//! | `compaction-index-swapped` | `log/compaction.rs`: the cleaned index is `.index.swap`, the log still `.cleaning.tmp` |
//! | `compaction-log-swapped` | `log/compaction.rs`: both are `.swap` (the commit point passed), none in place |
//! | `compaction-index-replaced` | `log/compaction.rs`: the cleaned index is in place, the cleaned log still `.log.swap` |
//! | `retention-before-unlink` | `log/retention.rs`: the new `log_start` is written, the segments below it not yet unlinked |

#![cfg_attr(feature = "failpoints", expect(unsafe_code, reason = "a failpoint kills its own process"))]

/// Dies here if the failpoint `$name` is the one chosen; nothing without the feature.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::failpoint::pass($name);
    };
}
pub(crate) use failpoint;

/// Counts a pass through failpoint `name` and kills the process if it is the chosen one at the
/// chosen hit.
#[cfg(feature = "failpoints")]
pub(crate) fn pass(name: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static CHOSEN: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let chosen = CHOSEN.get_or_init(|| {
        let spec = std::env::var("STREAMLOG_FAILPOINT").ok()?;
        let (chosen, nth) = match spec.split_once('@') {
            Some((chosen, nth)) => (chosen, nth.parse().expect("STREAMLOG_FAILPOINT: a hit count after '@'")),
            None => (spec.as_str(), 1),
        };
        Some((chosen.to_owned(), nth))
    });
    let Some((chosen, nth)) = chosen else {
        return;
    };
    if chosen == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *nth {
        eprintln!("failpoint {name} reached: killing process {}", std::process::id());
        // SAFETY: kill has no memory preconditions; SIGKILL ends every thread of the process
        // here, which is the point.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
