//! Datasets under every codec arrfs decodes (zstd, lz4, bitshuffle, bzip2, blosc with each
//! inner compressor and shuffle, blosc2 and its b2nd frames, szip, n-bit, scale-offset),
//! written by h5py + hdf5plugin: every virtual file equals np.save of h5py's reading, through
//! the direct chunk path and through libhdf5 with arrfs's registered decoders (the daemon
//! never sees hdf5plugin).

mod common;

use std::ffi::OsStr;

use common::{run_py, Mount, TempDir};

/// The daemon must decode without any HDF5 plugin: point the plugin path at nothing.
fn no_plugins(dir: &TempDir) -> String {
    let empty = dir.join("no-plugins");
    std::fs::create_dir_all(&empty).unwrap();
    empty.to_string_lossy().into_owned()
}

fn check_codecs(name: &str, fallback: bool) -> String {
    check_codecs_with(name, fallback, &[])
}

fn check_codecs_with(name: &str, fallback: bool, extra_env: &[(&str, &str)]) -> String {
    let dir = TempDir::new(name);
    let fixture = dir.join("codecs.h5");
    run_py(
        "codec_cases.py",
        &[OsStr::new("write"), fixture.as_os_str()],
    );
    let plugins = no_plugins(&dir);
    let mut env = vec![("HDF5_PLUGIN_PATH", plugins.as_str())];
    if fallback {
        env.push(("ARRFS_HDF5_FALLBACK", "1"));
    }
    env.extend_from_slice(extra_env);
    let mount = Mount::with_env(&fixture, &[], &env);
    let out = run_py(
        "codec_cases.py",
        &[
            OsStr::new("check"),
            fixture.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    assert!(out.contains("files checked"), "{out}");
    mount.stop()
}

#[test]
fn every_codec_reads_like_h5py_through_the_direct_path() {
    let log = check_codecs("codecs-direct", false);
    // Only the n-bit float of reduced precision needs libhdf5 (to convert it).
    let fell_back: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("chunks read through libhdf5"))
        .collect();
    assert_eq!(fell_back.len(), 1, "{fell_back:#?}");
    assert!(fell_back[0].contains("/nbit/float32_p20"), "{fell_back:#?}");
}

#[test]
fn every_codec_reads_like_h5py_through_libhdf5_without_plugins() {
    let log = check_codecs("codecs-libhdf5", true);
    assert!(log.contains("ARRFS_HDF5_FALLBACK is set"), "{log}");
}

#[test]
fn every_codec_reads_like_h5py_through_libhdf5_and_the_hdf5_driver() {
    let log = check_codecs_with("codecs-libhdf5-vfd", true, &[("ARRFS_HDF5_VFD", "1")]);
    assert!(log.contains("ARRFS_HDF5_FALLBACK is set"), "{log}");
    assert!(log.contains("ARRFS_HDF5_VFD is set: "), "{log}");
}

fn check_damaged(name: &str, fallback: bool) -> String {
    let dir = TempDir::new(name);
    let fixture = dir.join("damaged.h5");
    run_py(
        "codec_cases.py",
        &[OsStr::new("corrupt"), fixture.as_os_str()],
    );
    let plugins = no_plugins(&dir);
    let mut env = vec![("HDF5_PLUGIN_PATH", plugins.as_str())];
    if fallback {
        env.push(("ARRFS_HDF5_FALLBACK", "1"));
    }
    let mount = Mount::with_env(&fixture, &[], &env);
    run_py(
        "codec_cases.py",
        &[
            OsStr::new("check_corrupt"),
            fixture.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    mount.stop()
}

#[test]
fn a_damaged_chunk_is_eio_with_a_log_line_naming_it() {
    let log = check_damaged("codecs-damaged", false);
    for (dataset, codec) in [
        ("/flipped_zstd", "zstd"),
        ("/cut_zstd", "zstd"),
        ("/flipped_blosc", "blosc"),
        ("/cut_bshuf_lz4", "bitshuffle"),
        ("/cut_lz4", "lz4"),
        ("/flipped_blosc2", "blosc2"),
        ("/cut_blosc2", "blosc2"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains("ERROR") && l.contains(dataset))
            .unwrap_or_else(|| panic!("no error logged for {dataset}:\n{log}"));
        for part in ["damaged.h5", "chunk at [16, 0]", &format!("{codec} filter")] {
            assert!(line.contains(part), "{part:?} not in {line}");
        }
    }
}

#[test]
fn a_damaged_chunk_is_eio_through_libhdf5_too() {
    let log = check_damaged("codecs-damaged-libhdf5", true);
    assert!(log.contains("zstd filter"), "{log}");
}
