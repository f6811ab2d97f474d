//! Decoders of HDF5's registered and optional filters that libhdf5 may lack: zstd, lz4,
//! bitshuffle, bzip2, blosc, blosc2 (with b2nd), szip, n-bit, scale-offset and LZF. One
//! [`Codec`] decodes one filter stage of one chunk; the same code serves the direct chunk path
//! (`filters.rs`) and, registered through `H5Zregister` (`register.rs`), libhdf5's own reads.
//!
//! Every decoder bounds its output by a `limit` (a chunk never decodes to more than its
//! declared size) and answers garbage with an error, never a panic or a huge allocation.

mod bitshuffle;
mod blosc;
mod blosc2;
mod compressors;
mod nbit;
pub mod register;
mod scaleoffset;
mod szip;

#[cfg(test)]
mod fuzz;

/// Filter ids (HDF5's registry of filter plugins, and the built-in ones we decode).
pub const SZIP: i32 = 4;
pub const NBIT: i32 = 5;
pub const SCALEOFFSET: i32 = 6;
pub const BZIP2: i32 = 307;
pub const LZF: i32 = 32000;
pub const BLOSC: i32 = 32001;
pub const LZ4: i32 = 32004;
pub const BITSHUFFLE: i32 = 32008;
pub const ZSTD: i32 = 32015;
pub const BLOSC2: i32 = 32026;

/// One filter stage we decode, with what its client data says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Lz4,
    Bzip2,
    /// h5py's LZF; `chunk_bytes` is the chunk size its client data records (0 if not).
    Lzf {
        chunk_bytes: usize,
    },
    Blosc,
    /// hdf5-blosc2's frames; `chunk_bytes` is the chunk size its client data records (0 if
    /// not): the bound on the library path, where libhdf5 does not pass the chunk size.
    Blosc2 {
        chunk_bytes: usize,
    },
    Bitshuffle(bitshuffle::Params),
    Szip(szip::Params),
    Nbit(nbit::Params),
    ScaleOffset(scaleoffset::Params),
}

impl Codec {
    /// The codec of filter `id` with client data `values`: None if we do not decode that
    /// filter, `Err` if its client data make no sense.
    pub fn of_filter(id: i32, values: &[u32]) -> Option<Result<Codec, CodecError>> {
        let codec = match id {
            ZSTD => Ok(Codec::Zstd),
            LZ4 => Ok(Codec::Lz4),
            BZIP2 => Ok(Codec::Bzip2),
            LZF => Ok(Codec::Lzf {
                chunk_bytes: values.get(2).map_or(0, |&v| v as usize),
            }),
            BLOSC => Ok(Codec::Blosc),
            BLOSC2 => Ok(Codec::Blosc2 {
                chunk_bytes: values.get(3).map_or(0, |&v| v as usize),
            }),
            BITSHUFFLE => bitshuffle::Params::of(values).map(Codec::Bitshuffle),
            SZIP => szip::Params::of(values).map(Codec::Szip),
            NBIT => nbit::Params::of(values).map(Codec::Nbit),
            SCALEOFFSET => scaleoffset::Params::of(values).map(Codec::ScaleOffset),
            _ => return None,
        };
        Some(codec)
    }

    /// The filter's usual name, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
            Codec::Bzip2 => "bzip2",
            Codec::Lzf { .. } => "lzf",
            Codec::Blosc => "blosc",
            Codec::Blosc2 { .. } => "blosc2",
            Codec::Bitshuffle(_) => "bitshuffle",
            Codec::Szip(_) => "szip",
            Codec::Nbit(_) => "nbit",
            Codec::ScaleOffset(_) => "scaleoffset",
        }
    }

    /// Decodes one stage of a chunk into at most `limit` bytes.
    pub fn decode(&self, input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
        let decoded = match self {
            Codec::Zstd => compressors::zstd(input, limit),
            Codec::Lz4 => compressors::hdf5_lz4(input, limit),
            Codec::Bzip2 => compressors::bzip2(input, limit),
            Codec::Lzf { chunk_bytes } => compressors::lzf(input, *chunk_bytes, limit),
            Codec::Blosc => blosc::decode(input, limit),
            Codec::Blosc2 { chunk_bytes } => match *chunk_bytes {
                0 => blosc2::decode(input, limit),
                declared => blosc2::decode(input, limit.min(declared)),
            },
            Codec::Bitshuffle(p) => bitshuffle::decode(p, input, limit),
            Codec::Szip(p) => szip::decode(p, input, limit),
            Codec::Nbit(p) => nbit::decode(p, input, limit),
            Codec::ScaleOffset(p) => scaleoffset::decode(p, input, limit),
        };
        decoded.map_err(|e| CodecError::InFilter {
            filter: self.name(),
            source: Box::new(e),
        })
    }
}

/// Why a filter's client data, or one stored chunk, cannot be decoded. A decoder reads
/// memory only, so every variant is a property of the file, never a resource error.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The filter's client data make no sense.
    #[error("{filter}: {why}")]
    Params { filter: &'static str, why: String },
    /// A size the chunk declares exceeds its chunk.
    #[error("declares {size} bytes, more than the {limit} of its chunk")]
    OverLimit { size: u64, limit: usize },
    /// The elements the client data count do not fit in the chunk.
    #[error("{count} elements of {size} bytes exceed the chunk")]
    TooManyElements { count: usize, size: usize },
    /// A chunk stored as it is, but larger than its chunk.
    #[error("stored chunk larger than its chunk")]
    StoredTooLarge,
    /// A stream that decodes to more bytes than its chunk holds.
    #[error("stream longer than the {limit} bytes of its chunk")]
    TooLong { limit: usize },
    /// The chunk is shorter than its fixed header.
    #[error("shorter than its {0}-byte header")]
    ShortHeader(usize),
    /// The chunk ends before what its header or packing promises; says where.
    #[error("{0}")]
    Truncated(&'static str),
    /// One block decoded to another size than its framing says.
    #[error("a block gave {got} bytes, not {expected}")]
    BlockSize { got: usize, expected: usize },
    /// The compression library refused the bytes: what, and the library's own words.
    #[error("{what} ({cause})")]
    Corrupt { what: &'static str, cause: String },
    /// The framing contradicts itself or the filter's client data.
    #[error("{0}")]
    Malformed(String),
    /// Valid framing this decoder does not read.
    #[error("{0}")]
    Unsupported(String),
    /// The datatype class in n-bit's client data is none HDF5 defines.
    #[error("unknown datatype class {0}")]
    UnknownClass(u32),
    /// No decoder for this filter id.
    #[error("filter {0} unknown")]
    UnknownFilter(i32),
    /// The stage of a pipeline the error happened in.
    #[error("{filter} filter: {source}")]
    InFilter {
        filter: &'static str,
        source: Box<CodecError>,
    },
}

impl CodecError {
    fn params(filter: &'static str, why: impl Into<String>) -> Self {
        CodecError::Params {
            filter,
            why: why.into(),
        }
    }

    fn malformed(why: impl Into<String>) -> Self {
        CodecError::Malformed(why.into())
    }

    fn corrupt(what: &'static str, cause: impl ToString) -> Self {
        CodecError::Corrupt {
            what,
            cause: cause.to_string(),
        }
    }
}

pub use nbit::ReducedInt;

/// Reads a big-endian u32 at `at`, if the input holds it.
fn be_u32(input: &[u8], at: usize) -> Option<u32> {
    let bytes = input.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Reads a big-endian u64 at `at`, if the input holds it.
fn be_u64(input: &[u8], at: usize) -> Option<u64> {
    let bytes = input.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// A size a header declares, refused if it exceeds `limit`.
fn declared(size: u64, limit: usize) -> Result<usize, CodecError> {
    match usize::try_from(size) {
        Ok(n) if n <= limit => Ok(n),
        _ => Err(CodecError::OverLimit { size, limit }),
    }
}

/// Reads bits most significant first, as HDF5's n-bit and scale-offset filters pack them.
struct BitReader<'a> {
    input: &'a [u8],
    /// Position in bits from the start.
    at: usize,
}

impl<'a> BitReader<'a> {
    fn new(input: &'a [u8]) -> Self {
        BitReader { input, at: 0 }
    }

    /// The next `n` (<= 128) bits as an unsigned number, or None past the end.
    fn read(&mut self, n: u32) -> Option<u128> {
        let mut value: u128 = 0;
        let mut left = n as usize;
        while left > 0 {
            let byte = *self.input.get(self.at / 8)?;
            let used = self.at % 8;
            let take = (8 - used).min(left);
            let bits = (byte >> (8 - used - take)) & ((1u16 << take) - 1) as u8;
            value = (value << take) | u128::from(bits);
            self.at += take;
            left -= take;
        }
        Some(value)
    }
}
