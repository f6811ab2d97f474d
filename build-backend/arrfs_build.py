"""PEP 517 backend of arrfs: maturin, with CMAKE set for the bundled HDF5.

.cargo/config.toml points the HDF5 build at the repository's `.venv/bin/cmake` (Debian 12's
cmake is too old). `pip install .` on a machine without that `.venv` builds in an isolated
environment whose `cmake` (a build requirement in pyproject.toml) is on PATH: use it.
"""
import os
import shutil
from pathlib import Path

from maturin import *  # noqa: F401,F403  (the PEP 517 hooks)

_REPO_CMAKE = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "cmake"

if "CMAKE" not in os.environ and not _REPO_CMAKE.exists():
    _cmake = shutil.which("cmake")
    if _cmake:
        os.environ["CMAKE"] = _cmake
