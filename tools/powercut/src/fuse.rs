//! The FUSE side: answers the kernel's requests from the shared tree. Every answer carries
//! attribute and entry TTL 0, so no process sees a stale size or name; file data goes through
//! the one kernel page cache all processes share, which the daemon never changes behind its
//! back (a cut remounts), so open keeps that cache (FOPEN_KEEP_CACHE) instead of dropping it.
//! Locks are not answered here: without FUSE_POSIX_LOCKS and FUSE_FLOCK_LOCKS (never
//! requested) the kernel handles flock and fcntl locks itself, across processes.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use crate::model::{self, Image, Kind, Node, PAGE_BYTES, Tree};
use crate::{Shared, State};

const TTL: Duration = Duration::ZERO;

/// Blocks (of `PAGE_BYTES`) statfs reports: 64 GiB, far more than any test writes.
const TOTAL_BLOCKS: u64 = 1 << 24;

/// One mount's session: refuses everything once a cut or unmount moved the state past it.
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) generation: u64,
}

type Answer<T> = Result<T, model::Errno>;

impl Session {
    /// Runs `f` on the state, or refuses with EIO if this session is over.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> Answer<T>) -> Result<T, Errno> {
        let mut state = self.shared.lock();
        if state.generation != self.generation {
            state.stats.refused += 1;
            return Err(Errno::EIO);
        }
        f(&mut state).map_err(Errno::from_i32)
    }
}

fn attr(tree: &Tree, ino: u64) -> Answer<FileAttr> {
    let node = tree.get(ino)?;
    let (kind, size, blocks, nlink) = match &node.kind {
        Kind::File { live, .. } => (FileType::RegularFile, live.size, live.stored_pages() * (PAGE_BYTES / 512), node.links),
        Kind::Dir { .. } => (FileType::Directory, PAGE_BYTES, 8, 2 + tree.subdirectories(ino)),
        Kind::Symlink(target) => (FileType::Symlink, target.as_os_str().len() as u64, 0, node.links),
        Kind::Fifo => (FileType::NamedPipe, 0, 0, node.links),
    };
    Ok(FileAttr {
        ino: INodeNo(ino),
        size,
        blocks,
        atime: node.atime,
        mtime: node.mtime,
        ctime: node.ctime,
        crtime: node.ctime,
        kind,
        perm: node.perm,
        nlink,
        uid: node.uid,
        gid: node.gid,
        rdev: 0,
        blksize: PAGE_BYTES as u32,
        flags: 0,
    })
}

fn file_mut(tree: &mut Tree, ino: u64) -> Answer<&mut Image> {
    match &mut tree.get_mut(ino)?.kind {
        Kind::File { live, .. } => Ok(live),
        Kind::Dir { .. } => Err(libc::EISDIR),
        _ => Err(libc::EINVAL),
    }
}

fn new_node(req: &Request, kind: Kind, mode: u32, umask: u32) -> Node {
    Node::new(kind, (mode & !umask & 0o7777) as u16, req.uid(), req.gid())
}

fn time(value: TimeOrNow) -> SystemTime {
    match value {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Session {
    fn entry(&self, reply: ReplyEntry, f: impl FnOnce(&mut State) -> Answer<u64>) {
        match self.with(|state| f(state).and_then(|ino| attr(&state.tree, ino))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn empty(&self, reply: ReplyEmpty, f: impl FnOnce(&mut State) -> Answer<()>) {
        match self.with(f) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    /// fsync of a file or a directory: fails if a failure is pending for its path, lies if the
    /// disk lies, and otherwise makes it durable.
    fn sync(&self, ino: u64, reply: ReplyEmpty) {
        self.empty(reply, |state| {
            let is_dir = matches!(state.tree.get(ino)?.kind, Kind::Dir { .. });
            if is_dir {
                state.stats.dir_fsyncs += 1;
            } else {
                state.stats.fsyncs += 1;
                if !state.failures.is_empty() {
                    let path = state.tree.path_of(ino);
                    // "" covers every file, even one no name reaches any more.
                    let rule = state.failures.iter_mut().find(|(under, _)| {
                        under.as_os_str().is_empty() || path.as_ref().is_some_and(|path| path.starts_with(under))
                    });
                    if let Some((_, times)) = rule {
                        *times -= 1;
                        state.failures.retain(|(_, times)| *times > 0);
                        state.stats.failed_fsyncs += 1;
                        return Err(libc::EIO);
                    }
                }
            }
            if state.lies {
                state.stats.lied_fsyncs += 1;
                return Ok(());
            }
            state.tree.make_durable(ino)
        })
    }
}

impl fuser::Filesystem for Session {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(reply, |state| state.tree.lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|state| attr(&state.tree, ino.0)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let answer = self.with(|state| {
            if let Some(size) = size {
                state.stats.truncates += 1;
                file_mut(&mut state.tree, ino.0)?.set_size(size);
            }
            let node = state.tree.get_mut(ino.0)?;
            if let Some(mode) = mode {
                node.perm = (mode & 0o7777) as u16;
            }
            node.uid = uid.unwrap_or(node.uid);
            node.gid = gid.unwrap_or(node.gid);
            node.atime = atime.map_or(node.atime, time);
            node.mtime = mtime.map_or(node.mtime, time);
            node.ctime = ctime.unwrap_or_else(SystemTime::now);
            if size.is_some() && mtime.is_none() {
                node.mtime = node.ctime;
            }
            attr(&state.tree, ino.0)
        });
        match answer {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.with(|state| match &state.tree.get(ino.0)?.kind {
            Kind::Symlink(target) => Ok(target.clone()),
            _ => Err(libc::EINVAL),
        }) {
            Ok(target) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str())),
            Err(errno) => reply.error(errno),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _rdev: u32, reply: ReplyEntry) {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFREG => Kind::File { live: Image::default(), durable: Image::default() },
            _ => return reply.error(Errno::from_i32(libc::EPERM)),
        };
        self.entry(reply, |state| state.tree.create(parent.0, name, new_node(req, kind, mode, umask)));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let kind = Kind::Dir { live: Default::default(), durable: Default::default() };
        self.entry(reply, |state| state.tree.create(parent.0, name, new_node(req, kind, mode, umask)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, |state| state.tree.remove(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(reply, |state| state.tree.remove(parent.0, name, true));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let kind = Kind::Symlink(target.to_owned());
        self.entry(reply, |state| state.tree.create(parent.0, link_name, new_node(req, kind, 0o777, 0)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !(RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE).contains(flags) {
            return reply.error(Errno::from_i32(libc::EINVAL));
        }
        self.empty(reply, |state| {
            state.stats.renames += 1;
            let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
            state.tree.rename(parent.0, name, newparent.0, newname, no_replace, exchange)
        });
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        self.entry(reply, |state| {
            if matches!(state.tree.get(ino.0)?.kind, Kind::Dir { .. }) {
                return Err(libc::EPERM);
            }
            state.tree.link(ino.0, newparent.0, newname)?;
            Ok(ino.0)
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|state| {
            let node = state.tree.get_mut(ino.0)?;
            if matches!(node.kind, Kind::Dir { .. }) {
                return Err(libc::EISDIR);
            }
            node.opens += 1;
            Ok(())
        }) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|state| Ok(file_mut(&mut state.tree, ino.0)?.read(offset, u64::from(size)))) {
            Ok(bytes) => reply.data(&bytes),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|state| {
            state.stats.writes += 1;
            state.stats.bytes_written += data.len() as u64;
            file_mut(&mut state.tree, ino.0)?.write(offset, data);
            let node = state.tree.get_mut(ino.0)?;
            node.mtime = SystemTime::now();
            node.ctime = node.mtime;
            Ok(())
        }) {
            Ok(()) => reply.written(data.len() as u32),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        self.empty(reply, |_| Ok(()));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.empty(reply, |state| {
            let node = state.tree.get_mut(ino.0)?;
            node.opens = node.opens.saturating_sub(1);
            state.tree.forget_if_unused(ino.0);
            Ok(())
        });
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.sync(ino.0, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|state| match state.tree.get(ino.0)?.kind {
            Kind::Dir { .. } => Ok(()),
            _ => Err(libc::ENOTDIR),
        }) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listing = self.with(|state| {
            let tree = &state.tree;
            let mut out = vec![(ino.0, FileType::Directory, ".".into()), (ino.0, FileType::Directory, "..".into())];
            for (name, child) in tree.list(ino.0)? {
                let kind = match tree.get(child).map(|n| &n.kind) {
                    Ok(Kind::Dir { .. }) => FileType::Directory,
                    Ok(Kind::Symlink(_)) => FileType::Symlink,
                    Ok(Kind::Fifo) => FileType::NamedPipe,
                    _ => FileType::RegularFile,
                };
                out.push((child, kind, name));
            }
            Ok(out)
        });
        match listing {
            Ok(listing) => {
                // Offsets are positions in the sorted listing; a directory changed between
                // two calls may repeat or skip a name, as POSIX allows.
                for (index, (child, kind, name)) in listing.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), index as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.sync(ino.0, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.with(|state| {
            let used: u64 = state
                .tree
                .nodes
                .values()
                .map(|node| match &node.kind {
                    Kind::File { live, .. } => live.stored_pages(),
                    _ => 1,
                })
                .sum();
            Ok((used, state.tree.nodes.len() as u64))
        }) {
            Ok((used, files)) => {
                let free = TOTAL_BLOCKS.saturating_sub(used);
                reply.statfs(TOTAL_BLOCKS, free, free, files + 1_000_000, 1_000_000, PAGE_BYTES as u32, 255, PAGE_BYTES as u32)
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn create(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, _flags: i32, reply: ReplyCreate) {
        let kind = Kind::File { live: Image::default(), durable: Image::default() };
        match self.with(|state| {
            let ino = state.tree.create(parent.0, name, new_node(req, kind, mode, umask))?;
            state.tree.get_mut(ino)?.opens += 1;
            attr(&state.tree, ino)
        }) {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(errno) => reply.error(errno),
        }
    }

    fn fallocate(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        self.empty(reply, |state| {
            state.stats.fallocates += 1;
            let image = file_mut(&mut state.tree, ino.0)?;
            let end = offset.checked_add(length).ok_or(libc::EFBIG)?;
            let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
            match mode & !libc::FALLOC_FL_KEEP_SIZE {
                // Nothing is reserved: pages are stored when written, and the file system
                // never runs out of space.
                0 => {}
                libc::FALLOC_FL_PUNCH_HOLE if keep_size => image.zero(offset, end.min(image.size)),
                libc::FALLOC_FL_ZERO_RANGE => image.zero(offset, end.min(image.size)),
                _ => return Err(libc::EOPNOTSUPP),
            }
            if !keep_size && end > image.size {
                image.set_size(end);
            }
            Ok(())
        });
    }
}
