"""Memory of a mount as /proc shows it: its daemon and the worker processes the daemon runs
libhdf5 in (its children), summed. A worker's pages shared with the daemon (the read slots)
are counted in both, so the sum errs high."""
import os


def _status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def children(pid):
    """Live children of process `pid`, of all its threads."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(p) for p in f.read().split())
        except OSError:
            pass
    return found


def mount_status(pid):
    """{"VmRSS": bytes, "VmHWM": bytes} of the daemon `pid` plus its workers."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for p in [pid, *children(pid)]:
        for key, value in _status(p).items():
            total[key] += value
    return total


def peak_rss_mb(pid):
    """Peak resident memory of the mount (daemon + workers), MiB; 0 if it is gone."""
    return mount_status(pid)["VmHWM"] / (1 << 20)
