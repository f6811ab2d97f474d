use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use arrfs::cli::{Cli, Command};
use arrfs::source::{self, SourceOptions};
use arrfs::vfs::{Fs, Kind};
use arrfs::{Error, Result};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.mount.verbose);
    let result = match &cli.command {
        None => arrfs::mount::mount(&cli.mount),
        Some(Command::Unmount { mountpoint, lazy }) => arrfs::mount::unmount(mountpoint, *lazy),
        Some(Command::Ls {
            source,
            path,
            recursive,
        }) => ls(source, path.as_deref().unwrap_or(""), *recursive),
        Some(Command::Cat {
            source,
            path,
            output,
        }) => cat(source, path, output.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arrfs: error: {e}");
            ExitCode::from(if matches!(e, Error::Usage(_)) { 2 } else { 1 })
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let env = env_logger::Env::default().default_filter_or(format!("arrfs={level}"));
    env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .init();
}

fn open_tree(source: &std::path::Path) -> Result<Fs> {
    let src = source::open(source, &SourceOptions::default())?;
    let mtime = std::fs::metadata(source)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io(source, e))?;
    Ok(Fs::new(src, mtime))
}

/// `arrfs ls`: one line per entry: kind, size, dtype, shape, path.
fn ls(source: &std::path::Path, path: &str, recursive: bool) -> Result<()> {
    let fs = open_tree(source)?;
    let ino = fs.resolve(path)?;
    let mut out = std::io::stdout().lock();
    list_into(&fs, ino, path.trim_matches('/'), recursive, &mut out)
}

fn list_into(fs: &Fs, ino: u64, prefix: &str, recursive: bool, out: &mut impl Write) -> Result<()> {
    if fs.getattr(ino)?.kind != Kind::Dir {
        return print_entry(fs, ino, prefix, out);
    }
    for entry in fs.readdir(ino)?.into_iter().skip(2) {
        let name = entry.name.to_string_lossy();
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        print_entry(fs, entry.ino, &path, out)?;
        if recursive && entry.kind == Kind::Dir {
            list_into(fs, entry.ino, &path, recursive, out)?;
        }
    }
    Ok(())
}

fn print_entry(fs: &Fs, ino: u64, path: &str, out: &mut impl Write) -> Result<()> {
    let attr = fs.getattr(ino)?;
    let text = |name: &str| {
        fs.getxattr(ino, std::ffi::OsStr::new(name))
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    };
    let line = match attr.kind {
        Kind::Dir => format!("d {:>12}  {path}/", "-"),
        Kind::Symlink => format!(
            "l {:>12}  {path} -> {}",
            "-",
            String::from_utf8_lossy(&fs.readlink(ino)?)
        ),
        Kind::File => format!(
            "f {:>12}  {path}  {} {}",
            attr.size,
            text("user.arrfs.dtype"),
            text("user.arrfs.shape")
        ),
    };
    writeln!(out, "{line}").map_err(|e| Error::io("stdout", e))
}

/// `arrfs cat`: the bytes the mount would serve for one file.
fn cat(source: &std::path::Path, path: &str, output: Option<&std::path::Path>) -> Result<()> {
    let fs = open_tree(source)?;
    let ino = fs.resolve(path)?;
    let size = fs.getattr(ino)?.size;
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| Error::io(p, e))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut offset = 0;
    while offset < size {
        let chunk = fs.read(ino, offset, 1 << 20)?;
        out.write_all(&chunk).map_err(|e| Error::io("output", e))?;
        offset += chunk.len() as u64;
    }
    out.flush().map_err(|e| Error::io("output", e))
}
