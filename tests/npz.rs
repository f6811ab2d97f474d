//! Mounts NPZ / zip archives, `.npy` and `.npy.gz` files and directories of containers written
//! by numpy, Python's zipfile and gzip, and h5py, and compares every virtual file with what
//! those libraries read. Bad input: truncated archives, corrupt members, a zip bomb, corrupt
//! containers inside a directory.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{run_py, vm_hwm_kib, Mount, TempDir};

/// Writes the good fixtures into a fresh directory.
fn good_fixtures(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    run_py(
        "npz_cases.py",
        &[OsStr::new("write"), dir.path().as_os_str()],
    );
    dir
}

/// Mounts `source` and runs the Python check of its whole tree.
fn mount_and_check(source: &Path) {
    let mount = Mount::new(source, &[]);
    let out = run_py(
        "npz_cases.py",
        &[
            OsStr::new("check"),
            source.as_os_str(),
            mount.point.as_os_str(),
        ],
    );
    assert!(out.contains("files checked"), "{out}");
    mount.stop();
}

#[test]
fn npz_from_savez_equals_zipfile_and_np_load() {
    let dir = good_fixtures("npz-plain");
    mount_and_check(&dir.join("plain.npz"));
}

#[test]
fn npz_from_savez_compressed_equals_zipfile_and_np_load() {
    let dir = good_fixtures("npz-compressed");
    mount_and_check(&dir.join("compressed.npz"));
}

#[test]
fn zip64_nested_raw_and_magic_only_members() {
    let dir = good_fixtures("npz-zip64");
    mount_and_check(&dir.join("zip64.zip"));
}

#[test]
fn single_npy_and_gzip_wrapped_npy() {
    let dir = good_fixtures("npz-single");
    mount_and_check(&dir.join("single.npy"));
    mount_and_check(&dir.join("wrapped.npy.gz"));
}

#[test]
fn directory_mirrors_its_containers() {
    let dir = good_fixtures("npz-tree");
    mount_and_check(&dir.join("tree"));
}

fn bad_fixtures(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    run_py(
        "npz_cases.py",
        &[OsStr::new("write-bad"), dir.path().as_os_str()],
    );
    dir
}

/// The mount of `source` fails with one line naming it (see `common::assert_mount_fails`).
fn assert_mount_fails(source: &Path, point: &Path) -> String {
    std::fs::create_dir_all(point).unwrap();
    let name = source.display().to_string();
    common::assert_mount_fails(source, point, &["-f"], &name)
}

#[test]
fn truncated_zip_fails_at_mount_with_one_line() {
    let dir = bad_fixtures("npz-truncated");
    for name in ["cut_member.npz", "cut_directory.npz"] {
        let stderr = assert_mount_fails(&dir.join(name), &dir.join("mnt"));
        assert!(stderr.starts_with("arrfs: error: "), "{stderr}");
    }
}

#[test]
fn flipped_stored_byte_fails_np_load_of_that_member_only() {
    let dir = bad_fixtures("npz-flipped-stored");
    let mount = Mount::new(&dir.join("flipped_stored.npz"), &[]);
    let out = run_py(
        "npz_cases.py",
        &[OsStr::new("check-flipped-stored"), mount.point.as_os_str()],
    );
    assert!(out.contains("flipped stored member fails"), "{out}");
    let log = mount.stop();
    assert!(log.contains("CRC-32 mismatch"), "{log}");
}

#[test]
fn verify_open_refuses_a_corrupt_member_from_its_first_read() {
    let dir = bad_fixtures("npz-verify-open");
    for archive in ["flipped_stored.npz", "flipped.npz"] {
        let mount = Mount::new(&dir.join(archive), &["-o", "verify=open"]);
        let out = run_py(
            "npz_cases.py",
            &[OsStr::new("check-verify-open"), mount.point.as_os_str()],
        );
        assert!(
            out.contains("refused from its first read"),
            "{archive}: {out}"
        );
        mount.stop();
    }
}

#[test]
fn flipped_deflate_byte_fails_that_member_only() {
    let dir = bad_fixtures("npz-flipped");
    let mount = Mount::new(&dir.join("flipped.npz"), &[]);
    let out = run_py(
        "npz_cases.py",
        &[OsStr::new("check-flipped"), mount.point.as_os_str()],
    );
    assert!(out.contains("flipped member fails"), "{out}");
    let log = mount.stop();
    assert!(
        log.contains("member a.npy"),
        "the log names the member:\n{log}"
    );
}

#[test]
fn corrupt_containers_in_a_directory_list_empty_and_the_rest_reads() {
    let dir = bad_fixtures("npz-broken-tree");
    let mount = Mount::new(&dir.join("broken_tree"), &[]);
    let out = run_py(
        "npz_cases.py",
        &[OsStr::new("check-broken-tree"), mount.point.as_os_str()],
    );
    assert!(out.contains("broken containers list empty"), "{out}");
    let log = mount.stop();
    assert!(
        log.contains("bad.npz"),
        "the log names the bad container:\n{log}"
    );
}

#[test]
fn zip_bomb_read_through_keeps_memory_bounded() {
    let dir = TempDir::new("npz-bomb");
    let bomb = dir.join("bomb.zip");
    run_py(
        "npz_cases.py",
        &[OsStr::new("write-bomb"), bomb.as_os_str()],
    );
    assert!(std::fs::metadata(&bomb).unwrap().len() < 2 << 20);
    let mount = Mount::new(&bomb, &["--cache-size", "16M"]);
    let file = mount.path("zeros.bin");
    let out = run_py(
        "npz_cases.py",
        &[OsStr::new("read-through"), file.as_os_str()],
    );
    assert!(out.contains("1073741824 bytes read"), "{out}");
    let peak = vm_hwm_kib(mount.pid());
    assert!(
        peak < 40 << 10,
        "arrfs peak RSS {peak} KiB after inflating 1 GiB"
    );
    mount.stop();
}

/// Open file descriptors of a process.
/// Descriptors of process `pid` open on files under `dir` (other descriptors, such as
/// FUSE's cloned device fds, come and go on their own).
fn open_fds(pid: u32, dir: &Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

#[test]
fn many_containers_mount_fast_and_open_lazily() {
    let dir = TempDir::new("npz-many");
    let one = dir.join("one.npz");
    run_py(
        "npz_cases.py",
        &[OsStr::new("write-small"), one.as_os_str()],
    );
    let many = dir.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..10_000 {
        std::fs::hard_link(&one, many.join(format!("c{i:05}.npz"))).unwrap();
    }
    let started = Instant::now();
    let mount = Mount::new(&many, &[]);
    let mounted = started.elapsed();
    let before = open_fds(mount.pid(), &many);
    assert_eq!(std::fs::read_dir(&mount.point).unwrap().count(), 10_000);
    let after_ls = open_fds(mount.pid(), &many);
    assert!(
        after_ls == 0 && before == 0,
        "ls of the root opened containers: {before} -> {after_ls} fds"
    );
    for i in 0..40 {
        let x = mount.path(&format!("c{i:05}.npz/x.npy"));
        assert_eq!(std::fs::read(&x).unwrap().len(), 128 + 8 * 10);
    }
    let after_reads = open_fds(mount.pid(), &many);
    assert!(
        after_reads <= 16,
        "open containers are capped: {after_reads} fds"
    );
    mount.stop();
    assert!(mounted < Duration::from_secs(2), "mount took {mounted:?}");
}

/// Bytes the process has read so far (`rchar` of /proc/PID/io: files and /dev/fuse alike).
fn bytes_read_by(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let line = io.lines().find(|l| l.starts_with("rchar:")).unwrap();
    line["rchar:".len()..].trim().parse().unwrap()
}

/// What the daemon of `mount` reads while `big.npy` is read in full through it.
fn daemon_bytes_reading_big_npy(mount: &Mount) -> u64 {
    let before = bytes_read_by(mount.pid());
    let bytes = std::fs::read(mount.path("big.npy")).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY"));
    bytes_read_by(mount.pid()) - before
}

/// With `-o passthrough` the kernel reads plain `.npy` files from the source files
/// themselves (FUSE passthrough): every file of the tree still equals what numpy and the
/// other libraries read (the others through arrfs, with their opens answered), and
/// reading the 9.6 MB `big.npy` makes the daemon read almost nothing, where without the
/// option it reads all of it. Fails loudly on a kernel without passthrough.
#[test]
fn passthrough_serves_plain_npy_files_from_the_kernel() {
    let dir = good_fixtures("npz-passthrough");
    let tree = dir.join("tree");
    let size = std::fs::metadata(tree.join("big.npy")).unwrap().len();
    let mount = Mount::new(&tree, &["-o", "passthrough"]);
    let args = [
        OsStr::new("check"),
        tree.as_os_str(),
        mount.point.as_os_str(),
    ];
    let out = run_py("npz_cases.py", &args);
    assert!(out.contains("files checked"), "{out}");
    let by_kernel = daemon_bytes_reading_big_npy(&mount);
    let log = mount.stop();
    for refusal in ["passthrough refused", "does not offer FUSE passthrough"] {
        assert!(!log.contains(refusal), "{log}");
    }
    let plain = Mount::new(&tree, &[]);
    let through_arrfs = daemon_bytes_reading_big_npy(&plain);
    plain.stop();
    assert!(through_arrfs >= size, "{through_arrfs} < {size}");
    assert!(
        by_kernel < size / 10,
        "daemon read {by_kernel} of {size} bytes"
    );
}
