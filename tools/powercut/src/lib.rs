//! A FUSE file system for tests that loses exactly what a power cut may lose.
//!
//! Every file has a live image (what reads see) and a durable image (what survives a cut); a
//! file's fsync or fdatasync (which `msync(MS_SYNC)` also reaches) makes its data and size
//! durable. Every directory has live and durable entries; only an fsync of the directory makes
//! its entries durable (a file's own fsync does not: the strict POSIX model), except that a
//! rename between two directories is one atomic step, made durable by the sync of either (as a
//! journaled file system commits it). A cut unmounts and
//! mounts again holding only what is reachable from the root through durable entries, each file
//! with its durable image; a torn cut also keeps a random part of what was not synced.
//!
//! The daemon is a process of its own (this same executable, started again; see [`serve`]):
//! a daemon inside a process that also maps files of its mount can deadlock on that process's
//! memory map lock (a fault or munmap waits for the daemon, whose own fault or allocation waits
//! for the lock). Every process, the one that mounted included, uses the mount as any file
//! system. Locks (flock, fcntl and OFD locks) are the kernel's own, and shared writable
//! mappings go through the kernel's page cache, so robust mutexes and futexes in mapped files
//! work across processes. Mounting needs `/dev/fuse` and root.
//!
//! The daemon prints fuser's errors on standard error; with `POWERCUT_TRACE=FILE` it also
//! writes every request it answers to `FILE.<pid>` (started anew at each mount), to read back
//! what led to a stall.

mod fuse;
mod model;
mod trace;

use std::io;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

pub use model::{Cut, CutReport};

/// Counts of what reached the file system since it was first mounted (cuts do not reset them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// WRITE requests: write(2), pwrite(2), and writeback of pages written through a mapping.
    pub writes: u64,
    /// Bytes those requests carried.
    pub bytes_written: u64,
    /// Size changes (truncate, ftruncate, O_TRUNC).
    pub truncates: u64,
    /// fallocate calls of every mode.
    pub fallocates: u64,
    /// Renames.
    pub renames: u64,
    /// fsync and fdatasync of files (msync reaches them too), failed and lying ones included.
    pub fsyncs: u64,
    /// fsync of directories.
    pub dir_fsyncs: u64,
    /// fsyncs failed with EIO by [`PowerCutFs::fail_fsync`].
    pub failed_fsyncs: u64,
    /// fsyncs answered success without making anything durable ([`PowerCutFs::set_fsync_lies`]).
    pub lied_fsyncs: u64,
    /// Power cuts.
    pub cuts: u64,
    /// Requests refused with EIO because they reached a session a cut (or unmount) had ended.
    pub refused: u64,
}

/// Everything the sessions and the handle share.
pub(crate) struct State {
    pub(crate) tree: model::Tree,
    /// The session that may answer; a cut or unmount moves it on, so older sessions refuse.
    pub(crate) generation: u64,
    pub(crate) lies: bool,
    /// Pending fsync failures: a root-relative path ("" = every file) and how many remain.
    pub(crate) failures: Vec<(PathBuf, u32)>,
    pub(crate) stats: Stats,
}

pub(crate) struct Shared(Mutex<State>);

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock (a bug here) must not wedge the mount: the state is
        // still consistent enough to answer and to unmount.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The environment variable naming the mount point in a daemon process.
pub const DAEMON_ENV: &str = "POWERCUT_DAEMON";

/// The arguments a daemon process is started with: this executable is a libtest test binary
/// whose ignored test `child::entry` dispatches on `STREAMLOG_CHILD`; the role `powercut-daemon`
/// must call [`serve`].
const DAEMON_ARGS: [&str; 6] = ["--exact", "child::entry", "--include-ignored", "--nocapture", "--test-threads=1", "-q"];

/// Lines of the daemon's answers start so (libtest prints its own lines on the same output).
const ANSWER: &str = "powercut: ";

/// A mounted, in-memory file system that loses what a power cut may lose; unmounts on drop.
pub struct PowerCutFs {
    path: PathBuf,
    daemon: Mutex<Daemon>,
}

struct Daemon {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Daemon {
    /// Sends one command line and returns the answer's words after "ok", or the error.
    fn ask(&mut self, command: &str) -> io::Result<Vec<String>> {
        writeln!(self.input, "{command}")?;
        self.input.flush()?;
        self.answer()
    }

    fn answer(&mut self) -> io::Result<Vec<String>> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.output.read_line(&mut line)? == 0 {
                return Err(io::Error::other("the powercut daemon died"));
            }
            if let Some(answer) = line.trim_end().strip_prefix(ANSWER) {
                return match answer.strip_prefix("ok") {
                    Some(words) => Ok(words.split_whitespace().map(str::to_owned).collect()),
                    None => Err(io::Error::other(answer.to_owned())),
                };
            }
        }
    }
}

fn numbers<const N: usize>(words: &[String]) -> io::Result<[u64; N]> {
    let parsed: Vec<u64> = words.iter().map(|w| w.parse().map_err(io::Error::other)).collect::<io::Result<_>>()?;
    parsed.try_into().map_err(|_| io::Error::other("the powercut daemon answered badly"))
}

impl PowerCutFs {
    /// Mounts an empty file system at `mountpoint` (created if missing). Starts the daemon
    /// process; a process that opens queues alone (see the tests' `open_alone`) must not be
    /// calling this meanwhile, as any spawn.
    pub fn mount(mountpoint: impl AsRef<Path>) -> io::Result<PowerCutFs> {
        let path = mountpoint.as_ref();
        std::fs::create_dir_all(path).or_else(|error| {
            // A mount left behind by a daemon that was killed answers ENOTCONN: take it away.
            if error.raw_os_error() == Some(libc::ENOTCONN) { unmount(path) } else { Err(error) }
        })?;
        let path = path.canonicalize()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(DAEMON_ARGS)
            .env("STREAMLOG_CHILD", "powercut-daemon")
            .env("STREAMLOG_CHILD_ARGS", "")
            .env(DAEMON_ENV, &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let input = child.stdin.take().expect("piped");
        let output = BufReader::new(child.stdout.take().expect("piped"));
        let mut daemon = Daemon { child, input, output };
        if let Err(error) = daemon.answer() {
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
            return Err(error);
        }
        Ok(PowerCutFs { path, daemon: Mutex::new(daemon) })
    }

    fn daemon(&self) -> MutexGuard<'_, Daemon> {
        self.daemon.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A power cut. Every process using the mount must be dead and reaped and the caller must
    /// have dropped everything open under it. Drops all that is not durable, unmounts (so the
    /// kernel's page cache of the old mount is gone) and mounts again at the same path holding
    /// only what survived. Operations that reach the old session after the cut began are
    /// refused (EIO); the old connection is aborted, so nothing waits on it.
    pub fn cut(&mut self, mode: Cut) -> io::Result<CutReport> {
        let command = match mode {
            Cut::Clean => "cut clean".to_owned(),
            Cut::Torn { seed } => format!("cut torn {seed}"),
        };
        let words = self.daemon().ask(&command)?;
        let [
            files_unsynced,
            dirs_unsynced,
            dirs_kept_live,
            sectors_unsynced,
            sectors_kept,
            bytes_dropped,
            inodes_dropped,
            inodes_kept,
        ] = numbers(&words)?;
        Ok(CutReport {
            files_unsynced,
            dirs_unsynced,
            dirs_kept_live,
            sectors_unsynced,
            sectors_kept,
            bytes_dropped,
            inodes_dropped,
            inodes_kept,
        })
    }

    /// The next `times` fsync/fdatasync/msync of files at or under `relative` (a path relative
    /// to the mount; "" = everything) fail with EIO and make nothing durable. Directory fsyncs
    /// are not affected.
    pub fn fail_fsync(&self, relative: impl AsRef<Path>, times: u32) {
        let relative = model::relative(relative.as_ref());
        let relative = relative.to_str().expect("a UTF-8 path without line breaks");
        assert!(!relative.contains('\n'), "a path without line breaks");
        self.daemon().ask(&format!("fail {times} {relative}")).expect("the powercut daemon answers");
    }

    /// While set, fsync and directory fsync answer success but make nothing durable (a lying
    /// disk): the campaigns' checkers must catch it.
    pub fn set_fsync_lies(&self, lie: bool) {
        self.daemon().ask(&format!("lies {}", u8::from(lie))).expect("the powercut daemon answers");
    }

    /// What reached the file system so far.
    pub fn stats(&self) -> Stats {
        let words = self.daemon().ask("stats").expect("the powercut daemon answers");
        let [
            writes,
            bytes_written,
            truncates,
            fallocates,
            renames,
            fsyncs,
            dir_fsyncs,
            failed_fsyncs,
            lied_fsyncs,
            cuts,
            refused,
        ] = numbers(&words).expect("the powercut daemon answers with stats");
        Stats {
            writes,
            bytes_written,
            truncates,
            fallocates,
            renames,
            fsyncs,
            dir_fsyncs,
            failed_fsyncs,
            lied_fsyncs,
            cuts,
            refused,
        }
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        let daemon = self.daemon.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(error) = daemon.ask("quit") {
            eprintln!("powercut: unmounting {}: {error}", self.path.display());
            let _ = daemon.child.kill();
        }
        let _ = daemon.child.wait();
    }
}

/// The daemon process's body: mounts at the path in `POWERCUT_DAEMON`, answers commands on
/// its input, and unmounts and returns when told to or when its input closes (the process that
/// started it is gone). The executable's `powercut-daemon` child role must call this.
pub fn serve() {
    trace::install();
    let path = PathBuf::from(std::env::var_os(DAEMON_ENV).expect("POWERCUT_DAEMON names the mount point"));
    let state = State { tree: model::Tree::new(), generation: 0, lies: false, failures: Vec::new(), stats: Stats::default() };
    let server = Server { shared: Arc::new(Shared(Mutex::new(state))), path };
    let mut out = io::stdout().lock();
    let say = |out: &mut io::StdoutLock<'_>, answer: io::Result<String>| {
        let line = match answer {
            Ok(words) => format!("{ANSWER}ok{words}"),
            Err(error) => format!("{ANSWER}error: {error}").replace('\n', " "),
        };
        // The parent gone, nobody reads: the loop ends at the input's end.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    if let Err(error) = server.start_session(0) {
        say(&mut out, Err(error));
        return;
    }
    say(&mut out, Ok(String::new()));
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (command, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let answer = match command {
            "cut" => {
                let mode = match rest.split_once(' ') {
                    Some(("torn", seed)) => seed.parse().map(|seed| Cut::Torn { seed }).map_err(io::Error::other),
                    _ => Ok(Cut::Clean),
                };
                mode.and_then(|mode| server.cut(mode)).map(|r| {
                    format!(
                        " {} {} {} {} {} {} {} {}",
                        r.files_unsynced,
                        r.dirs_unsynced,
                        r.dirs_kept_live,
                        r.sectors_unsynced,
                        r.sectors_kept,
                        r.bytes_dropped,
                        r.inodes_dropped,
                        r.inodes_kept
                    )
                })
            }
            "fail" => {
                let (times, relative) = rest.split_once(' ').unwrap_or((rest, ""));
                times.parse::<u32>().map_err(io::Error::other).map(|times| {
                    server.shared.lock().failures.push((PathBuf::from(relative), times));
                    String::new()
                })
            }
            "lies" => {
                server.shared.lock().lies = rest == "1";
                Ok(String::new())
            }
            "stats" => {
                let s = server.shared.lock().stats;
                Ok(format!(
                    " {} {} {} {} {} {} {} {} {} {} {}",
                    s.writes,
                    s.bytes_written,
                    s.truncates,
                    s.fallocates,
                    s.renames,
                    s.fsyncs,
                    s.dir_fsyncs,
                    s.failed_fsyncs,
                    s.lied_fsyncs,
                    s.cuts,
                    s.refused
                ))
            }
            "quit" => break,
            other => Err(io::Error::other(format!("unknown command {other:?}"))),
        };
        say(&mut out, answer);
    }
    server.shared.lock().generation += 1;
    let unmounted = unmount(&server.path).map(|()| String::new());
    say(&mut out, unmounted);
}

/// The file system inside the daemon process.
struct Server {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl Server {
    /// See [`PowerCutFs::cut`].
    fn cut(&self, mode: Cut) -> io::Result<CutReport> {
        let (generation, report) = {
            let mut state = self.shared.lock();
            state.generation += 1;
            let (tree, report) = state.tree.cut(mode);
            state.tree = tree;
            state.stats.cuts += 1;
            (state.generation, report)
        };
        // The old session refuses everything from here on, and its connection is aborted, so
        // nothing the kernel still had for it reaches the new tree or waits.
        unmount(&self.path)?;
        self.start_session(generation)?;
        Ok(report)
    }

    /// Mounts a session answering for `generation`, its daemon on threads of this process.
    fn start_session(&self, generation: u64) -> io::Result<()> {
        trace::restart(generation);
        // The mount is made here rather than by fuser, so that nothing but this handle ever
        // unmounts: fuser's own unmount, run when a session ends, could hit the newer mount a
        // cut made at the same path.
        let device = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
        let options = format!(
            "fd={},rootmode=40000,user_id={},group_id={},default_permissions",
            device.as_raw_fd(),
            // SAFETY: getuid and getgid cannot fail.
            unsafe { libc::getuid() },
            // SAFETY: as above.
            unsafe { libc::getgid() }
        );
        let c_path = c_path(&self.path)?;
        let c_options = std::ffi::CString::new(options)?;
        // SAFETY: mount reads the NUL-terminated strings, all alive for the call.
        let code = unsafe {
            libc::mount(
                c"powercut".as_ptr(),
                c_path.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c_options.as_ptr().cast(),
            )
        };
        if code != 0 {
            let error = io::Error::last_os_error();
            return Err(io::Error::new(error.kind(), format!("mounting FUSE at {} (needs root): {error}", self.path.display())));
        }
        let mut config = fuser::Config::default();
        // Two threads, so one slow request (a large read) does not hold every process up.
        config.n_threads = Some(2);
        let session = fuse::Session { shared: Arc::clone(&self.shared), generation };
        let session = match fuser::Session::from_fd(session, device.into(), fuser::SessionACL::Owner, config) {
            Ok(session) => session,
            Err(error) => {
                let _ = unmount(&self.path);
                return Err(error);
            }
        };
        // The session's threads end when the kernel drops the connection (see `unmount`).
        std::thread::Builder::new().name("powercut".into()).spawn(move || session.run())?;
        Ok(())
    }
}

/// Aborts the FUSE connection of the mount at `path` and detaches it: whatever was in flight
/// (a page fault, a writeback, a write) fails at once instead of waiting for a session that
/// refuses it or is gone, and users left behind get errors, never a hang.
fn unmount(path: &Path) -> io::Result<()> {
    let c_path = c_path(path)?;
    // SAFETY: umount2 reads the NUL-terminated path. MNT_FORCE makes FUSE abort the connection.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_FORCE | libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    Ok(std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))?)
}
