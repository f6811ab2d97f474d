//! HDF5 attributes as extended attributes: `user.h5.NAME`, strings as UTF-8 text, numbers as
//! decimal text, arrays as JSON nested by shape; and, with `--attrs-json`, as typed JSON
//! sidecar files.

use std::cell::OnceCell;
use std::ffi::{c_char, c_void};

use base64::Engine;
use hdf5_sys::h5a::{H5Aget_space, H5Aget_type, H5Aread};
use hdf5_sys::h5s::H5Sget_simple_extent_npoints;
use hdf5_sys::h5t::H5Tget_size;
use serde_json::{Map, Value};

use super::error::Hdf5Error;
use super::ffi::{file_layout, h5check, header_address, sync, take_h5_string, Hid};
use super::heap::{FileLayout, HeapError, ReadAt, VlenRefs};
use super::ohdr::Messages;
use super::types::{element_type, var_string_mem_type, ElementType};
use crate::npy::{ByteOrder, Dtype};
use crate::source::{Entry, EntryKind, Xattr};

/// How byte strings (fixed-length strings, opaque values) become JSON. An xattr is text, so
/// they stay text there; a sidecar must give back the exact bytes, so there they are base64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BytesAs {
    Text,
    Base64,
}

/// Every attribute of `loc` (a group or dataset) as an xattr; unreadable ones are logged.
/// `read_at` reads the file that holds `loc`, if it is the mounted one: then the references
/// of variable-length strings are checked before libhdf5 follows them ([`StringCheck`]).
pub fn xattrs_of(loc: &hdf5::Location, read_at: Option<ReadAt>) -> Vec<Xattr> {
    attr_values(loc, BytesAs::Text, read_at)
        .into_iter()
        .map(|(name, value)| (format!("user.h5.{name}"), value_text(&value).into_bytes()))
        .collect()
}

/// The sidecar `name` holding every attribute of `loc` as one JSON object, or None when
/// `loc` has none and `always` is false (groups get a sidecar only if they have attributes).
pub fn sidecar(
    name: String,
    loc: &hdf5::Location,
    always: bool,
    read_at: Option<ReadAt>,
) -> Option<Entry> {
    let values = attr_values(loc, BytesAs::Base64, read_at);
    if values.is_empty() && !always {
        return None;
    }
    let document: Map<String, Value> = values.into_iter().collect();
    let mut text = serde_json::to_vec_pretty(&document).unwrap_or_default();
    text.push(b'\n');
    Some(Entry::new(name, 0, EntryKind::Bytes(text.into())))
}

/// Name and value of each readable attribute of `loc`.
fn attr_values(
    loc: &hdf5::Location,
    bytes_as: BytesAs,
    read_at: Option<ReadAt>,
) -> Vec<(String, Value)> {
    let names = loc.attr_names().unwrap_or_default();
    let mut out = Vec::with_capacity(names.len());
    let check = read_at.map(|read_at| StringCheck::new(loc, read_at));
    for name in names {
        let checked = |strings| match &check {
            Some(check) => check.check(&name, strings),
            None => Ok(()),
        };
        match loc
            .attr(&name)
            .map_err(Hdf5Error::from)
            .and_then(|a| attr_value(&a, bytes_as, &checked))
        {
            Ok(value) => out.push((name, value)),
            Err(why) => log::debug!("{}: attribute {name:?} left out: {why}", loc.name()),
        }
    }
    out
}

/// The text of an xattr: strings and numbers bare, arrays and records as JSON.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Attributes whose value would take more than this are left out: sizes come from the
/// file, and a corrupt one must not make us allocate without bound.
const MAX_ATTRIBUTE_BYTES: usize = 64 << 20;

/// Checks the variable-length string references of the attributes of one object against
/// their global heap before libhdf5 follows them (`heap.rs`): a damaged length would make
/// libhdf5 allocate it, a damaged heap collection make it spin. The references are the
/// attribute's bytes in the object header (`ohdr.rs`); attributes in dense storage, or of
/// a header we cannot parse, are not checked.
struct StringCheck<'a> {
    read_at: ReadAt<'a>,
    /// The object's header messages and its file's layout, read on first use.
    header: OnceCell<Option<(Messages, FileLayout)>>,
    loc: &'a hdf5::Location,
}

impl<'a> StringCheck<'a> {
    fn new(loc: &'a hdf5::Location, read_at: ReadAt<'a>) -> Self {
        StringCheck {
            read_at,
            header: OnceCell::new(),
            loc,
        }
    }

    /// Checks the first `strings` references of attribute `name`.
    fn check(&self, name: &str, strings: usize) -> Result<(), HeapError> {
        let header = self.header.get_or_init(|| {
            let layout = file_layout(self.loc.id())?;
            let addr = header_address(self.loc.id())?;
            match Messages::read(self.read_at, addr, layout) {
                Ok(messages) => Some((messages, layout)),
                Err(why) => {
                    log::debug!("{}: attributes not checked: {why}", self.loc.name());
                    None
                }
            }
        });
        let Some((messages, layout)) = header else {
            return Ok(());
        };
        let Some(data) = messages.attribute_data(name) else {
            return Ok(());
        };
        let mut refs = VlenRefs::new(*layout);
        let raw = strings
            .checked_mul(refs.ref_size())
            .and_then(|need| data.get(..need))
            .ok_or(HeapError::ValueTooShort)?;
        refs.check(self.read_at, raw, 0)
    }
}

/// The attribute's value as JSON: a scalar for a scalar dataspace, else lists nested by shape.
/// `check_strings(n)` must pass before libhdf5 reads its `n` variable-length strings.
pub fn attr_value(
    attr: &hdf5::Attribute,
    bytes_as: BytesAs,
    check_strings: &dyn Fn(usize) -> Result<(), HeapError>,
) -> Result<Value, Hdf5Error> {
    let aid = attr.id();
    // SAFETY: plain queries of an open attribute and of its own ids (also below).
    let ftype = sync(|| Hid::new(unsafe { H5Aget_type(aid) }))?;
    // SAFETY: as above.
    let space = sync(|| Hid::new(unsafe { H5Aget_space(aid) }))?;
    // SAFETY: as above.
    let n = sync(|| unsafe { H5Sget_simple_extent_npoints(space.0) }).max(0) as usize;
    let too_big = || Hdf5Error::Unsupported(format!("larger than {MAX_ATTRIBUTE_BYTES} bytes"));
    let values = match element_type(ftype.0)? {
        element @ ElementType::VarString { .. } => {
            let strings = n.checked_mul(element.strings_per_element());
            let pointers = strings.and_then(|s| s.checked_mul(std::mem::size_of::<usize>()));
            if pointers.is_none_or(|b| b > MAX_ATTRIBUTE_BYTES) {
                return Err(too_big());
            }
            let strings = strings.unwrap_or(0);
            check_strings(strings)?;
            read_var_strings(aid, ftype.0, strings)?
        }
        ElementType::Record { .. } => {
            return Err("compound with variable-length strings (not shown as an xattr)".into())
        }
        ElementType::Fixed { dtype, .. } => {
            // SAFETY: a plain query of the attribute's own type id.
            let size = sync(|| unsafe { H5Tget_size(ftype.0) });
            let bytes = n.checked_mul(size).filter(|&b| b <= MAX_ATTRIBUTE_BYTES);
            let mut buf = vec![0u8; bytes.ok_or_else(too_big)?];
            let status = sync(|| {
                // SAFETY: `buf` holds the n elements of the attribute's own type.
                h5check(unsafe { H5Aread(aid, ftype.0, buf.as_mut_ptr().cast::<c_void>()) })
            });
            status?;
            buf.chunks_exact(size.max(1))
                .map(|item| typed_value(&dtype, item, bytes_as))
                .collect()
        }
    };
    Ok(nest(&values, &attr.shape()))
}

/// Flat `values` in C order as lists nested by `shape`, as numpy's `tolist()`; a scalar
/// shape gives the value itself.
fn nest(values: &[Value], shape: &[usize]) -> Value {
    let Some((&outer, inner)) = shape.split_first() else {
        return match values {
            [one] => one.clone(),
            _ => Value::Array(values.to_vec()),
        };
    };
    let stride = inner.iter().try_fold(1usize, |p, &d| p.checked_mul(d));
    let Some(stride) = stride.filter(|s| outer.checked_mul(*s) == Some(values.len())) else {
        return Value::Array(values.to_vec());
    };
    // An empty inner shape would give `outer` empty lists: bounded, as `outer` comes from
    // the file.
    if inner.is_empty() || (stride == 0 && outer > 1 << 16) {
        return Value::Array(values.to_vec());
    }
    let rows = (0..outer).map(|i| nest(&values[i * stride..(i + 1) * stride], inner));
    Value::Array(rows.collect())
}

fn read_var_strings(aid: i64, ftype: i64, n: usize) -> Result<Vec<Value>, Hdf5Error> {
    let mem = var_string_mem_type(ftype)?;
    let mut ptrs: Vec<*mut c_char> = vec![std::ptr::null_mut(); n];
    // SAFETY: `ptrs` holds one string pointer for each of the attribute's n elements.
    sync(|| h5check(unsafe { H5Aread(aid, mem.0, ptrs.as_mut_ptr().cast::<c_void>()) }))?;
    Ok(ptrs
        .into_iter()
        // SAFETY: HDF5 allocated each string in the read above.
        .map(|p| Value::String(unsafe { take_h5_string(p) }.unwrap_or_default()))
        .collect())
}

/// One element of `dtype` stored in `bytes`, as JSON (byte strings as text).
pub fn element_value(dtype: &Dtype, bytes: &[u8]) -> Value {
    typed_value(dtype, bytes, BytesAs::Text)
}

fn typed_value(dtype: &Dtype, bytes: &[u8], bytes_as: BytesAs) -> Value {
    match dtype {
        Dtype::Struct { fields, .. } => {
            let mut map = serde_json::Map::new();
            for f in fields {
                let size = f.dtype.itemsize();
                let count = f.shape.iter().product::<u64>() as usize;
                let part = &bytes[f.offset..f.offset + size * count];
                let items: Vec<Value> = part
                    .chunks_exact(size.max(1))
                    .map(|p| typed_value(&f.dtype, p, bytes_as))
                    .collect();
                let shape: Vec<usize> = f.shape.iter().map(|&d| d as usize).collect();
                map.insert(f.name.clone(), nest(&items, &shape));
            }
            Value::Object(map)
        }
        Dtype::Plain { kind, order, size } => match (kind, bytes_as) {
            ('S' | 'V', BytesAs::Base64) => base64_value(bytes, *kind == 'S'),
            _ => plain_value(*kind, *order, *size, bytes),
        },
    }
}

fn plain_value(kind: char, order: ByteOrder, size: usize, bytes: &[u8]) -> Value {
    let ordered = |b: &[u8]| -> Vec<u8> {
        let mut v = b.to_vec();
        if order == ByteOrder::Big {
            v.reverse();
        }
        v
    };
    match kind {
        'b' => Value::Bool(bytes[0] != 0),
        'i' => Value::from(signed(&ordered(bytes))),
        'u' => Value::from(unsigned(&ordered(bytes))),
        'f' => float_value(float(&ordered(bytes))),
        'c' => {
            let half = size / 2;
            Value::Array(vec![
                float_value(float(&ordered(&bytes[..half]))),
                float_value(float(&ordered(&bytes[half..]))),
            ])
        }
        'S' => {
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            Value::String(String::from_utf8_lossy(&bytes[..end]).into_owned())
        }
        _ => Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect()),
    }
}

/// `{"base64": "..."}`: bytes that JSON cannot hold as a string. Fixed-length strings lose
/// their trailing NULs, as numpy's `bytes_` does.
fn base64_value(bytes: &[u8], trim_nuls: bool) -> Value {
    let end = if trim_nuls {
        bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
    } else {
        bytes.len()
    };
    let text = base64::engine::general_purpose::STANDARD.encode(&bytes[..end]);
    serde_json::json!({ "base64": text })
}

fn float_value(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or_else(|| Value::String(format!("{x}")), Value::Number)
}

fn unsigned(le: &[u8]) -> u64 {
    le.iter().rev().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

fn signed(le: &[u8]) -> i64 {
    let bits = 8 * le.len() as u32;
    let raw = unsigned(le);
    match bits {
        64 => raw as i64,
        _ => ((raw << (64 - bits)) as i64) >> (64 - bits),
    }
}

fn float(le: &[u8]) -> f64 {
    match le.len() {
        2 => half::f16::from_le_bytes([le[0], le[1]]).to_f64(),
        4 => f64::from(f32::from_le_bytes(le.try_into().unwrap())),
        _ => f64::from_le_bytes(le.try_into().unwrap()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_of_every_width_and_order() {
        let i2 = Dtype::plain('i', ByteOrder::Big, 2);
        assert_eq!(element_value(&i2, &[0xff, 0xfe]), Value::from(-2));
        let u4 = Dtype::plain('u', ByteOrder::Little, 4);
        assert_eq!(element_value(&u4, &[1, 0, 0, 0]), Value::from(1u64));
        let f8 = Dtype::plain('f', ByteOrder::Big, 8);
        assert_eq!(element_value(&f8, &1.5f64.to_be_bytes()), Value::from(1.5));
    }

    #[test]
    fn strings_lose_trailing_nuls() {
        let s = Dtype::plain('S', ByteOrder::NotApplicable, 5);
        assert_eq!(element_value(&s, b"ab\0\0\0"), Value::from("ab"));
        let base64 = typed_value(&s, b"ab\0\0\0", BytesAs::Base64);
        assert_eq!(base64, serde_json::json!({ "base64": "YWI=" }));
    }

    #[test]
    fn nesting_survives_shapes_that_overflow() {
        let values: Vec<Value> = (0..6).map(Value::from).collect();
        let huge = [usize::MAX / 2, 4, 1 << 40];
        assert_eq!(nest(&values, &huge), Value::Array(values.clone()));
        assert_eq!(nest(&values, &[0, 6]), Value::Array(values.clone()));
    }

    #[test]
    fn arrays_nest_by_shape() {
        let values: Vec<Value> = (0..6).map(Value::from).collect();
        assert_eq!(
            nest(&values, &[2, 3]),
            serde_json::json!([[0, 1, 2], [3, 4, 5]])
        );
        assert_eq!(nest(&values, &[6]), serde_json::json!([0, 1, 2, 3, 4, 5]));
        assert_eq!(nest(&values[..1], &[]), serde_json::json!(0));
        assert_eq!(nest(&[], &[3, 0]), serde_json::json!([[], [], []]));
    }
}
