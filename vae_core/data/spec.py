"""What to load (``DatasetSpec``), what a load gives (``Dataset``), the seeded split, and shared helpers.

Everything random is drawn from ``spec.seed`` through independent NumPy
streams (:func:`_rng`): stream 0 splits train from test, 1 binarises
statically, 2 generates "shapes".
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import DatasetError

BUILTINS = ("mnist", "digits", "shapes")
COLORS = ("auto", "gray", "rgb")
BINARIZE_MODES = ("none", "static", "dynamic")

#: Largest value of ``DatasetSpec.size``.
MAX_SIZE = 1024
#: Largest number of generated shapes.
MAX_SHAPES = 2_000_000
#: Largest array a load builds in memory, whatever the free memory says (a
#: guard for systems that do not report it).  Memory-mapped files are not
#: bound by it.
MAX_DATASET_BYTES = 64 * 2**30

#: ``progress(fraction, text)``: called now and then during a long load with
#: the fraction done (0 to 1) and what is being done.
ProgressFn = Callable[[float, str], None]

_STREAM_SPLIT = 0
_STREAM_BINARIZE = 1
_STREAM_SHAPES = 2

# Elements per chunk when converting, resizing or binarizing arrays.
_CHUNK_ELEMENTS = 1 << 22


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise DatasetError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise DatasetError(f"{name} must be a whole number, got {value!r}")


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DatasetError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise DatasetError(f"{name} must be a finite number, got {value!r}")
    return out


@dataclass(frozen=True)
class DatasetSpec:
    """What to load and how.

    ``source`` is a builtin name (see :data:`BUILTINS`) or a path to a folder
    or a file.  ``size`` resizes every image to ``size`` x ``size`` (None keeps
    the native size; a folder then needs all its images to share one size).
    ``color`` is "auto" (RGB if any image is in colour, else grey), "gray" or
    "rgb".  ``binarize`` is "none", "static" (each pixel replaced once by a
    Bernoulli sample with that pixel's grey level as probability, drawn with a
    generator seeded by ``seed``) or "dynamic" (images stay grey; the trainer
    draws a new binary sample for every batch).  ``test_fraction`` of the
    examples, chosen by a permutation seeded by ``seed``, form the test set.
    ``n`` is the number of generated images for "shapes" (ignored otherwise).
    ``labels`` is an optional path to a labels file (IDX or .npy) for IDX and
    array sources.
    """

    source: str
    size: int | None = None
    color: str = "auto"
    binarize: str = "none"
    test_fraction: float = 0.1
    seed: int = 0
    n: int = 10000
    labels: str | None = None

    def __post_init__(self) -> None:
        source = self.source
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if not isinstance(source, str) or not source.strip():
            raise DatasetError(
                f"dataset source must be one of {', '.join(BUILTINS)} or a path to a folder or file, got {source!r}"
            )
        if source.strip().lower() in BUILTINS:
            source = source.strip().lower()
        object.__setattr__(self, "source", source)

        if self.size is not None:
            size = _as_int(self.size, "size")
            if not 1 <= size <= MAX_SIZE:
                raise DatasetError(f"size must be between 1 and {MAX_SIZE} pixels, got {size}")
            object.__setattr__(self, "size", size)

        color = self.color
        if isinstance(color, str):
            color = {"grey": "gray", "color": "rgb", "colour": "rgb"}.get(color.lower(), color.lower())
        if color not in COLORS:
            raise DatasetError(f"color must be one of {COLORS}, got {self.color!r}")
        object.__setattr__(self, "color", color)

        binarize = self.binarize.lower() if isinstance(self.binarize, str) else self.binarize
        if binarize not in BINARIZE_MODES:
            raise DatasetError(f"binarize must be one of {BINARIZE_MODES}, got {self.binarize!r}")
        object.__setattr__(self, "binarize", binarize)

        fraction = _as_float(self.test_fraction, "test_fraction")
        if not 0.0 < fraction < 1.0:
            raise DatasetError(f"test_fraction must be between 0 and 1 (exclusive), got {fraction}")
        object.__setattr__(self, "test_fraction", fraction)

        seed = _as_int(self.seed, "seed")
        if not 0 <= seed < 2**63:
            raise DatasetError(f"seed must be a non-negative whole number below 2**63, got {seed}")
        object.__setattr__(self, "seed", seed)

        n = _as_int(self.n, "n")
        if not 1 <= n <= MAX_SHAPES:
            raise DatasetError(f"n (number of generated images) must be between 1 and {MAX_SHAPES}, got {n}")
        object.__setattr__(self, "n", n)

        labels = self.labels
        if isinstance(labels, os.PathLike):
            labels = os.fspath(labels)
        if labels is not None and not isinstance(labels, str):
            raise DatasetError(f"labels must be a path to a labels file or None, got {labels!r}")
        object.__setattr__(self, "labels", labels or None)

    @property
    def is_builtin(self) -> bool:
        return self.source in BUILTINS

    def replace(self, **changes: Any) -> "DatasetSpec":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetSpec":
        if not isinstance(d, dict):
            raise DatasetError(f"a dataset spec must be a dictionary, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise DatasetError(f"unknown DatasetSpec fields: {sorted(map(str, unknown))}")
        if "source" not in d:
            raise DatasetError("a dataset spec needs a 'source'")
        return cls(**d)


@dataclass
class Dataset:
    """Images ready for training, held in the precision of their source.

    ``images`` is the stored array, (N, C, H, W): uint8 grey levels for 8-bit
    sources (IDX, PNG / JPEG, uint8 arrays, "mnist", "shapes"; 0 and 255
    after static binarisation), whose pixel values are ``images / 255``, and
    float32 values in [0, 1] when the source holds floats or more than 8 bits
    ("digits", 16-bit PNG).  It may be a read-only memory map of the file or
    a view of one (channels-last files are seen through a transposed view,
    grey images shown as RGB through a broadcast one), so it is not always
    C-contiguous and must never be written.  :meth:`float_images` gives the
    float32 values of a few images; the trainer converts one batch at a time
    on its device.  ``labels`` is int64 (N,) or None; a label of -1
    marks an example without a label (for example an image lying directly in
    a folder whose other images sit in class subfolders).  ``label_names[k]``
    names label value ``k``.  ``train_idx`` and ``test_idx`` are disjoint
    int64 index arrays covering all examples (the split is an index, the
    images are never copied for it).  ``binarize`` is "dynamic" when the
    trainer should draw binary samples each batch ("static" images are
    already binary).  ``notes`` lists harmless things that were skipped or
    assumed.
    """

    images: np.ndarray
    labels: np.ndarray | None
    label_names: list[str] | None
    name: str
    spec: DatasetSpec
    train_idx: np.ndarray
    test_idx: np.ndarray
    factors: dict[str, np.ndarray] | None = None
    binarize: str = "none"
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def nbytes(self) -> int:
        """Bytes of the stored images (whether in memory or mapped from a file)."""
        return int(self.images.size) * int(self.images.dtype.itemsize)

    def float_images(self, index: Any = slice(None)) -> np.ndarray:
        """float32 pixel values in [0, 1] of ``images[index]`` (a fresh array).

        ``index`` is anything NumPy indexing takes along the first axis: an
        int gives one (C, H, W) image, a slice or an index array a stack.
        Meant for a few images at a time (display, a batch); the whole dataset
        at once would be a float copy of it.
        """
        return to_float(self.images[index])


def to_float(stored: np.ndarray) -> np.ndarray:
    """float32 pixel values in [0, 1] of stored images (a fresh array): uint8 / 255, floats clipped to [0, 1].

    The same arithmetic as the trainer's conversion on its device.
    """
    arr = np.asarray(stored)
    if arr.dtype == np.uint8:
        return np.divide(arr, np.float32(255.0), dtype=np.float32)
    out = arr.astype(np.float32)  # always a copy
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _coerce_spec(spec: Any) -> DatasetSpec:
    if isinstance(spec, DatasetSpec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return DatasetSpec(source=os.fspath(spec))
    if isinstance(spec, dict):
        return DatasetSpec.from_dict(spec)
    raise DatasetError(f"expected a DatasetSpec, a builtin name, a path or a dict, got {type(spec).__name__}")


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split of ``range(n)``: (train_idx, test_idx), both int64.

    The test set holds ``round(test_fraction * n)`` examples, at least one and
    at most ``n - 1`` when ``n >= 2``.  Both arrays are in permutation order.
    """
    perm = _rng(seed, _STREAM_SPLIT).permutation(n).astype(np.int64)
    n_test = 0 if n < 2 else min(max(int(round(test_fraction * n)), 1), n - 1)
    return perm[n_test:].copy(), perm[:n_test].copy()


@dataclass
class _Loaded:
    """What one loader returns before the common steps (static binarisation, split).

    ``images`` is stored as in :class:`Dataset` (uint8 grey levels or float32
    values), possibly a view of a memory map.
    """

    images: np.ndarray
    labels: np.ndarray | None
    label_names: list[str] | None
    name: str
    factors: dict[str, np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)


def _fail(path: str, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}")


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{int(n)} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def available_memory() -> int | None:
    """Bytes of memory the kernel says can be allocated without swapping (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


#: Share of the available memory one allocation may take; the rest is left to
#: the model, the batches and everything else running.
_MEMORY_SHARE = 0.8


def _check_memory(nbytes: int, where: str, what: str, advice: str = "") -> None:
    """Refuse (DatasetError naming ``where``) an allocation of ``nbytes`` that would not fit in memory.

    ``what`` describes the array ("200000 images of 3x64x64 (uint8)"), ``advice``
    what would fit instead.  Nothing is allocated here.
    """
    free = available_memory()
    too_big = nbytes > MAX_DATASET_BYTES
    if not too_big and (free is None or nbytes <= free * _MEMORY_SHARE):
        return
    if too_big:
        problem = f"{what} would need {_fmt_bytes(nbytes)} of memory (the limit is {_fmt_bytes(MAX_DATASET_BYTES)})"
    else:
        problem = (
            f"{what} would need {_fmt_bytes(nbytes)} of memory, but only {_fmt_bytes(free)} is free "
            f"(at most {_fmt_bytes(free * _MEMORY_SHARE)} may be used for the images)"
        )
    raise _fail(where, problem + (f"; {advice}" if advice else ""))


def _fit_advice(shape: tuple[int, ...], itemsize: int) -> str:
    """What would fit instead of images of ``shape``: a smaller square size, or a file that can be memory-mapped."""
    n, c = int(shape[0]), int(shape[1])
    free = available_memory()
    budget = min(MAX_DATASET_BYTES, int(free * _MEMORY_SHARE)) if free is not None else MAX_DATASET_BYTES
    side = math.isqrt(max(0, budget // max(1, n * c * itemsize)))
    first = f"choose an image size of at most {min(side, MAX_SIZE)} pixels" if side >= 1 else "use fewer images"
    return (
        f"{first}, or save the images at the size you want as a uint8 .npy file (N, H, W, C), "
        "which is memory-mapped instead of loaded"
    )


def _allocate(shape: tuple[int, ...], dtype: Any, where: str, advice: str | None = None) -> np.ndarray:
    """Allocate an image array (N, C, H, W) after checking that it fits in memory."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    what = f"{shape[0]} images of {'x'.join(str(int(s)) for s in shape[1:])} ({dtype.name})"
    _check_memory(nbytes, where, what, _fit_advice(shape, dtype.itemsize) if advice is None else advice)
    try:
        return np.empty(shape, dtype=dtype)
    except MemoryError:
        raise _fail(where, f"not enough memory for {what} ({_fmt_bytes(nbytes)})") from None


def _report(progress: ProgressFn | None, fraction: float, text: str) -> None:
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), text)
