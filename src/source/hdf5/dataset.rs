//! One HDF5 dataset: what it looks like as a `.npy`, and how its element ranges are read.

use std::ffi::{c_char, CString};
use std::sync::Arc;

use hdf5_sys::h5::{haddr_t, hsize_t, HADDR_UNDEF};
use hdf5_sys::h5d::{
    H5D_layout_t, H5Dget_chunk_index_type, H5Dget_create_plist, H5Dget_offset, H5Dget_type,
    H5Dopen2, H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS,
};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::{
    H5Pcreate, H5Pget_chunk, H5Pget_chunk_opts, H5Pget_external_count, H5Pget_fill_value,
    H5Pget_layout, H5Pget_nfilters, H5Pset_chunk_cache, H5P_CLS_DATASET_ACCESS,
};
use hdf5_sys::h5s::H5S_class_t;
use hdf5_sys::h5t::H5Tget_size;

use super::attrs::xattrs_of;
use super::chunks::{chunk_address_base, ChunkGrid, ChunkTable, DirectChunks, TableError};
use super::direct::FORCE_FALLBACK_ENV;
use super::error::Hdf5Error;
use super::ffi::{file_layout, h5check, header_address, pointer_bytes, read_hyperslab, sync, Hid};
use super::filters::{stored_filters, FilterError, FilterPipeline, StoredFilter};
use super::heap::{HeapError, ReadAt, VlenRefs};
use super::ohdr::Messages;
use super::plain::PlainDataset;
use super::records::{
    pack_records, read_records, record_dtype, record_mem_type, string_width, Cell, MemberKind,
    RecordMember,
};
use super::types::{
    converting_mem_type, element_type, reduced_int, var_string_mem_type, ElementType, StoredRefs,
};
use super::vlen::{arena_string, VlenArena, VlenError, VLEN_BYTES_PER_READ};
use crate::npy::{boxes_of_range, read_elements, ByteOrder, Dtype, NpyHeader};
use crate::source::Xattr;

/// Elements of variable-length strings read at once when sizing a dataset's widest value.
const STRINGS_AT_ONCE: u64 = 1 << 16;
/// Bytes the chunk table of a dataset of strings may take while its references are checked.
const REF_TABLE_BUDGET: usize = 64 << 20;

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
    Library { why: Option<NotDirect> },
}

/// Why a chunked dataset is read through libhdf5 instead of the direct path.
#[derive(Debug, thiserror::Error)]
pub enum NotDirect {
    #[error("variable-length strings")]
    VarStrings,
    #[error("external storage")]
    External,
    /// libhdf5 could not give the dataset's stored type.
    #[error("{0}")]
    NoType(hdf5::Error),
    #[error(
        "stored bytes are not numpy's (reduced precision, string padding): libhdf5 converts them"
    )]
    Converts,
    #[error("unfiltered partial edge chunks")]
    UnfilteredEdges,
    #[error("chunk dims do not match the dataspace")]
    ChunkDims,
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The direct path is switched off by the environment.
    #[error("{FORCE_FALLBACK_ENV} is set")]
    Forced,
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
        let has_strings = !matches!(info.element, ElementType::Fixed { .. });
        if let Some(read_at) = read_at.filter(|_| has_strings) {
            info.check_string_refs(ds, read_at)?;
        }
        if let ElementType::VarString { utf8, .. } = info.element {
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

    /// A dataset described from its object header ([`PlainDataset`]): what [`Self::describe`]
    /// gives for it.
    pub fn plain(plain: PlainDataset) -> DatasetInfo {
        DatasetInfo {
            // Only the string checks name the dataset, and a plain one holds no strings.
            path: String::new(),
            unit: plain.dtype.itemsize(),
            shape: plain.shape,
            element: ElementType::Fixed {
                dtype: plain.dtype,
                dims: Vec::new(),
            },
            read_path: ReadPath::Contiguous {
                offset: plain.offset,
            },
            chunks: None,
            chunk_index: None,
            filters: Vec::new(),
            converts: false,
        }
    }

    /// The dataset's xattrs; `read_at` as for [`xattrs_of`].
    pub fn xattrs(&self, ds: &hdf5::Dataset, read_at: Option<ReadAt>) -> Vec<Xattr> {
        let mut out = self.layout_xattrs();
        out.extend(xattrs_of(ds, read_at));
        out
    }

    /// The xattrs arrfs adds (chunks, filters, chunk index), not the dataset's attributes.
    pub fn layout_xattrs(&self) -> Vec<Xattr> {
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
    unsafe fn direct_chunks(&self, dset: hid_t, dcpl: hid_t) -> Result<DirectChunks, NotDirect> {
        if !matches!(self.element, ElementType::Fixed { .. }) {
            return Err(NotDirect::VarStrings);
        }
        if H5Pget_external_count(dcpl) != 0 {
            return Err(NotDirect::External);
        }
        let file_type = Hid::new(H5Dget_type(dset)).map_err(NotDirect::NoType)?;
        let widen = reduced_int(file_type.0);
        if self.converts && widen.is_none() {
            return Err(NotDirect::Converts);
        }
        let mut opts = 0;
        if H5Pget_chunk_opts(dcpl, &mut opts) >= 0
            && opts & H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS != 0
        {
            return Err(NotDirect::UnfilteredEdges);
        }
        let dims = self.chunks.clone().unwrap_or_default();
        let grid =
            ChunkGrid::new(self.shape.clone(), dims, self.unit).ok_or(NotDirect::ChunkDims)?;
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

    /// Checks every string's length and heap object before libhdf5 reads them (`heap.rs`),
    /// wherever the references are stored: contiguous in the file, in chunks (decoded by our
    /// filter pipeline), or in the object header (compact). Not checked: references only
    /// libhdf5 can reach (a filter we do not decode, external storage, a header we cannot
    /// parse).
    fn check_string_refs(&self, ds: &hdf5::Dataset, read_at: ReadAt) -> Result<(), HeapError> {
        let Some(layout) = file_layout(ds.id()) else {
            return Ok(());
        };
        let mut refs = VlenRefs::new(layout);
        // SAFETY: a plain query of an open dataset; the type id is released on drop.
        let Ok(tid) = sync(|| Hid::new(unsafe { H5Dget_type(ds.id()) })) else {
            return Ok(());
        };
        let Some(stored) = StoredRefs::of_type(tid.0, refs.ref_size()) else {
            return Ok(());
        };
        let n = self.shape.iter().product::<u64>();
        let unit = stored.unit as u64;
        let mut check = |raw: &[u8], first: u64| {
            let first_ref = first * stored.per_element() as u64;
            refs.check(read_at, &stored.gather(raw), first_ref)
        };
        match ref_store(ds) {
            RefStore::Contiguous(data_at) => {
                for first in (0..n).step_by(STRINGS_AT_ONCE as usize) {
                    let end = (first + STRINGS_AT_ONCE).min(n);
                    let mut raw = vec![0u8; ((end - first) * unit) as usize];
                    read_at(data_at + first * unit, &mut raw).map_err(HeapError::Read)?;
                    check(&raw, first)?;
                }
                Ok(())
            }
            RefStore::Compact => {
                let Some(addr) = header_address(ds.id()) else {
                    return Ok(());
                };
                let messages = match Messages::read(read_at, addr, layout) {
                    Ok(messages) => messages,
                    Err(why) => {
                        log::debug!("{}: strings not checked: {why}", self.path);
                        return Ok(());
                    }
                };
                let Some(data) = messages.compact_data() else {
                    return Ok(());
                };
                let raw = usize::try_from(n * unit)
                    .ok()
                    .and_then(|need| data.get(..need))
                    .ok_or(HeapError::CompactTooShort)?;
                check(raw, 0)
            }
            RefStore::Chunked => {
                self.check_chunked_refs(ds, read_at, stored.unit, &mut |raw| check(raw, 0))
            }
            RefStore::Unchecked => Ok(()),
        }
    }

    /// Calls `check` on every written chunk of elements of `unit` bytes, read and decoded as
    /// the direct path would (each chunk at most [`VLEN_BYTES_PER_READ`] bytes).
    fn check_chunked_refs(
        &self,
        ds: &hdf5::Dataset,
        read_at: ReadAt,
        unit: usize,
        check: &mut dyn FnMut(&[u8]) -> Result<(), HeapError>,
    ) -> Result<(), HeapError> {
        // SAFETY: under HDF5's lock, plain queries of an open dataset and its creation
        // property list (owned by a `Hid`), writing only into locals sized for them.
        let found = sync(|| unsafe {
            let dcpl = Hid::new(H5Dget_create_plist(ds.id()))?;
            let mut dims = vec![0 as hsize_t; self.shape.len().max(1)];
            let rank = H5Pget_chunk(dcpl.0, dims.len() as i32, dims.as_mut_ptr());
            dims.truncate(rank.max(0) as usize);
            Ok::<_, hdf5::Error>((dims, FilterPipeline::of_dcpl(dcpl.0, unit)))
        });
        let (dims, pipeline) = found.map_err(HeapError::Library)?;
        let Ok(pipeline) = pipeline else {
            // A filter only libhdf5 decodes: its references cannot be seen before it does.
            return Ok(());
        };
        let grid =
            ChunkGrid::new(self.shape.clone(), dims, unit).ok_or(HeapError::ChunkDimsMismatch)?;
        let chunk_bytes = grid.chunk_bytes();
        if chunk_bytes > VLEN_BYTES_PER_READ {
            return Err(HeapError::ChunksOverBound {
                bytes: chunk_bytes,
                bound: VLEN_BYTES_PER_READ,
            });
        }
        let table = ChunkTable::build(ds.id(), &grid, REF_TABLE_BUDGET).map_err(|e| match e {
            TableError::OverBudget(bound) => HeapError::TableOverBound(bound),
            TableError::Library(e) => HeapError::Library(e),
        })?;
        let base = ds.file().map(|f| chunk_address_base(&f)).unwrap_or(0);
        for (number, chunk) in table.written() {
            let Some(address) = chunk.address else {
                continue;
            };
            let in_chunk = |e| HeapError::in_chunk(number, e);
            if chunk.size > VLEN_BYTES_PER_READ as u64 {
                return Err(in_chunk(HeapError::ChunkSize(chunk.size)));
            }
            let mut stored = vec![0u8; chunk.size as usize];
            read_at(address.saturating_add(base), &mut stored)
                .map_err(|e| in_chunk(HeapError::Read(e)))?;
            let raw = pipeline
                .decode(stored, chunk.filter_mask, chunk_bytes)
                .map_err(|e| in_chunk(HeapError::Decode(e)))?;
            check(&raw).map_err(in_chunk)?;
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
    ) -> Result<(), Hdf5Error> {
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
                    let why = format!("element {first}: {e}, {VLEN_BYTES_PER_READ} bytes");
                    return Err(Hdf5Error::Unsupported(why));
                }
                // A shortage inside libhdf5 fails the listing (tried again later), never
                // leaves the dataset out for good.
                Err(VlenError::Hdf5(e)) => return Err(Hdf5Error::from(e)),
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

/// Where a dataset's variable-length string references are stored.
enum RefStore {
    /// Contiguous, allocated and unfiltered, from this file offset.
    Contiguous(u64),
    /// In chunks.
    Chunked,
    /// In the object header.
    Compact,
    /// Nowhere we read: external storage, or contiguous but not allocated (no strings).
    Unchecked,
}

fn ref_store(ds: &hdf5::Dataset) -> RefStore {
    // SAFETY: under HDF5's lock, plain queries of an open dataset and of a property list
    // owned by a `Hid`.
    sync(|| unsafe {
        let Ok(dcpl) = Hid::new(H5Dget_create_plist(ds.id())) else {
            return RefStore::Unchecked;
        };
        if H5Pget_external_count(dcpl.0) != 0 {
            return RefStore::Unchecked;
        }
        match H5Pget_layout(dcpl.0) {
            H5D_layout_t::H5D_CHUNKED => RefStore::Chunked,
            H5D_layout_t::H5D_COMPACT => RefStore::Compact,
            H5D_layout_t::H5D_CONTIGUOUS if H5Pget_nfilters(dcpl.0) == 0 => {
                let data_at: haddr_t = H5Dget_offset(ds.id());
                if data_at == HADDR_UNDEF {
                    RefStore::Unchecked
                } else {
                    RefStore::Contiguous(data_at)
                }
            }
            _ => RefStore::Unchecked,
        }
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
