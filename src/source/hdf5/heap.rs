//! Checks of variable-length string references before libhdf5 follows them.
//!
//! Each stored variable-length string is a length and a global heap ID (collection address,
//! object index). libhdf5 trusts both: it allocates (and zeroes) a buffer of the stored
//! length before it reads the heap, so a damaged length of 1.8 GB costs 1.8 GB, and it walks
//! a collection's objects without checking that each one moves it forward, so a damaged
//! collection (an object of size 0) makes it spin forever. For contiguous datasets we read
//! the references and the collections they name ourselves (format spec, "Global Heap" and
//! "Variable-length Data") and refuse a string whose length is more than its heap object
//! holds, or a collection whose objects do not tile it. The references come from wherever
//! the caller found them: a contiguous dataset's bytes in the file, a chunked dataset's
//! decoded chunks, a compact dataset's or an attribute's bytes in its object header
//! (`ohdr.rs`).

use std::collections::HashMap;

use crate::error::Result;

/// Bytes of a collection header: "GCOL", version, 3 reserved, then the collection size.
const COLLECTION_HEAD: u64 = 8;
/// Collections larger than this are taken as damaged (libhdf5 writes 4 KiB to a few MiB).
const COLLECTION_MAX: u64 = 256 << 20;

/// Reads bytes of the file: `(offset, buf)`.
pub type ReadAt<'a> = &'a dyn Fn(u64, &mut [u8]) -> Result<()>;

/// Sizes from the superblock and the user block: how addresses in the file are written and
/// what to add to them to get file offsets.
#[derive(Clone, Copy, Debug)]
pub struct FileLayout {
    /// What to add to addresses to get file offsets (the user block).
    pub base: u64,
    pub sizeof_addr: usize,
    pub sizeof_size: usize,
}

/// Checks variable-length string references, remembering the collections checked so far.
pub struct VlenRefs {
    layout: FileLayout,
    /// Collection address -> object index -> object size, or why it is damaged.
    collections: HashMap<u64, std::result::Result<HashMap<u16, u64>, String>>,
}

impl VlenRefs {
    pub fn new(layout: FileLayout) -> VlenRefs {
        VlenRefs {
            layout,
            collections: HashMap::new(),
        }
    }

    /// Bytes of one stored reference: length (4), collection address, object index (4).
    pub fn ref_size(&self) -> usize {
        4 + self.layout.sizeof_addr + 4
    }

    /// Checks the references stored in `raw`, the first of them string number `first`.
    pub fn check(
        &mut self,
        read_at: ReadAt,
        raw: &[u8],
        first: u64,
    ) -> std::result::Result<(), String> {
        let size = self.ref_size();
        let sizeof_addr = self.layout.sizeof_addr;
        for (i, r) in raw.chunks_exact(size).enumerate() {
            let length = u64::from(u32::from_le_bytes(r[..4].try_into().unwrap()));
            let addr = le(&r[4..4 + sizeof_addr]);
            let index = u32::from_le_bytes(r[4 + sizeof_addr..].try_into().unwrap());
            if length == 0 {
                continue;
            }
            let string = first + i as u64;
            let objects = self.collection(read_at, addr)?;
            let held = u16::try_from(index).ok().and_then(|i| objects.get(&i));
            match held {
                Some(&held) if length <= held => {}
                Some(&held) => {
                    return Err(format!(
                        "string {string}: stored length {length} is more than its global heap \
                         object holds ({held} bytes): damaged"
                    ))
                }
                None => {
                    return Err(format!(
                        "string {string}: global heap object {index} at {addr} does not exist: \
                         damaged"
                    ))
                }
            }
        }
        Ok(())
    }

    /// The objects of the collection at `addr` (index -> size), read and checked once.
    fn collection(
        &mut self,
        read_at: ReadAt,
        addr: u64,
    ) -> std::result::Result<&HashMap<u16, u64>, String> {
        if !self.collections.contains_key(&addr) {
            let parsed = self.parse_collection(read_at, addr);
            self.collections.insert(addr, parsed);
        }
        match &self.collections[&addr] {
            Ok(objects) => Ok(objects),
            Err(why) => Err(format!("global heap collection at {addr}: {why}")),
        }
    }

    fn parse_collection(
        &self,
        read_at: ReadAt,
        addr: u64,
    ) -> std::result::Result<HashMap<u16, u64>, String> {
        let at = addr
            .checked_add(self.layout.base)
            .ok_or("address out of range")?;
        let mut head = vec![0u8; COLLECTION_HEAD as usize + self.layout.sizeof_size];
        read_at(at, &mut head).map_err(|e| format!("cannot be read ({e}): damaged address?"))?;
        if &head[..4] != b"GCOL" || head[4] != 1 {
            return Err("no collection signature (damaged)".into());
        }
        let size = le(&head[COLLECTION_HEAD as usize..]);
        if size < head.len() as u64 || size > COLLECTION_MAX {
            return Err(format!("collection size {size} (damaged)"));
        }
        let mut body = vec![0u8; size as usize];
        read_at(at, &mut body).map_err(|e| e.to_string())?;
        parse_objects(&body, head.len(), self.layout.sizeof_size)
    }
}

/// The objects of collection `body` (header included) from `start`: every object must move
/// the walk forward and end inside the collection, as libhdf5 assumes without checking.
fn parse_objects(
    body: &[u8],
    start: usize,
    sizeof_size: usize,
) -> std::result::Result<HashMap<u16, u64>, String> {
    let object_head = 8 + sizeof_size;
    let mut objects = HashMap::new();
    let mut p = start;
    // libhdf5 takes a tail too small for an object header as free space.
    while p + object_head <= body.len() {
        let index = u16::from_le_bytes([body[p], body[p + 1]]);
        let size = le(&body[p + 8..p + object_head]);
        let need = if index == 0 {
            // The free space: its size counts from the object's start.
            size
        } else {
            (object_head as u64)
                .checked_add(size.checked_add(7).ok_or("object size overflows")? & !7)
                .ok_or("object size overflows")?
        };
        let left = (body.len() - p) as u64;
        if need == 0 || need > left {
            return Err(format!(
                "object {index} of {size} bytes does not fit the collection (damaged)"
            ));
        }
        if index != 0 {
            objects.insert(index, size);
        }
        p += need as usize;
    }
    Ok(objects)
}

/// A little-endian unsigned integer of 1 to 8 bytes.
fn le(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |n, &b| (n << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(index: u16, data: &[u8]) -> Vec<u8> {
        let mut out = index.to_le_bytes().to_vec();
        out.extend([1, 0, 0, 0, 0, 0]);
        out.extend((data.len() as u64).to_le_bytes());
        out.extend(data);
        out.resize(out.len().next_multiple_of(8), 0);
        out
    }

    #[test]
    fn objects_tile_the_collection() {
        let mut body = vec![0u8; 16];
        body.extend(object(1, b"sweet"));
        body.extend(object(2, b"sorrow."));
        let objects = parse_objects(&body, 16, 8).unwrap();
        assert_eq!(objects[&1], 5);
        assert_eq!(objects[&2], 7);
    }

    #[test]
    fn a_free_space_object_of_size_zero_is_damage_not_a_loop() {
        let mut body = vec![0u8; 16];
        body.extend(object(1, b"sweet"));
        body.extend([0u8; 32]);
        let err = parse_objects(&body, 16, 8).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
    }

    #[test]
    fn an_object_past_the_end_is_damage() {
        let mut body = vec![0u8; 16];
        let mut huge = object(3, b"x");
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        body.extend(huge);
        assert!(parse_objects(&body, 16, 8).is_err());
    }
}
