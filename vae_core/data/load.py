"""``load_dataset``: tell what a spec's source is, load it, then the steps every source shares."""

from __future__ import annotations

import os

import numpy as np

from ..errors import DatasetError
from .arrays import _convert_array, _labels_from_array, _read_npy, _read_npz
from .builtin import _load_builtin
from .idx import _idx_labels_path, _read_idx
from .images import IMAGE_EXTENSIONS, _load_folder, _load_image_files
from .spec import (
    _CHUNK_ELEMENTS,
    _STREAM_BINARIZE,
    Dataset,
    DatasetSpec,
    ProgressFn,
    _allocate,
    _coerce_spec,
    _fail,
    _Loaded,
    _report,
    _rng,
    split_indices,
    to_float,
)


def load_dataset(spec: DatasetSpec | str | dict, progress: ProgressFn | None = None) -> Dataset:
    """Load a builtin or user dataset described by ``spec``.

    A str is taken as ``DatasetSpec(source=str)``, a dict as
    ``DatasetSpec.from_dict``.  The images keep the precision of their source
    (see :class:`Dataset`); ``.npy`` files, uncompressed ``.npz`` images and
    uncompressed IDX files are memory-mapped, and a folder opened before is
    read from the cache of decoded folders.  ``progress(fraction, text)``, if
    given, is called from time to time during long steps (decoding a folder,
    drawing shapes, converting or binarising images), from the calling
    thread.  Raises :class:`DatasetError` for anything a user can fix
    (missing, unreadable, corrupt or unsuitable files, or images that would
    not fit in the memory that is free).
    """
    spec = _coerce_spec(spec)
    if spec.is_builtin:
        loaded = _load_builtin(spec, progress)
    else:
        loaded = _load_path(spec, progress)

    images = loaded.images
    if spec.binarize == "static":
        images = _binarize(images, spec.seed, loaded.name, progress)
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


def _binarize(images: np.ndarray, seed: int, where: str, progress: ProgressFn | None) -> np.ndarray:
    """uint8 images of 0 and 255: each pixel p replaced by a Bernoulli(p) sample, from the seed's binarize stream.

    Chunk by chunk, comparing float32 uniforms with the float pixel values,
    so the draw is the same whatever the images are stored as.
    """
    rng = _rng(seed, _STREAM_BINARIZE)
    n = images.shape[0]
    out = _allocate(tuple(images.shape), np.uint8, where)
    per = max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(images.shape[1:]))))
    for start in range(0, n, per):
        p = to_float(images[start : start + per])
        u = rng.random(p.shape, dtype=np.float32)
        block = out[start : start + p.shape[0]]
        np.less(u, p, out=block)  # 1 where the sample is "on"
        block *= np.uint8(255)
        _report(progress, (start + p.shape[0]) / n, "binarising images")
    return out


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


def _load_path(spec: DatasetSpec, progress: ProgressFn | None = None) -> _Loaded:
    path = os.path.abspath(os.path.expanduser(spec.source))
    if not os.path.exists(path):
        raise _fail(path, "no such file or folder")
    try:
        if os.path.isdir(path):
            return _load_folder(path, spec, progress)
        if not os.path.isfile(path):
            raise _fail(path, "is neither a regular file nor a folder")
        kind = _sniff(path)
        if kind == "image":
            return _load_image_files(
                [path], [None], spec, name=os.path.basename(path), root=os.path.dirname(path), notes=[]
            )
        return _load_array_file(path, kind, spec, progress)
    except DatasetError:
        raise
    except MemoryError:
        raise _fail(path, "not enough memory to load this file") from None
    except Exception as exc:  # any other failure on a malformed file is still the file's problem
        raise _fail(path, f"could not be read ({type(exc).__name__}: {exc})") from exc


def _load_array_file(path: str, kind: str, spec: DatasetSpec, progress: ProgressFn | None = None) -> _Loaded:
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

    images = _convert_array(raw, path, size=spec.size, color=spec.color, notes=notes, progress=progress)
    del raw
    labels = label_names = None
    if labels_raw is not None:
        labels, label_names = _labels_from_array(labels_raw, images.shape[0], labels_where, names_hint)
    return _Loaded(images, labels, label_names, os.path.basename(path), None, notes)
