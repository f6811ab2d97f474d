"""Checks of a remote mount against the local mount of the same files.

    remote_cases.py compare LOCAL_MNT REMOTE_MNT   same tree; every file byte-identical, read
                                                   whole and by 200 random reads; every .npy
                                                   loads with mmap_mode='r' to the same array
    remote_cases.py write-sized FILE MIB           an .npz of one random uint8 array of MIB MiB
    remote_cases.py read FILE                      reads FILE whole; prints "ok N" or the
                                                   OSError's errno name

The local mounts are checked against h5py, numpy, pickle and safetensors by the other suites;
here the remote mount must equal them.
"""

import errno
import os
import random
import sys

import numpy as np


# An HDF5 external link is followed by path; a remote HDF5 file has none, so the link is left
# out there (with the reason in user.arrfs.skipped: tests/remote_sources.rs checks it).
EXTERNAL_LINK = "links/external.npy"


def tree(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = "dir"
            else:
                out[rel] = os.path.getsize(path)
    return out


def compare(local, remote):
    want, got = tree(local), tree(remote)
    want = {rel: v for rel, v in want.items() if not (rel.endswith(EXTERNAL_LINK) and rel not in got)}
    assert got == want, f"trees differ: only local {sorted(set(want) - set(got))[:5]}, only remote {sorted(set(got) - set(want))[:5]}"
    rng = random.Random(7)
    files = 0
    for rel, size in sorted(want.items()):
        if not isinstance(size, int):
            continue
        a, b = os.path.join(local, rel), os.path.join(remote, rel)
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read(), f"{rel}: bytes differ"
            for _ in range(200):
                offset = rng.randrange(max(size, 1))
                n = rng.randrange(1, 65536)
                assert os.pread(fa.fileno(), n, offset) == os.pread(fb.fileno(), n, offset), f"{rel}: pread({n}, {offset}) differs"
        if rel.endswith(".npy"):
            x = np.load(a, mmap_mode="r", allow_pickle=False)
            y = np.load(b, mmap_mode="r", allow_pickle=False)
            assert x.dtype == y.dtype and x.shape == y.shape, rel
            assert x.tobytes() == y.tobytes(), f"{rel}: mmap arrays differ"
        files += 1
    assert files >= 3, f"only {files} files"
    print(f"ok {files} files")


def read(path):
    try:
        with open(path, "rb") as f:
            print(f"ok {len(f.read())}")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))


def write_sized(path, mib):
    data = np.random.default_rng(1).integers(0, 256, size=int(mib) << 20, dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, x=data)


if __name__ == "__main__":
    {
        "compare": lambda: compare(sys.argv[2], sys.argv[3]),
        "write-sized": lambda: write_sized(sys.argv[2], sys.argv[3]),
        "read": lambda: read(sys.argv[2]),
    }[sys.argv[1]]()
