//! One HDF5 dataset: what it looks like as a `.npy`, and how its element ranges are read.

use std::ffi::{c_char, CString};
use std::sync::Arc;

use hdf5_sys::h5::{haddr_t, hsize_t, HADDR_UNDEF};
use hdf5_sys::h5d::{
    H5D_layout_t, H5Dget_chunk_index_type, H5Dget_create_plist, H5Dget_offset, H5Dget_type,
    H5Dopen2, H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS,
};
use hdf5_sys::h5f::H5Fget_create_plist;
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5i::H5Iget_file_id;
use hdf5_sys::h5p::{
    H5Pcreate, H5Pget_chunk, H5Pget_chunk_opts, H5Pget_external_count, H5Pget_fill_value,
    H5Pget_layout, H5Pget_nfilters, H5Pget_sizes, H5Pget_userblock, H5Pset_chunk_cache,
    H5P_CLS_DATASET_ACCESS,
};
use hdf5_sys::h5s::H5S_class_t;
use hdf5_sys::h5t::H5Tget_size;

use super::attrs::xattrs_of;
use super::chunks::{ChunkGrid, DirectChunks};
use super::error::Hdf5Error;
use super::ffi::{h5check, pointer_bytes, read_hyperslab, sync, Hid};
use super::filters::{stored_filters, FilterPipeline, StoredFilter};
use super::heap::{ReadAt, VlenRefs};
use super::records::{
    pack_records, read_records, record_dtype, record_mem_type, string_width, Cell, MemberKind,
    RecordMember,
};
use super::types::{
    converting_mem_type, element_type, reduced_int, var_string_mem_type, ElementType,
};
use super::vlen::{arena_string, VlenArena, VlenError, VLEN_BYTES_PER_READ};
use crate::npy::{boxes_of_range, read_elements, ByteOrder, Dtype, NpyHeader};
use crate::source::Xattr;

/// Elements of variable-length strings read at once when sizing a dataset's widest value.
const STRINGS_AT_ONCE: u64 = 1 << 16;

#[derive(Debug)]
pub struct DatasetInfo {
    pub path: String,
    /// The dataset's own dims (without array-type dims).
    shape: Vec<u64>,
    element: ElementType,
    /// Bytes of one dataset element in the `.npy` (array-type dims included).
    unit: usize,
    /// How the payload is read.
    pub read_path: ReadPath,
    chunks: Option<Vec<u64>>,
    /// The kind of chunk index (shown as `user.arrfs.chunk_index`).
    chunk_index: Option<&'static str>,
    filters: Vec<String>,
    /// The stored bytes are not numpy's (n-bit precision or a non-IEEE float layout): only
    /// libhdf5, converting, reads the values.
    converts: bool,
}

/// How the payload of one dataset is read: one of three ways, chosen once when the dataset
/// is described.
#[derive(Debug)]
pub enum ReadPath {
    /// Contiguous, allocated, unfiltered raw data in numpy's bytes: `pread` at `offset`.
    Contiguous { offset: u64 },
    /// Chunked data whose chunks we locate, read and decode ourselves (`direct.rs`).
    DirectChunks(Arc<DirectChunks>),
    /// Hyperslabs of whole elements through libhdf5. `why` says why chunked data is not
    /// read directly (logged at debug level); None for layouts only libhdf5 reads (compact,
    /// external, unallocated, converted or variable-length data).
    Library { why: Option<String> },
}

impl ReadPath {
    /// Through libhdf5, keeping the reason a chunked dataset already had.
    pub fn library(self) -> ReadPath {
        match self {
            ReadPath::Library { why } => ReadPath::Library { why },
            _ => ReadPath::Library { why: None },
        }
    }
}

/// A dataset handle kept open between reads, so its chunk cache survives.
pub struct OpenDataset {
    id: Hid,
    mem_type: Hid,
}

// SAFETY: HDF5 ids are plain integers; every use goes through HDF5's global lock.
unsafe impl Send for OpenDataset {}
// SAFETY: as for Send: shared use is serialised by HDF5's global lock.
unsafe impl Sync for OpenDataset {}

impl OpenDataset {
    pub fn open(file: &hdf5::File, path: &str, chunk_cache_bytes: usize) -> hdf5::Result<Self> {
        let cpath = CString::new(path).map_err(|e| hdf5::Error::from(e.to_string()))?;
        // SAFETY: under HDF5's lock; every id made here is owned by a `Hid` (released on
        // drop) and `cpath` outlives the calls.
        sync(|| unsafe {
            let dapl = Hid::new(H5Pcreate(*H5P_CLS_DATASET_ACCESS))?;
            h5check(H5Pset_chunk_cache(dapl.0, 12_421, chunk_cache_bytes, 0.75))?;
            let id = Hid::new(H5Dopen2(file.id(), cpath.as_ptr(), dapl.0))?;
            let file_type = Hid::new(H5Dget_type(id.0))?;
            let converting = converting_mem_type(file_type.0).ok().flatten();
            let mem_type = match (element_type(file_type.0), converting) {
                (Ok(ElementType::VarString { .. }), _) => var_string_mem_type(file_type.0)?,
                (Ok(ElementType::Record { members }), _) => record_mem_type(file_type.0, &members)?,
                (_, Some(converting)) => converting,
                _ => Hid::new(H5Dget_type(id.0))?,
            };
            Ok(OpenDataset { id, mem_type })
        })
    }
}

impl DatasetInfo {
    /// Reads the dataset's metadata; `Err` says why it cannot be a `.npy`.
    /// `read_at` reads the file that holds the dataset, if it is the mounted one: then the
    /// references of contiguous variable-length strings are checked before libhdf5 follows
    /// them (`heap.rs`).
    pub fn describe(
        ds: &hdf5::Dataset,
        path: &str,
        read_at: Option<ReadAt>,
    ) -> Result<DatasetInfo, Hdf5Error> {
        let space = ds.space()?;
        if space_class(&space) == H5S_class_t::H5S_NULL {
            return Err(Hdf5Error::Unsupported(
                "null dataspace (no data at all)".into(),
            ));
        }
        let shape: Vec<u64> = space.shape().iter().map(|&d| d as u64).collect();
        // SAFETY: a plain query of an open dataset; the type id is released on drop.
        let ftype = sync(|| Hid::new(unsafe { H5Dget_type(ds.id()) }))?;
        let element = element_type(ftype.0)?;
        let converts = converting_mem_type(ftype.0)?.is_some();
        // SAFETY: a plain query of the type id just made.
        let mut unit = sync(|| unsafe { H5Tget_size(ftype.0) });
        let mut info = DatasetInfo {
            path: path.to_string(),
            shape,
            element,
            unit,
            read_path: ReadPath::Library { why: None },
            chunks: None,
            chunk_index: None,
            filters: Vec::new(),
            converts,
        };
        if let ElementType::VarString { utf8, .. } = info.element {
            if let Some(read_at) = read_at {
                info.check_string_refs(ds, read_at)?;
            }
            unit = info.longest_string(ds, utf8)? * info.element.strings_per_element();
            info.unit = unit;
        }
        if let ElementType::Record { members } = &info.element {
            let members = info.measure_records(ds, members.clone())?;
            info.unit = match record_dtype(&members) {
                Dtype::Struct { itemsize, .. } => itemsize,
                _ => unreachable!("a record is a structured dtype"),
            };
            info.element = ElementType::Record { members };
        }
        info.read_layout(ds);
        Ok(info)
    }

    /// Whether describing the dataset read its values (to size variable-length strings), so
    /// that describing it again would cost a pass over its data.
    pub fn sized_by_reading(&self) -> bool {
        !matches!(self.element, ElementType::Fixed { .. })
    }

    /// The `.npy` header: dtype and shape as h5py's `ds[()]` would have them.
    pub fn npy_header(&self) -> NpyHeader {
        let mut shape = self.shape.clone();
        let dtype = match &self.element {
            ElementType::Fixed { dtype, dims } => {
                shape.extend_from_slice(dims);
                dtype.clone()
            }
            ElementType::Record { members } => record_dtype(members),
            ElementType::VarString { utf8, dims } => {
                shape.extend_from_slice(dims);
                if *utf8 {
                    Dtype::plain('U', ByteOrder::Little, self.string_width())
                } else {
                    Dtype::plain('S', ByteOrder::NotApplicable, self.string_width())
                }
            }
        };
        NpyHeader::new(dtype, shape)
    }

    /// `members` with each string member as wide as its longest value.
    fn measure_records(
        &self,
        ds: &hdf5::Dataset,
        mut members: Vec<RecordMember>,
    ) -> Result<Vec<RecordMember>, Hdf5Error> {
        let handle = OpenDataset::from_dataset(ds, &self.element)?;
        self.in_bounded_steps(|start, count| {
            let mut arena = VlenArena::new(usize::MAX, VLEN_BYTES_PER_READ);
            let records = read_records(&handle, &members, start, count, &mut arena)?;
            for record in &records {
                for (cell, m) in record.iter().zip(members.iter_mut()) {
                    if let (Cell::Texts(texts), MemberKind::String { utf8, width, .. }) =
                        (cell, &mut m.kind)
                    {
                        for s in texts {
                            *width = (*width).max(string_width(s, *utf8));
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(members)
    }

    /// Bytes of one variable-length string in the `.npy`.
    fn string_width(&self) -> usize {
        self.unit / self.element.strings_per_element().max(1)
    }

    pub fn xattrs(&self, ds: &hdf5::Dataset) -> Vec<Xattr> {
        let chunks = match &self.chunks {
            Some(dims) => format!("{dims:?}"),
            None => "none".to_string(),
        };
        let mut out = vec![
            ("user.arrfs.chunks".to_string(), chunks.into_bytes()),
            (
                "user.arrfs.filters".to_string(),
                self.filters.join(",").into_bytes(),
            ),
        ];
        if let Some(index) = self.chunk_index {
            out.push(("user.arrfs.chunk_index".to_string(), index.into()));
        }
        out.extend(xattrs_of(ds));
        out
    }

    fn read_layout(&mut self, ds: &hdf5::Dataset) {
        // Stored bytes that need converting are never served by `pread`.
        let fixed = matches!(self.element, ElementType::Fixed { .. }) && !self.converts;
        // SAFETY: under HDF5's lock, on an open dataset and the property list it returns
        // (owned by a `Hid`); the raw calls write only into locals sized for them.
        sync(|| unsafe {
            let Ok(dcpl) = Hid::new(H5Dget_create_plist(ds.id())) else {
                return;
            };
            match H5Pget_layout(dcpl.0) {
                H5D_layout_t::H5D_CHUNKED => {
                    let mut dims = vec![0 as hsize_t; self.shape.len().max(1)];
                    let rank = H5Pget_chunk(dcpl.0, dims.len() as i32, dims.as_mut_ptr());
                    dims.truncate(rank.max(0) as usize);
                    self.chunks = Some(dims);
                    self.chunk_index = chunk_index_name(ds.id());
                    self.read_path = match self.direct_chunks(ds.id(), dcpl.0) {
                        Ok(direct) => ReadPath::DirectChunks(Arc::new(direct)),
                        Err(why) => ReadPath::Library { why: Some(why) },
                    };
                }
                H5D_layout_t::H5D_CONTIGUOUS if fixed && H5Pget_external_count(dcpl.0) == 0 => {
                    let addr: haddr_t = H5Dget_offset(ds.id());
                    if addr != HADDR_UNDEF {
                        self.read_path = ReadPath::Contiguous { offset: addr };
                    }
                }
                _ => {}
            }
            self.filters = stored_filters(dcpl.0)
                .iter()
                .map(StoredFilter::label)
                .collect();
        });
    }

    /// How the direct path reads this chunked dataset, or why it cannot.
    ///
    /// # Safety
    /// `dset` and `dcpl` must be valid; call under HDF5's lock.
    unsafe fn direct_chunks(&self, dset: hid_t, dcpl: hid_t) -> Result<DirectChunks, String> {
        if !matches!(self.element, ElementType::Fixed { .. }) {
            return Err("variable-length strings".into());
        }
        if H5Pget_external_count(dcpl) != 0 {
            return Err("external storage".into());
        }
        let file_type = Hid::new(H5Dget_type(dset)).map_err(|e| e.to_string())?;
        let widen = reduced_int(file_type.0);
        if self.converts && widen.is_none() {
            return Err("stored bytes are not numpy's (reduced precision, string padding): libhdf5 converts them".into());
        }
        let mut opts = 0;
        if H5Pget_chunk_opts(dcpl, &mut opts) >= 0
            && opts & H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS != 0
        {
            return Err("unfiltered partial edge chunks".into());
        }
        let dims = self.chunks.clone().unwrap_or_default();
        let grid = ChunkGrid::new(self.shape.clone(), dims, self.unit)
            .ok_or("chunk dims do not match the dataspace")?;
        let pipeline = FilterPipeline::of_dcpl(dcpl, self.unit)?;
        let mut fill = fill_value(dset, dcpl, self.unit);
        if let Some(int) = &widen {
            int.widen(&mut fill);
        }
        Ok(DirectChunks {
            grid,
            pipeline: match widen {
                Some(int) => pipeline.widening(int),
                None => pipeline,
            },
            fill,
        })
    }

    /// Checks every string's length and heap object before libhdf5 reads them, for a
    /// contiguous, allocated, unfiltered dataset (`heap.rs`); other layouts are not checked.
    fn check_string_refs(&self, ds: &hdf5::Dataset, read_at: ReadAt) -> Result<(), String> {
        let Some(mut refs) = contiguous_vlen_refs(ds) else {
            return Ok(());
        };
        let n = self.shape.iter().product::<u64>() * self.element.strings_per_element() as u64;
        for first in (0..n).step_by(STRINGS_AT_ONCE as usize) {
            refs.check(read_at, first, (first + STRINGS_AT_ONCE).min(n))?;
        }
        Ok(())
    }

    /// The width of the widest value: characters for UTF-8, bytes for ASCII; at least 1, as
    /// `np.array` of strings gives.
    fn longest_string(&self, ds: &hdf5::Dataset, utf8: bool) -> Result<usize, Hdf5Error> {
        let handle = OpenDataset::from_dataset(ds, &self.element)?;
        let mut longest = 1;
        self.in_bounded_steps(|start, count| {
            for s in read_strings(&handle, start, count, &self.element, usize::MAX)? {
                let width = if utf8 { s.chars().count() } else { s.len() };
                longest = longest.max(width);
            }
            Ok(())
        })?;
        Ok(if utf8 { 4 * longest } else { longest })
    }

    /// Calls `read` on every box of the dataset, in steps of at most [`STRINGS_AT_ONCE`]
    /// elements (a dataset of a billion strings must not be held at once) whose strings
    /// hold at most [`VLEN_BYTES_PER_READ`] together: a step over that bound is halved and
    /// read again; a single element over it leaves the dataset out.
    fn in_bounded_steps(
        &self,
        mut read: impl FnMut(&[u64], &[u64]) -> Result<(), VlenError>,
    ) -> Result<(), String> {
        let n: u64 = self.shape.iter().product();
        let (mut first, mut step) = (0, STRINGS_AT_ONCE);
        while first < n {
            let end = (first + step).min(n);
            let done = boxes_of_range(&self.shape, first, end)
                .iter()
                .try_for_each(|b| read(&b.start, &b.count));
            match done {
                Ok(()) => first = end,
                Err(VlenError::OverBound(_)) if step > 1 => step /= 2,
                Err(e @ VlenError::OverBound(_)) => {
                    return Err(format!("element {first}: {e}, {VLEN_BYTES_PER_READ} bytes"))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Fills `buf` with payload bytes from `offset`, reading only the elements that hold them
    /// through libhdf5.
    pub fn read(&self, handle: &OpenDataset, offset: u64, buf: &mut [u8]) -> hdf5::Result<()> {
        let unit = self.unit as u64;
        read_elements(&self.shape, unit, offset, buf, |boxes, out| {
            let mut pos = 0;
            for b in boxes {
                let len = (b.len() * unit) as usize;
                self.read_box(handle, &b.start, &b.count, &mut out[pos..pos + len])?;
                pos += len;
            }
            Ok(())
        })
    }

    fn read_box(
        &self,
        handle: &OpenDataset,
        start: &[u64],
        count: &[u64],
        out: &mut [u8],
    ) -> hdf5::Result<()> {
        if let ElementType::Record { members } = &self.element {
            // Every string was measured when the dataset was described: a longer one now is
            // damage, not data.
            let widest = members.iter().map(|m| m.kind.string_bytes()).max();
            let mut arena = VlenArena::new(widest.unwrap_or(0) + 1, usize::MAX);
            let records = read_records(handle, members, start, count, &mut arena)
                .map_err(|e| hdf5::Error::from(e.to_string()))?;
            pack_records(&records, members, out);
            return Ok(());
        }
        let ElementType::VarString { utf8, .. } = self.element else {
            return read_hyperslab(handle.id.0, handle.mem_type.0, start, count, out);
        };
        let strings = read_strings(handle, start, count, &self.element, self.string_width() + 1)
            .map_err(|e| hdf5::Error::from(e.to_string()))?;
        for (s, slot) in strings
            .iter()
            .zip(out.chunks_exact_mut(self.string_width()))
        {
            slot.fill(0);
            if utf8 {
                for (c, cell) in s.chars().zip(slot.chunks_exact_mut(4)) {
                    cell.copy_from_slice(&u32::from(c).to_le_bytes());
                }
            } else {
                slot[..s.len()].copy_from_slice(s.as_bytes());
            }
        }
        Ok(())
    }
}

impl OpenDataset {
    pub fn id(&self) -> hid_t {
        self.id.0
    }

    pub fn mem_type(&self) -> hid_t {
        self.mem_type.0
    }

    /// A handle on `ds` reading `element`'s strings (variable-length strings or records).
    fn from_dataset(ds: &hdf5::Dataset, element: &ElementType) -> hdf5::Result<Self> {
        // SAFETY: under HDF5's lock; the extra reference taken on the dataset id is the
        // one its new `Hid` releases; the type ids are owned by `Hid`s.
        sync(|| unsafe {
            let id = Hid::new(ds.id())?;
            hdf5_sys::h5i::H5Iinc_ref(id.0);
            let file_type = Hid::new(H5Dget_type(id.0))?;
            let mem_type = match element {
                ElementType::Record { members } => record_mem_type(file_type.0, members)?,
                _ => var_string_mem_type(file_type.0)?,
            };
            Ok(OpenDataset { id, mem_type })
        })
    }
}

/// Variable-length strings of a hyperslab (`element` of them each), decoded (invalid UTF-8
/// replaced): each at most `each` bytes with its NUL, all at most [`VLEN_BYTES_PER_READ`].
fn read_strings(
    handle: &OpenDataset,
    start: &[u64],
    count: &[u64],
    element: &ElementType,
    each: usize,
) -> Result<Vec<String>, VlenError> {
    let n = count.iter().product::<u64>() as usize * element.strings_per_element();
    let mut ptrs: Vec<*mut c_char> = vec![std::ptr::null_mut(); n];
    let mut arena = VlenArena::new(each, VLEN_BYTES_PER_READ);
    arena.read(
        handle.id.0,
        handle.mem_type.0,
        start,
        count,
        pointer_bytes(&mut ptrs),
    )?;
    // SAFETY: every non-null pointer is a string the arena holds until it drops, after this.
    Ok(ptrs
        .into_iter()
        .map(|p| unsafe { arena_string(p) })
        .collect())
}

/// The references of `ds` if it is stored contiguous, allocated and unfiltered.
fn contiguous_vlen_refs(ds: &hdf5::Dataset) -> Option<VlenRefs> {
    // SAFETY: under HDF5's lock, plain queries of an open dataset and of property lists
    // owned by `Hid`s, writing only into locals.
    sync(|| unsafe {
        let dcpl = Hid::new(H5Dget_create_plist(ds.id())).ok()?;
        let contiguous = H5Pget_layout(dcpl.0) == H5D_layout_t::H5D_CONTIGUOUS
            && H5Pget_external_count(dcpl.0) == 0
            && H5Pget_nfilters(dcpl.0) == 0;
        let data_at: haddr_t = H5Dget_offset(ds.id());
        if !contiguous || data_at == HADDR_UNDEF {
            return None;
        }
        let file = Hid::new(H5Iget_file_id(ds.id())).ok()?;
        let fcpl = Hid::new(H5Fget_create_plist(file.0)).ok()?;
        let (mut sizeof_addr, mut sizeof_size) = (0, 0);
        h5check(H5Pget_sizes(fcpl.0, &mut sizeof_addr, &mut sizeof_size)).ok()?;
        let mut userblock = 0;
        h5check(H5Pget_userblock(fcpl.0, &mut userblock)).ok()?;
        let sane = |n: usize| (1..=8).contains(&n);
        (sane(sizeof_addr) && sane(sizeof_size))
            .then(|| VlenRefs::new(data_at, userblock, sizeof_addr, sizeof_size))
    })
}

/// One element of the dataset's fill value in its file type; zeros if none can be had.
///
/// # Safety
/// `dset` and `dcpl` must be valid; call under HDF5's lock.
unsafe fn fill_value(dset: hid_t, dcpl: hid_t, unit: usize) -> Vec<u8> {
    let mut fill = vec![0u8; unit];
    let Ok(file_type) = Hid::new(H5Dget_type(dset)) else {
        return fill;
    };
    if H5Pget_fill_value(dcpl, file_type.0, fill.as_mut_ptr().cast()) < 0 {
        fill.fill(0);
    }
    fill
}

/// The name of a chunked dataset's index type, as the file format specification calls it.
///
/// # Safety
/// `dset` must be valid; call under HDF5's lock.
unsafe fn chunk_index_name(dset: hid_t) -> Option<&'static str> {
    let mut index = 0;
    if H5Dget_chunk_index_type(dset, &mut index) < 0 {
        return None;
    }
    // H5D_chunk_index_t: only its first value has a named constant in hdf5-sys.
    [
        "btree1",
        "single",
        "implicit",
        "fixed_array",
        "extensible_array",
        "btree2",
    ]
    .get(index as usize)
    .copied()
}

fn space_class(space: &hdf5::Dataspace) -> H5S_class_t {
    // SAFETY: a plain query of an open dataspace.
    sync(|| unsafe { hdf5_sys::h5s::H5Sget_simple_extent_type(space.id()) })
}
