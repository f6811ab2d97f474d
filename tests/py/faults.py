"""Fixtures and checks of tests/faults.rs.

    python faults.py write DIR                  data.h5, stored.npz, deflated.npz, data.pkl
    python faults.py write-many-members FILE N  an npz of N small arrays
    python faults.py open-many FILE MOUNT       opens every member at once, then reads each
    python faults.py write-containers DIR N     N small npz files
    python faults.py load SRC MOUNT SECONDS     8 threads read whole files at once; reads that
                                                fail with EIO/EMFILE are counted; JSON figures
    python faults.py check-all SRC MOUNT        every file, one at a time, must read correctly
                                                (zip members as stored; .h5 and .pkl files
                                                as np.save of what h5py and pickle read)
"""
import errno
import io
import json
import os
import pickle
import resource
import sys
import threading
import time
import zipfile

import h5py
import numpy as np


def big(seed):
    return np.random.default_rng(seed).standard_normal(400_000)


def write(out):
    os.makedirs(out, exist_ok=True)
    with h5py.File(f"{out}/data.h5", "w") as f:
        f["contiguous"] = big(1)
        f.create_dataset("chunked", data=big(2), chunks=(10_000,), compression="gzip")
    np.savez(f"{out}/stored.npz", a=big(3))
    np.savez_compressed(f"{out}/deflated.npz", a=big(4))
    with open(f"{out}/data.pkl", "wb") as f:
        pickle.dump({"a": big(5)}, f, protocol=5)


def write_many_members(path, n):
    np.savez(path, **{f"m{i}": np.arange(i % 50, dtype="<i4") for i in range(n)})


def open_many(path, mount):
    with zipfile.ZipFile(path) as z:
        expected = {name: z.read(name) for name in z.namelist()}
    want = len(expected) + 100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    files = {name: open(f"{mount}/{name}", "rb") for name in expected}
    for name, f in files.items():
        if f.read() != expected[name]:
            raise AssertionError(f"{name} differs")
    for f in files.values():
        f.close()
    print(f"{len(files)} files open at once, all read correctly")


def write_containers(out, n):
    os.makedirs(out, exist_ok=True)
    for i in range(n):
        np.savez(f"{out}/c{i:03}.npz", a=np.arange(20_000 + i, dtype="<i8"), b=np.full(100, i))


def expected_tree(src):
    """Every virtual file of a mount of `src` and its bytes: the members of zip files as
    stored, and np.save of what h5py and pickle read for .h5 and .pkl files."""
    out = {}
    for name in sorted(os.listdir(src)):
        path = f"{src}/{name}"
        if name.endswith(".h5"):
            with h5py.File(path, "r") as f:
                out.update({f"{name}/{k}.npy": npy_bytes(f[k][()]) for k in f})
        elif name.endswith(".pkl"):
            with open(path, "rb") as f:
                out.update({f"{name}/{k}.npy": npy_bytes(v) for k, v in pickle.load(f).items()})
        else:
            with zipfile.ZipFile(path) as z:
                out.update({f"{name}/{m}": z.read(m) for m in z.namelist()})
    return out


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load(src, mount, seconds):
    files = expected_tree(src)
    names = sorted(files)
    figures = {"reads": 0, "mismatches": 0, "expected_errors": 0, "other_errors": 0}
    notes = []
    lock = threading.Lock()

    def count(key, note=None):
        with lock:
            figures[key] += 1
            if note and len(notes) < 5:
                notes.append(note)

    def reader(seed):
        deadline = time.time() + seconds
        i = seed
        while time.time() < deadline:
            name = names[i % len(names)]
            i += 7
            try:
                with open(f"{mount}/{name}", "rb") as f:
                    got = f.read()
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                count("reads" if got == files[name] else "mismatches")
            except OSError as e:
                key = "expected_errors" if e.errno in (errno.EIO, errno.EMFILE) else "other_errors"
                count(key, f"{name}: {e}")

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for note in notes:
        print("note:", note)
    print(json.dumps(figures))


def check_all(src, mount):
    files = expected_tree(src)
    for name, expected in files.items():
        with open(f"{mount}/{name}", "rb") as f:
            if f.read() != expected:
                raise AssertionError(f"{name} differs")
    print(f"{len(files)} files read correctly")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "write":
        write(*args)
    elif cmd == "write-many-members":
        write_many_members(args[0], int(args[1]))
    elif cmd == "open-many":
        open_many(*args)
    elif cmd == "write-containers":
        write_containers(args[0], int(args[1]))
    elif cmd == "check-all":
        check_all(*args)
    elif cmd == "load":
        load(args[0], args[1], float(args[2]))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
