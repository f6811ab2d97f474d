//! The children of a version-1 B-tree node, read from the bytes libhdf5 has just read, so
//! that the driver can fetch them all at once.
//!
//! libhdf5 walks a B-tree depth first, one node at a time: over a store where each read
//! that misses costs a round trip (20-200 ms), a chunk index of 250,000 chunks (about 4,000
//! nodes) or a group of 100,000 links costs thousands of round trips one after the other.
//! Reading a node's child addresses lets the driver prefetch the children in parallel.
//! This is only a hint: an address read wrongly costs a useless fetch, never a wrong byte
//! (libhdf5 still reads and checks every node itself). So the parser accepts a node only
//! when its layout leaves no doubt, and otherwise says nothing.
//!
//! Layout (HDF5 file format spec, "Version 1 B-trees"), with 8-byte addresses and lengths
//! (what h5py and netCDF-4 write; other sizes are simply not recognised):
//! `"TREE"`, node type (0 group, 1 raw-data chunks), level, entries used (u16), left and
//! right sibling addresses, then `key, child, key, child, ..., key`. A group node's key is
//! a local-heap offset (8 bytes); a chunk node's key is the chunk size (u32), filter mask
//! (u32) and one 8-byte offset per dimension of the dataset plus one for the element,
//! whose offset is 0 in a chunk's key (the node's last key, its right bound, holds the
//! element size there). The rank is not in the node: it is the one rank for which every
//! child's key ends in that 0 and every child address lies inside the file.

const SIGNATURE: &[u8; 4] = b"TREE";
const HEADER: usize = 24;
const ADDRESS: usize = 8;
const GROUP_NODES: u8 = 0;
const CHUNK_NODES: u8 = 1;
/// HDF5 datasets have at most 32 dimensions.
const MAX_RANK: usize = 32;

/// Addresses of the child nodes of the v1 B-tree node at the start of `bytes` (children
/// that are B-tree nodes or a group's symbol-table nodes; never raw data chunks), in a
/// file of `file_len` bytes; empty when `bytes` is not such a node beyond doubt.
pub fn child_nodes(bytes: &[u8], file_len: u64) -> Vec<u64> {
    if bytes.len() < HEADER || &bytes[..4] != SIGNATURE {
        return Vec::new();
    }
    let (node_type, level) = (bytes[4], bytes[5]);
    let entries = u16::from_le_bytes([bytes[6], bytes[7]]) as usize;
    let node = Node {
        bytes,
        entries,
        file_len,
    };
    match node_type {
        // A group's leaves point at symbol-table nodes, which listing reads next.
        GROUP_NODES => node.children(ADDRESS, |_| true).unwrap_or_default(),
        // A chunk index's leaves point at chunks: data, read later by its own path.
        CHUNK_NODES if level > 0 => {
            let mut fitting = (1..=MAX_RANK).filter_map(|rank| {
                let key = 8 + ADDRESS * (rank + 1);
                node.children(key, element_offset_is_zero)
            });
            match (fitting.next(), fitting.next()) {
                (Some(children), None) => children,
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

struct Node<'a> {
    bytes: &'a [u8],
    entries: usize,
    file_len: u64,
}

impl Node<'_> {
    /// The child addresses if the node read with keys of `key_len` bytes has every child's
    /// key `key_fits` and every child inside the file; `None` otherwise.
    fn children(&self, key_len: usize, key_fits: impl Fn(&[u8]) -> bool) -> Option<Vec<u64>> {
        let stride = key_len + ADDRESS;
        let end = HEADER + self.entries * stride + key_len;
        if self.entries == 0 || end > self.bytes.len() {
            return None;
        }
        let mut children = Vec::with_capacity(self.entries);
        // The key after the last child is the node's right bound, not a child's key.
        for i in 0..self.entries {
            let at = HEADER + i * stride;
            if !key_fits(&self.bytes[at..at + key_len]) {
                return None;
            }
            let child = read_u64(&self.bytes[at + key_len..]);
            if child == 0 || child >= self.file_len {
                return None;
            }
            children.push(child);
        }
        Some(children)
    }
}

/// A chunk key's last offset (the element dimension's) is 0.
fn element_offset_is_zero(key: &[u8]) -> bool {
    read_u64(&key[key.len() - ADDRESS..]) == 0
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_a_node_have_no_children() {
        assert!(child_nodes(b"", 100).is_empty());
        assert!(child_nodes(&[0u8; 64], 100).is_empty());
        let mut truncated = b"TREE".to_vec();
        truncated.extend_from_slice(&[1, 1, 5, 0]);
        truncated.resize(40, 0);
        assert!(child_nodes(&truncated, 1 << 20).is_empty());
    }

    proptest::proptest! {
        /// Whatever bytes follow the signature, the parser never panics and names only
        /// addresses inside the file.
        #[test]
        fn any_node_bytes_give_children_inside_the_file(
            node_type in 0u8..3,
            level in 0u8..3,
            entries in 0u16..80,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4000),
            file_len in 1u64..(1 << 40),
        ) {
            let mut node = b"TREE".to_vec();
            node.extend([node_type, level]);
            node.extend(entries.to_le_bytes());
            node.extend(body);
            let children = child_nodes(&node, file_len);
            proptest::prop_assert!(children.iter().all(|&c| c > 0 && c < file_len));
            proptest::prop_assert!(children.len() <= entries as usize);
        }
    }
}
