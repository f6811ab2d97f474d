//! The thin FUSE adapter: translates `fuser` requests into calls on [`vfs::Fs`] and its
//! results into replies. No filesystem logic lives here.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::Error;
use crate::vfs::{Attr, Fs, Ino, Kind};

/// The source cannot change while mounted (a change makes reads fail), so the kernel may
/// cache names and attributes for long.
const TTL: Duration = Duration::from_secs(3600);
/// Largest read request we ask the kernel for.
const MAX_REQUEST: u32 = 1 << 20;

/// `-o passthrough`: files whose bytes are a local file's are read by the kernel from it.
pub const PASSTHROUGH_OPTION: &str = "passthrough";

/// Small files to push into the kernel's page cache, as (inode, size).
pub type PushBatch = Vec<(Ino, u64)>;
/// Batches waiting for the pusher at most; more are dropped (pushing only saves time).
const PUSHES_QUEUED: usize = 4;

pub struct FuseAdapter {
    fs: Arc<Fs>,
    /// The kernel can do without open/release requests for files.
    no_open: bool,
    /// To the thread that pushes small files into the page cache ([`push_small_files`]).
    pushes: SyncSender<PushBatch>,
    /// FUSE passthrough asked for (`-o passthrough`) and granted by the kernel.
    passthrough: bool,
    /// The kernel's handles on backing files, one per file while any open of it lasts (the
    /// kernel refuses a second open of a file with another backing file than the first's),
    /// and how many opens use each.
    backing: Mutex<HashMap<Ino, (BackingId, usize)>>,
}

/// The file handle of opens with passthrough; every other open has handle 0.
const PASSTHROUGH_HANDLE: FileHandle = FileHandle(1);

impl FuseAdapter {
    /// An adapter over `fs`, and the receiving end of its page-cache pushes (for
    /// [`push_small_files`], once the session's notifier exists).
    pub fn new(fs: Arc<Fs>, passthrough: bool) -> (Self, Receiver<PushBatch>) {
        let (pushes, batches) = std::sync::mpsc::sync_channel(PUSHES_QUEUED);
        let adapter = FuseAdapter {
            fs,
            no_open: false,
            pushes,
            passthrough,
            backing: Mutex::default(),
        };
        (adapter, batches)
    }

    /// Opens file `ino` with passthrough if its bytes are a local file's; hands `reply`
    /// back otherwise.
    fn open_passthrough(&self, ino: Ino, reply: ReplyOpen) -> Option<ReplyOpen> {
        let mut backings = self.backing.lock().unwrap();
        let (id, opens) = match backings.entry(ino) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(first) => {
                let file = match guarded(|| self.fs.backing_file(ino)) {
                    Ok(Some(file)) => file,
                    Ok(None) => return Some(reply),
                    Err(e) => {
                        reply.error(errno(&e));
                        return None;
                    }
                };
                match reply.open_backing(&file) {
                    Ok(id) => first.insert((id, 0)),
                    Err(e) => {
                        log::warn!("passthrough refused by the kernel ({e}): read through arrfs");
                        return Some(reply);
                    }
                }
            }
        };
        *opens += 1;
        // The kernel refuses passthrough opens with any flag outside its passthrough mask
        // (FOPEN_KEEP_CACHE among them): its page cache is the backing file's then.
        reply.opened_passthrough(PASSTHROUGH_HANDLE, FopenFlags::empty(), id);
        None
    }

    /// After a read from the start of a small file: hands the pusher the small files that
    /// follow it, so that their first reads are page-cache hits.
    fn read_around(&self, ino: Ino) {
        let batch = self.fs.read_around(ino);
        if batch.is_empty() {
            return;
        }
        if let Err(TrySendError::Disconnected(_)) = self.pushes.try_send(batch) {
            log::debug!("page-cache pusher gone: small files are no longer pushed");
        }
    }
}

/// Pushes each batch's files into the kernel's page cache (`FUSE_NOTIFY_STORE`) until the
/// adapter is gone. Runs on its own thread, never on a request thread: the kernel may hold
/// a page of a pushed file locked for a read request, and the store waits for it, so a
/// request thread pushing could wait for itself. A file that cannot be read or stored is
/// passed over: its first read then reaches the daemon as usual, and fails there if it must.
pub fn push_small_files(fs: &Fs, notifier: &fuser::Notifier, batches: &Receiver<PushBatch>) {
    for batch in batches {
        for (ino, size) in batch {
            let Ok(size) = u32::try_from(size) else {
                continue;
            };
            let Ok(data) = fs.read(ino, 0, size) else {
                continue;
            };
            // ENOENT: the kernel has forgotten the inode; nothing to do.
            let _ = notifier.store(INodeNo(ino), 0, &data);
        }
    }
}

/// Runs one request's call into the tree. A panic there (a bug, or a case a source did not
/// foresee) fails that request with EIO and an ERROR log line; the mount and every other
/// request go on.
fn guarded<T>(call: impl FnOnce() -> crate::Result<T>) -> crate::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|panic| {
        let what = crate::logging::panic_message(&*panic);
        log::error!("request failed with a panic (a bug; please report it): {what}");
        Err(Error::Internal(what))
    })
}

/// The errno a request fails with. A data error (the container is broken, a worker died,
/// the store failed) is logged here, once per failed request: the reader sees only EIO.
fn errno(e: &Error) -> Errno {
    if e.is_data_error() {
        log::error!("{e}");
    }
    Errno::from_i32(e.errno())
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: block_size(a.kind),
        flags: 0,
    }
}

/// What `stat` reports as the preferred I/O size. glibc's `opendir` sizes its `getdents`
/// buffer by it (32 KiB to 1 MiB), and the kernel asks `readdirplus` for as many bytes as
/// that buffer holds: at 1 MiB a listing of 100,000 entries takes 17 round trips, not 284.
fn block_size(kind: Kind) -> u32 {
    match kind {
        Kind::Dir => MAX_REQUEST,
        Kind::File | Kind::Symlink => 1 << 16,
    }
}

fn reply_xattr(result: crate::Result<Vec<u8>>, size: u32, reply: ReplyXattr) {
    match result {
        Err(e) => reply.error(errno(&e)),
        Ok(value) if size == 0 => reply.size(value.len() as u32),
        Ok(value) if value.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(value) => reply.data(&value),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Raising max_write raises max_pages, which lets the kernel send 1 MiB reads.
        let _ = config.set_max_write(MAX_REQUEST);
        self.no_open = config
            .capabilities()
            .contains(fuser::InitFlags::FUSE_NO_OPEN_SUPPORT);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS);
        if self.passthrough {
            // Backing files sit on an ordinary filesystem: one level of stacking.
            let granted = config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !granted {
                log::warn!("-o passthrough: the kernel does not offer FUSE passthrough (Linux >= 6.9): every file is read through arrfs");
            }
            self.passthrough = granted;
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match guarded(|| self.fs.lookup(parent.0, name)) {
            Ok(attr) => reply.entry(&TTL, &file_attr(&attr), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match guarded(|| self.fs.getattr(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match guarded(|| self.fs.readlink(ino.0)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Files need no handle: ENOSYS tells the kernel (which advertises
    /// `FUSE_NO_OPEN_SUPPORT`) to stop sending open and release at all and to keep its page
    /// cache across opens, saving two round trips per open of a small file. With
    /// `-o passthrough` every open must reach us (to hand the kernel a backing file where
    /// there is one), so there it is answered. Write opens never get here: the mount is
    /// read-only, so the kernel refuses them with EROFS.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        if let Err(e) = guarded(|| self.fs.open(ino.0, write)) {
            return reply.error(errno(&e));
        }
        if !self.passthrough && self.no_open {
            return reply.error(Errno::ENOSYS);
        }
        if !self.passthrough {
            return reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
        }
        if let Some(reply) = self.open_passthrough(ino.0, reply) {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
        }
    }

    /// Lets go of a passthrough file's backing file once its last open is released.
    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut backings = self.backing.lock().unwrap();
        if fh == PASSTHROUGH_HANDLE {
            if let Entry::Occupied(mut open) = backings.entry(ino.0) {
                open.get_mut().1 -= 1;
                if open.get().1 == 0 {
                    open.remove();
                }
            }
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        match guarded(|| self.fs.read(ino.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => return reply.error(errno(&e)),
        }
        if offset == 0 {
            self.read_around(ino.0);
        }
    }

    /// Nothing to flush; ENOSYS makes the kernel stop sending flush on close.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// No ioctls: ENOTTY, as a plain file answers (Python's `open` asks `isatty` each time).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match guarded(|| self.fs.getattr(ino.0)) {
            Ok(a) if a.kind == Kind::Dir => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = guarded(|| {
            self.fs.readdir(ino.0, offset, |name, attr, next| {
                reply.add(INodeNo(attr.ino), next, file_type(attr.kind), name)
            })
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Entries with their attributes, so that a walk that opens every file (`find`,
    /// `os.walk` + `np.load`) needs no lookup per file.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        let listed = guarded(|| {
            self.fs.readdir(ino.0, offset, |name, attr, next| {
                reply.add(
                    INodeNo(attr.ino),
                    next,
                    name,
                    &TTL,
                    &file_attr(attr),
                    Generation(0),
                )
            })
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(guarded(|| self.fs.getxattr(ino.0, name)), size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(guarded(|| self.fs.listxattr(ino.0)), size, reply);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match guarded(|| self.fs.getattr(ino.0)) {
            Ok(_) if mask.contains(AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // Everything that would change the tree: the mount is read-only.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_request_becomes_eio() {
        let failed = guarded::<()>(|| panic!("capacity overflow"));
        let err = failed.unwrap_err();
        assert_eq!(err.errno(), libc::EIO);
        assert!(err.to_string().contains("capacity overflow"), "{err}");
        assert_eq!(guarded(|| Ok(7)).unwrap(), 7);
    }
}
