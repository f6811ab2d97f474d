//! HDF5 attributes as extended attributes: `user.h5.NAME`, strings as UTF-8 text, numbers as
//! decimal text, arrays as JSON.

use std::ffi::{c_char, c_void};

use hdf5_sys::h5a::{H5Aget_space, H5Aget_type, H5Aread};
use hdf5_sys::h5s::H5Sget_simple_extent_npoints;
use hdf5_sys::h5t::H5Tget_size;
use serde_json::Value;

use super::ffi::{h5check, sync, take_h5_string, Hid};
use super::types::{element_type, var_string_mem_type, ElementType};
use crate::npy::{ByteOrder, Dtype};
use crate::source::Xattr;

/// Every attribute of `loc` (a group or dataset) as an xattr; unreadable ones are logged.
pub fn xattrs_of(loc: &hdf5::Location) -> Vec<Xattr> {
    let names = loc.attr_names().unwrap_or_default();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match loc
            .attr(&name)
            .map_err(|e| e.to_string())
            .and_then(|a| attr_value(&a))
        {
            Ok(value) => out.push((format!("user.h5.{name}"), value_text(&value).into_bytes())),
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

/// The attribute's value as JSON: a scalar for a scalar dataspace, else a flat list.
pub fn attr_value(attr: &hdf5::Attribute) -> Result<Value, String> {
    let aid = attr.id();
    let ftype = sync(|| Hid::new(unsafe { H5Aget_type(aid) })).map_err(|e| e.to_string())?;
    let space = sync(|| Hid::new(unsafe { H5Aget_space(aid) })).map_err(|e| e.to_string())?;
    let scalar = attr.shape().is_empty();
    let n = sync(|| unsafe { H5Sget_simple_extent_npoints(space.0) }).max(0) as usize;
    let values = match element_type(ftype.0)? {
        ElementType::VarString { .. } => read_var_strings(aid, ftype.0, n)?,
        ElementType::Fixed { dtype, .. } => {
            let size = sync(|| unsafe { H5Tget_size(ftype.0) });
            let mut buf = vec![0u8; n * size];
            let status = sync(|| {
                h5check(unsafe { H5Aread(aid, ftype.0, buf.as_mut_ptr().cast::<c_void>()) })
            });
            status.map_err(|e| e.to_string())?;
            buf.chunks_exact(size.max(1))
                .map(|item| element_value(&dtype, item))
                .collect()
        }
    };
    match (scalar, values.len()) {
        (true, 1) => Ok(values.into_iter().next().unwrap()),
        _ => Ok(Value::Array(values)),
    }
}

fn read_var_strings(aid: i64, ftype: i64, n: usize) -> Result<Vec<Value>, String> {
    let mem = var_string_mem_type(ftype).map_err(|e| e.to_string())?;
    let mut ptrs: Vec<*mut c_char> = vec![std::ptr::null_mut(); n];
    sync(|| h5check(unsafe { H5Aread(aid, mem.0, ptrs.as_mut_ptr().cast::<c_void>()) }))
        .map_err(|e| e.to_string())?;
    Ok(ptrs
        .into_iter()
        // SAFETY: HDF5 allocated each string in the read above.
        .map(|p| Value::String(unsafe { take_h5_string(p) }.unwrap_or_default()))
        .collect())
}

/// One element of `dtype` stored in `bytes`, as JSON.
pub fn element_value(dtype: &Dtype, bytes: &[u8]) -> Value {
    match dtype {
        Dtype::Struct { fields, .. } => {
            let mut map = serde_json::Map::new();
            for f in fields {
                let size = f.dtype.itemsize();
                let count = f.shape.iter().product::<u64>() as usize;
                let part = &bytes[f.offset..f.offset + size * count];
                let value = match f.shape.is_empty() {
                    true => element_value(&f.dtype, part),
                    false => Value::Array(
                        part.chunks_exact(size.max(1))
                            .map(|p| element_value(&f.dtype, p))
                            .collect(),
                    ),
                };
                map.insert(f.name.clone(), value);
            }
            Value::Object(map)
        }
        Dtype::Plain { kind, order, size } => plain_value(*kind, *order, *size, bytes),
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
    }
}
