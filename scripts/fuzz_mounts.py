"""Mutation campaign over real containers: see scripts/fuzz-mounts for usage.

Seeds are the files the test suite writes (h5py, numpy, pickle, joblib, safetensors, gguf)
plus any given with --seeds. Each mutant (bytes flipped, a span overwritten, truncated, a
span duplicated) is mounted with `arrfs -f`, walked, read in full and at random offsets,
then listed with `arrfs ls -R`; time and memory are bounded per case. Outcomes are counted
by class, and every failing mutant is kept with a command that reproduces it.
"""
import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import proc_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
MB = 1 << 20

# Classes that count as failures (the goal is 0 of each).
FAILURES = ["daemon died", "hang", "memory over bound", "ls crashed", "ls hung"]


def write_seeds(out):
    """The fixtures the tests write, each small: the seed corpus."""
    os.makedirs(out, exist_ok=True)
    jobs = [
        ("hdf5_cases.py", ["write", f"{out}/cases.h5"]),
        ("codec_cases.py", ["write", f"{out}/codecs.h5"]),
        ("npz_cases.py", ["write", f"{out}/npz"]),
        ("pickle_cases.py", ["write", f"{out}/pickle"]),
    ]
    for script, args in jobs:
        subprocess.run([PY, os.path.join(ROOT, "tests/py", script), *args], check=True,
                       capture_output=True)
    seeds = []
    for base, _, names in os.walk(out):
        for name in names:
            path = os.path.join(base, name)
            if 0 < os.path.getsize(path) <= 4 * MB:
                seeds.append(path)
    return sorted(seeds)


def mutate(data, rng):
    data = bytearray(data)
    kind = rng.choice(["flip", "overwrite", "truncate", "duplicate"])
    # Metadata lives mostly near the start and the end: bias positions there.
    def pos():
        n = len(data)
        return rng.choice([rng.randrange(min(n, 8192)), rng.randrange(n), n - 1 - rng.randrange(min(n, 8192))])
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            data[pos()] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        at, span = pos(), rng.randint(1, 64)
        data[at:at + span] = bytes(rng.randrange(256) for _ in range(span))[: len(data) - at]
    elif kind == "truncate":
        del data[pos():]
    else:
        at, span = pos(), rng.randint(1, 256)
        data[at:at] = data[at:at + span]
    return kind, bytes(data)


# An HDF5 mount is two processes, their peaks summed: the worker's own baseline (about
# 12 MB measured: the binary, libhdf5, its threads) comes on top of the bound.
WORKER_MB = 16


def peak_rss_mb(pid):
    """Of the daemon and its libhdf5 workers, summed."""
    return proc_memory.peak_rss_mb(pid)


# Read front to back at most this much of each file: a mutant may declare a huge sparse
# dataset (all fill values, served at once) that no walk could read in time, which is no
# hang; the random reads below still reach anywhere in it.
FULL_READ_LIMIT = 256 * MB


def walk_and_read(mnt, deadline, rng):
    """Lists and reads everything under `mnt` until `deadline`; False if time ran out."""
    for base, dirs, files in os.walk(mnt):
        for name in files:
            if time.time() > deadline:
                return False
            path = os.path.join(base, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                size = os.fstat(fd).st_size
                at = 0
                while at < min(size, FULL_READ_LIMIT) and time.time() < deadline:
                    got = os.pread(fd, 1 * MB, at)
                    if not got:
                        break
                    at += len(got)
                for _ in range(5):
                    if size:
                        os.pread(fd, 4096, rng.randrange(size))
            except OSError:
                pass
            finally:
                os.close(fd)
            try:
                os.listxattr(path)
            except OSError:
                pass
    return True


def run_case(arrfs, path, work, args, rng):
    """Mounts, walks, reads and lists one mutant: its outcome class."""
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    log = open(os.path.join(work, "daemon.log"), "w")
    proc = subprocess.Popen([arrfs, "-f", "--cache-size", f"{args.cache_mb}M", path, mnt],
                            stdout=subprocess.DEVNULL, stderr=log)
    start = time.time()
    while not os.path.ismount(mnt):
        if proc.poll() is not None:
            return "refused" if proc.returncode == 1 else "daemon died"
        if time.time() - start > args.case_seconds:
            proc.kill()
            subprocess.run(["umount", "-l", mnt], capture_output=True)
            return "hang"
        time.sleep(0.01)
    outcome = "mounted, read"
    finished = walk_and_read(mnt, start + args.case_seconds, rng)
    rss = peak_rss_mb(proc.pid)
    if proc.poll() is not None:
        outcome = "daemon died"
    elif not finished:
        outcome = "hang"
    elif rss > args.cache_mb + 64 + args.slack_mb + WORKER_MB:
        outcome = "memory over bound"
    proc.send_signal(signal.SIGTERM)
    log.close()
    if outcome == "mounted, read" and "in its worker process" in open(log.name, errors="replace").read():
        # libhdf5 crashed or hung in a worker: those requests got EIO, the mount stayed up.
        outcome = "mounted, read; a libhdf5 worker died (EIO)"
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    subprocess.run(["umount", "-l", mnt], capture_output=True)
    if outcome != "mounted, read":
        return outcome
    try:
        ls = subprocess.run([arrfs, "ls", "-R", path], capture_output=True, timeout=args.case_seconds)
    except subprocess.TimeoutExpired:
        return "ls hung"
    if ls.returncode < 0 or ls.returncode > 1:
        return "ls crashed"
    return outcome


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arrfs", required=True)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", default="", help="a directory of more seed files")
    p.add_argument("--max-mutants", type=int, default=0, help="stop after this many (0: time only)")
    p.add_argument("--case-seconds", type=float, default=30)
    p.add_argument("--cache-mb", type=int, default=32)
    p.add_argument("--slack-mb", type=int, default=64, help="documented per-entry/per-chunk bounds")
    p.add_argument("--keep", default="fuzz-failures", help="where failing mutants are kept")
    args = p.parse_args()
    arrfs = os.path.abspath(args.arrfs)
    rng = random.Random(args.seed)
    work = tempfile.mkdtemp(prefix="arrfs-fuzz-")
    try:
        seeds = write_seeds(os.path.join(work, "seeds"))
        if args.seeds:
            seeds += sorted(os.path.join(b, n) for b, _, ns in os.walk(args.seeds) for n in ns)
        print(f"{len(seeds)} seed files; seed {args.seed}", file=sys.stderr)
        counts = collections.Counter()
        kept = []
        deadline = time.time() + args.minutes * 60
        n = 0
        while time.time() < deadline and (not args.max_mutants or n < args.max_mutants):
            seed = rng.choice(seeds)
            with open(seed, "rb") as f:
                kind, data = mutate(f.read(), rng)
            case = os.path.join(work, "case")
            os.makedirs(case, exist_ok=True)
            path = os.path.join(case, os.path.basename(seed))
            with open(path, "wb") as f:
                f.write(data)
            outcome = run_case(arrfs, path, case, args, rng)
            counts[outcome] += 1
            if outcome in FAILURES:
                os.makedirs(args.keep, exist_ok=True)
                keep = os.path.join(args.keep, f"{n:06d}-{kind}-{os.path.basename(seed)}")
                shutil.copy(path, keep)
                kept.append((outcome, keep))
            shutil.rmtree(case, ignore_errors=True)
            n += 1
        print(f"{n} mutants of {len(seeds)} seeds in {args.minutes} min (seed {args.seed})\n")
        print("| outcome | mutants |\n|---|---:|")
        for outcome in ["refused", "mounted, read"] + FAILURES:
            print(f"| {outcome} | {counts[outcome]} |")
        for outcome, keep in kept:
            print(f"{outcome}: arrfs -f --cache-size {args.cache_mb}M {keep} MNT  (then walk and read)")
        return 1 if kept else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
