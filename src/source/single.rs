//! Sources that hold one file: a plain `.npy` (served by `pread`) and a gzip-wrapped `.npy`
//! (served through the seek-point inflater). Either shows as a directory with that file.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::inflate::{scan, DeflateRange, SeekPointStore, SeekableInflate};
use crate::io::{Location, SourceFile};
use crate::npy::NPY_MAGIC;
use crate::source::{Entry, EntryKind, Key, Listing, Source, SourceOptions, ROOT};

/// The key of the one file.
pub const FILE_KEY: Key = 1;

const GZIP_MAGIC: &[u8] = b"\x1f\x8b";
/// Deflate expands at most about 1032:1, so below this compressed size the gzip trailer's
/// 32-bit ISIZE is the exact size.
const ISIZE_EXACT_BELOW: u64 = (u32::MAX as u64) / 1040;
/// Longest gzip file name or comment field we skip over.
const MAX_HEADER_FIELD: u64 = 64 << 10;

/// A plain `.npy` file.
pub struct NpyFileSource {
    file: SourceFile,
    name: String,
}

impl NpyFileSource {
    pub fn open(location: &Location) -> Result<NpyFileSource> {
        let path = &location.display();
        let file = SourceFile::open(location)?;
        let mut magic = [0u8; NPY_MAGIC.len()];
        file.read_at(0, &mut magic)
            .map_err(|_| Error::format(path, "too short for a .npy file"))?;
        if magic != NPY_MAGIC {
            return Err(Error::format(path, "not a .npy file"));
        }
        Ok(NpyFileSource {
            file,
            name: file_name(location),
        })
    }
}

impl Source for NpyFileSource {
    fn list(&self, dir: Key) -> Result<Listing> {
        let size = self.file.len();
        one_file(dir, &self.name, size)
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_file_key(file)?;
        self.file.read_at(offset, buf)
    }

    /// The file is its own virtual file, byte for byte.
    fn backing_file(&self, file: Key) -> Result<Option<std::fs::File>> {
        check_file_key(file)?;
        self.file.local_handle()
    }
}

/// A gzip-wrapped `.npy` (`x.npy.gz` shows `x.npy`).
pub struct GzipNpySource {
    stream: SeekableInflate,
    name: String,
}

impl GzipNpySource {
    pub fn open(location: &Location, options: &SourceOptions) -> Result<GzipNpySource> {
        GzipNpySource::open_with_store(location, SeekPointStore::new(options.cache_size))
    }

    pub fn open_with_store(
        location: &Location,
        store: Arc<SeekPointStore>,
    ) -> Result<GzipNpySource> {
        let path = &location.display();
        let file = Arc::new(SourceFile::open(location)?);
        let range = gzip_range(&file).map_err(|e| as_format_error(path, e))?;
        let (head, _) = scan(
            &file,
            range.start,
            range.compressed_len,
            NPY_MAGIC.len(),
            false,
        )
        .map_err(|e| as_format_error(path, e))?;
        if head != NPY_MAGIC {
            return Err(Error::format(
                path,
                "gzip data is neither a .npy file nor a pickle",
            ));
        }
        let name = gzip_stem(&file_name(location));
        let stream = SeekableInflate::new(file, range, name.clone(), store);
        Ok(GzipNpySource { stream, name })
    }
}

impl Source for GzipNpySource {
    fn list(&self, dir: Key) -> Result<Listing> {
        one_file(dir, &self.name, self.stream.size())
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_file_key(file)?;
        self.stream.read_at(offset, buf)
    }
}

fn one_file(dir: Key, name: &str, size: u64) -> Result<Listing> {
    match dir {
        ROOT => Ok(Listing {
            entries: vec![Entry::new(
                name.to_string(),
                FILE_KEY,
                EntryKind::Blob { size },
            )],
            ..Listing::default()
        }),
        FILE_KEY => Err(Error::NotDir),
        _ => Err(Error::NotFound),
    }
}

fn check_file_key(key: Key) -> Result<()> {
    match key {
        FILE_KEY => Ok(()),
        ROOT => Err(Error::IsDir),
        _ => Err(Error::NotFound),
    }
}

fn file_name(location: &Location) -> String {
    Some(location.file_name())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "data.npy".into())
}

/// `x.npy.gz` -> `x.npy`; `x.gz` -> `x.npy`.
fn gzip_stem(name: &str) -> String {
    let stem = name.strip_suffix(".gz").unwrap_or(name);
    if stem.ends_with(".npy") {
        stem.to_string()
    } else {
        format!("{stem}.npy")
    }
}

/// At mount, a broken gzip file is a format error (exit 1), not a read error.
fn as_format_error(path: &Path, e: Error) -> Error {
    match e {
        Error::Read { cause, .. } => Error::format(path, cause),
        other => other,
    }
}

/// The deflate data of a single-member gzip file (RFC 1952), with its size and CRC.
pub(crate) fn gzip_range(file: &SourceFile) -> Result<DeflateRange> {
    let bad = |cause: &str| Error::format(file.path(), cause);
    let mut header = [0u8; 10];
    file.read_at(0, &mut header)
        .map_err(|_| bad("truncated gzip header"))?;
    if &header[..2] != GZIP_MAGIC || header[2] != 8 {
        return Err(bad("not a deflate gzip file"));
    }
    let flags = header[3];
    let mut pos = 10;
    if flags & 4 != 0 {
        let mut xlen = [0u8; 2];
        file.read_at(pos, &mut xlen)
            .map_err(|_| bad("truncated gzip header"))?;
        pos += 2 + u64::from(u16::from_le_bytes(xlen));
    }
    for field in [8u8, 16] {
        if flags & field != 0 {
            pos = skip_zero_terminated(file, pos)?;
        }
    }
    if flags & 2 != 0 {
        pos += 2;
    }
    let len = file.len();
    if len < pos + 8 {
        return Err(bad("truncated gzip file"));
    }
    let mut trailer = [0u8; 8];
    file.read_at(len - 8, &mut trailer)?;
    let crc32 = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let isize = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    let compressed_len = len - 8 - pos;
    let size = if compressed_len < ISIZE_EXACT_BELOW {
        u64::from(isize)
    } else {
        count_inflated(file, pos, compressed_len)?
    };
    Ok(DeflateRange {
        start: pos,
        compressed_len,
        size,
        crc32: Some(crc32),
    })
}

/// A large gzip file's trailer only knows its size modulo 4 GiB: inflate it once to count.
fn count_inflated(file: &SourceFile, start: u64, compressed_len: u64) -> Result<u64> {
    log::info!(
        "{}: inflating once to learn its size (gzip records it modulo 4 GiB)",
        file.path().display()
    );
    scan(file, start, compressed_len, 0, true).map(|(_, size)| size)
}

/// The offset after the NUL that ends a header field starting at `pos`.
fn skip_zero_terminated(file: &SourceFile, pos: u64) -> Result<u64> {
    let mut chunk = [0u8; 512];
    let mut at = pos;
    while at - pos < MAX_HEADER_FIELD {
        let n = (file.len().saturating_sub(at)).min(chunk.len() as u64) as usize;
        if n == 0 {
            break;
        }
        file.read_at(at, &mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().position(|&b| b == 0) {
            return Ok(at + i as u64 + 1);
        }
        at += n as u64;
    }
    Err(Error::format(
        file.path(),
        "gzip header field is not terminated",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_names() {
        assert_eq!(gzip_stem("a.npy.gz"), "a.npy");
        assert_eq!(gzip_stem("a.gz"), "a.npy");
        assert_eq!(gzip_stem("weird"), "weird.npy");
    }
}
