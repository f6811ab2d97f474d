//! Compounds with variable-length string members. h5py reads those members as Python
//! objects; a `.npy` holds them, per SPEC section 3, as fixed-width strings (`<U n` for UTF-8,
//! `|S n` for ASCII, n = the member's longest value, at least 1): the record becomes a packed
//! structured dtype with the members in the file's order, as
//! `h5py_data.astype([(name, fixed type), ...])` gives.

use std::ffi::c_char;

use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5t::*;

use super::dataset::OpenDataset;
use super::error::Hdf5Error;
use super::ffi::{sync, take_h5_string, Hid};
use super::types::array_parts;
use super::vlen::{arena_string, VlenArena, VlenError};
use crate::npy::{ByteOrder, Dtype, Field};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMember {
    pub name: String,
    pub kind: MemberKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberKind {
    /// Stored bytes are numpy's: `size` bytes of `dtype` with sub-array `dims`.
    Fixed {
        dtype: Dtype,
        dims: Vec<u64>,
        size: usize,
    },
    /// A variable-length string, or an array (`dims`) of them; each `width` bytes wide in
    /// the `.npy` (one character until measured).
    String {
        utf8: bool,
        width: usize,
        dims: Vec<u64>,
    },
}

/// One member's value of one record, as read.
pub enum Cell {
    Bytes(Vec<u8>),
    /// The member's strings (one, or one per element of its array).
    Texts(Vec<String>),
}

impl MemberKind {
    /// How many strings the member holds (1 for fixed members).
    fn strings(&self) -> usize {
        match self {
            MemberKind::String { dims, .. } => dims.iter().product::<u64>() as usize,
            MemberKind::Fixed { .. } => 1,
        }
    }

    /// Bytes of this member in the `.npy` record.
    fn npy_size(&self) -> usize {
        match self {
            MemberKind::Fixed { size, .. } => *size,
            MemberKind::String { width, .. } => *width * self.strings(),
        }
    }

    /// Bytes of one of this member's strings in the `.npy` (0 for fixed members).
    pub fn string_bytes(&self) -> usize {
        match self {
            MemberKind::String { width, .. } => *width,
            MemberKind::Fixed { .. } => 0,
        }
    }

    /// Bytes of this member in the memory type libhdf5 reads into.
    fn mem_size(&self) -> usize {
        match self {
            MemberKind::Fixed { size, .. } => *size,
            MemberKind::String { .. } => std::mem::size_of::<*mut c_char>() * self.strings(),
        }
    }
}

/// The members of compound `tid` if at least one is a variable-length string; `fixed_dtype`
/// maps the other members (with their array dims), or says why it cannot.
///
/// # Safety
/// `tid` must be a valid compound type; call under HDF5's lock.
pub unsafe fn record_members(
    tid: hid_t,
    fixed_dtype: impl Fn(hid_t) -> Result<(Dtype, Vec<u64>), Hdf5Error>,
) -> Result<Option<Vec<RecordMember>>, Hdf5Error> {
    let n = H5Tget_nmembers(tid).max(0) as u32;
    // (UTF-8?, array dims) of a variable-length string member or an array of them.
    let is_string = |i: u32| -> Result<Option<(bool, Vec<u64>)>, Hdf5Error> {
        let member = Hid::new(H5Tget_member_type(tid, i))?;
        let (base, dims) = match H5Tget_class(member.0) {
            H5T_class_t::H5T_ARRAY => array_parts(member.0)?,
            _ => (member, Vec::new()),
        };
        let string =
            H5Tget_class(base.0) == H5T_class_t::H5T_STRING && H5Tis_variable_str(base.0) > 0;
        Ok(string.then(|| (H5Tget_cset(base.0) == H5T_cset_t::H5T_CSET_UTF8, dims)))
    };
    let mut any = false;
    for i in 0..n {
        any |= is_string(i)?.is_some();
    }
    if !any {
        return Ok(None);
    }
    let mut members = Vec::with_capacity(n as usize);
    for i in 0..n {
        let name = take_h5_string(H5Tget_member_name(tid, i)).unwrap_or_default();
        let kind = match is_string(i)? {
            // At least one character wide, as `np.array` of strings gives.
            Some((utf8, dims)) => MemberKind::String {
                utf8,
                width: if utf8 { 4 } else { 1 },
                dims,
            },
            None => {
                let member = Hid::new(H5Tget_member_type(tid, i))?;
                let (dtype, dims) = fixed_dtype(member.0)?;
                let size = H5Tget_size(member.0);
                MemberKind::Fixed { dtype, dims, size }
            }
        };
        members.push(RecordMember { name, kind });
    }
    Ok(Some(members))
}

/// The packed `.npy` dtype of a record whose string widths are measured.
pub fn record_dtype(members: &[RecordMember]) -> Dtype {
    let mut offset = 0;
    let mut fields = Vec::with_capacity(members.len());
    for m in members {
        let (dtype, shape) = match &m.kind {
            MemberKind::Fixed { dtype, dims, .. } => (dtype.clone(), dims.clone()),
            MemberKind::String { utf8, width, dims } => {
                let (kind, order) = if *utf8 {
                    ('U', ByteOrder::Little)
                } else {
                    ('S', ByteOrder::NotApplicable)
                };
                (Dtype::plain(kind, order, *width), dims.clone())
            }
        };
        fields.push(Field {
            name: m.name.clone(),
            offset,
            dtype,
            shape,
        });
        offset += m.kind.npy_size();
    }
    Dtype::Struct {
        fields,
        itemsize: offset,
    }
}

/// A memory compound that packs the members, strings as `char*`.
pub fn record_mem_type(file_type: hid_t, members: &[RecordMember]) -> hdf5::Result<Hid> {
    let size = members.iter().map(|m| m.kind.mem_size()).sum::<usize>();
    sync(|| unsafe {
        // SAFETY: file_type is the valid compound these members came from.
        let mem = Hid::new(H5Tcreate(H5T_class_t::H5T_COMPOUND, size.max(1)))?;
        let mut offset = 0;
        for (i, m) in members.iter().enumerate() {
            let member = Hid::new(H5Tget_member_type(file_type, i as u32))?;
            let mtype = match m.kind {
                MemberKind::String { .. } => Hid::new(H5Tget_native_type(
                    member.0,
                    H5T_direction_t::H5T_DIR_ASCEND,
                ))?,
                // Members whose stored bytes are not numpy's are converted as h5py does.
                MemberKind::Fixed { .. } => match super::types::converting_mem_type(member.0) {
                    Ok(Some(converted)) => converted,
                    _ => member,
                },
            };
            let name = std::ffi::CString::new(m.name.as_str())
                .map_err(|e| hdf5::Error::from(e.to_string()))?;
            super::ffi::h5check(H5Tinsert(mem.0, name.as_ptr(), offset, mtype.0))?;
            offset += m.kind.mem_size();
        }
        Ok(mem)
    })
}

/// The records of a hyperslab, member by member; strings allocated in `arena`.
pub fn read_records(
    handle: &OpenDataset,
    members: &[RecordMember],
    start: &[u64],
    count: &[u64],
    arena: &mut VlenArena,
) -> Result<Vec<Vec<Cell>>, VlenError> {
    let n = count.iter().product::<u64>() as usize;
    let stride = members.iter().map(|m| m.kind.mem_size()).sum::<usize>();
    let mut raw = vec![0u8; n * stride];
    arena.read(handle.id(), handle.mem_type(), start, count, &mut raw)?;
    let mut records = Vec::with_capacity(n);
    for record in raw.chunks_exact(stride.max(1)).take(n) {
        let mut at = 0;
        let mut cells = Vec::with_capacity(members.len());
        for m in members {
            let bytes = &record[at..at + m.kind.mem_size()];
            cells.push(match m.kind {
                MemberKind::Fixed { .. } => Cell::Bytes(bytes.to_vec()),
                MemberKind::String { .. } => Cell::Texts(
                    bytes
                        .chunks_exact(std::mem::size_of::<*mut c_char>())
                        .map(|p| {
                            let ptr = usize::from_ne_bytes(p.try_into().unwrap()) as *mut c_char;
                            // SAFETY: null or a string `arena` holds (allocated in the read
                            // above); the caller keeps the arena past this copy.
                            unsafe { arena_string(ptr) }
                        })
                        .collect(),
                ),
            });
            at += m.kind.mem_size();
        }
        records.push(cells);
    }
    Ok(records)
}

/// Bytes of a string in a `.npy` string field: UTF-32 code points or the bytes themselves.
pub fn string_width(text: &str, utf8: bool) -> usize {
    if utf8 {
        4 * text.chars().count()
    } else {
        text.len()
    }
}

/// Writes the records into `out` (packed `.npy` records of `members`).
pub fn pack_records(records: &[Vec<Cell>], members: &[RecordMember], out: &mut [u8]) {
    let itemsize = members.iter().map(|m| m.kind.npy_size()).sum::<usize>();
    for (record, slot) in records.iter().zip(out.chunks_exact_mut(itemsize.max(1))) {
        let mut at = 0;
        for (cell, m) in record.iter().zip(members) {
            let field = &mut slot[at..at + m.kind.npy_size()];
            field.fill(0);
            match (cell, &m.kind) {
                (Cell::Bytes(b), _) => field.copy_from_slice(b),
                (Cell::Texts(texts), MemberKind::String { utf8, width, .. }) => {
                    for (s, slot) in texts.iter().zip(field.chunks_exact_mut(*width)) {
                        put_string(s, *utf8, slot);
                    }
                }
                (Cell::Texts(_), MemberKind::Fixed { .. }) => {}
            }
            at += m.kind.npy_size();
        }
    }
}

/// One string into its `.npy` slot (zero-filled): UTF-32 code points, or the bytes.
fn put_string(s: &str, utf8: bool, slot: &mut [u8]) {
    if utf8 {
        for (c, cell) in s.chars().zip(slot.chunks_exact_mut(4)) {
            cell.copy_from_slice(&u32::from(c).to_le_bytes());
        }
    } else {
        slot[..s.len()].copy_from_slice(s.as_bytes());
    }
}
