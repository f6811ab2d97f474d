//! A short stress run in `cargo test` (scripts/soak runs the same driver for longer): 16
//! readers in 4 processes read random ranges of HDF5, NPZ and pickle arrays at once through
//! pread and mmap while walkers list the tree; every range must equal the oracle's bytes.

mod common;

use std::ffi::OsStr;

use common::{run_py, Mount, TempDir};

const SECONDS: &str = "20";

/// The figure `name` of the driver's closing JSON line.
fn figure(json: &str, name: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(json).expect("JSON figures");
    value[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {json}"))
}

#[test]
fn concurrent_random_reads_of_every_format_are_exact() {
    let dir = TempDir::new("stress");
    let src = dir.join("src");
    run_py("stress.py", &[OsStr::new("write"), src.as_os_str()]);
    let mount = Mount::new(&src, &[]);
    let pid = mount.pid().to_string();
    let out = run_py(
        "stress.py",
        &[
            OsStr::new("run"),
            src.as_os_str(),
            mount.point.as_os_str(),
            OsStr::new("--seconds"),
            OsStr::new(SECONDS),
            OsStr::new("--pid"),
            OsStr::new(&pid),
        ],
    );
    eprintln!("{out}");
    let json = out.lines().last().unwrap_or_default();
    assert_eq!(figure(json, "mismatches"), 0, "{out}");
    assert_eq!(figure(json, "errors"), 0, "{out}");
    assert!(
        figure(json, "reads") > 100 && figure(json, "walks") > 0,
        "{out}"
    );
    mount.stop();
}
