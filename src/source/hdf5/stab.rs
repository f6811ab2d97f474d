//! The links of an old-style group (a symbol table: a version 1 B-tree of symbol nodes
//! whose names lie in a local heap; what h5py writes by default), read ourselves: libhdf5's
//! iteration over a group of 100,000 links costs about as much as describing them all
//! ourselves (`plain.rs`). The walk is libhdf5's (`H5B_iterate`, `H5G__node_iterate`):
//! depth first, children in node order, symbols in node order, which is name order.
//!
//! Only hard links with UTF-8 names are taken (a symbol whose cache type is not 0 or 1 is a
//! soft link or unknown); any doubt about a node, heap or name gives None, and the caller
//! asks libhdf5 for the whole group. Layouts: HDF5 file format spec, "Symbol Table
//! Message", "Version 1 B-trees", "Group Symbol Table Nodes", "Local Heaps".

use super::ffi::Link;
use super::heap::{FileLayout, ReadAt};
use super::ohdr::HeaderV1;

/// The group's symbol table message; the messages of a new-style group.
const SYMBOL_TABLE: u16 = 0x11;
const LINK_INFO: u16 = 0x02;
const LINK: u16 = 0x06;
/// Nodes of one group's B-tree walked at most (a loop in a damaged file ends here).
const MAX_NODES: usize = 1 << 22;
/// Levels of a B-tree at most (libhdf5 would need more than 2^64 links for 64).
const MAX_LEVEL: u8 = 64;
/// Bytes of a local heap's data read at most.
const MAX_HEAP_BYTES: u64 = 256 << 20;

/// The group file's B-tree node sizes: `2 * internal` children per B-tree node and
/// `2 * leaf` symbols per symbol node (the superblock's "group internal/leaf node K").
#[derive(Debug, Clone, Copy)]
pub struct SymbolK {
    pub internal: u32,
    pub leaf: u32,
}

/// The links of the group whose object header is at `addr`, in libhdf5's order; None if it
/// is not an old-style group of hard links we read beyond doubt.
pub fn links(read_at: ReadAt, addr: u64, layout: FileLayout, k: SymbolK) -> Option<Vec<Link>> {
    let header = HeaderV1::read(read_at, addr, layout)?;
    let mut tables = header.messages.iter().filter(|m| m.kind == SYMBOL_TABLE);
    let (table, None) = (tables.next()?, tables.next()) else {
        return None;
    };
    if header
        .messages
        .iter()
        .any(|m| matches!(m.kind, LINK_INFO | LINK))
    {
        return None;
    }
    let a = layout.sizeof_addr;
    let table = header.data(table);
    let btree = le(table.get(..a)?);
    let heap = local_heap(read_at, le(table.get(a..2 * a)?), layout)?;
    let mut walk = Walk {
        read_at,
        layout,
        k,
        heap,
        nodes: 0,
        links: Vec::new(),
    };
    walk.tree(btree, None)?;
    Some(walk.links)
}

struct Walk<'a> {
    read_at: ReadAt<'a>,
    layout: FileLayout,
    k: SymbolK,
    /// The local heap's data segment: the names.
    heap: Vec<u8>,
    nodes: usize,
    links: Vec<Link>,
}

impl Walk<'_> {
    /// The B-tree node at `addr`, of level `level` if its parent says so.
    fn tree(&mut self, addr: u64, level: Option<u8>) -> Option<()> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return None;
        }
        let (a, s) = (self.layout.sizeof_addr, self.layout.sizeof_size);
        let two_k = 2 * self.k.internal as usize;
        let head = 8 + 2 * a;
        let node = self.read(addr, head + two_k * a + (two_k + 1) * s)?;
        // Signature, node type 0 (group), level, entries used.
        if &node[..4] != b"TREE" || node[4] != 0 || level.is_some_and(|l| l != node[5]) {
            return None;
        }
        let node_level = node[5];
        let used = usize::from(u16::from_le_bytes([node[6], node[7]]));
        if used > two_k || node_level > MAX_LEVEL {
            return None;
        }
        for i in 0..used {
            let at = head + s + i * (s + a);
            let child = le(&node[at..at + a]);
            match node_level {
                0 => self.symbols(child)?,
                _ => self.tree(child, Some(node_level - 1))?,
            }
        }
        Some(())
    }

    /// The symbol node at `addr`: one link per symbol.
    fn symbols(&mut self, addr: u64) -> Option<()> {
        let (a, s) = (self.layout.sizeof_addr, self.layout.sizeof_size);
        let entry = s + a + 24;
        let two_k = 2 * self.k.leaf as usize;
        let node = self.read(addr, 8 + two_k * entry)?;
        // Signature, version 1, reserved, number of symbols.
        if &node[..4] != b"SNOD" || node[4] != 1 {
            return None;
        }
        let count = usize::from(u16::from_le_bytes([node[6], node[7]]));
        if count > two_k {
            return None;
        }
        for i in 0..count {
            let at = 8 + i * entry;
            let name_at = le(&node[at..at + s]);
            let address = le(&node[at + s..at + s + a]);
            let cache = u32::from_le_bytes(node[at + s + a..at + s + a + 4].try_into().ok()?);
            if cache > 1 || undefined(address, a) {
                return None;
            }
            let name = self.name(name_at)?;
            self.links.push(Link {
                name,
                kind: hdf5::LinkType::Hard,
                address: Some(address),
            });
        }
        Some(())
    }

    /// The NUL-terminated UTF-8 name at offset `at` of the heap.
    fn name(&self, at: u64) -> Option<String> {
        let rest = self.heap.get(usize::try_from(at).ok()?..)?;
        // libhdf5 refuses an empty name.
        let end = rest.iter().position(|&b| b == 0).filter(|&end| end > 0)?;
        std::str::from_utf8(&rest[..end]).ok().map(str::to_string)
    }

    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        read(self.read_at, addr, self.layout, len)
    }
}

/// The data segment of the local heap at `addr`.
fn local_heap(read_at: ReadAt, addr: u64, layout: FileLayout) -> Option<Vec<u8>> {
    let (a, s) = (layout.sizeof_addr, layout.sizeof_size);
    let prefix = read(read_at, addr, layout, 8 + 2 * s + a)?;
    // Signature, version 0, 3 reserved bytes, data size, free list offset, data address.
    if &prefix[..4] != b"HEAP" || prefix[4] != 0 {
        return None;
    }
    let size = le(&prefix[8..8 + s]);
    let data_at = le(&prefix[8 + 2 * s..8 + 2 * s + a]);
    if size > MAX_HEAP_BYTES || undefined(data_at, a) {
        return None;
    }
    read(read_at, data_at, layout, size as usize)
}

/// `len` bytes at address `addr` (relative to the base).
fn read(read_at: ReadAt, addr: u64, layout: FileLayout, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    read_at(addr.checked_add(layout.base)?, &mut buf).ok()?;
    Some(buf)
}

/// Whether an address of `width` bytes is the undefined address (all bits set).
fn undefined(addr: u64, width: usize) -> bool {
    addr == u64::MAX || (width < 8 && addr == (1 << (8 * width)) - 1)
}

/// A little-endian unsigned integer of 1 to 8 bytes.
fn le(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |n, &b| (n << 8) | u64::from(b))
}
