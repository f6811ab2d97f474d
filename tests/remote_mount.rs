//! Remote mounts for real: fixtures of every format uploaded with boto3 to a moto S3 server
//! on 127.0.0.1 (or served by a Range HTTP server), mounted through FUSE, and compared file
//! by file with the local mount of the same files (itself checked against the libraries
//! that wrote them by the other suites). Faults at mount and at read time, and the disk
//! cache, are checked here too; the transport alone is tested in `remote_io.rs`.

mod common;

use std::path::{Path, PathBuf};

use common::servers::{Proxy, RangeServer, S3Server};
use common::{assert_mount_fails_with_env, every_format, files_under, run_py, Mount, TempDir};

fn upload_dir(server: &S3Server, bucket: &str, dir: &Path, prefix: &str) {
    let files: Vec<(String, PathBuf)> = files_under(dir)
        .into_iter()
        .map(|(rel, path)| (format!("{prefix}{rel}"), path))
        .collect();
    let pairs: Vec<(&str, &Path)> = files
        .iter()
        .map(|(k, p)| (k.as_str(), p.as_path()))
        .collect();
    server.upload(bucket, &pairs);
}

fn env_of(server: &S3Server) -> Vec<(&'static str, String)> {
    server.env()
}

fn mount_remote(url: &str, extra: &[&str], env: &[(&'static str, String)]) -> Mount {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Mount::with_env(Path::new(url), extra, &env)
}

fn compare(local: &Mount, remote: &Mount) {
    let out = run_py(
        "remote_cases.py",
        &[
            "compare",
            local.point.to_str().unwrap(),
            remote.point.to_str().unwrap(),
        ],
    );
    assert!(out.starts_with("ok "), "{out}");
}

#[test]
fn a_prefix_mounts_as_the_directory_it_was_uploaded_from() {
    let tmp = TempDir::new("remote-mount-prefix");
    let dir = every_format(&tmp);
    let server = S3Server::start();
    upload_dir(&server, "data", &dir, "run7/");
    let local = Mount::new(&dir, &[]);
    let remote = mount_remote("s3://data/run7/", &[], &env_of(&server));
    compare(&local, &remote);
    let log = remote.stop();
    assert!(
        !log.contains(&server.env()[1].1),
        "the secret reached the log"
    );
}

#[test]
fn single_objects_mount_as_their_local_files_do() {
    let tmp = TempDir::new("remote-mount-single");
    let dir = every_format(&tmp);
    let server = S3Server::start();
    upload_dir(&server, "data", &dir, "");
    for rel in [
        "hdf5/cases.h5",
        "npz/plain.npz",
        "safetensors/model.safetensors",
    ] {
        let local_file = dir.join(rel);
        if !local_file.exists() {
            panic!("fixture {rel} missing: fixture scripts changed?");
        }
        let local = Mount::new(&local_file, &[]);
        let remote = mount_remote(&format!("s3://data/{rel}"), &[], &env_of(&server));
        compare(&local, &remote);
    }
}

#[test]
fn an_https_style_url_mounts_through_range_requests() {
    let tmp = TempDir::new("remote-mount-http");
    let dir = every_format(&tmp);
    let served = dir.join("safetensors");
    let server = RangeServer::start(&served);
    let name = "model.safetensors";
    let local = Mount::new(&served.join(name), &[]);
    let remote = mount_remote(&server.url(name), &[], &[]);
    compare(&local, &remote);
}

#[test]
fn bad_urls_and_credentials_fail_the_mount_with_one_line() {
    let tmp = TempDir::new("remote-mount-bad");
    let file = tmp.join("x.npz");
    run_py("npz_cases.py", &["write-small", file.to_str().unwrap()]);
    let server = S3Server::start_with_auth();
    server.upload("data", &[("x.npz", file.as_path())]);
    let mnt = tmp.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let env = env_of(&server);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let fails = |url: &str, env: &[(&str, &str)], needle: &str| {
        assert_mount_fails_with_env(Path::new(url), &mnt, &[], env, needle)
    };
    fails("s3://nobucket/x.npz", &env, "s3://nobucket/x.npz");
    fails("s3://data/missing.npz", &env, "s3://data/missing.npz");
    let wrong: Vec<(&str, &str)> = env
        .iter()
        .map(|&(k, v)| match k {
            "AWS_SECRET_ACCESS_KEY" => (k, "not-the-secret"),
            _ => (k, v),
        })
        .collect();
    let line = fails("s3://data/x.npz", &wrong, "s3://data/x.npz");
    assert!(!line.contains("not-the-secret"), "{line}");
    let unreachable: Vec<(&str, &str)> = env
        .iter()
        .map(|&(k, v)| match k {
            "AWS_ENDPOINT_URL" => (k, "http://no-such-host.invalid:9"),
            _ => (k, v),
        })
        .collect();
    fails("s3://data/x.npz", &unreachable, "s3://data/x.npz");
}

/// A store behind the fault proxy, with an npz of 8 MiB uploaded as `x.npz`: mounting reads
/// its ends only, so reading `x.npy` needs the store.
fn store_behind_proxy(tmp: &TempDir) -> (S3Server, Proxy, Vec<(&'static str, String)>) {
    let file = tmp.join("x.npz");
    run_py(
        "remote_cases.py",
        &["write-sized", file.to_str().unwrap(), "8"],
    );
    let server = S3Server::start();
    server.upload("data", &[("x.npz", file.as_path())]);
    let proxy = Proxy::start(server.port);
    let mut env = env_of(&server);
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", proxy.endpoint()));
    (server, proxy, env)
}

fn read_whole(path: &Path) -> String {
    run_py("remote_cases.py", &["read", path.to_str().unwrap()])
        .trim()
        .to_string()
}

#[test]
fn reads_fail_while_the_store_is_down_and_recover_when_it_is_back() {
    let tmp = TempDir::new("remote-mount-down");
    let (_server, proxy, env) = store_behind_proxy(&tmp);
    let remote = mount_remote("s3://data/x.npz", &["-o", "timeout=3"], &env);
    let x = remote.path("x.npy");
    for mode in ["drop", "error"] {
        proxy.set_mode(mode);
        assert_eq!(read_whole(&x), "EIO", "read while the proxy does {mode}");
    }
    proxy.set_mode("ok");
    assert!(read_whole(&x).starts_with("ok "), "no recovery");
    let log = remote.stop();
    assert!(
        log.contains("s3://data/x.npz"),
        "no log line names the object:\n{log}"
    );
}

#[test]
fn a_stalled_store_gives_eio_within_the_time_limit() {
    let tmp = TempDir::new("remote-mount-stall");
    let (_server, proxy, env) = store_behind_proxy(&tmp);
    let remote = mount_remote("s3://data/x.npz", &["-o", "timeout=2"], &env);
    proxy.set_mode("stall");
    assert_eq!(read_whole(&remote.path("x.npy")), "EIO");
    proxy.set_mode("ok");
}

#[test]
fn an_object_replaced_under_the_mount_fails_its_reads_and_says_remount() {
    let tmp = TempDir::new("remote-mount-replaced");
    let (server, _proxy, env) = store_behind_proxy(&tmp);
    let remote = mount_remote("s3://data/x.npz", &[], &env);
    let other = tmp.join("other.npz");
    run_py(
        "remote_cases.py",
        &["write-sized", other.to_str().unwrap(), "9"],
    );
    server.upload("data", &[("x.npz", other.as_path())]);
    assert_eq!(read_whole(&remote.path("x.npy")), "EIO");
    let log = remote.stop();
    assert!(log.contains("remount"), "{log}");
}

#[test]
fn a_second_mount_reads_cached_blocks_from_disk_not_from_the_store() {
    let tmp = TempDir::new("remote-mount-disk-cache");
    let dir = every_format(&tmp);
    let server = S3Server::start();
    upload_dir(&server, "data", &dir.join("hdf5"), "");
    let proxy = Proxy::start(server.port);
    let mut env = env_of(&server);
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", proxy.endpoint()));
    let cache = tmp.join("cache");
    let args = [
        "--cache-dir",
        cache.to_str().unwrap(),
        "-o",
        "no_hdf5_check",
    ];
    let local = Mount::new(&dir.join("hdf5/cases.h5"), &[]);
    let first = mount_remote("s3://data/cases.h5", &args, &env);
    compare(&local, &first);
    first.stop();
    assert!(proxy.stats().gets > 0, "the first mount fetched nothing");
    proxy.reset();
    let second = mount_remote("s3://data/cases.h5", &args, &env);
    compare(&local, &second);
    assert_eq!(proxy.stats().gets, 0, "{:?}", proxy.stats().ranges);
}

/// The HDF5 check runs for remote files too: its child connects to the store itself and walks
/// the file through arrfs's driver; a file that crashes libhdf5 is refused, the daemon lives.
#[test]
fn a_remote_hdf5_file_that_crashes_libhdf5_is_refused_at_mount() {
    let tmp = TempDir::new("remote-mount-crasher");
    let crasher =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hdf5/segv_on_open.h5");
    let server = S3Server::start();
    server.upload("data", &[("segv_on_open.h5", crasher.as_path())]);
    let mnt = tmp.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let env = env_of(&server);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = Path::new("s3://data/segv_on_open.h5");
    let line = assert_mount_fails_with_env(url, &mnt, &["-f"], &env, "s3://data/segv_on_open.h5");
    assert!(line.contains("libhdf5 crashed"), "{line}");
}
