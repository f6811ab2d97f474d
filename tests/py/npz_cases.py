"""NPZ / zip / .npy / .npy.gz / directory fixtures, written by numpy, zipfile, gzip and h5py,
and the checks of their mounted trees against those same libraries.

    python npz_cases.py write DIR               every good fixture, in DIR
    python npz_cases.py check SOURCE MOUNT      the mounted tree of SOURCE (file or directory)
    python npz_cases.py write-bad DIR           truncated and corrupt fixtures
    python npz_cases.py write-bomb FILE         a zip of 1 GiB of zeros
    python npz_cases.py write-small FILE        a tiny npz (copied many times)
    python npz_cases.py check-flipped MOUNT     member a.npy fails with EIO, b.npy still reads
    python npz_cases.py read-through FILE       reads FILE to the end, checks it is all zeros
    python npz_cases.py check-broken-tree MOUNT a corrupt container lists empty, the rest reads
"""
import errno
import gzip
import io
import os
import sys
import zipfile

import h5py
import numpy as np

from oracle import check_bytes, check_npy

NPY_MAGIC = b"\x93NUMPY"
rng = np.random.default_rng(7)


def arrays():
    """Arrays of every kind an npz holds; one is large enough for several seek points."""
    return {
        "big": np.cumsum(rng.standard_normal(1_200_000)).astype("<f8"),
        "ints": np.arange(-50, 50, dtype=">i4").reshape(10, 10),
        "scalar": np.float32(2.5) * np.ones((), dtype="<f4"),
        "empty": np.zeros((0, 3), dtype="<u2"),
        "fortran": np.asfortranarray(np.arange(12, dtype="<i8").reshape(3, 4)),
        "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i2"), ("b", "<f8")]),
        "text": np.array(["alpha", "béta"], dtype="<U5"),
    }


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def write_zip64(path):
    """Python's zipfile with ZIP64 records, nested paths, raw and magic-only members."""
    data = arrays()
    with zipfile.ZipFile(path, "w") as z:
        with z.open(zipfile.ZipInfo("deep/er/big.npy"), "w", force_zip64=True) as f:
            f.write(npy(data["big"]))
        info = zipfile.ZipInfo("deep/stored.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            f.write(npy(data["ints"]))
        z.writestr("deep/", b"")
        z.writestr(zipfile.ZipInfo("notes.txt"), b"not an array\n" * 100, zipfile.ZIP_DEFLATED)
        z.writestr("magic_only", npy(data["structured"]), zipfile.ZIP_DEFLATED)
        z.writestr("stored_magic", npy(data["text"]), zipfile.ZIP_STORED)
        z.writestr("empty.bin", b"", zipfile.ZIP_DEFLATED)


def write_h5(path):
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(24, dtype="<i4").reshape(4, 6)
        f.create_group("g")["y"] = np.linspace(0, 1, 7)


def write(out):
    os.makedirs(out, exist_ok=True)
    data = arrays()
    np.savez(f"{out}/plain.npz", **data)
    np.savez_compressed(f"{out}/compressed.npz", **data)
    write_zip64(f"{out}/zip64.zip")
    np.save(f"{out}/single.npy", data["ints"])
    with gzip.open(f"{out}/wrapped.npy.gz", "wb") as f:
        f.write(npy(data["big"]))
    tree = f"{out}/tree"
    os.makedirs(f"{tree}/sub/deeper", exist_ok=True)
    np.savez_compressed(f"{tree}/a.npz", x=data["ints"], y=data["structured"])
    np.savez(f"{tree}/sub/b.npz", z=data["text"])
    write_h5(f"{tree}/sub/c.h5")
    np.save(f"{tree}/sub/deeper/d.npy", data["fortran"])
    np.save(f"{tree}/big.npy", data["big"])
    with gzip.open(f"{tree}/e.npy.gz", "wb") as f:
        f.write(npy(data["scalar"]))
    with open(f"{tree}/stray.txt", "w") as f:
        f.write("not a container\n")
    with zipfile.ZipFile(f"{tree}/empty.zip", "w"):
        pass


def kind_of(path):
    """The container kind by magic bytes, as the README says (detection by first bytes) (None: not shown)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if h5py.is_hdf5(path):
        return "hdf5"
    return None


def files_under(mount):
    out = set()
    for root, _, files in os.walk(mount):
        out.update(os.path.relpath(os.path.join(root, f), mount) for f in files)
    return out


def check_npy_bytes(path, raw, via):
    """A member that is .npy bytes: served unchanged, and loads (mmap too) like numpy's."""
    check_bytes(path, raw, reads=100)
    expected = np.load(io.BytesIO(raw))
    for mode in (None, "r"):
        got = np.load(path, mmap_mode=mode)
        assert got.dtype == expected.dtype and got.shape == expected.shape, f"{path}: {got.dtype}{got.shape}"
        assert np.array_equal(np.asarray(got), expected), f"{path}: values differ from {via}"


def check_zip(src, mount):
    expected = set()
    with zipfile.ZipFile(src) as z:
        for info in z.infolist():
            if info.is_dir():
                continue
            raw = z.read(info)
            name = info.filename
            if not name.endswith(".npy") and raw.startswith(NPY_MAGIC):
                name += ".npy"
            expected.add(name)
            path = os.path.join(mount, name)
            if name.endswith(".npy"):
                check_npy_bytes(path, raw, f"zipfile {info.filename}")
            else:
                check_bytes(path, raw, reads=50)
    assert files_under(mount) == expected, f"{src}: {sorted(files_under(mount))} != {sorted(expected)}"
    if src.endswith(".npz"):
        with np.load(src) as npz:
            for key in npz.files:
                got = np.load(os.path.join(mount, key + ".npy"), mmap_mode="r")
                assert np.array_equal(np.asarray(got), npz[key]), f"{src}: {key}"
    return len(expected)


def check_gzip(src, mount):
    stem = os.path.basename(src)[:-3]
    with gzip.open(src, "rb") as f:
        raw = f.read()
    check_npy_bytes(os.path.join(mount, stem), raw, "gzip")
    assert files_under(mount) == {stem}, files_under(mount)
    return 1


def check_hdf5(src, mount):
    count = 0
    with h5py.File(src, "r") as f:
        def visit(name, obj):
            nonlocal count
            if isinstance(obj, h5py.Dataset):
                check_npy(os.path.join(mount, name + ".npy"), obj[()], reads=50)
                count += 1
        f.visititems(visit)
    return count


def check_single_npy(src, mount):
    name = os.path.basename(src)
    with open(src, "rb") as f:
        check_npy_bytes(os.path.join(mount, name), f.read(), "the file")
    return 1


def check_tree(src, mount):
    """Every container appears as a directory of the same name, .npy files as themselves,
    other files not at all."""
    count = 0
    shown = set(os.listdir(mount))
    wanted = set()
    for name in sorted(os.listdir(src)):
        path, virtual = os.path.join(src, name), os.path.join(mount, name)
        if os.path.isdir(path):
            wanted.add(name)
            count += check_tree(path, virtual)
            continue
        kind = kind_of(path)
        if kind is None:
            continue
        wanted.add(name)
        if kind == "npy":
            with open(path, "rb") as f:
                check_npy_bytes(virtual, f.read(), "the file")
            count += 1
        else:
            assert os.path.isdir(virtual), f"{virtual} is not a directory"
            count += CHECKS[kind](path, virtual)
    assert shown == wanted, f"{mount}: {sorted(shown)} != {sorted(wanted)}"
    return count


CHECKS = {"zip": check_zip, "gzip": check_gzip, "hdf5": check_hdf5, "npy": check_single_npy}


def check(src, mount):
    if os.path.isdir(src):
        count = check_tree(src, mount)
    else:
        count = CHECKS[kind_of(src)](src, mount)
    assert count > 0
    print(f"{count} files checked")


def flip_byte_in_member(path, member, at=0.5):
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
        start = info.header_offset + 30 + int(name_len) + int(extra_len)
        pos = start + int(info.compress_size * at)
        f.seek(pos)
        byte = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([byte ^ 0x55]))


def write_bad(out):
    os.makedirs(out, exist_ok=True)
    data = arrays()
    np.savez(f"{out}/whole.npz", a=data["big"], b=data["ints"])
    with open(f"{out}/whole.npz", "rb") as f:
        whole = f.read()
    with zipfile.ZipFile(f"{out}/whole.npz") as z:
        cd_start = z.start_dir  # where the central directory begins
    with open(f"{out}/cut_member.npz", "wb") as f:
        f.write(whole[: len(whole) // 2])
    with open(f"{out}/cut_directory.npz", "wb") as f:
        f.write(whole[: cd_start + 30])
    os.remove(f"{out}/whole.npz")
    np.savez_compressed(f"{out}/flipped.npz", a=data["big"], b=data["ints"])
    flip_byte_in_member(f"{out}/flipped.npz", "a.npy")
    np.savez(f"{out}/flipped_stored.npz", a=data["big"], b=data["ints"])
    flip_byte_in_member(f"{out}/flipped_stored.npz", "a.npy")
    tree = f"{out}/broken_tree"
    os.makedirs(tree, exist_ok=True)
    np.savez(f"{tree}/good.npz", x=data["ints"])
    with open(f"{tree}/bad.npz", "wb") as f:
        f.write(whole[: len(whole) // 3])
    with open(f"{tree}/bad.h5", "wb") as f:
        f.write(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)


def write_bomb(path):
    """1 GiB of zeros deflated into about 1 MiB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("zeros.bin", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(1024):
                f.write(block)


def expect_eio(action, what):
    try:
        action()
    except OSError as e:
        assert e.errno == errno.EIO, f"{what}: {e}"
    else:
        raise AssertionError(f"{what}: no error")


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def check_flipped(mount):
    expect_eio(lambda: read_all(f"{mount}/a.npy"), "a.npy read whole")
    expect_eio(lambda: read_all(f"{mount}/a.npy"), "a.npy read again")
    got = np.load(f"{mount}/b.npy")
    assert np.array_equal(got, arrays()["ints"]), "b.npy"
    print("flipped member fails, the other reads")


def check_flipped_stored(mount):
    """A stored member is served by pread: the corruption shows when its CRC-32 is checked,
    at the end of a front-to-back read, so np.load raises rather than return wrong data."""
    try:
        np.load(f"{mount}/a.npy")
    except (OSError, ValueError) as e:  # EIO, or numpy's short read when the kernel stops
        print(f"np.load raised: {e}")   # at the page that failed
    else:
        raise AssertionError("np.load of the corrupt a.npy returned data")
    expect_eio(lambda: read_all(f"{mount}/a.npy"), "a.npy read again")
    assert np.array_equal(np.load(f"{mount}/b.npy"), arrays()["ints"]), "b.npy"
    print("flipped stored member fails, the other reads")


def check_verify_open(mount):
    """With -o verify=open a corrupt member fails from its first read on."""
    def head():
        with open(f"{mount}/a.npy", "rb") as f:
            return f.read(64)
    expect_eio(head, "first bytes of a.npy")
    assert np.array_equal(np.load(f"{mount}/b.npy"), arrays()["ints"]), "b.npy"
    print("corrupt member refused from its first read, the other reads")


def read_through(path):
    total = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while chunk := os.read(fd, 1 << 20):
            assert not any(chunk), f"non-zero byte near {total}"
            total += len(chunk)
    finally:
        os.close(fd)
    assert total == os.stat(path).st_size == 1 << 30, total
    print(f"{total} bytes read")


def check_broken_tree(mount):
    assert sorted(os.listdir(mount)) == ["bad.h5", "bad.npz", "good.npz"], os.listdir(mount)
    for name in ["bad.npz", "bad.h5"]:
        path = f"{mount}/{name}"
        assert os.path.isdir(path) and os.listdir(path) == [], name
        reason = os.getxattr(path, "user.arrfs.skipped").decode()
        assert reason.startswith(f"{name}: "), reason
    assert np.array_equal(np.load(f"{mount}/good.npz/x.npy"), arrays()["ints"])
    print("broken containers list empty with a reason, the rest reads")


if __name__ == "__main__":
    {
        "write": lambda: write(sys.argv[2]),
        "check": lambda: check(sys.argv[2], sys.argv[3]),
        "write-bad": lambda: write_bad(sys.argv[2]),
        "write-bomb": lambda: write_bomb(sys.argv[2]),
        "write-small": lambda: np.savez(sys.argv[2], x=np.arange(10, dtype="<i8")),
        "check-flipped": lambda: check_flipped(sys.argv[2]),
        "check-flipped-stored": lambda: check_flipped_stored(sys.argv[2]),
        "check-verify-open": lambda: check_verify_open(sys.argv[2]),
        "read-through": lambda: read_through(sys.argv[2]),
        "check-broken-tree": lambda: check_broken_tree(sys.argv[2]),
    }[sys.argv[1]]()
