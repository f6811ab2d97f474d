"""Fixtures of the Python package tests: h5py writes the data in the test run; the package
under test is the one installed from the wheel (never the source tree's python/arrfs)."""
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import arrfs

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config):
    # Testing the source tree instead of the wheel would prove nothing about the wheel.
    installed = Path(arrfs.__file__).resolve()
    assert REPO / "python" not in installed.parents, f"arrfs imported from the source tree: {installed}"
    assert os.environ.get(arrfs.BIN_ENV) is None, f"{arrfs.BIN_ENV} is set: the wheel's binary would not be tested"


def datasets():
    """name -> array, of the kinds h5py writes."""
    rng = np.random.default_rng(3)
    return {
        "x": np.arange(12, dtype="<f8").reshape(3, 4),
        "grp/ints": rng.integers(-100, 100, (40, 30)).astype(">i4"),
        "grp/sub/gz": rng.standard_normal((64, 33)).astype("f4"),
        "flags": np.array([True, False, True]),
        "scalar": np.float32(2.5),
    }


@pytest.fixture(scope="session")
def h5file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "data.h5"
    with h5py.File(path, "w") as f:
        for name, a in datasets().items():
            if name == "grp/sub/gz":
                f.create_dataset(name, data=a, chunks=(16, 11), compression="gzip", shuffle=True)
            else:
                f[name] = a
        f["x"].attrs["units"] = "m/s"
        f["x"].attrs["scale"] = np.float64(0.5)
    return path


@pytest.fixture
def corrupt_h5(tmp_path, h5file) -> Path:
    """A copy of the h5py file with its superblock overwritten after the signature."""
    data = bytearray(h5file.read_bytes())
    data[8:200] = b"\xff" * 192
    path = tmp_path / "corrupt.h5"
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(autouse=True)
def forget_cached_mounts():
    """Each test starts without the mounts an earlier `arrfs.load` kept."""
    arrfs.unmount_all()
    yield
    arrfs.unmount_all()
