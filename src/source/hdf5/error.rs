//! The HDF5 module's own error: what went wrong, typed enough to tell a resource shortage
//! inside libhdf5 (which passes, so it is never remembered) from a property of the file.
//! It becomes a [`crate::error::Error`] or a [`SkipReason`] here and nowhere else.

use std::path::Path;

use hdf5::{MajorErrorCode, MinorErrorCode};

use super::heap::HeapError;
use crate::error::Error;
use crate::source::SkipReason;

#[derive(Debug, thiserror::Error)]
pub enum Hdf5Error {
    /// Out of file descriptors or memory, or interrupted, inside libhdf5: `errno` says which.
    #[error("{message}")]
    Resource { errno: i32, message: String },
    /// libhdf5 failed for a reason of the file (corrupt, missing object, ...).
    #[error("{0}")]
    Library(String),
    /// Readable HDF5 that is not an array arrfs serves (its type, layout or kind).
    #[error("{0}")]
    Unsupported(String),
    /// An external link or file the mount may not follow.
    #[error("{0}")]
    Refused(String),
}

/// The errors that pass with load (see [`Error::is_resource`]), and EAGAIN: arrfs's driver
/// read from a store that did not answer (`vfd::DriverError::Read`).
const RESOURCE_ERRNOS: [i32; 5] = [
    libc::EMFILE,
    libc::ENFILE,
    libc::ENOMEM,
    libc::EINTR,
    libc::EAGAIN,
];

impl From<hdf5::Error> for Hdf5Error {
    fn from(e: hdf5::Error) -> Self {
        let message = e.to_string();
        match resource_errno(&e) {
            Some(errno) => Hdf5Error::Resource { errno, message },
            None => Hdf5Error::Library(message),
        }
    }
}

/// Reasons given by the type and layout checks (`types.rs`, `records.rs`).
impl From<String> for Hdf5Error {
    fn from(why: String) -> Self {
        Hdf5Error::Unsupported(why)
    }
}

/// Damaged string references or heap: a property of the file; a read that failed for
/// want of a resource is not.
impl From<HeapError> for Hdf5Error {
    fn from(e: HeapError) -> Self {
        let message = e.to_string();
        match e.innermost() {
            HeapError::Read(read) => match passing_errno(read) {
                Some(errno) => Hdf5Error::Resource { errno, message },
                None => Hdf5Error::Library(message),
            },
            HeapError::Library(e) => match resource_errno(e) {
                Some(errno) => Hdf5Error::Resource { errno, message },
                None => Hdf5Error::Library(message),
            },
            _ => Hdf5Error::Library(message),
        }
    }
}

impl From<&str> for Hdf5Error {
    fn from(why: &str) -> Self {
        Hdf5Error::Unsupported(why.to_string())
    }
}

impl Hdf5Error {
    /// A system call's failure: a resource error, or `why` as a property of the file.
    pub fn of_io(e: &std::io::Error, why: String) -> Hdf5Error {
        match e.raw_os_error() {
            Some(errno) if RESOURCE_ERRNOS.contains(&errno) => Hdf5Error::Resource {
                errno,
                message: why,
            },
            _ => Hdf5Error::Library(why),
        }
    }

    /// The error of a failed operation on `what` (an HDF5 path) in the file `path`.
    pub fn at(self, path: &Path, what: &str) -> Error {
        match self {
            Hdf5Error::Resource { errno, message } => {
                log::warn!("{}: {what}: {message}", path.display());
                if errno == libc::EAGAIN {
                    let url = path.display().to_string();
                    return Error::Unavailable {
                        url,
                        cause: message,
                    };
                }
                Error::io(path, std::io::Error::from_raw_os_error(errno))
            }
            other => Error::read(path, what, other),
        }
    }

    /// The error of a file that cannot be opened at all.
    pub fn opening(self, path: &Path) -> Error {
        match self {
            resource @ Hdf5Error::Resource { .. } => resource.at(path, "/"),
            other => Error::format(path, other.to_string()),
        }
    }

    /// Why a link of a group is left out; a resource error fails the listing instead.
    pub fn skip_reason(self, path: &Path, what: &str) -> Result<SkipReason, Error> {
        Ok(match self {
            resource @ Hdf5Error::Resource { .. } => return Err(resource.at(path, what)),
            Hdf5Error::Library(why) => SkipReason::Broken(why),
            Hdf5Error::Unsupported(why) => SkipReason::Unsupported(why),
            Hdf5Error::Refused(why) => SkipReason::Refused(why),
        })
    }
}

/// The errno an error of ours that may pass ([`Error::passes`]) is known by in this
/// module (and on libhdf5's error stack, where arrfs's driver writes it): its own for a
/// resource shortage, EAGAIN for a store that did not answer; None for any other error.
pub fn passing_errno(e: &Error) -> Option<i32> {
    match e {
        Error::Unavailable { .. } => Some(libc::EAGAIN),
        Error::Io { source, .. } if e.is_resource() => source.raw_os_error(),
        _ => None,
    }
}

/// The errno of a resource shortage in libhdf5's error stack: the system errno its file
/// drivers record (`errno = N` in a frame's text), or ENOMEM for its own failed allocations.
fn resource_errno(e: &hdf5::Error) -> Option<i32> {
    let stack = e.stack()?;
    let recorded = stack
        .iter()
        .filter_map(|frame| recorded_errno(frame.desc()))
        .find(|errno| RESOURCE_ERRNOS.contains(errno));
    let out_of_memory = stack.iter().any(|frame| {
        frame.major_code() == MajorErrorCode::Resource
            && frame.minor_code() == MinorErrorCode::NoSpace
    });
    recorded.or(out_of_memory.then_some(libc::ENOMEM))
}

/// The `N` of `errno = N` in the text of one libhdf5 error frame.
fn recorded_errno(desc: &str) -> Option<i32> {
    let (_, rest) = desc.split_once("errno = ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real libhdf5 error, not a hand-written one: the missing file's ENOENT is found in
    /// the stack libhdf5 wrote, and is not taken for a resource error.
    #[test]
    fn the_errno_libhdf5_records_is_read_from_its_stack() {
        let missing = std::env::temp_dir().join(format!("arrfs-{}-missing.h5", std::process::id()));
        let e = hdf5::File::open(missing).unwrap_err();
        let stack = e.stack().expect("libhdf5 error stack");
        let errnos: Vec<i32> = stack
            .iter()
            .filter_map(|f| recorded_errno(f.desc()))
            .collect();
        assert!(errnos.contains(&libc::ENOENT), "{stack:?}");
        assert!(matches!(Hdf5Error::from(e), Hdf5Error::Library(_)));
    }

    #[test]
    fn an_error_that_may_pass_is_never_a_reason_to_skip() {
        let path = Path::new("f.h5");
        for errno in RESOURCE_ERRNOS {
            let message = "unable to open file".to_string();
            let e = Hdf5Error::Resource { errno, message };
            let err = e.skip_reason(path, "/g/link").unwrap_err();
            assert!(err.passes(), "{errno}: {err}");
            assert_eq!(err.is_resource(), errno != libc::EAGAIN, "{errno}: {err}");
        }
        let e = Hdf5Error::Refused("outside the source's directory".into());
        assert_eq!(
            e.skip_reason(path, "/g/link").unwrap(),
            SkipReason::Refused("outside the source's directory".into())
        );
        let opened = Hdf5Error::Resource {
            errno: libc::EMFILE,
            message: String::new(),
        };
        assert!(opened.opening(path).is_resource());
    }
}
