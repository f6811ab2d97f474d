"""Writes, as JSON lines, .npy headers that numpy itself produced, with a plain description
of each dtype so the Rust test can rebuild it and compare our header writer byte for byte."""
import io
import json
import warnings

import numpy as np


def describe(dt):
    if dt.names is None:
        return {"kind": dt.kind, "order": dt.byteorder if dt.byteorder != "=" else "<", "size": dt.itemsize}
    fields = []
    for name in dt.names:
        sub, offset = dt.fields[name][:2]
        shape = list(sub.shape) if sub.subdtype else []
        base = sub.subdtype[0] if sub.subdtype else sub
        fields.append({"name": name, "offset": offset, "dtype": describe(base), "shape": shape})
    return {"fields": fields, "itemsize": dt.itemsize}


class HeaderWritten(Exception):
    pass


class HeaderOnly(io.BytesIO):
    """Keeps numpy's first write (the whole header) and stops before the data."""

    def write(self, data):
        self.header = bytes(data)
        raise HeaderWritten


def header(dt, shape, fortran):
    # A broadcast view has any shape without memory; its order follows `fortran` below.
    a = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=dt), shape=shape, strides=(0,) * len(shape))
    if fortran and len(shape) > 1:
        a = np.asfortranarray(np.zeros(shape, dtype=dt)) if np.prod(shape) < 1 << 16 else None
    if a is None:
        return None
    out = HeaderOnly()
    try:
        np.save(out, a)
    except HeaderWritten:
        return out.header
    raise AssertionError("numpy wrote no header")


DTYPES = ["<f8", ">f8", "<f2", "|i1", "<i2", ">i4", "<u8", "|u1", "|b1", "<c8", ">c16", "|S7",
          "<U5", "|V12", "<f4",
          np.dtype([("a", "<i4"), ("b", ">f8", (2, 3))]),
          np.dtype({"names": ["x", "y"], "formats": ["<u2", "<f4"], "offsets": [0, 8], "itemsize": 16}),
          np.dtype([("outer", [("in'ner", "<i2"), ('q"uote', "S3")]), ("z", "|b1")]),
          np.dtype([("\u00e9t\u00e9", "<f4")]),
          np.dtype([("\u03b1\u03b2", "<f4")]),
          np.dtype([(f"f{i}", "<u1") for i in range(7000)])]
SHAPES = [(), (0,), (3,), (2, 3), (1, 2, 3, 4), (123456789, 2)]

warnings.simplefilter("ignore")
for dt in DTYPES:
    dt = np.dtype(dt)
    for shape in SHAPES if dt.itemsize < 1000 else [(1,)]:
        for fortran in [False, True]:
            hdr = header(dt, shape, fortran)
            if hdr is None:
                continue
            print(json.dumps({"dtype": describe(dt), "shape": list(shape), "fortran": b"'fortran_order': True" in hdr,
                              "header": hdr.hex()}))
