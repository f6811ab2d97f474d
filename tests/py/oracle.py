"""Checks a virtual .npy file against the array a reference reader returned.

The oracle is numpy's own writer: the file must equal np.save(array) byte for byte, load with
mmap_mode='r', and answer random (offset, length) reads with slices of those bytes.
"""
import io
import os
import random

import numpy as np


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def check_bytes(path, expected, reads=200, seed=0):
    """The file at `path` must be `expected`, whole and in random slices."""
    with open(path, "rb") as f:
        got = f.read()
    if got != expected:
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise AssertionError(f"{path}: {len(got)} bytes, expected {len(expected)}; first difference at byte {first}")
    assert os.stat(path).st_size == len(expected), f"{path}: st_size differs from content"
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = len(expected)
        hot = [0, 64, 128, size // 2, max(size - 1, 0), size, size + 100]
        for i in range(reads):
            if i < len(hot) * 2:
                offset = max(0, hot[i % len(hot)] - rng.randrange(0, 80))
            else:
                offset = rng.randrange(0, size + 200)
            length = rng.choice([1, 7, 64, 100, 4096, 65536, rng.randrange(1, size + 2)])
            got = os.pread(fd, length, offset)
            if got != expected[offset:offset + length]:
                raise AssertionError(f"{path}: pread({length}, {offset}) differs")
    finally:
        os.close(fd)


def check_npy(path, array, reads=200):
    """`path` must be np.save(array) byte for byte, and load (also memory-mapped) equal."""
    check_bytes(path, npy_bytes(array), reads)
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    assert mapped.dtype == array.dtype and mapped.shape == array.shape, f"{path}: {mapped.dtype}{mapped.shape}"
    if array.size and array.dtype.kind not in "V":
        assert np.array_equal(np.asarray(mapped), array, equal_nan=array.dtype.kind in "fc"), f"{path}: values"
