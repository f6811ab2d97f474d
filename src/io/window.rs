//! Reads served from a window of a file, kept until a read falls outside it. Metadata that
//! lies close together (a group's object headers, a zip archive's local headers) is then
//! read with one `pread` per window instead of one per item. `std::io::BufReader` is no
//! substitute: it drops its buffer on every seek, and the zip crate reads a central
//! directory by seeking to each member's local header in turn (over a `BufReader` of
//! 64 KiB, 100,000 small members cost 100,000 reads of 64 KiB: 6.4 GB copied, 0.6 s).

use std::cell::RefCell;
use std::io::{Read, Seek, SeekFrom};

use crate::error::Result;

/// Bytes read at once into a window.
const WINDOW: u64 = 64 << 10;

/// Positioned reads of a file of `len` bytes read by `read_at`, served from a window.
/// Reads that jump between two regions (symbol nodes, then object headers) each want a
/// window of their own.
pub struct ReadWindow<F> {
    read_at: F,
    len: u64,
    window: RefCell<(u64, Vec<u8>)>,
}

impl<F: Fn(u64, &mut [u8]) -> Result<()>> ReadWindow<F> {
    /// Windows over a file of `len` bytes read by `read_at`.
    pub fn new(read_at: F, len: u64) -> Self {
        ReadWindow {
            read_at,
            len,
            window: RefCell::new((0, Vec::new())),
        }
    }

    /// Exactly `buf.len()` bytes at `offset`, as `read_at` would give them.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut window = self.window.borrow_mut();
        let end = offset.saturating_add(buf.len() as u64);
        let (start, bytes) = &mut *window;
        if offset >= *start && end <= *start + bytes.len() as u64 {
            let at = (offset - *start) as usize;
            buf.copy_from_slice(&bytes[at..at + buf.len()]);
            return Ok(());
        }
        let want = (buf.len() as u64).max(WINDOW);
        let len = want.min(self.len.saturating_sub(offset));
        if len < buf.len() as u64 {
            // Past the end: `read_at` says why.
            return (self.read_at)(offset, buf);
        }
        // The same buffer for every window (a fresh one cost page faults and zeroing each),
        // emptied if a read fails, so that no window is left behind.
        bytes.resize(len as usize, 0);
        if let Err(e) = (self.read_at)(offset, bytes) {
            bytes.clear();
            return Err(e);
        }
        buf.copy_from_slice(&bytes[..buf.len()]);
        *start = offset;
        Ok(())
    }
}

/// A `Read + Seek` cursor over a [`ReadWindow`], for parsers that want a stream (zip).
pub struct WindowReader<F> {
    window: ReadWindow<F>,
    pos: u64,
}

impl<F: Fn(u64, &mut [u8]) -> Result<()>> WindowReader<F> {
    /// A cursor at the start of a file of `len` bytes read by `read_at`.
    pub fn new(read_at: F, len: u64) -> Self {
        WindowReader {
            window: ReadWindow::new(read_at, len),
            pos: 0,
        }
    }
}

impl<F: Fn(u64, &mut [u8]) -> Result<()>> Read for WindowReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.window.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        self.window
            .read(self.pos, &mut buf[..n])
            .map_err(std::io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<F: Fn(u64, &mut [u8]) -> Result<()>> Seek for WindowReader<F> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = super::seek_target(to, self.pos, self.window.len)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Location, SourceFile};

    /// Seeks and reads of every size, across windows and past the end, give the file's
    /// bytes.
    #[test]
    fn reads_give_the_files_bytes_wherever_they_land() {
        let dir = std::env::temp_dir().join(format!("arrfs-window-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        // Longer than two windows, so that reads land across them.
        let bytes: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = SourceFile::open(&Location::local(&path)).unwrap();
        let mut reader = WindowReader::new(
            |offset, buf: &mut [u8]| file.read_at(offset, buf),
            file.len(),
        );
        let mut state = 12345u64;
        for _ in 0..2000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let at = (state >> 33) % 155_000;
            let want = ((state >> 20) % 70_000) as usize;
            reader.seek(SeekFrom::Start(at)).unwrap();
            let mut buf = vec![0; want];
            let n = reader.read(&mut buf).unwrap();
            let start = (at as usize).min(bytes.len());
            let end = (start + want).min(bytes.len());
            assert!(n <= end - start, "{n} bytes at {at}");
            assert!(n > 0 || start == end || want == 0, "nothing at {at}");
            assert_eq!(&buf[..n], &bytes[start..start + n], "at {at}, {want} asked");
            assert_eq!(reader.stream_position().unwrap(), at + n as u64);
        }
        let mut all = Vec::new();
        reader.seek(SeekFrom::Start(0)).unwrap();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all, bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn windows_read_what_the_file_holds() {
        let file: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let read_at = |offset: u64, buf: &mut [u8]| {
            let at = offset as usize;
            match file.get(at..at + buf.len()) {
                Some(bytes) => {
                    buf.copy_from_slice(bytes);
                    Ok(())
                }
                None => Err(crate::error::Error::NotFound),
            }
        };
        let window = ReadWindow::new(&read_at, file.len() as u64);
        for offset in [0u64, 100, 65_530, 70_000, 199_990, 5] {
            let mut buf = [0u8; 10];
            window.read(offset, &mut buf).unwrap();
            assert_eq!(&buf[..], &file[offset as usize..offset as usize + 10]);
        }
        assert!(window.read(199_995, &mut [0u8; 10]).is_err());
    }

    #[test]
    fn a_failed_read_leaves_no_window_behind() {
        let file: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let fail = std::cell::Cell::new(false);
        let read_at = |offset: u64, buf: &mut [u8]| {
            if fail.get() {
                return Err(crate::error::Error::NotFound);
            }
            let at = offset as usize;
            buf.copy_from_slice(&file[at..at + buf.len()]);
            Ok(())
        };
        let window = ReadWindow::new(&read_at, file.len() as u64);
        let mut buf = [0u8; 10];
        window.read(0, &mut buf).unwrap();
        fail.set(true);
        assert!(window.read(100_000, &mut buf).is_err());
        // Anything served now comes from what was read before the failure.
        for offset in [5u64, 99_995, 100_000, 130_000] {
            if window.read(offset, &mut buf).is_ok() {
                let at = offset as usize;
                assert_eq!(&buf[..], &file[at..at + 10], "at {offset}");
            }
        }
        fail.set(false);
        window.read(5, &mut buf).unwrap();
        assert_eq!(&buf[..], &file[5..15]);
    }
}
