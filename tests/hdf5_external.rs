//! External links and external raw data resolved like HDF5 does: relative to the file that
//! names them, never to the daemon's working directory (the mounts here start from the
//! crate's directory, the source named by a relative path). Targets outside the source's own
//! directory are left out unless `-o external_links=any`.

mod common;

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use common::{run_py, Mount, TempDir};

/// `path` (absolute) relative to the working directory, so that the source is named
/// relatively from a directory that is not its own.
fn from_cwd(path: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd
        .components()
        .filter(|c| matches!(c, Component::Normal(_)));
    let mut rel: PathBuf = ups.map(|_| "..").collect();
    rel.push(path.strip_prefix("/").unwrap());
    rel
}

fn check(name: &str, mode: &str, extra: &[&str]) -> String {
    let dir = TempDir::new(name);
    run_py(
        "external_cases.py",
        &[OsStr::new("write"), dir.path().as_os_str()],
    );
    let source = match mode {
        "dir" => dir.join("root"),
        _ => dir.join("root/a.h5"),
    };
    let env: &[(&str, &str)] = match mode {
        "driver" => &[("ARRFS_HDF5_VFD", "1")],
        _ => &[],
    };
    let mount = Mount::with_env(&from_cwd(&source), extra, env);
    let out = run_py(
        "external_cases.py",
        &[
            OsStr::new("check"),
            dir.path().as_os_str(),
            mount.point.as_os_str(),
            OsStr::new(mode),
        ],
    );
    assert!(out.contains("files checked"), "{out}");
    mount.stop()
}

#[test]
fn external_links_and_raw_data_resolve_next_to_the_file() {
    check("external-file", "file", &[]);
}

#[test]
fn through_the_hdf5_driver_external_links_and_raw_data_are_left_out_with_the_reason() {
    let log = check("external-driver", "driver", &["-o", "external_links=any"]);
    assert!(log.contains("read through arrfs's HDF5 driver"), "{log}");
}

#[test]
fn external_links_any_follows_targets_outside_the_source_directory() {
    check("external-any", "any", &["-o", "external_links=any"]);
}

#[test]
fn external_links_reach_sibling_containers_of_a_directory_mount() {
    check("external-dir", "dir", &[]);
}
