//! A `Read + Seek` cursor over a [`SourceFile`] that reads a window at a time and keeps the
//! window across seeks. `std::io::BufReader` drops its buffer on every seek, and the zip
//! crate reads a central directory by seeking to each member's local header in turn: over
//! a `BufReader` of 64 KiB, an archive of 100,000 small members cost 100,000 reads of
//! 64 KiB (6.4 GB copied, 0.6 s); through a window, one read per 64 KiB of archive.

use std::io::{Read, Seek, SeekFrom};

use super::SourceFile;

pub struct WindowReader<'a> {
    file: &'a SourceFile,
    pos: u64,
    /// Where `window` starts in the file.
    window_start: u64,
    window: Vec<u8>,
    capacity: usize,
}

impl<'a> WindowReader<'a> {
    /// A cursor at the start of `file`, reading `capacity` bytes at a time.
    pub fn new(file: &'a SourceFile, capacity: usize) -> Self {
        WindowReader {
            file,
            pos: 0,
            window_start: 0,
            window: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    fn in_window(&self) -> bool {
        self.pos >= self.window_start && self.pos - self.window_start < self.window.len() as u64
    }

    /// Reads the window that starts at the cursor.
    fn fill(&mut self) -> std::io::Result<()> {
        let len = (self.capacity as u64).min(self.file.len() - self.pos) as usize;
        self.window.resize(len, 0);
        self.window_start = self.pos;
        let read = self.file.read_at(self.pos, &mut self.window);
        if read.is_err() {
            self.window.clear();
        }
        read.map_err(std::io::Error::other)
    }
}

impl Read for WindowReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.file.len().saturating_sub(self.pos);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        if !self.in_window() {
            // A read as large as a window gains nothing from one.
            if buf.len() >= self.capacity {
                let n = (buf.len() as u64).min(left) as usize;
                self.file
                    .read_at(self.pos, &mut buf[..n])
                    .map_err(std::io::Error::other)?;
                self.pos += n as u64;
                return Ok(n);
            }
            self.fill()?;
        }
        let at = (self.pos - self.window_start) as usize;
        let n = buf.len().min(self.window.len() - at);
        buf[..n].copy_from_slice(&self.window[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for WindowReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = super::seek_target(to, self.pos, self.file.len())?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Location;

    /// Seeks and reads of every size, across windows and past the end, give the file's
    /// bytes.
    #[test]
    fn reads_give_the_files_bytes_wherever_they_land() {
        let dir = std::env::temp_dir().join(format!("arrfs-window-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = SourceFile::open(&Location::local(&path)).unwrap();
        let mut reader = WindowReader::new(&file, 1000);
        let mut state = 12345u64;
        for _ in 0..2000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let at = (state >> 33) % 10_500;
            let want = ((state >> 20) % 2500) as usize;
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
}
