//! arrfs's HDF5 driver (src/source/hdf5/vfd.rs), in this process, against libhdf5's own
//! sec2 driver: every HDF5 fixture of the suite (and the third-party corpus) opened both ways
//! gives the same tree, the same xattrs, the same reasons for what is left out and the same
//! bytes. The mount tests (hdf5_mount, hdf5_chunk_index, hdf5_codecs, corpus, bad_input,
//! hdf5_external) run their np.save-of-h5py checks through the driver too, with
//! `ARRFS_HDF5_VFD=1`: equal to sec2 here and to h5py there makes all three equal.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrfs::io::SourceFile;
use arrfs::source::hdf5::{signature_offset, Hdf5Access, Hdf5Source};
use arrfs::source::{EntryKind, Key, SkipReason, Skipped, Source, SourceOptions, ROOT};

use common::{run_py, TempDir};

fn open(path: &Path, access: Hdf5Access) -> arrfs::Result<Hdf5Source> {
    let source = Arc::new(SourceFile::open(&arrfs::io::Location::local(path))?);
    let name = std::path::absolute(path).unwrap();
    Hdf5Source::open_source(source, &name, access, &SourceOptions::default())
}

/// One line of what a mount shows: a directory, an entry, a skipped child, a file's header
/// or payload (with its bytes) or read error.
struct Line {
    text: String,
    payload: Option<Vec<u8>>,
}

fn line(text: String) -> Line {
    Line {
        text,
        payload: None,
    }
}

/// Everything a mount shows of `source`, in listing order.
fn tree(source: &Hdf5Source) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut dirs: Vec<(String, Key)> = vec![("".into(), ROOT)];
    let mut entered = std::collections::HashSet::new();
    while let Some((path, key)) = dirs.pop() {
        let listing = match source.list(key) {
            Ok(listing) => listing,
            Err(e) => {
                lines.push(line(format!("{path}/: list error {e}")));
                continue;
            }
        };
        lines.push(line(format!("{path}/: xattrs {:?}", listing.xattrs)));
        for skipped in &listing.skipped {
            let (name, why) = (&skipped.name, &skipped.why);
            lines.push(line(format!("{path}/{name}: skipped: {why}")));
        }
        for entry in listing.entries {
            let at = format!("{path}/{}", entry.name);
            lines.push(line(format!(
                "{at}: xattrs {:?} identity {:?} nlink {}",
                entry.xattrs, entry.identity, entry.nlink
            )));
            match entry.kind {
                EntryKind::Dir if entry.identity.is_none_or(|id| entered.insert(id)) => {
                    dirs.push((at, entry.key))
                }
                EntryKind::Dir => {}
                EntryKind::Array(header) => {
                    lines.push(line(format!("{at}: header {:?}", header.encode())));
                    let mut payload = vec![0u8; header.payload_len() as usize];
                    lines.push(match source.read(entry.key, 0, &mut payload) {
                        Ok(()) => Line {
                            text: format!("{at}: payload of {} bytes", payload.len()),
                            payload: Some(payload),
                        },
                        Err(e) => line(format!("{at}: read error {e}")),
                    });
                }
                other => lines.push(line(format!("{at}: {other:?}"))),
            }
        }
    }
    lines
}

/// The reason the driver gives for what needs another file (external links, external raw
/// data, virtual datasets' sources).
const NEEDS_A_PATH: &str = "read through arrfs's driver, not by a local path";

/// The objects the driver left out for want of a path: `/group/name`.
fn left_out_for_want_of_a_path(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.text.contains(NEEDS_A_PATH))
        .filter_map(|l| {
            l.text
                .split_once(": skipped: ")
                .map(|(at, _)| at.to_string())
        })
        .collect()
}

/// Whether `line` is about object `at` (`/group/name`) or something under it.
fn is_about(line: &Line, at: &str) -> bool {
    let Some(rest) = line.text.strip_prefix(at) else {
        return false;
    };
    rest.starts_with(':') || rest.starts_with(".npy:") || rest.starts_with('/')
}

/// Compares the two trees of `file`: equal, except what the driver leaves out for want of a
/// path. Returns the driver's tree.
fn assert_same_both_ways(file: &Path) -> Vec<Line> {
    let by_path = open(file, Hdf5Access::Path).expect("opens by path");
    let through_driver = open(file, Hdf5Access::Driver).expect("opens through the driver");
    let got = tree(&through_driver);
    let left_out = left_out_for_want_of_a_path(&got);
    let expected: Vec<Line> = tree(&by_path)
        .into_iter()
        .filter(|l| !left_out.iter().any(|at| is_about(l, at)))
        .collect();
    let got: Vec<Line> = got
        .into_iter()
        .filter(|l| !l.text.contains(NEEDS_A_PATH))
        .collect();
    for (want, have) in expected.iter().zip(&got) {
        assert_eq!(want.text, have.text, "{}", file.display());
        assert!(want.payload == have.payload, "{}: bytes differ", want.text);
    }
    assert_eq!(expected.len(), got.len(), "{}", file.display());
    if !left_out.is_empty() {
        println!(
            "{}: left out through the driver: {left_out:?}",
            file.display()
        );
    }
    let reads = through_driver
        .driver_reads()
        .expect("read through the driver");
    assert!(reads.calls() > 0, "{}: no driver reads", file.display());
    assert!(by_path.driver_reads().is_none());
    got
}

#[test]
fn suite_fixtures_read_the_same_through_the_driver_and_by_path() {
    let dir = TempDir::new("vfd-fixtures");
    let mut files: Vec<PathBuf> = Vec::new();
    for (script, command, name) in [
        ("hdf5_cases.py", "write", "cases.h5"),
        ("codec_cases.py", "write", "codecs.h5"),
        ("codec_cases.py", "corrupt", "damaged.h5"),
        ("corrupt_cases.py", "write", "corrupt.h5"),
    ] {
        let file = dir.join(name);
        run_py(script, &[OsStr::new(command), file.as_os_str()]);
        files.push(file);
    }
    run_py(
        "chunk_index_cases.py",
        &[OsStr::new("write"), dir.join("index.h5").as_os_str()],
    );
    for name in ["index.h5", "index_v110.h5", "index_v1.h5"] {
        files.push(dir.join(name));
    }
    let mut arrays = 0;
    for file in &files {
        let lines = assert_same_both_ways(file);
        arrays += lines.iter().filter(|l| l.payload.is_some()).count();
    }
    // hdf5_cases alone has more than 40 files: far fewer means nothing was compared.
    assert!(arrays > 150, "only {arrays} arrays compared");
}

#[test]
fn corpus_files_read_the_same_through_the_driver_and_by_path() {
    let dir = TempDir::new("vfd-corpus");
    let corpus = dir.join("corpus");
    run_py("corpus.py", &[OsStr::new("collect"), corpus.as_os_str()]);
    let mut hdf5_files = Vec::new();
    let mut pending = vec![corpus];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if signature_offset(
                &SourceFile::open(&arrfs::io::Location::local(&path)).unwrap(),
            )
            .unwrap()
            .is_some()
            {
                hdf5_files.push(path);
            }
        }
    }
    hdf5_files.sort();
    let mut opened = 0;
    for file in &hdf5_files {
        // Some corpus files are meant to fail (e.g. corrupt ones): both ways alike.
        match (open(file, Hdf5Access::Path), open(file, Hdf5Access::Driver)) {
            (Ok(_), Ok(_)) => {
                assert_same_both_ways(file);
                opened += 1;
            }
            (Err(by_path), Err(driver)) => {
                println!("{}: fails both ways: {by_path} / {driver}", file.display())
            }
            (by_path, driver) => panic!(
                "{}: by path {:?}, through the driver {:?}",
                file.display(),
                by_path.err(),
                driver.err()
            ),
        }
    }
    println!(
        "{opened} of {} corpus HDF5 files compared",
        hdf5_files.len()
    );
    // The packages ship about 50 today; far fewer means the corpus was not found.
    assert!(opened >= 40, "only {opened} corpus HDF5 files compared");
}

#[test]
fn external_links_and_raw_data_are_left_out_with_the_reason() {
    let dir = TempDir::new("vfd-external");
    run_py(
        "external_cases.py",
        &[OsStr::new("write"), dir.path().as_os_str()],
    );
    let source = open(&dir.join("root/a.h5"), Hdf5Access::Driver).unwrap();
    let listing = source.list(ROOT).unwrap();
    let names: Vec<&str> = listing.entries.iter().map(|e| e.name.as_str()).collect();
    assert!(names.is_empty(), "{names:?}");
    let mut skipped: Vec<&str> = listing.skipped.iter().map(|s| s.name.as_str()).collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "extraw",
            "extraw_outside",
            "extraw_two",
            "in_sub",
            "outside",
            "outside_abs",
            "sibling",
            "sibling_chunked",
            "sub_group"
        ]
    );
    for Skipped { name, why } in &listing.skipped {
        let SkipReason::Refused(why) = why else {
            panic!("{name}: {why:?} is not a refusal");
        };
        assert!(why.contains(NEEDS_A_PATH), "{name}: {why}");
    }
}

#[test]
fn a_truncated_file_fails_cleanly_through_the_driver() {
    let dir = TempDir::new("vfd-truncated");
    let whole = dir.join("whole.h5");
    run_py("hdf5_cases.py", &[OsStr::new("write"), whole.as_os_str()]);
    let bytes = std::fs::read(&whole).unwrap();
    for len in [0, 7, 100, 4096, bytes.len() / 2, bytes.len() - 1] {
        let cut = dir.join(&format!("cut{len}.h5"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let by_path = open(&cut, Hdf5Access::Path);
        let err = match open(&cut, Hdf5Access::Driver) {
            Ok(_) => panic!("{len} bytes: opened through the driver"),
            Err(e) => e.to_string(),
        };
        assert!(by_path.is_err(), "{len} bytes: opened by path");
        assert!(err.contains(&format!("cut{len}.h5")), "{err}");
        println!("{len} bytes: {err}");
    }
}

#[test]
fn reads_of_opening_and_listing_a_file_of_1000_datasets() {
    let dir = TempDir::new("vfd-many");
    let file = dir.join("many.h5");
    run_py(
        "scale_cases.py",
        &[OsStr::new("datasets"), OsStr::new("1000"), file.as_os_str()],
    );
    let source = open(&file, Hdf5Access::Driver).unwrap();
    let reads = source.driver_reads().unwrap();
    let at_open = (reads.calls(), reads.bytes());
    let mut pending = vec![ROOT];
    let mut datasets = 0;
    while let Some(dir) = pending.pop() {
        for entry in source.list(dir).unwrap().entries {
            match entry.kind {
                EntryKind::Dir => pending.push(entry.key),
                EntryKind::Array(_) => datasets += 1,
                _ => {}
            }
        }
    }
    assert_eq!(datasets, 1000);
    let size = std::fs::metadata(&file).unwrap().len();
    println!(
        "1000 datasets, file of {size} bytes: open {} reads / {} bytes; open + list all {} \
         reads / {} bytes",
        at_open.0,
        at_open.1,
        reads.calls(),
        reads.bytes()
    );
    assert!(reads.calls() > at_open.0);
}

#[test]
fn a_failed_read_under_libhdf5_is_an_error_not_a_crash() {
    let dir = TempDir::new("vfd-changed");
    let file = dir.join("many.h5");
    run_py(
        "scale_cases.py",
        &[OsStr::new("datasets"), OsStr::new("300"), file.as_os_str()],
    );
    let source = open(&file, Hdf5Access::Driver).unwrap();
    let groups = source.list(ROOT).unwrap().entries;
    assert_eq!(groups.len(), 3);
    // The file changes under the mount: `SourceFile::read_at` refuses, inside libhdf5.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&file, bytes).unwrap();
    let err = source.list(groups[2].key).unwrap_err().to_string();
    assert!(
        err.contains("many.h5") && err.contains("source changed"),
        "{err}"
    );
}

/// libhdf5 reads a virtual dataset's source that it cannot open as fill values: through the
/// driver, one with a source in another file is left out; one whose source is its own file
/// reads like h5py.
#[test]
fn virtual_datasets_read_through_the_driver_only_from_their_own_file() {
    let dir = TempDir::new("vfd-virtual");
    run_py(
        "external_cases.py",
        &[OsStr::new("write_vds"), dir.path().as_os_str()],
    );
    let source = open(&dir.join("vds.h5"), Hdf5Access::Driver).unwrap();
    let listing = source.list(ROOT).unwrap();
    let skipped: Vec<&str> = listing.skipped.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(skipped, ["other"]);
    let why = &listing.skipped[0].why;
    assert!(matches!(why, SkipReason::Refused(_)), "{listing:?}");
    assert!(why.to_string().contains(NEEDS_A_PATH), "{listing:?}");
    let own = listing
        .entries
        .iter()
        .find(|e| e.name == "self.npy")
        .unwrap();
    let EntryKind::Array(header) = &own.kind else {
        panic!("{own:?}")
    };
    let mut payload = vec![0u8; header.payload_len() as usize];
    source.read(own.key, 0, &mut payload).unwrap();
    assert_eq!(payload, std::fs::read(dir.join("self.bin")).unwrap());
}
