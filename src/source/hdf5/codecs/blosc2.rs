//! The Blosc2 filter (32026, hdf5plugin's and PyTables' `hdf5-blosc2`): each chunk is a
//! Blosc2 super-chunk serialised as one contiguous frame (cframe). Chunks of rank 2 to 8
//! carry a `b2nd` metalayer (older writers: `caterva`) and are one n-dimensional b2nd array
//! of the HDF5 chunk's shape, whose blocks C-Blosc2 reassembles into C order; other chunks
//! hold the chunk's bytes as the frame's only Blosc2 chunk. This mirrors the filter's own
//! decompress path (`blosc2_schunk_from_buffer`, then `b2nd_from_schunk` +
//! `b2nd_get_slice_cbuffer` of the whole array, or chunk 0 decompressed).
//!
//! Decoded by C-Blosc2 2.15 through `blosc2-sys`. C-Blosc2's own b2nd metalayer reader
//! trusts its input (it writes up to 127 dimensions into arrays of 8, and a zero block
//! dimension divides by zero), so the metalayer is checked here first, in the exact layout
//! C-Blosc2 writes, and only what that filter writes (one b2nd chunk covering the array)
//! is handed on.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Once;

use super::CodecError;

use blosc2_sys::{
    blosc2_init, blosc2_schunk, blosc2_schunk_decompress_chunk, blosc2_schunk_free,
    blosc2_schunk_from_buffer,
};

/// C-Blosc2 arrays have at most this many dimensions (`B2ND_MAX_DIM`).
const MAX_DIM: usize = 8;

/// Opaque C-Blosc2 n-dimensional array (`b2nd_array_t`).
#[repr(C)]
struct B2ndArray {
    _private: [u8; 0],
}

// b2nd.h is not in blosc2-sys's bindings; these are in the same static library.
extern "C" {
    fn b2nd_from_schunk(schunk: *mut blosc2_schunk, array: *mut *mut B2ndArray) -> c_int;
    fn b2nd_to_cbuffer(array: *const B2ndArray, buffer: *mut c_void, buffersize: i64) -> c_int;
    fn b2nd_free(array: *mut B2ndArray) -> c_int;
}

/// Decodes one Blosc2 frame into at most `limit` bytes.
pub fn decode(input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    static INIT: Once = Once::new();
    // SAFETY: blosc2_init sets up C-Blosc2's global tables once, before any other call.
    INIT.call_once(|| unsafe { blosc2_init() });
    // C-Blosc2 takes a mutable frame but only reads it (copy = false borrows it): `frame`
    // outlives `schunk`, declared after it.
    let mut frame = input.to_vec();
    let len = i64::try_from(frame.len()).map_err(|_| CodecError::malformed("frame too large"))?;
    // SAFETY: `frame` holds `len` bytes; C-Blosc2 checks the frame against that length.
    let raw = unsafe { blosc2_schunk_from_buffer(frame.as_mut_ptr(), len, false) };
    if raw.is_null() {
        return Err(CodecError::malformed("not a valid Blosc2 frame"));
    }
    let schunk = Schunk(raw);
    // SAFETY: a super-chunk C-Blosc2 just built and we own.
    let header = unsafe { &*schunk.0 };
    if header.nchunks != 1 {
        return Err(CodecError::malformed(format!(
            "frame holds {} chunks, the filter writes one",
            header.nchunks
        )));
    }
    match nd_metalayer(header)? {
        Some(meta) => decode_nd(schunk, &meta, limit),
        None => decode_flat(&schunk, limit),
    }
}

/// Owns a super-chunk until it is freed or handed to a b2nd array.
struct Schunk(*mut blosc2_schunk);

impl Drop for Schunk {
    fn drop(&mut self) {
        // SAFETY: we own the super-chunk and nothing else refers to it any more.
        unsafe { blosc2_schunk_free(self.0) };
    }
}

/// The frame's only chunk, decompressed.
fn decode_flat(schunk: &Schunk, limit: usize) -> Result<Vec<u8>, CodecError> {
    // SAFETY: a live super-chunk we own.
    let nbytes = unsafe { (*schunk.0).nbytes };
    let size = super::declared(u64::try_from(nbytes).unwrap_or(u64::MAX), limit)?;
    let size_c = i32::try_from(size).map_err(|_| CodecError::malformed("chunk too large"))?;
    let mut out = vec![0u8; size];
    // SAFETY: `out` holds `size_c` bytes; C-Blosc2 writes at most that many.
    let n = unsafe { blosc2_schunk_decompress_chunk(schunk.0, 0, out.as_mut_ptr().cast(), size_c) };
    if n != size_c {
        return Err(CodecError::corrupt(
            "corrupt chunk",
            format!("blosc2 error {n}"),
        ));
    }
    Ok(out)
}

/// The whole b2nd array in C order.
fn decode_nd(schunk: Schunk, meta: &NdMeta, limit: usize) -> Result<Vec<u8>, CodecError> {
    // SAFETY: a live super-chunk we own.
    let typesize = unsafe { (*schunk.0).typesize };
    let items = meta
        .shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64));
    let bytes = items
        .and_then(|n| n.checked_mul(u64::try_from(typesize).ok()?))
        .filter(|_| typesize > 0)
        .ok_or_else(|| CodecError::malformed("b2nd array size overflows"))?;
    let size = super::declared(bytes, limit)?;
    let mut array: *mut B2ndArray = std::ptr::null_mut();
    // SAFETY: the metalayer was checked to be one C-Blosc2 reads within its bounds, with
    // dimensions it divides by all positive; on success the array owns the super-chunk.
    if unsafe { b2nd_from_schunk(schunk.0, &mut array) } < 0 || array.is_null() {
        return Err(CodecError::malformed("corrupt b2nd metalayer"));
    }
    std::mem::forget(schunk);
    let array = Array(array);
    let mut out = vec![0u8; size];
    // SAFETY: `out` holds `size` bytes, the array's item count times its item size, which
    // C-Blosc2 checks the buffer size against before writing.
    let status = unsafe { b2nd_to_cbuffer(array.0, out.as_mut_ptr().cast(), size as i64) };
    if status < 0 {
        return Err(CodecError::corrupt(
            "corrupt chunk",
            format!("blosc2 error {status}"),
        ));
    }
    Ok(out)
}

/// Owns a b2nd array (and through it the super-chunk).
struct Array(*mut B2ndArray);

impl Drop for Array {
    fn drop(&mut self) {
        // SAFETY: we own the array; b2nd_free frees its super-chunk too.
        unsafe { b2nd_free(self.0) };
    }
}

/// What the b2nd metalayer says.
#[derive(Debug, PartialEq, Eq)]
struct NdMeta {
    shape: Vec<i64>,
}

/// The super-chunk's b2nd (or else caterva) metalayer, checked; None if it has neither.
/// The same one `b2nd_from_schunk` reads: the first of that name.
fn nd_metalayer(header: &blosc2_schunk) -> Result<Option<NdMeta>, CodecError> {
    let content = metalayer(header, c"b2nd").or_else(|| metalayer(header, c"caterva"));
    content.map(parse_nd_meta).transpose()
}

/// The content of the first metalayer called `name`.
fn metalayer<'a>(header: &'a blosc2_schunk, name: &CStr) -> Option<&'a [u8]> {
    let count = usize::from(header.nmetalayers).min(header.metalayers.len());
    header.metalayers[..count].iter().find_map(|&layer| {
        // SAFETY: C-Blosc2 keeps `nmetalayers` valid metalayers, each with a NUL-terminated
        // name and `content_len` bytes of content, alive as long as the super-chunk.
        unsafe {
            let layer = layer.as_ref()?;
            if layer.name.is_null() || CStr::from_ptr(layer.name as *const c_char) != name {
                return None;
            }
            let len = usize::try_from(layer.content_len).unwrap_or(0);
            Some(if layer.content.is_null() {
                &[][..]
            } else {
                std::slice::from_raw_parts(layer.content, len)
            })
        }
    })
}

/// Reads the b2nd metalayer as C-Blosc2 writes it (msgpack: fixarray of version, ndim,
/// shape as int64s, chunk and block shapes as int32s, then dtype format and dtype in b2nd's
/// 7-entry form), refusing anything else, and any array that is not one whole chunk.
fn parse_nd_meta(meta: &[u8]) -> Result<NdMeta, CodecError> {
    let bad = || CodecError::malformed("corrupt b2nd metalayer");
    let mut at = 0usize;
    let mut byte = || -> Result<u8, CodecError> {
        let b = *meta.get(at).ok_or_else(bad)?;
        at += 1;
        Ok(b)
    };
    let entries = byte()?;
    if entries != 0x97 && entries != 0x95 {
        return Err(bad());
    }
    let _version = byte()?;
    let ndim = usize::from(byte()?);
    if !(1..=MAX_DIM).contains(&ndim) {
        return Err(CodecError::Unsupported(format!(
            "b2nd metalayer of {ndim} dimensions"
        )));
    }
    let mut array = |tag: u8, width: usize| -> Result<Vec<i64>, CodecError> {
        if byte()? != 0x90 + ndim as u8 {
            return Err(bad());
        }
        (0..ndim)
            .map(|_| {
                if byte()? != tag {
                    return Err(bad());
                }
                let mut value = [0u8; 8];
                for slot in &mut value[8 - width..] {
                    *slot = byte()?;
                }
                let value = i64::from_be_bytes(value);
                Ok(match width {
                    4 => i64::from(value as u32 as i32),
                    _ => value,
                })
            })
            .collect()
    };
    let shape = array(0xd3, 8)?;
    let chunkshape = array(0xd2, 4)?;
    let blockshape = array(0xd2, 4)?;
    if entries == 0x97 {
        let _format = byte()?;
        if byte()? != 0xdb {
            return Err(bad());
        }
        let len = u32::from_be_bytes([byte()?, byte()?, byte()?, byte()?]) as usize;
        for _ in 0..len {
            byte()?;
        }
    }
    let whole_chunk = shape.iter().zip(&chunkshape).all(|(s, c)| s == c);
    let blocks_fit = blockshape
        .iter()
        .zip(&chunkshape)
        .all(|(b, c)| 0 < *b && b <= c);
    if !(shape.iter().all(|&s| s > 0) && whole_chunk && blocks_fit) {
        return Err(CodecError::Unsupported(format!(
            "b2nd array {shape:?} in chunks {chunkshape:?}, blocks {blockshape:?}: \
             not one chunk as the filter writes"
        )));
    }
    Ok(NdMeta { shape })
}

/// Frames as the filter writes them, made with C-Blosc2's own encoder (for tests).
#[cfg(test)]
pub mod encode {
    use super::*;
    use blosc2_sys::{
        blosc2_cparams, blosc2_dparams, blosc2_schunk_append_buffer, blosc2_schunk_new,
        blosc2_schunk_to_buffer, blosc2_storage,
    };

    extern "C" {
        fn b2nd_create_ctx(
            storage: *const blosc2_storage,
            ndim: i8,
            shape: *const i64,
            chunkshape: *const i32,
            blockshape: *const i32,
            dtype: *const c_char,
            dtype_format: i8,
            metalayers: *const c_void,
            nmetalayers: i32,
        ) -> *mut c_void;
        fn b2nd_free_ctx(ctx: *mut c_void) -> c_int;
        fn b2nd_from_cbuffer(
            ctx: *mut c_void,
            array: *mut *mut B2ndArray,
            buffer: *const c_void,
            buffersize: i64,
        ) -> c_int;
        fn b2nd_to_cframe(
            array: *const B2ndArray,
            cframe: *mut *mut u8,
            cframe_len: *mut i64,
            needs_free: *mut bool,
        ) -> c_int;
    }

    fn cparams(compcode: u8, shuffle: u8, typesize: i32) -> blosc2_cparams {
        blosc2_cparams {
            compcode,
            compcode_meta: 0,
            clevel: 5,
            use_dict: 0,
            typesize,
            nthreads: 1,
            blocksize: 0,
            splitmode: blosc2_sys::BLOSC_FORWARD_COMPAT_SPLIT as i32,
            schunk: std::ptr::null_mut(),
            filters: [0, 0, 0, 0, 0, shuffle],
            filters_meta: [0; 6],
            prefilter: None,
            preparams: std::ptr::null_mut(),
            tuner_params: std::ptr::null_mut(),
            tuner_id: 0,
            instr_codec: false,
            codec_params: std::ptr::null_mut(),
            filter_params: [std::ptr::null_mut(); 6],
        }
    }

    fn dparams() -> blosc2_dparams {
        blosc2_dparams {
            nthreads: 1,
            schunk: std::ptr::null_mut(),
            postfilter: None,
            postparams: std::ptr::null_mut(),
        }
    }

    /// Copies out a frame C-Blosc2 serialised, freeing it if asked.
    ///
    /// # Safety
    /// `frame` holds `len` bytes, malloc'ed if `needs_free`.
    unsafe fn take(frame: *mut u8, len: i64, needs_free: bool) -> Vec<u8> {
        assert!(len > 0 && !frame.is_null());
        // SAFETY: per the caller.
        let out = unsafe { std::slice::from_raw_parts(frame, len as usize) }.to_vec();
        if needs_free {
            // SAFETY: per the caller.
            unsafe { blosc2_sys::libc::free(frame.cast()) };
        }
        out
    }

    /// A one-chunk frame holding `data`, as the filter writes 1-d chunks.
    pub fn flat(data: &[u8], typesize: i32, compcode: u8, shuffle: u8) -> Vec<u8> {
        // SAFETY: as in `decode`.
        unsafe { blosc2_init() };
        let mut cp = cparams(compcode, shuffle, typesize);
        let mut dp = dparams();
        let mut storage = blosc2_storage {
            contiguous: false,
            urlpath: std::ptr::null_mut(),
            cparams: &mut cp,
            dparams: &mut dp,
            io: std::ptr::null_mut(),
        };
        // SAFETY: valid parameters; the buffers hold what their lengths say.
        unsafe {
            let schunk = blosc2_schunk_new(&mut storage);
            assert!(!schunk.is_null());
            let n = blosc2_schunk_append_buffer(schunk, data.as_ptr().cast(), data.len() as i32);
            assert!(n > 0);
            let mut frame = std::ptr::null_mut();
            let mut needs_free = false;
            let len = blosc2_schunk_to_buffer(schunk, &mut frame, &mut needs_free);
            let out = take(frame, len, needs_free);
            blosc2_schunk_free(schunk);
            out
        }
    }

    /// A b2nd frame of one chunk of `shape` in blocks of `blocks`, as the filter writes
    /// chunks of rank 2 and more.
    pub fn nd(data: &[u8], typesize: i32, shape: &[i32], blocks: &[i32], compcode: u8) -> Vec<u8> {
        // SAFETY: as in `decode`.
        unsafe { blosc2_init() };
        let mut cp = cparams(compcode, 1, typesize);
        let mut dp = dparams();
        let storage = blosc2_storage {
            contiguous: false,
            urlpath: std::ptr::null_mut(),
            cparams: &mut cp,
            dparams: &mut dp,
            io: std::ptr::null_mut(),
        };
        let shape64: Vec<i64> = shape.iter().map(|&d| i64::from(d)).collect();
        let dtype = std::ffi::CString::new(format!("|V{typesize}")).unwrap();
        // SAFETY: valid parameters; the buffers hold what their lengths say.
        unsafe {
            let ctx = b2nd_create_ctx(
                &storage,
                shape.len() as i8,
                shape64.as_ptr(),
                shape.as_ptr(),
                blocks.as_ptr(),
                dtype.as_ptr(),
                0,
                std::ptr::null(),
                0,
            );
            assert!(!ctx.is_null());
            let mut array = std::ptr::null_mut();
            let rc = b2nd_from_cbuffer(ctx, &mut array, data.as_ptr().cast(), data.len() as i64);
            assert_eq!(rc, 0);
            let mut frame = std::ptr::null_mut();
            let mut len = 0;
            let mut needs_free = false;
            assert_eq!(
                b2nd_to_cframe(array, &mut frame, &mut len, &mut needs_free),
                0
            );
            let out = take(frame, len, needs_free);
            b2nd_free(array);
            b2nd_free_ctx(ctx);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::encode::{flat, nd};
    use super::*;
    use blosc2_sys::{BLOSC_BLOSCLZ, BLOSC_LZ4, BLOSC_ZLIB, BLOSC_ZSTD};

    fn data(n: u32) -> Vec<u8> {
        (0..n).flat_map(|i| (i / 3).to_le_bytes()).collect()
    }

    #[test]
    fn flat_frames_decode_with_every_compressor_and_shuffle() {
        let data = data(20_000);
        for code in [BLOSC_BLOSCLZ, BLOSC_LZ4, BLOSC_ZLIB, BLOSC_ZSTD] {
            for shuffle in [0, 1, 2] {
                let frame = flat(&data, 4, code as u8, shuffle);
                assert_eq!(
                    decode(&frame, data.len()).unwrap(),
                    data,
                    "{code} {shuffle}"
                );
                assert!(decode(&frame, data.len() - 1).is_err());
                assert!(decode(&frame[..frame.len() / 2], data.len()).is_err());
            }
        }
    }

    #[test]
    fn b2nd_frames_decode_in_c_order() {
        // Blocks that do not divide the chunk: C-Blosc2 pads and reassembles them.
        let (shape, blocks) = ([7, 11, 5], [2, 4, 3]);
        let data = data(7 * 11 * 5);
        let frame = nd(&data, 4, &shape, &blocks, BLOSC_ZSTD as u8);
        assert_eq!(decode(&frame, data.len()).unwrap(), data);
        assert!(decode(&frame, data.len() - 1).is_err());
        assert!(decode(&frame[..frame.len() - 9], data.len()).is_err());
    }

    #[test]
    fn metalayers_the_filter_never_writes_are_refused() {
        let meta = |ndim: u8, shape: i64, chunk: i32, block: i32| {
            let mut m = vec![0x95, 0, ndim, 0x90 + ndim];
            for _ in 0..ndim {
                m.push(0xd3);
                m.extend(shape.to_be_bytes());
            }
            for value in [chunk, block] {
                m.push(0x90 + ndim);
                for _ in 0..ndim {
                    m.push(0xd2);
                    m.extend(value.to_be_bytes());
                }
            }
            m
        };
        assert_eq!(
            parse_nd_meta(&meta(2, 6, 6, 4)).unwrap(),
            NdMeta { shape: vec![6, 6] }
        );
        for bad in [
            meta(9, 6, 6, 4),
            meta(0, 6, 6, 4),
            meta(2, 6, 6, 0),
            meta(2, 6, 6, 7),
            meta(2, 6, 3, 2),
            meta(2, 0, 0, 0),
        ] {
            assert!(parse_nd_meta(&bad).is_err(), "{bad:?}");
        }
        let whole = meta(3, 4, 4, 2);
        for cut in 0..whole.len() {
            assert!(parse_nd_meta(&whole[..cut]).is_err());
        }
    }
}
