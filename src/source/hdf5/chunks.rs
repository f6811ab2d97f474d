//! Chunk addressing of chunked HDF5 datasets: which chunks hold an element box, how to copy
//! their in-bounds part out ([`ChunkGrid`]), and where each chunk lies in the file
//! ([`ChunkTable`], enumerated once per dataset, then looked up without libhdf5).

use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

use hdf5_sys::h5::{haddr_t, hsize_t, HADDR_UNDEF};
use hdf5_sys::h5d::H5Dchunk_iter;
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p::H5P_DEFAULT;

use super::ffi::{h5check, sync};
use super::filters::FilterPipeline;
use crate::npy::ElementBox;

/// What the direct path (`direct.rs`) knows of one chunked dataset: where its chunks lie,
/// how to decode them, and what fills a chunk never written.
#[derive(Debug)]
pub struct DirectChunks {
    pub grid: ChunkGrid,
    pub pipeline: FilterPipeline,
    /// One element of the fill value, in the file's type.
    pub fill: Vec<u8>,
}

/// The chunk layout of a dataset: its shape, chunk dims, and bytes per element.
#[derive(Clone, Debug)]
pub struct ChunkGrid {
    shape: Vec<u64>,
    chunk: Vec<u64>,
    unit: usize,
}

impl ChunkGrid {
    /// None unless the chunk dims fit the shape and a chunk holds at most 4 GiB (HDF5's own
    /// limit: dims read from a corrupt file must not make us allocate without bound).
    pub fn new(shape: Vec<u64>, chunk: Vec<u64>, unit: usize) -> Option<ChunkGrid> {
        let usable = shape.len() == chunk.len() && chunk.iter().all(|&c| c > 0) && unit > 0;
        let bytes = chunk
            .iter()
            .try_fold(unit as u64, |bytes, &c| bytes.checked_mul(c))
            .filter(|&b| b <= u64::from(u32::MAX));
        (usable && bytes.is_some()).then_some(ChunkGrid { shape, chunk, unit })
    }

    /// Bytes of one whole chunk (edge chunks are stored whole too).
    pub fn chunk_bytes(&self) -> usize {
        self.chunk.iter().product::<u64>() as usize * self.unit
    }

    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    pub fn unit(&self) -> usize {
        self.unit
    }

    /// The C-order number of the chunk whose first element is `origin` (inside the grid).
    pub fn number(&self, origin: &[u64]) -> u64 {
        self.number_checked(origin).unwrap_or(u64::MAX)
    }

    /// As [`ChunkGrid::number`], or None outside the grid (an index may keep chunks of a
    /// dataset since shrunk).
    fn number_checked(&self, origin: &[u64]) -> Option<u64> {
        let mut number: u64 = 0;
        for ((o, c), n) in origin.iter().zip(&self.chunk).zip(&self.shape) {
            let (i, per_axis) = (o / c, n.div_ceil(*c));
            if i >= per_axis {
                return None;
            }
            number = number.checked_mul(per_axis)?.checked_add(i)?;
        }
        Some(number)
    }

    /// The payload byte just after the last in-bounds element of the chunk at `origin`: a
    /// reader going forward through the payload is done with the chunk once past it.
    pub fn end_byte(&self, origin: &[u64]) -> u64 {
        let last_flat = origin
            .iter()
            .zip(&self.chunk)
            .zip(&self.shape)
            .fold(0, |flat, ((o, c), n)| {
                flat * n + (o + c).min(*n).saturating_sub(1)
            });
        (last_flat + 1) * self.unit as u64
    }

    /// The lowest and the highest number of the chunks that intersect `b` (not empty): those
    /// of its first and its last corner, as numbers grow with every coordinate.
    pub fn numbers_of_box(&self, b: &ElementBox) -> (u64, u64) {
        let corner = |last: u64| -> Vec<u64> {
            (0..b.start.len())
                .map(|k| (b.start[k] + last * (b.count[k] - 1)) / self.chunk[k] * self.chunk[k])
                .collect()
        };
        (self.number(&corner(0)), self.number(&corner(1)))
    }

    /// The origins (first element) of the chunks that intersect `b`, in C order.
    pub fn chunks_of_box(&self, b: &ElementBox) -> Vec<Vec<u64>> {
        if b.is_empty() {
            return Vec::new();
        }
        let first: Vec<u64> = (0..b.start.len())
            .map(|k| b.start[k] / self.chunk[k])
            .collect();
        let last: Vec<u64> = (0..b.start.len())
            .map(|k| (b.start[k] + b.count[k] - 1) / self.chunk[k])
            .collect();
        let mut out = Vec::new();
        let mut index = first.clone();
        loop {
            out.push(index.iter().zip(&self.chunk).map(|(i, c)| i * c).collect());
            if !odometer_step(&mut index, &first, &last) {
                return out;
            }
        }
    }

    /// Copies the elements of `b` that lie in the chunk at `origin` (decoded bytes `chunk`)
    /// to their places in `out`, which holds `b`'s elements in C order.
    pub fn copy_from_chunk(&self, origin: &[u64], chunk: &[u8], b: &ElementBox, out: &mut [u8]) {
        let rank = b.start.len();
        let lo: Vec<u64> = (0..rank).map(|k| b.start[k].max(origin[k])).collect();
        let hi: Vec<u64> = (0..rank)
            .map(|k| (b.start[k] + b.count[k]).min(origin[k] + self.chunk[k]))
            .collect();
        if (0..rank).any(|k| lo[k] >= hi[k]) {
            return;
        }
        let chunk_strides = c_strides(&self.chunk);
        let box_strides = c_strides(&b.count);
        let run = (hi.last().zip(lo.last()).map_or(1, |(h, l)| h - l)) as usize * self.unit;
        let last = hi.iter().map(|h| h - 1).collect::<Vec<u64>>();
        let mut index = lo.clone();
        loop {
            let src = offset_in(&index, origin, &chunk_strides) as usize * self.unit;
            let dst = offset_in(&index, &b.start, &box_strides) as usize * self.unit;
            out[dst..dst + run].copy_from_slice(&chunk[src..src + run]);
            // The last axis is copied as one run: step only the outer axes.
            let outer = rank.saturating_sub(1);
            if !odometer_step(&mut index[..outer], &lo[..outer], &last[..outer]) {
                return;
            }
        }
    }
}

/// Element strides of a C-order array of `dims`.
fn c_strides(dims: &[u64]) -> Vec<u64> {
    let mut strides = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        strides[k] = strides[k + 1] * dims[k + 1];
    }
    strides
}

fn offset_in(index: &[u64], origin: &[u64], strides: &[u64]) -> u64 {
    (0..strides.len())
        .map(|k| (index[k] - origin[k]) * strides[k])
        .sum()
}

/// Advances `index` through `[first, last]` (inclusive, per axis) in C order; false at the
/// end.
fn odometer_step(index: &mut [u64], first: &[u64], last: &[u64]) -> bool {
    for k in (0..index.len()).rev() {
        if index[k] < last[k] {
            index[k] += 1;
            return true;
        }
        index[k] = first[k];
    }
    false
}

/// Where one chunk is stored: `address` is None for a chunk never written (it reads as the
/// fill value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    pub address: Option<u64>,
    pub size: u64,
    pub filter_mask: u32,
}

/// One written chunk: its C-order number in the chunk grid and where it is stored. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StoredChunk {
    number: u64,
    address: u64,
    size: u32,
    filter_mask: u32,
}

/// Bytes a [`ChunkTable`] holds per written chunk (its bound, documented in the README).
pub const TABLE_BYTES_PER_CHUNK: usize = std::mem::size_of::<StoredChunk>();

/// Every written chunk of one dataset, enumerated in one pass over libhdf5's chunk index
/// (`H5Dchunk_iter`) and sorted by chunk number, so a lookup is a binary search that never
/// calls libhdf5. Looking chunks up one by one through libhdf5 instead costs O(n) each in
/// HDF5 1.10 (`H5Dget_chunk_info_by_coord` walks the whole B-tree), O(n^2) for a dataset.
#[derive(Debug)]
pub struct ChunkTable {
    stored: Vec<StoredChunk>,
}

/// Counts of the work done on chunk tables, for the scaling tests.
pub static TABLE_ENTRIES_VISITED: AtomicU64 = AtomicU64::new(0);
pub static TABLE_PROBES: AtomicU64 = AtomicU64::new(0);

/// Why a chunk table could not be had.
#[derive(Debug)]
pub enum TableError {
    /// The table would need more than this many bytes.
    OverBudget(usize),
    Library(hdf5::Error),
}

impl ChunkTable {
    /// Enumerates the chunks of open dataset `dset` laid out on `grid`, giving up once the
    /// table would pass `budget` bytes.
    pub fn build(dset: hid_t, grid: &ChunkGrid, budget: usize) -> Result<ChunkTable, TableError> {
        let mut walk = TableWalk {
            grid,
            stored: Vec::new(),
            limit: budget / TABLE_BYTES_PER_CHUNK,
            over_budget: false,
        };
        let status = sync(|| {
            // SAFETY: dset is an open dataset; `walk` outlives the call and is only used by
            // `visit_chunk`, which libhdf5 calls on this thread during it.
            h5check(unsafe {
                H5Dchunk_iter(
                    dset,
                    H5P_DEFAULT,
                    Some(visit_chunk),
                    (&mut walk as *mut TableWalk).cast(),
                )
            })
        });
        if walk.over_budget {
            return Err(TableError::OverBudget(budget));
        }
        status.map_err(TableError::Library)?;
        let mut stored = walk.stored;
        // The index is usually walked in coordinate order already; sort to be sure.
        if !stored.windows(2).all(|w| w[0].number < w[1].number) {
            stored.sort_unstable_by_key(|c| c.number);
            stored.dedup_by_key(|c| c.number);
        }
        stored.shrink_to_fit();
        Ok(ChunkTable { stored })
    }

    /// Every written chunk: its number and where it is stored.
    pub fn written(&self) -> impl Iterator<Item = (u64, ChunkLocation)> + '_ {
        self.stored.iter().map(|c| {
            let location = ChunkLocation {
                address: Some(c.address),
                size: u64::from(c.size),
                filter_mask: c.filter_mask,
            };
            (c.number, location)
        })
    }

    /// Whether any chunk numbered from `first` to `last` (both included) is written.
    pub fn any_written(&self, first: u64, last: u64) -> bool {
        let at = self.stored.partition_point(|c| c.number < first);
        self.stored.get(at).is_some_and(|c| c.number <= last)
    }

    /// Bytes this table holds.
    pub fn bytes(&self) -> usize {
        self.stored.capacity() * TABLE_BYTES_PER_CHUNK + 64
    }

    /// Where chunk number `number` ([`ChunkGrid::number`]) is stored.
    pub fn locate(&self, number: u64) -> ChunkLocation {
        TABLE_PROBES.fetch_add(1, Ordering::Relaxed);
        match self.stored.binary_search_by_key(&number, |c| c.number).ok() {
            Some(i) => {
                let c = self.stored[i];
                ChunkLocation {
                    address: Some(c.address),
                    size: u64::from(c.size),
                    filter_mask: c.filter_mask,
                }
            }
            None => ChunkLocation {
                address: None,
                size: 0,
                filter_mask: 0,
            },
        }
    }
}

/// The state of one `H5Dchunk_iter` pass.
struct TableWalk<'a> {
    grid: &'a ChunkGrid,
    stored: Vec<StoredChunk>,
    limit: usize,
    over_budget: bool,
}

/// `H5Dchunk_iter`'s callback: records one chunk. Returns 0 to go on, 1 to stop (over budget).
extern "C" fn visit_chunk(
    offset: *const hsize_t,
    filter_mask: c_uint,
    address: haddr_t,
    size: hsize_t,
    op_data: *mut c_void,
) -> c_int {
    // SAFETY: op_data is the `TableWalk` passed to `H5Dchunk_iter` in `ChunkTable::build`,
    // borrowed mutably for the whole pass and used by nothing else meanwhile.
    let walk = unsafe { &mut *op_data.cast::<TableWalk>() };
    TABLE_ENTRIES_VISITED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: libhdf5 passes the chunk's logical offset with one entry per dataset dimension.
    let origin = unsafe { std::slice::from_raw_parts(offset, walk.grid.chunk.len()) };
    let Some(number) = walk.grid.number_checked(origin) else {
        return 0;
    };
    if address == HADDR_UNDEF || size == 0 {
        return 0;
    }
    if walk.stored.len() >= walk.limit {
        walk.over_budget = true;
        return 1;
    }
    walk.stored.push(StoredChunk {
        number,
        address,
        size: size.min(u64::from(u32::MAX)) as u32,
        filter_mask,
    });
    0
}

/// What to add to the chunk addresses libhdf5 reports to get file offsets: HDF5 before
/// 1.14.4 reports them relative to the superblock, i.e. without the user block (HDF5 issue
/// 3003), unlike `H5Dget_offset`.
pub fn chunk_address_base(file: &hdf5::File) -> u64 {
    if hdf5::library_version() < (1, 14, 4) {
        file.userblock()
    } else {
        0
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn end_byte_is_after_the_last_in_bounds_element() {
        let grid = ChunkGrid::new(vec![10, 7], vec![4, 3], 2).unwrap();
        // Chunk rows 0..4, columns 0..3: last element (3, 2) = flat 23.
        assert_eq!(grid.end_byte(&[0, 0]), 24 * 2);
        // Edge chunk rows 8..10 (clipped), columns 6..7 (clipped): last (9, 6) = flat 69.
        assert_eq!(grid.end_byte(&[8, 6]), 70 * 2);
    }

    use super::*;
    use crate::npy::boxes_of_range;
    use proptest::prelude::*;

    /// A dataset whose element at flat index i holds bytes `[i as u16 LE]`, cut into chunks.
    fn chunk_bytes(grid: &ChunkGrid, origin: &[u64]) -> Vec<u8> {
        let n: u64 = grid.chunk.iter().product();
        let strides = c_strides(&grid.shape);
        let mut out = vec![0xEEu8; n as usize * grid.unit];
        for i in 0..n {
            let mut rest = i;
            let mut flat = 0;
            let mut inside = true;
            for k in (0..grid.chunk.len()).rev() {
                let coord = origin[k] + rest % grid.chunk[k];
                rest /= grid.chunk[k];
                inside &= coord < grid.shape[k];
                flat += coord * strides[k];
            }
            if inside {
                let at = i as usize * grid.unit;
                out[at..at + 2].copy_from_slice(&(flat as u16).to_le_bytes());
            }
        }
        out
    }

    fn grid_and_range() -> impl Strategy<Value = (ChunkGrid, u64, u64)> {
        prop::collection::vec((1u64..7, 1u64..4), 1..4).prop_flat_map(|dims| {
            let shape: Vec<u64> = dims.iter().map(|d| d.0).collect();
            let chunk: Vec<u64> = dims.iter().map(|d| d.1).collect();
            let n: u64 = shape.iter().product();
            let grid = ChunkGrid::new(shape, chunk, 2).unwrap();
            (Just(grid), 0..=n, 0..=n).prop_map(|(g, a, b)| (g, a.min(b), a.max(b)))
        })
    }

    proptest! {
        #[test]
        fn copying_from_chunks_equals_the_naive_reading((grid, first, end) in grid_and_range()) {
            let mut out = Vec::new();
            for b in boxes_of_range(&grid.shape, first, end) {
                let mut part = vec![0u8; b.len() as usize * grid.unit];
                for origin in grid.chunks_of_box(&b) {
                    grid.copy_from_chunk(&origin, &chunk_bytes(&grid, &origin), &b, &mut part);
                }
                out.extend(part);
            }
            let expected: Vec<u8> = (first..end).flat_map(|i| (i as u16).to_le_bytes()).collect();
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn chunks_of_a_box_are_exactly_those_it_touches((grid, first, end) in grid_and_range()) {
            for b in boxes_of_range(&grid.shape, first, end) {
                let origins = grid.chunks_of_box(&b);
                let expected = (0..b.len()).map(|i| {
                    let mut rest = i;
                    let mut origin = vec![0; b.start.len()];
                    for k in (0..b.start.len()).rev() {
                        let coord = b.start[k] + rest % b.count[k];
                        rest /= b.count[k];
                        origin[k] = coord / grid.chunk[k] * grid.chunk[k];
                    }
                    origin
                }).collect::<std::collections::BTreeSet<_>>();
                let got: std::collections::BTreeSet<_> = origins.iter().cloned().collect();
                prop_assert_eq!(got.len(), origins.len(), "no chunk twice");
                prop_assert_eq!(got, expected);
            }
        }
    }
}
