"""Model checkpoint fixtures (safetensors, GGUF) written in the test run by the formats' own
libraries, and the checks of their mounted trees against those same libraries. PyTorch
checkpoints are shipped with the bytes torch gave for them (torch is not installed here).

    checkpoint_cases.py st-write DIR            safetensors files, by safetensors.numpy
    checkpoint_cases.py st-check FILE MOUNT [SEP]
                                                every tensor equals np.save of what the
                                                safetensors library reads; names split at SEP
    checkpoint_cases.py st-check-widened FILE MOUNT
                                                mounted with -o widen=f32: bfloat16/float8
                                                tensors equal np.save of ml_dtypes'
                                                .astype(np.float32) of the library's arrays
    checkpoint_cases.py st-write-bad DIR        truncated / lying / broken safetensors files
    checkpoint_cases.py st-check-skipped MOUNT  the bad tensor is left out, the rest reads
    checkpoint_cases.py gguf-write DIR          GGUF files, by gguf.GGUFWriter
    checkpoint_cases.py gguf-check FILE MOUNT [SEP]
                                                every tensor equals np.save of GGUFReader's
                                                .data; metadata equals its fields
    checkpoint_cases.py torch-check FIXTURE MOUNT
                                                the mount equals the bytes torch gave
                                                (tests/fixtures/torch/make.py)
    checkpoint_cases.py gguf-check-widened FILE MOUNT
    checkpoint_cases.py torch-check-widened FIXTURE MOUNT
                                                as the -check commands, mounted with
                                                -o widen=f32

The oracle is the library that wrote the file: `safetensors.numpy.load_file` for the dtypes
numpy has, and `safetensors.deserialize` (the library's own parse: dtype, shape, bytes) viewed
through `ml_dtypes` for bfloat16 / float8, which np.save writes as '<V2' / '<V1'.
"""
import io
import json
import os
import struct
import sys

import ml_dtypes
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from oracle import check_bytes, check_npy  # noqa: E402

rng = np.random.default_rng(11)

# safetensors dtype -> the ml_dtypes type numpy lacks.
ML_DTYPES = {
    "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn,
    "F8_E5M2": ml_dtypes.float8_e5m2,
    "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz,
    "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
    "F8_E8M0": ml_dtypes.float8_e8m0fnu,
}
LOGICAL = {
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}
METADATA = {"format": "pt", "note": "h\u00e9llo world", "n": "3"}


def st_tensors():
    """One tensor of every dtype, odd shapes, and dotted names as Hugging Face writes them."""
    floats = rng.standard_normal((4, 6)).astype("<f4")
    out = {
        "model.embed.weight": rng.standard_normal((300, 257)).astype("<f4"),
        "model.layers.0.attn.q.weight": floats.astype("<f2"),
        "model.layers.0.attn.q.bias": rng.standard_normal(6).astype("<f8"),
        "model.layers.1.attn.q.weight": floats.astype(ml_dtypes.bfloat16),
        "model.layers.1.mlp.f8": floats.astype(ml_dtypes.float8_e4m3fn),
        "model.layers.1.mlp.f8_e5m2": floats.astype(ml_dtypes.float8_e5m2),
        "fnuz.e4m3": floats.astype(ml_dtypes.float8_e4m3fnuz),
        "fnuz.e5m2": floats.astype(ml_dtypes.float8_e5m2fnuz),
        "scale.e8m0": np.abs(floats).astype(ml_dtypes.float8_e8m0fnu),
        "i64": np.array([-1, 2**62, -(2**40)], dtype="<i8"),
        "i32": np.arange(-6, 6, dtype="<i4").reshape(3, 4),
        "i16": np.arange(-3, 3, dtype="<i2"),
        "i8": np.arange(-128, 128, dtype="i1"),
        "u64": np.array([2**64 - 1, 0], dtype="<u8"),
        "u32": np.arange(5, dtype="<u4"),
        "u16": np.arange(7, dtype="<u2"),
        "u8": np.arange(256, dtype="u1").reshape(16, 16),
        "bool": rng.standard_normal(13) > 0,
        "c64": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype("<c8"),
        "scalar": np.array(2.5, dtype="<f4"),
        "empty": np.zeros((0, 3), dtype="<f4"),
    }
    return out


def st_write(out_dir):
    from safetensors.numpy import save_file
    os.makedirs(out_dir, exist_ok=True)
    save_file(st_tensors(), os.path.join(out_dir, "model.safetensors"), metadata=METADATA)
    shards = os.path.join(out_dir, "hf")
    os.makedirs(shards, exist_ok=True)
    tensors = st_tensors()
    names = sorted(tensors)
    for i, part in enumerate((names[::2], names[1::2])):
        save_file({k: tensors[k] for k in part},
                  os.path.join(shards, f"model-0000{i + 1}-of-00002.safetensors"), metadata={"shard": str(i)})
    np.savez(os.path.join(shards, "extra.npz"), a=np.arange(3))
    # Every bit pattern of every type numpy lacks, for -o widen=f32.
    every = {"bf16": np.arange(1 << 16, dtype="<u2").view(ml_dtypes.bfloat16).reshape(256, 256)}
    for dtype, mltype in ML_DTYPES.items():
        if mltype != ml_dtypes.bfloat16:
            every[dtype.lower()] = np.arange(256, dtype="u1").view(mltype).reshape(16, 16)
    save_file(every, os.path.join(out_dir, "allbits.safetensors"))
    with open(os.path.join(shards, "config.json"), "w") as f:
        json.dump({"model_type": "test"}, f)


def st_expected(path):
    """name -> (expected .npy bytes, array, safetensors dtype), from the library alone:
    `safe_open(..., framework="numpy").get_tensor` for numpy's dtypes, the library's own
    parse (`deserialize`: dtype, shape, bytes) viewed as ml_dtypes for the others."""
    import safetensors
    from safetensors import safe_open
    with open(path, "rb") as f:
        parsed = safetensors.deserialize(f.read())
    out = {}
    with safe_open(path, framework="numpy") as lib:
        for name, info in parsed:
            dtype = info["dtype"]
            if dtype in ML_DTYPES:
                array = np.frombuffer(bytes(info["data"]), dtype=ML_DTYPES[dtype]).reshape(info["shape"])
            else:
                array = lib.get_tensor(name)
            buf = io.BytesIO()
            np.save(buf, array)
            # numpy writes float8_e5m2 as '<f1', which np.load refuses; arrfs shows '<V1'
            # like the other float8 types (same length, so the rest is unchanged).
            data = buf.getvalue().replace(b"'descr': '<f1'", b"'descr': '<V1'", 1)
            out[name] = (data, array, dtype)
    return out


def files_under(mount):
    got = set()
    for root, _dirs, files in os.walk(mount):
        for name in files:
            got.add(os.path.relpath(os.path.join(root, name), mount))
    return got


def st_check(path, mount, sep=None):
    want = st_expected(path)
    rel = {name: (name.replace(sep, "/") if sep else name) + ".npy" for name in want}
    got = files_under(mount)
    assert got == set(rel.values()), f"missing {sorted(set(rel.values()) - got)}, extra {sorted(got - set(rel.values()))}"
    for name, (data, array, dtype) in sorted(want.items()):
        file = os.path.join(mount, rel[name])
        if dtype in ML_DTYPES:
            check_bytes(file, data, reads=40)
            loaded = np.load(file, mmap_mode="r")
            assert loaded.shape == array.shape, (file, loaded.shape)
            same = np.asarray(loaded).view(ML_DTYPES[dtype])
            assert np.array_equal(same, array, equal_nan=True), file
            assert os.getxattr(file, "user.arrfs.dtype_logical") == LOGICAL[dtype].encode(), file
        else:
            check_npy(file, array, reads=40)
        assert os.getxattr(file, "user.safetensors.dtype") == dtype.encode(), file
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        metadata = json.loads(f.read(n)).get("__metadata__", {})
    for key, value in metadata.items():
        assert os.getxattr(mount, f"user.safetensors.{key}") == value.encode(), key
    print(f"{path}: {len(want)} tensors ok")


def npy_of(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def st_check_widened(path, mount):
    """Mounted with -o widen=f32: bfloat16 / float8 tensors are np.save of ml_dtypes'
    `.astype(np.float32)` of the library's arrays (NaN bits included), whole and in random
    slices, still naming the stored type; every other tensor is as without the option."""
    want = st_expected(path)
    assert files_under(mount) == {name + ".npy" for name in want}, files_under(mount)
    widened = 0
    for name, (data, array, dtype) in sorted(want.items()):
        file = os.path.join(mount, name + ".npy")
        if dtype in ML_DTYPES:
            wide = array.astype(np.float32)
            check_bytes(file, npy_of(wide), reads=40)
            assert os.stat(file).st_size == len(npy_of(wide)), file
            assert os.getxattr(file, "user.arrfs.dtype_logical") == LOGICAL[dtype].encode(), file
            widened += 1
        else:
            check_npy(file, array, reads=20)
    assert widened, "no tensor of a type numpy lacks"
    print(f"{path}: {len(want)} tensors ok, {widened} widened")


def st_write_bad(out_dir):
    from safetensors.numpy import save, save_file
    os.makedirs(out_dir, exist_ok=True)
    tensors = {"a": np.arange(1000, dtype="<f8"), "b": np.arange(10, dtype="<i4")}
    good = save(tensors)
    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8:8 + n])

    def write(name, data):
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)

    def with_header(h):
        text = json.dumps(h).encode()
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text

    write("truncated.safetensors", good[:len(good) - 100])
    write("lying_length.safetensors", struct.pack("<Q", len(good)) + good[8:])
    write("not_object.safetensors", with_header([1, 2, 3]) + good[8 + n:])
    write("bad_json.safetensors", struct.pack("<Q", 12) + b'{"a": [1, 2' + b" " + good[8 + n:])
    past = json.loads(json.dumps(header))
    past["b"]["data_offsets"] = [8040, 8040 + 10 * 4]
    write("past_end.safetensors", with_header(past) + good[8 + n:])
    wrong = json.loads(json.dumps(header))
    wrong["b"]["shape"] = [11]
    wrong["c"] = {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}
    write("wrong_length.safetensors", with_header(wrong) + good[8 + n:])
    save_file(tensors, os.path.join(out_dir, "good.safetensors"))


def st_check_skipped(mount):
    """wrong_length.safetensors: `b` (shape that does not fit its bytes) and `c` (unknown
    dtype) are left out with reasons; `a` reads right."""
    assert files_under(mount) == {"a.npy"}, files_under(mount)
    check_npy(os.path.join(mount, "a.npy"), np.arange(1000, dtype="<f8"), reads=20)
    skipped = os.getxattr(mount, "user.arrfs.skipped").decode()
    assert "b: data_offsets" in skipped and "c: dtype \"Q9\"" in skipped, skipped
    print("bad tensors left out, the rest reads")


GGUF_METADATA = [
    ("add_uint8", "t.u8", 200), ("add_int8", "t.i8", -100), ("add_uint16", "t.u16", 60000),
    ("add_int16", "t.i16", -30000), ("add_uint32", "t.u32", 4_000_000_000),
    ("add_int32", "t.i32", -2_000_000_000), ("add_float32", "t.f32", 0.1),
    ("add_bool", "t.bool", True), ("add_string", "t.str", "h\u00e9llo"),
    ("add_uint64", "t.u64", 2**64 - 1), ("add_int64", "t.i64", -(2**62)),
    ("add_float64", "t.f64", 1e-300), ("add_array", "t.ints", [1, 2, 3]),
    ("add_array", "t.strs", ["a", "b\u00e9", ""]), ("add_array", "t.floats", [0.5, 0.25]),
]


def gguf_write(out_dir):
    """GGUFWriter files: plain and Q8_0/Q4_0 tensors with metadata of every value type; one
    with a custom alignment; one with a tensor of every quantized type the package knows."""
    import gguf
    from gguf.constants import GGMLQuantizationType as Q, GGML_QUANT_SIZES
    from gguf import quants
    os.makedirs(out_dir, exist_ok=True)
    for name, alignment in (("model.gguf", None), ("aligned.gguf", 256)):
        w = gguf.GGUFWriter(os.path.join(out_dir, name), "llama")
        if alignment:
            w.add_custom_alignment(alignment)
        for method, key, value in GGUF_METADATA:
            getattr(w, method)(key, value)
        weights = rng.standard_normal((3, 5, 64)).astype("<f4")
        w.add_tensor("token_embd.weight", rng.standard_normal((70, 256)).astype("<f4"))
        w.add_tensor("blk.0.attn_q.weight", weights)
        w.add_tensor("blk.0.attn_k.weight", weights.astype("<f2"))
        w.add_tensor("blk.0.attn_v.weight", weights[0].astype(ml_dtypes.bfloat16).view("<u2"), raw_dtype=Q.BF16)
        w.add_tensor("blk.0.q8", quants.quantize(weights[0], Q.Q8_0), raw_dtype=Q.Q8_0)
        w.add_tensor("blk.0.q4", quants.quantize(weights[1], Q.Q4_0), raw_dtype=Q.Q4_0)
        w.add_tensor("f64", rng.standard_normal(7))
        w.add_tensor("i8", np.arange(-5, 5, dtype="i1"))
        w.add_tensor("i16", np.arange(9, dtype="<i2"))
        w.add_tensor("i32", np.arange(12, dtype="<i4").reshape(3, 4))
        w.add_tensor("i64", np.array([-(2**40), 2**62], dtype="<i8"))
        w.add_tensor("scalar_like", np.array([1.5], dtype="<f4"))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    w = gguf.GGUFWriter(os.path.join(out_dir, "allquants.gguf"), "llama")
    for qtype, (values, nbytes) in GGML_QUANT_SIZES.items():
        if values == 1:
            continue
        raw = rng.integers(0, 256, size=(2, 3 * nbytes), dtype="u1")
        w.add_tensor(f"q.{qtype.name}", raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_check(path, mount, sep=None):
    """Every tensor equals np.save of GGUFReader's `.data` (BF16 viewed as ml_dtypes'
    bfloat16, which np.save writes as '<V2'); metadata equals the reader's fields."""
    import gguf
    reader = gguf.GGUFReader(path)
    rel = {t.name: (t.name.replace(sep, "/") if sep else t.name) + ".npy" for t in reader.tensors}
    got = files_under(mount)
    assert got == set(rel.values()), f"missing {sorted(set(rel.values()) - got)}, extra {sorted(got - set(rel.values()))}"
    for t in reader.tensors:
        file = os.path.join(mount, rel[t.name])
        kind = t.tensor_type.name
        assert os.getxattr(file, "user.gguf.type") == kind.encode(), file
        if kind == "BF16":
            array = np.ascontiguousarray(t.data).view(ml_dtypes.bfloat16)
            buf = io.BytesIO()
            np.save(buf, array)
            check_bytes(file, buf.getvalue(), reads=30)
            assert os.getxattr(file, "user.arrfs.dtype_logical") == b"bfloat16"
        else:
            check_npy(file, np.ascontiguousarray(t.data), reads=30)
            if t.data.dtype == np.uint8 and kind not in ("I8",):
                logical = os.getxattr(file, "user.arrfs.dtype_logical").decode()
                assert logical.startswith(kind + " "), (file, logical)
    fields = 0
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        got = os.getxattr(mount, f"user.gguf.{key}").decode()
        want = field.contents()
        if isinstance(want, str):
            assert got == want, (key, got, want)
        elif isinstance(want, bool):
            assert got == ("true" if want else "false"), (key, got)
        elif isinstance(want, float) and field.types[0] == gguf.GGUFValueType.FLOAT32:
            # arrfs prints an f32 as its shortest text (0.1); the reader widens it to f64.
            assert np.float32(float(got)) == np.float32(want), (key, got, want)
        elif isinstance(want, float):
            assert float(got) == want, (key, got, want)
        else:
            assert json.loads(got) == want, (key, got, want)
        fields += 1
    print(f"{path}: {len(reader.tensors)} tensors, {fields} metadata fields ok")


def gguf_check_widened(path, mount):
    """Mounted with -o widen=f32: BF16 tensors are np.save of GGUFReader's data viewed as
    ml_dtypes' bfloat16 then `.astype(np.float32)`; the others as gguf-check has them."""
    import gguf
    reader = gguf.GGUFReader(path)
    widened = 0
    for t in reader.tensors:
        file = os.path.join(mount, t.name + ".npy")
        if t.tensor_type.name == "BF16":
            wide = np.ascontiguousarray(t.data).view(ml_dtypes.bfloat16).astype(np.float32)
            check_npy(file, wide, reads=30)
            assert os.getxattr(file, "user.arrfs.dtype_logical") == b"bfloat16"
            widened += 1
        else:
            check_npy(file, np.ascontiguousarray(t.data), reads=10)
    assert widened, "no BF16 tensor"
    print(f"{path}: {len(reader.tensors)} tensors ok, {widened} widened")


# The fixtures' tensors of types numpy lacks (tests/fixtures/torch/make.py), by file.
TORCH_NARROW = {"bf16.npy": ml_dtypes.bfloat16, "bf16_t.npy": ml_dtypes.bfloat16,
                "f8_e4m3.npy": ml_dtypes.float8_e4m3fn, "f8_e5m2.npy": ml_dtypes.float8_e5m2}


def torch_check_widened(fixture, mount):
    """Mounted with -o widen=f32: each bfloat16 / float8 tensor is np.save of the array torch
    gave (FIXTURE.expected.zip) viewed as its ml_dtypes type, `.astype(np.float32)` (a
    transposed bf16 view stays in Fortran order, as astype keeps it); the rest unchanged."""
    import zipfile
    with zipfile.ZipFile(fixture[:-3] + ".expected.zip") as z:
        want = {name: z.read(name) for name in z.namelist()}
    assert files_under(mount) == set(want), files_under(mount)
    widened = 0
    for rel, data in sorted(want.items()):
        file = os.path.join(mount, rel)
        if b"'<V" in data[:128]:
            stored = np.load(io.BytesIO(data)).view(TORCH_NARROW[rel])
            check_bytes(file, npy_of(stored.astype(np.float32)), reads=30)
            assert os.getxattr(file, "user.arrfs.dtype_logical") == np.dtype(TORCH_NARROW[rel]).name.encode()
            widened += 1
        else:
            check_bytes(file, data, reads=10)
    print(f"{fixture}: {len(want)} files ok, {widened} widened")


def torch_check(fixture, mount):
    """The mount of a torch.save checkpoint shows exactly the files of FIXTURE.expected.zip
    (written by tests/fixtures/torch/make.py from torch.load and tensor.numpy()), byte for
    byte and in random slices."""
    import zipfile
    with zipfile.ZipFile(fixture[:-3] + ".expected.zip") as z:
        want = {name: z.read(name) for name in z.namelist()}
    got = files_under(mount)
    assert got == set(want), f"missing {sorted(set(want) - got)}, extra {sorted(got - set(want))}"
    for rel, data in sorted(want.items()):
        file = os.path.join(mount, rel)
        check_bytes(file, data, reads=30)
        if b"'<V" in data[:128]:
            logical = os.getxattr(file, "user.arrfs.dtype_logical").decode()
            assert logical in ("bfloat16", "float8_e4m3fn", "float8_e5m2"), (file, logical)
    print(f"{fixture}: {len(want)} files ok")


def torch_write_missing(fixture, out):
    """A copy of FIXTURE (a torch.save zip) without its storage member `data/0`; every
    other member byte for byte, stored as torch stores them."""
    import zipfile
    with zipfile.ZipFile(fixture) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if not info.filename.endswith("/data/0"):
                dst.writestr(info.filename, src.read(info.filename))


def torch_check_missing(fixture, mount):
    """The copy without storage 0: the tensors viewing it are left out with the reason,
    every other file equals FIXTURE.expected.zip."""
    import zipfile
    with zipfile.ZipFile(fixture[:-3] + ".expected.zip") as z:
        want = {name: z.read(name) for name in z.namelist()}
    got = files_under(mount)
    assert got and got < set(want), (sorted(got), sorted(want))
    for rel in sorted(got):
        check_bytes(os.path.join(mount, rel), want[rel], reads=10)
    skipped = os.getxattr(mount, "user.arrfs.skipped").decode()
    gone = sorted(os.path.splitext(name)[0] for name in set(want) - got)
    for name in gone:
        assert f"{name}: storage 0 is missing from the archive" in skipped, (name, skipped)
    print(f"{len(gone)} tensors of the missing storage left out, {len(got)} files ok")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "st-write": lambda: st_write(*args),
        "st-check": lambda: st_check(*args),
        "st-check-widened": lambda: st_check_widened(*args),
        "gguf-check-widened": lambda: gguf_check_widened(*args),
        "torch-check-widened": lambda: torch_check_widened(*args),
        "st-write-bad": lambda: st_write_bad(*args),
        "st-check-skipped": lambda: st_check_skipped(*args),
        "gguf-write": lambda: gguf_write(*args),
        "gguf-check": lambda: gguf_check(*args),
        "torch-check": lambda: torch_check(*args),
        "torch-write-missing": lambda: torch_write_missing(*args),
        "torch-check-missing": lambda: torch_check_missing(*args),
    }[cmd]()
