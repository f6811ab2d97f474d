//! HDF5's scale-offset filter (6), hand-written after `H5Zscaleoffset.c` (a small transform).
//!
//! Client data (20 values): `[scale type, scale factor, elements in the chunk, class (0
//! integer, 1 float), size, sign, byte order, fill value defined, fill value...]`, the fill
//! value in native (little-endian) order, 4 bytes per value. A chunk starts with `minbits`
//! (u32 LE), the size of `minval` (1 byte) and `minval` (LE), then at byte 21 each value's
//! offset from the minimum in `minbits` bits, most significant first. An offset of all ones
//! stands for the fill value, when one is defined. Floats (decimal scaling, D) are stored
//! as integers `round((x - min) * 10^D)` and decoded as `i / 10^D + min` in their own width.

use super::{BitReader, CodecError};

const TOTAL_PARMS: usize = 20;
const HEADER: usize = 21;
const SCALE_FLOAT_DSCALE: u32 = 0;
const SCALE_FLOAT_ESCALE: u32 = 1;
const SCALE_INT: u32 = 2;
const CLASS_INTEGER: u32 = 0;
const CLASS_FLOAT: u32 = 1;
const ORDER_BE: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    scale_type: u32,
    scale_factor: i32,
    count: usize,
    class: u32,
    size: usize,
    signed: bool,
    big_endian: bool,
    /// The fill value's native bytes, when one is defined.
    fill: Option<[u8; 8]>,
}

impl Params {
    pub fn of(values: &[u32]) -> Result<Params, CodecError> {
        if values.len() != TOTAL_PARMS {
            let why = format!("{} parameters, not 20", values.len());
            return Err(CodecError::params("scaleoffset", why));
        }
        let mut fill = [0u8; 8];
        for (slot, v) in fill.chunks_exact_mut(4).zip(&values[8..10]) {
            slot.copy_from_slice(&v.to_le_bytes());
        }
        let p = Params {
            scale_type: values[0],
            scale_factor: values[1] as i32,
            count: values[2] as usize,
            class: values[3],
            size: values[4] as usize,
            signed: values[5] == 1,
            big_endian: values[6] == ORDER_BE,
            fill: (values[7] == 1).then_some(fill),
        };
        let known = match p.class {
            CLASS_INTEGER => p.scale_type == SCALE_INT && matches!(p.size, 1 | 2 | 4 | 8),
            CLASS_FLOAT => p.scale_type == SCALE_FLOAT_DSCALE && matches!(p.size, 4 | 8),
            _ => false,
        };
        if p.scale_type == SCALE_FLOAT_ESCALE {
            let why = "E-scaling is not supported (nor by HDF5)";
            return Err(CodecError::params("scaleoffset", why));
        }
        if !known {
            let why = format!(
                "class {} of {} bytes with scale type {}",
                p.class, p.size, p.scale_type
            );
            return Err(CodecError::params("scaleoffset", why));
        }
        Ok(p)
    }
}

pub fn decode(p: &Params, input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let bits = p.size as u32 * 8;
    if p.class == CLASS_INTEGER {
        let factor = p.scale_factor.max(0) as u32;
        if factor > bits {
            return Err(CodecError::malformed(
                "minimum number of bits exceeds the type's",
            ));
        }
        if factor == bits {
            // HDF5 leaves such chunks untouched.
            return if input.len() <= limit {
                Ok(input.to_vec())
            } else {
                Err(CodecError::StoredTooLarge)
            };
        }
    }
    let total =
        p.count
            .checked_mul(p.size)
            .filter(|&n| n <= limit)
            .ok_or(CodecError::TooManyElements {
                count: p.count,
                size: p.size,
            })?;
    let header = input.get(..HEADER).ok_or(CodecError::ShortHeader(HEADER))?;
    let minbits = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let minval_len = usize::from(header[4]).min(8);
    let mut minval = [0u8; 8];
    minval[..minval_len].copy_from_slice(&header[5..5 + minval_len]);
    let minval = u64::from_le_bytes(minval);
    if minbits > bits {
        return Err(CodecError::malformed(format!(
            "{minbits} bits per value in a {bits}-bit type"
        )));
    }
    let body = &input[HEADER..];
    let mut out = if minbits == bits {
        body.get(..total)
            .ok_or(CodecError::Truncated("truncated"))?
            .to_vec()
    } else {
        let mut out = vec![0u8; total];
        let mut reader = BitReader::new(body);
        for slot in out.chunks_exact_mut(p.size) {
            let offset = match minbits {
                0 => 0,
                n => reader.read(n).ok_or(CodecError::Truncated("truncated"))? as u64,
            };
            let value = restore(p, offset, minbits, minval);
            slot.copy_from_slice(&value.to_le_bytes()[..p.size]);
        }
        out
    };
    if p.big_endian {
        out.chunks_exact_mut(p.size).for_each(<[u8]>::reverse);
    }
    Ok(out)
}

/// The native bits of the value stored as `offset` (`minbits` < the type's width).
fn restore(p: &Params, offset: u64, minbits: u32, minval: u64) -> u64 {
    let fill_mark = (1u64 << minbits) - 1;
    let fill = p
        .fill
        .filter(|_| offset == fill_mark)
        .map(|f| u64::from_le_bytes(f) & width_mask(p.size));
    if let Some(fill) = fill {
        return fill;
    }
    match (p.class, p.size) {
        (CLASS_INTEGER, _) => offset.wrapping_add(minval) & width_mask(p.size),
        (_, 4) => {
            // C: (float)(int)x / powf(10.0f, (float)D) + min, in float arithmetic.
            let min = f32::from_bits(minval as u32);
            let x = offset as u32 as i32 as f32 / 10f32.powf(p.scale_factor as f32) + min;
            u64::from(x.to_bits())
        }
        _ => {
            let min = f64::from_bits(minval);
            let x = offset as i64 as f64 / 10f64.powf(f64::from(p.scale_factor)) + min;
            x.to_bits()
        }
    }
}

fn width_mask(size: usize) -> u64 {
    match size {
        8 => u64::MAX,
        n => (1u64 << (8 * n)) - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(class: u32, size: u32, order: u32, fill: Option<u32>) -> Params {
        let scale = if class == CLASS_INTEGER { SCALE_INT } else { 0 };
        let factor = if class == CLASS_INTEGER { 0 } else { 2 };
        let mut v = vec![
            scale,
            factor,
            4,
            class,
            size,
            1,
            order,
            u32::from(fill.is_some()),
        ];
        v.extend([fill.unwrap_or(0), 0]);
        v.resize(TOTAL_PARMS, 0);
        Params::of(&v).unwrap()
    }

    fn chunk(minbits: u32, minval: u64, offsets: &[u64]) -> Vec<u8> {
        let mut out = minbits.to_le_bytes().to_vec();
        out.push(8);
        out.extend_from_slice(&minval.to_le_bytes());
        out.resize(HEADER, 0);
        let mut bits = Vec::new();
        for v in offsets {
            bits.extend((0..minbits).rev().map(|b| (v >> b) & 1 == 1));
        }
        out.extend(bits.chunks(8).map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |a, (i, &b)| a | (u8::from(b) << (7 - i)))
        }));
        out
    }

    #[test]
    fn integers_add_the_minimum_and_map_the_fill_mark() {
        let p = params(CLASS_INTEGER, 4, 0, Some(99));
        let minval = (-5i64) as u64;
        let out = decode(&p, &chunk(3, minval, &[0, 3, 7, 6]), 16).unwrap();
        let got: Vec<i32> = out
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, [-5, -2, 99, 1]);
        let be = params(CLASS_INTEGER, 4, ORDER_BE, None);
        let out = decode(&be, &chunk(3, minval, &[0, 3, 7, 6]), 16).unwrap();
        assert_eq!(&out[8..12], &2i32.to_be_bytes());
    }

    #[test]
    fn floats_are_scaled_back() {
        let p = params(CLASS_FLOAT, 4, 0, None);
        let min = 1.5f32;
        let out = decode(
            &p,
            &chunk(8, u64::from(min.to_bits()), &[0, 25, 100, 3]),
            16,
        )
        .unwrap();
        let got: Vec<f32> = out
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, [1.5, 0.25 + 1.5, 1.0 + 1.5, 0.03 + 1.5]);
    }

    #[test]
    fn short_chunks_and_bad_headers_are_errors() {
        let p = params(CLASS_INTEGER, 2, 0, None);
        assert!(decode(&p, &chunk(9, 0, &[1, 2, 3, 4])[..22], 8).is_err());
        assert!(decode(&p, &chunk(17, 0, &[]), 8).is_err());
        assert!(decode(&p, &[0u8; 10], 8).is_err());
        assert!(decode(&p, &chunk(4, 0, &[1, 2, 3, 4]), 7).is_err());
    }
}
