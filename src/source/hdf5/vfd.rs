//! A read-only HDF5 virtual file driver over [`SourceFile`]: libhdf5 reads the file (its
//! metadata, and the raw data it reads itself) through `SourceFile::read_at`, not by path.
//! A file that is not on a local disk (an object in a store) opens like a local one.
//!
//! libhdf5 learns which `SourceFile` to read from the file access property list's driver
//! info (a [`DriverHandle`]), not from the name given to `H5Fopen`: the name only labels
//! the file in messages and `H5Fget_name`. A file that libhdf5 opens by itself (the target
//! of an external link, a virtual dataset's source) gets a property list without driver
//! info (the driver has no `fapl_get`), and its opening fails cleanly.
//!
//! hdf5-metno-sys 0.12 declares `H5FD_class_t` and `H5FD_t` as HDF5 1.x had them (no
//! `version` field, no vector/selection callbacks, no `access_flags`/`paged_aggr`): the
//! structs here mirror `H5FDdevelop.h` of the bundled HDF5 2.x instead
//! (`H5FD_CLASS_VERSION` 1).

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use hdf5_sys::h5::{haddr_t, herr_t, hsize_t, HADDR_UNDEF};
use hdf5_sys::h5e::{
    H5Epush2, H5E_CANTOPENFILE, H5E_DEFAULT, H5E_ERR_CLS, H5E_READERROR, H5E_VFL, H5E_WRITEERROR,
};
use hdf5_sys::h5f::{
    H5F_close_degree_t, H5Fopen, H5F_ACC_CREAT, H5F_ACC_EXCL, H5F_ACC_RDONLY, H5F_ACC_RDWR,
    H5F_ACC_TRUNC,
};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::{H5Pcreate, H5Pget_driver_info, H5Pset_driver, H5P_CLS_FILE_ACCESS};

use super::ffi::{h5check, sync, Hid};
use super::{btree, error};
use crate::io::SourceFile;

/// Set to `1` to open local HDF5 files through this driver instead of libhdf5's own `sec2`
/// (to test the driver on local files; external links and external raw data, which need a
/// path, are then left out).
pub const FORCE_DRIVER_ENV: &str = "ARRFS_HDF5_VFD";

pub fn driver_forced() -> bool {
    std::env::var(FORCE_DRIVER_ENV).is_ok_and(|v| v == "1")
}

/// Bytes fetched ahead at each child of a B-tree node: a chunk-index node of a rank-3
/// dataset with the default 64 entries is 3.6 KiB; a group's nodes are smaller.
const NODE_PREFETCH: u64 = 4096;

/// `H5FD_CLASS_VERSION` of `H5FDdevelop.h` (HDF5 2.x): `H5FDregister` refuses any other.
const CLASS_VERSION: c_uint = 1;
/// A driver value in the range HDF5 leaves for drivers not registered with The HDF Group
/// (256-511).
const DRIVER_VALUE: c_int = 0x1a5;
/// `H5FD_MEM_NTYPES`, `H5FD_MEM_SUPER` and `H5FD_MEM_DRAW` of `H5Fpublic.h`. Memory types
/// are taken as plain ints: libhdf5 owns their values.
const MEM_NTYPES: usize = 7;
const MEM_SUPER: c_int = 1;
const MEM_BTREE: c_int = 2;
const MEM_DRAW: c_int = 3;
/// `H5FD_FLMAP_DICHOTOMY` (as sec2 and ros3 use): unused by a driver that never allocates.
const FREE_LIST_MAP: [c_int; MEM_NTYPES] = [
    MEM_SUPER, MEM_SUPER, MEM_SUPER, MEM_DRAW, MEM_DRAW, MEM_SUPER, MEM_SUPER,
];
/// `H5FD_FEAT_ACCUMULATE_METADATA` (read and write bits): libhdf5 merges adjacent metadata
/// reads into one. `H5FD_FEAT_DATA_SIEVE`: it reads small pieces of contiguous raw data in
/// one larger sieve buffer. Both cut the number of reads, which is what a remote file pays
/// for. Nothing about allocation or handles: the file is never written, and has no POSIX
/// descriptor.
const FEATURES: c_ulong = 0x2 | 0x4 | 0x8;
/// Largest address: as sec2 (`H5FD_MAXADDR`, the largest `off_t`).
const MAX_ADDR: haddr_t = i64::MAX as haddr_t;

/// `H5FD_class_t` of HDF5 2.x, field for field.
#[repr(C)]
struct DriverClass {
    version: c_uint,
    value: c_int,
    name: *const c_char,
    maxaddr: haddr_t,
    fc_degree: H5F_close_degree_t,
    terminate: Option<unsafe extern "C" fn() -> herr_t>,
    sb_size: Option<unsafe extern "C" fn(*mut DriverFile) -> hsize_t>,
    sb_encode: Option<unsafe extern "C" fn(*mut DriverFile, *mut c_char, *mut u8) -> herr_t>,
    sb_decode: Option<unsafe extern "C" fn(*mut DriverFile, *const c_char, *const u8) -> herr_t>,
    fapl_size: usize,
    fapl_get: Option<unsafe extern "C" fn(*mut DriverFile) -> *mut c_void>,
    fapl_copy: Option<unsafe extern "C" fn(*const c_void) -> *mut c_void>,
    fapl_free: Option<unsafe extern "C" fn(*mut c_void) -> herr_t>,
    dxpl_size: usize,
    dxpl_copy: Option<unsafe extern "C" fn(*const c_void) -> *mut c_void>,
    dxpl_free: Option<unsafe extern "C" fn(*mut c_void) -> herr_t>,
    open: Option<unsafe extern "C" fn(*const c_char, c_uint, hid_t, haddr_t) -> *mut DriverFile>,
    close: Option<unsafe extern "C" fn(*mut DriverFile) -> herr_t>,
    cmp: Option<unsafe extern "C" fn(*const DriverFile, *const DriverFile) -> c_int>,
    query: Option<unsafe extern "C" fn(*const DriverFile, *mut c_ulong) -> herr_t>,
    get_type_map: Option<unsafe extern "C" fn(*const DriverFile, *mut c_int) -> herr_t>,
    alloc: Option<unsafe extern "C" fn(*mut DriverFile, c_int, hid_t, hsize_t) -> haddr_t>,
    free: Option<unsafe extern "C" fn(*mut DriverFile, c_int, hid_t, haddr_t, hsize_t) -> herr_t>,
    get_eoa: Option<unsafe extern "C" fn(*const DriverFile, c_int) -> haddr_t>,
    set_eoa: Option<unsafe extern "C" fn(*mut DriverFile, c_int, haddr_t) -> herr_t>,
    get_eof: Option<unsafe extern "C" fn(*const DriverFile, c_int) -> haddr_t>,
    get_handle: Option<unsafe extern "C" fn(*mut DriverFile, hid_t, *mut *mut c_void) -> herr_t>,
    read: Option<
        unsafe extern "C" fn(*mut DriverFile, c_int, hid_t, haddr_t, usize, *mut c_void) -> herr_t,
    >,
    write: Option<
        unsafe extern "C" fn(
            *mut DriverFile,
            c_int,
            hid_t,
            haddr_t,
            usize,
            *const c_void,
        ) -> herr_t,
    >,
    /// `read_vector`, `write_vector`, `read_selection`, `write_selection`: left out (null),
    /// libhdf5 then splits them into single reads.
    vector_and_selection: [Option<unsafe extern "C" fn()>; 4],
    flush: Option<unsafe extern "C" fn(*mut DriverFile, hid_t, bool) -> herr_t>,
    truncate: Option<unsafe extern "C" fn(*mut DriverFile, hid_t, bool) -> herr_t>,
    lock: Option<unsafe extern "C" fn(*mut DriverFile, bool) -> herr_t>,
    unlock: Option<unsafe extern "C" fn(*mut DriverFile) -> herr_t>,
    del: Option<unsafe extern "C" fn(*const c_char, hid_t) -> herr_t>,
    ctl: Option<
        unsafe extern "C" fn(*mut DriverFile, u64, u64, *const c_void, *mut *mut c_void) -> herr_t,
    >,
    fl_map: [c_int; MEM_NTYPES],
}

/// `H5FD_t` of HDF5 2.x: the public part of an open file, which libhdf5 fills in after
/// `open` returns.
#[repr(C)]
struct PublicFile {
    driver_id: hid_t,
    cls: *const DriverClass,
    fileno: c_ulong,
    access_flags: c_uint,
    feature_flags: c_ulong,
    maxaddr: haddr_t,
    base_addr: haddr_t,
    threshold: hsize_t,
    alignment: hsize_t,
    paged_aggr: bool,
}

unsafe extern "C" {
    /// Declared here with the 2.x class struct (hdf5-metno-sys has the 1.x one).
    fn H5FDregister(cls: *const DriverClass) -> hid_t;
}

/// Reads the driver made for one opened file, and bytes asked for: what a remote file pays
/// per request.
#[derive(Debug, Default)]
pub struct DriverReads {
    calls: AtomicU64,
    bytes: AtomicU64,
}

impl DriverReads {
    pub fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
}

/// The driver info of a file access property list: what to read, and where to count.
#[derive(Clone)]
struct DriverHandle {
    source: Arc<SourceFile>,
    reads: Arc<DriverReads>,
}

/// An open file: the public part first (libhdf5 sees only that), then ours.
#[repr(C)]
struct DriverFile {
    public: PublicFile,
    handle: DriverHandle,
    /// End of the address space libhdf5 uses; set by libhdf5.
    eoa: AtomicU64,
}

/// Opens `source` as an HDF5 file through the driver; `name` is what libhdf5 calls it (in
/// `H5Fget_name` and its messages). Returns the file and its read counter.
pub fn open(source: Arc<SourceFile>, name: &Path) -> hdf5::Result<(hdf5::File, Arc<DriverReads>)> {
    let driver = driver_id()?;
    let cname = CString::new(name.as_os_str().as_bytes())
        .map_err(|_| hdf5::Error::from(format!("{}: a NUL in the name", name.display())))?;
    let reads = Arc::new(DriverReads::default());
    let handle = DriverHandle {
        source,
        reads: reads.clone(),
    };
    sync(|| {
        // SAFETY: creates a property list, released on drop.
        let fapl = Hid::new(unsafe { H5Pcreate(*H5P_CLS_FILE_ACCESS) })?;
        // SAFETY: libhdf5 copies `handle` through `fapl_copy` before this returns.
        h5check(unsafe { H5Pset_driver(fapl.0, driver, (&raw const handle).cast()) })?;
        // SAFETY: a NUL-terminated name and a valid access list.
        let id = h5check(unsafe { H5Fopen(cname.as_ptr(), H5F_ACC_RDONLY, fapl.0) })?;
        // SAFETY: `id` is a file id just returned by H5Fopen, owned by nobody else.
        let file = unsafe { hdf5::from_id::<hdf5::File>(id) }?;
        Ok((file, reads))
    })
}

/// The driver's id, registered on first use.
fn driver_id() -> hdf5::Result<hid_t> {
    static DRIVER: OnceLock<hdf5::Result<hid_t>> = OnceLock::new();
    // HDF5's lock first, then the OnceLock, always in that order: a thread that holds the
    // (reentrant) HDF5 lock never waits for another that waits for it.
    let id = sync(|| {
        DRIVER.get_or_init(|| {
            let class = driver_class();
            // SAFETY: a complete class struct of the bundled HDF5's layout; libhdf5 copies
            // it (its name is static).
            h5check(unsafe { H5FDregister(&class) })
        })
    });
    id.clone()
}

fn driver_class() -> DriverClass {
    DriverClass {
        version: CLASS_VERSION,
        value: DRIVER_VALUE,
        name: c"arrfs".as_ptr(),
        maxaddr: MAX_ADDR,
        fc_degree: H5F_close_degree_t::H5F_CLOSE_WEAK,
        terminate: None,
        sb_size: None,
        sb_encode: None,
        sb_decode: None,
        fapl_size: std::mem::size_of::<DriverHandle>(),
        fapl_get: None,
        fapl_copy: Some(handle_copy),
        fapl_free: Some(handle_free),
        dxpl_size: 0,
        dxpl_copy: None,
        dxpl_free: None,
        open: Some(file_open),
        close: Some(file_close),
        cmp: None,
        query: Some(file_query),
        get_type_map: None,
        alloc: None,
        free: None,
        get_eoa: Some(file_get_eoa),
        set_eoa: Some(file_set_eoa),
        get_eof: Some(file_get_eof),
        get_handle: None,
        read: Some(file_read),
        write: Some(file_write),
        vector_and_selection: [None; 4],
        flush: None,
        truncate: None,
        lock: None,
        unlock: None,
        del: None,
        ctl: None,
        fl_map: FREE_LIST_MAP,
    }
}

/// Pushes `message` on libhdf5's error stack (it becomes the cause in hdf5::Error).
fn push_error(minor: hid_t, message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: called from a driver callback, inside a libhdf5 call that holds its lock; the
    // message goes through "%s", never as a format.
    unsafe {
        H5Epush2(
            H5E_DEFAULT,
            c"vfd.rs".as_ptr(),
            c"arrfs driver".as_ptr(),
            line!(),
            *H5E_ERR_CLS,
            *H5E_VFL,
            minor,
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}

/// Why a driver callback fails: its text goes on libhdf5's error stack.
#[derive(Debug, thiserror::Error)]
enum DriverError {
    #[error("no driver info")]
    NoDriverInfo,
    #[error("{0}: the arrfs driver opens files read-only")]
    Writable(String),
    #[error(
        "{0}: libhdf5 opens it by itself (an external link or a virtual dataset's source), \
         but this file is read through arrfs's driver, which only reads the file it was given"
    )]
    NotGiven(String),
    #[error("no file")]
    NoFile,
    #[error("read into a null buffer")]
    NullBuffer,
    #[error("{}: read of {len} bytes at {addr} past the end of the address space", path.display())]
    PastAddressSpace {
        path: PathBuf,
        len: usize,
        addr: u64,
    },
    /// Reading the source failed. An error that may pass carries `errno = N` in its text,
    /// as libhdf5's own drivers write it, so that the listing that met it fails (and is
    /// tried again) instead of leaving objects out for good (see `error::resource_errno`).
    #[error("{0}{suffix}", suffix = errno_note(.0))]
    Read(crate::error::Error),
}

/// ` (errno = N)` for a read error that may pass ([`error::passing_errno`]), as libhdf5's
/// own drivers write errnos; nothing otherwise.
fn errno_note(e: &crate::error::Error) -> String {
    error::passing_errno(e)
        .map(|errno| format!(" (errno = {errno})"))
        .unwrap_or_default()
}

/// Runs a callback body; a panic becomes an HDF5 error (unwinding into C is undefined).
fn guarded<T>(failed: T, minor: hid_t, body: impl FnOnce() -> Result<T, DriverError>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => {
            let message = e.to_string();
            log::debug!("HDF5 driver: {message}");
            push_error(minor, &message);
            failed
        }
        Err(_) => {
            push_error(minor, "arrfs driver: internal error (panic)");
            failed
        }
    }
}

/// `fapl_copy`: a new handle sharing the source.
unsafe extern "C" fn handle_copy(info: *const c_void) -> *mut c_void {
    guarded(std::ptr::null_mut(), *H5E_CANTOPENFILE, || {
        // SAFETY: libhdf5 passes driver info that `open` or an earlier copy made.
        let handle = unsafe { info.cast::<DriverHandle>().as_ref() };
        let handle = handle.ok_or(DriverError::NoDriverInfo)?;
        Ok(Box::into_raw(Box::new(handle.clone())).cast())
    })
}

/// `fapl_free`: drops a handle made by `handle_copy`.
unsafe extern "C" fn handle_free(info: *mut c_void) -> herr_t {
    guarded(-1, *H5E_CANTOPENFILE, || {
        if !info.is_null() {
            // SAFETY: `info` came from `Box::into_raw` in `handle_copy`; libhdf5 frees once.
            drop(unsafe { Box::from_raw(info.cast::<DriverHandle>()) });
        }
        Ok(0)
    })
}

unsafe extern "C" fn file_open(
    name: *const c_char,
    flags: c_uint,
    fapl: hid_t,
    _maxaddr: haddr_t,
) -> *mut DriverFile {
    guarded(std::ptr::null_mut(), *H5E_CANTOPENFILE, || {
        // SAFETY: libhdf5 passes a NUL-terminated name.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
        if flags & (H5F_ACC_RDWR | H5F_ACC_CREAT | H5F_ACC_TRUNC | H5F_ACC_EXCL) != 0 {
            return Err(DriverError::Writable(name.into_owned()));
        }
        // SAFETY: `fapl` is the access list libhdf5 opens with; its driver info, if any,
        // is a `DriverHandle` (this driver's `fapl_copy` made it).
        let handle = unsafe { H5Pget_driver_info(fapl).cast::<DriverHandle>().as_ref() };
        let handle = handle.ok_or_else(|| DriverError::NotGiven(name.into_owned()))?;
        let file = DriverFile {
            // SAFETY: plain integers and a null pointer, all valid zeroed; libhdf5 fills
            // them in.
            public: unsafe { std::mem::zeroed() },
            handle: handle.clone(),
            eoa: AtomicU64::new(0),
        };
        Ok(Box::into_raw(Box::new(file)))
    })
}

/// Borrows our part of a file libhdf5 passes back.
///
/// # Safety
/// `file` must come from [`file_open`] and not be closed.
unsafe fn ours<'a>(file: *const DriverFile) -> Result<&'a DriverFile, DriverError> {
    // SAFETY: the caller's promise: a live `DriverFile` of `file_open`, or null.
    unsafe { file.as_ref() }.ok_or(DriverError::NoFile)
}

unsafe extern "C" fn file_close(file: *mut DriverFile) -> herr_t {
    guarded(-1, *H5E_CANTOPENFILE, || {
        if !file.is_null() {
            // SAFETY: `file` came from `Box::into_raw` in `file_open`; libhdf5 closes once.
            drop(unsafe { Box::from_raw(file) });
        }
        Ok(0)
    })
}

unsafe extern "C" fn file_query(_file: *const DriverFile, flags: *mut c_ulong) -> herr_t {
    // SAFETY: libhdf5 passes a writable flag word, or null.
    if let Some(flags) = unsafe { flags.as_mut() } {
        *flags = FEATURES;
    }
    0
}

unsafe extern "C" fn file_get_eoa(file: *const DriverFile, _type: c_int) -> haddr_t {
    // SAFETY: an open file of this driver.
    guarded(HADDR_UNDEF, *H5E_READERROR, || unsafe {
        Ok(ours(file)?.eoa.load(Relaxed))
    })
}

unsafe extern "C" fn file_set_eoa(file: *mut DriverFile, _type: c_int, addr: haddr_t) -> herr_t {
    guarded(-1, *H5E_READERROR, || {
        // SAFETY: an open file of this driver.
        unsafe { ours(file) }?.eoa.store(addr, Relaxed);
        Ok(0)
    })
}

unsafe extern "C" fn file_get_eof(file: *const DriverFile, _type: c_int) -> haddr_t {
    // SAFETY: an open file of this driver.
    guarded(HADDR_UNDEF, *H5E_READERROR, || unsafe {
        Ok(ours(file)?.handle.source.len())
    })
}

unsafe extern "C" fn file_read(
    file: *mut DriverFile,
    mem_type: c_int,
    _dxpl: hid_t,
    addr: haddr_t,
    size: usize,
    buf: *mut c_void,
) -> herr_t {
    guarded(-1, *H5E_READERROR, || {
        // SAFETY: an open file of this driver.
        let file = unsafe { ours(file) }?;
        if buf.is_null() && size > 0 {
            return Err(DriverError::NullBuffer);
        }
        // SAFETY: libhdf5 passes a buffer of `size` writable bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), size) };
        file.read(addr, buf)?;
        if mem_type == MEM_BTREE {
            file.prefetch_children(buf);
        }
        Ok(0)
    })
}

unsafe extern "C" fn file_write(
    _file: *mut DriverFile,
    _type: c_int,
    _dxpl: hid_t,
    _addr: haddr_t,
    _size: usize,
    _buf: *const c_void,
) -> herr_t {
    push_error(*H5E_WRITEERROR, "the arrfs driver opens files read-only");
    -1
}

impl DriverFile {
    /// Fills `buf` from `addr`; bytes past the end of the file read as zeros, as with
    /// libhdf5's own drivers (libhdf5 reads ahead speculatively, e.g. the superblock).
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DriverError> {
        let source = &self.handle.source;
        let end = addr
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.eoa.load(Relaxed))
            .ok_or_else(|| DriverError::PastAddressSpace {
                path: source.path().to_path_buf(),
                len: buf.len(),
                addr,
            })?;
        self.handle.reads.calls.fetch_add(1, Relaxed);
        self.handle.reads.bytes.fetch_add(buf.len() as u64, Relaxed);
        let in_file = end.min(source.len()).saturating_sub(addr) as usize;
        let (data, past_end) = buf.split_at_mut(in_file);
        past_end.fill(0);
        if data.is_empty() {
            return Ok(());
        }
        source.read_at(addr, data).map_err(DriverError::Read)
    }

    /// Starts fetching the child nodes of the B-tree node just read, which libhdf5 is about
    /// to read one after the other (a remote file then pays one round trip for all of them).
    fn prefetch_children(&self, node: &[u8]) {
        let source = &self.handle.source;
        let children = btree::child_nodes(node, source.len());
        if children.len() < 2 {
            return;
        }
        for child in children {
            source.prefetch(child, NODE_PREFETCH);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    /// Sizes and offsets that a C compiler gives for `H5FD_class_t` and `H5FD_t` of the
    /// bundled HDF5 2.x on x86-64 (`sizeof`/`offsetof` over its H5FDdevelop.h): a field
    /// missing or moved here would make libhdf5 call the wrong function.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn structs_have_the_layout_of_the_bundled_headers() {
        assert_eq!(size_of::<DriverClass>(), 336);
        assert_eq!(offset_of!(DriverClass, read), 208);
        assert_eq!(offset_of!(DriverClass, vector_and_selection), 224);
        assert_eq!(offset_of!(DriverClass, flush), 256);
        assert_eq!(offset_of!(DriverClass, fl_map), 304);
        assert_eq!(size_of::<PublicFile>(), 80);
        assert_eq!(offset_of!(PublicFile, alignment), 64);
        assert_eq!(offset_of!(PublicFile, paged_aggr), 72);
    }

    #[test]
    fn the_driver_registers_once() {
        let first = driver_id().unwrap();
        assert!(first > 0);
        assert_eq!(driver_id().unwrap(), first);
    }
}
