"""Third-party corpus: HDF5 files, pickles and joblib dumps that other projects ship in their
packages (installed into .venv from scripts/requirements.txt), mounted as one directory and
checked array by array against the library that reads them.

    python corpus.py collect DIR         copy the files into DIR/<package>/...
    python corpus.py check DIR MOUNT     compare; print the counts and every array left out
                                         (with arrfs's reason); exit 1 on any mismatch

Oracles: h5py (with hdf5plugin) for HDF5, joblib.load / pickle.load for pickles. Each array
must equal np.save of the oracle's reading byte for byte (SPEC section 3 conversions for
variable-length strings, as in hdf5_cases.py), or be left out by arrfs with a reason in
`user.arrfs.skipped`. Not in the corpus: netCDF4's wheel ships no data files; numpy's test
files are .npy/.npz files that arrfs serves unchanged.
"""
import errno
import glob
import os
import shutil
import sys

import h5py
import hdf5plugin  # noqa: F401  (registers the plugin filters for the oracle)
import numpy as np

from hdf5_cases import fixed_records, offset_order
from oracle import check_npy
from pickle_cases import escape, expected, zero_padded

# label -> (package, folder inside it, patterns)
SOURCES = {
    "pytables": ("tables", "tests", ["*.h5"]),
    "h5py": ("h5py", "tests/data_files", ["*.h5"]),
    "scipy": ("scipy", "io/matlab/tests/data", ["*.mat"]),
    "joblib": ("joblib", "test/data", ["*"]),
}
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def package_dir(name):
    module = __import__(name)
    return os.path.dirname(module.__file__)


def collect(out):
    for label, (package, folder, patterns) in SOURCES.items():
        dest = os.path.join(out, label)
        os.makedirs(dest, exist_ok=True)
        for pattern in patterns:
            for path in sorted(glob.glob(os.path.join(package_dir(package), folder, pattern))):
                if path.endswith((".py", ".pyc")) or not os.path.isfile(path):
                    continue
                if label == "scipy" and not is_hdf5(path):
                    continue  # MATLAB < 7.3 files are not HDF5
                shutil.copy(path, dest)
    print(f"collected {sum(len(fs) for _, _, fs in os.walk(out))} files")


def is_hdf5(path):
    with open(path, "rb") as f:
        head = f.read(2048 + 8)
    return any(head[at:at + 8] == HDF5_MAGIC for at in (0, 512, 1024, 2048))


def skipped(directory):
    """name -> reason, from arrfs's `user.arrfs.skipped` of a virtual directory."""
    try:
        text = os.getxattr(directory, "user.arrfs.skipped").decode()
    except OSError:
        return {}
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def h5py_expected(ds):
    """np.save of this array must be the virtual file (SPEC section 3)."""
    data = ds[()]
    if isinstance(data, h5py.Empty):
        return None
    data = np.asarray(data)
    if data.dtype.names and any(data.dtype.fields[n][0].hasobject for n in data.dtype.names):
        return fixed_records(data)
    if data.dtype.hasobject:
        info = h5py.check_string_dtype(ds.dtype) or h5py.check_string_dtype(ds.dtype.base)
        utf8 = info is not None and info.encoding == "utf-8"
        values = [v.decode() if utf8 and isinstance(v, bytes) else v for v in data.ravel()]
        return np.array(values).reshape(data.shape)
    if data.dtype.names:
        return data.view(offset_order(data.dtype))
    return data


class Tally:
    def __init__(self):
        self.files = self.arrays = self.equal = 0
        self.left_out = []
        self.mismatches = []

    def leave(self, rel, reason):
        self.left_out.append((rel, reason))

    def fail(self, rel, why):
        self.mismatches.append((rel, why))


def check_hdf5(path, top, rel, tally):
    if not os.path.isdir(top):
        reason = unshown_reason(path, top)
        if reason is None:
            tally.fail(rel, "HDF5 file not shown, with no reason")
        else:
            tally.leave(rel, reason)
        return
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in names:
            tally.arrays += 1
            virtual = os.path.join(top, *[escape(p) for p in name.split("/")]) + ".npy"
            where = f"{rel}/{name}"
            try:
                want = h5py_expected(f[name])
            except Exception as e:  # h5py cannot read it: arrfs must not serve it either
                want, h5py_error = None, e
            else:
                h5py_error = None
            if not os.path.exists(virtual):
                reason = skipped(os.path.dirname(virtual)).get(os.path.basename(virtual)[:-4])
                if reason is None:
                    tally.fail(where, "missing, with no reason in user.arrfs.skipped")
                else:
                    tally.leave(where, reason)
                continue
            if h5py_error is not None or want is None:
                try:
                    open(virtual, "rb").read()
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    tally.leave(where, f"EIO; h5py fails too: {h5py_error}")
                    continue
                tally.fail(where, f"served, but h5py cannot read it: {h5py_error}")
                continue
            try:
                check_npy(virtual, want, reads=20)
            except OSError as e:
                filters = os.getxattr(virtual, "user.arrfs.filters").decode()
                if e.errno == errno.EIO and filters in NOT_DECODED:
                    tally.leave(where, f"EIO: {NOT_DECODED[filters]}")
                else:
                    tally.fail(where, str(e))
            except Exception as e:
                tally.fail(where, str(e))
            else:
                tally.equal += 1


# Filter pipelines arrfs knows it cannot decode yet (reads give EIO, never other bytes): none
# since Blosc2/b2nd is decoded; a new one goes here with its reason.
NOT_DECODED: dict[str, str] = {}


def unshown_reason(path, top):
    """Why a container file is not shown as a directory, or None if arrfs gave no reason."""
    reason = skipped(os.path.dirname(top)).get(os.path.basename(top))
    if reason is None:
        with open(path, "rb") as f:
            if f.read(2) == b"ZF":
                reason = "joblib < 0.10 'ZF' compressed format: not recognised"
    return reason


def check_pickle(path, top, rel, tally):
    import joblib
    try:
        obj = joblib.load(path)
    except Exception as e:
        tally.leave(rel, f"joblib.load fails here too: {e}")
        return
    want = {}
    expected(obj, "" if isinstance(obj, (dict, list, tuple)) else top_name(path), want)
    if not os.path.isdir(top):
        reason = unshown_reason(path, top)
        tally.arrays += len(want)
        for name in want:
            if reason is None:
                tally.fail(f"{rel}/{name}", "container not shown, with no reason")
            else:
                tally.leave(f"{rel}/{name}", reason)
        return
    for name, array in sorted(want.items()):
        tally.arrays += 1
        virtual = os.path.join(top, name)
        if not os.path.exists(virtual):
            key = os.path.basename(name)[: -len(".npy")]
            reason = skipped(os.path.dirname(virtual)).get(key)
            if reason is None:
                tally.fail(f"{rel}/{name}", "missing, with no reason in user.arrfs.skipped")
            else:
                tally.leave(f"{rel}/{name}", reason)
            continue
        try:
            check_npy(virtual, zero_padded(array) if array.dtype.names else array, reads=20)
        except Exception as e:
            tally.fail(f"{rel}/{name}", str(e))
        else:
            tally.equal += 1


COMPRESSED_EXTENSIONS = (".gz", ".gzip", ".z", ".zlib", ".bz2", ".xz", ".lzma", ".lz4")


def top_name(path):
    """A top-level array's name: the file name without compression and pickle extensions."""
    name = os.path.basename(path)
    for ext in COMPRESSED_EXTENSIONS:
        if name.lower().endswith(ext) and len(name) > len(ext):
            name = name[: -len(ext)]
            break
    return os.path.splitext(name)[0]


def check(out, mnt):
    tally = Tally()
    for label in SOURCES:
        for name in sorted(os.listdir(os.path.join(out, label))):
            path = os.path.join(out, label, name)
            rel = f"{label}/{name}"
            top = os.path.join(mnt, label, name)
            tally.files += 1
            if is_hdf5(path):
                check_hdf5(path, top, rel, tally)
            elif name.endswith(".npy") or name.endswith(".npy.z"):
                tally.files -= 1  # parts of joblib < 0.10 dumps, read through their .pkl
            else:
                check_pickle(path, top, rel, tally)
    for rel, reason in tally.left_out:
        print(f"left out: {rel}: {reason}")
    for rel, why in tally.mismatches:
        print(f"MISMATCH: {rel}: {why}")
    print(f"corpus: {tally.files} files, {tally.arrays} arrays, {tally.equal} equal, "
          f"{len(tally.left_out)} left out, {len(tally.mismatches)} mismatches")
    sys.exit(1 if tally.mismatches else 0)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"collect": collect, "check": check}[cmd](*args)
