//! The `.npy` format as numpy writes it: dtype descriptors, the header, and the mapping of a
//! virtual file's byte range onto header bytes and payload bytes.

mod dtype;
mod header;
mod layout;
pub mod peek;
mod pyrepr;
pub mod widen;

/// The first bytes of every `.npy` file.
pub const NPY_MAGIC: &[u8] = b"\x93NUMPY";

pub use dtype::{ByteOrder, Dtype, Field};
pub use header::NpyHeader;
pub use layout::{boxes_of_range, element_span, read_elements, ElementBox, NpyLayout, Piece};
pub use pyrepr::{str_repr, tuple_repr};
