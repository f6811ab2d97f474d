//! Plain datasets described from their object header alone, without libhdf5: listing a
//! group of 100,000 datasets through libhdf5 costs an open, a description and a close of
//! each (property lists, metadata cache), some 20 us; reading the header ourselves costs a
//! fraction of that.
//!
//! Only what we understand beyond doubt takes this path: a version 1 object header (no
//! checksum to verify) of one hard link, holding nothing but a dataspace (scalar or simple,
//! fixed size), a datatype (an integer of 1, 2, 4 or 8 bytes at full precision, or an IEEE
//! half, single or double float), a contiguous layout allocated within the file's end of
//! allocation, a fill value, modification times and null messages: no attributes, no
//! filters, no external storage, no shared messages. Such a dataset's `.npy` payload is its
//! stored bytes (read by `pread`, never by libhdf5), and its description is what libhdf5's
//! would be (`tests/hdf5_plain.rs` compares both on every dataset the tests write and on the
//! third-party corpus). Anything else gives None, and the caller asks libhdf5 as before.

use super::heap::{FileLayout, ReadAt};
use super::ohdr::{HeaderV1, Message};
use crate::npy::{ByteOrder, Dtype};

/// A dataset this module could describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainDataset {
    pub shape: Vec<u64>,
    pub dtype: Dtype,
    /// The file offset of its stored bytes (user block included), as `H5Dget_offset` gives.
    pub offset: u64,
}

/// What describing a header needs to know of its file.
#[derive(Debug, Clone, Copy)]
pub struct PlainFile {
    pub layout: FileLayout,
    /// The end of allocated space, relative to the base, as libhdf5 checks raw data
    /// against it when it opens a dataset.
    pub eoa: u64,
}

const NIL: u16 = 0x00;
const DATASPACE: u16 = 0x01;
const DATATYPE: u16 = 0x03;
const FILL_OLD: u16 = 0x04;
const FILL: u16 = 0x05;
const LAYOUT: u16 = 0x08;
const MTIME_OLD: u16 = 0x0E;
const MTIME: u16 = 0x12;
/// Message flag: the message is stored elsewhere (shared), not in this header.
const SHARED: u8 = 0x02;
/// The most dimensions libhdf5 accepts.
const MAX_RANK: usize = 32;

/// The dataset whose object header is at `addr`, if it is plain (module doc); None means
/// "ask libhdf5", never "not a dataset".
pub fn describe(read_at: ReadAt, addr: u64, file: PlainFile) -> Option<PlainDataset> {
    let header = HeaderV1::read(read_at, addr, file.layout)?;
    if header.refcount != 1 {
        return None;
    }
    let one = |kind: u16| -> Option<&Message> {
        let mut found = header.messages.iter().filter(|m| m.kind == kind);
        let first = found.next()?;
        found.next().is_none().then_some(first)
    };
    for m in &header.messages {
        let known = matches!(
            m.kind,
            NIL | DATASPACE | DATATYPE | FILL_OLD | FILL | LAYOUT | MTIME_OLD | MTIME
        );
        if !known || m.flags & SHARED != 0 {
            return None;
        }
    }
    let shape = dataspace(header.data(one(DATASPACE)?), file.layout.sizeof_size)?;
    let dtype = datatype(header.data(one(DATATYPE)?))?;
    let size = dtype.itemsize() as u64;
    for m in header
        .messages
        .iter()
        .filter(|m| matches!(m.kind, FILL | FILL_OLD))
    {
        fill_is_plain(m.kind, header.data(m), size)?;
    }
    let mut times = header
        .messages
        .iter()
        .filter(|m| matches!(m.kind, MTIME | MTIME_OLD));
    if !times.all(|m| mtime_is_plain(m.kind, header.data(m))) {
        return None;
    }
    let bytes = shape
        .iter()
        .try_fold(size, |n, &d| n.checked_mul(d))
        .filter(|&n| n > 0)?;
    let addr = contiguous_address(header.data(one(LAYOUT)?), file.layout, bytes)?;
    let end = addr.checked_add(bytes)?;
    if end > file.eoa {
        return None;
    }
    Some(PlainDataset {
        shape,
        dtype,
        offset: addr.checked_add(file.layout.base)?,
    })
}

/// The dims of a scalar or simple dataspace without unlimited or larger maximum dims.
fn dataspace(data: &[u8], sizeof_size: usize) -> Option<Vec<u64>> {
    let (version, rank, flags) = (*data.first()?, *data.get(1)? as usize, *data.get(2)?);
    let dims_at = match version {
        1 => 8,
        // Type: 0 scalar (rank 0), 1 simple; 2 is the null dataspace.
        2 if matches!((data.get(3)?, rank), (0, 0) | (1, 1..)) => 4,
        _ => return None,
    };
    // Bit 0: maximum dims follow; bit 1 (version 1): a permutation index follows.
    if rank > MAX_RANK || flags & !1 != 0 {
        return None;
    }
    let field = |i: usize| {
        let at = dims_at + i * sizeof_size;
        data.get(at..at + sizeof_size).map(le)
    };
    let dims: Vec<u64> = (0..rank).map(field).collect::<Option<_>>()?;
    if flags & 1 != 0 {
        let max: Vec<u64> = (rank..2 * rank).map(field).collect::<Option<_>>()?;
        if max != dims {
            return None;
        }
    }
    Some(dims)
}

/// The dtype of a full-precision integer of 1, 2, 4 or 8 bytes, or of an IEEE half, single
/// or double float, in either byte order.
fn datatype(data: &[u8]) -> Option<Dtype> {
    let (class, version) = (data.first()? & 0x0f, data.first()? >> 4);
    let bits = u32::from_le_bytes([*data.get(1)?, *data.get(2)?, *data.get(3)?, 0]);
    let size = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?) as usize;
    let prop = |at: usize, len: usize| data.get(8 + at..8 + at + len).map(le);
    if !(1..=3).contains(&version) || prop(0, 2)? != 0 || prop(2, 2)? != 8 * size as u64 {
        return None;
    }
    let order = if bits & 1 != 0 {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
    match class {
        // Fixed-point: bit 0 byte order, bits 1-2 padding, bit 3 signed.
        0 if matches!(size, 1 | 2 | 4 | 8) && bits >> 4 == 0 => {
            let kind = if bits & 8 != 0 { 'i' } else { 'u' };
            Some(Dtype::plain(kind, order, size))
        }
        // Floating-point: bit 6 with bit 0 is the byte order (VAX when set), bits 4-5 the
        // mantissa normalisation (2: implied), bits 8-15 the sign bit.
        1 => {
            let ieee = match size {
                2 => [15, 10, 5, 0, 10, 15],
                4 => [31, 23, 8, 0, 23, 127],
                8 => [63, 52, 11, 0, 52, 1023],
                _ => return None,
            };
            let fields = [
                u64::from(bits >> 8 & 0xff),
                prop(4, 1)?,
                prop(5, 1)?,
                prop(6, 1)?,
                prop(7, 1)?,
                prop(8, 4)?,
            ];
            let normalised = bits >> 4 & 3 == 2 && bits & 0x40 == 0 && bits >> 16 == 0;
            (normalised && fields == ieee).then(|| Dtype::plain('f', order, size))
        }
        _ => None,
    }
}

/// Whether a fill value message is one libhdf5 takes as it is: no value, or a value of the
/// dataset's element size that the message holds.
fn fill_is_plain(kind: u16, data: &[u8], size: u64) -> Option<()> {
    // Where the value's size is, if a value follows.
    let size_at = match (kind, *data.first()?) {
        (FILL_OLD, _) => Some(0),
        // Versions 1 and 2: allocation time, write time, whether a value is defined, then
        // the value's size (version 2: only if defined).
        (_, 1) => Some(4),
        (_, 2) if *data.get(3)? == 0 => None,
        (_, 2) => Some(4),
        // Version 3: flags; bit 4 says the value is undefined, bit 5 that one follows.
        (_, 3) => match *data.get(1)? >> 4 {
            0 | 1 => None,
            2 => Some(2),
            _ => return None,
        },
        _ => return None,
    };
    let Some(at) = size_at else {
        return Some(());
    };
    let stored = data.get(at..at + 4).map(le)?;
    let held = data.len() as u64 >= at as u64 + 4 + stored;
    (stored == 0 || (stored == size && held)).then_some(())
}

/// Whether a modification time message is one libhdf5 decodes: version 1 with its
/// seconds, or the old form of 14 digits (`YYYYMMDDhhmmss`).
fn mtime_is_plain(kind: u16, data: &[u8]) -> bool {
    match kind {
        MTIME => data.len() >= 8 && data[0] == 1,
        _ => data
            .get(..14)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit)),
    }
}

/// The address of a contiguous layout holding exactly `bytes`; None for any other layout.
fn contiguous_address(data: &[u8], layout: FileLayout, bytes: u64) -> Option<u64> {
    let (a, s) = (layout.sizeof_addr, layout.sizeof_size);
    let undefined = |v: u64| a < 8 && v == (1 << (8 * a)) - 1 || v == u64::MAX;
    let addr = match (*data.first()?, data.get(1..3)?) {
        // Versions 1 and 2: rank, class (1: contiguous), 5 reserved bytes, the address.
        (1 | 2, [_, 1]) => data.get(8..8 + a).map(le)?,
        // Versions 3 and 4: class (1: contiguous), the address, the size.
        (3 | 4, [1, _]) => {
            let stored = data.get(2 + a..2 + a + s).map(le)?;
            if stored != bytes {
                return None;
            }
            data.get(2..2 + a).map(le)?
        }
        _ => return None,
    };
    (!undefined(addr)).then_some(addr)
}

/// A little-endian unsigned integer of 1 to 8 bytes.
fn le(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |n, &b| (n << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_precision_integers_and_ieee_floats_only() {
        // <i4: class 0 version 1, signed; offset 0, precision 32.
        let i4 = [0x10, 0x08, 0, 0, 4, 0, 0, 0, 0, 0, 32, 0];
        assert_eq!(datatype(&i4), Some(Dtype::plain('i', ByteOrder::Little, 4)));
        let mut reduced = i4;
        reduced[10] = 31;
        assert_eq!(datatype(&reduced), None);
        // >f8: class 1 version 1, big-endian, implied mantissa, sign at bit 63.
        let mut f8 = vec![0x11, 0x21, 63, 0, 8, 0, 0, 0, 0, 0, 64, 0, 52, 11, 0, 52];
        f8.extend(1023u32.to_le_bytes());
        assert_eq!(datatype(&f8), Some(Dtype::plain('f', ByteOrder::Big, 8)));
        let mut bias = f8.clone();
        bias[16] = 0;
        assert_eq!(datatype(&bias), None);
    }

    #[test]
    fn unlimited_and_null_dataspaces_are_left_to_libhdf5() {
        // Version 1, rank 1, max dims given: 10, max 10.
        let mut fixed = vec![1, 1, 1, 0, 0, 0, 0, 0];
        fixed.extend(10u64.to_le_bytes());
        fixed.extend(10u64.to_le_bytes());
        assert_eq!(dataspace(&fixed, 8), Some(vec![10]));
        let mut unlimited = fixed.clone();
        unlimited[16..].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(dataspace(&unlimited, 8), None);
        assert_eq!(dataspace(&[2, 0, 0, 0], 8), Some(vec![]));
        assert_eq!(dataspace(&[2, 0, 0, 2], 8), None);
    }

    #[test]
    fn fill_values_and_times_libhdf5_would_refuse_are_left_to_it() {
        // Version 2, defined, 8 bytes: held, or cut short.
        let mut fill = vec![2, 2, 2, 1, 8, 0, 0, 0];
        assert_eq!(fill_is_plain(FILL, &fill, 8), None);
        fill.extend(1.5f64.to_le_bytes());
        assert_eq!(fill_is_plain(FILL, &fill, 8), Some(()));
        assert_eq!(fill_is_plain(FILL, &fill, 4), None);
        // Version 3: undefined; a value; both at once; reserved bits.
        assert_eq!(fill_is_plain(FILL, &[3, 0x10], 8), Some(()));
        assert_eq!(fill_is_plain(FILL, &[3, 0x20, 0, 0, 0, 0], 8), Some(()));
        assert_eq!(fill_is_plain(FILL, &[3, 0x30, 0, 0, 0, 0], 8), None);
        assert_eq!(fill_is_plain(FILL, &[3, 0x40], 8), None);
        assert!(mtime_is_plain(MTIME, &[1, 0, 0, 0, 9, 9, 9, 9]));
        assert!(!mtime_is_plain(MTIME, &[2, 0, 0, 0, 9, 9, 9, 9]));
        assert!(mtime_is_plain(MTIME_OLD, b"20261126233000\0\0"));
        assert!(!mtime_is_plain(MTIME_OLD, b"2026112623300x\0\0"));
    }
}
