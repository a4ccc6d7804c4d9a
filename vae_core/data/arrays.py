"""Image arrays: ``.npy`` and ``.npz`` files (never unpickled) and the conversion every array source shares.

``_convert_array`` turns a raw array of any supported layout ((N, H, W),
(N, H, W, C), (N, C, H, W) or flattened square images) and numeric dtype
into stored images (N, C, H, W) (uint8 grey levels or float32 values, see
``Dataset``); the built-in datasets and IDX files go through it too.  What
can be done by a view is done by a view (layout, dropping alpha, grey shown
as RGB), so a memory-mapped file stays mapped; what cannot (a resize, grey
from colour, another dtype or range) is done in chunks into one uint8 array
(float32 for float sources), allocated once after checking that it fits.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile

import numpy as np

from ..errors import DatasetError
from .spec import (
    _CHUNK_ELEMENTS,
    MAX_DATASET_BYTES,
    ProgressFn,
    _allocate,
    _check_memory,
    _fail,
    _fmt_bytes,
    _report,
)

#: Largest label value accepted as a class index.
MAX_LABEL = 100_000


def _check_numeric_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.hasobject:
        raise _fail(
            where,
            "the file holds Python objects (a pickled object array) and is refused, because reading it "
            "could run arbitrary code; save the images as a plain numeric array",
        )
    kind = dtype.kind
    if kind in "US":
        raise _fail(where, f"the array holds text ({dtype}), not pixel values")
    if kind == "c":
        raise _fail(where, f"the array holds complex numbers ({dtype}), not pixel values")
    if kind == "V":
        raise _fail(where, "the array has a structured (record) data type, not plain pixel values")
    if kind in "mM":
        raise _fail(where, f"the array holds dates or times ({dtype}), not pixel values")
    if kind not in "biuf":
        raise _fail(where, f"unsupported data type {dtype}")


def _layout(shape: tuple[int, ...], where: str) -> str:
    """How a raw array maps to (N, C, H, W): "flat", "nhw", "nchw" or "nhwc"."""
    ndim = len(shape)
    if ndim == 2:
        side = math.isqrt(shape[1])
        if side * side != shape[1] or shape[1] == 0:
            raise _fail(
                where,
                f"a 2-D array of shape {shape} is taken as flattened square images, but {shape[1]} is not a "
                "square number; reshape it to (N, H, W)",
            )
        return "flat"
    if ndim == 3:
        return "nhw"
    if ndim == 4:
        channels = (1, 3, 4)
        first, last = shape[1] in channels, shape[3] in channels
        if first and not last:
            return "nchw"
        if last and not first:
            return "nhwc"
        if first and last:
            # Both readings are possible: take the one giving the larger image,
            # and channels-last (the NumPy / PIL convention) on a tie.
            return "nchw" if min(shape[2], shape[3]) > min(shape[1], shape[2]) else "nhwc"
        raise _fail(
            where,
            f"a 4-D array of shape {shape} has no channel axis of size 1, 3 or 4 in position 1 or 3; "
            "expected (N, C, H, W) or (N, H, W, C)",
        )
    raise _fail(
        where,
        f"expected an array of images of shape (N, H, W), (N, H, W, C) or (N, C, H, W), got {ndim} "
        f"dimension{'s' if ndim != 1 else ''} {shape}",
    )


def _to_nchw(arr: np.ndarray, layout: str) -> np.ndarray:
    if layout == "flat":
        side = math.isqrt(arr.shape[1])
        return arr.reshape(arr.shape[0], 1, side, side)
    if layout == "nhw":
        return arr[:, None]
    if layout == "nhwc":
        return arr.transpose(0, 3, 1, 2)
    return arr


def _resize_chunk(x: np.ndarray, size: int) -> np.ndarray:
    """Resize a float32 (B, C, H, W) block to size x size (bilinear, anti-aliased)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x))
    with torch.no_grad():
        out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.numpy()


def _convert_array(
    arr: np.ndarray,
    where: str,
    *,
    size: int | None,
    color: str,
    scale: float | None = None,
    notes: list[str] | None = None,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Stored images (N, C, H, W) from a raw image array of any supported layout and dtype.

    The raw values divided by ``scale`` are the pixel values in [0, 1].
    ``scale`` None chooses it from the data: bool -> 1, uint8 -> 255 (1 when
    every value is 0 or 1), other values within [0, 1] as they are, within
    [0, 255] -> 255, uint16 beyond 255 -> 65535.  A native uint8 array of
    scale 255 or float32 array of scale 1 that needs no resize and no grey
    conversion is returned as a view (memory-mapped input stays mapped);
    otherwise the images are converted in chunks into a new uint8 array
    (float32 when the source holds floats or more than 8 bits).
    """
    notes = notes if notes is not None else []
    _check_numeric_dtype(arr.dtype, where)
    layout = _layout(tuple(arr.shape), where)
    src = _to_nchw(arr, layout)
    n, c_in, h, w = (int(v) for v in src.shape)
    if n == 0:
        raise _fail(where, "the array holds zero images")
    if h == 0 or w == 0:
        raise _fail(where, f"the images are empty ({h}x{w} pixels)")
    if c_in == 4:
        src = src[:, :3]
        c_in = 3
        notes.append("dropped the alpha channel of 4-channel images")
    if c_in not in (1, 3):
        raise _fail(where, f"images must have 1, 3 or 4 channels, got {c_in}")
    c_out = {"gray": 1, "rgb": 3}.get(color, c_in)
    resize = size is not None and (h, w) != (size, size)
    luma = c_out == 1 and c_in == 3
    if src.dtype.kind == "b":
        src = src.view(np.uint8)
        scale = 1.0 if scale is None else scale
    if scale is None:
        scale = _find_scale(src, where, notes, progress)
    as_is = (src.dtype == np.uint8 and scale == 255.0) or (src.dtype == np.float32 and scale == 1.0)
    if resize or luma or not as_is:
        out = _convert_chunks(src, where, size=size if resize else None, luma=luma, scale=scale, progress=progress)
    else:
        out = src
    if c_out == 3 and out.shape[1] == 1:
        out = np.broadcast_to(out, (n, 3, *out.shape[2:]))  # grey shown as RGB: no copy
    return out


def _chunk_rows(src: np.ndarray) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(src.shape[1:]))))


def _find_scale(src: np.ndarray, where: str, notes: list[str], progress: ProgressFn | None) -> float:
    """The scale of a raw (N, C, H, W) array, from its values; NaN, infinite or out-of-range values are refused.

    For uint8 a spread sample of images usually decides it (any value above 1
    means 255) without reading the whole array; only when the sample is all
    0 and 1 is everything read.
    """
    n = int(src.shape[0])
    per = _chunk_rows(src)
    if src.dtype == np.uint8:
        rows = np.unique(np.linspace(0, n - 1, min(n, 256)).astype(np.int64))
        if int(np.asarray(src[rows]).max()) > 1:
            return 255.0
        hi = 0
        for start in range(0, n, per):
            hi = max(hi, int(np.asarray(src[start : start + per]).max()))
            if hi > 1:
                return 255.0
            _report(progress, (start + per) / n, "checking pixel values")
        if hi > 0:
            notes.append("the uint8 pixel values are all 0 or 1 and were taken as black and white (not divided by 255)")
        return 1.0

    is_float = src.dtype.kind == "f"
    n_nan = n_inf = 0
    lo, hi = math.inf, -math.inf
    for start in range(0, n, per):
        block = np.asarray(src[start : start + per])
        if is_float:
            finite = np.isfinite(block)
            bad = block.size - int(np.count_nonzero(finite))
            if bad:
                nans = int(np.count_nonzero(np.isnan(block)))
                n_nan += nans
                n_inf += bad - nans
            if n_nan or n_inf:
                continue  # keep counting; the load fails below
        if block.size:
            lo = min(lo, float(block.min()))
            hi = max(hi, float(block.max()))
        _report(progress, (start + per) / n, "checking pixel values")
    if n_nan or n_inf:
        parts = []
        if n_nan:
            parts.append(f"{n_nan} NaN")
        if n_inf:
            parts.append(f"{n_inf} infinite")
        raise _fail(where, f"the images contain {' and '.join(parts)} pixel value{'s' if n_nan + n_inf > 1 else ''}")
    return _choose_scale(src.dtype, lo, hi, where, notes)


def _convert_chunks(
    src: np.ndarray, where: str, *, size: int | None, luma: bool, scale: float, progress: ProgressFn | None
) -> np.ndarray:
    """Convert (N, C, H, W) ``src`` (values / ``scale`` in [0, 1]) chunk by chunk into one new array.

    Integer sources of at most 8 bits of values give uint8 grey levels (the
    values themselves when they are 0..255 and nothing else changes, else the
    pixel values rounded to 1/255 steps); float sources and wider integers
    give float32 values in [0, 1].
    """
    n, c_in, h, w = (int(v) for v in src.shape)
    c = 1 if luma else c_in
    h_out, w_out = (size, size) if size is not None else (h, w)
    to_u8 = src.dtype.kind in "iu" and scale <= 255.0
    exact = to_u8 and scale == 255.0 and size is None and not luma
    out = _allocate((n, c, h_out, w_out), np.uint8 if to_u8 else np.float32, where)
    per = _chunk_rows(src)
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[None, :, None, None]
    inverse = np.float32(1.0 / scale)
    for start in range(0, n, per):
        block = np.asarray(src[start : start + per])
        stop = start + block.shape[0]
        if exact:
            out[start:stop] = block  # integers within 0..255
        else:
            x = block.astype(np.float32)
            if luma:
                x = (x * weights).sum(axis=1, keepdims=True, dtype=np.float32)
            if size is not None:
                x = _resize_chunk(x, size)
            if scale != 1.0:
                x *= inverse
            np.clip(x, 0.0, 1.0, out=x)
            if to_u8:
                x *= np.float32(255.0)
                np.rint(x, out=x)
            out[start:stop] = x
        _report(progress, stop / n, "converting images")
    return out


def _choose_scale(dtype: np.dtype, lo: float, hi: float, where: str, notes: list[str]) -> float:
    if lo > hi:  # nothing seen
        return 1.0
    tol = 1e-3 if dtype.kind == "f" else 0.0
    if lo >= -tol and hi <= 1.0 + tol:
        return 1.0
    if lo >= -tol and hi <= 255.0 + tol:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    raise _fail(
        where,
        f"pixel values range from {lo:g} to {hi:g}; expected values in 0..1 or 0..255 (rescale the images first)",
    )


def _labels_from_array(
    lab: np.ndarray, n: int, where: str, names_hint: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Check a label array against n images; return int64 labels and their names."""
    lab = np.asarray(lab)
    if lab.dtype.hasobject:
        raise _fail(where, "the labels hold Python objects and are refused; save them as integers")
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    if lab.ndim != 1:
        raise _fail(where, f"labels must be a 1-D array, got shape {tuple(lab.shape)}")
    if lab.shape[0] != n:
        raise _fail(where, f"there are {lab.shape[0]} labels for {n} images; the counts must match")
    kind = lab.dtype.kind
    if kind in "US":
        names, inverse = np.unique(lab, return_inverse=True)
        return inverse.reshape(-1).astype(np.int64), [str(v) for v in names]
    if kind == "b":
        lab = lab.astype(np.int64)
    elif kind == "f":
        if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
            raise _fail(where, "labels must be whole numbers (class indices), found fractional or NaN values")
        lab = lab.astype(np.float64)
    elif kind not in "iu":
        raise _fail(where, f"labels must be integers (class indices), got data type {lab.dtype}")
    if lab.size:
        lo, hi = lab.min(), lab.max()
        if lo < -1:
            raise _fail(where, f"labels must be class indices >= 0 (-1 marks no label), found {lo}")
        if hi > MAX_LABEL:
            raise _fail(where, f"labels must be class indices up to {MAX_LABEL}, found {hi}")
    out = lab.astype(np.int64)
    n_classes = int(out.max()) + 1 if out.size else 0
    if names_hint is not None:
        hint = np.asarray(names_hint)
        if hint.ndim == 1 and hint.dtype.kind in "US" and hint.shape[0] >= n_classes:
            return out, [str(v) for v in hint]
    return out, [str(i) for i in range(max(n_classes, 0))]


# -- npy / npz -------------------------------------------------------------


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        header = fmt.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        header = fmt.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    shape, fortran, dtype = header
    if any(int(d) < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _open_binary(path: str):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None


def _read_npy(path: str) -> tuple[np.ndarray, list[str]]:
    with _open_binary(path) as f:
        try:
            shape, _, dtype = _read_npy_header(f)
        except Exception as exc:  # numpy reports malformed headers with many exception types
            raise _fail(path, f"is not a valid .npy file ({type(exc).__name__}: {exc})") from None
        offset = f.tell()
        file_size = os.fstat(f.fileno()).st_size
    _check_numeric_dtype(dtype, path)
    count = int(np.prod(shape, dtype=object)) if shape else 1
    nbytes = count * dtype.itemsize
    if offset + nbytes > file_size:
        raise _fail(path, f"truncated: header promises {offset + nbytes} bytes, file holds {file_size}")
    notes = []
    if offset + nbytes < file_size:
        notes.append(f"ignored {file_size - offset - nbytes} bytes after the array data")
    if count == 0:
        return np.empty(shape, dtype=dtype), notes
    # Memory-mapped: opening costs the header, pages are read when used, and a
    # file larger than the memory can still be trained on.
    return np.load(path, mmap_mode="r", allow_pickle=False), notes


_IMAGE_KEYS = ("images", "x", "X", "data")
_LABEL_KEYS = ("labels", "y", "Y", "targets")
_NAME_KEYS = ("label_names", "class_names")


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, list[str]]:
    """(images, labels or None, label names or None, notes) from an .npz file, never unpickling."""
    members: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with _open_binary(path) as raw:
        archive_size = os.fstat(raw.fileno()).st_size
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy") or info.is_dir():
                    continue
                key = info.filename[:-4]
                if info.compress_size > archive_size:
                    raise ValueError(f"member {key!r} claims more data than the archive holds")
                # Refuse sizes the archive cannot really hold before anything is
                # allocated for them: stored members are not compressed, and
                # deflate cannot expand data more than about 1032 times.
                if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
                    raise ValueError(f"member {key!r} has inconsistent sizes")
                if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > info.compress_size * 1100 + 4096:
                    raise ValueError(f"member {key!r} claims an impossible uncompressed size")
                with zf.open(info) as f:
                    shape, _, dtype = _read_npy_header(f)
                    header_len = f.tell()
                if dtype.hasobject:
                    _check_numeric_dtype(dtype, f"{path} (array {key!r})")
                count = int(np.prod(shape, dtype=object)) if shape else 1
                nbytes = count * dtype.itemsize
                if header_len + nbytes > info.file_size:
                    raise _fail(
                        path,
                        f"array {key!r} is truncated: its header promises {header_len + nbytes} bytes, "
                        f"the archive holds {info.file_size}",
                    )
                if info.compress_type != zipfile.ZIP_STORED and nbytes > MAX_DATASET_BYTES:
                    raise _fail(path, f"array {key!r} is too large ({_fmt_bytes(nbytes)})")
                members[key] = (shape, dtype)
    except DatasetError:
        raise
    except MemoryError:
        raise _fail(path, "not enough memory to read this .npz file") from None
    except Exception as exc:  # zipfile and numpy report corrupt archives with many exception types
        raise _fail(path, f"is not a valid .npz file ({type(exc).__name__}: {exc})") from None

    if not members:
        raise _fail(path, "the .npz file holds no arrays")
    image_key = next((k for k in _IMAGE_KEYS if k in members), None)
    label_key = next((k for k in _LABEL_KEYS if k in members), None)
    names_key = next((k for k in _NAME_KEYS if k in members), None)
    if image_key is None:
        others = [k for k in members if k not in (label_key, names_key)]
        if len(others) == 1:
            image_key = others[0]
        else:
            raise _fail(
                path,
                f"cannot tell which array holds the images (arrays: {', '.join(sorted(members))}); "
                "name it 'images' (and the labels 'labels')",
            )
    notes = []
    ignored = sorted(set(members) - {image_key, label_key, names_key})
    if ignored:
        notes.append(f"ignored arrays {', '.join(ignored)}")
    try:
        images = _map_npz_member(path, image_key)
        with np.load(path, allow_pickle=False) as npz:
            if images is None:
                shape, dtype = members[image_key]
                nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                _check_memory(
                    nbytes, path, f"the compressed array {image_key!r} ({'x'.join(map(str, shape))}, {dtype})",
                    "save it uncompressed (np.savez or np.save), which is memory-mapped instead of loaded",
                )
                images = npz[image_key]
            labels = npz[label_key] if label_key is not None else None
            names = npz[names_key] if names_key is not None else None
    except DatasetError:
        raise
    except MemoryError:
        raise _fail(path, "not enough memory to read this .npz file") from None
    except Exception as exc:
        raise _fail(path, f"is not a valid .npz file ({type(exc).__name__}: {exc})") from None
    return images, labels, names, notes


def _map_npz_member(path: str, key: str) -> np.ndarray | None:
    """A read-only memory map of the uncompressed (stored) member ``key`` of an .npz file, or None.

    None when the member is compressed or encrypted (it must then be read).
    """
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(key + ".npy")
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"member {key!r} has a corrupt local header")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        shape, fortran, dtype = _read_npy_header(f)
        offset = f.tell()
    _check_numeric_dtype(dtype, f"{path} (array {key!r})")
    nbytes = (int(np.prod(shape, dtype=object)) if shape else 1) * dtype.itemsize
    if offset + nbytes > start + info.compress_size:
        raise ValueError(f"member {key!r} is shorter than its header says")
    if nbytes == 0:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
