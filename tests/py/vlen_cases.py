"""Variable-length strings outside contiguous datasets: chunked (plain and gzip) and compact
datasets, and attributes, written by h5py; and copies with the global heap damaged.

    python vlen_cases.py write DIR         DIR/good/{earliest,latest}.h5 (object header
                                           versions 1 and 2) and DIR/TARGET-KIND.h5, the
                                           damaged files (names printed)
    python vlen_cases.py check DIR MOUNT   MOUNT (DIR/good mounted) equals h5py's reading
    python vlen_cases.py check_damaged FILE MOUNT
                                           MOUNT (FILE, a damaged file, mounted): "ok" reads
                                           as h5py reads it, the target is left out

Damaged files (each holds "ok", ten ints, and one target holding vlen strings, with no
other vlen data, so its heap collection is the file's only one):
    TARGET-loop-LIBVER.h5    the collection's free-space object gets size 0 (libhdf5 spins
                             on it); LIBVER earliest and latest (object header versions 1, 2)
    TARGET-length-earliest.h5  the stored length of each "héllo" becomes 2^31 - 1 (libhdf5
                             allocates it)
TARGET: chunked, chunked_gzip (the loop case only: its references are compressed),
compact, attr (a dataset's attribute), group_attr (the root group's), record,
record_chunked, record_compact (compounds with string members, contiguous, chunked, compact).
"""
import json
import os
import struct
import sys

import h5py
import numpy as np

from oracle import check_npy

UTF8 = h5py.string_dtype("utf-8")
ASCII = h5py.string_dtype("ascii")
WORDS = ["héllo", "", "wörld ∑", "a", "longer string here", "x" * 300]
TARGETS = ["chunked", "chunked_gzip", "compact", "attr", "group_attr", "record", "record_chunked",
           "record_compact"]
# A compound with variable-length string members, one of them an array, between fixed ones.
RECORD = np.dtype([("id", "<i4"), ("name", UTF8), ("x", "<f8"), ("tags", ASCII, (2,)), ("flag", "?")])


def records(words):
    return np.array([(i, w, i / 2, [w.encode("ascii", "replace"), b"t"], i % 2 == 0)
                     for i, w in enumerate(words)], dtype=RECORD)


def compact(f, name, data, dtype):
    """A compact dataset (h5py has no keyword for the layout)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple((len(data),))
    tid = h5py.h5t.py_create(dtype, logical=True)
    dsid = h5py.h5d.create(f.id, name.encode(), tid, space, dcpl=dcpl)
    h5py.Dataset(dsid)[...] = data


def write_good(path, libver):
    with h5py.File(path, "w", libver=libver) as f:
        words = WORDS * 50
        f.create_dataset("chunked_utf8", data=words, dtype=UTF8, chunks=(7,))
        f.create_dataset("chunked_ascii", data=[w.encode("ascii", "replace") for w in words],
                         dtype=ASCII, chunks=(16,), maxshape=(None,))
        f.create_dataset("chunked_gzip_2d", data=np.array(words[:240], dtype=object).reshape(20, 12),
                         dtype=UTF8, chunks=(3, 5), compression="gzip", shuffle=True)
        compact(f, "compact_utf8", WORDS, UTF8)
        compact(f, "compact_ascii", [b"one", b"three", b"", b"xy"], ASCII)
        f["record"] = records(WORDS * 3)
        f.create_dataset("record_chunked", data=records(WORDS * 9), chunks=(4,), compression="gzip")
        compact(f, "record_compact", records(WORDS), RECORD)
        ds = f["compact_utf8"]
        ds.attrs["title"] = "wörld"
        ds.attrs.create("names", data=["a", "bb", "ccé"], dtype=UTF8)
        ds.attrs.create("grid", data=np.array(["p", "q", "r", "s"], dtype=object).reshape(2, 2), dtype=UTF8)
        f.attrs.create("tags", data=[b"x", b"yy"], dtype=ASCII)


def write_target(path, target, libver):
    with h5py.File(path, "w", libver=libver) as f:
        f["ok"] = np.arange(10, dtype="<i8")
        words = WORDS * 4
        if target == "chunked":
            f.create_dataset("strings", data=words, dtype=UTF8, chunks=(5,))
        elif target == "chunked_gzip":
            f.create_dataset("strings", data=words, dtype=UTF8, chunks=(5,), compression="gzip")
        elif target == "compact":
            compact(f, "strings", words, UTF8)
        elif target == "attr":
            f["ok"].attrs.create("strings", data=words, dtype=UTF8)
        elif target == "group_attr":
            f.attrs.create("strings", data=words, dtype=UTF8)
        elif target == "record":
            f["strings"] = records(words)
        elif target == "record_chunked":
            f.create_dataset("strings", data=records(words), chunks=(5,))
        elif target == "record_compact":
            compact(f, "strings", records(words), RECORD)


def collection(raw):
    """Offset of the file's one global heap collection and its size field's width (8)."""
    at = raw.find(b"GCOL")
    assert at >= 0 and raw.find(b"GCOL", at + 1) < 0, "one collection"
    return at


def damage_loop(raw):
    at = collection(raw)
    size = struct.unpack_from("<Q", raw, at + 8)[0]
    p, end = at + 16, at + size
    while p + 16 <= end:
        index, obj = struct.unpack_from("<H6xQ", raw, p)
        if index == 0:
            struct.pack_into("<Q", raw, p + 8, 0)
            return
        p += 16 + (obj + 7) // 8 * 8
    raise AssertionError("no free space in the collection")


def damage_length(raw, target):
    at = collection(raw)
    if target == "chunked_gzip":
        raise ValueError("compressed references")
    # Every reference to a "héllo" (6 bytes) in the collection: length, then the address.
    ref = struct.pack("<IQ", len(WORDS[0].encode()), at)
    where = raw.find(ref)
    assert where >= 0, f"{target}: no reference found"
    while where >= 0:
        struct.pack_into("<I", raw, where, 2**31 - 1)
        where = raw.find(ref, where + 1)


def write(out):
    os.makedirs(f"{out}/good", exist_ok=True)
    for libver in ["earliest", "latest"]:
        write_good(f"{out}/good/{libver}.h5", libver)
    names = []
    # With object headers of version 2 (libver latest), a damaged length in a header fails
    # its checksum in libhdf5 itself: only the heap is damaged there.
    cases = [(t, k, "earliest") for t in TARGETS for k in ["loop", "length"]]
    cases += [(t, "loop", "latest") for t in TARGETS]
    for target, kind, libver in cases:
        if kind == "length" and target == "chunked_gzip":
            continue
        path = f"{out}/{target}-{kind}-{libver}.h5"
        write_target(path, target, libver)
        raw = bytearray(open(path, "rb").read())
        damage_loop(raw) if kind == "loop" else damage_length(raw, target)
        open(path, "wb").write(raw)
        names.append(os.path.basename(path))
    print("\n".join(names))


def as_npy(data, utf8):
    values = [v.decode() if utf8 else v for v in data.ravel()]
    return np.array(values).reshape(data.shape)


def check(out, mnt):
    for libver in ["earliest", "latest"]:
        check_file(f"{out}/good/{libver}.h5", f"{mnt}/{libver}.h5")
    print("ok")


def fixed_records(data):
    """h5py's records with each string member fixed-width, as SPEC section 3 says."""
    fields = []
    for name in data.dtype.names:
        base, shape = data.dtype[name].base, data.dtype[name].shape
        if h5py.check_string_dtype(base) is None:
            fields.append((name, data.dtype[name]))
            continue
        utf8 = h5py.check_string_dtype(base).encoding == "utf-8"
        values = [v.decode() if utf8 and isinstance(v, bytes) else v for v in data[name].ravel()]
        fixed = np.array(values if values else [""]).dtype
        fields.append((name, fixed, shape) if shape else (name, fixed))
    out = np.zeros(data.shape, dtype=fields)
    for name in data.dtype.names:
        column = data[name]
        if column.dtype.kind == "O":
            out[name] = np.array([v.decode() if isinstance(v, bytes) and out.dtype[name].base.kind == "U" else v
                                  for v in column.ravel()]).reshape(column.shape)
        else:
            out[name] = column
    return out


def check_file(path, mnt):
    with h5py.File(path, "r") as f:
        for name in ["chunked_utf8", "chunked_ascii", "chunked_gzip_2d", "compact_utf8", "compact_ascii"]:
            check_npy(f"{mnt}/{name}.npy", as_npy(f[name][()], "ascii" not in name), reads=50)
        for name in ["record", "record_chunked", "record_compact"]:
            check_npy(f"{mnt}/{name}.npy", fixed_records(f[name][()]), reads=50)
        attrs = f["compact_utf8"].attrs
        assert xattr(f"{mnt}/compact_utf8.npy", "title") == attrs["title"]
        names = json.loads(xattr(f"{mnt}/compact_utf8.npy", "names"))
        assert names == list(attrs["names"]), names
        grid = json.loads(xattr(f"{mnt}/compact_utf8.npy", "grid"))
        assert grid == attrs["grid"].tolist(), grid
        tags = json.loads(xattr(mnt, "tags"))
        assert tags == list(f.attrs["tags"]), tags


def check_damaged(path, mnt):
    target = os.path.basename(path).split("-")[0]
    with h5py.File(path, "r") as f:
        check_npy(f"{mnt}/ok.npy", f["ok"][()], reads=20)
    if target in ("attr", "group_attr"):
        where = f"{mnt}/ok.npy" if target == "attr" else mnt
        assert "user.h5.strings" not in os.listxattr(where), os.listxattr(where)
    else:
        assert sorted(os.listdir(mnt)) == ["ok.npy"], os.listdir(mnt)
        skipped = os.getxattr(mnt, "user.arrfs.skipped").decode()
        assert skipped.startswith("strings: ") and "global heap" in skipped, skipped
    print("ok")


def xattr(path, name):
    return os.getxattr(path, f"user.h5.{name}").decode()


if __name__ == "__main__":
    {"write": write, "check": check, "check_damaged": check_damaged}[sys.argv[1]](*sys.argv[2:])
