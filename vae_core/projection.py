"""2-D maps of latent codes, each with a fast inverse from the map back to a code.

The desktop program draws every example's latent mean as a point on a 2-D map
and decodes whatever point the user drags over, so each projection offers

* ``fit(codes)``: the (N, 2) layout of the codes, and whatever the inverse needs;
* ``inverse(xy)``: codes for arbitrary map positions plus how far each position
  is from the data, cheap enough to call on every mouse move (well under a
  millisecond for one point at N = 70,000).

Three projections exist: two latent dimensions as they are (``RawDims``), the
PCA plane (``PCAProjection``) and UMAP (``UMAPProjection``). The first two are
linear, so their inverse is an exact preimage. UMAP has no usable inverse
(``umap.UMAP.inverse_transform`` takes seconds), so its inverse interpolates
the stored codes with barycentric weights in a Delaunay triangulation of the
layout, and uses the nearest data point outside the convex hull of the layout.
Above ``landmarks`` codes (30,000 by default) UMAP is fitted on a sample of
them and places the others by their nearest landmarks in latent space;
``note`` says so in a sentence the map can show.

``distance`` in ``inverse`` is the distance from a query to the nearest data
point on the map, divided by the median distance between a data point and its
nearest neighbour on the map: about 1 or less among the data, above
``far_threshold`` (3) far from any data, where a decoded code is a guess.

numba, scipy and umap are imported inside functions only (umap only for its
spectral starts; scikit-learn and pynndescent never): importing this module
is cheap and safe on any thread. Call ``warm_umap`` once in a background
thread to pay for numba's import and the layout kernel in advance.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from .errors import ConfigError

__all__ = [
    "Projection",
    "ProjectionCancelled",
    "RawDims",
    "PCAProjection",
    "UMAPProjection",
    "warm_umap",
    "PROJECTION_NAMES",
]

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]

PROJECTION_NAMES = ("raw", "pca", "umap")


class ProjectionCancelled(Exception):
    """Raised by ``fit`` when its ``cancel`` callable returned True."""


class _Reporter:
    """Wraps the optional progress and cancel callables of a fit.

    Fractions passed on to ``progress`` never decrease and stay in [0, 1].
    """

    def __init__(self, progress: Optional[ProgressFn], cancel: Optional[CancelFn]):
        self._progress = progress
        self._cancel = cancel
        self._last = 0.0

    def check(self) -> None:
        if self._cancel is not None and self._cancel():
            raise ProjectionCancelled("the projection was cancelled")

    def report(self, fraction: float, message: str, check: bool = True) -> None:
        if check:
            self.check()
        if self._progress is None:
            return
        fraction = min(1.0, max(self._last, float(fraction)))
        self._last = fraction
        self._progress(fraction, message)


def _as_codes(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
        raise ValueError(f"codes must be an (N, d) array with N, d >= 1, got shape {codes.shape}")
    codes = np.ascontiguousarray(codes, dtype=np.float32)
    if not np.all(np.isfinite(codes)):
        raise ValueError("codes contain NaN or infinite values")
    return codes


def _as_queries(xy: np.ndarray) -> np.ndarray:
    q = np.asarray(xy, dtype=np.float64)
    if q.ndim == 1 and q.shape[0] == 2:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != 2:
        raise ValueError(f"map positions must be an (M, 2) array, got shape {np.shape(xy)}")
    return q


class _MapIndex:
    """KD-tree over a 2-D layout and the layout's typical nearest-neighbour spacing.

    The spacing is the median distance from a point to its nearest other
    point: over every point up to ``SPACING_SAMPLE`` points, over that many
    points drawn at random (always the same ones for the same layout size)
    above, which estimates the same median to well under a percent and keeps
    a map of 1,000,000 points to about a second of indexing.
    """

    SPACING_SAMPLE = 100_000

    def __init__(self, xy: np.ndarray):
        from scipy.spatial import cKDTree

        self.tree = cKDTree(np.asarray(xy, dtype=np.float64), balanced_tree=False)
        n = xy.shape[0]
        spacing = 0.0
        if n > 1:
            points = self.tree.data
            if n > self.SPACING_SAMPLE:
                points = points[np.random.default_rng(0).choice(n, self.SPACING_SAMPLE, replace=False)]
            nn_dist, _ = self.tree.query(points, k=2)
            gaps = nn_dist[:, 1]
            spacing = float(np.median(gaps))
            if not spacing > 0.0:
                # Many coincident points: use the spacing of the distinct ones.
                positive = gaps[gaps > 0.0]
                spacing = float(np.median(positive)) if positive.size else 0.0
        # All points coincide (or there is one): distances stay in map units.
        self.spacing = spacing if spacing > 0.0 else 1.0

    def query(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distance in spacings, index of the nearest data point) for each query."""
        dist, idx = self.tree.query(q, k=1)
        return (dist / self.spacing).astype(np.float32), idx


class Projection:
    """A 2-D map of latent codes with an inverse from the map back to codes.

    A fitted projection is read-only: ``fit`` builds the complete state first
    and swaps it in at the end, so another thread calling ``inverse`` sees the
    old map or the new one, never a mixture. Fit a new instance to refresh a map
    while the old one is on screen.
    """

    name: str = "projection"
    #: ``inverse`` distances above this are "far from any data".
    far_threshold: float = 3.0
    #: True when ``inverse`` returns an exact preimage of the map position.
    is_exact: bool = False
    #: A sentence on how the map was made, for a caption; "" when there is nothing to add.
    note: str = ""

    def __init__(self) -> None:
        self._xy: Optional[np.ndarray] = None
        self._index: Optional[_MapIndex] = None
        self._dim: Optional[int] = None
        # What ``inverse`` reads, as one tuple that ``fit`` replaces at its end.
        self._fitted: Optional[tuple] = None

    # -- public API -------------------------------------------------------
    def fit(
        self,
        codes: np.ndarray,
        progress: Optional[ProgressFn] = None,
        cancel: Optional[CancelFn] = None,
    ) -> np.ndarray:
        """Lay out ``codes`` (N, d) on the map; returns the (N, 2) float32 positions."""
        raise NotImplementedError

    def inverse(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes (M, d) float32 for map positions (M, 2), and each position's
        distance (M,) float32 to the nearest data point, in nearest-neighbour spacings."""
        raise NotImplementedError

    def transform(self, codes: np.ndarray) -> np.ndarray:
        """Map positions (M, 2) of new codes (M, d)."""
        raise NotImplementedError(f"{type(self).__name__} cannot place new codes on its map")

    @property
    def is_fitted(self) -> bool:
        return self._xy is not None

    @property
    def xy(self) -> np.ndarray:
        """The fitted layout (N, 2), float32, read-only."""
        self._require_fit()
        return self._xy

    @property
    def dim(self) -> int:
        """Latent dimension d of the fitted codes."""
        self._require_fit()
        return self._dim

    @property
    def spacing(self) -> float:
        """Median nearest-neighbour distance of the layout, in map units."""
        self._require_fit()
        return self._index.spacing

    def axis_labels(self) -> tuple[str, str]:
        """The titles of the map's x and y axes, as the program shows them."""
        raise NotImplementedError

    # -- helpers for subclasses -------------------------------------------
    def _require_fit(self) -> None:
        if self._fitted is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(codes) first")

    @staticmethod
    def _finish_layout(xy: np.ndarray) -> tuple[np.ndarray, _MapIndex]:
        xy = np.ascontiguousarray(xy, dtype=np.float32)
        xy.setflags(write=False)
        return xy, _MapIndex(xy)


class RawDims(Projection):
    """Two latent dimensions as map axes: x = z[i], y = z[j].

    The inverse puts x and y into dimensions i and j of ``base`` and keeps the
    other dimensions of ``base`` (default: zeros, the prior mean). ``base`` may
    be set at any time to a (d,) array, e.g. the code of a selected example.
    For a one-dimensional latent space the default j = 1 gives y = 0.
    """

    name = "raw"
    is_exact = True

    def __init__(self, i: int = 0, j: int = 1, base: Optional[np.ndarray] = None):
        super().__init__()
        i, j = int(i), int(j)
        if i < 0 or j < 0:
            raise ConfigError(f"latent dimension indices must be >= 0, got {i} and {j}")
        if i == j:
            raise ConfigError(f"the two map axes need two different latent dimensions, got {i} twice")
        self.i = i
        self.j = j
        self.base = base

    def axis_labels(self) -> tuple[str, str]:
        """("z1", "z2") for dimensions 0 and 1: numbered from 1, as the program names latent dimensions."""
        return (f"z{self.i + 1}", f"z{self.j + 1}")

    def _check_dims(self, d: int) -> None:
        for k in (self.i, self.j):
            if k >= d and not (d == 1 and k == 1):
                raise ValueError(f"latent dimension {k} does not exist: the codes have {d} dimension(s)")

    def _columns(self, codes: np.ndarray) -> np.ndarray:
        d = codes.shape[1]
        x = codes[:, self.i]
        y = codes[:, self.j] if self.j < d else np.zeros(codes.shape[0], np.float32)
        return np.stack([x, y], axis=1).astype(np.float32)

    def fit(self, codes, progress=None, cancel=None):
        rep = _Reporter(progress, cancel)
        rep.report(0.0, "Reading latent dimensions")
        codes = _as_codes(codes)
        self._check_dims(codes.shape[1])
        xy, index = self._finish_layout(self._columns(codes))
        self._fitted = (codes.shape[1], index)
        self._xy, self._index, self._dim = xy, index, codes.shape[1]
        rep.report(1.0, "Done", check=False)
        return xy

    def transform(self, codes):
        self._require_fit()
        codes = _as_codes(codes)
        if codes.shape[1] != self._dim:
            raise ValueError(f"codes have {codes.shape[1]} dimensions, the map was fitted on {self._dim}")
        return self._columns(codes)

    def _base_vector(self, d: int) -> np.ndarray:
        base = self.base
        if base is None:
            return np.zeros(d, dtype=np.float32)
        base = np.asarray(base, dtype=np.float32).reshape(-1)
        if base.shape[0] != d:
            raise ValueError(f"base has {base.shape[0]} dimensions, the codes have {d}")
        return base

    def inverse(self, xy):
        self._require_fit()
        q = _as_queries(xy)
        d, index = self._fitted
        codes = np.repeat(self._base_vector(d)[None, :], q.shape[0], axis=0)
        codes[:, self.i] = q[:, 0]
        if self.j < d:
            codes[:, self.j] = q[:, 1]
        dist, _ = index.query(q)
        return codes, dist


class PCAProjection(Projection):
    """The plane of the two leading principal components of the codes.

    x, y = (z - mean) @ components.T; the inverse mean + [x, y] @ components is
    the exact preimage on that plane (for d = 2 it is exact for every code).
    Component signs are fixed so that each component's largest loading is
    positive, which keeps the map from flipping between refits. For d = 1 the
    second coordinate is 0 and is ignored by the inverse.
    """

    name = "pca"
    is_exact = True

    def __init__(self) -> None:
        super().__init__()
        self.mean: Optional[np.ndarray] = None
        self.components: Optional[np.ndarray] = None  # (2, d), rows orthonormal or zero
        self.explained_variance_ratio: np.ndarray = np.zeros(2)

    def axis_labels(self) -> tuple[str, str]:
        """("PC1 (NN% of variance)", "PC2 (NN%)") once fitted, ("PC1", "PC2") before."""
        if not self.is_fitted:
            return ("PC1", "PC2")
        r = self.explained_variance_ratio
        return (f"PC1 ({100 * r[0]:.0f}% of variance)", f"PC2 ({100 * r[1]:.0f}%)")

    def fit(self, codes, progress=None, cancel=None):
        rep = _Reporter(progress, cancel)
        rep.report(0.0, "Principal components")
        codes = _as_codes(codes)
        n, d = codes.shape
        x = codes.astype(np.float64)
        mean = x.mean(axis=0)
        centred = x - mean
        # SVD of the d x d scatter matrix: cheap for any N, and d is small.
        _, s2, vt = np.linalg.svd(centred.T @ centred)
        k = min(2, d)
        components = np.zeros((2, d))
        components[:k] = vt[:k]
        for row in components[:k]:
            if row[np.argmax(np.abs(row))] < 0:
                row *= -1.0
        total = float(s2.sum())
        ratio = np.zeros(2)
        if total > 0.0:
            ratio[:k] = s2[:k] / total
        rep.check()
        xy, index = self._finish_layout(centred @ components.T)
        self._fitted = (mean, components, index)
        self.mean = mean
        self.components = components
        self.explained_variance_ratio = ratio
        self._xy, self._index, self._dim = xy, index, d
        rep.report(1.0, "Done", check=False)
        return xy

    def transform(self, codes):
        self._require_fit()
        codes = _as_codes(codes)
        if codes.shape[1] != self._dim:
            raise ValueError(f"codes have {codes.shape[1]} dimensions, the map was fitted on {self._dim}")
        mean, components, _ = self._fitted
        return ((codes.astype(np.float64) - mean) @ components.T).astype(np.float32)

    def inverse(self, xy):
        self._require_fit()
        q = _as_queries(xy)
        mean, components, index = self._fitted
        codes = (mean + q @ components).astype(np.float32)
        dist, _ = index.query(q)
        return codes, dist


# ---------------------------------------------------------------------------
# UMAP
# ---------------------------------------------------------------------------

#: umap's bounds for the seeds of its random number generator.
_INT32_MIN = int(np.iinfo(np.int32).min) + 1
_INT32_MAX = int(np.iinfo(np.int32).max) - 1

_kernel_lock = threading.Lock()
_kernel = None


def _sgd_epoch(
    emb,
    head,
    tail,
    n_vertices,
    epochs_per_sample,
    a,
    b,
    rng_state,
    gamma,
    alpha,
    epochs_per_negative_sample,
    epoch_of_next_negative_sample,
    epoch_of_next_sample,
    n,
):
    """One epoch of UMAP's layout optimisation, compiled by numba (see ``_epoch_kernel``).

    The computation of ``umap.layouts._optimize_layout_euclidean_single_epoch``
    for a fit (the head and tail embeddings are one array, ``move_other``,
    no densMAP), statement for statement, with umap's ``tau_rand_int``,
    ``rdist`` and ``clip`` written inline: the same layout for the same
    inputs (a test compares the two).
    """
    dim = emb.shape[1]
    for i in range(epochs_per_sample.shape[0]):
        if epoch_of_next_sample[i] <= n:
            j = head[i]
            k = tail[i]
            dist_squared = np.float32(0.0)
            for d in range(dim):
                diff = emb[j, d] - emb[k, d]
                dist_squared += diff * diff
            if dist_squared > 0.0:
                grad_coeff = -2.0 * a * b * pow(dist_squared, b - 1.0)
                grad_coeff /= a * pow(dist_squared, b) + 1.0
            else:
                grad_coeff = 0.0
            for d in range(dim):
                grad_d = grad_coeff * (emb[j, d] - emb[k, d])
                if grad_d > 4.0:
                    grad_d = 4.0
                elif grad_d < -4.0:
                    grad_d = -4.0
                emb[j, d] += grad_d * alpha
                emb[k, d] += -grad_d * alpha

            epoch_of_next_sample[i] += epochs_per_sample[i]
            n_neg_samples = int((n - epoch_of_next_negative_sample[i]) / epochs_per_negative_sample[i])
            for p in range(n_neg_samples):
                s0 = rng_state[j, 0]
                s1 = rng_state[j, 1]
                s2 = rng_state[j, 2]
                s0 = (((s0 & 4294967294) << 12) & 0xFFFFFFFF) ^ ((((s0 << 13) & 0xFFFFFFFF) ^ s0) >> 19)
                s1 = (((s1 & 4294967288) << 4) & 0xFFFFFFFF) ^ ((((s1 << 2) & 0xFFFFFFFF) ^ s1) >> 25)
                s2 = (((s2 & 4294967280) << 17) & 0xFFFFFFFF) ^ ((((s2 << 3) & 0xFFFFFFFF) ^ s2) >> 11)
                rng_state[j, 0] = s0
                rng_state[j, 1] = s1
                rng_state[j, 2] = s2
                r = (s0 ^ s1 ^ s2) & 0xFFFFFFFF  # umap returns this as a signed 32-bit integer
                if r >= 0x80000000:
                    r -= 0x100000000
                k = r % n_vertices
                dist_squared = np.float32(0.0)
                for d in range(dim):
                    diff = emb[j, d] - emb[k, d]
                    dist_squared += diff * diff
                if dist_squared > 0.0:
                    grad_coeff = 2.0 * gamma * b
                    grad_coeff /= (0.001 + dist_squared) * (a * pow(dist_squared, b) + 1)
                elif j == k:
                    continue
                else:
                    grad_coeff = 0.0
                for d in range(dim):
                    if grad_coeff > 0.0:
                        grad_d = grad_coeff * (emb[j, d] - emb[k, d])
                        if grad_d > 4.0:
                            grad_d = 4.0
                        elif grad_d < -4.0:
                            grad_d = -4.0
                    else:
                        grad_d = 0.0
                    emb[j, d] += grad_d * alpha
            epoch_of_next_negative_sample[i] += n_neg_samples * epochs_per_negative_sample[i]


def _epoch_kernel():
    """``_sgd_epoch`` compiled by numba, once per process, with numba's on-disk cache.

    ``nogil``: other threads (the GUI's) run while an epoch does. Only the
    first process on a machine compiles (about 2 s); later ones load the
    cached machine code (next to this file, or in the user's cache directory
    when that is read-only) in a fraction of a second. Importing numba alone
    costs about 0.3 s; nothing of umap, pynndescent or scikit-learn is loaded.
    """
    global _kernel
    with _kernel_lock:
        if _kernel is None:
            import numba

            _kernel = numba.njit(cache=True, fastmath=True, nogil=True, error_model="numpy")(_sgd_epoch)
        return _kernel


@functools.lru_cache(maxsize=8)
def _ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """``a``, ``b`` of the curve 1 / (1 + a d^(2b)) that UMAP fits to its offset exponential (``umap.umap_.find_ab_params``)."""
    from scipy.optimize import curve_fit

    def curve(x, a, b):
        return 1.0 / (1.0 + a * x ** (2 * b))

    xv = np.linspace(0, spread * 3, 300)
    yv = np.zeros(xv.shape)
    yv[xv < min_dist] = 1.0
    yv[xv >= min_dist] = np.exp(-(xv[xv >= min_dist] - min_dist) / spread)
    params, _ = curve_fit(curve, xv, yv)
    return float(params[0]), float(params[1])


def _epochs_per_sample(weights: np.ndarray, n_epochs: int) -> np.ndarray:
    """How many epochs apart each edge is sampled (``umap.umap_.make_epochs_per_sample``)."""
    result = -1.0 * np.ones(weights.shape[0], dtype=np.float64)
    n_samples = n_epochs * (weights / weights.max())
    result[n_samples > 0] = float(n_epochs) / np.float64(n_samples[n_samples > 0])
    return result


def _optimize_layout(
    embedding: np.ndarray,
    head: np.ndarray,
    tail: np.ndarray,
    n_epochs: int,
    epochs_per_sample: np.ndarray,
    a: float,
    b: float,
    rng_state: np.ndarray,
    rep: "_Reporter",
    lo: float,
    hi: float,
    gamma: float = 1.0,
    initial_alpha: float = 1.0,
    negative_sample_rate: float = 5.0,
) -> np.ndarray:
    """UMAP's stochastic gradient descent on ``embedding`` (n, 2) float32, in place; returns it.

    ``umap.layouts.optimize_layout_euclidean`` with ``move_other`` (a fit),
    single-threaded, reporting after every epoch (and stopping there when
    cancelled).
    """
    kernel = _epoch_kernel()
    n_vertices = embedding.shape[0]
    alpha = initial_alpha
    epochs_per_negative_sample = epochs_per_sample / negative_sample_rate
    epoch_of_next_negative_sample = epochs_per_negative_sample.copy()
    epoch_of_next_sample = epochs_per_sample.copy()
    rng_state_per_sample = np.full((n_vertices, len(rng_state)), rng_state, dtype=np.int64) + embedding[
        :, 0
    ].astype(np.float64).view(np.int64).reshape(-1, 1)
    for n in range(n_epochs):
        kernel(
            embedding,
            head,
            tail,
            n_vertices,
            epochs_per_sample,
            a,
            b,
            rng_state_per_sample,
            gamma,
            alpha,
            epochs_per_negative_sample,
            epoch_of_next_negative_sample,
            epoch_of_next_sample,
            n,
        )
        alpha = initial_alpha * (1.0 - (float(n) / float(n_epochs)))
        rep.report(lo + (hi - lo) * (n + 1) / n_epochs, f"Optimising the layout: epoch {n + 1}/{n_epochs}")
    return embedding


def _pca_layout(codes: np.ndarray) -> np.ndarray:
    """First two principal components of the codes: the default start of a UMAP map.

    Cheap (no eigen-solver on the graph, whose time varies widely with the
    data and with load on the machine), deterministic, and as good a start as
    the spectral layout for keeping the global arrangement of clusters.
    """
    x = codes.astype(np.float64)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred.T @ centred)
    components = np.zeros((2, x.shape[1]))
    components[: min(2, x.shape[1])] = vt[:2]
    layout = centred @ components.T
    spread = np.abs(layout).max()
    layout *= 10.0 / spread if spread > 0 else 1.0
    # A little noise, as umap adds to its own starts: it separates duplicate
    # codes and gives a constant axis (d = 1, or equal codes) some extent,
    # which umap's rescaling of the start to [0, 10] divides by.
    layout += np.random.default_rng(0).normal(scale=1e-4, size=layout.shape)
    return layout.astype(np.float32)


class _Mesh:
    """Delaunay triangulation of a layout with its barycentric transforms.

    Point location is a visibility walk from a triangle at the query's nearest
    data point, vectorised over queries; on a map it takes a few steps. The
    transforms are computed here in numpy: scipy computes them (also inside
    ``find_simplex``) with one LAPACK call per triangle, which with several
    BLAS threads on a busy machine took 1-8 s instead of 0.05 s for 40,000
    triangles.
    """

    def __init__(self, points, simplices, neighbors, vertex_to_simplex):
        self.simplices = simplices
        self.neighbors = neighbors
        self.vertex_to_simplex = vertex_to_simplex
        v = points[simplices]  # (S, 3, 2)
        e0, e1 = v[:, 0] - v[:, 2], v[:, 1] - v[:, 2]
        det = e0[:, 0] * e1[:, 1] - e1[:, 0] * e0[:, 1]
        scale = np.maximum(np.abs(e0).max(axis=1), np.abs(e1).max(axis=1)) ** 2
        flat = np.abs(det) <= 1e-12 * scale
        det = np.where(flat, np.nan, det)
        # Rows of the inverse of [e0 e1] (as columns), then the origin vertex.
        self.transforms = np.empty((len(simplices), 3, 2))
        self.transforms[:, 0, 0] = e1[:, 1] / det
        self.transforms[:, 0, 1] = -e1[:, 0] / det
        self.transforms[:, 1, 0] = -e0[:, 1] / det
        self.transforms[:, 1, 1] = e0[:, 0] / det
        self.transforms[:, 2, :] = v[:, 2]
        self.max_steps = 100 + 4 * int(np.sqrt(len(simplices)))

    @classmethod
    def build(cls, xy: np.ndarray) -> Optional["_Mesh"]:
        from scipy.spatial import Delaunay, QhullError

        points = np.asarray(xy, dtype=np.float64)
        try:
            tri = Delaunay(points)
        except (QhullError, ValueError):
            return None  # degenerate layout (e.g. all on a line): nearest point only
        return cls(points, tri.simplices, tri.neighbors, tri.vertex_to_simplex)

    def barycentric(self, simplex: np.ndarray, q: np.ndarray) -> np.ndarray:
        t = self.transforms[simplex]
        b = np.einsum("mij,mj->mi", t[:, :2, :], q - t[:, 2, :])
        return np.concatenate([b, 1.0 - b.sum(axis=1, keepdims=True)], axis=1)

    def locate(self, q: np.ndarray, nearest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(triangle index or -1 outside the hull, barycentric weights (M, 3)) per query."""
        m = q.shape[0]
        found = np.full(m, -1, dtype=np.int64)
        weights = np.zeros((m, 3))
        current = self.vertex_to_simplex[nearest].astype(np.int64)
        current[current < 0] = 0
        todo = np.arange(m)
        for _ in range(self.max_steps):
            if todo.size == 0:
                break
            w = self.barycentric(current, q[todo])
            # The most negative weight names the edge to cross; NaN (a flat
            # triangle) counts as most negative.
            worst = np.argmin(np.where(np.isnan(w), -np.inf, w), axis=1)
            inside = w.min(axis=1) >= -1e-9  # False for flat triangles (NaN)
            found[todo[inside]] = current[inside]
            weights[todo[inside]] = w[inside]
            step = self.neighbors[current[~inside], worst[~inside]]
            todo, current = todo[~inside], step
            keep = current >= 0  # -1: the walk left the convex hull
            todo, current = todo[keep], current[keep]
        return found, weights


def _align(layout: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """``layout`` moved, turned and scaled as a whole to lie best over ``previous``.

    Least-squares similarity transform (no reflection). Refits start from the
    previous map, but umap rescales the start to a [0, 10] box and repulsion
    between separate clusters keeps pushing them apart, so without this the
    whole map would drift and grow from one refit to the next.
    """
    mu_l, mu_p = layout.mean(axis=0), previous.mean(axis=0)
    lc, pc = layout - mu_l, previous - mu_p
    u, s, vt = np.linalg.svd(lc.T @ pc)
    sign = np.ones(2)
    if np.linalg.det(u @ vt) < 0:
        sign[-1] = -1.0
    rotation = (u * sign) @ vt
    norm = float((lc**2).sum())
    scale = float((s * sign).sum()) / norm if norm > 0.0 else 1.0
    if not scale > 0.0:
        scale = 1.0
    return mu_p + scale * lc @ rotation


def _knn(codes: np.ndarray, k: int, rep: _Reporter, lo: float, hi: float):
    """Exact k nearest neighbours of every code (itself included, first), as (indices int64, distances float32).

    A KD-tree in up to 16 dimensions, a scan by matrix products above (see
    ``vae_core.selection.LatentIndex``); both exact, neither needs
    scikit-learn or pynndescent.
    """
    from .selection import LatentIndex

    n = codes.shape[0]
    index = LatentIndex(codes).build()
    indices = np.empty((n, k), dtype=np.int64)
    dists = np.empty((n, k), dtype=np.float32)
    chunk = 4096
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        i, d = index.query_many(codes[start:stop], k)
        # umap expects each point first among its own neighbours at distance 0.
        # Drop the point itself from what was found (or, when exact duplicates
        # pushed it out, the farthest neighbour) and put it in front.
        rows = np.arange(start, stop)
        own = i == rows[:, None]
        drop = np.where(own.any(axis=1), own.argmax(axis=1), k - 1)
        keep = np.ones((m, k), dtype=bool)
        keep[np.arange(m), drop] = False
        indices[start:stop, 0] = rows
        indices[start:stop, 1:] = i[keep].reshape(m, k - 1)
        dists[start:stop, 0] = 0.0
        dists[start:stop, 1:] = d[keep].reshape(m, k - 1)
        rep.report(lo + (hi - lo) * stop / n, "Finding nearest neighbours")
    return indices, dists


def _fuzzy_graph(knn_indices: np.ndarray, knn_dists: np.ndarray):
    """UMAP's fuzzy neighbour graph from a kNN table, in numpy.

    The same computation as ``umap.umap_.fuzzy_simplicial_set`` with its
    defaults (local_connectivity = 1, set_op_mix_ratio = 1), vectorised over
    points instead of compiled with numba: identical up to float rounding and
    free of numba's several seconds of compilation in every process.
    """
    import scipy.sparse

    n, k = knn_dists.shape
    dists = knn_dists.astype(np.float64)
    target = np.log2(k)
    # rho: distance to the nearest neighbour that is not a duplicate.
    positive = dists > 0.0
    has_positive = positive.any(axis=1)
    first = positive.argmax(axis=1)
    rho = np.where(has_positive, dists[np.arange(n), first], 0.0)

    # sigma: binary search so that sum_j exp(-(d_j - rho) / sigma) = log2(k).
    shifted = dists[:, 1:] - rho[:, None]
    lo = np.zeros(n)
    hi = np.full(n, np.inf)
    mid = np.ones(n)
    active = np.arange(n)
    for _ in range(64):
        if active.size == 0:
            break
        sh = shifted[active]
        m = mid[active]
        psum = np.where(sh > 0.0, np.exp(-np.maximum(sh, 0.0) / m[:, None]), 1.0).sum(axis=1)
        done = np.abs(psum - target) < 1e-5
        too_big = psum > target
        a_hi, a_lo = hi[active], lo[active]
        a_hi = np.where(too_big, m, a_hi)
        a_lo = np.where(too_big, a_lo, m)
        new_mid = np.where(np.isinf(a_hi), m * 2.0, (a_lo + a_hi) / 2.0)
        keep = ~done
        upd = active[keep]
        hi[upd], lo[upd], mid[upd] = a_hi[keep], a_lo[keep], new_mid[keep]
        active = upd
    sigma = mid
    floor = np.where(rho > 0.0, dists.mean(axis=1), dists.mean()) * 1e-3
    sigma = np.maximum(sigma, floor)

    # Membership strengths, then the fuzzy union with the transpose.
    with np.errstate(divide="ignore", invalid="ignore"):
        vals = np.exp(-(dists - rho[:, None]) / sigma[:, None])
    vals = np.where((dists - rho[:, None] <= 0.0) | (sigma[:, None] == 0.0), 1.0, vals)
    rows = np.repeat(np.arange(n), k)
    cols = knn_indices.reshape(-1)
    vals = vals.reshape(-1)
    vals[(cols == rows) | (cols < 0)] = 0.0
    cols = np.where(cols < 0, 0, cols)
    graph = scipy.sparse.coo_matrix((vals.astype(np.float32), (rows, cols)), shape=(n, n)).tocsr()
    graph.eliminate_zeros()
    transpose = graph.T.tocsr()
    graph = graph + transpose - graph.multiply(transpose)
    graph = graph.tocsr()
    graph.eliminate_zeros()
    return graph


class _UMAPFit(NamedTuple):
    """What a fitted UMAP map reads, swapped in as a whole at the end of ``fit``."""

    codes: np.ndarray  # (N, d) every code on the map
    mesh: Optional[_Mesh]  # triangulation of the vertices' positions
    vertex_codes: np.ndarray  # (V, d) codes of the mesh's vertices: all codes, or the landmarks'
    vertex_tree: Any  # cKDTree over the vertices' positions (where point location starts)
    index: _MapIndex  # every point's position
    place_index: Any  # vae_core.selection.LatentIndex over the vertices' codes
    place_xy: np.ndarray  # (V, 2) float64 positions of the vertices


def _stratified_quota(counts: np.ndarray, m: int, floor: int) -> np.ndarray:
    """How many of ``m`` landmarks each class of ``counts`` gets (sum m, none more than its count).

    Each class gets ``floor`` (or all its points, if fewer) first, so a small
    class still forms its own group on the map; the rest goes to the classes
    in proportion to their remaining points (largest remainders round up).
    Where the floors alone would exceed ``m``, all of it is shared in
    proportion to the counts.
    """
    counts = np.asarray(counts, dtype=np.int64)
    base = np.minimum(counts, floor)
    if base.sum() > m:
        base = np.zeros_like(counts)
    spare = counts - base
    rest = m - int(base.sum())
    share = rest * spare / max(1, int(spare.sum()))
    quota = base + np.floor(share).astype(np.int64)
    left = m - int(quota.sum())
    if left > 0:
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        quota[order[:left]] += 1
    return quota


def _idw_place(dist: np.ndarray, idx: np.ndarray, vertex_xy: np.ndarray) -> np.ndarray:
    """(M, 2) inverse-distance weighted means of the vertices' positions ``vertex_xy[idx]``.

    A code at distance 0 from one or more vertices lands on (the mean of) those.
    """
    zero = dist <= 0.0
    w = 1.0 / np.where(zero, 1.0, dist)
    w = np.where(zero.any(axis=1, keepdims=True), zero.astype(np.float64), w)
    w /= w.sum(axis=1, keepdims=True)
    return np.einsum("mk,mkc->mc", w, vertex_xy[idx])


class UMAPProjection(Projection):
    """UMAP layout of the codes, with interpolation as its inverse.

    Parameters follow ``umap.UMAP``. ``init`` None or "pca" starts from the
    codes' first two principal components (see ``_pca_layout``); "spectral"
    (umap's default), "tswspectral" and "random" are umap's own starts. A
    previous layout (N, 2) of the same examples, e.g. the map of the previous
    epoch's codes, keeps the map where it was so it moves only as much as the
    codes changed: the result is moved, turned and scaled as a whole onto
    that layout (see ``_align``). Measured on 500 codes of 5 clusters that
    moved slightly, points moved by 7-12% of the map's size, against 17% for
    a new map from the PCA start and 42-53% from a spectral or random start.
    A layout of another shape, with non-finite values or with no extent on an
    axis is ignored (PCA start instead); ``init_used`` says which start was
    used.

    ``n_epochs`` None means 200 epochs up to 10,000 fitted codes and 100
    above (umap uses 500 and 200). On 20,000 codes of a 3-D manifold in 16-D,
    100 epochs kept 44% of each point's 15 nearest neighbours on the map
    against 47% with 200, at half the time; the clusters of a gaussian
    mixture were equally separated.

    Landmarks: with more than ``landmarks`` codes, UMAP is fitted on
    ``landmarks`` of them drawn at random (stratified by class when ``fit``
    is given labels, each class getting at least ``LANDMARKS_PER_CLASS``
    where it has them), and every other code is placed at the
    inverse-distance weighted mean of the positions of its
    ``place_neighbors`` nearest landmarks in latent space (exact neighbours,
    see ``vae_core.selection.LatentIndex``). The draw depends only on the
    number of codes, the labels and ``random_state``, so refits of the same
    examples use the same landmarks and start from their previous positions.
    ``landmark_indices`` and ``note`` say so after such a fit; 1,000,000
    codes of d = 8 take well under a minute in a fresh process here, most of
    it placing the points.

    How it is fast: the k nearest neighbours are exact (a KD-tree or a scan,
    no pynndescent index, whose compilation alone takes tens of seconds in a
    fresh process), the fuzzy graph is computed in numpy (see
    ``_fuzzy_graph``), and the layout optimisation is umap's, statement for
    statement, in a numba kernel of this module cached on disk (see
    ``_sgd_epoch``): no part of umap, pynndescent or scikit-learn is
    imported, except umap's own spectral layouts for those two starts. The
    kernel runs on one core and releases the interpreter lock: a parallel
    kernel would take every core from the GUI, and numba's default
    threading layer aborts the process when two threads run parallel code
    at once.

    Progress is reported per stage, after every optimisation epoch and every
    block of placed points. Cancellation is honoured between kNN chunks,
    between stages, after every optimisation epoch (within one epoch's time:
    tens of milliseconds at 20,000 codes) and between blocks of placed
    points; not during numba's first compilation on a machine.

    The inverse is barycentric interpolation of the fitted codes (every code,
    or the landmarks') in the Delaunay triangle of their layout that holds the
    query (see ``_Mesh``), or the nearest data point's code outside the
    triangulation's convex hull. Fitted on every code it reproduces each data
    point's own code at its own position; between clusters it blends the
    codes of the surrounding points, and ``distance`` (to the nearest of all
    points on the map) says how far that is from data. ``transform`` places
    new codes by the rule that placed the points that were not fitted: their
    nearest fitted codes in latent space.
    """

    name = "umap"
    is_exact = False
    #: Landmarks each class gets at least (or all its points), when labels are given.
    LANDMARKS_PER_CLASS = 100

    def __init__(
        self,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        init=None,
        random_state: Optional[int] = None,
        n_epochs: Optional[int] = None,
        learning_rate: float = 1.0,
        landmarks: int = 30_000,
        place_neighbors: int = 10,
    ):
        super().__init__()
        if not float(learning_rate) > 0.0:
            raise ConfigError(f"learning_rate must be positive, got {learning_rate}")
        if int(n_neighbors) < 2:
            raise ConfigError(f"n_neighbors must be at least 2, got {n_neighbors}")
        if not 0.0 <= float(min_dist) <= 1.0:
            raise ConfigError(f"min_dist must be between 0 and 1, got {min_dist}")
        if n_epochs is not None and int(n_epochs) < 1:
            raise ConfigError(f"n_epochs must be at least 1, got {n_epochs}")
        if isinstance(init, str) and init not in ("spectral", "tswspectral", "pca", "random"):
            raise ConfigError(
                f"init must be 'spectral', 'tswspectral', 'pca', 'random' or a layout array, got {init!r}"
            )
        if int(landmarks) < 4:
            raise ConfigError(f"landmarks must be at least 4, got {landmarks}")
        if int(place_neighbors) < 1:
            raise ConfigError(f"place_neighbors must be at least 1, got {place_neighbors}")
        self.n_neighbors = int(n_neighbors)
        self.min_dist = float(min_dist)
        self.init = init
        self.random_state = random_state
        self.n_epochs = None if n_epochs is None else int(n_epochs)
        self.learning_rate = float(learning_rate)
        self.landmarks = int(landmarks)
        self.place_neighbors = int(place_neighbors)
        self.init_used: Optional[str] = None
        self.n_epochs_used: Optional[int] = None
        #: Indices (sorted, read-only) of the codes UMAP was fitted on; None when fitted on every code.
        self.landmark_indices: Optional[np.ndarray] = None
        self.note = ""
        self._fitted: Optional[_UMAPFit] = None

    def axis_labels(self) -> tuple[str, str]:
        return ("UMAP 1", "UMAP 2")

    @staticmethod
    def default_epochs(n: int) -> int:
        return 200 if n <= 10_000 else 100

    def _previous_layout(self, n: int) -> Optional[np.ndarray]:
        if self.init is None or isinstance(self.init, str):
            return None
        layout = np.asarray(self.init, dtype=np.float64)
        if layout.shape != (n, 2) or not np.all(np.isfinite(layout)):
            return None
        if np.any(layout.max(axis=0) - layout.min(axis=0) <= 0.0):
            return None
        return layout

    def choose_landmarks(self, n: int, labels: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """Sorted indices of the codes a fit of ``n`` codes is fitted on; None when it is fitted on all of them."""
        m = self.landmarks
        if n <= m:
            return None
        rng = np.random.default_rng(0 if self.random_state is None else self.random_state)
        if labels is None:
            return np.sort(rng.choice(n, m, replace=False))
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        quota = _stratified_quota(counts, m, self.LANDMARKS_PER_CLASS)
        members = np.split(np.argsort(inverse.reshape(-1), kind="stable"), np.cumsum(counts)[:-1])
        chosen = [group[rng.choice(len(group), q, replace=False)] for group, q in zip(members, quota) if q > 0]
        return np.sort(np.concatenate(chosen))

    def _start(self, fit_codes: np.ndarray, graph, previous: Optional[np.ndarray], random_state):
        """(initial layout (m, 2) float32, its name) as ``umap.umap_.simplicial_set_embedding`` makes it."""
        start = self.init if isinstance(self.init, str) else "pca"
        if previous is not None:
            init, used = previous.astype(np.float32), "previous layout"
        elif start == "random":
            init, used = random_state.uniform(low=-10.0, high=10.0, size=(len(fit_codes), 2)).astype(np.float32), "random"
        elif start in ("spectral", "tswspectral"):
            from umap.spectral import spectral_layout, tswspectral_layout

            make = spectral_layout if start == "spectral" else tswspectral_layout
            coords = make(fit_codes, graph, 2, random_state, metric="euclidean", metric_kwds={})
            coords = (coords * (10.0 / np.abs(coords).max())).astype(np.float32)
            init = coords + random_state.normal(scale=0.0001, size=coords.shape).astype(np.float32)
            used = start
        else:
            return _pca_layout(fit_codes), "pca"
        if previous is not None and np.unique(init, axis=0).shape[0] < init.shape[0]:
            # Coincident starts never separate: nudge them apart, as umap does.
            from scipy.spatial import cKDTree

            gap = float(np.mean(cKDTree(init).query(init, k=2)[0][:, 1]))
            init = init + random_state.normal(scale=0.001 * gap, size=init.shape).astype(np.float32)
        return init, used

    def fit(self, codes, progress=None, cancel=None, labels=None):
        """Lay out ``codes`` (N, d); ``labels`` (N,), if given, stratify the landmarks by class."""
        rep = _Reporter(progress, cancel)
        rep.report(0.0, "Loading UMAP")
        codes = _as_codes(codes)
        n, d = codes.shape
        if n < 4:
            raise ValueError(f"a UMAP map needs at least 4 codes, got {n}")
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            if labels.shape[0] != n:
                raise ValueError(f"labels has {labels.shape[0]} entries for {n} codes")
        _epoch_kernel()
        landmarks = self.choose_landmarks(n, labels)
        fit_codes = codes if landmarks is None else codes[landmarks]
        m = fit_codes.shape[0]
        n_epochs = self.n_epochs if self.n_epochs is not None else self.default_epochs(m)
        # Where each stage ends, by its measured cost per code here (seconds).
        costs = np.array([5.5e-5 * m, 1e-6 * m, 1.9e-6 * m * n_epochs, 2.6e-5 * (n - m), 1.5e-6 * n + 7e-6 * m])
        ends = 0.05 + 0.95 * np.cumsum(costs) / costs.sum()
        rep.report(0.05, "Finding nearest neighbours")

        k = min(self.n_neighbors, m - 1)
        knn_indices, knn_dists = _knn(fit_codes, k, rep, 0.05, ends[0])
        rep.report(ends[0], "Building the neighbour graph")
        graph = _fuzzy_graph(knn_indices, knn_dists)
        del knn_indices, knn_dists

        previous = self._previous_layout(n)
        if previous is not None and landmarks is not None:
            previous = previous[landmarks]
        random_state = np.random.RandomState(self.random_state)
        # What umap's simplicial_set_embedding does before its optimisation.
        graph = graph.tocoo()
        graph.sum_duplicates()
        prune = n_epochs if n_epochs > 10 else (500 if m <= 10_000 else 200)
        graph.data[graph.data < (graph.data.max() / float(prune))] = 0.0
        graph.eliminate_zeros()
        init, init_used = self._start(fit_codes, graph, previous, random_state)
        rep.report(ends[1], "Initial layout" if previous is None else "Starting from the previous map")
        rng_state = random_state.randint(_INT32_MIN, _INT32_MAX, 3).astype(np.int64)
        lo, hi = init.min(axis=0), init.max(axis=0)
        layout = (10.0 * (init - lo) / (hi - lo)).astype(np.float32, order="C")
        a, b = _ab_params(1.0, self.min_dist)
        _optimize_layout(
            layout,
            graph.row,
            graph.col,
            n_epochs,
            _epochs_per_sample(graph.data, n_epochs),
            a,
            b,
            rng_state,
            rep,
            ends[1],
            ends[2],
            initial_alpha=self.learning_rate,
        )
        layout = np.asarray(layout, dtype=np.float64)
        if previous is not None:
            layout = _align(layout, previous)
        if not np.all(np.isfinite(layout)):
            raise ValueError("UMAP produced non-finite positions")

        from .selection import LatentIndex

        place_index = LatentIndex(fit_codes)  # built by the placement below, or by the first transform
        if landmarks is None:
            everything = layout
        else:
            everything = np.empty((n, 2), dtype=np.float64)
            everything[landmarks] = layout
            others = np.setdiff1d(np.arange(n), landmarks, assume_unique=True)
            kp = min(self.place_neighbors, m)
            block = 16384
            for start in range(0, len(others), block):
                rows = others[start : start + block]
                idx, dist = place_index.query_many(codes[rows], kp)
                everything[rows] = _idw_place(dist, idx, layout)
                done = start + len(rows)
                rep.report(
                    ends[2] + (ends[3] - ends[2]) * done / len(others),
                    f"Placing the other points: {done:,} of {len(others):,}",
                )
        rep.report(ends[3], "Indexing the map")

        xy, index = self._finish_layout(everything)
        if landmarks is None:
            vertex_xy, vertex_tree = xy, index.tree
        else:
            from scipy.spatial import cKDTree

            vertex_xy = xy[landmarks]
            vertex_tree = cKDTree(vertex_xy.astype(np.float64))
        mesh = _Mesh.build(vertex_xy)
        note = ""
        if landmarks is not None:
            landmarks.setflags(write=False)
            note = (
                f"UMAP fitted on {m:,} landmarks{' drawn class by class' if labels is not None else ''}; "
                f"the other {n - m:,} points placed by their {min(self.place_neighbors, m)} nearest "
                "landmarks in latent space"
            )
        # One assignment swaps the complete new state in (see Projection).
        self._fitted = _UMAPFit(
            codes, mesh, fit_codes, vertex_tree, index, place_index, vertex_xy.astype(np.float64)
        )
        self._xy, self._index, self._dim = xy, index, d
        self.init_used = init_used
        self.n_epochs_used = n_epochs
        self.landmark_indices = landmarks
        self.note = note
        rep.report(1.0, "Done", check=False)
        return xy

    def transform(self, codes):
        """Positions (M, 2) of new codes: the inverse-distance weighted mean of the positions of
        their ``place_neighbors`` nearest fitted codes in latent space (a fitted code lands on its own place)."""
        self._require_fit()
        fitted = self._fitted
        codes = _as_codes(codes)
        if codes.shape[1] != self._dim:
            raise ValueError(f"codes have {codes.shape[1]} dimensions, the map was fitted on {self._dim}")
        kp = min(self.place_neighbors, fitted.place_index.n)
        idx, dist = fitted.place_index.query_many(codes, kp)
        return _idw_place(dist, idx, fitted.place_xy).astype(np.float32)

    def inverse(self, xy):
        self._require_fit()
        # Read the state once so a concurrent refit cannot mix two maps.
        fitted = self._fitted
        q = _as_queries(xy)
        dist, nearest = fitted.index.query(q)
        out = fitted.codes[nearest].astype(np.float64)
        if fitted.mesh is not None:
            if fitted.vertex_tree is fitted.index.tree:
                start = nearest
            else:
                start = fitted.vertex_tree.query(q, k=1)[1]
            simplex, weights = fitted.mesh.locate(q, start)
            inside = simplex >= 0
            if inside.any():
                verts = fitted.vertex_codes[fitted.mesh.simplices[simplex[inside]]]  # (m, 3, d)
                out[inside] = np.einsum("mk,mkd->md", weights[inside], verts)
        return out.astype(np.float32), dist


def warm_umap(progress: Optional[ProgressFn] = None) -> float:
    """Load what a UMAP map needs in this process; returns seconds taken.

    Imports numba and compiles (or loads from numba's disk cache) the layout
    kernel, then runs a tiny fit (300 random points) so a user's first real
    map waits for neither. Meant for a background thread right after the
    program starts; safe to call more than once.

    Only the first run on a machine compiles (about 2 s on two cores); later
    processes need well under a second here.
    """
    start = time.perf_counter()
    rep = _Reporter(progress, None)
    rep.report(0.0, "Loading UMAP")
    _epoch_kernel()
    rep.report(0.6, "Compiling UMAP")
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(300, 4)).astype(np.float32)
    UMAPProjection(n_epochs=10, random_state=0).fit(codes)
    rep.report(1.0, "UMAP ready")
    return time.perf_counter() - start
