//! A tree of named entries built from flat names split into parts (zip member paths,
//! tensor names split at `-o split_names=SEP`): the leading parts become directories,
//! created on first use, and entries keep the order they were added. Shared by the formats
//! whose containers hold flat names; each keeps its own leaf type.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::source::{Key, Skipped, Xattr, ROOT};

pub enum TreeNode<L> {
    Dir(TreeDir),
    Leaf(L),
}

/// One directory of the tree.
#[derive(Default)]
pub struct TreeDir {
    /// Final names and keys, in the order added.
    pub children: Vec<(String, Key)>,
    subdirs: HashMap<String, Key>,
    pub xattrs: Vec<Xattr>,
    /// Children left out, with the reason.
    pub skipped: Vec<Skipped>,
}

/// Key -> node; [`ROOT`] is the top directory.
pub struct PathTree<L> {
    nodes: Vec<TreeNode<L>>,
}

impl<L> Default for PathTree<L> {
    fn default() -> Self {
        PathTree {
            nodes: vec![TreeNode::Dir(TreeDir::default())],
        }
    }
}

impl<L> PathTree<L> {
    /// The directory at `parts` below the root, created as needed.
    pub fn make_dirs(&mut self, parts: &[&str]) -> Key {
        let mut dir = ROOT;
        for part in parts {
            dir = match self.dir_mut(dir).subdirs.get(*part) {
                Some(&key) => key,
                None => {
                    let key =
                        self.push_node(dir, part.to_string(), TreeNode::Dir(TreeDir::default()));
                    self.dir_mut(dir).subdirs.insert(part.to_string(), key);
                    key
                }
            };
        }
        dir
    }

    /// Adds `leaf` named `name` to directory `parent`; its key.
    pub fn push(&mut self, parent: Key, name: String, leaf: L) -> Key {
        self.push_node(parent, name, TreeNode::Leaf(leaf))
    }

    fn push_node(&mut self, parent: Key, name: String, node: TreeNode<L>) -> Key {
        let key = self.nodes.len() as Key;
        self.nodes.push(node);
        self.dir_mut(parent).children.push((name, key));
        key
    }

    /// Directory `key`; only keys this tree handed out for directories are passed here.
    pub fn dir_mut(&mut self, key: Key) -> &mut TreeDir {
        match &mut self.nodes[key as usize] {
            TreeNode::Dir(dir) => dir,
            TreeNode::Leaf(_) => unreachable!("parents are always directories"),
        }
    }

    pub fn node(&self, key: Key) -> Result<&TreeNode<L>> {
        self.nodes.get(key as usize).ok_or(Error::NotFound)
    }

    /// Directory `key`, or the error a listing of a file gets.
    pub fn dir(&self, key: Key) -> Result<&TreeDir> {
        match self.node(key)? {
            TreeNode::Dir(dir) => Ok(dir),
            TreeNode::Leaf(_) => Err(Error::NotDir),
        }
    }
}
