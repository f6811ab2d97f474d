"""Hostile names and sizes in containers (tests/hostile.rs).

    python hostile_cases.py write DIR     names.zip, links.h5, keys.pkl in DIR
    python hostile_cases.py check MOUNT   DIR mounted on MOUNT: nothing points outside the
                                          mount, names are escaped and short enough, arrays
                                          read back, a 10 MiB attribute fails cleanly
"""
import errno
import io
import os
import pickle
import sys
import zipfile

import h5py
import numpy as np

LONG = "L" * 4096
HUGE_ATTR = 10 << 20


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def array(i):
    return np.arange(i, i + 5, dtype="<i4")


ZIP_MEMBERS = ["../x.npy", "../../up.npy", "/etc/passwd", "a\x01b.npy", LONG + ".npy", "./dot.npy", ".."]
PICKLE_KEYS = ["../x", "/etc/passwd", "a/b", "..", ".", "", "n\x00ul", "k" * 300]


def write_zip(path):
    with zipfile.ZipFile(path, "w") as z:
        for i, name in enumerate(ZIP_MEMBERS):
            z.writestr(name, npy(array(i)))
    # zipfile cuts names at NUL: put the NUL in afterwards, in both headers.
    data = open(path, "rb").read()
    open(path, "wb").write(data.replace(b"a\x01b.npy", b"a\x00b.npy"))


def write_h5(path):
    with h5py.File(path, "w", libver="latest") as f:
        x = f.create_dataset("data/x", data=array(0))
        x.attrs["small"] = "fine"
        x.attrs["huge"] = "h" * HUGE_ATTR
        f["abs_etc"] = h5py.SoftLink("/etc/passwd")
        f["up"] = h5py.SoftLink("/../../etc")
        f["data/rel_up"] = h5py.SoftLink("../../../etc/shadow")
        f["data/back"] = h5py.SoftLink("../../..")
        f["good"] = h5py.SoftLink("/data/x")


def write(out):
    os.makedirs(out, exist_ok=True)
    write_zip(f"{out}/names.zip")
    write_h5(f"{out}/links.h5")
    with open(f"{out}/keys.pkl", "wb") as f:
        pickle.dump({key: array(i) for i, key in enumerate(PICKLE_KEYS)}, f, protocol=4)


def inside(root, path):
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def check_tree(mount):
    """Every entry is inside the mount, resolved or not; names fit in 255 bytes."""
    root = os.path.realpath(mount)
    links = entries = 0
    for dirpath, dirnames, filenames in os.walk(mount):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            entries += 1
            assert len(os.fsencode(name)) <= 255, f"name of {len(name)} bytes"
            assert "/" not in name and "\0" not in name
            if os.path.islink(path):
                links += 1
                assert inside(root, path), f"{path} -> {os.readlink(path)} leaves the mount"
    assert links == 5, f"{links} symlinks"
    return entries


def load(path):
    return np.load(path, allow_pickle=False)


def check_names(mount):
    z = f"{mount}/names.zip"
    expected = {
        f"{z}/%2E%2E/x.npy": 0,
        f"{z}/%2E%2E/%2E%2E/up.npy": 1,
        f"{z}/etc/passwd.npy": 2,
        f"{z}/a%00b.npy": 3,
        f"{z}/dot.npy": 5,
        f"{z}/...npy": 6,
    }
    p = f"{mount}/keys.pkl"
    for i, name in enumerate(["..%2Fx", "%2Fetc%2Fpasswd", "a%2Fb", "..", ".", "", "n%00ul"]):
        expected[f"{p}/{name}.npy"] = i
    for path, i in expected.items():
        assert np.array_equal(load(path), array(i)), path
    long_zip = [n for n in os.listdir(z) if n.startswith("LLLL")]
    long_key = [n for n in os.listdir(p) if n.startswith("kkkk")]
    assert len(long_zip) == 1 and len(long_zip[0]) == 255 and long_zip[0].endswith(".npy"), long_zip
    assert len(long_key) == 1 and len(long_key[0]) <= 255, long_key
    assert np.array_equal(load(f"{z}/{long_zip[0]}"), array(4))
    assert np.array_equal(load(f"{p}/{long_key[0]}"), array(7))


def check_huge_xattr(mount):
    path = f"{mount}/links.h5/data/x.npy"
    assert os.getxattr(path, "user.h5.small") == b"fine"
    assert "user.h5.huge" in os.listxattr(path)
    try:
        value = os.getxattr(path, "user.h5.huge")
        assert value == b"h" * HUGE_ATTR, "wrong value"
        print("10 MiB xattr: read whole")
    except OSError as e:
        assert e.errno in (errno.E2BIG, errno.ERANGE), e
        print(f"10 MiB xattr: {errno.errorcode[e.errno]}")
    assert np.array_equal(load(path), array(0))


def main():
    cmd, arg = sys.argv[1:3]
    if cmd == "write":
        write(arg)
    elif cmd == "check":
        entries = check_tree(arg)
        check_names(arg)
        check_huge_xattr(arg)
        print(f"hostile ok: {entries} entries inside the mount")
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
