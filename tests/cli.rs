//! `arrfs ls`, `arrfs cat`, `--attrs-json`, completions, the man page and the background
//! daemon, tried as a user would and checked against h5py and numpy.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{arrfs, assert_success, is_mounted, python, run_py, Mount, TempDir};

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The h5py fixture of the mount tests, written into `dir`.
fn hdf5_cases(dir: &TempDir) -> std::path::PathBuf {
    let fixture = dir.join("cases.h5");
    run_py("hdf5_cases.py", &[os("write"), fixture.as_os_str()]);
    fixture
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("arrfs runs");
    assert_success(&format!("{cmd:?}"), &out);
    out
}

#[test]
fn ls_shows_h5py_dtypes_and_shapes() {
    let dir = TempDir::new("cli-ls");
    let fixture = hdf5_cases(&dir);
    let text = run(arrfs().args(["ls", "-R"]).arg(&fixture)).stdout;
    let json = run(arrfs().args(["ls", "-R", "--json"]).arg(&fixture)).stdout;
    std::fs::write(dir.join("ls.txt"), &text).unwrap();
    std::fs::write(dir.join("ls.json"), &json).unwrap();
    let args = [os("check_ls"), fixture.as_os_str()];
    let files = [dir.join("ls.txt"), dir.join("ls.json")];
    let out = run_py(
        "cli_cases.py",
        &[&args[..], &[files[0].as_os_str(), files[1].as_os_str()]].concat(),
    );
    assert!(out.contains("entries checked"), "{out}");
}

#[test]
fn ls_of_one_file_and_of_a_missing_path() {
    let dir = TempDir::new("cli-ls-one");
    let fixture = hdf5_cases(&dir);
    let out = run(arrfs().arg("ls").arg(&fixture).arg("gzip3d.npy")).stdout;
    let text = String::from_utf8(out).unwrap();
    let line = text.lines().nth(1).expect("a header and one line");
    for part in [
        "<f4",
        "(33, 17, 9)",
        "(8, 5, 4)",
        "shuffle,deflate(4)",
        "gzip3d.npy",
    ] {
        assert!(line.contains(part), "{part} missing in {line:?}");
    }
    let missing = arrfs()
        .arg("ls")
        .arg(&fixture)
        .arg("no/such")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such"));
}

#[test]
fn ls_reads_every_source_format() {
    let dir = TempDir::new("cli-formats");
    let code = "import numpy as np, pickle, sys; d = sys.argv[1]\n\
                np.savez_compressed(d + '/a.npz', x=np.arange(6.0).reshape(2, 3))\n\
                pickle.dump({'y': np.zeros(4, 'i2')}, open(d + '/b.pkl', 'wb'))\n\
                np.save(d + '/c.npy', np.ones((5,), '>u4'))";
    run(Command::new(python()).args(["-c", code]).arg(dir.path()));
    for (source, path, dtype, shape) in [
        ("a.npz", "x.npy", "<f8", vec![2, 3]),
        ("b.pkl", "y.npy", "<i2", vec![4]),
        ("c.npy", "c.npy", ">u4", vec![5]),
    ] {
        let out = run(arrfs().args(["ls", "--json"]).arg(dir.join(source))).stdout;
        let entries: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let entry = entries
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("{path} not in {entries}"));
        assert_eq!(entry["dtype"], dtype, "{source}");
        assert_eq!(entry["shape"], serde_json::json!(shape), "{source}");
    }
}

#[test]
fn cat_equals_the_mount_and_np_save_of_h5py() {
    let dir = TempDir::new("cli-cat");
    let fixture = hdf5_cases(&dir);
    let mount = Mount::new(&fixture, &[]);
    let binary = Path::new(env!("CARGO_BIN_EXE_arrfs"));
    let args = [
        os("check_cat"),
        fixture.as_os_str(),
        binary.as_os_str(),
        mount.point.as_os_str(),
    ];
    let out = run_py("cli_cases.py", &args);
    assert!(out.contains("files checked"), "{out}");
    mount.stop();
}

#[test]
fn cat_to_a_file_follows_symlinks_and_names_bad_paths() {
    let dir = TempDir::new("cli-cat-o");
    let fixture = hdf5_cases(&dir);
    let out = dir.join("out.npy");
    run(arrfs()
        .arg("cat")
        .arg(&fixture)
        .arg("links/soft.npy")
        .arg("--output")
        .arg(&out));
    let direct = run(arrfs().arg("cat").arg(&fixture).arg("numeric/le_f8.npy")).stdout;
    assert_eq!(std::fs::read(&out).unwrap(), direct);
    for (path, cause) in [("nope.npy", "No such file"), ("numeric", "Is a directory")] {
        let failed = arrfs().arg("cat").arg(&fixture).arg(path).output().unwrap();
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert_eq!(failed.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(path) && stderr.contains(cause), "{stderr}");
    }
}

#[test]
fn attrs_json_sidecars_equal_h5py_attrs() {
    let dir = TempDir::new("cli-attrs");
    let fixture = dir.join("attrs.h5");
    run_py("cli_cases.py", &[os("write_attrs"), fixture.as_os_str()]);
    let mount = Mount::new(&fixture, &["--attrs-json"]);
    let out = run_py(
        "cli_cases.py",
        &[
            os("check_attrs"),
            fixture.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    assert!(out.contains("4 sidecars checked"), "{out}");
    let catted = run(arrfs()
        .args(["cat", "--attrs-json"])
        .arg(&fixture)
        .arg("g/x.attrs.json"))
    .stdout;
    assert_eq!(catted, std::fs::read(mount.path("g/x.attrs.json")).unwrap());
    mount.stop();
}

#[test]
fn completions_man_page_and_help() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(arrfs().args(["completions", shell])).stdout;
        assert!(
            String::from_utf8_lossy(&out).contains("attrs-json"),
            "{shell}"
        );
    }
    let man = String::from_utf8(run(arrfs().arg("man")).stdout).unwrap();
    assert!(
        man.contains(".TH arrfs 1") && man.contains("attrs\\-json"),
        "{man}"
    );
    let help = String::from_utf8(run(arrfs().arg("--help")).stdout).unwrap();
    assert!(
        help.contains("Examples:") && help.contains("arrfs ls"),
        "{help}"
    );
}

/// Unmounts on drop, so a failing daemon test leaves no mount behind.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if is_mounted(self.0) {
            let _ = arrfs().arg("unmount").arg(self.0).status();
        }
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn background_mount_returns_when_ready_and_logs_to_its_file() {
    let dir = TempDir::new("cli-daemon");
    let fixture = hdf5_cases(&dir);
    let point = dir.join("mnt");
    std::fs::create_dir(&point).unwrap();
    let log = dir.join("daemon.log");
    let status = arrfs()
        .args(["-v", "--log-file"])
        .arg(&log)
        .arg(&fixture)
        .arg(&point)
        .env_remove("RUST_LOG")
        .status()
        .unwrap();
    let _guard = Unmount(&point);
    assert!(status.success(), "{status}");
    // Returned only once the mount answers: no waiting needed here.
    assert!(is_mounted(&point));
    assert_eq!(std::fs::read(point.join("scalar.npy")).unwrap().len(), 136);
    run(arrfs().arg("unmount").arg(&point));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the daemon's last log line", || {
        log_text().contains("unmounted")
    });
    assert!(log_text().contains("mounted"), "{}", log_text());
}

#[test]
fn background_mount_that_fails_reports_on_the_terminal_without_hanging() {
    let dir = TempDir::new("cli-daemon-fails");
    let source = dir.join("not-a-container.h5");
    std::fs::write(&source, b"garbage, not HDF5").unwrap();
    let point = dir.join("mnt");
    std::fs::create_dir(&point).unwrap();
    let mut child = arrfs()
        .arg(&source)
        .arg(&point)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    wait_for("arrfs to exit", || child.try_wait().unwrap().is_some());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not-a-container.h5") && stderr.contains("unknown format"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!is_mounted(&point));
}
