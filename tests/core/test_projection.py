"""Projections of latent codes to 2-D maps and their inverses."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from vae_core.errors import ConfigError
from vae_core.projection import (
    PCAProjection,
    Projection,
    ProjectionCancelled,
    RawDims,
    UMAPProjection,
    warm_umap,
)

ROOT = Path(__file__).resolve().parents[2]


def mixture(n=500, d=8, k=5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (k, d))
    labels = rng.integers(0, k, n)
    return (centres[labels] + rng.normal(0.0, 1.0, (n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def codes():
    return mixture()


@pytest.fixture(scope="module")
def umap_fit(codes):
    proj = UMAPProjection(random_state=0, n_epochs=100)
    xy = proj.fit(codes)
    return proj, xy


# -- import hygiene -------------------------------------------------------


def test_import_does_not_load_umap_sklearn_or_numba():
    code = textwrap.dedent(
        """
        import sys
        import vae_core.projection
        heavy = sorted({m.split('.')[0] for m in sys.modules} & {'umap', 'sklearn', 'numba', 'pynndescent'})
        print(','.join(heavy))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


# -- raw dims -------------------------------------------------------------


def test_raw_dims_layout_and_exact_inverse(codes):
    proj = RawDims(2, 5)
    xy = proj.fit(codes)
    assert xy.dtype == np.float32 and xy.shape == (len(codes), 2)
    np.testing.assert_array_equal(xy, codes[:, [2, 5]])
    back, dist = proj.inverse(xy)
    assert back.dtype == np.float32 and back.shape == codes.shape
    assert dist.dtype == np.float32 and dist.shape == (len(codes),)
    np.testing.assert_array_equal(back[:, [2, 5]], codes[:, [2, 5]])
    others = [k for k in range(codes.shape[1]) if k not in (2, 5)]
    assert np.all(back[:, others] == 0.0)  # the prior mean
    assert np.all(dist == 0.0)
    assert proj.is_exact
    np.testing.assert_array_equal(proj.transform(codes), xy)


def test_raw_dims_base_fills_other_dims(codes):
    proj = RawDims(0, 1)
    proj.fit(codes)
    proj.base = codes[7]
    back, _ = proj.inverse(np.array([[0.5, -0.25]]))
    expected = codes[7].copy()
    expected[:2] = [0.5, -0.25]
    np.testing.assert_allclose(back[0], expected)
    proj.base = np.zeros(3)
    with pytest.raises(ValueError):
        proj.inverse(np.zeros((1, 2)))


def test_raw_dims_checks_dims():
    with pytest.raises(ConfigError):
        RawDims(1, 1)
    with pytest.raises(ValueError):
        RawDims(0, 4).fit(np.zeros((10, 3), np.float32))
    # A one-dimensional latent space: y is 0.
    z = np.linspace(-1, 1, 10, dtype=np.float32)[:, None]
    proj = RawDims()
    xy = proj.fit(z)
    assert np.all(xy[:, 1] == 0.0)
    back, _ = proj.inverse(np.array([[0.3, 5.0]]))
    assert back.shape == (1, 1) and back[0, 0] == pytest.approx(0.3)


# -- PCA ------------------------------------------------------------------


def test_pca_round_trip_on_its_plane(codes):
    proj = PCAProjection()
    xy = proj.fit(codes)
    back, dist = proj.inverse(xy)
    # The inverse lands on the PCA plane, and projecting it again is exact.
    np.testing.assert_allclose(proj.transform(back), xy, atol=1e-4)
    # It is the orthogonal projection of each code onto the plane.
    mean = codes.mean(axis=0)
    basis = proj.components
    expected = mean + (codes - mean) @ basis.T @ basis
    np.testing.assert_allclose(back, expected, atol=1e-4)
    assert np.all(dist == 0.0)
    r = proj.explained_variance_ratio
    assert r.shape == (2,) and r[0] >= r[1] >= 0.0 and r.sum() <= 1.0 + 1e-9
    assert proj.is_exact


def test_pca_matches_numpy_svd(codes):
    proj = PCAProjection()
    proj.fit(codes)
    centred = codes.astype(np.float64) - codes.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    for row, ref in zip(proj.components, vt[:2]):
        assert abs(abs(row @ ref) - 1.0) < 1e-6
    np.testing.assert_allclose(proj.explained_variance_ratio, (s**2 / (s**2).sum())[:2], rtol=1e-6)


def test_pca_two_dims_is_exact_everywhere():
    z = mixture(200, d=2)
    proj = PCAProjection()
    xy = proj.fit(z)
    back, _ = proj.inverse(xy)
    np.testing.assert_allclose(back, z, atol=1e-5)
    q = np.array([[3.0, -7.0], [0.0, 0.0]])
    np.testing.assert_allclose(proj.transform(proj.inverse(q)[0]), q, atol=1e-5)


def test_pca_one_dim():
    z = np.random.default_rng(0).normal(size=(50, 1)).astype(np.float32)
    proj = PCAProjection()
    xy = proj.fit(z)
    assert np.all(xy[:, 1] == 0.0)
    back, _ = proj.inverse(xy)
    np.testing.assert_allclose(back, z, atol=1e-5)
    np.testing.assert_allclose(proj.explained_variance_ratio, [1.0, 0.0])


def test_pca_constant_codes():
    z = np.ones((20, 4), np.float32)
    proj = PCAProjection()
    xy = proj.fit(z)
    assert np.all(xy == 0.0)
    assert np.all(proj.explained_variance_ratio == 0.0)
    back, dist = proj.inverse(np.array([[0.0, 0.0], [2.0, 0.0]]))
    np.testing.assert_allclose(back[0], z[0])
    assert dist[0] == 0.0 and dist[1] > 1.0


def test_distance_is_in_nearest_neighbour_spacings():
    # A regular grid with spacing 0.5: distance 1 is one grid step.
    g = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2) * 0.5
    proj = RawDims()
    proj.fit(g.astype(np.float32))
    assert proj.spacing == pytest.approx(0.5)
    _, dist = proj.inverse(np.array([[0.25, 0.0], [-1.5, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(dist, [0.5, 3.0, 0.0], atol=1e-6)
    assert Projection.far_threshold == 3.0


def test_bad_codes_and_unfitted():
    with pytest.raises(ValueError):
        PCAProjection().fit(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError):
        PCAProjection().fit(np.zeros(5))
    with pytest.raises(RuntimeError):
        PCAProjection().inverse(np.zeros((1, 2)))
    proj = RawDims()
    proj.fit(np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError):
        proj.inverse(np.zeros((3, 3)))


def test_inverse_accepts_single_point(codes):
    proj = PCAProjection()
    proj.fit(codes)
    back, dist = proj.inverse(np.array([0.1, 0.2]))
    assert back.shape == (1, codes.shape[1]) and dist.shape == (1,)
    with pytest.raises(ValueError):
        proj.inverse(np.zeros((4, 3)))


def test_linear_progress_and_cancel(codes):
    seen = []
    PCAProjection().fit(codes, progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0
    with pytest.raises(ProjectionCancelled):
        RawDims().fit(codes, cancel=lambda: True)


def test_axis_labels():
    assert RawDims().axis_labels() == ("z1", "z2")
    assert RawDims(2, 5).axis_labels() == ("z3", "z6")  # numbered from 1, as the program names dims
    pca = PCAProjection()
    assert pca.axis_labels() == ("PC1", "PC2")
    rng = np.random.default_rng(0)
    pca.fit(rng.normal(size=(500, 3)) * np.array([3.0, 1.0, 0.1]))
    r = pca.explained_variance_ratio
    assert pca.axis_labels() == (f"PC1 ({100 * r[0]:.0f}% of variance)", f"PC2 ({100 * r[1]:.0f}%)")
    assert pca.axis_labels()[0] == "PC1 (90% of variance)"
    assert UMAPProjection().axis_labels() == ("UMAP 1", "UMAP 2")


def test_fuzzy_graph_matches_umap(codes):
    from umap.umap_ import fuzzy_simplicial_set

    from vae_core.projection import _fuzzy_graph, _knn, _Reporter

    z = codes[:300]
    idx, dists = _knn(z, 15, _Reporter(None, None), 0.0, 1.0)
    ours = _fuzzy_graph(idx, dists)
    ref = fuzzy_simplicial_set(z, 15, np.random.RandomState(0), "euclidean", {}, idx, dists)[0]
    assert ours.shape == ref.shape
    assert abs(ours - ref.tocsr()).max() < 1e-5


def test_knn_puts_each_point_first_even_with_duplicates():
    from vae_core.projection import _knn, _Reporter

    z = np.zeros((40, 3), np.float32)
    z[20:] = 1.0  # two groups of 20 identical codes
    idx, dists = _knn(z, 5, _Reporter(None, None), 0.0, 1.0)
    np.testing.assert_array_equal(idx[:, 0], np.arange(40))
    assert np.all(dists == 0.0)
    for row in range(40):
        assert row not in idx[row, 1:]
        assert len(set(idx[row])) == 5


def test_umap_inverse_at_data_and_far(codes, umap_fit):
    proj, xy = umap_fit
    assert xy.shape == (len(codes), 2) and xy.dtype == np.float32
    assert np.all(np.isfinite(xy))
    back, dist = proj.inverse(xy)
    assert back.dtype == np.float32 and back.shape == codes.shape
    np.testing.assert_allclose(back, codes, atol=1e-3)
    assert np.all(dist < 1e-3)
    assert not proj.is_exact
    # Far outside the map: the nearest point's code, flagged as far.
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    far = np.array([hi + 10 * (hi - lo), lo - 10 * (hi - lo)])
    back_far, dist_far = proj.inverse(far)
    assert np.all(dist_far > 100 * proj.far_threshold)
    _, nearest = proj._index.tree.query(far)
    np.testing.assert_allclose(back_far, codes[nearest])


def test_umap_inverse_interpolates_inside_triangles(codes, umap_fit):
    proj, xy = umap_fit
    verts = proj._fitted.mesh.simplices[17]
    w = np.array([0.2, 0.3, 0.5])
    q = (w @ xy[verts].astype(np.float64))[None, :]
    back, dist = proj.inverse(q)
    np.testing.assert_allclose(back[0], w @ codes[verts], atol=1e-4)
    nearest_vertex = np.linalg.norm(xy[verts] - q, axis=1).min() / proj.spacing
    assert dist[0] <= nearest_vertex + 1e-4


def test_umap_inverse_is_fast(umap_fit):
    proj, xy = umap_fit
    q = xy[:1] + 0.01
    proj.inverse(q)
    t = time.perf_counter()
    for _ in range(200):
        proj.inverse(q)
    assert (time.perf_counter() - t) / 200 < 2e-3


def test_umap_progress_increases_and_reports_epochs(codes):
    seen = []
    UMAPProjection(random_state=1, n_epochs=30).fit(codes[:200], progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    epochs = [m for _, m in seen if "epoch" in m]
    assert len(epochs) == 30 and epochs[-1].endswith("30/30")


def test_umap_cancel_during_epochs(codes):
    state = {"epochs": 0}

    def progress(fraction, message):
        if "epoch" in message:
            state["epochs"] += 1

    proj = UMAPProjection(random_state=1, n_epochs=200)
    with pytest.raises(ProjectionCancelled):
        proj.fit(codes, progress=progress, cancel=lambda: state["epochs"] >= 3)
    assert state["epochs"] == 3
    assert not proj.is_fitted
    # A later fit on the same thread is not affected.
    assert UMAPProjection(random_state=1, n_epochs=5).fit(codes[:100]).shape == (100, 2)


def test_point_location_matches_scipy(umap_fit):
    from scipy.spatial import Delaunay

    proj, xy = umap_fit
    rng = np.random.default_rng(3)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    q = rng.uniform(lo - 1.0, hi + 1.0, size=(2000, 2))
    _, nearest = proj._index.tree.query(q)
    found, weights = proj._fitted.mesh.locate(q, nearest)
    reference = Delaunay(xy.astype(np.float64)).find_simplex(q)
    np.testing.assert_array_equal(found >= 0, reference >= 0)
    inside = found >= 0
    # Ties on shared edges may pick either triangle; the weights must fit the point.
    verts = xy.astype(np.float64)[proj._fitted.mesh.simplices[found[inside]]]
    np.testing.assert_allclose(np.einsum("mk,mkj->mj", weights[inside], verts), q[inside], atol=1e-8)
    assert np.all(weights[inside] >= -1e-9)
    assert np.mean(found[inside] == reference[inside]) > 0.99


def test_umap_cancel_before_start(codes):
    with pytest.raises(ProjectionCancelled):
        UMAPProjection().fit(codes, cancel=lambda: True)


def test_umap_init_from_previous_layout_keeps_the_map(codes, umap_fit):
    _, previous = umap_fit
    rng = np.random.default_rng(5)
    moved = codes + rng.normal(0.0, 0.05, codes.shape).astype(np.float32)
    again = UMAPProjection(random_state=2, n_epochs=100, init=previous)
    xy = again.fit(moved)
    assert again.init_used == "previous layout"
    fresh = UMAPProjection(random_state=3, n_epochs=100, init="random").fit(moved)
    size = np.linalg.norm(previous.max(axis=0) - previous.min(axis=0))
    kept = np.linalg.norm(xy - previous, axis=1).mean() / size
    scrambled = np.linalg.norm(fresh - previous, axis=1).mean() / size
    assert kept < 0.15
    assert kept < 0.4 * scrambled


def test_umap_ignores_layout_of_wrong_shape(codes):
    proj = UMAPProjection(random_state=0, n_epochs=10, init=np.zeros((3, 2)))
    proj.fit(codes[:100])
    assert proj.init_used == "pca"


def test_umap_small_and_degenerate_inputs():
    with pytest.raises(ValueError):
        UMAPProjection().fit(np.zeros((3, 2), np.float32))
    z = np.repeat(np.eye(3, dtype=np.float32), 5, axis=0)  # 3 distinct codes, 5 copies each
    proj = UMAPProjection(random_state=0, n_epochs=20, n_neighbors=4)
    xy = proj.fit(z)
    assert np.all(np.isfinite(xy))
    back, dist = proj.inverse(xy)
    assert back.shape == z.shape and np.all(np.isfinite(back)) and np.all(np.isfinite(dist))


def test_umap_transform_places_codes_by_their_nearest_fitted_codes(codes, umap_fit):
    proj, xy = umap_fit
    assert proj.note == "" and proj.landmark_indices is None
    # A fitted code lands on its own place.
    np.testing.assert_allclose(proj.transform(codes[:50]), xy[:50], atol=1e-5)
    # A new code: the inverse-distance weighted mean of its 10 nearest fitted codes' places.
    rng = np.random.default_rng(9)
    new = codes[:20] + rng.normal(0.0, 0.3, (20, codes.shape[1])).astype(np.float32)
    placed = proj.transform(new)
    dist = np.linalg.norm(new[:, None, :].astype(np.float64) - codes[None, :, :], axis=2)
    near = np.argsort(dist, axis=1)[:, :10]
    w = 1.0 / np.take_along_axis(dist, near, axis=1)
    expected = np.einsum("mk,mkc->mc", w / w.sum(axis=1, keepdims=True), xy[near].astype(np.float64))
    np.testing.assert_allclose(placed, expected, atol=1e-4)
    with pytest.raises(ValueError):
        proj.transform(np.zeros((1, 3), np.float32))


def test_warm_umap_reports_progress():
    seen = []
    seconds = warm_umap(progress=lambda f, m: seen.append(f))
    assert seconds > 0.0
    assert seen[0] == 0.0 and seen[-1] == 1.0


def test_fits_on_two_threads_at_once(codes):
    import threading

    results = {}

    def other():
        results["warm"] = warm_umap()

    thread = threading.Thread(target=other)
    thread.start()
    xy = UMAPProjection(random_state=0, n_epochs=50).fit(codes)
    thread.join()
    assert xy.shape == (len(codes), 2) and results["warm"] > 0.0


# -- UMAP without umap's import cost ----------------------------------------


def test_umap_fit_loads_none_of_umap_sklearn_or_pynndescent():
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from vae_core.projection import UMAPProjection
        codes = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
        UMAPProjection(n_epochs=5, random_state=0).fit(codes)
        heavy = sorted({m.split('.')[0] for m in sys.modules} & {'umap', 'sklearn', 'pynndescent', 'torch'})
        print(','.join(heavy))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def _prepared_graph(codes, n_epochs):
    from vae_core.projection import _epochs_per_sample, _fuzzy_graph, _knn, _pca_layout, _Reporter

    idx, dists = _knn(codes, 15, _Reporter(None, None), 0.0, 1.0)
    graph = _fuzzy_graph(idx, dists).tocoo()
    graph.sum_duplicates()
    graph.data[graph.data < graph.data.max() / n_epochs] = 0.0
    graph.eliminate_zeros()
    start = _pca_layout(codes)
    start = (10.0 * (start - start.min(0)) / (start.max(0) - start.min(0))).astype(np.float32)
    return graph, _epochs_per_sample(graph.data, n_epochs), start


def test_layout_optimisation_is_umaps(codes):
    """Our epoch kernel gives umap's own layout for the same graph, start and seed."""
    import umap.layouts
    from umap.umap_ import find_ab_params

    from vae_core.projection import _INT32_MAX, _INT32_MIN, _ab_params, _optimize_layout, _Reporter

    a, b = _ab_params(1.0, 0.1)
    assert (a, b) == pytest.approx(find_ab_params(1.0, 0.1), rel=1e-9)
    graph, eps, start = _prepared_graph(codes[:300], 20)
    rng_state = np.random.RandomState(4).randint(_INT32_MIN, _INT32_MAX, 3).astype(np.int64)
    ours = _optimize_layout(start.copy(), graph.row, graph.col, 20, eps, a, b, rng_state, _Reporter(None, None), 0, 1)
    theirs = start.copy()
    umap.layouts.optimize_layout_euclidean(
        theirs, theirs, graph.row, graph.col, 20, 300, eps, a, b, rng_state, 1.0, 1.0, 5.0,
        parallel=False, move_other=True,
    )
    assert np.abs(ours - start).max() > 0.1  # the layout did move
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3)


def _neighbour_agreement(xy, labels, k=10):
    """Mean fraction of each point's k nearest map neighbours that share its class."""
    from scipy.spatial import cKDTree

    _, idx = cKDTree(xy).query(xy, k=k + 1)
    return float(np.mean(labels[idx[:, 1:]] == labels[:, None]))


def labelled_mixture(n, d=8, k=5, seed=0, scale=4.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, scale, (k, d))
    labels = rng.integers(0, k, n)
    return (centres[labels] + rng.normal(0.0, 1.0, (n, d))).astype(np.float32), labels


def test_umap_map_keeps_clusters_apart_and_neighbours_near():
    from sklearn.manifold import trustworthiness

    z, labels = labelled_mixture(2000)
    xy = UMAPProjection(random_state=0).fit(z)
    assert _neighbour_agreement(xy, labels) > 0.97
    assert trustworthiness(z, xy, n_neighbors=10) > 0.93  # PCA gets 0.90 here, a random layout 0.5


# -- UMAP on landmarks ------------------------------------------------------


@pytest.fixture(scope="module")
def landmark_fit():
    z, labels = labelled_mixture(3000, seed=1)
    proj = UMAPProjection(random_state=0, landmarks=600, n_epochs=100)
    seen = []
    xy = proj.fit(z, labels=labels, progress=lambda f, m: seen.append((f, m)))
    return proj, xy, z, labels, seen


def test_landmark_fit_places_the_others_by_their_nearest_landmarks(landmark_fit):
    proj, xy, z, labels, _ = landmark_fit
    lm = proj.landmark_indices
    assert xy.shape == (3000, 2) and np.all(np.isfinite(xy))
    assert len(lm) == 600 and np.all(np.diff(lm) > 0) and not lm.flags.writeable
    assert proj.note == (
        "UMAP fitted on 600 landmarks drawn class by class; "
        "the other 2,400 points placed by their 10 nearest landmarks in latent space"
    )
    others = np.setdiff1d(np.arange(3000), lm)[:40]
    dist = np.linalg.norm(z[others, None, :].astype(np.float64) - z[None, lm, :], axis=2)
    near = np.argsort(dist, axis=1)[:, :10]
    w = 1.0 / np.take_along_axis(dist, near, axis=1)
    expected = np.einsum("mk,mkc->mc", w / w.sum(axis=1, keepdims=True), xy[lm][near].astype(np.float64))
    np.testing.assert_allclose(xy[others], expected, atol=1e-4)
    # transform follows the same rule, for the landmarks (their own place) and the others.
    np.testing.assert_allclose(proj.transform(z[lm[:30]]), xy[lm[:30]], atol=1e-5)
    np.testing.assert_allclose(proj.transform(z[others]), xy[others], atol=1e-4)
    assert _neighbour_agreement(xy, labels) > 0.97


def test_landmark_fit_inverse_interpolates_the_landmarks(landmark_fit):
    proj, xy, z, _, _ = landmark_fit
    lm = proj.landmark_indices
    back, dist = proj.inverse(xy[lm])
    np.testing.assert_allclose(back, z[lm], atol=1e-3)
    assert np.all(dist < 1e-3)
    mesh = proj._fitted.mesh
    verts = mesh.simplices[5]
    w = np.array([0.5, 0.25, 0.25])
    q = (w @ xy[lm][verts].astype(np.float64))[None, :]
    back, _ = proj.inverse(q)
    np.testing.assert_allclose(back[0], w @ z[lm][verts], atol=1e-4)
    # Far away: the nearest point on the map (of all of them) and a large distance.
    far = xy.max(axis=0) + 50.0 * proj.spacing
    back, dist = proj.inverse(far)
    _, nearest = proj._index.tree.query(far)
    np.testing.assert_allclose(back[0], z[nearest])
    assert dist[0] > proj.far_threshold


def test_landmark_fit_progress_covers_the_placement(landmark_fit):
    *_, seen = landmark_fit
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    placing = [m for _, m in seen if m.startswith("Placing")]
    assert placing and placing[-1] == "Placing the other points: 2,400 of 2,400"


def test_landmarks_are_stratified_and_the_same_for_the_same_examples():
    labels = np.repeat([0, 1, 2], [9000, 950, 50])
    proj = UMAPProjection(random_state=3, landmarks=1000)
    lm = proj.choose_landmarks(10_000, labels)
    counts = np.bincount(labels[lm], minlength=3)
    assert counts.sum() == 1000 and len(np.unique(lm)) == 1000
    # A small class keeps all its points (up to LANDMARKS_PER_CLASS = 100); every class
    # gets its floor, then the other 750 in proportion to its points beyond the floor.
    np.testing.assert_array_equal(counts, [100 + 685, 100 + 65, 50])
    np.testing.assert_array_equal(lm, UMAPProjection(random_state=3, landmarks=1000).choose_landmarks(10_000, labels))
    assert proj.choose_landmarks(1000, None) is None
    plain = proj.choose_landmarks(10_000, None)
    assert len(plain) == 1000 and np.all(np.diff(plain) > 0)


def test_stratified_quota():
    from vae_core.projection import _stratified_quota

    q = _stratified_quota(np.array([500, 300, 7, 193]), 100, 10)
    assert q.sum() == 100 and q[2] == 7 and np.all(q >= np.minimum([500, 300, 7, 193], 10))
    q = _stratified_quota(np.array([5, 5, 5, 5, 5]), 12, 10)  # floors exceed the landmarks: proportional
    assert q.sum() == 12 and q.max() - q.min() <= 1
    q = _stratified_quota(np.array([3, 1000]), 1003, 100)
    np.testing.assert_array_equal(q, [3, 1000])


def test_landmark_refit_starts_from_the_previous_layout(landmark_fit):
    proj, previous, z, labels, _ = landmark_fit
    rng = np.random.default_rng(5)
    moved = z + rng.normal(0.0, 0.05, z.shape).astype(np.float32)
    again = UMAPProjection(random_state=0, landmarks=600, n_epochs=100, init=previous)
    xy = again.fit(moved, labels=labels)
    assert again.init_used == "previous layout"
    np.testing.assert_array_equal(again.landmark_indices, proj.landmark_indices)
    size = np.linalg.norm(previous.max(axis=0) - previous.min(axis=0))
    assert np.linalg.norm(xy - previous, axis=1).mean() / size < 0.15


def test_landmark_fit_cancel_while_placing():
    z, _ = labelled_mixture(1500, seed=2)
    proj = UMAPProjection(random_state=0, landmarks=300, n_epochs=10)
    state = {"placing": False}

    def progress(fraction, message):
        state["placing"] = state["placing"] or message.startswith("Placing")

    # Blocks of placed points are 16,384: cancel as the first is reported.
    with pytest.raises(ProjectionCancelled):
        proj.fit(z, progress=progress, cancel=lambda: state["placing"])
    assert state["placing"] and not proj.is_fitted


def test_umap_checks_landmark_options_and_labels():
    with pytest.raises(ConfigError):
        UMAPProjection(landmarks=3)
    with pytest.raises(ConfigError):
        UMAPProjection(place_neighbors=0)
    with pytest.raises(ValueError):
        UMAPProjection().fit(np.zeros((10, 2), np.float32), labels=np.zeros(9))


def test_map_index_spacing_from_a_sample_matches_all_points():
    from vae_core.projection import _MapIndex

    rng = np.random.default_rng(0)
    xy = rng.normal(size=(150_000, 2)).astype(np.float32)
    from scipy.spatial import cKDTree

    assert _MapIndex.SPACING_SAMPLE < len(xy)
    sampled = _MapIndex(xy).spacing
    full = float(np.median(cKDTree(xy.astype(np.float64)).query(xy.astype(np.float64), k=2)[0][:, 1]))
    assert sampled == pytest.approx(full, rel=0.02)
