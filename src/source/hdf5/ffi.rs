//! Thin safe helpers over the libhdf5 C API, for what hdf5-metno does not expose (raw types,
//! hyperslab reads in the file's own type, link values). Every call holds HDF5's global lock.

use std::ffi::{c_char, c_void, CStr, CString};

use hdf5_sys::h5::{haddr_t, herr_t, hsize_t, H5free_memory, HADDR_UNDEF};
use hdf5_sys::h5d::{H5Dget_space, H5Dread};
use hdf5_sys::h5f::{H5Fget_create_plist, H5Fget_name};
use hdf5_sys::h5i::{hid_t, H5Idec_ref, H5Iget_file_id};
use hdf5_sys::h5l::H5Lget_val;
use hdf5_sys::h5o::{H5O_info2_t, H5O_token_t, H5Oget_info3, H5O_INFO_BASIC};
use hdf5_sys::h5p::{H5Pget_external, H5Pget_external_count, H5P_DEFAULT};
use hdf5_sys::h5p::{H5Pget_sizes, H5Pget_userblock};
use hdf5_sys::h5s::{H5S_seloper_t, H5Screate_simple, H5Sselect_hyperslab, H5S_ALL};
use hdf5_sys::h5t::H5Tget_size;

use super::heap::FileLayout;

pub use hdf5::h5check;
pub use hdf5::sync::sync;

/// An owned HDF5 identifier (type, space, property list), released on drop.
#[derive(Debug)]
pub struct Hid(pub hid_t);

impl Hid {
    /// Takes ownership of the id a C call returned, or the HDF5 error it raised.
    pub fn new(id: hid_t) -> hdf5::Result<Hid> {
        h5check(id).map(Hid)
    }
}

impl Drop for Hid {
    fn drop(&mut self) {
        // SAFETY: we own one reference to a valid id.
        sync(|| unsafe { H5Idec_ref(self.0) });
    }
}

/// Takes a string that HDF5 allocated and frees it.
///
/// # Safety
/// `ptr` must be null or a NUL-terminated string allocated by the HDF5 library.
pub unsafe fn take_h5_string(ptr: *mut c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    let text = CStr::from_ptr(ptr).to_string_lossy().into_owned();
    H5free_memory(ptr.cast());
    Some(text)
}

/// Reads the hyperslab `start`/`count` of dataset `dset` (or, for rank 0, the whole scalar)
/// in memory type `mem_type` into `buf`, which must hold exactly the selected elements:
/// anything else is an error, never a write past its end.
pub fn read_hyperslab(
    dset: hid_t,
    mem_type: hid_t,
    start: &[u64],
    count: &[u64],
    buf: &mut [u8],
) -> hdf5::Result<()> {
    read_hyperslab_with(dset, mem_type, start, count, buf, H5P_DEFAULT)
}

/// [`read_hyperslab`] with the transfer property list `dxpl` (e.g. one whose allocator for
/// variable-length data is bounded: `vlen.rs`).
pub fn read_hyperslab_with(
    dset: hid_t,
    mem_type: hid_t,
    start: &[u64],
    count: &[u64],
    buf: &mut [u8],
    dxpl: hid_t,
) -> hdf5::Result<()> {
    sync(|| {
        // SAFETY: a plain query of a type id the caller holds.
        let element = unsafe { H5Tget_size(mem_type) };
        let elements = count
            .iter()
            .try_fold(1usize, |n, &c| n.checked_mul(c as usize));
        if elements.and_then(|n| n.checked_mul(element)) != Some(buf.len()) || element == 0 {
            return Err(hdf5::Error::from(format!(
                "a buffer of {} bytes cannot hold {count:?} elements of {element} bytes",
                buf.len()
            )));
        }
        let out = buf.as_mut_ptr().cast::<c_void>();
        if start.is_empty() {
            // SAFETY: `buf` holds exactly the one element of mem_type (checked above).
            h5check(unsafe { H5Dread(dset, mem_type, H5S_ALL, H5S_ALL, dxpl, out) })?;
            return Ok(());
        }
        // SAFETY: dset is valid (the caller's handle); the space is released on drop.
        let file_space = Hid::new(unsafe { H5Dget_space(dset) })?;
        let rank = start.len() as i32;
        let count: Vec<hsize_t> = count.to_vec();
        let start: Vec<hsize_t> = start.to_vec();
        // SAFETY: `count` has `rank` entries.
        let mem_space =
            Hid::new(unsafe { H5Screate_simple(rank, count.as_ptr(), std::ptr::null()) })?;
        // SAFETY: `start` and `count` have the rank of the dataset's space (the caller's
        // boxes come from its shape); null stride and block mean 1.
        h5check(unsafe {
            H5Sselect_hyperslab(
                file_space.0,
                H5S_seloper_t::H5S_SELECT_SET,
                start.as_ptr(),
                std::ptr::null(),
                count.as_ptr(),
                std::ptr::null(),
            )
        })?;
        // SAFETY: `buf` holds exactly the selected elements of mem_type (checked above).
        h5check(unsafe { H5Dread(dset, mem_type, mem_space.0, file_space.0, dxpl, out) })?;
        Ok(())
    })
}

/// The bytes of a buffer of C string pointers, for [`read_hyperslab`] of variable-length
/// strings (whose memory type is one pointer wide).
pub fn pointer_bytes(ptrs: &mut [*mut c_char]) -> &mut [u8] {
    let len = std::mem::size_of_val(ptrs);
    // SAFETY: the slice's own memory, viewed as bytes for as long as the borrow lasts;
    // any bit pattern libhdf5 writes there is a valid pointer value.
    unsafe { std::slice::from_raw_parts_mut(ptrs.as_mut_ptr().cast::<u8>(), len) }
}

/// The target path of soft link `name` in group `group`.
pub fn soft_link_target(group: hid_t, name: &str) -> hdf5::Result<String> {
    let cname = CString::new(name).map_err(|e| hdf5::Error::from(e.to_string()))?;
    sync(|| {
        let mut buf = vec![0u8; 4096];
        loop {
            // SAFETY: buf is writable for its length.
            h5check(unsafe {
                H5Lget_val(
                    group,
                    cname.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    H5P_DEFAULT,
                )
            })?;
            let Some(end) = buf.iter().position(|&b| b == 0) else {
                buf.resize(buf.len() * 2, 0);
                continue;
            };
            return Ok(String::from_utf8_lossy(&buf[..end]).into_owned());
        }
    })
}

/// The name of the file that holds object `obj`, as libhdf5 opened it.
pub fn file_name(obj: hid_t) -> hdf5::Result<std::path::PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    sync(|| {
        // SAFETY: a null buffer asks for the length only.
        let len = h5check(unsafe { H5Fget_name(obj, std::ptr::null_mut(), 0) })?;
        let mut buf = vec![0u8; len as usize + 1];
        // SAFETY: buf is writable for its length.
        h5check(unsafe { H5Fget_name(obj, buf.as_mut_ptr().cast(), buf.len()) })?;
        buf.truncate(len as usize);
        Ok(std::ffi::OsString::from_vec(buf).into())
    })
}

/// The external raw data files of a dataset's creation property list, in order.
///
/// # Safety
/// `dcpl` must be a valid dataset creation property list; call under HDF5's lock.
pub unsafe fn external_files(dcpl: hid_t) -> Vec<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let count = H5Pget_external_count(dcpl).max(0) as u32;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let mut name = vec![0u8; 4096];
        let (mut offset, mut size) = (0, 0);
        if H5Pget_external(
            dcpl,
            i,
            name.len(),
            name.as_mut_ptr().cast(),
            &mut offset,
            &mut size,
        ) < 0
        {
            continue;
        }
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push(std::ffi::OsStr::from_bytes(&name[..end]).into());
    }
    out
}

extern "C" {
    // H5Fpublic.h, not bound by hdf5-sys: the end of allocated space, absolute (the user
    // block included).
    fn H5Fget_eoa(file_id: hid_t, eoa: *mut haddr_t) -> herr_t;
    // H5VLnative.h (HDF5 1.12 and later), not bound by hdf5-sys: the address a token of the
    // native file format holds.
    fn H5VLnative_token_to_addr(loc_id: hid_t, token: H5O_token_t, addr: *mut haddr_t) -> herr_t;
}

/// The address of the object header of `obj` (a group, dataset or named type), relative to
/// the file's base (`FileLayout::base`).
pub fn header_address(obj: hid_t) -> Option<u64> {
    // SAFETY: under HDF5's lock; both calls write only into the locals given.
    sync(|| unsafe {
        let mut info: H5O_info2_t = std::mem::zeroed();
        h5check(H5Oget_info3(obj, &mut info, H5O_INFO_BASIC)).ok()?;
        let mut addr: haddr_t = HADDR_UNDEF;
        h5check(H5VLnative_token_to_addr(obj, info.token, &mut addr)).ok()?;
        (addr != HADDR_UNDEF).then_some(addr)
    })
}

/// How addresses are written in the file that holds `obj`: from its superblock sizes and
/// user block. None if they cannot be had or are not sane.
pub fn file_layout(obj: hid_t) -> Option<FileLayout> {
    // SAFETY: under HDF5's lock, plain queries of ids owned by `Hid`s, writing only into
    // locals.
    sync(|| unsafe {
        let file = Hid::new(H5Iget_file_id(obj)).ok()?;
        let fcpl = Hid::new(H5Fget_create_plist(file.0)).ok()?;
        let (mut sizeof_addr, mut sizeof_size) = (0, 0);
        h5check(H5Pget_sizes(fcpl.0, &mut sizeof_addr, &mut sizeof_size)).ok()?;
        let mut base = 0;
        h5check(H5Pget_userblock(fcpl.0, &mut base)).ok()?;
        let sane = |n: usize| (1..=8).contains(&n);
        (sane(sizeof_addr) && sane(sizeof_size)).then_some(FileLayout {
            base,
            sizeof_addr,
            sizeof_size,
        })
    })
}

/// The end of allocated space of the file that holds `obj`, relative to its base (`base`,
/// the user block), as libhdf5 checks raw data addresses against it. None if the driver
/// cannot tell (only drivers fit for SWMR answer).
pub fn relative_eoa(obj: hid_t, base: u64) -> Option<u64> {
    // SAFETY: under HDF5's lock, a query of a file id owned by a `Hid`, writing only into
    // a local.
    sync(|| unsafe {
        let file = Hid::new(H5Iget_file_id(obj)).ok()?;
        let mut eoa: haddr_t = HADDR_UNDEF;
        h5check(H5Fget_eoa(file.0, &mut eoa)).ok()?;
        (eoa != HADDR_UNDEF)
            .then(|| eoa.checked_sub(base))
            .flatten()
    })
}

/// One link of a group, as [`links`] gives it.
pub struct Link {
    /// Its name, as hdf5-metno gives names (invalid UTF-8 replaced).
    pub name: String,
    pub kind: hdf5::LinkType,
    /// The object header address a hard link with a UTF-8 name points at (relative to the
    /// file's base); None for other links.
    pub address: Option<u64>,
}

/// The links of group `group` in increasing name order, as `Group::links` lists them, with
/// the address a hard link points at (which `Group::links` does not give).
pub fn links(group: hid_t) -> hdf5::Result<Vec<Link>> {
    use hdf5_sys::h5::{H5_index_t, H5_iter_order_t};
    use hdf5_sys::h5l::{H5L_info2_t, H5L_type_t, H5Literate2};

    struct Found {
        links: Vec<Link>,
    }
    unsafe extern "C" fn each(
        group: hid_t,
        name: *const c_char,
        info: *const H5L_info2_t,
        data: *mut c_void,
    ) -> herr_t {
        // SAFETY: libhdf5 passes the name and info of one link, valid during this call, and
        // `data` is the `Found` given to H5Literate2 below, borrowed by no one else.
        let (found, name, info) =
            unsafe { (&mut *data.cast::<Found>(), CStr::from_ptr(name), &*info) };
        let text = name.to_string_lossy();
        let utf8 = matches!(text, std::borrow::Cow::Borrowed(_));
        let address = (info.type_ == H5L_type_t::H5L_TYPE_HARD && utf8)
            .then(|| {
                let mut u = info.u;
                // SAFETY: a hard link's info holds a token; the copy `u` is ours to read.
                let token = unsafe { *u.token() };
                let mut addr: haddr_t = HADDR_UNDEF;
                // SAFETY: a token of the group's own (native) file; writes only `addr`.
                let ok = unsafe { H5VLnative_token_to_addr(group, token, &mut addr) } >= 0;
                (ok && addr != HADDR_UNDEF).then_some(addr)
            })
            .flatten();
        found.links.push(Link {
            name: text.into_owned(),
            kind: info.type_.into(),
            address,
        });
        0
    }
    let mut found = Found { links: Vec::new() };
    sync(|| {
        let mut index = 0;
        // SAFETY: `each` matches H5L_iterate2_t and `found` outlives the iteration.
        h5check(unsafe {
            H5Literate2(
                group,
                H5_index_t::H5_INDEX_NAME,
                H5_iter_order_t::H5_ITER_INC,
                &mut index,
                Some(each),
                (&mut found as *mut Found).cast(),
            )
        })
    })?;
    Ok(found.links)
}

/// The "group internal/leaf node K" of the file that holds `obj` (its superblock's B-tree
/// node sizes for old-style groups).
pub fn symbol_k(obj: hid_t) -> Option<super::stab::SymbolK> {
    // SAFETY: under HDF5's lock, plain queries of ids owned by `Hid`s, writing only into
    // locals.
    sync(|| unsafe {
        let file = Hid::new(H5Iget_file_id(obj)).ok()?;
        let fcpl = Hid::new(H5Fget_create_plist(file.0)).ok()?;
        let (mut internal, mut leaf) = (0, 0);
        h5check(hdf5_sys::h5p::H5Pget_sym_k(
            fcpl.0,
            &mut internal,
            &mut leaf,
        ))
        .ok()?;
        (internal > 0 && leaf > 0).then_some(super::stab::SymbolK { internal, leaf })
    })
}
