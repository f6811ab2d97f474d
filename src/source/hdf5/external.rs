//! Files outside the HDF5 file that its datasets reach: external links and external raw data
//! (`H5Pset_external`). Both are resolved relative to the file that holds them, as HDF5 does
//! (the file is opened by its absolute path; raw data files under the prefix `${ORIGIN}`,
//! which the binary sets in `HDF5_EXTFILE_PREFIX` before any thread starts: set per dataset
//! access list instead, libhdf5 refuses to open a dataset that its own calls, such as
//! `H5Oget_info_by_name`, have open under the default list), never relative to the daemon's
//! working directory. A target outside the source's own
//! directory is not followed unless `-o external_links=any`: with `-o allow_other` it would
//! show other users a file they may not be allowed to read.

use std::path::{Path, PathBuf};

use hdf5_sys::h5d::H5Dget_create_plist;

use super::ffi::{external_files, file_name, sync, Hid};

/// libhdf5's variable for where external raw data files are looked up, and the value that
/// means "the directory of the HDF5 file".
pub const EXTFILE_PREFIX_ENV: &str = "HDF5_EXTFILE_PREFIX";
pub const ORIGIN: &str = "${ORIGIN}";

/// Where external files may lie: inside `root`, or anywhere (None).
#[derive(Debug)]
pub struct ExternalRoot(Option<PathBuf>);

impl ExternalRoot {
    /// `root`, or the directory of `file` if None; anywhere if `any`.
    pub fn new(file: &Path, root: Option<&Path>, any: bool) -> ExternalRoot {
        if any {
            return ExternalRoot(None);
        }
        let dir = root.or(file.parent()).unwrap_or(Path::new("."));
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        ExternalRoot(Some(dir))
    }

    /// Whether the target of external link `name` in `group` (a dataset or not) may be
    /// shown; `Err` says why not.
    pub fn check_link(&self, group: &hdf5::Group, name: &str, dataset: bool) -> Result<(), String> {
        let cannot = |e: hdf5::Error| format!("external link cannot be opened: {e}");
        let target = if dataset {
            file_name(group.dataset(name).map_err(cannot)?.id())
        } else {
            file_name(group.group(name).map_err(cannot)?.id())
        };
        self.check("external link target", &target.map_err(|e| e.to_string())?)
    }

    /// Whether the external raw data files of dataset `ds` may be read; `Err` says why not.
    pub fn check_raw_data(&self, ds: &hdf5::Dataset) -> Result<(), String> {
        // SAFETY: ds is a valid dataset; the plist is released on drop.
        let dcpl = sync(|| Hid::new(unsafe { H5Dget_create_plist(ds.id()) }))
            .map_err(|e| e.to_string())?;
        // SAFETY: `dcpl` is the dataset's own creation property list, held by its `Hid`.
        let files = sync(|| unsafe { external_files(dcpl.0) });
        if files.is_empty() {
            return Ok(());
        }
        if std::env::var(EXTFILE_PREFIX_ENV).as_deref() != Ok(ORIGIN) {
            return Err(format!(
                "external raw data: {EXTFILE_PREFIX_ENV} is not {ORIGIN} (the arrfs binary \
                 sets it): libhdf5 would look in the working directory"
            ));
        }
        let holder = file_name(ds.id()).map_err(|e| e.to_string())?;
        let dir = holder.parent().unwrap_or(Path::new("/"));
        for file in files {
            self.check("external raw data file", &dir.join(file))?;
        }
        Ok(())
    }

    fn check(&self, what: &str, path: &Path) -> Result<(), String> {
        if path.is_relative() {
            // HDF5 found it only relative to the working directory, its last resort.
            return Err(format!(
                "{what} {} not found next to the file that names it",
                path.display()
            ));
        }
        let found = path
            .canonicalize()
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
        match &self.0 {
            Some(root) if !found.starts_with(root) => Err(format!(
                "{what} {} lies outside {}, the source's directory: not followed (with -o \
                 allow_other it would show other users a file they may not be allowed to \
                 read; -o external_links=any follows it)",
                found.display(),
                root.display()
            )),
            _ => Ok(()),
        }
    }
}
