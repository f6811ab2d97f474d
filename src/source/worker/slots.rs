//! Memory shared by the daemon and its worker: a memfd mapped by both, cut into slots of
//! [`SLOT_BYTES`]. A read hands the worker a slot; the worker writes the bytes there, so
//! payloads cost no copy through the socket. A slot belongs to one read at a time
//! ([`Slot`]), and is given back only once the worker that wrote it has answered or died.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Condvar, Mutex};

use memmap2::MmapRaw;

use crate::error::{Error, Result};

/// Bytes of one slot: the largest read the kernel sends (`max_write` raises it to 1 MiB);
/// a larger read goes in several.
pub const SLOT_BYTES: usize = 1 << 20;
/// Reads in flight at once per worker.
pub const SLOTS: usize = 16;

pub struct Slots {
    file: File,
    map: MmapRaw,
    free: Mutex<Vec<u32>>,
    freed: Condvar,
}

/// One slot, held by one read until dropped.
pub struct Slot<'a> {
    slots: &'a Slots,
    pub index: u32,
}

impl Slots {
    /// Shared memory for [`SLOTS`] slots, in a fresh memfd.
    pub fn new() -> Result<Slots> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd
        // or -1, which is checked before the fd is owned.
        let fd = unsafe { libc::memfd_create(c"arrfs-worker".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::io("memfd", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len((SLOTS * SLOT_BYTES) as u64)
            .map_err(|e| Error::io("memfd", e))?;
        Slots::map(file)
    }

    /// The worker's side: maps the memfd it inherited.
    pub fn map(file: File) -> Result<Slots> {
        let map = MmapRaw::map_raw(&file).map_err(|e| Error::io("memfd", e))?;
        if map.len() < SLOTS * SLOT_BYTES {
            return Err(Error::Internal("shared slots too small".into()));
        }
        Ok(Slots {
            file,
            map,
            free: Mutex::new((0..SLOTS as u32).collect()),
            freed: Condvar::new(),
        })
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// A free slot, waiting for one if all are taken.
    pub fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap();
        loop {
            if let Some(index) = free.pop() {
                return Slot { slots: self, index };
            }
            free = self.freed.wait(free).unwrap();
        }
    }

    /// The first `len` bytes of slot `index`.
    ///
    /// # Safety
    /// Nobody else may use the slot while the slice lives: in the daemon, the caller holds
    /// its [`Slot`] and its worker has answered or is dead; in the worker, the daemon gave
    /// the slot to this one request.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes(&self, index: u32, len: usize) -> Option<&mut [u8]> {
        if index as usize >= SLOTS || len > SLOT_BYTES {
            return None;
        }
        // SAFETY: the slot lies inside the mapping (checked above and in `map`), which lives
        // as long as `self`; exclusive use is the caller's promise.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.map.as_mut_ptr().add(index as usize * SLOT_BYTES),
                len,
            )
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.free.lock().unwrap().push(self.index);
        self.slots.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_mappings_see_the_same_bytes() {
        let daemon = Slots::new().unwrap();
        let worker = Slots::map(daemon.file.try_clone().unwrap()).unwrap();
        let slot = daemon.take();
        // SAFETY: this test is the only user of the slot.
        unsafe { worker.bytes(slot.index, 3).unwrap() }.copy_from_slice(b"abc");
        // SAFETY: as above; the write is done.
        assert_eq!(unsafe { daemon.bytes(slot.index, 3).unwrap() }, b"abc");
        // SAFETY: out of range: no slice is made.
        assert!(unsafe { daemon.bytes(SLOTS as u32, 1) }.is_none());
    }

    #[test]
    fn every_slot_is_given_once_until_dropped() {
        let slots = Slots::new().unwrap();
        let taken: Vec<_> = (0..SLOTS).map(|_| slots.take()).collect();
        let mut indices: Vec<u32> = taken.iter().map(|s| s.index).collect();
        indices.sort();
        indices.dedup();
        assert_eq!(indices.len(), SLOTS);
        drop(taken);
        assert_eq!(slots.free.lock().unwrap().len(), SLOTS);
    }
}
