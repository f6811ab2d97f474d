//! Containers of arrays. Each format implements [`Source`]: list a directory, read bytes of a
//! file's payload. The virtual tree (`vfs`) knows nothing else about formats.

pub mod dir;
pub mod gguf;
pub mod hdf5;
pub mod npz;
mod path_tree;
pub mod pickle;
pub mod safetensors;
pub mod single;
pub mod tensors;
pub mod torch;
pub mod worker;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::inflate::SeekPointStore;
use crate::io::{Location, SourceFile};
use crate::npy::NpyHeader;

/// A source's own name for one of its directories or files. [`ROOT`] is the top directory.
pub type Key = u64;
pub const ROOT: Key = 0;

/// An extended attribute: full name (`user.h5.units`) and value.
pub type Xattr = (String, Vec<u8>);

/// An entry's extended attributes, shared: the entries of a large group mostly have the
/// same ones (a layout and no attributes), and a listing that crossed from a worker process
/// gives them one copy instead of five allocations per entry.
pub type Xattrs = Arc<[Xattr]>;

/// What a directory holds.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// Extended attributes of the directory itself.
    pub xattrs: Vec<Xattr>,
    /// Children left out, with the reason (shown as `user.arrfs.skipped`).
    pub skipped: Vec<Skipped>,
}

/// A child left out of a listing: its name and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    pub name: String,
    pub why: SkipReason,
}

impl Skipped {
    pub fn new(name: impl Into<String>, why: SkipReason) -> Self {
        Skipped {
            name: name.into(),
            why,
        }
    }
}

/// Why a child is left out. Never a resource error (out of file descriptors or memory,
/// interrupted): that passes with load, so it fails the listing instead of being remembered
/// as a property of the container ([`SkipReason::of_error`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum SkipReason {
    /// Valid in its format, but not an array arrfs serves (its type, layout or kind).
    #[error("{0}")]
    Unsupported(String),
    /// Corrupt, or unreadable for a reason that will not pass.
    #[error("{0}")]
    Broken(String),
    /// Leads outside what the mount may show (external links and files).
    #[error("{0}")]
    Refused(String),
}

impl SkipReason {
    /// Why `e` leaves a child out; None for an error that may pass (a resource shortage, a
    /// store that did not answer), which must fail the listing rather than be remembered.
    pub fn of_error(e: &Error) -> Option<SkipReason> {
        if e.passes() {
            return None;
        }
        Some(SkipReason::Broken(match e {
            Error::Format { cause, .. } => cause.clone(),
            other => other.to_string(),
        }))
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The final name, suffix included (`x.npy`); the tree escapes what a path cannot hold.
    pub name: String,
    pub key: Key,
    pub kind: EntryKind,
    pub xattrs: Xattrs,
    /// Objects reachable by several links share this identity (and so one inode).
    pub identity: Option<u64>,
    pub nlink: u32,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum EntryKind {
    Dir,
    /// A `.npy` whose header the tree writes; [`Source::read`] serves the payload bytes.
    Array(NpyHeader),
    /// A file served byte for byte by [`Source::read`] (npz members, `.npy` files).
    Blob {
        size: u64,
    },
    /// A small file held in memory and served by the tree itself (attribute sidecars).
    Bytes(Arc<[u8]>),
    /// A relative path inside the mount.
    Symlink(String),
}

impl Entry {
    pub fn new(name: String, key: Key, kind: EntryKind) -> Self {
        Entry {
            name,
            key,
            kind,
            xattrs: Xattrs::default(),
            identity: None,
            nlink: 1,
        }
    }
}

pub trait Source: Send + Sync {
    /// The children of directory `dir` (a key from an earlier listing, or [`ROOT`]).
    fn list(&self, dir: Key) -> Result<Listing>;

    /// Fills `buf` with payload bytes from `offset` of file `file`. Callers never read past
    /// the end; a short count is an error in the source. `buf` arrives zeroed: bytes a
    /// source leaves unwritten (the padding between compound members) stay zero, as in
    /// the arrays numpy makes.
    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// A local file whose bytes are exactly those of file `file`, offset for offset, for
    /// the kernel to read itself (FUSE passthrough, `-o passthrough`), checked unchanged
    /// now. None, the default, for every file arrfs makes or translates.
    fn backing_file(&self, _file: Key) -> Result<Option<std::fs::File>> {
        Ok(None)
    }

    /// The source's own name for `key` (an HDF5 object's path), for log lines; None, the
    /// default, where the tree's path says it all.
    fn name_of(&self, _key: Key) -> Option<String> {
        None
    }
}

/// The container formats, told apart by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Hdf5,
    /// NPZ or any zip archive; a PyTorch checkpoint if it holds `NAME/data.pkl`.
    Zip,
    Npy,
    /// A gzip-wrapped `.npy`.
    Gzip,
    /// A directory of containers.
    Dir,
    Pickle,
    Safetensors,
    Gguf,
    /// A PyTorch checkpoint of torch < 1.6 (or `_use_new_zipfile_serialization=False`).
    TorchLegacy,
}

const ZIP_MAGICS: [&[u8]; 2] = [b"PK\x03\x04", b"PK\x05\x06"];
const GZIP_MAGIC: &[u8] = b"\x1f\x8b";

/// Detects the format of `location` (a file or a directory) from its magic bytes.
pub fn detect(location: &Location) -> Result<Format> {
    if location.is_dir()? {
        return Ok(Format::Dir);
    }
    detect_file(location)?.ok_or_else(|| {
        Error::format(
            location.display(),
            "unknown format (not HDF5, NPZ/zip, pickle, .npy, .npy.gz, safetensors, GGUF or a PyTorch checkpoint)",
        )
    })
}

/// The container format of a file, or None if it is none we read.
pub fn detect_file(location: &Location) -> Result<Option<Format>> {
    detect_opened(&SourceFile::open(location)?)
}

/// The container format of an open file, or None if it is none we read.
pub fn detect_opened(file: &SourceFile) -> Result<Option<Format>> {
    let mut head = [0u8; 16];
    let n = (file.len().min(head.len() as u64)) as usize;
    file.read_at(0, &mut head[..n])?;
    let head = &head[..n];
    let format = match head {
        h if safetensors::sniff(h) => Some(Format::Safetensors),
        h if h.starts_with(gguf::MAGIC) => Some(Format::Gguf),
        h if h.starts_with(torch::LEGACY_MAGIC) => Some(Format::TorchLegacy),
        h if ZIP_MAGICS.iter().any(|m| h.starts_with(m)) => Some(Format::Zip),
        h if h.starts_with(crate::npy::NPY_MAGIC) => Some(Format::Npy),
        // A gzip-wrapped pickle is a pickle; any other gzip file is taken for a `.npy.gz`.
        h if h.starts_with(GZIP_MAGIC) && pickle::sniff(file)? => Some(Format::Pickle),
        h if h.starts_with(GZIP_MAGIC) => Some(Format::Gzip),
        _ if hdf5::signature_offset(file)?.is_some() => Some(Format::Hdf5),
        _ if pickle::sniff(file)? => Some(Format::Pickle),
        _ => None,
    };
    Ok(format)
}

/// Opens `location` as the source of its detected format.
pub fn open(location: &Location, options: &SourceOptions) -> Result<Arc<dyn Source>> {
    match detect(location)? {
        Format::Dir => Ok(Arc::new(dir::DirSource::open(location, options)?)),
        format => {
            let store = SeekPointStore::new(options.cache_size);
            open_container(location, format, options, &store)
        }
    }
}

/// Opens a container file of a known format; deflate seek points are kept in `store`.
pub fn open_container(
    location: &Location,
    format: Format,
    options: &SourceOptions,
    store: &Arc<SeekPointStore>,
) -> Result<Arc<dyn Source>> {
    Ok(match format {
        Format::Hdf5 if options.hdf5_worker => Arc::new(worker::open(location, options)?),
        Format::Hdf5 => Arc::new(hdf5::Hdf5Source::open_location(location, options)?),
        Format::Zip => open_zip(location, options, store)?,
        Format::Npy => Arc::new(single::NpyFileSource::open(location)?),
        Format::Gzip => Arc::new(single::GzipNpySource::open_with_store(location, store.clone())?),
        Format::Dir => Arc::new(dir::DirSource::open(location, options)?),
        Format::Pickle => Arc::new(pickle::open(location, options)?),
        Format::Safetensors => Arc::new(safetensors::open(location, options)?),
        Format::Gguf => Arc::new(gguf::open(location, options)?),
        Format::TorchLegacy => {
            return Err(Error::format(
                location.display(),
                "legacy PyTorch checkpoint (torch < 1.6 format) is not supported; re-save it with a current torch.save",
            ))
        }
    })
}

/// A zip is a PyTorch checkpoint if it holds `NAME/data.pkl`, else an NPZ / zip of arrays.
fn open_zip(
    location: &Location,
    options: &SourceOptions,
    store: &Arc<SeekPointStore>,
) -> Result<Arc<dyn Source>> {
    let file = Arc::new(SourceFile::open(location)?);
    let members = npz::read_central_directory(&file)?;
    if torch::data_pkl(&members).is_some() {
        return torch::open_source(file, &members, options);
    }
    let zip = npz::ZipSource::from_members(file, members, store.clone())?;
    Ok(Arc::new(zip.verifying_on_open(options.verify_on_open)))
}

/// Settings every source may use.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Bytes of decoded data a source may keep cached.
    pub cache_size: u64,
    /// Add `x.attrs.json` / `.attrs.json` sidecars with every attribute, typed.
    pub attrs_json: bool,
    /// Run libhdf5 for each HDF5 file in a worker process ([`worker`]), so a crash or a
    /// hang inside it fails requests, not the mount; off with `-o no_hdf5_check`.
    pub hdf5_worker: bool,
    /// `-o hdf5_check_timeout=SECONDS`: longest one call of a worker (opening the file,
    /// one listing, one read) may take.
    pub hdf5_call_limit: std::time::Duration,
    /// `-o split_names=SEP`: tensor names of checkpoints split into directories at SEP.
    pub split_names: Option<String>,
    /// `-o widen=f32`: bfloat16 and float8 tensors served as `<f4` ([`crate::npy::widen`]).
    pub widen: bool,
    /// Follow external links and external raw data anywhere (`-o external_links=any`), not
    /// only inside the source's own directory.
    pub external_links_any: bool,
    /// `-o verify=open`: a zip member's CRC-32 is checked in full on its first read, so a
    /// corrupt member fails every read, not only the one reaching its end.
    pub verify_on_open: bool,
    /// The source's own directory (the directory mounted); None: the container's directory.
    pub root: Option<std::path::PathBuf>,
    /// Whoever opens the source lists its root right away (a worker does): an HDF5 file
    /// then skips reading its root's links at open, which that listing does anyway.
    pub root_listed_at_open: bool,
}

/// `-o no_hdf5_check`: run libhdf5 in the daemon itself, with no worker process (for
/// trusted files; a crash in libhdf5 then ends the mount).
const NO_HDF5_CHECK: &str = "no_hdf5_check";
/// `-o hdf5_check_timeout=SECONDS`: one call of an HDF5 worker (opening the file, one
/// listing, one read) slower than this is a hang.
pub const STEP_LIMIT_OPTION: &str = "hdf5_check_timeout=";
/// `-o split_names=SEP`: checkpoint tensor names become directories at SEP.
const SPLIT_NAMES: &str = "split_names=";
/// `-o widen=f32`.
const WIDEN: &str = "widen=";
/// `-o external_links=any`: follow external links and raw data files outside the source's
/// directory.
const EXTERNAL_LINKS_ANY: &str = "external_links=any";
/// `-o verify=open`: check each zip member's CRC-32 in full when it is first read.
const VERIFY_OPEN: &str = "verify=open";

impl SourceOptions {
    /// Whether `-o opt` is about the tree (taken by [`Self::apply`]) rather than the mount.
    pub fn is_source_option(opt: &str) -> bool {
        opt == NO_HDF5_CHECK
            || opt == EXTERNAL_LINKS_ANY
            || opt == VERIFY_OPEN
            || opt.starts_with(SPLIT_NAMES)
            || opt.starts_with(WIDEN)
            || opt.starts_with(STEP_LIMIT_OPTION)
    }

    /// Applies one `-o` option; an option that is not a source option is a usage error.
    pub fn apply(&mut self, opt: &str) -> Result<()> {
        if opt == NO_HDF5_CHECK {
            self.hdf5_worker = false;
        } else if opt == EXTERNAL_LINKS_ANY {
            self.external_links_any = true;
        } else if opt == VERIFY_OPEN {
            self.verify_on_open = true;
        } else if let Some(seconds) = opt.strip_prefix(STEP_LIMIT_OPTION) {
            self.hdf5_call_limit = seconds
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| {
                    Error::Usage(format!("-o {opt}: takes a positive number of seconds"))
                })?;
        } else if let Some(sep) = opt.strip_prefix(SPLIT_NAMES) {
            self.split_names = Some(sep.to_string());
        } else if let Some(to) = opt.strip_prefix(WIDEN) {
            if to != "f32" {
                return Err(Error::Usage(format!(
                    "-o {opt}: only widen=f32 is supported"
                )));
            }
            self.widen = true;
        } else {
            return Err(Error::Usage(format!(
                "-o {opt}: not a source option (split_names=SEP, widen=f32, no_hdf5_check, hdf5_check_timeout=SECONDS, external_links=any, verify=open)"
            )));
        }
        Ok(())
    }
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            cache_size: 256 << 20,
            attrs_json: false,
            hdf5_worker: false,
            hdf5_call_limit: worker::DEFAULT_CALL_LIMIT,
            split_names: None,
            widen: false,
            external_links_any: false,
            verify_on_open: false,
            root: None,
            root_listed_at_open: false,
        }
    }
}
