"""An h5py file with bytes flipped inside one gzip chunk of one dataset.

    python corrupt_cases.py write FILE        write, remember the good data, then corrupt
    python corrupt_cases.py check FILE MOUNT  the bad chunk gives EIO; all else reads right
"""
import errno
import sys

import h5py
import numpy as np

from oracle import check_npy


def write(path):
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f.create_dataset("bad", data=rng.standard_normal((64, 64)), chunks=(16, 64), compression="gzip")
        f.create_dataset("good_chunked", data=rng.standard_normal((64, 64)), chunks=(16, 64), compression="gzip")
        f["good_contiguous"] = np.arange(1000, dtype="<i4")
    with h5py.File(path, "r") as f:
        np.savez(path + ".expected.npz", **{k: f[k][()] for k in ["good_chunked", "good_contiguous"]})
        info = f["bad"].id.get_chunk_info(1)
    with open(path, "r+b") as raw:
        middle = info.byte_offset + info.size // 2
        raw.seek(middle)
        block = bytearray(raw.read(16))
        raw.seek(middle)
        raw.write(bytes(b ^ 0x5A for b in block))
    # Rows 16..32 live in chunk 1; rows 0..16 in chunk 0, which is intact.
    print(16 * 64 * 8)


def check(path, mnt):
    expected = np.load(path + ".expected.npz")
    for name in expected.files:
        check_npy(f"{mnt}/{name}.npy", expected[name])
    with open(f"{mnt}/bad.npy", "rb") as f:
        header = f.read(128)
        assert header.startswith(b"\x93NUMPY"), header
        f.read(16 * 64 * 8 - 1000)  # still inside intact chunk 0
        try:
            f.seek(128 + 20 * 64 * 8)
            f.read(4096)
        except OSError as e:
            assert e.errno == errno.EIO, e
        else:
            raise AssertionError("reading the corrupt chunk succeeded")
    print("corrupt chunk gave EIO; others read")


if __name__ == "__main__":
    {"write": lambda: write(sys.argv[2]), "check": lambda: check(sys.argv[2], sys.argv[3])}[sys.argv[1]]()
