//! The inode table: every node the kernel has seen, by inode number. Inode numbers are hashes
//! of the virtual path (or of the object's identity for hard-linked objects), so they are the
//! same on every mount of the same source whatever order the tree is explored in.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, RwLock};

use rustc_hash::FxHashMap;

use super::shared::{NpyArray, PackedXattrs};
use crate::error::{Error, Result};
pub use crate::io::stable_hash;
use crate::source::Key;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// One per entry of the tree (its inode number is its key in the table, not repeated here).
/// Cheap to clone: what it holds beyond a few numbers is shared.
#[derive(Clone, Debug)]
pub struct Node {
    pub parent: Ino,
    pub key: Key,
    pub kind: NodeKind,
    /// The source's xattrs (an array's dtype and shape come from its header).
    pub xattrs: PackedXattrs,
    pub nlink: u32,
    /// What the inode number was derived from, to tell hash collisions from hard links.
    origin: u64,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    /// Children are listed from the source on first use.
    Dir(Arc<Mutex<Option<Arc<DirState>>>>),
    /// Shared by every array with the same header.
    Npy(Arc<NpyArray>),
    Blob(u64),
    Bytes(Arc<[u8]>),
    Symlink(Arc<str>),
}

/// A directory's children. Each name is stored once, in one buffer: a directory of a
/// million entries would otherwise hold a million small strings, twice (list and index).
#[derive(Debug, Default)]
pub struct DirState {
    names: String,
    /// In listing order: where each child's name ends in `names`, and its inode.
    ends: Vec<u32>,
    inos: Vec<Ino>,
    /// Positions of the children in name order, for lookups by binary search.
    by_name: Vec<u32>,
    /// Where the children's nodes start in the table when they lie there side by side in
    /// listing order (none of them was there before), so that a listing reads them in
    /// turn: finding each by its number costs two cache misses in the index.
    first_node: Option<usize>,
    pub xattrs: PackedXattrs,
}

impl DirState {
    /// A directory of children named `names` (in listing order), whose inodes are set
    /// later ([`DirState::set_inos`]): they derive from the names, which must be unique
    /// first ([`DirState::has_repeats`]).
    pub fn new(names: &[String], xattrs: PackedXattrs) -> Result<DirState> {
        let too_big = || Error::Usage("a directory's names pass 4 GiB in all".into());
        let mut dir = DirState {
            names: String::with_capacity(names.iter().map(String::len).sum()),
            ends: Vec::with_capacity(names.len()),
            inos: Vec::new(),
            by_name: Vec::new(),
            first_node: None,
            xattrs,
        };
        for name in names {
            dir.names.push_str(name);
            dir.ends
                .push(u32::try_from(dir.names.len()).map_err(|_| too_big())?);
        }
        let mut by_name: Vec<u32> = (0..names.len() as u32).collect();
        by_name.sort_unstable_by(|&a, &b| dir.name(a as usize).cmp(dir.name(b as usize)));
        dir.by_name = by_name;
        Ok(dir)
    }

    /// Whether two children have the same name.
    pub fn has_repeats(&self) -> bool {
        self.by_name
            .windows(2)
            .any(|pair| self.name(pair[0] as usize) == self.name(pair[1] as usize))
    }

    /// The children's nodes, in listing order, as [`InodeTable::insert_all`] added them.
    pub fn set_nodes(&mut self, added: Added) {
        debug_assert_eq!(added.inos.len(), self.ends.len());
        self.inos = added.inos;
        self.first_node = added.first_node;
    }

    pub fn len(&self) -> usize {
        self.inos.len()
    }

    /// The name and inode of the child at position `i` (in listing order).
    pub fn child(&self, i: usize) -> (&str, Ino) {
        (self.name(i), self.inos[i])
    }

    /// The name of the child at position `i` (in listing order).
    pub fn name(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        &self.names[start..self.ends[i] as usize]
    }

    pub fn lookup(&self, name: &OsStr) -> Option<Ino> {
        let found = self
            .by_name
            .binary_search_by(|&i| self.name(i as usize).as_bytes().cmp(name.as_bytes()))
            .ok()?;
        Some(self.inos[self.by_name[found] as usize])
    }
}

pub struct NewNode {
    pub parent: Ino,
    pub key: Key,
    pub kind: NodeKind,
    pub xattrs: PackedXattrs,
    pub nlink: u32,
}

/// Nodes live side by side in one vector, found through an index by inode number: a node
/// costs its 72 bytes (and the vector's spare capacity, whose pages stay untouched), where one
/// `Arc` per node took a 112-byte malloc chunk.
#[derive(Debug, Default)]
pub struct InodeTable {
    nodes: RwLock<Nodes>,
}

#[derive(Debug, Default)]
struct Nodes {
    /// In the order they were added; never removed.
    all: Vec<Node>,
    /// Inode number -> position in `all`. Inode numbers are our own hashes (of paths and
    /// identities), not chosen by anyone outside, so a fast non-cryptographic hasher (Fx)
    /// serves: SipHash was a tenth of listing a directory of 100,000 datasets.
    index: FxHashMap<Ino, usize>,
}

impl Nodes {
    fn get(&self, ino: Ino) -> Option<&Node> {
        self.index.get(&ino).map(|&at| &self.all[at])
    }

    fn add(&mut self, ino: Ino, node: Node) {
        self.index.insert(ino, self.all.len());
        self.all.push(node);
    }
}

impl InodeTable {
    pub fn with_root(key: Key) -> InodeTable {
        let table = InodeTable::default();
        let root = Node {
            parent: ROOT_INO,
            key,
            kind: NodeKind::Dir(Arc::default()),
            xattrs: PackedXattrs::default(),
            nlink: 2,
            origin: 0,
        };
        table.nodes.write().unwrap().add(ROOT_INO, root);
        table
    }

    /// A copy of node `ino` (cheap: what it holds beyond a few numbers is shared), for
    /// work that must not hold the table's lock (reads from the source).
    pub fn get(&self, ino: Ino) -> Option<Node> {
        self.nodes.read().unwrap().get(ino).cloned()
    }

    /// `f` of node `ino`, under the table's read lock: `f` must not call back into the table.
    pub fn with<T>(&self, ino: Ino, f: impl FnOnce(&Node) -> T) -> Option<T> {
        self.nodes.read().unwrap().get(ino).map(f)
    }

    /// `f` of child `i` of `dir` (its inode and node), as [`InodeTable::with`].
    pub fn with_child<T>(
        &self,
        dir: &DirState,
        i: usize,
        f: impl FnOnce(Ino, &Node) -> T,
    ) -> Option<T> {
        let ino = *dir.inos.get(i)?;
        let nodes = self.nodes.read().unwrap();
        let node = match dir.first_node {
            Some(first) => nodes.all.get(first + i),
            None => nodes.get(ino),
        };
        node.map(|node| f(ino, node))
    }

    /// Adds nodes (under one write lock), each with the `origin` its number derives from (a
    /// path or identity hash). A node already present with the same origin is a second
    /// link to it: its number is given, and it is kept as it was.
    pub fn insert_all(&self, new: impl ExactSizeIterator<Item = (u64, NewNode)>) -> Added {
        let count = new.len();
        let mut nodes = self.nodes.write().unwrap();
        nodes.all.reserve(count);
        nodes.index.reserve(count);
        let first = nodes.all.len();
        // Not `collect`: from a vector of entries it would keep their far larger buffer.
        let mut inos = Vec::with_capacity(count);
        for (origin, node) in new {
            inos.push(nodes.insert(origin, node));
        }
        let side_by_side = nodes.all.len() - first == count;
        Added {
            inos,
            first_node: side_by_side.then_some(first),
        }
    }
}

/// What [`InodeTable::insert_all`] did: the nodes' numbers in order, and where they start
/// in the table if they were all added there side by side.
pub struct Added {
    inos: Vec<Ino>,
    first_node: Option<usize>,
}

impl Nodes {
    fn insert(&mut self, origin: u64, node: NewNode) -> Ino {
        let mut ino = origin;
        loop {
            if ino <= ROOT_INO {
                ino = ROOT_INO + 1;
            }
            match self.get(ino) {
                Some(existing) if existing.origin == origin => return ino,
                Some(_) => ino = ino.wrapping_add(1),
                None => break,
            }
        }
        let node = Node {
            parent: node.parent,
            key: node.key,
            kind: node.kind,
            xattrs: node.xattrs,
            nlink: node.nlink,
            origin,
        };
        self.add(ino, node);
        ino
    }
}
