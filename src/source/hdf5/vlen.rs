//! Variable-length strings read through libhdf5 with a bounded allocator.
//!
//! libhdf5 allocates each string as long as the length stored beside its global-heap
//! reference says, before it looks at the heap object: a damaged length of 1.6 GB costs
//! 1.6 GB. Reads of variable-length data therefore go through a transfer property list whose
//! allocator is ours ([`H5Pset_vlen_mem_manager`]): it refuses a string longer than
//! `each` bytes or a read that would hold more than `total` bytes, so libhdf5's read fails
//! instead, and it frees every string itself when the read is over, failed or not (libhdf5
//! does not reclaim what a failed conversion allocated).

use std::collections::HashSet;
use std::ffi::{c_char, c_void, CStr};

use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::{H5Pcreate, H5Pset_vlen_mem_manager, H5P_CLS_DATASET_XFER};

use super::ffi::{h5check, read_hyperslab_with, sync, Hid};

/// Bytes of variable-length data one read may hold at most: the documented per-entry bound.
pub const VLEN_BYTES_PER_READ: usize = 64 << 20;

/// What a bounded read of variable-length data gave.
#[derive(Debug)]
pub enum VlenError {
    /// A string (or the read's strings together) would have needed more than the bound:
    /// the bytes asked for.
    OverBound(usize),
    /// libhdf5 failed the read for another reason.
    Hdf5(hdf5::Error),
}

impl std::fmt::Display for VlenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VlenError::OverBound(bytes) => write!(
                f,
                "a variable-length string would need {bytes} bytes, over arrfs's bound \
                 (damaged length?)"
            ),
            VlenError::Hdf5(e) => write!(f, "{e}"),
        }
    }
}

impl From<hdf5::Error> for VlenError {
    fn from(e: hdf5::Error) -> Self {
        VlenError::Hdf5(e)
    }
}

/// The strings libhdf5 allocated during one read; all freed on drop.
pub struct VlenArena {
    live: HashSet<usize>,
    held: usize,
    /// Bytes one string may take (with its NUL).
    each: usize,
    /// Bytes all strings of the read may take together.
    total: usize,
    /// The first allocation refused, in bytes.
    refused: Option<usize>,
}

impl VlenArena {
    pub fn new(each: usize, total: usize) -> VlenArena {
        VlenArena {
            live: HashSet::new(),
            held: 0,
            each,
            total,
            refused: None,
        }
    }

    /// Reads the hyperslab `start`/`count` of `dset` into `buf` (as [`read_hyperslab_with`]),
    /// variable-length parts allocated in this arena.
    pub fn read(
        &mut self,
        dset: hid_t,
        mem_type: hid_t,
        start: &[u64],
        count: &[u64],
        buf: &mut [u8],
    ) -> Result<(), VlenError> {
        let info: *mut VlenArena = self;
        // SAFETY: under HDF5's lock; the property list is owned by a `Hid`; the callbacks
        // get `info`, which points to this arena, alive and not otherwise used until the
        // read below returns.
        let dxpl = sync(|| unsafe {
            let dxpl = Hid::new(H5Pcreate(*H5P_CLS_DATASET_XFER))?;
            h5check(H5Pset_vlen_mem_manager(
                dxpl.0,
                Some(arena_alloc),
                info.cast(),
                Some(arena_free),
                info.cast(),
            ))?;
            Ok::<_, hdf5::Error>(dxpl)
        })?;
        let read = read_hyperslab_with(dset, mem_type, start, count, buf, dxpl.0);
        match (read, self.refused) {
            (_, Some(bytes)) => Err(VlenError::OverBound(bytes)),
            (Err(e), None) => Err(VlenError::Hdf5(e)),
            (Ok(()), None) => Ok(()),
        }
    }

    fn alloc(&mut self, size: usize) -> *mut c_void {
        let fits = size <= self.each && self.held.saturating_add(size) <= self.total;
        if !fits {
            self.refused.get_or_insert(size);
            return std::ptr::null_mut();
        }
        // SAFETY: a plain allocation, freed by `free` or on drop.
        let ptr = unsafe { libc::malloc(size.max(1)) };
        if !ptr.is_null() {
            self.held += size;
            self.live.insert(ptr as usize);
        }
        ptr
    }

    fn free(&mut self, ptr: *mut c_void) {
        if self.live.remove(&(ptr as usize)) {
            // SAFETY: allocated by `alloc` and removed from `live`, so freed once.
            unsafe { libc::free(ptr) };
        }
    }
}

impl Drop for VlenArena {
    fn drop(&mut self) {
        for ptr in self.live.drain() {
            // SAFETY: each live pointer came from `alloc` and was not freed since.
            unsafe { libc::free(ptr as *mut c_void) };
        }
    }
}

/// The string at `ptr` (invalid UTF-8 replaced); empty for null.
///
/// # Safety
/// `ptr` must be null or a NUL-terminated string in an arena that is still alive.
pub unsafe fn arena_string(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    CStr::from_ptr(ptr).to_string_lossy().into_owned()
}

unsafe extern "C" fn arena_alloc(size: libc::size_t, info: *mut c_void) -> *mut c_void {
    // SAFETY: `info` is the arena that set up this read (`VlenArena::read`).
    (*info.cast::<VlenArena>()).alloc(size)
}

unsafe extern "C" fn arena_free(ptr: *mut c_void, info: *mut c_void) {
    // SAFETY: as for `arena_alloc`.
    (*info.cast::<VlenArena>()).free(ptr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_string_over_its_bound_and_a_read_over_its_total() {
        let mut arena = VlenArena::new(100, 150);
        assert!(arena.alloc(101).is_null());
        assert_eq!(arena.refused, Some(101));
        let mut arena = VlenArena::new(100, 150);
        let first = arena.alloc(100);
        assert!(!first.is_null());
        assert!(arena.alloc(60).is_null(), "160 bytes in all is over 150");
        arena.free(first);
        assert_eq!(arena.live.len(), 0);
        assert!(!arena.alloc(10).is_null());
    }
}
