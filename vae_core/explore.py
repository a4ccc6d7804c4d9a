"""Looking inside a trained VAE: paths, traversals, samples, one example's ELBO, posterior shapes.

Everything here is plain numpy (and torch for ``elbo_breakdown``), with no GUI:

* ``interpolate``: a path of codes between two codes, linear or spherical;
* ``traversal_codes``: one latent dimension swept at a time, dimensions ordered
  by how much information they carry (their KL);
* ``prior_codes`` and ``posterior_sample_codes``: z ~ p(z) = N(0, I) and
  z ~ q(z|x) = N(mu, diag(exp(logvar)));
* ``elbo_breakdown``: reconstruction, KL, ELBO, an importance-weighted estimate
  of log p(x) and the gap between the two for one example (or a few);
* ``posterior_ellipse``: the 1- and 2-sigma ellipses of q(z|x) on a 2-D map;
* ``compose_grid``: images tiled into one picture (a grid or a plain mosaic);
* ``save_gif`` and ``save_png``: image files written atomically, enlarged
  without smoothing so that 8x8 images stay visible.

torch and Pillow are imported inside the functions that need them, so
importing this module is cheap.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

__all__ = [
    "INACTIVE_KL",
    "interpolate",
    "traversal_codes",
    "prior_codes",
    "posterior_sample_codes",
    "ELBOBreakdown",
    "elbo_breakdown",
    "Ellipses",
    "CodePlacer",
    "cov_to_ellipses",
    "posterior_ellipse",
    "place_codes",
    "compose_grid",
    "save_gif",
    "save_png",
]

#: A latent dimension whose KL (nats, averaged over examples) is below this is "inactive":
#: its posterior is the prior for every example, so the decoder ignores it.
INACTIVE_KL = 0.01


# ---------------------------------------------------------------------------
# Paths and grids of codes
# ---------------------------------------------------------------------------


def interpolate(z0: np.ndarray, z1: np.ndarray, steps: int, mode: str = "linear") -> np.ndarray:
    """``steps`` codes (steps, d) from ``z0`` to ``z1``, both ends included.

    "linear": z(t) = (1 - t) z0 + t z1.

    "spherical" (slerp): the direction turns at constant angular speed along
    the great circle from z0/|z0| to z1/|z1| while the length moves linearly
    from |z0| to |z1|.  Why it matters: under the prior N(0, I) in d
    dimensions almost all mass lies near the sphere of radius sqrt(d), and
    the straight line between two typical codes cuts through the inside of
    that shell (for two independent prior samples its midpoint has norm about
    sqrt(d / 2)), where the decoder has seen hardly any codes.  Slerp keeps
    every code on the path at a norm between the two ends, i.e. typical of
    the prior when the ends are.  For codes of equal length this is the usual
    slerp formula sin((1-t)W)/sin(W) z0 + sin(tW)/sin(W) z1.

    Near-parallel directions turn by an angle near 0 and the path is linear;
    exactly opposite directions turn through an arbitrary (but fixed)
    perpendicular direction; a zero vector at either end, or d = 1 with
    opposite signs, gives the linear path.
    """
    if mode not in ("linear", "spherical"):
        raise ValueError(f"mode must be 'linear' or 'spherical', got {mode!r}")
    a = np.asarray(z0, dtype=np.float64).reshape(-1)
    b = np.asarray(z1, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"the two codes differ in length: {a.shape[0]} and {b.shape[0]}")
    steps = int(steps)
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (the two ends), got {steps}")
    t = np.linspace(0.0, 1.0, steps)[:, None]
    linear = (1.0 - t) * a + t * b
    if mode == "linear":
        out = linear
    else:
        out = _slerp(a, b, t)
        if out is None:
            out = linear
    out[0], out[-1] = a, b
    return out.astype(np.float32)


def _slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> Optional[np.ndarray]:
    ra, rb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if ra < 1e-12 or rb < 1e-12:
        return None
    u0, u1 = a / ra, b / rb
    cos = float(np.clip(u0 @ u1, -1.0, 1.0))
    perp = u1 - cos * u0
    sin = float(np.linalg.norm(perp))
    if sin > 1e-9:
        w = perp / sin
    elif cos > 0.0:
        w = np.zeros_like(u0)  # same direction: no turn at all
    else:
        # Opposite directions: every great circle through u0 reaches u1; take a fixed one.
        if a.shape[0] < 2:
            return None
        e = np.zeros_like(u0)
        e[int(np.argmin(np.abs(u0)))] = 1.0
        w = e - (e @ u0) * u0
        w /= np.linalg.norm(w)
    omega = math.atan2(sin, cos)  # stable for small and near-pi angles alike
    directions = np.cos(t * omega) * u0 + np.sin(t * omega) * w
    radius = (1.0 - t) * ra + t * rb
    return radius * directions


def traversal_codes(
    z: np.ndarray,
    kl_per_dim: np.ndarray,
    values: Optional[Sequence[float]] = None,
    n: int = 9,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes for a latent traversal: each dimension in turn set to each of ``values``.

    Returns ``codes`` (d * n, d) float32, row-major by dimension: rows
    r * n .. r * n + n - 1 sweep dimension ``order[r]`` through ``values``
    (absolute values of that coordinate, default linspace(-3, 3, n): +-3
    standard deviations of the prior) while every other coordinate keeps its
    value in ``z``; ``order`` (d,) lists the dimensions by their KL, largest
    first (ties keep index order); ``inactive`` (d,) bool, in the same order
    as ``order``, marks dimensions with KL < ``INACTIVE_KL`` nats, which the
    decoder ignores (their rows show one image repeated).
    """
    z = np.asarray(z, dtype=np.float32).reshape(-1)
    kl = np.asarray(kl_per_dim, dtype=np.float64).reshape(-1)
    d = z.shape[0]
    if kl.shape[0] != d:
        raise ValueError(f"kl_per_dim has {kl.shape[0]} entries for a code of {d} dimensions")
    vals = np.linspace(-3.0, 3.0, int(n)) if values is None else np.asarray(values, dtype=np.float64).reshape(-1)
    if vals.size < 1:
        raise ValueError("values must not be empty")
    m = vals.shape[0]
    order = np.argsort(-kl, kind="stable")
    codes = np.repeat(z[None, :], d * m, axis=0)
    for r, j in enumerate(order):
        codes[r * m:(r + 1) * m, j] = vals
    inactive = kl[order] < INACTIVE_KL
    return codes, order, inactive


def prior_codes(n: int, d: int, seed: Optional[int] = None) -> np.ndarray:
    """``n`` codes z ~ p(z) = N(0, I_d), float32 (n, d); the same seed gives the same codes."""
    return np.random.default_rng(seed).standard_normal((int(n), int(d))).astype(np.float32)


def posterior_sample_codes(mu: np.ndarray, logvar: np.ndarray, n: int, generator: Any = None) -> np.ndarray:
    """``n`` codes z ~ q(z|x) = N(mu, diag(exp(logvar))) for one example: float32 (n, d).

    ``generator`` is a numpy Generator, an integer seed or None.
    z = mu + exp(logvar / 2) * eps with eps ~ N(0, I), the reparameterization.
    """
    mu = np.asarray(mu, dtype=np.float64).reshape(-1)
    logvar = np.asarray(logvar, dtype=np.float64).reshape(-1)
    if mu.shape != logvar.shape:
        raise ValueError("mu and logvar must have the same length")
    rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
    eps = rng.standard_normal((int(n), mu.shape[0]))
    return (mu + np.exp(0.5 * logvar) * eps).astype(np.float32)


# ---------------------------------------------------------------------------
# One example's ELBO, taken apart
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ELBOBreakdown:
    """The terms of the ELBO and an estimate of log p(x), per example, in nats.

    All arrays have one entry per example:

    * ``recon`` = -E_q[log p(x|z)], a Monte Carlo mean over ``mc_samples``
      draws z ~ q(z|x), with its standard error ``recon_se``; lower is better;
    * ``kl`` = KL(q(z|x) || p(z)), in closed form (exact);
    * ``elbo`` = -recon - kl, a lower bound on log p(x) (same standard error
      as ``recon``); higher is better;
    * ``iwae`` = IWAE_k, the importance-weighted bound with ``k`` samples:
      ELBO <= E[IWAE_k] <= log p(x), and IWAE_k -> log p(x) as k grows;
    * ``gap`` = iwae - elbo.  log p(x) - ELBO = KL(q(z|x) || p(z|x)) exactly,
      so the gap estimates how far the encoder's q(z|x) is from the true
      posterior, from below: it grows towards that KL as k grows.  With
      Monte Carlo noise it can come out slightly negative when q is very
      close to the posterior;
    * ``ess`` = effective sample size, (sum w)^2 / sum w^2, of the importance
      weights w = p(x, z) / q(z|x) over the ``mc_samples`` draws: near
      ``mc_samples`` when q is close to the posterior, near 1 when a single
      draw dominates (then IWAE needs a much larger k to be trusted).
    """

    recon: np.ndarray
    recon_se: np.ndarray
    kl: np.ndarray
    elbo: np.ndarray
    iwae: np.ndarray
    gap: np.ndarray
    ess: np.ndarray
    k: int
    mc_samples: int

    def row(self, i: int = 0) -> dict:
        """The figures of example ``i`` as plain floats."""
        return {
            "recon": float(self.recon[i]), "recon_se": float(self.recon_se[i]), "kl": float(self.kl[i]),
            "elbo": float(self.elbo[i]), "iwae": float(self.iwae[i]), "gap": float(self.gap[i]),
            "ess": float(self.ess[i]), "k": self.k, "mc_samples": self.mc_samples,
        }


class Cancelled(Exception):
    """Raised by ``elbo_breakdown`` when its ``cancelled`` callable returned True."""


def elbo_breakdown(
    model: Any,
    x: Any,
    k: int = 1000,
    seed: Optional[int] = 0,
    mc_samples: int = 1000,
    progress: Optional[Callable[[float, str], None]] = None,
    cancelled: Optional[Callable[[], bool]] = None,
    chunk_elements: int = 2**22,
) -> ELBOBreakdown:
    """Reconstruction, KL, ELBO, IWAE_k and their gap for one example or a few (see ``ELBOBreakdown``).

    ``x`` is one example (C, H, W) or a batch (n, C, H, W), numpy or torch,
    in the model's data space.  ``model`` is used in eval mode and not
    changed; give this function its own copy of a model that another thread
    may train.  IWAE_k comes from ``vae_core.objectives.iwae_log_likelihood``,
    run in chunks of samples (combined exactly: the log-mean-exp of all k
    weights) so that ``progress(fraction, text)`` is reported and
    ``cancelled()`` is checked between chunks.
    """
    import torch

    from .objectives import gaussian_kl, iwae_log_likelihood, log_normal_diag, log_standard_normal

    k, mc_samples = int(k), int(mc_samples)
    if k < 1 or mc_samples < 2:
        raise ValueError("k must be at least 1 and mc_samples at least 2")

    def check() -> None:
        if cancelled is not None and cancelled():
            raise Cancelled("cancelled")

    def report(f: float, text: str) -> None:
        check()
        if progress is not None:
            progress(float(min(1.0, max(0.0, f))), text)

    xt = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x).float()
    shape = tuple(model.config.input_shape)
    if tuple(xt.shape) == shape:
        xt = xt.unsqueeze(0)
    if tuple(xt.shape[1:]) != shape:
        raise ValueError(f"examples must have shape {shape}, got {tuple(xt.shape)}")
    n = xt.shape[0]
    d_x = int(np.prod(shape))
    gen = torch.Generator().manual_seed(int(seed) if seed is not None else int(torch.seed() % 2**63))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            mu, logvar = model.encode(xt)
            kl = gaussian_kl(mu, logvar).double()
            # Reconstruction term: log p(x|z) for mc_samples draws z ~ q(z|x); their
            # importance weights log p(x, z) - log q(z|x) give the effective sample size.
            report(0.0, "Reconstruction term")
            per = max(1, min(mc_samples, chunk_elements // max(1, n * d_x)))
            log_px_parts, logw_parts = [], []
            done = 0
            while done < mc_samples:
                m = min(per, mc_samples - done)
                eps = torch.randn((m, n, mu.shape[1]), generator=gen, dtype=mu.dtype)
                z = mu.unsqueeze(0) + torch.exp(0.5 * logvar).unsqueeze(0) * eps
                xr = xt.unsqueeze(0).expand(m, *xt.shape).reshape(m * n, *shape)
                log_px = model.log_px_given_z(xr, z.reshape(m * n, -1)).view(m, n).double()
                log_px_parts.append(log_px)
                logw_parts.append(log_px + (log_standard_normal(z) - log_normal_diag(z, mu.unsqueeze(0), logvar.unsqueeze(0))).double())
                done += m
                report(0.3 * done / mc_samples, "Reconstruction term")
            log_px = torch.cat(log_px_parts, 0)
            logw = torch.cat(logw_parts, 0)
            recon = -log_px.mean(0)
            recon_se = log_px.std(0, unbiased=True) / math.sqrt(mc_samples)
            ess = torch.exp(2.0 * torch.logsumexp(logw, 0) - torch.logsumexp(2.0 * logw, 0))
            elbo = -recon - kl

            # IWAE_k in chunks: log (1/k) sum_all w = logsumexp_c (IWAE_{k_c} + log k_c) - log k.
            chunk = max(1, min(k, chunk_elements // max(1, n * d_x)))
            parts = []
            done = 0
            while done < k:
                m = min(chunk, k - done)
                iw = iwae_log_likelihood(model, xt, m, chunk_elements=chunk_elements, generator=gen).double()
                parts.append(iw + math.log(m))
                done += m
                report(0.3 + 0.7 * done / k, f"IWAE: {done:,} of {k:,} samples")
            iwae = torch.logsumexp(torch.stack(parts, 0), 0) - math.log(k)
    finally:
        model.train(was_training)

    def arr(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float64)

    return ELBOBreakdown(
        recon=arr(recon), recon_se=arr(recon_se), kl=arr(kl), elbo=arr(elbo), iwae=arr(iwae),
        gap=arr(iwae - elbo), ess=arr(ess), k=k, mc_samples=mc_samples,
    )


# ---------------------------------------------------------------------------
# q(z|x) on the map
# ---------------------------------------------------------------------------


class Ellipses(list):
    """A list of (center (2,), width, height, angle_deg), one per sigma level.

    ``width`` and ``height`` are full axis lengths in map units, the angle
    turns the width axis counter-clockwise from +x.  ``exact`` is False when
    the ellipses are fitted to samples placed on a non-linear map.
    ``sigmas`` lists the levels (Mahalanobis radii) in the same order.
    """

    def __init__(self, items=(), exact: bool = True, sigmas: Sequence[float] = ()):
        super().__init__(items)
        self.exact = bool(exact)
        self.sigmas = tuple(float(s) for s in sigmas)


def cov_to_ellipses(center: np.ndarray, cov: np.ndarray, sigmas: Sequence[float] = (1.0, 2.0), exact: bool = True) -> Ellipses:
    """Ellipses {p : (p - center)^T cov^-1 (p - center) = s^2} for each s in ``sigmas``.

    In two dimensions the s = 1 ellipse holds 1 - exp(-1/2) = 39% of a
    Gaussian's mass and s = 2 holds 1 - exp(-2) = 86%.
    """
    cov = np.asarray(cov, dtype=np.float64).reshape(2, 2)
    cov = 0.5 * (cov + cov.T)
    evals, evecs = np.linalg.eigh(cov)  # ascending
    evals = np.clip(evals, 0.0, None)
    major = evecs[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    # The sign of an eigenvector is arbitrary; keep the angle in (-90, 90].
    if angle <= -90.0:
        angle += 180.0
    elif angle > 90.0:
        angle -= 180.0
    c = np.asarray(center, dtype=np.float64).reshape(2)
    items = [(c.copy(), 2.0 * s * math.sqrt(evals[1]), 2.0 * s * math.sqrt(evals[0]), angle) for s in sigmas]
    return Ellipses(items, exact=exact, sigmas=sigmas)


class CodePlacer:
    """Puts new codes on a map that has no formula for them (e.g. UMAP).

    Each code lands at the inverse-distance weighted mean of the map
    positions of its ``k`` nearest stored codes (nearest in latent space).
    A code equal to a stored code lands on that code's position.  The KD-tree
    over the stored codes is built once, in the constructor.
    """

    def __init__(self, latents: np.ndarray, xy: np.ndarray, k: int = 10):
        from scipy.spatial import cKDTree

        latents = np.asarray(latents, dtype=np.float64)
        xy = np.asarray(xy, dtype=np.float64)
        if latents.ndim != 2 or xy.shape != (latents.shape[0], 2) or latents.shape[0] < 1:
            raise ValueError(f"need (N, d) codes and their (N, 2) map positions, got {latents.shape} and {xy.shape}")
        self.tree = cKDTree(latents)
        self.xy = xy
        self.k = max(1, min(int(k), latents.shape[0]))
        self.dim = latents.shape[1]

    def place(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.float64).reshape(-1, self.dim)
        dist, idx = self.tree.query(codes, k=self.k)
        if self.k == 1:
            dist, idx = dist[:, None], idx[:, None]
        exact = dist[:, :1] <= 1e-12
        w = 1.0 / np.maximum(dist, 1e-12)
        w = np.where(exact, (dist <= 1e-12).astype(np.float64), w)
        w /= w.sum(axis=1, keepdims=True)
        return np.einsum("mk,mkc->mc", w, self.xy[idx]).astype(np.float32)


def place_codes(codes: np.ndarray, projection: Any = None, placer: Optional[CodePlacer] = None) -> np.ndarray:
    """Map positions (M, 2) of ``codes``: the projection's ``transform`` where it has one, else ``placer``."""
    if projection is not None:
        try:
            return np.asarray(projection.transform(np.asarray(codes, dtype=np.float32)), dtype=np.float32)
        except NotImplementedError:
            pass
    if placer is None:
        raise ValueError("this map cannot place new codes by itself: give a CodePlacer built from the stored codes")
    return placer.place(codes)


def posterior_ellipse(
    mu: np.ndarray,
    logvar: np.ndarray,
    projection: Any,
    sigmas: Sequence[float] = (1.0, 2.0),
    placer: Optional[CodePlacer] = None,
    latents: Optional[np.ndarray] = None,
    xy: Optional[np.ndarray] = None,
    n_samples: int = 500,
    seed: Optional[int] = 0,
) -> Ellipses:
    """The 1- and 2-sigma ellipses of q(z|x) = N(mu, diag(exp(logvar))) on the map of ``projection``.

    Exact for linear maps, as the image of a Gaussian under a linear map is
    Gaussian: two raw dimensions (``i``, ``j``) give the axis-aligned
    ellipse with half-axes s * sigma_i, s * sigma_j; PCA (``components`` C,
    ``mean`` m) gives center C (mu - m) and covariance C diag(exp(logvar)) C^T,
    whose eigen-decomposition gives the axes.  Any other map: ``n_samples``
    draws from q are placed on the map (``transform`` if the projection has
    one, else ``placer`` or one built from ``latents`` and ``xy``, see
    ``CodePlacer``) and a Gaussian is fitted to them; the result has
    ``exact = False``.  A non-linear map can bend q into a shape that a single
    ellipse describes only roughly.
    """
    mu = np.asarray(mu, dtype=np.float64).reshape(-1)
    var = np.exp(np.asarray(logvar, dtype=np.float64).reshape(-1))
    d = mu.shape[0]
    kind = type(projection).__name__
    if kind == "RawDims" or (hasattr(projection, "i") and hasattr(projection, "j") and getattr(projection, "is_exact", False)):
        i, j = int(projection.i), int(projection.j)
        center = np.array([mu[i], mu[j] if j < d else 0.0])
        cov = np.diag([var[i], var[j] if j < d else 0.0])
        return cov_to_ellipses(center, cov, sigmas, exact=True)
    comps = getattr(projection, "components", None)
    mean = getattr(projection, "mean", None)
    if comps is not None and mean is not None and getattr(projection, "is_exact", False):
        c = np.asarray(comps, dtype=np.float64).reshape(2, d)
        center = c @ (mu - np.asarray(mean, dtype=np.float64))
        cov = (c * var) @ c.T
        return cov_to_ellipses(center, cov, sigmas, exact=True)
    samples = posterior_sample_codes(mu, np.log(var), n_samples, seed)
    if placer is None and latents is not None and xy is not None:
        try:
            projection.transform(samples[:1])
        except NotImplementedError:
            placer = CodePlacer(latents, xy)
        except Exception:
            pass
    pts = place_codes(samples, projection, placer).astype(np.float64)
    return cov_to_ellipses(pts.mean(axis=0), np.cov(pts, rowvar=False), sigmas, exact=False)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _as_frames(frames: Any) -> np.ndarray:
    a = np.asarray(frames, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 3 or (a.ndim == 4 and a.shape[-1] == 3)):
        raise ValueError(f"images must be (T, H, W) or (T, H, W, 3), got shape {np.shape(frames)}")
    if a.shape[0] < 1:
        raise ValueError("no images to write")
    return a


def _to_pil(img: np.ndarray, scale: int):
    from PIL import Image

    u8 = (np.clip(np.nan_to_num(img, nan=0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    im = Image.fromarray(np.ascontiguousarray(u8))  # uint8 (H, W) -> "L", (H, W, 3) -> "RGB"
    scale = max(1, int(scale))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    return im


def _atomic_save(path: str, write: Callable[[Any], None]) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def save_gif(frames: Any, path: str, fps: float = 10.0, scale: int = 4, loop: int = 0) -> None:
    """Write frames (T, H, W) or (T, H, W, 3), floats in [0, 1], as an animated GIF.

    Each frame is enlarged ``scale`` times without smoothing; ``loop`` = 0
    repeats forever.  Identical neighbouring frames (an inactive latent
    dimension's traversal) are stored by Pillow as one frame that lasts as
    long as all of them, so the animation plays the same.  Written to a
    temporary file next to ``path`` and then renamed, so ``path`` is never
    left half-written.
    """
    a = _as_frames(frames)
    images = [_to_pil(f, scale) for f in a]
    duration = max(20, int(round(1000.0 / max(float(fps), 1e-3))))

    def write(f):
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=duration,
                       loop=int(loop), optimize=False)

    _atomic_save(path, write)


def save_png(image: Any, path: str, scale: int = 4) -> None:
    """Write one image (H, W) or (H, W, 3), floats in [0, 1], as PNG, enlarged ``scale`` times (nearest)."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise ValueError(f"save_png takes one (H, W) or (H, W, 3) image, got shape {a.shape}; tile several with compose_grid first")
    im = _to_pil(a, scale)
    _atomic_save(path, lambda f: im.save(f, format="PNG"))


def _as_tile(image: Any, stacked: bool = False) -> np.ndarray:
    """An image as float32 (H, W) grey or (H, W, 3) colour, or with ``stacked`` a stack (N, H, W[, 3]) of them.

    uint8 is scaled to [0, 1], a channel axis of 1 is dropped (grey), a
    fourth channel (alpha) is dropped.
    """
    a = np.asarray(image)
    a = a.astype(np.float32) / np.float32(255.0) if a.dtype == np.uint8 else a.astype(np.float32)
    grey = 3 if stacked else 2
    if a.ndim == grey + 1 and a.shape[-1] in (1, 4):
        a = a[..., 0] if a.shape[-1] == 1 else a[..., :3]
    if not (a.ndim == grey or (a.ndim == grey + 1 and a.shape[-1] == 3)):
        what = "images must be (N, H, W) or (N, H, W, 3)" if stacked else "each image must be (H, W) or (H, W, 3)"
        raise ValueError(f"{what} (or with 1 or 4 channels), got shape {np.shape(image)}")
    return a


def _as_tiles(images: Any, pad_value: float) -> np.ndarray:
    """Images as one float32 stack (N, h, w[, 3]) of equal tiles.

    A list may mix sizes and grey with colour: every tile is then as large as
    the largest image, each image centred in its tile on ``pad_value``, and
    grey images are repeated into RGB when any image is in colour.
    """
    if isinstance(images, np.ndarray) and images.dtype != object:
        return _as_tile(images, stacked=True)
    tiles = [_as_tile(im) for im in images]
    if not tiles:
        return np.zeros((0, 0, 0), dtype=np.float32)
    if any(t.ndim == 3 for t in tiles):
        tiles = [np.repeat(t[:, :, None], 3, axis=2) if t.ndim == 2 else t for t in tiles]
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    if all(t.shape[:2] == (th, tw) for t in tiles):
        return np.stack(tiles)
    out = np.full((len(tiles), th, tw, *tiles[0].shape[2:]), pad_value, dtype=np.float32)
    for k, t in enumerate(tiles):
        h, w = t.shape[:2]
        oy, ox = (th - h) // 2, (tw - w) // 2
        out[k, oy:oy + h, ox:ox + w] = t
    return out


def compose_grid(images: Any, ncols: int, pad: int = 1, pad_value: float = 0.5) -> np.ndarray:
    """Tile images row-major into one picture, ``ncols`` per row (fewer when there are fewer images), ``pad`` pixels apart.

    ``images`` is an array (N, H, W) grey or (N, H, W, 3) colour ((N, H, W, 1)
    and (N, H, W, 4) are taken as grey and as colour without alpha; uint8 is
    scaled to [0, 1]), or a sequence of such images, which may differ in size
    and mix grey with colour (see ``_as_tiles``).  A last row that is not
    full, and the padding, hold ``pad_value``.  With ``pad=0`` and
    ``ny * nx`` images in ``ncols = nx`` columns it is a plain (ny * H, nx * W)
    mosaic.  Returns float32 (rows * H + (rows - 1) * pad,
    ncols * W + (ncols - 1) * pad[, 3]); no images give a (0, 0) array.
    """
    pad = int(pad)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    a = _as_tiles(images, pad_value)
    n, h, w = a.shape[:3]
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    rest = a.shape[3:]
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    # Every tile with its padding below and to the right, laid out (row, y, column, x);
    # the padding after the last row and column is cut off at the end.
    cells = np.full((nrows, h + pad, ncols, w + pad, *rest), pad_value, dtype=np.float32)
    full = np.full((nrows * ncols, h, w, *rest), pad_value, dtype=np.float32)
    full[:n] = a
    cells[:, :h, :, :w] = full.reshape(nrows, ncols, h, w, *rest).swapaxes(1, 2)
    out = cells.reshape(nrows * (h + pad), ncols * (w + pad), *rest)
    return np.ascontiguousarray(out[: out.shape[0] - pad, : out.shape[1] - pad])
