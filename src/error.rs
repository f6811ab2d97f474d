//! The one error type of arrfs, and its mapping to errno (the only place that knows errno).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such entry")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("not a symbolic link")]
    NotSymlink,
    #[error("no such attribute")]
    NoXattr,
    /// An extended attribute outside the `user.` namespace, the only one arrfs has.
    #[error("attribute namespace not supported")]
    XattrNamespace,
    #[error("read-only file system")]
    ReadOnly,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The container is not what its magic bytes promised (truncated, corrupt, unsupported).
    #[error("{}: {cause}", path.display())]
    Format { path: PathBuf, cause: String },
    /// A read failed inside one array (corrupt chunk, failed filter): EIO for that read only.
    #[error("{}: {what}: {cause}", path.display())]
    Read {
        path: PathBuf,
        what: String,
        cause: String,
    },
    #[error("{}: source changed on disk while mounted; remount to see the new contents", path.display())]
    SourceChanged { path: PathBuf },
    /// An object store could not be reached or refused a request (after retries): names the
    /// URL and the cause, never a secret.
    #[error("{url}: {cause}")]
    Remote { url: String, cause: String },
    /// An object store did not answer a read (after retries, or within the time limit):
    /// the same read may work later, so it is never remembered as a property of the data.
    #[error("{url}: {cause}")]
    Unavailable { url: String, cause: String },
    /// Mounting or unmounting failed (busy, no FUSE, not permitted).
    #[error("{0}")]
    Mount(String),
    #[error("{0}")]
    Usage(String),
    /// A bug caught at the request boundary (a panic): EIO for that request only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn format(path: impl Into<PathBuf>, cause: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            cause: cause.into(),
        }
    }

    pub fn read(path: impl Into<PathBuf>, what: impl Into<String>, cause: impl ToString) -> Self {
        Error::Read {
            path: path.into(),
            what: what.into(),
            cause: cause.to_string(),
        }
    }

    /// The errno a FUSE reply carries for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::NotSymlink => libc::EINVAL,
            Error::NoXattr => libc::ENODATA,
            Error::XattrNamespace => libc::EOPNOTSUPP,
            Error::ReadOnly => libc::EROFS,
            Error::Usage(_) | Error::Mount(_) => libc::EINVAL,
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(code @ (libc::EMFILE | libc::ENFILE | libc::ENOMEM)) => code,
                _ => libc::EIO,
            },
            Error::Format { .. }
            | Error::Read { .. }
            | Error::SourceChanged { .. }
            | Error::Remote { .. }
            | Error::Unavailable { .. }
            | Error::Internal(_) => libc::EIO,
        }
    }

    /// Out of file descriptors or memory, or interrupted: passes with load, so it is never
    /// remembered as a property of the container.
    pub fn is_resource(&self) -> bool {
        let Error::Io { source, .. } = self else {
            return false;
        };
        matches!(
            source.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EINTR)
        )
    }

    /// Errors that may pass: a resource shortage, or a store that did not answer. What
    /// fails with one is tried again later, never remembered (as a left-out entry, a
    /// corrupt member, a damaged heap).
    pub fn passes(&self) -> bool {
        self.is_resource() || matches!(self, Error::Unavailable { .. })
    }

    /// Errors that mean "this part of the container is broken": logged once per read.
    pub fn is_data_error(&self) -> bool {
        matches!(
            self,
            Error::Io { .. }
                | Error::Format { .. }
                | Error::Read { .. }
                | Error::SourceChanged { .. }
                | Error::Remote { .. }
                | Error::Unavailable { .. }
        )
    }
}
