//! Per-node values kept small. A mount of a million datasets holds a million nodes, and most
//! of what they carry is alike (the `.npy` header of every scalar `int32`, the xattrs of every
//! dataset without attributes): such values are stored once per mount and shared. A node's
//! xattrs are one packed buffer rather than a vector of string pairs.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashSet;

use crate::npy::{NpyHeader, NpyLayout};
use crate::source::{Xattr, Xattrs};

/// A `.npy` file's header, both as dtype and shape (for the xattrs) and encoded (for reads).
#[derive(Debug)]
pub struct NpyArray {
    pub header: NpyHeader,
    pub layout: NpyLayout,
}

/// Extended attributes packed into one buffer: for each, the name's length, the name, the
/// value's length and the value (lengths as LEB128). None: no attributes at all.
#[derive(Clone, Debug, Default)]
pub struct PackedXattrs(Option<Arc<[u8]>>);

impl PackedXattrs {
    /// (name, value) pairs in the order they were packed.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        unpack(self.0.as_deref().unwrap_or_default())
    }
}

/// The (name, value) pairs of a buffer [`pack`] wrote.
fn unpack(packed: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = packed;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let name = take_field(&mut rest);
        let value = take_field(&mut rest);
        Some((name, value))
    })
}

fn pack(xattrs: &[Xattr]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in xattrs {
        put_field(&mut out, name.as_bytes());
        put_field(&mut out, value);
    }
    out
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = bytes.len() as u64;
    while len >= 0x80 {
        out.push(len as u8 | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(bytes);
}

/// The next field of a buffer [`pack`] wrote.
fn take_field<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let mut len = 0usize;
    let mut shift = 0;
    while let Some((&byte, tail)) = rest.split_first() {
        *rest = tail;
        len |= usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let (field, tail) = rest.split_at(len);
    *rest = tail;
    field
}

/// An interned array, found by its header (dtype, shape, order): equal headers encode
/// alike, and comparing them costs less than encoding one for every entry listed.
struct ByHeader(Arc<NpyArray>);

impl Borrow<NpyHeader> for ByHeader {
    fn borrow(&self) -> &NpyHeader {
        &self.0.header
    }
}

impl Hash for ByHeader {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.header.hash(state)
    }
}

impl PartialEq for ByHeader {
    fn eq(&self, other: &Self) -> bool {
        self.0.header == other.0.header
    }
}

impl Eq for ByHeader {}

/// The values shared by the nodes of one tree. Entries are never dropped: nodes are not
/// either. Every entry listed is looked up here, so the sets hash with Fx rather than
/// SipHash: the values come from the mounted file, but a crafted file that made them
/// collide would only slow its own listing down.
#[derive(Default)]
pub struct Interner {
    arrays: Mutex<Known<ByHeader>>,
    xattrs: Mutex<Known<Arc<[u8]>>>,
    /// The entry xattrs given last (kept, so their address is not reused) and their packing.
    last_entry_xattrs: Mutex<Option<(Xattrs, PackedXattrs)>>,
}

/// The values of one kind, and the one given last: the entries of a listing come in turn
/// and are mostly alike, and comparing with the last costs less than hashing (and, for
/// xattrs, packing) each.
struct Known<T> {
    all: FxHashSet<T>,
    last: Option<T>,
}

impl<T> Default for Known<T> {
    fn default() -> Self {
        Known {
            all: FxHashSet::default(),
            last: None,
        }
    }
}

impl Interner {
    /// The shared array whose header this is.
    pub fn array(&self, header: NpyHeader) -> Arc<NpyArray> {
        let mut arrays = self.arrays.lock().unwrap();
        if let Some(last) = arrays.last.as_ref().filter(|last| last.0.header == header) {
            return last.0.clone();
        }
        let array = match arrays.all.get(&header) {
            Some(known) => known.0.clone(),
            None => {
                let encoded = header.encode();
                let array = Arc::new(new_array(header, encoded));
                arrays.all.insert(ByHeader(array.clone()));
                array
            }
        };
        arrays.last = Some(ByHeader(array.clone()));
        array
    }

    /// An entry's `xattrs` packed, as [`Interner::xattrs`]; at once when they are the copy
    /// given last, as the entries of a listing mostly share one.
    pub fn entry_xattrs(&self, xattrs: &Xattrs) -> PackedXattrs {
        let mut last = self.last_entry_xattrs.lock().unwrap();
        if let Some((_, packed)) = last
            .as_ref()
            .filter(|(given, _)| Arc::ptr_eq(given, xattrs))
        {
            return packed.clone();
        }
        let packed = self.xattrs(xattrs);
        *last = Some((xattrs.clone(), packed.clone()));
        packed
    }

    /// `xattrs` packed, shared with every node that has the same.
    pub fn xattrs(&self, xattrs: &[Xattr]) -> PackedXattrs {
        if xattrs.is_empty() {
            return PackedXattrs(None);
        }
        let mut known = self.xattrs.lock().unwrap();
        if let Some(last) = known.last.as_ref().filter(|last| holds(last, xattrs)) {
            return PackedXattrs(Some(last.clone()));
        }
        let packed = pack(xattrs);
        let shared = match known.all.get(packed.as_slice()) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<[u8]> = packed.into();
                known.all.insert(shared.clone());
                shared
            }
        };
        known.last = Some(shared.clone());
        PackedXattrs(Some(shared))
    }
}

/// Whether `packed` is `xattrs` packed.
fn holds(packed: &Arc<[u8]>, xattrs: &[Xattr]) -> bool {
    let mut unpacked = unpack(packed);
    xattrs
        .iter()
        .all(|(name, value)| unpacked.next() == Some((name.as_bytes(), value.as_slice())))
        && unpacked.next().is_none()
}

fn new_array(header: NpyHeader, encoded: Vec<u8>) -> NpyArray {
    let layout = NpyLayout {
        payload_len: header.payload_len(),
        header: encoded.into(),
    };
    NpyArray { header, layout }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::{ByteOrder, Dtype};

    #[test]
    fn packed_xattrs_give_back_what_was_packed() {
        let long = vec![7u8; 300];
        let xattrs: Vec<Xattr> = vec![
            ("user.a".into(), b"1".to_vec()),
            ("user.empty".into(), Vec::new()),
            ("user.long".into(), long.clone()),
        ];
        let interner = Interner::default();
        let packed = interner.xattrs(&xattrs);
        let back: Vec<_> = packed.iter().collect();
        assert_eq!(
            back,
            [
                (&b"user.a"[..], &b"1"[..]),
                (b"user.empty", b""),
                (b"user.long", &long[..])
            ]
        );
        assert_eq!(interner.xattrs(&[]).iter().count(), 0);
    }

    #[test]
    fn values_asked_for_in_turn_are_each_given_as_they_are() {
        let interner = Interner::default();
        let a: Vec<Xattr> = vec![("user.a".into(), b"1".to_vec())];
        let mut longer = a.clone();
        longer.push(("user.b".into(), b"2".to_vec()));
        let other: Vec<Xattr> = vec![("user.a".into(), b"2".to_vec())];
        let renamed: Vec<Xattr> = vec![("user.c".into(), b"1".to_vec())];
        for xattrs in [&a, &a, &longer, &a, &other, &renamed, &longer, &longer] {
            let back: Vec<Xattr> = interner
                .xattrs(xattrs)
                .iter()
                .map(|(n, v)| (String::from_utf8(n.to_vec()).unwrap(), v.to_vec()))
                .collect();
            assert_eq!(&back, xattrs);
        }
        let header =
            |shape: Vec<u64>| NpyHeader::new(Dtype::plain('f', ByteOrder::Little, 8), shape);
        for shape in [vec![], vec![], vec![3], vec![], vec![3, 1], vec![3]] {
            assert_eq!(interner.array(header(shape.clone())).header.shape, shape);
        }
    }

    #[test]
    fn entry_xattrs_asked_for_in_turn_are_each_given_as_they_are() {
        let interner = Interner::default();
        let unpacked = |packed: PackedXattrs| -> Vec<Xattr> {
            packed
                .iter()
                .map(|(n, v)| (String::from_utf8(n.to_vec()).unwrap(), v.to_vec()))
                .collect()
        };
        let a: Xattrs = [("user.a".into(), b"1".to_vec())].into();
        let same_values: Xattrs = a.to_vec().into();
        let b: Xattrs = [("user.a".into(), b"2".to_vec())].into();
        for xattrs in [
            &a,
            &a,
            &b,
            &a,
            &same_values,
            &same_values,
            &b,
            &Xattrs::default(),
        ] {
            assert_eq!(unpacked(interner.entry_xattrs(xattrs)), xattrs.to_vec());
        }
    }

    #[test]
    fn equal_values_are_stored_once() {
        let interner = Interner::default();
        let xattrs: Vec<Xattr> = vec![("user.arrfs.chunks".into(), b"none".to_vec())];
        let (PackedXattrs(Some(a)), PackedXattrs(Some(b))) =
            (interner.xattrs(&xattrs), interner.xattrs(&xattrs.clone()))
        else {
            panic!("not packed");
        };
        assert!(Arc::ptr_eq(&a, &b));
        let header = || NpyHeader::new(Dtype::plain('i', ByteOrder::Little, 4), vec![]);
        let (x, y) = (interner.array(header()), interner.array(header()));
        assert!(Arc::ptr_eq(&x, &y));
        let other = interner.array(NpyHeader::new(x.header.dtype.clone(), vec![3]));
        assert!(!Arc::ptr_eq(&x, &other));
        assert_eq!(other.layout.payload_len, 12);
    }
}
