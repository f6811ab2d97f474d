//! `arrfs ls` and `arrfs cat`: the virtual tree and its files without a mount. Both go
//! through the same [`Fs`] the mount serves, so they show exactly what the mount shows.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::connect;
use crate::error::{Error, Result};
use crate::io::remote::RemoteOptions;
use crate::npy::{peek, tuple_repr};
use crate::progress;
use crate::source::{self, SourceOptions};
use crate::vfs::{Fs, Ino, Kind};

/// How many symbolic links `cat` follows before giving up (as the kernel's ELOOP).
const MAX_SYMLINK_HOPS: usize = 40;

/// One entry as `ls` shows it.
struct Row {
    path: String,
    kind: Kind,
    size: u64,
    dtype: Option<String>,
    shape: Option<Vec<u64>>,
    chunks: Option<Vec<u64>>,
    filters: Vec<String>,
    target: Option<String>,
}

/// The tree of `source` as the mount shows it (`--attrs-json` sidecars included if asked).
pub fn open_tree(source: &Path, options: &SourceOptions, remote: &RemoteOptions) -> Result<Fs> {
    let location = connect::locate(source, remote)?;
    let src = source::open(&location, options)?;
    Ok(Fs::new(src, connect::modified(&location)?))
}

/// `arrfs ls`: the entries under `path` (or `path` itself if it is a file), as aligned
/// columns or as one JSON list.
pub fn ls(fs: &Fs, path: &str, recursive: bool, json: bool) -> Result<()> {
    let ino = fs.resolve(path).map_err(|e| in_tree(path, e))?;
    let mut rows = Vec::new();
    let mut walk = Walk {
        recursive,
        seen: HashSet::from([ino]),
    };
    walk.collect(fs, ino, path.trim_matches('/'), &mut rows)?;
    let text = if json {
        rows_json(&rows)
    } else {
        rows_text(&rows)
    };
    write_all(&mut std::io::stdout().lock(), text.as_bytes())
}

/// A listing in progress. Directories are entered once each: an HDF5 group reachable by
/// hard links from inside itself would otherwise be walked forever.
struct Walk {
    recursive: bool,
    seen: HashSet<Ino>,
}

impl Walk {
    fn collect(&mut self, fs: &Fs, ino: Ino, path: &str, rows: &mut Vec<Row>) -> Result<()> {
        if fs.getattr(ino)?.kind != Kind::Dir {
            rows.push(row(fs, ino, path)?);
            return Ok(());
        }
        // Depth first in listing order, as a recursive walk would go, without recursion.
        let mut stack = vec![(fs.entries(ino)?.into_iter(), path.to_string())];
        while let Some((entries, dir_path)) = stack.last_mut() {
            let Some(entry) = entries.next() else {
                stack.pop();
                continue;
            };
            let child = join(dir_path, &entry.name.to_string_lossy());
            rows.push(row(fs, entry.ino, &child)?);
            if self.recursive && entry.kind == Kind::Dir && self.seen.insert(entry.ino) {
                stack.push((fs.entries(entry.ino)?.into_iter(), child));
            }
        }
        Ok(())
    }
}

fn join(dir: &str, name: &str) -> String {
    match dir {
        "" => name.to_string(),
        _ => format!("{dir}/{name}"),
    }
}

fn row(fs: &Fs, ino: Ino, path: &str) -> Result<Row> {
    let attr = fs.getattr(ino)?;
    let (dtype, shape) = match attr.kind {
        Kind::File => npy_summary(fs, ino, attr.size)?.unzip(),
        _ => (None, None),
    };
    let xattr = |name: &str| fs.getxattr(ino, name.as_ref()).ok();
    let chunks = xattr("user.arrfs.chunks").and_then(|v| serde_json::from_slice(&v).ok());
    let filters = xattr("user.arrfs.filters")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    let target = match attr.kind {
        Kind::Symlink => Some(String::from_utf8_lossy(&fs.readlink(ino)?).into_owned()),
        _ => None,
    };
    Ok(Row {
        path: path.to_string(),
        kind: attr.kind,
        size: attr.size,
        dtype,
        shape,
        chunks,
        filters: filters
            .split(',')
            .filter(|f| !f.is_empty())
            .map(String::from)
            .collect(),
        target,
    })
}

/// dtype and shape from the file's own `.npy` header; None for files that are not `.npy`.
fn npy_summary(fs: &Fs, ino: Ino, size: u64) -> Result<Option<(String, Vec<u64>)>> {
    let prefix = fs.read(ino, 0, 12.min(size) as u32)?;
    let Some(len) = peek::header_len(&prefix) else {
        return Ok(None);
    };
    let header = fs.read(ino, 0, len as u32)?;
    Ok(peek::descr_and_shape(&header))
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Dir => "dir",
        Kind::File => "file",
        Kind::Symlink => "symlink",
    }
}

fn rows_json(rows: &[Row]) -> String {
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "path": r.path,
                "kind": kind_name(r.kind),
                "size": r.size,
                "dtype": r.dtype,
                "shape": r.shape,
                "chunks": r.chunks,
                "filters": r.filters,
                "target": r.target,
            })
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&list).unwrap_or_default();
    text.push('\n');
    text
}

/// `ls -l`-like columns under a header line; directories end in `/`, symlinks show their
/// target.
fn rows_text(rows: &[Row]) -> String {
    let mut table =
        vec![["T", "SIZE", "DTYPE", "SHAPE", "CHUNKS", "FILTERS", "PATH"].map(String::from)];
    table.extend(rows.iter().map(columns));
    let widths: Vec<usize> = (0..7)
        .map(|i| {
            table
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for cells in &table {
        let line = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| match i {
                1 => format!("{cell:>w$}"),
                6 => cell.clone(),
                _ => format!("{cell:<w$}"),
            })
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn columns(r: &Row) -> [String; 7] {
    let dash = || "-".to_string();
    let (mark, name) = match r.kind {
        Kind::Dir => ("d", format!("{}/", r.path)),
        Kind::File => ("-", r.path.clone()),
        Kind::Symlink => (
            "l",
            format!("{} -> {}", r.path, r.target.as_deref().unwrap_or("")),
        ),
    };
    let filters = if r.filters.is_empty() {
        dash()
    } else {
        r.filters.join(",")
    };
    [
        mark.to_string(),
        r.size.to_string(),
        r.dtype.as_deref().map_or_else(dash, short_dtype),
        r.shape.as_deref().map_or_else(dash, tuple_repr),
        r.chunks.as_deref().map_or_else(dash, tuple_repr),
        filters,
        name,
    ]
}

/// A structured descr is a long list: the columns show its field names (`--json` has it whole).
fn short_dtype(descr: &str) -> String {
    if !descr.starts_with('[') {
        return descr.to_string();
    }
    let text = format!("struct{{{}}}", peek::field_names(descr).join(","));
    if text.chars().count() > 32 {
        text.chars().take(29).collect::<String>() + "...}"
    } else {
        text
    }
}

/// `arrfs cat`: the bytes the mount serves for `path` (symbolic links followed), to `output`
/// or stdout.
pub fn cat(fs: &Fs, path: &str, output: Option<&Path>) -> Result<()> {
    let ino = follow(fs, path)?;
    fs.open(ino, false).map_err(|e| in_tree(path, e))?;
    let size = fs.getattr(ino)?.size;
    // A bar only for a file: on stdout the bytes are the output, and small files are done
    // before a bar could say anything.
    let bar = match output {
        Some(_) if size >= progress::CAT_BAR_BYTES => progress::bytes(size, path),
        _ => indicatif::ProgressBar::hidden(),
    };
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| Error::io(p, e))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut offset = 0;
    while offset < size {
        let chunk = fs
            .read(ino, offset, 1 << 20)
            .map_err(|e| in_tree(path, e))?;
        if chunk.is_empty() {
            break;
        }
        write_all(&mut out, &chunk)?;
        offset += chunk.len() as u64;
        bar.set_position(offset);
    }
    bar.finish_and_clear();
    out.flush().map_err(|e| Error::io("output", e))
}

/// The inode `path` names, following symbolic links as `open` would.
pub(crate) fn follow(fs: &Fs, path: &str) -> Result<Ino> {
    let mut path = path.trim_matches('/').to_string();
    for _ in 0..MAX_SYMLINK_HOPS {
        let ino = fs.resolve(&path).map_err(|e| in_tree(&path, e))?;
        if fs.getattr(ino)?.kind != Kind::Symlink {
            return Ok(ino);
        }
        let target = String::from_utf8_lossy(&fs.readlink(ino)?).into_owned();
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        path = join(dir, &target);
    }
    let eloop = std::io::Error::from_raw_os_error(libc::ELOOP);
    Err(Error::io(path, eloop))
}

/// Errors of a path inside the tree name that path, as `ls` and `cat` of a file would.
pub(crate) fn in_tree(path: &str, e: Error) -> Error {
    match e {
        Error::NotFound | Error::NotDir | Error::IsDir => {
            Error::io(path, std::io::Error::from_raw_os_error(e.errno()))
        }
        other => other,
    }
}

fn write_all(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes).map_err(|e| Error::io("output", e))
}
