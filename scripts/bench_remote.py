"""Remote cases R1-R3 of scripts/bench: a moto S3 server on 127.0.0.1 behind the test
harness's proxy adding 20 ms to every request (tests/py/s3_server.py, tests/py/proxy.py).

    R1  mount + `ls -lR` of an HDF5 file with 1,000 datasets   vs h5py over s3fs: visititems
    R2  full np.load of a gzip chunked dataset (--r2-mb MiB)  vs h5py over s3fs: ds[()]
    R3  R2 with the disk cache warm, on a fresh mount         vs local-file h5py ds[()]
    R2h R2 from an HTTP server with Range support (tests/py/range_server.py), the same proxy
        and latency                                           vs h5py over fsspec's HTTP
        (moto copies the whole object for every ranged GET: ~0.4 s per GET of a 270 MiB
        object, so R2 measures moto as much as either reader; R2h shows the readers)
    R2s R2 from the same Range server answering S3's path-style GET/HEAD, so both sides
        speak S3 (object_store; s3fs) to a store that serves a range in O(range)

S3 GETs include LISTs (a LIST is a GET). Every side runs as a fresh process (wall time, as a script meets it; arrfs's includes its
mount). The anchor needs s3fs, whose aiobotocore pins a botocore older than the one moto's
boto3 needs, so it runs from its own venv (made under --data on first use). Requests are
counted at the proxy.
"""
import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
BUCKET = "bench"
LATENCY_MS = 20


class Server:
    """A harness server: prints one JSON line, serves until its stdin closes."""

    def __init__(self, script, *args):
        self.proc = subprocess.Popen([PY, os.path.join(ROOT, "tests/py", script), *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = json.loads(self.proc.stdout.readline())

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def cpu_seconds(pid):
    """User + system CPU seconds process `pid` has used so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Harness servers whose CPU each case reports (the store and the proxy share the 2 cores
# with both readers: moto's CPU per GET is part of what R2 measures).
SERVERS = {}


def proxy_call(port, what):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/__proxy__/{what}") as r:
        return json.loads(r.read() or b"{}") if what == "stats" else None


def load(point):
    """A fresh Python's np.load of the mount's x.npy."""
    return [PY, "-c", "import numpy, sys; numpy.load(sys.argv[1])", os.path.join(point, "x.npy")]


def counted(proxy_port, fn):
    """fn()'s result, and the requests the proxy saw meanwhile and the CPU seconds the
    harness servers spent, as text."""
    proxy_call(proxy_port, "reset")
    before = {name: server.cpu() for name, server in SERVERS.items()}
    result = fn()
    stats = proxy_call(proxy_port, "stats")
    cpu = ", ".join(f"{name} {server.cpu() - before[name]:.1f} s CPU" for name, server in SERVERS.items())
    mib = stats.get("get_bytes", 0) / (1 << 20)
    return result, f"{stats.get('GET', 0)} GET, {stats.get('HEAD', 0)} HEAD, {mib:.0f} MiB, {cpu}"


def s3fs_python(args):
    venv = os.path.join(args.data, "s3fs-venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "s3fs", "h5py", "numpy"], check=True)
    return python


def wall(cmd, env=None):
    t0, cpu = time.perf_counter(), children_cpu()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    print(f"  {os.path.basename(cmd[0])}: {seconds:.2f} s, {children_cpu() - cpu:.1f} s CPU", file=sys.stderr)
    return seconds


def children_cpu():
    """CPU seconds of this script's waited-for children so far (the readers)."""
    usage = os.times()
    return usage.children_user + usage.children_system


def make_many(path):
    if not os.path.exists(path):
        with h5py.File(path, "w") as f:
            for g in range(10):
                for d in range(100):
                    f.create_dataset(f"g{g}/d{d}", data=np.arange(d + 10, dtype="f4"))
    return path


def make_big(path, mib):
    if not os.path.exists(path):
        n = mib * (1 << 20) // 4
        rows = n // 4096
        with h5py.File(path, "w") as f:
            ds = f.create_dataset("x", shape=(rows, 4096), dtype="f4", chunks=(64, 4096),
                                  compression="gzip", compression_opts=1)
            rng = np.random.default_rng(0)
            for start in range(0, rows, 4096):
                block = rng.normal(size=(min(4096, rows - start), 4096)).astype("f4")
                ds[start:start + len(block)] = np.round(block, 2)
    return path


def arrfs_case(args, url, env, action, extra=()):
    """Fresh mount + `action` as a fresh process; returns (seconds, peak RSS MB)."""
    point = os.path.join(args.data, "mnt-remote")
    t0 = time.perf_counter()
    mount = args.mount_class(args.arrfs, url, point, env, extra)
    try:
        reader = children_cpu()
        subprocess.run(action(point), check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        print(f"  arrfs {url}: {seconds:.2f} s, daemon {cpu_seconds(mount.proc.pid):.1f} s CPU, "
              f"reader {children_cpu() - reader:.1f} s CPU", file=sys.stderr)
        return seconds, mount.peak_rss_mb()
    finally:
        mount.close()


S3FS_OPEN = """
import sys, h5py, s3fs
fs = s3fs.S3FileSystem(key=sys.argv[1], secret=sys.argv[2], client_kwargs={'endpoint_url': sys.argv[3], 'region_name': 'us-east-1'})
f = h5py.File(fs.open(sys.argv[4], 'rb'), 'r')
"""


HTTP_OPEN = """
import sys, h5py, fsspec
f = h5py.File(fsspec.filesystem('http').open(sys.argv[1], 'rb'), 'r')
"""


def http_case(args, rows, big, anchor_python):
    """R2h: the R2 file from the Range HTTP server behind the delaying proxy."""
    served = os.path.dirname(big)
    server = Server("range_server.py", served)
    proxy = Server("proxy.py", str(server.hello["port"]), "--delay-ms", str(LATENCY_MS))
    SERVERS.clear()
    SERVERS.update(server=server, proxy=proxy)
    pport = proxy.hello["port"]
    url = f"http://127.0.0.1:{pport}/{os.path.basename(big)}"
    try:
        a, a_req = counted(pport, lambda: wall([anchor_python, "-c", HTTP_OPEN + "f['x'][()]\n", url]))
        (t, rss), t_req = counted(pport, lambda: arrfs_case(args, url, dict(os.environ), load))
        rows.append(("R2h", f"np.load of {args.r2_mb} MiB gzip chunked over HTTP Range, +{LATENCY_MS} ms/request "
                     f"({t_req}; h5py+fsspec: {a_req})", "h5py+fsspec ds[()]", a, "fresh process", t, rss))
    finally:
        proxy.close()
        server.close()


def s3_range_case(args, rows, big, anchor_python):
    """R2s: R2 from the Range HTTP server answering S3's path-style GET and HEAD
    (`/BUCKET/KEY`; it ignores the signature), behind the same proxy: a store that serves a
    ranged GET in time proportional to the range, as S3 does, where moto copies the whole
    object for each. Both sides speak S3 to it (object_store; s3fs)."""
    root = os.path.join(args.data, "s3-range-root")
    os.makedirs(os.path.join(root, BUCKET), exist_ok=True)
    served = os.path.join(root, BUCKET, "big.h5")
    if not os.path.exists(served):
        os.link(big, served)
    server = Server("range_server.py", root)
    proxy = Server("proxy.py", str(server.hello["port"]), "--delay-ms", str(LATENCY_MS))
    SERVERS.clear()
    SERVERS.update(server=server, proxy=proxy)
    pport = proxy.hello["port"]
    endpoint = f"http://127.0.0.1:{pport}"
    env = dict(os.environ, AWS_ACCESS_KEY_ID="unused", AWS_SECRET_ACCESS_KEY="unused",
               AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true")
    try:
        a, a_req = counted(pport, lambda: wall([anchor_python, "-c", S3FS_OPEN + "f['x'][()]\n", "unused",
                                                "unused", endpoint, f"{BUCKET}/big.h5"]))
        (t, rss), t_req = counted(pport, lambda: arrfs_case(args, f"s3://{BUCKET}/big.h5", env, load))
        rows.append(("R2s", f"np.load of {args.r2_mb} MiB gzip chunked from an S3 endpoint serving ranges "
                     f"in O(range), +{LATENCY_MS} ms/request ({t_req}; h5py+s3fs: {a_req})", "h5py+s3fs ds[()]",
                     a, "fresh process", t, rss))
    finally:
        proxy.close()
        server.close()


def remote_cases(args, rows, only, mount_class):
    args.mount_class = mount_class
    every = {"R1", "R2", "R3", "R2h", "R2s"}
    wanted = every & only if only else every
    if not wanted:
        return
    anchor_python = s3fs_python(args)
    many = make_many(os.path.join(args.data, "many-1000.h5"))
    big = make_big(os.path.join(args.data, f"big-gzip-{args.r2_mb}.h5"), args.r2_mb)
    if "R2h" in wanted:
        http_case(args, rows, big, anchor_python)
    if "R2s" in wanted:
        s3_range_case(args, rows, big, anchor_python)
    if not wanted - {"R2h", "R2s"}:
        return
    s3 = Server("s3_server.py")
    port, key, secret = s3.hello["port"], s3.hello["access_key_id"], s3.hello["secret_access_key"]
    proxy = Server("proxy.py", str(port), "--delay-ms", str(LATENCY_MS))
    SERVERS.clear()
    SERVERS.update(moto=s3, proxy=proxy)
    endpoint = f"http://127.0.0.1:{proxy.hello['port']}"
    try:
        subprocess.run([PY, os.path.join(ROOT, "tests/py/s3_upload.py"), f"http://127.0.0.1:{port}", key, secret,
                        BUCKET, f"many.h5={many}", f"big.h5={big}"], check=True, stdout=subprocess.DEVNULL)
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_REGION="us-east-1",
                   AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true")
        anchor = lambda code, obj: wall([anchor_python, "-c", S3FS_OPEN + code, key, secret, endpoint,
                                         f"{BUCKET}/{obj}"])
        pport = proxy.hello["port"]


        if "R1" in wanted:
            a, a_req = counted(pport, lambda: anchor("f.visititems(lambda n, o: None)\n", "many.h5"))
            (t, rss), t_req = counted(pport, lambda: arrfs_case(args, f"s3://{BUCKET}/many.h5", env,
                                                        lambda p: ["ls", "-lR", p]))
            rows.append(("R1", f"mount + ls -lR, 1,000 datasets, +{LATENCY_MS} ms/request ({t_req}; h5py+s3fs: {a_req})",
                         "h5py+s3fs visititems", a, "fresh process", t, rss))
        cache = os.path.join(args.data, "remote-cache")
        if "R2" in wanted or "R3" in wanted:
            subprocess.run(["rm", "-rf", cache], check=True)
            a, a_req = counted(pport, lambda: anchor("f['x'][()]\n", "big.h5"))
            (t, rss), t_req = counted(pport, lambda: arrfs_case(args, f"s3://{BUCKET}/big.h5", env, load,
                                                        ["--cache-dir", cache, "--disk-cache-size", "4G"]))
            rows.append(("R2", f"np.load of {args.r2_mb} MiB gzip chunked, +{LATENCY_MS} ms/request ({t_req}; h5py+s3fs: {a_req})",
                         "h5py+s3fs ds[()]", a, "fresh process", t, rss))
        if "R3" in wanted:
            local = wall([PY, "-c", "import h5py, sys; h5py.File(sys.argv[1])['x'][()]", big])
            (t, rss), t_req = counted(pport, lambda: arrfs_case(args, f"s3://{BUCKET}/big.h5", env, load,
                                                        ["--cache-dir", cache, "--disk-cache-size", "4G"]))
            rows.append(("R3", f"R2 with the disk cache warm, fresh mount ({t_req})",
                         "local h5py ds[()]", local, "fresh process", t, rss))
    finally:
        proxy.close()
        s3.close()
