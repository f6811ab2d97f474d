"""Files for the HDF5 worker tests (tests/hdf5_worker.rs), written by h5py, and the oracle.

    write DIR          a.h5 and b.h5 in DIR
    check DIR MNT REL  each REL (a.h5/g/y.npy, ...) under MNT equals np.save of h5py's
                       reading of that dataset of DIR/a.h5 or DIR/b.h5, whole and in slices
"""
import os
import sys

import h5py
import numpy as np

from oracle import check_bytes, npy_bytes

# Chunked and compressed: described and read through the worker, named by their paths.
DATASETS = {
    "a.h5": ["g/y", "g/boom", "h/z", "h/v", "k/u", "k/s"],
    "b.h5": ["g/w", "h/t"],
}


def write(directory):
    for name, paths in DATASETS.items():
        with h5py.File(os.path.join(directory, name), "w") as f:
            f.attrs["title"] = name
            for i, path in enumerate(paths):
                data = np.arange(40_000, dtype="f4").reshape(200, 200) * (i + 1)
                f.create_dataset(path, data=data, chunks=(50, 50), compression="gzip")


def check(directory, mnt, rels):
    for rel in rels:
        name, inner = rel.split("/", 1)
        with h5py.File(os.path.join(directory, name), "r") as f:
            expected = npy_bytes(f[inner.removesuffix(".npy")][()])
        check_bytes(os.path.join(mnt, rel), expected, reads=50)
    print("ok", len(rels))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4:])
