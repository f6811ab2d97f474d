//! GGUF files (llama.cpp, versions 2 and 3, little-endian): metadata key/values become
//! xattrs `user.gguf.KEY` of the root; each tensor is `NAME.npy`, served by `pread`.
//! GGUF lists dimensions innermost first: the `.npy` shape is that list reversed, as the
//! `gguf` Python reader shows it. Quantized tensors are shown as the `gguf` reader's
//! `.data` shows them: their raw blocks as `|u1`, the last dimension counted in bytes
//! (`ne0 / block_values * block_bytes`), with the type in `user.arrfs.dtype_logical`.
//! Hand-written: no crate reads GGUF's header without also pulling a tensor runtime.

use std::io::{BufReader, Read};

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};
use crate::io::{Location, SourceFile, SourceReader};
use crate::npy::{ByteOrder, Dtype, NpyHeader};
use crate::source::tensors::{EntryError, Tensor, TensorFile};
use crate::source::{SourceOptions, Xattr};

pub const MAGIC: &[u8] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Deepest nesting of metadata arrays we follow (GGUF writers use one level).
const MAX_ARRAY_DEPTH: usize = 8;
const MAX_DIMS: u32 = 8;

/// How a GGML tensor type is shown: a plain dtype, or raw blocks of `values` values in
/// `bytes` bytes.
enum TypeView {
    Plain(Dtype, Option<&'static str>),
    Blocks {
        name: &'static str,
        values: u64,
        bytes: u64,
    },
}

/// GGML's type numbers (ggml.h `enum ggml_type`) and block sizes (`GGML_QUANT_SIZES` of the
/// `gguf` package).
fn type_view(code: u32) -> Option<TypeView> {
    let plain = |kind, size| {
        Some(TypeView::Plain(
            Dtype::plain(kind, ByteOrder::Little, size),
            None,
        ))
    };
    let blocks = |name, values, bytes| {
        Some(TypeView::Blocks {
            name,
            values,
            bytes,
        })
    };
    match code {
        0 => plain('f', 4),
        1 => plain('f', 2),
        24 => plain('i', 1),
        25 => plain('i', 2),
        26 => plain('i', 4),
        27 => plain('i', 8),
        28 => plain('f', 8),
        30 => Some(TypeView::Plain(
            Dtype::Plain {
                kind: 'V',
                order: ByteOrder::Little,
                size: 2,
            },
            Some("bfloat16"),
        )),
        2 => blocks("Q4_0", 32, 18),
        3 => blocks("Q4_1", 32, 20),
        6 => blocks("Q5_0", 32, 22),
        7 => blocks("Q5_1", 32, 24),
        8 => blocks("Q8_0", 32, 34),
        9 => blocks("Q8_1", 32, 40),
        10 => blocks("Q2_K", 256, 84),
        11 => blocks("Q3_K", 256, 110),
        12 => blocks("Q4_K", 256, 144),
        13 => blocks("Q5_K", 256, 176),
        14 => blocks("Q6_K", 256, 210),
        15 => blocks("Q8_K", 256, 292),
        16 => blocks("IQ2_XXS", 256, 66),
        17 => blocks("IQ2_XS", 256, 74),
        18 => blocks("IQ3_XXS", 256, 98),
        19 => blocks("IQ1_S", 256, 50),
        20 => blocks("IQ4_NL", 32, 18),
        21 => blocks("IQ3_S", 256, 110),
        22 => blocks("IQ2_S", 256, 82),
        23 => blocks("IQ4_XS", 256, 136),
        29 => blocks("IQ1_M", 256, 56),
        34 => blocks("TQ1_0", 256, 54),
        35 => blocks("TQ2_0", 256, 66),
        39 => blocks("MXFP4", 32, 17),
        40 => blocks("NVFP4", 64, 36),
        41 => blocks("Q1_0", 128, 18),
        _ => None,
    }
}

/// Why a GGUF header cannot be read; made an [`Error`] in one place ([`Self::at`]).
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    /// The file's own fault: truncated, corrupt, or a version arrfs does not read.
    #[error("{0}")]
    Malformed(String),
    /// Reading the file failed (which may pass, e.g. out of memory).
    #[error("read failed at byte {at}: {source}")]
    Read { at: u64, source: std::io::Error },
}

impl HeaderError {
    fn malformed(why: impl Into<String>) -> Self {
        HeaderError::Malformed(why.into())
    }

    /// Says which part of the header was being read.
    fn within(self, what: impl std::fmt::Display) -> Self {
        match self {
            HeaderError::Malformed(why) => HeaderError::Malformed(format!("{what}: {why}")),
            read => read,
        }
    }

    /// The error of the file at `location`: a failed read keeps the error of the read, so
    /// that a resource error stays one (and is not remembered as a broken file).
    fn at(self, location: &Location) -> Error {
        match self {
            HeaderError::Malformed(why) => Error::format(location.display(), why),
            HeaderError::Read { source, .. } => match source.into_inner() {
                Some(inner) => match inner.downcast::<Error>() {
                    Ok(read) => *read,
                    Err(other) => Error::format(location.display(), other.to_string()),
                },
                None => Error::format(location.display(), "read failed"),
            },
        }
    }
}

/// Sequential reads of the header with every length checked against the file size, so a
/// hostile count or length cannot make us allocate more than the file holds.
struct HeaderReader<'a> {
    inner: BufReader<SourceReader<'a>>,
    pos: u64,
    len: u64,
}

impl HeaderReader<'_> {
    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, HeaderError> {
        if n > self.len.saturating_sub(self.pos) {
            return Err(HeaderError::Malformed(format!(
                "header field of {n} bytes at byte {} runs past the end of the file ({} bytes; truncated?)",
                self.pos, self.len
            )));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|source| HeaderError::Read {
                at: self.pos,
                source,
            })?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let bytes = self.bytes(N as u64)?;
        Ok(bytes.try_into().expect("N bytes"))
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        self.array().map(u64::from_le_bytes)
    }

    fn string(&mut self) -> Result<String, HeaderError> {
        let n = self.u64()?;
        let bytes = self.bytes(n)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A metadata value of GGUF value type `kind`.
    fn value(&mut self, kind: u32, depth: usize) -> Result<Value, HeaderError> {
        let int = |n: i64| Value::Number(n.into());
        Ok(match kind {
            0 => int(self.array::<1>()?[0].into()),
            1 => int(i8::from_le_bytes(self.array()?).into()),
            2 => int(u16::from_le_bytes(self.array()?).into()),
            3 => int(i16::from_le_bytes(self.array()?).into()),
            4 => int(self.u32()?.into()),
            5 => int(i32::from_le_bytes(self.array()?).into()),
            6 => float32(f32::from_le_bytes(self.array()?)),
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => self.list(depth)?,
            10 => Value::Number(self.u64()?.into()),
            11 => int(i64::from_le_bytes(self.array()?)),
            12 => Number::from_f64(f64::from_le_bytes(self.array()?))
                .map_or(Value::Null, Value::Number),
            other => {
                let why = format!("unknown metadata value type {other}");
                return Err(HeaderError::Malformed(why));
            }
        })
    }

    fn list(&mut self, depth: usize) -> Result<Value, HeaderError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(HeaderError::malformed("metadata arrays nested too deep"));
        }
        let kind = self.u32()?;
        let n = self.u64()?;
        // Every item takes at least one byte: a count beyond the file is a lie.
        if n > self.len.saturating_sub(self.pos) {
            return Err(HeaderError::Malformed(format!(
                "metadata array of {n} items is longer than the file"
            )));
        }
        let items: Result<Vec<Value>, HeaderError> =
            (0..n).map(|_| self.value(kind, depth + 1)).collect();
        Ok(Value::Array(items?))
    }
}

/// An f32 as its shortest decimal text (0.1, not 0.10000000149011612).
fn float32(x: f32) -> Value {
    format!("{x}")
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

struct TensorInfo {
    name: String,
    dims: Vec<u64>,
    kind: u32,
    offset: u64,
}

/// Opens a GGUF file. A header that cannot be read or tensor data past the end of the file
/// fail the mount; a tensor of an unknown type or impossible shape is left out.
pub fn open(location: &Location, options: &SourceOptions) -> Result<TensorFile> {
    let file = SourceFile::open(location)?;
    let bad = |cause: String| Error::format(location.display(), cause);
    let mut reader = HeaderReader {
        inner: BufReader::new(file.reader()),
        pos: 0,
        len: file.len(),
    };
    let (metadata, infos) = read_header(&mut reader).map_err(|e| e.at(location))?;
    let alignment = match metadata.get("general.alignment") {
        Some(Value::Number(n)) => n.as_u64().filter(|a| *a > 0 && a.is_power_of_two()),
        Some(_) => None,
        None => Some(DEFAULT_ALIGNMENT),
    }
    .ok_or_else(|| bad("general.alignment is not a power of two".into()))?;
    let data_start = reader.pos.next_multiple_of(alignment);
    let mut tree = TensorFile::new(file, options);
    for info in infos {
        tree.add_entry(&info.name, tensor(&info, data_start, tree.file().len()))?;
    }
    if options.attrs_json {
        let mut text = serde_json::to_vec_pretty(&metadata).unwrap_or_default();
        text.push(b'\n');
        tree.add_bytes(".attrs.json".into(), text);
    }
    tree.set_root_xattrs(xattrs(&metadata));
    Ok(tree)
}

fn read_header(
    reader: &mut HeaderReader,
) -> Result<(Map<String, Value>, Vec<TensorInfo>), HeaderError> {
    if reader.bytes(4)? != MAGIC {
        return Err(HeaderError::malformed("not a GGUF file"));
    }
    let version = reader.u32()?;
    let unsupported = match version {
        2 | 3 => None,
        1 => Some("GGUF version 1 is not supported (convert it with llama.cpp)".into()),
        v if v.swap_bytes() <= 3 => Some("big-endian GGUF files are not supported".into()),
        v => Some(format!("GGUF version {v} is not supported")),
    };
    if let Some(why) = unsupported {
        return Err(HeaderError::Malformed(why));
    }
    let tensor_count = reader.u64()?;
    let kv_count = reader.u64()?;
    // Each key/value and tensor entry takes more than 8 bytes: larger counts are lies.
    let room = reader.len / 8;
    if tensor_count > room || kv_count > room {
        return Err(HeaderError::Malformed(format!(
            "{tensor_count} tensors and {kv_count} metadata entries cannot fit in the file"
        )));
    }
    let mut metadata = Map::new();
    for _ in 0..kv_count {
        let key = reader.string()?;
        let kind = reader.u32()?;
        let value = reader
            .value(kind, 0)
            .map_err(|e| e.within(format_args!("metadata {key:?}")))?;
        metadata.insert(key, value);
    }
    let mut infos = Vec::new();
    for _ in 0..tensor_count {
        let name = reader.string()?;
        let n_dims = reader.u32()?;
        if n_dims > MAX_DIMS {
            let why = format!("tensor {name:?} has {n_dims} dimensions");
            return Err(HeaderError::Malformed(why));
        }
        let dims = (0..n_dims)
            .map(|_| reader.u64())
            .collect::<Result<_, _>>()?;
        let kind = reader.u32()?;
        let offset = reader.u64()?;
        infos.push(TensorInfo {
            name,
            dims,
            kind,
            offset,
        });
    }
    Ok((metadata, infos))
}

/// The `.npy` form of one tensor: data past the end of the file is a broken entry; a type
/// or shape arrfs does not serve leaves the tensor out.
fn tensor(info: &TensorInfo, data_start: u64, file_len: u64) -> Result<Tensor, EntryError> {
    let Some(view) = type_view(info.kind) else {
        let why = format!("GGML type {} is not supported", info.kind);
        return Err(EntryError::unsupported(why));
    };
    let mut shape: Vec<u64> = info.dims.iter().rev().copied().collect();
    let (dtype, logical) = match view {
        TypeView::Plain(dtype, logical) => (dtype, logical.map(str::to_string)),
        TypeView::Blocks {
            name,
            values,
            bytes,
        } => {
            let Some(last) = shape.last_mut() else {
                let why = format!("{name} tensor without dimensions");
                return Err(EntryError::unsupported(why));
            };
            if *last % values != 0 {
                return Err(EntryError::unsupported(format!(
                    "{name} rows of {last} values are not whole blocks of {values}"
                )));
            }
            *last = *last / values * bytes;
            let logical = format!("{name} ({values} values in blocks of {bytes} bytes)");
            (
                Dtype::plain('u', ByteOrder::NotApplicable, 1),
                Some(logical),
            )
        }
    };
    let header = NpyHeader::new(dtype, shape);
    let size = header
        .shape
        .iter()
        .try_fold(header.dtype.itemsize() as u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64);
    let Some(size) = size else {
        return Err(EntryError::unsupported("shape too large"));
    };
    let start = data_start.checked_add(info.offset);
    match start.and_then(|s| s.checked_add(size)) {
        Some(end) if end <= file_len => {}
        _ => {
            return Err(EntryError::Broken(format!(
                "data at offset {} (+{size} bytes) runs past the end of the file ({file_len} bytes; truncated?)",
                info.offset
            )))
        }
    }
    let type_name = match type_view(info.kind) {
        Some(TypeView::Blocks { name, .. }) => name.to_string(),
        _ => ggml_plain_name(info.kind).to_string(),
    };
    let mut xattrs: Vec<Xattr> = vec![("user.gguf.type".into(), type_name.into_bytes())];
    if let Some(logical) = logical {
        xattrs.push(("user.arrfs.dtype_logical".into(), logical.into_bytes()));
    }
    Ok(Tensor {
        header,
        offset: data_start + info.offset,
        xattrs,
    })
}

fn ggml_plain_name(code: u32) -> &'static str {
    match code {
        0 => "F32",
        1 => "F16",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        30 => "BF16",
        _ => "?",
    }
}

/// Metadata as `user.gguf.KEY`: strings as UTF-8 text, numbers as decimal text, bools as
/// `true`/`false`, arrays as JSON.
fn xattrs(metadata: &Map<String, Value>) -> Vec<Xattr> {
    metadata
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (format!("user.gguf.{key}"), text.into_bytes())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SkipReason;

    #[test]
    fn floats_print_shortest() {
        assert_eq!(float32(0.1).to_string(), "0.1");
        assert_eq!(float32(1e-5).to_string(), "0.00001");
    }

    #[test]
    fn quantized_rows_are_counted_in_bytes() {
        let info = TensorInfo {
            name: "q".into(),
            dims: vec![64, 3],
            kind: 8,
            offset: 0,
        };
        let t = tensor(&info, 0, 1000).unwrap();
        assert_eq!(t.header.shape, [3, 68]);
        assert_eq!(t.header.dtype.descr(), "'|u1'");
        let odd = TensorInfo {
            dims: vec![40, 3],
            ..info
        };
        assert!(matches!(
            tensor(&odd, 0, 1000),
            Err(EntryError::Skip(SkipReason::Unsupported(_)))
        ));
    }
}
