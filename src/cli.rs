//! The command line: `arrfs [OPTIONS] SOURCE MOUNTPOINT`, `arrfs unmount`, `arrfs ls`,
//! `arrfs cat`, `arrfs show`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Every format the tree shows, detected by content.
const ABOUT: &str =
    "Mount HDF5, NPZ/zip, .npy (also gzipped), pickle/joblib, safetensors, GGUF and \
PyTorch checkpoints (or a directory of them) as a read-only tree of plain .npy files";

const EXAMPLE: &str = "\
Examples:
  arrfs data.h5 /mnt/arr          mount (read-only); returns once the mount answers
  ls -lR /mnt/arr                 groups are directories, datasets are NAME.npy
  python -c \"import numpy as np; print(np.load('/mnt/arr/grp/x.npy', mmap_mode='r')[5])\"
  arrfs unmount /mnt/arr          (fusermount -u /mnt/arr works too)
  arrfs ls data.h5 -R             the virtual tree, no mount needed (--json for scripts)
  arrfs cat data.h5 grp/x.npy > x.npy
  arrfs show data.h5 grp/x.npy --stats   dtype, chunks, attributes, values, min/max/mean
  arrfs model.safetensors /mnt/m -o split_names=.,widen=f32
                                  dotted names as directories, bfloat16/float8 as float32
  arrfs ls -o widen=f32 model.safetensors   ls and cat take the same -o tree options
  arrfs --attrs-json data.h5 /mnt/arr; cat /mnt/arr/grp/x.attrs.json
  arrfs completions bash > ~/.local/share/bash-completion/completions/arrfs";

#[derive(Parser, Debug)]
#[command(
    name = "arrfs",
    version,
    about = ABOUT,
    after_help = EXAMPLE,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub mount: MountArgs,
}

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// The container (HDF5, NPZ/zip, .npy, pickle, safetensors, GGUF, PyTorch checkpoint) or
    /// directory to mount; or its URL: s3://BUCKET/KEY, gs://, az://, http(s)://, a URL
    /// ending in / for a prefix (a directory)
    #[arg(required = true)]
    pub source: Option<PathBuf>,
    /// An existing directory to mount on
    #[arg(required = true)]
    pub mountpoint: Option<PathBuf>,
    /// Stay in the foreground (SIGINT/SIGTERM unmount and exit 0)
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options: allow_other, allow_root, auto_unmount, default_permissions,
    /// fsname=NAME, passthrough (plain `.npy` files read by the kernel from the source file
    /// itself, FUSE passthrough, Linux >= 6.9 and root), no_hdf5_check (run libhdf5 in
    /// the daemon, not in a worker process per HDF5 file), hdf5_check_timeout=SECONDS
    /// (longest one call of an HDF5 worker may take: open, listing, read; default 60),
    /// external_links=any (follow HDF5 external links and raw data files outside the
    /// source's directory); tree options (also for ls and cat): split_names=SEP (checkpoint
    /// tensor names split into directories at SEP, e.g. `.`), widen=f32 (bfloat16/float8
    /// tensors served as float32), verify=open (check each zip member's CRC-32 in full on
    /// its first read); remote sources: anonymous (unsigned requests, public buckets),
    /// endpoint=URL, region=R, allow_http, max_requests=N (in flight at once, default 24),
    /// timeout=SECONDS (per request, default 30; a stalled store gives EIO after ~3x)
    #[arg(short = 'o', value_delimiter = ',', value_name = "OPT[,OPT..]")]
    pub options: Vec<String>,
    /// FUSE worker threads (default: number of CPUs)
    #[arg(short = 'j', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Memory for decoded chunks, e.g. 256M, 1G
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_size)]
    pub cache_size: u64,
    /// Remote sources: keep fetched blocks in DIR too, across mounts (shared safely by
    /// mounts of the same objects)
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Most bytes the disk cache keeps (least recently used go first), e.g. 20G
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "cache_dir")]
    pub disk_cache_size: Option<u64>,
    /// Add `x.attrs.json` beside each dataset `x.npy`, and `.attrs.json` in each group with
    /// attributes: every attribute as typed JSON (bytes as {"base64": ...})
    #[arg(long)]
    pub attrs_json: bool,
    /// Log file of the background daemon (default: syslog)
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// More logging (repeat for more; RUST_LOG works too)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Unmount an arrfs mount (as `fusermount -u` does)
    Unmount {
        mountpoint: PathBuf,
        /// Detach now even if files are open; the mount goes away when they are closed
        #[arg(short, long)]
        lazy: bool,
    },
    /// Show the virtual tree with dtype, shape and size, without mounting
    Ls {
        source: PathBuf,
        /// A directory or file inside the virtual tree
        path: Option<String>,
        /// Recurse into directories
        #[arg(short = 'R', long)]
        recursive: bool,
        /// One JSON list of entries (path, kind, size, dtype, shape, chunks, filters, target)
        #[arg(long)]
        json: bool,
        /// Show the `--attrs-json` sidecars too
        #[arg(long)]
        attrs_json: bool,
        /// Tree and remote options, as when mounting: split_names=SEP, widen=f32, anonymous,
        /// endpoint=URL, region=R, allow_http, max_requests=N
        #[arg(short = 'o', value_delimiter = ',', value_name = "OPT[,OPT..]")]
        options: Vec<String>,
    },
    /// Write one virtual .npy file to stdout, without mounting
    Cat {
        source: PathBuf,
        /// The file inside the virtual tree, e.g. grp/x.npy
        path: String,
        /// Write to this file instead of stdout
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Make the `--attrs-json` sidecars readable too
        #[arg(long)]
        attrs_json: bool,
        /// Tree and remote options, as when mounting: split_names=SEP, widen=f32, anonymous,
        /// endpoint=URL, region=R, allow_http, max_requests=N
        #[arg(short = 'o', value_delimiter = ',', value_name = "OPT[,OPT..]")]
        options: Vec<String>,
    },
    /// Describe one array (dtype, shape, chunks, filters, attributes) and print it as numpy's
    /// repr does, without mounting
    Show {
        source: PathBuf,
        /// The array inside the virtual tree, e.g. grp/x.npy
        path: String,
        /// Also min, max, mean and NaN count, in one pass over every element
        #[arg(long)]
        stats: bool,
        /// With --stats: only N elements, evenly spaced
        #[arg(long, value_name = "N", requires = "stats")]
        sample: Option<u64>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `arrfs man > arrfs.1`
    #[command(hide = true)]
    Man,
}

/// The man page, generated from this definition.
pub fn write_man(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// The completion script for `shell`, generated from this definition.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "arrfs", out);
}

/// `256M`, `1G`, `4096`, `64k`: a size in bytes (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    let shift = match unit
        .trim_end_matches(['i', 'B', 'b'])
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown unit in {text:?} (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }
}
