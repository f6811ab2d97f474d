"""Pickle and joblib fixtures for tests/pickle.rs, and their oracle check.

    pickle_cases.py write DIR          pickles of many arrays at protocols 0-5, a joblib dump
    pickle_cases.py write-compressed DIR
                                       pickles compressed whole (gzip, zlib, bz2, xz, lzma) and
                                       joblib dumps under each joblib compression
    pickle_cases.py check FILE MOUNT   every .npy under MOUNT equals np.save of what
                                       pickle.load / joblib.load returns for FILE, and the
                                       tree holds exactly the expected names

The oracle is CPython's pickle, numpy and joblib: our reader is never used to make the
expected bytes. The numpy 1.x pickles in tests/fixtures/pickle were made with numpy 1.26.4 by
    python -m venv np1 && np1/bin/pip install 'numpy<2'
    np1/bin/python tests/py/pickle_cases.py write-np1 tests/fixtures/pickle
"""
import bz2
import collections
import gzip
import lzma
import os
import pickle
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from oracle import check_npy  # noqa: E402


def arrays():
    rng = np.random.default_rng(7)
    struct = np.dtype({"names": ["a", "b", "c"], "formats": ["<i4", ("<f8", (2,)), "S3"],
                       "offsets": [0, 8, 28], "itemsize": 40})
    nested = np.dtype([("p", [("x", "<f4"), ("y", ">i2")]), ("q", "u1")])
    out = {
        "f8_3d": rng.standard_normal((3, 4, 5)),
        "i4_empty": np.zeros((0, 3), "<i4"),
        "zero_d": np.array(3.25),
        "fortran": np.asfortranarray(rng.standard_normal((4, 6)).astype("<f4")),
        "fortran_3d_i2": np.asfortranarray(np.arange(60, dtype="<i2").reshape(3, 4, 5)),
        "big_endian": np.arange(12, dtype=">i8").reshape(3, 4),
        "big_f8": np.linspace(0, 1, 7).astype(">f8"),
        "bool": rng.standard_normal(17) > 0,
        "complex": (rng.standard_normal(5) + 1j * rng.standard_normal(5)).astype("<c16"),
        "c8": np.arange(4, dtype="<c8"),
        "f2": np.arange(10, dtype="<f2"),
        "u1_all_bytes": np.arange(256, dtype="u1"),
        "i8_high_bytes": np.array([-1, 2**62, -(2**40), 0x7F80FF00], dtype="<i8"),
        "strings_S": np.array([b"ab", b"\x00\xff\\\n", b"xyz"], dtype="S4"),
        "strings_U": np.array(["h\u00e9llo", "\u20ac", ""], dtype="<U5"),
        "strings_U_big": np.array(["ab", "c"], dtype=">U2"),
        "struct": np.zeros(3, struct),
        "nested_struct": np.ones(2, nested),
        "void": np.frombuffer(b"0123456789abcdef", dtype="V8"),
        "large": rng.integers(0, 1000, size=300_000).astype("<i4"),
        "non_contiguous": np.arange(40, dtype="<f8").reshape(5, 8)[:, ::3],
    }
    out["struct"]["a"] = [1, 2, 3]
    out["struct"]["b"] = [[1.5, 2.5], [3.5, 4.5], [5.5, 6.5]]
    out["struct"]["c"] = [b"x", b"yy", b"zzz"]
    return out


def tree():
    """A nested object with arrays, scalars, containers and values to leave out."""
    data = arrays()
    shared = np.arange(5, dtype="<i8")
    return {
        "arrays": data,
        "nested": {"list": [shared, shared, {"deep": (np.float32(1.5), 7)}], "tuple": (1, 2.5)},
        "scalars": {"int": 42, "neg": -7, "float": 0.1, "bool": True, "complex": 1 + 2j,
                    "np_i2": np.int16(-3), "np_f8": np.float64(2.5), "np_c8": np.complex64(1j),
                    "np_bool": np.bool_(False), "np_u8": np.uint64(2**64 - 1)},
        7: np.array([7]),
        (1, "a"): np.array([1.0]),
        2.5: np.array([2]),
        None: np.array([0]),
        "slash/key": np.array([1]),
        "ordered": collections.OrderedDict([("z", np.array([1])), ("y", np.array([2]))]),
        "left_out": {"none": None, "text": "hello", "bytes": b"raw",
                     "objects": np.array([1, "a"], dtype=object), "set": {1, 2}},
    }


def write(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    obj = tree()
    for protocol in range(6):
        with open(os.path.join(out_dir, f"p{protocol}.pkl"), "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
    for protocol in (2, 5):
        with open(os.path.join(out_dir, f"top{protocol}.pkl"), "wb") as f:
            pickle.dump(arrays()["fortran"], f, protocol=protocol)
    import joblib
    joblib.dump(obj, os.path.join(out_dir, "dump.joblib"))
    joblib.dump(obj, os.path.join(out_dir, "dump_p2.joblib"), protocol=2)


# Whole pickles wrapped in a compressor, by file name: (protocol, how to compress).
COMPRESSED = {
    "p5.pkl.gz": (5, lambda data: gzip.compress(data)),
    "p2.pkl.gz": (2, lambda data: gzip.compress(data, mtime=0)),
    "p4.pkl.zlib": (4, lambda data: zlib.compress(data, 6)),
    "p5.pkl.bz2": (5, lambda data: bz2.compress(data)),
    "p5.pkl.xz": (5, lambda data: lzma.compress(data)),
    "p4.pkl.lzma": (4, lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE)),
}
# joblib's compressors (compress=3 alone means zlib).
JOBLIB_COMPRESSED = {"dump_zlib.joblib": 3, "dump_gzip.joblib": ("gzip", 3),
                     "dump_bz2.joblib": ("bz2", 3), "dump_lzma.joblib": ("lzma", 3),
                     "dump_xz.joblib": ("xz", 3), "dump_lz4.joblib": ("lz4", 3)}


def write_compressed(out_dir):
    import joblib
    os.makedirs(out_dir, exist_ok=True)
    obj = tree()
    for name, (protocol, compress) in COMPRESSED.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(compress(pickle.dumps(obj, protocol=protocol)))
    with open(os.path.join(out_dir, "top5.pkl.gz"), "wb") as f:
        f.write(gzip.compress(pickle.dumps(arrays()["fortran"], protocol=5)))
    for name, compress in JOBLIB_COMPRESSED.items():
        joblib.dump(obj, os.path.join(out_dir, name), compress=compress)


def write_np1(out_dir):
    """Run by a numpy 1.x Python: its pickles name `numpy.core.*` instead of `numpy._core.*`."""
    assert np.__version__.startswith("1."), np.__version__
    os.makedirs(out_dir, exist_ok=True)
    obj = tree()
    del obj["arrays"]["large"]
    for protocol in (2, 5):
        with open(os.path.join(out_dir, f"np1_p{protocol}.pkl"), "wb") as f:
            pickle.dump(obj, f, protocol=protocol)


DECOMPRESS = {".gz": gzip.decompress, ".zlib": zlib.decompress, ".bz2": bz2.decompress,
              ".xz": lzma.decompress, ".lzma": lzma.decompress}


def load(path):
    if path.endswith(".joblib"):
        import joblib
        return joblib.load(path)
    with open(path, "rb") as f:
        data = f.read()
    ext = os.path.splitext(path)[1]
    if ext in DECOMPRESS:
        data = DECOMPRESS[ext](data)
    return pickle.loads(data, encoding="latin1")


def stem(path):
    """The name of a top-level array: the file name without compression and pickle
    extensions."""
    name = os.path.basename(path)
    if os.path.splitext(name)[1] in DECOMPRESS:
        name = os.path.splitext(name)[0]
    return os.path.splitext(name)[0]


def escape(name):
    return {"": "%", ".": "%2E", "..": "%2E%2E"}.get(name, name.replace("/", "%2F").replace("\0", "%00"))


def expected(obj, rel, out):
    """Fills `out` with relative path -> array, as the README ("What appears where") lays out `obj` at `rel`."""
    if isinstance(obj, np.ndarray):
        if not obj.dtype.hasobject:
            out[rel + ".npy"] = obj
    elif isinstance(obj, (np.generic, bool, int, float, complex)):
        arr = np.asarray(obj)
        if not arr.dtype.hasobject:
            out[rel + ".npy"] = arr
    elif isinstance(obj, dict):
        for key, value in obj.items():
            expected(value, os.path.join(rel, escape(str(key))), out)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            expected(value, os.path.join(rel, str(i)), out)


def zero_padded(array):
    """joblib.load fills structured arrays field by field into np.empty, leaving padding
    bytes undefined; the file holds the original's padding, zeros in these cases."""
    clean = np.zeros(array.shape, array.dtype)
    clean[...] = array
    return clean


def check(path, mount):
    obj = load(path)
    want = {}
    top = "" if isinstance(obj, (dict, list, tuple)) else stem(path)
    expected(obj, top, want)
    got = set()
    for root, _dirs, files in os.walk(mount):
        for name in files:
            got.add(os.path.relpath(os.path.join(root, name), mount))
    assert got == set(want), f"{path}: missing {sorted(set(want) - got)}, extra {sorted(got - set(want))}"
    for rel, array in sorted(want.items()):
        if path.endswith(".joblib") and array.dtype.names:
            array = zero_padded(array)
        check_npy(os.path.join(mount, rel), array, reads=30)
    print(f"{path}: {len(want)} arrays ok")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    elif sys.argv[1] == "write-compressed":
        write_compressed(sys.argv[2])
    elif sys.argv[1] == "write-np1":
        write_np1(sys.argv[2])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
