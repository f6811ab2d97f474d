//! The bytes of a pickle stream: the file itself, or the file decompressed. Pickles and
//! joblib dumps are often compressed whole (`x.pkl.gz`, `joblib.dump(..., compress=3)`):
//! gzip and zlib streams are read at any offset through the deflate seek points
//! ([`SeekableInflate`]); bz2, xz, lzma and lz4 have no cheap seek points, so they are
//! decoded once, at mount, into a spill file: a temporary file unlinked as soon as it is
//! created (it goes away with the mount, even after a crash), written in 1 MiB steps so that
//! memory stays bounded, and at most [`spill_limit`] bytes long.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::inflate::{scan, DeflateRange, SeekPointStore, SeekableInflate};
use crate::io::SourceFile;

/// A compression a whole pickle stream may be wrapped in, told by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Zlib,
    Bz2,
    Xz,
    /// The legacy `.lzma` ("alone") format, joblib's `lzma`.
    Lzma,
    /// An LZ4 frame, joblib's `lz4`.
    Lz4,
}

impl Codec {
    pub fn of(head: &[u8]) -> Option<Codec> {
        match head {
            [0x1f, 0x8b, 8, ..] => Some(Codec::Gzip),
            // CMF deflate with a 32 KiB window or less, no preset dictionary, FCHECK valid.
            [cmf, flg, ..]
                if cmf & 0x0f == 8
                    && cmf >> 4 <= 7
                    && flg & 0x20 == 0
                    && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0 =>
            {
                Some(Codec::Zlib)
            }
            [b'B', b'Z', b'h', b'1'..=b'9', ..] => Some(Codec::Bz2),
            [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Some(Codec::Xz),
            [0x5d, 0, 0, ..] => Some(Codec::Lzma),
            [0x04, 0x22, 0x4d, 0x18, ..] => Some(Codec::Lz4),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zlib => "zlib",
            Codec::Bz2 => "bz2",
            Codec::Xz => "xz",
            Codec::Lzma => "lzma",
            Codec::Lz4 => "lz4",
        }
    }
}

/// Where the stream's bytes come from.
pub enum Backing {
    Plain(Arc<SourceFile>),
    /// A gzip or zlib stream, inflated where read.
    Deflate(SeekableInflate, Arc<SourceFile>),
    /// Decoded once into an unlinked temporary file.
    Spill {
        source: Arc<SourceFile>,
        spill: File,
        len: u64,
    },
}

impl Backing {
    /// The stream of `source`, decompressed if `codec` says so.
    pub fn open(source: Arc<SourceFile>, codec: Option<Codec>, cache_size: u64) -> Result<Backing> {
        let Some(codec) = codec else {
            return Ok(Backing::Plain(source));
        };
        let range = match codec {
            Codec::Gzip => Some(crate::source::single::gzip_range(&source)?),
            Codec::Zlib => Some(zlib_range(&source)?),
            _ => None,
        };
        if let Some(range) = range {
            let store = SeekPointStore::new(cache_size);
            let what = format!("{} stream", codec.name());
            let stream = SeekableInflate::new(source.clone(), range, what, store);
            return Ok(Backing::Deflate(stream, source));
        }
        spill(source, codec)
    }

    pub fn path(&self) -> &Path {
        match self {
            Backing::Plain(source) | Backing::Deflate(_, source) => source.path(),
            Backing::Spill { source, .. } => source.path(),
        }
    }

    /// Length of the (decompressed) stream.
    pub fn len(&self) -> u64 {
        match self {
            Backing::Plain(source) => source.len(),
            Backing::Deflate(stream, _) => stream.size(),
            Backing::Spill { len, .. } => *len,
        }
    }

    /// Exactly `buf.len()` bytes of the stream at `offset`; fails once the source changed.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self {
            Backing::Plain(source) => source.read_at(offset, buf),
            Backing::Deflate(stream, source) => {
                source.check_unchanged()?;
                stream.read_at(offset, buf)
            }
            Backing::Spill { source, spill, .. } => {
                source.check_unchanged()?;
                spill
                    .read_exact_at(buf, offset)
                    .map_err(|e| Error::read(source.path(), "decompressed pickle", e))
            }
        }
    }

    /// A sequential reader from the start, for the pickle machine.
    pub fn reader(&self) -> BackingReader<'_> {
        BackingReader {
            backing: self,
            pos: 0,
        }
    }
}

/// `Read + Seek` over a [`Backing`].
pub struct BackingReader<'a> {
    backing: &'a Backing,
    pos: u64,
}

impl Read for BackingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.backing.len().saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        self.backing
            .read_at(self.pos, &mut buf[..n])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BackingReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = crate::io::seek_target(to, self.pos, self.backing.len())?;
        Ok(self.pos)
    }
}

/// The deflate data of a zlib stream (RFC 1950): a 2-byte header, no preset dictionary,
/// an Adler-32 trailer (not checked: the pickle's own structure is).
fn zlib_range(file: &SourceFile) -> Result<DeflateRange> {
    let len = file.len();
    if len < 6 {
        return Err(Error::format(file.path(), "truncated zlib stream"));
    }
    let compressed_len = len - 6;
    let (_, size) = scan(file, 2, compressed_len, 0, true).map_err(|e| format_error(file, e))?;
    Ok(DeflateRange {
        start: 2,
        compressed_len,
        size,
        crc32: None,
    })
}

fn format_error(file: &SourceFile, e: Error) -> Error {
    match e {
        Error::Read { cause, .. } => Error::format(file.path(), cause),
        other => other,
    }
}

/// The first `n` decoded bytes of `source` under `codec`, or None if they cannot be had.
pub fn decoded_head(source: &SourceFile, codec: Codec, n: usize) -> Option<Vec<u8>> {
    if matches!(codec, Codec::Gzip | Codec::Zlib) {
        let range = match codec {
            Codec::Gzip => crate::source::single::gzip_range(source).ok()?,
            _ => DeflateRange {
                start: 2,
                compressed_len: source.len().saturating_sub(6),
                size: 0,
                crc32: None,
            },
        };
        let (head, _) = scan(source, range.start, range.compressed_len, n, false).ok()?;
        return Some(head);
    }
    let input = std::io::BufReader::new(source.reader());
    let mut out = LimitedWriter {
        inner: Vec::new(),
        written: 0,
        limit: n as u64,
    };
    // Stops with FileTooLarge once `n` bytes are in: that is the point.
    let _ = decode(codec, input, &mut out);
    (out.inner.len() >= n).then(|| out.inner[..n].to_vec())
}

/// The most a spill file may hold: a pickle bomb stops there (format error at mount).
pub fn spill_limit(compressed: u64) -> u64 {
    (1u64 << 30).max(compressed.saturating_mul(256))
}

/// Decodes the whole stream into an unlinked temporary file.
fn spill(source: Arc<SourceFile>, codec: Codec) -> Result<Backing> {
    let path = source.path().to_path_buf();
    log::info!(
        "{}: {} has no seek points: decoding it once into a temporary file",
        path.display(),
        codec.name()
    );
    let (mut spill, spill_path) = temp_file()?;
    // Unlinked at once: the data lives as long as the handle, never longer.
    let _ = std::fs::remove_file(&spill_path);
    let input = std::io::BufReader::with_capacity(1 << 20, source.reader());
    let limit = spill_limit(source.len());
    let mut out = LimitedWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, &mut spill),
        written: 0,
        limit,
    };
    decode(codec, input, &mut out).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::FileTooLarge => {
                format!("decompresses to more than {limit} bytes (the spill limit)")
            }
            _ => format!("corrupt {} data: {e}", codec.name()),
        };
        Error::format(&path, why)
    })?;
    out.inner.flush().map_err(|e| Error::io("spill file", e))?;
    let len = out.written;
    drop(out);
    Ok(Backing::Spill { source, spill, len })
}

fn decode(
    codec: Codec,
    mut input: impl std::io::BufRead,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let bad = |e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    };
    match codec {
        Codec::Bz2 => {
            std::io::copy(&mut bzip2::bufread::MultiBzDecoder::new(input), out)?;
        }
        Codec::Xz => lzma_rs::xz_decompress(&mut input, out).map_err(|e| unwrap_io(e, bad))?,
        Codec::Lzma => lzma_rs::lzma_decompress(&mut input, out).map_err(|e| unwrap_io(e, bad))?,
        Codec::Lz4 => {
            std::io::copy(&mut lz4_flex::frame::FrameDecoder::new(input), out)?;
        }
        Codec::Gzip | Codec::Zlib => unreachable!("deflate streams use seek points"),
    }
    Ok(())
}

/// lzma-rs wraps I/O errors (our spill limit among them): keep their kind.
fn unwrap_io(
    e: lzma_rs::error::Error,
    bad: impl Fn(&dyn std::fmt::Display) -> std::io::Error,
) -> std::io::Error {
    match e {
        lzma_rs::error::Error::IoError(io) => io,
        other => bad(&other),
    }
}

/// A writer that takes at most `limit` bytes, then fails with `FileTooLarge`.
struct LimitedWriter<W> {
    inner: W,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for LimitedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit - self.written;
        if room == 0 && !buf.is_empty() {
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
        let n = self.inner.write(&buf[..buf.len().min(room as usize)])?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A new file in the temporary directory (`$TMPDIR`), readable only by us.
fn temp_file() -> Result<(File, std::path::PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    for attempt in 0..100u32 {
        let name = format!("arrfs-spill-{}-{}-{attempt}", std::process::id(), unique());
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match file {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Err(Error::io(
        &dir,
        std::io::Error::other("no free temporary file name"),
    ))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_by_magic() {
        // First bytes as Python's gzip, zlib, bz2 and lzma modules and lz4.frame write them.
        let cases: [(&[u8], Option<Codec>); 9] = [
            (b"\x1f\x8b\x08\x00", Some(Codec::Gzip)),
            (b"x\x9c\xed", Some(Codec::Zlib)),
            (b"x^=\x8f", Some(Codec::Zlib)),
            (b"BZh91AY&", Some(Codec::Bz2)),
            (b"\xfd7zXZ\x00\x00\x04", Some(Codec::Xz)),
            (b"]\x00\x00@\x00\xff", Some(Codec::Lzma)),
            (b"\x04\x22\x4d\x18", Some(Codec::Lz4)),
            (b"\x80\x05\x95", None),
            (b"(lp0\n", None),
        ];
        for (head, codec) in cases {
            assert_eq!(Codec::of(head), codec, "{head:?}");
        }
    }

    #[test]
    fn the_spill_writer_stops_at_its_limit() {
        let mut out = LimitedWriter {
            inner: Vec::new(),
            written: 0,
            limit: 5,
        };
        assert_eq!(out.write(b"abc").unwrap(), 3);
        assert_eq!(out.write(b"defg").unwrap(), 2);
        let e = out.write(b"h").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
        assert_eq!(out.inner, b"abcde");
    }
}
