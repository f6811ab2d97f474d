//! `arrfs show` checked against numpy's repr and nan-statistics, and the progress bars of
//! long commands: drawn on a terminal, absent when stderr is not one.

mod common;

use std::ffi::OsStr;
use std::process::Command;

use common::{arrfs, assert_success, python, run_py, TempDir};

#[test]
fn show_prints_what_numpy_prints() {
    let dir = TempDir::new("show");
    let bin = env!("CARGO_BIN_EXE_arrfs");
    let out = run_py(
        "show_cases.py",
        &[OsStr::new("check"), OsStr::new(bin), dir.path().as_os_str()],
    );
    assert!(out.contains("arrays checked"), "{out}");
}

/// A 96 MiB `.npy` written by numpy (over the 64 MiB from which `cat --output` shows a bar).
fn large_npy(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.join("large.npy");
    let code = "import numpy as np, sys; np.save(sys.argv[1], np.arange(12 << 20, dtype='f8'))";
    let out = Command::new(python())
        .args(["-c", code])
        .arg(&path)
        .output()
        .unwrap();
    assert_success("numpy writes large.npy", &out);
    path
}

#[test]
fn cat_to_a_file_shows_a_bar_only_on_a_terminal() {
    let dir = TempDir::new("progress");
    let source = large_npy(&dir);
    let piped = arrfs()
        .arg("cat")
        .arg(&source)
        .arg("large.npy")
        .arg("--output")
        .arg(dir.join("piped.npy"))
        .output()
        .unwrap();
    assert_success("arrfs cat --output", &piped);
    assert!(piped.stderr.is_empty(), "{:?}", piped.stderr);

    // `script` (util-linux) runs the command on a pseudo-terminal and records what it drew.
    let command = format!(
        "{} cat {} large.npy --output {}",
        env!("CARGO_BIN_EXE_arrfs"),
        source.display(),
        dir.join("tty.npy").display()
    );
    let tty = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script (util-linux) runs");
    assert_success("arrfs cat --output under script", &tty);
    let drawn = String::from_utf8_lossy(&tty.stdout);
    assert!(
        drawn.contains("96.00 MiB"),
        "no bar on the terminal: {drawn:?}"
    );
    let original = std::fs::read(&source).unwrap();
    assert!(std::fs::read(dir.join("tty.npy")).unwrap() == original);
    assert!(std::fs::read(dir.join("piped.npy")).unwrap() == original);
}
