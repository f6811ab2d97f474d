"""Chunked datasets under every HDF5 chunk index type, written by h5py, and the check of their
virtual files against h5py's own reading.

    python chunk_index_cases.py write FILE          write the datasets
    python chunk_index_cases.py check FILE MOUNT    every file equals np.save of h5py's reading
                                                    (200 random reads each)

Which index HDF5 picks (HDF5 file format 3.x, `libver='latest'`): one chunk the size of the
dataset -> single chunk; fixed dims, no filters, early allocation -> implicit; fixed dims ->
fixed array (paged above 1024 chunks); one unlimited dim -> extensible array; two -> v2
B-tree. The default file format (and libver 'earliest') keeps the v1 B-tree. Each comes with
and without filters, with partial edge chunks and chunks never written (the fill value).
"""
import os
import sys

import h5py
import numpy as np

from oracle import check_npy

rng = np.random.default_rng(12)

FILTERS = {
    "plain": {},
    "gzip": {"compression": "gzip", "compression_opts": 3, "shuffle": True},
    "lzf_fletcher": {"compression": "lzf", "fletcher32": True},
}


def data(shape, dtype):
    return (rng.standard_normal(shape) * 1000).astype(dtype)


def partly_written(f, name, shape, chunks, dtype, maxshape=None, grow=None, **filters):
    """A dataset whose first half (by rows) is written; the rest stays the fill value. With
    `grow`, it is resized to `grow` afterwards and one far corner is written."""
    ds = f.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, maxshape=maxshape,
                          fillvalue=np.array(3, dtype=dtype), **filters)
    rows = max(1, shape[0] // 2)
    ds[:rows] = data((rows,) + tuple(shape[1:]), dtype)
    if grow:
        ds.resize(grow)
        corner = tuple(slice(g - 1, g) for g in grow)
        ds[corner] = np.ones([1] * len(grow), dtype=dtype)
    return ds


def implicit(f, name, shape, chunks, dtype):
    """Fixed dims, no filters, space allocated at creation: the implicit index."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk(chunks)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_value(np.array(5, dtype=dtype))
    tid = h5py.h5t.py_create(np.dtype(dtype))
    dsid = h5py.h5d.create(f.id, name.encode(), tid, h5py.h5s.create_simple(shape), dcpl=dcpl)
    ds = h5py.Dataset(dsid)
    ds[: shape[0] // 2] = data((shape[0] // 2,) + tuple(shape[1:]), dtype)


def write_latest(f):
    # The case of issue 12: chunks (2, 3) of a (4, 6) int32, one unlimited dim.
    for tag, filters in FILTERS.items():
        f.create_dataset(f"issue12/ea_{tag}", data=np.arange(24, dtype="<i4").reshape(4, 6),
                         chunks=(2, 3), maxshape=(None, 6), **filters)
    for tag, filters in FILTERS.items():
        g = f.require_group(tag)
        # Single chunk: the whole dataset in one chunk (and one never written).
        g.create_dataset("single", data=data((7, 9), ">f8"), chunks=(7, 9), **filters)
        g.create_dataset("single_unwritten", shape=(5, 3), chunks=(5, 3), dtype="<i4",
                         fillvalue=11, **filters)
        # Fixed array: fixed dims; 1200 chunks take the paged form.
        partly_written(g, "fixed_array", (23, 17), (5, 4), "<i4", **filters)
        partly_written(g, "fixed_array_paged", (300, 41), (5, 2), "<u2", **filters)
        # Extensible array: one unlimited dim, grown after writing; enough chunks for
        # secondary blocks.
        partly_written(g, "extensible_array", (37, 11), (4, 5), "<f4", maxshape=(None, 11),
                       grow=(90, 11), **filters)
        partly_written(g, "extensible_array_1d", (4000,), (3,), ">i8", maxshape=(None,),
                       grow=(9001,), **filters)
        # v2 B-tree: two unlimited dims; enough chunks for a tree of depth > 0.
        partly_written(g, "btree2", (61, 47), (3, 2), "<i2", maxshape=(None, None),
                       grow=(70, 50), **filters)
    implicit(f, "plain/implicit", (19, 13), (4, 6), "<f8")
    implicit(f, "plain/implicit_1d", (1001,), (10,), ">u4")


def write_v1(f):
    for tag, filters in FILTERS.items():
        g = f.require_group(tag)
        partly_written(g, "btree1", (61, 47), (3, 2), "<i4", **filters)
        partly_written(g, "btree1_unlimited", (50, 20), (6, 7), ">f4", maxshape=(None, 20),
                       grow=(80, 20), **filters)


def write(path):
    with h5py.File(path, "w", libver="latest") as f:
        write_latest(f)
    with h5py.File(path[: -len(".h5")] + "_v110.h5", "w", libver=("v110", "latest")) as f:
        for tag, filters in FILTERS.items():
            f.create_dataset(f"ea_{tag}", data=np.arange(24, dtype="<i4").reshape(4, 6),
                             chunks=(2, 3), maxshape=(None, 6), **filters)
        partly_written(f, "extensible_array", (37, 11), (4, 5), "<f4", maxshape=(None, 11),
                       grow=(90, 11), compression="gzip")
    with h5py.File(path[: -len(".h5")] + "_v1.h5", "w") as f:
        write_v1(f)


def expected_index(path, name):
    """The chunk index HDF5 chose for dataset `name` (named after it) in file `path`."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf.startswith("ea_"):
        return "extensible_array"
    for prefix in ["single", "implicit", "fixed_array", "extensible_array", "btree2", "btree1"]:
        if leaf.startswith(prefix):
            return prefix
    raise AssertionError(f"{name}: no index type in its name")


def check(path, mnt):
    """Every dataset of the file at `path`, mounted at `mnt`: bytes equal to h5py's, under
    the chunk index its name says."""
    names = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in names:
            virtual = f"{mnt}/{name}.npy"
            try:
                index = os.getxattr(virtual, "user.arrfs.chunk_index").decode()
                assert index == expected_index(path, name), f"chunk index {index}"
                check_npy(virtual, f[name][()], reads=200)
            except Exception as e:
                raise AssertionError(f"{name}: {e}") from e
    assert names, "no datasets"
    print(f"{len(names)} files checked")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"write": write, "check": check}[cmd](*args)
