//! The szip filter (4), decoded by libaec's szip interface (`libsz`, apt `libaec-dev`; the
//! library NASA and HDF5 use). Framing (`H5Zszip.c`): the decoded size as a little-endian
//! u32, then the szip stream; client data `[options mask, pixels per block, bits per pixel,
//! pixels per scanline]`. No Rust crate wraps libaec's decoder, so this is a small FFI.

use std::ffi::{c_int, c_void};

use super::CodecError;

/// `SZ_com_t` of `szlib.h`.
#[repr(C)]
struct SzCom {
    options_mask: c_int,
    bits_per_pixel: c_int,
    pixels_per_block: c_int,
    pixels_per_scanline: c_int,
}

#[link(name = "sz")]
extern "C" {
    fn SZ_BufftoBuffDecompress(
        dest: *mut c_void,
        dest_len: *mut usize,
        source: *const c_void,
        source_len: usize,
        param: *mut SzCom,
    ) -> c_int;
}

const SZ_OK: c_int = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    mask: u32,
    pixels_per_block: u32,
    bits_per_pixel: u32,
    pixels_per_scanline: u32,
}

impl Params {
    pub fn of(values: &[u32]) -> Result<Params, CodecError> {
        let &[mask, pixels_per_block, bits_per_pixel, pixels_per_scanline, ..] = values else {
            return Err(CodecError::params("szip", "fewer than 4 parameters"));
        };
        Ok(Params {
            mask,
            pixels_per_block,
            bits_per_pixel,
            pixels_per_scanline,
        })
    }
}

pub fn decode(p: &Params, input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let Some((size, stream)) = input.split_first_chunk::<4>() else {
        return Err(CodecError::ShortHeader(4));
    };
    let size = super::declared(u64::from(u32::from_le_bytes(*size)), limit)?;
    let as_int = |v: u32| {
        c_int::try_from(v).map_err(|_| CodecError::malformed(format!("parameter {v} out of range")))
    };
    let mut param = SzCom {
        options_mask: as_int(p.mask)?,
        bits_per_pixel: as_int(p.bits_per_pixel)?,
        pixels_per_block: as_int(p.pixels_per_block)?,
        pixels_per_scanline: as_int(p.pixels_per_scanline)?,
    };
    let mut out = vec![0u8; size];
    let mut written = out.len();
    // SAFETY: libaec reads `stream.len()` bytes and writes at most `written` (= out.len())
    // bytes into `out`, reporting how many in `written`; `param` lives across the call.
    let status = unsafe {
        SZ_BufftoBuffDecompress(
            out.as_mut_ptr().cast(),
            &mut written,
            stream.as_ptr().cast(),
            stream.len(),
            &mut param,
        )
    };
    if status != SZ_OK || written != size {
        let cause = format!("libaec status {status}, {written} of {size} bytes");
        return Err(CodecError::corrupt("corrupt stream", cause));
    }
    Ok(out)
}
