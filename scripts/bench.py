"""arrfs against the reference readers, side by side. See scripts/bench for usage.

Checkpoints (M1 safetensors, M2 torch.save; M2 needs a Python with torch, ARRFS_TORCH_PYTHON,
default /tmp/torchvenv/bin/python, else it is skipped with a note): one tensor and every
tensor through a fresh mount (mount time included) against the library loading the whole
file, timed inside the loading process and as a fresh process's wall time.

Every case times the anchor (h5py, np.load, pickle.load, zipfile) and arrfs on the same data
in the same run; each figure is the median of --runs runs. Before each run the source file
is read once, so both sides start from the same (warm) page cache for the container, and
arrfs is mounted afresh, so the FUSE side starts with an empty kernel cache for the virtual
file ("first load"); "second load" then reads the same file again from the kernel cache.
"""
import argparse
import atexit
import os
import pickle
import platform
import random
import signal
import shutil
import statistics
import subprocess
import sys
import time
import zipfile

import h5py
import numpy as np

import bench_remote
import proc_memory

MB = 1 << 20


def warm(path):
    """Reads `path` (every file under it, for a directory) into the page cache."""
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            warm(os.path.join(path, name))
        return
    with open(path, "rb") as f:
        while f.read(16 * MB):
            pass


# `-o` options for every mount (--mount-option).
MOUNT_OPTIONS = []


class Mount:
    def __init__(self, arrfs, source, point, env=None, extra=()):
        self.point = point
        os.makedirs(point, exist_ok=True)
        extra = (*MOUNT_OPTIONS, *extra)
        self.proc = subprocess.Popen([arrfs, "-f", *extra, source, point], env=env,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 900
        while not os.path.ismount(point):
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"arrfs did not mount {source}")
            time.sleep(0.005)

    def peak_rss_mb(self):
        """Of the daemon and its libhdf5 workers, summed."""
        return proc_memory.peak_rss_mb(self.proc.pid)

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class Case:
    """One comparison: `anchor()` and `arrfs(mnt)` are timed; `rows` collects results."""

    def __init__(self, name, what, source, anchor_name, anchor, arrfs, second_load=False, mode="first load",
                 anchor_runs=None, options=()):
        self.name, self.what, self.source, self.mode = name, what, source, mode
        # Extra arguments of the mount (e.g. ("-o", "passthrough")).
        self.options = options
        # A slow anchor may be timed fewer times than arrfs.
        self.anchor_runs = anchor_runs
        self.anchor_name, self.anchor, self.arrfs = anchor_name, anchor, arrfs
        self.second_load = second_load


def run_case(case, args, rows):
    anchor_t, first_t, second_t, rss = [], [], [], []
    for run in range(args.runs):
        if run < (case.anchor_runs or args.runs):
            warm(case.source)
            anchor_t.append(timed(case.anchor))
        warm(case.source)
        started = time.perf_counter()
        mount = Mount(args.arrfs, case.source, os.path.join(args.data, "mnt"), extra=case.options)
        mounted = time.perf_counter() - started
        try:
            first_t.append(timed(lambda: case.arrfs(mount.point)) + (mounted if "mount" in case.mode else 0))
            if case.second_load:
                second_t.append(timed(lambda: case.arrfs(mount.point)))
            rss.append(mount.peak_rss_mb())
        finally:
            mount.close()
    a = statistics.median(anchor_t)
    f = statistics.median(first_t)
    rows.append((case.name, case.what, case.anchor_name, a, case.mode, f, max(rss)))
    if second_t:
        rows.append((case.name, case.what, case.anchor_name, a, "second load", statistics.median(second_t), max(rss)))
    print(f"  {case.name}: anchor {a:.3f}s, arrfs {f:.3f}s", file=sys.stderr)


def measured_rows(rng, first, n, width=1024):
    """Rows `first..first+n` of a smooth signal plus noise, float32: compresses like real
    measurements, not like zeros."""
    base = np.sin(np.arange(first, first + n)[:, None] / 50.0 + np.arange(width) / 100.0)
    return (base + 0.01 * rng.standard_normal((n, width))).astype("<f4")


def make_hdf5(args):
    path = os.path.join(args.data, f"bench-{args.size_mb}.h5")
    if os.path.exists(path):
        return path
    n = args.size_mb * MB
    rng = np.random.default_rng(0)
    with h5py.File(path + ".tmp", "w") as f:
        contig = f.create_dataset("contig_f8", shape=(n // 8 // 1024, 1024), dtype="<f8")
        gz = f.create_dataset("gzip_f4", shape=(n // 4 // 1024, 1024), dtype="<f4",
                              chunks=(256, 1024), compression="gzip", compression_opts=4, shuffle=True)
        step = 8192
        for i in range(0, contig.shape[0], step):
            rows = min(step, contig.shape[0] - i)
            contig[i:i + rows] = rng.standard_normal((rows, 1024))
        for i in range(0, gz.shape[0], step):
            rows = min(step, gz.shape[0] - i)
            gz[i:i + rows] = measured_rows(rng, i, rows)
    os.rename(path + ".tmp", path)
    return path


def h5_read(path, name):
    def read():
        with h5py.File(path, "r") as f:
            f[name][()]
    return read


def npy_load(rel):
    return lambda mnt: np.load(os.path.join(mnt, rel))


def hdf5_cases(args):
    path = make_hdf5(args)
    size = f"{args.size_mb} MiB"
    return [
        Case("H1", f"{size} contiguous float64", path, "h5py ds[()]", h5_read(path, "contig_f8"),
             npy_load("contig_f8.npy"), second_load=True),
        Case("H2", f"{size} float32 gzip-4 + shuffle, 1 MiB chunks", path, "h5py ds[()]",
             h5_read(path, "gzip_f4"), npy_load("gzip_f4.npy"), second_load=True),
    ]


def make_npz(args):
    """A stored member of --size-mb and a deflated one of a quarter of that."""
    stored = os.path.join(args.data, f"bench-{args.size_mb}-stored.npz")
    deflated = os.path.join(args.data, f"bench-{args.size_mb}-deflated.npz")
    n = args.size_mb * MB // 8
    if not os.path.exists(stored):
        np.savez(stored + ".tmp.npz", a=np.random.default_rng(1).standard_normal(n))
        os.rename(stored + ".tmp.npz", stored)
    if not os.path.exists(deflated):
        walk = np.cumsum(np.random.default_rng(2).integers(-3, 4, n // 4)).astype("<f8")
        np.savez_compressed(deflated + ".tmp.npz", a=walk)
        os.rename(deflated + ".tmp.npz", deflated)
    return stored, deflated


def npz_load(path):
    return lambda: np.load(path)["a"]


def random_reads(count=1000, size=4096, seed=3):
    rng = random.Random(seed)
    return [rng.randrange(0, 1 << 62) for _ in range(count)], size


def zipfile_random_reads(path):
    offsets, size = random_reads()
    def run():
        with zipfile.ZipFile(path) as z, z.open("a.npy") as member:
            length = z.getinfo("a.npy").file_size
            for off in offsets:
                member.seek(off % (length - size))
                member.read(size)
    return run


def arrfs_random_reads(mnt):
    offsets, size = random_reads()
    fd = os.open(os.path.join(mnt, "a.npy"), os.O_RDONLY)
    try:
        length = os.fstat(fd).st_size
        for off in offsets:
            os.pread(fd, size, off % (length - size))
    finally:
        os.close(fd)


def npz_cases(args):
    stored, deflated = make_npz(args)
    size = f"{args.size_mb} MiB"
    quarter = f"{args.size_mb // 4} MiB"
    return [
        Case("N1", f"npz stored member, {size}", stored, "np.load(npz)[k]", npz_load(stored), npy_load("a.npy")),
        Case("N2", f"npz deflated member, {quarter}", deflated, "np.load(npz)[k]", npz_load(deflated),
             npy_load("a.npy")),
        Case("N3", f"1000 random 4 KiB reads, deflated {quarter}", deflated, "zipfile seek+read",
             zipfile_random_reads(deflated), arrfs_random_reads, mode="os.pread",
             anchor_runs=1),
    ]


def make_pickles(args):
    import joblib
    pkl = os.path.join(args.data, f"bench-{args.size_mb}.pkl")
    jbl = os.path.join(args.data, f"bench-{args.size_mb}.joblib")
    if not (os.path.exists(pkl) and os.path.exists(jbl)):
        array = np.random.default_rng(4).standard_normal(args.size_mb * MB // 8)
        with open(pkl + ".tmp", "wb") as f:
            pickle.dump({"x": array}, f, protocol=4)
        os.rename(pkl + ".tmp", pkl)
        joblib.dump({"x": array}, jbl + ".tmp")
        os.rename(jbl + ".tmp", jbl)
    return pkl, jbl


def pickle_load(path):
    def run():
        with open(path, "rb") as f:
            pickle.load(f)
    return run


def joblib_load(path):
    import joblib
    return lambda: joblib.load(path)


def pickle_cases(args):
    pkl, jbl = make_pickles(args)
    size = f"{args.size_mb} MiB"
    return [
        Case("K1", f"pickle protocol 4, {size} float64", pkl, "pickle.load", pickle_load(pkl), npy_load("x.npy")),
        Case("K2", f"joblib.dump, {size} float64", jbl, "joblib.load", joblib_load(jbl), npy_load("x.npy")),
    ]


def mount_time(args, rows):
    """K3: from starting arrfs to the mount answering, for the pickle of P1."""
    pkl, _ = make_pickles(args)
    times, rss = [], []
    for _ in range(max(args.runs, 5)):
        t0 = time.perf_counter()
        mount = Mount(args.arrfs, pkl, os.path.join(args.data, "mnt"))
        os.stat(os.path.join(mount.point, "x.npy"))
        times.append(time.perf_counter() - t0)
        rss.append(mount.peak_rss_mb())
        mount.close()
    t = statistics.median(times)
    rows.append(("K3", f"mount + stat, pickle of {args.size_mb} MiB", "-", float("nan"), "mount", t, max(rss)))


def random_rows(path, name, count=2000, seed=5):
    with h5py.File(path, "r") as f:
        n = f[name].shape[0]
    rows = random.Random(seed).sample(range(n), count)

    def h5py_rows():
        with h5py.File(path, "r") as f:
            ds = f[name]
            for i in rows:
                ds[i]

    def arrfs_rows(mnt):
        a = np.load(os.path.join(mnt, name + ".npy"), mmap_mode="r")
        for i in rows:
            np.array(a[i])

    return h5py_rows, arrfs_rows


def make_many(args):
    """10,000 datasets of 1 KiB in 100 groups."""
    path = os.path.join(args.data, "bench-many.h5")
    if not os.path.exists(path):
        with h5py.File(path + ".tmp", "w") as f:
            for g in range(100):
                grp = f.create_group(f"g{g:03d}")
                for d in range(100):
                    grp[f"d{d:03d}"] = np.full(128, g * 100 + d, dtype="<f8")
        os.rename(path + ".tmp", path)
    return path


def h5py_visit(path):
    def run():
        found = []
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: found.append((name, obj.dtype, obj.shape))
                         if isinstance(obj, h5py.Dataset) else None)
        assert len(found) == 10_000
    return run


def h5py_read_all(path):
    def read(name, obj):
        if isinstance(obj, h5py.Dataset):
            obj[()]
        # None: visititems stops at the first callback that returns something else.

    def run():
        with h5py.File(path, "r") as f:
            f.visititems(read)
    return run


def find_all(mnt):
    out = subprocess.run(["find", mnt, "-name", "*.npy"], capture_output=True, check=True)
    assert out.stdout.count(b"\n") == 10_000


def np_load_all(mnt):
    for root, _, names in os.walk(mnt):
        for n in names:
            np.load(os.path.join(root, n))


def make_two(args):
    """Two gzip datasets of half --size-mb each, for two concurrent readers."""
    path = os.path.join(args.data, f"bench-two-{args.size_mb}.h5")
    if os.path.exists(path):
        return path
    rows = args.size_mb * MB // 2 // 4 // 1024
    rng = np.random.default_rng(6)
    with h5py.File(path + ".tmp", "w") as f:
        for name in ["a", "b"]:
            ds = f.create_dataset(name, shape=(rows, 1024), dtype="<f4", chunks=(256, 1024),
                                  compression="gzip", compression_opts=4, shuffle=True)
            for i in range(0, rows, 8192):
                n = min(8192, rows - i)
                base = np.cos(np.arange(i, i + n)[:, None] / 70.0 + np.arange(1024) / 90.0)
                ds[i:i + n] = (base + 0.01 * rng.standard_normal((n, 1024))).astype("<f4")
    os.rename(path + ".tmp", path)
    return path


def in_parallel(codes):
    procs = [subprocess.Popen([sys.executable, "-c", code]) for code in codes]
    assert all(p.wait() == 0 for p in procs)


def two_h5py(path):
    code = "import h5py; f = h5py.File({!r}); f[{!r}][()]"
    return lambda: in_parallel([code.format(path, n) for n in ["a", "b"]])


def two_np_load(mnt):
    code = "import numpy as np; np.load({!r})"
    in_parallel([code.format(os.path.join(mnt, n + ".npy")) for n in ["a", "b"]])


def make_codecs(args):
    """--size-mb // 2 of float32 under blosc(lz4, shuffle), zstd and bitshuffle+lz4, 1 MiB
    chunks, written by h5py with hdf5plugin."""
    import hdf5plugin
    size = args.size_mb // 2
    path = os.path.join(args.data, f"bench-codecs-{size}.h5")
    if os.path.exists(path):
        return path
    rows = size * MB // 4 // 1024
    rng = np.random.default_rng(9)
    filters = {
        "blosc_lz4": hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE),
        "zstd": hdf5plugin.Zstd(clevel=3),
        "bitshuffle_lz4": hdf5plugin.Bitshuffle(cname="lz4"),
    }
    with h5py.File(path + ".tmp", "w") as f:
        for name, codec in filters.items():
            ds = f.create_dataset(name, shape=(rows, 1024), dtype="<f4", chunks=(256, 1024),
                                  **codec)
            for i in range(0, rows, 8192):
                n = min(8192, rows - i)
                ds[i:i + n] = measured_rows(rng, i, n)
    os.rename(path + ".tmp", path)
    return path


def h5_read_plugin(path, name):
    def read():
        import hdf5plugin  # noqa: F401  (h5py needs it to decode these filters)
        with h5py.File(path, "r") as f:
            f[name][()]
    return read


def codec_cases(args):
    """B1-B3 (issue 12): plugin codecs decoded by arrfs against h5py + hdf5plugin."""
    path = make_codecs(args)
    size = f"{args.size_mb // 2} MiB"
    return [
        Case(case, f"{size} float32, {label}, 1 MiB chunks", path, "h5py+hdf5plugin ds[()]",
             h5_read_plugin(path, name), npy_load(f"{name}.npy"))
        for case, name, label in [("B1", "blosc_lz4", "blosc(lz4, shuffle)"),
                                  ("B2", "zstd", "zstd"),
                                  ("B3", "bitshuffle_lz4", "bitshuffle+lz4")]
    ] + plain_floor(args, path)


def plain_floor(args, path):
    """B0: the floor under B1-B3, the same 512 MiB as a plain .npy in a directory mount
    (arrfs serves its bytes as they are: no decoding), against np.load of it from
    /dev/shm (no FUSE either)."""
    folder = os.path.join(args.data, "plain-floor")
    plain = os.path.join(folder, "zstd.npy")
    if not os.path.exists(plain):
        os.makedirs(folder, exist_ok=True)
        with h5py.File(path, "r") as f:
            np.save(plain + ".tmp.npy", f["zstd"][()])
        os.rename(plain + ".tmp.npy", plain)
    shm = f"/dev/shm/arrfs-bench-floor-{os.getpid()}.npy"
    atexit.register(lambda: os.path.exists(shm) and os.remove(shm))

    def from_shm():
        if not os.path.exists(shm):
            shutil.copyfile(plain, shm)
        np.load(shm)
    what = f"{args.size_mb // 2} MiB float32 as a plain .npy"
    return [Case("B0", f"{what}: the floor of B1-B3", folder, "np.load from /dev/shm", from_shm,
                 npy_load("zstd.npy")),
            Case("B0p", f"{what}, -o passthrough", folder, "np.load from /dev/shm", from_shm,
                 npy_load("zstd.npy"), options=("-o", "passthrough"))]


def hdf5_more_cases(args):
    path = make_hdf5(args)
    many = make_many(args)
    two = make_two(args)
    h5py_rows, arrfs_rows = random_rows(path, "gzip_f4")
    half = f"{args.size_mb // 2} MiB"
    return [
        Case("H3", "2,000 random rows of the H2 dataset", path, "h5py ds[i]", h5py_rows, arrfs_rows,
             mode="mmap a[i]"),
        Case("H4", "10,000 datasets of 1 KiB in 100 groups: list", many, "h5py visititems",
             h5py_visit(many), find_all, mode="mount + find"),
        Case("H4b", "10,000 datasets of 1 KiB: read each", many, "h5py ds[()]",
             h5py_read_all(many), np_load_all, mode="np.load each"),
        Case("H5", f"two processes, two {half} gzip datasets", two, "2 x h5py ds[()]",
             two_h5py(two), two_np_load, mode="2 x np.load"),
    ]


def make_chunked(args, chunks):
    """A gzip dataset of `chunks` chunks of 1 KiB ((16, 16) float32), smooth data."""
    path = os.path.join(args.data, f"bench-chunks-{chunks}.h5")
    if os.path.exists(path):
        return path
    rows = chunks * 16
    with h5py.File(path + ".tmp", "w") as f:
        ds = f.create_dataset("x", shape=(rows, 16), dtype="<f4", chunks=(16, 16),
                              compression="gzip")
        step = 1 << 20
        for i in range(0, rows, step):
            n = min(step, rows - i)
            ds[i:i + n] = np.sin(np.arange(i, i + n, dtype="<f4")[:, None] / 1000 + np.arange(16))
    os.rename(path + ".tmp", path)
    return path


def make_group(args, n):
    """One group of `n` scalar float64 datasets."""
    path = os.path.join(args.data, f"bench-group-{n}.h5")
    if not os.path.exists(path):
        with h5py.File(path + ".tmp", "w") as f:
            for i in range(n):
                f[f"d{i:06d}"] = np.float64(i)
        os.rename(path + ".tmp", path)
    return path


def make_forest(args, n, groups=1000):
    """`n` small datasets spread over `groups` groups."""
    path = os.path.join(args.data, f"bench-forest-{n}.h5")
    if not os.path.exists(path):
        per = n // groups
        with h5py.File(path + ".tmp", "w") as f:
            for g in range(groups):
                grp = f.create_group(f"g{g:04d}")
                for d in range(per):
                    grp[f"d{d:04d}"] = np.int32(d)
        os.rename(path + ".tmp", path)
    return path


def make_wide_npz(args, n):
    path = os.path.join(args.data, f"bench-npz-{n}.npz")
    if not os.path.exists(path):
        np.savez(path + ".tmp.npz", **{f"a{i:06d}": np.arange(4) for i in range(n)})
        os.rename(path + ".tmp.npz", path)
    return path


def h5py_last_row(path):
    def run():
        with h5py.File(path, "r") as f:
            f["x"][-1]
    return run


def arrfs_last_row(mnt):
    a = np.load(os.path.join(mnt, "x.npy"), mmap_mode="r")
    np.array(a[-1])


def h5py_keys(path, n):
    def run():
        with h5py.File(path, "r") as f:
            assert len(list(f.keys())) == n
    return run


def listdir(n):
    def run(mnt):
        assert len(os.listdir(mnt)) == n
    return run


def ls_l(n):
    def run(mnt):
        out = subprocess.run(["ls", "-l", mnt], capture_output=True, check=True)
        assert out.stdout.count(b"\n") == n + 1
    return run


def h5py_visit_count(path, n):
    def run():
        found = []
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: found.append((name, obj.dtype, obj.shape))
                         if isinstance(obj, h5py.Dataset) else None)
        assert len(found) == n
    return run


def walk_count(n):
    def run(mnt):
        assert sum(len(files) for _, _, files in os.walk(mnt)) == n
    return run


def namelist(path, n):
    def run():
        with zipfile.ZipFile(path) as z:
            assert len(z.namelist()) == n
    return run


def scale_cases(args):
    """S1-S6 (issue 10): costs linear in chunks, entries and datasets."""
    s1 = make_chunked(args, args.s1_chunks)
    s3 = make_chunked(args, args.s3_chunks)
    group = make_group(args, args.s4_datasets)
    forest = make_forest(args, args.s5_datasets)
    wide = make_wide_npz(args, args.s6_members)
    return [
        Case("S1", f"gzip dataset, {args.s1_chunks:,} chunks of 1 KiB: full load", s1,
             "h5py ds[()]", h5_read(s1, "x"), npy_load("x.npy")),
        Case("S3", f"{args.s3_chunks:,} chunks: first byte of the last row, fresh mount", s3,
             "h5py ds[-1], fresh open", h5py_last_row(s3), arrfs_last_row,
             mode="mount + mmap a[-1]"),
        Case("S4", f"group of {args.s4_datasets:,} datasets: os.listdir", group,
             "h5py list(f.keys())", h5py_keys(group, args.s4_datasets), listdir(args.s4_datasets),
             mode="mount + listdir"),
        Case("S4b", f"group of {args.s4_datasets:,} datasets: ls -l", group,
             "h5py list(f.keys())", h5py_keys(group, args.s4_datasets), ls_l(args.s4_datasets),
             mode="mount + ls -l"),
        Case("S5", f"{args.s5_datasets:,} datasets in 1,000 groups: walk", forest,
             "h5py visititems", h5py_visit_count(forest, args.s5_datasets),
             walk_count(args.s5_datasets), mode="mount + os.walk", anchor_runs=1),
        Case("S6", f"NPZ of {args.s6_members:,} members: list", wide,
             "zipfile namelist", namelist(wide, args.s6_members), listdir(args.s6_members),
             mode="mount + listdir"),
    ]


def chunk_scaling(args, rows):
    """S2: arrfs's full load at 10x the chunks, against itself."""
    small_n = args.s1_chunks // 10
    small = make_chunked(args, small_n)
    large = make_chunked(args, args.s1_chunks)
    times = {}
    for n, path in [(small_n, small), (args.s1_chunks, large)]:
        runs = []
        for _ in range(args.runs):
            warm(path)
            mount = Mount(args.arrfs, path, os.path.join(args.data, "mnt"))
            try:
                runs.append(timed(lambda: np.load(os.path.join(mount.point, "x.npy"))))
            finally:
                mount.close()
        times[n] = statistics.median(runs)
    rows.append(("S2", f"full load, {args.s1_chunks:,} vs {small_n:,} chunks (goal <= 12)",
                 f"arrfs at {small_n:,}", times[small_n], f"arrfs at {args.s1_chunks:,}",
                 times[args.s1_chunks], float("nan")))


CHECKPOINT_TENSORS = 200
# Where torch is, if anywhere: the project's .venv has no torch (its wheels are gigabytes).
TORCH_PYTHON = os.environ.get("ARRFS_TORCH_PYTHON", "/tmp/torchvenv/bin/python")


def checkpoint_shape(args):
    """200 float32 tensors of (rows, 1024) making up --size-mb in all."""
    rows = max(1, args.size_mb * MB // CHECKPOINT_TENSORS // 4096)
    return rows, 1024


def make_safetensors(args):
    from safetensors.numpy import save_file
    path = os.path.join(args.data, f"bench-{args.size_mb}.safetensors")
    if not os.path.exists(path):
        rng = np.random.default_rng(7)
        shape = checkpoint_shape(args)
        tensors = {f"layers.{i}.weight": rng.standard_normal(shape, dtype=np.float32)
                   for i in range(CHECKPOINT_TENSORS)}
        save_file(tensors, path + ".tmp")
        os.rename(path + ".tmp", path)
    return path


def make_torch(args):
    path = os.path.join(args.data, f"bench-{args.size_mb}.pt")
    if not os.path.exists(path):
        rows, cols = checkpoint_shape(args)
        code = ("import sys, torch; torch.manual_seed(8)\n"
                f"sd = {{f'layers.{{i}}.weight': torch.randn({rows}, {cols}) for i in range({CHECKPOINT_TENSORS})}}\n"
                "torch.save(sd, sys.argv[1])")
        subprocess.run([TORCH_PYTHON, "-c", code, path + ".tmp"], check=True)
        os.rename(path + ".tmp", path)
    return path


def child_seconds(python, code, *argv):
    """Runs `code` in a fresh interpreter: (seconds it printed, wall seconds of the process,
    interpreter start and imports included)."""
    t0 = time.perf_counter()
    out = subprocess.run([python, "-c", code, *argv], check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1]), time.perf_counter() - t0


# Each child times its own load after its imports ("in-process") and prints it.
SAFETENSORS_LOAD = ("import sys, time\nfrom safetensors.numpy import load_file\n"
                    "t = time.perf_counter(); load_file(sys.argv[1]); print(time.perf_counter() - t)")
TORCH_LOAD = ("import sys, time, torch\n"
              "t = time.perf_counter(); torch.load(sys.argv[1], weights_only=True); print(time.perf_counter() - t)")
# All arrays are kept, as the whole-file loads keep them.
NP_LOAD = ("import sys, time\nimport numpy as np\nt = time.perf_counter()\n"
           "arrays = [np.load(f) for f in sys.argv[1:]]\nprint(time.perf_counter() - t)")


def checkpoint_case(args, rows, name, what, path, anchor_name, anchor_code, anchor_python):
    """(a) one tensor through a fresh mount (mount time included) and (b) every tensor
    through a fresh mount, against the library loading the whole file; each timed inside
    the process that loads (after imports) and as the wall time of a fresh Python process."""
    anchor_in, anchor_fresh, rss = [], [], []
    arrfs = {key: [] for key in ("a-in", "a-fresh", "b-in", "b-fresh")}
    one = "layers.100.weight.npy"
    for _ in range(args.runs):
        warm(path)
        t_in, t_fresh = child_seconds(anchor_python, anchor_code, path)
        anchor_in.append(t_in)
        anchor_fresh.append(t_fresh)
        for key in arrfs:
            warm(path)
            started = time.perf_counter()
            mount = Mount(args.arrfs, path, os.path.join(args.data, "mnt"))
            mounted = time.perf_counter() - started
            try:
                files = [os.path.join(mount.point, one)]
                if key.startswith("b"):
                    files = sorted(os.path.join(mount.point, f) for f in os.listdir(mount.point))
                    assert len(files) == CHECKPOINT_TENSORS, len(files)
                if key.endswith("in"):
                    t = timed(lambda: [np.load(f) for f in files])
                else:
                    _, t = child_seconds(sys.executable, NP_LOAD, *files)
                arrfs[key].append(mounted + t)
                rss.append(mount.peak_rss_mb())
            finally:
                mount.close()
    a_in, a_fresh = statistics.median(anchor_in), statistics.median(anchor_fresh)
    peak = max(rss)
    for key, label in (("a-in", "first tensor"), ("a-fresh", "first tensor"),
                       ("b-in", "every tensor"), ("b-fresh", "every tensor")):
        fresh = key.endswith("fresh")
        where = "fresh process" if fresh else "in-process"
        rows.append((f"{name}{key[0]}", f"{what}: {label}", f"{anchor_name}, whole file ({where})",
                     a_fresh if fresh else a_in, f"mount + np.load {'1' if key[0] == 'a' else 'all'} ({where})",
                     statistics.median(arrfs[key]), peak))
    print(f"  {name}: anchor {a_in:.3f}s in-process, {a_fresh:.3f}s fresh", file=sys.stderr)


def checkpoint_cases(args, rows, only):
    size = f"{args.size_mb} MiB, {CHECKPOINT_TENSORS} float32 tensors"
    if not only or "M1" in only:
        path = make_safetensors(args)
        checkpoint_case(args, rows, "M1", f"safetensors {size}", path, "safetensors.numpy.load_file",
                        SAFETENSORS_LOAD, sys.executable)
    if only and "M2" not in only:
        return
    if not os.path.exists(TORCH_PYTHON):
        print(f"M2 skipped: no torch here ({TORCH_PYTHON} missing; set ARRFS_TORCH_PYTHON)", file=sys.stderr)
        return
    path = make_torch(args)
    checkpoint_case(args, rows, "M2", f"torch.save {size}", path, "torch.load(weights_only=True)",
                    TORCH_LOAD, TORCH_PYTHON)


def ceiling(args, rows):
    """The fastest a .npy load can be here: a plain file in /dev/shm."""
    path = f"/dev/shm/arrfs-bench-{os.getpid()}.npy"
    np.save(path, np.zeros(args.size_mb * MB // 8))
    try:
        t = statistics.median(timed(lambda: np.load(path)) for _ in range(args.runs))
    finally:
        os.unlink(path)
    rows.append(("C", f"{args.size_mb} MiB .npy in /dev/shm (ceiling)", "np.load", t, "-", t, 0.0))


def table(rows):
    out = ["| case | data | anchor | anchor s | arrfs | arrfs s | ratio | arrfs peak RSS MB |",
           "|---|---|---|---:|---|---:|---:|---:|"]
    for name, what, anchor, a, mode, t, rss in rows:
        ratio = t / a if a else float("nan")
        anchor_s = "-" if a != a else f"{a:.3f}"
        ratio_s = "-" if ratio != ratio else f"{ratio:.2f}"
        out.append(f"| {name} | {what} | {anchor} | {anchor_s} | {mode} | {t:.3f} | {ratio_s} | {rss:.0f} |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arrfs", required=True)
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--data", default="bench-data")
    p.add_argument("--only", default="", help="comma-separated case names, e.g. H1,H2")
    p.add_argument("--mount-option", action="append", default=[], metavar="OPT",
                   help="-o OPT for every mount (e.g. no_hdf5_check: libhdf5 in the daemon, "
                        "to measure what the HDF5 worker process costs)")
    p.add_argument("--s1-chunks", type=int, default=250_000)
    p.add_argument("--s3-chunks", type=int, default=1_000_000)
    p.add_argument("--s4-datasets", type=int, default=100_000)
    p.add_argument("--s5-datasets", type=int, default=1_000_000)
    p.add_argument("--s6-members", type=int, default=100_000)
    p.add_argument("--r2-mb", type=int, default=512)
    args = p.parse_args()
    for opt in args.mount_option:
        MOUNT_OPTIONS.extend(["-o", opt])
    os.makedirs(args.data, exist_ok=True)
    args.data = os.path.abspath(args.data)
    args.arrfs = os.path.abspath(args.arrfs)
    only = set(filter(None, args.only.split(",")))
    rows = []
    makers = {hdf5_cases: {"H1", "H2"}, hdf5_more_cases: {"H3", "H4", "H4b", "H5"},
              npz_cases: {"N1", "N2", "N3"}, pickle_cases: {"K1", "K2"},
              scale_cases: {"S1", "S3", "S4", "S4b", "S5", "S6"},
              codec_cases: {"B0", "B0p", "B1", "B2", "B3"}}
    for make, names in makers.items():
        if only and not only & names:
            continue  # makes no data it will not use
        for case in make(args):
            if not only or case.name in only:
                run_case(case, args, rows)
    if not only or "S2" in only:
        chunk_scaling(args, rows)
    if not only or "K3" in only:
        mount_time(args, rows)
    checkpoint_cases(args, rows, only)
    bench_remote.remote_cases(args, rows, only, Mount)
    if not only or "C" in only:
        ceiling(args, rows)
    print(f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, "
          f"Linux {platform.release()}, numpy {np.__version__}, h5py {h5py.__version__}; "
          f"medians of {args.runs} runs; ratio = arrfs / anchor (lower is better)\n")
    print(table(rows))


if __name__ == "__main__":
    main()
