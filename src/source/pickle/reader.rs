//! Sequential reading of an opcode stream with absolute file positions. Long arguments are
//! skipped with a seek, never read: mounting a 1 GiB pickle reads only its opcodes.

use std::io::{BufRead, BufReader, Read, Seek};
use std::sync::Arc;

use super::value::{Blob, Encoding};

/// Arguments up to this size are kept in memory (names, dtype codes, scalars).
pub const INLINE_MAX: u64 = 4096;

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    Truncated { at: u64 },
    Io(std::io::Error),
}

pub type ReadResult<T> = Result<T, ReadError>;

pub struct OpReader<R> {
    inner: BufReader<R>,
    pos: u64,
    len: u64,
}

/// A protocol 0 argument line (without its `\n`): where it is and its first bytes.
pub struct Line {
    pub offset: u64,
    pub len: u64,
    pub head: Vec<u8>,
}

impl Line {
    pub fn is_complete(&self) -> bool {
        self.head.len() as u64 == self.len
    }
}

impl<R: Read + Seek> OpReader<R> {
    /// `len` is the stream's total length: declared sizes are checked against it.
    pub fn new(inner: R, len: u64) -> OpReader<R> {
        OpReader {
            inner: BufReader::with_capacity(64 << 10, inner),
            pos: 0,
            len,
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    pub fn byte(&mut self) -> ReadResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn array<const N: usize>(&mut self) -> ReadResult<[u8; N]> {
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.truncated_or(e))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn truncated_or(&self, e: std::io::Error) -> ReadError {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ReadError::Truncated { at: self.pos },
            _ => ReadError::Io(e),
        }
    }

    /// Moves `n` bytes forward without reading them.
    pub fn skip(&mut self, n: u64) -> ReadResult<()> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.len);
        let Some(end) = end else {
            return Err(ReadError::Truncated { at: self.pos });
        };
        let delta = i64::try_from(n).map_err(|_| ReadError::Truncated { at: self.pos })?;
        self.inner.seek_relative(delta).map_err(ReadError::Io)?;
        self.pos = end;
        Ok(())
    }

    /// The next `n` bytes as a blob: kept in memory if small, else only located.
    pub fn blob(&mut self, n: u64, encoding: Encoding) -> ReadResult<Blob> {
        let offset = self.pos;
        if n > INLINE_MAX {
            self.skip(n)?;
            return Ok(Blob {
                offset,
                len: n,
                encoding,
                inline: None,
            });
        }
        if offset.saturating_add(n) > self.len {
            return Err(ReadError::Truncated { at: offset });
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| self.truncated_or(e))?;
        self.pos += n;
        Ok(Blob {
            offset,
            len: n,
            encoding,
            inline: Some(Arc::from(buf)),
        })
    }

    /// A `\n`-terminated argument; only its first [`INLINE_MAX`] bytes are kept.
    pub fn line(&mut self) -> ReadResult<Line> {
        let offset = self.pos;
        let mut head = Vec::new();
        let mut len = 0u64;
        loop {
            let chunk = self.inner.fill_buf().map_err(ReadError::Io)?;
            if chunk.is_empty() {
                return Err(ReadError::Truncated { at: offset });
            }
            let newline = chunk.iter().position(|&b| b == b'\n');
            let take = newline.unwrap_or(chunk.len());
            let room = (INLINE_MAX as usize).saturating_sub(head.len()).min(take);
            head.extend_from_slice(&chunk[..room]);
            len += take as u64;
            let used = take + usize::from(newline.is_some());
            self.inner.consume(used);
            self.pos += used as u64;
            if newline.is_some() {
                return Ok(Line { offset, len, head });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn big_blobs_are_located_not_read() {
        let data = vec![7u8; 10_000];
        let mut reader = OpReader::new(Cursor::new(&data), data.len() as u64);
        reader.skip(3).unwrap();
        let blob = reader.blob(9000, Encoding::Raw).unwrap();
        assert_eq!(
            (blob.offset, blob.len, blob.inline.is_none()),
            (3, 9000, true)
        );
        assert_eq!(reader.pos(), 9003);
        assert!(matches!(
            reader.blob(1 << 62, Encoding::Raw),
            Err(ReadError::Truncated { .. })
        ));
        assert!(matches!(
            reader.skip(u64::MAX),
            Err(ReadError::Truncated { .. })
        ));
    }

    #[test]
    fn lines_keep_their_head_and_length() {
        let data = b"abc\ndef".to_vec();
        let mut reader = OpReader::new(Cursor::new(&data), 7);
        let line = reader.line().unwrap();
        assert_eq!(
            (line.offset, line.len, line.head.as_slice()),
            (0, 3, &b"abc"[..])
        );
        assert!(matches!(reader.line(), Err(ReadError::Truncated { at: 4 })));
    }
}
