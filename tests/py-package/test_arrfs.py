"""The installed wheel: the `arrfs` binary on PATH and the `arrfs` package, checked against
h5py (the library that wrote the data). Mounts are real (FUSE); FUSE missing fails loudly."""
import importlib.metadata
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import arrfs
from conftest import datasets


def npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def h5py_arrays(path):
    with h5py.File(path, "r") as f:
        return {name: np.asarray(f[name][()]) for name in datasets()}


def is_mounted(path):
    return os.path.ismount(path)


def test_binary_on_the_venv_path():
    venv_bin = Path(sys.executable).parent
    found = shutil.which("arrfs", path=os.environ["PATH"])
    assert found is not None and Path(found).parent == venv_bin, found
    out = subprocess.run(["arrfs", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"arrfs {importlib.metadata.version('arrfs')}"


def test_package_runs_the_wheels_binary_with_its_own_libsz():
    binary = Path(arrfs.binary())
    site = Path(arrfs.__file__).resolve().parent.parent
    assert binary == site / "arrfs.scripts" / "arrfs", binary
    # The wheel carries libaec's libsz (szip): the binary must load that copy.
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libsz = next(line for line in ldd.splitlines() if "libsz" in line)
    loaded = libsz.split("=>")[1].split("(")[0].strip()
    assert Path(os.path.normpath(loaded)).parent == site / "arrfs.libs", ldd


def test_package_is_typed():
    assert (Path(arrfs.__file__).parent / "py.typed").is_file()


def test_mount_serves_what_h5py_reads(h5file):
    expected = h5py_arrays(h5file)
    with arrfs.mount(h5file) as root:
        assert isinstance(root, Path) and is_mounted(root)
        for name, a in expected.items():
            file = root / f"{name}.npy"
            assert file.read_bytes() == npy_bytes(a), name
            got = np.load(file, mmap_mode="r")
            assert got.dtype == a.dtype and np.array_equal(got, a), name
            del got
    assert not is_mounted(root)
    assert not root.exists(), "the temporary mountpoint was not removed"


def test_mount_options_as_keywords(h5file, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with arrfs.mount(h5file, mnt, cache_size="64M", attrs_json=True, fsname="pytest") as root:
        assert root == mnt and is_mounted(mnt)
        attrs = json.loads((root / "x.attrs.json").read_text())
        with h5py.File(h5file, "r") as f:
            assert attrs["units"] == f["x"].attrs["units"]
            assert attrs["scale"] == f["x"].attrs["scale"]
        with open("/proc/self/mounts") as mounts:
            line = next(l for l in mounts if l.split()[1] == str(mnt))
        assert line.split()[0] == "pytest", line
    assert not is_mounted(mnt) and mnt.is_dir(), "a given mountpoint is kept, unmounted"


def test_unmounted_on_exception(h5file):
    with pytest.raises(ValueError):
        with arrfs.mount(h5file) as root:
            assert is_mounted(root)
            raise ValueError("boom")
    assert not is_mounted(root) and not root.exists()


def test_unmounted_on_keyboard_interrupt(h5file):
    with pytest.raises(KeyboardInterrupt):
        with arrfs.mount(h5file) as root:
            raise KeyboardInterrupt
    assert not is_mounted(root) and not root.exists()


def test_unmounted_on_ctrl_c_in_another_process(h5file):
    code = (
        "import arrfs, sys, time\n"
        "with arrfs.mount(sys.argv[1]) as root:\n"
        "    print(root, flush=True)\n"
        "    time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(h5file)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = Path(child.stdout.readline().strip())
    assert is_mounted(root), child.stderr.read() if child.poll() is not None else root
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert "KeyboardInterrupt" in err, err
    assert not is_mounted(root) and not root.exists()


def test_open_memory_map_does_not_keep_the_mount(h5file):
    with arrfs.mount(h5file) as root:
        kept = np.load(root / "x.npy", mmap_mode="r")
    assert not is_mounted(root), "detached lazily while a map was open"
    assert np.array_equal(kept, h5py_arrays(h5file)["x"])


def test_ls_lists_what_h5py_has(h5file):
    entries = {e["path"]: e for e in arrfs.ls(h5file)}
    for name, a in h5py_arrays(h5file).items():
        entry = entries[f"{name}.npy"]
        assert entry["kind"] == "file"
        assert entry["dtype"] == np.lib.format.dtype_to_descr(a.dtype)
        assert entry["shape"] == list(a.shape)
        assert entry["size"] == len(npy_bytes(a))
    assert entries["grp/sub/gz.npy"]["chunks"] == [16, 11]
    assert entries["grp/sub/gz.npy"]["filters"] == ["shuffle", "deflate(4)"]
    top = arrfs.ls(h5file, recursive=False)
    assert {e["path"] for e in top} == {"x.npy", "grp", "flags.npy", "scalar.npy"}
    sub = arrfs.ls(h5file, "grp/sub")
    assert [e["path"] for e in sub] == ["grp/sub/gz.npy"]


def arrfs_mounts_of(source):
    with open("/proc/self/mounts") as f:
        return [l for l in f if l.split()[0] == str(source)]


@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_load_through_a_mount(h5file, mmap_mode):
    assert arrfs.fuse_available(), "FUSE is needed for this test (/dev/fuse, fusermount3)"
    for name, a in h5py_arrays(h5file).items():
        got = arrfs.load(h5file, f"{name}.npy", mmap_mode=mmap_mode, fuse=True)
        assert got.dtype == a.dtype and np.array_equal(got, a), name
        if mmap_mode:
            assert isinstance(got, np.memmap)
        del got
    assert len(arrfs_mounts_of(h5file.resolve())) == 1, "one cached mount for all loads"
    arrfs.unmount_all()
    assert not arrfs_mounts_of(h5file.resolve())


@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_load_through_cat_without_fuse(h5file, monkeypatch, mmap_mode):
    monkeypatch.setenv(arrfs.NO_FUSE_ENV, "1")
    assert not arrfs.fuse_available()
    for name, a in h5py_arrays(h5file).items():
        got = arrfs.load(h5file, f"{name}.npy", mmap_mode=mmap_mode)
        assert got.dtype == a.dtype and np.array_equal(got, a), name
    assert not arrfs_mounts_of(h5file.resolve()), "ARRFS_NO_FUSE=1 must not mount"


def test_load_falls_back_to_cat_when_mounting_fails(h5file, monkeypatch):
    # What a container without FUSE permission looks like to load(): the mount fails.
    def refused(*args, **kwargs):
        raise arrfs.ArrfsError("cannot mount: Operation not permitted")

    monkeypatch.setattr(arrfs, "mount", refused)
    monkeypatch.setattr(arrfs, "fuse_available", lambda: True)
    monkeypatch.setattr(arrfs, "_fuse_failed", False)
    a = h5py_arrays(h5file)["grp/ints"]
    got = arrfs.load(h5file, "grp/ints.npy")
    assert got.dtype == a.dtype and np.array_equal(got, a)


def one_line(error):
    text = str(error)
    assert text and "\n" not in text, repr(text)
    assert not text.startswith("arrfs: error:"), text
    return text


def test_missing_source_raises(tmp_path):
    missing = tmp_path / "nope.h5"
    for call in (lambda: arrfs.ls(missing),
                 lambda: arrfs.load(missing, "x.npy", fuse=False),
                 lambda: arrfs.load(missing, "x.npy")):
        with pytest.raises(arrfs.ArrfsError) as caught:
            call()
        text = one_line(caught.value)
        assert "nope.h5" in text and "No such file" in text, text
        assert caught.value.returncode == 1
    with pytest.raises(arrfs.ArrfsError) as caught:
        with arrfs.mount(missing):
            pass
    assert "nope.h5" in one_line(caught.value)


def test_corrupt_file_raises(corrupt_h5, tmp_path, monkeypatch):
    with pytest.raises(arrfs.ArrfsError) as caught:
        arrfs.ls(corrupt_h5)
    assert "corrupt.h5" in one_line(caught.value)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with pytest.raises(arrfs.ArrfsError) as caught:
        with arrfs.mount(corrupt_h5):
            pass
    assert "corrupt.h5" in one_line(caught.value)
    assert not list(temp.iterdir()), "the temporary mountpoint of a failed mount was left"


def test_missing_path_inside_the_source_raises(h5file):
    with pytest.raises(arrfs.ArrfsError) as caught:
        arrfs.load(h5file, "no/such.npy", fuse=False)
    assert "no/such.npy" in one_line(caught.value)
    with pytest.raises(arrfs.ArrfsError) as caught:
        arrfs.ls(h5file, "no/such")
    assert "no/such" in one_line(caught.value)


def test_show_from_the_venv(h5file):
    out = subprocess.run(["arrfs", "show", str(h5file), "x.npy"],
                         capture_output=True, text=True, check=True).stdout
    assert out.rstrip("\n").endswith(repr(h5py_arrays(h5file)["x"])), out


@pytest.fixture
def http_h5(h5file):
    """h5file served by the harness's Range HTTP server (tests/py/range_server.py, stdlib
    only) on 127.0.0.1; yields its URL."""
    from conftest import REPO
    server = subprocess.Popen([sys.executable, str(REPO / "tests/py/range_server.py"), str(h5file.parent)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(server.stdout.readline())["port"]
        yield f"http://127.0.0.1:{port}/{h5file.name}"
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def test_urls_are_passed_on_to_the_binary(http_h5, h5file):
    assert arrfs.fuse_available(), "FUSE is needed for this test (/dev/fuse, fusermount3)"
    want = h5py_arrays(h5file)
    listed = {e["path"] for e in arrfs.ls(http_h5)}
    assert {f"{name}.npy" for name in want} <= listed, listed
    with arrfs.mount(http_h5) as mnt:
        for name, a in want.items():
            assert (mnt / f"{name}.npy").read_bytes() == npy_bytes(a), name
    for name, a in want.items():
        got = arrfs.load(http_h5, f"{name}.npy", fuse=True)
        assert got.dtype == a.dtype and np.array_equal(got, a), name
    arrfs.unmount_all()
