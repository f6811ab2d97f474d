"""Checks of `arrfs ls`, `arrfs cat` and the `--attrs-json` sidecars against h5py.

    python cli_cases.py check_ls FILE LS_TEXT LS_JSON   dtype and shape of every dataset
    python cli_cases.py check_cat FILE ARRFS MOUNT      `arrfs cat` == mount == np.save(h5py)
    python cli_cases.py write_attrs FILE                attributes of many types
    python cli_cases.py check_attrs FILE MOUNT          sidecars == h5py's attrs, typed
"""
import base64
import json
import os
import subprocess
import sys
import warnings

import h5py
import numpy as np

from hdf5_cases import expected_files
from oracle import npy_bytes

# h5py tags string and enum dtypes with metadata that .npy files do not keep.
warnings.filterwarnings("ignore", "metadata on a dtype")


def descr_text(dtype):
    descr = np.lib.format.dtype_to_descr(dtype)
    return descr if isinstance(descr, str) else repr(descr)


def check_ls(path, text_file, json_file):
    with h5py.File(path, "r") as f:
        files = expected_files(f)
    entries = {e["path"]: e for e in json.load(open(json_file))}
    lines = open(text_file).read().splitlines()
    for rel, array in files.items():
        entry = entries[rel]
        assert entry["kind"] == "file", entry
        assert entry["dtype"] == descr_text(array.dtype), (rel, entry["dtype"], array.dtype)
        assert entry["shape"] == list(array.shape), (rel, entry["shape"], array.shape)
        assert entry["size"] == len(npy_bytes(array)), (rel, entry["size"])
        line = next(l for l in lines if l.split()[-1] == rel)
        assert repr(tuple(array.shape)) in line, (rel, line)
        if array.dtype.names is None:
            assert f" {descr_text(array.dtype)} " in line, (rel, line)
    assert entries["links/soft.npy"]["target"] == "../numeric/le_f8.npy"
    assert entries["gzip3d.npy"]["chunks"] == [8, 5, 4]
    assert entries["gzip3d.npy"]["filters"] == ["shuffle", "deflate(4)"]
    print(f"{len(files)} entries checked")


def check_cat(path, arrfs, mnt):
    with h5py.File(path, "r") as f:
        files = expected_files(f)
    for rel, array in sorted(files.items()):
        got = subprocess.run([arrfs, "cat", path, rel], check=True, capture_output=True).stdout
        assert got == npy_bytes(array), f"{rel}: arrfs cat differs from np.save of h5py's reading"
        with open(os.path.join(mnt, rel), "rb") as mounted:
            assert got == mounted.read(), f"{rel}: arrfs cat differs from the mount"
    print(f"{len(files)} files checked")


def write_attrs(path):
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "root ∑"
        f.attrs["int"] = np.int64(-5)
        f.attrs["flag"] = np.bool_(True)
        g = f.create_group("g")
        g.attrs["matrix"] = np.arange(6, dtype="<i2").reshape(2, 3)
        g.attrs["cube"] = np.arange(24, dtype=">f4").reshape(2, 3, 4) / 4
        f.create_group("no_attrs")
        x = g.create_dataset("x", data=np.arange(4))
        x.attrs["fixed"] = np.bytes_(b"\xff\x00bin")
        x.attrs["fixed_list"] = np.array([b"x", b"yz"])
        x.attrs["strs"] = np.array(["a", "béta"], dtype=h5py.string_dtype())
        x.attrs["u64"] = np.uint64(2**64 - 1)
        x.attrs["f32"] = np.float32(1.5)
        x.attrs["cplx"] = np.complex64(1 + 2j)
        x.attrs["record"] = np.array((1, 2.5), dtype=[("a", "<i4"), ("b", "<f8")])[()]
        x.attrs["opaque"] = np.void(b"\x01\x02\x03")
        f.create_dataset("plain", data=[1])


def typed(value):
    """h5py's value in the sidecar's typing: bytes as {"base64": ...}, arrays as lists."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, np.void) and value.dtype.names:
        return {name: typed(value[name]) for name in value.dtype.names}
    if isinstance(value, np.void):
        return {"base64": base64.b64encode(value.tobytes()).decode()}
    if isinstance(value, np.ndarray):
        return [typed(item) for item in value]
    if isinstance(value, (complex, np.complexfloating)):
        return [float(value.real), float(value.imag)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_attrs(path, mnt):
    checked = []

    def visit(name, obj):
        expected = {key: typed(value) for key, value in obj.attrs.items()}
        is_group = isinstance(obj, h5py.Group)
        sidecar = os.path.join(mnt, name, ".attrs.json") if is_group else os.path.join(mnt, name + ".attrs.json")
        if is_group and not expected:
            assert not os.path.exists(sidecar), f"{sidecar}: a group without attributes has no sidecar"
            return
        got = json.load(open(sidecar))
        assert got == expected, f"{name}: {got} != {expected}"
        checked.append(name)

    with h5py.File(path, "r") as f:
        visit("", f)
        f.visititems(visit)
    matrix = os.getxattr(os.path.join(mnt, "g"), "user.h5.matrix").decode()
    assert json.loads(matrix) == [[0, 1, 2], [3, 4, 5]], matrix
    print(f"{len(checked)} sidecars checked")


if __name__ == "__main__":
    commands = {"check_ls": check_ls, "check_cat": check_cat, "write_attrs": write_attrs,
                "check_attrs": check_attrs}
    commands[sys.argv[1]](*sys.argv[2:])
