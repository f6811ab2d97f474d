"""Mount memory per mounted entry (issue 10, bench case S5).

h5py writes a file of N scalar datasets in N/1000 groups; arrfs mounts it, every file is
walked and stat'ed (`os.walk` + `os.stat`, as `ls -lR` or `find` would), and the VmRSS of
the daemon and its HDF5 worker process, summed, is read from /proc before and after the
walk. The baseline is a mount of a one-dataset file walked the same way, so bytes per
entry = (RSS after walk - baseline) / N.

    .venv/bin/python scripts/entry_memory.py --arrfs target/release/arrfs -n 100000
"""

import argparse
import os
import signal
import subprocess
import tempfile
import time

import h5py
import numpy as np

import proc_memory


def write_forest(path, n, per_group=1000):
    if os.path.exists(path):
        return
    groups = max(1, n // per_group)
    with h5py.File(path + ".tmp", "w") as f:
        for g in range(groups):
            grp = f.create_group(f"g{g:04d}")
            for d in range(min(per_group, n)):
                grp[f"d{d:04d}"] = np.int32(d)
    os.rename(path + ".tmp", path)


def status(pid):
    """VmRSS and VmHWM of the daemon and its libhdf5 workers, summed."""
    return proc_memory.mount_status(pid)


def measure(arrfs, source, point, in_daemon):
    os.makedirs(point, exist_ok=True)
    extra = ["-o", "no_hdf5_check"] if in_daemon else []
    proc = subprocess.Popen([arrfs, "-f", *extra, source, point], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 900
        while not os.path.ismount(point):
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"arrfs did not mount {source}")
            time.sleep(0.01)
        base = status(proc.pid)
        t0 = time.perf_counter()
        files = 0
        for root, _dirs, names in os.walk(point):
            for name in names:
                os.stat(os.path.join(root, name))
                files += 1
        walk_s = time.perf_counter() - t0
        after = status(proc.pid)
        return base, after, files, walk_s
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arrfs", default="target/release/arrfs")
    p.add_argument("-n", type=int, default=100_000, help="datasets (1,000 per group)")
    p.add_argument("--data", default=tempfile.gettempdir(), help="where the files are written")
    p.add_argument("--no-worker", action="store_true",
                   help="libhdf5 in the daemon (-o no_hdf5_check) instead of a worker process")
    args = p.parse_args()
    one = os.path.join(args.data, "entry-memory-1.h5")
    many = os.path.join(args.data, f"entry-memory-{args.n}.h5")
    write_forest(one, 1)
    write_forest(many, args.n)
    point = tempfile.mkdtemp(prefix="arrfs-mem-")
    try:
        empty_base, empty_after, _, _ = measure(args.arrfs, one, point, args.no_worker)
        base, after, files, walk_s = measure(args.arrfs, many, point, args.no_worker)
    finally:
        os.rmdir(point)
    if files != args.n:
        raise SystemExit(f"walked {files} files, expected {args.n}")
    per_entry = (after["VmRSS"] - empty_after["VmRSS"]) / args.n
    mb = 1 << 20
    print(f"1-dataset mount: RSS {empty_base['VmRSS'] / mb:.1f} MiB after mount, "
          f"{empty_after['VmRSS'] / mb:.1f} MiB after walk")
    print(f"{args.n:,} datasets: RSS {base['VmRSS'] / mb:.1f} MiB after mount, "
          f"{after['VmRSS'] / mb:.1f} MiB after walk (peak {after['VmHWM'] / mb:.1f} MiB), "
          f"walk {walk_s:.1f} s")
    print(f"bytes per entry: {per_entry:.0f}")


if __name__ == "__main__":
    main()
