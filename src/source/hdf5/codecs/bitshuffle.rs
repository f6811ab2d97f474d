//! The bitshuffle filter (32008): blocks of elements whose bits were transposed, each block
//! optionally lz4- or zstd-compressed. Hand-written (a bit transpose and a block walk): the
//! C library has no maintained Rust crate, and the transform is small.
//!
//! Framing (bitshuffle's `bshuf_h5filter.c`): client data `[version, version, elem_size,
//! block_size, compression, level]`. Compressed chunks start with the decoded size (u64,
//! big-endian) and the block size in bytes (u32), then each block as its stored size (u32)
//! and the compressed bytes. The last `n % 8` elements are stored as they are.

use super::{be_u32, be_u64, declared, CodecError};

const COMPRESS_LZ4: u32 = 2;
const COMPRESS_ZSTD: u32 = 3;
/// Bitshuffle's default block: about 8 KiB, a multiple of 8 elements, at least 128.
const TARGET_BLOCK_BYTES: usize = 8192;
const MIN_BLOCK: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    elem_size: usize,
    /// Elements per block; 0: bitshuffle's default for the element size.
    block_size: usize,
    compression: u32,
}

impl Params {
    pub fn of(values: &[u32]) -> Result<Params, CodecError> {
        let elem_size = *values
            .get(2)
            .ok_or_else(|| CodecError::params("bitshuffle", "no element size"))?
            as usize;
        if elem_size == 0 {
            return Err(CodecError::params("bitshuffle", "element size 0"));
        }
        Ok(Params {
            elem_size,
            block_size: values.get(3).map_or(0, |&v| v as usize),
            compression: values.get(4).copied().unwrap_or(0),
        })
    }

    fn default_block(&self) -> usize {
        (TARGET_BLOCK_BYTES / self.elem_size / 8 * 8).max(MIN_BLOCK)
    }
}

pub fn decode(p: &Params, input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let compressed = matches!(p.compression, COMPRESS_LZ4 | COMPRESS_ZSTD);
    let (total, block, body) = if compressed {
        let (Some(total), Some(block_bytes)) = (be_u64(input, 0), be_u32(input, 8)) else {
            return Err(CodecError::ShortHeader(12));
        };
        let block = block_bytes as usize / p.elem_size;
        (declared(total, limit)?, block, &input[12..])
    } else if p.compression == 0 {
        let block = match p.block_size {
            0 => p.default_block(),
            n => n,
        };
        (declared(input.len() as u64, limit)?, block, input)
    } else {
        return Err(CodecError::Unsupported(format!(
            "unknown inner compression {}",
            p.compression
        )));
    };
    if total % p.elem_size != 0 {
        return Err(CodecError::malformed(format!(
            "{total} bytes is no whole number of {}-byte elements",
            p.elem_size
        )));
    }
    if block == 0 || block % 8 != 0 {
        return Err(CodecError::malformed(format!(
            "block of {block} elements is no multiple of 8"
        )));
    }
    let mut blocks = Blocks {
        p,
        compression: if compressed { p.compression } else { 0 },
        input: body,
        at: 0,
        scratch: Vec::new(),
    };
    let n = total / p.elem_size;
    let mut out = vec![0u8; total];
    let mut first = 0;
    while first < n {
        let size = (n - first).min(block) / 8 * 8;
        if size == 0 {
            break;
        }
        let bytes = first * p.elem_size..(first + size) * p.elem_size;
        blocks.next_into(size, &mut out[bytes])?;
        first += size;
    }
    let rest = &mut out[first * p.elem_size..];
    let raw = body
        .get(blocks.at..blocks.at + rest.len())
        .ok_or(CodecError::Truncated("truncated in its last elements"))?;
    rest.copy_from_slice(raw);
    Ok(out)
}

/// Walks the stored blocks.
struct Blocks<'a> {
    p: &'a Params,
    compression: u32,
    input: &'a [u8],
    at: usize,
    scratch: Vec<u8>,
}

impl Blocks<'_> {
    /// Decodes the next block of `size` elements into `out`.
    fn next_into(&mut self, size: usize, out: &mut [u8]) -> Result<(), CodecError> {
        let nbytes = size * self.p.elem_size;
        if self.compression == 0 {
            let raw = self
                .input
                .get(self.at..self.at + nbytes)
                .ok_or(CodecError::Truncated("truncated inside a block"))?;
            self.at += nbytes;
            untranspose(raw, out, size, self.p.elem_size);
            return Ok(());
        }
        let stored = be_u32(self.input, self.at)
            .ok_or(CodecError::Truncated("truncated before a block header"))?;
        let start = self.at + 4;
        let body = self
            .input
            .get(start..start + stored as usize)
            .ok_or(CodecError::Truncated("truncated inside a block"))?;
        self.at = start + stored as usize;
        self.scratch.resize(nbytes, 0);
        let got = match self.compression {
            COMPRESS_LZ4 => lz4_flex::block::decompress_into(body, &mut self.scratch)
                .map_err(|e| CodecError::corrupt("corrupt lz4 block", e))?,
            _ => zstd::bulk::decompress_to_buffer(body, &mut self.scratch[..])
                .map_err(|e| CodecError::corrupt("corrupt zstd block", e))?,
        };
        if got != nbytes {
            return Err(CodecError::BlockSize {
                got,
                expected: nbytes,
            });
        }
        untranspose(&self.scratch, out, size, self.p.elem_size);
        Ok(())
    }
}

/// Undoes the bit transpose of one block of `size` (a multiple of 8) elements: bit `k` of
/// byte `b` of element `i` was stored as bit `i % 8` of byte `i / 8` of row `8 * b + k`,
/// each row `size / 8` bytes long.
fn untranspose(input: &[u8], out: &mut [u8], size: usize, elem_size: usize) {
    let row = size / 8;
    for b in 0..elem_size {
        let rows = &input[8 * b * row..8 * (b + 1) * row];
        for group in 0..row {
            let mut x = 0u64;
            for k in 0..8 {
                x |= u64::from(rows[k * row + group]) << (8 * k);
            }
            let y = transpose8(x);
            for t in 0..8 {
                out[(8 * group + t) * elem_size + b] = (y >> (8 * t)) as u8;
            }
        }
    }
}

/// Transposes an 8x8 bit matrix held in a u64 (byte = row, bit = column): bit `t` of
/// byte `k` becomes bit `k` of byte `t`.
fn transpose8(mut x: u64) -> u64 {
    let mut t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^= t ^ (t << 28);
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bitshuffle of one block, bit by bit (the definition).
    fn transpose_naive(data: &[u8], size: usize, elem_size: usize) -> Vec<u8> {
        let mut out = vec![0u8; data.len()];
        for i in 0..size {
            for b in 0..elem_size {
                for k in 0..8 {
                    if data[i * elem_size + b] >> k & 1 == 1 {
                        let bit = (8 * b + k) * size + i;
                        out[bit / 8] |= 1 << (bit % 8);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn untranspose_inverts_the_bit_transpose() {
        for (size, elem_size) in [(8, 1), (16, 4), (128, 8), (40, 3)] {
            let data: Vec<u8> = (0..size * elem_size).map(|i| (i * 37 + 11) as u8).collect();
            let mut back = vec![0u8; data.len()];
            untranspose(
                &transpose_naive(&data, size, elem_size),
                &mut back,
                size,
                elem_size,
            );
            assert_eq!(back, data, "size {size} elem {elem_size}");
        }
    }

    /// Uncompressed bitshuffle of `n` elements with blocks of `block` elements.
    fn shuffle_all(data: &[u8], elem_size: usize, block: usize) -> Vec<u8> {
        let n = data.len() / elem_size;
        let mut out = Vec::new();
        let mut first = 0;
        while first < n {
            let size = (n - first).min(block) / 8 * 8;
            if size == 0 {
                break;
            }
            let part = &data[first * elem_size..(first + size) * elem_size];
            out.extend(transpose_naive(part, size, elem_size));
            first += size;
        }
        out.extend_from_slice(&data[first * elem_size..]);
        out
    }

    #[test]
    fn lz4_blocks_and_leftover_elements_decode() {
        let elem_size = 4;
        let data: Vec<u8> = (0..1003u32).flat_map(|i| (i * 3).to_le_bytes()).collect();
        let p = Params::of(&[0, 0, elem_size as u32, 0, COMPRESS_LZ4]).unwrap();
        let block = 256;
        let mut stored = (data.len() as u64).to_be_bytes().to_vec();
        stored.extend_from_slice(&((block * elem_size) as u32).to_be_bytes());
        let n = data.len() / elem_size;
        let mut first = 0;
        while first < n {
            let size = (n - first).min(block) / 8 * 8;
            if size == 0 {
                break;
            }
            let part = &data[first * elem_size..(first + size) * elem_size];
            let packed = lz4_flex::block::compress(&transpose_naive(part, size, elem_size));
            stored.extend_from_slice(&(packed.len() as u32).to_be_bytes());
            stored.extend_from_slice(&packed);
            first += size;
        }
        stored.extend_from_slice(&data[first * elem_size..]);
        assert_eq!(decode(&p, &stored, data.len()).unwrap(), data);
        assert!(decode(&p, &stored, data.len() - 1).is_err());
        assert!(decode(&p, &stored[..stored.len() - 5], data.len()).is_err());
    }

    #[test]
    fn uncompressed_uses_the_default_block() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let p = Params::of(&[0, 0, 2, 0, 0]).unwrap();
        let stored = shuffle_all(&data, 2, p.default_block());
        assert_eq!(decode(&p, &stored, data.len()).unwrap(), data);
    }
}
