"""Fixtures for the scaling tests, written by h5py: a gzip dataset of N chunks, and the
np.save bytes of h5py's reading of it (the oracle); a file of N small datasets in groups of
100, each with an attribute (what listing a large file costs); a forest of N scalar
datasets in groups of 1,000 (bench case S5: memory per entry).

    python scale_cases.py chunks N OUT.h5 OUT.npy
    python scale_cases.py datasets N OUT.h5
    python scale_cases.py forest N OUT.h5
    python scale_cases.py npz N OUT.npz                        N scalar members, np.savez
    python scale_cases.py rows FILE DATASET START STOP OUT   h5py's rows, raw bytes
"""
import sys

import h5py
import numpy as np


def chunks(n, out, npy):
    rows = 4 * n
    data = (np.arange(rows * 16, dtype=np.float32) % 1000).reshape(rows, 16)
    with h5py.File(out, "w") as f:
        f.create_dataset("x", data=data, chunks=(4, 16), compression="gzip")
    with h5py.File(out, "r") as f:
        assert f["x"].id.get_num_chunks() == n
        np.save(npy, f["x"][()])


def datasets(n, out):
    with h5py.File(out, "w") as f:
        for i in range(n):
            ds = f.create_dataset(f"g{i // 100:03d}/d{i:04d}", data=np.arange(i % 7 + 1, dtype="<f8"))
            ds.attrs["index"] = i


def forest(n, out):
    with h5py.File(out, "w") as f:
        for i in range(n):
            f[f"g{i // 1000:04d}/d{i % 1000:04d}"] = np.int32(i)


def npz(n, out):
    np.savez(out, **{f"a{i:06d}": np.float32(i) for i in range(n)})


def rows(path, name, start, stop, out):
    """h5py's reading of rows [start, stop) of dataset `name`, as raw bytes into `out`."""
    with h5py.File(path, "r") as f:
        data = f[name][start:stop]
    with open(out, "wb") as o:
        o.write(np.ascontiguousarray(data).tobytes())


if __name__ == "__main__":
    if sys.argv[1] == "rows":
        rows(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif sys.argv[1] == "chunks":
        chunks(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif sys.argv[1] == "datasets":
        datasets(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "npz":
        npz(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "forest":
        forest(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(f"unknown case {sys.argv[1]}")
