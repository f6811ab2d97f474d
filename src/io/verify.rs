//! Checksums of byte ranges served by `pread` (stored zip members): the CRC-32 is computed
//! as a reader goes through the range front to back, and checked when it reaches the end,
//! so a sequential reader of a corrupt member gets an error on its last read instead of
//! wrong bytes in silence. Reads out of order are tolerated: a small gap before a read is
//! filled from the file; a reader that jumps far (random access) is not checked.

use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::io::SourceFile;

/// A gap of at most this many bytes before a read is read from the file to keep the
/// checksum going (the kernel's read-ahead sends requests slightly out of order).
const MAX_GAP: u64 = 8 << 20;

/// The running CRC-32 of one byte range `[start, start + len)` of a file.
pub struct RangeCheck {
    start: u64,
    len: u64,
    expected: u32,
    state: Mutex<Progress>,
}

enum Progress {
    /// Bytes `[0, next)` of the range went into the hasher.
    Running {
        next: u64,
        hasher: crc32fast::Hasher,
    },
    Good,
    Corrupt(u32),
}

impl RangeCheck {
    pub fn new(start: u64, len: u64, expected: u32) -> RangeCheck {
        RangeCheck {
            start,
            len,
            expected,
            state: Mutex::new(Progress::Running {
                next: 0,
                hasher: crc32fast::Hasher::new(),
            }),
        }
    }

    /// Takes note of `bytes`, just read at `offset` of the range; an error once the range
    /// is known to be corrupt (its last read, and every read after).
    pub fn saw(&self, file: &SourceFile, offset: u64, bytes: &[u8]) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        match &mut *state {
            Progress::Good => return Ok(()),
            Progress::Corrupt(found) => return Err(self.mismatch(file, *found)),
            Progress::Running { next, hasher } => {
                let end = offset + bytes.len() as u64;
                if end <= *next || offset > *next + MAX_GAP {
                    return Ok(());
                }
                if offset > *next {
                    let mut gap = vec![0u8; (offset - *next) as usize];
                    file.read_at(self.start + *next, &mut gap)?;
                    hasher.update(&gap);
                    *next = offset;
                }
                hasher.update(&bytes[(*next - offset) as usize..]);
                *next = end;
                if *next < self.len {
                    return Ok(());
                }
            }
        }
        self.finish(&mut state, file)
    }

    fn finish(&self, state: &mut Progress, file: &SourceFile) -> Result<()> {
        let Progress::Running { hasher, .. } = std::mem::replace(state, Progress::Good) else {
            return Ok(());
        };
        let found = hasher.finalize();
        if found == self.expected {
            return Ok(());
        }
        *state = Progress::Corrupt(found);
        Err(self.mismatch(file, found))
    }

    fn mismatch(&self, file: &SourceFile, found: u32) -> Error {
        Error::read(
            file.path(),
            format!("bytes {}..{}", self.start, self.start + self.len),
            format!(
                "CRC-32 mismatch (stored {:08x}, data {found:08x}): corrupt",
                self.expected
            ),
        )
    }

    /// Checks the whole range now (`-o verify=open`), unless done already: reads what the
    /// checksum has not seen yet.
    pub fn verify_all(&self, file: &SourceFile) -> Result<()> {
        let mut offset = match &*self.state.lock().unwrap() {
            Progress::Good => return Ok(()),
            Progress::Corrupt(found) => return Err(self.mismatch(file, *found)),
            Progress::Running { next, .. } => *next,
        };
        let mut buf = vec![0u8; (1 << 20).min(self.len as usize)];
        while offset < self.len {
            let n = (self.len - offset).min(buf.len() as u64) as usize;
            file.read_at(self.start + offset, &mut buf[..n])?;
            self.saw(file, offset, &buf[..n])?;
            offset += n as u64;
        }
        if self.len == 0 {
            let mut state = self.state.lock().unwrap();
            return self.finish(&mut state, file);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file holding `bytes`, removed when the returned guard drops.
    struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file_with(bytes: &[u8]) -> (Scratch, SourceFile) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("arrfs-verify-{}-{n}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let file = SourceFile::open(&crate::io::Location::local(&path)).unwrap();
        (Scratch(path), file)
    }

    fn read_in(check: &RangeCheck, file: &SourceFile, order: &[(u64, u64)]) -> Result<()> {
        for &(at, len) in order {
            let mut buf = vec![0u8; len as usize];
            file.read_at(at, &mut buf).unwrap();
            check.saw(file, at, &buf)?;
        }
        Ok(())
    }

    #[test]
    fn a_sequential_reader_of_good_bytes_passes_and_of_bad_bytes_fails_at_the_end() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let crc = crc32fast::hash(&data);
        let (_p, file) = file_with(&data);
        let pieces: Vec<_> = (0..10).map(|i| (i * 1000, 1000)).collect();
        assert!(read_in(&RangeCheck::new(0, 10_000, crc), &file, &pieces).is_ok());
        let bad = RangeCheck::new(0, 10_000, crc ^ 1);
        assert!(read_in(&bad, &file, &pieces[..9]).is_ok());
        assert!(read_in(&bad, &file, &pieces[9..]).is_err());
        assert!(read_in(&bad, &file, &pieces[..1]).is_err(), "stays corrupt");
    }

    #[test]
    fn reads_slightly_out_of_order_are_checked_too() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        let (_p, file) = file_with(&data);
        let order = [(0, 1000), (2000, 1000), (1000, 1000), (3000, 7000)];
        let bad = RangeCheck::new(0, 10_000, crc32fast::hash(&data) ^ 1);
        assert!(read_in(&bad, &file, &order).is_err());
        let good = RangeCheck::new(0, 10_000, crc32fast::hash(&data));
        assert!(read_in(&good, &file, &order).is_ok());
        assert!(good.verify_all(&file).is_ok());
        assert!(RangeCheck::new(0, 10_000, 0).verify_all(&file).is_err());
    }
}
