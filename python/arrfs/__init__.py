"""arrfs from Python: every array in an HDF5, NPZ, pickle, ``.npy`` or checkpoint file as a
plain ``.npy`` file.

A thin layer over the ``arrfs`` binary that the wheel installs next to the interpreter::

    import arrfs, numpy as np

    with arrfs.mount("data.h5") as root:          # a temporary mountpoint, removed on exit
        x = np.load(root / "grp" / "x.npy", mmap_mode="r")

    arrfs.ls("data.h5")                           # [{'path': 'grp/x.npy', 'dtype': '<f4', ...}]
    x = arrfs.load("data.h5", "grp/x.npy")        # mount if FUSE works, `arrfs cat` if not

Errors of the binary are raised as :class:`ArrfsError` with its one-line message.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

import numpy as np

try:
    from importlib.metadata import PackageNotFoundError, version as _version

    __version__ = _version("arrfs")
except PackageNotFoundError:  # imported from a source tree, not installed
    __version__ = "0+unknown"

__all__ = ["ArrfsError", "binary", "fuse_available", "load", "ls", "mount", "unmount_all"]

StrPath = Union[str, "os.PathLike[str]"]

#: Environment variable naming the binary to run (tests, development builds).
BIN_ENV = "ARRFS_BIN"
#: Set to 1 to make :func:`load` read through ``arrfs cat`` even where FUSE works.
NO_FUSE_ENV = "ARRFS_NO_FUSE"

_ERROR_PREFIX = "arrfs: error: "


class ArrfsError(RuntimeError):
    """The ``arrfs`` binary failed. ``str(error)`` is its one-line message, e.g.
    ``data.h5: No such file or directory (os error 2)``.

    Attributes:
        message: the binary's message, without its ``arrfs: error:`` prefix.
        returncode: its exit code (1 for bad input, 2 for usage errors), or None.
        command: the command line that failed.
    """

    def __init__(self, message: str, returncode: Optional[int] = None,
                 command: Optional[List[str]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.command = command or []


def binary() -> str:
    """The path of the ``arrfs`` binary: ``$ARRFS_BIN``, else the one installed with this
    package, else the first on ``PATH``.

    Raises:
        ArrfsError: if none is found.
    """
    env = os.environ.get(BIN_ENV)
    if env:
        return env
    # The wheel puts the binary in site-packages/arrfs.scripts/ (beside arrfs.libs/, the
    # libraries it carries) and a launcher script in the environment's bin/: run the
    # binary itself, without the launcher's extra Python start.
    candidates = [Path(__file__).resolve().parent.parent / "arrfs.scripts" / "arrfs",
                  Path(sysconfig.get_path("scripts")) / "arrfs",
                  Path(sys.executable).parent / "arrfs"]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("arrfs")
    if found:
        return found
    raise ArrfsError(f"the arrfs binary was not found (set {BIN_ENV} or reinstall arrfs)")


def _run(args: List[str]) -> subprocess.CompletedProcess:
    """Runs ``arrfs ARGS``; raises :class:`ArrfsError` with its message if it fails."""
    command = [binary(), *args]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode != 0:
        raise ArrfsError(_message(done.stderr, done.returncode), done.returncode, command)
    return done


def _message(stderr: bytes, returncode: int) -> str:
    """The binary's one-line error: its last ``arrfs: error:`` line, else its last line."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.startswith(_ERROR_PREFIX)]
    if errors:
        return errors[-1][len(_ERROR_PREFIX):]
    if lines:
        return lines[-1]
    return f"arrfs exited with status {returncode}"


def _option_args(options: Dict[str, Any]) -> List[str]:
    """Keyword options as command-line arguments. ``cache_size``, ``attrs_json``,
    ``threads``, ``log_file``, ``verbose``, ``cache_dir`` and ``disk_cache_size`` are flags
    of their own; every other keyword is
    a ``-o`` mount option: ``True`` -> ``NAME``, a value -> ``NAME=VALUE``, ``False`` or
    ``None`` -> left out."""
    args: List[str] = []
    mount_options: List[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        if name == "cache_size":
            args += ["--cache-size", str(value)]
        elif name == "attrs_json":
            args.append("--attrs-json")
        elif name == "threads":
            args += ["--threads", str(int(value))]
        elif name == "log_file":
            args += ["--log-file", os.fspath(value)]
        elif name == "cache_dir":
            args += ["--cache-dir", os.fspath(value)]
        elif name == "disk_cache_size":
            args += ["--disk-cache-size", str(value)]
        elif name == "verbose":
            args += ["-v"] * (int(value) if value is not True else 1)
        elif value is True:
            mount_options.append(name)
        else:
            mount_options.append(f"{name}={value}")
    if mount_options:
        args += ["-o", ",".join(mount_options)]
    return args


def _unmount(mountpoint: Path) -> None:
    """Unmounts; if files are still open there (e.g. a memory map), detaches lazily so that
    nothing stays mounted, and the mount goes away when they are closed."""
    try:
        _run(["unmount", str(mountpoint)])
    except ArrfsError:
        if os.path.ismount(mountpoint):
            _run(["unmount", "--lazy", str(mountpoint)])


@contextlib.contextmanager
def mount(src: StrPath, mountpoint: Optional[StrPath] = None,
          **options: Any) -> Iterator[Path]:
    """Mounts ``src`` read-only and yields the mountpoint as a :class:`pathlib.Path`.

    Without ``mountpoint`` a fresh temporary directory is used and removed afterwards. The
    mount is undone when the ``with`` block ends, also on an exception or Ctrl-C (if files
    are still open under it, it is detached lazily).

    Args:
        src: the container (HDF5, NPZ, pickle, ``.npy``, checkpoint) or a directory of them,
            or its URL (``s3://bucket/key``, ``s3://bucket/prefix/``, ``gs://``, ``az://``,
            ``https://``; credentials from the environment, as the arrfs binary takes them).
        mountpoint: an existing empty directory, or None for a temporary one.
        **options: ``cache_size="1G"``, ``attrs_json=True``, ``threads=4``,
            ``log_file=PATH``, and any ``-o`` option: ``allow_other=True``,
            ``split_names="."``, ``no_hdf5_check=True``, ...

    Raises:
        ArrfsError: the source cannot be opened or the mount failed (the binary's message).
    """
    made: Optional[str] = None
    if mountpoint is None:
        made = tempfile.mkdtemp(prefix="arrfs-")
        target = Path(made)
    else:
        target = Path(mountpoint)
    try:
        try:
            _run([*_option_args(options), os.fspath(src), str(target)])
        except BaseException:
            # Interrupted while the daemon was starting: it may have mounted all the same.
            if os.path.ismount(target):
                _unmount(target)
            raise
        try:
            yield target
        finally:
            _unmount(target)
    finally:
        if made is not None:
            with contextlib.suppress(OSError):
                os.rmdir(made)


def ls(src: StrPath, path: str = "", recursive: bool = True,
       attrs_json: bool = False) -> List[Dict[str, Any]]:
    """The virtual tree of ``src`` under ``path``, without mounting (``arrfs ls --json``).

    Each entry is a dict with ``path``, ``kind`` (``file``, ``dir`` or ``symlink``), ``size``,
    ``dtype``, ``shape``, ``chunks``, ``filters`` and ``target``.

    Raises:
        ArrfsError: the source or the path cannot be read.
    """
    args = ["ls", "--json"]
    if recursive:
        args.append("-R")
    if attrs_json:
        args.append("--attrs-json")
    args += [os.fspath(src)]
    if path:
        args.append(path)
    return json.loads(_run(args).stdout)


def fuse_available() -> bool:
    """Whether this process can probably mount: ``/dev/fuse`` is usable and either we are
    root or ``fusermount3``/``fusermount`` is installed. (:func:`load` also falls back to
    ``arrfs cat`` when a mount fails anyway.)"""
    if os.environ.get(NO_FUSE_ENV, "") not in ("", "0"):
        return False
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return False
    return os.geteuid() == 0 or bool(shutil.which("fusermount3") or shutil.which("fusermount"))


_mounts: Dict[str, Path] = {}
_mounts_stack = contextlib.ExitStack()
_mounts_lock = threading.Lock()
_fuse_failed = False


def unmount_all() -> None:
    """Unmounts the mounts that :func:`load` keeps (also done at interpreter exit)."""
    with _mounts_lock:
        _mounts.clear()
        _mounts_stack.close()


atexit.register(unmount_all)


def _is_url(src: StrPath) -> bool:
    """``s3://...``, ``gs://...``, ``https://...``: a remote source, passed on as it is."""
    return "://" in os.fspath(src)


def _cached_mount(src: StrPath) -> Path:
    key = os.fspath(src) if _is_url(src) else os.path.realpath(os.fspath(src))
    with _mounts_lock:
        if key not in _mounts:
            _mounts[key] = _mounts_stack.enter_context(mount(key))
        return _mounts[key]


def load(src: StrPath, path: str, mmap_mode: Optional[str] = None,
         fuse: Optional[bool] = None) -> np.ndarray:
    """``np.load`` of the virtual file ``path`` inside ``src``.

    Where FUSE works, ``src`` is mounted once and kept mounted (until
    :func:`unmount_all` or exit), so later loads and ``mmap_mode`` cost no copy. Where it
    does not (containers and CI without ``/dev/fuse``, or ``ARRFS_NO_FUSE=1``), the bytes
    come from ``arrfs cat``; with ``mmap_mode`` they go to an unlinked temporary file that
    the map keeps alive.

    Args:
        src: the container or directory.
        path: the file inside the virtual tree, e.g. ``"grp/x.npy"``.
        mmap_mode: as for :func:`numpy.load`.
        fuse: True to require a mount, False to never mount, None to decide.

    Raises:
        ArrfsError: the source or the path cannot be read.
    """
    global _fuse_failed
    use_fuse = fuse if fuse is not None else (fuse_available() and not _fuse_failed)
    if use_fuse:
        try:
            root = _cached_mount(src)
        except ArrfsError:
            if fuse:
                raise
            # Maybe FUSE is not permitted here: `cat` tells whether the source is the
            # problem (then its error is raised) or the mount was.
            array = _load_via_cat(src, path, mmap_mode)
            _fuse_failed = True
            return array
        try:
            return np.load(root / path, mmap_mode=mmap_mode, allow_pickle=False)
        except FileNotFoundError:
            raise ArrfsError(f"{path}: No such file or directory (os error 2)") from None
    return _load_via_cat(src, path, mmap_mode)


def _load_via_cat(src: StrPath, path: str, mmap_mode: Optional[str]) -> np.ndarray:
    if mmap_mode is None:
        data = _run(["cat", os.fspath(src), path]).stdout
        return np.load(io.BytesIO(data), allow_pickle=False)
    with tempfile.TemporaryDirectory(prefix="arrfs-") as tmp:
        file = Path(tmp) / "array.npy"
        _run(["cat", os.fspath(src), path, "--output", str(file)])
        # The map keeps the unlinked file's pages alive.
        return np.load(file, mmap_mode=mmap_mode, allow_pickle=False)
