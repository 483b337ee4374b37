//! The daemon's log: fuser's errors (a reply the kernel refused, a request it could not parse)
//! go to standard error, where the test shows them, but for a reply to a request the kernel no
//! longer waits for (ENOENT: its connection was aborted by a cut, or its caller was killed);
//! with `POWERCUT_TRACE=FILE`
//! every request fuser dispatches is also written to `FILE.<daemon pid>`, one line each, the
//! file started anew by each mount, so that a hang can be read back to the requests around it.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::sync::Mutex;

/// The environment variable naming the trace file.
pub const TRACE_ENV: &str = "POWERCUT_TRACE";

struct DaemonLog {
    trace: Mutex<Option<LineWriter<File>>>,
    tracing: bool,
}

static LOG: std::sync::OnceLock<DaemonLog> = std::sync::OnceLock::new();

/// Installs the log (once per process).
pub(crate) fn install() {
    let tracing = std::env::var_os(TRACE_ENV).is_some();
    let log = LOG.get_or_init(|| DaemonLog { trace: Mutex::new(None), tracing });
    if log::set_logger(log).is_ok() {
        log::set_max_level(if tracing { log::LevelFilter::Debug } else { log::LevelFilter::Error });
    }
}

/// Starts the trace file anew for the session of `generation`.
pub(crate) fn restart(generation: u64) {
    let (Some(log), Some(path)) = (LOG.get(), std::env::var_os(TRACE_ENV)) else { return };
    let mut trace = log.trace.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut path = path;
    path.push(format!(".{}", std::process::id()));
    *trace = File::create(&path).ok().map(LineWriter::new);
    if let Some(file) = trace.as_mut() {
        let _ = writeln!(file, "session {generation}");
    }
}

impl log::Log for DaemonLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() == log::Level::Error || self.tracing
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        // Warnings (requests fuser answers ENOSYS: xattrs, ioctls) are expected, and so is a
        // reply nobody waits for any more (ENOENT).
        let gone = line.contains("(os error 2)");
        if record.level() == log::Level::Error && !gone {
            eprintln!("powercut daemon: {line}");
        }
        if self.tracing {
            let mut trace = self.trace.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(file) = trace.as_mut() {
                let _ = writeln!(file, "{line}");
            }
        }
    }

    fn flush(&self) {}
}
