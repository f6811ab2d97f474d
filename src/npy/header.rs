//! The `.npy` header, byte for byte as `numpy/lib/format.py` writes it.

use super::dtype::Dtype;
use super::pyrepr::tuple_repr;

use super::NPY_MAGIC as MAGIC;
const ARRAY_ALIGN: usize = 64;
/// numpy leaves room for the growth axis to reach this many digits (`GROWTH_AXIS_MAX_DIGITS`).
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// What a `.npy` header says: dtype, shape and memory order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NpyHeader {
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub fortran_order: bool,
}

impl NpyHeader {
    pub fn new(dtype: Dtype, shape: Vec<u64>) -> Self {
        NpyHeader {
            dtype,
            shape,
            fortran_order: false,
        }
    }

    /// Saturates instead of overflowing: a hostile shape such as `(2, 2**63)` of a zero-size
    /// dtype must not panic (sources refuse arrays whose byte size does not fit).
    pub fn element_count(&self) -> u64 {
        self.shape.iter().fold(1, |n, &dim| n.saturating_mul(dim))
    }

    /// Bytes of the data that follows the header (saturating, as [`Self::element_count`];
    /// any zero dimension or a zero-size dtype makes it 0).
    pub fn payload_len(&self) -> u64 {
        let itemsize = self.dtype.itemsize() as u64;
        self.shape
            .iter()
            .fold(itemsize, |n, &dim| n.saturating_mul(dim))
    }

    /// The dict literal numpy writes, before padding.
    fn dict_literal(&self) -> String {
        let order = if self.fortran_order { "True" } else { "False" };
        let mut dict = format!(
            "{{'descr': {}, 'fortran_order': {}, 'shape': {}, }}",
            self.dtype.descr(),
            order,
            tuple_repr(&self.shape)
        );
        let growth_axis = if self.fortran_order {
            self.shape.last()
        } else {
            self.shape.first()
        };
        if let Some(n) = growth_axis {
            let digits = n.to_string().len();
            dict.extend(std::iter::repeat_n(
                ' ',
                GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits),
            ));
        }
        dict
    }

    /// The full header: magic, version, length, dict, padding and `\n`. Version 1.0 unless
    /// the header is too long (2.0) or not latin-1 (3.0), as `_wrap_header_guess_version`.
    pub fn encode(&self) -> Vec<u8> {
        let dict = self.dict_literal();
        match latin1(&dict) {
            Some(bytes) => {
                wrap(&bytes, 1).unwrap_or_else(|| wrap(&bytes, 2).expect("header < 4 GiB"))
            }
            None => wrap(dict.as_bytes(), 3).expect("header < 4 GiB"),
        }
    }
}

fn latin1(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

/// `_wrap_header`: None when the length does not fit the version's length field.
fn wrap(dict: &[u8], major: u8) -> Option<Vec<u8>> {
    let len_size = if major == 1 { 2 } else { 4 };
    let prefix = MAGIC.len() + 2 + len_size;
    let hlen = dict.len() + 1;
    let padlen = ARRAY_ALIGN - (prefix + hlen) % ARRAY_ALIGN;
    let total = hlen + padlen;
    let mut out = Vec::with_capacity(prefix + total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[major, 0]);
    match major {
        1 => out.extend_from_slice(&u16::try_from(total).ok()?.to_le_bytes()),
        _ => out.extend_from_slice(&u32::try_from(total).ok()?.to_le_bytes()),
    }
    out.extend_from_slice(dict);
    out.extend(std::iter::repeat_n(b' ', padlen));
    out.push(b'\n');
    Some(out)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::{ByteOrder, Field};

    fn header(dtype: Dtype, shape: &[u64]) -> Vec<u8> {
        NpyHeader::new(dtype, shape.to_vec()).encode()
    }

    /// Byte-for-byte comparison with numpy lives in tests/npy_header.rs (numpy writes the
    /// expected headers in the test run); here only the framing rules.
    #[test]
    fn data_starts_at_a_multiple_of_64() {
        for shape in [vec![], vec![0], vec![3, 4], vec![u64::MAX / 2]] {
            let got = header(Dtype::plain('f', ByteOrder::Little, 8), &shape);
            assert_eq!(got.len() % 64, 0, "{shape:?}");
            assert_eq!(&got[..8], b"\x93NUMPY\x01\x00");
            assert_eq!(got.last(), Some(&b'\n'));
        }
    }

    /// Found by the `fuzz` proptest: the element count overflowed (a panic in debug builds).
    #[test]
    fn huge_shapes_of_empty_items_do_not_overflow() {
        let empty = NpyHeader::new(Dtype::plain('b', ByteOrder::Little, 0), vec![2, 1 << 63]);
        assert_eq!(empty.payload_len(), 0);
        assert_eq!(empty.element_count(), u64::MAX);
        let zero_dim = NpyHeader::new(
            Dtype::plain('f', ByteOrder::Little, 8),
            vec![1 << 40, 1 << 40, 0],
        );
        assert_eq!(zero_dim.payload_len(), 0);
    }

    #[test]
    fn non_latin1_field_names_need_version_3() {
        let dt = Dtype::Struct {
            fields: vec![Field {
                name: "\u{3b1}\u{3b2}".into(),
                offset: 0,
                dtype: Dtype::plain('i', ByteOrder::Little, 2),
                shape: vec![],
            }],
            itemsize: 2,
        };
        let got = header(dt, &[1]);
        assert_eq!(&got[6..8], &[3, 0]);
        assert_eq!(got.len() % 64, 0);
    }

    #[test]
    fn huge_headers_need_version_2() {
        let fields = (0..5000)
            .map(|i| Field {
                name: format!("field{i}"),
                offset: i,
                dtype: Dtype::plain('u', ByteOrder::Little, 1),
                shape: vec![],
            })
            .collect();
        let got = header(
            Dtype::Struct {
                fields,
                itemsize: 5000,
            },
            &[1],
        );
        assert_eq!(&got[6..8], &[2, 0]);
        let hlen = u32::from_le_bytes(got[8..12].try_into().unwrap()) as usize;
        assert_eq!(12 + hlen, got.len());
    }
}
