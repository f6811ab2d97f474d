//! Hostile names and sizes: zip member names with `../`, absolute paths, NUL and 4,096
//! bytes; HDF5 soft links to absolute paths and above the root; pickle keys that are paths;
//! a 10 MiB HDF5 attribute. Nothing may point outside the mount, every name is escaped and
//! at most 255 bytes, and arrfs stays up.

mod common;

use std::ffi::OsStr;

use common::{run_py, Mount, TempDir};

#[test]
fn hostile_names_stay_inside_the_mount() {
    let dir = TempDir::new("hostile");
    let src = dir.join("src");
    run_py("hostile_cases.py", &[OsStr::new("write"), src.as_os_str()]);
    let mount = Mount::new(&src, &[]);
    let out = run_py(
        "hostile_cases.py",
        &[OsStr::new("check"), mount.point.as_os_str()],
    );
    assert!(out.contains("hostile ok"), "{out}");
    eprintln!("{out}");
    mount.stop();
}
