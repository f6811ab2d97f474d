//! HDF5's n-bit filter (5), hand-written after `H5Znbit.c` (a small bit-unpacking
//! transform). The client data describe the datatype:
//!
//! `[nparms, need_not_compress, elements in the chunk, class, size, ...]` where an atomic
//! type (class 1) adds `[order, precision, offset]`, an array (2) `[size, base class, base
//! parameters...]`, a compound (3) `[size, members, (offset, class, parameters...)...]` and
//! any other type (4, stored as it is) its size. The packed stream holds, for each atomic
//! value, its `precision` significant bits, most significant first; other bytes whole.
//!
//! The output is the element in the file's own type (padding bits zero). A type whose
//! precision or offset is not the full width must still be converted (libhdf5 does that:
//! see `types.rs`), so this filter alone never decides the values.

use super::{BitReader, CodecError};

const ATOMIC: u32 = 1;
const ARRAY: u32 = 2;
const COMPOUND: u32 = 3;
const NOOPTYPE: u32 = 4;
const ORDER_LE: u32 = 0;

const TOO_SHORT: CodecError = CodecError::Truncated("packed data too short");

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    parms: Vec<u32>,
}

impl Params {
    pub fn of(values: &[u32]) -> Result<Params, CodecError> {
        if values.len() < 5 {
            return Err(CodecError::params("nbit", "fewer than 5 parameters"));
        }
        if values[0] as usize != values.len() {
            return Err(CodecError::params("nbit", "parameter count does not match"));
        }
        Ok(Params {
            parms: values.to_vec(),
        })
    }
}

pub fn decode(p: &Params, input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let parms = &p.parms;
    if parms[1] != 0 {
        // The type needs no packing: the chunk is stored as it is.
        return if input.len() <= limit {
            Ok(input.to_vec())
        } else {
            Err(CodecError::StoredTooLarge)
        };
    }
    let (count, size) = (parms[2] as usize, parms[4] as usize);
    if size == 0 {
        return Err(CodecError::malformed("datatype size 0"));
    }
    let total = count
        .checked_mul(size)
        .filter(|&n| n <= limit)
        .ok_or(CodecError::TooManyElements { count, size })?;
    let mut unpack = Unpack {
        out: vec![0u8; total],
        bits: BitReader::new(input),
        parms,
    };
    for i in 0..count {
        let at = i * size;
        match parms[3] {
            ATOMIC => {
                let atomic = unpack.atomic_parms(4, size)?;
                unpack.atomic(at, &atomic)?;
            }
            ARRAY => unpack.array(at, &mut 4)?,
            COMPOUND => unpack.compound(at, &mut 4)?,
            other => return Err(CodecError::UnknownClass(other)),
        }
    }
    Ok(unpack.out)
}

struct Atomic {
    size: usize,
    order: u32,
    precision: u32,
    offset: u32,
}

struct Unpack<'a> {
    out: Vec<u8>,
    bits: BitReader<'a>,
    parms: &'a [u32],
}

impl Unpack<'_> {
    /// `n` parameters from `at`, or an error if the list stops short.
    fn take(&self, at: usize, n: usize) -> Result<&[u32], CodecError> {
        self.parms.get(at..at + n).ok_or_else(|| {
            CodecError::malformed("parameter list is shorter than the datatype it describes")
        })
    }

    /// An atomic type's `[order, precision, offset]` at `at` (its size already read).
    fn atomic_parms(&self, at: usize, size: usize) -> Result<Atomic, CodecError> {
        let v = self.take(at + 1, 3)?;
        let a = Atomic {
            size,
            order: v[0],
            precision: v[1],
            offset: v[2],
        };
        let bits = size as u64 * 8;
        if u64::from(a.precision) > bits || u64::from(a.precision) + u64::from(a.offset) > bits {
            return Err(CodecError::malformed("invalid datatype precision/offset"));
        }
        if size > 16 {
            return Err(CodecError::Unsupported(format!("{size}-byte atomic type")));
        }
        Ok(a)
    }

    fn slot(&mut self, at: usize, len: usize) -> Result<&mut [u8], CodecError> {
        self.out
            .get_mut(at..at.saturating_add(len))
            .ok_or_else(|| CodecError::malformed("datatype larger than its element"))
    }

    fn atomic(&mut self, at: usize, a: &Atomic) -> Result<(), CodecError> {
        let value = self.bits.read(a.precision).ok_or(TOO_SHORT)? << a.offset;
        let bytes = value.to_le_bytes();
        let slot = self.slot(at, a.size)?;
        slot.copy_from_slice(&bytes[..a.size]);
        if a.order != ORDER_LE {
            slot.reverse();
        }
        Ok(())
    }

    fn nooptype(&mut self, at: usize, size: usize) -> Result<(), CodecError> {
        for i in 0..size {
            let byte = self.bits.read(8).ok_or(TOO_SHORT)? as u8;
            self.slot(at + i, 1)?[0] = byte;
        }
        Ok(())
    }

    /// An array type whose parameters start at `*index` (`H5Z__nbit_decompress_one_array`,
    /// including where it leaves the index).
    fn array(&mut self, at: usize, index: &mut usize) -> Result<(), CodecError> {
        let v = self.take(*index, 2)?;
        let (total, base_class) = (v[0] as usize, v[1]);
        *index += 2;
        match base_class {
            ATOMIC => {
                let size = self.take(*index, 1)?[0] as usize;
                let a = self.atomic_parms(*index, size)?;
                *index += 4;
                for i in 0..total
                    .checked_div(size)
                    .ok_or_else(|| CodecError::malformed("base size 0"))?
                {
                    self.atomic(at + i * size, &a)?;
                }
            }
            ARRAY | COMPOUND => {
                let base = self.take(*index, 1)?[0] as usize;
                let begin = *index;
                for i in 0..total
                    .checked_div(base)
                    .ok_or_else(|| CodecError::malformed("base size 0"))?
                {
                    match base_class {
                        ARRAY => self.array(at + i * base, index)?,
                        _ => self.compound(at + i * base, index)?,
                    }
                    *index = begin;
                }
            }
            NOOPTYPE => {
                self.take(*index, 1)?;
                *index += 1;
                self.nooptype(at, total)?;
            }
            other => return Err(CodecError::UnknownClass(other)),
        }
        Ok(())
    }

    /// A compound type whose parameters start at `*index`.
    fn compound(&mut self, at: usize, index: &mut usize) -> Result<(), CodecError> {
        let v = self.take(*index, 2)?;
        let (size, members) = (v[0] as usize, v[1]);
        *index += 2;
        let mut used = 0usize;
        for _ in 0..members {
            let v = self.take(*index, 3)?;
            let (offset, class, member_size) = (v[0] as usize, v[1], v[2] as usize);
            *index += 2;
            let before = used;
            used += member_size;
            if used > size || used <= before || offset + member_size > size {
                return Err(CodecError::malformed(
                    "compound member outside its compound",
                ));
            }
            match class {
                ATOMIC => {
                    let a = self.atomic_parms(*index, member_size)?;
                    *index += 4;
                    self.atomic(at + offset, &a)?;
                }
                ARRAY => self.array(at + offset, index)?,
                COMPOUND => self.compound(at + offset, index)?,
                NOOPTYPE => {
                    *index += 1;
                    self.nooptype(at + offset, member_size)?;
                }
                other => return Err(CodecError::UnknownClass(other)),
            }
        }
        Ok(())
    }
}

/// An integer type whose `precision` significant bits start at bit `offset` of its `size`
/// bytes (an n-bit type): the n-bit filter restores these bits, and widening them to the
/// plain integer of the same size, sign and order gives what libhdf5's conversion (and so
/// h5py) gives: the bits shifted down, sign-extended when signed, padding dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReducedInt {
    pub size: usize,
    pub precision: u32,
    pub offset: u32,
    pub signed: bool,
    pub big_endian: bool,
}

impl ReducedInt {
    /// Widens every element of `data` in place (elements of `size` <= 16 bytes).
    pub fn widen(&self, data: &mut [u8]) {
        let bits = (self.size * 8) as u32;
        if self.size == 0
            || self.size > 16
            || self.precision == 0
            || self.precision + self.offset > bits
        {
            return;
        }
        let mask = u128::MAX >> (128 - self.precision);
        for element in data.chunks_exact_mut(self.size) {
            let mut bytes = [0u8; 16];
            bytes[..self.size].copy_from_slice(element);
            if self.big_endian {
                bytes[..self.size].reverse();
            }
            let mut value = (u128::from_le_bytes(bytes) >> self.offset) & mask;
            if self.signed && value >> (self.precision - 1) & 1 == 1 {
                value |= !mask;
            }
            element.copy_from_slice(&value.to_le_bytes()[..self.size]);
            if self.big_endian {
                element.reverse();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs `values` (each `precision` bits) most significant bit first.
    fn pack(values: &[u64], precision: u32) -> Vec<u8> {
        let mut bits = Vec::new();
        for v in values {
            for b in (0..precision).rev() {
                bits.push((v >> b) & 1 == 1);
            }
        }
        bits.chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << (7 - i)))
            })
            .collect()
    }

    #[test]
    fn atomic_values_land_at_their_offset_in_either_order() {
        let values = [0x0fffu64, 0x123, 0, 0x800];
        let stored = pack(&values, 12);
        for (order, expect) in [(0u32, 0x0123u16 << 4), (1, 0x0123 << 4)] {
            let p = Params::of(&[8, 0, 4, ATOMIC, 2, order, 12, 4]).unwrap();
            let out = decode(&p, &stored, 8).unwrap();
            let second = match order {
                0 => u16::from_le_bytes([out[2], out[3]]),
                _ => u16::from_be_bytes([out[2], out[3]]),
            };
            assert_eq!(second, expect);
        }
    }

    #[test]
    fn short_input_and_bad_parameters_are_errors() {
        let p = Params::of(&[8, 0, 4, ATOMIC, 2, 0, 12, 4]).unwrap();
        assert!(decode(&p, &[0xff; 5], 8).is_err());
        assert!(decode(&p, &[0xff; 6], 7).is_err());
        let wide = Params::of(&[8, 0, 4, ATOMIC, 2, 0, 14, 4]).unwrap();
        assert!(decode(&wide, &[0xff; 8], 8).is_err());
        assert!(Params::of(&[9, 0, 4, ATOMIC, 2, 0, 12, 4]).is_err());
    }

    #[test]
    fn reduced_integers_widen_with_their_sign() {
        let int = ReducedInt {
            size: 2,
            precision: 12,
            offset: 2,
            signed: true,
            big_endian: true,
        };
        let mut data = [
            ((-5i16 as u16 & 0xfff) << 2).to_be_bytes(),
            (7u16 << 2 | 3).to_be_bytes(),
        ]
        .concat();
        int.widen(&mut data);
        assert_eq!(data, [(-5i16).to_be_bytes(), 7i16.to_be_bytes()].concat());
    }

    #[test]
    fn compound_members_and_no_op_bytes() {
        // {a: u16 with 10 bits at offset 0; b: 1 opaque byte} of size 3, 2 elements.
        let parms = [
            14, 0, 2, COMPOUND, 3, 2, 0, ATOMIC, 2, 0, 10, 0, 2, NOOPTYPE,
        ];
        let mut parms = parms.to_vec();
        parms.push(1);
        parms[0] = parms.len() as u32;
        let p = Params::of(&parms).unwrap();
        let mut bits = Vec::new();
        for (a, b) in [(0x3ffu64, 0xabu64), (5, 0x01)] {
            bits.extend((0..10).rev().map(|i| (a >> i) & 1 == 1));
            bits.extend((0..8).rev().map(|i| (b >> i) & 1 == 1));
        }
        let stored: Vec<u8> = bits
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << (7 - i)))
            })
            .collect();
        let out = decode(&p, &stored, 6).unwrap();
        assert_eq!(out, [0xff, 0x03, 0xab, 0x05, 0x00, 0x01]);
    }
}
