"""Small files pushed into the kernel's page cache ahead of their first read.

  write FILE       h5py writes group /small: d000..d099, 1 KiB float64 datasets, except d010
                   (2 MiB: too big to push) and a subgroup d050x (a directory: passed over)
  check FILE MNT   lists the mounted group, reads d000.npy from its start, then shows with
                   fincore(1) which files the kernel holds without having read them: the 64
                   small files after d000 (d001..d065 less d010), none beyond; every file then
                   equals np.save of h5py's reading.
"""
import os
import subprocess
import sys
import time

import h5py
import numpy as np

from oracle import check_npy

WINDOW = 64


def write(path):
    with h5py.File(path, "w") as f:
        g = f.create_group("small")
        for i in range(100):
            size = 2 << 20 if i == 10 else 1024
            g[f"d{i:03d}"] = np.arange(size // 8, dtype="<f8") + i
        g.create_group("d050x")["inside"] = np.zeros(4)


def resident_pages(path):
    out = subprocess.run(["fincore", "--noheadings", "--output", "PAGES", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def check(path, mnt):
    small = os.path.join(mnt, "small")
    names = os.listdir(small)
    assert len(names) == 101, names
    files = [os.path.join(small, f"d{i:03d}.npy") for i in range(100)]
    held = [f for f in files if resident_pages(f)]
    assert not held, f"in the page cache before any read: {held}"
    with open(files[0], "rb") as f:
        f.read()
    expected = [files[i] for i in range(1, WINDOW + 2) if i != 10]
    assert len(expected) == WINDOW
    deadline = time.monotonic() + 20
    while not resident_pages(expected[-1]) and time.monotonic() < deadline:
        time.sleep(0.05)
    missing = [f for f in expected if not resident_pages(f)]
    assert not missing, f"not pushed: {missing}"
    extra = [f for f in files if f not in expected and f != files[0] and resident_pages(f)]
    assert not extra, f"pushed beyond the window or too big: {extra}"
    with h5py.File(path, "r") as f:
        for i, p in enumerate(files):
            check_npy(p, f[f"small/d{i:03d}"][()], reads=20)
        check_npy(os.path.join(small, "d050x", "inside.npy"), f["small/d050x/inside"][()], reads=20)
    print(f"pushed {len(expected)} files; {len(files) + 1} files checked")


if __name__ == "__main__":
    {"write": lambda: write(sys.argv[2]), "check": lambda: check(sys.argv[2], sys.argv[3])}[sys.argv[1]]()
