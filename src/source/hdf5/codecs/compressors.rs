//! Plain compressors as their HDF5 filters frame them: zstd (32015, one zstd frame), lz4
//! (32004, HDF5's block framing), bzip2 (307, one bzip2 stream) and LZF (32000, h5py's).
//! The codecs themselves are crates: `zstd` (libzstd), `lz4_flex`, `bzip2` (pure Rust), `lzf`.

use std::io::Read;

use super::{be_u32, be_u64, declared, CodecError};

/// Decodes a zstd frame (or several) into at most `limit` bytes.
pub fn zstd(input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let content = zstd::zstd_safe::get_frame_content_size(input)
        .map_err(|_| CodecError::malformed("not a zstd frame"))?;
    let Some(size) = content else {
        // No size in the frame header: stream, and stop one byte past the limit.
        let decoder = zstd::stream::read::Decoder::new(input)
            .map_err(|e| CodecError::malformed(e.to_string()))?;
        return read_bounded(decoder, limit);
    };
    let mut out = Vec::with_capacity(declared(size, limit)?);
    zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress_to_buffer(input, &mut out))
        .map_err(|e| CodecError::corrupt("corrupt or truncated stream", e))?;
    Ok(out)
}

/// Reads all of `reader`, failing if it gives more than `limit` bytes.
fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| CodecError::corrupt("corrupt or truncated stream", e))?;
    if out.len() > limit {
        return Err(CodecError::TooLong { limit });
    }
    Ok(out)
}

/// Decodes HDF5's lz4 framing: the original size (u64, big-endian), the block size (u32),
/// then per block its stored size (u32) and the block, stored raw when that size equals
/// the block's.
pub fn hdf5_lz4(input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let (Some(total), Some(block)) = (be_u64(input, 0), be_u32(input, 8)) else {
        return Err(CodecError::ShortHeader(12));
    };
    let total = declared(total, limit)?;
    let block = (block as usize).min(total);
    if block == 0 && total > 0 {
        return Err(CodecError::malformed("block size 0"));
    }
    let mut out = vec![0u8; total];
    let mut at = 12;
    for piece in out.chunks_mut(block.max(1)) {
        let stored = be_u32(input, at)
            .ok_or(CodecError::Truncated("truncated before a block header"))?
            as usize;
        let body = input
            .get(at + 4..at + 4 + stored)
            .ok_or(CodecError::Truncated("truncated inside a block"))?;
        at += 4 + stored;
        if stored == piece.len() {
            piece.copy_from_slice(body);
            continue;
        }
        match lz4_flex::block::decompress_into(body, piece) {
            Ok(n) if n == piece.len() => {}
            Ok(got) => {
                let expected = piece.len();
                return Err(CodecError::BlockSize { got, expected });
            }
            Err(e) => return Err(CodecError::corrupt("corrupt block", e)),
        }
    }
    Ok(out)
}

/// Decodes one bzip2 stream into at most `limit` bytes.
pub fn bzip2(input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    read_bounded(bzip2::read::BzDecoder::new(input), limit)
}

/// Decodes h5py's LZF: a raw LZF block of `chunk_bytes` bytes (its client data's third
/// value); when that is unknown, into a buffer grown up to `limit` bytes, as h5py does.
pub fn lzf(input: &[u8], chunk_bytes: usize, limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut size = match chunk_bytes {
        0 => input.len().saturating_mul(4).clamp(1, limit.max(1)),
        n => n.min(limit),
    };
    loop {
        match lzf::decompress(input, size) {
            Err(lzf::LzfError::BufferTooSmall) if chunk_bytes == 0 && size < limit => {
                size = size.saturating_mul(2).min(limit);
            }
            decoded => return decoded.map_err(|e| CodecError::malformed(format!("{e:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lz4_framed(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = (data.len() as u64).to_be_bytes().to_vec();
        out.extend_from_slice(&(block as u32).to_be_bytes());
        for piece in data.chunks(block) {
            let packed = lz4_flex::block::compress(piece);
            let stored = if packed.len() >= piece.len() {
                piece.to_vec()
            } else {
                packed
            };
            out.extend_from_slice(&(stored.len() as u32).to_be_bytes());
            out.extend_from_slice(&stored);
        }
        out
    }

    #[test]
    fn lz4_blocks_round_trip_and_are_bounded() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 97) as u8).collect();
        let framed = lz4_framed(&data, 4096);
        assert_eq!(hdf5_lz4(&framed, data.len()).unwrap(), data);
        assert!(hdf5_lz4(&framed, data.len() - 1).is_err());
        assert!(hdf5_lz4(&framed[..framed.len() - 3], data.len()).is_err());
    }

    #[test]
    fn zstd_is_bounded() {
        let data = vec![7u8; 100_000];
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        assert_eq!(zstd(&packed, data.len()).unwrap(), data);
        assert!(zstd(&packed, data.len() - 1).is_err());
        assert!(zstd(&[1, 2, 3, 4, 5, 6, 7, 8], 100).is_err());
    }

    #[test]
    fn bzip2_is_bounded() {
        let data = vec![3u8; 50_000];
        let mut packed = Vec::new();
        bzip2::read::BzEncoder::new(&data[..], bzip2::Compression::fast())
            .read_to_end(&mut packed)
            .unwrap();
        assert_eq!(bzip2(&packed, data.len()).unwrap(), data);
        assert!(bzip2(&packed, data.len() - 1).is_err());
        assert!(bzip2(&packed[..packed.len() / 2], data.len()).is_err());
    }
}
