//! safetensors files: an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the raw little-endian tensor bytes. Each tensor
//! is served by `pread` of its range; `__metadata__` becomes `user.safetensors.KEY` xattrs of
//! the root. The header is parsed with serde_json (the `safetensors` crate would pull a second
//! copy of the same parsing and offers nothing for serving byte ranges).

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::io::{Location, SourceFile};
use crate::npy::{ByteOrder, Dtype, NpyHeader};
use crate::source::tensors::{EntryError, Tensor, TensorFile};
use crate::source::{SourceOptions, Xattr};

/// The safetensors library refuses headers larger than this; so do we.
const MAX_HEADER: u64 = 100 << 20;
const METADATA_KEY: &str = "__metadata__";

/// Whether the first bytes of a file look like a safetensors header: a plausible length
/// followed by `{` (or `[`, to say clearly that a JSON list is not a safetensors header).
/// A length that runs past the end is reported by [`open`], as a truncated file.
pub fn sniff(head: &[u8]) -> bool {
    let Some((length, rest)) = head.split_first_chunk::<8>() else {
        return false;
    };
    let n = u64::from_le_bytes(*length);
    (2..=MAX_HEADER).contains(&n) && matches!(rest.first(), Some(b'{' | b'['))
}

/// numpy's view of a safetensors dtype: the `.npy` dtype and, for types numpy lacks, the
/// real type's name (`user.arrfs.dtype_logical`), as `ml_dtypes` names it.
pub fn dtype_of(name: &str) -> Option<(Dtype, Option<&'static str>)> {
    let plain = |kind, size| Some((Dtype::plain(kind, ByteOrder::Little, size), None));
    // What np.save writes for ml_dtypes arrays: '<V2' for bfloat16, '<V1' for float8 (for
    // float8_e5m2 np.save writes '<f1', which np.load refuses: '<V1' like the others).
    let opaque = |size, logical| {
        let dtype = Dtype::Plain {
            kind: 'V',
            order: ByteOrder::Little,
            size,
        };
        Some((dtype, Some(logical)))
    };
    match name {
        "F64" => plain('f', 8),
        "F32" => plain('f', 4),
        "F16" => plain('f', 2),
        "I64" => plain('i', 8),
        "I32" => plain('i', 4),
        "I16" => plain('i', 2),
        "I8" => plain('i', 1),
        "U64" => plain('u', 8),
        "U32" => plain('u', 4),
        "U16" => plain('u', 2),
        "U8" => plain('u', 1),
        "BOOL" => plain('b', 1),
        "C64" => plain('c', 8),
        "BF16" => opaque(2, "bfloat16"),
        "F8_E4M3" => opaque(1, "float8_e4m3fn"),
        "F8_E5M2" => opaque(1, "float8_e5m2"),
        "F8_E4M3FNUZ" => opaque(1, "float8_e4m3fnuz"),
        "F8_E5M2FNUZ" => opaque(1, "float8_e5m2fnuz"),
        "F8_E8M0" => opaque(1, "float8_e8m0fnu"),
        _ => None,
    }
}

/// Opens a safetensors file: every tensor whose entry makes sense is shown; entries that do
/// not are left out with the reason; a header that cannot be read fails the mount.
pub fn open(location: &Location, options: &SourceOptions) -> Result<TensorFile> {
    let file = SourceFile::open(location)?;
    let (header, data_start) = read_header(&file)?;
    let mut tree = TensorFile::new(file, options);
    let mut root_xattrs = Vec::new();
    let mut names: Vec<&String> = header.keys().collect();
    names.sort();
    for name in names {
        let entry = &header[name];
        if name == METADATA_KEY {
            root_xattrs = metadata_xattrs(entry);
            continue;
        }
        tree.add_entry(name, tensor(entry, data_start, tree.file().len()))?;
    }
    if options.attrs_json {
        let metadata = header.get(METADATA_KEY).cloned().unwrap_or_default();
        let mut text = serde_json::to_vec_pretty(&metadata).unwrap_or_default();
        text.push(b'\n');
        tree.add_bytes(".attrs.json".into(), text);
    }
    tree.set_root_xattrs(root_xattrs);
    Ok(tree)
}

/// The JSON header as an object, and the file offset where tensor data starts.
fn read_header(file: &SourceFile) -> Result<(Map<String, Value>, u64)> {
    let bad = |cause: String| Error::format(file.path(), cause);
    let mut length = [0u8; 8];
    file.read_at(0, &mut length)
        .map_err(|_| bad("too short for a safetensors file".into()))?;
    let n = u64::from_le_bytes(length);
    if n > MAX_HEADER {
        return Err(bad(format!(
            "safetensors header of {n} bytes (limit {MAX_HEADER})"
        )));
    }
    if n > file.len().saturating_sub(8) {
        return Err(bad(format!(
            "safetensors header of {n} bytes runs past the end of the file ({} bytes; truncated?)",
            file.len()
        )));
    }
    let mut text = vec![0u8; n as usize];
    file.read_at(8, &mut text)?;
    let value: Value = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("safetensors header is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad("safetensors header is not a JSON object".into()));
    };
    Ok((map, 8 + n))
}

/// `__metadata__` (a string -> string map) as `user.safetensors.KEY` xattrs.
fn metadata_xattrs(metadata: &Value) -> Vec<Xattr> {
    let Value::Object(map) = metadata else {
        return Vec::new();
    };
    map.iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (format!("user.safetensors.{key}"), text.into_bytes())
        })
        .collect()
}

/// One header entry as a tensor: data past the end of the file (a truncated file) is a
/// broken entry; an entry that makes no sense is left out.
fn tensor(entry: &Value, data_start: u64, file_len: u64) -> Result<Tensor, EntryError> {
    let dtype_name = entry.get("dtype").and_then(Value::as_str).unwrap_or("");
    let Some((dtype, logical)) = dtype_of(dtype_name) else {
        let why = format!("dtype {dtype_name:?} is not supported");
        return Err(EntryError::unsupported(why));
    };
    let Some(shape) = u64_list(entry.get("shape")) else {
        let why = "shape is not a list of non-negative integers";
        return Err(EntryError::unsupported(why));
    };
    let offsets = u64_list(entry.get("data_offsets"));
    let Some(&[begin, end]) = offsets.as_deref() else {
        let why = "data_offsets is not a pair of non-negative integers";
        return Err(EntryError::unsupported(why));
    };
    let header = NpyHeader::new(dtype, shape);
    let want = checked_len(&header);
    if end < begin || want != Some(end - begin) {
        return Err(EntryError::unsupported(format!(
            "data_offsets [{begin}, {end}] do not hold {} bytes of {dtype_name} {:?}",
            want.map_or("too many".into(), |n| n.to_string()),
            header.shape
        )));
    }
    match data_start.checked_add(end) {
        Some(last) if last <= file_len => {}
        _ => {
            return Err(EntryError::Broken(format!(
                "data ends at byte {}, past the end of the file ({file_len} bytes; truncated?)",
                data_start.saturating_add(end)
            )))
        }
    }
    let mut xattrs = vec![(
        "user.safetensors.dtype".into(),
        dtype_name.as_bytes().to_vec(),
    )];
    if let Some(logical) = logical {
        xattrs.push((
            "user.arrfs.dtype_logical".into(),
            logical.as_bytes().to_vec(),
        ));
    }
    Ok(Tensor {
        header,
        offset: data_start + begin,
        xattrs,
    })
}

/// The payload length, or None if it does not fit in 63 bits.
fn checked_len(header: &NpyHeader) -> Option<u64> {
    header
        .shape
        .iter()
        .try_fold(header.dtype.itemsize() as u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
}

fn u64_list(value: Option<&Value>) -> Option<Vec<u64>> {
    value?.as_array()?.iter().map(Value::as_u64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SkipReason;

    #[test]
    fn sniffs_a_length_then_a_brace() {
        let mut head = 16u64.to_le_bytes().to_vec();
        head.push(b'{');
        assert!(sniff(&head));
        head[..8].copy_from_slice(&(MAX_HEADER + 1).to_le_bytes());
        assert!(!sniff(&head), "implausible header length");
        head[8] = b'"';
        assert!(!sniff(&head));
        assert!(!sniff(b"short"));
    }

    #[test]
    fn dtypes_numpy_lacks_are_void_with_their_real_name() {
        let (bf16, logical) = dtype_of("BF16").unwrap();
        assert_eq!(bf16.descr(), "'<V2'");
        assert_eq!(logical, Some("bfloat16"));
        assert_eq!(dtype_of("F8_E5M2").unwrap().0.descr(), "'<V1'");
        assert_eq!(dtype_of("U8").unwrap().0.descr(), "'|u1'");
        assert_eq!(dtype_of("BOOL").unwrap().0.descr(), "'|b1'");
        assert!(dtype_of("F4").is_none());
    }

    #[test]
    fn lengths_that_overflow_are_refused() {
        let entry =
            serde_json::json!({"dtype": "F64", "shape": [1u64 << 62, 4], "data_offsets": [0, 0]});
        assert!(matches!(
            tensor(&entry, 8, 100),
            Err(EntryError::Skip(SkipReason::Unsupported(_)))
        ));
    }
}
