//! The file system's contents without FUSE: a tree of inodes, each file with a live and a
//! durable image and each directory with live and durable entries, and the power cut that
//! turns the durable (or, torn, a random mix) state into a new tree.
//!
//! Renames between two directories are atomic, as on a journaled file system: until one of the
//! two directories is synced, a cut keeps the old name; the sync of either one makes the move
//! durable in both, together with every such rename before it (they are in the journal ahead of
//! it). A cut therefore never leaves a renamed inode under both names, nor under neither.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Bytes in a page, the unit of storage and of copy-on-write sharing between the two images.
pub(crate) const PAGE_BYTES: u64 = 4096;

/// Bytes in a sector, the unit a torn cut keeps or drops.
pub(crate) const SECTOR_BYTES: u64 = 512;

/// The root directory's inode number (FUSE's convention).
pub(crate) const ROOT: u64 = 1;

type Page = Arc<[u8; PAGE_BYTES as usize]>;

/// The contents of a file: sparse pages (a missing page reads as zeros) and a size.
#[derive(Clone, Default, Debug)]
pub(crate) struct Image {
    pages: BTreeMap<u64, Page>,
    pub(crate) size: u64,
}

impl Image {
    /// Up to `length` bytes from `offset`, stopping at the size.
    pub(crate) fn read(&self, offset: u64, length: u64) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(length));
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        for (&index, page) in self.pages.range(offset / PAGE_BYTES..=(end - 1) / PAGE_BYTES) {
            let page_start = index * PAGE_BYTES;
            let from = offset.max(page_start);
            let to = end.min(page_start + PAGE_BYTES);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[(from - page_start) as usize..(to - page_start) as usize]);
        }
        out
    }

    /// Writes `data` at `offset`, growing the size if it ends beyond it.
    pub(crate) fn write(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let index = at / PAGE_BYTES;
            let within = (at % PAGE_BYTES) as usize;
            let count = (PAGE_BYTES as usize - within).min(data.len() - done);
            let page = self.pages.entry(index).or_insert_with(|| Arc::new([0u8; PAGE_BYTES as usize]));
            Arc::make_mut(page)[within..within + count].copy_from_slice(&data[done..done + count]);
            done += count;
        }
        self.size = self.size.max(offset + data.len() as u64);
    }

    /// Sets the size; bytes beyond a shorter size are gone, so a later growth reads zeros there.
    pub(crate) fn set_size(&mut self, size: u64) {
        // Stored bytes past the size (even past the old one, as a torn cut copies whole
        // sectors) must read as zeros when the file grows again.
        let stored_end = self.pages.last_key_value().map_or(0, |(&index, _)| (index + 1) * PAGE_BYTES);
        self.zero(size, stored_end.max(self.size));
        self.size = size;
    }

    /// Makes `[start, end)` read as zeros, freeing the pages it covers whole.
    pub(crate) fn zero(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let first = start / PAGE_BYTES;
        let last = (end - 1) / PAGE_BYTES;
        let indexes: Vec<u64> = self.pages.range(first..=last).map(|(&index, _)| index).collect();
        for index in indexes {
            let page_start = index * PAGE_BYTES;
            let from = start.max(page_start);
            let to = end.min(page_start + PAGE_BYTES);
            if from == page_start && to == page_start + PAGE_BYTES {
                self.pages.remove(&index);
            } else if let Some(page) = self.pages.get_mut(&index) {
                Arc::make_mut(page)[(from - page_start) as usize..(to - page_start) as usize].fill(0);
            }
        }
    }

    /// Pages that hold data (for `stat`'s block count).
    pub(crate) fn stored_pages(&self) -> u64 {
        self.pages.len() as u64
    }

    /// The sector `sector` of page `index` (zeros for a hole or beyond the size).
    fn sector(&self, index: u64, sector: u64) -> [u8; SECTOR_BYTES as usize] {
        let mut out = [0u8; SECTOR_BYTES as usize];
        if let Some(page) = self.pages.get(&index) {
            let from = (sector * SECTOR_BYTES) as usize;
            out.copy_from_slice(&page[from..from + SECTOR_BYTES as usize]);
        }
        let start = index * PAGE_BYTES + sector * SECTOR_BYTES;
        if start + SECTOR_BYTES > self.size {
            out[self.size.saturating_sub(start).min(SECTOR_BYTES) as usize..].fill(0);
        }
        out
    }

    /// The sectors (page index, sector within the page) where `self` and `other` read differently.
    fn differing_sectors(&self, other: &Image) -> Vec<(u64, u64)> {
        let mut indexes: Vec<u64> = self.pages.keys().chain(other.pages.keys()).copied().collect();
        indexes.sort_unstable();
        indexes.dedup();
        let mut out = Vec::new();
        for index in indexes {
            if let (Some(a), Some(b)) = (self.pages.get(&index), other.pages.get(&index))
                && Arc::ptr_eq(a, b)
                && (index + 1) * PAGE_BYTES <= self.size.min(other.size)
            {
                continue;
            }
            for sector in 0..PAGE_BYTES / SECTOR_BYTES {
                if self.sector(index, sector) != other.sector(index, sector) {
                    out.push((index, sector));
                }
            }
        }
        out
    }

    /// Whether both images read the same.
    fn same_as(&self, other: &Image) -> bool {
        self.size == other.size && self.differing_sectors(other).is_empty()
    }

    /// Copies sector `sector` of page `index` from `from`.
    fn copy_sector(&mut self, from: &Image, index: u64, sector: u64) {
        let bytes = from.sector(index, sector);
        let start = index * PAGE_BYTES + sector * SECTOR_BYTES;
        let size = self.size;
        self.write(start, &bytes);
        self.size = size;
    }
}

/// What an inode is.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    File { live: Image, durable: Image },
    Dir { live: BTreeMap<OsString, u64>, durable: BTreeMap<OsString, u64> },
    Symlink(PathBuf),
    Fifo,
}

/// An inode.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) perm: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) atime: SystemTime,
    pub(crate) mtime: SystemTime,
    pub(crate) ctime: SystemTime,
    /// Live directory entries naming it.
    pub(crate) links: u32,
    /// Open file handles (a mapping keeps its file open).
    pub(crate) opens: u32,
}

impl Node {
    pub(crate) fn new(kind: Kind, perm: u16, uid: u32, gid: u32) -> Node {
        let now = SystemTime::now();
        Node { kind, perm, uid, gid, atime: now, mtime: now, ctime: now, links: 0, opens: 0 }
    }

    fn touch(&mut self) {
        let now = SystemTime::now();
        self.mtime = now;
        self.ctime = now;
    }
}

/// How a cut treats what is not durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Everything not durable is gone.
    Clean,
    /// Each file with unsynced changes keeps a random part of its unsynced sectors and a size
    /// of either image; each directory with unsynced entries is written back as its sync would
    /// (with the renames it takes part in) or not at all. The same seed on the same state gives
    /// the same result.
    Torn {
        /// Chooses what survives.
        seed: u64,
    },
}

/// What a cut found and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files reachable after the cut whose live image differed from their durable one.
    pub files_unsynced: u64,
    /// Directories reachable after the cut whose live entries differed from their durable ones.
    pub dirs_unsynced: u64,
    /// Of those, the directories that came back with their live entries (torn cuts, or a
    /// rename's other directory written back).
    pub dirs_kept_live: u64,
    /// 512-byte sectors where a surviving file's live and durable images differed.
    pub sectors_unsynced: u64,
    /// Of those, the sectors that came back with their live contents (torn cuts only).
    pub sectors_kept: u64,
    /// Bytes of unsynced sectors that came back with their durable contents.
    pub bytes_dropped: u64,
    /// Files and directories before the cut that the new tree no longer holds.
    pub inodes_dropped: u64,
    /// Files and directories in the new tree.
    pub inodes_kept: u64,
}

/// Why an operation on the tree failed, as an errno.
pub(crate) type Errno = i32;

/// All inodes.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    pub(crate) nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Renames between two directories, oldest first, that neither directory's sync has made
    /// durable yet.
    pending_moves: Vec<Move>,
}

/// A rename between two directories, as the durable entries it sets: `(dir, name, inode)`,
/// `None` for a name it removes.
#[derive(Clone, Debug)]
struct Move {
    entries: [(u64, OsString, Option<u64>); 2],
}

impl Move {
    fn touches(&self, dir: u64) -> bool {
        self.entries.iter().any(|(at, _, _)| *at == dir)
    }
}

impl Tree {
    /// An empty file system: a root directory, durable.
    pub(crate) fn new() -> Tree {
        let mut root = Node::new(Kind::Dir { live: BTreeMap::new(), durable: BTreeMap::new() }, 0o755, 0, 0);
        root.links = 1;
        Tree { nodes: HashMap::from([(ROOT, root)]), next_ino: ROOT + 1, pending_moves: Vec::new() }
    }

    pub(crate) fn get(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    pub(crate) fn get_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.get(dir)?.kind {
            Kind::Dir { live, .. } => Ok(live),
            _ => Err(libc::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match &mut self.get_mut(dir)?.kind {
            Kind::Dir { live, .. } => Ok(live),
            _ => Err(libc::ENOTDIR),
        }
    }

    /// The inode `name` in `dir` names.
    pub(crate) fn lookup(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(libc::ENOENT)
    }

    /// Live entries of `dir`, sorted by name.
    pub(crate) fn list(&self, dir: u64) -> Result<Vec<(OsString, u64)>, Errno> {
        Ok(self.entries(dir)?.iter().map(|(name, &ino)| (name.clone(), ino)).collect())
    }

    /// Subdirectories of `dir` (for its link count).
    pub(crate) fn subdirectories(&self, dir: u64) -> u32 {
        let Ok(entries) = self.entries(dir) else { return 0 };
        entries.values().filter(|ino| matches!(self.nodes.get(ino).map(|n| &n.kind), Some(Kind::Dir { .. }))).count() as u32
    }

    /// Makes a new inode named `name` in `dir`.
    pub(crate) fn create(&mut self, dir: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.entries(dir)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.link(ino, dir, name)?;
        Ok(ino)
    }

    /// Adds the name `name` in `dir` for `ino`.
    pub(crate) fn link(&mut self, ino: u64, dir: u64, name: &OsStr) -> Result<(), Errno> {
        if self.entries(dir)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let node = self.get_mut(ino)?;
        node.links += 1;
        node.ctime = SystemTime::now();
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        self.get_mut(dir)?.touch();
        Ok(())
    }

    /// Removes `name` from `dir`; `want_dir` says whether it must be a directory (rmdir) or must
    /// not be (unlink).
    pub(crate) fn remove(&mut self, dir: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(dir, name)?;
        let is_dir = matches!(self.get(ino)?.kind, Kind::Dir { .. });
        match (want_dir, is_dir) {
            (true, false) => return Err(libc::ENOTDIR),
            (false, true) => return Err(libc::EISDIR),
            (true, true) if !self.entries(ino)?.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.entries_mut(dir)?.remove(name);
        self.get_mut(dir)?.touch();
        self.unlinked(ino);
        Ok(())
    }

    /// Drops one live link of `ino`.
    fn unlinked(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.links = node.links.saturating_sub(1);
            node.ctime = SystemTime::now();
        }
        self.forget_if_unused(ino);
    }

    /// Frees a file's pages once nothing can reach them: no live name, no open handle, and no
    /// durable or pending durable name (a cut could bring that back).
    pub(crate) fn forget_if_unused(&mut self, ino: u64) {
        let Some(node) = self.nodes.get(&ino) else { return };
        if node.links > 0 || node.opens > 0 || !matches!(node.kind, Kind::File { .. }) {
            return;
        }
        let durably_named =
            self.nodes.values().any(|n| matches!(&n.kind, Kind::Dir { durable, .. } if durable.values().any(|&i| i == ino)));
        let pending_name = self.pending_moves.iter().flat_map(|m| &m.entries).any(|(_, _, named)| *named == Some(ino));
        if !durably_named && !pending_name {
            self.nodes.remove(&ino);
        }
    }

    /// Moves `name` in `dir` to `new_name` in `new_dir`, replacing what is there unless
    /// `no_replace`; `exchange` swaps the two instead.
    pub(crate) fn rename(
        &mut self,
        dir: u64,
        name: &OsStr,
        new_dir: u64,
        new_name: &OsStr,
        no_replace: bool,
        exchange: bool,
    ) -> Result<(), Errno> {
        let ino = self.lookup(dir, name)?;
        let target = self.entries(new_dir)?.get(new_name).copied();
        if exchange {
            let Some(target) = target else { return Err(libc::ENOENT) };
            self.entries_mut(dir)?.insert(name.to_owned(), target);
            self.entries_mut(new_dir)?.insert(new_name.to_owned(), ino);
            self.get_mut(dir)?.touch();
            self.get_mut(new_dir)?.touch();
            self.moved(dir, name, Some(target), new_dir, new_name, ino);
            return Ok(());
        }
        if target == Some(ino) {
            return Ok(());
        }
        let moving_dir = matches!(self.get(ino)?.kind, Kind::Dir { .. });
        if moving_dir && self.is_within(new_dir, ino) {
            return Err(libc::EINVAL);
        }
        if let Some(target) = target {
            if no_replace {
                return Err(libc::EEXIST);
            }
            let target_dir = matches!(self.get(target)?.kind, Kind::Dir { .. });
            match (moving_dir, target_dir) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) if !self.entries(target)?.is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
        }
        self.entries_mut(dir)?.remove(name);
        self.entries_mut(new_dir)?.insert(new_name.to_owned(), ino);
        self.get_mut(dir)?.touch();
        self.get_mut(new_dir)?.touch();
        self.get_mut(ino)?.ctime = SystemTime::now();
        self.moved(dir, name, None, new_dir, new_name, ino);
        if let Some(target) = target {
            self.unlinked(target);
        }
        Ok(())
    }

    /// Records a rename between two directories (within one, a sync of it is atomic already).
    fn moved(&mut self, dir: u64, name: &OsStr, left: Option<u64>, new_dir: u64, new_name: &OsStr, ino: u64) {
        if dir != new_dir {
            let entries = [(dir, name.to_owned(), left), (new_dir, new_name.to_owned(), Some(ino))];
            self.pending_moves.push(Move { entries });
        }
    }

    /// Whether directory `dir` is `ancestor` or lies below it (through live entries).
    fn is_within(&self, dir: u64, ancestor: u64) -> bool {
        let mut stack = vec![ancestor];
        let mut seen = HashSet::new();
        while let Some(at) = stack.pop() {
            if at == dir {
                return true;
            }
            if seen.insert(at)
                && let Ok(entries) = self.entries(at)
            {
                stack.extend(entries.values().copied());
            }
        }
        false
    }

    /// A live path of `ino` relative to the root, if it has one.
    pub(crate) fn path_of(&self, ino: u64) -> Option<PathBuf> {
        let mut stack = vec![(ROOT, PathBuf::new())];
        let mut seen = HashSet::new();
        while let Some((at, path)) = stack.pop() {
            if at == ino {
                return Some(path);
            }
            if seen.insert(at)
                && let Ok(entries) = self.entries(at)
            {
                stack.extend(entries.iter().map(|(name, &child)| (child, path.join(name))));
            }
        }
        None
    }

    /// fsync of a file (its data and size) or of a directory (its entries, and every pending
    /// rename up to the last one into or out of it).
    pub(crate) fn make_durable(&mut self, ino: u64) -> Result<(), Errno> {
        let mut replaced = Vec::new();
        match &mut self.get_mut(ino)?.kind {
            Kind::File { live, durable } => *durable = live.clone(),
            Kind::Dir { live, durable } => {
                replaced.extend(durable.values().copied());
                *durable = live.clone();
            }
            Kind::Symlink(_) | Kind::Fifo => {}
        }
        replaced.extend(self.commit_moves_through(ino));
        for ino in replaced {
            self.forget_if_unused(ino);
        }
        Ok(())
    }

    /// Makes durable the pending renames up to the last one touching `dir`, oldest first, and
    /// returns the inodes whose durable names they removed or replaced.
    fn commit_moves_through(&mut self, dir: u64) -> Vec<u64> {
        let Some(last) = self.pending_moves.iter().rposition(|m| m.touches(dir)) else { return Vec::new() };
        let mut replaced = Vec::new();
        for Move { entries } in self.pending_moves.drain(..=last).collect::<Vec<_>>() {
            for (at, name, ino) in entries {
                let Some(Node { kind: Kind::Dir { durable, .. }, .. }) = self.nodes.get_mut(&at) else { continue };
                let old = match ino {
                    Some(ino) => durable.insert(name, ino),
                    None => durable.remove(&name),
                };
                replaced.extend(old);
            }
        }
        replaced
    }

    /// The tree a power cut leaves, and what it dropped.
    pub(crate) fn cut(&self, mode: Cut) -> (Tree, CutReport) {
        let mut random = match mode {
            Cut::Clean => None,
            Cut::Torn { seed } => Some(SplitMix64(seed)),
        };
        let mut report = CutReport::default();
        // A torn cut first writes back some of the directories with unsynced entries, as their
        // sync would (renames with them); then every directory keeps its durable entries.
        let written_back;
        let source = match random.as_mut() {
            None => self,
            Some(random) => {
                let mut tree = self.clone();
                let mut unsynced: Vec<u64> = (self.nodes.iter())
                    .filter(|(_, node)| matches!(&node.kind, Kind::Dir { live, durable } if live != durable))
                    .map(|(&ino, _)| ino)
                    .collect();
                unsynced.sort_unstable();
                for dir in unsynced {
                    if random.coin() {
                        tree.make_durable(dir).expect("a directory of the tree");
                    }
                }
                written_back = tree;
                &written_back
            }
        };
        let mut nodes = HashMap::new();
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            let old = &source.nodes[&ino];
            let mut node = old.clone();
            node.opens = 0;
            match &mut node.kind {
                Kind::File { live, durable } => {
                    if !live.same_as(durable) {
                        report.files_unsynced += 1;
                        let differing = durable.differing_sectors(live);
                        report.sectors_unsynced += differing.len() as u64;
                        let mut image = durable.clone();
                        if let Some(random) = random.as_mut() {
                            let size = if random.coin() { live.size } else { durable.size };
                            image.size = image.size.max(size);
                            for (index, sector) in differing {
                                if random.coin() {
                                    image.copy_sector(live, index, sector);
                                    report.sectors_kept += 1;
                                } else {
                                    report.bytes_dropped += SECTOR_BYTES;
                                }
                            }
                            image.set_size(size);
                        } else {
                            report.bytes_dropped += differing.len() as u64 * SECTOR_BYTES;
                        }
                        *live = image.clone();
                        *durable = image;
                    }
                }
                Kind::Dir { live, durable } => {
                    if let Some(Kind::Dir { live: was_live, durable: was_durable }) = self.nodes.get(&ino).map(|n| &n.kind)
                        && was_live != was_durable
                    {
                        report.dirs_unsynced += 1;
                        if durable == was_live {
                            report.dirs_kept_live += 1;
                        }
                    }
                    let mut entries = durable.clone();
                    // An entry for an inode already placed is a hard link, unless that inode is
                    // a directory: a directory has one parent. Atomic renames never give one
                    // two durable names, but a cut must make a tree whatever it is given.
                    entries.retain(|_, child| {
                        source.nodes.contains_key(child)
                            && !(nodes.contains_key(child) && matches!(source.nodes[child].kind, Kind::Dir { .. }))
                            && *child != ino
                    });
                    for &child in entries.values() {
                        if !nodes.contains_key(&child) && !stack.contains(&child) {
                            stack.push(child);
                        }
                    }
                    *live = entries.clone();
                    *durable = entries;
                }
                Kind::Symlink(_) | Kind::Fifo => {}
            }
            node.links = 0;
            nodes.insert(ino, node);
        }
        // A directory pushed twice before being placed could be named twice; keep the names
        // that point at placed inodes, counting links, and drop a second name of a directory.
        let mut named_dirs = HashSet::from([ROOT]);
        let mut links: HashMap<u64, u32> = HashMap::from([(ROOT, 1)]);
        let mut order: Vec<u64> = vec![ROOT];
        let mut index = 0;
        while index < order.len() {
            let dir = order[index];
            index += 1;
            let Some(Kind::Dir { live, .. }) = nodes.get(&dir).map(|n| n.kind.clone()) else { continue };
            let mut kept = BTreeMap::new();
            for (name, child) in live {
                let child_is_dir = matches!(nodes.get(&child).map(|n| &n.kind), Some(Kind::Dir { .. }));
                if child_is_dir && !named_dirs.insert(child) {
                    continue;
                }
                if child_is_dir {
                    order.push(child);
                }
                *links.entry(child).or_default() += 1;
                kept.insert(name, child);
            }
            if let Some(Node { kind: Kind::Dir { live, durable }, .. }) = nodes.get_mut(&dir) {
                *live = kept.clone();
                *durable = kept;
            }
        }
        nodes.retain(|ino, node| {
            node.links = links.get(ino).copied().unwrap_or(0);
            node.links > 0
        });
        report.inodes_kept = nodes.len() as u64;
        report.inodes_dropped = self.nodes.keys().filter(|ino| !nodes.contains_key(ino)).count() as u64;
        (Tree { nodes, next_ino: self.next_ino, pending_moves: Vec::new() }, report)
    }
}

/// Root-relative path of `path` (leading `/` and `.` dropped), for matching fsync failures.
pub(crate) fn relative(path: &Path) -> PathBuf {
    path.components().filter(|c| matches!(c, std::path::Component::Normal(_))).collect()
}

/// A small deterministic generator (SplitMix64): a torn cut must be reproducible from its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tree: &mut Tree, name: &str) -> u64 {
        let node = Node::new(Kind::File { live: Image::default(), durable: Image::default() }, 0o644, 0, 0);
        tree.create(ROOT, OsStr::new(name), node).unwrap()
    }

    fn live(tree: &mut Tree, ino: u64) -> &mut Image {
        match &mut tree.get_mut(ino).unwrap().kind {
            Kind::File { live, .. } => live,
            _ => unreachable!(),
        }
    }

    fn contents(tree: &Tree, name: &str) -> Option<Vec<u8>> {
        let ino = tree.lookup(ROOT, OsStr::new(name)).ok()?;
        match &tree.get(ino).unwrap().kind {
            Kind::File { live, durable } => {
                assert!(live.same_as(durable), "after a cut, live and durable agree");
                Some(live.read(0, u64::MAX))
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn images_read_what_was_written_with_holes_as_zeros() {
        let mut image = Image::default();
        image.write(5000, b"hello");
        assert_eq!(image.size, 5005);
        assert_eq!(image.read(4998, 10), b"\0\0hello");
        assert_eq!(image.stored_pages(), 1);
        image.set_size(5002);
        image.set_size(6000);
        assert_eq!(image.read(5000, 5), b"he\0\0\0");
        image.write(0, &[7u8; 9000]);
        image.zero(100, 8292);
        assert_eq!(image.stored_pages(), 2, "the page covered whole is freed");
        assert_eq!(image.read(99, 2), [7, 0]);
        assert_eq!(image.read(8291, 2), [0, 7]);
    }

    #[test]
    fn a_clean_cut_keeps_exactly_the_durable_state() {
        let mut tree = Tree::new();
        let synced = file(&mut tree, "synced");
        live(&mut tree, synced).write(0, b"durable");
        tree.make_durable(synced).unwrap();
        live(&mut tree, synced).write(7, b" and more");
        let unsynced_name = file(&mut tree, "unsynced-name");
        tree.make_durable(unsynced_name).unwrap();
        tree.make_durable(ROOT).unwrap();
        file(&mut tree, "after-dir-sync");
        let (cut, report) = tree.cut(Cut::Clean);
        assert_eq!(contents(&cut, "synced").unwrap(), b"durable");
        assert_eq!(contents(&cut, "unsynced-name").unwrap(), b"");
        assert_eq!(contents(&cut, "after-dir-sync"), None);
        assert_eq!(report.files_unsynced, 1);
        assert_eq!(report.dirs_unsynced, 1);
        assert_eq!(report.bytes_dropped, 512);
    }

    #[test]
    fn a_torn_cut_mixes_sectors_deterministically() {
        let mut tree = Tree::new();
        let ino = file(&mut tree, "f");
        live(&mut tree, ino).write(0, &[1u8; 64 * 512]);
        tree.make_durable(ino).unwrap();
        tree.make_durable(ROOT).unwrap();
        live(&mut tree, ino).write(0, &[2u8; 64 * 512]);
        let (a, report) = tree.cut(Cut::Torn { seed: 7 });
        let (b, _) = tree.cut(Cut::Torn { seed: 7 });
        let (c, _) = tree.cut(Cut::Torn { seed: 8 });
        let bytes = contents(&a, "f").unwrap();
        assert_eq!(bytes, contents(&b, "f").unwrap());
        assert_ne!(bytes, contents(&c, "f").unwrap());
        let kept = bytes.chunks(512).filter(|s| s.iter().all(|&x| x == 2)).count() as u64;
        let old = bytes.chunks(512).filter(|s| s.iter().all(|&x| x == 1)).count() as u64;
        assert_eq!(kept + old, 64, "every sector is whole, old or new");
        assert_eq!(report.sectors_unsynced, 64);
        assert_eq!(report.sectors_kept, kept);
        assert!(0 < kept && kept < 64);
    }

    #[test]
    fn renames_and_unlinks_without_a_directory_sync_are_undone() {
        let mut tree = Tree::new();
        let ino = file(&mut tree, "a");
        live(&mut tree, ino).write(0, b"x");
        tree.make_durable(ino).unwrap();
        tree.make_durable(ROOT).unwrap();
        tree.rename(ROOT, OsStr::new("a"), ROOT, OsStr::new("b"), false, false).unwrap();
        let (cut, _) = tree.cut(Cut::Clean);
        assert_eq!(contents(&cut, "a").unwrap(), b"x");
        assert_eq!(contents(&cut, "b"), None);
        tree.remove(ROOT, OsStr::new("b"), false).unwrap();
        assert!(tree.nodes.contains_key(&ino), "a durable name keeps the inode");
        let (cut, _) = tree.cut(Cut::Clean);
        assert_eq!(contents(&cut, "a").unwrap(), b"x");
        tree.make_durable(ROOT).unwrap();
        assert!(!tree.nodes.contains_key(&ino), "nothing can reach it any more");
    }

    fn dir(tree: &mut Tree, parent: u64, name: &str) -> u64 {
        tree.create(
            parent,
            OsStr::new(name),
            Node::new(Kind::Dir { live: BTreeMap::new(), durable: BTreeMap::new() }, 0o755, 0, 0),
        )
        .unwrap()
    }

    /// The inode at `path` (names from the root), if the tree has one.
    fn at(tree: &Tree, path: &[&str]) -> Option<u64> {
        path.iter().try_fold(ROOT, |dir, name| tree.lookup(dir, OsStr::new(name)).ok())
    }

    /// Two durable directories `a` and `b`, and a durable directory `a/x` holding a durable file.
    fn two_dirs_and_a_child() -> (Tree, u64, u64) {
        let mut tree = Tree::new();
        let a = dir(&mut tree, ROOT, "a");
        let b = dir(&mut tree, ROOT, "b");
        let x = dir(&mut tree, a, "x");
        let f = tree
            .create(x, OsStr::new("f"), Node::new(Kind::File { live: Image::default(), durable: Image::default() }, 0o644, 0, 0))
            .unwrap();
        live(&mut tree, f).write(0, b"kept");
        for ino in [f, x, a, b, ROOT] {
            tree.make_durable(ino).unwrap();
        }
        (tree, a, b)
    }

    #[test]
    fn a_rename_between_directories_is_durable_once_either_directory_is_synced() {
        for synced in ["a", "b", "neither"] {
            let (mut tree, a, b) = two_dirs_and_a_child();
            tree.rename(a, OsStr::new("x"), b, OsStr::new("y"), false, false).unwrap();
            match synced {
                "a" => tree.make_durable(a).unwrap(),
                "b" => tree.make_durable(b).unwrap(),
                _ => {}
            }
            let (cut, _) = tree.cut(Cut::Clean);
            let moved = synced != "neither";
            assert_eq!(at(&cut, &["a", "x"]).is_some(), !moved, "sync of {synced}");
            assert_eq!(at(&cut, &["b", "y"]).is_some(), moved, "sync of {synced}");
            let file = at(&cut, if moved { &["b", "y", "f"] } else { &["a", "x", "f"] }).unwrap();
            assert!(matches!(&cut.nodes[&file].kind, Kind::File { live, .. } if live.read(0, 4) == b"kept"));
        }
    }

    #[test]
    fn a_sync_makes_earlier_renames_durable_with_its_own() {
        let (mut tree, a, b) = two_dirs_and_a_child();
        let c = dir(&mut tree, ROOT, "c");
        tree.make_durable(ROOT).unwrap();
        tree.rename(a, OsStr::new("x"), b, OsStr::new("y"), false, false).unwrap();
        tree.rename(b, OsStr::new("y"), c, OsStr::new("z"), false, false).unwrap();
        tree.make_durable(c).unwrap();
        let (cut, _) = tree.cut(Cut::Clean);
        assert_eq!([["a", "x"], ["b", "y"], ["c", "z"]].map(|path| at(&cut, &path).is_some()), [false, false, true]);
    }

    #[test]
    fn a_torn_cut_keeps_a_renamed_directory_under_exactly_one_name() {
        let mut seen = HashSet::new();
        for seed in 0..64 {
            let (mut tree, a, b) = two_dirs_and_a_child();
            let created = dir(&mut tree, a, "new");
            tree.make_durable(created).unwrap();
            tree.rename(a, OsStr::new("x"), b, OsStr::new("y"), false, false).unwrap();
            let (cut, _) = tree.cut(Cut::Torn { seed });
            let old = at(&cut, &["a", "x"]).is_some();
            let new = at(&cut, &["b", "y"]).is_some();
            assert!(old != new, "seed {seed}: old name {old}, new name {new}");
            seen.insert((old, at(&cut, &["a", "new"]).is_some()));
        }
        // Nothing written back; `a` written back (with the rename); only `b` (with the rename,
        // so `a` loses `x` but not yet gains `new`). `a` cannot keep `x` once it is written back.
        assert_eq!(seen, HashSet::from([(true, false), (false, true), (false, false)]));
    }

    #[test]
    fn an_exchange_between_directories_is_atomic() {
        let (mut tree, a, b) = two_dirs_and_a_child();
        let w = dir(&mut tree, b, "w");
        tree.make_durable(w).unwrap();
        tree.make_durable(b).unwrap();
        tree.rename(a, OsStr::new("x"), b, OsStr::new("w"), false, true).unwrap();
        let (before, _) = tree.cut(Cut::Clean);
        tree.make_durable(b).unwrap();
        let (after, _) = tree.cut(Cut::Clean);
        let x = tree.lookup(b, OsStr::new("w")).unwrap();
        assert_eq!((at(&before, &["a", "x"]), at(&before, &["b", "w"])), (Some(x), Some(w)));
        assert_eq!((at(&after, &["a", "x"]), at(&after, &["b", "w"])), (Some(w), Some(x)));
    }
}
