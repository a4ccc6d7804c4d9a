"""Selections on the map and neighbours in latent space, in numpy and scipy only.

What the map's lasso, box and neighbour tools compute, kept apart from any
drawing so that it runs (and is tested) without a display:

* ``points_in_polygon`` and ``points_in_box``: which map points a lasso or a
  rectangle holds, as a boolean mask (a 40-vertex lasso over 1,000,000
  points takes a few tens of milliseconds);
* ``combine``: a new mask with an old one, for replace, add (shift) and
  subtract (alt);
* ``LatentIndex`` and ``nearest_neighbours``: the exact k nearest examples of
  a code or of an example in latent space (not on the 2-D map);
* ``label_histogram`` and ``selection_summary``: what a selection panel shows.

Nothing here imports torch, umap or scikit-learn.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

__all__ = [
    "COMBINE_MODES",
    "LatentIndex",
    "SelectionSummary",
    "combine",
    "label_histogram",
    "nearest_neighbours",
    "points_in_box",
    "points_in_polygon",
    "selection_summary",
]

#: The ways a new selection joins the current one: ``replace`` (a plain
#: drag), ``add`` (shift), ``subtract`` (alt), ``intersect``.
COMBINE_MODES = ("replace", "add", "subtract", "intersect")


# ---------------------------------------------------------------------------
# Lasso and box
# ---------------------------------------------------------------------------


def _as_xy(xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"map points must be an (N, 2) array, got shape {xy.shape}")
    if xy.dtype not in (np.float32, np.float64):
        xy = xy.astype(np.float64)
    return xy


def _as_polygon(polygon: np.ndarray) -> np.ndarray:
    poly = np.asarray(polygon, dtype=np.float64)
    if poly.ndim != 2 or poly.shape[1] != 2:
        raise ValueError(f"a polygon must be a (V, 2) array of vertices, got shape {poly.shape}")
    if not np.all(np.isfinite(poly)):
        raise ValueError("the polygon's vertices must be finite")
    if len(poly) > 1 and np.array_equal(poly[0], poly[-1]):
        poly = poly[:-1]  # closed explicitly: the closing edge is implied anyway
    return poly


def _bound_below(value: float, dtype) -> float:
    """The largest number of ``dtype`` that is <= ``value`` (so a comparison with it misses no point)."""
    b = dtype.type(value)
    return b if b <= value else np.nextafter(b, dtype.type(-np.inf))


def _bound_above(value: float, dtype) -> float:
    b = dtype.type(value)
    return b if b >= value else np.nextafter(b, dtype.type(np.inf))


def _in_bounds(xy: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Mask of the points with x0 <= x <= x1 and y0 <= y <= y1 (NaN is never inside)."""
    dt = xy.dtype
    x, y = xy[:, 0], xy[:, 1]
    with np.errstate(invalid="ignore"):
        m = x >= _bound_below(x0, dt)
        m &= x <= _bound_above(x1, dt)
        m &= y >= _bound_below(y0, dt)
        m &= y <= _bound_above(y1, dt)
    return m


def _even_odd(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, point by point: a horizontal ray to the right crosses the outline an odd number of times.

    An edge counts when one of its ends lies strictly above the point's y and
    the other does not, and it crosses that y to the right of the point (the
    usual half-open convention: of two polygons sharing an edge, a point on it
    belongs to exactly one).
    """
    inside = np.zeros(px.shape[0], dtype=bool)
    xa, ya = poly[:, 0], poly[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    for i in range(poly.shape[0]):
        if ya[i] == yb[i]:
            continue  # horizontal edges never satisfy the straddle test
        straddle = (ya[i] > py) != (yb[i] > py)
        x_cross = xa[i] + (py - ya[i]) * ((xb[i] - xa[i]) / (yb[i] - ya[i]))
        inside ^= straddle & (px < x_cross)
    return inside


def _polygon_grid(poly: np.ndarray, x0: float, y0: float, w: float, h: float, g: int) -> np.ndarray:
    """(g, g) uint8 over the polygon's bounding box: 1 inside, 0 outside, 2 where an edge may pass.

    A cell's state is the even-odd state of its centre (computed row by row
    from the edges' crossings of the centre line). Cells near an edge are
    marked 2: every edge is sampled at steps of half a cell, and the cells
    within two cells of a sample are marked, so that every cell an edge
    touches is marked, with a margin of one cell for rounding.
    """
    xa, ya = poly[:, 0], poly[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    yc = y0 + (np.arange(g) + 0.5) * h  # centre line of each row
    # Crossings of each edge with each row's centre line, as (edge, row).
    straddle = (ya[:, None] > yc[None, :]) != (yb[:, None] > yc[None, :])
    e, r = np.nonzero(straddle)
    x_cross = xa[e] + (yc[r] - ya[e]) * (xb[e] - xa[e]) / (yb[e] - ya[e])
    # A cell's centre is left of a crossing when its column is below this count.
    left_of = np.clip(np.ceil((x_cross - x0) / w - 0.5), 0, g).astype(np.intp)
    counts = np.bincount(r * (g + 1) + left_of, minlength=g * (g + 1)).reshape(g, g + 1)
    # Crossings to the right of column c: those with left_of > c.
    right = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1][:, 1:]
    grid = (right & 1).astype(np.uint8)

    step = 0.5 * min(w, h)
    lengths = np.hypot(xb - xa, yb - ya)
    n = np.maximum(2, np.ceil(lengths / step).astype(np.intp) + 1)
    edge = np.repeat(np.arange(len(poly)), n)
    t = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n - 1, n)
    sx = xa[edge] + t * (xb[edge] - xa[edge])
    sy = ya[edge] + t * (yb[edge] - ya[edge])
    cx = np.clip(np.floor((sx - x0) / w), 0, g - 1).astype(np.intp)
    cy = np.clip(np.floor((sy - y0) / h), 0, g - 1).astype(np.intp)
    near = np.zeros((g + 4, g + 4), dtype=bool)
    near[cy + 2, cx + 2] = True
    # Dilate by two cells in each direction (separably).
    rows = near.copy()
    for s in (1, 2):
        rows[s:] |= near[:-s]
        rows[:-s] |= near[s:]
    cols = rows.copy()
    for s in (1, 2):
        cols[:, s:] |= rows[:, :-s]
        cols[:, :-s] |= rows[:, s:]
    grid[cols[2:-2, 2:-2]] = 2
    return grid


def points_in_polygon(xy: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Boolean mask (N,) of the map points ``xy`` (N, 2) inside ``polygon`` (V, 2), by the even-odd rule.

    The polygon is closed implicitly (the last vertex joins the first) and may
    cross itself; where it does, the even-odd rule decides (as a painter
    fills such a path). Fewer than three vertices select nothing; points with
    NaN coordinates are never inside.

    Exactly the result of testing every point against every edge, only
    faster: the points in the polygon's bounding box are sorted into a grid
    of cells; a cell that no edge touches is wholly inside or wholly outside,
    as its centre is, and only the points of the cells along the outline are
    tested edge by edge.
    """
    xy = _as_xy(xy)
    poly = _as_polygon(polygon)
    n = xy.shape[0]
    out = np.zeros(n, dtype=bool)
    if len(poly) < 3 or n == 0:
        return out
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    if not (x1 > x0 and y1 > y0):
        return out  # no area: the straddle and crossing tests both fail everywhere
    cand = np.flatnonzero(_in_bounds(xy, x0, x1, y0, y1))
    if cand.size == 0:
        return out
    px, py = xy[cand, 0], xy[cand, 1]
    if cand.size * len(poly) <= 200_000:
        out[cand] = _even_odd(px.astype(np.float64), py.astype(np.float64), poly)
        return out
    g = int(np.clip(np.sqrt(cand.size) / 2.0, 16, 512))
    w, h = (x1 - x0) / g, (y1 - y0) / g
    grid = _polygon_grid(poly, x0, y0, w, h, g)

    def cell(v: np.ndarray, origin: float, size: float) -> np.ndarray:
        # In float64 (one pass from float32 input): a cell index is off by far less than a cell.
        f = np.subtract(v, origin, dtype=np.float64)
        f *= 1.0 / size
        i = f.astype(np.intp)
        np.minimum(i, g - 1, out=i)
        return i

    flat = cell(py, y0, h)
    flat *= g
    flat += cell(px, x0, w)
    state = grid.ravel()[flat]
    inside = state == 1
    edge = np.flatnonzero(state == 2)
    inside[edge] = _even_odd(px[edge].astype(np.float64), py[edge].astype(np.float64), poly)
    out[cand] = inside
    return out


def points_in_box(xy: np.ndarray, corner_a, corner_b) -> np.ndarray:
    """Boolean mask (N,) of the map points in the rectangle with opposite corners ``corner_a`` and ``corner_b``.

    The corners may be given in any order; points on the rectangle's sides
    are inside; points with NaN coordinates are not.
    """
    xy = _as_xy(xy)
    (ax, ay), (bx, by) = (np.asarray(c, dtype=np.float64).reshape(2) for c in (corner_a, corner_b))
    return _in_bounds(xy, min(ax, bx), max(ax, bx), min(ay, by), max(ay, by))


def combine(old: Optional[np.ndarray], new: np.ndarray, mode: str = "replace") -> np.ndarray:
    """The selection after a new lasso or box: ``new`` joined to ``old`` as ``mode`` says.

    ``replace``: ``new``; ``add``: either; ``subtract``: ``old`` but not
    ``new``; ``intersect``: both. ``old`` None means nothing selected yet.
    The result is a new array; neither input is changed.
    """
    new = np.asarray(new, dtype=bool)
    if mode not in COMBINE_MODES:
        raise ValueError(f"mode must be one of {', '.join(COMBINE_MODES)}, got {mode!r}")
    if old is None:
        old = np.zeros(new.shape, dtype=bool)
    old = np.asarray(old, dtype=bool)
    if old.shape != new.shape:
        raise ValueError(f"the two selections differ in size: {old.shape} and {new.shape}")
    if mode == "replace":
        return new.copy()
    if mode == "add":
        return old | new
    if mode == "subtract":
        return old & ~new
    return old & new


# ---------------------------------------------------------------------------
# Neighbours in latent space
# ---------------------------------------------------------------------------


class LatentIndex:
    """Exact k nearest neighbours among fixed latent codes (N, d), by Euclidean distance.

    Two methods, both exact: a KD-tree (scipy's ``cKDTree``; about a second
    to build at 1,000,000 x 16, then well under a millisecond a query at
    d = 8) for up to ``TREE_MAX_DIM`` dimensions, and above that a scan of
    all codes (one matrix product in float32, then the candidates within
    the product's rounding error of the k-th are measured again in float64;
    about 40 ms a query at 1,000,000 x 64), where a KD-tree prunes little.
    ``method`` "auto" picks between them by d; "tree" and "brute" force one.

    Nothing is built in the constructor: ``build()`` (or the first query)
    does it, so it can be called on a worker thread while the program waits.
    Queries from several threads are safe.
    """

    TREE_MAX_DIM = 16
    #: Rows of queries scanned at a time by the brute-force method.
    BLOCK = 256

    def __init__(self, latents: np.ndarray, method: str = "auto"):
        codes = np.asarray(latents)
        if codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
            raise ValueError(f"latents must be an (N, d) array with N, d >= 1, got shape {codes.shape}")
        if method not in ("auto", "tree", "brute"):
            raise ValueError(f"method must be 'auto', 'tree' or 'brute', got {method!r}")
        self.latents: np.ndarray = np.ascontiguousarray(codes, dtype=np.float32)
        if not np.all(np.isfinite(self.latents)):
            raise ValueError("latents contain NaN or infinite values")
        if method == "auto":
            method = "tree" if self.latents.shape[1] <= self.TREE_MAX_DIM else "brute"
        self.method: str = method
        self._tree = None
        self._sqnorms: Optional[np.ndarray] = None
        self._max_norm: float = 0.0
        self._lock = threading.Lock()

    @property
    def n(self) -> int:
        return self.latents.shape[0]

    @property
    def dim(self) -> int:
        return self.latents.shape[1]

    @property
    def is_built(self) -> bool:
        return self._tree is not None or self._sqnorms is not None

    def build(self) -> "LatentIndex":
        """Build the tree (or the codes' norms for scanning); returns self. Safe to call more than once."""
        with self._lock:
            if self.is_built:
                return self
            if self.method == "tree":
                from scipy.spatial import cKDTree

                # Median splits answer queries about 10% faster; sliding-midpoint
                # splits build a tree of a million codes in half the time.
                self._tree = cKDTree(self.latents.astype(np.float64), balanced_tree=self.n <= 200_000)
            else:
                sq = np.einsum("ij,ij->i", self.latents, self.latents, dtype=np.float64)
                self._max_norm = float(np.sqrt(sq.max()))
                self._sqnorms = sq.astype(np.float32)
        return self

    def query(
        self, code_or_index: Union[int, np.integer, np.ndarray], k: int, exclude: Optional[int] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices (k,) int64, distances (k,) float64) of the nearest codes, nearest first.

        ``code_or_index`` is a code (d,) or the index of a stored example; an
        example is left out of its own neighbours (other examples with the
        same code are not). ``exclude`` leaves out one more index. Fewer than
        k come back when there are not that many. Ties in distance come in
        any order.
        """
        if isinstance(code_or_index, (int, np.integer)):
            i = int(code_or_index)
            if not 0 <= i < self.n:
                raise IndexError(f"example {i} does not exist: there are {self.n}")
            code, skip = self.latents[i], {i}
        else:
            code = np.asarray(code_or_index, dtype=np.float32).reshape(-1)
            if code.shape[0] != self.dim:
                raise ValueError(f"the code has {code.shape[0]} dimensions, the index {self.dim}")
            skip = set()
        if exclude is not None:
            skip.add(int(exclude))
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        want = min(k, self.n - len([s for s in skip if 0 <= s < self.n]))
        if want <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        idx, dist = self.query_many(code[None, :], min(self.n, want + len(skip)))
        idx, dist = idx[0], dist[0]
        keep = ~np.isin(idx, list(skip)) if skip else np.ones(len(idx), dtype=bool)
        return idx[keep][:want], dist[keep][:want]

    def query_many(self, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices (M, k) int64, distances (M, k) float64) of the k nearest stored codes of each of ``codes`` (M, d).

        No example is left out (a stored code finds itself at distance 0).
        """
        q = np.asarray(codes, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"codes must be an (M, {self.dim}) array, got shape {q.shape}")
        k = int(k)
        if not 1 <= k <= self.n:
            raise ValueError(f"k must be between 1 and {self.n}, got {k}")
        self.build()
        if self._tree is not None:
            dist, idx = self._tree.query(q.astype(np.float64), k=k)
            if k == 1:
                dist, idx = dist[:, None], idx[:, None]
            return idx.astype(np.int64), dist
        out_i = np.empty((q.shape[0], k), dtype=np.int64)
        out_d = np.empty((q.shape[0], k), dtype=np.float64)
        for s in range(0, q.shape[0], self.BLOCK):
            out_i[s : s + self.BLOCK], out_d[s : s + self.BLOCK] = self._scan(q[s : s + self.BLOCK], k)
        return out_i, out_d

    def _scan(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest of a block of queries by scanning every code.

        Squared distances |x|^2 - 2 x.q + |q|^2 in float32 are off by at most
        ``tol`` (a bound on the rounding of a d-term dot product and of the
        sums); every code within 2 ``tol`` of the k-th such value is measured
        again in float64 and the k nearest of those are the answer.
        """
        x, sq = self.latents, self._sqnorms
        qn = np.einsum("ij,ij->i", q, q, dtype=np.float64)
        approx = q @ x.T
        approx *= -2.0
        approx += sq[None, :]
        approx += qn.astype(np.float32)[:, None]
        u = float(np.finfo(np.float32).eps)
        tol = 2.0 * (self.dim + 4) * u * (self._max_norm + np.sqrt(qn)) ** 2 + 1e-30
        n = x.shape[0]
        extra = min(n, k + 16)
        part = np.argpartition(approx, extra - 1, axis=1)[:, :extra]
        part_vals = np.take_along_axis(approx, part, axis=1)
        kth = np.partition(part_vals, k - 1, axis=1)[:, k - 1]
        limit = kth + 2.0 * tol
        out_i = np.empty((q.shape[0], k), dtype=np.int64)
        out_d = np.empty((q.shape[0], k), dtype=np.float64)
        for row in range(q.shape[0]):
            if extra < n and part_vals[row].max() <= limit[row]:
                # More codes than the partition kept may lie within the error: look at all of them.
                cand = np.flatnonzero(approx[row] <= limit[row])
            else:
                cand = part[row][part_vals[row] <= limit[row]]
            diff = x[cand].astype(np.float64) - q[row].astype(np.float64)
            exact = np.einsum("ij,ij->i", diff, diff)
            order = np.lexsort((cand, exact))[:k]
            out_i[row] = cand[order]
            out_d[row] = np.sqrt(exact[order])
        return out_i, out_d


def nearest_neighbours(
    latents: np.ndarray, index_or_code: Union[int, np.ndarray], k: int, index: Optional[LatentIndex] = None
) -> tuple[np.ndarray, np.ndarray]:
    """(indices (k,), distances (k,)) of the k nearest examples in latent space, nearest first.

    ``index_or_code`` is an example's index (the example itself is left out)
    or a code (d,). Give ``index``, a ``LatentIndex`` of the same latents, to
    reuse it across queries; without one every code is scanned once (no
    tree is worth building for a single query).
    """
    if index is None:
        index = LatentIndex(latents, method="brute")
    elif index.latents.shape != np.shape(latents):
        raise ValueError(f"the index holds {index.latents.shape} codes, the latents are {np.shape(latents)}")
    return index.query(index_or_code, k)


# ---------------------------------------------------------------------------
# What a selection holds
# ---------------------------------------------------------------------------


def label_histogram(labels: np.ndarray, mask: Optional[np.ndarray], n_classes: int) -> np.ndarray:
    """Count (n_classes,) int64 of each class among the selected examples.

    Labels outside 0 .. n_classes - 1 (e.g. -1 for unlabelled) are not
    counted. ``mask`` None counts every example.
    """
    labels = np.asarray(labels).reshape(-1)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != labels.shape:
            raise ValueError(f"mask has shape {mask.shape}, labels {labels.shape}")
        labels = labels[mask]
    labels = labels.astype(np.int64, copy=False)
    n_classes = int(n_classes)
    valid = labels[(labels >= 0) & (labels < n_classes)]
    return np.bincount(valid, minlength=n_classes).astype(np.int64)


@dataclass(frozen=True)
class SelectionSummary:
    """What a selection panel shows about the selected examples.

    ``indices``: the first ``len(indices)`` selected examples, in index order
    (a grid shows these); ``histogram``: count per class (None without
    labels); ``mean_code``: mean latent code of the selection (None without
    codes or when nothing is selected), ready to decode.
    """

    count: int
    indices: np.ndarray
    histogram: Optional[np.ndarray]
    mean_code: Optional[np.ndarray]


def selection_summary(
    mask: np.ndarray,
    labels: Optional[np.ndarray] = None,
    n_classes: Optional[int] = None,
    codes: Optional[np.ndarray] = None,
    max_examples: int = 256,
) -> SelectionSummary:
    """Count, the first ``max_examples`` indices, the label histogram and the mean code of a selection.

    ``n_classes`` defaults to one more than the largest label.
    """
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    selected = np.flatnonzero(mask)
    hist = None
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if n_classes is None:
            n_classes = int(labels.max()) + 1 if labels.size else 0
        hist = label_histogram(labels, mask, max(0, int(n_classes)))
    mean = None
    if codes is not None and selected.size:
        codes = np.asarray(codes)
        if codes.shape[0] != mask.shape[0]:
            raise ValueError(f"codes has {codes.shape[0]} rows, the selection {mask.shape[0]}")
        mean = codes[selected].mean(axis=0, dtype=np.float64).astype(np.float32)
    return SelectionSummary(
        count=int(selected.size),
        indices=selected[: max(0, int(max_examples))].astype(np.int64),
        histogram=hist,
        mean_code=mean,
    )
