"""HDF5 fixtures written by h5py, and the checks of their virtual tree against h5py itself.

    python hdf5_cases.py write FILE        write every case of the README's type table
    python hdf5_cases.py check FILE MOUNT  compare the mounted tree with h5py's reading
    python hdf5_cases.py check FILE MOUNT libhdf5
                                           the same, for a mount that reads all chunks through
                                           libhdf5 (LZF through arrfs's registered decoder)
    python hdf5_cases.py check FILE MOUNT [libhdf5] driver
                                           the same, for a mount whose libhdf5 reads the file
                                           through arrfs's HDF5 driver (ARRFS_HDF5_VFD=1): the
                                           external link is left out, for want of a path
"""
import errno
import os
import stat
import sys

import h5py
import numpy as np

from oracle import check_npy

rng = np.random.default_rng(42)

NUMERIC = [f"{o}{k}{n}" for o in "<>" for k, n in [("i", 1), ("i", 2), ("i", 4), ("i", 8), ("u", 1),
           ("u", 2), ("u", 4), ("u", 8), ("f", 2), ("f", 4), ("f", 8), ("c", 8), ("c", 16)]]


def write(path):
    ext = path + ".ext.h5"
    with h5py.File(ext, "w") as e:
        e["target"] = np.arange(5, dtype="<i2")
    with h5py.File(path, "w", userblock_size=512) as f:
        num = f.create_group("numeric")
        for code in NUMERIC:
            data = (rng.standard_normal((4, 5)) * 100)
            if np.dtype(code).kind == "c":
                data = data + 1j * data[::-1]
            num.create_dataset(code.replace("<", "le_").replace(">", "be_"), data=data.astype(code))
        f["bool"] = rng.integers(0, 2, 17).astype(bool)
        f.create_dataset("enum", data=np.array([0, 1, 1, 0], dtype="i2"),
                         dtype=h5py.enum_dtype({"RED": 0, "GREEN": 1}, basetype="i2"))
        inner = np.dtype([("x", "<f4"), ("y", ">i2")])
        comp = np.dtype([("a", "<i4"), ("b", "<f8", (3,)), ("c", inner), ("d", "S3")])
        arr = np.zeros(6, dtype=comp)
        arr["a"] = np.arange(6)
        arr["b"] = rng.standard_normal((6, 3))
        arr["c"]["x"] = rng.standard_normal(6)
        arr["c"]["y"] = np.arange(6)
        arr["d"] = [b"ab", b"cde", b"", b"x", b"yz", b"q"]
        f["compound"] = arr
        typed = f.create_dataset("array_typed", shape=(4,), dtype=np.dtype(("<f4", (2, 3))))
        typed[...] = rng.standard_normal((4, 2, 3)).astype("<f4")
        bits = h5py.h5d.create(f.id, b"bitfield", h5py.h5t.STD_B16BE, h5py.h5s.create_simple((3,)))
        bits.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array([1, 2, 65535], dtype=">u2"))
        f["fixed_str"] = np.array([b"alpha", b"be", b"gamma!"], dtype="S6")
        f.create_dataset("vlen_utf8", data=["héllo", "", "wörld ∑", "a"], dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("vlen_ascii", data=[b"one", b"three", b"xy"], dtype=h5py.string_dtype("ascii"))
        f["opaque"] = np.array([b"\x01\x02\x03\x04\x05\x06\x07\x08", b"abcdefgh"], dtype="V8")
        f["scalar"] = np.float64(3.25)
        f["scalar_str"] = np.bytes_(b"just bytes")
        f["empty"] = np.zeros((0, 3), dtype="<i4")
        f.create_dataset("gzip3d", data=rng.standard_normal((33, 17, 9)).astype("<f4"),
                         chunks=(8, 5, 4), compression="gzip", compression_opts=4, shuffle=True)
        sparse = f.create_dataset("sparse", shape=(40, 30), chunks=(10, 10), dtype="<i8", fillvalue=7)
        sparse[12:18, 3:9] = np.arange(36).reshape(6, 6)
        f.create_dataset("fletcher", data=np.arange(1000, dtype=">u2"), chunks=(100,), fletcher32=True)
        write_chunked(f)
        write_padded_strings(f)
        write_more_types(f)
        f.create_dataset("big_contig", data=np.arange(300_000, dtype="<f8").reshape(1000, 300))
        # Left out, with a reason in user.arrfs.skipped.
        f.create_dataset("refs", data=[f["bool"].ref], dtype=h5py.ref_dtype)
        f.create_dataset("vlen_ints", shape=(2,), dtype=h5py.vlen_dtype("i4"))
        f["null"] = h5py.Empty("f")
        # Links.
        f["links/soft"] = h5py.SoftLink("/numeric/le_f8")
        f["links/soft_group"] = h5py.SoftLink("/numeric")
        f["links/soft_chain"] = h5py.SoftLink("soft")
        f["links/dangling"] = h5py.SoftLink("/no/such/thing")
        f["links/hard"] = f["bool"]
        f["links/external"] = h5py.ExternalLink(os.path.basename(ext), "/target")
        f["links/external_missing"] = h5py.ExternalLink("missing.h5", "/x")
        # Attributes.
        f.attrs["title"] = "arrfs fixture"
        f.attrs["count"] = np.int64(42)
        f["numeric"].attrs["scale"] = 2.5
        f["bool"].attrs["vector"] = np.array([1, 2, 3], dtype="i4")
        f["bool"].attrs["units"] = b"m/s"


CHUNKED = ["lzf2d", "shuffle_i2", "lzf_raw", "masked", "be_all_filters", "compound_gzip", "never_written",
           "scaleoffset", "array_chunked"]


def write_chunked(f):
    """Chunked datasets for the direct chunk path (and the ones it leaves to libhdf5)."""
    f.create_dataset("lzf2d", data=rng.standard_normal((50, 37)).round(2), chunks=(16, 10),
                     compression="lzf", shuffle=True)
    # Shuffle of 2-byte elements, with partial edge chunks.
    f.create_dataset("shuffle_i2", data=rng.integers(-30000, 30000, (41, 33)).astype("<i2"),
                     chunks=(16, 8), compression="gzip", shuffle=True)
    # Incompressible: LZF gives up and HDF5 stores the chunks raw, the filter marked skipped.
    f.create_dataset("lzf_raw", data=rng.integers(0, 256, 2500, dtype="u1"), chunks=(1000,),
                     compression="lzf")
    masked = f.create_dataset("masked", data=np.arange(25, dtype="<i4"), chunks=(10,),
                              compression="gzip")
    masked.id.write_direct_chunk((10,), (np.arange(10, dtype="<i4") * -3).tobytes(), filter_mask=1)
    f.create_dataset("be_all_filters", data=rng.integers(-1000, 1000, (30, 40)).astype(">i4"),
                     chunks=(7, 9), compression="gzip", compression_opts=9, shuffle=True,
                     fletcher32=True)
    comp = np.dtype([("a", "<i2"), ("b", ">f8")])
    data = np.zeros(70, dtype=comp)
    data["a"], data["b"] = np.arange(70), rng.standard_normal(70)
    f.create_dataset("compound_gzip", data=data, chunks=(16,), compression="gzip")
    f.create_dataset("never_written", shape=(5, 6), chunks=(2, 4), dtype="<f4", fillvalue=-1.5,
                     compression="gzip")
    f.create_dataset("scaleoffset", data=rng.integers(0, 500, 300).astype("<i4"), chunks=(64,),
                     scaleoffset=0)
    typed = f.create_dataset("array_chunked", shape=(9,), chunks=(4,), dtype=np.dtype(("<u2", (3,))),
                             compression="gzip", shuffle=True)
    typed[...] = np.arange(27, dtype="<u2").reshape(9, 3)


PADDED = [f"padded/{pad}_{cset}{chunked}" for pad in ["nullterm", "nullpad", "spacepad"]
          for cset in ["ascii", "utf8"] for chunked in ["", "_gzip"]] + ["padded/compound_spacepad"]


def padded_string_type(pad, cset, size):
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(size)
    tid.set_strpad(getattr(h5py.h5t, "STR_" + pad.upper()))
    tid.set_cset(getattr(h5py.h5t, "CSET_" + cset.upper()))
    return tid


def write_padded_strings(f):
    """Fixed strings under each padding, their stored bytes written as they are (memory type =
    file type): h5py strips space padding and ends null-terminated values at their first null."""
    values = [b"ab cd ef1", b"x  ", b"", b"full-width!", b"a\0b", b" lead"]
    grp = f.create_group("padded")
    for name in PADDED[:-1]:
        pad, cset = name.split("/")[1].split("_")[:2]
        tid = padded_string_type(pad, cset, 11)
        filler = b" " if pad == "spacepad" else b"\0"
        raw = np.array([v.ljust(11, filler) for v in values], dtype="S11").reshape(2, 3)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        if name.endswith("_gzip"):
            dcpl.set_chunk((1, 2))
            dcpl.set_deflate(4)
        leaf = name.split("/")[1].encode()
        ds = h5py.h5d.create(grp.id, leaf, tid, h5py.h5s.create_simple((2, 3)), dcpl=dcpl)
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, raw.view("V11").copy(), mtype=tid)
    comp = h5py.h5t.create(h5py.h5t.COMPOUND, 16)
    comp.insert(b"n", 0, h5py.h5t.STD_I32LE)
    comp.insert(b"s", 4, padded_string_type("spacepad", "ascii", 12))
    raw = np.zeros(3, dtype=[("n", "<i4"), ("s", "S12")])
    raw["n"], raw["s"] = [1, 2, 3], [b"ab  ".ljust(12), b"".ljust(12), b"abcdefghijkl"]
    ds = h5py.h5d.create(grp.id, b"compound_spacepad", comp, h5py.h5s.create_simple((3,)))
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, raw, mtype=comp)


MORE_TYPES = ["types/long_double", "types/long_double_gzip", "types/compound_out_of_order",
              "types/compound_gaps_gzip"]


def write_more_types(f):
    """Long double (x86-64's 80-bit extended in 16 bytes) and compounds whose members are
    stored out of offset order, nested, with gaps and trailing padding."""
    ld = np.array([1.5, np.inf, -np.inf, np.nan, 1e-4940, 3.3, -0.0, 1e4000], dtype=np.longdouble)
    f["types/long_double"] = ld / 3
    with np.errstate(invalid="ignore"):
        square = np.outer(ld, ld[:5])
    f.create_dataset("types/long_double_gzip", data=square, chunks=(3, 2),
                     compression="gzip", shuffle=True)
    inner = h5py.h5t.create(h5py.h5t.COMPOUND, 16)
    inner.insert(b"q", 8, h5py.h5t.IEEE_F32BE)
    inner.insert(b"p", 0, h5py.h5t.STD_U8LE)
    outer = h5py.h5t.create(h5py.h5t.COMPOUND, 48)
    outer.insert(b"b", 8, h5py.h5t.IEEE_F64LE)
    outer.insert(b"a", 0, h5py.h5t.STD_I32LE)
    outer.insert(b"nested", 20, inner)
    outer.insert(b"c", 40, h5py.h5t.STD_I16BE)
    mem = h5py.h5t.create(h5py.h5t.COMPOUND, 48)  # the same layout, to write raw bytes
    for i in range(outer.get_nmembers()):
        mem.insert(outer.get_member_name(i), outer.get_member_offset(i), outer.get_member_type(i))
    raw = rng.integers(0, 256, 48 * 5, dtype="u1").view("V48")
    ds = h5py.h5d.create(f["types"].id, b"compound_out_of_order", outer, h5py.h5s.create_simple((5,)))
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, raw, mtype=mem)
    gaps = np.dtype({"names": ["x", "y", "z"], "formats": ["<i2", "<f4", "S3"],
                     "offsets": [2, 8, 13], "itemsize": 24})
    data = np.zeros(50, dtype=gaps)
    data["x"], data["y"], data["z"] = np.arange(50), rng.standard_normal(50), b"abc"
    f.create_dataset("types/compound_gaps_gzip", data=data, chunks=(16,), compression="gzip")
    # Arrays of variable-length strings: in a scalar dataset, in a 1-d one, chunked.
    utf8 = f.create_dataset("types/vlen_array_utf8", shape=(), dtype=np.dtype((h5py.string_dtype(), (2, 3))))
    utf8[()] = np.array([["a", "héllo", ""], ["∑x", "b", "cc"]], dtype=object)
    ascii_ = f.create_dataset("types/vlen_array_ascii", shape=(3,),
                              dtype=np.dtype((h5py.string_dtype("ascii"), (2,))))
    ascii_[...] = np.array([[b"x", b"yy"], [b"", b"zzz"], [b"q", b"r"]], dtype=object)
    chunked = f.create_dataset("types/vlen_array_gzip", shape=(7,), chunks=(3,), compression="gzip",
                               dtype=np.dtype((h5py.string_dtype(), (2,))))
    chunked[:5] = np.array([[str(i) * i, "é" * (i % 3)] for i in range(5)], dtype=object)


    # Variable-length strings inside compounds (members in any order).
    rec = np.dtype([("id", "<i4"), ("name", h5py.string_dtype()), ("x", "<f8", (2,)),
                    ("tag", h5py.string_dtype("ascii")), ("flag", "?")])
    data = np.zeros(5, dtype=rec)
    data["id"], data["x"], data["flag"] = np.arange(5), rng.standard_normal((5, 2)), [1, 0, 1, 1, 0]
    data["name"] = ["héllo", "", "∑ab", "x", "plain"]
    data["tag"] = [b"a", b"bcd", b"", b"zz", b"q"]
    f["types/vlen_compound"] = data
    f.create_dataset("types/vlen_compound_gzip", data=np.tile(data, 9), chunks=(8,), compression="gzip")
    f["types/vlen_compound_scalar"] = data[2]
    empty = np.zeros(2, dtype=[("s", h5py.string_dtype()), ("n", "<u2")])
    empty["s"] = ["", ""]
    f["types/vlen_compound_empty_strings"] = empty
    # Members that are arrays of variable-length strings (as PyTables writes them).
    arrays = np.zeros(4, dtype=[("id", "<i4"), ("names", h5py.string_dtype("ascii"), (3,)),
                                ("u", h5py.string_dtype(), (2,))])
    arrays["id"] = np.arange(4)
    arrays["names"] = [[b"a", b"bb", b""], [b"ccc", b"d", b"e"], [b"", b"", b""], [b"xyzw", b"q", b"r"]]
    arrays["u"] = [["é", ""], ["∑∑", "x"], ["", ""], ["long-ish", "ü"]]
    f.create_dataset("types/vlen_compound_arrays", data=arrays, chunks=(3,), compression="gzip")
    # A variable-length string beside a space-padded fixed one (stored padded, read stripped).
    mixed = np.zeros(3, dtype=[("id", "<i4"), ("s", h5py.string_dtype()), ("p", "S5")])
    mixed["id"], mixed["s"], mixed["p"] = [1, 2, 3], ["x", "", "yz"], [b"ab", b"", b"abcde"]
    logical = h5py.h5t.py_create(mixed.dtype, logical=True)
    ftype = h5py.h5t.create(h5py.h5t.COMPOUND, logical.get_size())  # h5py's layout, "p" padded
    for i in range(3):
        member = padded_string_type("spacepad", "ascii", 5) if i == 2 else logical.get_member_type(i)
        ftype.insert(logical.get_member_name(i), logical.get_member_offset(i), member)
    ds = h5py.h5d.create(f["types"].id, b"vlen_compound_spacepad", ftype, h5py.h5s.create_simple((3,)))
    # h5py's own memory type for Python objects converts them to variable-length strings.
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, mixed, mtype=h5py.h5t.py_create(mixed.dtype))


VLEN_RECORDS = ["types/vlen_compound", "types/vlen_compound_gzip", "types/vlen_compound_scalar",
                "types/vlen_compound_empty_strings", "types/vlen_compound_arrays",
                "types/vlen_compound_spacepad"]


def fixed_records(data):
    """h5py's records with each string member (Python objects) as a fixed-width string of its
    longest value (at least 1; UTF-8 decoded to <U n, ASCII kept |S n; arrays of strings
    keep their shape), packed in h5py's member order: SPEC section 3 for strings, applied to
    members."""
    fields, columns = [], {}
    for name in data.dtype.names:
        sub = data.dtype.fields[name][0]
        info = h5py.check_string_dtype(sub.base)
        if info is None:
            fields.append((name, sub))
            columns[name] = data[name]
            continue
        values = [v.decode() if info.encoding == "utf-8" else v for v in np.ravel(data[name])]
        kind = "U" if info.encoding == "utf-8" else "S"
        width = max([1] + [len(v) for v in values])
        fields.append((name, f"{kind}{width}", sub.shape))
        columns[name] = np.array(values, dtype=f"{kind}{width}").reshape(np.shape(data[name]))
    out = np.zeros(data.shape, dtype=fields)
    for name, column in columns.items():
        out[name] = column
    return out


VLEN_ARRAYS = {"types/vlen_array_utf8": True, "types/vlen_array_ascii": False,
               "types/vlen_array_gzip": True}


def offset_order(dtype):
    """`dtype` with its fields (and nested ones) listed by offset: np.save cannot write
    out-of-order fields, so arrfs lists them by offset, over the same bytes."""
    if dtype.names is None:
        if dtype.subdtype is not None:
            return np.dtype((offset_order(dtype.subdtype[0]), dtype.subdtype[1]))
        return dtype
    names = sorted(dtype.names, key=lambda n: dtype.fields[n][1])
    return np.dtype({"names": names, "formats": [offset_order(dtype.fields[n][0]) for n in names],
                     "offsets": [dtype.fields[n][1] for n in names], "itemsize": dtype.itemsize})


def expected_files(f):
    """Virtual path -> the array np.load must return, from h5py's own reading."""
    out = {}
    for code in NUMERIC:
        name = code.replace("<", "le_").replace(">", "be_")
        out[f"numeric/{name}.npy"] = f["numeric"][name][()]
    for name in ["bool", "enum", "compound", "array_typed", "fixed_str", "opaque", "scalar",
                 "scalar_str", "empty", "bitfield", "gzip3d", "sparse", "fletcher", "big_contig"] + CHUNKED:
        out[f"{name}.npy"] = np.asarray(f[name][()])
    out["vlen_utf8.npy"] = np.array([s.decode() for s in f["vlen_utf8"][()]])
    out["vlen_ascii.npy"] = np.array(list(f["vlen_ascii"][()]))
    for name in PADDED:
        out[f"{name}.npy"] = f[name][()]
    for name, utf8 in VLEN_ARRAYS.items():
        # h5py gives bytes objects; per SPEC section 3 UTF-8 ones become <U n, ASCII |S n.
        data = f[name][()]
        values = [v.decode() if utf8 else v for v in data.ravel()]
        out[f"{name}.npy"] = np.array(values).reshape(data.shape)
    for name in VLEN_RECORDS:
        out[f"{name}.npy"] = fixed_records(np.asarray(f[name][()]))
    for name in MORE_TYPES:
        data = f[name][()]
        out[f"{name}.npy"] = data.view(offset_order(data.dtype))
    out["links/hard.npy"] = f["bool"][()]
    out["links/external.npy"] = f["links/external"][()]
    return out



def check(path, mnt, modes=()):
    with h5py.File(path, "r") as f:
        files = expected_files(f)
    if "driver" in modes:
        del files["links/external.npy"]
        line = next(l for l in xattr(f"{mnt}/links", "user.arrfs.skipped").splitlines()
                    if l.startswith("external: "))
        assert "read through arrfs's driver" in line, line
    for rel, array in sorted(files.items()):
        try:
            check_npy(os.path.join(mnt, rel), array)
        except Exception as e:
            raise AssertionError(f"{rel}: {e}") from e
    check_tree(path, mnt, files)
    print(f"{len(files)} files checked")


def xattr(p, name):
    return os.getxattr(p, name, follow_symlinks=False).decode()


def check_tree(path, mnt, files):
    listed = set()
    for root, dirs, names in os.walk(mnt):
        for n in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            listed.add(os.path.relpath(os.path.join(root, n), mnt))
    # A link to a dataset is named like its target, NAME.npy; to a group or nowhere, NAME.
    links = {"links/soft.npy", "links/soft_group", "links/dangling", "links/soft_chain.npy"}
    assert listed == set(files) | links, f"unexpected listing: {sorted(listed ^ (set(files) | links))}"
    # Symbolic links point, relatively, at the target's virtual path.
    assert os.readlink(f"{mnt}/links/soft.npy") == "../numeric/le_f8.npy"
    assert os.readlink(f"{mnt}/links/soft_chain.npy") == "../links/soft.npy"
    assert os.readlink(f"{mnt}/links/soft_group") == "../numeric"
    assert os.readlink(f"{mnt}/links/dangling") == "../no/such/thing"
    for link in ["soft", "soft_chain"]:
        assert np.array_equal(np.load(f"{mnt}/links/{link}.npy"), files["numeric/le_f8.npy"])
    # Hard links share one inode; st_nlink counts the links.
    a, b = os.stat(f"{mnt}/bool.npy"), os.stat(f"{mnt}/links/hard.npy")
    assert a.st_ino == b.st_ino and a.st_nlink == 2, (a, b)
    # Modes, owner, mtime.
    assert stat.S_IMODE(a.st_mode) == 0o444 and stat.S_IMODE(os.stat(f"{mnt}/numeric").st_mode) == 0o555
    assert a.st_uid == os.getuid()
    assert int(a.st_mtime) == int(os.stat(path).st_mtime)
    # Attributes as xattrs.
    assert xattr(mnt, "user.h5.title") == "arrfs fixture"
    assert xattr(mnt, "user.h5.count") == "42"
    assert xattr(f"{mnt}/numeric", "user.h5.scale") == "2.5"
    assert xattr(f"{mnt}/bool.npy", "user.h5.vector") == "[1,2,3]"
    assert xattr(f"{mnt}/bool.npy", "user.h5.units") == "m/s"
    assert xattr(f"{mnt}/gzip3d.npy", "user.arrfs.chunks") == "[8, 5, 4]"
    assert xattr(f"{mnt}/gzip3d.npy", "user.arrfs.filters") == "shuffle,deflate(4)"
    assert xattr(f"{mnt}/gzip3d.npy", "user.arrfs.shape") == "[33, 17, 9]"
    assert xattr(f"{mnt}/numeric/be_f8.npy", "user.arrfs.dtype") == "'>f8'"
    skipped = xattr(mnt, "user.arrfs.skipped")
    for name in ["refs", "vlen_ints", "null"]:
        assert f"{name}: " in skipped, skipped
    assert "external_missing: " in xattr(f"{mnt}/links", "user.arrfs.skipped")
    # Only `user.` attributes exist: others are not supported (so `ls -l` stops asking for
    # SELinux labels and ACLs), a missing `user.` one is absent.
    for p, name, code in [(f"{mnt}/bool.npy", "security.selinux", errno.EOPNOTSUPP),
                          (mnt, "system.posix_acl_access", errno.EOPNOTSUPP),
                          (f"{mnt}/bool.npy", "user.h5.missing", errno.ENODATA)]:
        try:
            xattr(p, name)
        except OSError as e:
            assert e.errno == code, (name, e)
        else:
            raise AssertionError(f"{name} has a value")
    # Read-only everywhere.
    for attempt in [lambda: open(f"{mnt}/bool.npy", "r+b"), lambda: open(f"{mnt}/new.npy", "wb"),
                    lambda: os.mkdir(f"{mnt}/d"), lambda: os.unlink(f"{mnt}/bool.npy"),
                    lambda: os.rename(f"{mnt}/bool.npy", f"{mnt}/b.npy"),
                    lambda: os.setxattr(f"{mnt}/bool.npy", "user.x", b"1"),
                    lambda: os.chmod(f"{mnt}/bool.npy", 0o644)]:
        try:
            attempt()
        except OSError as e:
            assert e.errno == errno.EROFS, e
        else:
            raise AssertionError("a write succeeded")


if __name__ == "__main__":
    {"write": lambda: write(sys.argv[2]), "check": lambda: check(sys.argv[2], sys.argv[3], sys.argv[4:])}[sys.argv[1]]()
