//! Where the bytes of a virtual `.npy` file come from: the one place that maps a virtual
//! offset to header bytes or to payload bytes, and payload bytes to element boxes.

use std::ops::Range;
use std::sync::Arc;

/// A virtual `.npy` file: a synthesised header followed by `payload_len` bytes of data.
#[derive(Clone, Debug)]
pub struct NpyLayout {
    pub header: Arc<[u8]>,
    pub payload_len: u64,
}

/// One part of a read: bytes of the header, or a byte range of the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Header(Range<usize>),
    Payload(Range<u64>),
}

impl NpyLayout {
    pub fn size(&self) -> u64 {
        self.header.len() as u64 + self.payload_len
    }

    /// Splits the read `[offset, offset + len)` (clamped to the file) into at most one header
    /// piece followed by at most one payload piece.
    pub fn pieces(&self, offset: u64, len: u64) -> Vec<Piece> {
        let hlen = self.header.len() as u64;
        let end = offset.saturating_add(len).min(self.size());
        let mut out = Vec::with_capacity(2);
        if offset < hlen && offset < end {
            out.push(Piece::Header(offset as usize..end.min(hlen) as usize));
        }
        let start = offset.max(hlen);
        if start < end {
            out.push(Piece::Payload(start - hlen..end - hlen));
        }
        out
    }
}

/// The elements that hold payload bytes `bytes`: `(first, end, skip)` where `skip` is the
/// offset of the first wanted byte inside element `first`.
pub fn element_span(bytes: &Range<u64>, itemsize: u64) -> (u64, u64, u64) {
    let first = bytes.start / itemsize;
    let end = bytes.end.div_ceil(itemsize);
    (first, end, bytes.start % itemsize)
}

/// Fills `buf` with payload bytes from `offset` of an array of `shape` and `itemsize`:
/// `fill_boxes` fills a buffer of the whole elements that hold those bytes with the boxes
/// that cover them, one box after the other. A read that starts or ends inside an element
/// goes through a scratch buffer; one of whole elements is filled in place.
pub fn read_elements<E>(
    shape: &[u64],
    itemsize: u64,
    offset: u64,
    buf: &mut [u8],
    fill_boxes: impl FnOnce(&[ElementBox], &mut [u8]) -> Result<(), E>,
) -> Result<(), E> {
    let bytes = offset..offset + buf.len() as u64;
    let (first, end, skip) = element_span(&bytes, itemsize);
    let whole = skip == 0 && (end - first) * itemsize == buf.len() as u64;
    let mut scratch = Vec::new();
    let out: &mut [u8] = if whole {
        buf
    } else {
        scratch.resize(((end - first) * itemsize) as usize, 0);
        &mut scratch
    };
    fill_boxes(&boxes_of_range(shape, first, end), out)?;
    if !whole {
        let skip = skip as usize;
        buf.copy_from_slice(&scratch[skip..skip + buf.len()]);
    }
    Ok(())
}

/// A hyperslab: `count[k]` elements from `start[k]` along each axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementBox {
    pub start: Vec<u64>,
    pub count: Vec<u64>,
}

impl ElementBox {
    pub fn len(&self) -> u64 {
        self.count.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn prefixed(mut self, index: u64) -> Self {
        self.start.insert(0, index);
        self.count.insert(0, 1);
        self
    }
}

/// Covers the C-order element range `[first, end)` of an array of `shape` with at most
/// `2 * ndim - 1` boxes, each a contiguous run of that order, in increasing order.
pub fn boxes_of_range(shape: &[u64], first: u64, end: u64) -> Vec<ElementBox> {
    if first >= end {
        return Vec::new();
    }
    let Some((&rows, inner_shape)) = shape.split_first() else {
        return vec![ElementBox {
            start: vec![],
            count: vec![],
        }];
    };
    if inner_shape.is_empty() {
        debug_assert!(end <= rows);
        return vec![ElementBox {
            start: vec![first],
            count: vec![end - first],
        }];
    }
    let row_len: u64 = inner_shape.iter().product();
    let (row0, rest0) = (first / row_len, first % row_len);
    let (row1, rest1) = (end / row_len, end % row_len);
    let part_of_row = |row: u64, from: u64, to: u64| {
        boxes_of_range(inner_shape, from, to)
            .into_iter()
            .map(move |b| b.prefixed(row))
    };
    if row0 == row1 {
        return part_of_row(row0, rest0, rest1).collect();
    }
    let mut out = Vec::new();
    let mut full_from = row0;
    if rest0 != 0 {
        out.extend(part_of_row(row0, rest0, row_len));
        full_from += 1;
    }
    if row1 > full_from {
        let mut start = vec![full_from];
        start.extend(std::iter::repeat_n(0, inner_shape.len()));
        let mut count = vec![row1 - full_from];
        count.extend_from_slice(inner_shape);
        out.push(ElementBox { start, count });
    }
    if rest1 != 0 {
        out.extend(part_of_row(row1, 0, rest1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The C-order flat indices of every element of `b`, in C order.
    fn flat_indices(shape: &[u64], b: &ElementBox) -> Vec<u64> {
        let mut out = Vec::new();
        let n = b.len();
        for mut i in 0..n {
            let mut flat = 0;
            let mut coords = vec![0; shape.len()];
            for k in (0..shape.len()).rev() {
                coords[k] = b.start[k] + i % b.count[k];
                i /= b.count[k];
            }
            for (dim, coord) in shape.iter().zip(&coords) {
                flat = flat * dim + coord;
            }
            out.push(flat);
        }
        out
    }

    fn shape_and_range() -> impl Strategy<Value = (Vec<u64>, u64, u64)> {
        prop::collection::vec(1u64..6, 0..5).prop_flat_map(|shape| {
            let n: u64 = shape.iter().product();
            (Just(shape), 0..=n, 0..=n).prop_map(|(s, a, b)| (s, a.min(b), a.max(b)))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::cases(256)))]

        #[test]
        fn boxes_cover_exactly_the_range((shape, first, end) in shape_and_range()) {
            let boxes = boxes_of_range(&shape, first, end);
            let covered: Vec<u64> = boxes.iter().flat_map(|b| flat_indices(&shape, b)).collect();
            let expected: Vec<u64> = (first..end).collect();
            prop_assert_eq!(covered, expected);
            prop_assert!(boxes.len() <= (2 * shape.len()).max(1));
            for b in &boxes {
                for ((dim, start), count) in shape.iter().zip(&b.start).zip(&b.count) {
                    prop_assert!(*count >= 1 && start + count <= *dim);
                }
            }
        }

        #[test]
        fn pieces_tile_the_file(hlen in 0usize..200, payload in 0u64..500, off in 0u64..800, len in 0u64..800) {
            let layout = NpyLayout { header: vec![7u8; hlen].into(), payload_len: payload };
            let mut pos = off;
            for piece in layout.pieces(off, len) {
                match piece {
                    Piece::Header(r) => { prop_assert_eq!(r.start as u64, pos); pos = r.end as u64; }
                    Piece::Payload(r) => { prop_assert_eq!(r.start + hlen as u64, pos); pos = r.end + hlen as u64; }
                }
            }
            let expected_end = if off >= layout.size() { off } else { (off + len).min(layout.size()) };
            prop_assert_eq!(pos, expected_end);
        }

        #[test]
        fn read_elements_gives_the_payload_bytes(
            (shape, first, end) in shape_and_range(),
            itemsize in 1u64..5,
            cut_front in 0u64..4,
            cut_back in 0u64..4,
        ) {
            // Element i's bytes are (i * itemsize + j) as u8: the payload is 0, 1, 2, ...
            let n: u64 = shape.iter().product();
            let start = (first * itemsize + cut_front).min(n * itemsize);
            let stop = (end * itemsize).saturating_sub(cut_back).max(start);
            let mut buf = vec![0xAAu8; (stop - start) as usize];
            read_elements(&shape, itemsize, start, &mut buf, |boxes, out| {
                let flat: Vec<u64> = boxes.iter().flat_map(|b| flat_indices(&shape, b)).collect();
                prop_assert_eq!(out.len() as u64, flat.len() as u64 * itemsize);
                for (i, cell) in flat.iter().zip(out.chunks_exact_mut(itemsize as usize)) {
                    for (j, byte) in cell.iter_mut().enumerate() {
                        *byte = (i * itemsize + j as u64) as u8;
                    }
                }
                Ok(())
            })?;
            let expected: Vec<u8> = (start..stop).map(|b| b as u8).collect();
            prop_assert_eq!(buf, expected);
        }

        #[test]
        fn element_span_holds_the_bytes(a in 0u64..1000, n in 1u64..1000, itemsize in 1u64..64) {
            let bytes = a..a + n;
            let (first, end, skip) = element_span(&bytes, itemsize);
            prop_assert!(first * itemsize <= bytes.start && end * itemsize >= bytes.end);
            prop_assert_eq!(first * itemsize + skip, bytes.start);
            prop_assert!((end - first) * itemsize < n + 2 * itemsize);
        }
    }
}
