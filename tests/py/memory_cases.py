"""HDF5 data only libhdf5 reads, big enough that reading a whole selection at once would pass
the daemon's memory bound: a virtual dataset (VDS) over several source files whose datasets
have tiny chunks.

    python memory_cases.py write_vds DIR         DIR/vds.h5 (256 MiB virtual) over
                                                 DIR/part{0..3}.h5; prints the virtual size
    python memory_cases.py check_vds DIR MOUNT   MOUNT/vds.npy (DIR/vds.h5 mounted) is
                                                 np.save of h5py's reading, byte for byte
"""
import sys

import h5py
import numpy as np

from oracle import check_bytes, npy_bytes

PARTS = 4
# Each part: 64 x 512 x 512 float32 = 64 MiB in chunks of 1 x 16 x 16 (1 KiB).
PART_SHAPE = (64, 512, 512)
CHUNKS = (1, 16, 16)


def write_vds(out):
    rng = np.random.default_rng(16)
    layout = h5py.VirtualLayout(shape=(PARTS * PART_SHAPE[0],) + PART_SHAPE[1:], dtype="<f4")
    for i in range(PARTS):
        data = rng.standard_normal(PART_SHAPE, dtype=np.float32)
        with h5py.File(f"{out}/part{i}.h5", "w") as f:
            f.create_dataset("x", data=data, chunks=CHUNKS)
        rows = slice(i * PART_SHAPE[0], (i + 1) * PART_SHAPE[0])
        layout[rows] = h5py.VirtualSource(f"part{i}.h5", "x", shape=PART_SHAPE)
    with h5py.File(f"{out}/vds.h5", "w") as f:
        f.create_virtual_dataset("vds", layout, fillvalue=np.nan)
    print(layout.shape[0] * layout.shape[1] * layout.shape[2] * 4)


def check_vds(out, mnt):
    with h5py.File(f"{out}/vds.h5", "r") as f:
        expected = f["vds"][()]
    assert expected.nbytes == PARTS * 64 << 20, expected.nbytes
    assert not np.isnan(expected).any(), "every source was read (no fill values)"
    check_bytes(f"{mnt}/vds.npy", npy_bytes(expected), reads=16)
    loaded = np.load(f"{mnt}/vds.npy", allow_pickle=False)
    assert loaded.dtype == expected.dtype and np.array_equal(loaded, expected)
    print("ok")


if __name__ == "__main__":
    {"write_vds": write_vds, "check_vds": check_vds}[sys.argv[1]](*sys.argv[2:])
