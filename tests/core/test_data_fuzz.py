"""Fuzzing the file readers: any bytes give a Dataset or a DatasetError, nothing else."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tempfile
import zipfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vae_core.data import Dataset, DatasetSpec, load_dataset
from vae_core.errors import DatasetError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
FUZZ_LIGHT = settings(FUZZ, max_examples=100)


def _idx_bytes(arr, code=0x08):
    arr = np.asarray(arr)
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    return (
        struct.pack(">BBBB", 0, 0, code, arr.ndim)
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + arr.astype(dtype).tobytes()
    )


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz_bytes(compressed, **arrays):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


_RNG = np.random.default_rng(0)
_IMAGES = _RNG.integers(0, 256, (4, 5, 5), dtype=np.uint8)
_LABELS = np.array([0, 1, 2, 1], dtype=np.uint8)

VALID = {
    "idx": _idx_bytes(_IMAGES),
    "idx_float": _idx_bytes(_IMAGES / 255.0, code=0x0D),
    "idx_gz": gzip.compress(_idx_bytes(_IMAGES), mtime=0),
    "npy": _npy_bytes(_IMAGES),
    "npy_nchw": _npy_bytes((_IMAGES[:, None] / 255.0).astype(np.float32)),
    "npz": _npz_bytes(False, images=_IMAGES, labels=_LABELS),
    "npz_compressed": _npz_bytes(True, images=_IMAGES, labels=_LABELS),
}

NAMES = ["data.npy", "data.npz", "train-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "blob.bin", "x.png"]


def _load_bytes(data: bytes, name: str, labels: bytes | None = None, labels_name: str | None = None):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        if labels is not None:
            with open(os.path.join(tmp, labels_name), "wb") as f:
                f.write(labels)
        try:
            ds = load_dataset(DatasetSpec(path))
        except DatasetError as exc:
            assert str(exc)
            return None
        assert isinstance(ds, Dataset)
        assert ds.images.dtype in (np.uint8, np.float32) and ds.images.ndim == 4
        values = ds.float_images()
        assert np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
        if ds.labels is not None:
            assert ds.labels.shape == (ds.n,)
        return ds


@st.composite
def mutated(draw, base: bytes):
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01, 0x08, 0x0D, 0x03]))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i : i + draw(st.integers(1, 8))]
    return bytes(data)


@FUZZ
@given(data=st.binary(max_size=400), name=st.sampled_from(NAMES))
def test_random_bytes(data, name):
    _load_bytes(data, name)


@FUZZ_LIGHT
@given(
    prefix=st.sampled_from([b"\x93NUMPY\x01\x00", b"PK\x03\x04", b"\x1f\x8b\x08\x00", b"\x00\x00\x08\x03", b"\x00\x00\x0d\x02"]),
    rest=st.binary(max_size=300),
    name=st.sampled_from(NAMES[:5]),
)
def test_random_bytes_behind_real_magic(prefix, rest, name):
    _load_bytes(prefix + rest, name)


@FUZZ
@given(st.data())
def test_mutated_idx(data):
    key = data.draw(st.sampled_from(["idx", "idx_float", "idx_gz"]))
    blob = data.draw(mutated(VALID[key]))
    _load_bytes(blob, "train-images-idx3-ubyte.gz" if key == "idx_gz" else "train-images-idx3-ubyte")


@FUZZ
@given(st.data())
def test_mutated_idx_labels(data):
    labels = data.draw(mutated(_idx_bytes(_LABELS)))
    _load_bytes(VALID["idx"], "train-images-idx3-ubyte", labels, "train-labels-idx1-ubyte")


@FUZZ
@given(st.data())
def test_mutated_npy(data):
    key = data.draw(st.sampled_from(["npy", "npy_nchw"]))
    _load_bytes(data.draw(mutated(VALID[key])), "data.npy")


@FUZZ
@given(st.data())
def test_mutated_npz(data):
    key = data.draw(st.sampled_from(["npz", "npz_compressed"]))
    _load_bytes(data.draw(mutated(VALID[key])), "data.npz")


@FUZZ_LIGHT
@given(
    shape=st.lists(st.integers(0, 2**31), min_size=0, max_size=5).map(tuple),
    descr=st.sampled_from(["|u1", "<f4", ">f8", "|b1", "<i8", "|O", "<U3", "<c8", "|V4", "<M8[s]", "bogus"]),
    tail=st.binary(max_size=64),
)
def test_crafted_npy_headers(shape, descr, tail):
    """Headers that lie about shape or dtype, inside .npy files and .npz archives."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    header += b" " * ((-(len(header) + 11)) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + tail
    _load_bytes(npy, "data.npy")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("images.npy", npy)
    _load_bytes(buf.getvalue(), "data.npz")


def test_valid_files_load():
    for key, name in [
        ("idx", "train-images-idx3-ubyte"),
        ("idx_float", "train-images-idx3-ubyte"),
        ("idx_gz", "train-images-idx3-ubyte.gz"),
        ("npy", "data.npy"),
        ("npy_nchw", "data.npy"),
        ("npz", "data.npz"),
        ("npz_compressed", "data.npz"),
    ]:
        ds = _load_bytes(VALID[key], name)
        assert ds is not None and ds.images.shape == (4, 1, 5, 5), key
