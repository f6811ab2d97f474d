//! Third-party corpus: HDF5 files, pickles and joblib dumps shipped by PyTables, h5py, scipy
//! (MATLAB v7.3) and joblib, taken from the installed packages at test time, mounted as one
//! directory and checked array by array against h5py / joblib (tests/py/corpus.py). Every
//! array equals np.save of the oracle's reading, or is left out with arrfs's reason.

mod common;

use std::ffi::OsStr;

use common::{run_py, Mount, TempDir};

/// The number after `label` in the summary line, e.g. `231 equal`.
fn count(summary: &str, label: &str) -> u64 {
    let words: Vec<&str> = summary
        .split([' ', ','])
        .filter(|w| !w.is_empty())
        .collect();
    let at = words.iter().position(|w| *w == label).expect(label);
    words[at - 1].parse().unwrap()
}

#[test]
fn every_third_party_array_equals_its_oracle_or_is_left_out_with_a_reason() {
    check_corpus("corpus", &[]);
}

/// The same with libhdf5 reading every HDF5 file through arrfs's driver.
#[test]
fn every_third_party_array_equals_its_oracle_through_the_hdf5_driver() {
    let log = check_corpus("corpus-vfd", &[("ARRFS_HDF5_VFD", "1")]);
    assert!(log.contains("ARRFS_HDF5_VFD is set: "), "{log}");
}

/// Mounts the corpus with `env`, checks every array; returns the daemon's log.
fn check_corpus(name: &str, env: &[(&str, &str)]) -> String {
    let dir = TempDir::new(name);
    let corpus = dir.join("corpus");
    run_py("corpus.py", &[OsStr::new("collect"), corpus.as_os_str()]);
    let mount = Mount::with_env(&corpus, &[], env);
    let out = run_py(
        "corpus.py",
        &[
            OsStr::new("check"),
            corpus.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    let log = mount.stop();
    let summary = out.lines().last().unwrap_or_default();
    println!("{out}");
    assert!(summary.starts_with("corpus: "), "{out}");
    assert_eq!(count(summary, "mismatches"), 0, "{out}");
    // The packages ship these files today; far fewer means the corpus was not found.
    assert!(count(summary, "files") >= 80, "{summary}");
    assert!(count(summary, "equal") >= 200, "{summary}");
    log
}
