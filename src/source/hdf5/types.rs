//! HDF5 datatypes as numpy dtypes, following h5py so that a virtual file equals
//! `np.save(f, h5py_dataset[()])` (README, "The `.npy` bytes").

use std::ffi::c_void;

use hdf5_sys::h5::hsize_t;
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5t::*;

use super::error::Hdf5Error;
use super::ffi::{sync, take_h5_string, Hid};
use super::records::{record_members, RecordMember};
use crate::npy::{ByteOrder, Dtype, Field};

/// How a dataset's elements become `.npy` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElementType {
    /// The stored bytes are the numpy bytes; `dims` are array-type dims appended to the shape.
    Fixed { dtype: Dtype, dims: Vec<u64> },
    /// Variable-length strings, widened to the longest value (`<U n` or `|S n`); `dims`: an
    /// array type of them, its dims appended to the shape.
    VarString { utf8: bool, dims: Vec<u64> },
    /// A compound with variable-length string members (`records.rs`).
    Record { members: Vec<RecordMember> },
}

impl ElementType {
    /// How many strings one dataset element holds (1 but for arrays of strings).
    pub fn strings_per_element(&self) -> usize {
        match self {
            ElementType::VarString { dims, .. } => dims.iter().product::<u64>() as usize,
            ElementType::Fixed { .. } | ElementType::Record { .. } => 1,
        }
    }
}

/// Maps the HDF5 type `tid`, or says why no plain `.npy` can hold it.
pub fn element_type(tid: hid_t) -> Result<ElementType, Hdf5Error> {
    sync(|| {
        // SAFETY: tid is a valid datatype id for the whole call.
        unsafe {
            match H5Tget_class(tid) {
                H5T_class_t::H5T_STRING if H5Tis_variable_str(tid) > 0 => {
                    let utf8 = H5Tget_cset(tid) == H5T_cset_t::H5T_CSET_UTF8;
                    Ok(ElementType::VarString {
                        utf8,
                        dims: Vec::new(),
                    })
                }
                H5T_class_t::H5T_COMPOUND => match record_members(tid, |m| record_member_dtype(m))?
                {
                    Some(members) => Ok(ElementType::Record { members }),
                    None => Ok(ElementType::Fixed {
                        dtype: dtype_of(tid)?,
                        dims: Vec::new(),
                    }),
                },
                H5T_class_t::H5T_ARRAY => {
                    let (base, dims) = array_parts(tid)?;
                    if H5Tis_variable_str(base.0) > 0 {
                        let utf8 = H5Tget_cset(base.0) == H5T_cset_t::H5T_CSET_UTF8;
                        return Ok(ElementType::VarString { utf8, dims });
                    }
                    Ok(ElementType::Fixed {
                        dtype: dtype_of(base.0)?,
                        dims,
                    })
                }
                _ => Ok(ElementType::Fixed {
                    dtype: dtype_of(tid)?,
                    dims: Vec::new(),
                }),
            }
        }
    })
}

/// A fixed member of a record: its dtype and array dims.
///
/// # Safety
/// `member` must be a valid datatype id; call under HDF5's lock.
unsafe fn record_member_dtype(member: hid_t) -> Result<(Dtype, Vec<u64>), Hdf5Error> {
    // Read through its converting memory type if it has one (`records::record_mem_type`),
    // which keeps its size.
    converting(member)?;
    match H5Tget_class(member) {
        H5T_class_t::H5T_ARRAY => {
            let (base, dims) = array_parts(member)?;
            Ok((dtype_of(base.0)?, dims))
        }
        _ => Ok((dtype_of(member)?, Vec::new())),
    }
}

pub(super) unsafe fn array_parts(tid: hid_t) -> Result<(Hid, Vec<u64>), Hdf5Error> {
    let rank = H5Tget_array_ndims(tid);
    let mut dims = vec![0 as hsize_t; rank.max(0) as usize];
    if rank < 0 || H5Tget_array_dims2(tid, dims.as_mut_ptr()) < 0 {
        return Err("unreadable array type".into());
    }
    let base = Hid::new(H5Tget_super(tid))?;
    Ok((base, dims))
}

fn order_of(tid: hid_t) -> ByteOrder {
    // SAFETY: tid is valid.
    match unsafe { H5Tget_order(tid) } {
        H5T_order_t::H5T_ORDER_BE => ByteOrder::Big,
        _ => ByteOrder::Little,
    }
}

/// The dtype of a fixed-size HDF5 type (no variable-length parts).
unsafe fn dtype_of(tid: hid_t) -> Result<Dtype, Hdf5Error> {
    let size = H5Tget_size(tid);
    let order = order_of(tid);
    match H5Tget_class(tid) {
        H5T_class_t::H5T_INTEGER => {
            let kind = match H5Tget_sign(tid) {
                H5T_sign_t::H5T_SGN_NONE => 'u',
                _ => 'i',
            };
            int_dtype(kind, order, size)
        }
        H5T_class_t::H5T_BITFIELD => int_dtype('u', order, size),
        H5T_class_t::H5T_FLOAT if matches!(size, 2 | 4 | 8) => Ok(Dtype::plain('f', order, size)),
        H5T_class_t::H5T_FLOAT if is_native_long_double(tid) => Ok(Dtype::plain('f', order, size)),
        H5T_class_t::H5T_FLOAT => Err(Hdf5Error::Unsupported(format!(
            "{size}-byte float other than this machine's long double: no numpy dtype here"
        ))),
        H5T_class_t::H5T_STRING if H5Tis_variable_str(tid) > 0 => {
            Err("variable-length string inside a compound or array type".into())
        }
        H5T_class_t::H5T_STRING => Ok(Dtype::plain('S', order, size)),
        H5T_class_t::H5T_OPAQUE => Ok(Dtype::plain('V', order, size)),
        H5T_class_t::H5T_ENUM => enum_dtype(tid),
        H5T_class_t::H5T_COMPOUND => compound_dtype(tid, size),
        H5T_class_t::H5T_ARRAY => Err("nested array type".into()),
        H5T_class_t::H5T_REFERENCE => Err("object or region references".into()),
        H5T_class_t::H5T_VLEN => Err("variable-length sequences".into()),
        H5T_class_t::H5T_TIME => Err("HDF5 time type".into()),
        other => Err(format!("unsupported HDF5 type class {other:?}").into()),
    }
}

fn int_dtype(kind: char, order: ByteOrder, size: usize) -> Result<Dtype, Hdf5Error> {
    match size {
        1 | 2 | 4 | 8 => Ok(Dtype::plain(kind, order, size)),
        _ => Err(format!("{size}-byte integer has no numpy dtype").into()),
    }
}

/// h5py stores numpy bools as an int8 enum `{FALSE: 0, TRUE: 1}`; other enums read as their
/// base integer.
unsafe fn enum_dtype(tid: hid_t) -> Result<Dtype, Hdf5Error> {
    if is_h5py_bool(tid) {
        return Ok(Dtype::plain('b', ByteOrder::NotApplicable, 1));
    }
    let base = Hid::new(H5Tget_super(tid))?;
    dtype_of(base.0)
}

unsafe fn is_h5py_bool(tid: hid_t) -> bool {
    if H5Tget_size(tid) != 1 || H5Tget_nmembers(tid) != 2 {
        return false;
    }
    let mut names = Vec::new();
    for i in 0..2 {
        let mut value: i8 = -1;
        H5Tget_member_value(tid, i, (&mut value as *mut i8).cast::<c_void>());
        names.push((take_h5_string(H5Tget_member_name(tid, i)), value));
    }
    names.sort_by_key(|(_, v)| *v);
    names
        == [
            (Some("FALSE".to_string()), 0),
            (Some("TRUE".to_string()), 1),
        ]
}

unsafe fn compound_dtype(tid: hid_t, itemsize: usize) -> Result<Dtype, Hdf5Error> {
    let n = H5Tget_nmembers(tid);
    if n < 0 {
        return Err("unreadable compound type".into());
    }
    let mut fields = Vec::with_capacity(n as usize);
    for i in 0..n as u32 {
        let name = take_h5_string(H5Tget_member_name(tid, i)).unwrap_or_default();
        let offset = H5Tget_member_offset(tid, i);
        let member = Hid::new(H5Tget_member_type(tid, i))?;
        let (dtype, shape) = match H5Tget_class(member.0) {
            H5T_class_t::H5T_ARRAY => {
                let (base, dims) = array_parts(member.0)?;
                (dtype_of(base.0)?, dims)
            }
            _ => (dtype_of(member.0)?, Vec::new()),
        };
        fields.push(Field {
            name,
            offset,
            dtype,
            shape,
        });
    }
    if let Some(complex) = as_h5py_complex(&fields, itemsize) {
        return Ok(complex);
    }
    // h5py keeps the members in the file's order, but `np.save` cannot write a dtype whose
    // fields are out of offset order: they are listed by offset instead (the same bytes).
    fields.sort_by_key(|f| f.offset);
    let dtype = Dtype::Struct { fields, itemsize };
    if dtype.is_describable() {
        Ok(dtype)
    } else {
        Err("compound with overlapping members".into())
    }
}

/// h5py writes complex numbers as a compound `{r, i}` of two equal floats.
fn as_h5py_complex(fields: &[Field], itemsize: usize) -> Option<Dtype> {
    let [r, i] = fields else { return None };
    let Dtype::Plain {
        kind: 'f',
        order,
        size,
    } = r.dtype
    else {
        return None;
    };
    let plain = r.name == "r" && i.name == "i" && r.shape.is_empty() && i.shape.is_empty();
    let layout = r.offset == 0 && i.offset == size && itemsize == 2 * size && i.dtype == r.dtype;
    (plain && layout && matches!(size, 4 | 8)).then(|| Dtype::plain('c', order, 2 * size))
}

/// A memory type for reading variable-length strings as `char*`.
pub fn var_string_mem_type(file_type: hid_t) -> hdf5::Result<Hid> {
    // SAFETY: file_type is a valid string type.
    sync(|| Hid::new(unsafe { H5Tget_native_type(file_type, H5T_direction_t::H5T_DIR_ASCEND) }))
}

/// A memory type for reading `file_type` through libhdf5 when its stored bytes are not the
/// numpy bytes of its dtype: integers with fewer significant bits than their size, or at an
/// offset (n-bit types), and floats outside the IEEE layout of their size. h5py reads those
/// converted to the plain type of the same size, sign and byte order, and so do we. Fixed
/// strings that are not null-padded: h5py reads them null-padded. Compounds holding such
/// members are read through a compound of the converted members. None: the stored bytes are
/// numpy's. `Err`: an enum over such a base (left out).
pub fn converting_mem_type(file_type: hid_t) -> Result<Option<Hid>, Hdf5Error> {
    // SAFETY: file_type is a valid datatype id for the whole call.
    sync(|| unsafe { converting(file_type) })
}

unsafe fn converting(tid: hid_t) -> Result<Option<Hid>, Hdf5Error> {
    let plain = |id: hid_t| Ok(Some(Hid::new(id)?));
    match H5Tget_class(tid) {
        H5T_class_t::H5T_INTEGER if !is_full_width(tid) => {
            let copy = Hid::new(H5Tcopy(tid))?;
            let bits = 8 * H5Tget_size(tid);
            let reset = H5Tset_offset(copy.0, 0) >= 0
                && H5Tset_precision(copy.0, bits) >= 0
                && H5Tset_pad(copy.0, H5T_pad_t::H5T_PAD_ZERO, H5T_pad_t::H5T_PAD_ZERO) >= 0;
            reset
                .then_some(Some(copy))
                .ok_or("unconvertible integer type".into())
        }
        H5T_class_t::H5T_FLOAT if !is_ieee(tid) && !is_native_long_double(tid) => {
            let big = matches!(order_of(tid), ByteOrder::Big);
            match (H5Tget_size(tid), big) {
                (4, false) => plain(H5Tcopy(*H5T_IEEE_F32LE)),
                (4, true) => plain(H5Tcopy(*H5T_IEEE_F32BE)),
                (8, false) => plain(H5Tcopy(*H5T_IEEE_F64LE)),
                (8, true) => plain(H5Tcopy(*H5T_IEEE_F64BE)),
                (size, _) => Err(format!("{size}-byte float outside the IEEE layout").into()),
            }
        }
        H5T_class_t::H5T_ARRAY => {
            let (base, dims) = array_parts(tid)?;
            let Some(mem_base) = converting(base.0)? else {
                return Ok(None);
            };
            plain(H5Tarray_create2(
                mem_base.0,
                dims.len() as u32,
                dims.as_ptr(),
            ))
        }
        H5T_class_t::H5T_STRING if H5Tis_variable_str(tid) <= 0 => {
            if H5Tget_strpad(tid) == H5T_str_t::H5T_STR_NULLPAD {
                return Ok(None);
            }
            // h5py reads every fixed string through a null-padded memory type: space padding
            // is stripped, a null-terminated value ends at its first null.
            let copy = Hid::new(H5Tcopy(tid))?;
            if H5Tset_strpad(copy.0, H5T_str_t::H5T_STR_NULLPAD) >= 0 {
                Ok(Some(copy))
            } else {
                Err("unconvertible string padding".into())
            }
        }
        H5T_class_t::H5T_COMPOUND => converting_compound(tid),
        H5T_class_t::H5T_ENUM => {
            let base = Hid::new(H5Tget_super(tid))?;
            match converting(base.0)? {
                Some(_) => Err("enum stored with reduced precision (n-bit)".into()),
                None => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// A compound of the same layout whose members that need converting are replaced by their
/// memory types; None if no member needs it.
unsafe fn converting_compound(tid: hid_t) -> Result<Option<Hid>, Hdf5Error> {
    let n = H5Tget_nmembers(tid).max(0) as u32;
    let mut members = Vec::with_capacity(n as usize);
    let mut any = false;
    for i in 0..n {
        let member = Hid::new(H5Tget_member_type(tid, i))?;
        let converted = converting(member.0)?;
        any |= converted.is_some();
        members.push(converted.unwrap_or(member));
    }
    if !any {
        return Ok(None);
    }
    let mem = Hid::new(H5Tcreate(H5T_class_t::H5T_COMPOUND, H5Tget_size(tid)))?;
    for (i, member) in members.iter().enumerate() {
        let name = H5Tget_member_name(tid, i as u32);
        let offset = H5Tget_member_offset(tid, i as u32);
        let status = H5Tinsert(mem.0, name, offset, member.0);
        take_h5_string(name);
        if status < 0 {
            return Err("unconvertible compound member".into());
        }
    }
    Ok(Some(mem))
}

/// Whether all bits of the integer type are significant.
unsafe fn is_full_width(tid: hid_t) -> bool {
    H5Tget_offset(tid) == 0 && H5Tget_precision(tid) == 8 * H5Tget_size(tid)
}

/// Whether a float type has the IEEE 754 layout of its size (half, single, double).
unsafe fn is_ieee(tid: hid_t) -> bool {
    let (mut spos, mut epos, mut esize, mut mpos, mut msize) = (0, 0, 0, 0, 0);
    if H5Tget_fields(tid, &mut spos, &mut epos, &mut esize, &mut mpos, &mut msize) < 0 {
        return false;
    }
    let fields = (spos, epos, esize, mpos, msize, H5Tget_ebias(tid));
    let ieee = match H5Tget_size(tid) {
        2 => (15, 10, 5, 0, 10, 15),
        4 => (31, 23, 8, 0, 23, 127),
        8 => (63, 52, 11, 0, 52, 1023),
        _ => return false,
    };
    is_full_width(tid) && fields == ieee && H5Tget_norm(tid) == H5T_norm_t::H5T_NORM_IMPLIED
}

/// Whether a float type is x86-64's long double, numpy's `np.longdouble` (`<f16`): the x87
/// 80-bit extended format (explicit integer bit, so not normalised) in 16 little-endian
/// bytes. h5py reads it without conversion, padding bytes as stored; so do we.
unsafe fn is_native_long_double(tid: hid_t) -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    let (mut spos, mut epos, mut esize, mut mpos, mut msize) = (0, 0, 0, 0, 0);
    if H5Tget_fields(tid, &mut spos, &mut epos, &mut esize, &mut mpos, &mut msize) < 0 {
        return false;
    }
    let layout = (spos, epos, esize, mpos, msize, H5Tget_ebias(tid));
    H5Tget_size(tid) == 16
        && H5Tget_order(tid) == H5T_order_t::H5T_ORDER_LE
        && H5Tget_offset(tid) == 0
        && H5Tget_precision(tid) == 80
        && layout == (79, 64, 15, 0, 64, 16383)
        && H5Tget_norm(tid) == H5T_norm_t::H5T_NORM_NONE
}

/// The layout of a plain integer type stored with reduced precision or at an offset (which
/// the direct path widens itself); None for any other type.
pub fn reduced_int(tid: hid_t) -> Option<super::codecs::ReducedInt> {
    // SAFETY: tid is a valid datatype id for the whole call.
    sync(|| unsafe {
        if H5Tget_class(tid) != H5T_class_t::H5T_INTEGER || is_full_width(tid) {
            return None;
        }
        Some(super::codecs::ReducedInt {
            size: H5Tget_size(tid),
            precision: u32::try_from(H5Tget_precision(tid)).ok()?,
            offset: u32::try_from(H5Tget_offset(tid)).ok()?,
            signed: H5Tget_sign(tid) != H5T_sign_t::H5T_SGN_NONE,
            big_endian: matches!(order_of(tid), ByteOrder::Big),
        })
    })
}

/// Where the variable-length string references lie in one element as stored in the file:
/// each is a length, a collection address and an object index (`heap.rs`), `ref_size`
/// bytes, where the type in memory holds a pointer.
#[derive(Debug, PartialEq, Eq)]
pub struct StoredRefs {
    /// Bytes of one element in the file.
    pub unit: usize,
    ref_size: usize,
    /// (byte offset in the element, references in a row there).
    spans: Vec<(usize, usize)>,
}

impl StoredRefs {
    /// The placement for elements of `tid` (a type as `H5Dget_type` gives it: laid out for
    /// memory), or None if it holds other variable-length data we cannot place.
    pub fn of_type(tid: hid_t, ref_size: usize) -> Option<StoredRefs> {
        let mut spans = Vec::new();
        // SAFETY: under HDF5's lock, queries of a valid type and of the types it returns
        // (owned by `Hid`s).
        let unit = sync(|| unsafe { place_refs(tid, ref_size, 0, &mut spans) })?;
        let inside = spans
            .iter()
            .all(|&(at, n)| n.checked_mul(ref_size).and_then(|b| b.checked_add(at)) <= Some(unit));
        inside.then_some(StoredRefs {
            unit,
            ref_size,
            spans,
        })
    }

    /// References in one element.
    pub fn per_element(&self) -> usize {
        self.spans.iter().map(|&(_, n)| n).sum()
    }

    /// The references of the whole elements in `raw`, one after another.
    pub fn gather(&self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() / self.unit.max(1) * self.per_element());
        for element in raw.chunks_exact(self.unit.max(1)) {
            for &(at, n) in &self.spans {
                out.extend_from_slice(&element[at..at + n * self.ref_size]);
            }
        }
        out
    }
}

/// Adds the references of type `tid` placed at `at` to `spans`; returns the type's size in
/// the file. In the file a variable-length string takes `ref_size` bytes, in memory a
/// pointer: libhdf5 shifts every later compound member by the difference (`H5T__set_loc`),
/// which is undone here member by member, in offset order.
///
/// # Safety
/// `tid` must be a valid type; call under HDF5's lock.
unsafe fn place_refs(
    tid: hid_t,
    ref_size: usize,
    at: usize,
    spans: &mut Vec<(usize, usize)>,
) -> Option<usize> {
    match H5Tget_class(tid) {
        H5T_class_t::H5T_STRING if H5Tis_variable_str(tid) > 0 => {
            spans.push((at, 1));
            Some(ref_size)
        }
        H5T_class_t::H5T_VLEN | H5T_class_t::H5T_NO_CLASS => None,
        H5T_class_t::H5T_ARRAY => {
            let (base, dims) = array_parts(tid).ok()?;
            let count = dims
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d as usize))?;
            let mut inner = Vec::new();
            let size = place_refs(base.0, ref_size, 0, &mut inner)?;
            if !inner.is_empty() {
                for k in 0..count {
                    let start = at.checked_add(k.checked_mul(size)?)?;
                    spans.extend(inner.iter().map(|&(o, n)| (start + o, n)));
                }
            }
            size.checked_mul(count)
        }
        H5T_class_t::H5T_COMPOUND => {
            let members = u32::try_from(H5Tget_nmembers(tid)).ok()?;
            let mut by_offset = Vec::new();
            for i in 0..members {
                let member = Hid::new(H5Tget_member_type(tid, i)).ok()?;
                by_offset.push((H5Tget_member_offset(tid, i), member));
            }
            by_offset.sort_by_key(|(offset, _)| *offset);
            let mut shift: isize = 0;
            for (offset, member) in &by_offset {
                let in_memory = H5Tget_size(member.0);
                let start = at.checked_add_signed(shift)?.checked_add(*offset)?;
                let in_file = place_refs(member.0, ref_size, start, spans)?;
                shift += in_file as isize - in_memory as isize;
            }
            H5Tget_size(tid).checked_add_signed(shift)
        }
        _ => Some(H5Tget_size(tid)),
    }
}
