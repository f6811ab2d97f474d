//! The inode table: every node the kernel has seen, by inode number. Inode numbers are hashes
//! of the virtual path (or of the object's identity for hard-linked objects), so they are the
//! same on every mount of the same source whatever order the tree is explored in.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex, RwLock};

pub use crate::io::stable_hash;
use crate::npy::NpyLayout;
use crate::source::{Key, Xattr};

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

#[derive(Debug)]
pub struct Node {
    pub ino: Ino,
    pub parent: Ino,
    pub key: Key,
    pub kind: NodeKind,
    pub xattrs: Vec<Xattr>,
    pub nlink: u32,
    /// What the inode number was derived from, to tell hash collisions from hard links.
    origin: u64,
}

#[derive(Debug)]
pub enum NodeKind {
    /// Children are listed from the source on first use.
    Dir(Mutex<Option<Arc<DirState>>>),
    Npy(NpyLayout),
    Blob(u64),
    Bytes(Arc<[u8]>),
    Symlink(String),
}

#[derive(Debug, Default)]
pub struct DirState {
    /// In listing order.
    pub children: Vec<(OsString, Ino)>,
    pub by_name: HashMap<OsString, Ino>,
    pub xattrs: Vec<Xattr>,
}

pub struct NewNode {
    pub parent: Ino,
    pub key: Key,
    pub kind: NodeKind,
    pub xattrs: Vec<Xattr>,
    pub nlink: u32,
}

#[derive(Debug, Default)]
pub struct InodeTable {
    nodes: RwLock<HashMap<Ino, Arc<Node>>>,
}

impl InodeTable {
    pub fn with_root(key: Key) -> InodeTable {
        let table = InodeTable::default();
        let root = Node {
            ino: ROOT_INO,
            parent: ROOT_INO,
            key,
            kind: NodeKind::Dir(Mutex::new(None)),
            xattrs: Vec::new(),
            nlink: 2,
            origin: 0,
        };
        table
            .nodes
            .write()
            .unwrap()
            .insert(ROOT_INO, Arc::new(root));
        table
    }

    pub fn get(&self, ino: Ino) -> Option<Arc<Node>> {
        self.nodes.read().unwrap().get(&ino).cloned()
    }

    /// Adds a node whose number derives from `origin` (a path or identity hash). A node
    /// already present with the same origin is a second link to it and is returned as is.
    pub fn insert(&self, origin: u64, node: NewNode) -> Ino {
        let mut nodes = self.nodes.write().unwrap();
        let mut ino = origin;
        loop {
            if ino <= ROOT_INO {
                ino = ROOT_INO + 1;
            }
            match nodes.get(&ino) {
                Some(existing) if existing.origin == origin => return ino,
                Some(_) => ino = ino.wrapping_add(1),
                None => break,
            }
        }
        let node = Node {
            ino,
            parent: node.parent,
            key: node.key,
            kind: node.kind,
            xattrs: node.xattrs,
            nlink: node.nlink,
            origin,
        };
        nodes.insert(ino, Arc::new(node));
        ino
    }
}
