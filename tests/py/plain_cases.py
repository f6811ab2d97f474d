"""HDF5 files written by h5py around what arrfs describes from an object header itself
(src/source/hdf5/plain.rs): datasets it takes and the near misses it must leave to libhdf5.

    python plain_cases.py write DIR     write the files into DIR
"""
import os
import sys

import h5py
import numpy as np

CODES = [f"{o}{k}{n}" for o in "<>" for k, n in [("i", 1), ("i", 2), ("i", 4), ("i", 8), ("u", 1),
         ("u", 2), ("u", 4), ("u", 8), ("f", 2), ("f", 4), ("f", 8), ("c", 8)]] + ["?", "S3"]


def numbers(f):
    for code in CODES:
        name = code.replace("<", "le_").replace(">", "be_").replace("?", "bool")
        for shape in [(), (1,), (3, 4), (2, 1, 3)]:
            data = (np.arange(int(np.prod(shape))).reshape(shape) * 3).astype(code)
            f[f"{name}_{len(shape)}d"] = data


def near_misses(f):
    g = f.create_group("near")
    g.create_dataset("empty", shape=(0,), dtype="<f8")
    g.create_dataset("empty_2d", shape=(3, 0), dtype="<i4")
    g.create_dataset("unwritten", shape=(4,), dtype="<f4")
    g.create_dataset("fill", data=np.arange(5.0), fillvalue=7.5)
    g.create_dataset("fill_unwritten", shape=(5,), dtype="<i2", fillvalue=-3)
    g.create_dataset("max_equal", data=np.arange(6), maxshape=(6,))
    g.create_dataset("resizable", data=np.arange(6), maxshape=(None,), chunks=(2,))
    g.create_dataset("chunked", data=np.arange(12.0).reshape(3, 4), chunks=(1, 4))
    g.create_dataset("gzip", data=np.arange(100), compression="gzip")
    g.create_dataset("null", data=h5py.Empty("f8"))
    g.create_dataset("notimes", data=np.arange(3), track_times=False)
    g.create_dataset("times", data=np.arange(3), track_times=True)
    a = g.create_dataset("attrs", data=np.arange(4))
    a.attrs["unit"] = "m"
    gone = g.create_dataset("attrs_removed", data=np.arange(4.0))
    for i in range(30):
        gone.attrs[f"a{i}"] = np.arange(20)
    for i in range(30):
        del gone.attrs[f"a{i}"]
    g["twice"] = np.arange(3)
    g["twice_again"] = g["twice"]
    f["named_type"] = np.dtype("<i4")
    g.create_dataset("of_named_type", data=np.arange(3, dtype="<i4"), dtype=f["named_type"])
    g["soft"] = h5py.SoftLink("/near/fill")
    space = h5py.h5s.create_simple((4,))
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    compact = h5py.h5d.create(g.id, b"compact", h5py.h5t.STD_I32LE, space, dcpl=dcpl)
    compact.write(h5py.h5s.ALL, h5py.h5s.ALL, np.arange(4, dtype="<i4"))
    raw = os.path.join(os.path.dirname(f.filename), "raw.bin")
    np.arange(4, dtype="<i4").tofile(raw)
    g.create_dataset("external", shape=(4,), dtype="<i4", external=[("raw.bin", 0, 16)])


def write(out):
    os.makedirs(out, exist_ok=True)
    with h5py.File(os.path.join(out, "plain.h5"), "w") as f:
        numbers(f)
        near_misses(f)
    with h5py.File(os.path.join(out, "userblock.h5"), "w", userblock_size=1024) as f:
        numbers(f)
    with h5py.File(os.path.join(out, "latest.h5"), "w", libver="latest") as f:
        numbers(f)
        near_misses(f)
    # Enough links for a B-tree of several levels, and for arrfs to describe them on
    # several threads; every 7th has an attribute, which leaves it to libhdf5.
    with h5py.File(os.path.join(out, "many.h5"), "w") as f:
        for i in range(5000):
            f[f"d{i:05d}"] = np.float64(i)
            if i % 7 == 3:
                f[f"d{i:05d}"].attrs["units"] = "m"


if __name__ == "__main__":
    {"write": lambda: write(sys.argv[2])}[sys.argv[1]]()
