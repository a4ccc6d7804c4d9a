"""MNIST-style IDX files, gzipped or not, and finding the labels file that lies next to the images.

An uncompressed IDX file is memory-mapped (its data is one raw array after a
small header); a gzipped one is decompressed into one array allocated after
checking that it fits in memory.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from ..errors import DatasetError
from .arrays import _open_binary
from .spec import MAX_DATASET_BYTES, _check_memory, _fail, _fmt_bytes

_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_exact(f, n: int) -> bytes:
    """Read up to n bytes in bounded chunks (never preallocating n)."""
    parts = []
    left = n
    while left > 0:
        piece = f.read(min(left, 1 << 24))
        if not piece:
            break
        parts.append(piece)
        left -= len(piece)
    return b"".join(parts)


def _read_idx(path: str) -> np.ndarray:
    """An IDX array, gzipped or not (gzip detected by its magic bytes); uncompressed files are memory-mapped."""
    with _open_binary(path) as raw:
        try:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            file_size = os.fstat(raw.fileno()).st_size
            if not compressed:
                return _parse_idx(raw, path, file_size)
        except OSError as exc:
            raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _parse_idx(f, path, None)
        except (DatasetError, MemoryError):
            raise
        except Exception as exc:  # BadGzipFile, EOFError, zlib.error...
            raise _fail(path, f"the gzip data is corrupt or truncated ({type(exc).__name__}: {exc})") from None


def _parse_idx(f, path: str, file_size: int | None) -> np.ndarray:
    """The array of an IDX stream: mapped from the file when ``file_size`` is known (uncompressed), else read."""
    what = "file" if file_size is not None else "decompressed file"
    magic = _read_exact(f, 4)
    if len(magic) < 4:
        raise _fail(path, f"too short to be an IDX file ({len(magic)} bytes)")
    if magic[0] != 0 or magic[1] != 0:
        raise _fail(
            path,
            f"not an IDX (MNIST-format) file: its magic number 0x{magic.hex()} should start with two zero bytes",
        )
    code, ndim = magic[2], magic[3]
    if code not in _IDX_TYPES:
        raise _fail(path, f"not a valid IDX file: unknown data type code 0x{code:02x} in its magic number")
    if ndim == 0:
        raise _fail(path, "not a valid IDX file: its header declares zero dimensions")
    dims_raw = _read_exact(f, 4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise _fail(path, f"truncated: the header declares {ndim} dimensions but ends early")
    dims = struct.unpack(f">{ndim}I", dims_raw)
    dtype = _IDX_TYPES[code]
    header_len = 4 + 4 * ndim
    nbytes = int(np.prod(dims, dtype=object)) * dtype.itemsize
    expected = header_len + nbytes
    if file_size is not None:
        if file_size < expected:
            raise _fail(path, f"truncated: header promises {expected} bytes, file holds {file_size}")
        if file_size > expected:
            raise _fail(
                path,
                f"the header promises {expected} bytes but the file holds {file_size}; "
                "it is corrupt or not an IDX file",
            )
        if nbytes == 0:
            return np.empty(dims, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", offset=header_len, shape=dims)
    if nbytes > MAX_DATASET_BYTES:
        raise _fail(path, f"the header claims dimensions {dims} ({_fmt_bytes(nbytes)}), far too large to load")
    _check_memory(nbytes, path, f"the decompressed array {'x'.join(map(str, dims))}",
                  "decompress the file (gunzip), which is memory-mapped instead of loaded")
    out = np.empty(dims, dtype=dtype)
    view = memoryview(out.reshape(-1).view(np.uint8))
    got = 0
    while got < nbytes:
        n = f.readinto(view[got : min(nbytes, got + (1 << 24))])
        if not n:
            break
        got += n
    if got < nbytes:
        raise _fail(path, f"truncated: header promises {expected} bytes, {what} holds {header_len + got}")
    if f.read(1):
        raise _fail(
            path, f"the header promises {expected} bytes but the {what} holds more; it is corrupt or not an IDX file"
        )
    return out


def _idx_labels_path(path: str) -> tuple[str | None, str | None]:
    """(labels file next to an IDX images file, or None; the name looked for)."""
    folder, name = os.path.split(path)
    base = name[:-3] if name.lower().endswith(".gz") else name
    lower = base.lower()
    wanted = lower.replace("images", "labels").replace("idx3", "idx1")
    if wanted == lower:
        return None, None
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return None, wanted
    by_lower = {e.lower(): e for e in entries}
    for candidate in (wanted, wanted + ".gz"):
        if candidate in by_lower and os.path.isfile(os.path.join(folder, by_lower[candidate])):
            return os.path.join(folder, by_lower[candidate]), wanted
    return None, wanted
