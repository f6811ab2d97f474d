//! arrfs: every array in an HDF5, NPZ, pickle or `.npy` container as a plain `.npy` file.
//!
//! `vfs` is the filesystem core, `fuse` its thin kernel adapter, `source` the container
//! formats behind one trait, `npy` the `.npy` header and byte-range mapping, `io` file access.
//! `cli`, `mount`, `inspect`, `show`, `progress` and `logging` serve the command line.

#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod cli;
pub mod connect;
pub mod error;
pub mod fuse;
pub mod inspect;
pub mod io;
pub mod logging;
pub mod mount;
pub mod npy;
pub mod progress;
pub mod show;
pub mod source;
#[cfg(test)]
mod testing;
pub mod vfs;

pub use error::{Error, Result};
