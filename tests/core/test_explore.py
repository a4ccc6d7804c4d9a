"""vae_core.explore: paths, traversals, samples, one example's ELBO, posterior ellipses, files."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from vae_core import explore as E
from vae_core.config import ModelConfig
from vae_core.objectives import exact_linear_gaussian_log_likelihood
from vae_core.projection import PCAProjection, RawDims
from vae_core.training import build_model


# ------------------------------------------------------------------ interpolation
def test_linear_interpolation_endpoints_and_midpoint():
    a, b = np.array([1.0, -2.0, 0.5]), np.array([3.0, 0.0, -0.5])
    path = E.interpolate(a, b, 5, "linear")
    assert path.shape == (5, 3) and path.dtype == np.float32
    np.testing.assert_allclose(path[0], a)
    np.testing.assert_allclose(path[-1], b)
    np.testing.assert_allclose(path[2], (a + b) / 2, atol=1e-6)
    np.testing.assert_allclose(np.diff(path, axis=0), np.tile((b - a) / 4, (4, 1)), atol=1e-6)


def test_slerp_endpoints_norms_and_angles():
    rng = np.random.default_rng(0)
    d = 16
    a, b = rng.standard_normal(d), rng.standard_normal(d)
    b *= np.linalg.norm(a) / np.linalg.norm(b)  # equal lengths
    path = E.interpolate(a, b, 11, "spherical").astype(np.float64)
    np.testing.assert_allclose(path[0], a, atol=1e-6)
    np.testing.assert_allclose(path[-1], b, atol=1e-6)
    norms = np.linalg.norm(path, axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(a), rtol=1e-5)
    # The straight line dips inside the shell; slerp does not.
    mid_lin = np.linalg.norm(E.interpolate(a, b, 11, "linear")[5])
    assert mid_lin < norms[5] - 0.1
    # Constant angular speed and the textbook formula for equal lengths.
    u = path / norms[:, None]
    steps = np.arccos(np.clip(np.sum(u[1:] * u[:-1], axis=1), -1, 1))
    np.testing.assert_allclose(steps, steps.mean(), rtol=1e-4)
    omega = math.acos(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    t = 0.3
    ref = (math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega)
    np.testing.assert_allclose(E.interpolate(a, b, 11, "spherical")[3], ref, atol=1e-5)


def test_slerp_norm_moves_between_the_ends_and_degenerate_cases():
    a, b = np.array([2.0, 0.0]), np.array([0.0, 4.0])
    norms = np.linalg.norm(E.interpolate(a, b, 9, "spherical"), axis=1)
    np.testing.assert_allclose(norms, np.linspace(2, 4, 9), rtol=1e-5)
    # Near-parallel: no NaN, essentially the linear path.
    c = np.array([1.0, 1e-9, 0.0])
    p = E.interpolate(c, 2 * c, 5, "spherical")
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p, E.interpolate(c, 2 * c, 5, "linear"), atol=1e-6)
    # Exactly opposite: finite, ends exact, the norm stays 1.
    e = np.array([0.0, 1.0, 0.0])
    p = E.interpolate(e, -e, 7, "spherical")
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p[0], e)
    np.testing.assert_allclose(p[-1], -e)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, rtol=1e-5)
    # A zero end falls back to the straight line.
    np.testing.assert_allclose(E.interpolate(np.zeros(3), e, 3, "spherical"), E.interpolate(np.zeros(3), e, 3, "linear"))
    with pytest.raises(ValueError):
        E.interpolate(a, b, 5, "cubic")
    with pytest.raises(ValueError):
        E.interpolate(a, b, 1)


# ------------------------------------------------------------------ traversals, samples
def test_traversal_rows_ordered_by_kl_with_inactive_flags():
    z = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)
    kl = np.array([0.5, 0.001, 3.0, 0.005])
    codes, order, inactive = E.traversal_codes(z, kl, n=5)
    assert codes.shape == (4 * 5, 4)
    assert list(order) == [2, 0, 3, 1]
    assert list(inactive) == [False, False, True, True]
    vals = np.linspace(-3, 3, 5)
    for r, j in enumerate(order):
        rows = codes[r * 5:(r + 1) * 5]
        np.testing.assert_allclose(rows[:, j], vals)
        others = [c for c in range(4) if c != j]
        np.testing.assert_allclose(rows[:, others], np.tile(z[others], (5, 1)))
    codes2, _, _ = E.traversal_codes(z, kl, values=[-1.0, 1.0])
    assert codes2.shape == (8, 4)
    with pytest.raises(ValueError):
        E.traversal_codes(z, kl[:3])


def test_prior_and_posterior_samples():
    p = E.prior_codes(4000, 3, seed=1)
    assert p.shape == (4000, 3) and p.dtype == np.float32
    np.testing.assert_array_equal(p, E.prior_codes(4000, 3, seed=1))
    np.testing.assert_allclose(p.mean(0), 0, atol=0.06)
    np.testing.assert_allclose(p.std(0), 1, atol=0.05)
    mu, lv = np.array([1.0, -2.0]), np.log(np.array([0.25, 4.0]))
    s = E.posterior_sample_codes(mu, lv, 8000, np.random.default_rng(2))
    np.testing.assert_allclose(s.mean(0), mu, atol=0.06)
    np.testing.assert_allclose(s.std(0), [0.5, 2.0], rtol=0.04)


# ------------------------------------------------------------------ ellipses
def ellipse_covariance(width, height, angle_deg, sigma=1.0):
    """The 2x2 covariance whose ``sigma`` ellipse is (width, height, angle_deg): the inverse of ``cov_to_ellipses``."""
    a = math.radians(angle_deg)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    s = np.diag([(width / (2.0 * sigma)) ** 2, (height / (2.0 * sigma)) ** 2])
    return r @ s @ r.T


def _empirical_cov_check(ell, pts):
    """The ellipses' covariance and centre match those of the projected samples."""
    assert [round(s) for s in ell.sigmas] == [1, 2]
    for (center, w, h, ang), s in zip(ell, ell.sigmas):
        np.testing.assert_allclose(center, pts.mean(0), atol=0.05 * np.sqrt(np.trace(np.cov(pts, rowvar=False))) + 1e-3)
        cov = ellipse_covariance(w, h, ang, sigma=s)
        emp = np.cov(pts, rowvar=False)
        np.testing.assert_allclose(cov, emp, atol=0.05 * np.abs(emp).max())


def test_posterior_ellipse_raw_dims_and_pca_match_projected_samples():
    rng = np.random.default_rng(3)
    d = 5
    mu = rng.standard_normal(d)
    lv = np.log(rng.uniform(0.05, 1.5, d))
    samples = E.posterior_sample_codes(mu, lv, 40000, rng).astype(np.float64)

    raw = RawDims(3, 1)
    raw.fit(rng.standard_normal((50, d)))
    ell = E.posterior_ellipse(mu, lv, raw)
    assert ell.exact and len(ell) == 2
    assert ell[0][3] in (0.0, 90.0) or abs(ell[0][3]) < 1e-9 or abs(abs(ell[0][3]) - 90) < 1e-9
    _empirical_cov_check(ell, raw.transform(samples.astype(np.float32)).astype(np.float64))
    # Two sigmas: twice the axes of one.
    np.testing.assert_allclose(ell[1][1:3], 2 * np.array(ell[0][1:3]))

    pca = PCAProjection()
    codes = rng.standard_normal((300, d)) @ rng.standard_normal((d, d))
    pca.fit(codes)
    ell = E.posterior_ellipse(mu, lv, pca)
    assert ell.exact
    _empirical_cov_check(ell, pca.transform(samples.astype(np.float32)).astype(np.float64))


def test_posterior_ellipse_for_a_map_without_transform_is_approximate():
    """A stand-in for UMAP: a map known only at the stored codes (here the true map is linear)."""
    rng = np.random.default_rng(4)
    d = 3
    latents = rng.standard_normal((4000, d)).astype(np.float32)
    a = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]])
    xy = latents @ a.T

    class MapOnly:
        is_exact = False

        def transform(self, codes):
            raise NotImplementedError

    mu = np.array([0.3, -0.2, 0.1])
    lv = np.log(np.array([0.3, 0.2, 0.4]) ** 2)
    ell = E.posterior_ellipse(mu, lv, MapOnly(), latents=latents, xy=xy, n_samples=2000, seed=0)
    assert not ell.exact
    true_cov = (a * np.exp(lv)) @ a.T
    cov = ellipse_covariance(*ell[0][1:], sigma=1.0)
    # kNN averaging shrinks the spread a little; shape and size stay close.
    np.testing.assert_allclose(cov, true_cov, atol=0.35 * np.abs(true_cov).max())
    np.testing.assert_allclose(ell[0][0], a @ mu, atol=0.1)
    placer = E.CodePlacer(latents, xy)
    np.testing.assert_allclose(placer.place(latents[:5]), xy[:5], atol=1e-5)
    with pytest.raises(ValueError):
        E.place_codes(latents[:2], MapOnly())


# ------------------------------------------------------------------ ELBO breakdown
def _bernoulli_model(seed=0):
    cfg = ModelConfig(input_shape=(1, 8, 8), latent_dim=2, hidden_dims=(16,), likelihood="bernoulli")
    return build_model(cfg, seed)


def test_elbo_breakdown_on_a_random_model():
    model = _bernoulli_model()
    x = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    bd = E.elbo_breakdown(model, x, k=500, seed=1, mc_samples=500)
    assert bd.elbo.shape == (2,) and bd.k == 500
    np.testing.assert_allclose(bd.elbo, -bd.recon - bd.kl)
    np.testing.assert_allclose(bd.gap, bd.iwae - bd.elbo)
    tol = 4 * bd.recon_se + 1e-3
    assert np.all(bd.elbo <= bd.iwae + tol)
    assert np.all(bd.gap >= -tol)
    assert np.all(bd.recon_se > 0) and np.all(bd.kl >= 0)
    assert np.all((bd.ess >= 1) & (bd.ess <= 500 + 1e-6))
    # KL is the closed form.
    with torch.no_grad():
        mu, lv = model.encode(x)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * lv))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    np.testing.assert_allclose(bd.kl, torch.distributions.kl_divergence(q, p).sum(1).double().numpy(), rtol=1e-5)
    # One example (C, H, W) as numpy; the model's mode is left as it was.
    model.train()
    one = E.elbo_breakdown(model, x[0].numpy(), k=50, seed=1, mc_samples=50)
    assert model.training and one.elbo.shape == (1,)
    assert set(one.row(0)) >= {"recon", "kl", "elbo", "iwae", "gap", "recon_se"}


def test_elbo_breakdown_against_the_exact_likelihood_of_a_linear_model():
    cfg = ModelConfig(input_shape=(1, 2, 2), latent_dim=2, hidden_dims=(), likelihood="gaussian", sigma=0.5)
    model = build_model(cfg, 3)
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    exact = exact_linear_gaussian_log_likelihood(model, x).detach().numpy()
    bd = E.elbo_breakdown(model, x, k=20000, seed=2, mc_samples=4000)
    tol = 4 * bd.recon_se + 0.02
    # ELBO <= IWAE_k <= log p(x), and the gap is at most the true KL(q || posterior) = log p(x) - ELBO.
    assert np.all(bd.elbo <= exact + tol)
    assert np.all(bd.iwae <= exact + 0.05)
    np.testing.assert_allclose(bd.iwae, exact, atol=0.15)  # an untrained encoder: ELBO is 5-20 nats lower
    assert np.all(exact - bd.elbo > 1.0)
    assert np.all(bd.gap <= exact - bd.elbo + tol)


def test_elbo_breakdown_reports_progress_and_can_be_cancelled():
    model = _bernoulli_model()
    x = torch.zeros(1, 1, 8, 8)
    seen = []
    E.elbo_breakdown(model, x, k=1000, mc_samples=100, progress=lambda f, t: seen.append(f), chunk_elements=64 * 100)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(E.Cancelled):
        E.elbo_breakdown(model, x, k=1000, mc_samples=100, cancelled=lambda: True)


# ------------------------------------------------------------------ files
def test_gif_has_every_frame_and_png_is_upscaled(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = rng.uniform(size=(7, 8, 8)).astype(np.float32)
    path = tmp_path / "walk.gif"
    E.save_gif(frames, str(path), fps=5, scale=4)
    with Image.open(path) as im:
        assert im.n_frames == 7
        assert im.size == (32, 32)
        im.seek(3)
        got = np.asarray(im.convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(got[::4, ::4], frames[3], atol=1.5 / 255)
    # Pillow merges identical neighbouring frames into one that lasts as long as all of them.
    E.save_gif(np.zeros((4, 8, 8, 3)), str(path), fps=10)
    with Image.open(path) as im:
        assert im.n_frames == 1 and im.info["duration"] == 400
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]

    grey = rng.uniform(size=(8, 9)).astype(np.float32)
    E.save_png(grey, str(tmp_path / "grey.png"), scale=4)
    with Image.open(tmp_path / "grey.png") as im:
        assert im.mode == "L" and im.size == (36, 32)
        arr = np.asarray(im, dtype=np.float32) / 255
    np.testing.assert_allclose(arr[::4, ::4], grey, atol=1.5 / 255)
    with pytest.raises(ValueError, match="compose_grid"):
        E.save_png(np.zeros((3, 8, 8)), str(tmp_path / "three.png"))
    E.save_png(rng.uniform(size=(8, 8, 3)), str(tmp_path / "rgb.png"), scale=2)
    with Image.open(tmp_path / "rgb.png") as im:
        assert im.mode == "RGB" and im.size == (16, 16)


def test_failed_write_leaves_no_file(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "x.gif"
    with pytest.raises(OSError):
        E.save_gif(np.zeros((2, 4, 4)), str(missing))
    with pytest.raises(ValueError):
        E.save_gif(np.zeros((2, 4, 4, 2)), str(tmp_path / "bad.gif"))
    assert os.listdir(tmp_path) == []


def _grid_by_hand(imgs, ncols, pad, pad_value):
    n, h, w = imgs.shape[:3]
    nrows = -(-n // ncols)
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad, *imgs.shape[3:]), pad_value, np.float32)
    for k in range(n):
        r, c = divmod(k, ncols)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = imgs[k]
    return out


@pytest.mark.parametrize("n, ncols, pad", [(7, 3, 1), (6, 3, 0), (1, 4, 2), (5, 5, 3), (12, 4, 0)])
@pytest.mark.parametrize("colour", [False, True])
def test_compose_grid_tiles_row_major(n, ncols, pad, colour):
    rng = np.random.default_rng(n + pad)
    imgs = rng.uniform(size=(n, 4, 5, 3) if colour else (n, 4, 5)).astype(np.float32)
    grid = E.compose_grid(imgs, ncols, pad=pad, pad_value=0.25)
    assert grid.dtype == np.float32 and grid.flags.c_contiguous
    np.testing.assert_array_equal(grid, _grid_by_hand(imgs, min(ncols, n), pad, 0.25))


def test_compose_grid_without_padding_is_a_plain_mosaic():
    ny, nx = 3, 4
    imgs = np.random.default_rng(0).uniform(size=(ny * nx, 5, 6, 3)).astype(np.float32)
    mosaic = imgs.reshape(ny, nx, 5, 6, 3).transpose(0, 2, 1, 3, 4).reshape(ny * 5, nx * 6, 3)
    np.testing.assert_array_equal(E.compose_grid(imgs, nx, pad=0), mosaic)


def test_compose_grid_takes_lists_of_mixed_images():
    grey_small = np.ones((2, 2), np.float32)
    colour = np.zeros((4, 4, 3), np.float32)
    grid = E.compose_grid([grey_small, colour], 2, pad=2, pad_value=0.5)
    assert grid.shape == (4, 10, 3)
    assert np.all(grid[1:3, 1:3] == 1.0)  # the small grey image centred in its tile, in every channel
    assert np.all(grid[0, 0] == 0.5) and np.all(grid[:, 4:6] == 0.5)  # around it, and between the tiles
    assert np.all(grid[:, 6:] == 0.0)
    u8 = np.full((2, 3, 3, 1), 255, np.uint8)
    np.testing.assert_array_equal(E.compose_grid(u8, 2, pad=0), np.ones((3, 6), np.float32))
    rgba = np.zeros((1, 2, 2, 4), np.float32)
    assert E.compose_grid(rgba, 1).shape == (2, 2, 3)
    assert E.compose_grid([], 3).shape == (0, 0)
    with pytest.raises(ValueError):
        E.compose_grid(np.zeros((2, 3, 3, 2)), 2)
    with pytest.raises(ValueError):
        E.compose_grid(np.zeros((2, 3, 3)), 2, pad=-1)
