//! `arrfs show SOURCE PATH`: one array as `h5ls -v` users want it, for every format: its
//! dtype, shape, chunks, filters and attributes (read from the virtual tree's xattrs), the
//! array printed as numpy's `repr` prints it, and with `--stats` its min / max / mean / NaN
//! count from one streaming pass over the virtual file (or over `--sample N` elements).
//! It reads the same [`Fs`] the mount serves, so it knows nothing of any container format.

mod repr;
mod stats;
mod values;

use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::inspect::{follow, in_tree};
use crate::npy::{peek, tuple_repr};
use crate::progress;
use crate::vfs::{Fs, Ino, Kind};

pub use values::{Elem, Value};

/// What `--stats` reads.
#[derive(Clone, Copy, Debug)]
pub enum StatsScope {
    None,
    All,
    Sample(u64),
}

/// Bytes read per request when streaming (as the mount's largest read).
const BLOCK: u64 = 1 << 20;

/// The `.npy` facts of one virtual file.
struct Npy {
    header_len: u64,
    descr: String,
    shape: Vec<u64>,
    fortran: bool,
}

impl Npy {
    fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// `arrfs show`: prints the description of `path`, then the array.
pub fn show(fs: &Fs, path: &str, scope: StatsScope) -> Result<()> {
    let ino = follow(fs, path)?;
    if fs.getattr(ino)?.kind == Kind::Dir {
        return Err(in_tree(path, Error::IsDir));
    }
    fs.open(ino, false).map_err(|e| in_tree(path, e))?;
    let npy = read_header(fs, ino)
        .ok_or_else(|| Error::format(path, "not a .npy file: arrfs show prints arrays"))?;
    let elem = Elem::parse(&npy.descr);
    let mut out = describe(fs, ino, path, &npy, elem.as_ref());
    if let Some(elem) = &elem {
        let summary = match scope {
            StatsScope::None => None,
            StatsScope::All => Some(stats::over_all(fs, ino, npy.header_len, elem, &npy)?),
            StatsScope::Sample(n) => Some(stats::over_sample(fs, ino, elem, &npy, n)?),
        };
        if let Some(summary) = summary {
            out.push_str(&summary.text(elem));
        }
        let values = shown_values(fs, ino, elem, &npy)?;
        let _ = write!(out, "\n{}\n", repr::array_repr(elem, &npy.shape, &values));
    } else {
        let _ = writeln!(
            out,
            "\n(values of dtype {} are not printed; np.load the file)",
            npy.descr
        );
    }
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())
        .map_err(|e| Error::io("output", e))
}

fn read_header(fs: &Fs, ino: Ino) -> Option<Npy> {
    let size = fs.getattr(ino).ok()?.size;
    let prefix = fs.read(ino, 0, 12.min(size) as u32).ok()?;
    let len = peek::header_len(&prefix)?;
    let header = read_exact(fs, ino, 0, len as u64).ok()?;
    let (descr, shape) = peek::descr_and_shape(&header)?;
    Some(Npy {
        header_len: len as u64,
        fortran: peek::fortran_order(&header),
        descr,
        shape,
    })
}

/// The description lines: path, dtype, shape, chunks, filters, attributes.
fn describe(fs: &Fs, ino: Ino, path: &str, npy: &Npy, elem: Option<&Elem>) -> String {
    let xattr = |name: &str| {
        fs.getxattr(ino, name.as_ref())
            .ok()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let mut out = format!("{}\n", path.trim_matches('/'));
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "  {key:<12}{value}");
    };
    let dtype = match elem {
        Some(e) => format!("{} ({})", e.numpy_name(), npy.descr),
        None => npy.descr.clone(),
    };
    line("dtype", dtype);
    if let Some(logical) = xattr("user.arrfs.dtype_logical") {
        line("logical", logical);
    }
    line("shape", tuple_repr(&npy.shape));
    if npy.fortran {
        line("order", "Fortran (column-major)".into());
    }
    let chunks = xattr("user.arrfs.chunks")
        .and_then(|c| serde_json::from_str::<Vec<u64>>(&c).ok())
        .map_or_else(|| "-".to_string(), |c| tuple_repr(&c));
    line("chunks", chunks);
    let filters = xattr("user.arrfs.filters").filter(|f| !f.is_empty());
    line("filters", filters.unwrap_or_else(|| "-".into()));
    let attrs = attributes(fs, ino);
    if !attrs.is_empty() {
        out.push_str("  attributes\n");
        for (name, value) in attrs {
            let _ = writeln!(out, "    {name} = {}", shorten(&value, 200));
        }
    }
    out
}

/// Attributes of the container (`user.NS.NAME` xattrs other than arrfs's own), as
/// (`NAME`, value text).
fn attributes(fs: &Fs, ino: Ino) -> Vec<(String, String)> {
    let names = fs.listxattr(ino).unwrap_or_default();
    names
        .split(|&b| b == 0)
        .filter_map(|n| std::str::from_utf8(n).ok())
        .filter_map(|n| {
            let rest = n.strip_prefix("user.")?;
            let (ns, name) = rest.split_once('.')?;
            (ns != "arrfs").then(|| (n, name.to_string()))
        })
        .map(|(full, name)| {
            let value = fs.getxattr(ino, full.as_ref()).unwrap_or_default();
            (name, String::from_utf8_lossy(&value).into_owned())
        })
        .collect()
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        text.chars().take(max - 3).collect::<String>() + "..."
    } else {
        text.to_string()
    }
}

/// The elements numpy's repr shows (all, or the corners of a summarised array), in C
/// order of the shown sub-array.
fn shown_values(fs: &Fs, ino: Ino, elem: &Elem, npy: &Npy) -> Result<Vec<Value>> {
    let summarise = repr::summarises(&npy.shape);
    let axes: Vec<Vec<u64>> = npy
        .shape
        .iter()
        .map(|&n| repr::shown_indices(n, summarise))
        .collect();
    let strides = element_strides(&npy.shape, npy.fortran);
    let mut indices = Vec::new();
    if npy.elements() > 0 {
        cartesian(&axes, &strides, 0, 0, &mut indices);
    }
    read_elements(fs, ino, elem, npy.header_len, &indices, None)
}

/// Element strides of the array in its file order.
fn element_strides(shape: &[u64], fortran: bool) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    if fortran {
        for axis in 1..shape.len() {
            strides[axis] = strides[axis - 1] * shape[axis - 1];
        }
    } else {
        for axis in (0..shape.len().saturating_sub(1)).rev() {
            strides[axis] = strides[axis + 1] * shape[axis + 1];
        }
    }
    strides
}

/// Flat element indices of every combination of `axes`, in C order.
fn cartesian(axes: &[Vec<u64>], strides: &[u64], axis: usize, base: u64, out: &mut Vec<u64>) {
    if axis == axes.len() {
        out.push(base);
        return;
    }
    for &i in &axes[axis] {
        cartesian(axes, strides, axis + 1, base + i * strides[axis], out);
    }
}

/// The elements at flat `indices` (in any order), reading runs of neighbours in one go.
fn read_elements(
    fs: &Fs,
    ino: Ino,
    elem: &Elem,
    header_len: u64,
    indices: &[u64],
    bar: Option<&indicatif::ProgressBar>,
) -> Result<Vec<Value>> {
    let size = elem.size as u64;
    let mut values = Vec::with_capacity(indices.len());
    let mut start = 0;
    while start < indices.len() {
        let mut end = start + 1;
        while end < indices.len()
            && indices[end] == indices[end - 1] + 1
            && (end - start) as u64 * size < BLOCK
        {
            end += 1;
        }
        let offset = header_len + indices[start] * size;
        let bytes = read_exact(fs, ino, offset, (end - start) as u64 * size)?;
        values.extend(bytes.chunks_exact(elem.size).map(|b| elem.decode(b)));
        if let Some(bar) = bar {
            bar.inc((end - start) as u64);
        }
        start = end;
    }
    Ok(values)
}

/// Exactly `len` bytes at `offset` (a read may return less than asked).
fn read_exact(fs: &Fs, ino: Ino, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let want = (len - out.len() as u64).min(BLOCK) as u32;
        let chunk = fs.read(ino, offset + out.len() as u64, want)?;
        if chunk.is_empty() {
            let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
            return Err(Error::io("virtual file", eof));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A bar over `len` elements on a terminal.
fn element_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    progress::elements(len, what)
}
