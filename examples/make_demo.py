"""Writes examples/demo.h5, the file scripts/demo mounts (run with the .venv Python)."""
import os

import h5py
import numpy as np

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo.h5")
rng = np.random.default_rng(0)
with h5py.File(path, "w") as f:
    f.attrs["description"] = "arrfs demo: a small experiment"
    f["time"] = np.linspace(0.0, 9.9, 100)
    run = f.create_group("run1")
    run.attrs["operator"] = "ada"
    temp = run.create_dataset("temperature", data=20 + rng.standard_normal((100, 8)).astype("<f4"),
                              chunks=(25, 8), compression="gzip", shuffle=True)
    temp.attrs["units"] = "degC"
    run["labels"] = np.array([b"north", b"south", b"east", b"west"])
    run["events"] = np.array([(1, 0.5), (7, 1.25)], dtype=[("step", "<i4"), ("energy", "<f8")])
    f["latest"] = h5py.SoftLink("/run1")
print(path)
