//! The blosc filter (32001, PyTables' and hdf5plugin's): each chunk is one blosc1 buffer.
//! Decoded by C-Blosc 1.21 through `blosc-src` (the crate hdf5-metno's own blosc support
//! uses; built with its lz4, zlib and zstd codecs, blosclz is built in; byte- and
//! bit-shuffle included). No pure-Rust blosc reader is well kept enough to prefer.

use std::ffi::c_void;

use super::CodecError;

/// Decodes one blosc buffer into at most `limit` bytes.
pub fn decode(input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let mut nbytes: usize = 0;
    // SAFETY: blosc reads at most `input.len()` bytes of `input` and writes `nbytes`.
    let valid = unsafe {
        blosc_src::blosc_cbuffer_validate(input.as_ptr().cast(), input.len(), &mut nbytes)
    };
    if valid < 0 {
        return Err(CodecError::malformed("not a valid blosc buffer"));
    }
    if nbytes > limit {
        let size = nbytes as u64;
        return Err(CodecError::OverLimit { size, limit });
    }
    let mut out = vec![0u8; nbytes];
    if nbytes == 0 {
        return Ok(out);
    }
    // SAFETY: the header was validated against `input.len()` above; blosc writes at most
    // `out.len()` bytes into `out`, and runs on this thread only (1 internal thread).
    let n = unsafe {
        blosc_src::blosc_decompress_ctx(
            input.as_ptr().cast::<c_void>(),
            out.as_mut_ptr().cast::<c_void>(),
            out.len(),
            1,
        )
    };
    if n < 0 || n as usize != nbytes {
        return Err(CodecError::corrupt(
            "corrupt buffer",
            format!("blosc error {n}"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn compress(data: &[u8], typesize: usize, shuffle: i32, compressor: &str) -> Vec<u8> {
        let mut out = vec![0u8; data.len() + 16 + 64];
        let name = CString::new(compressor).unwrap();
        // SAFETY: buffers are valid for their lengths; 1 thread.
        let n = unsafe {
            blosc_src::blosc_compress_ctx(
                5,
                shuffle,
                typesize,
                data.len(),
                data.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                out.len(),
                name.as_ptr(),
                0,
                1,
            )
        };
        assert!(n > 0, "{compressor}");
        out.truncate(n as usize);
        out
    }

    #[test]
    fn every_inner_compressor_and_shuffle_decodes() {
        let data: Vec<u8> = (0..20_000u32).flat_map(|i| (i / 3).to_le_bytes()).collect();
        for name in ["blosclz", "lz4", "lz4hc", "zlib", "zstd"] {
            for shuffle in [0, 1, 2] {
                let packed = compress(&data, 4, shuffle, name);
                assert_eq!(
                    decode(&packed, data.len()).unwrap(),
                    data,
                    "{name} {shuffle}"
                );
                assert!(decode(&packed, data.len() - 1).is_err());
                assert!(decode(&packed[..packed.len() / 2], data.len()).is_err());
            }
        }
    }
}
