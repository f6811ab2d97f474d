"""External links and external raw data (H5Pset_external), written by h5py, and the checks of
their virtual files against h5py's own reading, which resolves both relative to the file that
names them (raw data files under the `${ORIGIN}` prefix, as arrfs reads them).

    python external_cases.py write DIR              DIR/root/{a.h5,b.h5,raw.bin,sub/...} and
                                                    DIR/outside.{h5,bin} beside root
    python external_cases.py write_vds DIR          DIR/vds.h5: virtual datasets with their
                                                    source in DIR/src.h5 ("other") and in
                                                    vds.h5 itself ("self"), and DIR/self.bin,
                                                    the C-order bytes of h5py's reading of "self"
    python external_cases.py check DIR MOUNT MODE   MODE: file (root/a.h5 mounted), any (the
                                                    same with -o external_links=any), dir
                                                    (root mounted), driver (root/a.h5
                                                    read through arrfs's HDF5 driver: all
                                                    left out, for want of a path)
"""
import os
import sys

import h5py
import numpy as np

from oracle import check_npy

INSIDE = ["sibling", "sibling_chunked", "in_sub", "sub_group/u", "sub_group/up", "extraw", "extraw_two"]
OUTSIDE = ["outside", "outside_abs", "extraw_outside"]


def write(out):
    root = f"{out}/root"
    os.makedirs(f"{root}/sub", exist_ok=True)
    with h5py.File(f"{root}/b.h5", "w") as f:
        f["t"] = np.arange(5, dtype="<i2")
        f.create_dataset("tc", data=np.arange(300, dtype=">f8").reshape(20, 15), chunks=(7, 4),
                         compression="gzip")
    with h5py.File(f"{root}/sub/c.h5", "w") as f:
        f["u"] = np.linspace(0, 1, 33, dtype="<f4").reshape(3, 11)
        f["up"] = h5py.ExternalLink("../b.h5", "/tc")  # relative to sub/, not to root/
    with h5py.File(f"{out}/outside.h5", "w") as f:
        f["t"] = np.arange(7, dtype="<u8")
    np.arange(20, dtype="<f4").tofile(f"{root}/raw.bin")
    np.arange(5, dtype="<f4").tofile(f"{root}/sub/raw2.bin")
    np.arange(10, dtype="<f4").tofile(f"{out}/outside.bin")
    with h5py.File(f"{root}/a.h5", "w") as f:
        f["sibling"] = h5py.ExternalLink("b.h5", "/t")
        f["sibling_chunked"] = h5py.ExternalLink("b.h5", "/tc")
        f["in_sub"] = h5py.ExternalLink("sub/c.h5", "/u")
        f["sub_group"] = h5py.ExternalLink("sub/c.h5", "/")
        f["outside"] = h5py.ExternalLink("../outside.h5", "/t")
        f["outside_abs"] = h5py.ExternalLink(os.path.abspath(f"{out}/outside.h5"), "/t")
        f.create_dataset("extraw", shape=(10,), dtype="<f4", external=[("raw.bin", 0, 40)])
        f.create_dataset("extraw_two", shape=(10,), dtype="<f4",
                         external=[("raw.bin", 40, 20), ("sub/raw2.bin", 0, 20)])
        f.create_dataset("extraw_outside", shape=(10,), dtype="<f4",
                         external=[("../outside.bin", 0, 40)])


def write_vds(out):
    data = np.arange(24, dtype="<i4").reshape(4, 6)
    with h5py.File(f"{out}/src.h5", "w") as f:
        f["x"] = data
    with h5py.File(f"{out}/vds.h5", "w") as f:
        f["x"] = data * 10
        other = h5py.VirtualLayout(shape=(4, 6), dtype="<i4")
        other[:] = h5py.VirtualSource("src.h5", "x", shape=(4, 6))
        f.create_virtual_dataset("other", other, fillvalue=-1)
        own = h5py.VirtualLayout(shape=(2, 6), dtype="<i4")
        source = h5py.VirtualSource(".", "x", shape=(4, 6))
        own[0] = source[3]
        own[1] = source[0]
        f.create_virtual_dataset("self", own, fillvalue=-1)
    with h5py.File(f"{out}/vds.h5", "r") as f:
        np.ascontiguousarray(f["self"][()]).tofile(f"{out}/self.bin")


def read(path, name):
    """h5py's reading of dataset `name`, raw data files looked up next to the file."""
    with h5py.File(path, "r") as f:
        dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
        dapl.set_efile_prefix(b"${ORIGIN}")
        return h5py.Dataset(h5py.h5d.open(f.id, name.encode(), dapl))[()]


def check_driver(mnt):
    skipped = os.getxattr(mnt, "user.arrfs.skipped").decode()
    top = sorted({name.split("/")[0] for name in INSIDE + OUTSIDE})
    for name in top:
        line = next(l for l in skipped.splitlines() if l.startswith(f"{name}: "))
        assert "read through arrfs's driver" in line, line
    assert os.listdir(mnt) == [], os.listdir(mnt)
    print(f"{len(top)} left out for want of a path, 0 files checked")


def check(out, mnt, mode):
    if mode == "driver":
        return check_driver(mnt)
    root = f"{out}/root"
    top = f"{mnt}/a.h5" if mode == "dir" else mnt
    shown = INSIDE + (OUTSIDE if mode == "any" else [])
    for name in shown:
        check_npy(f"{top}/{name}.npy", read(f"{root}/a.h5", name))
    skipped = os.getxattr(top, "user.arrfs.skipped").decode() if mode != "any" else ""
    for name in OUTSIDE:
        if mode == "any":
            continue
        assert not os.path.exists(f"{top}/{name}.npy"), name
        line = next(l for l in skipped.splitlines() if l.startswith(f"{name}: "))
        assert "outside" in line and "external_links=any" in line, line
    if mode == "dir":
        # Links between containers of one directory mount.
        check_npy(f"{mnt}/sub/c.h5/up.npy", read(f"{root}/b.h5", "tc"))
        check_npy(f"{mnt}/b.h5/t.npy", read(f"{root}/b.h5", "t"))
    print(f"{len(shown)} files checked")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"write": write, "write_vds": write_vds, "check": check}[cmd](*args)
