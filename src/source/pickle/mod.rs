//! Pickles (protocols 0-5) and joblib dumps, read without unpickling: our own machine
//! ([`machine`]) runs the opcode stream once at mount, locating each array's payload bytes
//! in the file; reads are `pread`s at those offsets. Only payloads stored as text
//! (protocol <= 2 `bytes`) are decoded, in steps, when read.

mod backing;
mod machine;
mod numpy;
mod reader;
mod text;
pub mod torch;
mod tree;
mod value;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use machine::{Limits, MachineError, PickleMachine};
pub use numpy::{ArrayPayload, PayloadData};
pub use reader::OpReader;
pub use tree::{DirNode, Node};

use backing::{Backing, Codec};
use value::Blob;

use crate::error::{Error, Result};
use crate::io::{Location, SourceFile};
use crate::source::{Entry, EntryKind, Key, Listing, Source, SourceOptions};

/// Raw bytes decoded per step when a text payload is read.
const DECODE_CHUNK: u64 = 1 << 20;
/// Decoded bytes between two remembered (decoded, stored) positions of a text payload.
const CHECKPOINT_EVERY: u64 = 4 << 20;

pub struct PickleSource {
    /// The pickle stream: the file, or the file decompressed.
    source: Backing,
    /// Key -> node; [`crate::source::ROOT`] (0) is the root directory.
    nodes: Vec<Node>,
    /// Per text payload: (decoded offset, stored offset) pairs a read may start from.
    checkpoints: Mutex<HashMap<Key, Vec<(u64, u64)>>>,
}

impl PickleSource {
    pub fn open(location: &Location, options: &SourceOptions) -> Result<PickleSource> {
        let file = Arc::new(SourceFile::open(location)?);
        let path = &location.display();
        let codec = compression(&file)?;
        let source = Backing::open(file, codec, options.cache_size)?;
        let reader = OpReader::new(source.reader(), source.len());
        let mut machine = PickleMachine::new(reader, Limits::default());
        let top = machine.run().map_err(|e| match e {
            MachineError::Io(e) => Error::io(path, e),
            other => Error::format(path, other.to_string()),
        })?;
        let stem = stem_of(&location.file_name(), codec);
        let nodes = tree::build(&machine.heap, &top, &stem);
        Ok(PickleSource {
            source,
            nodes,
            checkpoints: Mutex::new(HashMap::new()),
        })
    }

    fn array(&self, key: Key) -> Result<&ArrayPayload> {
        match self.nodes.get(key as usize) {
            Some(Node::Array(array)) => Ok(array),
            Some(Node::Dir(_)) => Err(Error::IsDir),
            None => Err(Error::NotFound),
        }
    }

    /// Reads decoded bytes of a text payload, starting at the nearest checkpoint.
    fn read_encoded(&self, key: Key, blob: &Blob, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (mut out_pos, mut in_pos) = self.checkpoint(key, offset);
        let end = offset + buf.len() as u64;
        let mut decoded = Vec::new();
        while out_pos < end {
            let want = DECODE_CHUNK.min(blob.len.saturating_sub(in_pos));
            let mut raw = vec![0u8; want as usize];
            self.source.read_at(blob.offset + in_pos, &mut raw)?;
            decoded.clear();
            let used = text::decode_step(blob.encoding, &raw, &mut decoded)
                .map_err(|why| self.read_error(why))?;
            if used == 0 {
                return Err(self.read_error("array data shorter than its shape says"));
            }
            copy_overlap(&decoded, out_pos, offset, buf);
            out_pos += decoded.len() as u64;
            in_pos += used as u64;
            self.remember(key, out_pos, in_pos);
        }
        Ok(())
    }

    fn read_error(&self, why: impl ToString) -> Error {
        Error::read(self.source.path(), "pickled array", why)
    }

    fn checkpoint(&self, key: Key, offset: u64) -> (u64, u64) {
        let checkpoints = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        let points = checkpoints.get(&key).map(Vec::as_slice).unwrap_or_default();
        let after = points.partition_point(|&(out, _)| out <= offset);
        after
            .checked_sub(1)
            .and_then(|i| points.get(i).copied())
            .unwrap_or((0, 0))
    }

    fn remember(&self, key: Key, out_pos: u64, in_pos: u64) {
        let mut checkpoints = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        let points = checkpoints.entry(key).or_default();
        let last = points.last().map_or(0, |&(out, _)| out);
        if out_pos >= last + CHECKPOINT_EVERY {
            points.push((out_pos, in_pos));
        }
    }
}

/// Copies the part of `decoded` (which starts at virtual offset `start`) that falls in the
/// window of `buf` (which starts at `offset`).
fn copy_overlap(decoded: &[u8], start: u64, offset: u64, buf: &mut [u8]) {
    let end = start + decoded.len() as u64;
    let from = start.max(offset);
    let to = end.min(offset + buf.len() as u64);
    if from >= to {
        return;
    }
    let src = decoded.get((from - start) as usize..(to - start) as usize);
    let dst = buf.get_mut((from - offset) as usize..(to - offset) as usize);
    if let (Some(src), Some(dst)) = (src, dst) {
        dst.copy_from_slice(src);
    }
}

/// The listing of directory `dir` of a tree built from a pickle (also a torch checkpoint's).
pub fn listing(nodes: &[Node], dir: Key) -> Result<Listing> {
    let Some(node) = nodes.get(dir as usize) else {
        return Err(Error::NotFound);
    };
    let Node::Dir(dir) = node else {
        return Err(Error::NotDir);
    };
    Ok(Listing {
        entries: dir
            .children
            .iter()
            .filter_map(|(name, index)| entry(nodes, name, *index))
            .collect(),
        xattrs: Vec::new(),
        skipped: dir.skipped.clone(),
    })
}

fn entry(nodes: &[Node], name: &str, index: usize) -> Option<Entry> {
    let node = nodes.get(index)?;
    let kind = match node {
        Node::Dir(_) => EntryKind::Dir,
        Node::Array(array) => EntryKind::Array(array.header.clone()),
    };
    let mut entry = Entry::new(name.to_string(), index as Key, kind);
    if let Some(logical) = match node {
        Node::Array(array) => array.logical,
        Node::Dir(_) => None,
    } {
        entry.xattrs = [(
            "user.arrfs.dtype_logical".into(),
            logical.as_bytes().to_vec(),
        )]
        .into();
    }
    Some(entry)
}

/// Runs a PyTorch checkpoint's `data.pkl`: persistent ids are storages, torch's rebuild
/// functions are data. `stem` names a top-level tensor.
pub fn run_torch<R: std::io::Read + std::io::Seek>(
    reader: R,
    len: u64,
    stem: &str,
) -> Result<Vec<Node>, MachineError> {
    let reader = OpReader::new(reader, len);
    let mut machine = PickleMachine::new(reader, Limits::default()).with_torch_storages();
    let top = machine.run()?;
    Ok(tree::build(&machine.heap, &top, stem))
}

impl Source for PickleSource {
    fn list(&self, dir: Key) -> Result<Listing> {
        listing(&self.nodes, dir)
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        let array = self.array(file)?;
        let Some(unit) = array.swap_unit else {
            return self.read_stored(file, array, offset, buf);
        };
        // Whole units around the request, swapped, then the wanted bytes.
        let unit = unit as u64;
        let start = offset - offset % unit;
        let end = (offset + buf.len() as u64).next_multiple_of(unit);
        let mut units = vec![0u8; (end - start) as usize];
        self.read_stored(file, array, start, &mut units)?;
        units
            .chunks_exact_mut(unit as usize)
            .for_each(<[u8]>::reverse);
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&units[skip..skip + buf.len()]);
        Ok(())
    }
}

impl PickleSource {
    fn read_stored(
        &self,
        file: Key,
        array: &ArrayPayload,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        match &array.data {
            PayloadData::File { offset: start } => self.source.read_at(start + offset, buf),
            PayloadData::Memory(bytes) => {
                let end = offset as usize + buf.len();
                let src = bytes.get(offset as usize..end);
                let src = src.ok_or_else(|| self.read_error("read past the end"))?;
                buf.copy_from_slice(src);
                Ok(())
            }
            PayloadData::Encoded(blob) => self.read_encoded(file, blob, offset, buf),
            PayloadData::Tensor(_) => Err(self.read_error("tensor storage outside a checkpoint")),
        }
    }
}

/// Extensions that let a protocol 0/1 pickle (which has no PROTO opcode) be recognised.
const PICKLE_EXTENSIONS: &[&str] = &["pkl", "pickle", "pck", "pcl", "p", "joblib", "jbl"];

/// First opcodes a protocol 0/1 pickle starts with.
const TEXT_PROTOCOL_STARTS: &[u8] = b"(]})NIJKLFGSTUVXcdlt";

/// Whether the file looks like a pickle: PROTO 2-5 first, or (with a pickle extension) a
/// protocol 0/1 opcode first and STOP last. Compressed joblib dumps are refused clearly.
pub fn sniff(file: &SourceFile) -> Result<bool> {
    let len = file.len();
    let name = file.location().file_name();
    let mut head = [0u8; 8];
    let head = match file.read_at(0, &mut head) {
        Ok(()) => &head[..],
        Err(_) => return Ok(false),
    };
    if let [0x80, 2..=5, ..] = head {
        return Ok(true);
    }
    if compression(file)?.is_some() {
        return Ok(true);
    }
    if !has_pickle_extension(&name) {
        return Ok(false);
    }
    if head.starts_with(b"ZF") {
        return Err(Error::format(
            file.path(),
            "joblib < 0.10 compressed dump (ZF format) is not supported",
        ));
    }
    let mut last = [0u8; 1];
    let ends_with_stop = file.read_at(len.saturating_sub(1), &mut last).is_ok() && last == *b".";
    Ok(ends_with_stop
        && head
            .first()
            .is_some_and(|b| TEXT_PROTOCOL_STARTS.contains(b)))
}

fn has_pickle_extension(name: &str) -> bool {
    let ext = Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    ext.is_some_and(|e| PICKLE_EXTENSIONS.contains(&e.as_str()))
}

/// The compression a whole pickle stream is wrapped in: a known magic whose first decoded
/// bytes are a pickle's PROTO opcode (protocol 2-5; every joblib dump has one). None: not a
/// compressed pickle.
fn compression(file: &SourceFile) -> Result<Option<Codec>> {
    let mut head = [0u8; 8];
    if file.read_at(0, &mut head).is_err() {
        return Ok(None);
    }
    let Some(codec) = Codec::of(&head) else {
        return Ok(None);
    };
    let decoded = backing::decoded_head(file, codec, 2);
    Ok(matches!(decoded.as_deref(), Some([0x80, 2..=5])).then_some(codec))
}

/// The name a top-level array takes: the file's name without its compression and pickle
/// extensions (`x.pkl.gz` -> `x`).
fn stem_of(file_name: &str, codec: Option<Codec>) -> String {
    let mut name = match file_name {
        "" => "array".to_string(),
        name => name.to_string(),
    };
    if codec.is_some() {
        for ext in [
            ".gz", ".gzip", ".z", ".zlib", ".bz2", ".xz", ".lzma", ".lz4",
        ] {
            if name.to_ascii_lowercase().ends_with(ext) && name.len() > ext.len() {
                name.truncate(name.len() - ext.len());
                break;
            }
        }
    }
    match Path::new(&name).file_stem() {
        Some(stem) => stem.to_string_lossy().into_owned(),
        None => name,
    }
}

/// Builds the opaque-safe top value of a stream given as bytes (for tests and fuzzing).
#[cfg(test)]
pub fn run_bytes(bytes: &[u8], limits: Limits) -> Result<Vec<Node>, MachineError> {
    let reader = OpReader::new(std::io::Cursor::new(bytes), bytes.len() as u64);
    let mut machine = PickleMachine::new(reader, limits);
    let top = machine.run()?;
    Ok(tree::build(&machine.heap, &top, "top"))
}

#[cfg(test)]
mod tests;

/// Opens a pickle or uncompressed joblib dump.
pub fn open(location: &Location, options: &SourceOptions) -> Result<PickleSource> {
    PickleSource::open(location, options)
}
