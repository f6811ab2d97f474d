//! The systemd unit of docs/deploy: systemd-analyze accepts it, and its commands, run as
//! systemd runs them (ExecStartPre, then ExecStart with NOTIFY_SOCKET and the environment
//! file), mount a prefix of a local S3 server, say READY=1, come back after the daemon is
//! killed (Restart=on-failure on a mount left behind), and stop cleanly on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::servers::S3Server;
use common::{is_mounted, run_py, TempDir};

const UNIT: &str = "docs/deploy/arrfs-run7.service";

/// The unit with its machine paths pointed into the test's directory.
fn localized_unit(tmp: &TempDir, env_file: &Path) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(UNIT)).unwrap();
    text.replace("/usr/local/bin/arrfs", env!("CARGO_BIN_EXE_arrfs"))
        .replace("s3://bucket/run7/", "s3://data/run7/")
        .replace("/mnt/run7", tmp.join("mnt").to_str().unwrap())
        .replace("/var/cache/arrfs", tmp.join("cache").to_str().unwrap())
        .replace("/etc/arrfs/run7.env", env_file.to_str().unwrap())
}

/// The values of `key=` lines of the [Service] section, in order.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// Runs one Exec line as systemd does: a leading `-` means its failure is ignored.
fn run_line(line: &str, env: &[(String, String)]) {
    let (ignore_failure, line) = match line.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    let status = Command::new(words[0])
        .args(&words[1..])
        .envs(env.iter().cloned())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ignore_failure || status.success(), "{line}: {status}");
}

/// Starts ExecStart with NOTIFY_SOCKET and waits for READY=1.
fn start(unit: &str, env: &[(String, String)], notify: &UnixDatagram, socket: &Path) -> Child {
    for line in values(unit, "ExecStartPre") {
        run_line(line, env);
    }
    let words: Vec<&str> = values(unit, "ExecStart")[0].split_whitespace().collect();
    let child = Command::new(words[0])
        .args(&words[1..])
        .envs(env.iter().cloned())
        .env("NOTIFY_SOCKET", socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .expect("READY=1 within the time limit");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    child
}

#[test]
fn the_systemd_unit_mounts_restarts_and_stops() {
    let tmp = TempDir::new("deploy");
    let server = S3Server::start();
    let file = tmp.join("x.npz");
    run_py("npz_cases.py", &["write-small", file.to_str().unwrap()]);
    server.upload("data", &[("run7/x.npz", file.as_path())]);
    let env_file = tmp.join("run7.env");
    let env: Vec<(String, String)> = server
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&env_file, lines.concat()).unwrap();
    let unit = localized_unit(&tmp, &env_file);
    let unit_path = tmp.join("arrfs-run7.service");
    std::fs::write(&unit_path, &unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze is installed (scripts/setup)");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(values(&unit, "Type"), ["notify"]);
    assert_eq!(values(&unit, "Restart"), ["on-failure"]);
    assert_eq!(values(&unit, "EnvironmentFile").len(), 1);

    let socket = tmp.join("notify.sock");
    let notify = UnixDatagram::bind(&socket).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mnt = tmp.join("mnt");
    let mut daemon = start(&unit, &env, &notify, &socket);
    assert!(mnt.join("x.npz/x.npy").exists());

    // A crash: the mount is left behind, and systemd runs the unit's commands again.
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(
        is_mounted(&mnt),
        "a killed daemon leaves its mount (the case to handle)"
    );
    let mut daemon = start(&unit, &env, &notify, &socket);
    assert!(mnt.join("x.npz/x.npy").exists());

    // systemctl stop: SIGTERM.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&mnt));
}
