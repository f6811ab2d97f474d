//! Our decoders registered with libhdf5 (`H5Zregister`), so that its own reads (variable-
//! length strings, layouts the direct path does not take) decode the same codecs, and no
//! user needs `HDF5_PLUGIN_PATH` or hdf5plugin. Decode only: writing with these filters
//! fails, as arrfs never writes.

use std::ffi::{c_uint, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use hdf5_sys::h5::{H5allocate_memory, H5free_memory};
use hdf5_sys::h5z::{
    H5Z_class2_t, H5Z_filter_t, H5Z_func_t, H5Zfilter_avail, H5Zregister, H5Z_CLASS_T_VERS,
    H5Z_FLAG_REVERSE,
};

use super::{Codec, CodecError, BITSHUFFLE, BLOSC, BLOSC2, BZIP2, LZ4, LZF, SZIP, ZSTD};

/// HDF5 stores chunks of less than 4 GiB: the bound of a decode whose chunk size libhdf5
/// does not pass to filters.
const LIBRARY_CHUNK_LIMIT: usize = u32::MAX as usize;

/// The plugin filters registered unconditionally (libhdf5 has none of them built in).
const PLUGINS: [(i32, &CStr); 7] = [
    (LZF, c"lzf (arrfs, decode only)"),
    (BLOSC, c"blosc (arrfs, decode only)"),
    (BLOSC2, c"blosc2 (arrfs, decode only)"),
    (LZ4, c"lz4 (arrfs, decode only)"),
    (BITSHUFFLE, c"bitshuffle (arrfs, decode only)"),
    (ZSTD, c"zstd (arrfs, decode only)"),
    (BZIP2, c"bzip2 (arrfs, decode only)"),
];

/// Registers our decoders once per process: the plugin filters always, szip only where
/// libhdf5 was built without it (the bundled HDF5 is).
pub fn register_all() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        hdf5::sync::sync(|| {
            for (id, name) in PLUGINS {
                register(id, name);
            }
            // SAFETY: a plain query of the built-in filter table.
            if unsafe { H5Zfilter_avail(SZIP) } <= 0 {
                register_predefined(SZIP, c"szip (arrfs, decode only)");
            }
        });
    });
}

/// The callback of filter `ID` (libhdf5 does not tell a callback which filter it runs).
fn callback(id: i32) -> H5Z_func_t {
    match id {
        LZF => Some(filter::<LZF>),
        BLOSC => Some(filter::<BLOSC>),
        BLOSC2 => Some(filter::<BLOSC2>),
        LZ4 => Some(filter::<LZ4>),
        BITSHUFFLE => Some(filter::<BITSHUFFLE>),
        ZSTD => Some(filter::<ZSTD>),
        BZIP2 => Some(filter::<BZIP2>),
        SZIP => Some(filter::<SZIP>),
        _ => None,
    }
}

extern "C" {
    /// libhdf5's internal registration, which unlike `H5Zregister` accepts the predefined
    /// filter ids below 256. Linkable because HDF5 is built in statically (build it with
    /// szip instead: hdf5-metno-src has no switch for that).
    fn H5Z_register(class: *const H5Z_class2_t) -> hdf5_sys::h5::herr_t;
}

fn register(id: i32, name: &'static CStr) {
    let class = class_of(id, name);
    // SAFETY: `class` is a valid H5Z_class2_t; libhdf5 copies it, and `name` is static.
    if unsafe { H5Zregister((&class as *const H5Z_class2_t).cast()) } < 0 {
        log::warn!("could not register filter {id} with libhdf5");
    }
}

/// Registers a decoder for a predefined filter (szip) that this libhdf5 was built without.
fn register_predefined(id: i32, name: &'static CStr) {
    let class = class_of(id, name);
    // SAFETY: called under HDF5's lock, after the library is initialised (the caller's
    // `H5Zfilter_avail` initialised it); `class` is valid and copied by libhdf5.
    if unsafe { H5Z_register(&class) } < 0 {
        log::warn!("could not register filter {id} with libhdf5");
    }
}

fn class_of(id: i32, name: &'static CStr) -> H5Z_class2_t {
    H5Z_class2_t {
        version: H5Z_CLASS_T_VERS as i32,
        id: id as H5Z_filter_t,
        encoder_present: 0,
        decoder_present: 1,
        name: name.as_ptr(),
        can_apply: None,
        set_local: None,
        filter: callback(id),
    }
}

/// The callback of filter `ID`: decodes `*buf` (`nbytes` bytes) with the codec of the filter whose
/// client data libhdf5 passes, replaces `*buf` with the decoded bytes and returns their
/// length; 0 tells libhdf5 the filter failed.
///
/// # Safety
/// Called by libhdf5 only: `cd_values` holds `cd_nelmts` values, `*buf` is a buffer of at
/// least `nbytes` bytes allocated by libhdf5, and `buf_size`/`buf` are writable.
unsafe extern "C" fn filter<const ID: i32>(
    flags: c_uint,
    cd_nelmts: usize,
    cd_values: *const c_uint,
    nbytes: usize,
    buf_size: *mut usize,
    buf: *mut *mut c_void,
) -> usize {
    if flags & H5Z_FLAG_REVERSE == 0 {
        log::error!("arrfs decodes HDF5 filters only: cannot encode");
        return 0;
    }
    // SAFETY: `buf` is checked non-null before it is read.
    if buf.is_null() || unsafe { (*buf).is_null() } || buf_size.is_null() {
        return 0;
    }
    let values = if cd_values.is_null() {
        &[][..]
    } else {
        // SAFETY: libhdf5 passes `cd_nelmts` values.
        unsafe { std::slice::from_raw_parts(cd_values, cd_nelmts) }
    };
    // SAFETY: libhdf5's buffer holds at least `nbytes` bytes.
    let input = unsafe { std::slice::from_raw_parts((*buf).cast::<u8>(), nbytes) };
    // A panic must not unwind into C: it becomes a failed filter.
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        decode(ID, values, input).inspect_err(|e| log::warn!("libhdf5 read: {e}"))
    }));
    let Ok(Ok(out)) = decoded else {
        return 0;
    };
    // libhdf5 frees the buffer it gets back with its own allocator: allocate with it too.
    // SAFETY: a plain allocation by libhdf5's allocator.
    let new = unsafe { H5allocate_memory(out.len().max(1), 0) };
    if new.is_null() {
        return 0;
    }
    // SAFETY: `new` holds at least out.len() bytes and does not overlap `out`; the old
    // buffer was allocated by libhdf5 and is no longer used (`input` ends here); `buf` and
    // `buf_size` are writable (libhdf5's contract).
    unsafe {
        std::ptr::copy_nonoverlapping(out.as_ptr(), new.cast::<u8>(), out.len());
        H5free_memory(*buf);
        *buf = new;
        *buf_size = out.len().max(1);
    }
    out.len()
}

/// Decodes with filter `id`, bounded by the largest chunk HDF5 stores.
fn decode(id: i32, values: &[u32], input: &[u8]) -> Result<Vec<u8>, CodecError> {
    let codec = Codec::of_filter(id, values).ok_or(CodecError::UnknownFilter(id))??;
    codec.decode(input, LIBRARY_CHUNK_LIMIT)
}
