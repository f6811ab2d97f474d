//! Pickles and joblib dumps written by CPython, numpy and joblib, mounted and checked
//! against what `pickle.load` / `joblib.load` return (tests/py/pickle_cases.py).

mod common;

use std::path::Path;

use common::{run_py, Mount, TempDir};

fn check_mounted(file: &Path) {
    let mount = Mount::new(file, &[]);
    let out = run_py(
        "pickle_cases.py",
        &["check".as_ref(), file.as_os_str(), mount.point.as_os_str()],
    );
    assert!(out.contains("arrays ok"), "{out}");
    mount.stop();
}

fn written_cases(dir: &TempDir) {
    run_py(
        "pickle_cases.py",
        &["write".as_ref(), dir.path().as_os_str()],
    );
}

fn compressed_cases(dir: &TempDir) {
    run_py(
        "pickle_cases.py",
        &["write-compressed".as_ref(), dir.path().as_os_str()],
    );
}

#[test]
fn pickles_of_every_protocol_match_pickle_load() {
    let dir = TempDir::new("pickle-protocols");
    written_cases(&dir);
    for protocol in 0..=5 {
        check_mounted(&dir.join(&format!("p{protocol}.pkl")));
    }
}

#[test]
fn a_top_level_array_is_one_file_named_after_the_pickle() {
    let dir = TempDir::new("pickle-top");
    written_cases(&dir);
    for name in ["top2.pkl", "top5.pkl"] {
        check_mounted(&dir.join(name));
    }
}

#[test]
fn joblib_dumps_match_joblib_load() {
    let dir = TempDir::new("pickle-joblib");
    written_cases(&dir);
    for name in ["dump.joblib", "dump_p2.joblib"] {
        check_mounted(&dir.join(name));
    }
}

#[test]
fn numpy_1_pickles_match_pickle_load() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pickle");
    for name in ["np1_p2.pkl", "np1_p5.pkl"] {
        check_mounted(&fixtures.join(name));
    }
}

#[test]
fn hostile_reduce_runs_nothing_and_the_rest_is_shown() {
    let dir = TempDir::new("pickle-hostile");
    let marker = dir.join("pwned");
    let file = dir.join("evil.pkl");
    let script = format!(
        "import os, pickle, numpy as np\n\
         class Evil:\n    def __reduce__(self):\n        return (os.system, ('touch {}',))\n\
         pickle.dump({{'evil': Evil(), 'x': np.arange(3)}}, open({:?}, 'wb'), protocol=4)\n",
        marker.display(),
        file.display().to_string()
    );
    let out = std::process::Command::new(common::python())
        .args(["-c", &script])
        .output()
        .unwrap();
    common::assert_success("write evil pickle", &out);
    let mount = Mount::new(&file, &[]);
    let names: Vec<String> = std::fs::read_dir(&mount.point)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["x.npy"]);
    assert!(!marker.exists(), "os.system ran");
    let log = mount.stop();
    assert!(log.contains("system is not on the allow-list"), "{log}");
}

#[test]
fn truncated_pickle_fails_the_mount_with_one_clear_line() {
    let dir = TempDir::new("pickle-truncated");
    written_cases(&dir);
    let bytes = std::fs::read(dir.join("p4.pkl")).unwrap();
    let cut = dir.join("cut.pkl");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = common::arrfs().arg("ls").arg(&cut).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cut.pkl") && stderr.contains("truncated"),
        "{stderr}"
    );
}

#[test]
fn compressed_pickles_match_pickle_load() {
    let dir = TempDir::new("pickle-compressed");
    compressed_cases(&dir);
    for name in [
        "p5.pkl.gz",
        "p2.pkl.gz",
        "p4.pkl.zlib",
        "p5.pkl.bz2",
        "p5.pkl.xz",
        "p4.pkl.lzma",
        "top5.pkl.gz",
    ] {
        check_mounted(&dir.join(name));
    }
}

#[test]
fn every_joblib_compression_matches_joblib_load() {
    let dir = TempDir::new("pickle-joblib-compressed");
    compressed_cases(&dir);
    for codec in ["zlib", "gzip", "bz2", "lzma", "xz", "lz4"] {
        check_mounted(&dir.join(&format!("dump_{codec}.joblib")));
    }
}

/// bz2/xz/lzma/lz4 streams are decoded into a temporary file that is unlinked at once: it
/// shows only as a deleted file held open by the daemon, and goes with it.
#[test]
fn spill_files_are_unlinked_while_mounted() {
    let dir = TempDir::new("pickle-spill");
    compressed_cases(&dir);
    let mount = Mount::new(&dir.join("dump_xz.joblib"), &[]);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", mount.pid())).unwrap();
    let spills: Vec<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.unwrap().path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.contains("arrfs-spill-"))
        .collect();
    assert_eq!(spills.len(), 1, "{spills:?}");
    assert!(spills[0].ends_with(" (deleted)"), "{spills:?}");
    mount.stop();
}
