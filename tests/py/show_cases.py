"""Checks of `arrfs show` against numpy: the printed array must be numpy's own repr of the
array h5py / np.load returns, and `--stats` must agree with nanmin / nanmax / nanmean and
isnan().sum().

    python show_cases.py check ARRFS DIR    writes the fixtures into DIR, checks every case
"""
import math
import subprocess
import sys
import warnings

import h5py
import numpy as np

warnings.filterwarnings("ignore", "All-NaN slice")
warnings.filterwarnings("ignore", "Mean of empty slice")


def arrays():
    """name -> array: the element types numpy prints, small (whole) and large (corners)."""
    rng = np.random.default_rng(7)
    with_gaps = rng.standard_normal(3000)
    with_gaps[[5, 17, 2999]] = np.nan
    with_gaps[100] = np.inf
    cases = {
        "int8": np.arange(-5, 5, dtype="i1"),
        "uint16": np.array([0, 7, 65535], dtype="<u2"),
        "be_int32": np.arange(24, dtype=">i4").reshape(2, 3, 4),
        "int64_big": np.arange(10**6, 10**6 + 5000, dtype="i8") * 1_000_003,
        "uint64_max": np.array([0, 2**64 - 1], dtype="u8"),
        "f8_plain": np.array([1.0, 2.5, -0.0, 3.25]),
        "f8_sci": np.array([1e-5, 1.5e10, np.nan, -np.inf]),
        "f8_precision": np.array([0.00012345678, 0.1, 1 / 3]),
        "f8_all_nan": np.array([np.nan, np.nan]),
        "f8_zeros": np.zeros((2, 3)),
        "f4_random": rng.standard_normal((50, 40)).astype("f4"),
        "f4_mixed": np.array([0.1, 1.23456789e-5, 7.0], dtype="f4"),
        "be_f8": np.linspace(-1, 1, 7).astype(">f8"),
        "f2": np.array([0.1, 2.71828, 65504, -3], dtype="f2"),
        "c8": np.array([1 + 2j, np.nan - 3.5j, -0.25 + 1e-3j], dtype="c8"),
        "c16_grid": (np.arange(12) + 1j * np.arange(12)[::-1]).reshape(3, 4),
        "bool": np.array([[True, False, True], [False, False, True]]),
        "gaps": with_gaps,
        "cube": rng.integers(-1000, 1000, (10, 20, 30)).astype("i2"),
        "tall": rng.standard_normal((2000, 3)),
        "wide_ints": np.arange(40, dtype="i8") ** 3,
        "empty_2d": np.zeros((0, 3), dtype="f4"),
        "empty": np.zeros((0,), dtype="i8"),
    }
    return cases


SCALARS = {"s_f8": np.float64(3.5), "s_i2": np.int16(-7), "s_bool": np.bool_(True)}


def write(directory):
    """An HDF5 file (h5py, some chunked + gzip), a Fortran-order .npy and an NPZ."""
    path = f"{directory}/show.h5"
    with h5py.File(path, "w") as f:
        for name, a in arrays().items():
            chunked = a.size > 1000
            f.create_dataset(
                name,
                data=a,
                chunks=(min(100, a.shape[0]),) + a.shape[1:] if chunked else None,
                compression="gzip" if chunked else None,
            )
        for name, a in SCALARS.items():
            f[name] = a
        f["f8_plain"].attrs["units"] = "m/s"
        f["f8_plain"].attrs["scale"] = 2.5
        f.create_dataset("compound", data=np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]))
    fortran = np.asfortranarray(np.arange(35, dtype="<f4").reshape(5, 7) / 7)
    np.save(f"{directory}/fortran.npy", fortran)
    np.savez(f"{directory}/arch.npz", x=np.arange(7, dtype="u1"), y=np.eye(3, dtype=">f4"))
    return path


def show(arrfs, source, path, *extra):
    out = subprocess.run(
        [arrfs, "show", source, path, *extra], capture_output=True, text=True
    )
    assert out.returncode == 0, f"arrfs show {source} {path}: {out.stderr}"
    assert out.stderr == "", f"stderr is not a terminal, yet: {out.stderr!r}"
    return out.stdout


def printed_array(text):
    """The repr block: from the line that starts with `array(` to the end."""
    start = text.index("\narray(") + 1
    return text[start:].rstrip("\n")


def stats_of(text):
    lines = [l.split(None, 1) for l in text.splitlines() if l.startswith("    ")]
    return {k: v.strip() for k, v in (l for l in lines if len(l) == 2)}


def same(expected, got_text, dtype):
    if dtype.kind in "iu":
        return int(got_text) == int(expected)
    if dtype.kind == "b":
        return got_text == str(bool(expected))
    if math.isnan(expected):
        return got_text == "nan"
    return dtype.type(got_text) == expected


def check_stats(text, a, sample=None):
    s = stats_of(text)
    flat = a.ravel(order="K") if a.ndim else a.reshape(1)
    if sample is not None and sample < flat.size:
        # Documented rule of --sample: elements i * size // N (file order) for i < N.
        flat = np.ascontiguousarray(a).reshape(-1)[(np.arange(sample) * flat.size) // sample]
    assert int(s["nan"]) == int(np.isnan(flat).sum()) if a.dtype.kind in "fc" else int(s["nan"]) == 0, s
    if a.dtype.kind == "c":
        assert "min" not in s, s
        return
    if flat.size == 0:
        return
    for key, fn in [("min", np.nanmin), ("max", np.nanmax)]:
        want = fn(flat)
        assert same(want, s[key], a.dtype), (key, s[key], want)
    want = np.nanmean(flat.astype(np.float64))
    got = float(s["mean"])
    if math.isnan(want) or math.isinf(want):
        assert repr(got) == repr(float(want)), ("mean", got, want)
    else:
        scale = float(np.nanmax(np.abs(flat.astype(np.float64)))) or 1.0
        assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-14 * scale), ("mean", got, want)


def check(arrfs, directory):
    path = write(directory)
    checked = 0
    with h5py.File(path, "r") as f:
        names = list(arrays()) + list(SCALARS)
        for name in names:
            a = f[name][()]
            a = np.asarray(a)
            text = show(arrfs, path, f"{name}.npy", "--stats")
            assert printed_array(text) == repr(a), f"{name}:\n{printed_array(text)}\n!=\n{repr(a)}"
            assert f"shape       {tuple(a.shape)!r}" in text, text
            check_stats(text, a)
            checked += 1
        sampled = f["gaps"][()]
        text = show(arrfs, path, "gaps.npy", "--stats", "--sample", "100")
        assert "100 of 3000 elements" in text, text
        check_stats(text, sampled, sample=100)
        text = show(arrfs, path, "f4_random.npy")
        assert "chunks      (50, 40)" in text and "filters     deflate(4)" in text, text
        assert "stats" not in text, text
        text = show(arrfs, path, "f8_plain.npy")
        assert "    units = m/s" in text and "    scale = 2.5" in text, text
        text = show(arrfs, path, "compound.npy")
        assert "are not printed" in text, text
    for source, member, a in [
        (f"{directory}/fortran.npy", "fortran.npy", np.load(f"{directory}/fortran.npy")),
        (f"{directory}/arch.npz", "x.npy", np.load(f"{directory}/arch.npz")["x"]),
        (f"{directory}/arch.npz", "y.npy", np.load(f"{directory}/arch.npz")["y"]),
    ]:
        text = show(arrfs, source, member, "--stats")
        assert printed_array(text) == repr(a), f"{member}:\n{printed_array(text)}\n!=\n{repr(a)}"
        check_stats(text, a)
        checked += 1
    missing = subprocess.run([arrfs, "show", path, "nope.npy"], capture_output=True, text=True)
    assert missing.returncode == 1 and "nope.npy" in missing.stderr, missing
    print(f"{checked} arrays checked")


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
