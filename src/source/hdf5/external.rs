//! Files outside the HDF5 file that its datasets reach: external links and external raw data
//! (`H5Pset_external`). Both are resolved relative to the file that holds them, as HDF5 does
//! (the file is opened by its absolute path; raw data files under the prefix `${ORIGIN}`,
//! which the binary sets in `HDF5_EXTFILE_PREFIX` before any thread starts: set per dataset
//! access list instead, libhdf5 refuses to open a dataset that its own calls, such as
//! `H5Oget_info_by_name`, have open under the default list), never relative to the daemon's
//! working directory. A target outside the source's own
//! directory is not followed unless `-o external_links=any`: with `-o allow_other` it would
//! show other users a file they may not be allowed to read.
//!
//! A file read through arrfs's driver ([`super::vfd`]) has no local path to resolve them
//! against: its external links, external raw data and virtual datasets with sources in other
//! files are left out, with that reason.

use std::path::{Path, PathBuf};

use hdf5_sys::h5d::{H5D_layout_t, H5Dget_create_plist};
use hdf5_sys::h5p::{H5Pget_layout, H5Pget_virtual_count, H5Pget_virtual_filename};

use super::error::Hdf5Error;
use super::ffi::{external_files, file_name, sync, Hid};

/// libhdf5's variable for where external raw data files are looked up, and the value that
/// means "the directory of the HDF5 file".
pub const EXTFILE_PREFIX_ENV: &str = "HDF5_EXTFILE_PREFIX";
pub const ORIGIN: &str = "${ORIGIN}";

/// Why a file read through arrfs's driver shows nothing from other files.
const NOT_BY_PATH: &str = "it names another file, and this HDF5 file is read through arrfs's \
                           driver, not by a local path, so libhdf5 cannot open files it names";

/// Where external files may lie: inside `root`, or anywhere (`root` None); nowhere if the
/// file is not read `by_path`.
#[derive(Debug)]
pub struct ExternalRoot {
    root: Option<PathBuf>,
    by_path: bool,
}

impl ExternalRoot {
    /// `root`, or the directory of `file` if None; anywhere if `any`. `by_path`: libhdf5
    /// opened `file` by its path (not through arrfs's driver).
    pub fn new(file: &Path, root: Option<&Path>, any: bool, by_path: bool) -> ExternalRoot {
        if any {
            return ExternalRoot {
                root: None,
                by_path,
            };
        }
        let dir = root.or(file.parent()).unwrap_or(Path::new("."));
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        ExternalRoot {
            root: Some(dir),
            by_path,
        }
    }

    /// Whether libhdf5 may open other files at all (not for a file read through the driver).
    pub fn may_open_files(&self) -> Result<(), Hdf5Error> {
        if self.by_path {
            return Ok(());
        }
        Err(Hdf5Error::Refused(NOT_BY_PATH.into()))
    }

    /// Whether the target of external link `name` in `group` (a dataset or not) may be
    /// shown; `Err` says why not.
    pub fn check_link(
        &self,
        group: &hdf5::Group,
        name: &str,
        dataset: bool,
    ) -> Result<(), Hdf5Error> {
        self.may_open_files()?;
        let cannot = |e: hdf5::Error| match Hdf5Error::from(e) {
            Hdf5Error::Library(why) => {
                Hdf5Error::Library(format!("external link cannot be opened: {why}"))
            }
            other => other,
        };
        let target = if dataset {
            file_name(group.dataset(name).map_err(cannot)?.id())
        } else {
            file_name(group.group(name).map_err(cannot)?.id())
        };
        self.check("external link target", &target?)
    }

    /// Whether the external raw data files of dataset `ds` may be read; `Err` says why not.
    pub fn check_raw_data(&self, ds: &hdf5::Dataset) -> Result<(), Hdf5Error> {
        // SAFETY: ds is a valid dataset; the plist is released on drop.
        let dcpl = sync(|| Hid::new(unsafe { H5Dget_create_plist(ds.id()) }))?;
        // SAFETY: `dcpl` is the dataset's own creation property list, held by its `Hid`.
        let files = sync(|| unsafe { external_files(dcpl.0) });
        if files.is_empty() {
            return Ok(());
        }
        self.may_open_files()?;
        if std::env::var(EXTFILE_PREFIX_ENV).as_deref() != Ok(ORIGIN) {
            return Err(Hdf5Error::Refused(format!(
                "external raw data: {EXTFILE_PREFIX_ENV} is not {ORIGIN} (the arrfs binary \
                 sets it): libhdf5 would look in the working directory"
            )));
        }
        let holder = file_name(ds.id())?;
        let dir = holder.parent().unwrap_or(Path::new("/"));
        for file in files {
            self.check("external raw data file", &dir.join(file))?;
        }
        Ok(())
    }

    /// For a file read through the driver: whether virtual dataset `ds` takes data only
    /// from its own file (source file name `.`). libhdf5 reads a source it cannot open as
    /// fill values, which would be wrong bytes rather than an error.
    pub fn check_virtual_sources(&self, ds: &hdf5::Dataset) -> Result<(), Hdf5Error> {
        if self.by_path {
            return Ok(());
        }
        // SAFETY: ds is a valid dataset; the plist is released on drop.
        let dcpl = sync(|| Hid::new(unsafe { H5Dget_create_plist(ds.id()) }))?;
        // SAFETY: queries of the dataset's own creation property list, under the lock.
        let sources = sync(|| unsafe {
            if H5Pget_layout(dcpl.0) != H5D_layout_t::H5D_VIRTUAL {
                return Ok(Vec::new());
            }
            let mut count = 0;
            if H5Pget_virtual_count(dcpl.0, &mut count) < 0 {
                let why = "virtual dataset: its mappings cannot be read";
                return Err(Hdf5Error::Library(why.into()));
            }
            Ok((0..count).map(|i| virtual_filename(dcpl.0, i)).collect())
        })?;
        if sources.iter().all(|name| name.as_deref() == Some(".")) {
            return Ok(());
        }
        Err(Hdf5Error::Refused(format!(
            "virtual dataset: {NOT_BY_PATH}"
        )))
    }

    fn check(&self, what: &str, path: &Path) -> Result<(), Hdf5Error> {
        if path.is_relative() {
            // HDF5 found it only relative to the working directory, its last resort.
            return Err(Hdf5Error::Refused(format!(
                "{what} {} not found next to the file that names it",
                path.display()
            )));
        }
        let found = path
            .canonicalize()
            .map_err(|e| Hdf5Error::of_io(&e, format!("{what} {}: {e}", path.display())))?;
        match &self.root {
            Some(root) if !found.starts_with(root) => Err(Hdf5Error::Refused(format!(
                "{what} {} lies outside {}, the source's directory: not followed (with -o \
                 allow_other it would show other users a file they may not be allowed to \
                 read; -o external_links=any follows it)",
                found.display(),
                root.display()
            ))),
            _ => Ok(()),
        }
    }
}

/// The source file name of mapping `index` of virtual dataset creation list `dcpl`.
///
/// # Safety
/// `dcpl` must be a valid virtual dataset creation property list; call under HDF5's lock.
unsafe fn virtual_filename(dcpl: hdf5_sys::h5i::hid_t, index: usize) -> Option<String> {
    let len = H5Pget_virtual_filename(dcpl, index, std::ptr::null_mut(), 0);
    let mut buf = vec![0u8; usize::try_from(len).ok()? + 1];
    if H5Pget_virtual_filename(dcpl, index, buf.as_mut_ptr().cast(), buf.len()) < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(String::from_utf8_lossy(&buf).into_owned())
}
