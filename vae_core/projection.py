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

``distance`` in ``inverse`` is the distance from a query to the nearest data
point on the map, divided by the median distance between a data point and its
nearest neighbour on the map: about 1 or less among the data, above
``far_threshold`` (3) far from any data, where a decoded code is a guess.

umap, numba and scikit-learn are imported inside functions only: importing
this module is cheap and safe on any thread. Call ``warm_umap`` once in a
background thread to pay for the import and numba's compilation in advance.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

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
    """KD-tree over a 2-D layout and the layout's typical nearest-neighbour spacing."""

    def __init__(self, xy: np.ndarray):
        from scipy.spatial import cKDTree

        self.tree = cKDTree(np.asarray(xy, dtype=np.float64))
        n = xy.shape[0]
        spacing = 0.0
        if n > 1:
            nn_dist, _ = self.tree.query(self.tree.data, k=2)
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

_umap_lock = threading.Lock()
_umap_ready = False
_epoch_hooks = threading.local()
_original_tqdm = None


def _routed_tqdm(iterable=None, *args, **kwargs):
    """Stands in for ``tqdm`` inside ``umap.layouts``.

    umap wraps its loop over optimisation epochs in ``tqdm(range(n_epochs))``.
    While a fit of ours runs on the calling thread, the loop is routed through
    that fit's epoch hook (progress and cancellation); any other use of umap
    gets the real tqdm.
    """
    hook = getattr(_epoch_hooks, "hook", None)
    if hook is None or args or iterable is None:
        return _original_tqdm(iterable, *args, **kwargs)
    return hook(iterable)


def _prepare_umap():
    """Import umap once per process and adapt it for our fits. Returns the modules used.

    Two adaptations, both confined to ``umap.layouts``:
    * its ``tqdm`` is routed through ``_routed_tqdm`` so a fit can report each
      epoch and stop between epochs;
    * its single-threaded epoch kernel is compiled with numba's on-disk cache
      (umap compiles it afresh in every process: about 0.8 s each time).
    Each is skipped if this umap does not have the expected attribute.
    """
    global _umap_ready, _original_tqdm
    import umap.layouts as layouts
    import umap.umap_ as umap_

    with _umap_lock:
        if not _umap_ready:
            current = getattr(layouts, "tqdm", None)
            if current is not None and current is not _routed_tqdm:
                _original_tqdm = current
                layouts.tqdm = _routed_tqdm
            _cache_epoch_kernel(layouts)
            _umap_ready = True
    return umap_, layouts


def _cache_epoch_kernel(layouts) -> None:
    kernel = getattr(layouts, "_nb_optimize_layout_euclidean_single_epoch", None)
    try:
        import numba

        options = dict(kernel.targetoptions)
        if options.get("parallel") or type(kernel._cache).__name__ != "NullCache":
            return
        options.pop("nopython", None)
        layouts._nb_optimize_layout_euclidean_single_epoch = numba.njit(
            kernel.py_func, cache=True, **options
        )
    except Exception:  # a different umap or numba: keep umap's own kernel
        return


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
    """Exact k nearest neighbours of every code (itself included, first)."""
    from sklearn.neighbors import NearestNeighbors

    n = codes.shape[0]
    nn = NearestNeighbors(n_neighbors=k, n_jobs=1).fit(codes)
    indices = np.empty((n, k), dtype=np.int64)
    dists = np.empty((n, k), dtype=np.float32)
    chunk = 4096
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        d, i = nn.kneighbors(codes[start:stop])
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
    a new map from the PCA start and 42-53% from a spectral or random start. A layout of another
    shape, with non-finite values or with no extent on an axis is ignored (PCA
    start instead); ``init_used`` says which start was used.

    ``n_epochs`` None means 200 epochs up to 10,000 codes and 100 above
    (umap uses 500 and 200). On 20,000 codes of a 3-D manifold in 16-D, 100
    epochs kept 44% of each point's 15 nearest neighbours on the map against
    47% with 200, at half the time; the clusters of a gaussian mixture were
    equally separated.

    How it is fast: the k nearest neighbours are computed exactly with
    scikit-learn (no pynndescent index, whose compilation alone takes tens of
    seconds in a fresh process), the fuzzy graph is computed in numpy
    (see ``_fuzzy_graph``), and only umap's layout optimisation
    (``umap.umap_.simplicial_set_embedding``) runs, with its single-threaded
    epoch kernel cached on disk by numba. umap's parallel kernel is not used:
    it would take every core from the GUI, and numba's default threading
    layer aborts the process when two threads run parallel code at once.

    Progress is reported per stage and after every optimisation epoch.
    Cancellation is honoured between kNN chunks, between stages and after
    every optimisation epoch (within one epoch's time: tens of milliseconds
    at 20,000 codes); not during a stage's numba compilation.

    The inverse is barycentric interpolation of the stored codes in the
    Delaunay triangle of the layout that holds the query (see ``_Mesh``), or
    the nearest data point's code outside the triangulation's convex hull.
    It reproduces each data point's own code at its own position; between clusters it blends the codes of
    the surrounding points, and ``distance`` says how far that is from data.
    ``transform`` is not available.
    """

    name = "umap"
    is_exact = False

    def __init__(
        self,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        init=None,
        random_state: Optional[int] = None,
        n_epochs: Optional[int] = None,
        learning_rate: float = 1.0,
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
        self.n_neighbors = int(n_neighbors)
        self.min_dist = float(min_dist)
        self.init = init
        self.random_state = random_state
        self.n_epochs = None if n_epochs is None else int(n_epochs)
        self.learning_rate = float(learning_rate)
        self.init_used: Optional[str] = None
        self.n_epochs_used: Optional[int] = None
        self._fitted = None  # (codes, mesh, index), replaced as a whole by fit

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

    def fit(self, codes, progress=None, cancel=None):
        rep = _Reporter(progress, cancel)
        rep.report(0.0, "Loading UMAP")
        codes = _as_codes(codes)
        n, d = codes.shape
        if n < 4:
            raise ValueError(f"a UMAP map needs at least 4 codes, got {n}")
        umap_, _ = _prepare_umap()
        rep.report(0.05, "Finding nearest neighbours")

        k = min(self.n_neighbors, n - 1)
        knn_indices, knn_dists = _knn(codes, k, rep, 0.05, 0.2)
        rep.report(0.2, "Building the neighbour graph")
        graph = _fuzzy_graph(knn_indices, knn_dists)

        previous = self._previous_layout(n)
        if previous is not None:
            init, init_used = previous.astype(np.float32), "previous layout"
        elif isinstance(self.init, str) and self.init != "pca":
            init, init_used = self.init, self.init
        else:
            init, init_used = _pca_layout(codes), "pca"
        n_epochs = self.n_epochs if self.n_epochs is not None else self.default_epochs(n)
        a, b = umap_.find_ab_params(1.0, self.min_dist)
        random_state = np.random.RandomState(self.random_state)
        rep.report(0.22, "Initial layout" if previous is None else "Starting from the previous map")

        lo, hi = 0.25, 0.96

        def epochs(iterable):
            total = len(iterable)
            for count, item in enumerate(iterable, start=1):
                yield item
                rep.report(lo + (hi - lo) * count / total, f"Optimising the layout: epoch {count}/{total}")

        _epoch_hooks.hook = epochs
        try:
            layout, _ = umap_.simplicial_set_embedding(
                data=codes,
                graph=graph,
                n_components=2,
                initial_alpha=self.learning_rate,
                a=a,
                b=b,
                gamma=1.0,
                negative_sample_rate=5,
                n_epochs=n_epochs,
                init=init,
                random_state=random_state,
                metric="euclidean",
                metric_kwds={},
                densmap=False,
                densmap_kwds={},
                output_dens=False,
                parallel=False,
                verbose=False,
            )
        finally:
            _epoch_hooks.hook = None
        layout = np.asarray(layout, dtype=np.float64)
        if previous is not None:
            layout = _align(layout, previous)
        if not np.all(np.isfinite(layout)):
            raise ValueError("UMAP produced non-finite positions")
        rep.report(hi, "Indexing the map")

        xy, index = self._finish_layout(layout)
        mesh = _Mesh.build(xy)
        # One assignment swaps the complete new state in (see Projection).
        self._fitted = (codes, mesh, index)
        self._xy, self._index, self._dim = xy, index, d
        self.init_used = init_used
        self.n_epochs_used = n_epochs
        rep.report(1.0, "Done", check=False)
        return xy

    def inverse(self, xy):
        self._require_fit()
        # Read the state once so a concurrent refit cannot mix two maps.
        codes_all, mesh, index = self._fitted
        q = _as_queries(xy)
        dist, nearest = index.query(q)
        out = codes_all[nearest].astype(np.float64)
        if mesh is not None:
            simplex, weights = mesh.locate(q, nearest)
            inside = simplex >= 0
            if inside.any():
                verts = codes_all[mesh.simplices[simplex[inside]]]  # (m, 3, d)
                out[inside] = np.einsum("mk,mkd->md", weights[inside], verts)
        return out.astype(np.float32), dist


def warm_umap(progress: Optional[ProgressFn] = None) -> float:
    """Import umap and compile its layout code in this process; returns seconds taken.

    Runs a tiny UMAP fit (300 random points) so a user's first real map does
    not wait for imports and numba compilation. Meant for a background thread
    right after the program starts; safe to call more than once.

    Compiled code is cached on disk by numba (next to umap and pynndescent,
    or in the user's cache directory when those are read-only), so only the
    first run on a machine pays for pynndescent's compilation on import
    (about 20 s on two cores); later processes need about 2-3 s here.
    """
    start = time.perf_counter()
    rep = _Reporter(progress, None)
    rep.report(0.0, "Loading UMAP")
    _prepare_umap()
    rep.report(0.6, "Compiling UMAP")
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(300, 4)).astype(np.float32)
    UMAPProjection(n_epochs=10, random_state=0).fit(codes)
    rep.report(1.0, "UMAP ready")
    return time.perf_counter() - start
