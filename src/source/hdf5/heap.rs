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

use super::filters::FilterError;
use crate::error::{Error, Result};

/// Bytes of a collection header: "GCOL", version, 3 reserved, then the collection size.
const COLLECTION_HEAD: u64 = 8;
/// Collections larger than this are taken as damaged (libhdf5 writes 4 KiB to a few MiB).
const COLLECTION_MAX: u64 = 256 << 20;

/// Reads bytes of the file: `(offset, buf)`.
pub type ReadAt<'a> = &'a dyn Fn(u64, &mut [u8]) -> Result<()>;

/// Why the strings of a dataset are refused (its references or heap are damaged), or could
/// not be checked.
#[derive(Debug, thiserror::Error)]
pub enum HeapError {
    /// Reading the references failed.
    #[error("{0}")]
    Read(Error),
    #[error(
        "string {string}: stored length {length} is more than its global heap object holds \
         ({held} bytes): damaged"
    )]
    LongerThanObject { string: u64, length: u64, held: u64 },
    #[error("string {string}: global heap object {index} at {addr} does not exist: damaged")]
    NoObject { string: u64, index: u32, addr: u64 },
    #[error("global heap collection at {addr}: {damage}")]
    Collection { addr: u64, damage: Damage },
    #[error("compact data shorter than its elements: damaged")]
    CompactTooShort,
    #[error("value shorter than its strings: damaged")]
    ValueTooShort,
    #[error("chunk dims do not match the dataspace: damaged")]
    ChunkDimsMismatch,
    #[error("chunks of {bytes} bytes of string references, over arrfs's bound of {bound}")]
    ChunksOverBound { bytes: usize, bound: usize },
    #[error("chunk table over arrfs's bound of {0} bytes")]
    TableOverBound(usize),
    /// libhdf5 failed a query (the chunk index, the creation property list).
    #[error("chunk index cannot be read: {0}")]
    Library(hdf5::Error),
    #[error("stored size {0} (damaged)")]
    ChunkSize(u64),
    #[error("{0}")]
    Decode(FilterError),
    /// What went wrong in one chunk of references.
    #[error("chunk {chunk}: {inner}")]
    InChunk { chunk: u64, inner: Box<HeapError> },
}

impl HeapError {
    pub fn in_chunk(chunk: u64, inner: HeapError) -> HeapError {
        HeapError::InChunk {
            chunk,
            inner: Box::new(inner),
        }
    }

    /// The error at the bottom of chunk wrappers.
    pub fn innermost(&self) -> &HeapError {
        match self {
            HeapError::InChunk { inner, .. } => inner.innermost(),
            other => other,
        }
    }
}

/// What is wrong with one global heap collection. Kept per collection (each is read once),
/// so a failed read keeps its message only.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Damage {
    #[error("address out of range")]
    AddressOutOfRange,
    #[error("cannot be read ({0}): damaged address?")]
    HeadUnreadable(String),
    #[error("no collection signature (damaged)")]
    NoSignature,
    #[error("collection size {0} (damaged)")]
    Size(u64),
    #[error("{0}")]
    BodyUnreadable(String),
    #[error("object size overflows")]
    ObjectSizeOverflows,
    #[error("object {index} of {size} bytes does not fit the collection (damaged)")]
    ObjectPastEnd { index: u16, size: u64 },
}

/// Why a collection was not had: damage (remembered for the collection), or a read that
/// failed in a way that may pass (a resource shortage, a store that did not answer): not
/// remembered.
enum CollectionError {
    Damaged(Damage),
    Unread(Error),
}

impl From<Damage> for CollectionError {
    fn from(damage: Damage) -> Self {
        CollectionError::Damaged(damage)
    }
}

impl CollectionError {
    fn of_read(e: Error, damage: fn(String) -> Damage) -> CollectionError {
        if e.passes() {
            return CollectionError::Unread(e);
        }
        CollectionError::Damaged(damage(e.to_string()))
    }
}

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
    collections: HashMap<u64, std::result::Result<HashMap<u16, u64>, Damage>>,
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
    ) -> std::result::Result<(), HeapError> {
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
                    return Err(HeapError::LongerThanObject {
                        string,
                        length,
                        held,
                    })
                }
                None => {
                    return Err(HeapError::NoObject {
                        string,
                        index,
                        addr,
                    })
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
    ) -> std::result::Result<&HashMap<u16, u64>, HeapError> {
        if !self.collections.contains_key(&addr) {
            let parsed = match self.parse_collection(read_at, addr) {
                Err(CollectionError::Unread(e)) => return Err(HeapError::Read(e)),
                Err(CollectionError::Damaged(damage)) => Err(damage),
                Ok(objects) => Ok(objects),
            };
            self.collections.insert(addr, parsed);
        }
        match &self.collections[&addr] {
            Ok(objects) => Ok(objects),
            Err(damage) => Err(HeapError::Collection {
                addr,
                damage: damage.clone(),
            }),
        }
    }

    fn parse_collection(
        &self,
        read_at: ReadAt,
        addr: u64,
    ) -> std::result::Result<HashMap<u16, u64>, CollectionError> {
        let at = addr
            .checked_add(self.layout.base)
            .ok_or(Damage::AddressOutOfRange)?;
        let mut head = vec![0u8; COLLECTION_HEAD as usize + self.layout.sizeof_size];
        read_at(at, &mut head).map_err(|e| CollectionError::of_read(e, Damage::HeadUnreadable))?;
        if &head[..4] != b"GCOL" || head[4] != 1 {
            return Err(Damage::NoSignature.into());
        }
        let size = le(&head[COLLECTION_HEAD as usize..]);
        if size < head.len() as u64 || size > COLLECTION_MAX {
            return Err(Damage::Size(size).into());
        }
        let mut body = vec![0u8; size as usize];
        read_at(at, &mut body).map_err(|e| CollectionError::of_read(e, Damage::BodyUnreadable))?;
        Ok(parse_objects(&body, head.len(), self.layout.sizeof_size)?)
    }
}

/// The objects of collection `body` (header included) from `start`: every object must move
/// the walk forward and end inside the collection, as libhdf5 assumes without checking.
fn parse_objects(
    body: &[u8],
    start: usize,
    sizeof_size: usize,
) -> std::result::Result<HashMap<u16, u64>, Damage> {
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
                .checked_add(size.checked_add(7).ok_or(Damage::ObjectSizeOverflows)? & !7)
                .ok_or(Damage::ObjectSizeOverflows)?
        };
        let left = (body.len() - p) as u64;
        if need == 0 || need > left {
            return Err(Damage::ObjectPastEnd { index, size });
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
        assert!(
            matches!(err, Damage::ObjectPastEnd { index: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("does not fit"), "{err}");
    }

    #[test]
    fn an_object_past_the_end_is_damage() {
        let mut body = vec![0u8; 16];
        let mut huge = object(3, b"x");
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        body.extend(huge);
        assert!(parse_objects(&body, 16, 8).is_err());
    }

    #[test]
    fn a_collection_unread_for_want_of_a_resource_is_not_remembered_as_damage() {
        // One reference (length 5, collection at 64, object 1), then the collection.
        let mut file = vec![0u8; 64];
        file[..4].copy_from_slice(&5u32.to_le_bytes());
        file[4..12].copy_from_slice(&64u64.to_le_bytes());
        file[12..16].copy_from_slice(&1u32.to_le_bytes());
        file.extend(b"GCOL\x01\0\0\0");
        file.extend(40u64.to_le_bytes());
        file.extend(object(1, b"sweet"));
        let out_of_fds = std::cell::Cell::new(true);
        let read_at = |at: u64, buf: &mut [u8]| {
            if at >= 64 && out_of_fds.replace(false) {
                let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
                return Err(Error::io("f.h5", emfile));
            }
            buf.copy_from_slice(&file[at as usize..at as usize + buf.len()]);
            Ok(())
        };
        let layout = FileLayout {
            base: 0,
            sizeof_addr: 8,
            sizeof_size: 8,
        };
        let mut refs = VlenRefs::new(layout);
        let stored = &file[..16];
        let err =
            super::super::error::Hdf5Error::from(refs.check(&read_at, stored, 0).unwrap_err());
        assert!(
            matches!(
                err,
                super::super::error::Hdf5Error::Resource {
                    errno: libc::EMFILE,
                    ..
                }
            ),
            "{err}"
        );
        refs.check(&read_at, stored, 0)
            .expect("the same check passes once descriptors are back");
    }
}
