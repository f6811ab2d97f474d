//! The filesystem core: a read-only virtual tree over one [`Source`], with inode numbers,
//! attributes, directory listings, reads and extended attributes. It knows no container
//! format and no FUSE; `fuse.rs` translates kernel requests into calls on [`Fs`].

mod inode;
mod names;
mod read_around;
mod shared;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use inode::{stable_hash, DirState, InodeTable, NewNode, Node, NodeKind};
pub use inode::{Ino, ROOT_INO};
pub use names::escape;
use names::UniqueNames;
use read_around::{ReadAround, SMALL_FILE};
use shared::{Interner, NpyArray};

use crate::error::{Error, Result};
use crate::npy::Piece;
use crate::source::{Entry, EntryKind, Source, Xattr, ROOT};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// What `stat` shows for a node.
#[derive(Clone, Copy, Debug)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
}

pub struct DirEntry {
    pub name: OsString,
    pub ino: Ino,
    pub kind: Kind,
}

pub struct Fs {
    source: Arc<dyn Source>,
    table: InodeTable,
    shared: Interner,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
    readdir_visits: AtomicU64,
    read_around: ReadAround,
    /// Fault injection for the shutdown tests ([`READ_DELAY_ENV`]).
    read_delay: Option<std::time::Duration>,
}

/// The one extended attribute namespace of every node (sources name theirs `user.*`).
const USER_NAMESPACE: &[u8] = b"user.";

/// Set to a number of milliseconds to make every file read wait that long first: how the
/// tests get a read that is still in flight when the mount is told to stop.
pub const READ_DELAY_ENV: &str = "ARRFS_FAULT_READ_DELAY_MS";

impl Fs {
    /// A tree over `source`; files show `mtime` and belong to the calling user.
    pub fn new(source: Arc<dyn Source>, mtime: SystemTime) -> Fs {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Fs {
            source,
            table: InodeTable::with_root(ROOT),
            shared: Interner::default(),
            uid,
            gid,
            mtime,
            readdir_visits: AtomicU64::new(0),
            read_around: ReadAround::default(),
            read_delay: std::env::var(READ_DELAY_ENV)
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map(std::time::Duration::from_millis),
        }
    }

    fn node(&self, ino: Ino) -> Result<Node> {
        self.table.get(ino).ok_or(Error::NotFound)
    }

    /// `f` of node `ino` (under the table's lock, without copying the node).
    fn with_node<T>(&self, ino: Ino, f: impl FnOnce(&Node) -> T) -> Result<T> {
        self.table.with(ino, f).ok_or(Error::NotFound)
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.with_node(ino, |node| self.attr_of(ino, node))
    }

    fn attr_of(&self, ino: Ino, node: &Node) -> Attr {
        let (kind, size, perm) = match &node.kind {
            NodeKind::Dir(_) => (Kind::Dir, 0, 0o555),
            NodeKind::Npy(array) => (Kind::File, array.layout.size(), 0o444),
            NodeKind::Blob(size) => (Kind::File, *size, 0o444),
            NodeKind::Bytes(bytes) => (Kind::File, bytes.len() as u64, 0o444),
            NodeKind::Symlink(target) => (Kind::Symlink, target.len() as u64, 0o777),
        };
        Attr {
            ino,
            kind,
            size,
            perm,
            nlink: node.nlink,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
        }
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        let dir = self.dir_state(parent)?;
        let ino = dir.lookup(name).ok_or(Error::NotFound)?;
        self.getattr(ino)
    }

    /// Hands `add` the entries of directory `ino` from position `offset` on (`.` and `..`
    /// are positions 0 and 1), each as its name and attributes with the position that
    /// follows it, until `add` returns true (the reply is full). Each call costs only the
    /// entries it hands out, so listing a directory of N entries in many calls costs O(N)
    /// in all.
    pub fn readdir(
        &self,
        ino: Ino,
        offset: u64,
        mut add: impl FnMut(&OsStr, &Attr, u64) -> bool,
    ) -> Result<()> {
        let dir = self.dir_state(ino)?;
        let parent = self.with_node(ino, |node| node.parent)?;
        let dots = [(".", ino), ("..", parent)];
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (name, dot)) in dots.iter().enumerate().skip(start) {
            if add(OsStr::new(name), &self.getattr(*dot)?, i as u64 + 1) {
                return Ok(());
            }
        }
        for i in start.saturating_sub(2)..dir.len() {
            self.readdir_visits.fetch_add(1, Ordering::Relaxed);
            let attr = self
                .table
                .with_child(&dir, i, |child, node| self.attr_of(child, node))
                .ok_or(Error::NotFound)?;
            if add(OsStr::new(dir.name(i)), &attr, i as u64 + 3) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Every entry of directory `ino`, without `.` and `..`.
    pub fn entries(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        self.readdir(ino, 2, |name, attr, _| {
            out.push(DirEntry {
                name: name.to_owned(),
                ino: attr.ino,
                kind: attr.kind,
            });
            false
        })?;
        Ok(out)
    }

    /// Directory entries examined by [`Fs::readdir`] so far (for the scaling tests).
    pub fn readdir_visits(&self) -> u64 {
        self.readdir_visits.load(Ordering::Relaxed)
    }

    /// Checks that `ino` can be opened for reading.
    pub fn open(&self, ino: Ino, write: bool) -> Result<()> {
        match self.with_node(ino, |node| matches!(node.kind, NodeKind::Dir(_)))? {
            true => Err(Error::IsDir),
            false if write => Err(Error::ReadOnly),
            false => Ok(()),
        }
    }

    /// Up to `size` bytes from `offset`; fewer only at the end of the file.
    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        if let Some(delay) = self.read_delay {
            std::thread::sleep(delay);
        }
        match &node.kind {
            NodeKind::Npy(array) => self.read_npy(&node, array, offset, size),
            NodeKind::Blob(len) => self.read_blob(&node, *len, offset, size),
            NodeKind::Bytes(bytes) => Ok(slice_at(bytes, offset, size).to_vec()),
            NodeKind::Dir(_) => Err(Error::IsDir),
            NodeKind::Symlink(_) => Err(Error::NotFound),
        }
    }

    fn read_npy(&self, node: &Node, array: &NpyArray, offset: u64, size: u32) -> Result<Vec<u8>> {
        let layout = &array.layout;
        let mut out = Vec::new();
        for piece in layout.pieces(offset, u64::from(size)) {
            match piece {
                Piece::Header(range) => out.extend_from_slice(&layout.header[range]),
                Piece::Payload(range) => {
                    let start = out.len();
                    out.resize(start + (range.end - range.start) as usize, 0);
                    self.source.read(node.key, range.start, &mut out[start..])?;
                }
            }
        }
        Ok(out)
    }

    fn read_blob(&self, node: &Node, len: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let end = offset.saturating_add(u64::from(size)).min(len);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0; (end - offset) as usize];
        self.source.read(node.key, offset, &mut out)?;
        Ok(out)
    }

    /// A local file the kernel may read file `ino` from directly (FUSE passthrough): the
    /// source's backing file of a file whose bytes are the backing file's, of the very size
    /// shown. None for any other file, and on any doubt.
    pub fn backing_file(&self, ino: Ino) -> Result<Option<std::fs::File>> {
        let node = self.node(ino)?;
        let NodeKind::Blob(size) = node.kind else {
            return Ok(None);
        };
        let Some(file) = self.source.backing_file(node.key)? else {
            return Ok(None);
        };
        let same_size = file.metadata().is_ok_and(|m| m.len() == size);
        Ok(same_size.then_some(file))
    }

    /// The small files worth pushing into the kernel's page cache now that file `ino` was
    /// read from its start (see `read_around.rs`), as (inode, size): those that follow it
    /// in its directory. Empty for a file that is not small itself.
    pub fn read_around(&self, ino: Ino) -> Vec<(Ino, u64)> {
        let Ok((parent, size)) =
            self.with_node(ino, |node| (node.parent, self.attr_of(ino, node).size))
        else {
            return Vec::new();
        };
        if size > SMALL_FILE {
            return Vec::new();
        }
        let Ok(dir) = self.dir_state(parent) else {
            return Vec::new();
        };
        let size_of = |child| {
            let attr = self.getattr(child).ok()?;
            (attr.kind == Kind::File).then_some(attr.size)
        };
        self.read_around.after_read(parent, &dir, ino, size_of)
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.with_node(ino, |node| match &node.kind {
            NodeKind::Symlink(target) => Ok(target.as_bytes().to_vec()),
            _ => Err(Error::NotSymlink),
        })?
    }

    /// The value of extended attribute `name`. Sources give only `user.` attributes: a
    /// name in another namespace is not supported (EOPNOTSUPP, as the kernel answers for a
    /// namespace a filesystem has no handler for) rather than absent. `ls -l` asks every
    /// file for its SELinux label and its ACL, and stops asking a device after the first
    /// EOPNOTSUPP: 200,000 round trips fewer for a directory of 100,000 files.
    pub fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>> {
        if !name.as_bytes().starts_with(USER_NAMESPACE) {
            self.with_node(ino, |_| ())?;
            return Err(Error::XattrNamespace);
        }
        self.xattrs(ino)?
            .into_iter()
            .find(|(n, _)| n.as_bytes() == name.as_bytes())
            .map(|(_, value)| value)
            .ok_or(Error::NoXattr)
    }

    /// Names of all extended attributes, each followed by NUL (the `listxattr` format).
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (name, _) in self.xattrs(ino)? {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    /// An array's dtype and shape first (from its header), then the source's xattrs.
    fn xattrs(&self, ino: Ino) -> Result<Vec<Xattr>> {
        let node = self.node(ino)?;
        let mut out = Vec::new();
        let dir;
        let packed = match &node.kind {
            NodeKind::Dir(_) => {
                dir = self.dir_state(ino)?;
                &dir.xattrs
            }
            NodeKind::Npy(array) => {
                let header = &array.header;
                let shape = format!("{:?}", header.shape);
                out.push(("user.arrfs.dtype".into(), header.dtype.descr().into_bytes()));
                out.push(("user.arrfs.shape".into(), shape.into_bytes()));
                &node.xattrs
            }
            _ => &node.xattrs,
        };
        for (name, value) in packed.iter() {
            out.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
        }
        Ok(out)
    }

    /// Follows `path` (relative to the root, `/`-separated) to its inode, without following
    /// symbolic links.
    pub fn resolve(&self, path: &str) -> Result<Ino> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            ino = match part {
                ".." => self.with_node(ino, |node| node.parent)?,
                _ => self.lookup(ino, OsStr::new(part))?.ino,
            };
        }
        Ok(ino)
    }

    /// The listing of directory `ino`, read from the source on first use.
    fn dir_state(&self, ino: Ino) -> Result<Arc<DirState>> {
        let (state, key) = self.with_node(ino, |node| match &node.kind {
            NodeKind::Dir(state) => Ok((state.clone(), node.key)),
            _ => Err(Error::NotDir),
        })??;
        let mut state = state.lock().unwrap();
        if let Some(loaded) = state.as_ref() {
            return Ok(loaded.clone());
        }
        let loaded = Arc::new(self.load_dir(ino, key)?);
        *state = Some(loaded.clone());
        Ok(loaded)
    }

    fn load_dir(&self, ino: Ino, key: crate::source::Key) -> Result<DirState> {
        let listing = self.source.list(key)?;
        let mut xattrs = listing.xattrs;
        if !listing.skipped.is_empty() {
            let text: String = listing
                .skipped
                .iter()
                .map(|skipped| format!("{}: {}\n", skipped.name, skipped.why))
                .collect();
            xattrs.push(("user.arrfs.skipped".into(), text.into_bytes()));
        }
        let xattrs = self.shared.xattrs(&xattrs);
        let mut entries = listing.entries;
        let names: Vec<String> = entries
            .iter_mut()
            .map(|entry| escape(std::mem::take(&mut entry.name)))
            .collect();
        // Sorting the names (which a directory does for its lookups anyway) finds repeats
        // without a set of every name; the rare directory with some claims them in order.
        let mut dir = DirState::new(&names, xattrs.clone())?;
        if dir.has_repeats() {
            let mut unique = UniqueNames::default();
            let names: Vec<String> = names.into_iter().map(|n| unique.claim(n)).collect();
            dir = DirState::new(&names, xattrs)?;
        }
        let nodes = entries.into_iter().enumerate().map(|(i, entry)| {
            let name = OsStr::new(dir.name(i));
            self.new_node(ino, name, entry)
        });
        let added = self.table.insert_all(nodes);
        dir.set_nodes(added);
        Ok(dir)
    }

    /// Child `name` of directory `parent`, and the origin its inode number derives from.
    fn new_node(&self, parent: Ino, name: &OsStr, entry: Entry) -> (u64, NewNode) {
        let origin = match entry.identity {
            Some(id) => stable_hash(&[b"object", &id.to_le_bytes()]),
            None => stable_hash(&[&parent.to_le_bytes(), name.as_bytes()]),
        };
        let (kind, nlink) = match entry.kind {
            EntryKind::Dir => (NodeKind::Dir(Arc::default()), 2),
            EntryKind::Blob { size } => (NodeKind::Blob(size), entry.nlink),
            EntryKind::Bytes(bytes) => (NodeKind::Bytes(bytes), entry.nlink),
            EntryKind::Symlink(target) => (NodeKind::Symlink(target.into()), 1),
            EntryKind::Array(header) => (NodeKind::Npy(self.shared.array(header)), entry.nlink),
        };
        let node = NewNode {
            parent,
            key: entry.key,
            kind,
            xattrs: self.shared.entry_xattrs(&entry.xattrs),
            nlink,
        };
        (origin, node)
    }
}

/// Up to `size` bytes of `bytes` from `offset`; empty past the end.
fn slice_at(bytes: &[u8], offset: u64, size: u32) -> &[u8] {
    let len = bytes.len() as u64;
    let start = offset.min(len) as usize;
    let end = offset.saturating_add(u64::from(size)).min(len) as usize;
    &bytes[start..end]
}

#[cfg(test)]
mod tests;
