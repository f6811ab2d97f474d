//! `-o widen=f32`: the float types numpy lacks (bfloat16, float8) served as `<f4`, value for
//! value as ml_dtypes' `array.astype(np.float32)` gives them, converted as they are read.
//! Every stored value is exactly representable in float32, so widening never rounds; NaNs
//! come out as ml_dtypes gives them (bfloat16 keeps its payload, float8 NaNs are quiet NaNs
//! of their sign). Hand-written: no well-kept crate decodes every ml_dtypes float8 variant
//! (the `fnuz` types and `e8m0` included) with those NaNs; each is a few lines of bits.

use super::{ByteOrder, Dtype, NpyHeader};
use crate::error::Result;

/// A stored float type numpy lacks, named as ml_dtypes names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Narrow {
    Bfloat16,
    /// 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, NaN is `S.1111.111`.
    Float8E4M3Fn,
    /// IEEE-like: 1 sign, 5 exponent (bias 15), 2 mantissa bits; infinities and NaNs.
    Float8E5M2,
    /// 4 exponent bits (bias 8), 3 mantissa bits; `0x80` is the only NaN, no -0, no inf.
    Float8E4M3Fnuz,
    /// 5 exponent bits (bias 16), 2 mantissa bits; `0x80` is the only NaN, no -0, no inf.
    Float8E5M2Fnuz,
    /// 8 exponent bits (bias 127), no sign, no mantissa: powers of two; `0xff` is NaN.
    Float8E8M0Fnu,
}

/// How the largest exponent and the sign bit are used.
#[derive(Clone, Copy)]
enum Specials {
    /// The largest exponent holds inf (mantissa 0) and NaN.
    Ieee,
    /// Only all ones (exponent and mantissa) is NaN: `fn` types.
    AllOnesNan,
    /// Only the negative zero pattern is NaN: `fnuz` types.
    NegativeZeroNan,
}

const WIDE: usize = 4;

impl Narrow {
    /// The type `user.arrfs.dtype_logical` names, if it is one this module widens.
    pub fn from_logical(name: &str) -> Option<Narrow> {
        Some(match name {
            "bfloat16" => Narrow::Bfloat16,
            "float8_e4m3fn" => Narrow::Float8E4M3Fn,
            "float8_e5m2" => Narrow::Float8E5M2,
            "float8_e4m3fnuz" => Narrow::Float8E4M3Fnuz,
            "float8_e5m2fnuz" => Narrow::Float8E5M2Fnuz,
            "float8_e8m0fnu" => Narrow::Float8E8M0Fnu,
            _ => return None,
        })
    }

    pub fn itemsize(self) -> usize {
        match self {
            Narrow::Bfloat16 => 2,
            _ => 1,
        }
    }

    /// The value of one stored little-endian element.
    pub fn to_f32(self, bytes: &[u8]) -> f32 {
        let byte = bytes[0];
        match self {
            // The top half of a float32, NaN payloads kept as ml_dtypes keeps them
            // (`half`'s conversion quiets signalling NaNs).
            Narrow::Bfloat16 => {
                f32::from_bits(u32::from(u16::from_le_bytes([byte, bytes[1]])) << 16)
            }
            Narrow::Float8E4M3Fn => float8(byte, 4, 3, 7, Specials::AllOnesNan),
            Narrow::Float8E5M2 => float8(byte, 5, 2, 15, Specials::Ieee),
            Narrow::Float8E4M3Fnuz => float8(byte, 4, 3, 8, Specials::NegativeZeroNan),
            Narrow::Float8E5M2Fnuz => float8(byte, 5, 2, 16, Specials::NegativeZeroNan),
            Narrow::Float8E8M0Fnu => match byte {
                0xff => f32::NAN,
                0 => f32::from_bits(1 << 22), // 2**-127, a float32 subnormal
                e => f32::from_bits(u32::from(e) << 23),
            },
        }
    }
}

/// One float8 value: `exp_bits` exponent bits with `bias`, `man_bits` mantissa bits.
fn float8(byte: u8, exp_bits: u32, man_bits: u32, bias: i32, specials: Specials) -> f32 {
    let negative = byte & 0x80 != 0;
    let exp_max = (1u8 << exp_bits) - 1;
    let man_max = (1u8 << man_bits) - 1;
    let exp = (byte >> man_bits) & exp_max;
    let man = byte & man_max;
    let nan = match specials {
        Specials::Ieee => exp == exp_max && man != 0,
        Specials::AllOnesNan => exp == exp_max && man == man_max,
        Specials::NegativeZeroNan => byte == 0x80,
    };
    let magnitude = if nan {
        f32::NAN
    } else if matches!(specials, Specials::Ieee) && exp == exp_max {
        f32::INFINITY
    } else if exp == 0 {
        // Subnormal: man * 2**(1 - bias - man_bits), exact in float32.
        f32::from(man) * pow2(1 - bias - man_bits as i32)
    } else {
        f32::from((1 << man_bits) | man) * pow2(i32::from(exp) - bias - man_bits as i32)
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// 2**k for the normal float32 exponents float8 values need.
fn pow2(k: i32) -> f32 {
    debug_assert!((-126..=127).contains(&k));
    f32::from_bits(((k + 127) as u32) << 23)
}

/// The `.npy` header of the widened array: `<f4`, same shape and order.
pub fn widened_header(header: &NpyHeader) -> NpyHeader {
    NpyHeader {
        dtype: Dtype::plain('f', ByteOrder::Little, WIDE),
        ..header.clone()
    }
}

/// Fills `buf` with widened payload bytes from `offset`: the stored elements under the range
/// are read with `read_stored(stored_offset, stored_buf)` and converted.
pub fn read_widened(
    narrow: Narrow,
    offset: u64,
    buf: &mut [u8],
    read_stored: impl FnOnce(u64, &mut [u8]) -> Result<()>,
) -> Result<()> {
    let wide = WIDE as u64;
    let first = offset / wide;
    let end = (offset + buf.len() as u64).div_ceil(wide);
    let mut stored = vec![0u8; ((end - first) * narrow.itemsize() as u64) as usize];
    read_stored(first * narrow.itemsize() as u64, &mut stored)?;
    let widened: Vec<u8> = stored
        .chunks_exact(narrow.itemsize())
        .flat_map(|element| narrow.to_f32(element).to_le_bytes())
        .collect();
    let skip = (offset - first * wide) as usize;
    buf.copy_from_slice(&widened[skip..skip + buf.len()]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        use Narrow::*;
        assert_eq!(Bfloat16.to_f32(&[0x80, 0x3f]), 1.0);
        assert_eq!(Float8E4M3Fn.to_f32(&[0x7e]), 448.0);
        assert!(Float8E4M3Fn.to_f32(&[0x7f]).is_nan());
        assert_eq!(Float8E4M3Fn.to_f32(&[0x01]), 2f32.powi(-9));
        assert_eq!(Float8E5M2.to_f32(&[0x7b]), 57344.0);
        assert_eq!(Float8E5M2.to_f32(&[0xfc]), f32::NEG_INFINITY);
        assert!(Float8E5M2.to_f32(&[0x7d]).is_nan());
        assert_eq!(Float8E4M3Fnuz.to_f32(&[0x7f]), 240.0);
        assert!(Float8E4M3Fnuz.to_f32(&[0x80]).is_nan());
        assert_eq!(Float8E5M2Fnuz.to_f32(&[0x7f]), 57344.0);
        assert_eq!(Float8E8M0Fnu.to_f32(&[127]), 1.0);
        assert_eq!(Float8E8M0Fnu.to_f32(&[0]), 2f32.powi(-127));
        assert!(Float8E8M0Fnu.to_f32(&[0xff]).is_nan());
    }

    #[test]
    fn unaligned_reads_convert_the_elements_under_them() {
        // bfloat16 1.0, 2.0, -3.0 stored; read bytes 2..9 of the widened payload.
        let stored = [0x80, 0x3f, 0x00, 0x40, 0x40, 0xc0];
        let mut buf = [0u8; 7];
        read_widened(Narrow::Bfloat16, 2, &mut buf, |at, out| {
            out.copy_from_slice(&stored[at as usize..at as usize + out.len()]);
            Ok(())
        })
        .unwrap();
        let wide: Vec<u8> = [1f32, 2.0, -3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(buf, wide[2..9]);
    }
}
