"""HDF5 datasets under every codec arrfs decodes, written by h5py + hdf5plugin, and the
checks of their virtual files against h5py's own reading (hdf5plugin loaded).

    python codec_cases.py write FILE          write the datasets
    python codec_cases.py check FILE MOUNT    every file equals np.save of h5py's reading
    python codec_cases.py corrupt FILE        write datasets whose chunk 1 is damaged
    python codec_cases.py check_corrupt FILE MOUNT
                                              damaged chunks give EIO, the rest reads
"""
import errno
import sys

import h5py
import hdf5plugin
import numpy as np

from oracle import check_npy

rng = np.random.default_rng(7)


def smooth(shape, dtype):
    """Compressible data with some noise: what codecs are used for."""
    base = np.cumsum(rng.integers(-3, 4, size=int(np.prod(shape)))).reshape(shape)
    return (base * 0.5).astype(dtype) if np.dtype(dtype).kind == "f" else base.astype(dtype)


def codecs():
    """Name -> (hdf5plugin filter or h5py keywords)."""
    out = {
        "zstd": hdf5plugin.Zstd(clevel=5),
        "lz4": hdf5plugin.LZ4(nbytes=512),
        "bshuf_lz4": hdf5plugin.Bitshuffle(nelems=0, cname="lz4"),
        "bshuf_zstd": hdf5plugin.Bitshuffle(nelems=64, cname="zstd"),
        "bshuf_none": hdf5plugin.Bitshuffle(nelems=0, cname="none"),
        "bzip2": hdf5plugin.BZip2(blocksize=5),
    }
    for cname in ["blosclz", "lz4", "lz4hc", "zlib", "zstd"]:
        for shuffle, tag in [(hdf5plugin.Blosc.NOSHUFFLE, "noshuf"), (hdf5plugin.Blosc.SHUFFLE, "shuf"),
                             (hdf5plugin.Blosc.BITSHUFFLE, "bitshuf")]:
            out[f"blosc_{cname}_{tag}"] = hdf5plugin.Blosc(cname=cname, clevel=5, shuffle=shuffle)
    # Blosc2: 2-d chunks, so hdf5plugin writes b2nd frames.
    b2 = hdf5plugin.Blosc2
    for cname in ["blosclz", "lz4", "lz4hc", "zlib", "zstd"]:
        out[f"blosc2_{cname}_shuf"] = b2(cname=cname, clevel=5, filters=b2.SHUFFLE)
    for cname, filters, tag in [("blosclz", b2.NOFILTER, "noshuf"), ("lz4", b2.BITSHUFFLE, "bitshuf"),
                                ("zstd", b2.BITSHUFFLE, "bitshuf"), ("zlib", b2.DELTA, "delta")]:
        out[f"blosc2_{cname}_{tag}"] = b2(cname=cname, clevel=5, filters=filters)
    return out


# Dtypes under each codec; (33, 17) with (8, 5) chunks leaves partial edge chunks.
DTYPES = ["<f4", ">f8", "<i2", ">i4", "<u8"]
SHAPE, CHUNKS = (33, 17), (8, 5)


def write(path):
    with h5py.File(path, "w") as f:
        for name, codec in codecs().items():
            for code in DTYPES:
                ds = f"{name}/{code.replace('<', 'le_').replace('>', 'be_')}"
                f.create_dataset(ds, data=smooth(SHAPE, code), chunks=CHUNKS, **codec)
        f.create_dataset("combo/shuffle_zstd", data=smooth((100, 7), "<i4"), chunks=(30, 7),
                         shuffle=True, **hdf5plugin.Zstd())
        f.create_dataset("combo/lz4_fletcher", data=smooth((500,), ">u2"), chunks=(64,),
                         fletcher32=True, **hdf5plugin.LZ4())
        f.create_dataset("combo/scalar_chunk_3d", data=smooth((5, 6, 7), "<f8"), chunks=(2, 6, 3),
                         **hdf5plugin.Blosc(cname="zstd"))
        write_blosc2(f)
        for name, opts in [("szip/nn16", ("nn", 16)), ("szip/ec8", ("ec", 8))]:
            f.create_dataset(name + "_le_i4", data=smooth(SHAPE, "<i4"), chunks=CHUNKS,
                             compression="szip", compression_opts=opts)
            f.create_dataset(name + "_be_f8", data=smooth(SHAPE, ">f8"), chunks=CHUNKS,
                             compression="szip", compression_opts=opts)
        write_scaleoffset(f)
        write_nbit(f)


def write_blosc2(f):
    """Blosc2 beyond the 2-d grid of codecs(): 1-d chunks (a plain frame), 3-d chunks, and
    chunks larger than one Blosc2 block (b2nd blocks reassembled into C order)."""
    b2 = hdf5plugin.Blosc2
    f.create_dataset("blosc2/flat_be_u2", data=smooth((500,), ">u2"), chunks=(64,),
                     **b2(cname="lz4", filters=b2.SHUFFLE))
    f.create_dataset("blosc2/flat_big_i4", data=smooth((100_000,), "<i4"), chunks=(40_000,),
                     **b2(cname="zstd", filters=b2.BITSHUFFLE))
    f.create_dataset("blosc2/nd3_small_f8", data=smooth((5, 6, 7), "<f8"), chunks=(2, 6, 3),
                     **b2(cname="blosclz"))
    f.create_dataset("blosc2/nd3_blocks_be_f4", data=smooth((41, 30, 20), ">f4"), chunks=(20, 30, 20),
                     **b2(cname="zstd", filters=b2.SHUFFLE))
    f.create_dataset("blosc2/nd2_blocks_i8", data=smooth((300, 200), "<i8"), chunks=(128, 128),
                     **b2(cname="lz4hc", filters=b2.BITSHUFFLE))
    f.create_dataset("blosc2/nd4_u1", data=smooth((3, 4, 50, 9), "u1"), chunks=(2, 3, 32, 9),
                     **b2(cname="zlib", filters=b2.NOFILTER))


def write_scaleoffset(f):
    f.create_dataset("scaleoffset/int_auto", data=smooth(SHAPE, "<i4"), chunks=CHUNKS, scaleoffset=0)
    f.create_dataset("scaleoffset/int_be_u2", data=smooth(SHAPE, ">u2") + 1000, chunks=CHUNKS,
                     scaleoffset=0)
    f.create_dataset("scaleoffset/int_i8_bits", data=smooth((300,), "<i8"), chunks=(64,), scaleoffset=12)
    f.create_dataset("scaleoffset/int_fill", shape=(40,), chunks=(16,), dtype="<i2", fillvalue=-7,
                     scaleoffset=0)
    f["scaleoffset/int_fill"][3:30] = np.arange(27, dtype="<i2") * 3
    f.create_dataset("scaleoffset/float_d3", data=smooth(SHAPE, "<f4") / 7, chunks=CHUNKS, scaleoffset=3)
    f.create_dataset("scaleoffset/double_be_d2", data=smooth(SHAPE, ">f8") / 3, chunks=CHUNKS,
                     scaleoffset=2)
    f.create_dataset("scaleoffset/float_fill", shape=(50,), chunks=(20,), dtype="<f4", fillvalue=2.5,
                     scaleoffset=2)
    f["scaleoffset/float_fill"][10:35] = np.linspace(-1, 1, 25, dtype="<f4")


def nbit_dataset(f, name, tid, data, chunks, fill=None):
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk(chunks)
    dcpl.set_filter(h5py.h5z.FILTER_NBIT)
    if fill is not None:
        dcpl.set_fill_value(np.array(fill, dtype=data.dtype))
    space = h5py.h5s.create_simple(data.shape)
    dset = h5py.h5d.create(f.id, name.encode(), tid, space, dcpl=dcpl)
    if fill is None:
        dset.write(h5py.h5s.ALL, h5py.h5s.ALL, data)
    else:
        f[name][: len(data) // 2] = data[: len(data) // 2]  # later chunks never written


def write_nbit(f):
    f.create_group("nbit")
    # float32 with 20 significant bits at offset 7 (HDF5's own n-bit test type).
    tid = h5py.h5t.IEEE_F32LE.copy()
    tid.set_fields(26, 20, 6, 7, 13)
    tid.set_offset(7)
    tid.set_precision(20)
    tid.set_size(4)
    tid.set_ebias(31)
    nbit_dataset(f, "nbit/float32_p20", tid, (np.arange(1, 100, dtype="<f4") / 3).reshape(9, 11), (4, 5))
    # int16 with 12 bits at offset 2, both byte orders.
    for order, tid in [("le", h5py.h5t.STD_I16LE.copy()), ("be", h5py.h5t.STD_I16BE.copy())]:
        tid.set_precision(12)
        tid.set_offset(2)
        nbit_dataset(f, f"nbit/int16_p12_{order}", tid,
                     rng.integers(-2000, 2000, (30, 7)).astype("<i2"), (8, 7))
    tid = h5py.h5t.STD_I16LE.copy()
    tid.set_precision(9)
    tid.set_offset(5)
    nbit_dataset(f, "nbit/int16_p9_fill", tid, rng.integers(-200, 200, 60).astype("<i2"), (8,), fill=-3)
    # Full precision: n-bit packs nothing, the direct path decodes it.
    nbit_dataset(f, "nbit/int32_full", h5py.h5t.STD_I32BE.copy(),
                 rng.integers(-9, 9, 70).astype("<i4"), (16,))
    # Unsigned 8-bit values in 5 bits.
    tid = h5py.h5t.STD_U8LE.copy()
    tid.set_precision(5)
    nbit_dataset(f, "nbit/uint8_p5", tid, rng.integers(0, 32, 45).astype("u1"), (10,))


def expected_files(f):
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            out[name + ".npy"] = obj[()]

    f.visititems(visit)
    return out


def check(path, mnt):
    with h5py.File(path, "r") as f:
        files = expected_files(f)
    for rel, array in sorted(files.items()):
        try:
            check_npy(f"{mnt}/{rel}", array, reads=20)
        except Exception as e:
            raise AssertionError(f"{rel}: {e}") from e
    print(f"{len(files)} files checked")


# Damaged chunk 1 of datasets under a few codecs: bytes flipped, or cut short. (Flipped
# bytes inside blosc's lz4 data decode to other bytes, for h5py too: no checksum. Its header
# is checked.)
CORRUPT = {
    "flipped_zstd": (hdf5plugin.Zstd(), "flip"),
    "cut_zstd": (hdf5plugin.Zstd(), "cut"),
    "flipped_blosc": (hdf5plugin.Blosc(cname="lz4"), "flip_header"),
    "cut_bshuf_lz4": (hdf5plugin.Bitshuffle(cname="lz4"), "cut"),
    "cut_lz4": (hdf5plugin.LZ4(), "cut"),
    "flipped_blosc2": (hdf5plugin.Blosc2(cname="lz4"), "flip_header"),
    "cut_blosc2": (hdf5plugin.Blosc2(cname="zstd"), "cut"),
}


def corrupt(path):
    with h5py.File(path, "w") as f:
        for name, (codec, how) in CORRUPT.items():
            ds = f.create_dataset(name, data=smooth((64, 64), "<f8"), chunks=(16, 64), **codec)
            mask, raw = ds.id.read_direct_chunk((16, 0))
            raw = bytearray(raw)
            if how.startswith("flip"):
                at = 8 if how == "flip_header" else len(raw) // 2
                raw[at:at + 16] = bytes(b ^ 0x5A for b in raw[at:at + 16])
            else:
                raw = raw[: len(raw) * 2 // 3]
            ds.id.write_direct_chunk((16, 0), bytes(raw), mask)
        f["good"] = np.arange(1000, dtype="<i4")
        f.create_dataset("blosc2", data=smooth((64, 64), "<f8"), chunks=(16, 64), **hdf5plugin.Blosc2())
        f.create_dataset("good_zstd", data=smooth((64, 64), "<f8"), chunks=(16, 64), **hdf5plugin.Zstd())


def check_corrupt(path, mnt):
    with h5py.File(path, "r") as f:
        for name in ["good", "good_zstd", "blosc2"]:
            check_npy(f"{mnt}/{name}.npy", f[name][()], reads=20)
        for name in CORRUPT:
            intact = f[name][:16].tobytes()[:7000]  # pages wholly inside chunk 0
            with open(f"{mnt}/{name}.npy", "rb") as v:
                header = v.read(128)
                assert header.startswith(b"\x93NUMPY"), header
                assert v.read(len(intact)) == intact, f"{name}: chunk 0 differs"
                try:
                    v.seek(128 + 20 * 64 * 8)
                    v.read(4096)
                except OSError as e:
                    assert e.errno == errno.EIO, e
                else:
                    raise AssertionError(f"{name}: reading the damaged chunk succeeded")
    print(f"{len(CORRUPT)} damaged datasets gave EIO; others read")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"write": write, "check": check, "corrupt": corrupt, "check_corrupt": check_corrupt}[cmd](*args)
