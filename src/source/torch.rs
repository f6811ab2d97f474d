//! PyTorch checkpoints (`torch.save` since 1.6): a zip holding `NAME/data.pkl` (the object,
//! pickled) and one member `NAME/data/KEY` per storage. The pickle is run by our own machine
//! with torch's globals read as data (`pickle/torch.rs`); nothing is imported or called. The
//! tree follows the pickle layout (README, "What appears where"); each tensor reads from its
//! storage member: a `pread`
//! when the view is contiguous (C or Fortran order, as `np.save(tensor.numpy())` writes it),
//! else gathered into C order, row by row, as it is read. With `-o widen=f32`, bfloat16 and
//! float8 tensors are served as `<f4`, converted as read.

use std::collections::HashMap;
use std::sync::Arc;

use zip::CompressionMethod;

use crate::error::{Error, Result};
use crate::io::SourceFile;
use crate::npy::widen::{self, Narrow};
use crate::source::npz::MemberInfo;
use crate::source::pickle::torch::{Layout, TensorData};
use crate::source::pickle::{self, ArrayPayload, MachineError, Node, PayloadData};
use crate::source::{EntryKind, Key, Listing, SkipReason, Skipped, Source, SourceOptions};

/// The first bytes of a legacy (torch < 1.6) checkpoint: PROTO 2, then the LONG1 magic
/// number 0x1950a86a20f9469cfc6c that `torch.save` pickled first.
pub const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
/// A storage row read whole (then picked from) when its span is at most this many bytes.
const GATHER_SPAN: u64 = 64 << 10;

/// The `NAME/data.pkl` member that makes a zip a PyTorch checkpoint.
pub(crate) fn data_pkl(members: &[MemberInfo]) -> Option<&MemberInfo> {
    members.iter().find(|m| {
        !m.is_dir
            && m.path
                .strip_suffix("/data.pkl")
                .is_some_and(|prefix| !prefix.is_empty() && !prefix.contains('/'))
    })
}

/// Where a storage member's bytes are.
struct Storage {
    start: u64,
    size: u64,
}

pub struct TorchSource {
    file: Arc<SourceFile>,
    nodes: Vec<Node>,
    /// File offset of `data.pkl`: arrays pickled inside it have offsets relative to it.
    pickle_start: u64,
    storages: HashMap<String, Storage>,
    /// Node index -> stored type of the tensors served widened to float32 (`-o widen=f32`).
    widened: HashMap<usize, Narrow>,
}

pub(crate) fn open(
    file: Arc<SourceFile>,
    members: &[MemberInfo],
    options: &SourceOptions,
) -> Result<TorchSource> {
    let path = &file.path().to_path_buf();
    let bad = |cause: String| Error::format(path, cause);
    let pkl = data_pkl(members).ok_or_else(|| bad("no data.pkl: not a checkpoint".into()))?;
    let prefix = pkl.path.trim_end_matches("data.pkl");
    if pkl.method != CompressionMethod::Stored || pkl.encrypted {
        return Err(bad(format!("{} is compressed or encrypted", pkl.path)));
    }
    check_range(&file, pkl)?;
    let byteorder = members
        .iter()
        .find(|m| m.path == format!("{prefix}byteorder"));
    if let Some(member) = byteorder {
        check_little_endian(&file, member)?;
    }
    let storages = storages(&file, members, prefix)?;
    // `data.pkl` as a stream of its own: positions count from the member's first byte.
    let reader = file.window(pkl.data_start, pkl.size);
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let mut nodes = pickle::run_torch(reader, pkl.size, stem.as_deref().unwrap_or("tensor"))
        .map_err(|e| match e {
            MachineError::Io(e) => Error::io(path, e),
            other => bad(format!("{}: {other}", pkl.path)),
        })?;
    leave_out_unreadable(&mut nodes, &storages);
    let widened = if options.widen {
        narrow_tensors(&nodes)
    } else {
        HashMap::new()
    };
    Ok(TorchSource {
        file,
        nodes,
        pickle_start: pkl.data_start,
        storages,
        widened,
    })
}

/// The tensors stored as a float type numpy lacks, by node index.
fn narrow_tensors(nodes: &[Node]) -> HashMap<usize, Narrow> {
    let narrow = |node: &Node| match node {
        Node::Array(array) if matches!(array.data, PayloadData::Tensor(_)) => {
            Narrow::from_logical(array.logical?)
        }
        _ => None,
    };
    nodes
        .iter()
        .enumerate()
        .filter_map(|(index, node)| Some((index, narrow(node)?)))
        .collect()
}

fn check_range(file: &SourceFile, member: &MemberInfo) -> Result<()> {
    match member.data_start.checked_add(member.compressed_size) {
        Some(end) if end <= file.len() => Ok(()),
        _ => Err(Error::format(
            file.path(),
            format!(
                "member {} extends past the end of the file (truncated?)",
                member.path
            ),
        )),
    }
}

/// `NAME/byteorder` says `little` (or is absent, before torch 1.9). Big-endian checkpoints
/// (written on s390x) are refused rather than shown with swapped values.
fn check_little_endian(file: &SourceFile, member: &MemberInfo) -> Result<()> {
    let refused = |why: String| Err(Error::format(file.path(), why));
    if member.method != CompressionMethod::Stored || member.size > 16 {
        return refused("unreadable byteorder member".into());
    }
    check_range(file, member)?;
    let mut text = vec![0u8; member.size as usize];
    // A failed read stays what it is (a resource error must not condemn the file).
    file.read_at(member.data_start, &mut text)?;
    match text.trim_ascii() {
        b"little" => Ok(()),
        b"big" => refused("big-endian checkpoint (byteorder 'big') is not supported".into()),
        other => refused(format!(
            "unknown byteorder {:?}",
            String::from_utf8_lossy(other)
        )),
    }
}

/// The stored `NAME/data/KEY` members. A storage past the end of the file fails the mount
/// (a truncated checkpoint); a compressed one is unreadable, so its tensors are left out.
fn storages(
    file: &SourceFile,
    members: &[MemberInfo],
    prefix: &str,
) -> Result<HashMap<String, Storage>> {
    let data = format!("{prefix}data/");
    let mut out = HashMap::new();
    for member in members {
        let Some(key) = member.path.strip_prefix(&data) else {
            continue;
        };
        if member.is_dir || member.method != CompressionMethod::Stored || member.encrypted {
            log::info!(
                "storage {} is compressed or encrypted: not read",
                member.path
            );
            continue;
        }
        check_range(file, member)?;
        out.insert(
            key.to_string(),
            Storage {
                start: member.data_start,
                size: member.size,
            },
        );
    }
    Ok(out)
}

/// Tensors whose storage is missing or too short, and arrays this source cannot serve, are
/// left out of the tree with the reason (`user.arrfs.skipped`), nothing else.
fn leave_out_unreadable(nodes: &mut [Node], storages: &HashMap<String, Storage>) {
    let mut removed: Vec<(usize, Unreadable)> = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        if let Node::Array(array) = node {
            if let Err(why) = readable(array, storages) {
                removed.push((index, why));
            }
        }
    }
    if removed.is_empty() {
        return;
    }
    let reasons: HashMap<usize, Unreadable> = removed.into_iter().collect();
    for node in nodes.iter_mut() {
        let Node::Dir(dir) = node else {
            continue;
        };
        let mut kept = Vec::with_capacity(dir.children.len());
        for (name, index) in dir.children.drain(..) {
            match reasons.get(&index) {
                Some(why) => {
                    log::info!("tensor {name} left out: {why}");
                    let stem = name.strip_suffix(".npy").unwrap_or(&name).to_string();
                    let why = SkipReason::Unsupported(why.to_string());
                    dir.skipped.push(Skipped::new(stem, why));
                }
                None => kept.push((name, index)),
            }
        }
        dir.children = kept;
    }
}

/// Why an array of `data.pkl` is left out.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("storage {0} is missing from the archive")]
    NoStorage(Arc<str>),
    #[error("tensor needs {needs} bytes of storage {key}, which holds {holds}")]
    PastStorage {
        needs: u64,
        key: Arc<str>,
        holds: u64,
    },
    #[error("numpy array pickled as text inside data.pkl")]
    Text,
    #[error("big-endian numpy array inside data.pkl")]
    BigEndian,
}

fn readable(
    array: &ArrayPayload,
    storages: &HashMap<String, Storage>,
) -> std::result::Result<(), Unreadable> {
    match &array.data {
        PayloadData::Tensor(tensor) => {
            let storage = storages
                .get(&*tensor.key)
                .ok_or_else(|| Unreadable::NoStorage(tensor.key.clone()))?;
            let needs = tensor.offset + tensor.span;
            if needs > storage.size {
                return Err(Unreadable::PastStorage {
                    needs,
                    key: tensor.key.clone(),
                    holds: storage.size,
                });
            }
            Ok(())
        }
        PayloadData::Encoded(_) => Err(Unreadable::Text),
        _ if array.swap_unit.is_some() => Err(Unreadable::BigEndian),
        PayloadData::File { .. } | PayloadData::Memory(_) => Ok(()),
    }
}

impl TorchSource {
    fn array(&self, key: Key) -> Result<&ArrayPayload> {
        match self.nodes.get(key as usize) {
            Some(Node::Array(array)) => Ok(array),
            Some(Node::Dir(_)) => Err(Error::IsDir),
            None => Err(Error::NotFound),
        }
    }

    fn read_tensor(&self, tensor: &TensorData, offset: u64, buf: &mut [u8]) -> Result<()> {
        let storage = self
            .storages
            .get(&*tensor.key)
            .ok_or_else(|| Error::read(self.file.path(), "tensor", "storage missing"))?;
        let start = storage.start + tensor.offset;
        match &tensor.layout {
            Layout::Contiguous => self.file.read_at(start + offset, buf),
            Layout::Strided { shape, strides } => {
                let view = StridedView {
                    start,
                    itemsize: tensor.itemsize,
                    shape,
                    strides,
                };
                self.gather(&view, offset, buf)
            }
        }
    }

    /// Fills `buf` with C-order bytes from `offset` of a strided view, one innermost row at
    /// a time: a row's storage span is read whole when small, else element by element.
    fn gather(&self, view: &StridedView, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (&n_inner, outer) = view.shape.split_last().expect("strided views have dims");
        let inner_stride = *view.strides.last().expect("strides match dims");
        let row_bytes = n_inner * view.itemsize;
        let end = offset + buf.len() as u64;
        let mut row_bytes_buf = vec![0u8; row_bytes as usize];
        let mut span_buf = Vec::new();
        for row in offset / row_bytes..end.div_ceil(row_bytes) {
            let base = view.row_base(outer, row);
            let span = ((n_inner - 1) * inner_stride + 1) * view.itemsize;
            if span <= GATHER_SPAN.max(2 * row_bytes) {
                span_buf.resize(span as usize, 0);
                self.file
                    .read_at(view.start + base * view.itemsize, &mut span_buf)?;
                for (i, out) in row_bytes_buf
                    .chunks_exact_mut(view.itemsize as usize)
                    .enumerate()
                {
                    let at = (i as u64 * inner_stride * view.itemsize) as usize;
                    out.copy_from_slice(&span_buf[at..at + out.len()]);
                }
            } else {
                for (i, out) in row_bytes_buf
                    .chunks_exact_mut(view.itemsize as usize)
                    .enumerate()
                {
                    let element = base + i as u64 * inner_stride;
                    self.file
                        .read_at(view.start + element * view.itemsize, out)?;
                }
            }
            copy_overlap(&row_bytes_buf, row * row_bytes, offset, buf);
        }
        Ok(())
    }
}

struct StridedView<'a> {
    /// File offset of the view's first element.
    start: u64,
    itemsize: u64,
    shape: &'a [u64],
    strides: &'a [u64],
}

impl StridedView<'_> {
    /// Storage element index (from the first element) of the start of C-order row `row`.
    fn row_base(&self, outer: &[u64], mut row: u64) -> u64 {
        let mut base = 0;
        for (dim, stride) in outer.iter().zip(self.strides).rev() {
            base += (row % dim) * stride;
            row /= dim;
        }
        base
    }
}

/// Copies the part of `data` (at virtual offset `start`) that falls in `buf` (at `offset`).
fn copy_overlap(data: &[u8], start: u64, offset: u64, buf: &mut [u8]) {
    let from = start.max(offset);
    let to = (start + data.len() as u64).min(offset + buf.len() as u64);
    if from < to {
        buf[(from - offset) as usize..(to - offset) as usize]
            .copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
    }
}

impl Source for TorchSource {
    fn list(&self, dir: Key) -> Result<Listing> {
        let mut listing = pickle::listing(&self.nodes, dir)?;
        for entry in &mut listing.entries {
            if let (true, EntryKind::Array(header)) = (
                self.widened.contains_key(&(entry.key as usize)),
                &mut entry.kind,
            ) {
                *header = widen::widened_header(header);
            }
        }
        Ok(listing)
    }

    fn read(&self, file: Key, offset: u64, buf: &mut [u8]) -> Result<()> {
        let array = self.array(file)?;
        match &array.data {
            PayloadData::Tensor(tensor) => match self.widened.get(&(file as usize)) {
                Some(&narrow) => widen::read_widened(narrow, offset, buf, |at, out| {
                    self.read_tensor(tensor, at, out)
                }),
                None => self.read_tensor(tensor, offset, buf),
            },
            PayloadData::File { offset: start } => {
                self.file.read_at(self.pickle_start + start + offset, buf)
            }
            PayloadData::Memory(bytes) => {
                let src = bytes
                    .get(offset as usize..offset as usize + buf.len())
                    .ok_or_else(|| Error::read(self.file.path(), "value", "read past the end"))?;
                buf.copy_from_slice(src);
                Ok(())
            }
            PayloadData::Encoded(_) => Err(Error::read(
                self.file.path(),
                "array",
                "text payload in a checkpoint",
            )),
        }
    }
}

/// Wraps the parts used by [`crate::source::open_container`].
pub(crate) fn open_source(
    file: Arc<SourceFile>,
    members: &[MemberInfo],
    options: &SourceOptions,
) -> Result<Arc<dyn Source>> {
    Ok(Arc::new(open(file, members, options)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_a_strided_view() {
        // x[:, ::3] of a 6x8 matrix: shape (6, 3), strides (8, 3).
        let view = StridedView {
            start: 0,
            itemsize: 4,
            shape: &[6, 3],
            strides: &[8, 3],
        };
        assert_eq!(view.row_base(&[6], 0), 0);
        assert_eq!(view.row_base(&[6], 5), 40);
        // z[:, ::2, 1:] of 2x3x4: shape (2, 2, 3), strides (12, 8, 1).
        let view = StridedView {
            start: 0,
            itemsize: 8,
            shape: &[2, 2, 3],
            strides: &[12, 8, 1],
        };
        assert_eq!(view.row_base(&[2, 2], 3), 12 + 8);
    }
}
