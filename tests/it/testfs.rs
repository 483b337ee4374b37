//! The power-cut test file system (`tools/powercut`) checked on its own: what a cut keeps and
//! drops, torn cuts, failing and lying fsyncs, locks across processes, file types, and a
//! streamlog queue carried across a cut. Then the fsync-failure tests of the library on it.
//!
//! These tests mount FUSE file systems: they need `/dev/fuse` and root (or `fusermount3`), and
//! fail, not skip, without them.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use powercut::{Cut, PowerCutFs};
use streamlog::{ConsumerConfig, Durability, Error, OffsetReset, ProducerConfig, Queue, Record, TopicPartition};

use crate::TempDir;

/// A mounted test file system on a temporary directory; unmounted before the directory goes.
pub(crate) struct Mounted {
    pub(crate) fs: PowerCutFs,
    _dir: TempDir,
}

impl Mounted {
    pub(crate) fn new(name: &str) -> Mounted {
        let dir = TempDir::new(name);
        // The daemon is a child process: no queue may be opened alone while it is spawned.
        let spawning = crate::SPAWNING.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fs =
            PowerCutFs::mount(dir.path().join("mnt")).expect("mounting the power-cut test file system needs /dev/fuse and root");
        drop(spawning);
        Mounted { fs, _dir: dir }
    }

    pub(crate) fn path(&self, relative: &str) -> PathBuf {
        self.fs.path().join(relative)
    }

    fn cut(&mut self) {
        self.fs.cut(Cut::Clean).unwrap();
    }
}

fn write_synced(path: &Path, bytes: &[u8]) {
    let mut file = File::create(path).unwrap();
    file.write_all(bytes).unwrap();
    file.sync_all().unwrap();
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("read {}: {e}", path.display()),
    }
}

#[test]
fn write_and_fsync_survive_a_cut_and_a_write_alone_does_not() {
    let mut m = Mounted::new("testfs-write");
    let (synced, unsynced) = (m.path("synced"), m.path("unsynced"));
    write_synced(&synced, b"kept");
    write_synced(&unsynced, b"old");
    sync_dir(m.fs.path());
    fs::write(&unsynced, b"new contents").unwrap();
    OpenOptions::new().append(true).open(&synced).unwrap().write_all(b" and lost").unwrap();
    assert_eq!(read(&synced).unwrap(), b"kept and lost", "live reads see everything");
    let report = m.fs.cut(Cut::Clean).unwrap();
    assert_eq!(read(&synced).unwrap(), b"kept");
    assert_eq!(read(&unsynced).unwrap(), b"old");
    assert_eq!(report.files_unsynced, 2);
    assert!(report.bytes_dropped > 0);
    assert_eq!(m.fs.stats().cuts, 1);
}

#[test]
fn a_size_change_without_fsync_is_lost() {
    let mut m = Mounted::new("testfs-size");
    let path = m.path("f");
    write_synced(&path, &[5u8; 3000]);
    sync_dir(m.fs.path());
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(10).unwrap();
    drop(file);
    assert_eq!(fs::metadata(&path).unwrap().len(), 10);
    m.cut();
    assert_eq!(read(&path).unwrap(), vec![5u8; 3000]);
    // Growth too, and with fsync the new size is kept (the grown part reads as zeros).
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(5000).unwrap();
    drop(file);
    m.cut();
    assert_eq!(fs::metadata(&path).unwrap().len(), 3000);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(100).unwrap();
    file.set_len(5000).unwrap();
    file.sync_data().unwrap();
    drop(file);
    m.cut();
    let bytes = read(&path).unwrap();
    assert_eq!(bytes.len(), 5000);
    assert!(bytes[..100].iter().all(|&b| b == 5) && bytes[100..].iter().all(|&b| b == 0));
}

#[test]
fn a_create_needs_its_directory_synced() {
    let mut m = Mounted::new("testfs-create");
    fs::create_dir(m.path("d")).unwrap();
    sync_dir(m.fs.path());
    write_synced(&m.path("d/lost"), b"synced file, unsynced name");
    m.cut();
    assert_eq!(read(&m.path("d/lost")), None, "a file's fsync does not make its name durable");
    write_synced(&m.path("d/kept"), b"both synced");
    sync_dir(&m.path("d"));
    // A directory made but never named durably loses everything under it.
    fs::create_dir(m.path("e")).unwrap();
    write_synced(&m.path("e/f"), b"x");
    sync_dir(&m.path("e"));
    m.cut();
    assert_eq!(read(&m.path("d/kept")).unwrap(), b"both synced");
    assert!(!m.path("e").exists());
}

#[test]
fn an_unlink_without_a_directory_sync_comes_back() {
    let mut m = Mounted::new("testfs-unlink");
    write_synced(&m.path("f"), b"back");
    fs::create_dir(m.path("d")).unwrap();
    sync_dir(m.fs.path());
    fs::remove_file(m.path("f")).unwrap();
    fs::remove_dir(m.path("d")).unwrap();
    m.cut();
    assert_eq!(read(&m.path("f")).unwrap(), b"back");
    assert!(m.path("d").is_dir());
    fs::remove_file(m.path("f")).unwrap();
    sync_dir(m.fs.path());
    m.cut();
    assert_eq!(read(&m.path("f")), None);
}

#[test]
fn a_rename_without_a_directory_sync_is_undone() {
    let mut m = Mounted::new("testfs-rename");
    write_synced(&m.path("old"), b"old");
    write_synced(&m.path("tmp"), b"new");
    sync_dir(m.fs.path());
    fs::rename(m.path("tmp"), m.path("old")).unwrap();
    assert_eq!(read(&m.path("old")).unwrap(), b"new");
    m.cut();
    assert_eq!(read(&m.path("old")).unwrap(), b"old");
    assert_eq!(read(&m.path("tmp")).unwrap(), b"new");
    fs::rename(m.path("tmp"), m.path("old")).unwrap();
    sync_dir(m.fs.path());
    m.cut();
    assert_eq!(read(&m.path("old")).unwrap(), b"new");
    assert_eq!(read(&m.path("tmp")), None);
    assert_eq!(m.fs.stats().renames, 2);
}

#[test]
fn a_rename_between_directories_is_atomic_and_durable_with_either_directory() {
    // As the queue moves a staged topic into topics/ and a deleted one out: the sync of either
    // directory makes the move durable, and a cut never leaves the file under both names.
    for synced in ["source", "target"] {
        let mut m = Mounted::new("testfs-move");
        for dir in ["source", "target"] {
            fs::create_dir(m.path(dir)).unwrap();
            sync_dir(&m.path(dir));
        }
        write_synced(&m.path("source/f"), b"moved");
        sync_dir(&m.path("source"));
        sync_dir(m.fs.path());
        fs::rename(m.path("source/f"), m.path("target/f")).unwrap();
        m.cut();
        assert_eq!((read(&m.path("source/f")).unwrap(), read(&m.path("target/f"))), (b"moved".to_vec(), None));
        fs::rename(m.path("source/f"), m.path("target/f")).unwrap();
        sync_dir(&m.path(synced));
        m.cut();
        assert_eq!((read(&m.path("source/f")), read(&m.path("target/f")).unwrap()), (None, b"moved".to_vec()), "{synced}");
    }
}

/// Maps `path` (made `length` bytes long and durable, zeros) shared and writable.
fn mapped(m: &Mounted, name: &str, length: u64) -> (File, memmap2::MmapMut) {
    let path = m.path(name);
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    file.set_len(length).unwrap();
    file.sync_all().unwrap();
    sync_dir(m.fs.path());
    // SAFETY: only this test uses the file while it is mapped.
    let map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    (file, map)
}

#[test]
fn mapped_writes_survive_with_msync_and_are_lost_without() {
    let mut m = Mounted::new("testfs-mmap");
    let (file, mut map) = mapped(&m, "synced", 8192);
    map[100..105].copy_from_slice(b"msync");
    map.flush().unwrap();
    map[5000..5004].copy_from_slice(b"lost");
    drop((map, file));
    let (file, mut map) = mapped(&m, "unsynced", 8192);
    map[0..4].copy_from_slice(b"gone");
    drop((map, file));
    let fsyncs = m.fs.stats().fsyncs;
    m.cut();
    let synced = read(&m.path("synced")).unwrap();
    assert_eq!(&synced[100..105], b"msync");
    assert_eq!(&synced[5000..5004], [0; 4], "written after the msync, never synced");
    assert_eq!(read(&m.path("unsynced")).unwrap(), vec![0; 8192]);
    assert!(fsyncs >= 3, "msync reached the file system as an fsync");
}

#[test]
fn unmapping_and_syncfs_write_pages_back_without_making_them_durable() {
    // What forces "writeback happened, fsync did not": closing a mapping, which writes its dirty
    // pages back before it goes. syncfs may or may not write them back, and never syncs.
    let mut m = Mounted::new("testfs-writeback");
    let (file, mut map) = mapped(&m, "f", 4096);
    let before = m.fs.stats();
    map[0..9].copy_from_slice(b"writeback");
    let directory = File::open(m.fs.path()).unwrap();
    // SAFETY: syncfs only takes a descriptor, which `directory` owns for the call.
    assert_eq!(unsafe { libc::syncfs(directory.as_raw_fd()) }, 0);
    // syncfs sends no fsync; whether it writes the page back varies (seen both ways on 6.18).
    assert_eq!(m.fs.stats().fsyncs, before.fsyncs, "syncfs sent no fsync");
    drop(map);
    let after = m.fs.stats();
    assert!(after.bytes_written >= before.bytes_written + 9, "munmap pushed the dirty page: {before:?} {after:?}");
    assert_eq!(after.fsyncs, before.fsyncs, "and sent no fsync");
    drop((file, directory));
    m.cut();
    assert_eq!(read(&m.path("f")).unwrap(), vec![0; 4096]);
}

/// A torn cut of a file whose 64 durable sectors of ones were all overwritten with twos.
fn torn_result(name: &str, seed: u64) -> (Vec<u8>, powercut::CutReport) {
    let mut m = Mounted::new(name);
    let path = m.path("f");
    write_synced(&path, &[1u8; 64 * 512]);
    sync_dir(m.fs.path());
    fs::write(&path, [2u8; 64 * 512]).unwrap();
    let report = m.fs.cut(Cut::Torn { seed }).unwrap();
    (read(&path).unwrap(), report)
}

#[test]
fn a_torn_cut_keeps_a_strict_subset_of_unsynced_sectors_deterministically() {
    let (bytes, report) = torn_result("testfs-torn", 11);
    assert_eq!(bytes.len(), 64 * 512, "both images have this size");
    let kept = bytes.chunks(512).filter(|s| s.iter().all(|&b| b == 2)).count();
    let old = bytes.chunks(512).filter(|s| s.iter().all(|&b| b == 1)).count();
    assert_eq!(kept + old, 64, "every sector is wholly old or wholly new");
    assert!(0 < kept && kept < 64, "a part of the unsynced sectors, not all or none: {kept}");
    assert_eq!((report.sectors_unsynced, report.sectors_kept), (64, kept as u64));
    assert_eq!(torn_result("testfs-torn-again", 11).0, bytes, "the same seed tears the same way");
    assert_ne!(torn_result("testfs-torn-other", 12).0, bytes, "another seed tears another way");
}

#[test]
fn a_torn_cut_can_keep_an_unsynced_name_with_durable_contents() {
    // Over seeds, a file created (and written) without any fsync comes back missing, or named
    // with some or none of its contents; a seed keeping the name and no sector exists.
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..24 {
        let mut m = Mounted::new("testfs-torn-name");
        fs::write(m.path("f"), [3u8; 1024]).unwrap();
        m.fs.cut(Cut::Torn { seed }).unwrap();
        outcomes.insert(match read(&m.path("f")) {
            None => "missing",
            Some(bytes) if bytes.iter().all(|&b| b == 0) => "named, no data",
            Some(bytes) => {
                assert!(bytes.chunks(512).all(|s| s.iter().all(|&b| b == 3) || s.iter().all(|&b| b == 0)));
                "named, some data"
            }
        });
    }
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
}

#[test]
fn a_failed_fsync_reports_eio_and_keeps_nothing() {
    let mut m = Mounted::new("testfs-fail");
    fs::create_dir(m.path("d")).unwrap();
    write_synced(&m.path("d/f"), b"old");
    write_synced(&m.path("other"), b"old");
    sync_dir(&m.path("d"));
    sync_dir(m.fs.path());
    m.fs.fail_fsync("d", 1);
    let mut file = OpenOptions::new().write(true).open(m.path("d/f")).unwrap();
    file.write_all(b"new").unwrap();
    let error = file.sync_data().unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    write_synced(&m.path("other"), b"new");
    assert_eq!(m.fs.stats().failed_fsyncs, 1);
    drop(file);
    m.cut();
    assert_eq!(read(&m.path("d/f")).unwrap(), b"old");
    assert_eq!(read(&m.path("other")).unwrap(), b"new", "only files under the path fail");
    // Only the given number of fsyncs fail.
    write_synced(&m.path("d/f"), b"newer");
    m.cut();
    assert_eq!(read(&m.path("d/f")).unwrap(), b"newer");
}

#[test]
fn a_lying_fsync_loses_what_it_claimed_to_sync() {
    let mut m = Mounted::new("testfs-lies");
    write_synced(&m.path("f"), b"truth");
    sync_dir(m.fs.path());
    m.fs.set_fsync_lies(true);
    write_synced(&m.path("f"), b"lie");
    write_synced(&m.path("g"), b"lie");
    sync_dir(m.fs.path());
    m.fs.set_fsync_lies(false);
    assert_eq!(m.fs.stats().lied_fsyncs, 3);
    m.cut();
    assert_eq!(read(&m.path("f")).unwrap(), b"truth");
    assert_eq!(read(&m.path("g")), None);
}

#[test]
fn an_old_session_refuses_what_reaches_it_after_a_cut() {
    let mut m = Mounted::new("testfs-refuse");
    write_synced(&m.path("f"), b"x");
    sync_dir(m.fs.path());
    let mut stale = OpenOptions::new().write(true).open(m.path("f")).unwrap();
    m.cut();
    stale.write_all(b"after the cut").unwrap_or(());
    let error = stale.sync_all().unwrap_err();
    // The old connection was aborted: the kernel answers for the session.
    assert!(matches!(error.raw_os_error(), Some(libc::EIO | libc::ENOTCONN)), "{error}");
    drop(stale);
    assert_eq!(read(&m.path("f")).unwrap(), b"x", "the new mount never saw it");
}

#[test]
fn file_types_links_and_open_flags_behave_as_on_a_disk() {
    let m = Mounted::new("testfs-types");
    let (file, link, fifo, hard) = (m.path("file"), m.path("link"), m.path("fifo"), m.path("hard"));
    write_synced(&file, b"data");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let c_fifo = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
    fs::hard_link(&file, &hard).unwrap();
    assert!(fs::symlink_metadata(&file).unwrap().file_type().is_file());
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(fs::symlink_metadata(m.fs.path()).unwrap().file_type().is_dir());
    assert_eq!(fs::read_link(&link).unwrap(), file);
    assert_eq!(fs::metadata(&file).unwrap().nlink(), 2);
    assert_eq!(fs::read(&hard).unwrap(), b"data");
    let error = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&link).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ELOOP));
    let error = OpenOptions::new().write(true).create_new(true).open(&file).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
    // A FIFO opened for reading with O_NONBLOCK does not wait for a writer.
    let mut reader = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    assert_eq!(reader.read(&mut [0u8; 8]).unwrap(), 0);
    let mut names: Vec<_> = fs::read_dir(m.fs.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["fifo", "file", "hard", "link"]);
    // statfs answers, with room to spare.
    let c_root = std::ffi::CString::new(m.fs.path().to_str().unwrap()).unwrap();
    // SAFETY: statvfs reads the NUL-terminated path and writes the zeroed struct it is given.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c_root.as_ptr(), &mut stats) }, 0);
    assert!(stats.f_bavail > 1 << 20);
}

#[test]
fn fallocate_reserves_without_storing_and_punched_holes_read_zeros() {
    let mut m = Mounted::new("testfs-fallocate");
    let path = m.path("f");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    let fd = file.as_raw_fd();
    // SAFETY: plain syscalls on a descriptor `file` owns.
    assert_eq!(unsafe { libc::fallocate(fd, 0, 0, 1 << 30) }, 0);
    assert_eq!(file.metadata().unwrap().len(), 1 << 30);
    assert_eq!(file.metadata().unwrap().blocks(), 0, "a gigabyte reserved costs nothing until written");
    file.write_all_at(&[9u8; 12288], 4096).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 2 << 30) }, 0);
    assert_eq!(file.metadata().unwrap().len(), 1 << 30, "KEEP_SIZE keeps it");
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fallocate(fd, punch, 5000, 8000) }, 0);
    let mut bytes = vec![0u8; 12288];
    file.read_exact_at(&mut bytes, 4096).unwrap();
    assert!(bytes[..904].iter().all(|&b| b == 9) && bytes[904..8904].iter().all(|&b| b == 0));
    assert!(bytes[8904..].iter().all(|&b| b == 9));
    assert!(file.metadata().unwrap().blocks() <= 16, "the page punched whole is freed");
    drop(file);
    sync_dir(m.fs.path());
    m.cut();
    assert_eq!(fs::metadata(&path).unwrap().len(), 0, "the fallocated size was never synced");
    assert!(m.fs.stats().fallocates >= 3);
}

#[test]
fn flock_and_ofd_locks_exclude_across_processes() {
    let m = Mounted::new("testfs-locks");
    let (file, dir) = (m.path("lock"), m.path("d"));
    write_synced(&file, b"");
    fs::create_dir(&dir).unwrap();
    let mut child = crate::child::spawn("testfs-lock", &[file.display().to_string(), dir.display().to_string()]);
    let _reaper = crate::child::Reaper(vec![child.id()]);
    // libtest prints its own lines first.
    let mut line = String::new();
    let mut output = BufReader::new(child.stdout.as_mut().unwrap());
    while line != "locked\n" {
        line.clear();
        assert!(output.read_line(&mut line).unwrap() > 0, "the child died before locking");
    }
    let ours = File::open(&file).unwrap();
    let our_dir = File::open(&dir).unwrap();
    assert_eq!(flock(&ours), Some(libc::EWOULDBLOCK), "the child's flock on the file excludes us");
    assert_eq!(flock(&our_dir), Some(libc::EWOULDBLOCK), "the child's flock on the directory excludes us");
    assert_eq!(ofd_lock(&ours), Some(libc::EAGAIN), "the child's OFD lock excludes us");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(flock(&ours), None, "the child's exit released its locks");
    assert_eq!(flock(&our_dir), None);
    assert_eq!(ofd_lock(&ours), None);
}

/// Tries an exclusive flock without waiting: the errno if it is refused.
fn flock(file: &File) -> Option<i32> {
    // SAFETY: plain syscall on a descriptor `file` owns.
    let code = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (code != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
}

/// Tries an OFD write lock on byte 0 without waiting: the errno if it is refused.
fn ofd_lock(file: &File) -> Option<i32> {
    // SAFETY: `flock` is plain data; all-zero is valid, then filled in.
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = libc::F_RDLCK as libc::c_short;
    request.l_whence = libc::SEEK_SET as libc::c_short;
    request.l_len = 1;
    // SAFETY: fcntl reads the request on a descriptor `file` owns.
    let code = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &request) };
    (code != 0).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
}

/// Child roles of this module (`STREAMLOG_CHILD` starting with `testfs-`).
pub(crate) fn child(role: &str, args: &[String]) {
    match (role, args) {
        // `testfs-lock FILE DIR`: flocks FILE and DIR and OFD-locks FILE's first byte for
        // writing, says `locked`, and holds them until its input closes.
        ("testfs-lock", [file, dir]) => {
            let file = OpenOptions::new().read(true).write(true).open(file).unwrap();
            let dir = File::open(dir).unwrap();
            assert_eq!(flock(&file), None);
            assert_eq!(flock(&dir), None);
            // SAFETY: `flock` is plain data; all-zero is valid, then filled in.
            let mut request: libc::flock = unsafe { std::mem::zeroed() };
            request.l_type = libc::F_WRLCK as libc::c_short;
            request.l_whence = libc::SEEK_SET as libc::c_short;
            request.l_len = 1;
            // SAFETY: fcntl reads the request on a descriptor `file` owns.
            assert_eq!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &request) }, 0);
            println!("locked");
            std::io::stdout().flush().unwrap();
            std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
        }
        _ => panic!("unknown child role {role} {args:?}"),
    }
}

#[test]
fn a_queue_keeps_every_sync_record_across_a_clean_cut_from_this_and_another_process() {
    let mut m = Mounted::new("testfs-queue");
    let dir = m.path("q");
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic("t", 2).unwrap();
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    for i in 0..40u32 {
        producer.send("t", Record::new(&i.to_le_bytes()).partition(i % 2)).unwrap();
    }
    drop((producer, queue));
    let mut child = crate::child::spawn(
        "produce",
        &[dir.display().to_string(), "t".into(), "7".into(), "60".into(), "2".into(), "sync".into()],
    );
    let _reaper = crate::child::Reaper(vec![child.id()]);
    let acks = crate::child::collect_acks(&mut child);
    assert!(child.wait().unwrap().success());
    let acks = acks.join().unwrap();
    assert_eq!(acks.len(), 60);
    let report = m.fs.cut(Cut::Clean).unwrap();
    let queue = Queue::open(&dir).unwrap();
    let mut consumer = crate::consumer_from_start(&queue, "t", 2);
    let records = crate::read_exactly(&mut consumer, 100);
    let ours: Vec<u32> = records
        .iter()
        .filter(|r| r.3.len() == 4 && !r.3.starts_with(b"p7"))
        .map(|r| u32::from_le_bytes(r.3.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(ours.iter().filter(|&&i| i % 2 == 0).count(), 20);
    for (seq, partition, offset) in acks {
        let record = records.iter().find(|r| (r.0, r.1) == (partition, offset)).expect("an acknowledged record is there");
        assert_eq!(record.3, crate::child::value_for(7, seq));
    }
    // The queue keeps working on the new mount.
    queue.producer().send("t", Record::new(b"after").partition(0)).unwrap();
    assert!(m.fs.stats().fsyncs > 0 && report.inodes_kept > 5, "{report:?}");
}

// The library's reaction to a failing disk, on a file system that fails fsync for real.

#[test]
fn a_failed_fsync_poisons_the_partition() {
    let mut m = Mounted::new("testfs-poison");
    let dir = m.path("q");
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic("t", 2).unwrap();
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Sync));
    producer.send("t", Record::new(b"fine").partition(0)).unwrap();
    m.fs.fail_fsync("q/topics/t/0", 1);
    assert!(matches!(producer.send("t", Record::new(b"lost?").partition(0)), Err(Error::Io { .. })));
    assert_eq!(m.fs.stats().failed_fsyncs, 1);
    let again = producer.send("t", Record::new(b"refused").partition(0));
    assert!(matches!(&again, Err(Error::Poisoned(tp)) if *tp == TopicPartition::new("t", 0)), "{again:?}");
    // Other partitions are unaffected; a fresh open (recovery) clears the poison.
    producer.send("t", Record::new(b"elsewhere").partition(1)).unwrap();
    drop((producer, queue));
    let queue = crate::open_alone(&dir).unwrap();
    queue
        .producer_with(ProducerConfig::new().durability(Durability::Sync))
        .send("t", Record::new(b"after reopen").partition(0))
        .unwrap();
    drop(queue);
    // Nothing acknowledged was harmed, even by a power cut.
    m.cut();
    let queue = crate::open_alone(&dir).unwrap();
    let mut consumer = crate::consumer_from_start(&queue, "t", 2);
    // "lost?" was never acknowledged: it may be there or not.
    let count: u64 = (0..2).map(|p| queue.offsets(&TopicPartition::new("t", p)).unwrap()).map(|(start, end)| end - start).sum();
    let values: Vec<Vec<u8>> = crate::read_exactly(&mut consumer, count as usize).into_iter().map(|r| r.3).collect();
    for value in [&b"fine"[..], b"elsewhere", b"after reopen"] {
        assert!(values.iter().any(|v| v == value), "{value:?} in {values:?}");
    }
}

#[test]
fn close_reports_a_failed_background_sync_that_a_drop_would_hide() {
    let mut m = Mounted::new("testfs-close");
    let dir = m.path("q");
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic("t", 2).unwrap();
    // The flusher would sync within an hour; close syncs now.
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Interval(Duration::from_secs(3600))));
    producer.send("t", Record::new(b"synced by close").partition(1)).unwrap();
    producer.send("t", Record::new(b"opens partition 0").partition(0)).unwrap();
    m.fs.fail_fsync("q/topics/t/0", 1);
    producer.send("t", Record::new(b"not synced").partition(0)).unwrap();
    drop(producer);
    let error = queue.close().unwrap_err();
    assert!(matches!(&error, Error::Io { .. } | Error::Poisoned(_)), "{error}");
    assert_eq!(m.fs.stats().failed_fsyncs, 1);
    // What close did sync survives a power cut.
    m.cut();
    let queue = crate::open_alone(&dir).unwrap();
    let mut consumer = queue.consumer(ConsumerConfig::new("g").auto_offset_reset(OffsetReset::Earliest)).unwrap();
    consumer.assign(&[TopicPartition::new("t", 1)]).unwrap();
    let values: Vec<Vec<u8>> = crate::read_exactly(&mut consumer, 1).into_iter().map(|r| r.3).collect();
    assert_eq!(values, [b"synced by close".to_vec()]);
    // And a close with nothing failed says so.
    drop(consumer);
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Interval(Duration::from_secs(3600))));
    producer.send("t", Record::new(b"again").partition(0)).unwrap();
    drop(producer);
    queue.close().unwrap();
}

#[test]
fn close_reports_a_failed_sync_that_the_flusher_ran() {
    // With a flusher that syncs every millisecond, the failing fsync is most likely the
    // flusher's, perhaps still under way when close looks: close must wait for it and say so.
    let m = Mounted::new("testfs-close-flusher");
    let dir = m.path("q");
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic("t", 1).unwrap();
    let producer = queue.producer_with(ProducerConfig::new().durability(Durability::Interval(Duration::from_millis(1))));
    producer.send("t", Record::new(b"opens the partition")).unwrap();
    producer.flush().unwrap();
    m.fs.fail_fsync("q/topics/t/0", 1);
    producer.send("t", Record::new(b"its sync fails")).unwrap();
    drop(producer);
    let error = queue.close().unwrap_err();
    assert!(matches!(&error, Error::Io { .. } | Error::Poisoned(_)), "{error}");
    assert_eq!(m.fs.stats().failed_fsyncs, 1);
}

#[test]
fn a_sync_after_a_failed_fsync_is_refused() {
    // Linux reports a writeback error once: an fsync after a failed one may succeed even though
    // the failed one's pages are gone. Nothing may be made to look synced after it.
    let mut m = Mounted::new("testfs-sync-after-failure");
    let dir = m.path("q");
    let queue = Queue::open(&dir).unwrap();
    queue.create_topic("t", 1).unwrap();
    // An interval long enough that only the explicit flushes sync.
    let producer =
        queue.producer_with(ProducerConfig::new().durability(Durability::Interval(std::time::Duration::from_secs(3600))));
    producer.send("t", Record::new(b"a")).unwrap();
    producer.send("t", Record::new(b"b")).unwrap();
    m.fs.fail_fsync("q/topics/t/0", 1);
    assert!(matches!(producer.flush(), Err(Error::Io { .. })));
    let again = producer.flush();
    assert!(matches!(again, Err(Error::Poisoned(_))), "{again:?}");
    let sync = queue.producer_with(ProducerConfig::new().durability(Durability::Sync)).send("t", Record::new(b"c"));
    assert!(matches!(sync, Err(Error::Poisoned(_))), "{sync:?}");
    assert_eq!(m.fs.stats().failed_fsyncs, 1);
    drop((producer, queue));
    m.cut();
    // The queue opens cleanly after the cut and keeps accepting sends.
    let queue = crate::open_alone(&dir).unwrap();
    queue.producer_with(ProducerConfig::new().durability(Durability::Sync)).send("t", Record::new(b"d")).unwrap();
}
