//! The `arrfs` program: parses the command line and hands each command to its module.

use std::process::ExitCode;

use clap::Parser;

use arrfs::cli::{self, Cli, Command};
use arrfs::connect::CacheArgs;
use arrfs::inspect::{self, open_tree};
use arrfs::io::remote::RemoteOptions;
use arrfs::show::StatsScope;
use arrfs::source::SourceOptions;
use arrfs::{Error, Result};

fn main() -> ExitCode {
    // Before any thread starts (setting the environment later would race with getenv):
    // libhdf5 finds external raw data files next to the HDF5 file, never in the working
    // directory. A value the user set is replaced: it would make reads depend on the cwd.
    std::env::set_var(
        arrfs::source::hdf5::EXTFILE_PREFIX_ENV,
        arrfs::source::hdf5::ORIGIN,
    );
    if let Some(code) = arrfs::source::worker::run_if_requested() {
        return code;
    }
    let cli = Cli::parse();
    arrfs::logging::init(cli.mount.verbose);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arrfs: error: {e}");
            ExitCode::from(if matches!(e, Error::Usage(_)) { 2 } else { 1 })
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let Some(command) = &cli.command else {
        return arrfs::mount::mount(&cli.mount);
    };
    match command {
        Command::Unmount { mountpoint, lazy } => arrfs::mount::unmount(mountpoint, *lazy),
        Command::Ls {
            source,
            path,
            recursive,
            json,
            attrs_json,
            options,
        } => {
            let (tree, remote) = tree_options(*attrs_json, options)?;
            let fs = open_tree(source, &tree, &remote)?;
            inspect::ls(&fs, path.as_deref().unwrap_or(""), *recursive, *json)
        }
        Command::Cat {
            source,
            path,
            output,
            attrs_json,
            options,
        } => {
            let (tree, remote) = tree_options(*attrs_json, options)?;
            let fs = open_tree(source, &tree, &remote)?;
            inspect::cat(&fs, path, output.as_deref())
        }
        Command::Show {
            source,
            path,
            stats,
            sample,
        } => {
            let (tree, remote) = tree_options(false, &[])?;
            let fs = open_tree(source, &tree, &remote)?;
            let scope = match (stats, sample) {
                (false, _) => StatsScope::None,
                (true, None) => StatsScope::All,
                (true, Some(n)) => StatsScope::Sample(*n),
            };
            arrfs::show::show(&fs, path, scope)
        }
        Command::Completions { shell } => {
            cli::write_completions(*shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Man => cli::write_man(&mut std::io::stdout()).map_err(|e| Error::io("stdout", e)),
    }
}

/// `ls` and `cat` take the tree's and the remote source's `-o` options; mount options mean
/// nothing to them.
fn tree_options(attrs_json: bool, opts: &[String]) -> Result<(SourceOptions, RemoteOptions)> {
    let mut options = SourceOptions {
        attrs_json,
        hdf5_worker: true,
        ..SourceOptions::default()
    };
    let remote = arrfs::connect::remote_options(
        opts,
        &CacheArgs {
            memory: options.cache_size,
            ..CacheArgs::default()
        },
    )?;
    for opt in opts.iter().filter(|o| !o.is_empty()) {
        if arrfs::connect::is_remote_option(opt) {
            continue;
        }
        if !SourceOptions::is_source_option(opt) {
            // `cat SOURCE PATH -o FILE` wrote to FILE before -o took tree options.
            return Err(Error::Usage(format!(
                "-o {opt}: ls and cat take tree options (split_names=SEP, widen=f32); \
                 cat writes to a file with --output FILE"
            )));
        }
        options.apply(opt)?;
    }
    Ok((options, remote))
}

/// `arrfs cat ... | head`: the reader went away, which is not an error of ours.
fn is_closed_pipe(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}
