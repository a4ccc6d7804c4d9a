"""Lasso and box selections, their combinations, neighbours in latent space, and selection summaries."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae_core.selection import (
    LatentIndex,
    combine,
    label_histogram,
    nearest_neighbours,
    points_in_box,
    points_in_polygon,
    selection_summary,
)

ROOT = Path(__file__).resolve().parents[2]


def brute_in_polygon(xy, poly):
    """Even-odd rule, every point against every edge, written independently of the module."""
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    inside = np.zeros(len(xy), dtype=bool)
    n = len(poly)
    for i in range(n):
        (xa, ya), (xb, yb) = poly[i], poly[(i + 1) % n]
        if ya == yb:
            continue
        straddle = (ya > y) != (yb > y)
        inside ^= straddle & (x < xa + (y - ya) * ((xb - xa) / (yb - ya)))
    return inside


def lasso(n_vertices=40, centre=(0.0, 0.0), radius=1.0, seed=0):
    """A wobbly closed stroke, as a mouse draws one."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 2.0 * np.pi, n_vertices, endpoint=False)
    r = radius * (1.0 + 0.35 * rng.uniform(-1.0, 1.0, n_vertices))
    return np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], axis=1)


def test_no_heavy_imports():
    code = "import sys, vae_core.selection; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'umap', 'sklearn', 'numba', 'PySide6', 'scipy'}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- polygons ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lasso_matches_brute_force_on_many_points(dtype, seed):
    rng = np.random.default_rng(seed)
    xy = rng.normal(0.0, 1.0, (200_000, 2)).astype(dtype)
    poly = lasso(40, centre=(0.2, -0.1), radius=1.2, seed=seed)
    got = points_in_polygon(xy, poly)
    expected = brute_in_polygon(xy, poly)
    assert got.dtype == bool and got.shape == (len(xy),)
    assert 10_000 < expected.sum() < 190_000  # the fast path really ran on both sides of the outline
    np.testing.assert_array_equal(got, expected)


def test_self_crossing_polygon_is_even_odd():
    # A pentagram: its centre is crossed twice by any ray, so it is outside.
    t = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
    star = np.stack([np.cos(t), np.sin(t)], axis=1)
    rng = np.random.default_rng(3)
    xy = rng.uniform(-1.1, 1.1, (100_000, 2))
    got = points_in_polygon(xy, star)
    np.testing.assert_array_equal(got, brute_in_polygon(xy, star))
    assert not points_in_polygon(np.array([[0.0, 0.0]]), star)[0]
    assert points_in_polygon(np.array([[0.0, 0.8]]), star)[0]  # inside a tip


def test_points_on_the_grid_lines_vertices_and_edges():
    """Points exactly on vertices, edges and cell boundaries decide as the point-by-point rule does."""
    poly = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 3.0], [2.0, 1.0], [0.0, 3.0]])
    g = np.stack(np.meshgrid(np.linspace(-0.5, 4.5, 401), np.linspace(-0.5, 3.5, 321)), -1).reshape(-1, 2)
    xy = np.concatenate([g, poly, (poly + np.roll(poly, -1, axis=0)) / 2.0])
    np.testing.assert_array_equal(points_in_polygon(xy, poly), brute_in_polygon(xy, poly))


def test_orientation_closing_vertex_and_degenerate_polygons():
    rng = np.random.default_rng(4)
    xy = rng.uniform(-2, 2, (50_000, 2))
    poly = lasso(25, radius=1.5, seed=7)
    ref = points_in_polygon(xy, poly)
    np.testing.assert_array_equal(points_in_polygon(xy, poly[::-1]), ref)
    np.testing.assert_array_equal(points_in_polygon(xy, np.vstack([poly, poly[:1]])), ref)
    assert not points_in_polygon(xy, poly[:2]).any()
    assert not points_in_polygon(xy, np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])).any()  # no area
    assert not points_in_polygon(np.empty((0, 2)), poly).any()
    with pytest.raises(ValueError):
        points_in_polygon(xy, np.array([[0.0, np.nan], [1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError):
        points_in_polygon(np.zeros((3, 3)), poly)


def test_nan_points_are_never_selected():
    xy = np.array([[0.0, 0.0], [np.nan, 0.0], [0.0, np.inf], [0.1, 0.1]], dtype=np.float32)
    square = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    np.testing.assert_array_equal(points_in_polygon(xy, square), [True, False, False, True])
    np.testing.assert_array_equal(points_in_box(xy, (-1, -1), (1, 1)), [True, False, False, True])


def test_box_corners_in_any_order_and_float32_edges():
    xy = np.array([[0.1, 0.2], [1.0, 1.0], [1.0000001, 0.5], [-0.5, 0.5], [0.5, 1.5]], dtype=np.float32)
    a = points_in_box(xy, (0.0, 0.0), (1.0, 1.0))
    np.testing.assert_array_equal(a, [True, True, False, False, False])
    np.testing.assert_array_equal(points_in_box(xy, (1.0, 1.0), (0.0, 0.0)), a)
    # A bound between two float32 numbers misses none of the points on its side.
    edge = np.float32(0.1)
    got = points_in_box(xy, (float(edge), 0.0), (1.0, 1.0))
    assert got[0]


# -- combining ------------------------------------------------------------------


def test_combine_modes():
    old = np.array([True, True, False, False])
    new = np.array([True, False, True, False])
    np.testing.assert_array_equal(combine(old, new, "replace"), new)
    np.testing.assert_array_equal(combine(old, new, "add"), [True, True, True, False])
    np.testing.assert_array_equal(combine(old, new, "subtract"), [False, True, False, False])
    np.testing.assert_array_equal(combine(old, new, "intersect"), [True, False, False, False])
    np.testing.assert_array_equal(combine(None, new, "add"), new)
    np.testing.assert_array_equal(combine(None, new, "subtract"), [False] * 4)
    out = combine(old, new, "replace")
    out[:] = False
    assert new[0], "the result is a new array"
    with pytest.raises(ValueError):
        combine(old, new, "xor")
    with pytest.raises(ValueError):
        combine(old[:3], new, "add")


# -- neighbours -----------------------------------------------------------------


def brute_knn(latents, q, k, skip=None):
    d = np.linalg.norm(latents.astype(np.float64) - np.asarray(q, dtype=np.float64), axis=1)
    if skip is not None:
        d[skip] = np.inf
    order = np.argsort(d, kind="stable")[:k]
    return order, d[order]


@pytest.mark.parametrize("d,method", [(8, "tree"), (8, "brute"), (32, "auto"), (64, "brute"), (3, "auto")])
def test_neighbours_match_brute_force(d, method):
    rng = np.random.default_rng(d)
    latents = rng.normal(0.0, 1.0, (5000, d)).astype(np.float32) * rng.uniform(0.1, 3.0, d).astype(np.float32)
    index = LatentIndex(latents, method=method)
    assert not index.is_built
    assert index.method == (method if method != "auto" else ("tree" if d <= 16 else "brute"))
    for i in (0, 17, 4999):
        idx, dist = index.query(i, 12)
        ref_i, ref_d = brute_knn(latents, latents[i], 12, skip=i)
        assert i not in idx
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(dist, ref_d, rtol=1e-9, atol=1e-9)
    assert index.is_built
    q = rng.normal(size=d).astype(np.float32)
    idx, dist = index.query(q, 5)
    ref_i, ref_d = brute_knn(latents, q, 5)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-9, atol=1e-9)
    many_i, many_d = index.query_many(latents[:300], 4)
    for row in range(300):
        ref_i, ref_d = brute_knn(latents, latents[row], 4)
        np.testing.assert_array_equal(many_i[row], ref_i)
        np.testing.assert_allclose(many_d[row], ref_d, atol=1e-9)


def test_scan_is_exact_where_float32_products_are_not():
    """Codes far from the origin and close together: |x|^2 - 2 x.q + |q|^2 in float32 cannot rank them."""
    rng = np.random.default_rng(0)
    base = np.full(64, 100.0)
    latents = (base + rng.normal(0.0, 1e-3, (3000, 64))).astype(np.float32)
    index = LatentIndex(latents, method="brute")
    for i in (5, 2999):
        idx, dist = index.query(i, 10)
        ref_i, ref_d = brute_knn(latents, latents[i], 10, skip=i)
        np.testing.assert_array_equal(idx, ref_i)
        np.testing.assert_allclose(dist, ref_d, rtol=1e-9)


def test_duplicates_and_exclusion():
    latents = np.zeros((6, 2), np.float32)
    latents[3:] = 1.0
    idx, dist = nearest_neighbours(latents, 0, 3)
    np.testing.assert_array_equal(np.sort(idx[:2]), [1, 2])  # the other copies, at distance 0
    assert 0 not in idx and np.all(dist[:2] == 0.0) and dist[2] == pytest.approx(np.sqrt(2.0))
    for method in ("tree", "brute"):
        index = LatentIndex(latents, method=method)
        idx, _ = index.query(0, 10)
        assert len(idx) == 5 and 0 not in idx
        idx, _ = index.query(latents[0], 3, exclude=1)
        assert 1 not in idx and len(idx) == 3
    with pytest.raises(IndexError):
        LatentIndex(latents).query(6, 2)
    with pytest.raises(ValueError):
        LatentIndex(latents).query(np.zeros(3), 2)
    with pytest.raises(ValueError):
        LatentIndex(latents).query(0, 0)


def test_nearest_neighbours_reuses_a_given_index():
    rng = np.random.default_rng(1)
    latents = rng.normal(size=(2000, 8)).astype(np.float32)
    index = LatentIndex(latents).build()
    idx, dist = nearest_neighbours(latents, 42, 7, index=index)
    ref_i, ref_d = brute_knn(latents, latents[42], 7, skip=42)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dist, ref_d, atol=1e-9)
    with pytest.raises(ValueError):
        nearest_neighbours(latents[:10], 1, 3, index=index)


def test_index_built_on_another_thread_serves_queries():
    import threading

    rng = np.random.default_rng(2)
    latents = rng.normal(size=(20_000, 6)).astype(np.float32)
    index = LatentIndex(latents)
    threads = [threading.Thread(target=index.build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    idx, _ = index.query(7, 5)
    np.testing.assert_array_equal(idx, brute_knn(latents, latents[7], 5, skip=7)[0])


# -- what a selection holds -------------------------------------------------------


def test_label_histogram():
    labels = np.array([0, 1, 1, 2, 2, 2, -1, 5])
    mask = np.array([True, True, False, True, True, False, True, True])
    np.testing.assert_array_equal(label_histogram(labels, mask, 3), [1, 1, 2])
    np.testing.assert_array_equal(label_histogram(labels, None, 3), [1, 2, 3])
    np.testing.assert_array_equal(label_histogram(labels, np.zeros(8, bool), 2), [0, 0])
    with pytest.raises(ValueError):
        label_histogram(labels, mask[:3], 3)


def test_selection_summary():
    rng = np.random.default_rng(5)
    codes = rng.normal(size=(1000, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 1000)
    mask = codes[:, 0] > 0.5
    s = selection_summary(mask, labels=labels, codes=codes, max_examples=50)
    assert s.count == int(mask.sum())
    np.testing.assert_array_equal(s.indices, np.flatnonzero(mask)[:50])
    np.testing.assert_array_equal(s.histogram, np.bincount(labels[mask], minlength=3))
    np.testing.assert_allclose(s.mean_code, codes[mask].mean(axis=0), atol=1e-6)
    empty = selection_summary(np.zeros(1000, bool), labels=labels, n_classes=4, codes=codes)
    assert empty.count == 0 and empty.mean_code is None and len(empty.indices) == 0
    np.testing.assert_array_equal(empty.histogram, [0, 0, 0, 0])
    bare = selection_summary(mask)
    assert bare.histogram is None and bare.mean_code is None


def test_polygon_small_input_path_matches_too():
    """Few points: the point-by-point path; the result is the same rule."""
    rng = np.random.default_rng(6)
    xy = rng.uniform(-1, 1, (300, 2))
    poly = lasso(12, radius=0.8, seed=3)
    np.testing.assert_array_equal(points_in_polygon(xy, poly), brute_in_polygon(xy, poly))

