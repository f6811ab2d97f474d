"""Stress driver: many readers at once over a mounted directory of HDF5, NPZ and pickle
containers, every byte checked against what h5py / zipfile / pickle read themselves.

    python stress.py write SRC [--scale K]
        writes the containers into directory SRC (K scales the array sizes)
    python stress.py run SRC MOUNT --seconds N --pid PID [--readers 16] [--procs 4]
        SRC mounted on MOUNT by the arrfs process PID: N seconds of random reads by pread,
        mmap and whole-tree walks; prints the figures and, last, one JSON line of them

Readers compare the sha256 of each range they read with the sha256 of the same range of
the oracle's bytes (np.save of what h5py / np.load / pickle.load return, or the zip
member's bytes). Page-cache pages are dropped often (posix_fadvise) so reads reach arrfs.
"""
import argparse
import hashlib
import io
import json
import mmap
import multiprocessing
import os
import pickle
import random
import threading
import time
import zipfile

import h5py
import numpy as np


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def arrays(rng, scale, kind):
    n = 250_000 * scale
    return {
        f"{kind}_walk": np.cumsum(rng.standard_normal(n)).astype("<f8"),
        f"{kind}_ints": rng.integers(-1000, 1000, size=(n // 500, 500), dtype="<i4").astype(">i4"),
        f"{kind}_zeros": np.zeros(n, dtype="<u2"),
        f"{kind}_rec": np.array([(i, i / 3) for i in range(5000)], dtype=[("a", "<i2"), ("b", "<f8")]),
        f"{kind}_small": np.arange(7, dtype="<i8"),
    }


def write_hdf5(path, rng, scale):
    with h5py.File(path, "w") as f:
        data = arrays(rng, scale, "h")
        f["contiguous"] = data["h_walk"]
        f.create_dataset("gzip_chunked", data=data["h_ints"], chunks=(100, 100), compression="gzip")
        f.create_dataset("shuffle_gzip", data=data["h_walk"].astype("<f4"), chunks=(10_000,),
                         shuffle=True, compression="gzip", compression_opts=4)
        g = f.create_group("g/h")
        g["rec"] = data["h_rec"]
        g.create_dataset("zeros_chunked", data=data["h_zeros"], chunks=(4096,), compression="gzip")
        g["scalar"] = np.float64(3.25)


def write(src, scale):
    rng = np.random.default_rng(11)
    os.makedirs(f"{src}/nested", exist_ok=True)
    write_hdf5(f"{src}/data.h5", rng, scale)
    np.savez(f"{src}/stored.npz", **arrays(rng, scale, "s"))
    np.savez_compressed(f"{src}/deflated.npz", **arrays(rng, scale, "d"))
    with open(f"{src}/nested/dict.pkl", "wb") as f:
        pickle.dump(arrays(rng, scale, "p"), f, protocol=5)
    with open(f"{src}/nested/old.pkl", "wb") as f:
        pickle.dump(arrays(rng, scale, "q"), f, protocol=2)
    write_hdf5(f"{src}/nested/more.h5", rng, scale)


def hdf5_files(path, rel):
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[f"{rel}/{name}.npy"] = npy_bytes(obj[()])
        f.visititems(visit)
    return out


def oracle(src):
    """Virtual path (relative to the mount) -> expected bytes."""
    out = {}
    for root, _, names in os.walk(src):
        for name in names:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)
            if name.endswith(".h5"):
                out.update(hdf5_files(path, rel))
            elif name.endswith(".npz"):
                with zipfile.ZipFile(path) as z:
                    out.update({f"{rel}/{m}": z.read(m) for m in z.namelist()})
            elif name.endswith(".pkl"):
                with open(path, "rb") as f:
                    out.update({f"{rel}/{k}.npy": npy_bytes(v) for k, v in pickle.load(f).items()})
    return out


class Tally:
    def __init__(self):
        self.reads = self.bytes = self.mismatches = self.errors = self.walks = 0
        self.notes = []
        self.lock = threading.Lock()

    def add(self, **counts):
        with self.lock:
            for key, n in counts.items():
                setattr(self, key, getattr(self, key) + n)

    def note(self, text):
        with self.lock:
            if len(self.notes) < 5:
                self.notes.append(text)

    def figures(self):
        return {k: getattr(self, k) for k in ("reads", "bytes", "mismatches", "errors", "walks")}


def random_range(rng, size):
    length = rng.choice([1, 100, 4096, 65536, 1 << 20, rng.randrange(1, size + 2)])
    offset = rng.randrange(0, size + 1)
    return offset, min(length, size - offset)


def check(tally, rel, expected, offset, got):
    want = expected[offset:offset + len(got)]
    same = hashlib.sha256(got).digest() == hashlib.sha256(want).digest() and len(got) == len(want)
    tally.add(reads=1, bytes=len(got), mismatches=0 if same else 1)
    if not same:
        tally.note(f"mismatch: {rel} [{offset}, +{len(got)})")


def pread_reader(mount, files, tally, rng, deadline):
    names = sorted(files)
    while time.time() < deadline:
        rel = rng.choice(names)
        expected = files[rel]
        fd = os.open(f"{mount}/{rel}", os.O_RDONLY)
        try:
            for _ in range(8):
                offset, length = random_range(rng, len(expected))
                got = os.pread(fd, length, offset)
                if len(got) != length:
                    tally.note(f"short read: {rel} [{offset}, +{length}) got {len(got)}")
                check(tally, rel, expected, offset, got)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def mmap_reader(mount, files, tally, rng, deadline):
    names = sorted(rel for rel, data in files.items() if data)
    while time.time() < deadline:
        rel = rng.choice(names)
        expected = files[rel]
        with open(f"{mount}/{rel}", "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for _ in range(8):
                offset, length = random_range(rng, len(expected))
                check(tally, rel, expected, offset, m[offset:offset + length])
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def walker(mount, files, tally, rng, deadline):
    while time.time() < deadline:
        seen = {}
        for root, _, names in os.walk(mount):
            for name in names:
                path = os.path.join(root, name)
                seen[os.path.relpath(path, mount)] = os.stat(path).st_size
        expected = {rel: len(data) for rel, data in files.items()}
        if seen != expected:
            tally.add(mismatches=1)
            tally.note(f"walk differs: {sorted(set(seen) ^ set(expected))[:3]}")
        tally.add(walks=1)


def guarded(job, mount, files, tally, seed, deadline):
    rng = random.Random(seed)
    while time.time() < deadline:
        try:
            job(mount, files, tally, rng, deadline)
        except OSError as e:
            tally.add(errors=1)
            tally.note(f"{job.__name__}: {e}")


def process_main(index, threads, mount, files, deadline, queue):
    tally = Tally()
    jobs = [walker, mmap_reader] + [pread_reader] * (threads - 2)
    workers = [threading.Thread(target=guarded, args=(jobs[i], mount, files, tally, index * 100 + i, deadline))
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    queue.put((tally.figures(), tally.notes))


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")


def run(src, mount, seconds, pid, readers, procs):
    files = oracle(src)
    deadline = time.time() + seconds
    queue = multiprocessing.get_context("fork").Queue()
    ctx = multiprocessing.get_context("fork")
    per_proc = readers // procs
    children = [ctx.Process(target=process_main, args=(i, per_proc, mount, files, deadline, queue))
                for i in range(procs)]
    for c in children:
        c.start()
    results = [queue.get(timeout=seconds + 600) for _ in children]
    for c in children:
        c.join()
    total = {k: sum(r[0][k] for r in results) for k in results[0][0]}
    total["files"] = len(files)
    total["oracle_bytes"] = sum(len(b) for b in files.values())
    total["seconds"] = seconds
    total["readers"] = per_proc * procs
    total["peak_rss_kib"] = peak_rss_kib(pid)
    for _, notes in results:
        for note in notes:
            print("note:", note)
    print(f"{total['readers']} readers in {procs} processes, {seconds} s, {total['files']} files:"
          f" {total['reads']} reads, {total['bytes'] / 2**20:.1f} MiB checked,"
          f" {total['walks']} walks, {total['mismatches']} mismatches, {total['errors']} errors,"
          f" arrfs peak RSS {total['peak_rss_kib'] / 1024:.1f} MiB")
    print(json.dumps(total))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("src")
    w.add_argument("--scale", type=int, default=1)
    r = sub.add_parser("run")
    r.add_argument("src")
    r.add_argument("mount")
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--pid", type=int, required=True)
    r.add_argument("--readers", type=int, default=16)
    r.add_argument("--procs", type=int, default=4)
    args = parser.parse_args()
    if args.cmd == "write":
        write(args.src, args.scale)
    else:
        run(args.src, args.mount, args.seconds, args.pid, args.readers, args.procs)


if __name__ == "__main__":
    main()
